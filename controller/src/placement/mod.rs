//! The placement engine: where a task should run, as a pure function of
//! the cluster's state. No I/O: the scheduler feeds it instances and
//! allocations from its watch cache and commits its choices to the API
//! server with a resourceVersion precondition.
//!
//! ECS's pipeline, in order: instances that are ACTIVE and connected (and
//! not holding room for their DAEMON tasks, unless the task is pinned
//! there: daemons first), with
//! the CPU, memory and host ports the task needs, that satisfy its
//! constraints (`distinctInstance`, `memberOf` with the cluster query
//! language), ranked by its chained strategies (`binpack`, `spread`,
//! `random`). When nothing fits, [`Unplaceable`] counts the instances
//! rejected per cause.
//!
//! Placement costs do not grow with the cluster: instances with identical
//! attributes form a class (Borg's equivalence classes) evaluated once per
//! expression; each class keeps its instances ordered by remaining CPU and
//! memory; spread counts are kept per task group and attribute value; and
//! `random` samples a bounded number of instances before falling back to
//! the capacity index. [`reference`](mod@reference) is the scan-everything oracle the
//! tests compare against.

mod engine;
pub mod query;
pub mod reference;
mod state;

use std::{collections::BTreeMap, fmt};

use k8s_openapi::jiff::Timestamp;

pub use engine::allocation_for;
pub use query::{ParseError, Query};
pub use state::{ClusterState, InstanceId, StateError};

/// Transport protocol of a host port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A host port and its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub port: u16,
    pub protocol: Protocol,
}

impl HostPort {
    #[must_use]
    pub fn tcp(port: u16) -> Self {
        Self {
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[must_use]
    pub fn udp(port: u16) -> Self {
        Self {
            port,
            protocol: Protocol::Udp,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Tcp => write!(f, "{}", self.port),
            Protocol::Udp => write!(f, "{}/udp", self.port),
        }
    }
}

/// A container instance as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The ContainerInstance name.
    pub name: String,
    /// Registered CPU units.
    pub cpu: u32,
    /// Registered memory, MiB.
    pub memory: u32,
    /// Host ports never given to tasks.
    pub reserved_ports: Vec<HostPort>,
    /// Built-in and custom attributes.
    pub attributes: BTreeMap<String, String>,
    /// `spec.state: DRAINING`.
    pub draining: bool,
    /// The agent's Lease is current.
    pub connected: bool,
    /// It waits for DAEMON tasks (`status.awaitingDaemons`): only tasks
    /// pinned to it (daemons, start-task) may be placed on it until then.
    pub awaiting_daemons: bool,
    /// The agent version it registered with, for `agentVersion`.
    pub agent_version: Option<String>,
    /// When it registered, for `registeredAt`.
    pub registered_at: Option<Timestamp>,
    /// CPU and memory left, as the instance reports them
    /// (`status.remainingResources`): what the service plan's scale-in
    /// ranks `binpack` by. The engine counts its own from allocations.
    pub reported_remaining: Option<(u32, u32)>,
}

/// Resources held for one task on an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Identity of the task (its uid, or namespace/name).
    pub task: String,
    pub cpu: u32,
    pub memory: u32,
    /// Static host ports the task binds.
    pub ports: Vec<HostPort>,
    /// The task group (`service:web`, `family:batch`).
    pub group: String,
    /// The task definition family.
    pub family: String,
}

/// Which resource `binpack` packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinpackField {
    Cpu,
    Memory,
}

/// What `spread` balances over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SpreadField {
    /// Each instance (`instanceId` or `host`).
    Instance,
    /// The values of an attribute (`attribute:<name>`).
    Attribute(String),
}

/// One link of a chained placement strategy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Fewest remaining units of the field that still fit.
    Binpack(BinpackField),
    /// Fewest tasks of the task's group per value of the field.
    Spread(SpreadField),
    /// Any instance that fits.
    Random,
}

/// The availability-zone attribute services spread over by default.
pub const AVAILABILITY_ZONE: &str = "ecs.availability-zone";

impl Strategy {
    /// ECS's default for services: spread over availability zones, then
    /// over instances.
    #[must_use]
    pub fn service_default() -> Vec<Self> {
        vec![
            Self::Spread(SpreadField::Attribute(AVAILABILITY_ZONE.to_owned())),
            Self::Spread(SpreadField::Instance),
        ]
    }

    /// ECS's default for run-task: random.
    #[must_use]
    pub fn run_task_default() -> Vec<Self> {
        vec![Self::Random]
    }
}

/// A binding rule on where a task may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// No two tasks of the group on one instance.
    DistinctInstance,
    /// Only instances that satisfy the expression.
    MemberOf(Query),
}

/// What a task needs and how it wants to be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRequest {
    pub cpu: u32,
    pub memory: u32,
    /// Static host ports (dynamic port 0 is left out: any instance has one).
    pub ports: Vec<HostPort>,
    pub group: String,
    pub family: String,
    pub constraints: Vec<Constraint>,
    /// Applied in order; an empty chain ranks nothing, like `random`.
    pub strategy: Vec<Strategy>,
}

/// Where a task was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub instance: InstanceId,
    pub name: String,
}

/// Why an instance cannot take a task: the first check it fails, in ECS's
/// order (state, resources, ports, constraints).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    Draining,
    AgentDisconnected,
    AwaitingDaemons,
    InsufficientCpu,
    InsufficientMemory,
    PortInUse(HostPort),
    MemberOf(String),
    DistinctInstance,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Draining => f.write_str("instance is DRAINING"),
            Self::AgentDisconnected => f.write_str("agent disconnected"),
            Self::AwaitingDaemons => f.write_str("instance awaits its daemon tasks"),
            Self::InsufficientCpu => f.write_str("insufficient CPU"),
            Self::InsufficientMemory => f.write_str("insufficient memory"),
            Self::PortInUse(port) => write!(f, "port {port} in use"),
            Self::MemberOf(expr) => write!(f, "constraint memberOf({expr}) not met"),
            Self::DistinctInstance => {
                f.write_str("constraint distinctInstance not met (runs a task of the group)")
            }
        }
    }
}

/// No instance can take the task: how many instances failed for each cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaceable {
    /// Instances considered (every registered one).
    pub instances: usize,
    /// Instances rejected per cause, each instance counted once.
    pub causes: BTreeMap<Cause, usize>,
}

impl Unplaceable {
    /// Causes, the most common first.
    #[must_use]
    pub fn ranked(&self) -> Vec<(&Cause, usize)> {
        let mut ranked: Vec<_> = self.causes.iter().map(|(c, n)| (c, *n)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
    }
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.instances == 0 {
            return f.write_str("no container instances were found in the cluster");
        }
        for (i, (cause, n)) in self.ranked().into_iter().enumerate() {
            match (i, n) {
                (0, 1) => write!(f, "1 instance: {cause}")?,
                (0, _) => write!(f, "{n} instances: {cause}")?,
                _ => write!(f, "; {n}: {cause}")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Unplaceable {}
