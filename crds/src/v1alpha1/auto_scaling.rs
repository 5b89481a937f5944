//! Service auto scaling: ECS's target tracking (Application Auto Scaling
//! on `ECSServiceAverageCPUUtilization` and
//! `ECSServiceAverageMemoryUtilization`), on a Service's `desiredCount`.
//! The controller's part is controller/src/autoscaling; how it decides,
//! docs/autoscaling.md.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.autoScaling` of a REPLICA Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minCapacity <= self.maxCapacity")
    .message("minCapacity must be at most maxCapacity").field_path(".minCapacity"))]
pub struct AutoScaling {
    /// The fewest tasks auto scaling keeps (a desiredCount below it is
    /// raised at once).
    #[schemars(range(min = 0, max = 100_000))]
    pub min_capacity: i32,
    /// The most tasks auto scaling starts (a desiredCount above it is
    /// lowered at once).
    #[schemars(range(min = 0, max = 100_000))]
    pub max_capacity: i32,
    /// One policy per metric: scale out when any asks for more, scale in
    /// only when all allow fewer.
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.metric == a.metric))")
        .message("a metric may be tracked only once"))]
    pub target_tracking: Vec<TargetTracking>,
    /// Never remove tasks; only add them (ECS's `DisableScaleIn`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_scale_in: bool,
}

/// A target tracking policy: keep `metric` near `target`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetTracking {
    pub metric: UtilizationMetric,
    /// The utilization to keep, in percent of what the tasks reserve.
    #[schemars(range(min = 1.0, max = 100.0))]
    pub target: f64,
    /// Seconds after a scale-out before another (ECS's default, 300).
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86_400))]
    pub scale_out_cooldown_seconds: u32,
    /// Seconds after a scale-in before another (ECS's default, 300).
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86_400))]
    pub scale_in_cooldown_seconds: u32,
}

/// ECS's cooldown when none is given, both ways.
pub const DEFAULT_COOLDOWN_SECONDS: u32 = 300;

fn default_cooldown() -> u32 {
    DEFAULT_COOLDOWN_SECONDS
}

/// What a policy tracks: the service's tasks' use of what they reserve
/// (task-level `cpu`/`memory`, or their containers' sum), averaged.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum UtilizationMetric {
    #[serde(rename = "CPUUtilization")]
    CpuUtilization,
    #[serde(rename = "MemoryUtilization")]
    MemoryUtilization,
}

impl std::fmt::Display for UtilizationMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CpuUtilization => "CPUUtilization",
            Self::MemoryUtilization => "MemoryUtilization",
        })
    }
}

/// `status.autoScaling`: what auto scaling last measured and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingStatus {
    /// Each tracked metric's last datapoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["metric".into()]))]
    pub current_metrics: Vec<MetricValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in_time: Option<Time>,
}

/// One metric's datapoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    pub metric: UtilizationMetric,
    /// Percent, to one decimal; absent when no running task has reported
    /// its use (no datapoint: auto scaling waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub target: f64,
    /// The running tasks the value was measured on.
    pub tasks: i32,
}
