//! How answers are written: JSON bodies, and the warnings a request
//! collected as `Warning` headers.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::server::objects::Target;

/// The response with a `Warning: 299` header per warning, as
/// kube-apiserver sends them (kubectl prints them).
pub(super) fn with_warnings(target: &Target, mut response: Response) -> Response {
    for warning in target.take_warnings() {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = header::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A JSON body, serialized as is.
pub(super) fn json_body(value: &Value) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
}
