//! A Service's status: task counts, deployments, and the conditions
//! `Ready` (steady state), `Progressing` (a deployment rolls out) and
//! `Degraded` (why it cannot reach its desired state). Events go out only
//! when a condition changes, not on every reconcile.

use crds::{
    conditions::{self, ConditionType, Conditions, reason},
    labels,
    v1alpha1::{Deployment, RolloutState, ServiceState, ServiceStatus},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::ResourceExt;

use super::{Definition, Input, facts::Facts};
use crate::events::Note;

/// Why a service cannot reach its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Degraded {
    pub reason: &'static str,
    pub message: String,
}

impl Degraded {
    /// The primary's revision has no snapshot left to start tasks from.
    #[must_use]
    pub fn no_snapshot(primary: &Deployment) -> Self {
        Self {
            reason: reason::degraded::TASK_DEFINITION_NOT_FOUND,
            message: format!(
                "no snapshot of {}:{} is left to start tasks from",
                primary.task_definition, primary.task_definition_revision
            ),
        }
    }

    /// The primary deployment failed by the circuit breaker.
    #[must_use]
    pub fn breaker(primary: &Deployment) -> Self {
        Self {
            reason: reason::degraded::CIRCUIT_BREAKER_TRIPPED,
            message: primary.rollout_state_reason.clone().unwrap_or_default(),
        }
    }
}

/// Why the task definition cannot be deployed, if it cannot.
#[must_use]
pub fn definition_problem(definition: Definition<'_>, family: &str) -> Option<Degraded> {
    match definition {
        Definition::Invalid(why) => Some(Degraded {
            reason: reason::degraded::INVALID_TASK_DEFINITION,
            message: format!("task definition {family} cannot run: {why}"),
        }),
        Definition::Missing => Some(Degraded {
            reason: reason::degraded::TASK_DEFINITION_NOT_FOUND,
            message: format!("task definition {family} was not found"),
        }),
        Definition::Valid { .. } => None,
    }
}

/// Why a live task waits for a place, as its scheduler said.
#[must_use]
pub fn unplaceable(facts: &[Facts<'_>], service: &str) -> Option<Degraded> {
    facts
        .iter()
        .filter(|f| f.live && !f.stopping && f.task.spec.container_instance.is_none())
        .find_map(|f| {
            let conditions = &f.task.status.as_ref()?.conditions;
            let c = conditions::find(conditions, ConditionType::Scheduled)?;
            (c.status == "False").then(|| Degraded {
                reason: reason::degraded::UNPLACEABLE,
                message: format!(
                    "service ({service}) was unable to place a task because no container instance met all of its requirements: {}",
                    c.message
                ),
            })
        })
}

/// What a status report needs of the Service itself.
#[derive(Debug)]
pub struct Report<'a> {
    name: String,
    generation: Option<i64>,
    previous: &'a [Condition],
    now: Timestamp,
}

/// The tasks' counts.
struct Counts {
    running: usize,
    pending: usize,
    live: usize,
    healthy: usize,
}

impl Counts {
    fn of(facts: &[Facts<'_>]) -> Self {
        let live = facts.iter().filter(|f| f.live);
        Self {
            running: live.clone().filter(|f| f.running).count(),
            pending: live.clone().filter(|f| !f.running && !f.stopping).count(),
            live: live.count(),
            healthy: facts.iter().filter(|f| f.healthy).count(),
        }
    }
}

impl<'a> Report<'a> {
    #[must_use]
    pub fn new(input: &'a Input<'_>) -> Self {
        let service = input.service;
        Self {
            name: service.name_any(),
            generation: service.metadata.generation,
            previous: service
                .status
                .as_ref()
                .map_or(&[], |s| s.conditions.as_slice()),
            now: input.now,
        }
    }

    /// The status to write, and the events its changes call for.
    #[must_use]
    pub fn status(
        &self,
        deployments: Vec<Deployment>,
        desired: i32,
        facts: &[Facts<'_>],
        degraded: Option<Degraded>,
        events: &mut Vec<Note>,
    ) -> ServiceStatus {
        let counts = Counts::of(facts);
        let mut list = self.previous.to_vec();
        let mut conditions = Conditions::new(&mut list, self.generation, self.now);
        let primary = deployments.first();
        self.ready(
            &mut conditions,
            primary,
            desired,
            &counts,
            degraded.as_ref(),
            events,
        );
        progressing(&mut conditions, primary);
        self.degraded(&mut conditions, degraded, events);
        ServiceStatus {
            observed_generation: self.generation,
            state: Some(ServiceState::Active),
            desired_count: desired,
            running_count: i32::try_from(counts.running).unwrap_or(i32::MAX),
            pending_count: i32::try_from(counts.pending).unwrap_or(i32::MAX),
            selector: Some(format!("{}={}", labels::SERVICE, self.name)),
            deployments,
            conditions: list,
            // The autoscaler's (controller/src/autoscaling).
            auto_scaling: None,
        }
    }

    /// The status of a Service being deleted: DRAINING, nothing desired,
    /// not Ready; a `Draining` event when it starts to drain.
    #[must_use]
    pub fn draining(
        &self,
        previous: Option<&ServiceStatus>,
        facts: &[Facts<'_>],
        events: &mut Vec<Note>,
    ) -> ServiceStatus {
        let counts = Counts::of(facts);
        let name = &self.name;
        let mut status = previous.cloned().unwrap_or_default();
        status.auto_scaling = None;
        if status.state != Some(ServiceState::Draining) {
            events.push(Note::normal(
                reason::ready::DRAINING,
                format!(
                    "service ({name}) was deleted: it is DRAINING while its {} tasks stop",
                    counts.live
                ),
            ));
        }
        Conditions::new(&mut status.conditions, self.generation, self.now).set(
            ConditionType::Ready,
            false,
            reason::ready::DRAINING,
            format!(
                "service ({name}) is being deleted: {} tasks still running",
                counts.running
            ),
        );
        status.state = Some(ServiceState::Draining);
        status.desired_count = 0;
        status.running_count = i32::try_from(counts.running).unwrap_or(i32::MAX);
        status.pending_count = i32::try_from(counts.pending).unwrap_or(i32::MAX);
        status
    }

    /// Ready: the primary deployment completed, nothing degraded, and
    /// exactly desiredCount tasks live, all healthy.
    fn ready(
        &self,
        conditions: &mut Conditions<'_>,
        primary: Option<&Deployment>,
        desired: i32,
        counts: &Counts,
        degraded: Option<&Degraded>,
        events: &mut Vec<Note>,
    ) {
        let name = &self.name;
        let state = primary.map(|d| d.rollout_state);
        let steady = state == Some(RolloutState::Completed)
            && degraded.is_none()
            && usize::try_from(desired).is_ok_and(|d| d == counts.live && d == counts.healthy);
        let (why, message) = if steady {
            (
                reason::ready::STEADY_STATE,
                format!("service ({name}) has reached a steady state."),
            )
        } else if let Some(d) = degraded {
            (d.reason, d.message.clone())
        } else if state == Some(RolloutState::InProgress) {
            let id = primary.map(|d| d.id.as_str()).unwrap_or_default();
            let running = counts.running;
            (
                reason::progressing::DEPLOYMENT_IN_PROGRESS,
                format!("deployment {id}: {running} of {desired} tasks running"),
            )
        } else {
            let (running, live) = (counts.running, counts.live);
            (
                reason::ready::TASKS_PENDING,
                format!("{running} of {desired} tasks running, {live} live"),
            )
        };
        let was_ready = conditions::is_true(self.previous, ConditionType::Ready);
        conditions.set(ConditionType::Ready, steady, why, message.clone());
        if steady && !was_ready {
            events.push(Note::normal(reason::ready::STEADY_STATE, message));
        }
    }

    /// Degraded, with a Warning event when it becomes true or its message
    /// changes (the circuit breaker has its own event).
    fn degraded(
        &self,
        conditions: &mut Conditions<'_>,
        degraded: Option<Degraded>,
        events: &mut Vec<Note>,
    ) {
        let Some(Degraded { reason, message }) = degraded else {
            conditions.set(
                ConditionType::Degraded,
                false,
                reason::degraded::AS_EXPECTED,
                "tasks start and place as expected",
            );
            return;
        };
        let unchanged = conditions::find(self.previous, ConditionType::Degraded)
            .is_some_and(|c| c.status == "True" && c.message == message);
        conditions.set(ConditionType::Degraded, true, reason, message.clone());
        if !unchanged && reason != reason::degraded::CIRCUIT_BREAKER_TRIPPED {
            events.push(Note::warning(reason, message));
        }
    }
}

/// Progressing: whether the primary deployment is rolling out.
fn progressing(conditions: &mut Conditions<'_>, primary: Option<&Deployment>) {
    let Some(d) = primary else {
        conditions.set(
            ConditionType::Progressing,
            false,
            reason::progressing::NO_DEPLOYMENT,
            "no deployment yet",
        );
        return;
    };
    let revision = format!("{}:{}", d.task_definition, d.task_definition_revision);
    let (status, why, message) = match d.rollout_state {
        RolloutState::InProgress => (
            true,
            reason::progressing::DEPLOYMENT_IN_PROGRESS,
            format!("deployment {} of {revision} in progress", d.id),
        ),
        RolloutState::Failed => (
            false,
            reason::progressing::DEPLOYMENT_FAILED,
            d.rollout_state_reason.clone().unwrap_or_default(),
        ),
        RolloutState::Completed => (
            false,
            reason::progressing::DEPLOYMENT_COMPLETED,
            format!("deployment {} of {revision} completed", d.id),
        ),
    };
    conditions.set(ConditionType::Progressing, status, why, message);
}
