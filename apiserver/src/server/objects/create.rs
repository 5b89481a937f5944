//! Creating an object: the server names it if asked to (`generateName`),
//! stamps what it owns (uid, creation time, generation), admits it, and
//! stores it only if nothing has the name yet. A CRD starts being served
//! as it is created.

use serde_json::{Value, json};

use super::{
    admission::{admit, check_identity},
    meta::{meta, metadata_mut, now, random_suffix, uid},
    target::Target,
};
use crate::server::{app::App, crd, status::ApiError};

pub(crate) async fn create(
    app: &App,
    target: &Target,
    mut object: Value,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    check_identity(&mut object, target)?;
    if resource.namespaced {
        let ns = target.namespace.clone().unwrap_or_default();
        if app.store.get(&format!("/core/namespaces/_/{ns}")).is_none() {
            return Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns,
            });
        }
    }
    let metadata = metadata_mut(&mut object);
    if metadata
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(prefix) = metadata.get("generateName").and_then(Value::as_str)
    {
        let prefix: String = prefix.chars().take(58).collect();
        metadata.insert(
            "name".into(),
            Value::String(format!("{prefix}{}", random_suffix())),
        );
    }
    metadata.insert("uid".into(), Value::String(uid()));
    metadata.insert("creationTimestamp".into(), Value::String(now()));
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        metadata.remove(server_owned);
    }
    if resource.custom || object.get("spec").is_some() {
        metadata_mut(&mut object).insert("generation".into(), json!(1));
    }
    if resource.status
        && let Some(map) = object.as_object_mut()
    {
        // With a status subresource, a create sets no status.
        map.remove("status");
    }
    admit(target, &mut object, None)?;
    let name = meta(&object, "name").unwrap_or_default();
    let key = target.key(&name);
    if target.dry_run {
        if app.store.get(&key).is_some() {
            return Err(ApiError::AlreadyExists {
                resource: resource.qualified(),
                name,
            });
        }
        return Ok(object);
    }
    if resource.plural == "customresourcedefinitions" {
        crd::accept(&mut object, &app.registry)?;
    }
    let stored = app
        .store
        .create(&key, object)
        .await
        .map_err(|e| ApiError::from_store(e, &resource.qualified(), &name))?;
    Ok((*stored).clone())
}
