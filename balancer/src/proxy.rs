//! The proxies: TCP listeners relay whole connections, HTTP listeners
//! relay each request to its own target over kept-alive connections
//! (hyper on both sides; each client connection keeps the connections to
//! targets it opened for its next requests, so no lock is shared between
//! client connections). Both take targets from a [`Pool`]; a target that
//! refuses a connection is taken out at once and the connection or
//! request goes to another, so a stopped or killed task costs only what
//! was in flight on it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{
    body::Incoming,
    client::conn::http1::{self as client, SendRequest},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    metrics::{BytesLabel, CodeLabel, ListenerLabel, Metrics},
    pool::{Inflight, Pool},
};

/// How long a connection to a target may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Targets one connection or request tries before it fails.
const ATTEMPTS: usize = 3;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Idle connections to targets, shared by a listener's client
/// connections: a new client connection starts with these, and a closing
/// one leaves its own here.
#[derive(Debug, Default)]
pub struct Idle(Mutex<Vec<(SocketAddr, SendRequest<ProxyBody>)>>);

/// At most this many idle connections per listener.
const IDLE: usize = 1024;

impl Idle {
    fn take(&self, address: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(_, s)| !s.is_closed());
        let at = idle.iter().rposition(|(a, _)| *a == address)?;
        Some(idle.swap_remove(at).1)
    }
}

/// The connections to targets one client connection holds for its next
/// requests. A client connection sends one request at a time, so by its
/// next request the last response has been read and the connection is
/// free again; no lock is shared with other client connections.
struct Upstreams {
    kept: Mutex<Vec<(SocketAddr, SendRequest<ProxyBody>)>>,
    idle: Arc<Idle>,
}

/// At most this many kept connections per client connection.
const KEPT: usize = 8;

impl Upstreams {
    fn new(idle: Arc<Idle>) -> Self {
        Self {
            kept: Mutex::new(Vec::new()),
            idle,
        }
    }

    fn take(&self, address: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(_, s)| !s.is_closed());
        match kept.iter().position(|(a, _)| *a == address) {
            Some(at) => Some(kept.swap_remove(at).1),
            None => self.idle.take(address),
        }
    }

    fn keep(&self, address: SocketAddr, sender: SendRequest<ProxyBody>) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT && !sender.is_closed() {
            kept.push((address, sender));
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        let kept = std::mem::take(self.kept.get_mut().unwrap_or_else(PoisonError::into_inner));
        let mut idle = self.idle.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (address, sender) in kept {
            if idle.len() < IDLE && !sender.is_closed() {
                idle.push((address, sender));
            }
        }
    }
}

/// A new connection to a target.
async fn open(address: SocketAddr) -> Result<SendRequest<ProxyBody>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A listener's counters, looked up once.
#[derive(Clone, Debug)]
pub struct Counters {
    port: u16,
    connections: Counter,
    active: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
    /// Answers by class: 1xx … 5xx.
    codes: [Counter; 5],
}

impl Counters {
    #[must_use]
    pub fn new(metrics: &Metrics, load_balancer: &str, port: u16) -> Self {
        let listener = ListenerLabel {
            load_balancer: load_balancer.to_owned(),
            listener: port,
        };
        let bytes = |direction| {
            metrics
                .bytes
                .get_or_create(&BytesLabel {
                    load_balancer: load_balancer.to_owned(),
                    listener: port,
                    direction,
                })
                .clone()
        };
        let code = |code| {
            metrics
                .requests
                .get_or_create(&CodeLabel {
                    load_balancer: load_balancer.to_owned(),
                    listener: port,
                    code,
                })
                .clone()
        };
        Self {
            port,
            connections: metrics.connections.get_or_create(&listener).clone(),
            active: metrics.active_connections.get_or_create(&listener).clone(),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
            codes: [
                code("1xx"),
                code("2xx"),
                code("3xx"),
                code("4xx"),
                code("5xx"),
            ],
        }
    }

    fn answered(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.codes[class].inc();
    }
}

/// An open client connection, counted while it lasts.
struct Open(Gauge);

impl Open {
    fn new(counters: &Counters) -> Self {
        counters.connections.inc();
        counters.active.inc();
        Self(counters.active.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serve a TCP listener until the task is aborted.
pub async fn serve_tcp(listener: TcpListener, pool: Arc<Pool>, counters: Counters) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (pool, counters) = (Arc::clone(&pool), counters.clone());
        tokio::spawn(async move { relay(client, &pool, &counters).await });
    }
}

/// Relay one client connection of a TCP listener to a target, whole.
pub async fn relay(mut client: TcpStream, pool: &Pool, counters: &Counters) {
    let _open = Open::new(counters);
    let _ = client.set_nodelay(true);
    let mut tried = Vec::new();
    let (mut upstream, _inflight) = loop {
        let Some(inflight) = pool.pick(&tried) else {
            return;
        };
        let address = inflight.backend.address;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => break (stream, inflight),
            Ok(Err(e)) => pool.refused(&inflight.backend, &e.to_string()),
            Err(_) => pool.refused(&inflight.backend, "connect timed out"),
        }
        tried.push(address);
        if tried.len() >= ATTEMPTS {
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Ok((sent, received)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        counters.bytes_in.inc_by(sent);
        counters.bytes_out.inc_by(received);
    }
}

/// Serve an HTTP/1.1 listener until the task is aborted.
pub async fn serve_http(listener: TcpListener, pool: Arc<Pool>, counters: Counters) {
    let idle = Arc::new(Idle::default());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (pool, counters, idle) = (Arc::clone(&pool), counters.clone(), Arc::clone(&idle));
        tokio::spawn(async move { http(stream, peer, &pool, &counters, idle).await });
    }
}

/// Serve one client connection of an HTTP listener, request by request.
/// `idle`: the listener's idle connections to targets on this thread.
pub async fn http(
    stream: TcpStream,
    peer: SocketAddr,
    pool: &Pool,
    counters: &Counters,
    idle: Arc<Idle>,
) {
    let _ = stream.set_nodelay(true);
    let _open = Open::new(counters);
    let upstreams = Upstreams::new(idle);
    let service = service_fn(|request| forward(request, peer, pool, &upstreams, counters));
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::TRANSFER_ENCODING);
}

fn answer(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Send one request to a target, trying another when one cannot be
/// reached (or, for a request with no body that may be repeated, when
/// one closes the connection before answering).
async fn forward(
    request: Request<Incoming>,
    peer: SocketAddr,
    pool: &Pool,
    upstreams: &Upstreams,
    counters: &Counters,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let bodiless = body.is_end_stream();
    let repeatable = bodiless
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
    let mut body = (!bodiless).then(|| body.boxed());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    headers.insert("x-forwarded-port", HeaderValue::from(counters.port));
    // Origin-form, as a server expects it.
    let uri = parts
        .uri
        .path_and_query()
        .map_or(Ok(Uri::from_static("/")), |p| Uri::try_from(p.as_str()));
    let Ok(uri) = uri else {
        return Ok(answer(StatusCode::BAD_REQUEST, "bad request target\n"));
    };
    let mut tried = Vec::new();
    let response = loop {
        let Some(inflight) = pool.pick(&tried) else {
            break answer(StatusCode::SERVICE_UNAVAILABLE, "no healthy target\n");
        };
        let address = inflight.backend.address;
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&address.to_string())
        {
            headers.insert(header::HOST, host);
        }
        let mut outgoing = Request::new(body.take().unwrap_or_else(empty));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri.clone();
        *outgoing.headers_mut() = headers.clone();
        match send(upstreams, address, outgoing).await {
            Ok((response, sender)) => {
                upstreams.keep(address, sender);
                break relayed(response, inflight, counters);
            }
            Err(failed) => {
                if failed.connect {
                    pool.refused(&inflight.backend, &failed.why);
                }
                body = failed.unsent;
                tried.push(address);
                // A request is tried again only if it can be sent whole
                // again: not sent at all, or without a body and repeatable.
                let again = body.is_some() || (bodiless && (failed.connect || repeatable));
                if !again || tried.len() >= ATTEMPTS {
                    tracing::debug!(target = %address, error = %failed.why, "request failed");
                    break answer(StatusCode::BAD_GATEWAY, "target failed\n");
                }
            }
        }
    };
    counters.answered(response.status());
    Ok(response)
}

/// Why a request to a target failed.
struct Failed {
    /// No connection could be opened: the target is unreachable.
    connect: bool,
    why: String,
    /// The request's body if the request was never sent.
    unsent: Option<ProxyBody>,
}

/// Send `request` to `address` on a kept connection if the client
/// connection has one that still works, else on a new one.
async fn send(
    upstreams: &Upstreams,
    address: SocketAddr,
    mut request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, SendRequest<ProxyBody>), Failed> {
    if let Some(mut sender) = upstreams.take(address)
        && sender.ready().await.is_ok()
    {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, sender)),
            // The kept connection closed before it took the request:
            // send it on a new one.
            Err(mut e) => match e.take_message() {
                Some(unsent) => request = unsent,
                None => {
                    return Err(Failed {
                        connect: false,
                        why: e.error().to_string(),
                        unsent: None,
                    });
                }
            },
        }
    }
    let mut sender = match open(address).await {
        Ok(sender) => sender,
        Err(why) => {
            return Err(Failed {
                connect: true,
                why,
                unsent: Some(request.into_body()),
            });
        }
    };
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(mut e) => Err(Failed {
            connect: false,
            why: e.error().to_string(),
            unsent: e.take_message().map(Request::into_body),
        }),
    }
}

fn relayed(
    response: Response<Incoming>,
    inflight: Inflight,
    counters: &Counters,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Tracked {
        inner: body,
        inflight: Some(inflight),
        bytes: counters.bytes_out.clone(),
    };
    Response::from_parts(parts, body.boxed())
}

/// A target's response body: counts its bytes, and holds the request in
/// flight (for draining) until the last byte or until it is dropped.
struct Tracked {
    inner: Incoming,
    inflight: Option<Inflight>,
    bytes: Counter,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.inc_by(data.len() as u64);
                }
            }
            Poll::Ready(_) => this.inflight = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::HOST, HeaderValue::from_static("example"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);
    }
}
