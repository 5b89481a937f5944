//! Removing one object once its dependents have been dealt with (see
//! `gc`): finalizers hold it, marked with a `deletionTimestamp` until
//! their owners remove them (`update` deletes it then); without any it
//! goes now. A CRD stops being served as it goes.

use serde_json::{Value, json};

use super::{
    meta::{metadata_mut, now},
    target::Target,
};
use crate::server::{app::App, crd, status::ApiError};

/// How a deletion treats dependents (`DeleteOptions.propagationPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// Delete the owner now, its dependents right after.
    Background,
    /// Delete the dependents first, then the owner.
    Foreground,
    /// Keep the dependents, without the owner reference.
    Orphan,
}

impl Propagation {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("" | "Background") => Ok(Self::Background),
            Some("Foreground") => Ok(Self::Foreground),
            Some("Orphan") => Ok(Self::Orphan),
            Some(other) => Err(ApiError::BadRequest(format!(
                "unsupported propagationPolicy {other:?}: use Background, Foreground or Orphan"
            ))),
        }
    }
}

/// Delete the object named `name`, or mark it if finalizers hold it; a
/// Background deletion hands its dependents to the collector.
pub(super) async fn remove(
    app: &App,
    target: &Target,
    name: &str,
    policy: Propagation,
) -> Result<Value, ApiError> {
    // Read again: dependents and their collection may have moved it on.
    let (revision, current) = target.stored(app, name)?;
    let key = target.key(name);
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let result = if has_finalizers {
        // Finalizers hold the object: mark it and let their owners finish.
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((*current).clone());
        }
        let mut marked = (*current).clone();
        let metadata = metadata_mut(&mut marked);
        metadata.insert("deletionTimestamp".into(), Value::String(now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        app.store.update(&key, marked, Some(revision)).await
    } else {
        app.store.delete(&key, Some(revision)).await
    };
    let resource = &target.resource;
    let deleted = result.map_err(|e| ApiError::from_store(e, &resource.qualified(), name))?;
    if !has_finalizers {
        if resource.plural == "customresourcedefinitions" {
            crd::forget(&deleted, &app.registry);
        }
        if policy == Propagation::Background {
            app.removed(&deleted);
        }
    }
    Ok((*deleted).clone())
}
