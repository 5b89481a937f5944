//! What a task's containers should do next: a pure function of the Task
//! (its definition snapshot, `desiredStatus`, and the status recorded so
//! far), what the runtime reports of its containers, and whether this
//! instance holds the task's allocation. The agent carries the actions
//! out and writes the status back; the status is the only memory, so a
//! restarted agent picks up where the last one stopped.

use std::{collections::BTreeMap, time::Duration};

use crds::{
    stop::{ESSENTIAL_EXITED, STOPPED_BY_USER},
    v1alpha1::{
        ContainerDefinition, ContainerLastStatus, ContainerStatus, DependencyCondition,
        DesiredStatus, HealthStatus, StopCode, TaskDefinitionSpec, TaskLastStatus, TaskStatus,
    },
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::runtime::{Observed, State};

/// What the plan is made from.
#[derive(Debug)]
pub struct Input<'a> {
    pub definition: &'a TaskDefinitionSpec,
    pub desired: DesiredStatus,
    /// This instance holds the task's allocation: nothing may start
    /// without it.
    pub fenced: bool,
    /// The status recorded so far.
    pub recorded: &'a TaskStatus,
    /// The task's containers as the runtime reports them, by container
    /// name.
    pub observed: &'a BTreeMap<String, Observed>,
    /// A launch that failed since the status was recorded.
    pub failure: Option<&'a Failure>,
    /// Why the agent stopped the task while cut off from the control
    /// plane (`--stop-tasks-when-disconnected`), until the status says so.
    pub cut_off: Option<&'a str>,
}

/// A container that could not be launched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub container: String,
    /// ECS-style, e.g. `CannotPullContainerError: ...`.
    pub reason: String,
}

/// One thing to do to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pull if needed, create and start.
    Launch(String),
    /// Start a container that was created but never started.
    Start(String),
    /// SIGTERM, then SIGKILL after the timeout.
    Stop {
        container: String,
        timeout: Duration,
    },
}

/// The actions to take now and the status to report.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: TaskStatus,
}

impl Plan {
    /// Everything is stopped and nothing more will happen.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.status.last_status == Some(TaskLastStatus::Stopped)
    }
}

#[must_use]
pub fn plan(input: &Input<'_>, now: Timestamp) -> Plan {
    let containers = &input.definition.container_definitions;
    let stop = stop_cause(input, now);
    let mut actions = Vec::new();
    match &stop {
        // Deregistering from its load balancers: the service scheduler
        // moves it on to STOPPING once its connections have drained.
        Some(_) if deactivating(input) => {}
        Some(_) => {
            // Dependents first: the reverse of the definition order.
            for def in containers.iter().rev() {
                if input
                    .observed
                    .get(&def.name)
                    .is_some_and(|o| o.state == State::Running)
                {
                    actions.push(Action::Stop {
                        container: def.name.clone(),
                        timeout: Duration::from_secs(u64::from(def.stop_timeout)),
                    });
                }
            }
        }
        None if input.fenced => {
            for def in containers {
                match input.observed.get(&def.name) {
                    None if dependencies_met(def, input.observed) => {
                        actions.push(Action::Launch(def.name.clone()));
                    }
                    Some(o)
                        if o.state == State::Created && dependencies_met(def, input.observed) =>
                    {
                        actions.push(Action::Start(def.name.clone()));
                    }
                    _ => {}
                }
            }
        }
        None => {}
    }
    let status = status(input, stop.as_ref(), now);
    Plan { actions, status }
}

/// Whether the service scheduler holds the task in DEACTIVATING (see
/// docs/agent.md, "Stopping"): its containers keep running until then.
fn deactivating(input: &Input<'_>) -> bool {
    input.recorded.last_status == Some(TaskLastStatus::Deactivating)
}

/// Why the task is stopping, if it is: what was recorded first wins.
fn stop_cause(input: &Input<'_>, now: Timestamp) -> Option<(StopCode, String)> {
    if let Some(code) = input.recorded.stop_code {
        let reason = input.recorded.stopped_reason.clone().unwrap_or_default();
        return Some((code, reason));
    }
    if let Some(failure) = input.failure {
        return Some((StopCode::TaskFailedToStart, failure.reason.clone()));
    }
    if let Some(reason) = input.cut_off {
        return Some((StopCode::TerminationNotice, reason.to_owned()));
    }
    if input.desired == DesiredStatus::Stopped {
        return Some((StopCode::UserInitiated, STOPPED_BY_USER.to_owned()));
    }
    let containers = &input.definition.container_definitions;
    if containers.iter().any(|def| {
        def.essential
            && input
                .observed
                .get(&def.name)
                .is_some_and(|o| o.state == State::Exited)
    }) {
        return Some((
            StopCode::EssentialContainerExited,
            ESSENTIAL_EXITED.to_owned(),
        ));
    }
    for def in containers {
        if input.observed.contains_key(&def.name) {
            continue;
        }
        for dependency in &def.depends_on {
            let observed = input.observed.get(&dependency.container_name);
            let timeout = containers
                .iter()
                .find(|d| d.name == dependency.container_name)
                .and_then(|d| d.start_timeout);
            if let Some(why) = never_met(dependency.condition, observed)
                .or_else(|| timed_out(dependency.condition, observed?, timeout?, now))
            {
                return Some((
                    StopCode::TaskFailedToStart,
                    format!(
                        "dependency of {} on {} ({}) can never be met: {why}",
                        def.name,
                        dependency.container_name,
                        condition_name(dependency.condition)
                    ),
                ));
            }
        }
    }
    None
}

/// The condition as ECS spells it.
fn condition_name(condition: DependencyCondition) -> &'static str {
    match condition {
        DependencyCondition::Start => "START",
        DependencyCondition::Complete => "COMPLETE",
        DependencyCondition::Success => "SUCCESS",
        DependencyCondition::Healthy => "HEALTHY",
    }
}

/// Whether a dependency that has not reached its condition has run out
/// of its `startTimeout`, counted from its start, as ECS's agent counts
/// it (only COMPLETE, SUCCESS and HEALTHY can take time to reach).
fn timed_out(
    condition: DependencyCondition,
    o: &Observed,
    timeout: u32,
    now: Timestamp,
) -> Option<String> {
    if condition == DependencyCondition::Start || condition_met(condition, o) {
        return None;
    }
    let started = o.started_at?;
    let waited = now.duration_since(started).as_secs();
    (waited >= i64::from(timeout))
        .then(|| format!("it did not get there within its startTimeout of {timeout} s"))
}

fn condition_met(condition: DependencyCondition, o: &Observed) -> bool {
    match condition {
        DependencyCondition::Start => matches!(o.state, State::Running | State::Exited),
        DependencyCondition::Complete => o.state == State::Exited,
        DependencyCondition::Success => o.state == State::Exited && o.exit_code == Some(0),
        DependencyCondition::Healthy => {
            o.state == State::Running && o.health == Some(HealthStatus::Healthy)
        }
    }
}

/// Its dependencies have reached their conditions, and the containers it
/// takes volumes from exist (Docker needs them at create).
fn dependencies_met(def: &ContainerDefinition, observed: &BTreeMap<String, Observed>) -> bool {
    let sources = def
        .volumes_from
        .iter()
        .all(|from| observed.contains_key(&from.source_container));
    sources
        && def.depends_on.iter().all(|dependency| {
            observed
                .get(&dependency.container_name)
                .is_some_and(|o| condition_met(dependency.condition, o))
        })
}

/// Why a dependency can no longer be met, if that is so.
fn never_met(condition: DependencyCondition, observed: Option<&Observed>) -> Option<String> {
    let o = observed?;
    match condition {
        DependencyCondition::Success if o.state == State::Exited && o.exit_code != Some(0) => {
            Some(format!("it exited with code {}", o.exit_code.unwrap_or(-1)))
        }
        DependencyCondition::Healthy if o.state == State::Exited => {
            Some("it exited before it was healthy".to_owned())
        }
        DependencyCondition::Healthy if o.health == Some(HealthStatus::Unhealthy) => {
            Some("it is unhealthy".to_owned())
        }
        _ => None,
    }
}

fn status(input: &Input<'_>, stop: Option<&(StopCode, String)>, now: Timestamp) -> TaskStatus {
    let recorded = input.recorded;
    let defs = &input.definition.container_definitions;
    let containers: Vec<ContainerStatus> = defs
        .iter()
        .map(|def| container_status(def, input, stop.is_some()))
        .collect();
    let any_running = input.observed.values().any(|o| o.state == State::Running);
    let last_status = match stop {
        Some(_) if any_running && deactivating(input) => TaskLastStatus::Deactivating,
        Some(_) if any_running => TaskLastStatus::Stopping,
        Some(_) => TaskLastStatus::Stopped,
        None if input.observed.is_empty() => TaskLastStatus::Pending,
        None if defs.iter().all(|def| {
            input.observed.get(&def.name).is_some_and(|o| {
                o.state == State::Running || (!def.essential && o.state == State::Exited)
            })
        }) =>
        {
            TaskLastStatus::Running
        }
        None => TaskLastStatus::Activating,
    };
    let stamp = |kept: &Option<Time>, now_applies: bool| {
        kept.clone().or_else(|| now_applies.then_some(Time(now)))
    };
    TaskStatus {
        observed_generation: recorded.observed_generation,
        last_status: Some(last_status),
        health_status: Some(task_health(defs, input.observed)),
        stop_code: stop.map(|(code, _)| *code),
        stopped_reason: stop.map(|(_, reason)| reason.clone()),
        containers,
        pull_started_at: recorded.pull_started_at.clone(),
        pull_stopped_at: recorded.pull_stopped_at.clone(),
        started_at: stamp(&recorded.started_at, last_status == TaskLastStatus::Running),
        stopping_at: stamp(&recorded.stopping_at, stop.is_some()),
        stopped_at: stamp(&recorded.stopped_at, last_status == TaskLastStatus::Stopped),
        conditions: recorded.conditions.clone(),
        // The controller's to write (`spec.protection`).
        protection: recorded.protection.clone(),
        // The stats loop's (usage.rs), written on its own interval.
        usage: recorded.usage.clone(),
    }
}

fn container_status(
    def: &ContainerDefinition,
    input: &Input<'_>,
    stopping: bool,
) -> ContainerStatus {
    let recorded = input
        .recorded
        .containers
        .iter()
        .find(|c| c.name == def.name);
    let Some(o) = input.observed.get(&def.name) else {
        // Not launched, or removed after the task stopped: say why it
        // never ran, or keep what was reported.
        if let Some(failure) = input.failure.filter(|f| f.container == def.name) {
            return ContainerStatus {
                name: def.name.clone(),
                runtime_id: None,
                image: Some(def.image.clone()),
                last_status: ContainerLastStatus::Stopped,
                exit_code: None,
                reason: Some(failure.reason.clone()),
                health_status: None,
                network_bindings: Vec::new(),
            };
        }
        let mut status = recorded.cloned().unwrap_or_else(|| ContainerStatus {
            name: def.name.clone(),
            runtime_id: None,
            image: Some(def.image.clone()),
            last_status: ContainerLastStatus::Pending,
            exit_code: None,
            reason: None,
            health_status: None,
            network_bindings: Vec::new(),
        });
        // A stopping task starts nothing more.
        if stopping {
            status.last_status = ContainerLastStatus::Stopped;
        }
        return status;
    };
    let exited = o.state == State::Exited;
    let reason = if exited && o.oom_killed {
        Some("OutOfMemoryError: Container killed due to memory usage".to_owned())
    } else {
        o.error.clone().filter(|e| !e.is_empty())
    };
    ContainerStatus {
        name: def.name.clone(),
        runtime_id: Some(o.id.clone()),
        image: Some(o.image.clone()),
        last_status: match o.state {
            State::Created => ContainerLastStatus::Pending,
            State::Running => ContainerLastStatus::Running,
            State::Exited => ContainerLastStatus::Stopped,
        },
        exit_code: if exited {
            o.exit_code.and_then(|c| i32::try_from(c).ok())
        } else {
            None
        },
        reason,
        health_status: def
            .health_check
            .as_ref()
            .map(|_| o.health.unwrap_or_default()),
        network_bindings: o.network_bindings.clone(),
    }
}

/// ECS: UNHEALTHY if any essential container with a health check is
/// unhealthy, HEALTHY if all of them are healthy, UNKNOWN otherwise (and
/// always when none has a health check).
fn task_health(
    defs: &[ContainerDefinition],
    observed: &BTreeMap<String, Observed>,
) -> HealthStatus {
    let checked: Vec<HealthStatus> = defs
        .iter()
        .filter(|def| def.essential && def.health_check.is_some())
        .map(|def| {
            observed
                .get(&def.name)
                .and_then(|o| o.health)
                .unwrap_or_default()
        })
        .collect();
    if checked.contains(&HealthStatus::Unhealthy) {
        HealthStatus::Unhealthy
    } else if !checked.is_empty() && checked.iter().all(|h| *h == HealthStatus::Healthy) {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(containers: serde_json::Value) -> TaskDefinitionSpec {
        serde_json::from_value(
            serde_json::json!({"containerDefinitions": containers, "memory": 64}),
        )
        .expect("a definition")
    }

    fn observed(
        name: &str,
        state: State,
        exit_code: Option<i64>,
        health: Option<HealthStatus>,
    ) -> (String, Observed) {
        (
            name.to_owned(),
            Observed {
                id: format!("id-{name}"),
                labels: BTreeMap::new(),
                image: "img".to_owned(),
                state,
                exit_code,
                health,
                oom_killed: false,
                started_at: None,
                error: None,
                network_bindings: Vec::new(),
            },
        )
    }

    fn run(
        definition: &TaskDefinitionSpec,
        observed: &[(String, Observed)],
        recorded: &TaskStatus,
        desired: DesiredStatus,
        fenced: bool,
    ) -> Plan {
        let observed: BTreeMap<String, Observed> = observed.iter().cloned().collect();
        plan(
            &Input {
                definition,
                desired,
                fenced,
                recorded,
                observed: &observed,
                failure: None,
                cut_off: None,
            },
            Timestamp::UNIX_EPOCH,
        )
    }

    /// A fenced task, desired RUNNING, nothing recorded yet, planned at
    /// `now`.
    fn fresh_at(
        definition: &TaskDefinitionSpec,
        observed: &[(String, Observed)],
        cut_off: Option<&str>,
        now: Timestamp,
    ) -> Plan {
        let observed: BTreeMap<String, Observed> = observed.iter().cloned().collect();
        plan(
            &Input {
                definition,
                desired: DesiredStatus::Running,
                fenced: true,
                recorded: &TaskStatus::default(),
                observed: &observed,
                failure: None,
                cut_off,
            },
            now,
        )
    }

    fn two_with(condition: &str) -> TaskDefinitionSpec {
        definition(serde_json::json!([
            {"name": "db", "image": "img", "essential": false},
            {"name": "app", "image": "img", "dependsOn": [{"containerName": "db", "condition": condition}]},
        ]))
    }

    #[test]
    fn nothing_starts_without_the_allocation() {
        let def = two_with("START");
        let plan = run(
            &def,
            &[],
            &TaskStatus::default(),
            DesiredStatus::Running,
            false,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.last_status, Some(TaskLastStatus::Pending));
    }

    #[test]
    fn dependents_wait_for_their_condition() {
        let def = two_with("HEALTHY");
        let fresh = run(
            &def,
            &[],
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(fresh.actions, [Action::Launch("db".into())]);
        let starting = [observed(
            "db",
            State::Running,
            None,
            Some(HealthStatus::Unknown),
        )];
        let plan = run(
            &def,
            &starting,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert!(plan.actions.is_empty(), "app waits for db to be healthy");
        assert_eq!(plan.status.last_status, Some(TaskLastStatus::Activating));
        let healthy = [observed(
            "db",
            State::Running,
            None,
            Some(HealthStatus::Healthy),
        )];
        let plan = run(
            &def,
            &healthy,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(plan.actions, [Action::Launch("app".into())]);

        let success = two_with("SUCCESS");
        let done = [observed("db", State::Exited, Some(0), None)];
        let plan = run(
            &success,
            &done,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(plan.actions, [Action::Launch("app".into())]);
    }

    #[test]
    fn a_dependency_past_its_start_timeout_fails_the_task() {
        let def = definition(serde_json::json!([
            {"name": "db", "image": "img", "essential": false, "startTimeout": 5},
            {"name": "app", "image": "img", "dependsOn": [{"containerName": "db", "condition": "COMPLETE"}]},
        ]));
        let (name, mut db) = observed("db", State::Running, None, None);
        db.started_at = Some(Timestamp::UNIX_EPOCH);
        let started = [(name, db)];
        let at = |seconds: i64| {
            let now = Timestamp::from_second(seconds).expect("a time");
            fresh_at(&def, &started, None, now)
        };
        let waiting = at(4);
        assert_eq!(waiting.status.stop_code, None, "4 s of 5: it waits");
        assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
        let given_up = at(5);
        assert_eq!(given_up.status.stop_code, Some(StopCode::TaskFailedToStart));
        assert_eq!(
            given_up.status.stopped_reason.as_deref(),
            Some(
                "dependency of app on db (COMPLETE) can never be met: it did not get there within its startTimeout of 5 s"
            )
        );
        assert_eq!(
            given_up.actions,
            vec![Action::Stop {
                container: "db".into(),
                timeout: Duration::from_secs(30)
            }]
        );
    }

    #[test]
    fn a_container_taking_volumes_from_another_is_created_after_it() {
        let def = definition(serde_json::json!([
            {"name": "app", "image": "img", "volumesFrom": [{"sourceContainer": "data", "readOnly": true}]},
            {"name": "data", "image": "img", "essential": false},
        ]));
        let first = run(
            &def,
            &[],
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(first.actions, vec![Action::Launch("data".into())]);
        let created = [observed("data", State::Created, None, None)];
        let next = run(
            &def,
            &created,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(
            next.actions,
            vec![Action::Launch("app".into()), Action::Start("data".into())]
        );
    }

    #[test]
    fn a_dependency_that_can_never_be_met_fails_the_task() {
        let def = two_with("SUCCESS");
        let failed = [observed("db", State::Exited, Some(2), None)];
        let plan = run(
            &def,
            &failed,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.stop_code, Some(StopCode::TaskFailedToStart));
        assert_eq!(
            plan.status.stopped_reason.as_deref(),
            Some("dependency of app on db (SUCCESS) can never be met: it exited with code 2")
        );
        assert_eq!(plan.status.last_status, Some(TaskLastStatus::Stopped));
    }

    #[test]
    fn an_essential_exit_stops_the_rest_and_a_non_essential_one_does_not() {
        let def = two_with("START");
        let side_exited = [
            observed("db", State::Exited, Some(7), None),
            observed("app", State::Running, None, None),
        ];
        let plan = run(
            &def,
            &side_exited,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.last_status, Some(TaskLastStatus::Running));
        assert_eq!(plan.status.containers[0].exit_code, Some(7));

        let app_exited = [
            observed("db", State::Running, None, None),
            observed("app", State::Exited, Some(3), None),
        ];
        let plan = run(
            &def,
            &app_exited,
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(
            plan.actions,
            [Action::Stop {
                container: "db".into(),
                timeout: Duration::from_secs(30)
            }]
        );
        assert_eq!(
            plan.status.stop_code,
            Some(StopCode::EssentialContainerExited)
        );
        assert_eq!(
            plan.status.stopped_reason.as_deref(),
            Some(ESSENTIAL_EXITED)
        );
        assert_eq!(plan.status.last_status, Some(TaskLastStatus::Stopping));
        assert_eq!(plan.status.containers[1].exit_code, Some(3));
    }

    #[test]
    fn stopping_goes_in_reverse_order_and_the_first_cause_is_kept() {
        let def = two_with("START");
        let both = [
            observed("db", State::Running, None, None),
            observed("app", State::Running, None, None),
        ];
        let plan = run(
            &def,
            &both,
            &TaskStatus::default(),
            DesiredStatus::Stopped,
            true,
        );
        let order: Vec<&str> = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Stop { container, .. } => container.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["app", "db"]);
        assert_eq!(plan.status.stop_code, Some(StopCode::UserInitiated));

        // A cause once recorded stays, whatever happens next.
        let recorded = TaskStatus {
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: Some(ESSENTIAL_EXITED.into()),
            ..TaskStatus::default()
        };
        let plan = run(&def, &both, &recorded, DesiredStatus::Stopped, true);
        assert_eq!(
            plan.status.stop_code,
            Some(StopCode::EssentialContainerExited)
        );
        let gone = run(&def, &[], &recorded, DesiredStatus::Running, true);
        assert!(gone.actions.is_empty(), "a stopped task never starts again");
        assert!(gone.finished());
    }

    #[test]
    fn a_task_cut_off_from_the_control_plane_stops_and_says_why() {
        let def = two_with("START");
        let reason = "the agent could not reach the control plane for 30 s";
        let cut_off = |observed: &[(String, Observed)]| {
            fresh_at(&def, observed, Some(reason), Timestamp::UNIX_EPOCH)
        };
        let running = cut_off(&[
            observed("db", State::Running, None, None),
            observed("app", State::Running, None, None),
        ]);
        assert_eq!(running.actions.len(), 2, "both stop: {:?}", running.actions);
        assert_eq!(running.status.stop_code, Some(StopCode::TerminationNotice));
        // Once stopped, it is the cut-off that is reported, not the exit of
        // an essential container.
        let stopped = cut_off(&[
            observed("db", State::Exited, Some(143), None),
            observed("app", State::Exited, Some(143), None),
        ]);
        assert!(stopped.finished());
        assert_eq!(stopped.status.stop_code, Some(StopCode::TerminationNotice));
        assert_eq!(stopped.status.stopped_reason.as_deref(), Some(reason));
        // Without it, the same exits are an essential container's.
        let plain = run(
            &def,
            &[
                observed("db", State::Exited, Some(143), None),
                observed("app", State::Exited, Some(143), None),
            ],
            &TaskStatus::default(),
            DesiredStatus::Running,
            true,
        );
        assert_eq!(
            plain.status.stop_code,
            Some(StopCode::EssentialContainerExited)
        );
    }

    #[test]
    fn a_deactivating_task_keeps_running_until_it_is_moved_on() {
        let def = two_with("START");
        let both = [
            observed("db", State::Running, None, None),
            observed("app", State::Running, None, None),
        ];
        let draining = TaskStatus {
            last_status: Some(TaskLastStatus::Deactivating),
            stop_code: Some(StopCode::ServiceSchedulerInitiated),
            stopped_reason: Some("Scaling activity initiated by (deployment ecs-svc/1)".into()),
            ..TaskStatus::default()
        };
        let held = run(&def, &both, &draining, DesiredStatus::Stopped, true);
        assert!(held.actions.is_empty(), "{:?}", held.actions);
        assert_eq!(held.status.last_status, Some(TaskLastStatus::Deactivating));
        assert_eq!(
            held.status.stop_code,
            Some(StopCode::ServiceSchedulerInitiated)
        );

        let released = TaskStatus {
            last_status: Some(TaskLastStatus::Stopping),
            ..draining.clone()
        };
        let stopping = run(&def, &both, &released, DesiredStatus::Stopped, true);
        assert_eq!(stopping.actions.len(), 2, "{:?}", stopping.actions);
        assert_eq!(stopping.status.last_status, Some(TaskLastStatus::Stopping));

        // Nothing left running: nothing to drain.
        let exited = [
            observed("db", State::Exited, Some(0), None),
            observed("app", State::Exited, Some(0), None),
        ];
        let done = run(&def, &exited, &draining, DesiredStatus::Stopped, true);
        assert_eq!(done.status.last_status, Some(TaskLastStatus::Stopped));
    }

    #[test]
    fn task_health_follows_essential_containers_with_checks() {
        let def = definition(serde_json::json!([
            {"name": "a", "image": "img", "healthCheck": {"command": ["CMD", "true"]}},
            {"name": "b", "image": "img", "essential": false, "healthCheck": {"command": ["CMD", "true"]}},
        ]));
        let status = |a, b| {
            run(
                &def,
                &[
                    observed("a", State::Running, None, Some(a)),
                    observed("b", State::Running, None, Some(b)),
                ],
                &TaskStatus::default(),
                DesiredStatus::Running,
                true,
            )
            .status
            .health_status
        };
        assert_eq!(
            status(HealthStatus::Healthy, HealthStatus::Unhealthy),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(
            status(HealthStatus::Unhealthy, HealthStatus::Healthy),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(
            status(HealthStatus::Unknown, HealthStatus::Healthy),
            Some(HealthStatus::Unknown)
        );
    }
}
