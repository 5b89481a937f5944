//! What a request says besides its path: the write options in its query
//! (`dryRun`, `fieldValidation`), its body in the content type it names
//! (JSON, protobuf, YAML for apply), and the `DeleteOptions` of a delete.
//! Malformed input is refused here with a 400 or 415, before the object
//! layer sees it.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    http::{HeaderMap, header},
};
use serde_json::Value;

use crate::{
    server::{
        objects::{ApplyRequest, FieldValidation, Propagation, Target},
        protobuf,
        status::ApiError,
    },
    storage::Revision,
};

/// The parts of a request the handlers read.
#[derive(Clone, Copy)]
pub(super) struct Request<'a> {
    pub(super) query: &'a HashMap<String, String>,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a Bytes,
}

/// The `resourceVersion` a read names: `None` for "any" (absent, empty or
/// `0`).
///
/// # Errors
/// 400 when it is not a number.
pub(super) fn resource_version(
    query: &HashMap<String, String>,
) -> Result<Option<Revision>, ApiError> {
    match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => Ok(None),
        Some(rv) => rv
            .parse::<Revision>()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Refuse a read at a resourceVersion the store has not reached. Reads
/// are served at the latest revision, which is at least any older one a
/// client may name (`resourceVersionMatch=NotOlderThan`, the default).
///
/// # Errors
/// 400 for a resourceVersion that is not a number; kube-apiserver's 504
/// "Too large resource version" for one newer than the store.
pub(super) fn readable_at(
    query: &HashMap<String, String>,
    current: Revision,
) -> Result<(), ApiError> {
    match resource_version(query)? {
        Some(requested) if requested > current => Err(ApiError::TooLargeResourceVersion {
            requested,
            current,
            watch: false,
        }),
        _ => Ok(()),
    }
}

/// Take the write options from the query: `dryRun` and
/// `fieldValidation`, refusing values the real server refuses.
pub(super) fn write_options(
    target: &mut Target,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    target.dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unsupported dryRun value {other:?}: supported values: \"All\""
            )));
        }
    };
    target.field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid fieldValidation value {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            )));
        }
    };
    Ok(())
}

/// Whether a boolean query parameter is set.
pub(super) fn is_true(value: Option<&String>) -> bool {
    matches!(value.map(String::as_str), Some("true" | "1"))
}

impl Request<'_> {
    pub(super) fn flag(&self, name: &str) -> bool {
        is_true(self.query.get(name))
    }

    /// The `Content-Type` header, if it is text.
    pub(super) fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// The media type of a patch, without parameters.
    pub(super) fn patch_type(&self) -> String {
        self.content_type()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// A JSON object from the body, sent as JSON or protobuf.
    pub(super) fn object(&self) -> Result<Value, ApiError> {
        let content_type = self.content_type().unwrap_or("application/json");
        if content_type.starts_with("application/vnd.kubernetes.protobuf") {
            return protobuf::decode(self.body);
        }
        if !content_type.starts_with("application/json") && !content_type.starts_with("*/*") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body's content type {content_type:?} is not supported; send application/json"
            )));
        }
        let value: Value = serde_json::from_slice(self.body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        Ok(value)
    }

    /// Any JSON value from the body; `what` names it in the error.
    pub(super) fn json(&self, what: &str) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::BadRequest(format!("{what} is not valid JSON: {e}")))
    }

    /// The object of a server-side apply (YAML, of which JSON is a part)
    /// and who applies it.
    pub(super) fn apply<'a>(
        &'a self,
        subresource: Option<&'a str>,
    ) -> Result<(Value, ApplyRequest<'a>), ApiError> {
        let manager = self
            .query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest("fieldManager is required for apply requests".into())
            })?;
        let applied: Value = serde_yaml::from_slice(self.body)
            .map_err(|e| ApiError::BadRequest(format!("the apply patch is not valid YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::BadRequest(
                "the apply patch must be an object".into(),
            ));
        }
        let request = ApplyRequest {
            manager,
            force: self.flag("force"),
            subresource,
        };
        Ok((applied, request))
    }

    /// The propagation policy and dry run of a delete. DeleteOptions come
    /// in the body (kubectl, kube-rs) or the query.
    pub(super) fn delete_options(&self, target: &Target) -> Result<(Propagation, bool), ApiError> {
        let is_protobuf = self
            .content_type()
            .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"));
        let options: Value = if self.body.is_empty() {
            Value::Null
        } else if is_protobuf {
            protobuf::delete_options(self.body)?
        } else {
            serde_json::from_slice(self.body)
                .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
        };
        let policy = Propagation::parse(
            options
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .or(self.query.get("propagationPolicy").map(String::as_str)),
        )?;
        let dry_run = target.dry_run
            || options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All"));
        Ok((policy, dry_run))
    }
}
