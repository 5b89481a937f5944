//! ScheduledTask: tasks run on a schedule, as an Amazon EventBridge
//! Scheduler schedule whose target is ECS RunTask. The schedule is written
//! as EventBridge writes it (`rate(…)` or `cron(…)`, with a time zone);
//! each run creates `count` Tasks as `gantry run-task` does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{PlacementConstraint, PlacementStrategy, TASK_DEFINITION_REFERENCE},
    task::TaskOverride,
};

/// What a schedule may say: `rate(VALUE UNIT)` or `cron(6 fields)`.
pub const SCHEDULE: &str =
    r"^(rate\([1-9][0-9]{0,5} (minute|minutes|hour|hours|day|days)\)|cron\(\S+( \S+){5}\))$";

/// The spec of a ScheduledTask.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "ScheduledTask",
    plural = "scheduledtasks",
    namespaced,
    status = "ScheduledTaskStatus",
    shortname = "gst",
    shortname = "schedule",
    category = "gantry",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Task definition","type":"string","jsonPath":".spec.taskDefinition"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.activeCount"}"#,
    printcolumn = r#"{"name":"Last run","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next run","type":"string","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1123 label of at most 50 characters: its tasks are named <name>-<minute>-<i>, within a label value's 63")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.scheduleExpressionTimezone) || self.schedule.startsWith('cron(')"
).message("a time zone applies to cron schedules only").field_path(".scheduleExpressionTimezone"))]
pub struct ScheduledTaskSpec {
    /// When to run: `rate(N minute|minutes|hour|hours|day|days)`, from
    /// the object's creation on, or `cron(minutes hours day-of-month month
    /// day-of-week year)`, EventBridge's six fields (`?` in one of the two
    /// day fields; day-of-week 1-7 is SUN-SAT), in
    /// `scheduleExpressionTimezone`.
    #[schemars(length(min = 1, max = 256), regex(pattern = SCHEDULE))]
    pub schedule: String,

    /// The IANA time zone of a cron schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50))]
    pub schedule_expression_timezone: Option<String>,

    /// A run at some time within this window after its scheduled time,
    /// rather than at it, as EventBridge's `FlexibleTimeWindow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flexible_time_window: Option<FlexibleTimeWindow>,

    /// The TaskDefinition (`family` or `family:N`) each run starts.
    #[schemars(length(min = 1, max = 74), regex(pattern = TASK_DEFINITION_REFERENCE))]
    pub task_definition: String,

    /// Tasks each run starts, 1 to 10, as run-task.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub count: u8,

    /// Their task group [default: `family:<taskDefinition>`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub group: Option<String>,

    /// run-task's overrides, for every task of every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Vec<PlacementStrategy>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,

    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_execute_command: bool,

    /// What a run does while tasks of an earlier one still run.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// No runs while true (EventBridge's `State: DISABLED`); runs missed
    /// meanwhile are not caught up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

fn one() -> u8 {
    1
}

/// EventBridge's `FlexibleTimeWindow` in `FLEXIBLE` mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlexibleTimeWindow {
    /// 1 to 1440 minutes.
    #[schemars(range(min = 1, max = 1440))]
    pub maximum_window_in_minutes: u32,
}

/// While an earlier run's tasks still run, a new run…
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// …starts anyway.
    #[default]
    Allow,
    /// …is skipped (recorded, with an Event).
    Forbid,
    /// …stops them first.
    Replace,
}

/// What the controller observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTaskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The scheduled time of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next run is due (within its window, if flexible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Tasks of its runs not yet STOPPED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    #[serde(default)]
    pub active_count: u32,
    /// The last runs, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ScheduledRun>,
    /// `Valid`: whether the schedule can be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One run of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    pub scheduled_time: Time,
    /// The tasks it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    pub outcome: RunOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a run went.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunOutcome {
    /// Some of its tasks are not STOPPED yet.
    Running,
    /// Every task stopped with its essential containers exiting 0.
    Succeeded,
    /// A task failed to start, or an essential container exited non-zero.
    Failed,
    /// Not started (`Forbid` while an earlier run still ran, or missed
    /// by more than a day).
    Skipped,
}
