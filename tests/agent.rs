//! `gantry agent` on the real Docker engine against the embedded control
//! plane: it registers its host, runs the tasks bound to it with their
//! dependencies, ports and health checks, reports exit codes and reasons,
//! and after kill -9 re-adopts what runs without duplicating anything.
//!
//! No scheduler runs here: each test binds its tasks and writes their
//! allocations itself, as a scheduler would.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use apiserver::server::Server;
use crds::v1alpha1::{
    Allocation, ContainerInstance, ContainerLastStatus, HealthStatus, StopCode, Task,
    TaskLastStatus,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use serde_json::{Value, json};

use common::{docker_stdout, remove_containers};

/// A control plane with the CRDs, and the agents started against it.
struct Cluster {
    server: Option<Server>,
    client: Client,
    kubeconfig: PathBuf,
    image: String,
    agents: Vec<(String, Child)>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Every agent first: a live one would recreate what is removed.
        for (_, child) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (name, _) in &self.agents {
            remove_containers(name);
        }
    }
}

/// A name no other test (or earlier run) uses, for instances and tasks.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The control plane and the CRDs, for agents that need no Docker.
async fn control_plane(image: String) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::server(dir.path()).await;
    let kubeconfig = server.kubeconfig.clone();
    let client = common::client(&kubeconfig).await;
    common::install_crds(&client).await;
    Cluster {
        server: Some(server),
        client,
        kubeconfig,
        image,
        agents: Vec::new(),
        _dir: dir,
    }
}

/// The control plane, with Docker and the test image; `None` to skip.
async fn cluster() -> Option<Cluster> {
    if !common::docker() {
        return None;
    }
    Some(control_plane(common::test_image()).await)
}

impl Cluster {
    /// Start `gantry agent` for `name` on `host_ip` and wait until its
    /// ContainerInstance is registered.
    async fn agent(&mut self, name: &str, host_ip: &str, retention_seconds: u32) {
        self.spawn(
            name,
            &[
                "--host-ip",
                host_ip,
                "--lease-renew-seconds",
                "1",
                "--container-retention-seconds",
                &retention_seconds.to_string(),
            ],
        );
        self.registered(name).await;
    }

    /// Start `gantry agent --name name` with more flags; its stderr goes to
    /// `<name>.log` for the failure messages.
    fn spawn(&mut self, name: &str, flags: &[&str]) {
        let kubeconfig = self.kubeconfig.clone();
        self.spawn_as(name, flags, &kubeconfig);
    }

    /// [`Self::spawn`] with another kubeconfig.
    fn spawn_as(&mut self, name: &str, flags: &[&str], kubeconfig: &Path) {
        let log = self._dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["agent", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--cluster", "default", "--name", name])
            .args(flags)
            .env("RUST_LOG", "info,agent=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("gantry agent runs");
        self.agents.push((name.to_owned(), child));
    }

    /// Wait until the ContainerInstance `name` exists.
    async fn registered(&self, name: &str) {
        let instances: Api<ContainerInstance> = Api::namespaced(self.client.clone(), "default");
        let registered = tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(instances, name, |ci: Option<&ContainerInstance>| {
                ci.is_some()
            }),
        )
        .await;
        assert!(
            matches!(registered, Ok(Ok(_))),
            "{name} registered; agent logs:\n{}",
            self.logs()
        );
    }

    fn tasks(&self) -> Api<Task> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A kubeconfig with the read-only token.
    fn read_only_kubeconfig(&self) -> PathBuf {
        let server = self.server.as_ref().expect("server");
        let path = self._dir.path().join("read-only.kubeconfig");
        std::fs::write(
            &path,
            server.kubeconfig_for(&server.credentials.read_only_token),
        )
        .expect("written");
        path
    }

    /// A kubeconfig with a new agent token for `instance`, from `gantry
    /// agent-token create`.
    fn agent_token(&self, instance: &str) -> PathBuf {
        let path = self._dir.path().join(format!("{instance}.kubeconfig"));
        common::agent_kubeconfig(&self.kubeconfig, "default", instance, &path);
        path
    }

    /// Create a task bound to `instance` running `containers`, and reserve
    /// its allocation there as a scheduler would (allocation first, then
    /// the binding).
    async fn run(&self, instance: &str, name: &str, containers: Value) -> Task {
        let definition = json!({"containerDefinitions": containers, "memory": 64});
        self.run_definition(instance, name, definition).await
    }

    /// [`Self::run`] with a whole definition snapshot.
    async fn run_definition(&self, instance: &str, name: &str, definition: Value) -> Task {
        let task: Task = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name, "labels": {crds::labels::CONTAINER_INSTANCE: instance}},
            "spec": {
                "taskDefinition": name,
                "taskDefinitionRevision": 1,
                "definition": definition,
            },
        }))
        .expect("a task");
        let created = self
            .tasks()
            .create(&PostParams::default(), &task)
            .await
            .expect("task created");
        let instances: Api<ContainerInstance> = Api::namespaced(self.client.clone(), "default");
        let allocation = Allocation {
            task: name.to_owned(),
            task_uid: created.uid().expect("uid"),
            group: None,
            task_definition: Some(name.to_owned()),
            cpu: 10,
            memory: 16,
            ports: Vec::new(),
            ports_udp: Vec::new(),
        };
        // Written against the revision read, as a scheduler writes: a 409
        // (the agent reporting its versions, say) means read again.
        for attempt in 1.. {
            let mut ci = instances.get_status(instance).await.expect("instance");
            let status = ci.status.get_or_insert_with(Default::default);
            status.allocations.push(allocation.clone());
            match instances
                .replace_status(instance, &PostParams::default(), &ci)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {}
                Err(e) => panic!("allocation written against the revision read: {e}"),
            }
        }
        let bind = json!({"spec": {"containerInstance": instance}});
        self.tasks()
            .patch(name, &PatchParams::default(), &Patch::Merge(&bind))
            .await
            .expect("bound")
    }

    /// Wait (on the watch, not by sleeping) until the task satisfies
    /// `check`; its last state, for the assertions that follow.
    async fn until(&self, name: &str, what: &str, check: impl Fn(&Task) -> bool) -> Task {
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(self.tasks(), name, |t: Option<&Task>| t.is_some_and(&check)),
        )
        .await;
        let task = self.tasks().get(name).await.expect("task");
        assert!(
            matches!(waited, Ok(Ok(_))),
            "task {name} never became {what}: {:#?}; agent logs:\n{}",
            task.status,
            self.logs()
        );
        task
    }

    /// Wait until the task's `lastStatus` is `status`.
    async fn until_last(&self, name: &str, status: TaskLastStatus) -> Task {
        self.until(name, &format!("{status:?}"), |t| last(t) == Some(status))
            .await
    }

    /// Stop a task the way a user does: `desiredStatus: STOPPED`.
    async fn stop(&self, name: &str) {
        let stop = json!({"spec": {"desiredStatus": "STOPPED"}});
        self.tasks()
            .patch(name, &PatchParams::default(), &Patch::Merge(&stop))
            .await
            .expect("stopped");
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|(name, _)| {
                std::fs::read_to_string(self._dir.path().join(format!("{name}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn kill_9(&mut self, name: &str) {
        let (_, child) = self
            .agents
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("that agent");
        Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .expect("kill runs");
        child.wait().expect("reaped");
    }
}

fn last(task: &Task) -> Option<TaskLastStatus> {
    task.status.as_ref().and_then(|s| s.last_status)
}

fn container<'a>(task: &'a Task, name: &str) -> &'a crds::v1alpha1::ContainerStatus {
    task.status
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("container {name} in {:#?}", task.status))
}

fn containers_of(task: &Task) -> Vec<String> {
    let uid = task.uid().expect("uid");
    docker_stdout(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=gantry.dev/task-uid={uid}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn http_get(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("{address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    response
}

const HTTPD: &str =
    "mkdir -p /www && echo served-by-gantry > /www/index.html && exec httpd -f -p 8080 -h /www";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_healthy_dependency_runs_and_its_host_port_answers() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("health");
    cluster.agent(&instance, "127.0.0.1", 3600).await;
    let image = cluster.image.clone();
    cluster
        .run(
            &instance,
            "web",
            json!([
                {
                    "name": "db",
                    "image": image,
                    "command": ["sh", "-c", "touch /tmp/ready && exec sleep 3600"],
                    "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 5, "timeout": 2, "retries": 1},
                    "stopTimeout": 1,
                },
                {
                    "name": "web",
                    "image": image,
                    "command": ["sh", "-c", HTTPD],
                    "portMappings": [{"containerPort": 8080, "hostPort": 0}],
                    "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
                    "stopTimeout": 1,
                },
            ]),
        )
        .await;
    let task = cluster.until_last("web", TaskLastStatus::Running).await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.health_status, Some(HealthStatus::Healthy));
    assert!(status.started_at.is_some() && status.pull_stopped_at.is_some());
    let db = container(&task, "db");
    assert_eq!(db.health_status, Some(HealthStatus::Healthy));
    let web = container(&task, "web");
    assert_eq!(web.last_status, ContainerLastStatus::Running);
    assert_eq!(web.health_status, None, "web has no health check");
    let binding = web.network_bindings.first().expect("a host port bound");
    assert_eq!(
        (binding.bind_ip.as_str(), binding.container_port),
        ("127.0.0.1", 8080)
    );
    assert_ne!(binding.host_port, 0, "Docker's dynamic port is reported");
    let response = http_get(&format!("127.0.0.1:{}", binding.host_port));
    assert!(response.contains("served-by-gantry"), "{response}");

    // web started only once db was healthy: db's first health check
    // passes no earlier than one interval after it started.
    let started = |id: &str| docker_stdout(&["inspect", "-f", "{{.State.StartedAt}}", id]);
    let db_started = started(db.runtime_id.as_deref().expect("db id"));
    let web_started = started(web.runtime_id.as_deref().expect("web id"));
    assert!(
        web_started > db_started,
        "web {web_started} after db {db_started}"
    );

    // Stopping it stops both, in reverse order, and records why.
    cluster.stop("web").await;
    let task = cluster.until_last("web", TaskLastStatus::Stopped).await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        status.stopped_reason.as_deref(),
        Some("Task stopped by user")
    );
    assert!(
        task.status
            .iter()
            .flat_map(|s| &s.containers)
            .all(|c| c.last_status == ContainerLastStatus::Stopped)
    );
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_pull_failures_are_reported_with_ecs_reasons() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("exits");
    cluster.agent(&instance, "127.0.0.1", 3600).await;
    let image = cluster.image.clone();

    // A non-essential container exiting leaves the task running.
    cluster
        .run(
            &instance,
            "sidecar-exits",
            json!([
                {"name": "main", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1},
                {"name": "side", "image": image, "command": ["sh", "-c", "exit 5"], "essential": false},
            ]),
        )
        .await;
    let task = cluster
        .until("sidecar-exits", "running with side exited", |t| {
            last(t) == Some(TaskLastStatus::Running)
                && t.status
                    .iter()
                    .flat_map(|s| &s.containers)
                    .any(|c| c.name == "side" && c.last_status == ContainerLastStatus::Stopped)
        })
        .await;
    assert_eq!(container(&task, "side").exit_code, Some(5));
    assert_eq!(task.status.as_ref().and_then(|s| s.stop_code), None);

    // An essential container exiting stops the task with its exit code.
    cluster
        .run(
            &instance,
            "crashes",
            json!([{"name": "app", "image": image, "command": ["sh", "-c", "sleep 1; exit 3"]}]),
        )
        .await;
    let task = cluster.until_last("crashes", TaskLastStatus::Stopped).await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        status.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(container(&task, "app").exit_code, Some(3));
    assert!(status.stopped_at.is_some());

    // An image no registry has stops the task before anything runs.
    cluster
        .run(
            &instance,
            "no-image",
            json!([{"name": "app", "image": "gantry-test/does-not-exist:1"}]),
        )
        .await;
    let task = cluster
        .until_last("no-image", TaskLastStatus::Stopped)
        .await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = status.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    let app = container(&task, "app");
    assert_eq!(app.last_status, ContainerLastStatus::Stopped);
    assert_eq!(app.reason.as_deref(), Some(reason));
    assert!(containers_of(&task).is_empty(), "nothing was created");
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_running_tasks_and_stops_what_is_no_longer_wanted() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("restart");
    cluster.agent(&instance, "127.0.0.1", 0).await;
    let image = cluster.image.clone();
    for name in ["keeps-running", "stopped-meanwhile", "deleted-meanwhile"] {
        cluster
            .run(
                &instance,
                name,
                json!([{"name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1}]),
            )
            .await;
    }
    let mut before = Vec::new();
    for name in ["keeps-running", "stopped-meanwhile", "deleted-meanwhile"] {
        let task = cluster.until_last(name, TaskLastStatus::Running).await;
        before.push(task);
    }
    let kept_id = container(&before[0], "app").runtime_id.clone().expect("id");
    let kept_started = docker_stdout(&["inspect", "-f", "{{.State.StartedAt}}", &kept_id]);

    cluster.kill_9(&instance);
    cluster.stop("stopped-meanwhile").await;
    cluster
        .tasks()
        .delete("deleted-meanwhile", &DeleteParams::default())
        .await
        .expect("deleted");
    // The containers run on while no agent is there.
    assert_eq!(containers_of(&before[1]).len(), 1);
    assert_eq!(containers_of(&before[2]).len(), 1);

    cluster.agent(&instance, "127.0.0.1", 0).await;
    let stopped = cluster
        .until_last("stopped-meanwhile", TaskLastStatus::Stopped)
        .await;
    assert_eq!(
        stopped.status.as_ref().and_then(|s| s.stop_code),
        Some(StopCode::UserInitiated)
    );
    // With no retention, the stopped and the deleted tasks' containers go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(containers_of(&before[1]).is_empty() && containers_of(&before[2]).is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "containers of stopped or deleted tasks remain; agent logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The running one was adopted, untouched, and not duplicated.
    let kept = cluster
        .until_last("keeps-running", TaskLastStatus::Running)
        .await;
    assert_eq!(containers_of(&kept), [kept_id[..12].to_owned()]);
    assert_eq!(
        container(&kept, "app").runtime_id.as_deref(),
        Some(kept_id.as_str())
    );
    assert_eq!(
        docker_stdout(&["inspect", "-f", "{{.State.StartedAt}}", &kept_id]),
        kept_started,
        "never restarted"
    );
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_docker_engine_each_own_their_port_space() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let image = cluster.image.clone();
    let hosts = [
        (unique("host-a"), "127.0.0.2"),
        (unique("host-b"), "127.0.0.3"),
    ];
    for (name, ip) in &hosts {
        cluster.agent(name, ip, 3600).await;
    }
    for (i, (name, _)) in hosts.iter().enumerate() {
        cluster
            .run(
                name,
                &format!("fixed-port-{i}"),
                json!([{
                    "name": "web",
                    "image": image,
                    "command": ["sh", "-c", HTTPD],
                    "portMappings": [{"containerPort": 8080, "hostPort": 18080}],
                    "stopTimeout": 1,
                }]),
            )
            .await;
    }
    for (i, (name, ip)) in hosts.iter().enumerate() {
        let task = cluster
            .until_last(&format!("fixed-port-{i}"), TaskLastStatus::Running)
            .await;
        assert_eq!(task.spec.container_instance.as_deref(), Some(name.as_str()));
        let binding = &container(&task, "web").network_bindings[0];
        assert_eq!((binding.bind_ip.as_str(), binding.host_port), (*ip, 18080));
        let response = http_get(&format!("{ip}:18080"));
        assert!(response.contains("served-by-gantry"), "{ip}: {response}");
    }
    let instances: Api<ContainerInstance> = Api::namespaced(cluster.client.clone(), "default");
    for (name, ip) in &hosts {
        let ci = instances.get(name).await.expect("instance");
        assert_eq!(ci.spec.host_ip.as_deref(), Some(*ip));
        assert_eq!(
            ci.spec.registered_resources.ports,
            [22, 2375, 2376, 51678, 51679]
        );
        assert_eq!(ci.spec.attributes["ecs.os-type"], "linux");
        assert!(ci.spec.registered_resources.cpu >= 1024);
    }
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_says_what_to_fix_when_it_cannot_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = |kubeconfig: &Path, docker_host: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args([
                "agent",
                "--name",
                "x",
                "--docker-host",
                docker_host,
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "the agent cannot run");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = agent(&dir.path().join("nope.yaml"), "unix:///var/run/docker.sock");
    assert!(
        stderr.contains("reading the kubeconfig") && stderr.contains("nope.yaml"),
        "{stderr}"
    );
    let server = common::server(dir.path()).await;
    let kubeconfig = server.kubeconfig.clone();
    let stderr =
        tokio::task::spawn_blocking(move || agent(&kubeconfig, "unix:///nonexistent/docker.sock"))
            .await
            .expect("ran");
    assert!(
        stderr.contains("is Docker running?")
            && stderr
                .contains("cannot reach the container runtime at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_instances_register_by_count_and_run_what_is_bound_to_them() {
    // No Docker: the simulated runtime takes any image.
    let mut cluster = control_plane("gantry-test/any:1".to_owned()).await;
    let name = unique("sim");
    cluster.spawn(
        &name,
        &[
            "--runtime",
            "sim",
            "--count",
            "3",
            "--cpu",
            "2048",
            "--memory",
            "4096",
        ],
    );
    let instances: Api<ContainerInstance> = Api::namespaced(cluster.client.clone(), "default");
    for i in 0..3 {
        let instance = format!("{name}-{i}");
        cluster.registered(&instance).await;
        let ci = instances.get(&instance).await.expect("instance");
        assert_eq!(
            (
                ci.spec.registered_resources.cpu,
                ci.spec.registered_resources.memory
            ),
            (2048, 4096)
        );
    }
    let target = format!("{name}-1");
    cluster
        .run(
            &target,
            "simulated",
            json!([{"name": "app", "image": cluster.image, "portMappings": [{"containerPort": 80}]}]),
        )
        .await;
    let task = cluster
        .until_last("simulated", TaskLastStatus::Running)
        .await;
    let app = container(&task, "app");
    assert!(
        app.runtime_id
            .as_deref()
            .is_some_and(|id| id.starts_with("sim-"))
    );
    assert_ne!(
        app.network_bindings[0].host_port, 0,
        "a dynamic port is assigned"
    );
    // And stops as a real one would.
    cluster.stop("simulated").await;
    let task = cluster
        .until_last("simulated", TaskLastStatus::Stopped)
        .await;
    assert_eq!(container(&task, "app").exit_code, Some(143));
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_container_and_nowhere_else() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("secrets");
    // The agent acts under its own token: it may read a Secret only while
    // a task bound to it names it.
    let kubeconfig = cluster.agent_token(&instance);
    cluster.spawn_as(&instance, &["--host-ip", "127.0.0.1"], &kubeconfig);
    cluster.registered(&instance).await;
    let value = format!("s3cr3t-{}", std::process::id());
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    for (name, data) in [
        ("a-first", "x"),
        ("db-credentials", value.as_str()),
        ("unrelated", "y"),
    ] {
        let secret = json!({"metadata": {"name": name}, "stringData": {"password": data}});
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).expect("a Secret"),
            )
            .await
            .expect("created");
    }
    // The agent's token reads app-env only because an environment file
    // names it: a rule of its own in the control plane.
    for (name, data) in [
        ("app", json!({"LOG_LEVEL": "debug"})),
        (
            "app-env",
            json!({"app.env": "# the app's settings\nREGION=eu-west-1\nMODE=from-file\n"}),
        ),
    ] {
        let map = json!({"metadata": {"name": name}, "data": data});
        config_maps
            .create(
                &PostParams::default(),
                &serde_json::from_value(map).expect("a ConfigMap"),
            )
            .await
            .expect("created");
    }

    let out = tempfile::tempdir().expect("tempdir");
    let definition = |secrets: Value| {
        json!({
            "memory": 64,
            "volumes": [{"name": "out", "host": {"sourcePath": out.path()}}],
            "containerDefinitions": [{
                "name": "app", "image": cluster.image, "stopTimeout": 1,
                "command": ["sh", "-c", "echo \"$DB_PASSWORD\" > /out/password; echo \"$REGION $MODE\" > /out/file; echo \"$LOG_LEVEL\" > /out/level; sleep 3600"],
                "mountPoints": [{"sourceVolume": "out", "containerPath": "/out"}],
                "environmentFiles": [{"value": "configmap:app-env:app.env", "type": "configmap"}],
                "environment": [{"name": "MODE", "value": "from-environment"}],
                "secrets": secrets,
            }],
        })
    };
    cluster
        .run_definition(
            &instance,
            "uses-secrets",
            definition(json!([
                {"name": "DB_PASSWORD", "valueFrom": "secret:db-credentials:password"},
                {"name": "LOG_LEVEL", "valueFrom": "configmap:app:LOG_LEVEL"},
            ])),
        )
        .await;
    cluster
        .until_last("uses-secrets", TaskLastStatus::Running)
        .await;
    let read = |file: &str| std::fs::read_to_string(out.path().join(file)).unwrap_or_default();
    for _ in 0..100 {
        if !read("level").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read("password").trim(),
        value,
        "the container got the Secret's value"
    );
    assert_eq!(read("level").trim(), "debug", "and the ConfigMap's");
    assert_eq!(
        read("file").trim(),
        "eu-west-1 from-environment",
        "the environment file's, under `environment`"
    );

    // The value is nowhere else: not the Task, not an Event, not a log.
    let task = serde_json::to_string(&cluster.tasks().get("uses-secrets").await.expect("task"))
        .expect("JSON");
    assert!(task.contains("secret:db-credentials:password") && !task.contains(&value));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), "default");
    let events = serde_json::to_string(&events.list(&Default::default()).await.expect("events"))
        .expect("JSON");
    assert!(!events.contains(&value));
    assert!(!cluster.logs().contains(&value), "the agent never logs it");
    if let Some(kubectl) = common::tool("GANTRY_KUBECTL", "kubectl") {
        let cli = common::Cli {
            binary: kubectl,
            kubeconfig: cluster.kubeconfig.clone(),
        };
        let yaml = cli.ok(&["get", "gtask", "uses-secrets", "-o", "yaml"]);
        assert!(
            yaml.contains("valueFrom: secret:db-credentials:password") && !yaml.contains(&value)
        );
    }

    // The agent's token reads what its running task names, and only that.
    let agent = common::client(&kubeconfig).await;
    let its: Api<Secret> = Api::namespaced(agent.clone(), "default");
    let code = |r: Result<Secret, kube::Error>| match r {
        Ok(_) => 0,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(its.get("db-credentials").await), 0);
    assert_eq!(code(its.get("unrelated").await), 403);
    assert_eq!(code(its.get("a-first").await), 403);

    // A key that is not there stops the task, naming the key, not a value.
    cluster
        .run_definition(
            &instance,
            "missing-key",
            definition(json!([{"name": "DB_PASSWORD", "valueFrom": "secret:db-credentials:nope"}])),
        )
        .await;
    let task = cluster
        .until_last("missing-key", TaskLastStatus::Stopped)
        .await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = status.stopped_reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError")
            && reason.contains("\"db-credentials\" has no key \"nope\""),
        "{reason}"
    );
    assert!(!reason.contains(&value));
    assert!(containers_of(&task).is_empty(), "nothing was created");

    // Once the task that named it has stopped, the Secret is closed again.
    cluster.stop("uses-secrets").await;
    cluster
        .until_last("uses-secrets", TaskLastStatus::Stopped)
        .await;
    assert_eq!(code(its.get("db-credentials").await), 403);
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_gets_the_docker_settings_of_its_definition() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("settings");
    cluster.agent(&instance, "127.0.0.1", 3600).await;
    let image = cluster.image.clone();
    cluster
        .run(
            &instance,
            "settings",
            json!([{
                "name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1,
                "user": "1000:1000", "workingDirectory": "/tmp", "hostname": "web-1",
                "readonlyRootFilesystem": true,
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "linuxParameters": {
                    "initProcessEnabled": true, "sharedMemorySize": 32,
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
                    "tmpfs": [{"containerPath": "/scratch", "size": 16, "mountOptions": ["noexec"]}],
                },
                "dockerLabels": {"team": "web"},
                "dnsServers": ["10.0.0.10"], "dnsSearchDomains": ["svc.example"],
                "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.0.0.5"}],
            }]),
        )
        .await;
    let task = cluster
        .until_last("settings", TaskLastStatus::Running)
        .await;
    let [id] = &containers_of(&task)[..] else {
        panic!("one container")
    };
    let inspected: Value =
        serde_json::from_str(&docker_stdout(&["inspect", id])).expect("docker inspect");
    let c = &inspected[0];
    for (pointer, expected) in [
        ("/Config/User", json!("1000:1000")),
        ("/Config/WorkingDir", json!("/tmp")),
        ("/Config/Hostname", json!("web-1")),
        ("/Config/Labels/team", json!("web")),
        ("/HostConfig/ReadonlyRootfs", json!(true)),
        ("/HostConfig/Privileged", json!(false)),
        ("/HostConfig/Init", json!(true)),
        ("/HostConfig/ShmSize", json!(32 * 1024 * 1024)),
        ("/HostConfig/CapAdd", json!(["NET_ADMIN"])),
        ("/HostConfig/CapDrop", json!(["MKNOD"])),
        ("/HostConfig/Tmpfs", json!({"/scratch": "size=16m,noexec"})),
        ("/HostConfig/Dns", json!(["10.0.0.10"])),
        ("/HostConfig/DnsSearch", json!(["svc.example"])),
        ("/HostConfig/ExtraHosts", json!(["db.internal:10.0.0.5"])),
        (
            "/HostConfig/Ulimits",
            json!([{"Name": "nofile", "Soft": 1024, "Hard": 4096}]),
        ),
    ] {
        assert_eq!(c.pointer(pointer), Some(&expected), "{pointer}");
    }
    assert_eq!(
        c.pointer("/Config/Labels/gantry.dev~1task-uid"),
        Some(&json!(task.uid().expect("uid"))),
        "the agent's own labels stay"
    );
    cluster.server.take().expect("server").shutdown().await;
}

/// The file holding a task cgroup's `v1` or `v2` setting, on this host.
fn task_cgroup_file(uid: &str, v1: (&str, &str), v2: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join("gantry").join(uid).join(v2)
    } else {
        root.join(v1.0).join("gantry").join(uid).join(v1.1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_held_to_its_task_level_cpu_and_memory() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    // No retention: what the agent made for a task goes when it stops.
    let instance = unique("limits");
    cluster.agent(&instance, "127.0.0.1", 0).await;
    let image = cluster.image.clone();
    let sleeper =
        json!([{"name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1}]);
    let bounded = cluster
        .run_definition(
            &instance,
            "bounded",
            json!({"cpu": 256, "memory": 48, "containerDefinitions": sleeper}),
        )
        .await;
    let uid = bounded.uid().expect("uid");
    // Past 32 MiB in one container that has no limit of its own: only the
    // task's stops it.
    cluster
        .run_definition(
            &instance,
            "hog",
            json!({"memory": 32, "containerDefinitions": [{
                "name": "hog", "image": image,
                "command": ["awk", "BEGIN { s = \"xxxxxxxx\"; while (1) s = s s }"],
            }]}),
        )
        .await;

    let running = cluster.until_last("bounded", TaskLastStatus::Running).await;
    let [id] = &containers_of(&running)[..] else {
        panic!("one container")
    };
    assert_eq!(
        docker_stdout(&["inspect", "-f", "{{.HostConfig.CgroupParent}}", id]).trim(),
        format!("/gantry/{uid}")
    );
    let memory = task_cgroup_file(&uid, ("memory", "memory.limit_in_bytes"), "memory.max");
    let cpu = task_cgroup_file(&uid, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}; agent logs:\n{}", path.display(), cluster.logs()))
    };
    assert_eq!(read(&memory).trim(), (48 * 1024 * 1024).to_string());
    // 256 of 1024 units: a quarter of each 100 ms period.
    assert!(read(&cpu).trim().starts_with("25000"), "{}", read(&cpu));

    let hog = cluster.until_last("hog", TaskLastStatus::Stopped).await;
    let killed = container(&hog, "hog");
    assert_eq!(killed.exit_code, Some(137), "{killed:?}");
    assert_eq!(
        killed.reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
    assert_eq!(
        hog.status.as_ref().and_then(|s| s.stop_code),
        Some(StopCode::EssentialContainerExited)
    );

    cluster.stop("bounded").await;
    cluster.until_last("bounded", TaskLastStatus::Stopped).await;
    let task_dir = memory.parent().expect("the task's cgroup").to_owned();
    for _ in 0..100 {
        if !task_dir.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !task_dir.exists(),
        "{} outlived the task's containers",
        task_dir.display()
    );
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_logs_and_start_timeouts_of_a_definition_reach_docker() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("volumes");
    cluster.agent(&instance, "127.0.0.1", 0).await;
    let image = cluster.image.clone();
    let shared = unique("shared");
    // Shared volumes outlive their tasks: the test removes its own,
    // however it ends.
    struct Removed(String);
    impl Drop for Removed {
        fn drop(&mut self) {
            docker_stdout(&["volume", "rm", "-f", &self.0]);
        }
    }
    let _removed = Removed(shared.clone());
    let project = json!({"dev.gantry.project": "agent-tests"});
    let sharing = cluster
        .run_definition(
            &instance,
            "sharing",
            json!({
                "memory": 64,
                "volumes": [
                    {"name": "scratch", "dockerVolumeConfiguration": {"scope": "task", "labels": project}},
                    {"name": shared, "dockerVolumeConfiguration": {
                        "scope": "shared", "autoprovision": true, "labels": project}},
                ],
                "containerDefinitions": [
                    {"name": "app", "image": image, "stopTimeout": 1,
                     "command": ["sh", "-c", "cat /data/greeting; sleep 3600"],
                     "volumesFrom": [{"sourceContainer": "data", "readOnly": true}],
                     "dependsOn": [{"containerName": "data", "condition": "SUCCESS"}],
                     "logConfiguration": {"logDriver": "json-file",
                                          "options": {"max-size": "1m", "max-file": "2"}}},
                    {"name": "data", "image": image, "essential": false,
                     "command": ["sh", "-c", "echo hello > /data/greeting && echo kept > /shared/note"],
                     "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/data"},
                                     {"sourceVolume": shared, "containerPath": "/shared"}]},
                ],
            }),
        )
        .await;
    let uid = sharing.uid().expect("uid");
    cluster
        .run_definition(
            &instance,
            "impatient",
            json!({"memory": 64, "containerDefinitions": [
                {"name": "slow", "image": image, "essential": false, "command": ["sleep", "3600"],
                 "startTimeout": 2, "stopTimeout": 1},
                {"name": "app", "image": image, "command": ["sleep", "3600"],
                 "dependsOn": [{"containerName": "slow", "condition": "COMPLETE"}]},
            ]}),
        )
        .await;

    let running = cluster.until_last("sharing", TaskLastStatus::Running).await;
    let app = container(&running, "app")
        .runtime_id
        .clone()
        .expect("app's id");
    let inspected: Value =
        serde_json::from_str(&docker_stdout(&["inspect", &app])).expect("docker inspect");
    let host = &inspected[0]["HostConfig"];
    assert_eq!(
        host["LogConfig"],
        json!({"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}})
    );
    let data_name = docker_stdout(&[
        "inspect",
        "-f",
        "{{.Name}}",
        &container(&running, "data")
            .runtime_id
            .clone()
            .expect("data's id"),
    ]);
    assert_eq!(
        host["VolumesFrom"],
        json!([format!("{}:ro", data_name.trim().trim_start_matches('/'))])
    );
    // What the source wrote in its task volume, read through volumesFrom.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = docker_stdout(&["logs", &app]);
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs.trim(), "hello");
    let task_volume = format!("gantry-{uid}-scratch");
    let label = |volume: &str, key: &str| {
        docker_stdout(&[
            "volume",
            "inspect",
            "-f",
            &format!("{{{{index .Labels \"{key}\"}}}}"),
            volume,
        ])
        .trim()
        .to_owned()
    };
    assert_eq!(label(&task_volume, "gantry.dev/task-uid"), uid);
    assert_eq!(label(&task_volume, "dev.gantry.project"), "agent-tests");
    assert_eq!(label(&shared, "dev.gantry.project"), "agent-tests");
    assert_eq!(
        label(&shared, "gantry.dev/task-uid"),
        "",
        "a shared volume is no task's"
    );

    let impatient = cluster
        .until_last("impatient", TaskLastStatus::Stopped)
        .await;
    let status = impatient.status.expect("status");
    assert_eq!(status.stop_code, Some(StopCode::TaskFailedToStart));
    assert_eq!(
        status.stopped_reason.as_deref(),
        Some(
            "dependency of app on slow (COMPLETE) can never be met: it did not get there within its startTimeout of 2 s"
        )
    );

    cluster.stop("sharing").await;
    cluster.until_last("sharing", TaskLastStatus::Stopped).await;
    let exists = |volume: &str| {
        !docker_stdout(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{volume}$"),
        ])
        .trim()
        .is_empty()
    };
    for _ in 0..100 {
        if !exists(&task_volume) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exists(&task_volume), "the task volume went with the task");
    let kept = docker_stdout(&[
        "run",
        "--rm",
        "--label",
        "dev.gantry.project=agent-tests",
        "-v",
        &format!("{shared}:/shared:ro"),
        &image,
        "cat",
        "/shared/note",
    ]);
    assert_eq!(kept.trim(), "kept", "the shared volume outlives the task");
    cluster.server.take().expect("server").shutdown().await;
}

/// A Docker registry on a free loopback port that wants a login, from
/// `scripts/fetch-registry`; stopped when dropped.
struct Registry {
    address: String,
    process: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Registry {
    fn start(binary: &Path, user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        // The registry reads bcrypt hashes; Python's crypt makes one.
        let hash = common::succeeds(Command::new("python3").args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ]));
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{user}:{}", hash.trim()),
        )
        .expect("htpasswd");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: gantry-test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let process = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
            .spawn()
            .expect("the registry starts");
        for _ in 0..100 {
            if TcpStream::connect(&address).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            address,
            process,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_is_pulled_with_the_credentials_of_its_definition() {
    use k8s_openapi::api::core::v1::Secret;
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let Some(binary) = common::tool("GANTRY_REGISTRY", "docker-registry") else {
        return;
    };
    let password = format!("pw-{}", std::process::id());
    let mut registry = Registry::start(&binary, "gantry", &password);
    // The test image, pushed there with a login of the test's own.
    let image = format!("{}/private/app:{}", registry.address, std::process::id());
    let docker_config = tempfile::tempdir().expect("tempdir");
    let docker = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", docker_config.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("written");
        }
        let out = child.wait_with_output().expect("docker ran");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let registry_address = registry.address.clone();
    docker(
        &[
            "login",
            &registry_address,
            "-u",
            "gantry",
            "--password-stdin",
        ],
        Some(&password),
    );
    docker(&["tag", &cluster.image, &image], None);
    docker(&["push", &image], None);
    docker(&["rmi", &image], None);

    let instance = unique("private");
    let kubeconfig = cluster.agent_token(&instance);
    cluster.spawn_as(&instance, &["--host-ip", "127.0.0.1"], &kubeconfig);
    cluster.registered(&instance).await;
    let config =
        json!({"auths": {registry_address.clone(): {"username": "gantry", "password": password}}});
    let secret = json!({
        "metadata": {"name": "registry-login"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    });
    Api::<Secret>::namespaced(cluster.client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).expect("a Secret"),
        )
        .await
        .expect("created");
    let container = |extra: Value| {
        let mut c =
            json!({"name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1});
        c.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        json!([c])
    };
    let login = json!({"repositoryCredentials": {"credentialsParameter": "registry-login"}});

    // Without the login the registry refuses the pull.
    cluster
        .run(&instance, "no-login", container(json!({})))
        .await;
    let task = cluster
        .until_last("no-login", TaskLastStatus::Stopped)
        .await;
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = status.stopped_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");

    // With it, the image is pulled and runs.
    cluster
        .run(&instance, "with-login", container(login.clone()))
        .await;
    cluster
        .until_last("with-login", TaskLastStatus::Running)
        .await;
    assert!(
        !cluster.logs().contains(&password),
        "the password is never logged"
    );

    // With the registry gone, `Always` cannot pull again, while the
    // default takes the image the host now has.
    let _ = registry.process.kill();
    let _ = registry.process.wait();
    let mut always = login.clone();
    always["imagePullPolicy"] = json!("Always");
    cluster.run(&instance, "always", container(always)).await;
    let task = cluster.until_last("always", TaskLastStatus::Stopped).await;
    let reason = task
        .status
        .as_ref()
        .and_then(|s| s.stopped_reason.clone())
        .unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    cluster.run(&instance, "cached", container(login)).await;
    cluster.until_last("cached", TaskLastStatus::Running).await;
    for name in ["with-login", "cached"] {
        cluster.stop(name).await;
        cluster.until_last(name, TaskLastStatus::Stopped).await;
    }
    cluster.server.take().expect("server").shutdown().await;
    common::docker_stdout(&["rmi", "-f", &image]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_logs_reads_a_tasks_output_from_its_agent_for_whoever_may() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("logs");
    cluster.agent(&instance, "127.0.0.1", 3600).await;
    let image = cluster.image.clone();
    cluster
        .run(
            &instance,
            "chatty",
            json!([{"name": "app", "image": image, "stopTimeout": 1, "command": ["sh", "-c",
                "echo hello; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]}]),
        )
        .await;
    cluster.until_last("chatty", TaskLastStatus::Running).await;
    let logs = |kubeconfig: &Path, args: &[&str]| {
        let (code, out, err) = common::gantry(kubeconfig, "logs", args);
        (code == Some(0), out, err)
    };
    let admin = cluster.kubeconfig.clone();
    let mut said = String::new();
    for _ in 0..50 {
        let (ok, out, err) = logs(&admin, &["chatty"]);
        assert!(ok, "{err}");
        said = out;
        if said.contains("tick 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // stdout and stderr, in whichever order Docker logged them.
    assert!(said.contains("hello\n"), "{said}");
    assert!(said.contains("oops\n"), "stderr too: {said}");
    let (_, last, _) = logs(&admin, &["chatty", "--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.starts_with("tick "), "{last}");
    // The same as a kubectl plugin: `kubectl gantry logs`, with the binary
    // on PATH as kubectl-gantry.
    if let Some(kubectl) = common::tool("GANTRY_KUBECTL", "kubectl") {
        let plugins = cluster._dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("a dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gantry"), plugins.join("kubectl-gantry"))
            .expect("linked");
        let path = format!(
            "{}:{}",
            plugins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(kubectl)
            .args(["gantry", "logs", "chatty", "--tail", "1"])
            .env("PATH", path)
            .env("KUBECONFIG", &admin)
            .output()
            .expect("kubectl runs");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.starts_with("tick "),
            "{said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // -f follows until the container stops; a stopped task's output stays.
    cluster
        .run(
            &instance,
            "short",
            json!([{"name": "app", "image": image, "command": ["sh", "-c", "echo one; sleep 2; echo two"]}]),
        )
        .await;
    cluster.until_last("short", TaskLastStatus::Running).await;
    let (ok, followed, err) = logs(&admin, &["short", "-f"]);
    assert!(ok, "{err}");
    assert_eq!(followed, "one\ntwo\n");
    cluster.until_last("short", TaskLastStatus::Stopped).await;
    assert_eq!(logs(&admin, &["short"]).1, "one\ntwo\n");

    // The read-only token may read logs; a token without rights on the
    // task may not, and no token at all is refused by the agent.
    let read_only = cluster.read_only_kubeconfig();
    let (ok, out, err) = logs(&read_only, &["chatty", "--tail", "1"]);
    assert!(ok && out.starts_with("tick "), "{out} {err}");
    let elsewhere = cluster._dir.path().join("elsewhere.kubeconfig");
    common::agent_kubeconfig(&admin, "elsewhere", "x", &elsewhere);
    let (ok, _, err) = logs(&elsewhere, &["chatty", "--cluster", "default"]);
    assert!(!ok, "an agent of another cluster read the log");
    assert!(err.contains("403"), "{err}");
    // Straight to the agent, past the CLI: no token, or one the control
    // plane does not know, is refused there.
    let instances: Api<ContainerInstance> = Api::namespaced(cluster.client.clone(), "default");
    let endpoint = instances
        .get(&instance)
        .await
        .expect("instance")
        .status
        .and_then(|s| s.agent_endpoint)
        .expect("the agent publishes its endpoint");
    let certificate = cluster._dir.path().join("agent.pem");
    std::fs::write(&certificate, &endpoint.certificate).expect("written");
    let url = format!("{}/tasks/default/chatty/logs", endpoint.url);
    for (token, status) in [(None, "401"), (Some("Bearer not-a-token"), "403")] {
        let script = "import sys, ssl, urllib.request, urllib.error\n\
            req = urllib.request.Request(sys.argv[1])\n\
            if len(sys.argv) > 3: req.add_header('Authorization', sys.argv[3])\n\
            try: urllib.request.urlopen(req, context=ssl.create_default_context(cafile=sys.argv[2])); print(200)\n\
            except urllib.error.HTTPError as e: print(e.code)";
        let mut args = vec!["-c", script, &url, certificate.to_str().expect("a path")];
        args.extend(token);
        let answer = common::succeeds(Command::new("python3").args(&args));
        assert_eq!(answer.trim(), status, "{token:?}");
    }
    cluster.stop("chatty").await;
    cluster.until_last("chatty", TaskLastStatus::Stopped).await;
    cluster.server.take().expect("server").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_exec_runs_a_command_where_enabled_for_whoever_may_and_records_it() {
    let Some(mut cluster) = cluster().await else {
        return;
    };
    let instance = unique("exec");
    cluster.agent(&instance, "127.0.0.1", 3600).await;
    let image = cluster.image.clone();
    let container =
        json!([{"name": "app", "image": image, "command": ["sleep", "3600"], "stopTimeout": 1}]);
    for (name, enabled) in [("closed", false), ("open", true)] {
        cluster.run(&instance, name, container.clone()).await;
        if enabled {
            let enable = json!({"spec": {"enableExecuteCommand": true}});
            // Set after creation here only because the test's tasks are
            // made by hand; run-task and services set it at creation.
            cluster
                .tasks()
                .patch(name, &PatchParams::default(), &Patch::Merge(&enable))
                .await
                .expect("enabled");
        }
        cluster.until_last(name, TaskLastStatus::Running).await;
    }
    let exec = |kubeconfig: &Path, task: &str, command: &[&str]| {
        let mut args = vec![task, "--"];
        args.extend_from_slice(command);
        common::gantry(kubeconfig, "exec", &args)
    };
    let admin = cluster.kubeconfig.clone();
    let (code, out, err) = exec(
        &admin,
        "open",
        &["sh", "-c", "echo hi; echo there >&2; exit 3"],
    );
    assert_eq!(code, Some(3), "the command's exit code: {err}");
    // Both streams, in whichever order they arrived.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["hi", "there"], "{out:?}");
    let (code, out, _) = exec(&admin, "open", &["cat", "/etc/hostname"]);
    assert_eq!(code, Some(0));
    assert!(!out.trim().is_empty());

    // With standard input (-i), and a terminal (-t): what is piped in
    // reaches the command, and its end is the command's end of input.
    let interactive = |flags: &[&str], input: &str, command: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["exec", "--kubeconfig"])
            .arg(&admin)
            .args(flags)
            .args(["open", "--"])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gantry exec runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("input written");
        let out = child.wait_with_output().expect("gantry exec ends");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = interactive(
        &["-i"],
        "hello\n",
        &["sh", "-c", "read line; echo got:$line; exit 4"],
    );
    assert_eq!((code, out.as_str()), (Some(4), "got:hello\n"), "{err}");
    let (code, out, err) = interactive(&["-i"], "abcde", &["wc", "-c"]);
    assert_eq!((code, out.trim()), (Some(0), "5"), "{err}");
    let (code, out, err) = interactive(
        &["-i", "-t"],
        "",
        &["sh", "-c", "test -t 0 && echo terminal"],
    );
    assert_eq!((code, out.trim()), (Some(0), "terminal"), "{err}");
    let (code, out, err) = interactive(&["-i"], "", &["sh", "-c", "test -t 0 || echo none"]);
    assert_eq!((code, out.trim()), (Some(0), "none"), "{err}");

    // Not where the task does not enable it.
    let (code, _, err) = exec(&admin, "closed", &["true"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("enableExecuteCommand"), "{err}");
    // The read-only token may read logs but not exec.
    let read_only = cluster.read_only_kubeconfig();
    let (code, _, err) = exec(&read_only, "open", &["true"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("403") && err.contains("create tasks/exec"),
        "{err}"
    );

    // Each exec is an Event on the task: who, which container, what.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), "default");
    let notes: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ExecuteCommand"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("open"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 6, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("gantry:admin ran [\"sh\", \"-c\"")
                && n.ends_with("in container app")),
        "{notes:?}"
    );
    for name in ["closed", "open"] {
        cluster.stop(name).await;
        cluster.until_last(name, TaskLastStatus::Stopped).await;
    }
    cluster.server.take().expect("server").shutdown().await;
}
