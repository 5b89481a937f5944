//! What the server does when a CustomResourceDefinition is created or
//! deleted: start or stop serving its resources.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::{objects::meta::now, registry::Registry, status::ApiError};
use crate::{FieldError, FieldErrorKind, FieldErrors};

/// Check a new CRD, serve its resources, and report it established.
pub(super) fn accept(object: &mut Value, registry: &Registry) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let invalid = |field: &str, detail: String| ApiError::Invalid {
        kind: "CustomResourceDefinition".into(),
        group: "apiextensions.k8s.io".into(),
        name: name.clone(),
        errors: FieldErrors(vec![FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: None,
            detail,
        }]),
    };
    let crd: CustomResourceDefinition =
        serde_json::from_value(object.clone()).map_err(|e| invalid("spec", e.to_string()))?;
    let expected = format!("{}.{}", crd.spec.names.plural, crd.spec.group);
    if name != expected {
        return Err(invalid(
            "metadata.name",
            format!("must be spec.names.plural+\".\"+spec.group ({expected})"),
        ));
    }
    registry
        .register(&crd)
        .map_err(|e| invalid("spec.versions[].schema.openAPIV3Schema", e.to_string()))?;
    let stored: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    object["status"] = json!({
        "acceptedNames": crd.spec.names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
        ],
    });
    Ok(())
}

/// Stop serving a deleted CRD's resources.
pub(super) fn forget(object: &Value, registry: &Registry) {
    let group = object
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = object
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    registry.unregister(group, plural);
}

/// Serve every CRD already in the store (at start).
pub(super) fn restore(objects: &[std::sync::Arc<Value>], registry: &Registry) {
    for object in objects {
        match serde_json::from_value::<CustomResourceDefinition>((**object).clone()) {
            Ok(crd) => {
                if let Err(e) = registry.register(&crd) {
                    tracing::warn!(crd = ?crd.metadata.name, error = %e, "stored CRD no longer compiles; not served");
                }
            }
            Err(e) => tracing::warn!(error = %e, "stored CRD does not parse; not served"),
        }
    }
}
