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
    common::{KeyValuePair, PlacementConstraint, PlacementStrategy, TASK_DEFINITION_REFERENCE},
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
    /// The TaskDefinition (family) to run: its latest valid, ACTIVE
    /// revision, or `family:N` for that revision.
    #[schemars(length(min = 1, max = 74), regex(pattern = TASK_DEFINITION_REFERENCE))]
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

    /// Let `gantry exec` run commands in this task's containers (ECS
    /// Exec's `enableExecuteCommand`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_execute_command: bool,

    /// Scale-in protection, as ECS's UpdateTaskProtection: while it lasts
    /// (from when the controller sees it, `status.protection`), the
    /// service scheduler neither scales this task in nor stops it for a
    /// deployment or a drain; they wait. Each change of it starts its
    /// time again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<TaskProtection>,

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

/// Overrides applied when the task runs, as run-task's `overrides`: what
/// the scheduler reserves and the agent runs. The overridden definition
/// must still hold together (container sizes within the task's); a task
/// whose overrides do not is stopped with the reason.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub container_overrides: Vec<ContainerOverride>,
    /// Replaces the task-level CPU units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 196_608))]
    pub cpu: Option<u32>,
    /// Replaces the task-level memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory: Option<u32>,
}

/// Override of one container of the definition.
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
    /// Replaces the container's entry point when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub entry_point: Option<Vec<String>>,
    /// Added to (and overriding) the container's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub environment: Vec<KeyValuePair>,
    /// Replaces the container's CPU units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 196_608))]
    pub cpu: Option<u32>,
    /// Replaces the container's hard memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory: Option<u32>,
    /// Replaces the container's soft memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory_reservation: Option<u32>,
}

impl TaskOverride {
    /// `definition` as these overrides change it.
    ///
    /// # Errors
    /// An override of a container the definition does not have, or sizes
    /// that no longer fit the task's (every problem, joined).
    pub fn apply(&self, definition: &TaskDefinitionSpec) -> Result<TaskDefinitionSpec, String> {
        let mut out = definition.clone();
        let mut problems = Vec::new();
        if self.cpu.is_some() {
            out.cpu = self.cpu;
        }
        if self.memory.is_some() {
            out.memory = self.memory;
        }
        for (i, o) in self.container_overrides.iter().enumerate() {
            let Some(c) = out
                .container_definitions
                .iter_mut()
                .find(|c| c.name == o.name)
            else {
                problems.push(format!(
                    "overrides.containerOverrides[{i}].name: the task definition has no container {:?}",
                    o.name
                ));
                continue;
            };
            if let Some(command) = &o.command {
                c.command.clone_from(command);
            }
            if let Some(entry_point) = &o.entry_point {
                c.entry_point.clone_from(entry_point);
            }
            for kv in &o.environment {
                c.environment.retain(|e| e.name != kv.name);
                c.environment.push(kv.clone());
            }
            c.cpu = o.cpu.or(c.cpu);
            c.memory = o.memory.or(c.memory);
            c.memory_reservation = o.memory_reservation.or(c.memory_reservation);
        }
        problems.extend(
            out.size_problems()
                .into_iter()
                .map(|p| format!("with its overrides, {p}")),
        );
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Task {
    /// The definition this task runs: `definition` with the task's
    /// overrides, if it has any.
    ///
    /// # Errors
    /// As [`TaskOverride::apply`].
    pub fn effective_definition(
        &self,
        definition: &TaskDefinitionSpec,
    ) -> Result<TaskDefinitionSpec, String> {
        match &self.spec.overrides {
            Some(overrides) => overrides.apply(definition),
            None => Ok(definition.clone()),
        }
    }
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
    /// Until when `spec.protection` protects the task, as the controller
    /// computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<ProtectionStatus>,
    /// What the task's containers use, as its agent last measured them
    /// (docs/autoscaling.md): written when the figures change, at most
    /// once per the agent's `--stats-interval-seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
}

/// A task's resource use, summed over its running containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    /// CPU units (1024 per core), averaged since the previous measure.
    pub cpu: u32,
    /// MiB of memory, less the page cache Docker's stats count (as
    /// `docker stats` shows it).
    pub memory: u32,
    pub sampled_at: Time,
}

/// `spec.protection`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskProtection {
    pub enabled: bool,
    /// How long it lasts: 1 to 2880 minutes (48 h), 120 by default, as
    /// ECS's `expiresInMinutes`.
    #[serde(default = "default_protection_minutes")]
    #[schemars(range(min = 1, max = 2880))]
    pub expires_in_minutes: u32,
}

/// ECS's default protection: two hours.
pub const DEFAULT_PROTECTION_MINUTES: u32 = 120;

fn default_protection_minutes() -> u32 {
    DEFAULT_PROTECTION_MINUTES
}

/// When the protection seen at `observedGeneration` ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionStatus {
    pub observed_generation: i64,
    /// ECS's `expirationDate`; absent when protection is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<Time>,
}

impl Task {
    /// Until when the task is protected from scale-in, if it is at `now`.
    /// A protection the controller has not timed yet counts from `now`.
    #[must_use]
    pub fn protected_until(
        &self,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Option<k8s_openapi::jiff::Timestamp> {
        let protection = self.spec.protection.filter(|p| p.enabled)?;
        let timed = self
            .status
            .as_ref()
            .and_then(|s| s.protection.as_ref())
            .filter(|p| Some(p.observed_generation) == self.metadata.generation);
        let until = match timed {
            Some(status) => status.expiration_date.as_ref()?.0,
            None => {
                now + std::time::Duration::from_secs(u64::from(protection.expires_in_minutes) * 60)
            }
        };
        (until > now).then_some(until)
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition() -> TaskDefinitionSpec {
        serde_json::from_value(json!({"cpu": 512, "memory": 512, "containerDefinitions": [
            {"name": "web", "image": "web:1", "cpu": 256, "memory": 256,
             "command": ["httpd"], "entryPoint": ["/bin/sh", "-c"],
             "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "log", "image": "log:1", "cpu": 128, "memory": 64},
        ]}))
        .expect("a definition")
    }

    fn overrides(value: serde_json::Value) -> TaskOverride {
        serde_json::from_value(value).expect("overrides")
    }

    #[test]
    fn overrides_change_what_they_name_and_nothing_else() {
        let out = overrides(json!({"cpu": 1024, "memory": 2048, "containerOverrides": [{
            "name": "web", "command": ["httpd", "-v"], "entryPoint": ["/bin/ash"],
            "environment": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}],
            "cpu": 512, "memory": 1024, "memoryReservation": 128,
        }]}))
        .apply(&definition())
        .expect("valid");
        assert_eq!((out.cpu, out.memory), (Some(1024), Some(2048)));
        let web = &out.container_definitions[0];
        assert_eq!(web.command, ["httpd", "-v"]);
        assert_eq!(web.entry_point, ["/bin/ash"]);
        let env: Vec<(&str, &str)> = web
            .environment
            .iter()
            .map(|kv| (kv.name.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "two"), ("C", "3")]);
        assert_eq!(
            (web.cpu, web.memory, web.memory_reservation),
            (Some(512), Some(1024), Some(128))
        );
        assert_eq!(
            out.container_definitions[1],
            definition().container_definitions[1],
            "the container not named is untouched"
        );
        // An override of nothing changes nothing.
        assert_eq!(
            TaskOverride::default().apply(&definition()),
            Ok(definition())
        );
    }

    #[test]
    fn overrides_that_do_not_fit_are_refused_with_every_reason() {
        let err = overrides(json!({"memory": 128, "containerOverrides": [
            {"name": "db", "command": ["postgres"]},
            {"name": "log", "cpu": 512},
        ]}))
        .apply(&definition())
        .expect_err("three problems");
        assert_eq!(
            err,
            "overrides.containerOverrides[0].name: the task definition has no container \"db\"; \
             with its overrides, containerDefinitions: the containers' cpu (768) exceeds the task's (512); \
             with its overrides, containerDefinitions[0].memory: 256 MiB exceeds the task's 128 MiB"
        );
    }
}
