//! `gantry controller` against the embedded control plane, with simulated
//! agents (`gantry agent --runtime sim`, real processes with the real
//! agent loop and an in-memory container runtime) for hosts: services
//! scale, roll, trip the circuit breaker and roll back; instances drain,
//! get lost and join. The scheduler race has its own binary,
//! tests/scheduler_race.rs.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use crds::v1alpha1::{
    ContainerInstance, DeploymentStatus, DesiredStatus, RevisionState, RolloutState, ServiceState,
    StopCode, Task, TaskDefinitionRevision, TaskLastStatus,
};
use futures::StreamExt;
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::watcher,
};
use serde_json::{Value, json};

use common::gantry::{Gantry, condition, last, ready};

fn task_definition(name: &str, memory: u32, command: &[&str], env: &str) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"cpu": 128, "memory": memory, "containerDefinitions": [{
            "name": "app", "image": "gantry-test/app:1", "command": command,
            "environment": [{"name": "VERSION", "value": env}],
            "portMappings": [{"containerPort": 80}],
        }]},
    })
}

fn service(name: &str, td: &str, desired: i32, deployment: Value) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"taskDefinition": td, "desiredCount": desired, "deploymentConfiguration": deployment},
    })
}

/// A DAEMON service of the task definition of the same name.
fn daemon(name: &str) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"taskDefinition": name, "schedulingStrategy": "DAEMON"},
    })
}

/// A REPLICA service `web` of `desired` tasks beside a DAEMON service
/// `logs`, with their task definitions.
fn web_and_logs(desired: i32, deployment: Value) -> [Value; 4] {
    [
        task_definition("web", 128, &["httpd"], "1"),
        service("web", "web", desired, deployment),
        task_definition("logs", 32, &["agent"], "1"),
        daemon("logs"),
    ]
}

/// Tasks per instance among those running.
fn spread(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        if let Some(i) = &t.spec.container_instance {
            *counts.entry(i.clone()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_reaches_ready_and_follows_kubectl_scale() {
    let ns = "scale";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 10, 2048, 2048);
    g.controller("controller", &[]);
    g.instances_connected(ns, 10).await;
    let cli = common::tool("KUBECTL", "kubectl").map(|binary| common::Cli {
        binary,
        kubeconfig: g.kubeconfig.clone(),
    });
    // Remaining resources are there from registration on, not from the
    // first placement.
    if let Some(cli) = &cli {
        instances_print(cli, ns, &[(0, 0, 2048, 2048); 10]).await;
    }
    g.apply(
        ns,
        &[
            task_definition("web", 128, &["httpd"], "1"),
            service("web", "web", 50, json!({})),
        ],
    )
    .await;

    let s = g
        .service_until(ns, "web", "reached Ready with 50 tasks", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 50)
        })
        .await;
    let status = s.status.as_ref().expect("status");
    assert_eq!((status.desired_count, status.pending_count), (50, 0));
    assert_eq!(status.deployments.len(), 1);
    let d = &status.deployments[0];
    assert_eq!(
        (
            d.id.as_str(),
            d.status,
            d.rollout_state,
            d.running_count,
            d.task_definition_revision
        ),
        (
            "ecs-svc/1",
            DeploymentStatus::Primary,
            RolloutState::Completed,
            50,
            1
        )
    );
    assert_eq!(condition(&s, "Ready").map(|c| c.1), Some("SteadyState"));
    assert_eq!(
        condition(&s, "Progressing").map(|c| (c.0, c.1)),
        Some(("False", "DeploymentCompleted"))
    );
    assert_eq!(condition(&s, "Degraded").map(|c| c.0), Some("False"));
    assert_eq!(status.selector.as_deref(), Some("gantry.dev/service=web"));
    let tasks = g.live_tasks(ns, "web").await;
    let per = spread(&tasks);
    assert_eq!(per.len(), 10, "spread over every instance: {per:?}");
    assert!(per.values().all(|n| *n == 5), "5 per instance: {per:?}");
    assert!(tasks.iter().all(|t| {
        t.spec.group.as_deref() == Some("service:web")
            && t.spec.started_by.as_deref() == Some("ecs-svc/1")
            && !t.spec.enable_execute_command
            && t.owner_references()
                .iter()
                .any(|o| o.kind == "Service" && o.name == "web")
    }));
    g.until_event(ns, "web", "SteadyState").await;

    let Some(cli) = cli else {
        return;
    };
    // 5 tasks of 128 CPU units and 128 MiB on each instance.
    instances_print(&cli, ns, &[(5, 0, 1408, 1408); 10]).await;
    figures_stay_unwritten_while_nothing_changes(&g, ns).await;
    reapplying_changes_nothing(
        &g,
        &cli,
        ns,
        &[
            task_definition("web", 128, &["httpd"], "1"),
            service("web", "web", 50, json!({})),
        ],
    )
    .await;

    cli.ok(&["-n", ns, "scale", "gsvc/web", "--replicas=80"]);
    let s = g
        .service_until(ns, "web", "scaled to 80", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 80)
        })
        .await;
    assert_eq!(s.status.as_ref().map(|st| st.desired_count), Some(80));
    let per = spread(&g.live_tasks(ns, "web").await);
    assert!(per.values().all(|n| *n == 8), "8 per instance: {per:?}");
    instances_print(&cli, ns, &[(8, 0, 1024, 1024); 10]).await;

    cli.ok(&["-n", ns, "scale", "gsvc/web", "--replicas=5"]);
    let s = g
        .service_until(ns, "web", "scaled to 5", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 5)
        })
        .await;
    let status = s.status.expect("status");
    assert_eq!((status.desired_count, status.pending_count), (5, 0));
    let all = g.tasks(ns, "gantry.dev/service=web").await;
    let stopped: Vec<&Task> = all
        .iter()
        .filter(|t| last(t) == Some(TaskLastStatus::Stopped))
        .collect();
    assert_eq!(stopped.len(), 75, "80 - 5 stopped");
    assert!(stopped.iter().all(|t| {
        let st = t.status.as_ref().expect("status");
        st.stop_code == Some(StopCode::ServiceSchedulerInitiated)
            && st.stopped_reason.as_deref()
                == Some("Scaling activity initiated by (deployment ecs-svc/1)")
    }));
    let per = spread(&g.live_tasks(ns, "web").await);
    assert_eq!(per.len(), 5, "scale-in keeps the spread: {per:?}");
    let mut after = vec![(1, 0, 1920, 1920); 5];
    after.extend([(0, 0, 2048, 2048); 5]);
    instances_print(&cli, ns, &after).await;
    let printed = cli.ok(&["-n", ns, "get", "gsvc", "web"]);
    assert!(
        printed.contains("web") && printed.contains("True"),
        "{printed}"
    );
}

/// Wait until `kubectl get ci` prints these RUNNING, PENDING, CPU LEFT and
/// MEMORY LEFT columns for the instances, in any order.
async fn instances_print(cli: &common::Cli, ns: &str, expected: &[(u32, u32, u32, u32)]) {
    let mut want: Vec<Vec<String>> = expected
        .iter()
        .map(|(r, p, c, m)| vec![r.to_string(), p.to_string(), c.to_string(), m.to_string()])
        .collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let printed = cli.ok(&["-n", ns, "get", "ci"]);
        let mut lines = printed.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "STATE",
                "AGENT CONNECTED",
                "RUNNING",
                "PENDING",
                "CPU LEFT",
                "MEMORY LEFT",
                "AGE"
            ],
            "{printed}"
        );
        let mut got: Vec<Vec<String>> = lines
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(4)
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        got.sort();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl get ci never showed {want:?}; it shows:\n{printed}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// With nothing changing, the instances' figures cost no writes: their
/// resourceVersion, the schedulers' precondition, stays put over several
/// collector passes.
async fn figures_stay_unwritten_while_nothing_changes(g: &Gantry, ns: &str) {
    let versions = || async {
        let mut v: Vec<(String, Option<String>)> = g
            .api::<ContainerInstance>(ns)
            .list(&ListParams::default())
            .await
            .expect("instances")
            .items
            .iter()
            .map(|ci| (ci.name_any(), ci.resource_version()))
            .collect();
        v.sort();
        v
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        versions().await,
        before,
        "instances written while nothing changed"
    );
}

/// Applying the manifests a Ready service came from again, client-side
/// and server-side, twice each, changes nothing: no new revision or
/// deployment, the same tasks, as on a real cluster (a GitOps sync).
async fn reapplying_changes_nothing(g: &Gantry, cli: &common::Cli, ns: &str, manifests: &[Value]) {
    let names = |tasks: Vec<Task>| {
        let mut names: Vec<String> = tasks.iter().map(ResourceExt::name_any).collect();
        names.sort();
        names
    };
    let before = names(g.live_tasks(ns, "web").await);
    let file = g.kubeconfig.with_file_name("reapplied.json");
    let documents: Vec<String> = manifests.iter().map(Value::to_string).collect();
    std::fs::write(&file, documents.join("\n---\n")).expect("written");
    let file = file.to_str().expect("UTF-8 path");
    for args in [
        &[
            "-n",
            ns,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            file,
        ][..],
        &["-n", ns, "apply", "--server-side", "-f", file],
        &["-n", ns, "apply", "-f", file],
        &["-n", ns, "apply", "-f", file],
    ] {
        cli.ok(args);
    }
    // Long enough for a redeploy to have started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let td = g
        .api::<crds::v1alpha1::TaskDefinition>(ns)
        .get("web")
        .await
        .expect("task definition");
    assert_eq!(td.metadata.generation, Some(1), "no new revision");
    let s = g.service_until(ns, "web", "still Ready", ready).await;
    let deployments = s.status.map(|st| st.deployments).unwrap_or_default();
    let ids: Vec<&str> = deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["ecs-svc/1"], "no new deployment");
    assert_eq!(
        names(g.live_tasks(ns, "web").await),
        before,
        "no task replaced"
    );
}

/// Running healthy and live tasks of a service, as a watcher sees them.
/// The fewest healthy and the most live tasks, and how many events, seen
/// so far by [`sample_bounds`].
type Bounds = Arc<Mutex<(usize, usize, usize)>>;

/// Follow every Task event of `service` from now on, counting its healthy
/// and live tasks after each; abort the handle when done.
fn sample_bounds(g: &Gantry, ns: &str, service: &str) -> (Bounds, tokio::task::JoinHandle<()>) {
    let seen: Bounds = Arc::new(Mutex::new((usize::MAX, 0, 0)));
    let api = g.api::<Task>(ns);
    let selector = format!("gantry.dev/service={service}");
    let sampler = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut tasks: HashMap<String, Task> = HashMap::new();
            let mut listed = false;
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default().labels(&selector)));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) => {
                        tasks.insert(t.name_any(), t);
                    }
                    Ok(watcher::Event::Delete(t)) => {
                        tasks.remove(&t.name_any());
                    }
                    Ok(watcher::Event::InitDone) => listed = true,
                    _ => continue,
                }
                if !listed {
                    continue;
                }
                let (healthy, live) = counts(&tasks);
                let mut s = seen.lock().expect("lock");
                s.0 = s.0.min(healthy);
                s.1 = s.1.max(live);
                s.2 += 1;
            }
        })
    };
    (seen, sampler)
}

fn counts(tasks: &HashMap<String, Task>) -> (usize, usize) {
    let live = tasks
        .values()
        .filter(|t| last(t) != Some(TaskLastStatus::Stopped))
        .count();
    let healthy = tasks
        .values()
        .filter(|t| {
            last(t) == Some(TaskLastStatus::Running)
                && t.spec.desired_status == crds::v1alpha1::DesiredStatus::Running
                && t.status.as_ref().is_some_and(|s| s.stop_code.is_none())
        })
        .count();
    (healthy, live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_deployment_stays_in_bounds_and_a_failing_one_rolls_back() {
    let ns = "roll";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 4, 4096, 4096);
    g.controller("controller", &[]);
    g.instances_connected(ns, 4).await;
    let bounds = json!({"minimumHealthyPercent": 50, "maximumPercent": 150,
        "deploymentCircuitBreaker": {"enable": true, "rollback": true}});
    g.apply(
        ns,
        &[
            task_definition("api", 64, &["httpd"], "1"),
            service("api", "api", 6, bounds.clone()),
        ],
    )
    .await;
    g.service_until(ns, "api", "reached Ready", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
    })
    .await;

    // Sample every Task event from here on: min 50% of 6 = 3 healthy,
    // max 150% of 6 = 9 live.
    let (seen, sampler) = sample_bounds(&g, ns, "api");
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.apply(ns, &[task_definition("api", 64, &["httpd"], "2")])
        .await;
    let s = g
        .service_until(ns, "api", "rolled to revision 2", |s| {
            ready(s)
                && s.status.as_ref().is_some_and(|st| {
                    st.deployments.len() == 1 && st.deployments[0].task_definition_revision == 2
                })
        })
        .await;
    assert_eq!(
        s.status.as_ref().expect("status").deployments[0].id,
        "ecs-svc/2"
    );
    let tasks = g.live_tasks(ns, "api").await;
    assert_eq!(tasks.len(), 6);
    assert!(
        tasks
            .iter()
            .all(|t| t.spec.task_definition_revision == Some(2))
    );
    {
        let s = seen.lock().expect("lock");
        assert!(s.2 > 12, "the rollout was sampled ({} events)", s.2);
        assert!(s.0 >= 3, "healthy never below 3: min seen {}", s.0);
        assert!(s.1 <= 9, "live never above 9: max seen {}", s.1);
    }
    g.until_event(ns, "api", "DeploymentCompleted").await;

    // Revision 3 exits 1 at once: the breaker trips after 3 failures and
    // the service returns to revision 2.
    g.apply(
        ns,
        &[task_definition("api", 64, &["sh", "-c", "exit 1"], "3")],
    )
    .await;
    let s = g
        .service_until(ns, "api", "rolled back", |s| {
            ready(s)
                && s.status.as_ref().is_some_and(|st| {
                    st.deployments
                        .first()
                        .is_some_and(|d| d.id == "ecs-svc/4" && d.task_definition_revision == 2)
                })
        })
        .await;
    let deployments = &s.status.as_ref().expect("status").deployments;
    let failed = deployments
        .iter()
        .find(|d| d.id == "ecs-svc/3")
        .expect("the failed deployment stays listed");
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert!(
        failed.failed_tasks >= 3
            || failed
                .rollout_state_reason
                .as_deref()
                .is_some_and(|r| r.contains("circuit breaker")),
        "{failed:?}"
    );
    let note = g.until_event(ns, "api", "CircuitBreakerTripped").await;
    assert!(
        note.contains("ecs-svc/3") && note.contains("circuit breaker"),
        "{note}"
    );
    g.until_event(ns, "api", "RollbackStarted").await;
    let failures = g
        .tasks(ns, "gantry.dev/service=api,gantry.dev/deployment=3")
        .await;
    assert!(
        failures.iter().any(|t| {
            t.status.as_ref().is_some_and(|st| {
                st.stop_code == Some(StopCode::EssentialContainerExited)
                    && st.containers.iter().any(|c| c.exit_code == Some(1))
            })
        }),
        "a failed task records exit code 1"
    );
    let tasks = g.live_tasks(ns, "api").await;
    assert_eq!(tasks.len(), 6);
    assert!(
        tasks
            .iter()
            .all(|t| t.spec.task_definition_revision == Some(2))
    );
    let s = seen.lock().expect("lock");
    assert!(
        s.0 >= 3,
        "healthy never below 3 through the failure: min seen {}",
        s.0
    );
    assert!(s.1 <= 9, "live never above 9: max seen {}", s.1);
    sampler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_instance_loss_and_a_late_daemon_host_converge() {
    let ns = "hosts";
    let mut g = Gantry::start(ns).await;
    for host in ["a", "b", "c"] {
        g.agents(ns, host, 1, 4096, 4096);
    }
    g.controller("controller", &["--instance-loss-timeout-seconds", "2"]);
    g.instances_connected(ns, 3).await;
    g.apply(ns, &web_and_logs(4, json!({"minimumHealthyPercent": 50})))
        .await;
    g.service_until(ns, "web", "reached Ready", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 4)
    })
    .await;
    let s = g
        .service_until(ns, "logs", "ran on 3 instances", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 3)
        })
        .await;
    assert_eq!(s.status.as_ref().map(|st| st.desired_count), Some(3));
    let per = spread(&g.live_tasks(ns, "logs").await);
    assert_eq!(
        per,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)])
    );

    // Drain b: its web tasks move, its daemon task stops.
    let drain = json!({"spec": {"state": "DRAINING"}});
    g.api::<ContainerInstance>(ns)
        .patch("b", &PatchParams::default(), &Patch::Merge(&drain))
        .await
        .expect("drained");
    g.service_until(ns, "logs", "left b", |s| {
        ready(s)
            && s.status
                .as_ref()
                .is_some_and(|st| st.desired_count == 2 && st.running_count == 2)
    })
    .await;
    let web = g
        .service_until(ns, "web", "moved off b", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 4)
        })
        .await;
    assert_eq!(web.status.as_ref().map(|st| st.desired_count), Some(4));
    let per = spread(&g.live_tasks(ns, "web").await);
    assert!(!per.contains_key("b"), "nothing left on b: {per:?}");
    assert_eq!(per.values().sum::<usize>(), 4);
    g.until_event(ns, "b", "Draining").await;

    // Lose c: its agent dies; after the Lease lapses and the loss timeout
    // its tasks are stopped and replaced on a.
    g.kill_9("c");
    let note = g.until_event(ns, "c", "InstanceLost").await;
    assert!(note.contains("container instance c lost"), "{note}");
    g.until_event(ns, "c", "AgentDisconnected").await;
    let ci = g.api::<ContainerInstance>(ns).get("c").await.expect("c");
    assert_eq!(ci.status.as_ref().map(|s| s.agent_connected), Some(false));
    // Ready with 4 held before the loss too: wait for the tasks to move.
    let mut per = BTreeMap::new();
    for _ in 0..600 {
        per = spread(&g.live_tasks(ns, "web").await);
        if per == BTreeMap::from([("a".into(), 4)]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per, BTreeMap::from([("a".into(), 4)]), "only a is left");
    g.service_until(ns, "web", "replaced c's tasks", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 4)
    })
    .await;
    let lost: Vec<Task> = g
        .api::<Task>(ns)
        .list(
            &ListParams::default().labels("gantry.dev/container-instance=c,gantry.dev/service=web"),
        )
        .await
        .expect("tasks")
        .items;
    assert!(!lost.is_empty());
    assert!(
        lost.iter().all(|t| {
            let st = t.status.as_ref().expect("status");
            st.last_status == Some(TaskLastStatus::Stopped)
                && st.stop_code == Some(StopCode::TerminationNotice)
                && st
                    .stopped_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("Host EC2 (instance c)"))
        }),
        "{lost:#?}"
    );
    g.service_until(ns, "logs", "counted a only", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.desired_count == 1)
    })
    .await;

    // A host joining later gets the daemon task.
    g.agents(ns, "d", 1, 4096, 4096);
    g.service_until(ns, "logs", "ran on d", |s| {
        ready(s)
            && s.status
                .as_ref()
                .is_some_and(|st| st.desired_count == 2 && st.running_count == 2)
    })
    .await;
    let per = spread(&g.live_tasks(ns, "logs").await);
    assert_eq!(per, BTreeMap::from([("a".into(), 1), ("d".into(), 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deregistered_instance_has_its_tasks_stopped_and_replaced() {
    let ns = "deregister";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "a", 1, 4096, 4096);
    g.agents_with(ns, "d", 1, (4096, 4096), &["--deregister-on-exit"]);
    g.agents(ns, "z", 1, 4096, 4096);
    g.controller("controller", &[]);
    g.instances_connected(ns, 3).await;
    g.apply(ns, &web_and_logs(6, json!({}))).await;
    g.service_until(ns, "web", "reached Ready", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
    })
    .await;
    g.service_until(ns, "logs", "ran on 3 instances", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 3)
    })
    .await;
    let per = spread(&g.live_tasks(ns, "web").await);
    assert_eq!(per.get("d"), Some(&2), "{per:?}");

    // SIGTERM: the agent of d deletes its ContainerInstance on the way out.
    g.signal("d", "TERM");
    assert!(g.wait("d").success(), "the agent exits cleanly");
    assert!(
        g.api::<ContainerInstance>(ns)
            .get_opt("d")
            .await
            .expect("a read")
            .is_none(),
        "deregistered"
    );
    // The service's status counts d's tasks until they are stopped: wait
    // for the replacements themselves.
    let mut per = BTreeMap::new();
    for _ in 0..600 {
        per = spread(&g.live_tasks(ns, "web").await);
        if !per.contains_key("d") && per.values().sum::<usize>() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per.get("d"), None, "{per:?}");
    assert_eq!(per.values().sum::<usize>(), 6, "{per:?}");
    let web = g
        .service_until(ns, "web", "replaced d's tasks", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
        })
        .await;
    assert_eq!(web.status.as_ref().map(|st| st.desired_count), Some(6));
    g.service_until(ns, "logs", "left d", |s| {
        ready(s)
            && s.status
                .as_ref()
                .is_some_and(|st| st.desired_count == 2 && st.running_count == 2)
    })
    .await;
    let on_d = g.tasks(ns, "gantry.dev/container-instance=d").await;
    assert_eq!(
        on_d.len(),
        3,
        "d's two web tasks and its daemon task, kept as STOPPED"
    );
    for task in &on_d {
        let st = task.status.as_ref().expect("status");
        assert_eq!(
            (
                last(task),
                task.spec.desired_status,
                st.stop_code,
                st.stopped_reason.as_deref()
            ),
            (
                Some(TaskLastStatus::Stopped),
                DesiredStatus::Stopped,
                Some(StopCode::UserInitiated),
                Some("Container instance deregistration forced by user")
            ),
            "{}",
            task.name_any()
        );
        assert!(st.stopped_at.is_some());
    }
}

/// Create a Task that names its instance, as `aws ecs start-task` does.
async fn start_task(tasks: &kube::Api<Task>, name: &str, definition: &str, on: &str) {
    let task: Task = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name},
        "spec": {"taskDefinition": definition, "containerInstance": on},
    }))
    .expect("a task");
    tasks
        .create(&kube::api::PostParams::default(), &task)
        .await
        .expect("created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_task_runs_on_the_named_instance_or_stops_saying_why() {
    let ns = "start-task";
    let mut g = Gantry::start(ns).await;
    for host in ["a", "b", "c"] {
        g.agents(ns, host, 1, 1024, 1024);
    }
    g.controller("controller", &[]);
    g.instances_connected(ns, 3).await;
    // A constraint no instance meets: start-task ignores it, as ECS's
    // StartTask applies no placement constraints.
    let mut small = task_definition("small", 128, &["httpd"], "1");
    small["spec"]["placementConstraints"] =
        json!([{"type": "memberOf", "expression": "attribute:stack == nowhere"}]);
    g.apply(ns, &[small, task_definition("huge", 4096, &["httpd"], "1")])
        .await;
    let tasks = g.api::<Task>(ns);
    for name in ["on-b-1", "on-b-2", "on-b-3"] {
        start_task(&tasks, name, "small", "b").await;
    }
    start_task(&tasks, "too-big", "huge", "a").await;
    start_task(&tasks, "nowhere", "small", "nope").await;
    for name in ["on-b-1", "on-b-2", "on-b-3"] {
        let task = g
            .task_until(ns, name, "ran on b", |t| {
                last(t) == Some(TaskLastStatus::Running)
            })
            .await;
        assert_eq!(task.spec.container_instance.as_deref(), Some("b"));
        assert_eq!(task.placed_on(), Some("b"), "labelled for b's agent");
    }
    let ci = g.api::<ContainerInstance>(ns).get("b").await.expect("b");
    let allocated: Vec<&str> = ci
        .status
        .iter()
        .flat_map(|s| &s.allocations)
        .map(|a| a.task.as_str())
        .collect();
    assert_eq!(
        allocated.len(),
        3,
        "each holds its resources on b: {allocated:?}"
    );

    // Drained only now, so that no scheduler can have placed on it before.
    g.api::<ContainerInstance>(ns)
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"state": "DRAINING"}})),
        )
        .await
        .expect("drained");
    g.until_event(ns, "c", "Draining").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    start_task(&tasks, "on-draining", "small", "c").await;

    for (name, reason) in [
        (
            "too-big",
            "container instance a cannot run the task: insufficient memory",
        ),
        ("nowhere", "container instance nope is not registered"),
        (
            "on-draining",
            "container instance c cannot run the task: instance is DRAINING",
        ),
    ] {
        let task = g
            .task_until(ns, name, "stopped", |t| {
                last(t) == Some(TaskLastStatus::Stopped)
                    && t.spec.desired_status == DesiredStatus::Stopped
            })
            .await;
        let st = task.status.as_ref().expect("status");
        assert_eq!(
            (st.stop_code, st.stopped_reason.as_deref()),
            (Some(StopCode::TaskFailedToStart), Some(reason)),
            "{name}"
        );
        assert_eq!(task.placed_on(), None, "{name} was never placed");
    }
    let note = g.until_event(ns, "too-big", "TaskFailedToStart").await;
    assert!(note.contains("insufficient memory"), "{note}");
    let on_a = tasks.get("too-big").await.expect("too-big");
    assert!(on_a.labels().get("gantry.dev/container-instance").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unplaceable_service_says_why_and_recovers_when_capacity_joins() {
    let ns = "small";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "tiny", 2, 1024, 512);
    g.controller("controller", &[]);
    g.instances_connected(ns, 2).await;
    g.apply(
        ns,
        &[
            task_definition("big", 1024, &["httpd"], "1"),
            service("big", "big", 2, json!({})),
        ],
    )
    .await;
    let s = g
        .service_until(ns, "big", "Degraded", |s| {
            condition(s, "Degraded")
                .is_some_and(|(st, reason, _)| st == "True" && reason == "Unplaceable")
        })
        .await;
    let (_, _, message) = condition(&s, "Degraded").expect("Degraded");
    assert!(
        message.contains("2 instances: insufficient memory"),
        "{message}"
    );
    assert_eq!(condition(&s, "Ready").map(|c| c.0), Some("False"));
    assert_eq!(
        s.status
            .as_ref()
            .map(|st| (st.running_count, st.pending_count)),
        Some((0, 2))
    );
    let note = g.until_event(ns, "big", "PlacementFailed").await;
    assert!(
        note.starts_with("service (big) was unable to place a task"),
        "{note}"
    );
    assert!(note.contains("insufficient memory"), "{note}");

    g.agents(ns, "large", 1, 4096, 4096);
    let s = g
        .service_until(ns, "big", "recovered", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 2)
        })
        .await;
    assert_eq!(
        condition(&s, "Degraded").map(|c| (c.0, c.1)),
        Some(("False", "AsExpected"))
    );
    let per = spread(&g.live_tasks(ns, "big").await);
    assert_eq!(per, BTreeMap::from([("large".into(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_without_leader_election_start_and_stop_exactly_what_is_asked() {
    let ns = "twice";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 10, 4096, 4096);
    for name in ["c1", "c2"] {
        g.controller(name, &["--leader-elect=false"]);
    }
    g.instances_connected(ns, 10).await;
    g.apply(
        ns,
        &[
            task_definition("web", 128, &["httpd"], "1"),
            service("web", "web", 10, json!({})),
        ],
    )
    .await;
    let running = |n: i32| {
        move |s: &crds::v1alpha1::Service| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == n)
        }
    };
    g.service_until(ns, "web", "10 running", running(10)).await;
    let services = g.api::<crds::v1alpha1::Service>(ns);
    let scale = |n: i32| {
        let services = services.clone();
        async move {
            services
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"desiredCount": n}})),
                )
                .await
                .expect("scaled");
        }
    };
    scale(60).await;
    g.service_until(ns, "web", "60 running", running(60)).await;
    scale(20).await;
    g.service_until(ns, "web", "20 running", running(20)).await;

    // Stopped tasks are kept (an hour by default), so every task either
    // controller ever started is listed: a second start of a slot, or a
    // task stopped beyond the 40 asked for and replaced, shows as more.
    let tasks = g.tasks(ns, "gantry.dev/service=web").await;
    let stopping = tasks
        .iter()
        .filter(|t| t.spec.desired_status == crds::v1alpha1::DesiredStatus::Stopped)
        .count();
    let names: Vec<String> = tasks.iter().map(ResourceExt::name_any).collect();
    assert_eq!((tasks.len(), stopping), (60, 40), "{names:?}");

    // A rollout, both reconciling: within 100% healthy and 120% live of
    // 20 throughout, as with one.
    let bounds = json!({"minimumHealthyPercent": 100, "maximumPercent": 120});
    g.apply(ns, &[service("web", "web", 20, bounds)]).await;
    let (seen, sampler) = sample_bounds(&g, ns, "web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.apply(ns, &[task_definition("web", 128, &["httpd"], "2")])
        .await;
    g.service_until(ns, "web", "rolled to revision 2", |s| {
        ready(s)
            && s.status.as_ref().is_some_and(|st| {
                st.running_count == 20
                    && st.deployments.len() == 1
                    && st.deployments[0].task_definition_revision == 2
            })
    })
    .await;
    sampler.abort();
    let s = *seen.lock().expect("lock");
    assert!(s.2 > 40, "the rollout was sampled ({} events)", s.2);
    assert!(s.0 >= 20, "healthy never below 20: min seen {}", s.0);
    assert!(s.1 <= 24, "live never above 24: max seen {}", s.1);
    assert_eq!(g.live_tasks(ns, "web").await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_cut_short_between_its_two_writes_is_finished() {
    let ns = "halfway";
    let mut g = Gantry::start(ns).await;
    g.controller("controller", &[]);
    let tasks = g.api::<Task>(ns);
    for name in ["a", "b", "c"] {
        // Bound to an instance that is gone, and no scheduler's: nothing
        // but the repair below touches them.
        let task: Task = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name},
            "spec": {"taskDefinition": "web", "schedulerName": "nobody", "containerInstance": "gone"},
        }))
        .expect("a task");
        tasks
            .create(&kube::api::PostParams::default(), &task)
            .await
            .expect("created");
    }
    // What a controller killed after a stop's status write and before its
    // spec write leaves behind.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    tasks
        .patch_status(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "lastStatus": "STOPPED", "stopCode": "TerminationNotice",
                "stoppedReason": "instance lost", "stoppedAt": now,
            }})),
        )
        .await
        .expect("status written");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let b = tasks.get("b").await.expect("b");
        if b.spec.desired_status == crds::v1alpha1::DesiredStatus::Stopped {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b still desired {:?}",
            b.spec.desired_status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in ["a", "c"] {
        let task = tasks.get(name).await.expect("task");
        assert_eq!(
            task.spec.desired_status,
            crds::v1alpha1::DesiredStatus::Running,
            "{name} is left alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_that_fails_is_retried_and_not_taken_for_a_failed_launch() {
    let ns = "stubborn";
    let mut g = Gantry::start(ns).await;
    // One simulated host whose runtime fails its first two stops.
    g.spawn(
        "host",
        &[
            "agent",
            "--runtime",
            "sim",
            "--cluster",
            ns,
            "--name",
            "host",
            "--cpu",
            "4096",
            "--memory",
            "4096",
            "--lease-renew-seconds",
            "1",
            "--sim-stop-failures",
            "2",
        ],
    );
    g.controller("controller", &[]);
    g.instances_connected(ns, 1).await;
    g.apply(
        ns,
        &[
            task_definition("web", 128, &["httpd"], "1"),
            service("web", "web", 1, json!({})),
        ],
    )
    .await;
    let running = |s: &crds::v1alpha1::Service| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 1)
    };
    g.service_until(ns, "web", "1 running", running).await;
    let task = g.live_tasks(ns, "web").await.remove(0).name_any();
    // Stopped as `kubectl patch` would: no cause recorded but the user's.
    let tasks = g.api::<Task>(ns);
    tasks
        .patch(
            &task,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"desiredStatus": "STOPPED"}})),
        )
        .await
        .expect("stopped");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let t = tasks.get(&task).await.expect("task");
        if last(&t) == Some(TaskLastStatus::Stopped) {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{task} never stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = stopped.status.expect("status");
    assert_eq!(
        (status.stop_code, status.stopped_reason.as_deref()),
        (
            Some(StopCode::UserInitiated),
            Some(crds::stop::STOPPED_BY_USER)
        ),
        "two failed stops, then stopped by the user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_task_outlives_an_agent_blip_and_is_replaced_after_instance_loss() {
    let ns = "blip";
    let mut g = Gantry::start(ns).await;
    for host in ["a", "b", "c"] {
        g.agents(ns, host, 1, 4096, 4096);
    }
    // Long enough that a loaded machine's slow look at the blip below
    // does not reach it.
    g.controller("controller", &["--instance-loss-timeout-seconds", "20"]);
    g.instances_connected(ns, 3).await;
    g.apply(
        ns,
        &[
            task_definition("agentd", 128, &["httpd"], "1"),
            daemon("agentd"),
        ],
    )
    .await;
    let three = |s: &crds::v1alpha1::Service| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 3)
    };
    g.service_until(ns, "agentd", "one task per host", three)
        .await;
    let on_b = || async {
        g.live_tasks(ns, "agentd")
            .await
            .into_iter()
            .find(|t| t.spec.container_instance.as_deref() == Some("b"))
            .map(|t| t.name_any())
    };
    let first = on_b().await.expect("a task on b");
    let instances = g.api::<ContainerInstance>(ns);
    let connected = |want: bool| {
        let instances = instances.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let b = instances.get("b").await.expect("b");
                if b.status.as_ref().is_some_and(|s| s.agent_connected == want) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "b never connected={want}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // A blip: disconnected for a few seconds, well inside the loss timeout.
    g.signal("b", "STOP");
    connected(false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(on_b().await, Some(first.clone()), "kept while disconnected");
    g.signal("b", "CONT");
    connected(true).await;
    assert_eq!(
        on_b().await,
        Some(first.clone()),
        "the same task after the blip"
    );

    // Lost: its task is stopped, and a new one starts once it is back.
    g.signal("b", "STOP");
    let tasks = g.api::<Task>(ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = tasks.get(&first).await.expect("the first task");
        if last(&t) == Some(TaskLastStatus::Stopped) {
            let status = t.status.expect("status");
            assert_eq!(status.stop_code, Some(StopCode::TerminationNotice));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's task never stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.signal("b", "CONT");
    // The service's status may still count the stopped task for a moment:
    // wait for b's new task itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if on_b().await.is_some_and(|task| task != first) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new task on b");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.service_until(ns, "agentd", "one task per host again", three)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_service_drains_it_and_keeps_its_tasks_as_stopped_records() {
    let ns = "delete";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 3, 4096, 4096);
    g.controller("controller", &["--task-retention-seconds", "15"]);
    g.instances_connected(ns, 3).await;
    let cli = common::tool("KUBECTL", "kubectl").map(|binary| common::Cli {
        binary,
        kubeconfig: g.kubeconfig.clone(),
    });
    // web is neither the first nor the last Service of the namespace.
    g.apply(
        ns,
        &[
            task_definition("app", 64, &["httpd"], "1"),
            service("api", "app", 2, json!({})),
            service("web", "app", 3, json!({})),
            service("worker", "app", 2, json!({})),
        ],
    )
    .await;
    for (name, count) in [("api", 2), ("web", 3), ("worker", 2)] {
        let s = g
            .service_until(ns, name, "reached Ready", |s| {
                ready(s)
                    && s.status
                        .as_ref()
                        .is_some_and(|st| st.running_count == count)
            })
            .await;
        let st = s.status.as_ref().expect("status");
        assert_eq!(st.state, Some(ServiceState::Active), "{name}");
        assert!(
            s.finalizers().iter().any(|f| f == "gantry.dev/stop-tasks"),
            "{name} holds the finalizer: {:?}",
            s.finalizers()
        );
    }
    let before: Vec<String> = g
        .tasks(ns, "gantry.dev/service=web")
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(before.len(), 3);

    // Every state web goes through, from a watch started before the delete.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watching = {
        let (services, seen) = (g.api::<crds::v1alpha1::Service>(ns), Arc::clone(&seen));
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut events = watcher(services, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                let state = match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                        s.status.and_then(|st| st.state).map(|st| format!("{st:?}"))
                    }
                    watcher::Event::Delete(_) => Some("Deleted".to_owned()),
                    _ => None,
                };
                let mut seen = seen.lock().expect("lock");
                if let Some(state) = state
                    && seen.last() != Some(&state)
                {
                    seen.push(state);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    match &cli {
        // kubectl waits for the Service to be gone.
        Some(cli) => {
            cli.ok(&["-n", ns, "delete", "gsvc", "web"]);
        }
        None => {
            g.api::<crds::v1alpha1::Service>(ns)
                .delete("web", &Default::default())
                .await
                .expect("deleted");
            for _ in 0..600 {
                let gone = g
                    .api::<crds::v1alpha1::Service>(ns)
                    .get_opt("web")
                    .await
                    .expect("a read")
                    .is_none();
                if gone {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        g.api::<crds::v1alpha1::Service>(ns)
            .get_opt("web")
            .await
            .expect("a read")
            .is_none(),
        "the Service is gone"
    );
    // The delete left no task running, and kept every task as a record.
    let after = g.tasks(ns, "gantry.dev/service=web").await;
    let mut names: Vec<String> = after.iter().map(ResourceExt::name_any).collect();
    names.sort();
    assert_eq!(names, before, "every task is kept as a record");
    for task in &after {
        let st = task.status.as_ref().expect("status");
        assert_eq!(task.spec.desired_status, DesiredStatus::Stopped);
        assert!(
            matches!(
                last(task),
                Some(TaskLastStatus::Stopping | TaskLastStatus::Stopped)
            ),
            "{}: {:?}",
            task.name_any(),
            last(task)
        );
        assert_eq!(
            (st.stop_code, st.stopped_reason.as_deref()),
            (
                Some(StopCode::ServiceSchedulerInitiated),
                Some("Scaling activity initiated by (deployment ecs-svc/1)")
            )
        );
        assert!(
            task.owner_references().is_empty(),
            "released from the deleted Service"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    watching.abort();
    assert_eq!(
        *seen.lock().expect("lock"),
        ["Active", "Draining", "Deleted"],
        "the Service went DRAINING before it went"
    );
    let note = g.until_event(ns, "web", "Draining").await;
    assert!(note.contains("DRAINING"), "{note}");
    // The other services were not touched.
    for (name, count) in [("api", 2), ("worker", 2)] {
        assert_eq!(g.live_tasks(ns, name).await.len(), count, "{name}");
    }
    // `--cascade=orphan` leaves the tasks running, owned by nothing.
    match &cli {
        Some(cli) => {
            cli.ok(&["-n", ns, "delete", "gsvc", "worker", "--cascade=orphan"]);
        }
        None => {
            let orphan = kube::api::DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
                ..Default::default()
            };
            g.api::<crds::v1alpha1::Service>(ns)
                .delete("worker", &orphan)
                .await
                .expect("deleted");
        }
    }
    let mut orphans = Vec::new();
    for _ in 0..300 {
        let gone = g
            .api::<crds::v1alpha1::Service>(ns)
            .get_opt("worker")
            .await
            .expect("a read")
            .is_none();
        orphans = g.live_tasks(ns, "worker").await;
        if gone && orphans.iter().all(|t| t.owner_references().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(orphans.len(), 2, "{orphans:#?}");
    for task in &orphans {
        assert!(task.owner_references().is_empty(), "orphaned: {task:?}");
        assert_eq!(task.spec.desired_status, DesiredStatus::Running);
        assert_eq!(last(task), Some(TaskLastStatus::Running));
    }

    // A new Service of the same name starts afresh: the records' names
    // stay taken, and they count for nothing.
    g.apply(ns, &[service("web", "app", 2, json!({}))]).await;
    let web = g
        .service_until(ns, "web", "the new web reached Ready", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 2)
        })
        .await;
    let st = web.status.as_ref().expect("status");
    assert_eq!((st.desired_count, st.pending_count), (2, 0));
    let fresh: Vec<String> = g
        .live_tasks(ns, "web")
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(fresh.len(), 2);
    assert!(
        fresh.iter().all(|n| !before.contains(n)),
        "{fresh:?} against {before:?}"
    );

    // The records go after the retention period, the new tasks stay.
    let mut left = Vec::new();
    for _ in 0..400 {
        left = g
            .tasks(ns, "gantry.dev/service=web")
            .await
            .iter()
            .map(ResourceExt::name_any)
            .filter(|n| before.contains(n))
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "records left after retention: {left:?}");
    assert_eq!(g.live_tasks(ns, "web").await.len(), 2);
}

/// `gantry run-task ARGS` against the test's control plane: its exit
/// status, stdout and stderr.
fn run_task(g: &Gantry, args: &[&str]) -> (bool, String, String) {
    g.run("run-task", args)
}

/// The names `gantry run-task` printed, one `task.gantry.dev/NAME created`
/// per line.
fn created(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            l.strip_prefix("task.gantry.dev/")
                .and_then(|l| l.strip_suffix(" created"))
                .unwrap_or_else(|| panic!("not a created line: {l:?}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_task_starts_a_group_with_overrides_and_refuses_what_cannot_run() {
    let ns = "runtask";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 2, 4096, 4096);
    g.controller("controller", &[]);
    g.instances_connected(ns, 2).await;
    g.apply(ns, &[task_definition("batch", 64, &["httpd"], "1")])
        .await;
    let tasks = g.api::<Task>(ns);

    // Three tasks in one call, in a group, sized and configured by the
    // overrides: the scheduler reserves the overridden size.
    let overrides = json!({"cpu": 256, "memory": 512, "containerOverrides": [
        {"name": "app", "environment": [{"name": "VERSION", "value": "2"}]},
    ]})
    .to_string();
    let (ok, stdout, stderr) = run_task(
        &g,
        &[
            "batch",
            "--cluster",
            ns,
            "--count",
            "3",
            "--group",
            "nightly",
            "--started-by",
            "cron",
            "--enable-execute-command",
            "--overrides",
            &overrides,
        ],
    );
    assert!(ok, "{stderr}");
    let group = created(&stdout);
    assert_eq!(group.len(), 3, "{stdout}");
    for name in &group {
        assert!(name.starts_with("batch-"), "{name}");
        let task = g
            .task_until(ns, name, "RUNNING", |t| {
                last(t) == Some(TaskLastStatus::Running)
            })
            .await;
        assert_eq!(task.spec.group.as_deref(), Some("nightly"));
        assert_eq!(task.spec.started_by.as_deref(), Some("cron"));
        assert!(task.spec.enable_execute_command);
        let on = task.spec.container_instance.clone().expect("placed");
        let instance = g
            .api::<ContainerInstance>(ns)
            .get(&on)
            .await
            .expect("its instance");
        let allocation = instance
            .status
            .iter()
            .flat_map(|s| &s.allocations)
            .find(|a| &a.task == name)
            .unwrap_or_else(|| panic!("no allocation of {name} on {on}"));
        assert_eq!(
            (
                allocation.cpu,
                allocation.memory,
                allocation.group.as_deref()
            ),
            (256, 512, Some("nightly")),
            "the overridden size is what is reserved"
        );
    }

    // The agent runs the overridden command: the simulated container
    // exits with the code its command names.
    let exit = json!({"containerOverrides": [{"name": "app", "command": ["sh", "-c", "exit 7"]}]})
        .to_string();
    let (ok, stdout, stderr) = run_task(&g, &["batch", "--cluster", ns, "--overrides", &exit]);
    assert!(ok, "{stderr}");
    let [exits] = created(&stdout).try_into().expect("one task");
    let stopped = g
        .task_until(ns, &exits, "STOPPED", |t| {
            last(t) == Some(TaskLastStatus::Stopped)
        })
        .await;
    let st = stopped.status.as_ref().expect("status");
    assert_eq!(st.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(st.containers[0].exit_code, Some(7), "{st:?}");

    // Overrides that name no container of the definition, or do not fit
    // it: created (the schema cannot know the definition) and stopped at
    // once, saying why.
    let cases = [
        (
            json!({"containerOverrides": [{"name": "db", "command": ["postgres"]}]}),
            "the task definition has no container \"db\"",
        ),
        (
            json!({"memory": 64, "containerOverrides": [{"name": "app", "memory": 128}]}),
            "containerDefinitions[0].memory: 128 MiB exceeds the task's 64 MiB",
        ),
    ];
    let mut refused = Vec::new();
    for (overrides, why) in cases {
        let (ok, stdout, stderr) = run_task(
            &g,
            &[
                "batch",
                "--cluster",
                ns,
                "--overrides",
                &overrides.to_string(),
            ],
        );
        assert!(ok, "{stderr}");
        let [name] = created(&stdout).try_into().expect("one task");
        let task = g
            .task_until(ns, &name, "STOPPED", |t| {
                last(t) == Some(TaskLastStatus::Stopped)
            })
            .await;
        let st = task.status.as_ref().expect("status");
        assert_eq!(st.stop_code, Some(StopCode::TaskFailedToStart));
        let reason = st.stopped_reason.as_deref().unwrap_or_default();
        assert!(reason.contains(why), "{reason}");
        assert!(task.spec.container_instance.is_none(), "never placed");
        let note = g.until_event(ns, &name, "TaskFailedToStart").await;
        assert!(note.contains(why), "{note}");
        refused.push(name);
    }

    // Refused before anything is created: a count out of range, a field
    // the schema does not declare, a value it does not allow.
    let before = tasks
        .list(&ListParams::default())
        .await
        .expect("tasks")
        .items
        .len();
    let bad: [(&[&str], &str); 4] = [
        (&["--count", "11"], "11 is not in 1..=10"),
        (&["--count", "0"], "0 is not in 1..=10"),
        (
            &["--overrides", r#"{"containerOverides": []}"#],
            "spec.overrides.containerOverides",
        ),
        (&["--overrides", r#"{"cpu": 64}"#], "spec.overrides.cpu"),
    ];
    for (args, why) in bad {
        let mut all = vec!["batch", "--cluster", ns];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = run_task(&g, &all);
        assert!(!ok && stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    let after = tasks
        .list(&ListParams::default())
        .await
        .expect("tasks")
        .items;
    assert_eq!(after.len(), before, "nothing was created");
    assert_eq!(before, 3 + 1 + refused.len());
}

/// Wait until TaskDefinitionRevision `name` is recorded; it then.
async fn recorded(g: &Gantry, ns: &str, name: &str) -> TaskDefinitionRevision {
    let api = g.api::<TaskDefinitionRevision>(ns);
    for _ in 0..300 {
        if let Some(r) = api.get_opt(name).await.expect("a read") {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("revision {name} was never recorded\n{}", g.logs());
}

/// The VERSION a definition's first container is given.
fn version(definition: Option<&crds::v1alpha1::TaskDefinitionSpec>) -> Option<String> {
    definition?.container_definitions[0]
        .environment
        .iter()
        .find(|kv| kv.name == "VERSION")
        .map(|kv| kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_are_addressable_and_a_deregistered_one_serves_only_what_runs_it() {
    let ns = "revisions";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 2, 8192, 8192);
    g.controller("controller", &[]);
    g.instances_connected(ns, 2).await;
    // Three families; web, the one under test, is neither first nor last.
    g.apply(
        ns,
        &[
            task_definition("api", 64, &["httpd"], "1"),
            task_definition("web", 64, &["httpd"], "1"),
            task_definition("zzz", 64, &["httpd"], "1"),
        ],
    )
    .await;
    let first = recorded(&g, ns, "web-1").await;
    g.apply(ns, &[task_definition("web", 64, &["httpd"], "2")])
        .await;
    let second = recorded(&g, ns, "web-2").await;
    for (record, n, v) in [(&first, 1, "1"), (&second, 2, "2")] {
        assert_eq!(
            (record.spec.family.as_str(), record.spec.revision),
            ("web", n)
        );
        assert_eq!(record.spec.state, RevisionState::Active);
        assert_eq!(version(Some(&record.spec.definition)).as_deref(), Some(v));
        assert_eq!(
            record
                .labels()
                .get("gantry.dev/task-definition")
                .map(String::as_str),
            Some("web")
        );
    }
    recorded(&g, ns, "api-1").await;

    // A service may name an older revision; one naming the family runs
    // the latest.
    g.apply(
        ns,
        &[
            service("pinned", "web:1", 2, json!({})),
            service("latest", "web", 1, json!({})),
        ],
    )
    .await;
    for (name, count, revision) in [("pinned", 2, 1), ("latest", 1, 2)] {
        let s = g
            .service_until(ns, name, "reached Ready", |s| {
                ready(s)
                    && s.status
                        .as_ref()
                        .is_some_and(|st| st.running_count == count)
            })
            .await;
        let d = &s.status.as_ref().expect("status").deployments[0];
        assert_eq!(
            (d.task_definition.as_str(), d.task_definition_revision),
            ("web", revision)
        );
        for task in g.live_tasks(ns, name).await {
            assert_eq!(task.spec.task_definition, "web");
            assert_eq!(task.spec.task_definition_revision, Some(revision));
            assert_eq!(
                version(task.spec.definition.as_ref()),
                Some(revision.to_string())
            );
        }
    }

    // Deregister web:1: what runs it keeps it, even scaling out.
    let revisions = g.api::<TaskDefinitionRevision>(ns);
    let inactive = json!({"spec": {"state": "INACTIVE"}});
    revisions
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&inactive))
        .await
        .expect("deregistered");
    g.api::<crds::v1alpha1::Service>(ns)
        .patch(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"desiredCount": 3}})),
        )
        .await
        .expect("scaled");
    let pinned = g
        .service_until(ns, "pinned", "scaled out on web:1", |s| {
            ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 3)
        })
        .await;
    let deployments = &pinned.status.as_ref().expect("status").deployments;
    assert_eq!(deployments.len(), 1, "no new deployment: {deployments:?}");
    assert_eq!(deployments[0].task_definition_revision, 1);
    // Nothing new may use it: a new service is Degraded, saying why...
    g.apply(ns, &[service("late", "web:1", 1, json!({}))]).await;
    let late = g
        .service_until(ns, "late", "Degraded", |s| {
            condition(s, "Degraded").is_some_and(|(status, _, _)| status == "True")
        })
        .await;
    let (_, why, message) = condition(&late, "Degraded").expect("Degraded");
    assert_eq!(why, "InvalidTaskDefinition");
    assert!(message.contains("web:1 is INACTIVE"), "{message}");
    assert!(g.live_tasks(ns, "late").await.is_empty());
    // ...and a run-task of it is stopped at once, as ECS refuses it.
    let (ok, stdout, stderr) = run_task(&g, &["web:1", "--cluster", ns]);
    assert!(ok, "{stderr}");
    let [refused] = created(&stdout).try_into().expect("one task");
    assert!(refused.starts_with("web-"), "{refused}");
    let task = g
        .task_until(ns, &refused, "STOPPED", |t| {
            last(t) == Some(TaskLastStatus::Stopped)
        })
        .await;
    let st = task.status.as_ref().expect("status");
    assert_eq!(st.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        st.stopped_reason
            .as_deref()
            .unwrap_or_default()
            .contains("INACTIVE"),
        "{st:?}"
    );
    // A run-task of web:2 runs its snapshot.
    let (ok, stdout, stderr) = run_task(&g, &["web:2", "--cluster", ns]);
    assert!(ok, "{stderr}");
    let [runs] = created(&stdout).try_into().expect("one task");
    let task = g
        .task_until(ns, &runs, "RUNNING", |t| {
            last(t) == Some(TaskLastStatus::Running)
        })
        .await;
    assert_eq!(task.spec.task_definition_revision, Some(2));
    assert_eq!(version(task.spec.definition.as_ref()).as_deref(), Some("2"));

    // A revision is immutable, and deregistering cannot be undone.
    let refusals = [
        (
            json!({"spec": {"state": "ACTIVE"}}),
            "cannot be made ACTIVE again",
        ),
        (json!({"spec": {"revision": 7}}), "a revision is immutable"),
    ];
    for (patch, why) in refusals {
        let err = revisions
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(why), "{err}");
    }

    // Deregister the latest too: the service naming the family keeps its
    // revision, and nothing is left for anything new.
    revisions
        .patch("web-2", &PatchParams::default(), &Patch::Merge(&inactive))
        .await
        .expect("deregistered");
    let (ok, stdout, stderr) = run_task(&g, &["web", "--cluster", ns]);
    assert!(ok, "{stderr}");
    let [none_left] = created(&stdout).try_into().expect("one task");
    let task = g
        .task_until(ns, &none_left, "STOPPED", |t| {
            last(t) == Some(TaskLastStatus::Stopped)
        })
        .await;
    let reason = task.status.as_ref().and_then(|s| s.stopped_reason.clone());
    assert_eq!(
        reason.as_deref(),
        Some("every revision of task definition web is INACTIVE (deregistered)")
    );
    let latest = g.service_until(ns, "latest", "still Ready", ready).await;
    let deployments = &latest.status.as_ref().expect("status").deployments;
    assert_eq!(
        (deployments.len(), deployments[0].task_definition_revision),
        (1, 2),
        "{deployments:?}"
    );
    if let Some(binary) = common::tool("KUBECTL", "kubectl") {
        let cli = common::Cli {
            binary,
            kubeconfig: g.kubeconfig.clone(),
        };
        let table = cli.ok(&[
            "-n",
            ns,
            "get",
            "tdrev",
            "-l",
            "gantry.dev/task-definition=web",
        ]);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().take(4).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["NAME", "FAMILY", "REVISION", "STATE"],
                vec!["web-1", "web", "1", "INACTIVE"],
                vec!["web-2", "web", "2", "INACTIVE"],
            ],
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_instance_counts_a_task_by_its_desired_status() {
    let ns = "distinct";
    let mut g = Gantry::start(ns).await;
    // One host whose runtime fails its first five stops: a stopped task
    // stays RUNNING there for a while.
    g.agents_with(ns, "host", 1, (4096, 4096), &["--sim-stop-failures", "5"]);
    g.controller("controller", &[]);
    g.instances_connected(ns, 1).await;
    let mut web = service("web", "web", 1, json!({}));
    web["spec"]["placementConstraints"] = json!([{"type": "distinctInstance"}]);
    g.apply(ns, &[task_definition("web", 128, &["httpd"], "1"), web])
        .await;
    g.service_until(ns, "web", "1 running", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 1)
    })
    .await;
    let old = g.live_tasks(ns, "web").await.remove(0).name_any();
    let tasks = g.api::<Task>(ns);
    tasks
        .patch(
            &old,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"desiredStatus": "STOPPED"}})),
        )
        .await
        .expect("stopped");
    // Its replacement is placed on the one host while it still runs: a
    // task desired STOPPED no longer counts for distinctInstance.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = tasks
            .list(&ListParams::default())
            .await
            .expect("tasks")
            .items;
        let old_task = all
            .iter()
            .find(|t| t.name_any() == old)
            .expect("the old task");
        let replacement = all
            .iter()
            .find(|t| t.name_any() != old && t.spec.container_instance.is_some());
        if let Some(new) = replacement {
            assert_eq!(new.spec.container_instance.as_deref(), Some("host"));
            assert_ne!(
                last(old_task),
                Some(TaskLastStatus::Stopped),
                "placed only once the old task had stopped"
            );
            break;
        }
        assert!(
            last(old_task) != Some(TaskLastStatus::Stopped),
            "the old task stopped before any replacement was placed\n{}",
            g.logs()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replacement placed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.service_until(ns, "web", "1 running again", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 1)
    })
    .await;
}

/// The status code of a refused API call (0 when it succeeded).
fn code<T>(result: &Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 0,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_token_writes_only_its_own_instance_and_the_tasks_bound_to_it() {
    use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
    use kube::api::PostParams;
    let ns = "tokens";
    let mut g = Gantry::start(ns).await;
    // Each agent runs under its own token (tests/common/gantry.rs).
    for host in ["host-a", "host-b", "host-c"] {
        g.agents_with(ns, host, 1, (1024, 1024), &[]);
    }
    g.controller("controller", &[]);
    g.instances_connected(ns, 3).await;
    let mut web = service("web", "web", 6, json!({}));
    web["spec"]["enableExecuteCommand"] = json!(true);
    g.apply(ns, &[task_definition("web", 64, &["httpd"], "1"), web])
        .await;
    g.service_until(ns, "web", "6 running, 2 a host", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
    })
    .await;
    let tasks = g.live_tasks(ns, "web").await;
    assert!(
        tasks.iter().all(|t| t.spec.enable_execute_command),
        "the service's tasks may be exec'd into"
    );
    let on = |host: &str| {
        tasks
            .iter()
            .find(|t| t.spec.container_instance.as_deref() == Some(host))
            .unwrap_or_else(|| panic!("a task on {host}: {:?}", spread(&tasks)))
            .name_any()
    };
    let secrets = g.api::<Secret>(ns);
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}),
    )
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("created");

    // host-b's own token, as its agent holds it.
    let client = common::client(&g.dir.path().join("host-b.kubeconfig")).await;
    let b_tasks: kube::Api<Task> = kube::Api::namespaced(client.clone(), ns);
    let b_instances: kube::Api<ContainerInstance> = kube::Api::namespaced(client.clone(), ns);
    let b_leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), ns);
    let b_secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
    let status = |reason: &str| Patch::Merge(json!({"status": {"healthStatus": reason}}));
    let merge = Patch::Merge(json!({"metadata": {"labels": {"probe": "b"}}}));
    let params = PatchParams::default();

    // What it needs: read its cluster, write its instance, its Lease and
    // the status of its own tasks.
    assert_eq!(code(&b_tasks.list(&ListParams::default()).await), 0);
    assert_eq!(code(&b_instances.patch("host-b", &params, &merge).await), 0);
    assert_eq!(code(&b_leases.get("host-b").await), 0);
    assert_eq!(
        code(
            &b_tasks
                .patch_status(&on("host-b"), &params, &status("UNKNOWN"))
                .await
        ),
        0
    );
    // What it may not: another instance, another's Lease or tasks, a
    // task's spec, Secrets.
    for (what, answer) in [
        (
            "instance host-a",
            code(&b_instances.patch("host-a", &params, &merge).await),
        ),
        (
            "instance host-c's status",
            code(&b_instances.patch_status("host-c", &params, &merge).await),
        ),
        (
            "lease host-a",
            code(&b_leases.delete("host-a", &Default::default()).await),
        ),
        (
            "a task on host-a",
            code(
                &b_tasks
                    .patch_status(&on("host-a"), &params, &status("UNKNOWN"))
                    .await,
            ),
        ),
        (
            "a task on host-c",
            code(
                &b_tasks
                    .patch_status(&on("host-c"), &params, &status("UNKNOWN"))
                    .await,
            ),
        ),
        (
            "its task's spec",
            code(&b_tasks.patch(&on("host-b"), &params, &merge).await),
        ),
        ("a Secret", code(&b_secrets.get("db").await)),
        (
            "Secrets",
            code(&b_secrets.list(&ListParams::default()).await),
        ),
    ] {
        assert_eq!(answer, 403, "{what}");
    }
    let others: kube::Api<Task> = kube::Api::namespaced(client.clone(), "default");
    assert_eq!(
        code(&others.list(&ListParams::default()).await),
        403,
        "another cluster"
    );

    // A token for an instance yet to register may create that instance,
    // and only that one.
    let d_config = g.agent_kubeconfig(ns, "host-d");
    let d = common::client(&d_config).await;
    let d_instances: kube::Api<ContainerInstance> = kube::Api::namespaced(d.clone(), ns);
    let instance = |name: &str| -> ContainerInstance {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"registeredResources": {"cpu": 1024, "memory": 1024}}}))
            .expect("an instance")
    };
    let post = PostParams::default();
    assert_eq!(
        code(&d_instances.create(&post, &instance("host-e")).await),
        403
    );
    assert_eq!(
        code(&d_instances.create(&post, &instance("host-d")).await),
        0
    );

    // Real kubectl asks the same rule.
    if let Some(kubectl) = common::tool("GANTRY_KUBECTL", "kubectl") {
        let cli = common::Cli {
            binary: kubectl,
            kubeconfig: g.dir.path().join("host-b.kubeconfig"),
        };
        let can_i = |args: &[&str]| {
            let mut all = vec!["auth", "can-i"];
            all.extend_from_slice(args);
            // "no - REASON": the answer is the first word.
            let out = String::from_utf8_lossy(&cli.run(&all).stdout).into_owned();
            out.split_whitespace().next().unwrap_or_default().to_owned()
        };
        assert_eq!(
            can_i(&["patch", "ci/host-b", "--subresource=status"]),
            "yes"
        );
        assert_eq!(can_i(&["patch", "ci/host-a", "--subresource=status"]), "no");
        let on_b = format!("tasks.gantry.dev/{}", on("host-b"));
        let on_a = format!("tasks.gantry.dev/{}", on("host-a"));
        assert_eq!(can_i(&["patch", &on_b, "--subresource=status"]), "yes");
        assert_eq!(can_i(&["patch", &on_a, "--subresource=status"]), "no");
        assert_eq!(can_i(&["get", "secrets"]), "no");
        let whoami = cli.ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]);
        assert_eq!(whoami, "gantry:agent:tokens:host-b");
    } else {
        assert!(std::env::var_os("CI").is_none(), "kubectl is missing");
        eprintln!("SKIPPED the kubectl part: no kubectl");
    }

    // Tokens are listed, and a revoked one is refused at once.
    let listed = g.ok("agent-token", &["list", "--cluster", ns]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut instances: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    instances.sort_unstable();
    assert_eq!(
        instances,
        ["host-a", "host-b", "host-c", "host-d"],
        "{listed}"
    );
    let d_id = rows.iter().find(|r| r[2] == "host-d").expect("host-d's")[0];
    assert!(g.ok("agent-token", &["revoke", d_id]).contains("revoked"));
    assert_eq!(code(&d_instances.get("host-d").await), 401);
    assert_eq!(code(&b_instances.get("host-b").await), 0, "the others stay");
    // The agents kept working under their tokens all along.
    g.service_until(ns, "web", "still 6 running", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
    })
    .await;
}

/// A ScheduledTask of `definition`.
fn scheduled(name: &str, schedule: &str, definition: &str, count: u8, policy: &str) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "ScheduledTask",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "taskDefinition": definition, "count": count,
                 "concurrencyPolicy": policy},
    })
}

/// On real time, not a fake clock: every-minute crons and a one-minute
/// rate, so the test waits for at most two minute boundaries. A
/// controller that was down is played by writing `lastScheduleTime` as
/// its last run left it, five minutes ago, before the controller starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_tasks_run_on_time_catch_up_once_and_honour_their_concurrency_policy() {
    use crds::v1alpha1::{RunOutcome, ScheduledTask};
    use k8s_openapi::jiff::{Timestamp, ToSpan};
    let ns = "scheduled";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 2, 4096, 4096);
    g.apply(
        ns,
        &[
            task_definition("long", 64, &["httpd"], "1"),
            task_definition("quick", 64, &["sh", "-c", "exit 0"], "1"),
            scheduled("forbidden", "cron(* * * * ? *)", "long", 2, "Forbid"),
            scheduled("rated", "rate(1 minute)", "quick", 1, "Allow"),
            scheduled("replaced", "cron(* * * * ? *)", "long", 1, "Replace"),
        ],
    )
    .await;
    let schedules = g.api::<ScheduledTask>(ns);
    let five_minutes_ago = Timestamp::now() - 5.minutes();
    for name in ["forbidden", "replaced"] {
        let last = json!({"status": {"lastScheduleTime": five_minutes_ago.round(k8s_openapi::jiff::Unit::Second).expect("rounded")}});
        schedules
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&last))
            .await
            .expect("as a controller left it");
    }
    let rated_created = schedules
        .get("rated")
        .await
        .expect("rated")
        .metadata
        .creation_timestamp
        .expect("created")
        .0;
    g.controller("controller", &[]);
    g.instances_connected(ns, 2).await;
    let runs = |name: &'static str| {
        let g = &g;
        async move {
            g.tasks(ns, &format!("gantry.dev/scheduled-task={name}"))
                .await
        }
    };

    // Caught up at once, once: the latest missed minute, `count` tasks.
    let missed = g.until_event(ns, "forbidden", "RunStarted").await;
    assert!(missed.contains("runs were missed"), "{missed}");
    let first = runs("forbidden").await;
    assert_eq!(first.len(), 2, "one catch-up run of two tasks");
    let minute = |t: &Task| t.labels()["gantry.dev/scheduled-minute"].clone();
    assert_eq!(minute(&first[0]), minute(&first[1]));
    for task in &first {
        g.task_until(ns, &task.name_any(), "RUNNING", |t| {
            last(t) == Some(TaskLastStatus::Running)
        })
        .await;
        assert_eq!(
            task.spec.started_by.as_deref(),
            Some("scheduled-task/forbidden")
        );
    }
    let replaced_first = runs("replaced").await;
    assert_eq!(replaced_first.len(), 1);

    // The rate fires a minute after its creation, not before.
    let rated = g
        .until::<ScheduledTask>(ns, "rated", "ran once", Duration::from_secs(120), |s| {
            s.status.as_ref().is_some_and(|st| {
                st.runs
                    .first()
                    .is_some_and(|r| r.outcome == RunOutcome::Succeeded)
            })
        })
        .await;
    let run = &rated.status.expect("status").runs[0];
    assert_eq!(run.scheduled_time.0, rated_created + 1.minute());
    let task = g
        .api::<Task>(ns)
        .get(&run.tasks[0])
        .await
        .expect("its task");
    let created = task.metadata.creation_timestamp.expect("created").0;
    assert!(
        created >= rated_created + 1.minute(),
        "started at {created}, before it was due"
    );

    // At the next minute the first runs still run: Forbid skips, Replace
    // stops them and starts anew.
    let skipped = g
        .until::<ScheduledTask>(
            ns,
            "forbidden",
            "a run skipped",
            Duration::from_secs(120),
            |s| {
                s.status.as_ref().is_some_and(|st| {
                    st.runs
                        .first()
                        .is_some_and(|r| r.outcome == RunOutcome::Skipped)
                })
            },
        )
        .await;
    let status = skipped.status.expect("status");
    assert!(
        status.runs[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("Forbid") && r.contains(&first[0].name_any())),
        "{:?}",
        status.runs
    );
    assert_eq!(status.active_count, 2);
    assert_eq!(runs("forbidden").await.len(), 2, "nothing more started");
    let old = replaced_first[0].name_any();
    let stopped = g
        .task_until(ns, &old, "stopped by the next run", |t| {
            last(t) == Some(TaskLastStatus::Stopped)
        })
        .await;
    let why = stopped
        .status
        .and_then(|s| s.stopped_reason)
        .unwrap_or_default();
    assert!(
        why.starts_with("replaced by the run of replaced at"),
        "{why}"
    );
    let now_running = runs("replaced").await;
    assert_eq!(now_running.len(), 2, "the replacement started");
}

/// Scale-in protection on real time: one minute, ECS's shortest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protected_task_outlives_scale_in_until_its_protection_ends() {
    let ns = "protection";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "host", 3, 2048, 2048);
    g.controller("controller", &[]);
    g.instances_connected(ns, 3).await;
    g.apply(
        ns,
        &[
            task_definition("web", 64, &["httpd"], "1"),
            service("web", "web", 3, json!({})),
        ],
    )
    .await;
    g.service_until(ns, "web", "Ready with 3 tasks", |s| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 3)
    })
    .await;
    let mut names: Vec<String> = g
        .live_tasks(ns, "web")
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    // The middle one, by name.
    let kept = names[1].clone();
    let tasks = g.api::<Task>(ns);
    let protect = json!({"spec": {"protection": {"enabled": true, "expiresInMinutes": 1}}});
    tasks
        .patch(&kept, &PatchParams::default(), &Patch::Merge(&protect))
        .await
        .expect("protected");
    let timed = g
        .task_until(ns, &kept, "its protection timed", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.protection.as_ref())
                .is_some_and(|p| p.expiration_date.is_some())
        })
        .await;
    let ends = timed
        .status
        .and_then(|s| s.protection)
        .and_then(|p| p.expiration_date)
        .expect("an expiration")
        .0;

    // Scaled to zero: the other two go, it stays. (Deployments wait for
    // it the same way: the service plan's unit tests show it.)
    g.apply(ns, &[service("web", "web", 0, json!({}))]).await;
    for other in names.iter().filter(|n| **n != kept) {
        g.task_until(ns, other, "stopped", |t| {
            last(t) == Some(TaskLastStatus::Stopped)
        })
        .await;
    }
    let note = g.until_event(ns, "web", "TasksProtected").await;
    assert!(note.contains("1 tasks under protection"), "{note}");
    let alive = tasks.get(&kept).await.expect("the protected task");
    assert_eq!(last(&alive), Some(TaskLastStatus::Running));
    assert_eq!(alive.spec.desired_status, DesiredStatus::Running);

    // Once it ends, it goes, and not before.
    let stopped = g
        .task_until(ns, &kept, "stopped once unprotected", |t| {
            t.status.as_ref().is_some_and(|s| s.stopping_at.is_some())
        })
        .await;
    let stopping = stopped
        .status
        .and_then(|s| s.stopping_at)
        .expect("stoppingAt")
        .0;
    assert!(
        stopping >= ends,
        "stopped at {stopping}, protected until {ends}"
    );
}

/// A task definition of `cpu` units and 64 MiB.
fn sized(name: &str, cpu: u32) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"cpu": cpu, "memory": 64, "containerDefinitions": [
            {"name": "app", "image": "gantry-test/app:1", "command": ["serve"]}]},
    })
}

/// The services of the tasks as they are first bound to `instance`, in
/// the order the watch saw them.
fn binding_order(g: &Gantry, ns: &str, instance: &str) -> Arc<Mutex<Vec<String>>> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let api = g.api::<Task>(ns);
    let (seen, instance) = (Arc::clone(&order), instance.to_owned());
    tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let (Ok(watcher::Event::Apply(t)) | Ok(watcher::Event::InitApply(t))) = event else {
                continue;
            };
            if t.spec.container_instance.as_deref() == Some(instance.as_str())
                && bound.insert(t.name_any())
            {
                let service = t.labels().get("gantry.dev/service").cloned();
                seen.lock().expect("lock").push(service.unwrap_or_default());
            }
        }
    });
    order
}

fn stop_reasons(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .filter_map(|t| t.status.as_ref()?.stopped_reason.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemons_go_first_on_a_new_instance_and_preempt_replicas_only_when_allowed() {
    let ns = "daemons-first";
    let mut g = Gantry::start(ns).await;
    g.agents(ns, "a", 1, 1024, 2048);
    g.controller("controller", &[]);
    g.instances_connected(ns, 1).await;
    // a fills up: logs (256) and three of web's six tasks (256 each);
    // three wait for room. api has none to lose. a was schedulable
    // before logs existed, so it holds no room for it: logs goes first
    // here only because it is applied first.
    g.apply(
        ns,
        &[
            sized("api", 128),
            service("api", "api", 0, json!({})),
            sized("logs", 256),
            daemon("logs"),
        ],
    )
    .await;
    g.service_until(ns, "logs", "running on a", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 1)
    })
    .await;
    g.apply(
        ns,
        &[
            sized("web", 256),
            service("web", "web", 6, json!({"minimumHealthyPercent": 50})),
        ],
    )
    .await;
    g.until_event(ns, "web", "PlacementFailed").await;
    g.service_until(ns, "web", "3 of 6 running", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 3)
    })
    .await;

    // b joins: its daemon is bound there before the waiting web tasks.
    let order = binding_order(&g, ns, "b");
    g.agents(ns, "b", 1, 1536, 2048);
    g.instances_connected(ns, 2).await;
    let note = g.until_event(ns, "b", "AwaitingDaemons").await;
    assert!(note.contains("daemon services logs"), "{note}");
    g.service_until(ns, "web", "6 running", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 6)
    })
    .await;
    g.service_until(ns, "logs", "on both hosts", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 2)
    })
    .await;
    let bound = order.lock().expect("lock").clone();
    assert_eq!(
        bound,
        ["logs", "web", "web", "web"],
        "the daemon's task first"
    );
    let b = g
        .api::<ContainerInstance>(ns)
        .get("b")
        .await
        .expect("instance b");
    assert!(
        b.status.expect("status").awaiting_daemons.is_empty(),
        "its daemon placed, b takes any task"
    );

    // A bigger daemon fits on b (512 left) but not on a, full of web's
    // tasks: without preemptReplicaTasks it waits, and web keeps its 6.
    g.apply(ns, &[sized("metrics", 512), daemon("metrics")])
        .await;
    g.until_event(ns, "metrics", "PlacementFailed").await;
    g.service_until(ns, "metrics", "running on b", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let web = g.tasks(ns, "gantry.dev/service=web").await;
    assert!(stop_reasons(&web).is_empty(), "{:?}", stop_reasons(&web));

    // With it, two of the replica tasks on a make room (web may lose 3:
    // 6 running, minimumHealthyPercent 50).
    let preempt = json!({"spec": {"preemptReplicaTasks": true}});
    g.api::<crds::v1alpha1::Service>(ns)
        .patch("metrics", &PatchParams::default(), &Patch::Merge(&preempt))
        .await
        .expect("patched");
    g.service_until(ns, "metrics", "running on both hosts", |s| {
        s.status.as_ref().is_some_and(|st| st.running_count == 2)
    })
    .await;
    let note = g.until_event(ns, "metrics", "PreemptedReplicaTasks").await;
    assert!(note.contains("on container instance a"), "{note}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let web = g.tasks(ns, "gantry.dev/service=web").await;
    let reasons = stop_reasons(&web);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r
            == "Preempted to make room for the task of daemon service metrics (preemptReplicaTasks)"),
        "{reasons:?}"
    );
    // Their replacements find no room: web runs 4, and no other service
    // lost a task.
    assert_eq!(
        web.iter()
            .filter(|t| last(t) == Some(TaskLastStatus::Running)
                && t.spec.desired_status == DesiredStatus::Running)
            .count(),
        4
    );
    let logs = g.tasks(ns, "gantry.dev/service=logs").await;
    assert!(stop_reasons(&logs).is_empty(), "{:?}", stop_reasons(&logs));
}

/// One simulated instance `name` in `zone`.
fn zoned(g: &mut Gantry, ns: &str, name: &str, zone: &str) {
    g.agents_with(ns, name, 1, (2048, 2048), &["--availability-zone", zone]);
}

/// Running tasks per instance, which the test names after its zone.
fn per_zone(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut zones = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| last(t) == Some(TaskLastStatus::Running))
    {
        let zone = t.spec.container_instance.clone().unwrap_or_default();
        *zones.entry(zone).or_default() += 1;
    }
    zones
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_rebalances_over_a_zone_that_joins_never_below_its_minimum_healthy() {
    let ns = "rebalance";
    let mut g = Gantry::start(ns).await;
    zoned(&mut g, ns, "az-a", "az-a");
    zoned(&mut g, ns, "az-b", "az-b");
    g.controller("controller", &[]);
    g.instances_connected(ns, 2).await;
    // api and worker keep what they have; web, between them, rebalances.
    let rebalanced = |name: &str, rebalancing: &str| {
        let mut s = service(name, name, 6, json!({}));
        s["spec"]["rebalancing"] = json!(rebalancing);
        s
    };
    g.apply(
        ns,
        &[
            task_definition("api", 64, &["httpd"], "1"),
            service("api", "api", 4, json!({})),
            task_definition("web", 64, &["httpd"], "1"),
            rebalanced("web", "ENABLED"),
            task_definition("worker", 64, &["work"], "1"),
            rebalanced("worker", "DISABLED"),
        ],
    )
    .await;
    for name in ["api", "web", "worker"] {
        g.service_until(ns, name, "steady", ready).await;
    }
    let even = BTreeMap::from([("az-a".to_owned(), 3), ("az-b".to_owned(), 3)]);
    assert_eq!(per_zone(&g.live_tasks(ns, "web").await), even);

    // az-c joins: web moves two tasks there, one at a time, never below
    // its 6 healthy (minimumHealthyPercent 100) nor above 12.
    let (bounds, sampler) = sample_bounds(&g, ns, "web");
    zoned(&mut g, ns, "az-c", "az-c");
    g.instances_connected(ns, 3).await;
    let balanced = BTreeMap::from([
        ("az-a".to_owned(), 2),
        ("az-b".to_owned(), 2),
        ("az-c".to_owned(), 2),
    ]);
    for _ in 0..300 {
        let web = g.live_tasks(ns, "web").await;
        if per_zone(&web) == balanced && web.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let web = g.tasks(ns, "gantry.dev/service=web").await;
    assert_eq!(
        per_zone(&g.live_tasks(ns, "web").await),
        balanced,
        "{}",
        g.logs()
    );
    sampler.abort();
    let (min_healthy, max_live, samples) = *bounds.lock().expect("lock");
    assert!(samples > 10, "sampled {samples} watch events");
    assert!(min_healthy >= 6, "healthy fell to {min_healthy}");
    assert!(max_live <= 12, "{max_live} live tasks");
    let moved: Vec<_> = web
        .iter()
        .filter_map(|t| t.status.as_ref()?.stopped_reason.clone())
        .collect();
    assert_eq!(
        moved,
        vec!["Rebalancing activity initiated by (deployment ecs-svc/1)"; 2],
        "two tasks moved"
    );
    let note = g.until_event(ns, "web", "Rebalancing").await;
    assert!(
        note.contains("ecs.availability-zone az-") && note.contains("has 0"),
        "{note}"
    );
    // The others stay where they are.
    for name in ["api", "worker"] {
        let tasks = g.tasks(ns, &format!("gantry.dev/service={name}")).await;
        assert!(
            tasks
                .iter()
                .all(|t| t.spec.container_instance.as_deref() != Some("az-c")),
            "{name} moved"
        );
    }
}
