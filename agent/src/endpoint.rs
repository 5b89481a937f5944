//! The agent's own HTTPS endpoint: the output of the containers of the
//! tasks bound here (`gantry logs`). Its certificate is made at start and
//! published with its address in the ContainerInstance's
//! `status.agentEndpoint`, which only this agent may write, so clients
//! trust exactly it. A caller shows its bearer token for the control
//! plane, and the control plane decides, through a
//! SelfSubjectAccessReview made with that token: reading a task's output
//! takes `get` on `tasks/log`, as `kubectl logs` takes `get` on
//! `pods/log`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use crds::v1alpha1::AgentEndpoint;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, ResourceExt, api::PostParams};

use crate::{
    Error,
    runtime::{LogOptions, Runtime, labels},
    supervisor::Context,
};

/// What the handlers share.
struct Served<R> {
    context: Arc<Context<R>>,
    /// How to reach the control plane, with the caller's token put in.
    api: kube::Config,
}

/// Serve on `listen` until the runtime stops; where clients reach it.
///
/// # Errors
/// When the certificate cannot be made or the address bound.
pub async fn serve<R: Runtime>(
    context: Arc<Context<R>>,
    api: kube::Config,
    listen: SocketAddr,
    advertise: IpAddr,
) -> Result<AgentEndpoint, Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Endpoint(e.to_string());
    let mut names = vec!["localhost".to_owned(), advertise.to_string()];
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| failed(&e))?;
    let certificate = rcgen::CertificateParams::new(names)
        .and_then(|params| params.self_signed(&key))
        .map_err(|e| failed(&e))?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(&e))?
    .with_no_client_auth()
    .with_single_cert(
        vec![certificate.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .map_err(|e| failed(&e))?;
    let listener = std::net::TcpListener::bind(listen).map_err(|e| failed(&e))?;
    listener.set_nonblocking(true).map_err(|e| failed(&e))?;
    let port = listener.local_addr().map_err(|e| failed(&e))?.port();
    let served = Arc::new(Served { context, api });
    let router = Router::new()
        .route("/tasks/{namespace}/{name}/logs", get(logs::<R>))
        .with_state(served);
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
    )
    .map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        if let Err(e) = server.serve(router.into_make_service()).await {
            tracing::warn!(error = %e, "the agent's endpoint stopped");
        }
    });
    Ok(AgentEndpoint {
        url: format!("https://{}", SocketAddr::new(advertise, port)),
        certificate: certificate.pem(),
    })
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// Whether the holder of `token` may `verb` the `subresource` of Task
/// `namespace/name`, as the control plane answers it.
async fn allowed(
    api: &kube::Config,
    token: &str,
    verb: &str,
    subresource: &str,
    (namespace, name): (&str, &str),
) -> Result<bool, String> {
    let mut config = api.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..kube::config::AuthInfo::default()
    };
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("gantry.dev".into()),
                resource: Some("tasks".into()),
                subresource: Some(subresource.into()),
                verb: Some(verb.into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    match Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(answer) => Ok(answer.status.is_some_and(|s| s.allowed)),
        Err(kube::Error::Api(e)) if e.code == 401 => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

async fn logs<R: Runtime>(
    State(served): State<Arc<Served<R>>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is needed");
    };
    match allowed(&served.api, token.trim(), "get", "log", (&namespace, &name)).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("the token may not get tasks/log of {namespace}/{name}"),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("the control plane did not answer: {e}"),
            );
        }
    }
    let context = &served.context;
    let Some(task) = context.shared.task_named(&namespace, &name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("task {namespace}/{name} is not bound to this instance"),
        );
    };
    let container = match query.get("container") {
        Some(container) => container.clone(),
        None => match task
            .spec
            .definition
            .as_ref()
            .map(|d| &d.container_definitions)
        {
            Some(containers) if containers.len() == 1 => containers[0].name.clone(),
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the task has several containers: name one (?container=)",
                );
            }
        },
    };
    let uid = task.uid().unwrap_or_default();
    let observed = match context.runtime.list(&context.config.name, Some(&uid)).await {
        Ok(observed) => observed,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let Some(id) = observed
        .iter()
        .find(|o| o.label(labels::CONTAINER) == Some(container.as_str()))
        .map(|o| o.id.clone())
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "container {container} of task {name} has not been created here (or was removed)"
            ),
        );
    };
    let options = LogOptions {
        follow: query.get("follow").is_some_and(|v| v == "true"),
        since: query.get("since").and_then(|v| v.parse().ok()),
        tail: query.get("tail").and_then(|v| v.parse().ok()),
    };
    let output = context
        .runtime
        .logs(&id, &options)
        .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string())));
    Body::from_stream(output).into_response()
}
