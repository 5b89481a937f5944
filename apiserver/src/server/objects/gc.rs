//! Garbage collection by owner references, as Kubernetes does it: when an
//! object goes, so do the objects that name it as an owner (Background
//! and Foreground propagation), unless they are orphaned. Deleting a
//! namespace deletes what is in it.
//!
//! Every deletion starts here, because deleting an object deletes its
//! dependents, which deletes theirs: the recursion stays in this module
//! and `delete` only removes one object.
//!
//! Dependents are found by scanning the store, which costs one pass over
//! every object per deletion: fine for a single-node control plane of
//! modest size, and the place to add an owner index when it is not.

use std::{future::Future, pin::Pin, sync::Arc};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    delete::{Propagation, remove},
    meta::{meta, revision_of},
    target::Target,
};
use crate::server::{app::App, status::ApiError};

/// Delete the object named `name` after dealing with its dependents as
/// `policy` says (and, for a namespace, with what is in it).
pub(crate) async fn delete(
    app: &App,
    target: &Target,
    name: &str,
    policy: Propagation,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let (_, current) = target.stored(app, name)?;
    if dry_run {
        return Ok((*current).clone());
    }
    let resource = &target.resource;
    if resource.plural == "namespaces" && resource.group.is_empty() {
        empty_namespace(app, name).await?;
    }
    let uid = meta(&current, "uid").unwrap_or_default();
    match policy {
        Propagation::Foreground => delete_dependents(app, &uid).await?,
        Propagation::Orphan => orphan(app, &uid).await?,
        Propagation::Background => {}
    }
    remove(app, target, name, policy).await
}

/// Delete a stored object, whatever its kind (boxed, as deletions recurse
/// through dependents).
fn delete_object<'a>(
    app: &'a App,
    object: &'a Value,
    policy: Propagation,
) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        let target = Target::of(app, object)?;
        let name = meta(object, "name").unwrap_or_default();
        delete(app, &target, &name, policy, false).await
    })
}

/// Start the collector: it deletes the dependents of every uid sent to
/// it (objects removed with Background propagation). It holds the server
/// weakly, so that a stopped server (and its store) is dropped, which
/// closes the channel and ends the collector.
pub(crate) fn spawn(app: &Arc<App>, mut removed: mpsc::UnboundedReceiver<String>) {
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
async fn delete_dependents(app: &App, uid: &str) -> Result<(), ApiError> {
    for dependent in dependents(app, uid) {
        match delete_object(app, &dependent, Propagation::Foreground).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Remove the owner reference to `uid` from every dependent.
async fn orphan(app: &App, uid: &str) -> Result<(), ApiError> {
    for dependent in dependents(app, uid) {
        let mut next = (*dependent).clone();
        if let Some(refs) = next
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        }
        store_update(app, &next).await?;
    }
    Ok(())
}

/// Write a stored object back as it is given, against its revision.
async fn store_update(app: &App, object: &Value) -> Result<(), ApiError> {
    let target = Target::of(app, object)?;
    let name = meta(object, "name").unwrap_or_default();
    app.store
        .update(&target.key(&name), object.clone(), revision_of(object))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_store(e, &target.resource.qualified(), &name))
}

/// Delete everything in a namespace.
async fn empty_namespace(app: &App, namespace: &str) -> Result<(), ApiError> {
    let contents: Vec<Arc<Value>> = app
        .store
        .list("/")
        .1
        .into_iter()
        .filter(|o| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
        .collect();
    for object in contents {
        if uid_of(&object).is_some() {
            match delete_object(app, &object, Propagation::Background).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
