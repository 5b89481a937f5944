//! Reading and writing an object's metadata, and the values the server
//! stamps on objects (uids, timestamps, generated names). The lowest
//! module of the object layer, so that server start, CRD handling and the
//! HTTP layer take these from one place without depending on each other.

use rand::RngExt;
use serde_json::{Map, Value};

use crate::{server::status::ApiError, storage::Revision};

/// Refuse what cannot be an object: a body (or a patch's result) that is
/// not a JSON object, or whose `metadata` is not one. Every write checks
/// this first, so the rest of the layer may take both for objects.
pub(crate) fn well_formed(object: &Value) -> Result<(), ApiError> {
    let what = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let Some(map) = object.as_object() else {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized: expected a JSON object, got {}",
            what(object)
        )));
    };
    match map.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "metadata must be an object, got {}",
            what(other)
        ))),
    }
}

/// A string field of the object's metadata.
pub(crate) fn meta(object: &Value, field: &str) -> Option<String> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// The object's metadata, created empty if missing. The object has passed
/// [`well_formed`].
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let map = object.as_object_mut().expect("objects are JSON objects");
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("metadata is an object")
}

/// The revision the object says it was read at.
pub(crate) fn revision_of(object: &Value) -> Option<Revision> {
    meta(object, "resourceVersion").and_then(|r| r.parse().ok())
}

/// A random (version 4) UUID.
pub(crate) fn uid() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The current time to the second, as Kubernetes timestamps are written.
pub(crate) fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

/// The five characters `generateName` is completed with, from the
/// alphabet kube-apiserver uses (no vowels, so no words by chance).
pub(crate) fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect()
}
