//! Replacing an object: the writer's resourceVersion is a precondition,
//! what the server owns (uid, timestamps, generation) stays as stored,
//! status and the rest of the object change through separate endpoints,
//! and the generation counts changes of the desired state. Removing the
//! last finalizer of an object being deleted deletes it.

use serde_json::{Map, Value, json};

use super::{
    admission::{admit, check_identity},
    meta::{meta, metadata_mut, named_revision},
    target::{Target, conflict, invalid_revision},
};
use crate::{
    FieldError, FieldErrorKind, FieldErrors,
    server::{app::App, registry::Resource, status::ApiError},
    storage::Revision,
};

/// Replace the object named `name` with `object` (or only its status).
pub(crate) async fn update(
    app: &App,
    target: &Target,
    name: &str,
    mut object: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    check_identity(&mut object, target)?;
    let (current_revision, current) = target.stored(app, name)?;
    if meta(&object, "name").as_deref() != Some(name) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta(&object, "name").unwrap_or_default()
        )));
    }
    let precondition = precondition(resource, name, &object, current_revision)?;
    let mut next = if status_only {
        with_new_status(&current, &object)
    } else {
        with_old_status(object, &current, resource.status)
    };
    keep_server_owned(&mut next, &current);
    admit(target, &mut next, Some(&current))?;
    // Judged after defaulting, as kube-apiserver does: an update that only
    // leaves out what defaults fill in changes nothing.
    if !status_only {
        count_generation(&mut next, &current, resource.status);
    }
    if unchanged(&next, &current) {
        return Ok((*current).clone());
    }
    let write = Write {
        target,
        name,
        current_revision,
        precondition: precondition.or(Some(current_revision)),
        being_deleted: current.pointer("/metadata/deletionTimestamp").is_some(),
    };
    store(app, &write, next).await
}

/// The revision the writer read, which must be the current one. Custom
/// resources must name it; built-in kinds may leave it out.
fn precondition(
    resource: &Resource,
    name: &str,
    object: &Value,
    current_revision: Revision,
) -> Result<Option<Revision>, ApiError> {
    let named = named_revision(object).map_err(|rv| invalid_revision(resource, name, rv))?;
    let precondition = match named {
        Some(revision) => Some(revision),
        None if resource.custom => {
            return Err(ApiError::Invalid {
                kind: resource.kind.clone(),
                group: resource.group.clone(),
                name: name.to_owned(),
                errors: FieldErrors(vec![FieldError {
                    field: "metadata.resourceVersion".into(),
                    kind: FieldErrorKind::Invalid,
                    value: Some(json!(0)),
                    detail: "must be specified for an update".into(),
                }]),
            });
        }
        None => None,
    };
    // A stale resourceVersion is a conflict before anything else, as on
    // kube-apiserver: a writer that read an old version must read again,
    // not be told its old view is invalid.
    if precondition.is_some_and(|p| p != current_revision) {
        return Err(conflict(resource, name));
    }
    Ok(precondition)
}

/// The current object with the written status (a write to `/status`,
/// through which nothing else changes).
fn with_new_status(current: &Value, object: &Value) -> Value {
    let mut next = current.clone();
    if let (Some(map), Some(status)) = (next.as_object_mut(), object.get("status")) {
        map.insert("status".into(), status.clone());
    }
    if let Some(managed) = managed(object) {
        metadata_mut(&mut next).insert("managedFields".into(), managed.clone());
    }
    next
}

/// The written object with the current status, when status has its own
/// endpoint and so cannot change through the main one.
fn with_old_status(mut object: Value, current: &Value, status_apart: bool) -> Value {
    if status_apart && let Some(map) = object.as_object_mut() {
        match current.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    object
}

/// Keep the metadata the server owns as it is stored.
fn keep_server_owned(next: &mut Value, current: &Value) {
    // Who manages what stays recorded unless the writer says otherwise.
    if managed(next).is_none()
        && let Some(managed) = managed(current)
    {
        metadata_mut(next).insert("managedFields".into(), managed.clone());
    }
    let old_meta: Map<String, Value> = current
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let metadata = metadata_mut(next);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(owned) {
            Some(v) => metadata.insert(owned.into(), v.clone()),
            None => metadata.remove(owned),
        };
    }
}

/// Count a change of the desired state of an admitted (defaulted) object
/// as a new generation.
fn count_generation(next: &mut Value, current: &Value, status_apart: bool) {
    let Some(generation) = current
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
    else {
        return;
    };
    if desired_state(next, status_apart) != desired_state(current, status_apart) {
        metadata_mut(next).insert("generation".into(), json!(generation + 1));
    }
}

/// The object without what does not count as a change of its desired
/// state: metadata, and status when it has its own endpoint.
fn desired_state(object: &Value, status_apart: bool) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        if status_apart {
            map.remove("status");
        }
    }
    copy
}

/// Whether `next` changes nothing of `current` but the times its field
/// managers wrote at, or their order: kube-apiserver drops such an
/// update, so applying the same manifest again leaves the
/// resourceVersion alone.
fn unchanged(next: &Value, current: &Value) -> bool {
    if managed(next) == managed(current) {
        // The common case (the managers copied over): no copy needed.
        return next == current;
    }
    let managers = |object: &Value| {
        let mut entries: Vec<String> = managed(object)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|entry| {
                let mut entry = entry.clone();
                if let Some(map) = entry.as_object_mut() {
                    map.remove("time");
                }
                entry.to_string()
            })
            .collect();
        entries.sort();
        entries
    };
    if managers(next) != managers(current) {
        return false;
    }
    let mut next = next.clone();
    match managed(current) {
        Some(managed) => metadata_mut(&mut next).insert("managedFields".into(), managed.clone()),
        None => metadata_mut(&mut next).remove("managedFields"),
    };
    next == *current
}

/// An object's `metadata.managedFields`.
fn managed(object: &Value) -> Option<&Value> {
    object.pointer("/metadata/managedFields")
}

/// Where an admitted change is written, and against what.
struct Write<'a> {
    target: &'a Target,
    name: &'a str,
    current_revision: Revision,
    precondition: Option<Revision>,
    /// The stored object has a `deletionTimestamp`.
    being_deleted: bool,
}

/// Write an admitted change, or only answer with it on a dry run.
async fn store(app: &App, write: &Write<'_>, mut next: Value) -> Result<Value, ApiError> {
    let (target, name) = (write.target, write.name);
    let resource = &target.resource;
    let key = target.key(name);
    // An object being deleted goes once its last finalizer is removed.
    let finalizers_left = next
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if target.dry_run {
        if write.precondition != Some(write.current_revision) {
            return Err(conflict(resource, name));
        }
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(write.current_revision.to_string()),
        );
        return Ok(next);
    }
    if write.being_deleted && !finalizers_left {
        let deleted = app
            .store
            .delete(&key, write.precondition)
            .await
            .map_err(|e| ApiError::from_store(e, &resource.qualified(), name))?;
        app.removed(&deleted);
        return Ok((*deleted).clone());
    }
    app.store
        .update(&key, next, write.precondition)
        .await
        .map(|o| (*o).clone())
        .map_err(|e| ApiError::from_store(e, &resource.qualified(), name))
}
