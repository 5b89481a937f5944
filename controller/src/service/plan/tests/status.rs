use crds::{
    conditions::{self, ConditionType},
    v1alpha1::{Deployment, HealthStatus, RolloutState, Service},
};
use serde_json::json;

use super::{at, condition, deployment, facts, health, running, service, task, unplaced};
use crate::service::plan::{
    Definition, Input,
    status::{Degraded, Report, definition_problem, unplaceable},
};

fn report(
    svc: &Service,
    deployments: Vec<Deployment>,
    tasks: &[crds::v1alpha1::Task],
    degraded: Option<Degraded>,
) -> (crds::v1alpha1::ServiceStatus, Vec<(&'static str, String)>) {
    report_at(svc, deployments, tasks, degraded, 100)
}

fn report_at(
    svc: &Service,
    deployments: Vec<Deployment>,
    tasks: &[crds::v1alpha1::Task],
    degraded: Option<Degraded>,
    now: i64,
) -> (crds::v1alpha1::ServiceStatus, Vec<(&'static str, String)>) {
    let shared = super::shared(tasks);
    let input = Input {
        service: svc,
        definition: Definition::Missing,
        tasks: &shared,
        instances: &[],
        targets: &crate::service::plan::targets::Targets::default(),
        former: &[],
        now: at(now),
    };
    let facts = facts(tasks, false);
    let mut events = Vec::new();
    let status = Report::new(&input).status(deployments, 2, &facts, degraded, &mut events);
    (
        status,
        events.into_iter().map(|n| (n.reason, n.message)).collect(),
    )
}

fn state(status: &crds::v1alpha1::ServiceStatus, type_: ConditionType) -> (String, String) {
    let c = conditions::find(&status.conditions, type_).expect("the condition");
    (c.status.clone(), c.reason.clone())
}

#[test]
fn ready_progressing_and_degraded_follow_the_primary_and_the_tasks() {
    let svc = service(json!({"desiredCount": 2}));
    let two = [
        running(task("a", 1, 0), "i-1", 1),
        running(task("b", 1, 0), "i-2", 1),
    ];
    let one = [running(task("a", 1, 0), "i-1", 1), task("b", 1, 0)];
    let done = deployment(1, 1, RolloutState::Completed);
    let rolling = deployment(1, 1, RolloutState::InProgress);
    let failed = Degraded {
        reason: "CircuitBreakerTripped",
        message: "3 failed".into(),
    };
    let mut failed_deployment = deployment(1, 1, RolloutState::Failed);
    failed_deployment.rollout_state_reason = Some("3 failed".into());
    // (deployments, tasks, degraded) → Ready, Progressing, Degraded
    let cases = [
        (
            vec![done.clone()],
            &two,
            None,
            ("True", "SteadyState"),
            ("False", "DeploymentCompleted"),
            ("False", "AsExpected"),
        ),
        (
            vec![done.clone()],
            &one,
            None,
            ("False", "TasksPending"),
            ("False", "DeploymentCompleted"),
            ("False", "AsExpected"),
        ),
        (
            vec![rolling],
            &one,
            None,
            ("False", "DeploymentInProgress"),
            ("True", "DeploymentInProgress"),
            ("False", "AsExpected"),
        ),
        (
            vec![failed_deployment],
            &one,
            Some(failed),
            ("False", "CircuitBreakerTripped"),
            ("False", "DeploymentFailed"),
            ("True", "CircuitBreakerTripped"),
        ),
        (
            vec![],
            &one,
            None,
            ("False", "TasksPending"),
            ("False", "NoDeployment"),
            ("False", "AsExpected"),
        ),
    ];
    for (i, (deployments, tasks, degraded, ready, progressing, degraded_state)) in
        cases.into_iter().enumerate()
    {
        let (status, _) = report(&svc, deployments, tasks, degraded);
        let pair = |(s, r): (&str, &str)| (s.to_owned(), r.to_owned());
        assert_eq!(
            state(&status, ConditionType::Ready),
            pair(ready),
            "case {i}"
        );
        assert_eq!(
            state(&status, ConditionType::Progressing),
            pair(progressing),
            "case {i}"
        );
        assert_eq!(
            state(&status, ConditionType::Degraded),
            pair(degraded_state),
            "case {i}"
        );
    }
    let (status, _) = report(&svc, vec![done], &one, None);
    assert_eq!(
        (
            status.running_count,
            status.pending_count,
            status.desired_count
        ),
        (1, 1, 2)
    );
    assert_eq!(status.selector.as_deref(), Some("gantry.dev/service=web"));
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn events_go_out_when_a_condition_changes_not_on_every_reconcile() {
    let mut svc = service(json!({"desiredCount": 2}));
    let two = [
        health(running(task("a", 1, 0), "i-1", 1), HealthStatus::Healthy),
        running(task("b", 1, 0), "i-2", 1),
    ];
    let done = deployment(1, 1, RolloutState::Completed);
    let (status, events) = report(&svc, vec![done.clone()], &two, None);
    assert_eq!(
        events,
        [(
            "SteadyState",
            "service (web) has reached a steady state.".to_owned()
        )]
    );
    svc.status = Some(status.clone());
    let (again, events) = report_at(&svc, vec![done.clone()], &two, None, 200);
    assert!(events.is_empty(), "still steady: {events:?}");
    let ready = conditions::find(&again.conditions, ConditionType::Ready).expect("Ready");
    assert_eq!(
        ready.last_transition_time.0,
        at(100),
        "kept while the status stays"
    );

    let unplaceable = || Degraded {
        reason: "Unplaceable",
        message: "no room".into(),
    };
    let (status, events) = report(&svc, vec![done.clone()], &two, Some(unplaceable()));
    assert_eq!(events, [("Unplaceable", "no room".to_owned())]);
    svc.status = Some(status);
    let (_, events) = report(&svc, vec![done.clone()], &two, Some(unplaceable()));
    assert!(events.is_empty(), "same message: no new warning");
    let (_, events) = report(
        &svc,
        vec![done],
        &two,
        Some(Degraded {
            reason: "CircuitBreakerTripped",
            message: "tripped".into(),
        }),
    );
    assert!(events.is_empty(), "the breaker has its own event");
}

#[test]
fn degraded_says_why_the_definition_cannot_run_or_a_task_cannot_be_placed() {
    let def = super::definition(false);
    let valid = Definition::Valid {
        revision: 1,
        spec: &def,
    };
    assert_eq!(definition_problem(valid, "web"), None);
    assert_eq!(
        definition_problem(Definition::Missing, "web").map(|d| (d.reason, d.message)),
        Some((
            "TaskDefinitionNotFound",
            "task definition web was not found".to_owned()
        ))
    );
    assert_eq!(
        definition_problem(Definition::Invalid("bad cpu"), "web").map(|d| d.message),
        Some("task definition web cannot run: bad cpu".to_owned())
    );

    let mut placed_once = unplaced(task("placed", 1, 0), "full");
    placed_once.spec.container_instance = Some("i-1".into());
    let tasks = [
        task("fresh", 1, 0),
        placed_once,
        unplaced(task("waiting", 1, 0), "2 instances: insufficient memory"),
    ];
    let facts = facts(&tasks, false);
    let d = unplaceable(&facts, "web").expect("unplaceable");
    assert_eq!(d.reason, "Unplaceable");
    assert_eq!(
        d.message,
        "service (web) was unable to place a task because no container instance met all of its requirements: 2 instances: insufficient memory"
    );
    let mut scheduled = task("ok", 1, 0);
    scheduled
        .status
        .get_or_insert_default()
        .conditions
        .push(condition("Scheduled", "True", "placed"));
    assert_eq!(unplaceable(&super::facts(&[scheduled], false), "web"), None);
}
