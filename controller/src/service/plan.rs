//! What a Service needs next: a pure function from the Service, its task
//! definition, its tasks and the cluster's instances to the tasks to
//! start, the tasks to stop, the status to report and the events to
//! publish. No API call happens here.
//!
//! ECS's rules, as ../shared/reference/ECS-SEMANTICS.md lists them:
//! - a change of task definition revision starts a deployment; the newest
//!   is PRIMARY, older ones with tasks left are ACTIVE;
//! - during any change, RUNNING healthy tasks stay at or above
//!   `minimumHealthyPercent` of desiredCount (rounded up) and all live
//!   tasks at or below `maximumPercent` (rounded down);
//! - tasks on DRAINING instances, UNHEALTHY tasks past the grace period and
//!   DAEMON tasks on instances that no longer qualify are replaced within
//!   the same bounds;
//! - the circuit breaker fails a deployment after
//!   `clamp(ceil(desired / 2), 3, 200)` consecutive failed tasks and, with
//!   rollback, redeploys the last COMPLETED deployment;
//! - tasks that keep failing are started again after a growing delay.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use crds::v1alpha1::{
    Deployment, DeploymentStatus, DesiredStatus, HealthStatus, RolloutState, SchedulingStrategy,
    Service, ServiceStatus, StopCode, Task, TaskDefinitionSpec, TaskLastStatus,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    convert,
    events::{self, Note},
    placement::{InstanceSpec, Query},
    scheduler::SCHEDULED,
};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// The label naming a task's service.
pub const SERVICE_LABEL: &str = "gantry.dev/service";
/// The label naming a task's deployment (its serial number).
pub const DEPLOYMENT_LABEL: &str = "gantry.dev/deployment";

pub const HEALTH_CHECKS_FAILED: &str = "Task failed container health checks";

/// The service's task definition as it stands.
#[derive(Clone, Copy, Debug)]
pub enum Definition<'a> {
    /// Its latest valid revision.
    Valid {
        revision: i64,
        spec: &'a TaskDefinitionSpec,
    },
    /// The latest spec cannot run: why.
    Invalid(&'a str),
    Missing,
}

#[derive(Debug)]
pub struct Input<'a> {
    pub service: &'a Service,
    pub definition: Definition<'a>,
    pub tasks: &'a [Task],
    pub instances: &'a [InstanceSpec],
    pub now: Timestamp,
}

/// A task to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    pub deployment: u32,
    pub revision: i64,
    pub definition: TaskDefinitionSpec,
    /// The instance a DAEMON task is pinned to.
    pub instance: Option<String>,
}

/// A task to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub task: String,
    /// Bound to an instance (its agent stops it) or not (stopped here).
    pub bound: bool,
    pub code: StopCode,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<NewTask>,
    pub stop: Vec<Stop>,
    pub status: ServiceStatus,
    pub events: Vec<Note>,
    /// When to look again even if nothing changes.
    pub requeue: Option<Duration>,
}

/// ECS's circuit breaker threshold (the current API's minimum of 3).
#[must_use]
pub fn breaker_threshold(desired: i32) -> i32 {
    ((desired + 1) / 2).clamp(3, 200)
}

/// Delay before another start after `failures` consecutive failures:
/// doubling from one second, at most 15 minutes, as ECS throttles.
#[must_use]
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(failures - 1).unwrap_or(0).min(10);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(15 * 60))
}

/// The serial number of a deployment id `ecs-svc/<n>`.
#[must_use]
pub fn serial(id: &str) -> u32 {
    id.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[must_use]
pub fn deployment_id(serial: u32) -> String {
    format!("ecs-svc/{serial}")
}

/// What the plan needs to know of one task.
struct Facts<'a> {
    task: &'a Task,
    revision: Option<i64>,
    live: bool,
    stopping: bool,
    running: bool,
    healthy: bool,
    instance: Option<&'a str>,
    started: Option<Timestamp>,
}

impl<'a> Facts<'a> {
    fn of(task: &'a Task, health_checked: bool) -> Self {
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
        let instance = task.spec.container_instance.as_deref().or_else(|| {
            task.spec
                .placement_constraints
                .iter()
                .filter_map(|c| c.expression.as_deref())
                .find_map(convert::pinned_instance)
        });
        Self {
            task,
            revision: task.spec.task_definition_revision,
            live,
            stopping,
            running,
            healthy,
            instance,
            started: status.and_then(|s| s.started_at.as_ref()).map(|t| t.0),
        }
    }

    fn unhealthy(&self) -> bool {
        self.live
            && self.running
            && self.task.status.as_ref().and_then(|s| s.health_status)
                == Some(HealthStatus::Unhealthy)
    }

    fn name(&self) -> String {
        self.task.name_any()
    }
}

/// Whether a stopped task counts as a failure for the circuit breaker and
/// the start throttle: it could not start, an essential container exited
/// with an error, or it failed its health checks.
fn failed(task: &Task) -> bool {
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
        Some(StopCode::ServiceSchedulerInitiated) => {
            status.stopped_reason.as_deref() == Some(HEALTH_CHECKS_FAILED)
        }
        _ => false,
    }
}

fn stopped_at(task: &Task) -> Option<Timestamp> {
    task.status
        .as_ref()
        .and_then(|s| s.stopped_at.as_ref())
        .map(|t| t.0)
}

/// Whether any essential container of the definition has a health check:
/// then only HEALTHY tasks count as healthy.
fn health_checked(definition: Option<&TaskDefinitionSpec>) -> bool {
    definition.is_some_and(|d| {
        d.container_definitions
            .iter()
            .any(|c| c.essential && c.health_check.is_some())
    })
}

/// Whether an instance may run this DAEMON service's task.
fn eligible(instance: &InstanceSpec, constraints: &[Query]) -> bool {
    !instance.draining
        && instance.connected
        && constraints.iter().all(|q| q.matches(&instance.attributes))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(millis(d)))
        .unwrap_or(Timestamp::MAX)
}

fn wait(now: Timestamp, until: Timestamp) -> Duration {
    let ms = until.as_millisecond() - now.as_millisecond();
    Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0) + 100)
}

fn sooner(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Plan the next step of a Service.
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn plan(input: &Input<'_>) -> Plan {
    let service = input.service;
    let spec = &service.spec;
    let name = service.name_any();
    let now = input.now;
    let previous = service.status.clone().unwrap_or_default();
    let daemon = spec.scheduling_strategy == SchedulingStrategy::Daemon;
    let mut plan = Plan::default();
    let mut deployments = previous.deployments.clone();
    deployments.sort_by_key(|d| std::cmp::Reverse(serial(&d.id)));

    // Which instances a DAEMON service runs on, and how many tasks it wants.
    let constraints: Vec<Query> = spec
        .placement_constraints
        .iter()
        .chain(match input.definition {
            Definition::Valid { spec, .. } => spec.placement_constraints.as_slice(),
            _ => &[],
        })
        .filter_map(|c| c.expression.as_deref())
        .filter_map(|e| Query::parse(e).ok())
        .collect();
    let eligible: Vec<&InstanceSpec> = if daemon {
        input
            .instances
            .iter()
            .filter(|i| eligible(i, &constraints))
            .collect()
    } else {
        Vec::new()
    };
    let desired = if daemon {
        i32::try_from(eligible.len()).unwrap_or(i32::MAX)
    } else {
        spec.desired_count.unwrap_or(0).max(0)
    };

    // A new revision starts a deployment.
    if let Definition::Valid { revision, .. } = input.definition
        && !deployments.iter().any(|d| {
            d.task_definition == spec.task_definition && d.task_definition_revision == revision
        })
    {
        let next = deployments.first().map_or(1, |d| serial(&d.id) + 1);
        for d in &mut deployments {
            d.status = DeploymentStatus::Active;
        }
        let id = deployment_id(next);
        deployments.insert(
            0,
            Deployment {
                id: id.clone(),
                status: DeploymentStatus::Primary,
                task_definition: spec.task_definition.clone(),
                task_definition_revision: revision,
                desired_count: desired,
                pending_count: 0,
                running_count: 0,
                failed_tasks: 0,
                rollout_state: RolloutState::InProgress,
                rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
                created_at: Some(Time(now)),
                updated_at: Some(Time(now)),
            },
        );
        plan.events.push(Note::normal(
            "DeploymentStarted",
            format!(
                "service ({name}) started deployment {id} of {}:{revision}",
                spec.task_definition
            ),
        ));
    }

    let snapshot_of = |revision: i64| -> Option<TaskDefinitionSpec> {
        match input.definition {
            Definition::Valid { revision: r, spec } if r == revision => Some(spec.clone()),
            _ => input
                .tasks
                .iter()
                .filter(|t| t.spec.task_definition_revision == Some(revision))
                .find_map(|t| t.spec.definition.clone()),
        }
    };

    let instance_draining: HashMap<&str, bool> = input
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.draining))
        .collect();

    let mut degraded: Option<(&'static str, String)> = match input.definition {
        Definition::Invalid(why) => Some((
            "InvalidTaskDefinition",
            format!("task definition {} cannot run: {why}", spec.task_definition),
        )),
        Definition::Missing => Some((
            "TaskDefinitionNotFound",
            format!("task definition {} was not found", spec.task_definition),
        )),
        Definition::Valid { .. } => None,
    };

    let Some(primary) = deployments.first().cloned() else {
        plan.status = status(
            input,
            &previous,
            Vec::new(),
            desired,
            &[],
            degraded,
            &mut plan.events,
        );
        plan.requeue = Some(Duration::from_secs(30));
        return plan;
    };
    let primary_snapshot = snapshot_of(primary.task_definition_revision);
    let checked = health_checked(primary_snapshot.as_ref());
    let facts: Vec<Facts<'_>> = input.tasks.iter().map(|t| Facts::of(t, checked)).collect();
    let is_primary = |f: &Facts<'_>| {
        f.revision == Some(primary.task_definition_revision)
            && f.task.spec.task_definition == primary.task_definition
    };

    // The circuit breaker: consecutive failures since the deployment last
    // had a task running.
    let reset = facts
        .iter()
        .filter(|f| is_primary(f) && f.live && f.running)
        .filter_map(|f| f.started)
        .max();
    let failures: Vec<&Task> = input
        .tasks
        .iter()
        .filter(|t| {
            t.spec.task_definition_revision == Some(primary.task_definition_revision)
                && t.spec.task_definition == primary.task_definition
                && failed(t)
                && reset.is_none_or(|r| stopped_at(t).is_none_or(|s| s > r))
        })
        .collect();
    let failed_count = i32::try_from(failures.len()).unwrap_or(i32::MAX);
    let breaker = &spec.deployment_configuration.deployment_circuit_breaker;
    if primary.rollout_state == RolloutState::InProgress
        && breaker.enable
        && failed_count >= breaker_threshold(desired)
    {
        let first = &mut deployments[0];
        first.rollout_state = RolloutState::Failed;
        first.rollout_state_reason = Some(format!(
            "ECS deployment circuit breaker: {failed_count} tasks failed to start or stay up (threshold {})",
            breaker_threshold(desired)
        ));
        first.updated_at = Some(Time(now));
        plan.events.push(Note::warning(
            "CircuitBreakerTripped",
            format!(
                "service ({name}) deployment {} failed: ECS deployment circuit breaker: {failed_count} tasks failed (threshold {})",
                primary.id,
                breaker_threshold(desired)
            ),
        ));
        let target = deployments
            .iter()
            .skip(1)
            .find(|d| d.rollout_state == RolloutState::Completed)
            .cloned();
        if breaker.rollback
            && let Some(target) = target
        {
            let next = serial(&primary.id) + 1;
            let id = deployment_id(next);
            deployments[0].status = DeploymentStatus::Active;
            deployments.insert(
                0,
                Deployment {
                    id: id.clone(),
                    status: DeploymentStatus::Primary,
                    task_definition: target.task_definition.clone(),
                    task_definition_revision: target.task_definition_revision,
                    desired_count: desired,
                    pending_count: 0,
                    running_count: 0,
                    failed_tasks: 0,
                    rollout_state: RolloutState::InProgress,
                    rollout_state_reason: Some(format!(
                        "rolling back to {} after {} failed",
                        target.id, primary.id
                    )),
                    created_at: Some(Time(now)),
                    updated_at: Some(Time(now)),
                },
            );
            plan.events.push(Note::normal(
                "RollbackStarted",
                format!(
                    "service ({name}) rolls back to {}:{} as deployment {id}",
                    target.task_definition, target.task_definition_revision
                ),
            ));
            // The next reconcile plans against the rollback deployment.
            plan.status = status(
                input,
                &previous,
                deployments,
                desired,
                &facts,
                degraded,
                &mut plan.events,
            );
            plan.requeue = Some(Duration::from_millis(100));
            return plan;
        }
    }
    let primary = deployments[0].clone();
    let primary_failed = primary.rollout_state == RolloutState::Failed;
    if let Some(first) = deployments.first_mut() {
        first.failed_tasks = failed_count;
    }

    let (min_percent, max_percent) = spec
        .deployment_configuration
        .bounds(spec.scheduling_strategy);
    let min_healthy = (i64::from(desired) * i64::from(min_percent) + 99) / 100;
    let max_total = i64::from(desired) * i64::from(max_percent) / 100;
    let grace = Duration::from_secs(
        u64::try_from(spec.health_check_grace_period_seconds.max(0)).unwrap_or(0),
    );

    // Sort live tasks into those that count toward desiredCount and those
    // to replace.
    let eligible_names: Vec<&str> = eligible.iter().map(|i| i.name.as_str()).collect();
    let mut keep: Vec<&Facts<'_>> = Vec::new();
    let mut replace: Vec<(&Facts<'_>, String, bool)> = Vec::new();
    let mut kept_on: HashMap<&str, usize> = HashMap::new();
    let reason_scaling = format!("Scaling activity initiated by (deployment {})", primary.id);
    let mut ordered: Vec<&Facts<'_>> = facts.iter().filter(|f| f.live && !f.stopping).collect();
    // Running tasks first, so a DAEMON instance keeps its running task.
    ordered.sort_by_key(|f| {
        (
            !f.healthy,
            !f.running,
            f.task.creation_timestamp().map(|t| t.0),
        )
    });
    for f in ordered {
        if f.unhealthy() {
            let past_grace = f.started.is_none_or(|s| after(s, grace) <= now);
            if past_grace {
                replace.push((f, HEALTH_CHECKS_FAILED.to_owned(), true));
                continue;
            }
            if let Some(s) = f.started {
                plan.requeue = sooner(plan.requeue, wait(now, after(s, grace)));
            }
        }
        let on_draining = f
            .instance
            .is_some_and(|i| instance_draining.get(i).copied().unwrap_or(false));
        if !is_primary(f) || on_draining {
            replace.push((f, reason_scaling.clone(), false));
            continue;
        }
        if daemon {
            match f.instance {
                Some(i) if eligible_names.contains(&i) && !kept_on.contains_key(i) => {
                    kept_on.insert(i, 1);
                    keep.push(f);
                }
                _ => replace.push((f, reason_scaling.clone(), false)),
            }
        } else {
            keep.push(f);
        }
    }
    let total = i64::try_from(facts.iter().filter(|f| f.live).count()).unwrap_or(i64::MAX);
    let healthy_total = i64::try_from(facts.iter().filter(|f| f.healthy).count()).unwrap_or(0);

    // Start what is missing, unless the deployment failed or is throttled.
    let mut create = 0i64;
    let mut daemon_targets: Vec<String> = Vec::new();
    let throttled_until = (failed_count > 0)
        .then(|| failures.iter().filter_map(|t| stopped_at(t)).max())
        .flatten()
        .map(|last| after(last, backoff(failed_count)))
        .filter(|until| *until > now);
    if !primary_failed && primary_snapshot.is_some() {
        if daemon {
            let occupied: Vec<&str> = facts
                .iter()
                .filter(|f| f.live)
                .filter_map(|f| f.instance)
                .collect();
            daemon_targets = eligible_names
                .iter()
                .filter(|i| !occupied.contains(i))
                .map(|i| (*i).to_owned())
                .collect();
            create = i64::try_from(daemon_targets.len()).unwrap_or(0);
        } else {
            let want = i64::from(desired) - i64::try_from(keep.len()).unwrap_or(0);
            create = want.min(max_total - total).max(0);
        }
        if create > 0
            && let Some(until) = throttled_until
        {
            plan.events.push(Note::warning(
                "TasksThrottled",
                format!(
                    "service ({name}) is unable to consistently start tasks successfully: {failed_count} failed in a row; next start after {until}"
                ),
            ));
            plan.requeue = sooner(plan.requeue, wait(now, until));
            create = 0;
            daemon_targets.clear();
        }
    }
    if primary_snapshot.is_none() && degraded.is_none() {
        degraded = Some((
            "TaskDefinitionNotFound",
            format!(
                "no snapshot of {}:{} is left to start tasks from",
                primary.task_definition, primary.task_definition_revision
            ),
        ));
    }
    if let Some(definition) = &primary_snapshot {
        let serial = serial(&primary.id);
        if daemon {
            for instance in daemon_targets {
                plan.create.push(NewTask {
                    deployment: serial,
                    revision: primary.task_definition_revision,
                    definition: definition.clone(),
                    instance: Some(instance),
                });
            }
        } else {
            for _ in 0..create {
                plan.create.push(NewTask {
                    deployment: serial,
                    revision: primary.task_definition_revision,
                    definition: definition.clone(),
                    instance: None,
                });
            }
        }
    }

    // Scale in: the surplus of the current revision, not-yet-running and
    // the most crowded instances' tasks first.
    if !daemon && keep.len() > usize::try_from(desired).unwrap_or(0) {
        let surplus = keep.len() - usize::try_from(desired).unwrap_or(0);
        // Not yet running first; then, one at a time, the youngest task on
        // the instance that has the most, so the spread stays even.
        let (mut waiting, running): (Vec<&Facts<'_>>, Vec<&Facts<'_>>) =
            keep.iter().partition(|f| !f.running);
        waiting.sort_by_key(|f| std::cmp::Reverse(f.task.creation_timestamp().map(|t| t.0)));
        let mut per_instance: BTreeMap<&str, Vec<&Facts<'_>>> = BTreeMap::new();
        for f in running {
            per_instance
                .entry(f.instance.unwrap_or_default())
                .or_default()
                .push(f);
        }
        for tasks in per_instance.values_mut() {
            tasks.sort_by_key(|f| f.task.creation_timestamp().map(|t| t.0));
        }
        let mut victims: Vec<&Facts<'_>> = waiting.into_iter().take(surplus).collect();
        while victims.len() < surplus {
            let Some(tasks) = per_instance.values_mut().max_by_key(|tasks| tasks.len()) else {
                break;
            };
            match tasks.pop() {
                Some(f) => victims.push(f),
                None => break,
            }
        }
        for f in victims {
            plan.stop.push(stop(
                f,
                StopCode::ServiceSchedulerInitiated,
                reason_scaling.clone(),
            ));
        }
    }

    // Replace: what does not count as healthy goes at once; healthy tasks
    // only while enough healthy ones remain.
    let mut budget = healthy_total - min_healthy;
    replace.sort_by_key(|(f, _, _)| f.healthy);
    for (f, reason, health_failure) in replace {
        let old_revision = !is_primary(f);
        if primary_failed && old_revision && !health_failure {
            // A failed deployment without rollback leaves the old tasks be.
            continue;
        }
        if f.healthy {
            if budget <= 0 {
                continue;
            }
            budget -= 1;
        }
        plan.stop
            .push(stop(f, StopCode::ServiceSchedulerInitiated, reason));
    }

    // Completion: the primary alone, at desiredCount, all healthy.
    let primary_healthy = keep.iter().filter(|f| f.healthy).count();
    let others_live = facts
        .iter()
        .filter(|f| f.live)
        .count()
        .saturating_sub(keep.len());
    let complete = primary_healthy == usize::try_from(desired).unwrap_or(0)
        && keep.len() == primary_healthy
        && others_live == 0
        && plan.create.is_empty();
    if deployments[0].rollout_state == RolloutState::InProgress && complete {
        let first = &mut deployments[0];
        first.rollout_state = RolloutState::Completed;
        first.rollout_state_reason = Some(format!("ECS deployment {} completed.", first.id));
        first.updated_at = Some(Time(now));
        plan.events.push(Note::normal(
            "DeploymentCompleted",
            format!("service ({name}) deployment {} completed", first.id),
        ));
    }
    if deployments[0].rollout_state == RolloutState::Failed && degraded.is_none() {
        degraded = Some((
            "CircuitBreakerTripped",
            deployments[0]
                .rollout_state_reason
                .clone()
                .unwrap_or_default(),
        ));
    }

    // Deployments: counts, and the drained ones retired.
    let target_revision = match input.definition {
        Definition::Valid { revision, .. } => Some(revision),
        _ => None,
    };
    let mut listed = Vec::new();
    for (i, mut d) in deployments.into_iter().enumerate() {
        let of: Vec<&Facts<'_>> = facts
            .iter()
            .filter(|f| {
                f.live
                    && f.revision == Some(d.task_definition_revision)
                    && f.task.spec.task_definition == d.task_definition
            })
            .collect();
        // A revision shared with the primary belongs to the primary.
        let shared = i > 0
            && d.task_definition_revision == primary.task_definition_revision
            && d.task_definition == primary.task_definition;
        let of: Vec<&Facts<'_>> = if shared { Vec::new() } else { of };
        d.running_count = i32::try_from(of.iter().filter(|f| f.running).count()).unwrap_or(0);
        d.pending_count =
            i32::try_from(of.iter().filter(|f| !f.running && !f.stopping).count()).unwrap_or(0);
        if i == 0 {
            d.status = DeploymentStatus::Primary;
            d.desired_count = desired;
        } else {
            d.desired_count = 0;
            d.status = if of.is_empty() {
                DeploymentStatus::Inactive
            } else {
                DeploymentStatus::Active
            };
            // Keep a drained failed deployment while it is still the
            // target, so it is not started again.
            let marker = d.rollout_state == RolloutState::Failed
                && Some(d.task_definition_revision) == target_revision
                && d.task_definition == spec.task_definition;
            if d.status == DeploymentStatus::Inactive && !marker {
                continue;
            }
        }
        listed.push(d);
    }
    if let Some((reason, message)) = unplaceable(&facts, &name)
        && degraded.is_none()
    {
        degraded = Some((reason, message));
    }
    plan.status = status(
        input,
        &previous,
        listed,
        desired,
        &facts,
        degraded,
        &mut plan.events,
    );
    if !plan.create.is_empty() {
        plan.events.push(Note::normal(
            "TasksStarted",
            format!(
                "service ({name}) has started {} tasks: (deployment {})",
                plan.create.len(),
                primary.id
            ),
        ));
    }
    if !plan.stop.is_empty() {
        plan.events.push(Note::normal(
            "TasksStopped",
            format!("service ({name}) has stopped {} tasks", plan.stop.len()),
        ));
    }
    plan.requeue = sooner(plan.requeue, Duration::from_secs(30));
    plan
}

fn stop(f: &Facts<'_>, code: StopCode, reason: String) -> Stop {
    Stop {
        task: f.name(),
        bound: f.task.spec.container_instance.is_some(),
        code,
        reason,
    }
}

/// Why a live task waits for a place, as its scheduler said.
fn unplaceable(facts: &[Facts<'_>], name: &str) -> Option<(&'static str, String)> {
    facts
        .iter()
        .filter(|f| f.live && !f.stopping && f.task.spec.container_instance.is_none())
        .find_map(|f| {
            let conditions = &f.task.status.as_ref()?.conditions;
            let c = events::condition(conditions, SCHEDULED)?;
            (c.status == "False").then(|| {
                (
                    "Unplaceable",
                    format!(
                        "service ({name}) was unable to place a task because no container instance met all of its requirements: {}",
                        c.message
                    ),
                )
            })
        })
}

fn status(
    input: &Input<'_>,
    previous: &ServiceStatus,
    deployments: Vec<Deployment>,
    desired: i32,
    facts: &[Facts<'_>],
    degraded: Option<(&'static str, String)>,
    events: &mut Vec<Note>,
) -> ServiceStatus {
    let service = input.service;
    let name = service.name_any();
    let generation = service.metadata.generation;
    let now = input.now;
    let running = facts.iter().filter(|f| f.live && f.running).count();
    let pending = facts
        .iter()
        .filter(|f| f.live && !f.running && !f.stopping)
        .count();
    let live = facts.iter().filter(|f| f.live).count();
    let mut conditions = previous.conditions.clone();
    let primary = deployments.first();
    let state = primary.map(|d| d.rollout_state);
    let steady = state == Some(RolloutState::Completed)
        && degraded.is_none()
        && usize::try_from(desired)
            .is_ok_and(|d| d == live && d == facts.iter().filter(|f| f.healthy).count());
    let (ready_reason, ready_message) = if steady {
        (
            "SteadyState",
            format!("service ({name}) has reached a steady state."),
        )
    } else if let Some((reason, message)) = &degraded {
        (*reason, message.clone())
    } else if state == Some(RolloutState::InProgress) {
        (
            "DeploymentInProgress",
            format!(
                "deployment {}: {running} of {desired} tasks running",
                primary.map(|d| d.id.as_str()).unwrap_or_default()
            ),
        )
    } else {
        (
            "TasksPending",
            format!("{running} of {desired} tasks running, {live} live"),
        )
    };
    let was_ready = events::is_true(&conditions, READY);
    events::set_condition(
        &mut conditions,
        READY,
        steady,
        ready_reason,
        ready_message.clone(),
        generation,
        now,
    );
    if steady && !was_ready {
        events.push(Note::normal("SteadyState", ready_message));
    }
    let (progressing, reason, message) = match (state, primary) {
        (Some(RolloutState::InProgress), Some(d)) => (
            true,
            "DeploymentInProgress",
            format!(
                "deployment {} of {}:{} in progress",
                d.id, d.task_definition, d.task_definition_revision
            ),
        ),
        (Some(RolloutState::Failed), Some(d)) => (
            false,
            "DeploymentFailed",
            d.rollout_state_reason.clone().unwrap_or_default(),
        ),
        (_, Some(d)) => (
            false,
            "DeploymentCompleted",
            format!(
                "deployment {} of {}:{} completed",
                d.id, d.task_definition, d.task_definition_revision
            ),
        ),
        (_, None) => (false, "NoDeployment", "no deployment yet".to_owned()),
    };
    events::set_condition(
        &mut conditions,
        PROGRESSING,
        progressing,
        reason,
        message,
        generation,
        now,
    );
    let was_degraded =
        events::condition(&conditions, DEGRADED).map(|c| (c.status.clone(), c.message.clone()));
    match &degraded {
        Some((reason, message)) => {
            events::set_condition(
                &mut conditions,
                DEGRADED,
                true,
                reason,
                message.clone(),
                generation,
                now,
            );
            if was_degraded != Some(("True".to_owned(), message.clone()))
                && *reason != "CircuitBreakerTripped"
            {
                events.push(Note::warning(reason, message.clone()));
            }
        }
        None => events::set_condition(
            &mut conditions,
            DEGRADED,
            false,
            "AsExpected",
            "tasks start and place as expected",
            generation,
            now,
        ),
    }
    ServiceStatus {
        observed_generation: generation,
        desired_count: desired,
        running_count: i32::try_from(running).unwrap_or(i32::MAX),
        pending_count: i32::try_from(pending).unwrap_or(i32::MAX),
        selector: Some(format!("{SERVICE_LABEL}={name}")),
        deployments,
        conditions,
    }
}
