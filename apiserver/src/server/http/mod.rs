//! The HTTP layer of the REST surface: one handler for every
//! `/api/v1/...` and `/apis/{group}/{version}/...` path. It turns a
//! method, path, query, headers and body into a call on the object layer
//! (`super::objects`) and the result into a response (JSON or a table,
//! with `Warning` headers). Lists and watches are served here, as they
//! only read and so have no object rules to apply. The object layer
//! never calls back into this one.

mod list;
mod request;
mod response;
mod route;
mod view;
mod watch;

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};

use self::request::{Request, write_options};
use self::response::{json_body, with_warnings};
use self::route::Route;
pub(crate) use self::route::resolve;
use super::{
    access::{self, Identity},
    app::App,
    impersonation,
    objects::{self, Written, meta::meta},
    registry::Resource,
    scale,
    status::ApiError,
    table,
};
use serde_json::{Value, json};

/// The largest request body accepted, as kube-apiserver's.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

/// Serve a request on a resolved route. Write options the server refuses
/// are an error before anything is read; every other answer carries the
/// warnings the request collected.
pub(crate) async fn handle(
    app: Arc<App>,
    method: Method,
    mut route: Route,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write_options(&mut route.target, &query)?;
    let request = Request {
        query: &query,
        headers: &headers,
        body: &body,
    };
    let response = respond(&app, &route, method, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    Ok(with_warnings(&route.target, response))
}

/// Which verb the method means on the path, as kube-apiserver maps them.
async fn respond(
    app: &App,
    route: &Route,
    method: Method,
    request: Request<'_>,
) -> Result<Response, ApiError> {
    let target = &route.target;
    let resource = &target.resource;
    let as_table = table::wanted(
        request
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let scalable = resource.scale.is_some();
    let view = route.view;
    let shown = |object: &Value| json_body(&view.shown(object)).into_response();
    match (method, route.name.as_deref(), route.subresource.as_deref()) {
        (Method::GET, None, None) => {
            let query = view.query(request.query);
            let read = list::Read {
                target,
                query: &query,
                as_table,
                view,
            };
            if request.flag("watch") {
                watch::watch(app, &read)
            } else {
                list::list(app, &read)
            }
        }
        (Method::POST, None, None) => {
            let object = view.to_stored(request.object()?);
            let created = objects::create(app, target, object).await?;
            Ok((StatusCode::CREATED, shown(&created)).into_response())
        }
        (Method::GET, Some(name), None | Some("status")) => {
            request::readable_at(request.query, app.store.revision())?;
            let (revision, object) = target.stored(app, name)?;
            if as_table {
                let rows = table::table(resource, &[&object], &revision.to_string(), false);
                return Ok(json_body(&rows).into_response());
            }
            Ok(shown(&object))
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let object = view.to_stored(request.object()?);
            let updated = objects::update(app, target, name, object, sub.is_some()).await?;
            Ok(shown(&updated))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let patched = patch(app, route, name, request, sub).await?;
            Ok(match patched {
                Written::Created(object) => (StatusCode::CREATED, shown(&object)).into_response(),
                Written::Updated(object) => shown(&object),
            })
        }
        (Method::GET, Some(name), Some("scale")) if scalable => {
            let (_, object) = target.stored(app, name)?;
            let scale = scale::of(resource, &object).ok_or(ApiError::NoRoute)?;
            Ok(json_body(&scale).into_response())
        }
        (method @ (Method::PUT | Method::PATCH), Some(name), Some("scale")) if scalable => {
            let patch_type = request.content_type().unwrap_or("application/json");
            let patch_type = (method == Method::PATCH).then_some(patch_type);
            let change = request.json("the body")?;
            let scale = objects::rescale(app, target, name, patch_type, &change).await?;
            Ok(json_body(&scale).into_response())
        }
        (Method::DELETE, Some(name), None) => {
            let (policy, dry_run) = request.delete_options(target)?;
            let deleted = objects::delete(app, target, name, policy, dry_run).await?;
            if deleted_for_good(resource, &deleted) {
                return Ok(json_body(&deleted_status(resource, &deleted)).into_response());
            }
            Ok(shown(&deleted))
        }
        (Method::DELETE, None, None) => delete_collection(app, route, &request).await,
        (method, _, sub) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported on {}{}",
            resource.qualified(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// PATCH of an object or its status: a server-side apply, or a merge or
/// JSON patch, each sent in the route's view.
async fn patch(
    app: &App,
    route: &Route,
    name: &str,
    request: Request<'_>,
    subresource: Option<&str>,
) -> Result<Written, ApiError> {
    let (target, view) = (&route.target, route.view);
    let patch_type = request.patch_type();
    if patch_type == "application/apply-patch+yaml" {
        let (applied, apply) = request.apply(subresource)?;
        let applied = view.to_stored(applied);
        return objects::server_side_apply(app, target, name, applied, &apply).await;
    }
    let patch = request.json("the patch")?;
    let patch = if patch_type == "application/json-patch+json" {
        view.json_patch_to_stored(patch)
    } else {
        view.to_stored(patch)
    };
    objects::patch(
        app,
        target,
        name,
        &patch_type,
        &patch,
        subresource.is_some(),
    )
    .await
    .map(Written::Updated)
}

/// Whether a delete removed a built-in object outright: kube-apiserver
/// then answers with a Status rather than the object (custom resources,
/// and objects held by finalizers, are answered with the object).
fn deleted_for_good(resource: &Resource, deleted: &Value) -> bool {
    let held = deleted
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    !resource.custom && !held && resource.plural != "namespaces"
}

/// kube-apiserver's answer to a delete that removed the object.
fn deleted_status(resource: &Resource, deleted: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": meta(deleted, "name"),
            "group": resource.group,
            "kind": resource.plural,
            "uid": meta(deleted, "uid"),
        },
    })
}

/// DELETE of a collection: every object the selectors match, each
/// deleted as if alone, answered with the list of what was deleted.
async fn delete_collection(
    app: &App,
    route: &Route,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let (target, view) = (&route.target, route.view);
    let resource = &target.resource;
    let (policy, dry_run) = request.delete_options(target)?;
    let query = view.query(request.query);
    let read = list::Read {
        target,
        query: &query,
        as_table: false,
        view,
    };
    let selector = read.selector()?;
    let (revision, stored) = app.store.list(&read.prefix());
    let mut deleted = Vec::new();
    for object in stored.iter().filter(|o| selector.matches(o)) {
        let mut one =
            objects::Target::new(Arc::clone(resource), meta(object, "namespace").as_deref());
        one.dry_run = target.dry_run;
        let name = meta(object, "name").unwrap_or_default();
        match objects::delete(app, &one, &name, policy, dry_run).await {
            Ok(object) => deleted.push(object),
            // Gone meanwhile: nothing left to delete.
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let metadata = json!({"resourceVersion": revision.to_string()});
    Ok(read.answer(metadata, &deleted.iter().collect::<Vec<_>>()))
}

/// What a review asks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Review {
    /// SelfSubjectAccessReview: may I?
    Access,
    /// SelfSubjectReview: who am I?
    SelfSubject,
    /// SubjectAccessReview: may this user?
    Subject,
}

/// The `metadata.name` of the object in a request's body (JSON or
/// protobuf), for rules that depend on it.
///
/// # Errors
/// 400 or 415 for a body that is not an object.
pub(crate) fn name_in_body(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<String>, ApiError> {
    let request = Request {
        query,
        headers,
        body,
    };
    Ok(request
        .object()?
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// A TokenRequest (`kubectl create token SA`): a token for the
/// ServiceAccount `namespace/name`, as `crate::service_account_token`
/// makes them, for `spec.expirationSeconds` (an hour by default, at
/// least ten minutes, at most a day).
pub(crate) fn token_request(
    app: &App,
    (namespace, name): (&str, &str),
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, ApiError> {
    use crate::service_account_token::{self as tokens, Claims};
    let not_found = || ApiError::NotFound {
        resource: "serviceaccounts".into(),
        name: name.to_owned(),
    };
    let accounts = app
        .registry
        .get("", "v1", "serviceaccounts")
        .ok_or_else(not_found)?;
    let (_, account) = app
        .store
        .get(&accounts.key(Some(namespace), name))
        .ok_or_else(not_found)?;
    let asked = Request {
        query,
        headers,
        body,
    }
    .object()?;
    if asked
        .pointer("/spec/boundObjectRef")
        .is_some_and(|r| !r.is_null())
    {
        return Err(ApiError::BadRequest(
            "spec.boundObjectRef: tokens bound to an object are not issued here; ask without one"
                .into(),
        ));
    }
    let seconds = match asked.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => tokens::DEFAULT_SECONDS,
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::BadRequest("spec.expirationSeconds: a whole number of seconds".into())
        })?,
    };
    if seconds < tokens::MIN_SECONDS {
        return Err(ApiError::BadRequest(format!(
            "spec.expirationSeconds: may not specify a duration less than {} minutes",
            tokens::MIN_SECONDS / 60
        )));
    }
    let seconds = seconds.min(tokens::MAX_SECONDS);
    let now = k8s_openapi::jiff::Timestamp::now();
    let claims = Claims {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: meta(&account, "uid").unwrap_or_default().to_owned(),
        expires: now.as_second() + seconds,
    };
    let token = tokens::issue(app.credentials.service_account_key.as_bytes(), &claims);
    let expires = k8s_openapi::jiff::Timestamp::from_second(claims.expires)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": objects::meta::now()},
        "spec": {
            "audiences": asked.pointer("/spec/audiences").cloned().unwrap_or_else(|| json!([])),
            "expirationSeconds": seconds,
            "boundObjectRef": null,
        },
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// Answer a review from the caller's identity; the body (JSON or
/// protobuf) holds the question.
pub(crate) fn review(
    app: &App,
    identity: &Identity,
    review: Review,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let request = Request {
        query,
        headers,
        body,
    };
    let asked = request.object()?;
    Ok(match review {
        Review::Access => {
            identity.access_review("SelfSubjectAccessReview", asked, &access::Stored(app))
        }
        Review::SelfSubject => identity.self_review(),
        Review::Subject => {
            let text = |pointer: &str| asked.pointer(pointer).and_then(Value::as_str);
            let Some(user) = text("/spec/user").filter(|u| !u.is_empty()) else {
                return Err(ApiError::Invalid {
                    kind: "SubjectAccessReview".into(),
                    group: "authorization.k8s.io".into(),
                    name: String::new(),
                    errors: crate::FieldErrors(vec![crate::FieldError {
                        field: "spec.user".into(),
                        kind: crate::FieldErrorKind::Required,
                        value: None,
                        detail: "a SubjectAccessReview names the user it asks about".into(),
                    }]),
                });
            };
            let groups = asked
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            impersonation::user(user, groups).access_review(
                "SubjectAccessReview",
                asked,
                &access::Stored(app),
            )
        }
    })
}
