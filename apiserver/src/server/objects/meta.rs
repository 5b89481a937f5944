//! Reading and writing an object's metadata, and the values the server
//! stamps on objects (uids, timestamps, generated names). The lowest
//! module of the object layer, so that server start, CRD handling and the
//! HTTP layer take these from one place without depending on each other.

use rand::RngExt;
use serde_json::{Map, Value, json};

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
    if let Some(other) = map.get("metadata").filter(|m| !m.is_object()) {
        return Err(ApiError::BadRequest(format!(
            "metadata must be an object, got {}",
            what(other)
        )));
    }
    if deeper_than(object, MAX_DEPTH) {
        return Err(ApiError::BadRequest(format!(
            "the object nests more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

/// How deep an object may nest. The store reads objects back with
/// serde_json, which refuses more than 128 levels: an object deeper than
/// that, once written, would stop the server from starting. (A body is
/// parsed under the same limit, but a JSON patch's `move`s can nest an
/// object further.)
pub(crate) const MAX_DEPTH: usize = 100;

/// Whether `value` nests more than `limit` levels, found without
/// recursion, so no depth overflows the stack.
fn deeper_than(value: &Value, limit: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth + 1 > limit {
            return true;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    false
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

/// The revision a write names as read, if any (an empty string names
/// none, as on kube-apiserver).
///
/// # Errors
/// The resourceVersion as written, when it is no revision. kube-apiserver
/// answers such a write with a 500; here it is a 422 naming the field, and
/// never, as it once was, an unconditional write.
pub(crate) fn named_revision(object: &Value) -> Result<Option<Revision>, Value> {
    match object.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(rv)) if rv.is_empty() => Ok(None),
        Some(Value::String(rv)) => rv.parse().map(Some).map_err(|_| json!(rv)),
        Some(other) => Err(other.clone()),
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut value = json!(1);
        for _ in 0..levels {
            value = json!({"a": [value]});
        }
        value
    }

    #[test]
    fn objects_nesting_deeper_than_the_store_reads_back_are_refused() {
        // Each level of `nested` is an object and a list: two levels.
        assert!(well_formed(&nested(MAX_DEPTH / 2)).is_ok());
        assert!(matches!(
            well_formed(&nested(MAX_DEPTH / 2 + 1)),
            Err(ApiError::BadRequest(m)) if m.contains("levels deep")
        ));
        assert!(!deeper_than(&nested(3), 6) && deeper_than(&nested(3), 5));
    }
}
