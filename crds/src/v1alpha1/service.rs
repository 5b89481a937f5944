//! Service: keeps tasks of a task definition running, as an ECS service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    auto_scaling::{AutoScaling, AutoScalingStatus},
    common::{
        NAME_IS_DNS_LABEL, PlacementConstraint, PlacementStrategy, TASK_DEFINITION_REFERENCE,
    },
};

/// The spec of a Service, as in `aws ecs create-service`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "Service",
    plural = "services",
    namespaced,
    status = "ServiceStatus",
    shortname = "gsvc",
    shortname = "ecssvc",
    category = "gantry",
    scale = r#"{"specReplicasPath":".spec.desiredCount","statusReplicasPath":".status.runningCount","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Task definition","type":"string","jsonPath":".spec.taskDefinition"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.schedulingStrategy"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredCount"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.runningCount"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pendingCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(NAME_IS_DNS_LABEL)
        .message("metadata.name must be a DNS-1123 label of at most 63 characters (a-z, 0-9, '-'): it becomes the task group service:<name>")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.schedulingStrategy != 'REPLICA' || has(self.desiredCount) || has(self.autoScaling)")
    .message("a REPLICA service needs desiredCount (or autoScaling, which starts it at minCapacity)").field_path(".desiredCount"))]
#[x_kube(validation = Rule::new("self.schedulingStrategy != 'DAEMON' || !has(self.desiredCount)")
    .message("a DAEMON service runs one task per instance and takes no desiredCount").field_path(".desiredCount"))]
#[x_kube(validation = Rule::new("self.schedulingStrategy != 'DAEMON' || !has(self.autoScaling)")
    .message("a DAEMON service runs one task per instance and takes no autoScaling").field_path(".autoScaling"))]
#[x_kube(validation = Rule::new("self.schedulingStrategy == 'DAEMON' || !has(self.preemptReplicaTasks) || !self.preemptReplicaTasks")
    .message("only a DAEMON service preempts replica tasks").field_path(".preemptReplicaTasks"))]
#[x_kube(validation = Rule::new("self.schedulingStrategy != 'DAEMON' || !has(self.rebalancing) || self.rebalancing == 'DISABLED'")
    .message("a DAEMON service runs one task per instance and is not rebalanced").field_path(".rebalancing"))]
#[x_kube(validation = Rule::new("self.schedulingStrategy != 'DAEMON' || !has(self.placementStrategy)")
    .message("a DAEMON service takes no placementStrategy").field_path(".placementStrategy"))]
#[x_kube(validation = Rule::new(
    "self.schedulingStrategy != 'DAEMON' || !has(self.deploymentConfiguration.maximumPercent) || self.deploymentConfiguration.maximumPercent == 100"
).message("a DAEMON service's maximumPercent must be 100").field_path(".deploymentConfiguration.maximumPercent"))]
pub struct ServiceSpec {
    /// The TaskDefinition (family) in this namespace: the service runs its
    /// latest valid, ACTIVE revision; or `family:N`, that revision
    /// (a TaskDefinitionRevision).
    #[schemars(length(min = 1, max = 74), regex(pattern = TASK_DEFINITION_REFERENCE))]
    pub task_definition: String,

    /// Tasks to keep running (REPLICA only); `kubectl scale` and auto
    /// scaling set it. An auto scaled service may leave it out of its
    /// manifest (so that re-applying the manifest does not undo auto
    /// scaling): it then starts at minCapacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub desired_count: Option<i32>,

    /// REPLICA keeps `desiredCount` tasks; DAEMON one per eligible instance.
    #[serde(default)]
    pub scheduling_strategy: SchedulingStrategy,

    /// Ranking of eligible instances, in priority order. Empty means ECS's
    /// service default: spread over availability zones, then instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Vec<PlacementStrategy>,

    /// Binding rules; together with the task definition's at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,

    /// How rolling deployments proceed.
    #[serde(default)]
    pub deployment_configuration: DeploymentConfiguration,

    /// Seconds after a task starts during which failed health checks are
    /// ignored.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub health_check_grace_period_seconds: i32,

    /// Load balancers its tasks register in, as ECS's `loadBalancers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.loadBalancerName == a.loadBalancerName))")
        .message("a load balancer may be named only once"))]
    pub load_balancers: Vec<ServiceLoadBalancer>,

    /// The scheduler that places this service's tasks.
    #[serde(default = "super::task::default_scheduler_name")]
    #[schemars(length(min = 1, max = 63))]
    pub scheduler_name: String,

    /// Let `gantry exec` run commands in the tasks this service starts
    /// from now on (ECS Exec's `enableExecuteCommand`; tasks already
    /// running keep what they were started with).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_execute_command: bool,

    /// REPLICA only: `ENABLED` moves tasks, one at a time within
    /// minimumHealthyPercent and maximumPercent, when the first `spread`
    /// of its placement strategy (by default availability zones) is
    /// unbalanced by two tasks or more and an instance could even it out
    /// (a zone or instance joined, a drained host returned), as ECS's
    /// availability-zone rebalancing does. `DISABLED` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalancing: Option<Rebalancing>,

    /// DAEMON only: when its task does not fit on an instance, stop the
    /// smallest REPLICA tasks there that make room, as far as their
    /// services' minimumHealthyPercent allows, each with a reason naming
    /// this service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempt_replica_tasks: bool,

    /// Target tracking auto scaling of `desiredCount` (REPLICA only), as
    /// ECS service auto scaling; it writes through the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<AutoScaling>,
}

impl ServiceSpec {
    /// The tasks a REPLICA service keeps: `desiredCount`, or, left out
    /// of an auto scaled service, its `minCapacity`.
    #[must_use]
    pub fn desired(&self) -> i32 {
        self.desired_count
            .or_else(|| self.auto_scaling.as_ref().map(|a| a.min_capacity))
            .unwrap_or(0)
            .max(0)
    }
}

/// A LoadBalancer (in the service's namespace) and the container port its
/// tasks register as targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLoadBalancer {
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_name: String,
    /// A container of the task definition with a port mapping for
    /// `containerPort`.
    #[schemars(length(min = 1, max = 255))]
    pub container_name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
}

/// Whether a service moves tasks to keep its spread even.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Rebalancing {
    Enabled,
    Disabled,
}

/// ECS scheduling strategy of a service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchedulingStrategy {
    #[default]
    Replica,
    Daemon,
}

/// Bounds of a rolling deployment.
///
/// Both percentages are left unset in the stored object when the user gives
/// none, because ECS's defaults depend on the scheduling strategy:
/// REPLICA 100/200, DAEMON 0/100 (see [`DeploymentConfiguration::bounds`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.minimumHealthyPercent) ? self.minimumHealthyPercent : 0) <= 100"
).message("minimumHealthyPercent must be at most 100").field_path(".minimumHealthyPercent"))]
#[x_kube(validation = Rule::new(
    "(has(self.maximumPercent) ? self.maximumPercent : 200) >= 100"
).message("maximumPercent must be at least 100").field_path(".maximumPercent"))]
pub struct DeploymentConfiguration {
    /// Lower bound of RUNNING healthy tasks during a deployment, in percent
    /// of desiredCount, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub minimum_healthy_percent: Option<i32>,
    /// Upper bound of RUNNING, PENDING and STOPPING tasks during a
    /// deployment, in percent of desiredCount, rounded down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub maximum_percent: Option<i32>,
    /// Stops a deployment whose tasks keep failing.
    #[serde(default)]
    pub deployment_circuit_breaker: DeploymentCircuitBreaker,
}

impl DeploymentConfiguration {
    /// The effective `(minimumHealthyPercent, maximumPercent)`, with ECS's
    /// defaults for the strategy filled in.
    #[must_use]
    pub fn bounds(&self, strategy: SchedulingStrategy) -> (i32, i32) {
        let (min, max) = match strategy {
            SchedulingStrategy::Replica => (100, 200),
            SchedulingStrategy::Daemon => (0, 100),
        };
        (
            self.minimum_healthy_percent.unwrap_or(min),
            self.maximum_percent.unwrap_or(max),
        )
    }
}

/// ECS's deployment circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Fail a deployment after the threshold of failed tasks.
    #[serde(default)]
    pub enable: bool,
    /// On failure, return to the last completed deployment.
    #[serde(default)]
    pub rollback: bool,
}

/// What the controller observed of a Service, as `aws ecs describe-services`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ACTIVE, or DRAINING once deleted while its tasks stop (ECS's
    /// service `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    /// Tasks the service wants (for DAEMON: eligible instances).
    #[serde(default)]
    pub desired_count: i32,
    /// Tasks whose lastStatus is RUNNING.
    #[serde(default)]
    pub running_count: i32,
    /// Tasks placed or starting but not yet RUNNING.
    #[serde(default)]
    pub pending_count: i32,
    /// Label selector of the service's tasks (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The PRIMARY deployment first, then ACTIVE ones still draining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub deployments: Vec<Deployment>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What auto scaling measured and did (written by the autoscaler, not
    /// by the service's reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<AutoScalingStatus>,
}

/// A service's lifecycle state, as ECS reports it. ECS's INACTIVE (all
/// tasks stopped after a delete) is the Service being gone here.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServiceState {
    Active,
    Draining,
}

/// One deployment of a service, as ECS lists them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/<n>`.
    pub id: String,
    pub status: DeploymentStatus,
    /// TaskDefinition name and the revision this deployment runs.
    pub task_definition: String,
    pub task_definition_revision: i64,
    #[serde(default)]
    pub desired_count: i32,
    #[serde(default)]
    pub pending_count: i32,
    #[serde(default)]
    pub running_count: i32,
    /// Consecutive tasks that failed to start or stay healthy.
    #[serde(default)]
    pub failed_tasks: i32,
    pub rollout_state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// Role of a deployment in its service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeploymentStatus {
    /// The most recent deployment.
    Primary,
    /// An older deployment that still has tasks.
    Active,
    /// Fully replaced.
    Inactive,
}

/// Progress of a deployment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}
