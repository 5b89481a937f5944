//! The HTTPS server: TLS, bearer tokens, discovery, and the REST surface
//! over the store.

mod access;
mod app;
mod apply;
pub mod connections;
mod crd;
mod discovery;
mod http;
mod impersonation;
mod objects;
mod openapi;
pub mod pki;
mod protobuf;
mod rbac;
mod registry;
mod scale;
mod selector;
mod status;
mod table;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Query, Request, State},
    http::{HeaderMap, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;

pub use pki::Credentials;
pub use registry::Registry;
pub use status::ApiError;

use self::{
    access::{Decision, Identity},
    app::App,
    http::Review,
};

use self::objects::meta::{now, uid};
use crate::storage::{Options, Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database and credentials live.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where to write a kubeconfig for the admin token (default:
    /// `<data_dir>/kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    pub store: Options,
    /// How many connections are held and how long quiet ones are kept.
    pub connections: connections::Limits,
    /// How long an Event is kept after it was last written
    /// (kube-apiserver's `--event-ttl`).
    pub event_ttl: std::time::Duration,
}

impl Config {
    /// A server in `data_dir` on a free loopback port, with the default
    /// store: what tests and benches start.
    #[must_use]
    pub fn local(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            store: Options::default(),
            connections: connections::Limits::default(),
            event_ttl: DEFAULT_EVENT_TTL,
        }
    }
}

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    pub credentials: Credentials,
    /// The kubeconfig written for the admin token.
    pub kubeconfig: PathBuf,
    /// The kubeconfig written for the controller's token
    /// (`<data_dir>/controller.kubeconfig`).
    pub controller_kubeconfig: PathBuf,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Namespaces every cluster has.
const DEFAULT_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

impl Server {
    /// Open the store, make credentials if needed, and start serving.
    ///
    /// # Errors
    /// When the data directory, the certificates or the listener fail.
    pub async fn start(config: Config) -> Result<Self, Error> {
        crate::private::create_dir(&config.data_dir)
            .map_err(|e| Error::Io(format!("{}: {e}", config.data_dir.display())))?;
        let store = Store::open(&config.data_dir.join("store"), config.store.clone())?;
        let credentials = pki::ensure(
            &config.data_dir.join("pki"),
            &[config.listen.ip().to_string()],
        )?;
        let registry = Registry::with_builtins();
        crd::restore(
            &store
                .list("/apiextensions.k8s.io/customresourcedefinitions/")
                .1,
            &registry,
        );
        for name in DEFAULT_NAMESPACES {
            let key = format!("/core/namespaces/_/{name}");
            if store.get(&key).is_none() {
                let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": uid(), "creationTimestamp": now(), "labels": {"kubernetes.io/metadata.name": name}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                match store.create(&key, namespace).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (removed, collect) = tokio::sync::mpsc::unbounded_channel();
        let app = Arc::new(App {
            store,
            registry,
            credentials: credentials.clone(),
            removed,
        });
        objects::gc::spawn(&app, collect);
        objects::expiry::spawn(&app, config.event_ttl);
        let tls = tls_config(&credentials)?;
        let router = Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/livez", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ok" }))
            .fallback(dispatch)
            .layer(middleware::from_fn_with_state(
                Arc::clone(&app),
                authenticate,
            ))
            .layer(status::catch_panics())
            .with_state(app);
        let handle = axum_server::Handle::new();
        let tls = axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
        );
        let mut server = axum_server::bind(config.listen)
            .acceptor(connections::Acceptor::new(tls, &config.connections))
            .handle(handle.clone());
        connections::tune(server.http_builder(), &config.connections);
        let task = tokio::spawn(server.serve(router.into_make_service()));
        let addr = handle
            .listening()
            .await
            .ok_or_else(|| Error::Io(format!("could not listen on {}", config.listen)))?;
        let kubeconfig = config
            .kubeconfig
            .clone()
            .unwrap_or_else(|| config.data_dir.join("kubeconfig"));
        write_kubeconfig(
            &kubeconfig,
            addr,
            &credentials.ca_pem,
            &credentials.admin_token,
        )?;
        let controller_kubeconfig = config.data_dir.join("controller.kubeconfig");
        write_kubeconfig(
            &controller_kubeconfig,
            addr,
            &credentials.ca_pem,
            &credentials.controller_token,
        )?;
        Ok(Self {
            addr,
            credentials,
            kubeconfig,
            controller_kubeconfig,
            handle,
            task,
        })
    }

    /// Stop serving and wait until the listener is closed.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        let _ = self.task.await;
    }

    /// A kubeconfig for this server with `token`.
    #[must_use]
    pub fn kubeconfig_for(&self, token: &str) -> String {
        kubeconfig_yaml(self.addr, &self.credentials.ca_pem, token)
    }
}

fn tls_config(credentials: &Credentials) -> Result<rustls::ServerConfig, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(credentials.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: gantry
  cluster:
    server: https://{addr}
    certificate-authority-data: {ca}
users:
- name: gantry-admin
  user:
    token: {token}
contexts:
- name: gantry
  context:
    cluster: gantry
    user: gantry-admin
    namespace: default
current-context: gantry
"
    )
}

fn write_kubeconfig(path: &Path, addr: SocketAddr, ca_pem: &str, token: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    // A token is in it.
    crate::private::write(path, kubeconfig_yaml(addr, ca_pem, token).as_bytes())
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Bearer tokens: none or an unknown one is 401; what the identity may
/// not do is 403 (`access.rs` holds the rules). Health checks need no
/// token.
async fn authenticate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(identity) = token.and_then(|token| {
        access::identify(token, &app.credentials)
            .or_else(|| access::identify_agent(token, &app))
            .or_else(|| access::identify_service_account(token, &app))
    }) else {
        return ApiError::Unauthorized.into_response();
    };
    let identity =
        match impersonation::acting_as(identity, request.headers(), &access::Stored(&app)) {
            Ok(identity) => identity,
            Err(e) => return e.into_response(),
        };
    // Reviews of oneself only ask, so anyone may ask them; everything
    // else (a SubjectAccessReview too) is the verb the method is, under
    // the identity's rule.
    let review = *request.method() == Method::POST
        && review_of(path).is_some_and(|r| !matches!(r, Review::Subject));
    let decision = if review {
        Decision::Allow
    } else {
        let asked = access::attributes_of(request.method(), path, request.uri().query());
        identity.may(&asked, &access::Stored(&app))
    };
    let mut request = match decision {
        Decision::Deny => return forbidden(&identity, request.method(), path).into_response(),
        Decision::Allow => request,
        Decision::IfNamed(name) => {
            let mut request = request;
            request.extensions_mut().insert(NameRequired(name));
            request
        }
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// A create the caller may make only of an object with this name, which
/// `dispatch` checks once the body is read.
#[derive(Clone, Debug)]
struct NameRequired(String);

fn forbidden(identity: &Identity, method: &Method, path: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "User \"{}\" cannot {} {path}: {}",
        identity.username(),
        method.as_str().to_lowercase(),
        identity.limit()
    ))
}

/// Whether the client takes JSON: no `Accept`, or one naming JSON or
/// anything.
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_none_or(|accept| {
            accept.split(',').any(|media| {
                let media = media.split(';').next().unwrap_or("").trim();
                matches!(media, "application/json" | "*/*" | "application/*" | "")
            })
        })
}

/// Every `/api`, `/apis` and `/version` request.
/// The review a path asks for, if it is one.
fn review_of(path: &str) -> Option<Review> {
    match path.trim_end_matches('/') {
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Review::Access),
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Review::SelfSubject),
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Review::Subject),
        _ => None,
    }
}

async fn dispatch(
    State(app): State<Arc<App>>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request<Body>,
) -> Response {
    let path = request.uri().path().to_owned();
    let identity = request.extensions().get::<Identity>().cloned();
    let required = request.extensions().get::<NameRequired>().cloned();
    let body = match to_bytes(request.into_body(), http::MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return ApiError::TooLarge(http::MAX_BODY).into_response(),
    };
    if let (Some(NameRequired(name)), Some(identity)) = (required, &identity) {
        match http::name_in_body(&query, &headers, &body) {
            Ok(named) if named.as_deref() == Some(name.as_str()) => {}
            Ok(_) => return forbidden(identity, &method, &path).into_response(),
            Err(e) => return e.into_response(),
        }
    }
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let json = |value: serde_json::Value| axum::Json(value).into_response();
    if let [
        "api",
        "v1",
        "namespaces",
        namespace,
        "serviceaccounts",
        name,
        "token",
    ] = segments.as_slice()
    {
        if method != Method::POST {
            return ApiError::MethodNotAllowed("serviceaccounts/token takes only POST".into())
                .into_response();
        }
        return match http::token_request(&app, (namespace, name), &query, &headers, &body) {
            Ok(answer) => (axum::http::StatusCode::CREATED, axum::Json(answer)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    if let (Some(review), Some(identity)) = (review_of(&path), identity)
        && method == Method::POST
    {
        return match http::review(&app, &identity, review, &query, &headers, &body) {
            Ok(answer) => (axum::http::StatusCode::CREATED, axum::Json(answer)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let aggregated = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(discovery::wants_aggregated);
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return json(discovery::version()),
        ["openapi", "v2"] if accepts_json(&headers) => return json(openapi::v2(&app.registry)),
        ["openapi", "v2"] => return ApiError::NotAcceptable.into_response(),
        ["openapi", "v3"] => return json(openapi::index(&app.registry)),
        ["openapi", "v3", "api", version] => {
            return openapi::group_version(&app.registry, "", version)
                .map_or_else(|| ApiError::NoRoute.into_response(), json);
        }
        ["openapi", "v3", "apis", group, version] => {
            return openapi::group_version(&app.registry, group, version)
                .map_or_else(|| ApiError::NoRoute.into_response(), json);
        }
        ["api" | "apis"] if aggregated => {
            let list = discovery::aggregated(&app.registry, segments[0] == "api");
            return (
                [(header::CONTENT_TYPE, discovery::AGGREGATED)],
                axum::Json(list),
            )
                .into_response();
        }
        ["api"] => return json(discovery::core_versions()),
        ["apis"] => return json(discovery::groups(&app.registry)),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return ApiError::NoRoute.into_response(),
    };
    if rest.is_empty() {
        return match discovery::resources(&app.registry, group, version) {
            Some(list) if method == Method::GET => json(list),
            _ => ApiError::NoRoute.into_response(),
        };
    }
    let route = match http::resolve(&app, group, version, rest) {
        Ok(route) => route,
        Err(e) => return e.into_response(),
    };
    match http::handle(Arc::clone(&app), method, route, query, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}
