//! Task start latency: from the moment a Task is bound to this instance to
//! the agent reporting it RUNNING, over 50 tasks one after another, beside
//! plain `docker run -d` of the same image measured in the same run.
//!
//! Prints one JSON object per line. Needs Docker and the test image
//! (`scripts/build-image`). Run with `cargo bench -p agent --bench
//! start_latency`.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use agent::runtime::Docker;
use apiserver::server::{Config, Server};
use crds::v1alpha1::{Allocation, ContainerInstance, Task, TaskLastStatus};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use serde_json::json;

const TASKS: usize = 50;
const INSTANCE: &str = "bench-start-latency";

fn image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-image");
    let out = Command::new(script)
        .output()
        .expect("scripts/build-image runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

fn remove_containers() {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=gantry.dev/instance={INSTANCE}"),
        ])
        .output()
        .expect("docker runs");
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    println!(
        "{}",
        json!({"metric": "start_latency_ms", "of": what, "tasks": samples.len(), "p50": p50, "p99": p99})
    );
    (p50, p99)
}

async fn gantry(client: &Client, image: &str) -> Vec<Duration> {
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), "default");
    let mut samples = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let name = format!("start-{i}");
        let task: Task = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": {
                "taskDefinition": "bench",
                "taskDefinitionRevision": 1,
                "definition": {"memory": 16, "containerDefinitions": [
                    {"name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1}
                ]},
            },
        }))
        .expect("a task");
        let created = tasks
            .create(&PostParams::default(), &task)
            .await
            .expect("created");
        let mut ci = instances.get_status(INSTANCE).await.expect("instance");
        ci.status
            .get_or_insert_with(Default::default)
            .allocations
            .push(Allocation {
                task: name.clone(),
                task_uid: created.uid().expect("uid"),
                group: None,
                task_definition: None,
                cpu: 0,
                memory: 16,
                ports: Vec::new(),
                ports_udp: Vec::new(),
            });
        instances
            .replace_status(INSTANCE, &PostParams::default(), &ci)
            .await
            .expect("allocated");
        let bind = json!({
            "metadata": {"labels": {crds::labels::CONTAINER_INSTANCE: INSTANCE}},
            "spec": {"containerInstance": INSTANCE},
        });
        let bound = Instant::now();
        tasks
            .patch(&name, &PatchParams::default(), &Patch::Merge(&bind))
            .await
            .expect("bound");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(tasks.clone(), &name, |t: Option<&Task>| {
                t.and_then(|t| t.status.as_ref())
                    .and_then(|s| s.last_status)
                    == Some(TaskLastStatus::Running)
            }),
        )
        .await
        .expect("RUNNING in time")
        .expect("watch ok");
        samples.push(bound.elapsed());
    }
    samples
}

fn plain_docker(image: &str) -> Vec<Duration> {
    (0..TASKS)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new("docker")
                .args([
                    "run",
                    "-d",
                    "--label",
                    &format!("gantry.dev/instance={INSTANCE}"),
                    image,
                    "sleep",
                    "3600",
                ])
                .output()
                .expect("docker runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed()
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let image = image();
    remove_containers();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Config::local(dir.path()))
        .await
        .expect("server starts");
    let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    crds::install(&client).await.expect("CRDs installed");
    let docker = Docker::connect(None).await.expect("Docker answers");
    let mut agent_config = agent::Config::new("default", INSTANCE);
    agent_config.host_ip = "127.0.0.1".to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(client.clone(), agent_config, docker, async {
        let _ = stopped.await;
    }));
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), "default");
    await_condition(instances, INSTANCE, |ci: Option<&ContainerInstance>| {
        ci.is_some()
    })
    .await
    .expect("registered");

    let gantry = gantry(&client, &image).await;
    let _ = stop.send(());
    let _ = agent.await;
    remove_containers();
    let docker = plain_docker(&image);
    remove_containers();
    let (g50, g99) = report("gantry", gantry);
    let (d50, d99) = report("docker run -d", docker);
    println!(
        "{}",
        json!({"metric": "start_latency_ratio", "p50": g50 / d50, "p99": g99 / d99, "goal_p99": 1.2})
    );
    server.shutdown().await;
}
