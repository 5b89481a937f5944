//! A service's deployments: a new revision starts one, the circuit breaker
//! fails it (and with rollback starts one of the last completed revision),
//! and each reconcile counts their tasks and retires the drained.

use crds::v1alpha1::{Deployment, DeploymentCircuitBreaker, DeploymentStatus, RolloutState, Task};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    deployment_id,
    facts::{self, Facts},
    serial,
};
use crate::events::Note;

/// A new PRIMARY deployment at the front of `deployments` (newest first);
/// the others become ACTIVE.
fn push_primary(
    deployments: &mut Vec<Deployment>,
    (family, revision): (&str, i64),
    desired: i32,
    reason: String,
    now: Timestamp,
) -> String {
    let next = deployments.first().map_or(1, |d| serial(&d.id) + 1);
    for d in deployments.iter_mut() {
        d.status = DeploymentStatus::Active;
    }
    let id = deployment_id(next);
    deployments.insert(
        0,
        Deployment {
            id: id.clone(),
            status: DeploymentStatus::Primary,
            task_definition: family.to_owned(),
            task_definition_revision: revision,
            desired_count: desired,
            pending_count: 0,
            running_count: 0,
            failed_tasks: 0,
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: Some(reason),
            created_at: Some(Time(now)),
            updated_at: Some(Time(now)),
        },
    );
    id
}

/// Start a deployment of `target` (family, revision) unless one of it is
/// already listed.
pub fn start(
    deployments: &mut Vec<Deployment>,
    target: (&str, i64),
    desired: i32,
    service: &str,
    now: Timestamp,
) -> Option<Note> {
    let (family, revision) = target;
    if deployments
        .iter()
        .any(|d| d.task_definition == family && d.task_definition_revision == revision)
    {
        return None;
    }
    let next = deployments.first().map_or(1, |d| serial(&d.id) + 1);
    let reason = format!("ECS deployment {} in progress.", deployment_id(next));
    let id = push_primary(deployments, target, desired, reason, now);
    Some(Note::normal(
        "DeploymentStarted",
        format!("service ({service}) started deployment {id} of {family}:{revision}"),
    ))
}

/// The primary's consecutive failures: its failed tasks stopped since it
/// last had a task running.
#[must_use]
pub fn failures<'a>(facts: &[Facts<'a>], primary: &Deployment) -> Vec<&'a Task> {
    let reset = facts
        .iter()
        .filter(|f| f.is_of(primary) && f.live && f.running)
        .filter_map(|f| f.started)
        .max();
    facts
        .iter()
        .filter(|f| f.is_of(primary) && facts::failed(f.task))
        .filter(|f| reset.is_none_or(|r| facts::stopped_at(f.task).is_none_or(|s| s > r)))
        .map(|f| f.task)
        .collect()
}

/// ECS's circuit breaker threshold (the current API's minimum of 3).
#[must_use]
pub fn breaker_threshold(desired: i32) -> i32 {
    ((desired + 1) / 2).clamp(3, 200)
}

/// The circuit breaker of the primary deployment.
#[derive(Debug)]
pub struct Breaker<'a> {
    pub config: &'a DeploymentCircuitBreaker,
    /// The primary's consecutive failures.
    pub failed: i32,
    pub desired: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not tripped (or off, or the deployment is not in progress).
    Closed,
    /// The primary deployment failed; it stays primary.
    Tripped,
    /// The primary failed and a deployment of the last completed revision
    /// took its place.
    RolledBack,
}

impl Breaker<'_> {
    /// Fail the in-progress primary of `deployments` once its failures
    /// reach the threshold; with rollback, start a deployment of the last
    /// COMPLETED one.
    pub fn judge(
        &self,
        deployments: &mut Vec<Deployment>,
        service: &str,
        now: Timestamp,
        events: &mut Vec<Note>,
    ) -> Verdict {
        let threshold = breaker_threshold(self.desired);
        let Some(first) = deployments.first_mut() else {
            return Verdict::Closed;
        };
        if first.rollout_state != RolloutState::InProgress
            || !self.config.enable
            || self.failed < threshold
        {
            return Verdict::Closed;
        }
        let failed = self.failed;
        first.rollout_state = RolloutState::Failed;
        first.rollout_state_reason = Some(format!(
            "ECS deployment circuit breaker: {failed} tasks failed to start or stay up (threshold {threshold})"
        ));
        first.updated_at = Some(Time(now));
        let failed_id = first.id.clone();
        events.push(Note::warning(
            "CircuitBreakerTripped",
            format!(
                "service ({service}) deployment {failed_id} failed: ECS deployment circuit breaker: {failed} tasks failed (threshold {threshold})"
            ),
        ));
        let target = deployments
            .iter()
            .skip(1)
            .find(|d| d.rollout_state == RolloutState::Completed)
            .cloned();
        let Some(target) = target.filter(|_| self.config.rollback) else {
            return Verdict::Tripped;
        };
        let revision = (
            target.task_definition.as_str(),
            target.task_definition_revision,
        );
        let reason = format!("rolling back to {} after {failed_id} failed", target.id);
        let id = push_primary(deployments, revision, self.desired, reason, now);
        events.push(Note::normal(
            "RollbackStarted",
            format!(
                "service ({service}) rolls back to {}:{} as deployment {id}",
                target.task_definition, target.task_definition_revision
            ),
        ));
        Verdict::RolledBack
    }
}

/// The deployments as status lists them: each with its running and
/// pending counts; the primary wants desiredCount, the others none; an
/// older one whose tasks are all gone is retired, unless it is a failed
/// deployment of the revision still asked for (kept so that revision is
/// not deployed again).
#[must_use]
pub fn tally(
    deployments: Vec<Deployment>,
    facts: &[Facts<'_>],
    target: (&str, Option<i64>),
    desired: i32,
) -> Vec<Deployment> {
    let (family, target_revision) = target;
    let Some(primary) = deployments.first().cloned() else {
        return deployments;
    };
    let mut listed = Vec::new();
    for (i, mut d) in deployments.into_iter().enumerate() {
        // A revision shared with the primary belongs to the primary.
        let shared = i > 0
            && d.task_definition_revision == primary.task_definition_revision
            && d.task_definition == primary.task_definition;
        let of: Vec<&Facts<'_>> = facts
            .iter()
            .filter(|f| !shared && f.live && f.is_of(&d))
            .collect();
        d.running_count = count(of.iter().filter(|f| f.running));
        d.pending_count = count(of.iter().filter(|f| !f.running && !f.stopping));
        if i == 0 {
            d.status = DeploymentStatus::Primary;
            d.desired_count = desired;
            listed.push(d);
            continue;
        }
        d.desired_count = 0;
        d.status = if of.is_empty() {
            DeploymentStatus::Inactive
        } else {
            DeploymentStatus::Active
        };
        let marker = d.rollout_state == RolloutState::Failed
            && Some(d.task_definition_revision) == target_revision
            && d.task_definition == family;
        if d.status == DeploymentStatus::Active || marker {
            listed.push(d);
        }
    }
    listed
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}
