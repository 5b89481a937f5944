//! Failures as Kubernetes `Status` objects, with the code and reason a
//! real API server gives.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    FieldErrors,
    storage::{Revision, StoreError},
};

/// A request that did not succeed.
#[derive(Debug)]
pub enum ApiError {
    /// 404: `configmaps "x" not found`.
    NotFound {
        resource: String,
        name: String,
    },
    /// 404 for a path nothing serves.
    NoRoute,
    /// 409: `configmaps "x" already exists`.
    AlreadyExists {
        resource: String,
        name: String,
    },
    /// 409: the resourceVersion read is stale.
    Conflict {
        resource: String,
        name: String,
    },
    /// 409: a server-side apply would change fields another manager owns.
    ApplyConflict {
        message: String,
        causes: Vec<Value>,
    },
    /// 422 with a cause per field.
    Invalid {
        kind: String,
        group: String,
        name: String,
        errors: FieldErrors,
    },
    /// 400.
    BadRequest(String),
    /// 410: the resourceVersion is older than the event log.
    Gone(String),
    /// A resourceVersion newer than the store's: kube-apiserver's 504
    /// Timeout with the `ResourceVersionTooLarge` cause, which clients
    /// answer by listing afresh; for a watch, 410 Gone with the same
    /// cause, the one answer every client (kube-rs's watcher included)
    /// takes as "list again".
    TooLargeResourceVersion {
        requested: Revision,
        current: Revision,
        watch: bool,
    },
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 405.
    MethodNotAllowed(String),
    /// 413.
    TooLarge(usize),
    /// 413 for a request too large in another way than its bytes.
    RequestTooLarge(String),
    /// 406: no representation the client accepts.
    NotAcceptable,
    /// 415.
    UnsupportedMediaType(String),
    /// 500.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Value) {
        match self {
            Self::NotFound { resource, name } => (
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
                json!({"name": name, "kind": resource}),
            ),
            Self::NoRoute => (
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                json!({}),
            ),
            Self::AlreadyExists { resource, name } => (
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
                json!({"name": name, "kind": resource}),
            ),
            Self::Conflict { resource, name } => (
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
                json!({"name": name, "kind": resource}),
            ),
            Self::ApplyConflict { message, causes } => (
                StatusCode::CONFLICT,
                "Conflict",
                message.clone(),
                json!({"causes": causes}),
            ),
            Self::Invalid {
                kind,
                group,
                name,
                errors,
            } => {
                let qualified = if group.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}.{group}")
                };
                let causes: Vec<Value> = errors
                    .0
                    .iter()
                    .map(|e| {
                        let message = e.to_string();
                        let message = message
                            .strip_prefix(&format!("{}: ", e.field))
                            .unwrap_or(&message)
                            .to_owned();
                        json!({"reason": e.kind.reason(), "message": message, "field": e.field})
                    })
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("{qualified} \"{name}\" is invalid: {errors}"),
                    json!({"name": name, "group": group, "kind": kind, "causes": causes}),
                )
            }
            Self::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "BadRequest",
                message.clone(),
                json!({}),
            ),
            Self::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                "only the following media types are accepted: application/json".into(),
                json!({}),
            ),
            Self::Gone(message) => (StatusCode::GONE, "Expired", message.clone(), json!({})),
            Self::TooLargeResourceVersion {
                requested,
                current,
                watch,
            } => {
                let message =
                    format!("Too large resource version: {requested}, current: {current}");
                let cause = json!({"reason": "ResourceVersionTooLarge", "message": "Too large resource version"});
                if *watch {
                    (
                        StatusCode::GONE,
                        "Expired",
                        message,
                        json!({"causes": [cause]}),
                    )
                } else {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "Timeout",
                        format!("Timeout: {message}"),
                        json!({"causes": [cause], "retryAfterSeconds": 1}),
                    )
                }
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
                json!({}),
            ),
            Self::Forbidden(message) => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                message.clone(),
                json!({}),
            ),
            Self::MethodNotAllowed(message) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                message.clone(),
                json!({}),
            ),
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("Request entity too large: limit is {limit}"),
                json!({}),
            ),
            Self::RequestTooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                message.clone(),
                json!({}),
            ),
            Self::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                message.clone(),
                json!({}),
            ),
            Self::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                message.clone(),
                json!({}),
            ),
        }
    }

    /// The `Status` object, as a response body or a watch `ERROR` event.
    #[must_use]
    pub fn status(&self) -> Value {
        let (code, reason, message, details) = self.parts();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        })
    }

    /// From a store refusal, for an object of `resource` named `name`.
    #[must_use]
    pub fn from_store(err: StoreError, resource: &str, name: &str) -> Self {
        let (resource, name) = (resource.to_owned(), name.to_owned());
        match err {
            StoreError::AlreadyExists { .. } => Self::AlreadyExists { resource, name },
            StoreError::NotFound { .. } => Self::NotFound { resource, name },
            StoreError::Conflict { .. } => Self::Conflict { resource, name },
            StoreError::Gone { requested, oldest } => {
                Self::Gone(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::TooLarge { requested, current } => Self::TooLargeResourceVersion {
                requested,
                current,
                watch: false,
            },
            StoreError::Closed | StoreError::Database(_) | StoreError::Damaged(_) => {
                Self::Internal(err.to_string())
            }
        }
    }
}

/// What answers a request whose handler panicked: the panic is logged and
/// the client gets a 500 Status, as from any internal error, instead of a
/// connection dropped with no answer. No input should get here (see
/// apiserver/tests/any_request.rs); this is the net under that.
pub(crate) fn catch_panics() -> tower_http::catch_panic::CatchPanicLayer<fn(Panic) -> Response> {
    tower_http::catch_panic::CatchPanicLayer::custom(panicked as fn(Panic) -> Response)
}

type Panic = Box<dyn std::any::Any + Send + 'static>;

fn panicked(panic: Panic) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!("a request handler panicked: {what}");
    ApiError::Internal(format!("the server failed on this request: {what}")).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, .., details) = self.parts();
        let mut response = (code, axum::Json(self.status())).into_response();
        // As kube-apiserver, the retry hint goes in the header too, which
        // is what clients' retry layers read.
        if let Some(seconds) = details.get("retryAfterSeconds").and_then(Value::as_u64) {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("index out of bounds")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_a_500_status() {
        let router: Router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(catch_panics());
        let request = |path: &str| Request::get(path).body(Body::empty()).expect("request");
        let answer = router
            .clone()
            .oneshot(request("/boom"))
            .await
            .expect("answered");
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .expect("body");
        let status: Value = serde_json::from_slice(&body).expect("a JSON Status");
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some(500))
        );
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("index out of bounds")),
            "{status}"
        );
        // The server goes on serving.
        let fine = router.oneshot(request("/fine")).await.expect("answered");
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
