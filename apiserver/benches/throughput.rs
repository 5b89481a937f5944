//! Storage throughput and latency, one JSON object per line.
//!
//! `cargo bench -p apiserver --bench throughput` measures, on a fresh
//! database in a temporary directory with fsync on every commit, first the
//! store alone (`"layer":"store"`), then the whole server through the
//! kube-rs client over TLS (`"layer":"http"`, client and server in this
//! one process):
//! - conditional updates per second with 1, 4 and 16 concurrent writers
//!   (each a read and a compare-and-swap update of its own object);
//! - watch latency, from the update call to delivery, p50 and p99, with
//!   100 and 1,000 watchers;
//! - list latency for 10,000 objects, including encoding the list as JSON;
//! - resident memory after loading those objects.
//!
//! Then, as the anchor for the first figure, the same conditional updates
//! against etcd (`"layer":"etcd"`): one member started here on loopback
//! ports from `GANTRY_ETCD`, `.cache/tools/etcd` (scripts/fetch-etcd) or
//! `etcd` on the PATH, reached with the etcd-client crate, each update a
//! read and a transaction comparing the key's mod_revision, as
//! kube-apiserver writes to etcd. Without an etcd binary it says so and
//! goes on.
//!
//! `cargo bench -p apiserver --bench throughput -- WORD` runs only the
//! measurements whose label (`store-updates`, `store-watch`, `store-list`,
//! `http-updates`, `http-watch`, `http-list`, `etcd`) contains the word.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apiserver::{
    server::{Config, Server},
    storage::{Options, Store},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

/// The gantry binary's allocator (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn object(name: &str, n: u64) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "web"}},
        "spec": {"taskDefinition": "web", "desiredStatus": "RUNNING", "group": "service:web"},
        "status": {"lastStatus": "RUNNING", "n": n}
    })
}

fn emit(line: Value) {
    println!("{line}");
}

/// `writers` writers at once, each given its number and the time to stop
/// and counting its writes: the writes per second of them all.
async fn writes_per_second<W, F>(writers: usize, run_for: Duration, writer: W) -> f64
where
    W: Fn(usize, Instant) -> F,
    F: std::future::Future<Output = u64> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(writer(w, start + run_for)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn conditional_updates(store: &Store, writers: usize, run_for: Duration) -> f64 {
    for w in 0..writers {
        store
            .create(&format!("/cas/{writers}/{w}"), object("cas", 0))
            .await
            .expect("created");
    }
    writes_per_second(writers, run_for, |w, deadline| {
        let store = store.clone();
        async move {
            let key = format!("/cas/{writers}/{w}");
            let mut done = 0u64;
            while Instant::now() < deadline {
                let (read, _) = store.get(&key).expect("present");
                store
                    .update(&key, object("cas", done), Some(read))
                    .await
                    .expect("no other writer on this key");
                done += 1;
            }
            done
        }
    })
    .await
}

/// An etcd member of its own, on free loopback ports, stopped when dropped.
struct Etcd {
    child: std::process::Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn etcd_binary() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("GANTRY_ETCD") {
        return Some(path.into());
    }
    let fetched = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/tools/etcd");
    if fetched.exists() {
        return Some(fetched);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.exists())
    })
}

/// Start one etcd member; `Err` says why not.
async fn start_etcd() -> Result<(Etcd, etcd_client::Client), String> {
    let binary =
        etcd_binary().ok_or("no etcd binary: run scripts/fetch-etcd or set GANTRY_ETCD")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(&binary)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let etcd = Etcd {
        child,
        endpoint: client_url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = etcd_client::Client::connect([&etcd.endpoint], None).await
            && client.status().await.is_ok()
        {
            return Ok((etcd, client));
        }
        if Instant::now() > deadline {
            return Err(format!("etcd at {} did not answer in 20 s", etcd.endpoint));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`conditional_updates`] against etcd: a read, then a transaction that
/// writes only if the key's mod_revision is still the one read.
async fn etcd_conditional_updates(
    client: &etcd_client::Client,
    writers: usize,
    run_for: Duration,
) -> f64 {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let body = |n| serde_json::to_vec(&object("cas", n)).expect("encodes");
    for w in 0..writers {
        client
            .kv_client()
            .put(format!("/cas/{writers}/{w}"), body(0), None)
            .await
            .expect("created");
    }
    writes_per_second(writers, run_for, |w, deadline| {
        let mut kv = client.kv_client();
        async move {
            let key = format!("/cas/{writers}/{w}");
            let mut done = 0u64;
            while Instant::now() < deadline {
                let read = kv.get(key.as_str(), None).await.expect("read");
                let revision = read.kvs().first().expect("present").mod_revision();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::put(key.as_str(), body(done), None)]);
                let written = kv.txn(txn).await.expect("transaction");
                assert!(written.succeeded(), "no other writer on this key");
                done += 1;
            }
            done
        }
    })
    .await
}

async fn etcd() {
    match start_etcd().await {
        Ok((etcd, mut client)) => {
            let version = client
                .status()
                .await
                .map(|s| s.version().to_owned())
                .unwrap_or_default();
            for writers in [1, 4, 16] {
                let value =
                    etcd_conditional_updates(&client, writers, Duration::from_secs(3)).await;
                emit(json!({
                    "metric": "conditional_updates_per_s", "layer": "etcd", "writers": writers,
                    "value": value.round(), "etcd": version, "members": 1,
                }));
            }
            drop(etcd);
        }
        Err(why) => {
            emit(json!({"metric": "conditional_updates_per_s", "layer": "etcd", "skipped": why}))
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

async fn watch_latency(store: &Store, watchers: usize, updates: u64) -> (f64, f64) {
    let prefix = format!("/watch/{watchers}/");
    let key = format!("{prefix}x");
    store.create(&key, object("x", 0)).await.expect("created");
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=updates).map(|_| AtomicU64::new(0)).collect());
    let from = store.revision();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut watch = store.watch(&prefix, Some(from)).expect("watch");
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(updates as usize);
            while (latencies.len() as u64) < updates {
                let event = watch.next().await.expect("open").expect("event");
                let n = event.object["status"]["n"].as_u64().expect("n") as usize;
                let at = base.elapsed().as_nanos() as u64;
                latencies.push((at - sent[n].load(Ordering::Acquire)) as f64 / 1e6);
            }
            latencies
        }));
    }
    for n in 1..=updates {
        sent[n as usize].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        store
            .update(&key, object("x", n), None)
            .await
            .expect("updated");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("watcher"));
    }
    all.sort_by(f64::total_cmp);
    (percentile(&all, 0.5), percentile(&all, 0.99))
}

async fn list_latency(store: &Store, objects: usize, runs: usize) -> (f64, f64) {
    let mut creates = Vec::new();
    for i in 0..objects {
        let store = store.clone();
        creates.push(tokio::spawn(async move {
            store
                .create(&format!("/list/bench/task-{i:05}"), object("t", i as u64))
                .await
                .expect("created");
        }));
    }
    for create in creates {
        create.await.expect("created");
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let (revision, items) = store.list("/list/bench/");
        let body = serde_json::to_vec(&json!({
            "kind": "TaskList",
            "metadata": {"resourceVersion": revision.to_string()},
            "items": items.iter().map(|o| &**o).collect::<Vec<_>>(),
        }))
        .expect("encodes");
        assert_eq!(items.len(), objects);
        std::hint::black_box(body);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn config_map(name: &str, n: u64) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "data": {"n": n.to_string(), "payload": "x".repeat(200)}
    }))
    .expect("config map")
}

async fn http_conditional_updates(api: &Api<ConfigMap>, writers: usize, run_for: Duration) -> f64 {
    for w in 0..writers {
        api.create(
            &PostParams::default(),
            &config_map(&format!("cas-{writers}-{w}"), 0),
        )
        .await
        .expect("created");
    }
    writes_per_second(writers, run_for, |w, deadline| {
        let api = api.clone();
        async move {
            let name = format!("cas-{writers}-{w}");
            let mut current = api.get(&name).await.expect("got");
            let mut done = 0u64;
            while Instant::now() < deadline {
                current.data = Some([("n".to_owned(), done.to_string())].into());
                // The replace carries the resourceVersion read: a conditional update.
                current = api
                    .replace(&name, &PostParams::default(), &current)
                    .await
                    .expect("no other writer on this object");
                done += 1;
            }
            done
        }
    })
    .await
}

async fn http_watch_latency(api: &Api<ConfigMap>, watchers: usize, updates: u64) -> (f64, f64) {
    let name = format!("watched-{watchers}");
    let created = api
        .create(&PostParams::default(), &config_map(&name, 0))
        .await
        .expect("created");
    let from = created.metadata.resource_version.clone().expect("rv");
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=updates).map(|_| AtomicU64::new(0)).collect());
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut stream = api.watch(&params, &from).await.expect("watch").boxed();
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(updates as usize);
            while (latencies.len() as u64) < updates {
                if let WatchEvent::Modified(cm) =
                    stream.try_next().await.expect("ok").expect("open")
                {
                    let n: usize = cm
                        .data
                        .and_then(|d| d.get("n").and_then(|n| n.parse().ok()))
                        .expect("n");
                    let at = base.elapsed().as_nanos() as u64;
                    latencies.push((at - sent[n].load(Ordering::Acquire)) as f64 / 1e6);
                }
            }
            latencies
        }));
    }
    for n in 1..=updates {
        sent[n as usize].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        api.replace(&name, &PostParams::default(), &{
            let mut cm = config_map(&name, n);
            cm.metadata.resource_version = None;
            cm
        })
        .await
        .expect("updated");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("watcher"));
    }
    all.sort_by(f64::total_cmp);
    (percentile(&all, 0.5), percentile(&all, 0.99))
}

async fn http_list_latency(api: &Api<ConfigMap>, objects: usize, runs: usize) -> (f64, f64) {
    let mut creates = Vec::new();
    for chunk in 0..16 {
        let api = api.clone();
        creates.push(tokio::spawn(async move {
            for i in (chunk..objects).step_by(16) {
                api.create(
                    &PostParams::default(),
                    &config_map(&format!("list-{i:05}"), i as u64),
                )
                .await
                .expect("created");
            }
        }));
    }
    for create in creates {
        create.await.expect("created");
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let listed = api
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("listed");
        assert!(listed.items.len() >= objects);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// The whole server through the kube-rs client: the measurements whose
/// label `wanted` takes.
async fn http(dir: &std::path::Path, wanted: &impl Fn(&str) -> bool) {
    let server = Server::start(Config::local(dir))
        .await
        .expect("server starts");
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(config).expect("client"), "default");
    for writers in [1, 4, 16].into_iter().filter(|_| wanted("http-updates")) {
        let value = http_conditional_updates(&api, writers, Duration::from_secs(3)).await;
        emit(
            json!({"metric": "conditional_updates_per_s", "layer": "http", "writers": writers, "value": value.round()}),
        );
    }
    for watchers in [100, 1000].into_iter().filter(|_| wanted("http-watch")) {
        let (p50, p99) = http_watch_latency(&api, watchers, 100).await;
        emit(
            json!({"metric": "watch_latency_ms", "layer": "http", "watchers": watchers, "p50": p50, "p99": p99}),
        );
    }
    if wanted("http-list") {
        let (p50, p99) = http_list_latency(&api, 10_000, 20).await;
        emit(
            json!({"metric": "list_latency_ms", "layer": "http", "objects": 10_000, "p50": p50, "p99": p99}),
        );
        if let Some(rss) = rss_mib() {
            emit(
                json!({"metric": "rss_mib", "layer": "http", "objects": 10_000, "value": rss, "note": "server and client in one process"}),
            );
        }
    }
    server.shutdown().await;
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let only = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let wanted = |label: &str| label.contains(&only);
    let any_of = |layer: &str| {
        ["updates", "watch", "list"]
            .iter()
            .any(|m| wanted(&format!("{layer}-{m}")))
    };
    if any_of("store") {
        store(&wanted).await;
    }
    if any_of("http") {
        let dir = tempfile::tempdir().expect("tempdir");
        http(dir.path(), &wanted).await;
    }
    if wanted("etcd") {
        etcd().await;
    }
}

/// The store alone: the measurements whose label `wanted` takes.
async fn store(wanted: &impl Fn(&str) -> bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), Options::default()).expect("opens");
    for writers in [1, 4, 16].into_iter().filter(|_| wanted("store-updates")) {
        let value = conditional_updates(&store, writers, Duration::from_secs(3)).await;
        emit(
            json!({"metric": "conditional_updates_per_s", "layer": "store", "writers": writers, "value": value.round()}),
        );
    }
    for watchers in [100, 1000].into_iter().filter(|_| wanted("store-watch")) {
        let (p50, p99) = watch_latency(&store, watchers, 300).await;
        emit(
            json!({"metric": "watch_latency_ms", "layer": "store", "watchers": watchers, "p50": p50, "p99": p99}),
        );
    }
    if !wanted("store-list") {
        return;
    }
    let (p50, p99) = list_latency(&store, 10_000, 30).await;
    emit(
        json!({"metric": "list_latency_ms", "layer": "store", "objects": 10_000, "p50": p50, "p99": p99}),
    );
    if let Some(rss) = rss_mib() {
        emit(json!({"metric": "rss_mib", "layer": "store", "objects": 10_000, "value": rss}));
    }
}
