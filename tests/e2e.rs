//! The whole of Gantry on real Docker: the embedded control plane, `gantry
//! controller` and three `gantry agent` processes (hosts on 127.0.0.2-4),
//! driven with real kubectl. A service is applied and scaled, one of its
//! containers is killed, an agent is killed -9, an instance drained, the
//! definition rolled to a new image tag, invalid manifests are refused and
//! two batch tasks run. Each step is asserted from status, conditions and
//! Events.

mod common;

use std::{
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::Duration,
};

use crds::v1alpha1::{HealthStatus, Service, StopCode, Task, TaskLastStatus};
use kube::{ResourceExt, api::ListParams};

use common::{
    Cli, docker_stdout,
    gantry::{Gantry, last, ready},
};

const NS: &str = "e2e";
const HOSTS: [(&str, &str); 3] = [
    ("e2e-1", "127.0.0.2"),
    ("e2e-2", "127.0.0.3"),
    ("e2e-3", "127.0.0.4"),
];
const ROLLED: &str = "gantry-test/busybox:e2e-rolled";

fn manifest(image: &str, desired: u32) -> String {
    format!(
        r#"apiVersion: gantry.dev/v1alpha1
kind: TaskDefinition
metadata:
  name: web
spec:
  containerDefinitions:
    - name: web
      image: {image}
      cpu: 64
      memory: 32
      command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
      portMappings:
        - containerPort: 8080
          hostPort: 0
      # HEALTHY means answering HTTP: the minimum healthy is a minimum
      # answering.
      healthCheck:
        command: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
        interval: 5
        timeout: 2
        retries: 2
---
apiVersion: gantry.dev/v1alpha1
kind: Service
metadata:
  name: web
spec:
  taskDefinition: web
  desiredCount: {desired}
  deploymentConfiguration:
    minimumHealthyPercent: 60
    maximumPercent: 100
"#
    )
}

fn batch(name: &str, code: i32) -> String {
    format!(
        r#"apiVersion: gantry.dev/v1alpha1
kind: TaskDefinition
metadata:
  name: {name}
spec:
  containerDefinitions:
    - name: job
      image: gantry-test/busybox:2
      memory: 16
      command: ["sh", "-c", "exit {code}"]
---
apiVersion: gantry.dev/v1alpha1
kind: Task
metadata:
  name: {name}-once
spec:
  taskDefinition: {name}
"#
    )
}

struct E2e {
    g: Gantry,
    kubectl: Cli,
    dir: tempfile::TempDir,
}

impl E2e {
    fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("manifest written");
        self.kubectl
            .ok(&["apply", "-n", NS, "-f", path.to_str().expect("UTF-8 path")]);
    }

    /// Ready with `n` tasks running, each answering on its address. The
    /// service's counts trail its tasks: both must say `n`.
    async fn serving(&self, n: i32, what: &str) -> Vec<Task> {
        let mut tasks = Vec::new();
        for _ in 0..1200 {
            self.g
                .service_until(NS, "web", what, |s: &Service| {
                    ready(s) && s.status.as_ref().is_some_and(|st| st.running_count == n)
                })
                .await;
            tasks = self.g.live_tasks(NS, "web").await;
            if tasks.len() == n as usize
                && tasks
                    .iter()
                    .all(|t| last(t) == Some(TaskLastStatus::Running))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(tasks.len(), n as usize, "{what}: running tasks");
        for task in &tasks {
            for address in addresses(task) {
                TcpStream::connect_timeout(
                    &address.parse().expect("an address"),
                    Duration::from_secs(5),
                )
                .unwrap_or_else(|e| panic!("{what}: {} at {address}: {e}", task.name_any()));
            }
        }
        tasks
    }

    async fn task_until(&self, name: &str, what: &str, check: impl Fn(&Task) -> bool) -> Task {
        let api = self.g.api::<Task>(NS);
        for _ in 0..1200 {
            if let Some(task) = api.get_opt(name).await.expect("get")
                && check(&task)
            {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "task {name} never {what}: {:#?}\n{}",
            api.get_opt(name).await.ok().flatten().map(|t| t.status),
            self.g.logs()
        );
    }
}

fn addresses(task: &Task) -> Vec<String> {
    task.status
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| &c.network_bindings)
        .map(|b| format!("{}:{}", b.bind_ip, b.host_port))
        .collect()
}

fn on(task: &Task) -> String {
    task.spec.container_instance.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_lives_through_scaling_kills_a_lost_host_a_drain_and_a_roll() {
    if !common::docker() {
        return;
    }
    let Some(binary) = common::tool("GANTRY_KUBECTL", "kubectl") else {
        return;
    };
    common::test_image();
    let _cleanup = common::DockerCleanup::new(HOSTS.map(|(host, _)| host), &[ROLLED]);
    let mut g = Gantry::start(NS).await;
    g.controller("controller", &["--instance-loss-timeout-seconds", "10"]);
    g.docker_agents(NS, &HOSTS);
    g.instances_connected(NS, 3).await;
    let kubectl = Cli {
        binary,
        kubeconfig: g.kubeconfig.clone(),
    };
    let mut e2e = E2e {
        g,
        kubectl,
        dir: tempfile::tempdir().expect("tempdir"),
    };

    // Apply, then scale with kubectl.
    e2e.apply("web", &manifest("gantry-test/busybox:2", 3));
    e2e.serving(3, "ran 3 tasks").await;
    e2e.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=5"]);
    let tasks = e2e.serving(5, "scaled to 5").await;

    // A killed container: its task stops with the exit code, a new one
    // takes its place.
    let victim = &tasks[0];
    let uid = victim.uid().expect("uid");
    let label = format!("label=gantry.dev/task-uid={uid}");
    for id in docker_stdout(&["ps", "-q", "--filter", &label]).split_whitespace() {
        docker_stdout(&["rm", "-f", id]);
    }
    let stopped = e2e
        .task_until(
            &victim.name_any(),
            "stopped after its container was killed",
            |t| last(t) == Some(TaskLastStatus::Stopped),
        )
        .await;
    let status = stopped.status.expect("status");
    assert!(
        status.stopped_reason.is_some(),
        "the stop says why: {status:?}"
    );
    let tasks = e2e.serving(5, "replaced the killed task").await;
    assert!(
        tasks
            .iter()
            .all(|t| t.uid().as_deref() != Some(uid.as_str()))
    );

    // kill -9 of an agent: after the loss timeout its tasks are stopped
    // and replaced on the other hosts.
    let lost: Vec<String> = tasks
        .iter()
        .filter(|t| on(t) == "e2e-2")
        .map(ResourceExt::name_any)
        .collect();
    e2e.g.kill_9("e2e-2");
    e2e.g.until_event(NS, "e2e-2", "InstanceLost").await;
    for name in &lost {
        let task = e2e
            .task_until(name, "stopped as its host was lost", |t| {
                last(t) == Some(TaskLastStatus::Stopped)
            })
            .await;
        assert_eq!(
            task.status.and_then(|s| s.stop_code),
            Some(StopCode::TerminationNotice)
        );
    }
    let tasks = e2e.serving(5, "replaced the lost host's tasks").await;
    assert!(
        tasks.iter().all(|t| on(t) != "e2e-2"),
        "none on the lost host"
    );

    // From here on, count the tasks answering (RUNNING and HEALTHY by
    // their HTTP check) all along: never below minimumHealthyPercent (60%
    // of 5 = 3). maximumPercent 100 makes the controller stop tasks before
    // it starts their replacements, so the floor is reached, not just
    // respected from afar.
    let lowest = Arc::new(AtomicI32::new(i32::MAX));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (lowest, sampling) = (Arc::clone(&lowest), Arc::clone(&sampling));
        let api = e2e.g.api::<Task>(NS);
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                let list = api
                    .list(&ListParams::default().labels("gantry.dev/service=web"))
                    .await
                    .expect("tasks");
                let answering = list
                    .items
                    .iter()
                    .filter(|t| {
                        last(t) == Some(TaskLastStatus::Running)
                            && t.status.as_ref().and_then(|s| s.health_status)
                                == Some(HealthStatus::Healthy)
                    })
                    .count();
                lowest.fetch_min(i32::try_from(answering).unwrap_or(0), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Drain e2e-3: its tasks move to e2e-1.
    e2e.kubectl.ok(&[
        "patch",
        "-n",
        NS,
        "ci",
        "e2e-3",
        "--type=merge",
        "-p",
        r#"{"spec":{"state":"DRAINING"}}"#,
    ]);
    e2e.g.until_event(NS, "e2e-3", "Draining").await;
    for _ in 0..1200 {
        let live = e2e.g.live_tasks(NS, "web").await;
        if live.iter().all(|t| on(t) == "e2e-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = e2e.serving(5, "moved off the drained host").await;
    assert!(tasks.iter().all(|t| on(t) == "e2e-1"), "all on e2e-1");

    // Roll the definition to a new image tag.
    docker_stdout(&["tag", "gantry-test/busybox:2", ROLLED]);
    e2e.apply("web", &manifest(ROLLED, 5));
    for _ in 0..1200 {
        let live = e2e.g.live_tasks(NS, "web").await;
        if live.len() == 5
            && live
                .iter()
                .all(|t| t.spec.task_definition_revision == Some(2))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = e2e.serving(5, "rolled to revision 2").await;
    for task in &tasks {
        assert_eq!(task.spec.task_definition_revision, Some(2));
        let image = task
            .status
            .iter()
            .flat_map(|s| &s.containers)
            .find_map(|c| c.image.clone());
        assert_eq!(image.as_deref(), Some(ROLLED), "{}", task.name_any());
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let lowest = lowest.load(Ordering::SeqCst);
    eprintln!("fewest tasks answering during the drain and the roll: {lowest}");
    assert!(
        lowest >= 3,
        "answering tasks fell to {lowest} during the drain and the roll"
    );

    // Invalid manifests: each refused by kubectl, the field named, and
    // nothing running disturbed.
    e2e.kubectl.refuses_invalid_manifests(&["-n", NS]);
    e2e.serving(5, "untouched by refused manifests").await;

    // Batch tasks: run to completion, exit codes recorded.
    for (name, code) in [("job-ok", 0), ("job-fails", 3)] {
        e2e.apply(name, &batch(name, code));
        let task = e2e
            .task_until(&format!("{name}-once"), "ran to completion", |t| {
                last(t) == Some(TaskLastStatus::Stopped)
            })
            .await;
        let status = task.status.expect("status");
        assert_eq!(
            status.containers.first().and_then(|c| c.exit_code),
            Some(code),
            "{name}: {status:?}"
        );
        assert_eq!(status.stop_code, Some(StopCode::EssentialContainerExited));
    }
}
