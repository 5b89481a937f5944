//! The scale run (docs/scale.md): `gantry apiserver` and `gantry controller`
//! as processes of their own, 10,000 simulated container instances and 100
//! services of 1,000 tasks each, from apply to every service Ready.
//!
//! Ignored by default: it takes minutes and most of the machine. Run it
//! with `cargo test --release --test scale -- --ignored --nocapture`;
//! `GANTRY_SCALE_INSTANCES`, `GANTRY_SCALE_SERVICES` and
//! `GANTRY_SCALE_TASKS` (per service) shrink it.
//!
//! No agent process runs: ten thousand of them would be ten thousand
//! watches, each shown every task event. The run plays the agents' part in
//! one client, as the end_to_end bench does: it registers each instance
//! and holds its Lease (renewed once, for an hour, so the controller sees
//! every agent connected), and marks each task RUNNING once it is bound,
//! as an agent reports a started container.

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crds::{
    conditions::{ConditionType, is_true},
    v1alpha1::{ContainerInstance, DesiredStatus, Service, Task, TaskDefinition, TaskLastStatus},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};

use common::invariant::check_instance;

const NS: &str = "scale";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
        .unwrap_or(default)
}

/// The processes started, killed when the run ends however it ends.
struct Processes(Vec<(&'static str, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn spawn(&mut self, name: &'static str, dir: &Path, args: &[&str]) {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gantry runs");
        self.0.push((name, child));
    }

    /// A process's peak resident set so far, in MiB (`VmHWM`).
    fn peak_rss_mib(&self, name: &str) -> u64 {
        let (_, child) = self.0.iter().find(|(n, _)| *n == name).expect("started");
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib / 1024
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Wait for the API server process to write its kubeconfig and answer.
async fn connect(kubeconfig: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists() {
            let client = common::client(kubeconfig).await;
            if client.apiserver_version().await.is_ok() {
                return client;
            }
        }
        assert!(Instant::now() < deadline, "the API server did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// Register `count` instances with their Leases, 64 calls at a time.
async fn register(client: &Client, count: usize) {
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..count)
        .map(|i| {
            let (instances, leases) = (instances.clone(), leases.clone());
            async move {
                let name = format!("i-{i:05}");
                let instance: ContainerInstance = from_json(json!({
                    "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
                    "metadata": {"name": name},
                    "spec": {
                        "registeredResources": {"cpu": 4096, "memory": 8192},
                        "attributes": {"ecs.availability-zone": format!("zone-{}", i % 3)},
                    },
                }));
                instances
                    .create(&PostParams::default(), &instance)
                    .await
                    .expect("instance registered");
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let lease: Lease = from_json(json!({
                    "metadata": {"name": name},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 3600,
                             "acquireTime": now, "renewTime": now},
                }));
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .expect("lease held");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// Play every agent: mark each bound task RUNNING, once. The time of the
/// latest binding seen, from `start`, and the player, to stop.
fn run_bound_tasks(
    client: &Client,
    start: Instant,
) -> (Arc<Mutex<Duration>>, tokio::task::JoinHandle<Vec<()>>) {
    let last_bound = Arc::new(Mutex::new(Duration::ZERO));
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    let seen = Arc::clone(&last_bound);
    let bound = watcher(tasks.clone(), watcher::Config::default())
        .applied_objects()
        .try_filter_map(move |task: Task| {
            let fresh = task.spec.container_instance.is_some()
                && task.spec.desired_status == DesiredStatus::Running
                && common::gantry::last(&task).is_none_or(|s| s < TaskLastStatus::Running);
            if fresh {
                *seen.lock().expect("not poisoned") = start.elapsed();
            }
            futures::future::ready(Ok(fresh.then(|| task.name_any())))
        });
    let mut started = HashSet::new();
    let unseen = bound.try_filter(move |name| futures::future::ready(started.insert(name.clone())));
    let player = tokio::spawn(
        unseen
            .map(move |name| {
                let tasks = tasks.clone();
                async move {
                    let name = name.expect("the task watch runs");
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let running = json!({"status": {
                        "lastStatus": "RUNNING", "pullStartedAt": now, "pullStoppedAt": now,
                        "startedAt": now,
                        "containers": [{"name": "app", "lastStatus": "RUNNING"}],
                    }});
                    tasks
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&running))
                        .await
                        .expect("task marked RUNNING");
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<()>>(),
    );
    (last_bound, player)
}

/// Wait until the controller has seen every instance's agent connected,
/// so that placement starts on the whole cluster.
async fn all_connected(client: &Client, count: usize) {
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let connected = list_all(&instances)
            .await
            .iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.agent_connected))
            .count();
        if connected == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{connected} of {count} instances connected"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every object of a kind, in pages of 2,000.
async fn list_all<K>(api: &Api<K>) -> Vec<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(2_000);
    loop {
        let page = api.list(&params).await.expect("a page");
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes and most of the machine: cargo test --release --test scale -- --ignored"]
async fn ten_thousand_instances_run_a_hundred_services_of_a_thousand_tasks() {
    let instances = setting("GANTRY_SCALE_INSTANCES", 10_000);
    let service_count = setting("GANTRY_SCALE_SERVICES", 100);
    let per_service = setting("GANTRY_SCALE_TASKS", 1_000);
    let total = service_count * per_service;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut processes = Processes(Vec::new());
    processes.spawn(
        "apiserver",
        dir.path(),
        &[
            "apiserver",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--listen",
            &listen,
        ],
    );
    let client = connect(&data.join("kubeconfig")).await;
    common::install_crds(&client).await;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": NS}})),
        )
        .await
        .expect("namespace created");
    register(&client, instances).await;
    processes.spawn(
        "controller",
        dir.path(),
        &[
            "controller",
            "--kubeconfig",
            data.join("controller.kubeconfig").to_str().expect("utf-8"),
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()),
        ],
    );
    let definitions: Api<TaskDefinition> = Api::namespaced(client.clone(), NS);
    definitions
        .create(
            &PostParams::default(),
            &from_json(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
                "metadata": {"name": "web"},
                "spec": {"cpu": 128, "memory": 256, "containerDefinitions": [
                    {"name": "app", "image": "scale/app:1", "essential": true}]},
            })),
        )
        .await
        .expect("task definition created");

    all_connected(&client, instances).await;

    let start = Instant::now();
    let (last_bound, player) = run_bound_tasks(&client, start);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    for s in 0..service_count {
        let service: Service = from_json(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": format!("web-{s:03}")},
            "spec": {"taskDefinition": "web", "desiredCount": per_service},
        }));
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("service created");
    }
    let applied = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3_600);
    let ready = loop {
        let ready = list_all(&services)
            .await
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| is_true(&st.conditions, ConditionType::Ready))
            })
            .count();
        if ready == service_count {
            break start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {service_count} services Ready after an hour"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    player.abort();
    let last_bound = *last_bound.lock().expect("not poisoned");
    let (apiserver_mib, controller_mib) = (
        processes.peak_rss_mib("apiserver"),
        processes.peak_rss_mib("controller"),
    );

    // The final state: every instance within its resources, every live task
    // RUNNING and allocated exactly once, on the instance it is bound to.
    let stored = list_all(&Api::<ContainerInstance>::namespaced(client.clone(), NS)).await;
    assert_eq!(stored.len(), instances);
    let mut homes: HashMap<String, String> = HashMap::new();
    for instance in &stored {
        check_instance(instance).unwrap_or_else(|e| panic!("{e}"));
        for allocation in instance.status.iter().flat_map(|s| &s.allocations) {
            let again = homes.insert(allocation.task.clone(), instance.name_any());
            assert!(again.is_none(), "{} allocated twice", allocation.task);
        }
    }
    let tasks = list_all(&Api::<Task>::namespaced(client.clone(), NS)).await;
    let live: Vec<&Task> = tasks
        .iter()
        .filter(|t| common::gantry::last(t) != Some(TaskLastStatus::Stopped))
        .collect();
    assert_eq!(live.len(), total, "live tasks");
    for task in &live {
        assert_eq!(common::gantry::last(task), Some(TaskLastStatus::Running));
        let bound = task.spec.container_instance.as_deref();
        assert_eq!(
            homes.get(&task.name_any()).map(String::as_str),
            bound,
            "{} allocated where it is bound",
            task.name_any()
        );
    }
    let per_instance: Vec<usize> = {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for home in homes.values() {
            *counts.entry(home).or_default() += 1;
        }
        let mut counts: Vec<usize> = stored
            .iter()
            .map(|i| counts.get(i.name_any().as_str()).copied().unwrap_or(0))
            .collect();
        counts.sort_unstable();
        counts
    };
    println!(
        "{}",
        json!({
            "instances": instances,
            "services": service_count,
            "tasks": total,
            "apply_s": applied.as_secs_f64(),
            "apply_to_last_bound_s": last_bound.as_secs_f64(),
            "apply_to_all_ready_s": ready.as_secs_f64(),
            "placements_per_s": (total as f64 / last_bound.as_secs_f64()).round(),
            "tasks_per_instance_min_max": [per_instance.first(), per_instance.last()],
            "apiserver_peak_rss_mib": apiserver_mib,
            "controller_peak_rss_mib": controller_mib,
        })
    );
}
