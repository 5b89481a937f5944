//! Admission: what every create and update goes through before it is
//! stored. The object must be of the kind and namespace its path names;
//! custom resources are pruned, defaulted and validated against their
//! schema; every name is checked.

use serde_json::Value;

use super::{
    builtin,
    meta::{meta, metadata_mut, well_formed},
    target::{FieldValidation, Target},
};
use crate::{FieldErrors, server::status::ApiError, validate_object_name};

/// Fill `apiVersion` and `kind`, and refuse an object of another kind or
/// namespace than the path names.
pub(super) fn check_identity(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let resource = &target.resource;
    well_formed(object)?;
    let map = object.as_object_mut().expect("checked by well_formed");
    let api_version = resource.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {
            map.insert("apiVersion".into(), Value::String(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != resource.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        _ => {
            map.insert("kind".into(), Value::String(resource.kind.clone()));
        }
    }
    let metadata = metadata_mut(object);
    if resource.namespaced {
        let path_ns = target.namespace.clone().unwrap_or_default();
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != path_ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {
                metadata.insert("namespace".into(), Value::String(path_ns));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    Ok(())
}

/// What the server does to built-in kinds on write; pruning, schema
/// defaults and validation for custom resources; name checks for every
/// kind. An undeclared field is pruned, with a warning
/// unless `fieldValidation=Ignore`, or refused with
/// `fieldValidation=Strict`.
pub(super) fn admit(
    target: &Target,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let resource = &target.resource;
    builtin::prepare(resource, object, old);
    let mut errors = validate_object_name(object);
    if let Err(error) = builtin::check_type(resource, object) {
        errors.push(error);
    }
    if let Some(validator) = &resource.validator {
        let unknown = validator.prune(object);
        if target.field_validation == FieldValidation::Warn {
            for field in &unknown {
                target.warn(format!("unknown field \"{field}\""));
            }
        }
        if target.field_validation == FieldValidation::Strict && !unknown.is_empty() {
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = resource.kind,
                version = resource.version,
            )));
        }
        *object = validator.default(object);
        if let Err(FieldErrors(more)) = validator.validate(object, old) {
            errors.extend(more);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: resource.kind.clone(),
            group: resource.group.clone(),
            name: meta(object, "name").unwrap_or_default(),
            errors: FieldErrors(errors),
        })
    }
}
