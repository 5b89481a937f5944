//! Garbage collection by owner references, as Kubernetes does it: when an
//! object goes, so do the objects that name it as an owner (Background
//! and Foreground propagation), unless they are orphaned. Deleting a
//! namespace deletes what is in it.
//!
//! Dependents are found by scanning the store, which costs one pass over
//! every object per deletion: fine for a single-node control plane of
//! modest size, and the place to add an owner index when it is not.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::{App, rest, status::ApiError};

/// How a deletion treats dependents (`DeleteOptions.propagationPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Propagation {
    /// Delete the owner now, its dependents right after.
    Background,
    /// Delete the dependents first, then the owner.
    Foreground,
    /// Keep the dependents, without the owner reference.
    Orphan,
}

impl Propagation {
    pub(super) fn parse(value: Option<&str>) -> Result<Self, ApiError> {
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

/// Start the collector: it deletes the dependents of every uid sent to
/// it (objects removed with Background propagation). It holds the server
/// weakly, so that a stopped server (and its store) is dropped, which
/// closes the channel and ends the collector.
pub(super) fn spawn(app: &Arc<App>, mut removed: mpsc::UnboundedReceiver<String>) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        while let Some(uid) = removed.recv().await {
            let Some(app) = app.upgrade() else { return };
            if let Err(e) = delete_dependents(&app, &uid).await {
                tracing::warn!(owner = %uid, error = ?e, "garbage collection failed");
            }
        }
    });
}

fn uid_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Objects that name `uid` among their owners.
fn dependents(app: &App, uid: &str) -> Vec<Arc<Value>> {
    app.store
        .list("/")
        .1
        .into_iter()
        .filter(|o| owned_by(o, uid))
        .collect()
}

/// Delete every dependent of `uid`, and theirs, depth first.
pub(super) async fn delete_dependents(app: &App, uid: &str) -> Result<(), ApiError> {
    for dependent in dependents(app, uid) {
        match rest::delete_object(app, &dependent, Propagation::Foreground).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Remove the owner reference to `uid` from every dependent.
pub(super) async fn orphan(app: &App, uid: &str) -> Result<(), ApiError> {
    for dependent in dependents(app, uid) {
        let mut next = (*dependent).clone();
        if let Some(refs) = next
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        }
        rest::store_update(app, &next).await?;
    }
    Ok(())
}

/// Delete everything in a namespace.
pub(super) async fn empty_namespace(app: &App, namespace: &str) -> Result<(), ApiError> {
    let contents: Vec<Arc<Value>> = app
        .store
        .list("/")
        .1
        .into_iter()
        .filter(|o| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
        .collect();
    for object in contents {
        if uid_of(&object).is_some() {
            match rest::delete_object(app, &object, Propagation::Background).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
