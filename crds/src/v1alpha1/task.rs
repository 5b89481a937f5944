//! Task: one placed instantiation of a task definition revision.
//!
//! Services create tasks; a user may create one directly, as
//! `aws ecs run-task` does. The scheduler binds it to a ContainerInstance
//! (`spec.containerInstance`) and the agent on that instance drives its
//! lifecycle in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{KeyValuePair, PlacementConstraint, PlacementStrategy},
    task_definition::{Protocol, TaskDefinitionSpec},
};

/// The scheduler that places tasks unless they name another.
pub const DEFAULT_SCHEDULER_NAME: &str = "gantry";

pub(crate) fn default_scheduler_name() -> String {
    DEFAULT_SCHEDULER_NAME.to_owned()
}

/// The spec of a Task, as in `aws ecs run-task`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "Task",
    plural = "tasks",
    namespaced,
    status = "TaskStatus",
    shortname = "gtask",
    category = "gantry",
    printcolumn = r#"{"name":"Task definition","type":"string","jsonPath":".spec.taskDefinition"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.taskDefinitionRevision"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.desiredStatus"}"#,
    printcolumn = r#"{"name":"Last","type":"string","jsonPath":".status.lastStatus"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.healthStatus"}"#,
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.containerInstance"}"#,
    printcolumn = r#"{"name":"Group","type":"string","priority":1,"jsonPath":".spec.group"}"#,
    printcolumn = r#"{"name":"Stop code","type":"string","priority":1,"jsonPath":".status.stopCode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.taskDefinition == oldSelf.taskDefinition")
    .message("taskDefinition is immutable").field_path(".taskDefinition"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.containerInstance) || (has(self.containerInstance) && self.containerInstance == oldSelf.containerInstance)"
).message("containerInstance is immutable once bound").field_path(".containerInstance"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.definition) || (has(self.definition) && self.definition == oldSelf.definition && self.taskDefinitionRevision == oldSelf.taskDefinitionRevision)"
).message("the task definition snapshot is immutable once set").field_path(".definition"))]
#[x_kube(validation = Rule::new("oldSelf.desiredStatus != 'STOPPED' || self.desiredStatus == 'STOPPED'")
    .message("a task whose desiredStatus is STOPPED cannot be started again").field_path(".desiredStatus"))]
#[x_kube(validation = Rule::new("has(self.definition) == has(self.taskDefinitionRevision)")
    .message("definition and taskDefinitionRevision are set together").field_path(".taskDefinitionRevision"))]
pub struct TaskSpec {
    /// Name of the TaskDefinition (family) to run.
    #[schemars(length(min = 1, max = 63))]
    pub task_definition: String,

    /// The revision this task runs; set with `definition`, by the
    /// controller for run-task tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub task_definition_revision: Option<i64>,

    /// Immutable snapshot of the revision's spec: what the agent runs even
    /// if the TaskDefinition changes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<TaskDefinitionSpec>,

    /// Task group for spread and distinctInstance: `service:<name>` for a
    /// service's tasks, `family:<taskDefinition>` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub group: Option<String>,

    /// Who started the task: `ecs-svc/<deployment>` for a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub started_by: Option<String>,

    /// Per-container overrides of the definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,

    /// Ranking for this task; empty means run-task's default, random.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Vec<PlacementStrategy>,

    /// Binding rules for this task, on top of the task definition's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,

    /// RUNNING until someone stops the task; STOPPED is final.
    #[serde(default)]
    pub desired_status: DesiredStatus,

    /// The scheduler that places this task.
    #[serde(default = "default_scheduler_name")]
    #[schemars(length(min = 1, max = 63))]
    pub scheduler_name: String,

    /// The ContainerInstance this task is bound to; set once by a
    /// scheduler, or by the user at creation to start the task on that
    /// instance (ECS's start-task), where the scheduler then places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub container_instance: Option<String>,
}

impl Task {
    /// The instance a scheduler placed this task on: its
    /// `spec.containerInstance` once the binding label names the same
    /// instance. A task created with `spec.containerInstance` (start-task)
    /// names an instance before it is placed there.
    #[must_use]
    pub fn placed_on(&self) -> Option<&str> {
        let on = self.spec.container_instance.as_deref()?;
        let labelled = self
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::labels::CONTAINER_INSTANCE));
        (labelled.map(String::as_str) == Some(on)).then_some(on)
    }
}

/// Overrides applied when the task runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub container_overrides: Vec<ContainerOverride>,
}

/// Override of one container's command or environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    /// The container definition this overrides.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Replaces the container's command when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the container's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub environment: Vec<KeyValuePair>,
}

/// The status a task should reach.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DesiredStatus {
    #[default]
    Running,
    Stopped,
}

/// ECS task lifecycle, in order.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskLastStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

/// Why a task stopped, as ECS's `stopCode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    SpotInterruption,
    TerminationNotice,
}

/// Health of a container or a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

/// Lifecycle of one container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerLastStatus {
    Pending,
    Running,
    Stopped,
}

/// What the scheduler and the agent observed of a Task, as
/// `aws ecs describe-tasks`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<TaskLastStatus>,
    /// HEALTHY when every essential container with a check is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    /// e.g. "Essential container in task exited".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub containers: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One container of a running or stopped task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    /// The container runtime's id (Docker container id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub last_status: ContainerLastStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `<ErrorName>: <message>`, e.g. `CannotPullContainerError: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// Host addresses the container's ports are published on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_bindings: Vec<NetworkBinding>,
}

/// A published port, as ECS's `networkBindings`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}
