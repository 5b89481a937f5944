//! What a Service needs next: a pure function from the Service, its task
//! definition, its tasks and the cluster's instances to the tasks to
//! start, the tasks to stop, the status to report and the events to
//! publish. No API call happens here.
//!
//! [`plan`] runs named steps, each a pure function with its own tests:
//! 1. [`desired`]: how many tasks, and on which instances for DAEMON;
//! 2. [`deployments`]: a new revision starts a deployment; the circuit
//!    breaker fails it, and with rollback redeploys the last completed;
//! 3. [`classify`]: live tasks into those kept and those to replace;
//! 4. [`starts`]: what to start, within `maximumPercent` and the start
//!    throttle;
//! 5. [`scale_in`]: which surplus tasks stop;
//! 6. [`replace`]: which replacements stop now, within
//!    `minimumHealthyPercent`;
//! 7. [`rebalance`]: with `rebalancing: ENABLED`, in steady state, one
//!    task moves when the leading spread is uneven;
//! 8. [`complete`]: whether the primary deployment is done;
//! 9. [`deployments::tally`] and [`status`]: counts, conditions, events;
//! 10. [`targets`]: behind load balancers, a task counts as healthy only
//!     when they say so, a stop first deregisters it (DEACTIVATING), and
//!     [`targets::release`] lets it stop once drained.
//!
//! [`deletion::deletion`] plans a Service being deleted (DRAINING):
//! every task stopped, drained first behind load balancers.
//!
//! The rules are ECS's, as docs/controller.md ("Services") lists them.

pub mod classify;
pub mod complete;
pub mod deletion;
pub mod deployments;
pub mod desired;
pub mod facts;
pub mod rebalance;
pub mod replace;
pub mod scale_in;
pub mod slots;
pub mod starts;
pub mod status;
pub mod targets;

use std::{cmp::Reverse, collections::BTreeSet, sync::Arc, time::Duration};

use crds::{
    stop,
    v1alpha1::{
        Deployment, Rebalancing, Reference, RolloutState, Service, ServiceStatus, StopCode, Task,
        TaskDefinitionSpec,
    },
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::{events::Note, placement::InstanceSpec};
use facts::{Facts, sooner};

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

#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub service: &'a Service,
    pub definition: Definition<'a>,
    /// The tasks this Service owns.
    pub tasks: &'a [Arc<Task>],
    /// Tasks an earlier Service of the same name left as STOPPED records
    /// when it was deleted: not this Service's, but their names are taken.
    pub former: &'a [Arc<Task>],
    pub instances: &'a [Arc<InstanceSpec>],
    /// What the service's load balancers report.
    pub targets: &'a targets::Targets,
    pub now: Timestamp,
}

/// A task to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// Its name: the deployment's next free slot ([`slots`]).
    pub name: String,
    pub deployment: u32,
    pub revision: i64,
    pub definition: TaskDefinitionSpec,
    /// The instance a DAEMON task is pinned to.
    pub instance: Option<String>,
    /// Started to move a task ([`rebalance`]): labelled so.
    pub rebalancing: bool,
}

/// A task to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub task: String,
    /// Bound to an instance (its agent stops it) or not (stopped here).
    pub bound: bool,
    pub code: StopCode,
    pub reason: String,
    /// RUNNING behind a load balancer: deregister it first (DEACTIVATING)
    /// and stop it once drained.
    pub drain: bool,
    /// The resourceVersion the task was seen at.
    pub version: Option<String>,
}

impl Stop {
    /// The service scheduler stops `f` for `reason`.
    #[must_use]
    pub fn by_scheduler(f: &Facts<'_>, reason: String) -> Self {
        Self {
            task: f.name(),
            bound: f.task.spec.container_instance.is_some(),
            code: StopCode::ServiceSchedulerInitiated,
            reason,
            drain: false,
            version: f.task.metadata.resource_version.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<NewTask>,
    pub stop: Vec<Stop>,
    /// DEACTIVATING tasks whose connections have drained, with the
    /// resourceVersion each was seen at: on to STOPPING.
    pub release: Vec<(String, Option<String>)>,
    /// The tasks this round counts healthy: by the primary deployment's
    /// health check and by every load balancer. Their endpoints are ready.
    pub healthy: BTreeSet<String>,
    pub status: ServiceStatus,
    pub events: Vec<Note>,
    /// When to look again even if nothing changes.
    pub requeue: Option<Duration>,
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

/// How often a service is looked at again when nothing changes.
const RESYNC: Duration = Duration::from_secs(30);

/// Plan the next step of a Service.
#[must_use]
pub fn plan(input: &Input<'_>) -> Plan {
    let mut problem = String::new();
    let input = &Input {
        definition: targets::checked(
            input.definition,
            &input.service.spec.load_balancers,
            &mut problem,
        ),
        ..*input
    };
    let spec = &input.service.spec;
    let name = input.service.name_any();
    let now = input.now;
    let mut plan = Plan::default();
    let mut deployments = input
        .service
        .status
        .as_ref()
        .map(|s| s.deployments.clone())
        .unwrap_or_default();
    deployments.sort_by_key(|d| Reverse(serial(&d.id)));
    let mut desired = desired::desired(spec, input.definition, input.instances);
    desired::held_while_disconnected(&mut desired, input.tasks);
    let report = status::Report::new(input);

    if let Definition::Valid { revision, .. } = input.definition {
        let target = (Reference::parse(&spec.task_definition).family, revision);
        plan.events.extend(deployments::start(
            &mut deployments,
            target,
            desired.count,
            &name,
            now,
        ));
    }
    let degraded = status::definition_problem(input.definition, &spec.task_definition);
    let Some(primary) = deployments.first().cloned() else {
        plan.status = report.status(Vec::new(), desired.count, &[], degraded, &mut plan.events);
        plan.requeue = Some(RESYNC);
        return plan;
    };
    let snapshot = snapshot_of(input, primary.task_definition_revision);
    let checked = facts::health_checked(snapshot.as_ref());
    let facts: Vec<Facts<'_>> = input
        .tasks
        .iter()
        .map(|t| Facts::of(t, checked).behind(input.targets).at(now))
        .collect();
    plan.healthy = facts
        .iter()
        .filter(|f| f.healthy)
        .map(Facts::name)
        .collect();
    let failures = deployments::failures(&facts, &primary);
    let failed_count = i32::try_from(failures.len()).unwrap_or(i32::MAX);
    let breaker = deployments::Breaker {
        config: &spec.deployment_configuration.deployment_circuit_breaker,
        failed: failed_count,
        desired: desired.count,
    };
    if breaker.judge(&mut deployments, &name, now, &mut plan.events)
        == deployments::Verdict::RolledBack
    {
        // The next reconcile plans against the rollback deployment.
        plan.status = report.status(
            deployments,
            desired.count,
            &facts,
            degraded,
            &mut plan.events,
        );
        plan.requeue = Some(Duration::from_millis(100));
        return plan;
    }
    deployments[0].failed_tasks = failed_count;
    let round = Round {
        input,
        name,
        primary: deployments[0].clone(),
        desired,
        facts: &facts,
        failures: &failures,
        snapshot,
    };
    let keep = round.act(&mut plan);
    round.report(&mut plan, deployments, &keep, degraded, &report);
    deregister(&mut plan, &facts, input);
    plan.requeue = sooner(plan.requeue, RESYNC);
    plan
}

/// Behind load balancers, RUNNING tasks are drained before they stop, and
/// drained ones are released.
fn deregister(plan: &mut Plan, facts: &[Facts<'_>], input: &Input<'_>) {
    if !input.targets.any() {
        return;
    }
    for stop in &mut plan.stop {
        stop.drain = facts.iter().any(|f| f.name() == stop.task && f.running);
    }
    let release = targets::release(facts, input.targets, input.now);
    plan.release = release.tasks;
    if let Some(wait) = release.requeue {
        plan.requeue = sooner(plan.requeue, wait);
    }
}

/// One round of a service with a primary deployment: what it starts and
/// stops, then what it reports.
struct Round<'a> {
    input: &'a Input<'a>,
    name: String,
    primary: Deployment,
    desired: desired::Desired<'a>,
    facts: &'a [Facts<'a>],
    failures: &'a [&'a Task],
    /// The primary revision's definition, if any is left.
    snapshot: Option<TaskDefinitionSpec>,
}

impl<'a> Round<'a> {
    /// Fill in the tasks to create and stop; returns the tasks kept.
    fn act(&self, plan: &mut Plan) -> Vec<&'a Facts<'a>> {
        let spec = &self.input.service.spec;
        let primary_failed = self.primary.rollout_state == RolloutState::Failed;
        let (min_percent, max_percent) = spec
            .deployment_configuration
            .bounds(spec.scheduling_strategy);
        let desired = i64::from(self.desired.count);
        let min_healthy = (desired * i64::from(min_percent) + 99) / 100;
        let max_total = desired * i64::from(max_percent) / 100;
        let instances = self.input.instances.iter();
        let draining: Vec<&str> = instances
            .clone()
            .filter_map(|i| i.draining.then_some(i.name.as_str()))
            .collect();
        let registered: Vec<&str> = instances.map(|i| i.name.as_str()).collect();
        let grace = u64::try_from(spec.health_check_grace_period_seconds.max(0)).unwrap_or(0);
        let classified = classify::classify(
            self.facts,
            &classify::Rules {
                primary: &self.primary,
                daemon: self.desired.daemon,
                eligible: &self.desired.eligible,
                disconnected: &self.desired.disconnected,
                draining: &draining,
                registered: &registered,
                grace: Duration::from_secs(grace),
                now: self.input.now,
            },
        );
        if let Some(wait) = classified.requeue {
            plan.requeue = sooner(plan.requeue, wait);
        }
        if !primary_failed {
            self.start(plan, classified.keep.len(), max_total);
        }
        let wanted = usize::try_from(self.desired.count).unwrap_or(0);
        // A task started to rebalance is one too many until it is healthy;
        // then scale-in stops one where the tasks crowd.
        let moving = (classified.keep.len() == wanted + 1)
            .then(|| classified.keep.iter().max_by_key(|f| f.created()))
            .flatten()
            .filter(|f| f.rebalancing() && !f.stopping);
        let arriving = moving.is_some_and(|f| !f.healthy && !f.unplaceable());
        if arriving {
            plan.requeue = sooner(plan.requeue, Duration::from_secs(5));
        }
        // Most rounds have nothing to scale in: the ranking is built only
        // for a surplus.
        if !self.desired.daemon && classified.keep.len() > wanted && !arriving {
            let scaling = if moving.is_some() {
                stop::rebalancing(&self.primary.id)
            } else {
                stop::scaling(&self.primary.id)
            };
            let balance = scale_in::Balance::new(&spec.placement_strategy, self.input.instances);
            // Protected tasks are never chosen: the others may not cover
            // the surplus.
            let surplus = classified.keep.len() - wanted;
            let (protected, open): (Vec<&Facts<'_>>, Vec<&Facts<'_>>) = classified
                .keep
                .iter()
                .partition(|f| f.protected_until.is_some());
            let victims = scale_in::victims(&open, open.len().saturating_sub(surplus), &balance);
            let short = surplus - victims.len();
            if short > 0 {
                plan.events.push(Note::normal(
                    "TasksProtected",
                    format!(
                        "service ({}) was unable to scale in due to (reason: {short} tasks under protection)",
                        self.name
                    ),
                ));
                self.wait_for(plan, &protected);
            }
            plan.stop.extend(
                victims
                    .into_iter()
                    .map(|f| Stop::by_scheduler(f, scaling.clone())),
            );
        }
        let healthy = i64::try_from(self.facts.iter().filter(|f| f.healthy).count()).unwrap_or(0);
        let keep = classified.keep.iter();
        // A replacement no instance can take is not coming.
        let coming = keep.clone().filter(|f| !f.healthy && !f.unplaceable());
        let cover = replace::Cover {
            daemon: self.desired.daemon,
            desired: usize::try_from(self.desired.count).unwrap_or(0),
            healthy: keep.filter(|f| f.healthy).count(),
            coming: coming.count() + plan.create.len(),
        };
        let unhealthy = classified.replace.iter().filter(|r| r.health_failure);
        let rules = replace::Rules {
            budget: healthy - min_healthy,
            primary_failed,
            unhealthy: replace::unhealthy_allowance(cover, unhealthy.count()),
        };
        let (held, replace): (Vec<_>, Vec<_>) = classified
            .replace
            .into_iter()
            .partition(|r| r.facts.protected_until.is_some() && !r.health_failure);
        if !held.is_empty() {
            let held: Vec<&Facts<'_>> = held.iter().map(|r| r.facts).collect();
            self.wait_for(plan, &held);
        }
        plan.stop.extend(replace::stops(replace, rules));
        let steady = classified.keep.len() == wanted
            && classified.keep.iter().all(|f| f.healthy)
            && !self.facts.iter().any(|f| f.live && f.stopping)
            && plan.create.is_empty()
            && plan.stop.is_empty();
        if steady && self.primary.rollout_state == RolloutState::Completed {
            self.rebalance(plan, &classified.keep, (min_healthy, max_total));
        }
        classified.keep
    }

    /// In steady state, move one task if the leading spread is uneven:
    /// start one more where it is thin if `maximumPercent` leaves room,
    /// else stop one where it crowds if `minimumHealthyPercent` allows.
    fn rebalance(
        &self,
        plan: &mut Plan,
        keep: &[&'a Facts<'a>],
        (min_healthy, max_total): (i64, i64),
    ) {
        let spec = &self.input.service.spec;
        if spec.rebalancing != Some(Rebalancing::Enabled) || self.desired.daemon {
            return;
        }
        let Some(definition) = &self.snapshot else {
            return;
        };
        let constraints: Vec<_> = spec
            .placement_constraints
            .iter()
            .chain(&definition.placement_constraints)
            .cloned()
            .collect();
        let spread = rebalance::Spread {
            strategy: &spec.placement_strategy,
            constraints: &constraints,
            definition,
            instances: self.input.instances,
        };
        let Some(imbalance) = rebalance::imbalance(&spread, keep) else {
            return;
        };
        let live = i64::try_from(self.facts.iter().filter(|f| f.live).count()).unwrap_or(i64::MAX);
        let healthy = i64::try_from(keep.len()).unwrap_or(0);
        let how = if live < max_total {
            plan.create = self.new_tasks(vec![None], true);
            "starting a task to take its place"
        } else if healthy > min_healthy {
            let balance = scale_in::Balance::new(&spec.placement_strategy, self.input.instances);
            let victims = scale_in::victims(keep, keep.len() - 1, &balance);
            let reason = stop::rebalancing(&self.primary.id);
            plan.stop.extend(
                victims
                    .into_iter()
                    .map(|f| Stop::by_scheduler(f, reason.clone())),
            );
            "stopping one there first (maximumPercent leaves no room for one more)"
        } else {
            return;
        };
        plan.events.push(Note::normal(
            "Rebalancing",
            format!(
                "service ({}) is rebalancing: {}; moving one task from {}, {how}",
                self.name,
                imbalance.describe(),
                imbalance.fullest.0
            ),
        ));
    }

    /// Look again when the first of these protections ends.
    fn wait_for(&self, plan: &mut Plan, protected: &[&Facts<'_>]) {
        if let Some(until) = protected.iter().filter_map(|f| f.protected_until).min() {
            plan.requeue = sooner(plan.requeue, facts::wait(self.input.now, until));
        }
    }

    /// Start what is missing, unless the start throttle holds.
    fn start(&self, plan: &mut Plan, kept: usize, max_total: i64) {
        if self.snapshot.is_none() {
            return;
        }
        let now = self.input.now;
        let starts = starts::starts(
            self.facts,
            &starts::Rules {
                daemon: self.desired.daemon,
                eligible: &self.desired.eligible,
                desired: self.desired.count,
                kept,
                max_total,
                failures: self.failures,
                now,
            },
        );
        if let Some(until) = starts.throttled_until {
            plan.events.push(Note::warning(
                "TasksThrottled",
                format!(
                    "service ({}) is unable to consistently start tasks successfully: {} failed in a row; next start after {until}",
                    self.name,
                    self.failures.len()
                ),
            ));
            plan.requeue = sooner(plan.requeue, facts::wait(now, until));
        }
        plan.create = self.new_tasks(starts.on, false);
    }

    /// Tasks of the primary deployment, one per entry of `on` (the
    /// instance a DAEMON task is pinned to), in the next free slots.
    fn new_tasks(&self, on: Vec<Option<String>>, rebalancing: bool) -> Vec<NewTask> {
        let Some(definition) = &self.snapshot else {
            return Vec::new();
        };
        let deployment = serial(&self.primary.id);
        let names = slots::next(
            &self.name,
            deployment,
            self.input
                .tasks
                .iter()
                .chain(self.input.former)
                .map(Arc::as_ref),
            on.len(),
        );
        on.into_iter()
            .zip(names)
            .map(|(instance, name)| NewTask {
                name,
                deployment,
                revision: self.primary.task_definition_revision,
                definition: definition.clone(),
                instance,
                rebalancing,
            })
            .collect()
    }

    /// Completion, deployments and status, and the events of this round.
    fn report(
        &self,
        plan: &mut Plan,
        mut deployments: Vec<Deployment>,
        keep: &[&Facts<'_>],
        mut degraded: Option<status::Degraded>,
        report: &status::Report<'_>,
    ) {
        let (name, now) = (&self.name, self.input.now);
        if self.snapshot.is_none() && degraded.is_none() {
            degraded = Some(status::Degraded::no_snapshot(&self.primary));
        }
        let done = complete::Done {
            keep,
            facts: self.facts,
            desired: self.desired.count,
            starting: !plan.create.is_empty(),
        };
        plan.events
            .extend(done.mark(&mut deployments[0], name, now));
        self.say_what_protection_holds(&mut deployments[0]);
        if deployments[0].rollout_state == RolloutState::Failed && degraded.is_none() {
            degraded = Some(status::Degraded::breaker(&deployments[0]));
        }
        let target_revision = match self.input.definition {
            Definition::Valid { revision, .. } => Some(revision),
            _ => None,
        };
        let family = Reference::parse(&self.input.service.spec.task_definition).family;
        let listed = deployments::tally(
            deployments,
            self.facts,
            (family, target_revision),
            self.desired.count,
        );
        if degraded.is_none() {
            degraded = status::unplaceable(self.facts, name);
        }
        plan.status = report.status(
            listed,
            self.desired.count,
            self.facts,
            degraded,
            &mut plan.events,
        );
        if !plan.create.is_empty() {
            plan.events.push(Note::normal(
                "TasksStarted",
                format!(
                    "service ({name}) has started {} tasks: (deployment {})",
                    plan.create.len(),
                    self.primary.id
                ),
            ));
        }
        if !plan.stop.is_empty() {
            plan.events.push(Note::normal(
                "TasksStopped",
                format!("service ({name}) has stopped {} tasks", plan.stop.len()),
            ));
        }
    }
}

impl Round<'_> {
    /// An in-progress deployment that waits for protected tasks of older
    /// ones says so, and until when.
    fn say_what_protection_holds(&self, primary: &mut Deployment) {
        if primary.rollout_state != RolloutState::InProgress {
            return;
        }
        let mut held: Vec<(String, Timestamp)> = self
            .facts
            .iter()
            .filter(|f| f.live && !f.stopping && !f.is_of(primary))
            .filter_map(|f| Some((f.name(), f.protected_until?)))
            .collect();
        if held.is_empty() {
            return;
        }
        held.sort();
        let until = held.iter().map(|(_, t)| *t).max().unwrap_or(self.input.now);
        let names: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
        primary.rollout_state_reason = Some(format!(
            "ECS deployment {} in progress: waiting for {} protected tasks of earlier deployments ({}); their protection ends by {until}.",
            primary.id,
            held.len(),
            names.join(", ")
        ));
    }
}

/// The definition of `revision`: the current spec if it is that revision,
/// else the snapshot a task of it carries.
fn snapshot_of(input: &Input<'_>, revision: i64) -> Option<TaskDefinitionSpec> {
    match input.definition {
        Definition::Valid { revision: r, spec } if r == revision => Some(spec.clone()),
        _ => input
            .tasks
            .iter()
            .filter(|t| t.spec.task_definition_revision == Some(revision))
            .find_map(|t| t.spec.definition.clone()),
    }
}

#[cfg(test)]
pub(super) mod tests;
