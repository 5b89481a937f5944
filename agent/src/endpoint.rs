//! The agent's own HTTPS endpoint: the output of the containers of the
//! tasks bound here (`gantry logs`), and commands run in them (`gantry
//! exec`, ECS Exec's equivalent, only in tasks with
//! `enableExecuteCommand`, each recorded as an Event on the Task). Its certificate is made at start and
//! published with its address in the ContainerInstance's
//! `status.agentEndpoint`, which only this agent may write, so clients
//! trust exactly it. A caller shows its bearer token for the control
//! plane, and the control plane decides, through a
//! SelfSubjectAccessReview made with that token: reading a task's output
//! takes `get` on `tasks/log`, as `kubectl logs` takes `get` on
//! `pods/log`; running a command takes `create` on `tasks/exec`, as
//! `kubectl exec` takes `create` on `pods/exec`.

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
    routing::{get, post},
};
use crds::v1alpha1::AgentEndpoint;
use futures::StreamExt;
use http_body::Frame;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, ResourceExt, api::PostParams};

use crate::{
    Error,
    runtime::{Exec, ExecOptions, LogOptions, Runtime, labels},
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
        .route("/tasks/{namespace}/{name}/exec", post(exec::<R>))
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

/// A client of the control plane acting as the holder of `token`.
fn caller(api: &kube::Config, token: &str) -> Result<kube::Client, String> {
    let mut config = api.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..kube::config::AuthInfo::default()
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Whether the caller may `verb` the `subresource` of Task
/// `namespace/name`, as the control plane answers it.
async fn allowed(
    caller: &kube::Client,
    verb: &str,
    subresource: &str,
    (namespace, name): (&str, &str),
) -> Result<bool, String> {
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
    match Api::<SelfSubjectAccessReview>::all(caller.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(answer) => Ok(answer.status.is_some_and(|s| s.allowed)),
        Err(kube::Error::Api(e)) if e.code == 401 => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The caller's client once its token is shown and the control plane
/// allows `verb` on the task's `subresource`; else the refusal.
async fn authorize(
    api: &kube::Config,
    headers: &HeaderMap,
    verb: &str,
    subresource: &str,
    task: (&str, &str),
) -> Result<kube::Client, Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "a bearer token is needed"));
    };
    let client = caller(api, token.trim()).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    match allowed(&client, verb, subresource, task).await {
        Ok(true) => Ok(client),
        Ok(false) => Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "the token may not {verb} tasks/{subresource} of {}/{}",
                task.0, task.1
            ),
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_GATEWAY,
            format!("the control plane did not answer: {e}"),
        )),
    }
}

/// The runtime id of `container` (or of the task's only container) of the
/// task bound here named `namespace/name`, with the task.
async fn container_of<R: Runtime>(
    context: &Context<R>,
    (namespace, name): (&str, &str),
    container: Option<&str>,
) -> Result<(Arc<crds::v1alpha1::Task>, String, String), Response> {
    let Some(task) = context.shared.task_named(namespace, name) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("task {namespace}/{name} is not bound to this instance"),
        ));
    };
    let container = match container {
        Some(container) => container.to_owned(),
        None => match task
            .spec
            .definition
            .as_ref()
            .map(|d| &d.container_definitions)
        {
            Some(containers) if containers.len() == 1 => containers[0].name.clone(),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "the task has several containers: name one",
                ));
            }
        },
    };
    let uid = task.uid().unwrap_or_default();
    let observed = context
        .runtime
        .list(&context.config.name, Some(&uid))
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let Some(id) = observed
        .iter()
        .find(|o| o.label(labels::CONTAINER) == Some(container.as_str()))
        .map(|o| o.id.clone())
    else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "container {container} of task {name} has not been created here (or was removed)"
            ),
        ));
    };
    Ok((task, container, id))
}

async fn logs<R: Runtime>(
    State(served): State<Arc<Served<R>>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let task = (namespace.as_str(), name.as_str());
    if let Err(refused) = authorize(&served.api, &headers, "get", "log", task).await {
        return refused;
    }
    let context = &served.context;
    let (_, _, id) =
        match container_of(context, task, query.get("container").map(String::as_str)).await {
            Ok(found) => found,
            Err(refused) => return refused,
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

/// What `gantry exec` asks.
#[derive(Debug, serde::Deserialize)]
struct ExecRequest {
    container: Option<String>,
    command: Vec<String>,
    /// Attach its standard input (`-i`): the connection is then upgraded
    /// to the framing of agent/src/frames.rs.
    #[serde(default)]
    stdin: bool,
    /// Give it a terminal (`-t`).
    #[serde(default)]
    tty: bool,
    /// The caller's terminal, columns by rows.
    #[serde(default)]
    size: Option<(u16, u16)>,
}

async fn exec<R: Runtime>(
    State(served): State<Arc<Served<R>>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    mut request: axum::extract::Request,
) -> Response {
    let task = (namespace.as_str(), name.as_str());
    let caller = match authorize(&served.api, &headers, "create", "exec", task).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let body = match axum::body::to_bytes(request.into_body(), 64 * 1024).await {
        Ok(body) => body,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    let asked: ExecRequest = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    if asked.command.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "no command");
    }
    let upgrading = headers.get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(crate::frames::PROTOCOL.as_bytes())
    });
    if asked.stdin && !upgrading {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "stdin needs the connection upgraded to {}",
                crate::frames::PROTOCOL
            ),
        );
    }
    let context = &served.context;
    let (found, container, id) = match container_of(context, task, asked.container.as_deref()).await
    {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    if !found.spec.enable_execute_command {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("execute command is not enabled for task {name} (spec.enableExecuteCommand)"),
        );
    }
    let who = whoami(&caller).await;
    record(context, &found, &container, &who, &asked.command).await;
    if asked.stdin {
        let Some(upgrade) = upgrade else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "this connection cannot be upgraded",
            );
        };
        let context = Arc::clone(context);
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => interactive(&context, &id, asked, upgraded).await,
                Err(e) => tracing::debug!(error = %e, "an exec's upgrade failed"),
            }
        });
        return (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, "Upgrade"),
                (header::UPGRADE, crate::frames::PROTOCOL),
            ],
        )
            .into_response();
    }
    let frames = context
        .runtime
        .exec(&id, ExecOptions::command(asked.command))
        .map(|chunk| match chunk {
            Ok(Exec::Output(bytes)) => Ok(Frame::data(axum::body::Bytes::from(bytes))),
            Ok(Exec::Exited(code)) => {
                let mut trailers = HeaderMap::new();
                trailers.insert(
                    EXIT_CODE,
                    axum::http::HeaderValue::from_str(&code.to_string())
                        .unwrap_or(axum::http::HeaderValue::from_static("-1")),
                );
                Ok(Frame::trailers(trailers))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
    // HTTP/1.1 sends only the trailers a response declares.
    (
        [(header::TRAILER, EXIT_CODE)],
        Body::new(http_body_util::StreamBody::new(frames)),
    )
        .into_response()
}

/// An exec with standard input over the upgraded connection: frames in
/// feed its input, its output and exit code go out as frames.
async fn interactive<R: Runtime>(
    context: &Context<R>,
    id: &str,
    asked: ExecRequest,
    upgraded: hyper::upgrade::Upgraded,
) {
    use crate::frames::{self, Kind};
    let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let (input, stdin) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    // Until the client says its input is closed, or goes.
    tokio::spawn(async move {
        while let Ok(Some((kind, bytes))) = frames::read(&mut reader).await {
            match kind {
                Kind::Stdin if input.unbounded_send(bytes).is_ok() => {}
                _ => break,
            }
        }
    });
    let options = ExecOptions {
        command: asked.command,
        tty: asked.tty,
        size: asked.size,
        stdin: Some(stdin.boxed()),
    };
    let mut output = context.runtime.exec(id, options);
    while let Some(chunk) = output.next().await {
        let sent = match chunk {
            Ok(Exec::Output(bytes)) => frames::write(&mut writer, Kind::Output, &bytes).await,
            Ok(Exec::Exited(code)) => {
                frames::write(&mut writer, Kind::Exit, code.to_string().as_bytes()).await
            }
            Err(e) => frames::write(&mut writer, Kind::Error, e.to_string().as_bytes()).await,
        };
        if sent.is_err() {
            // The client went: what it ran is not waited for.
            return;
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
}

/// The trailer that gives an exec's exit code (src/agent_client.rs reads
/// it).
const EXIT_CODE: &str = "gantry-exit-code";

/// Who the caller is, as the control plane knows it.
async fn whoami(caller: &kube::Client) -> String {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = SelfSubjectReview::default();
    match Api::<SelfSubjectReview>::all(caller.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(answer) => answer
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_else(|| "an unnamed user".into()),
        Err(_) => "an unknown user".into(),
    }
}

/// An Event on the Task: who ran which command in which container.
async fn record<R: Runtime>(
    context: &Context<R>,
    task: &crds::v1alpha1::Task,
    container: &str,
    who: &str,
    command: &[String],
) {
    use k8s_openapi::{
        api::{core::v1::ObjectReference, events::v1::Event},
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
        jiff::Timestamp,
    };
    let namespace = task.namespace().unwrap_or_default();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", task.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some("Exec".into()),
        reason: Some("ExecuteCommand".into()),
        note: Some(format!("{who} ran {command:?} in container {container}")),
        type_: Some("Normal".into()),
        reporting_controller: Some("gantry.dev/agent".into()),
        reporting_instance: Some(context.config.name.clone()),
        regarding: Some(ObjectReference {
            api_version: Some("gantry.dev/v1alpha1".into()),
            kind: Some("Task".into()),
            name: Some(task.name_any()),
            namespace: Some(namespace.clone()),
            uid: task.uid(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    };
    if let Err(e) = Api::<Event>::namespaced(context.client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        tracing::warn!(error = %e, "could not record the exec as an Event");
    }
}
