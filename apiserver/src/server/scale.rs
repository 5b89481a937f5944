//! The scale subresource: an `autoscaling/v1` Scale whose replicas are read
//! from and written to the paths a CRD names (for a Service,
//! `.spec.desiredCount` and `.status.runningCount`).

use serde_json::{Value, json};

use super::{registry::Resource, status::ApiError};

/// `.spec.desiredCount` as a JSON pointer.
fn pointer(path: &str) -> String {
    path.replace('.', "/")
}

/// The Scale of `object`.
pub(super) fn of(resource: &Resource, object: &Value) -> Option<Value> {
    let (spec_path, status_path, selector_path) = resource.scale.as_ref()?;
    let metadata = object.get("metadata").cloned().unwrap_or(Value::Null);
    let field = |path: &str| object.pointer(&pointer(path)).cloned();
    Some(json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": {"replicas": field(spec_path).unwrap_or(json!(0))},
        "status": {
            "replicas": field(status_path).unwrap_or(json!(0)),
            "selector": selector_path.as_deref().and_then(field).unwrap_or(json!("")),
        },
    }))
}

/// `object` with the replicas of `scale` written to the spec path.
pub(super) fn apply(resource: &Resource, object: &Value, scale: &Value) -> Result<Value, ApiError> {
    let (spec_path, ..) = resource.scale.as_ref().ok_or(ApiError::NoRoute)?;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::BadRequest("spec.replicas of the Scale must be an integer".into())
        })?;
    let mut next = object.clone();
    let mut node = &mut next;
    let parts: Vec<&str> = spec_path.trim_start_matches('.').split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = node
            .as_object_mut()
            .ok_or_else(|| ApiError::Internal(format!("{spec_path} does not lead to a field")))?;
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), json!(replicas));
            break;
        }
        node = map.entry(*part).or_insert_with(|| json!({}));
    }
    Ok(next)
}
