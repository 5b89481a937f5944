//! How a task is stopped: ECS's stop reasons, worded as ECS words them,
//! and the one pair of patches every writer uses to stop a task.
//!
//! The first stop cause recorded wins, for every writer: the agent, the
//! service scheduler and the instance reconciler may all try to stop the
//! same task, and ECS reports the cause that came first.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{Value, json};

use crate::v1alpha1::{DesiredStatus, StopCode, TaskLastStatus, TaskStatus};

/// `desiredStatus` set to STOPPED by a user (or a task stopped before it
/// was placed).
pub const STOPPED_BY_USER: &str = "Task stopped by user";
/// The task's instance was deregistered (its ContainerInstance deleted)
/// while the task was live; ECS words it so for `--force`.
pub const DEREGISTRATION_FORCED: &str = "Container instance deregistration forced by user";
/// An essential container exited, so the whole task stops.
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// The service scheduler replaced a task that failed its health checks.
pub const HEALTH_CHECKS_FAILED: &str = "Task failed container health checks";

/// The start of the reason of a task replaced because a load balancer
/// found it unhealthy.
pub const ELB_HEALTH_CHECKS_FAILED: &str = "Task failed ELB health checks in";

/// The reason of a task replaced because the load balancer `name` found
/// its target unhealthy.
#[must_use]
pub fn elb_health_failed(name: &str) -> String {
    format!("{ELB_HEALTH_CHECKS_FAILED} (elb {name})")
}

/// The reason of a task a service stops while scaling or deploying.
#[must_use]
pub fn scaling(deployment_id: &str) -> String {
    format!("Scaling activity initiated by (deployment {deployment_id})")
}

/// The reason of a task a service stops to move it (`rebalancing`).
#[must_use]
pub fn rebalancing(deployment_id: &str) -> String {
    format!("Rebalancing activity initiated by (deployment {deployment_id})")
}

/// The reason of a task stopped because its instance was lost.
#[must_use]
pub fn instance_lost(instance: &str, since: impl std::fmt::Display) -> String {
    format!(
        "Host EC2 (instance {instance}) stopped/terminated: its agent has not renewed its Lease since {since}"
    )
}

/// The merge patches that stop a task: one for its status, one for its
/// spec. Which to send first is the caller's: the cause must be recorded
/// before an agent sees `desiredStatus: STOPPED`, or the agent records
/// its own.
#[derive(Clone, Debug, PartialEq)]
pub struct StopPatches {
    pub status: Value,
    pub spec: Value,
}

/// Stop a task whose status is `recorded`, with `code` and `reason` unless
/// a cause is already recorded. With `stopped_at`, the task is also marked
/// STOPPED then: for a task no agent will report on (never placed, or on
/// a lost instance).
#[must_use]
pub fn patches(
    recorded: &TaskStatus,
    code: StopCode,
    reason: &str,
    stopped_at: Option<Timestamp>,
) -> StopPatches {
    let mut status = json!({
        "stopCode": recorded.stop_code.unwrap_or(code),
        "stoppedReason": recorded.stopped_reason.as_deref().unwrap_or(reason),
    });
    if let Some(now) = stopped_at {
        status["lastStatus"] = json!(TaskLastStatus::Stopped);
        status["stoppingAt"] = json!(recorded.stopping_at.clone().unwrap_or(Time(now)));
        status["stoppedAt"] = json!(Time(now));
    }
    StopPatches {
        status: json!({ "status": status }),
        spec: json!({"spec": {"desiredStatus": DesiredStatus::Stopped}}),
    }
}

/// The patches that deregister a RUNNING task from its load balancers
/// before it stops: `lastStatus: DEACTIVATING` and `stoppingAt` with the
/// cause, on the task's `resource_version` so no newer agent report is
/// undone. The agent keeps its containers running while DEACTIVATING.
#[must_use]
pub fn deactivating(
    code: StopCode,
    reason: &str,
    now: Timestamp,
    resource_version: Option<&str>,
) -> StopPatches {
    let mut stop = patches(&TaskStatus::default(), code, reason, None);
    stop.status["status"]["lastStatus"] = json!(TaskLastStatus::Deactivating);
    stop.status["status"]["stoppingAt"] = json!(Time(now));
    stop.status["metadata"] = json!({ "resourceVersion": resource_version });
    stop
}

/// The patch that ends deregistration: on to STOPPING, where the agent
/// stops the containers.
#[must_use]
pub fn released(resource_version: Option<&str>) -> Value {
    json!({
        "metadata": { "resourceVersion": resource_version },
        "status": { "lastStatus": TaskLastStatus::Stopping },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_wins_and_only_an_unreported_task_is_marked_stopped() {
        let now = Timestamp::from_second(100).expect("a time");
        let fresh = patches(
            &TaskStatus::default(),
            StopCode::ServiceSchedulerInitiated,
            &scaling("ecs-svc/2"),
            None,
        );
        assert_eq!(
            fresh.status,
            json!({"status": {
                "stopCode": "ServiceSchedulerInitiated",
                "stoppedReason": "Scaling activity initiated by (deployment ecs-svc/2)",
            }})
        );
        assert_eq!(fresh.spec, json!({"spec": {"desiredStatus": "STOPPED"}}));

        let earlier = Time(Timestamp::from_second(50).expect("a time"));
        let recorded = TaskStatus {
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: Some(ESSENTIAL_EXITED.to_owned()),
            stopping_at: Some(earlier.clone()),
            ..TaskStatus::default()
        };
        let lost = patches(
            &recorded,
            StopCode::TerminationNotice,
            &instance_lost("i-1", "then"),
            Some(now),
        );
        assert_eq!(
            lost.status,
            json!({"status": {
                "stopCode": "EssentialContainerExited",
                "stoppedReason": ESSENTIAL_EXITED,
                "lastStatus": "STOPPED",
                "stoppingAt": earlier,
                "stoppedAt": Time(now),
            }})
        );
    }
}
