//! The target of a request: the resource and namespace an object is in,
//! with the request's write options and the warnings admission leaves
//! for the client. Apart from `mod.rs`, so that every module of the
//! object layer can use it without depending on the layer's exports.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::meta;
use crate::{
    server::{app::App, registry::Resource, status::ApiError},
    storage::Revision,
};

/// Where an object is written, and how the request asks for it to be.
pub(crate) struct Target {
    pub(crate) resource: Arc<Resource>,
    pub(crate) namespace: Option<String>,
    /// `dryRun=All`: admit and answer as if written, write nothing.
    pub(crate) dry_run: bool,
    pub(crate) field_validation: FieldValidation,
    /// Warnings for the client (unknown fields dropped), behind a lock
    /// because admission holds the target by shared reference in futures
    /// that must be `Send`.
    warnings: Mutex<Vec<String>>,
}

impl Target {
    pub(crate) fn new(resource: Arc<Resource>, namespace: Option<&str>) -> Self {
        Self {
            resource,
            namespace: namespace.map(str::to_owned),
            dry_run: false,
            field_validation: FieldValidation::Warn,
            warnings: Mutex::default(),
        }
    }

    /// Where a stored object is, found by its `apiVersion` and `kind`
    /// (for writes that start from an object rather than a path).
    pub(crate) fn of(app: &App, object: &Value) -> Result<Self, ApiError> {
        let text = |field: &str| {
            object
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let resource = app
            .registry
            .for_kind(text("apiVersion"), text("kind"))
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "no resource serves {} {}",
                    text("apiVersion"),
                    text("kind")
                ))
            })?;
        Ok(Self::new(
            resource,
            meta::meta(object, "namespace").as_deref(),
        ))
    }

    /// The store key of the object named `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        self.resource.key(self.namespace.as_deref(), name)
    }

    /// The stored object named `name` and its revision, or 404 naming it.
    pub(crate) fn stored(&self, app: &App, name: &str) -> Result<(Revision, Arc<Value>), ApiError> {
        app.store
            .get(&self.key(name))
            .ok_or_else(|| not_found(&self.resource, name))
    }

    pub(crate) fn warn(&self, warning: String) {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(warning);
    }

    /// The warnings so far, leaving none.
    pub(crate) fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What happens to fields the schema does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning per field (the server's default).
    Warn,
    /// Refused.
    Strict,
}

pub(super) fn not_found(resource: &Resource, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: resource.qualified(),
        name: name.to_owned(),
    }
}

/// The object moved on since the writer read it.
/// 422 for a resourceVersion that is no revision (see
/// [`super::meta::named_revision`]).
pub(super) fn invalid_revision(resource: &Resource, name: &str, value: Value) -> ApiError {
    ApiError::Invalid {
        kind: resource.kind.clone(),
        group: resource.group.clone(),
        name: name.to_owned(),
        errors: crate::FieldErrors(vec![crate::FieldError {
            field: "metadata.resourceVersion".into(),
            kind: crate::FieldErrorKind::Invalid,
            value: Some(value),
            detail: "must be a resourceVersion read from the server".into(),
        }]),
    }
}

pub(super) fn conflict(resource: &Resource, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: resource.qualified(),
        name: name.to_owned(),
    }
}
