//! Changes made to the stored object rather than sent whole: merge and
//! JSON patches, server-side apply, and the scale subresource. Each reads
//! the object, changes it, and writes it through `update` against the
//! revision read, retrying a few times when another writer got there
//! first, unless the client named the revision it read (a precondition
//! conflicts instead).

use serde_json::{Value, json};

use super::{
    admission::check_identity,
    create::create,
    meta::{meta, metadata_mut, named_revision, now, well_formed},
    strategic,
    target::{Target, conflict, invalid_revision, not_found},
    update::update,
};
use crate::{
    FieldError, FieldErrorKind, FieldErrors,
    server::{
        app::App,
        apply::{self, Apply},
        scale,
        status::ApiError,
    },
};

/// How many times a change is made again on an object that moved.
const ATTEMPTS: usize = 5;

/// The most operations one JSON patch may hold, as kube-apiserver allows.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A JSON patch's operations, at most [`MAX_JSON_PATCH_OPERATIONS`].
fn json_patch_ops(patch: &Value) -> Result<json_patch::Patch, ApiError> {
    let count = patch.as_array().map_or(0, Vec::len);
    if count > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::RequestTooLarge(format!(
            "The allowed count of operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, but found {count}"
        )));
    }
    serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::BadRequest(format!("not a JSON patch: {e}")))
}

/// Patch the object: `content_type` names the patch type
/// (`application/merge-patch+json`, ...); a status-only patch changes
/// only the status.
pub(crate) async fn patch(
    app: &App,
    target: &Target,
    name: &str,
    content_type: &str,
    patch: &Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    // A patch that names a resourceVersion is a precondition, as on a real
    // API server: it conflicts instead of being retried.
    let precondition = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    for _ in 0..ATTEMPTS {
        let (revision, current) = target.stored(app, name)?;
        let mut next = (*current).clone();
        match content_type {
            // Custom resources have no patch strategies to merge by, so
            // kube-apiserver refuses a strategic merge patch of one.
            "application/strategic-merge-patch+json" if resource.custom => {
                return Err(ApiError::UnsupportedMediaType(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
                ));
            }
            "application/strategic-merge-patch+json" => {
                well_formed(patch)?;
                next = strategic::patch(&resource.kind, &next, patch)
                    .map_err(|e| ApiError::BadRequest(format!("the strategic merge patch: {e}")))?;
            }
            "application/merge-patch+json" => json_patch::merge(&mut next, patch),
            "application/json-patch+json" => {
                let ops = json_patch_ops(patch)?;
                json_patch::patch(&mut next, &ops).map_err(|e| ApiError::Invalid {
                    kind: resource.kind.clone(),
                    group: resource.group.clone(),
                    name: name.to_owned(),
                    errors: FieldErrors(vec![FieldError {
                        field: e.path.to_string(),
                        kind: FieldErrorKind::Invalid,
                        value: None,
                        detail: e.kind.to_string(),
                    }]),
                })?;
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the patch type {other:?} is not supported; use application/merge-patch+json or application/json-patch+json"
                )));
            }
        }
        well_formed(&next)?;
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(precondition.clone().unwrap_or(revision.to_string())),
        );
        match update(app, target, name, next, status_only).await {
            Err(ApiError::Conflict { .. }) if precondition.is_none() => continue,
            other => return other,
        }
    }
    Err(conflict(resource, name))
}

/// Change the object's Scale: `patch_type` is the patch's media type, or
/// `None` when the whole Scale is sent (PUT); the Scale's replicas are
/// written to the object. Only patches are made again when the object
/// moved; a PUT conflicts.
pub(crate) async fn rescale(
    app: &App,
    target: &Target,
    name: &str,
    patch_type: Option<&str>,
    change: &Value,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    for _ in 0..ATTEMPTS {
        let (revision, current) = target.stored(app, name)?;
        let mut scale = scale::of(resource, &current).ok_or(ApiError::NoRoute)?;
        match patch_type {
            None => scale = change.clone(),
            Some(t) if t.starts_with("application/json-patch+json") => {
                let ops = json_patch_ops(change)?;
                json_patch::patch(&mut scale, &ops)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            }
            Some(_) => json_patch::merge(&mut scale, change),
        }
        let precondition = named_revision(&scale)
            .map_err(|rv| invalid_revision(resource, name, rv))?
            .unwrap_or(revision);
        let mut next = scale::apply(resource, &current, &scale)?;
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(precondition.to_string()),
        );
        match update(app, target, name, next, false).await {
            Err(ApiError::Conflict { .. }) if patch_type.is_some() => {}
            Err(e) => return Err(e),
            Ok(updated) => return scale::of(resource, &updated).ok_or(ApiError::NoRoute),
        }
    }
    Err(conflict(resource, name))
}

/// What a server-side apply request asks for, besides the object.
pub(crate) struct ApplyRequest<'a> {
    pub(crate) manager: &'a str,
    pub(crate) force: bool,
    /// `status` for an apply to the status subresource.
    pub(crate) subresource: Option<&'a str>,
}

/// What a write that may create the object did.
pub(crate) enum Written {
    Created(Value),
    Updated(Value),
}

/// Server-side apply: create the object if it is missing, else merge the
/// manager's fields into it against the revision read, retrying if the
/// object moved.
pub(crate) async fn server_side_apply(
    app: &App,
    target: &Target,
    name: &str,
    mut applied: Value,
    request: &ApplyRequest<'_>,
) -> Result<Written, ApiError> {
    let resource = &target.resource;
    let key = target.key(name);
    let schema = resource.validator.as_ref().map_or_else(
        || strategic::apply_schema(&resource.kind),
        |v| v.schema().clone(),
    );
    let api_version = resource.api_version();
    let apply = Apply {
        manager: request.manager,
        force: request.force,
        subresource: request.subresource.unwrap_or_default(),
        api_version: &api_version,
        status_apart: resource.status,
        schema: &schema,
        now: now(),
    };
    check_identity(&mut applied, target)?;
    match meta(&applied, "name") {
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
        None => {
            metadata_mut(&mut applied).insert("name".into(), Value::String(name.to_owned()));
        }
    }
    let status_only = request.subresource.is_some();
    for _ in 0..ATTEMPTS {
        let Some((revision, current)) = app.store.get(&key) else {
            if status_only {
                return Err(not_found(resource, name));
            }
            let object = apply::apply(&json!({}), &applied, &apply)?;
            return match create(app, target, object).await {
                Err(ApiError::AlreadyExists { .. }) => continue,
                other => other.map(Written::Created),
            };
        };
        let mut next = apply::apply(&current, &applied, &apply)?;
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
        match update(app, target, name, next, status_only).await {
            Err(ApiError::Conflict { .. }) => continue,
            other => return other.map(Written::Updated),
        }
    }
    Err(conflict(resource, name))
}
