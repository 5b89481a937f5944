//! Partitions on a real network: agents run in containers of the gantry
//! image (scripts/build-gantry-image) on a Docker network of their own,
//! the control plane listens on that network's gateway, and an agent is
//! cut off by taking its container off the network (not by a signal),
//! then put back. What ECS promises is checked: a short cut changes
//! nothing, a lost instance's tasks are replaced after the loss timeout,
//! the returning agent stops the copies that were replaced, and no task
//! runs twice; `--stop-tasks-when-disconnected` stops the tasks of an
//! agent cut off longer than it allows.

mod common;

use std::{net::IpAddr, path::Path, process::Command, time::Duration};

use crds::v1alpha1::{ContainerInstance, ContainerLastStatus, DesiredStatus, StopCode, Task};
use kube::ResourceExt;
use serde_json::json;

use common::gantry::{Gantry, last, ready};

/// Seconds before the controller replaces a disconnected instance's tasks.
const LOSS_TIMEOUT: u64 = 20;
/// What host-c allows itself (`--stop-tasks-when-disconnected`).
const CUT_OFF_AFTER: u64 = 4;

fn docker(args: &[&str]) -> String {
    common::succeeds(Command::new("docker").args(args))
}

/// What the test made, removed however it ends.
struct Made {
    containers: Vec<String>,
    network: String,
    image: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        for container in &self.containers {
            common::docker_stdout(&["rm", "-f", container]);
        }
        common::docker_stdout(&["network", "rm", &self.network]);
        common::docker_stdout(&["rmi", &self.image]);
    }
}

/// The tasks named `names`, as they are now.
async fn tasks_named(g: &Gantry, ns: &str, names: &[String]) -> Vec<Task> {
    let mut tasks: Vec<Task> = g
        .tasks(ns, "")
        .await
        .into_iter()
        .filter(|t| names.contains(&t.name_any()))
        .collect();
    tasks.sort_by_key(ResourceExt::name_any);
    tasks
}

/// Wait up to `seconds` until `check` holds for the tasks named `names`.
async fn until_tasks(
    g: &Gantry,
    ns: &str,
    names: &[String],
    what: &str,
    seconds: u64,
    check: impl Fn(&[Task]) -> bool,
) -> Vec<Task> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let tasks = tasks_named(g, ns, names).await;
        if tasks.len() == names.len() && check(&tasks) {
            return tasks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks {names:?} never {what}: {:#?}\n{}",
            tasks
                .iter()
                .map(|t| (t.name_any(), &t.status))
                .collect::<Vec<_>>(),
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connected(g: &Gantry, ns: &str, host: &str, yes: bool) {
    let what = if yes { "connected" } else { "disconnected" };
    g.until(
        ns,
        host,
        what,
        Duration::from_secs(30),
        |ci: &ContainerInstance| ci.status.as_ref().is_some_and(|s| s.agent_connected == yes),
    )
    .await;
}

/// What an agent's container logged.
fn logs(container: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Whether every container of the task has stopped, as its agent reports.
fn containers_stopped(task: &Task) -> bool {
    task.status.as_ref().is_some_and(|s| {
        !s.containers.is_empty()
            && s.containers
                .iter()
                .all(|c| c.last_status == ContainerLastStatus::Stopped)
    })
}

fn running(task: &Task) -> bool {
    last(task) == Some(crds::v1alpha1::TaskLastStatus::Running)
        && task.spec.desired_status == DesiredStatus::Running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_agent_is_replaced_and_stops_its_copies_when_it_returns() {
    if !common::docker() {
        return;
    }
    let pid = std::process::id();
    let mut made = Made {
        containers: Vec::new(),
        network: format!("gantry-partition-{pid}"),
        image: format!("gantry-test/gantry:partition-{pid}"),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-gantry-image");
    common::succeeds(Command::new(script).args([
        "--binary",
        env!("CARGO_BIN_EXE_gantry"),
        &made.image,
    ]));
    docker(&[
        "network",
        "create",
        "--label",
        "dev.gantry.project=gantry",
        &made.network,
    ]);
    let gateway: IpAddr = docker(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        &made.network,
    ])
    .trim()
    .parse()
    .expect("the network's gateway address");

    // The control plane and the controller on the host, reached at the
    // gateway; each agent in its own container, under its own token.
    let ns = "partition";
    let mut g = Gantry::start_on(ns, std::net::SocketAddr::new(gateway, 0)).await;
    let loss = LOSS_TIMEOUT.to_string();
    g.controller("controller", &["--instance-loss-timeout-seconds", &loss]);
    let user = format!(
        "{}:{}",
        common::succeeds(Command::new("id").arg("-u")).trim(),
        common::succeeds(Command::new("id").arg("-g")).trim()
    );
    let cut_off = CUT_OFF_AFTER.to_string();
    for (host, flags) in [
        ("host-a", &[][..]),
        ("host-b", &[][..]),
        ("host-c", &["--stop-tasks-when-disconnected", &cut_off][..]),
    ] {
        let kubeconfig = g.agent_kubeconfig(ns, host);
        let container = format!("gantry-partition-{pid}-{host}");
        let mount = format!("{}:/kubeconfig:ro", kubeconfig.display());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            "dev.gantry.project=gantry",
            "--network",
            &made.network,
            "--user",
            &user,
            "-v",
            &mount,
            &made.image,
            "agent",
            "--kubeconfig",
            "/kubeconfig",
            "--runtime",
            "sim",
            "--cluster",
            ns,
            "--name",
            host,
            "--lease-renew-seconds",
            "1",
            "--sim-start-latency-ms",
            "5",
        ];
        args.extend_from_slice(flags);
        docker(&args);
        made.containers.push(container);
    }
    let container = |host: &str| format!("gantry-partition-{pid}-{host}");
    g.instances_connected(ns, 3).await;
    let definition = json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
        "metadata": {"name": "web"},
        "spec": {"cpu": 128, "memory": 64, "containerDefinitions": [{
            "name": "app", "image": "gantry-test/app:1", "command": ["httpd"],
        }]},
    });
    let service = json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"taskDefinition": "web", "desiredCount": 6,
                 "placementStrategy": [{"type": "spread", "field": "instanceId"}]},
    });
    g.apply(ns, &[definition, service]).await;
    let six = |s: &crds::v1alpha1::Service| {
        ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == 6)
    };
    g.service_until(ns, "web", "6 running", six).await;
    let names = |tasks: &[Task]| {
        let mut names: Vec<String> = tasks.iter().map(ResourceExt::name_any).collect();
        names.sort();
        names
    };
    let on = |host: &str| format!("gantry.dev/container-instance={host}");
    let on_b = names(&g.tasks(ns, &on("host-b")).await);
    let on_c = names(&g.tasks(ns, &on("host-c")).await);
    assert_eq!((on_b.len(), on_c.len()), (2, 2), "spread over three hosts");

    // A cut shorter than the loss timeout: host-b keeps its tasks, as ECS
    // does; host-c stops its own after CUT_OFF_AFTER seconds.
    for host in ["host-b", "host-c"] {
        docker(&["network", "disconnect", &made.network, &container(host)]);
    }
    tokio::time::sleep(Duration::from_secs(CUT_OFF_AFTER + 2)).await;
    for host in ["host-b", "host-c"] {
        docker(&["network", "connect", &made.network, &container(host)]);
    }
    connected(&g, ns, "host-b", true).await;
    let c = until_tasks(&g, ns, &on_c, "reported their cut-off stop", 60, |tasks| {
        tasks.iter().all(|t| {
            last(t) == Some(crds::v1alpha1::TaskLastStatus::Stopped) && containers_stopped(t)
        })
    })
    .await;
    for task in &c {
        let status = task.status.as_ref().expect("status");
        assert_eq!(status.stop_code, Some(StopCode::TerminationNotice));
        let reason = status.stopped_reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("could not reach the control plane for 4 s"),
            "{reason}"
        );
    }
    let said = logs(&container("host-c"));
    assert!(
        said.contains("the control plane has not answered; stopping every task"),
        "host-c stopped its tasks while cut off: {said}"
    );
    let b = tasks_named(&g, ns, &on_b).await;
    assert!(b.iter().all(running), "host-b's tasks still run: {b:#?}");
    assert!(
        !logs(&container("host-b")).contains("stopping every task"),
        "host-b was not asked to stop its tasks"
    );
    g.service_until(ns, "web", "6 running again", six).await;

    // A cut longer than the loss timeout: host-b's tasks are replaced
    // elsewhere, and stopped there once it is back.
    docker(&["network", "disconnect", &made.network, &container("host-b")]);
    connected(&g, ns, "host-b", false).await;
    let replaced = until_tasks(&g, ns, &on_b, "were given up", LOSS_TIMEOUT + 30, |tasks| {
        tasks
            .iter()
            .all(|t| t.spec.desired_status == DesiredStatus::Stopped)
    })
    .await;
    assert!(
        replaced.iter().all(|t| !containers_stopped(t)),
        "nobody could have stopped their containers yet: {replaced:#?}"
    );
    g.service_until(ns, "web", "6 running elsewhere", six).await;
    docker(&["network", "connect", &made.network, &container("host-b")]);
    connected(&g, ns, "host-b", true).await;
    let b = until_tasks(
        &g,
        ns,
        &on_b,
        "were stopped by their returning agent",
        60,
        |tasks| tasks.iter().all(containers_stopped),
    )
    .await;
    for task in &b {
        let status = task.status.as_ref().expect("status");
        assert_eq!(status.stop_code, Some(StopCode::TerminationNotice));
    }
    // No task runs twice: six run, each once, none on host-b.
    let all = g.tasks(ns, "gantry.dev/service=web").await;
    let running_now: Vec<&Task> = all.iter().filter(|t| running(t)).collect();
    assert_eq!(running_now.len(), 6, "{all:#?}");
    assert!(
        running_now
            .iter()
            .all(|t| t.spec.container_instance.as_deref() != Some("host-b"))
    );
}
