//! What the plan needs to know of each task, read once.

use std::time::Duration;

use crds::{
    conditions,
    stop::{self, ELB_HEALTH_CHECKS_FAILED, HEALTH_CHECKS_FAILED},
    v1alpha1::{
        Deployment, DesiredStatus, HealthStatus, StopCode, Task, TaskDefinitionSpec, TaskLastStatus,
    },
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::targets::{Targets, Verdict};
use crate::convert;

/// One task, as the plan sees it.
#[derive(Debug)]
pub struct Facts<'a> {
    pub task: &'a Task,
    pub revision: Option<i64>,
    /// Not STOPPED and not being deleted: it holds (or will hold) a place.
    pub live: bool,
    /// Asked to stop, or a stop cause is recorded.
    pub stopping: bool,
    pub running: bool,
    /// Counts toward the minimum healthy: live, RUNNING, not stopping,
    /// HEALTHY if the definition has health checks (else not UNHEALTHY),
    /// and healthy in every load balancer of the service.
    pub healthy: bool,
    /// The load balancer that reports its target unhealthy.
    pub target_failure: Option<&'a str>,
    /// The instance it is bound (or, for DAEMON tasks, pinned) to.
    pub instance: Option<&'a str>,
    pub started: Option<Timestamp>,
    /// Protected from scale-in (`spec.protection`) until then ([`Self::at`]).
    pub protected_until: Option<Timestamp>,
}

/// The instance a task is bound (or, for DAEMON tasks, pinned) to.
#[must_use]
pub fn instance(task: &Task) -> Option<&str> {
    task.spec.container_instance.as_deref().or_else(|| {
        task.spec
            .placement_constraints
            .iter()
            .filter_map(|c| c.expression.as_deref())
            .find_map(convert::pinned_instance)
    })
}

impl<'a> Facts<'a> {
    #[must_use]
    pub fn of(task: &'a Task, health_checked: bool) -> Self {
        let status = task.status.as_ref();
        let last = status.and_then(|s| s.last_status);
        let live =
            last != Some(TaskLastStatus::Stopped) && task.metadata.deletion_timestamp.is_none();
        let stopping = task.spec.desired_status == DesiredStatus::Stopped
            || status.is_some_and(|s| s.stop_code.is_some());
        let running = last == Some(TaskLastStatus::Running);
        let health = status.and_then(|s| s.health_status);
        let healthy = live
            && running
            && !stopping
            && health != Some(HealthStatus::Unhealthy)
            && (!health_checked || health == Some(HealthStatus::Healthy));
        Self {
            task,
            revision: task.spec.task_definition_revision,
            live,
            stopping,
            running,
            healthy,
            target_failure: None,
            instance: instance(task),
            started: status.and_then(|s| s.started_at.as_ref()).map(|t| t.0),
            protected_until: None,
        }
    }

    /// These facts at `now`: whether the task's protection lasts.
    #[must_use]
    pub fn at(mut self, now: Timestamp) -> Self {
        self.protected_until = self.task.protected_until(now);
        self
    }

    /// These facts with what the service's load balancers report of the
    /// task: it counts as healthy only once every one reports it healthy.
    #[must_use]
    pub fn behind(mut self, targets: &'a Targets) -> Self {
        if !self.live || !self.running || self.stopping {
            return self;
        }
        match targets.verdict(&self.name()) {
            Verdict::Unbalanced | Verdict::Healthy => {}
            Verdict::Pending => self.healthy = false,
            Verdict::Unhealthy(lb) => {
                self.healthy = false;
                self.target_failure = Some(lb);
            }
        }
        self
    }

    /// Why a RUNNING task failed its health checks, if it did: its
    /// containers' own, or a load balancer's.
    #[must_use]
    pub fn health_failure(&self) -> Option<String> {
        if self.unhealthy() {
            return Some(HEALTH_CHECKS_FAILED.to_owned());
        }
        self.target_failure.map(stop::elb_health_failed)
    }

    /// RUNNING and reported UNHEALTHY by its health checks.
    #[must_use]
    pub fn unhealthy(&self) -> bool {
        self.live
            && self.running
            && self.task.status.as_ref().and_then(|s| s.health_status)
                == Some(HealthStatus::Unhealthy)
    }

    /// Whether the task runs the revision `deployment` deploys.
    #[must_use]
    pub fn is_of(&self, deployment: &Deployment) -> bool {
        self.revision == Some(deployment.task_definition_revision)
            && self.task.spec.task_definition == deployment.task_definition
    }

    #[must_use]
    pub fn name(&self) -> String {
        self.task.name_any()
    }

    /// Started by rebalancing (`gantry.dev/rebalancing`), to move a task.
    #[must_use]
    pub fn rebalancing(&self) -> bool {
        self.task
            .labels()
            .get(crds::labels::REBALANCING)
            .is_some_and(|v| v == "true")
    }

    /// Not bound, and its scheduler said no instance can take it
    /// (`Scheduled=False`).
    #[must_use]
    pub fn unplaceable(&self) -> bool {
        self.task.spec.container_instance.is_none()
            && self.task.status.as_ref().is_some_and(|s| {
                conditions::is_false(&s.conditions, conditions::ConditionType::Scheduled)
            })
    }

    #[must_use]
    pub fn created(&self) -> Option<Timestamp> {
        self.task.creation_timestamp().map(|t| t.0)
    }
}

/// Whether a stopped task counts as a failure for the circuit breaker and
/// the start throttle: it could not start, an essential container exited
/// with an error, or it failed its (or a load balancer's) health checks.
#[must_use]
pub fn failed(task: &Task) -> bool {
    let Some(status) = task.status.as_ref() else {
        return false;
    };
    if status.last_status != Some(TaskLastStatus::Stopped) {
        return false;
    }
    match status.stop_code {
        Some(StopCode::TaskFailedToStart) => true,
        Some(StopCode::EssentialContainerExited) => {
            status.containers.iter().any(|c| c.exit_code != Some(0))
        }
        Some(StopCode::ServiceSchedulerInitiated) => status
            .stopped_reason
            .as_deref()
            .is_some_and(|r| r == HEALTH_CHECKS_FAILED || r.starts_with(ELB_HEALTH_CHECKS_FAILED)),
        _ => false,
    }
}

#[must_use]
pub fn stopped_at(task: &Task) -> Option<Timestamp> {
    task.status
        .as_ref()
        .and_then(|s| s.stopped_at.as_ref())
        .map(|t| t.0)
}

/// Whether any essential container of the definition has a health check:
/// then only HEALTHY tasks count as healthy.
#[must_use]
pub fn health_checked(definition: Option<&TaskDefinitionSpec>) -> bool {
    definition.is_some_and(|d| {
        d.container_definitions
            .iter()
            .any(|c| c.essential && c.health_check.is_some())
    })
}

/// `t + d`, saturating.
#[must_use]
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    let millis = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(millis)).unwrap_or(Timestamp::MAX)
}

/// How long from `now` until `until`, and a little more, so the look
/// again comes after it.
#[must_use]
pub fn wait(now: Timestamp, until: Timestamp) -> Duration {
    let ms = until.as_millisecond() - now.as_millisecond();
    Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0) + 100)
}

/// The sooner of two requeues.
#[must_use]
pub fn sooner(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}
