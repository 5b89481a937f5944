//! `cargo bench -p balancer --bench balancer`: Gantry's balancer beside
//! HAProxy (Debian's package, configured the same way: HTTP, round robin,
//! kept-alive connections to the targets) and beside going straight to one
//! backend, all in one run on the same two backends. Load comes from `wrk`
//! (Debian's package): 64 kept-alive connections for requests/s and
//! p50/p99 latency, then a new connection per request for connections/s.
//! One JSON line per measurement, then one with the ratios the goals name
//! (at least 0.8x HAProxy's requests/s, at most +1 ms p99 over direct).
//!
//! The backends run in a child process (this binary, re-run with
//! `GANTRY_BENCH_BACKENDS` set); Gantry's balancer runs here, on its own
//! data-plane code (`Pool`, `proxy::serve_http`), without a control plane.
//! Set `GANTRY_BENCH_SECONDS` to change the 10 s per measurement.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use balancer::{
    Metrics,
    desired::{Desired, DesiredTarget, Key, TargetKey},
    pool::Pool,
    proxy,
};
use bytes::Bytes;
use crds::v1alpha1::{Algorithm, Listener, ListenerProtocol, LoadBalancerSpec, TargetHealthCheck};
use http_body_util::Full;
use hyper::{Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

const CONNECTIONS: usize = 64;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The backends' role: answer `ok` on each given port until killed.
fn backends(ports: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut servers = Vec::new();
        for port in ports.split(',').filter_map(|p| p.parse::<u16>().ok()) {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("a backend port");
            servers.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let service = service_fn(|_| async {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok\n"),
                            )))
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }));
        }
        for server in servers {
            let _ = server.await;
        }
    });
}

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Until something accepts connections on `port`.
fn wait_for(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {port}");
}

#[derive(Debug, Default)]
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk` against `port`; with `close`, a new connection per request.
fn wrk(port: u16, seconds: u64, close: bool) -> Measured {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if close {
        command.args(["-H", "Connection: close"]);
    }
    let out = command
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut measured = Measured::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(v)) => measured.p50_ms = millis(v),
            (Some("99%"), Some(v)) => measured.p99_ms = millis(v),
            (Some("Requests/sec:"), Some(v)) => measured.per_second = v.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(errors) = errors {
        eprintln!("wrk on {port}: {}", errors.trim());
    }
    measured
}

fn millis(value: &str) -> f64 {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

/// HAProxy on `port`, balancing the backends round robin over kept-alive
/// connections, as Gantry's HTTP listener does.
fn haproxy(port: u16, backends: &[u16], dir: &std::path::Path) -> Killed {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server s{i} 127.0.0.1:{p} check inter 5s\n"))
        .collect();
    let config = format!(
        "global\n  nbthread 2\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend front\n  bind 127.0.0.1:{port}\n  default_backend back\nbackend back\n  balance roundrobin\n  http-reuse always\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("config written");
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("haproxy runs (apt-get install haproxy)");
    wait_for(port);
    Killed(child)
}

/// Gantry's balancer on `port` over the backends, every target healthy.
fn gantry(runtime: &tokio::runtime::Runtime, port: u16, backends: &[u16]) {
    let desired = Desired {
        key: Key {
            namespace: "bench".into(),
            name: "web".into(),
        },
        generation: Some(1),
        spec: LoadBalancerSpec {
            listeners: vec![Listener {
                port,
                protocol: ListenerProtocol::Http,
            }],
            health_check: TargetHealthCheck::default(),
            deregistration_delay_seconds: 0,
            algorithm: Algorithm::RoundRobin,
        },
        targets: backends
            .iter()
            .enumerate()
            .map(|(i, p)| DesiredTarget {
                key: TargetKey {
                    task: format!("t{i}"),
                    container: "web".into(),
                },
                service: "web".into(),
                address: SocketAddr::from(([127, 0, 0, 1], *p)),
                draining: false,
            })
            .collect(),
    };
    let metrics = Arc::new(Metrics::new());
    let pool = Arc::new(Pool::new(
        &desired,
        Arc::clone(&metrics),
        Arc::new(Notify::new()),
    ));
    for backend in pool.apply(&desired, Instant::now()) {
        for _ in 0..10 {
            pool.observe(&backend, Ok(()));
        }
    }
    let counters = proxy::Counters::new(&metrics, "bench/web", port);
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the balancer's port");
        proxy::serve_http(listener, pool, counters).await;
    });
    wait_for(port);
}

fn main() {
    if let Ok(ports) = std::env::var("GANTRY_BENCH_BACKENDS") {
        backends(&ports);
        return;
    }
    // `cargo bench` passes --bench; there is nothing to filter.
    let seconds: u64 = std::env::var("GANTRY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let backend_ports = [free_port(), free_port()];
    let list = backend_ports.map(|p| p.to_string()).join(",");
    let _backends = Killed(
        Command::new(std::env::current_exe().expect("this binary"))
            .env("GANTRY_BENCH_BACKENDS", &list)
            .spawn()
            .expect("the backends start"),
    );
    for port in backend_ports {
        wait_for(port);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let gantry_port = free_port();
    gantry(&runtime, gantry_port, &backend_ports);
    let haproxy_port = free_port();
    let _haproxy = haproxy(haproxy_port, &backend_ports, dir.path());

    let targets = [
        ("direct", backend_ports[0]),
        ("haproxy", haproxy_port),
        ("gantry", gantry_port),
    ];
    let mut kept = Vec::new();
    for (name, port) in targets {
        // A short warm-up, then the measurement.
        wrk(port, 1, false);
        let m = wrk(port, seconds, false);
        println!(
            r#"{{"bench":"balancer","through":"{name}","mode":"keep_alive","connections":{CONNECTIONS},"requests_per_second":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
            m.per_second, m.p50_ms, m.p99_ms
        );
        kept.push(m);
    }
    let mut fresh = Vec::new();
    for (name, port) in targets {
        let m = wrk(port, seconds, true);
        println!(
            r#"{{"bench":"balancer","through":"{name}","mode":"new_connections","connections":{CONNECTIONS},"connections_per_second":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
            m.per_second, m.p50_ms, m.p99_ms
        );
        fresh.push(m);
    }
    let (direct, haproxy, gantry) = (&kept[0], &kept[1], &kept[2]);
    let ratio = gantry.per_second / haproxy.per_second;
    let p99_over_direct = gantry.p99_ms - direct.p99_ms;
    println!(
        r#"{{"bench":"balancer","summary":true,"requests_vs_haproxy":{ratio:.2},"p99_over_direct_ms":{p99_over_direct:.3},"new_connections_vs_haproxy":{:.2},"goal_requests_vs_haproxy":0.8,"goal_p99_over_direct_ms":1.0,"goals_met":{}}}"#,
        fresh[2].per_second / fresh[1].per_second,
        ratio >= 0.8 && p99_over_direct <= 1.0
    );
}
