//! ContainerInstance: a host running the agent and Docker.
//!
//! The agent registers it (spec), schedulers reserve resources on it
//! (`status.allocations`, written with a resourceVersion precondition) and
//! the controller reports connectivity. Liveness is a Lease, never this
//! object, so heartbeats do not bump its resourceVersion.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ECS's default TCP ports reserved on every instance (SSH, Docker, agent).
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];
/// CPU units registered per host core, as ECS counts them.
pub const CPU_UNITS_PER_CORE: u32 = 1024;

/// The spec of a ContainerInstance, as the agent registers it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "ContainerInstance",
    plural = "containerinstances",
    namespaced,
    status = "ContainerInstanceStatus",
    shortname = "ci",
    shortname = "cinst",
    category = "gantry",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Agent connected","type":"boolean","jsonPath":".status.agentConnected"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.runningTasksCount"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pendingTasksCount"}"#,
    printcolumn = r#"{"name":"CPU left","type":"integer","jsonPath":".status.remainingResources.cpu"}"#,
    printcolumn = r#"{"name":"Memory left","type":"integer","jsonPath":".status.remainingResources.memory"}"#,
    printcolumn = r#"{"name":"Host IP","type":"string","priority":1,"jsonPath":".spec.hostIP"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceSpec {
    /// ACTIVE takes new tasks; DRAINING moves service tasks away.
    #[serde(default)]
    pub state: InstanceState,

    /// What the host offers to tasks; the agent registers it. Absent means
    /// nothing, so a partial manifest (a drain) is still a valid object.
    #[serde(default)]
    pub registered_resources: Resources,

    /// Built-in (`ecs.os-type`, `ecs.cpu-architecture`, `ecs.instance-type`,
    /// `ecs.availability-zone`) and custom attributes for constraints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[-A-Za-z0-9_/.]{1,128}$'))")
        .message("attribute names are 1 to 128 of A-Z a-z 0-9 - _ / ."))]
    #[x_kube(validation = Rule::new("self.all(k, size(self[k]) >= 1 && size(self[k]) <= 128)")
        .message("attribute values are 1 to 128 characters"))]
    pub attributes: BTreeMap<String, String>,

    /// The address host ports are published on.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub host_ip: Option<String>,
}

/// The two states a user may set, as `update-container-instances-state`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstanceState {
    #[default]
    Active,
    Draining,
}

/// CPU, memory and ports of an instance (registered or remaining).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU units (1024 per core).
    #[schemars(range(min = 0))]
    pub cpu: u32,
    /// Memory in MiB.
    #[schemars(range(min = 0))]
    pub memory: u32,
    /// TCP host ports reserved (not free for tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 65535))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub ports: Vec<u16>,
    /// UDP host ports reserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 65535))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub ports_udp: Vec<u16>,
}

/// What schedulers, the controller and the agent observed of an instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the agent's Lease is current.
    #[serde(default)]
    pub agent_connected: bool,
    /// Resources reserved for tasks, one entry per task; written only with
    /// a resourceVersion precondition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["task".into()]))]
    pub allocations: Vec<Allocation>,
    /// DAEMON services whose task this instance waits for before it takes
    /// any other (daemons first): set by the controller when the instance
    /// joins, comes back or stops draining, and when a daemon preempts
    /// replica tasks here; a service leaves the list when a scheduler
    /// reserves its task here, or when it no longer runs here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 100))]
    pub awaiting_daemons: Vec<String>,
    /// Registered minus allocated; host ports list what is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_resources: Option<Resources>,
    #[serde(default)]
    pub running_tasks_count: i32,
    #[serde(default)]
    pub pending_tasks_count: i32,
    /// Versions the agent reported at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
    /// Where the agent serves its tasks' container output (`gantry logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<AgentEndpoint>,
    /// `AgentConnected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Resources a scheduler reserved for one task on this instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Task name (in this namespace).
    pub task: String,
    /// Task uid, so a recreated task of the same name is told apart.
    pub task_uid: String,
    /// The task group, for spread and distinctInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// TaskDefinition family of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    pub cpu: u32,
    pub memory: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub ports_udp: Vec<u16>,
}

/// The agent's own HTTPS endpoint, and the certificate it serves, which
/// clients trust for it (only the agent may write its instance's status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentEndpoint {
    /// `https://ADDRESS:PORT`.
    #[schemars(length(max = 256))]
    pub url: String,
    /// PEM.
    #[schemars(length(max = 8192))]
    pub certificate: String,
}

/// Agent and Docker versions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
}
