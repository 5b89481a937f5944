//! Several `gantry controller` processes place tasks on the same
//! simulated instances: replicas of one scheduler name, which share the
//! tasks through their member Leases and race for the instances' room;
//! the no-over-commit invariant (docs/architecture.md, "Invariants") is
//! checked on every instance version, then again with one replica killed
//! and another joining mid-run, and no task is left unbound. It has a
//! test binary of its own so that it does not share the machine with the
//! other controller tests.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crds::v1alpha1::{ContainerInstance, Task};
use futures::{StreamExt, TryStreamExt};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use common::{
    gantry::{Gantry, last},
    invariant::check_instance,
};

/// Leader Leases long enough that a loaded CI machine does not move the
/// leadership by itself (killing s1 still moves it); member Leases
/// short, so a killed replica's tasks move on within seconds.
const LEASES: [&str; 5] = [
    "--leader-elect",
    "--leader-elect-lease-seconds",
    "10",
    "--scheduler-lease-seconds",
    "3",
];

/// Instances, and how many tasks fill one (by cpu and memory alike).
const INSTANCES: usize = 50;
const PER_INSTANCE: usize = 64;
/// Tasks per round: room is left for about 18 instances' worth more.
const TASKS: usize = 2000;
/// The host ports the 1 task in 40 with a fixed port cycles through.
const PORTS: [u16; 3] = [8080, 8081, 8082];

/// Run-task tasks: binpacked (everyone wants the same instance), 1 in 40
/// with a fixed host port. No port has more than 17 tasks, so at least 34
/// instances have any one port free, while at most 31 instances (2,000 /
/// 64) can be full: a port task always has somewhere to go, whatever
/// order the race fills instances in.
fn race_task(name: &str, i: usize) -> Task {
    let port = if i.is_multiple_of(40) {
        let host = PORTS[(i / 40) % PORTS.len()];
        json!([{"containerPort": 80, "hostPort": host}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name},
        "spec": {
            "taskDefinition": "race", "taskDefinitionRevision": 1,
            "placementStrategy": [{"type": "binpack", "field": "memory"}],
            "definition": {"cpu": 128, "memory": 16, "containerDefinitions": [
                {"name": "app", "image": "gantry-test/app:1", "portMappings": port}]},
        },
    }))
    .expect("a task")
}

/// A replica leaving or joining mid-run.
enum Change {
    /// SIGKILL: it never deletes its member Lease.
    Kill(&'static str),
    /// A new replica, with these flags.
    Start(&'static str, &'static [&'static str]),
}

/// Create `n` tasks, wait until all are bound, stop them all and wait
/// until no allocation is left; make each change once that many tasks
/// are bound.
async fn race(g: &mut Gantry, round: &str, n: usize, changes: &[(usize, Change)]) {
    let ns = "race";
    let tasks = g.api::<Task>(ns);
    let names: Vec<String> = (0..n).map(|i| format!("{round}-{i}")).collect();
    let created: Vec<Result<Task, kube::Error>> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let tasks = tasks.clone();
            async move {
                tasks
                    .create(&PostParams::default(), &race_task(name, i))
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "tasks created");
    let mut made = 0;
    let mut bound = 0;
    // Generous: on two cores three debug-build schedulers take 2-3 minutes
    // to bind 2,000 tasks; this test checks the invariant, not the speed
    // (the end_to_end bench measures that).
    let deadline = Instant::now() + Duration::from_secs(360);
    while Instant::now() < deadline {
        let list = tasks.list(&ListParams::default()).await.expect("tasks");
        bound = list
            .items
            .iter()
            .filter(|t| {
                t.name_any().starts_with(&format!("{round}-"))
                    && t.spec.container_instance.is_some()
            })
            .count();
        while let Some((after, change)) = changes.get(made)
            && bound >= *after
        {
            match change {
                Change::Kill(name) => g.kill_9(name),
                Change::Start(name, flags) => {
                    g.controller(name, flags);
                }
            }
            made += 1;
        }
        if bound == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if bound != n {
        panic!(
            "{bound} of {n} tasks bound; unbound: {:#?}\n{}",
            unbound(g, round).await,
            g.logs()
        );
    }
    let stop = json!({"spec": {"desiredStatus": "STOPPED"}});
    let stopped: Vec<_> = futures::stream::iter(names.iter())
        .map(|name| {
            let tasks = tasks.clone();
            let stop = stop.clone();
            async move {
                tasks
                    .patch(name, &PatchParams::default(), &Patch::Merge(&stop))
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(stopped.iter().all(Result::is_ok), "tasks stopped");
    let instances = g.api::<ContainerInstance>(ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let list = instances
            .list(&ListParams::default())
            .await
            .expect("instances");
        let left: usize = list
            .items
            .iter()
            .map(|ci| ci.status.as_ref().map_or(0, |s| s.allocations.len()))
            .sum();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = instances
        .list(&ListParams::default())
        .await
        .expect("instances");
    let all = tasks
        .list(&ListParams::default())
        .await
        .expect("tasks")
        .items;
    let leaked: Vec<String> = list
        .items
        .iter()
        .flat_map(|ci| {
            ci.status.iter().flat_map(|s| &s.allocations).map(|a| {
                let task = all
                    .iter()
                    .find(|t| t.uid().as_deref() == Some(a.task_uid.as_str()));
                format!(
                    "{} on {}: task bound to {:?}, last {:?}, desired {:?}",
                    a.task,
                    ci.name_any(),
                    task.and_then(|t| t.spec.container_instance.clone()),
                    task.and_then(last),
                    task.map(|t| t.spec.desired_status)
                )
            })
        })
        .take(10)
        .collect();
    panic!(
        "allocations leaked after every task stopped: {leaked:#?}\n{}",
        g.logs()
    );
}

/// What a failing round knows of its unbound tasks: each one's
/// `Scheduled` condition and the instances holding a reservation for it.
async fn unbound(g: &Gantry, round: &str) -> Vec<String> {
    let ns = "race";
    let tasks = g
        .api::<Task>(ns)
        .list(&ListParams::default())
        .await
        .expect("tasks");
    let instances = g
        .api::<ContainerInstance>(ns)
        .list(&ListParams::default())
        .await
        .expect("instances");
    tasks
        .items
        .iter()
        .filter(|t| t.name_any().starts_with(&format!("{round}-")))
        .filter(|t| t.spec.container_instance.is_none())
        .take(10)
        .map(|t| {
            let uid = t.uid().unwrap_or_default();
            let held: Vec<String> = instances
                .items
                .iter()
                .filter(|ci| {
                    ci.status
                        .iter()
                        .flat_map(|s| &s.allocations)
                        .any(|a| a.task_uid == uid)
                })
                .map(ResourceExt::name_any)
                .collect();
            let scheduled = t
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == "Scheduled")
                .map(|c| format!("{} {}: {}", c.status, c.reason, c.message));
            format!(
                "{} (rv {:?}): reserved on {held:?}, scheduled {scheduled:?}",
                t.name_any(),
                t.resource_version()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_race_without_over_committing_even_when_one_is_killed() {
    let ns = "race";
    let mut g = Gantry::start(ns).await;
    // 128 cpu and 16 MiB a task: PER_INSTANCE tasks fill an instance.
    g.agents(ns, "small", INSTANCES, 8192, 1024);
    let ports: Vec<u16> = ["s1", "s2", "s3"]
        .iter()
        .map(|name| g.controller(name, &LEASES))
        .collect();
    g.instances_connected(ns, INSTANCES).await;
    // Every version of every instance, as the watch delivers them.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let versions: Arc<Mutex<usize>> = Arc::default();
    let holders: Arc<Mutex<HashSet<String>>> = Arc::default();
    let checker = {
        let api = g.api::<ContainerInstance>(ns);
        let (violations, versions) = (Arc::clone(&violations), Arc::clone(&versions));
        let holders = Arc::clone(&holders);
        tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
            while let Ok(Some(ci)) = stream.try_next().await {
                *versions.lock().expect("lock") += 1;
                if ci
                    .status
                    .as_ref()
                    .is_some_and(|s| !s.allocations.is_empty())
                {
                    holders.lock().expect("lock").insert(ci.name_any());
                }
                if let Err(e) = check_instance(&ci) {
                    violations.lock().expect("lock").push(e);
                }
            }
        })
    };
    // Every binding: once set, never changed.
    let rebinds: Arc<Mutex<Vec<String>>> = Arc::default();
    let binder = {
        let api = g.api::<Task>(ns);
        let rebinds = Arc::clone(&rebinds);
        tokio::spawn(async move {
            let mut bound: HashMap<String, String> = HashMap::new();
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
            while let Ok(Some(task)) = stream.try_next().await {
                if let Some(on) = &task.spec.container_instance {
                    let uid = task.uid().unwrap_or_default();
                    if let Some(before) = bound.insert(uid, on.clone())
                        && &before != on
                    {
                        rebinds
                            .lock()
                            .expect("lock")
                            .push(format!("{} {before} -> {on}", task.name_any()));
                    }
                }
            }
        })
    };
    race(&mut g, "one", TASKS, &[]).await;
    let mut conflicts = 0.0;
    let mut placements = 0.0;
    let mut shares = Vec::new();
    for port in &ports {
        let before = placements;
        let metrics = g.scrape(*port).await;
        for line in metrics.lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("gantry_placement_conflicts_total{") {
                conflicts += value();
            }
            if line.starts_with("gantry_placements_total{") {
                placements += value();
            }
        }
        shares.push(placements - before);
    }
    eprintln!("three replicas: {placements} placements ({shares:?} each), {conflicts} conflicts");
    assert!(
        shares.iter().all(|n| *n > 0.0),
        "every replica placed its share of the tasks: {shares:?}"
    );
    assert_eq!(
        placements, TASKS as f64,
        "each task counted once, by the scheduler that bound it"
    );
    assert!(
        conflicts > 0.0,
        "the schedulers did race: no conflict was counted"
    );

    // Again, with one replica killed once 500 tasks are bound (the
    // others take its tasks once its Lease lapses) and a new one joining
    // at 1,000.
    race(
        &mut g,
        "two",
        TASKS,
        &[
            (500, Change::Kill("s1")),
            (1000, Change::Start("s4", &LEASES)),
        ],
    )
    .await;

    checker.abort();
    binder.abort();
    let versions = *versions.lock().expect("lock");
    // A round needs at least this many instances, each seen reserved and
    // released at least once a round.
    let needed = TASKS.div_ceil(PER_INSTANCE);
    let holders = holders.lock().expect("lock").len();
    assert!(
        holders >= needed,
        "{holders} instances held tasks, fewer than the {needed} a round needs"
    );
    assert!(
        versions >= needed * 2 * 2,
        "the checker saw the race ({versions} versions)"
    );
    let violations = violations.lock().expect("lock");
    assert!(
        violations.is_empty(),
        "invariant broken: {:?}",
        &violations[..violations.len().min(5)]
    );
    let rebinds = rebinds.lock().expect("lock");
    assert!(rebinds.is_empty(), "tasks bound twice: {:?}", *rebinds);
    drop(g.server.take());
}
