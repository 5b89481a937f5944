//! Scheduling through the embedded control plane, one JSON object per line.
//!
//! `cargo bench -p controller --bench end_to_end` starts a fresh embedded
//! API server (fsync on every commit, the kube-rs client over TLS, all in
//! this process) for each measurement, registers 1,000 simulated container
//! instances (objects whose `status.agentConnected` is set; no agent runs),
//! and measures:
//! - `"placements"`: 2,000 run-task Tasks, all created before the
//!   schedulers start, with the default strategy and with
//!   `binpack(memory)` (every scheduler then wants the same instance),
//!   bound by 1, 2 and 4 schedulers in three arrangements (`"mode"`):
//!   `race`, replicas of one name each placing every task (as before
//!   member Leases); `share`, replicas of one name sharing the tasks
//!   through their member Leases (`scheduler::members`); `names`,
//!   schedulers of different names, each placing its own share of the
//!   tasks on the same instances. Placements per second from the
//!   schedulers' start to the last binding, when the first binding came,
//!   the steady rate (placements per second between the 10th and the
//!   90th percentile of the binding times), the conflicts (409s) met per
//!   placement, the reservations written again after a 409 once the same
//!   choice was checked against the newer instance (`rechecks`), the
//!   placements started over (`retries`), and Omega's conflict fraction:
//!   placements started over per placement;
//! - `"store_limit"`, after each of those: the store's writes (revisions)
//!   per placement in it, and the conditional writes per second the store
//!   takes from 64 writers through the same client; their quotient is what
//!   the store allows a scheduler at most (placements per second);
//! - `"service"`: a Service of desiredCount 1,000 created with the service
//!   and task-definition reconcilers and one scheduler running: from the
//!   create call to each of its tasks' binding, p50, p99 and the last.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use apiserver::server::{Config as ServerConfig, Server};
use controller::{Context, Metrics, events::Events, scheduler};
use crds::v1alpha1::{ContainerInstance, Service, Task, TaskDefinition};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

/// The gantry binary's allocator (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "bench";
const INSTANCES: usize = 1_000;
const TASKS: usize = 2_000;
const SERVICE_TASKS: usize = 1_000;

fn emit(line: &Value) {
    println!("{line}");
}

async fn start(dir: &Path) -> (Server, Client) {
    let server = Server::start(ServerConfig::local(dir))
        .await
        .expect("server starts");
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    crds::install(&client).await.expect("CRDs installed");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).expect("a namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
    register_instances(&client).await;
    (server, client)
}

/// Instances as an agent registers them, each with room for 32 tasks.
async fn register_instances(client: &Client) {
    let api: Api<ContainerInstance> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..INSTANCES)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("i-{i:04}");
                let ci: ContainerInstance = serde_json::from_value(json!({
                    "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
                    "metadata": {"name": name},
                    "spec": {
                        "registeredResources": {"cpu": 4096, "memory": 8192},
                        "attributes": {"ecs.availability-zone": format!("zone-{}", i % 3)},
                    },
                }))
                .expect("an instance");
                api.create(&PostParams::default(), &ci)
                    .await
                    .expect("instance created");
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"agentConnected": true}})),
                )
                .await
                .expect("instance connected");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

fn definition() -> Value {
    json!({"cpu": 128, "memory": 256, "containerDefinitions": [
        {"name": "app", "image": "bench/app:1", "essential": true}]})
}

/// How several schedulers divide the tasks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replicas of one name, each placing every task.
    Race,
    /// Replicas of one name sharing the tasks through member Leases.
    Share,
    /// Schedulers of different names, each with its own tasks.
    Names,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Race => "race",
            Self::Share => "share",
            Self::Names => "names",
        }
    }

    /// The scheduler name of scheduler (or task group) `i` of `n`.
    fn name(self, i: usize, n: usize) -> String {
        match self {
            Self::Names => format!("s{}", i % n),
            Self::Race | Self::Share => "gantry".to_owned(),
        }
    }
}

/// Schedulers until `stop` is set; each counts in its own metrics.
fn schedulers(
    client: &Client,
    n: usize,
    mode: Mode,
    stop: &watch::Receiver<bool>,
) -> Vec<(String, Arc<Metrics>, JoinHandle<()>)> {
    (0..n)
        .map(|i| {
            let metrics = Arc::new(Metrics::new());
            let mut stop = stop.clone();
            let name = mode.name(i, n);
            let mut options = scheduler::Options::new(&name);
            if mode == Mode::Share {
                let mut members = scheduler::members::Options::new(NS, &format!("replica-{i}"));
                members.duration = Duration::from_secs(10);
                options.members = Some(members);
            }
            let running = tokio::spawn(scheduler::run(
                client.clone(),
                options,
                Arc::clone(&metrics),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
            (name, metrics, running)
        })
        .collect()
}

/// When each task of the namespace was first seen bound, until `count`
/// are, measured from `since`.
async fn bindings(client: &Client, count: usize, since: Instant) -> Vec<Duration> {
    let api: Api<Task> = Api::namespaced(client.clone(), NS);
    let mut bound: HashMap<String, Duration> = HashMap::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    while bound.len() < count {
        let task = stream
            .try_next()
            .await
            .expect("watching tasks")
            .expect("the watch goes on");
        if task.spec.container_instance.is_some() {
            bound
                .entry(task.uid().unwrap_or_default())
                .or_insert_with(|| since.elapsed());
        }
    }
    let mut times: Vec<Duration> = bound.into_values().collect();
    times.sort();
    times
}

async fn placements(schedulers_n: usize, strategy: &str, mode: Mode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path()).await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    let placement = match strategy {
        "binpack" => json!([{"type": "binpack", "field": "memory"}]),
        _ => json!([]),
    };
    futures::stream::iter(0..TASKS)
        .map(|i| {
            let tasks = tasks.clone();
            let placement = placement.clone();
            async move {
                let task: Task = serde_json::from_value(json!({
                    "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
                    "metadata": {"name": format!("t-{i:05}")},
                    "spec": {
                        "schedulerName": mode.name(i, schedulers_n),
                        "taskDefinition": "app", "taskDefinitionRevision": 1,
                        "placementStrategy": placement,
                        "definition": definition(),
                    },
                }))
                .expect("a task");
                tasks
                    .create(&PostParams::default(), &task)
                    .await
                    .expect("task created");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let (stop, stopped) = watch::channel(false);
    let revision_before = revision(&client).await;
    let start = Instant::now();
    let metrics = schedulers(&client, schedulers_n, mode, &stopped);
    let times = bindings(&client, TASKS, start).await;
    let elapsed = times.last().copied().unwrap_or_default();
    let writes = revision(&client).await - revision_before;
    let _ = stop.send(true);
    // A binding is seen before the round that wrote it has counted it.
    let [mut placed, mut conflicts, mut rechecks, mut retries] = [0; 4];
    for (name, metrics, running) in metrics {
        running.await.expect("scheduler ran");
        let [p, c, k, r] = metrics.counts(&name);
        placed += p;
        conflicts += c;
        rechecks += k;
        retries += r;
    }
    emit(&json!({
        "bench": "placements",
        "schedulers": schedulers_n,
        "mode": mode.label(),
        "strategy": strategy,
        "instances": INSTANCES,
        "tasks": TASKS,
        "seconds": round(elapsed.as_secs_f64()),
        "placements_per_second": round(TASKS as f64 / elapsed.as_secs_f64()),
        "first_binding_seconds": round(times.first().copied().unwrap_or_default().as_secs_f64()),
        "steady_placements_per_second": round(steady_rate(&times)),
        "placements_counted": placed,
        "conflicts": conflicts,
        "conflicts_per_placement": round(conflicts as f64 / placed.max(1) as f64),
        "rechecks": rechecks,
        "retries": retries,
        "conflict_fraction": round(retries as f64 / placed.max(1) as f64),
    }));
    let writes_per_placement = writes as f64 / TASKS as f64;
    let store = store_writes_per_second(&client).await;
    emit(&json!({
        "bench": "store_limit",
        "label": format!("{}-{strategy}-{schedulers_n}", mode.label()),
        "writes_per_placement": round(writes_per_placement),
        "store_writes_per_second": round(store),
        "limit_placements_per_second": round(store / writes_per_placement),
    }));
    server.shutdown().await;
}

/// Placements per second between the tenth and the ninetieth percentile
/// of the binding times: the rate once every scheduler is at work,
/// without the start (lists, member Leases settling) or the last few.
fn steady_rate(times: &[Duration]) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let (low, high) = (rank(times.len(), 0.1), rank(times.len(), 0.9));
    let span = times[high] - times[low];
    if span.is_zero() {
        return 0.0;
    }
    (high - low) as f64 / span.as_secs_f64()
}

/// The index of the `q` quantile of `len` sorted values (nearest rank);
/// `len` must not be 0.
fn rank(len: usize, q: f64) -> usize {
    ((len as f64 * q).ceil() as usize).clamp(1, len) - 1
}

/// The store's revision: every write takes the next one.
async fn revision(client: &Client) -> u64 {
    let api: Api<Task> = Api::namespaced(client.clone(), NS);
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("tasks listed");
    list.metadata
        .resource_version
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

/// What the store takes of the writes a placement makes, through the same
/// client and with as many in flight as a scheduler keeps
/// (`scheduler::Options::concurrency`): conditional merge patches, half
/// of instance status and half of tasks (a label, as a binding adds),
/// each writer on its own instance and task so none conflicts.
async fn store_writes_per_second(client: &Client) -> f64 {
    const WRITES: usize = 4_000;
    let writers = scheduler::Options::new("gantry").concurrency;
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), NS);
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    futures::stream::iter(0..writers)
        .map(|w| {
            let (instances, tasks) = (instances.clone(), tasks.clone());
            async move {
                let instance = format!("i-{w:04}");
                let task = format!("t-{w:05}");
                let mut instance_rv = instances
                    .get(&instance)
                    .await
                    .expect("instance")
                    .resource_version();
                let mut task_rv = tasks.get(&task).await.expect("task").resource_version();
                for j in 0..WRITES / writers {
                    let params = PatchParams::default();
                    if j % 2 == 0 {
                        let patch = Patch::Merge(json!({
                            "metadata": {"resourceVersion": instance_rv},
                            "status": {"pendingTasksCount": j}}));
                        let written = instances.patch_status(&instance, &params, &patch).await;
                        instance_rv = written.expect("instance written").resource_version();
                    } else {
                        let patch = Patch::Merge(json!({"metadata": {
                            "resourceVersion": task_rv,
                            "labels": {"bench/write": j.to_string()}}}));
                        let written = tasks.patch(&task, &params, &patch).await;
                        task_rv = written.expect("task written").resource_version();
                    }
                }
            }
        })
        .buffer_unordered(writers)
        .collect::<Vec<()>>()
        .await;
    (WRITES / writers * writers) as f64 / start.elapsed().as_secs_f64()
}

async fn service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path()).await;
    let (stop, stopped) = watch::channel(false);
    let context = Arc::new(Context {
        client: client.clone(),
        config: controller::Config::new("bench"),
        metrics: Arc::new(Metrics::new()),
        events: Events::new(client.clone(), "bench"),
    });
    let signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(controller::task_definition::run(
        Arc::clone(&context),
        signal(),
    ));
    tokio::spawn(controller::service::run(Arc::clone(&context), signal()));
    let _ = schedulers(&client, 1, Mode::Race, &stopped);

    let definitions: Api<TaskDefinition> = Api::namespaced(client.clone(), NS);
    let td: TaskDefinition = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
        "metadata": {"name": "web"},
        "spec": definition(),
    }))
    .expect("a task definition");
    definitions
        .create(&PostParams::default(), &td)
        .await
        .expect("task definition created");
    await_condition(definitions, "web", |td: Option<&TaskDefinition>| {
        td.and_then(|td| td.status.as_ref()).is_some_and(|s| {
            crds::conditions::is_true(&s.conditions, crds::conditions::ConditionType::Valid)
        })
    })
    .await
    .expect("task definition valid");

    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"taskDefinition": "web", "desiredCount": SERVICE_TASKS},
    }))
    .expect("a service");
    let start = Instant::now();
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");
    let times = bindings(&client, SERVICE_TASKS, start).await;
    let _ = stop.send(true);
    let at = |q: f64| times[rank(times.len(), q)];
    emit(&json!({
        "bench": "service",
        "instances": INSTANCES,
        "desired_count": SERVICE_TASKS,
        "apply_to_bound_p50_ms": round(at(0.50).as_secs_f64() * 1000.0),
        "apply_to_bound_p99_ms": round(at(0.99).as_secs_f64() * 1000.0),
        "apply_to_all_bound_ms": round(at(1.0).as_secs_f64() * 1000.0),
    }));
    server.shutdown().await;
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `cargo bench -p controller --bench end_to_end [-- WORD]`: with a word,
/// only the measurements whose label (`placements-share-binpack-4`,
/// `service`) contains it.
#[tokio::main]
async fn main() {
    let only = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    for strategy in ["default", "binpack"] {
        for mode in [Mode::Race, Mode::Share, Mode::Names] {
            for n in [1, 2, 4] {
                if mode != Mode::Race && n == 1 {
                    // One scheduler is one scheduler in every mode.
                    continue;
                }
                let label = format!("placements-{}-{strategy}-{n}", mode.label());
                if label.contains(&only) {
                    placements(n, strategy, mode).await;
                }
            }
        }
    }
    if "service".contains(&only) {
        service().await;
    }
}
