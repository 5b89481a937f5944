//! `cargo bench -p balancer --bench balancer`: Gantry's balancer beside
//! HAProxy (Debian's package, configured the same way: HTTP, round robin,
//! kept-alive connections to the targets) and beside going straight to one
//! backend, all in one run on the same two backends. Load comes from `wrk`
//! (Debian's package): 64 kept-alive connections for requests/s and
//! p50/p99 latency, then a new connection per request for connections/s.
//! One JSON line per measurement, then one with the medians and the ratios
//! the goals name (at least 0.8x HAProxy's requests/s, at most +1 ms p99
//! over direct).
//!
//! The backends run in a child process (this binary, re-run with
//! `GANTRY_BENCH_BACKENDS` set); Gantry's balancer runs here, on its own
//! data-plane code (`Pool`, `Workers`, `proxy::serve_http`), without a
//! control plane.
//!
//! Three rounds take turns over the three paths and the summary takes
//! medians; set `GANTRY_BENCH_ROUNDS` and `GANTRY_BENCH_SECONDS` to change
//! the 3 rounds and the 10 s per measurement.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use balancer::{
    Metrics,
    desired::{Desired, DesiredTarget},
    pool::Pool,
    proxy,
    workers::{self, Workers},
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

/// Gantry's balancer on `port` over the backends, every target healthy,
/// served by one worker per core as `gantry balancer` does.
fn gantry(port: u16, backends: &[u16]) -> (Workers, workers::Listener) {
    let spec = LoadBalancerSpec {
        listeners: vec![Listener {
            port,
            protocol: ListenerProtocol::Http,
        }],
        health_check: TargetHealthCheck::default(),
        deregistration_delay_seconds: 0,
        algorithm: Algorithm::RoundRobin,
    };
    let targets = backends
        .iter()
        .enumerate()
        .map(|(i, p)| DesiredTarget::loopback(format!("t{i}"), *p, false))
        .collect();
    let desired = Desired::new("bench", "web", spec, targets);
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
    let workers = Workers::start(workers::per_core()).expect("the workers start");
    let listener = workers
        .listen(
            SocketAddr::from(([127, 0, 0, 1], port)),
            ListenerProtocol::Http,
            &pool,
            &counters,
        )
        .expect("the balancer's port");
    wait_for(port);
    (workers, listener)
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
    let rounds: u32 = std::env::var("GANTRY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
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
    let gantry_port = free_port();
    let _gantry = gantry(gantry_port, &backend_ports);
    let haproxy_port = free_port();
    let _haproxy = haproxy(haproxy_port, &backend_ports, dir.path());

    let targets = [
        ("direct", backend_ports[0]),
        ("haproxy", haproxy_port),
        ("gantry", gantry_port),
    ];
    for (_, port) in targets {
        wrk(port, 1, false);
    }
    // Rounds that take turns, so that whatever else the machine does
    // falls on all three alike; the summary takes each one's median.
    // Kept-alive connections, then a new connection per request.
    let modes = [
        (false, "keep_alive", "requests_per_second"),
        (true, "new_connections", "connections_per_second"),
    ];
    let mut runs: [[Vec<Measured>; 3]; 2] = Default::default();
    for round in 1..=rounds {
        for ((close, mode, figure), runs) in modes.into_iter().zip(&mut runs) {
            for ((name, port), runs) in targets.into_iter().zip(runs.iter_mut()) {
                let m = wrk(port, seconds, close);
                println!(
                    r#"{{"bench":"balancer","round":{round},"through":"{name}","mode":"{mode}","connections":{CONNECTIONS},"{figure}":{:.0},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
                    m.per_second, m.p50_ms, m.p99_ms
                );
                runs.push(m);
            }
        }
    }
    let [kept, fresh] = runs;
    let [direct, haproxy, gantry] = kept.map(|runs| median(&runs));
    let [_, fresh_haproxy, fresh_gantry] = fresh.map(|runs| median(&runs));
    let ratio = gantry.per_second / haproxy.per_second;
    let p99_over_direct = gantry.p99_ms - direct.p99_ms;
    println!(
        r#"{{"bench":"balancer","summary":true,"rounds":{rounds},"median_requests_per_second":{{"direct":{:.0},"haproxy":{:.0},"gantry":{:.0}}},"median_p99_ms":{{"direct":{:.3},"haproxy":{:.3},"gantry":{:.3}}},"requests_vs_haproxy":{ratio:.2},"p99_over_direct_ms":{p99_over_direct:.3},"new_connections_vs_haproxy":{:.2},"goal_requests_vs_haproxy":0.8,"goal_p99_over_direct_ms":1.0,"goals_met":{}}}"#,
        direct.per_second,
        haproxy.per_second,
        gantry.per_second,
        direct.p99_ms,
        haproxy.p99_ms,
        gantry.p99_ms,
        fresh_gantry.per_second / fresh_haproxy.per_second,
        ratio >= 0.8 && p99_over_direct <= 1.0
    );
}

/// Each figure's median over the rounds.
fn median(runs: &[Measured]) -> Measured {
    let of = |figure: fn(&Measured) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Measured {
        per_second: of(|m| m.per_second),
        p50_ms: of(|m| m.p50_ms),
        p99_ms: of(|m| m.p99_ms),
    }
}
