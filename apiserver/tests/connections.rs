//! Connection hygiene seen from the wire: quiet and slow clients are cut
//! off after the configured times, a watch that streams nothing is not,
//! and the per-address and total caps hold while loopback still gets in.
//! Clients speak TLS and HTTP/1.1 by hand so that each can misbehave
//! exactly as the test needs.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use apiserver::server::{Config, Server, connections::Limits};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

async fn start(dir: &Path, limits: Limits) -> Server {
    Server::start(Config {
        connections: limits,
        ..Config::local(dir)
    })
    .await
    .expect("server starts")
}

fn limits(total: usize, per_address: usize, handshake: u64, header: u64) -> Limits {
    Limits {
        total,
        per_address,
        handshake_timeout: Duration::from_secs(handshake),
        header_read_timeout: Duration::from_secs(header),
    }
}

fn connector(server: &Server) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(server.credentials.ca_pem.as_bytes()).expect("CA");
    roots.add(ca).expect("CA trusted");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection to the server from `from`, one of the loopback
/// addresses, so that several client addresses can be had on one host.
async fn tcp(server: &Server, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind");
    socket.connect(server.addr).await.expect("TCP connects")
}

async fn tls(server: &Server, from: Ipv4Addr) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("name");
    connector(server)
        .connect(name, tcp(server, from).await)
        .await
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Read and discard until the server closes the connection, for at most
/// `limit`; the time it took, or `None` when it stayed open.
async fn closes_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    let mut buf = [0; 4096];
    loop {
        let left = limit.checked_sub(began.elapsed())?;
        match timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(began.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn get(path: &str, token: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: {connection}\r\n\r\n"
    )
}

/// One response's head and body, read up to the end of the body.
async fn response<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> String {
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("response read");
        assert!(n > 0, "closed before a full response: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) || body.ends_with("0\r\n\r\n") {
                return text.into_owned();
            }
        }
    }
}

const CUT: Duration = Duration::from_secs(1);
const ENOUGH: Duration = Duration::from_secs(4);

/// Wait for the server to close `stream`, and check it was the timeout
/// ([`CUT`]) that closed it, not anything sooner.
async fn closed_by_timeout<S: AsyncRead + Unpin>(stream: &mut S, what: &str) {
    let closed = closes_within(stream, ENOUGH)
        .await
        .unwrap_or_else(|| panic!("{what}: still open after {ENOUGH:?}"));
    assert_cut_by_timeout(closed, what);
}

fn assert_cut_by_timeout(closed: Duration, what: &str) {
    assert!(
        closed >= CUT - Duration::from_millis(100),
        "{what}: cut after {closed:?}, before the timeout"
    );
}

#[tokio::test]
async fn a_request_head_dripped_slowly_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits(100, 100, 10, 1)).await;
    let mut stream = tls(&server, loopback(1)).await.expect("TLS");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let began = Instant::now();
    let mut buf = [0; 64];
    // A header line every 300 ms: the connection never goes quiet for the
    // whole timeout, but the head is not done in it.
    let closed = loop {
        assert!(
            began.elapsed() < ENOUGH,
            "a head dripped for 4 s is still read"
        );
        if stream.write_all(b"X-Drip: 1\r\n").await.is_err() {
            break began.elapsed();
        }
        match timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break began.elapsed(),
            Ok(Ok(n)) => panic!("answered a head never finished: {:?}", &buf[..n]),
            Err(_) => {}
        }
    };
    assert_cut_by_timeout(closed, "a dripped head");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits(100, 100, 10, 1)).await;
    let mut stream = tls(&server, loopback(1)).await.expect("TLS");
    let token = server.credentials.admin_token.clone();
    // Two requests on the one connection show it is kept alive between
    // them; quiet after the second, it is closed.
    for _ in 0..2 {
        stream
            .write_all(get("/readyz", &token, false).as_bytes())
            .await
            .expect("write");
        let answer = response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    closed_by_timeout(&mut stream, "an idle kept-alive connection").await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits(100, 100, 1, 1)).await;

    let mut quiet_tls = tls(&server, loopback(1)).await.expect("TLS");
    closed_by_timeout(&mut quiet_tls, "quiet after TLS").await;

    // No handshake at all: the handshake timeout closes it.
    let mut quiet_tcp = tcp(&server, loopback(1)).await;
    closed_by_timeout(&mut quiet_tcp, "quiet before TLS").await;
}

#[tokio::test]
async fn a_watch_that_streams_nothing_outlives_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits(100, 100, 1, 1)).await;
    let mut stream = tls(&server, loopback(1)).await.expect("TLS");
    let token = server.credentials.admin_token.clone();
    let began = Instant::now();
    let watch = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3";
    stream
        .write_all(get(watch, &token, true).as_bytes())
        .await
        .expect("write");
    let answer = response(&mut stream).await;
    let ended = began.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Ended by its own timeoutSeconds, three times the header timeout.
    assert!(
        ended >= Duration::from_millis(2_900),
        "ended after {ended:?}"
    );
}

#[tokio::test]
async fn each_address_and_all_together_are_capped_but_loopback_gets_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits(30, 20, 10, 30)).await;

    let mut from_two = Vec::new();
    for _ in 0..20 {
        from_two.push(tls(&server, loopback(2)).await.expect("room for 20"));
    }
    assert!(
        tls(&server, loopback(2)).await.is_err(),
        "a 21st connection from one address is refused"
    );
    let mut from_three = Vec::new();
    for _ in 0..10 {
        from_three.push(tls(&server, loopback(3)).await.expect("room for 30"));
    }
    assert!(
        tls(&server, loopback(4)).await.is_err(),
        "a 31st connection is refused whatever its address"
    );

    // 127.0.0.1 counts against its own cap only.
    let token = server.credentials.admin_token.clone();
    let mut local = tls(&server, loopback(1)).await.expect("loopback gets in");
    local
        .write_all(get("/readyz", &token, true).as_bytes())
        .await
        .expect("write");
    assert!(response(&mut local).await.starts_with("HTTP/1.1 200"));

    // Closing connections gives their places back.
    from_two.truncate(15);
    drop(from_three);
    let began = Instant::now();
    let mut from_four = Vec::new();
    while from_four.len() < 15 {
        match tls(&server, loopback(4)).await {
            Ok(stream) => from_four.push(stream),
            Err(e) => {
                assert!(began.elapsed() < ENOUGH, "places not given back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(tls(&server, loopback(4)).await.is_err(), "full again");
}

/// Time for `/readyz` on a new connection from 127.0.0.1, TLS included.
async fn readyz(server: &Server) -> Duration {
    let began = Instant::now();
    let mut local = tls(server, loopback(1)).await.expect("loopback gets in");
    let token = &server.credentials.admin_token;
    local
        .write_all(get("/readyz", token, true).as_bytes())
        .await
        .expect("write");
    let answer = response(&mut local).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    began.elapsed()
}

#[tokio::test]
async fn a_flood_of_idle_connections_and_a_slow_client_leave_readyz_answering() {
    apiserver::server::connections::raise_open_file_limit().expect("open-file limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let (total, per_address) = (1_000, 200);
    let server = start(dir.path(), limits(total, per_address, 60, 60)).await;

    // A client dripping a request head, a line every 300 ms.
    let mut slow = tls(&server, loopback(10)).await.expect("TLS");
    let drip = tokio::spawn(async move {
        let mut line: &[u8] = b"GET /readyz HTTP/1.1\r\n";
        while slow.write_all(line).await.is_ok() {
            line = b"X-Drip: 1\r\n";
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // 2,000 connections from eight addresses, none saying anything.
    let mut flood = Vec::new();
    for i in 0..2_000_u16 {
        let from = loopback(2 + u8::try_from(i % 8).expect("small"));
        flood.push((from, tcp(&server, from).await));
    }

    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(readyz(&server).await);
    }
    times.sort();
    eprintln!("/readyz during the flood: {times:?}");
    assert!(
        times[2] < Duration::from_millis(100),
        "/readyz took {times:?}"
    );
    assert!(!drip.is_finished(), "the slow client is still held");
    drip.abort();

    // What the server refused, it closed; what it holds is within the caps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut held = std::collections::HashMap::<Ipv4Addr, usize>::new();
    for (from, stream) in &flood {
        let mut buf = [0; 1];
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                *held.entry(*from).or_default() += 1;
            }
            _ => {}
        }
    }
    let all: usize = held.values().sum();
    // The slow client holds one place of the total.
    assert_eq!(all, total - 1, "held {held:?}");
    assert!(held.values().all(|&n| n <= per_address), "held {held:?}");
}
