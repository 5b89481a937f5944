//! Gantry's agent: the daemon that turns a host running Docker into a
//! container instance (see docs/architecture.md, "The agent"), as
//! amazon-ecs-agent does for an EC2 instance.
//!
//! - [`registration`]: the ContainerInstance it registers (or adopts) and
//!   the Lease it renews.
//! - [`daemon`]: the watches of the Tasks bound here and of the instance's
//!   allocations, and the runtime's event stream, feeding
//! - [`supervisor`]: one per task, which carries out
//! - [`plan`]: what the containers should do next, a pure function of the
//!   Task and of what the runtime reports.
//! - [`runtime`]: Docker through bollard, or a simulated runtime for scale
//!   tests; every container is labelled with its task, so a restarted agent
//!   re-adopts what runs.
//! - [`usage`]: each running task's CPU and memory use, measured from the
//!   runtime's stats into `status.usage` and Prometheus metrics.

pub mod container;
pub mod daemon;
pub mod endpoint;
pub mod frames;
pub mod plan;
pub mod registration;
pub mod runtime;
pub mod secrets;
pub mod supervisor;
pub mod usage;

use std::{collections::BTreeMap, time::Duration};

pub use daemon::run;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The namespace: ECS's cluster.
    pub cluster: String,
    /// The ContainerInstance's name.
    pub name: String,
    /// The address published ports bind to, and the instance's `hostIP`.
    pub host_ip: String,
    /// Registered CPU units (default 1024 per core).
    pub cpu: Option<u32>,
    /// Registered memory in MiB (default the host's less `reserved_memory`).
    pub memory: Option<u32>,
    pub reserved_memory: u32,
    pub reserved_ports: Vec<u16>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub lease_duration: Duration,
    pub lease_renew: Duration,
    /// How often every task is looked at again, events or not.
    pub resync: Duration,
    /// How long a stopped task's containers are kept (ECS's
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`, 3 hours).
    pub container_retention: Duration,
    /// Delete the ContainerInstance when the agent is told to stop.
    pub deregister_on_exit: bool,
    /// The uid of the cluster's namespace, labelled on every container;
    /// read from the API at start when not given.
    pub cluster_uid: Option<String>,
    /// Stop every task once the control plane has not answered for this
    /// long, for workloads that must never run twice (off by default, as
    /// in ECS, whose agent keeps tasks running while disconnected).
    pub stop_tasks_when_disconnected: Option<Duration>,
    /// Where to serve the tasks' container output (`gantry logs`; port 0
    /// picks a free one); `None` for no endpoint.
    pub endpoint: Option<std::net::SocketAddr>,
    /// How to reach the control plane, for the endpoint's access reviews
    /// made with each caller's token; the endpoint needs it.
    pub api: Option<kube::Config>,
    /// How often the tasks' use is measured ([`usage`]); ECS's agent
    /// reports its metrics every 20 seconds.
    pub stats_interval: Duration,
    /// Where the tasks' use is published for Prometheus, if anywhere.
    pub metrics: Option<std::sync::Arc<usage::Metrics>>,
}

impl Config {
    /// ECS's defaults for an instance `name` in `cluster`.
    #[must_use]
    pub fn new(cluster: &str, name: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            name: name.to_owned(),
            host_ip: "0.0.0.0".to_owned(),
            cpu: None,
            memory: None,
            reserved_memory: 0,
            reserved_ports: crds::v1alpha1::DEFAULT_RESERVED_PORTS.to_vec(),
            instance_type: None,
            availability_zone: None,
            attributes: BTreeMap::new(),
            lease_duration: Duration::from_secs(40),
            lease_renew: Duration::from_secs(10),
            resync: Duration::from_secs(10),
            container_retention: Duration::from_secs(3 * 60 * 60),
            deregister_on_exit: false,
            cluster_uid: None,
            stop_tasks_when_disconnected: None,
            endpoint: None,
            api: None,
            stats_interval: Duration::from_secs(20),
            metrics: None,
        }
    }
}

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(
        "registration of ContainerInstance {namespace}/{name} was refused: {message} (check that the Gantry CRDs are installed, the namespace exists and the token may write containerinstances)"
    )]
    Registration {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the agent's endpoint cannot start: {0}")]
    Endpoint(String),
}
