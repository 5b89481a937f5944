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
    app::App,
    objects::{self, Target, Written},
    scale,
    status::ApiError,
    table,
};

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
    match (method, route.name.as_deref(), route.subresource.as_deref()) {
        (Method::GET, None, None) if request.flag("watch") => {
            watch::watch(app, target, request.query, as_table)
        }
        (Method::GET, None, None) => list::list(app, target, request.query, as_table),
        (Method::POST, None, None) => {
            let object = request.object()?;
            let created = objects::create(app, target, object).await?;
            Ok((StatusCode::CREATED, json_body(&created)).into_response())
        }
        (Method::GET, Some(name), None | Some("status")) => get(app, target, name, as_table),
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let object = request.object()?;
            let updated = objects::update(app, target, name, object, sub.is_some()).await?;
            Ok(json_body(&updated).into_response())
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            patch(app, target, name, request, sub).await
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
            Ok(json_body(&deleted).into_response())
        }
        (method, _, sub) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported on {}{}",
            resource.qualified(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// GET of an object (or its status, which is the object).
fn get(app: &App, target: &Target, name: &str, as_table: bool) -> Result<Response, ApiError> {
    let (revision, object) = target.stored(app, name)?;
    if as_table {
        let rows = table::table(&target.resource, &[&object], &revision.to_string(), false);
        return Ok(json_body(&rows).into_response());
    }
    Ok(json_body(&object).into_response())
}

/// PATCH of an object or its status: a server-side apply, or a merge or
/// JSON patch.
async fn patch(
    app: &App,
    target: &Target,
    name: &str,
    request: Request<'_>,
    subresource: Option<&str>,
) -> Result<Response, ApiError> {
    let patch_type = request.patch_type();
    if patch_type == "application/apply-patch+yaml" {
        let (applied, apply) = request.apply(subresource)?;
        return Ok(
            match objects::server_side_apply(app, target, name, applied, &apply).await? {
                Written::Created(object) => {
                    (StatusCode::CREATED, json_body(&object)).into_response()
                }
                Written::Updated(object) => json_body(&object).into_response(),
            },
        );
    }
    let patch = request.json("the patch")?;
    let patched = objects::patch(
        app,
        target,
        name,
        &patch_type,
        &patch,
        subresource.is_some(),
    )
    .await?;
    Ok(json_body(&patched).into_response())
}
