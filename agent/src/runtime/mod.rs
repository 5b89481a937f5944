//! The container runtime the agent drives: Docker through bollard, or a
//! simulated one for scale tests. Both speak in the same terms: a
//! container config derived from a container definition, and what the
//! runtime reports of the containers that carry this instance's label.

mod cgroup;
mod docker;
mod sim;
mod sim_load;

use std::{collections::BTreeMap, future::Future, time::Duration};

use crds::v1alpha1::{HealthCheck, HealthStatus, NetworkBinding, NetworkMode, Protocol};
use futures::stream::BoxStream;

pub use cgroup::{Limits, TaskCgroups};
pub use docker::{DEFAULT_CGROUP_ROOT, Docker};
pub use sim::{Sim, SimOptions};
pub use sim_load::{Demand, SimLoad};

/// Labels every container carries, so that a restarted agent can tell
/// whose it is.
pub mod labels {
    /// The ContainerInstance (agent) that runs it.
    pub const INSTANCE: &str = "gantry.dev/instance";
    pub const TASK_NAMESPACE: &str = "gantry.dev/task-namespace";
    pub const TASK_NAME: &str = "gantry.dev/task-name";
    pub const TASK_UID: &str = "gantry.dev/task-uid";
    pub const CONTAINER: &str = "gantry.dev/container-name";
    /// The task's group (`service:<name>` for a service's tasks), so that
    /// `docker ps --filter label=gantry.dev/task-group=service:web` finds a
    /// service's containers.
    pub const TASK_GROUP: &str = "gantry.dev/task-group";
    /// The uid of the cluster's namespace: two control planes' agents of
    /// the same name (two `gantry up` runs on one Docker engine) tell
    /// their containers apart, and `gantry down` finds its own.
    pub const CLUSTER_UID: &str = "gantry.dev/cluster-uid";
}

/// One port to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    /// 0: the runtime picks one (ECS's dynamic host port).
    pub host_port: u16,
    pub protocol: Protocol,
}

/// Everything the runtime needs to create one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerConfig {
    /// The runtime's name for it (unique per task and container, so that a
    /// second create of the same container fails instead of duplicating).
    pub runtime_name: String,
    pub image: String,
    pub command: Vec<String>,
    pub entry_point: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub ports: Vec<PortSpec>,
    /// The address published ports bind to: this instance's host IP.
    pub host_ip: String,
    pub cpu_shares: Option<u32>,
    pub memory_mib: Option<u32>,
    pub memory_reservation_mib: Option<u32>,
    pub health_check: Option<HealthCheck>,
    pub network_mode: NetworkMode,
    /// `source:target[:ro]`: a host path or a named volume.
    pub binds: Vec<String>,
    pub stop_timeout: Duration,
    pub labels: BTreeMap<String, String>,
    pub settings: Settings,
    /// The task's cgroup ([`Runtime::prepare_task`]), if it has one.
    pub cgroup_parent: Option<String>,
}

/// What a task needs before its first container starts and gives back
/// after its last is removed: a cgroup with its task-level limits, and
/// its Docker volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskResources {
    pub uid: String,
    pub limits: Limits,
    pub volumes: Vec<VolumeConfig>,
    /// The agent's labels, for what it creates (task volumes).
    pub labels: BTreeMap<String, String>,
}

/// A Docker volume of a task (ECS's `dockerVolumeConfiguration`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Docker's name for it.
    pub name: String,
    /// Outlives the task (`scope: shared`); else removed with it.
    pub shared: bool,
    /// Create a missing shared volume rather than fail the task.
    pub autoprovision: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// How an image is pulled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pull {
    /// Even when the host has it (`imagePullPolicy: Always`).
    pub always: bool,
    /// A private registry's login.
    pub credentials: Option<RegistryLogin>,
}

/// A registry user and password (`repositoryCredentials`). Its `Debug`
/// leaves the password out, so that no log can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The container definition's Docker settings beyond the above (ECS's
/// `user`, `ulimits`, `linuxParameters`, …), in Docker's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// `(name, soft, hard)`.
    pub ulimits: Vec<(String, i64, i64)>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub init: Option<bool>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub shm_size_mib: Option<u32>,
    /// Container path → mount options (`size=64m,noexec`).
    pub tmpfs: BTreeMap<String, String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `host:address` lines for `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    pub hostname: Option<String>,
    /// Other containers' runtime names, `:ro` when read-only.
    pub volumes_from: Vec<String>,
    /// A log driver and its options; `None`: the engine's default.
    pub log_driver: Option<(String, BTreeMap<String, String>)>,
}

/// A container's state as the runtime reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    Running,
    Exited,
}

/// One container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub state: State,
    pub exit_code: Option<i64>,
    /// `None` when the container has no health check.
    pub health: Option<HealthStatus>,
    pub oom_killed: bool,
    /// When it last started, if it ever did.
    pub started_at: Option<k8s_openapi::jiff::Timestamp>,
    /// Why the runtime could not run it, if it says.
    pub error: Option<String>,
    pub network_bindings: Vec<NetworkBinding>,
}

impl Observed {
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A container's use of the host, as [`Runtime::stats`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used since it started, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory in use, in bytes, less the page cache.
    pub memory_bytes: u64,
}

/// What the runtime says about itself, for the ContainerInstance.
#[derive(Clone, Debug, Default)]
pub struct Info {
    pub version: String,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the container runtime at {at}: {message}")]
    Unreachable { at: String, message: String },
    /// ECS's `CannotPullContainerError`, with the engine's message.
    #[error("CannotPullContainerError: {0}")]
    CannotPull(String),
    /// ECS's `CannotCreateContainerError` / `CannotStartContainerError`.
    #[error("{kind}: {message}")]
    Container { kind: &'static str, message: String },
    #[error("no such container {0}")]
    NotFound(String),
    #[error("container runtime: {0}")]
    Other(String),
}

/// A container runtime: Docker, or the simulated one.
pub trait Runtime: Send + Sync + 'static {
    fn info(&self) -> impl Future<Output = Result<Info, RuntimeError>> + Send;
    /// The image is present afterwards: pulled if it was not, or always
    /// if `pull` says so, with its credentials.
    fn ensure_image(
        &self,
        image: &str,
        pull: &Pull,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Create a container; its runtime id.
    fn create(
        &self,
        config: &ContainerConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stop: SIGTERM, then SIGKILL after `timeout`.
    fn stop(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Make what the task's containers share (again: it is idempotent):
    /// the `cgroup_parent` they are to be created with, if any.
    fn prepare_task(
        &self,
        task: &TaskResources,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// Give back what [`Runtime::prepare_task`] made for the task alone,
    /// once its containers are removed.
    fn release_task(&self, uid: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Every container, running or not, labelled with this instance (and,
    /// if given, with that task uid).
    fn list(
        &self,
        instance: &str,
        task_uid: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Observed>, RuntimeError>> + Send;
    /// The task uids of this instance's containers as their state changes
    /// (start, exit, health), as the runtime reports it.
    fn changes(&self, instance: &str) -> BoxStream<'static, String>;
    /// A container's output (stdout and stderr as the runtime keeps it),
    /// and, with `follow`, what it prints next until it stops.
    fn logs(
        &self,
        id: &str,
        options: &LogOptions,
    ) -> BoxStream<'static, Result<Vec<u8>, RuntimeError>>;
    /// What a container has used: its CPU time since it started, and the
    /// memory it holds now. A container that is not running reports
    /// `NotFound` or no memory.
    fn stats(&self, id: &str) -> impl Future<Output = Result<Stats, RuntimeError>> + Send;
    /// Run a command in a running container: its output (stdout and
    /// stderr) as it comes, then its exit code.
    fn exec(
        &self,
        id: &str,
        options: ExecOptions,
    ) -> BoxStream<'static, Result<Exec, RuntimeError>>;
}

/// What [`Runtime::exec`] runs, and how.
pub struct ExecOptions {
    pub command: Vec<String>,
    /// Give the command a terminal (its output is then one stream).
    pub tty: bool,
    /// The terminal's size, columns by rows.
    pub size: Option<(u16, u16)>,
    /// What the command reads on its standard input, closed when this
    /// ends; `None`: no standard input.
    pub stdin: Option<BoxStream<'static, Vec<u8>>>,
}

impl ExecOptions {
    /// A command with no input and no terminal.
    #[must_use]
    pub fn command(command: Vec<String>) -> Self {
        Self {
            command,
            tty: false,
            size: None,
            stdin: None,
        }
    }
}

impl std::fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOptions")
            .field("command", &self.command)
            .field("tty", &self.tty)
            .field("size", &self.size)
            .field("stdin", &self.stdin.is_some())
            .finish()
    }
}

/// What a command run in a container gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exec {
    Output(Vec<u8>),
    Exited(i64),
}

/// Which part of a container's output to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only what was printed from this Unix time on.
    pub since: Option<i64>,
    /// Only the last this many lines.
    pub tail: Option<u64>,
}
