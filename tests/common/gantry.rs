//! A control plane with `gantry controller` and simulated agents as real
//! processes, for the controller's tests.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use apiserver::server::Server;
use crds::v1alpha1::{ContainerInstance, Service, Task, TaskLastStatus};
use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use serde_json::{Value, json};

/// The control plane and the processes started against it.
pub struct Gantry {
    pub server: Option<Server>,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub processes: Vec<(String, Child)>,
    pub dir: tempfile::TempDir,
}

impl Drop for Gantry {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Gantry {
    pub async fn start(namespace: &str) -> Self {
        Self::start_on(namespace, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// [`Self::start`] with the control plane listening on `listen`.
    pub async fn start_on(namespace: &str, listen: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = super::server_on(dir.path(), listen).await;
        let kubeconfig = server.kubeconfig.clone();
        let client = super::client(&kubeconfig).await;
        super::install_crds(&client).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace.to_owned()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .expect("namespace created");
        Self {
            server: Some(server),
            client,
            kubeconfig,
            processes: Vec::new(),
            dir,
        }
    }

    pub fn spawn(&mut self, name: &str, args: &[&str]) {
        let kubeconfig = self.kubeconfig.clone();
        self.spawn_as(name, args, &kubeconfig);
    }

    /// [`Self::spawn`] with another identity's kubeconfig.
    pub fn spawn_as(&mut self, name: &str, args: &[&str], kubeconfig: &Path) {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("RUST_LOG", "info,controller=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("gantry runs");
        self.processes.push((name.to_owned(), child));
    }

    /// Start `gantry controller` with the controller's own token; its
    /// metrics port.
    pub fn controller(&mut self, name: &str, flags: &[&str]) -> u16 {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let mut args = vec!["controller", "--identity", name, "--metrics-addr", &metrics];
        args.extend_from_slice(flags);
        let kubeconfig = self
            .server
            .as_ref()
            .expect("the server runs")
            .controller_kubeconfig
            .clone();
        self.spawn_as(name, &args, &kubeconfig);
        port
    }

    /// Run `gantry SUBCOMMAND --kubeconfig ADMIN ARGS…` to its end: whether
    /// it succeeded, its stdout and its stderr.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> (bool, String, String) {
        let (code, stdout, stderr) = super::gantry(&self.kubeconfig, subcommand, args);
        (code == Some(0), stdout, stderr)
    }

    /// [`Self::run`], which must succeed; its stdout.
    pub fn ok(&self, subcommand: &str, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(subcommand, args);
        assert!(ok, "gantry {subcommand} {args:?}: {stderr}");
        stdout
    }

    /// A kubeconfig with a new agent token for instance `name` of
    /// `namespace`, issued by `gantry agent-token create`.
    pub fn agent_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        super::agent_kubeconfig(&self.kubeconfig, namespace, name, &path);
        path
    }

    /// Start `count` simulated instances `<name>-<i>` (or one named
    /// `name`) in `namespace` in one agent process.
    pub fn agents(&mut self, namespace: &str, name: &str, count: usize, cpu: u32, memory: u32) {
        self.agents_with(namespace, name, count, (cpu, memory), &[]);
    }

    /// [`Self::agents`] with more `gantry agent` flags.
    pub fn agents_with(
        &mut self,
        namespace: &str,
        name: &str,
        count: usize,
        (cpu, memory): (u32, u32),
        flags: &[&str],
    ) {
        let (count, cpu, memory) = (count.to_string(), cpu.to_string(), memory.to_string());
        let mut args = vec![
            "agent",
            "--runtime",
            "sim",
            "--cluster",
            namespace,
            "--name",
            name,
            "--count",
            &count,
            "--cpu",
            &cpu,
            "--memory",
            &memory,
            "--lease-renew-seconds",
            "1",
            "--sim-start-latency-ms",
            "5",
        ];
        args.extend_from_slice(flags);
        // One instance acts under its own agent token; several in one
        // process share the admin's, as no agent token covers more than
        // one instance.
        if count == "1" {
            let kubeconfig = self.agent_kubeconfig(namespace, name);
            self.spawn_as(name, &args, &kubeconfig);
        } else {
            self.spawn(name, &args);
        }
    }

    /// Wait for a started process to exit on its own; its exit status.
    pub fn wait(&mut self, name: &str) -> std::process::ExitStatus {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("that process");
        child.wait().expect("waited")
    }

    /// Start one Docker agent per `(name, host IP)` in `namespace`,
    /// renewing its Lease every second.
    pub fn docker_agents(&mut self, namespace: &str, hosts: &[(&str, &str)]) {
        self.docker_agents_with(namespace, hosts, &[]);
    }

    /// [`Self::docker_agents`] with more `gantry agent` flags.
    pub fn docker_agents_with(&mut self, namespace: &str, hosts: &[(&str, &str)], flags: &[&str]) {
        for (host, ip) in hosts {
            let kubeconfig = self.agent_kubeconfig(namespace, host);
            let mut args = vec![
                "agent",
                "--runtime",
                "docker",
                "--cluster",
                namespace,
                "--name",
                host,
                "--host-ip",
                ip,
                "--lease-renew-seconds",
                "1",
            ];
            args.extend_from_slice(flags);
            self.spawn_as(host, &args, &kubeconfig);
        }
    }

    /// Send `signal` (`STOP`, `CONT`, …) to a started process.
    pub fn signal(&self, name: &str, signal: &str) {
        let (_, child) = self
            .processes
            .iter()
            .find(|(n, _)| n == name)
            .expect("that process");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {name}");
    }

    pub fn kill_9(&mut self, name: &str) {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("that process");
        Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .expect("kill runs");
        child.wait().expect("reaped");
    }

    /// Each process's warnings and errors (the first 40), then its last
    /// 40 lines.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|(name, _)| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let problems: Vec<&str> = lines
                    .iter()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .take(40)
                    .copied()
                    .collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                format!(
                    "--- {name}: warnings ---\n{}\n--- {name}: last lines ---\n{}",
                    problems.join("\n"),
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Create objects, or replace the spec of those that exist (a merge
    /// patch, as `kubectl apply` sends for a changed spec).
    pub async fn apply(&self, namespace: &str, objects: &[Value]) {
        for object in objects {
            let name = object["metadata"]["name"].as_str().expect("a name");
            let kind = object["kind"].as_str().expect("a kind");
            let result = match kind {
                "TaskDefinition" => {
                    upsert(
                        self.api::<crds::v1alpha1::TaskDefinition>(namespace),
                        object,
                    )
                    .await
                }
                "Service" => upsert(self.api::<Service>(namespace), object).await,
                "ScheduledTask" => {
                    upsert(self.api::<crds::v1alpha1::ScheduledTask>(namespace), object).await
                }
                other => panic!("cannot apply {other}"),
            };
            result.unwrap_or_else(|e| panic!("{kind} {name} applied: {e}"));
        }
    }

    /// Wait until `check` holds for the task; the task then.
    pub async fn task_until(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Task) -> bool,
    ) -> Task {
        self.until(namespace, name, what, Duration::from_secs(60), check)
            .await
    }

    /// Wait until `check` holds for the service; the service then.
    pub async fn service_until(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Service) -> bool,
    ) -> Service {
        self.until(namespace, name, what, Duration::from_secs(120), check)
            .await
    }

    /// Wait up to `timeout` until `check` holds for the object; the
    /// object then. Failing, it says what the object's status was and
    /// what the processes logged.
    pub async fn until<K>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&K) -> bool,
    ) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + kube::core::object::HasStatus
            + Send
            + Sync
            + 'static,
        K::Status: std::fmt::Debug,
    {
        let api = self.api::<K>(namespace);
        let waited = tokio::time::timeout(
            timeout,
            await_condition(api.clone(), name, |o: Option<&K>| o.is_some_and(&check)),
        )
        .await;
        let object = api.get(name).await.expect("the object");
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{} {name} never {what}: {:#?}\n{}",
            K::kind(&()),
            object.status(),
            self.logs()
        );
        object
    }

    pub async fn instances_connected(&self, namespace: &str, n: usize) {
        let api = self.api::<ContainerInstance>(namespace);
        for _ in 0..600 {
            let list = api.list(&ListParams::default()).await.expect("list");
            let connected = list
                .items
                .iter()
                .filter(|ci| ci.status.as_ref().is_some_and(|s| s.agent_connected))
                .count();
            if connected >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} instances never connected\n{}", self.logs());
    }

    /// The Tasks of `namespace` that `selector` (a label selector; empty
    /// for all) picks, stopped ones included.
    pub async fn tasks(&self, namespace: &str, selector: &str) -> Vec<Task> {
        self.api::<Task>(namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .expect("tasks")
            .items
    }

    pub async fn live_tasks(&self, namespace: &str, service: &str) -> Vec<Task> {
        self.tasks(namespace, &format!("gantry.dev/service={service}"))
            .await
            .into_iter()
            .filter(|t| last(t) != Some(TaskLastStatus::Stopped))
            .collect()
    }

    pub async fn events(&self, namespace: &str) -> Vec<(String, String, String)> {
        self.api::<Event>(namespace)
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| {
                (
                    e.regarding.and_then(|r| r.name).unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn until_event(&self, namespace: &str, about: &str, reason: &str) -> String {
        for _ in 0..600 {
            if let Some((_, _, note)) = self
                .events(namespace)
                .await
                .into_iter()
                .find(|(r, why, _)| r == about && why == reason)
            {
                return note;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no {reason} event about {about}: {:#?}\n{}",
            self.events(namespace).await,
            self.logs()
        );
    }

    pub async fn scrape(&self, port: u16) -> String {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn upsert<K>(api: Api<K>, object: &Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let name = object["metadata"]["name"].as_str().expect("a name");
    if api.get_opt(name).await?.is_some() {
        let spec = json!({"spec": object["spec"]});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&spec))
            .await?;
    } else {
        let typed: K = serde_json::from_value(object.clone()).expect("a typed object");
        api.create(&PostParams::default(), &typed).await?;
    }
    Ok(())
}

pub fn last(task: &Task) -> Option<TaskLastStatus> {
    task.status.as_ref().and_then(|s| s.last_status)
}

/// A condition of a service: status, reason and message.
pub fn condition<'a>(service: &'a Service, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    service
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Ready, as of the service's current generation.
pub fn ready(service: &Service) -> bool {
    condition(service, "Ready").is_some_and(|(s, _, _)| s == "True")
        && service.status.as_ref().and_then(|s| s.observed_generation)
            == service.metadata.generation
}
