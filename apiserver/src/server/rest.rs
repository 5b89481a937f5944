//! The REST semantics of kube-apiserver over the store: one handler for
//! every `/api/v1/...` and `/apis/{group}/{version}/...` path.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use rand::RngExt;
use serde_json::{Map, Value, json};

use super::{
    App,
    gc::{self, Propagation},
    registry::Resource,
    scale,
    selector::Selector,
    status::ApiError,
    table,
};
use crate::{
    FieldError, FieldErrorKind, FieldErrors,
    storage::{EventKind, Revision, StoreError},
    validate_object_name,
};

/// What a path names, and how the request asks for it to be written.
pub(super) struct Target {
    pub(super) resource: Arc<Resource>,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
    /// `dryRun=All`: admit and answer as if written, write nothing.
    pub(super) dry_run: bool,
    pub(super) field_validation: FieldValidation,
    /// `Warning` headers for the response (unknown fields dropped).
    warnings: std::sync::Mutex<Vec<String>>,
}

impl Target {
    fn new(
        resource: Arc<Resource>,
        namespace: Option<&str>,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Self {
        Self {
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
            dry_run: false,
            field_validation: FieldValidation::Warn,
            warnings: std::sync::Mutex::default(),
        }
    }

    /// Take the write options from the query: `dryRun` and
    /// `fieldValidation`, refusing values the real server refuses.
    fn with_options(mut self, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        self.dry_run = match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "unsupported dryRun value {other:?}: supported values: \"All\""
                )));
            }
        };
        self.field_validation = match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid fieldValidation value {other:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
                )));
            }
        };
        Ok(self)
    }

    fn warn(&self, warning: String) {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(warning);
    }

    /// The response with a `Warning: 299` header per warning, as
    /// kube-apiserver sends them (kubectl prints them).
    fn with_warnings(&self, mut response: Response) -> Response {
        let warnings = std::mem::take(
            &mut *self
                .warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for warning in warnings {
            let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(value) = header::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        response
    }
}

/// What happens to fields the schema does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning per field (the server's default).
    Warn,
    /// Refused.
    Strict,
}

/// Resolve `/api/v1/...` or `/apis/{g}/{v}/...` (the part after the
/// version) to a target.
pub(super) fn resolve(
    app: &App,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let find = |plural: &str| {
        app.registry
            .get(group, version, plural)
            .ok_or(ApiError::NoRoute)
    };
    let target = Target::new;
    // `namespaces/{ns}/{plural}/...` when {plural} is namespaced.
    if let ["namespaces", ns, plural, more @ ..] = rest
        && let Some(resource) = app
            .registry
            .get(group, version, plural)
            .filter(|r| r.namespaced)
    {
        return match more {
            [] => Ok(target(resource, Some(ns), None, None)),
            [name] => Ok(target(resource, Some(ns), Some(name), None)),
            [name, sub] => Ok(target(resource, Some(ns), Some(name), Some(sub))),
            _ => Err(ApiError::NoRoute),
        };
    }
    match rest {
        [plural] => Ok(target(find(plural)?, None, None, None)),
        [plural, name] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(target(resource, None, Some(name), None))
        }
        [plural, name, sub] => {
            let resource = find(plural)?;
            if resource.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(target(resource, None, Some(name), Some(sub)))
        }
        _ => Err(ApiError::NoRoute),
    }
}

/// The largest request body accepted, as kube-apiserver's.
pub(super) const MAX_BODY: usize = 3 * 1024 * 1024;

pub(super) async fn handle(
    app: Arc<App>,
    method: Method,
    target: Target,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = target.with_options(&query)?;
    let response = respond(&app, &target, method, &query, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    Ok(target.with_warnings(response))
}

async fn respond(
    app: &Arc<App>,
    target: &Target,
    method: Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource = Arc::clone(&target.resource);
    let as_table = table::wanted(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match (
        method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None) if is_true(query.get("watch")) => {
            watch(app, target, query, as_table)
        }
        (Method::GET, None, None) => list(app, target, query, as_table),
        (Method::POST, None, None) => {
            let object = parse_body(&body, headers)?;
            create(app, target, object)
                .await
                .map(|o| (StatusCode::CREATED, json_body(&o)).into_response())
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let key = resource.key(target.namespace.as_deref(), name);
            let (revision, object) = stored(app, &key, &resource, name)?;
            if as_table {
                let rows = table::table(&resource, &[&object], &revision.to_string(), false);
                return Ok(json_body(&rows).into_response());
            }
            Ok(json_body(&object).into_response())
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let object = parse_body(&body, headers)?;
            let status_only = sub.is_some();
            update(app, target, name, object, status_only)
                .await
                .map(|o| json_body(&o).into_response())
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            if content_type == "application/apply-patch+yaml" {
                let manager = query
                    .get("fieldManager")
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        ApiError::BadRequest("fieldManager is required for apply requests".into())
                    })?;
                let applied: Value = serde_yaml::from_slice(&body).map_err(|e| {
                    ApiError::BadRequest(format!("the apply patch is not valid YAML: {e}"))
                })?;
                if !applied.is_object() {
                    return Err(ApiError::BadRequest(
                        "the apply patch must be an object".into(),
                    ));
                }
                let request = ApplyRequest {
                    manager,
                    force: is_true(query.get("force")),
                    subresource: sub,
                };
                return server_side_apply(app, target, name, applied, &request).await;
            }
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))?;
            patch_object(app, target, name, &content_type, &patch, sub.is_some())
                .await
                .map(|o| json_body(&o).into_response())
        }
        (Method::GET, Some(name), Some("scale")) if resource.scale.is_some() => {
            let key = resource.key(target.namespace.as_deref(), name);
            let (_, object) = stored(app, &key, &resource, name)?;
            let scale = scale::of(&resource, &object).ok_or(ApiError::NoRoute)?;
            Ok(json_body(&scale).into_response())
        }
        (method @ (Method::PUT | Method::PATCH), Some(name), Some("scale"))
            if resource.scale.is_some() =>
        {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let change: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            rescale(app, target, name, &method, &content_type, &change)
                .await
                .map(|s| json_body(&s).into_response())
        }
        (Method::DELETE, Some(name), None) => {
            // DeleteOptions come in the body (kubectl, kube-rs) or the query.
            let protobuf = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"));
            let options: Value = if body.is_empty() {
                Value::Null
            } else if protobuf {
                super::protobuf::delete_options(&body)?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
            };
            let policy = Propagation::parse(
                options
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .or(query.get("propagationPolicy").map(String::as_str)),
            )?;
            let dry_run = target.dry_run
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            delete(app, target, name, policy, dry_run)
                .await
                .map(|o| json_body(&o).into_response())
        }
        (method, _, sub) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported on {}{}",
            resource.qualified(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// What a server-side apply request asks for, besides the object.
struct ApplyRequest<'a> {
    manager: &'a str,
    force: bool,
    subresource: Option<&'a str>,
}

/// Server-side apply: create the object if it is missing, else merge the
/// manager's fields into it against the revision read, retrying if the
/// object moved.
async fn server_side_apply(
    app: &App,
    target: &Target,
    name: &str,
    mut applied: Value,
    request: &ApplyRequest<'_>,
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    let key = resource.key(target.namespace.as_deref(), name);
    let schema = resource
        .validator
        .as_ref()
        .map_or(Value::Null, |v| v.schema().clone());
    let api_version = resource.api_version();
    let apply = super::apply::Apply {
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
    for _ in 0..5 {
        let Some((revision, current)) = app.store.get(&key) else {
            if status_only {
                return Err(not_found(resource, name));
            }
            let object = super::apply::apply(&json!({}), &applied, &apply)?;
            return match create(app, target, object).await {
                Err(ApiError::AlreadyExists { .. }) => continue,
                other => other.map(|o| (StatusCode::CREATED, json_body(&o)).into_response()),
            };
        };
        let mut next = super::apply::apply(&current, &applied, &apply)?;
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
        match update(app, target, name, next, status_only).await {
            Err(ApiError::Conflict { .. }) => continue,
            other => return other.map(|o| json_body(&o).into_response()),
        }
    }
    Err(ApiError::Conflict {
        resource: resource.qualified(),
        name: name.to_owned(),
    })
}

/// PUT or PATCH of the scale subresource: change the Scale, write its
/// replicas to the object, retry if the object moved meanwhile.
async fn rescale(
    app: &App,
    target: &Target,
    name: &str,
    method: &Method,
    content_type: &str,
    change: &Value,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    let key = resource.key(target.namespace.as_deref(), name);
    for _ in 0..5 {
        let (revision, current) = stored(app, &key, resource, name)?;
        let mut scale = scale::of(resource, &current).ok_or(ApiError::NoRoute)?;
        if *method == Method::PUT {
            scale = change.clone();
        } else if content_type.starts_with("application/json-patch+json") {
            let ops: json_patch::Patch = serde_json::from_value(change.clone())
                .map_err(|e| ApiError::BadRequest(format!("not a JSON patch: {e}")))?;
            json_patch::patch(&mut scale, &ops).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        } else {
            json_patch::merge(&mut scale, change);
        }
        let precondition = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(revision);
        let mut next = scale::apply(resource, &current, &scale)?;
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(precondition.to_string()),
        );
        match update(app, target, name, next, false).await {
            Err(ApiError::Conflict { .. }) if *method == Method::PATCH => {}
            Err(e) => return Err(e),
            Ok(updated) => return scale::of(resource, &updated).ok_or(ApiError::NoRoute),
        }
    }
    Err(ApiError::Conflict {
        resource: resource.qualified(),
        name: name.to_owned(),
    })
}

fn is_true(value: Option<&String>) -> bool {
    matches!(value.map(String::as_str), Some("true" | "1"))
}

fn json_body(value: &Value) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// The stored object at `key` and its revision, or 404 naming it.
fn stored(
    app: &App,
    key: &str,
    resource: &Resource,
    name: &str,
) -> Result<(Revision, Arc<Value>), ApiError> {
    app.store.get(key).ok_or_else(|| not_found(resource, name))
}

fn not_found(resource: &Resource, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: resource.qualified(),
        name: name.to_owned(),
    }
}

/// A JSON object from a request body.
fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return super::protobuf::decode(body);
    }
    if !content_type.starts_with("application/json") && !content_type.starts_with("*/*") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body's content type {content_type:?} is not supported; send application/json"
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object
        .get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let map = object.as_object_mut().expect("objects are JSON objects");
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("metadata is an object")
}

fn revision_of(object: &Value) -> Option<Revision> {
    meta(object, "resourceVersion").and_then(|r| r.parse().ok())
}

pub(super) fn uid() -> String {
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

pub(super) fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect()
}

/// Fill `apiVersion` and `kind`, and refuse an object of another kind or
/// namespace than the path names.
fn check_identity(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let resource = &target.resource;
    let map = object.as_object_mut().expect("objects are JSON objects");
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

/// Pruning, schema defaults and validation for custom resources; name
/// checks for every kind. An undeclared field is pruned, with a warning
/// unless `fieldValidation=Ignore`, or refused with
/// `fieldValidation=Strict`.
fn admit(target: &Target, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let resource = &target.resource;
    let mut errors = validate_object_name(object);
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

async fn create(app: &App, target: &Target, mut object: Value) -> Result<Value, ApiError> {
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
    let key = resource.key(target.namespace.as_deref(), &name);
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
        super::crd::accept(&mut object, &app.registry)?;
    }
    let stored = app
        .store
        .create(&key, object)
        .await
        .map_err(|e| ApiError::from_store(e, &resource.qualified(), &name))?;
    Ok((*stored).clone())
}

/// The object without what does not count as a change of its desired
/// state: metadata, and status when it has its own endpoint.
fn desired_state(object: &Value, status_apart: bool) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        if status_apart {
            map.remove("status");
        }
    }
    copy
}

async fn update(
    app: &App,
    target: &Target,
    name: &str,
    mut object: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    check_identity(&mut object, target)?;
    let key = resource.key(target.namespace.as_deref(), name);
    let (current_revision, current) = stored(app, &key, resource, name)?;
    if meta(&object, "name").as_deref() != Some(name) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta(&object, "name").unwrap_or_default()
        )));
    }
    let precondition = match revision_of(&object) {
        Some(revision) => Some(revision),
        None if resource.custom => {
            return Err(ApiError::Invalid {
                kind: resource.kind.clone(),
                group: resource.group.clone(),
                name: name.to_owned(),
                errors: FieldErrors(vec![FieldError {
                    field: "metadata.resourceVersion".into(),
                    kind: FieldErrorKind::Invalid,
                    value: Some(json!(0)),
                    detail: "must be specified for an update".into(),
                }]),
            });
        }
        None => None,
    };
    // A stale resourceVersion is a conflict before anything else, as on
    // kube-apiserver: a writer that read an old version must read again,
    // not be told its old view is invalid.
    if precondition.is_some_and(|p| p != current_revision) {
        return Err(ApiError::Conflict {
            resource: resource.qualified(),
            name: name.to_owned(),
        });
    }
    let mut next = if status_only {
        // Only status changes through /status.
        let mut next = (*current).clone();
        if let (Some(map), Some(status)) = (next.as_object_mut(), object.get("status")) {
            map.insert("status".into(), status.clone());
        }
        if let Some(managed) = object.pointer("/metadata/managedFields") {
            metadata_mut(&mut next).insert("managedFields".into(), managed.clone());
        }
        next
    } else {
        if resource.status
            && let Some(map) = object.as_object_mut()
        {
            match current.get("status") {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
        }
        object
    };
    // Who manages what stays recorded unless the writer says otherwise.
    if next.pointer("/metadata/managedFields").is_none()
        && let Some(managed) = current.pointer("/metadata/managedFields")
    {
        metadata_mut(&mut next).insert("managedFields".into(), managed.clone());
    }
    // Server-owned metadata stays as it was.
    let old_meta = current
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let metadata = metadata_mut(&mut next);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(owned) {
            Some(v) => metadata.insert(owned.into(), v.clone()),
            None => metadata.remove(owned),
        };
    }
    if !status_only
        && old_meta.contains_key("generation")
        && desired_state(&next, resource.status) != desired_state(&current, resource.status)
    {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        metadata_mut(&mut next).insert("generation".into(), json!(generation));
    }
    admit(target, &mut next, Some(&current))?;
    if next == *current {
        return Ok((*current).clone());
    }
    // An object being deleted goes once its last finalizer is removed.
    let finalizers_left = next
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let precondition = precondition.or(Some(current_revision));
    if target.dry_run {
        if precondition != Some(current_revision) {
            return Err(ApiError::Conflict {
                resource: resource.qualified(),
                name: name.to_owned(),
            });
        }
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(current_revision.to_string()),
        );
        return Ok(next);
    }
    if old_meta.contains_key("deletionTimestamp") && !finalizers_left {
        let deleted = app
            .store
            .delete(&key, precondition)
            .await
            .map_err(|e| ApiError::from_store(e, &resource.qualified(), name))?;
        app.removed(&deleted);
        return Ok((*deleted).clone());
    }
    app.store
        .update(&key, next, precondition)
        .await
        .map(|o| (*o).clone())
        .map_err(|e| ApiError::from_store(e, &resource.qualified(), name))
}

async fn patch_object(
    app: &App,
    target: &Target,
    name: &str,
    content_type: &str,
    patch: &Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    let key = resource.key(target.namespace.as_deref(), name);
    // A patch that names a resourceVersion is a precondition, as on a real
    // API server: it conflicts instead of being retried.
    let precondition = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Read, patch, write against the revision read; retry if it moved.
    for _ in 0..5 {
        let (revision, current) = stored(app, &key, resource, name)?;
        let mut next = (*current).clone();
        match content_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                json_patch::merge(&mut next, patch);
            }
            "application/json-patch+json" => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::BadRequest(format!("not a JSON patch: {e}")))?;
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
        metadata_mut(&mut next).insert(
            "resourceVersion".into(),
            Value::String(precondition.clone().unwrap_or(revision.to_string())),
        );
        match update(app, target, name, next, status_only).await {
            Err(ApiError::Conflict { .. }) if precondition.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict {
        resource: resource.qualified(),
        name: name.to_owned(),
    })
}

async fn delete(
    app: &App,
    target: &Target,
    name: &str,
    policy: Propagation,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    let key = resource.key(target.namespace.as_deref(), name);
    let (_, current) = stored(app, &key, resource, name)?;
    if dry_run {
        return Ok((*current).clone());
    }
    if resource.plural == "namespaces" && resource.group.is_empty() {
        gc::empty_namespace(app, name).await?;
    }
    let uid = meta(&current, "uid").unwrap_or_default();
    match policy {
        Propagation::Foreground => gc::delete_dependents(app, &uid).await?,
        Propagation::Orphan => gc::orphan(app, &uid).await?,
        Propagation::Background => {}
    }
    // Read again: dependents and their collection may have moved it on.
    let (revision, current) = stored(app, &key, resource, name)?;
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let result = if has_finalizers {
        // Finalizers hold the object: mark it and let their owners finish.
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((*current).clone());
        }
        let mut marked = (*current).clone();
        let metadata = metadata_mut(&mut marked);
        metadata.insert("deletionTimestamp".into(), Value::String(now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        app.store.update(&key, marked, Some(revision)).await
    } else {
        app.store.delete(&key, Some(revision)).await
    };
    let deleted = result.map_err(|e| ApiError::from_store(e, &resource.qualified(), name))?;
    if !has_finalizers {
        if resource.plural == "customresourcedefinitions" {
            super::crd::forget(&deleted, &app.registry);
        }
        if policy == Propagation::Background {
            app.removed(&deleted);
        }
    }
    Ok((*deleted).clone())
}

/// Delete a stored object, whatever its kind (for the garbage collector;
/// boxed, as deletions recurse through dependents).
pub(super) fn delete_object<'a>(
    app: &'a App,
    object: &'a Value,
    policy: Propagation,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        let target = target_of(app, object)?;
        let name = meta(object, "name").unwrap_or_default();
        delete(app, &target, &name, policy, false).await
    })
}

/// Write a stored object back as it is given, against its revision.
pub(super) async fn store_update(app: &App, object: &Value) -> Result<(), ApiError> {
    let target = target_of(app, object)?;
    let name = meta(object, "name").unwrap_or_default();
    let key = target.resource.key(target.namespace.as_deref(), &name);
    app.store
        .update(&key, object.clone(), revision_of(object))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_store(e, &target.resource.qualified(), &name))
}

fn target_of(app: &App, object: &Value) -> Result<Target, ApiError> {
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
    Ok(Target::new(
        resource,
        meta(object, "namespace").as_deref(),
        meta(object, "name").as_deref(),
        None,
    ))
}

/// Where a chunked list goes on from. Pages after the first are read
/// from the current state (there are no snapshots to read an older one
/// from) but report the first page's revision, so that a watch started
/// from the list replays every change made while it was paged: an object
/// created meanwhile ahead of the cursor is missed by the list but not by
/// the watch. A real apiserver serves every page from one snapshot; this
/// is the closest the event log allows, and expires with it (410).
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    key: String,
    revision: Revision,
}

fn list(
    app: &App,
    target: &Target,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    let selector = Selector::from_query(query)?;
    let prefix = resource.prefix(target.namespace.as_deref());
    let (mut revision, objects) = app.store.list(&prefix);
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|_| ApiError::BadRequest("invalid continue token".into()))?;
            let token: Continue = serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::BadRequest("invalid continue token".into()))?;
            if token.revision < app.store.compacted() {
                return Err(ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                ));
            }
            revision = token.revision;
            Some(token.key)
        }
        None => None,
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let key_of = |object: &Value| {
        resource.key(
            meta(object, "namespace").as_deref(),
            &meta(object, "name").unwrap_or_default(),
        )
    };
    let mut items = Vec::new();
    let mut remaining = 0usize;
    for object in &objects {
        if after.as_ref().is_some_and(|a| key_of(object) <= *a) || !selector.matches(object) {
            continue;
        }
        if items.len() == limit {
            remaining += 1;
        } else {
            items.push(&**object);
        }
    }
    if as_table {
        let rows = table::table(resource, &items, &revision.to_string(), false);
        return Ok(json_body(&rows).into_response());
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if remaining > 0 {
        let last_key = key_of(items.last().expect("limit reached"));
        let token = base64::engine::general_purpose::STANDARD.encode(
            serde_json::to_vec(&Continue {
                key: last_key,
                revision,
            })
            .unwrap_or_default(),
        );
        metadata["continue"] = Value::String(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = json!({
        "apiVersion": resource.api_version(),
        "kind": format!("{}List", resource.kind),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_body(&body).into_response())
}

fn watch(
    app: &App,
    target: &Target,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let resource = Arc::clone(&target.resource);
    let selector = Selector::from_query(query)?;
    let prefix = resource.prefix(target.namespace.as_deref());
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<Revision>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(30 * 60), Duration::from_secs);
    let request = WatchRequest {
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks: is_true(query.get("allowWatchBookmarks")),
        initial_events: is_true(query.get("sendInitialEvents")),
        selector,
        resource,
        as_table,
    };
    let stream = async_watch(app.store.clone(), &prefix, from, request);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn line(kind: &str, object: &Value) -> Result<Bytes, std::convert::Infallible> {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

/// The watch as a stream of newline-delimited `WatchEvent`s.
/// A watch event line around an already encoded object.
fn encoded_line(kind: &str, object: &[u8]) -> Result<Bytes, std::convert::Infallible> {
    let mut bytes = Vec::with_capacity(object.len() + 32);
    bytes.extend_from_slice(b"{\"type\":\"");
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(b"\",\"object\":");
    bytes.extend_from_slice(object);
    bytes.extend_from_slice(b"}\n");
    Ok(Bytes::from(bytes))
}

/// How a watch's events are filtered, shaped and ended.
struct WatchRequest {
    deadline: tokio::time::Instant,
    bookmarks: bool,
    /// Watch-list: after the initial events, a bookmark saying they ended.
    initial_events: bool,
    selector: Selector,
    resource: Arc<Resource>,
    as_table: bool,
}

fn async_watch(
    store: crate::storage::Store,
    prefix: &str,
    from: Option<Revision>,
    request: WatchRequest,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + use<> {
    let opened = store.watch(prefix, from);
    let request = Arc::new(request);
    let initial = request.initial_events;
    futures::stream::unfold(Some((opened, store, true, initial)), move |state| {
        let request = Arc::clone(&request);
        async move {
            let WatchRequest {
                deadline,
                bookmarks,
                initial_events: _,
                ref selector,
                ref resource,
                as_table,
            } = *request;
            let (opened, store, first, initial_pending) = state?;
            let mut watch = match opened {
                Ok(watch) => watch,
                Err(e) => {
                    let status = ApiError::from_store(e, &resource.qualified(), "").status();
                    return Some((line("ERROR", &status), None));
                }
            };
            let bookmark_every = Duration::from_secs(60);
            if initial_pending && watch.pending() == 0 {
                // Watch-list: the initial events are out; say so.
                let end = json!({
                    "apiVersion": resource.api_version(),
                    "kind": resource.kind,
                    "metadata": {
                        "resourceVersion": watch.revision().to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                return Some((
                    line("BOOKMARK", &end),
                    Some((Ok(watch), store, first, false)),
                ));
            }
            loop {
                let tick = tokio::time::sleep(bookmark_every);
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return None,
                    () = tick, if bookmarks => {
                        let bookmark = json!({
                            "apiVersion": resource.api_version(),
                            "kind": resource.kind,
                            "metadata": {"resourceVersion": store.revision().to_string()},
                        });
                        return Some((line("BOOKMARK", &bookmark), Some((Ok(watch), store, first, initial_pending))));
                    }
                    event = watch.next() => match event {
                        None => return None,
                        Some(Err(StoreError::Gone { requested, oldest })) => {
                            let status = ApiError::Gone(format!("too old resource version: {requested} ({oldest})")).status();
                            return Some((line("ERROR", &status), None));
                        }
                        Some(Err(e)) => {
                            let status = ApiError::Internal(e.to_string()).status();
                            return Some((line("ERROR", &status), None));
                        }
                        Some(Ok(event)) if selector.matches(&event.object) => {
                            let kind = match event.kind {
                                EventKind::Added => "ADDED",
                                EventKind::Modified => "MODIFIED",
                                EventKind::Deleted => "DELETED",
                            };
                            let line = if as_table {
                                // Column definitions come with the first event only.
                                let rows = table::table(resource, &[&event.object], &event.revision.to_string(), !first);
                                line(kind, &rows)
                            } else {
                                // Every watcher sends the same bytes: encode once.
                                encoded_line(kind, event.object_json())
                            };
                            return Some((line, Some((Ok(watch), store, false, initial_pending))));
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    })
}
