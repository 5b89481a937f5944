//! The data plane on real sockets, without a control plane: a pool of
//! targets served by the HTTP and TCP proxies, with backends in this
//! process. A target that refuses connections costs no request, a
//! reload keeps open connections, and a listener is served by every
//! worker thread.

use std::{
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, Instant},
};

use balancer::{
    Metrics,
    desired::{Desired, DesiredTarget},
    pool::Pool,
    proxy,
    workers::Workers,
};
use crds::v1alpha1::{
    Algorithm, Listener, ListenerProtocol, LoadBalancerSpec, TargetHealthCheck, TargetState,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

fn desired(protocol: ListenerProtocol, targets: &[(u16, bool)]) -> Desired {
    let spec = LoadBalancerSpec {
        listeners: vec![Listener { port: 1, protocol }],
        health_check: TargetHealthCheck::default(),
        deregistration_delay_seconds: 300,
        algorithm: Algorithm::RoundRobin,
    };
    let targets = targets
        .iter()
        .map(|(port, draining)| DesiredTarget::loopback(format!("task-{port}"), *port, *draining))
        .collect();
    Desired::new("test", "front", spec, targets)
}

/// A pool over `targets`, every one healthy.
fn healthy_pool(d: &Desired) -> Arc<Pool> {
    let pool = Arc::new(Pool::new(
        d,
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    ));
    for backend in pool.apply(d, Instant::now()) {
        for _ in 0..5 {
            pool.observe(&backend, Ok(()));
        }
    }
    pool
}

/// An HTTP backend answering `name` to every request, kept alive.
async fn http_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// A port nothing listens on.
async fn refusing() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: front\r\n\r\n")
        .await
        .expect("sent");
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        assert!(n > 0, "closed early: {text}");
    }
}

#[tokio::test]
async fn http_requests_go_round_robin_and_skip_a_refusing_target() {
    let (a, b, dead) = (
        http_backend("alpha").await,
        http_backend("beta").await,
        refusing().await,
    );
    let d = desired(
        ListenerProtocol::Http,
        &[(a, false), (b, false), (dead, false)],
    );
    let pool = healthy_pool(&d);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let metrics = Metrics::new();
    tokio::spawn(proxy::serve_http(
        listener,
        Arc::clone(&pool),
        proxy::Counters::new(&metrics, "test/front", port),
    ));
    let mut client = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut bodies = Vec::new();
    for _ in 0..12 {
        let answer = get(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        bodies.push(
            answer
                .rsplit("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let alpha = bodies.iter().filter(|b| *b == "alpha").count();
    assert_eq!(alpha + bodies.iter().filter(|b| *b == "beta").count(), 12);
    assert!((5..=7).contains(&alpha), "round robin: {bodies:?}");
    let states: Vec<(String, TargetState)> = pool
        .targets()
        .into_iter()
        .map(|t| (t.task, t.state))
        .collect();
    assert!(
        states.contains(&(format!("task-{dead}"), TargetState::Unhealthy)),
        "the refusing target is out: {states:?}"
    );

    // Draining a target sends it nothing new; the kept-alive client
    // connection is not cut by the reload.
    pool.apply(
        &desired(
            ListenerProtocol::Http,
            &[(a, true), (b, false), (dead, false)],
        ),
        Instant::now(),
    );
    for _ in 0..4 {
        let answer = get(&mut client).await;
        assert!(answer.ends_with("beta"), "{answer}");
    }
}

#[tokio::test]
async fn tcp_connections_are_relayed_whole_and_skip_a_refusing_target() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = echo.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dead = refusing().await;
    let d = desired(ListenerProtocol::Tcp, &[(dead, false), (echo_port, false)]);
    let pool = healthy_pool(&d);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let metrics = Metrics::new();
    tokio::spawn(proxy::serve_tcp(
        listener,
        Arc::clone(&pool),
        proxy::Counters::new(&metrics, "test/front", port),
    ));
    for i in 0..4 {
        let mut client = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let message = format!("hello {i}");
        client.write_all(message.as_bytes()).await.expect("sent");
        let mut back = vec![0; message.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
            .await
            .expect("echoed in time")
            .expect("echoed");
        assert_eq!(back, message.as_bytes());
    }
    let dead_state = pool
        .targets()
        .into_iter()
        .find(|t| t.task == format!("task-{dead}"))
        .map(|t| t.state);
    assert_eq!(dead_state, Some(TargetState::Unhealthy), "refused: out");
    let bytes = metrics.encode();
    assert!(
        bytes.contains(r#"gantry_balancer_connections_total{load_balancer="test/front""#),
        "{bytes}"
    );
}

#[tokio::test]
async fn every_worker_serves_a_listener_that_takes_a_free_address_only() {
    let a = http_backend("alpha").await;
    let d = desired(ListenerProtocol::Http, &[(a, false)]);
    let pool = healthy_pool(&d);
    let metrics = Metrics::new();
    let workers = Workers::start(NonZeroUsize::new(2).expect("two")).expect("workers");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr");
    let counters = proxy::Counters::new(&metrics, "test/front", address.port());
    let refused = workers
        .listen(address, ListenerProtocol::Http, &pool, &counters)
        .expect_err("the address is taken");
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
    drop(taken);
    let listener = workers
        .listen(address, ListenerProtocol::Http, &pool, &counters)
        .expect("the address is free");
    // Not even by another LoadBalancer's listener on the same workers.
    let again = workers
        .listen(address, ListenerProtocol::Http, &pool, &counters)
        .expect_err("the address is ours");
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);

    // Connections are handed to both workers in turn: one that did not
    // serve would leave half of these unanswered.
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = TcpStream::connect(address).await.expect("connect");
        assert!(get(&mut client).await.ends_with("alpha"));
        clients.push(client);
    }

    // Closed: no new connection, but the open ones carry on.
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(address).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for client in &mut clients {
        assert!(get(client).await.ends_with("alpha"));
    }
}
