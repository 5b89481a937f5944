//! The steps together: whole plans for the cases docs/controller.md
//! describes.

use std::time::Duration;

use crds::{
    conditions::{self, ConditionType},
    v1alpha1::{DeploymentStatus, HealthStatus, RolloutState, Service, StopCode, Task},
};
use serde_json::json;

use super::{
    at, definition, deployment, health, ids, instance, running, service, stopped, task, unplaced,
};
use crate::{
    placement::InstanceSpec,
    service::plan::{Definition, Input, Plan, plan},
};

fn run(svc: &Service, revision: i64, tasks: &[Task], instances: &[InstanceSpec], now: i64) -> Plan {
    let def = definition(false);
    let tasks = &super::shared(tasks);
    let instances = &super::shared(instances);
    plan(&Input {
        service: svc,
        definition: Definition::Valid {
            revision,
            spec: &def,
        },
        tasks,
        instances,
        targets: &crate::service::plan::targets::Targets::default(),
        former: &[],
        now: at(now),
    })
}

/// The service as if earlier plans had written these deployments.
fn with_deployments(svc: &mut Service, deployments: Vec<crds::v1alpha1::Deployment>) {
    svc.status = Some(crds::v1alpha1::ServiceStatus {
        deployments,
        ..Default::default()
    });
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|n| n.reason).collect()
}

#[test]
fn a_new_service_starts_its_first_deployment_and_desired_count_tasks() {
    let svc = service(json!({"desiredCount": 3}));
    let p = run(&svc, 1, &[], &[], 0);
    assert_eq!(p.create.len(), 3);
    assert!(
        p.create
            .iter()
            .all(|t| t.deployment == 1 && t.revision == 1 && t.instance.is_none())
    );
    assert!(p.stop.is_empty());
    assert_eq!(reasons(&p), ["DeploymentStarted", "TasksStarted"]);
    assert_eq!(p.status.deployments[0].id, "ecs-svc/1");
    assert_eq!(p.requeue, Some(Duration::from_secs(30)));
}

#[test]
fn a_rolling_deployment_starts_new_tasks_before_it_stops_old_ones() {
    // minimumHealthyPercent 100, maximumPercent 200 (the REPLICA defaults).
    let mut svc = service(json!({"desiredCount": 2}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let old = [
        running(task("old-1", 1, 0), "i-1", 1),
        running(task("old-2", 1, 0), "i-2", 1),
    ];
    let p = run(&svc, 2, &old, &[], 10);
    assert_eq!(p.create.len(), 2, "up to 200%");
    assert!(p.stop.is_empty(), "none below 100% healthy");
    assert_eq!(
        ids(&p.status.deployments),
        [
            ("ecs-svc/2", DeploymentStatus::Primary),
            ("ecs-svc/1", DeploymentStatus::Active)
        ]
    );

    // The new tasks run: the old ones may go, and the deployment is not
    // done until they have.
    svc.status = Some(p.status);
    let mut both = old.to_vec();
    both.push(running(task("new-1", 2, 5), "i-1", 11));
    both.push(running(task("new-2", 2, 5), "i-2", 11));
    let p = run(&svc, 2, &both, &[], 20);
    let stopped: Vec<_> = p.stop.iter().map(|s| (s.task.as_str(), s.code)).collect();
    assert_eq!(
        stopped,
        [
            ("old-1", StopCode::ServiceSchedulerInitiated),
            ("old-2", StopCode::ServiceSchedulerInitiated)
        ]
    );
    assert_eq!(
        p.stop[0].reason,
        "Scaling activity initiated by (deployment ecs-svc/2)"
    );
    assert_eq!(
        p.status.deployments[0].rollout_state,
        RolloutState::InProgress
    );

    svc.status = Some(p.status);
    let p = run(&svc, 2, &both[2..], &[], 30);
    assert_eq!(
        p.status.deployments[0].rollout_state,
        RolloutState::Completed
    );
    assert_eq!(
        p.status.deployments.len(),
        1,
        "ecs-svc/1 drained and retired"
    );
    assert!(conditions::is_true(
        &p.status.conditions,
        ConditionType::Ready
    ));
    assert_eq!(reasons(&p), ["DeploymentCompleted", "SteadyState"]);
}

#[test]
fn a_failing_deployment_trips_the_breaker_and_rolls_back() {
    let mut svc = service(json!({
        "desiredCount": 1,
        "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}},
    }));
    with_deployments(
        &mut svc,
        vec![
            deployment(2, 2, RolloutState::InProgress),
            deployment(1, 1, RolloutState::Completed),
        ],
    );
    let failed: Vec<Task> = (0..3)
        .map(|i| {
            stopped(
                task(&format!("f{i}"), 2, i),
                StopCode::TaskFailedToStart,
                "pull",
                10 + i,
                None,
            )
        })
        .collect();
    let mut tasks = failed;
    tasks.push(running(task("old", 1, 0), "i-1", 1));
    let p = run(&svc, 2, &tasks, &[], 20);
    assert_eq!(reasons(&p), ["CircuitBreakerTripped", "RollbackStarted"]);
    assert!(
        p.create.is_empty() && p.stop.is_empty(),
        "the next plan acts"
    );
    assert_eq!(p.requeue, Some(Duration::from_millis(100)));
    let d = &p.status.deployments;
    assert_eq!(
        (d[0].id.as_str(), d[0].task_definition_revision),
        ("ecs-svc/3", 1)
    );
    assert_eq!(d[1].rollout_state, RolloutState::Failed);
}

#[test]
fn a_throttled_deployment_waits_before_starting_again() {
    let mut svc = service(json!({"desiredCount": 1}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::InProgress)]);
    let tasks = [
        stopped(
            task("f1", 1, 0),
            StopCode::EssentialContainerExited,
            "x",
            10,
            Some(2),
        ),
        stopped(
            task("f2", 1, 1),
            StopCode::EssentialContainerExited,
            "x",
            12,
            Some(2),
        ),
    ];
    // Two failures: 2 s after the last, at 14 s.
    let p = run(&svc, 1, &tasks, &[], 13);
    assert!(p.create.is_empty());
    assert_eq!(reasons(&p), ["TasksThrottled"]);
    assert_eq!(p.requeue, Some(Duration::from_millis(1_100)));
    assert_eq!(p.status.deployments[0].failed_tasks, 2);
    let p = run(&svc, 1, &tasks, &[], 14);
    assert_eq!(p.create.len(), 1);
}

#[test]
fn daemon_runs_one_task_per_eligible_instance_and_leaves_a_draining_one() {
    let mut svc = service(json!({"schedulingStrategy": "DAEMON"}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::InProgress)]);
    let mut draining = instance("b", &[]);
    draining.draining = true;
    let instances = [instance("a", &[]), draining, instance("c", &[])];
    let tasks = [
        health(running(task("on-a", 1, 0), "a", 1), HealthStatus::Healthy),
        running(task("on-b", 1, 0), "b", 1),
    ];
    let p = run(&svc, 1, &tasks, &instances, 10);
    let on: Vec<_> = p.create.iter().map(|t| t.instance.as_deref()).collect();
    assert_eq!(on, [Some("c")]);
    // DAEMON's minimum healthy is 0%: the drained instance's task goes.
    let stopped: Vec<_> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, ["on-b"]);
    assert_eq!(p.status.desired_count, 2);
}

#[test]
fn a_daemon_task_is_kept_while_its_agent_is_disconnected_and_none_started_there() {
    let mut svc = service(json!({"schedulingStrategy": "DAEMON"}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let mut blip = instance("b", &[]);
    blip.connected = false;
    let mut lost = instance("c", &[]);
    lost.connected = false;
    let instances = [instance("a", &[]), blip, lost, instance("d", &[])];
    let mut stopped = running(task("on-c", 1, 0), "c", 1);
    stopped
        .status
        .get_or_insert_with(Default::default)
        .last_status = Some(crds::v1alpha1::TaskLastStatus::Stopped);
    let tasks = [
        health(running(task("on-a", 1, 0), "a", 1), HealthStatus::Healthy),
        health(running(task("on-b", 1, 0), "b", 1), HealthStatus::Healthy),
        stopped,
    ];
    let p = run(&svc, 1, &tasks, &instances, 10);
    assert!(p.stop.is_empty(), "b's task is kept: {:?}", p.stop);
    let on: Vec<_> = p.create.iter().map(|t| t.instance.as_deref()).collect();
    assert_eq!(on, [Some("d")], "nothing starts on a disconnected instance");
    // a, d, and b which still holds its task; not c, whose task stopped.
    assert_eq!(p.status.desired_count, 3);
}

#[test]
fn without_a_definition_nothing_starts_and_degraded_says_why() {
    let svc = service(json!({"desiredCount": 2}));
    let p = plan(&Input {
        service: &svc,
        definition: Definition::Missing,
        tasks: &[],
        instances: &[],
        targets: &crate::service::plan::targets::Targets::default(),
        former: &[],
        now: at(0),
    });
    assert!(p.create.is_empty());
    let degraded =
        conditions::find(&p.status.conditions, ConditionType::Degraded).expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "TaskDefinitionNotFound")
    );
    assert_eq!(reasons(&p), ["TaskDefinitionNotFound"]);
    assert_eq!(p.requeue, Some(Duration::from_secs(30)));
}

#[test]
fn an_unhealthy_task_is_replaced_start_first_when_maximum_percent_allows() {
    let health_checked = definition(true);
    let at_revision_1 = |svc: &Service, tasks: &[Task]| {
        plan(&Input {
            service: svc,
            definition: Definition::Valid {
                revision: 1,
                spec: &health_checked,
            },
            tasks: &super::shared(tasks),
            instances: &[],
            targets: &crate::service::plan::targets::Targets::default(),
            former: &[],
            now: at(100),
        })
    };
    let sick = || {
        health(
            running(task("sick", 1, 0), "i-1", 1),
            HealthStatus::Unhealthy,
        )
    };
    let well = |name: &str, created| {
        health(
            running(task(name, 1, created), "i-2", created + 1),
            HealthStatus::Healthy,
        )
    };
    let stops = |p: &Plan| p.stop.iter().map(|s| s.task.clone()).collect::<Vec<_>>();

    // maximumPercent 200 (the default): the replacement starts, the sick
    // task keeps running until it is healthy.
    let mut svc = service(json!({"desiredCount": 2}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let p = at_revision_1(&svc, &[well("well", 0), sick()]);
    assert_eq!(p.create.len(), 1, "its replacement starts first");
    assert!(p.stop.is_empty(), "{:?}", p.stop);
    let starting = task("web-1-3", 1, 90);
    let p = at_revision_1(&svc, &[well("well", 0), sick(), starting]);
    assert!(p.create.is_empty() && p.stop.is_empty(), "{p:?}");
    let p = at_revision_1(&svc, &[well("well", 0), sick(), well("web-1-3", 90)]);
    assert_eq!(stops(&p), ["sick"], "the replacement is healthy");
    assert_eq!(p.stop[0].reason, crds::stop::HEALTH_CHECKS_FAILED);
    // A replacement no instance can take is not coming: the sick task
    // makes room for it.
    let stuck = unplaced(task("web-1-3", 1, 90), "1 instance: insufficient memory");
    let p = at_revision_1(&svc, &[well("well", 0), sick(), stuck]);
    assert_eq!(stops(&p), ["sick"], "{p:?}");

    // maximumPercent 100: no room for a replacement, so it stops first.
    let mut svc = service(json!({
        "desiredCount": 2,
        "deploymentConfiguration": {"maximumPercent": 100, "minimumHealthyPercent": 50},
    }));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let p = at_revision_1(&svc, &[well("well", 0), sick()]);
    assert!(p.create.is_empty(), "no room: {:?}", p.create);
    assert_eq!(stops(&p), ["sick"]);
}

/// `task` protected (`spec.protection`) until `until`, as the controller
/// timed it.
fn protected(mut task: Task, until: i64) -> Task {
    task.metadata.generation = Some(2);
    task.spec.protection = Some(crds::v1alpha1::TaskProtection {
        enabled: true,
        expires_in_minutes: 60,
    });
    task.status.get_or_insert_default().protection = Some(crds::v1alpha1::ProtectionStatus {
        observed_generation: 2,
        expiration_date: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
            until,
        ))),
    });
    task
}

#[test]
fn a_protected_task_survives_scale_in_and_deployments_until_its_protection_ends() {
    // Three running, one wanted: the protected one is never chosen.
    let mut svc = service(json!({"desiredCount": 1}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let tasks = [
        running(task("a", 1, 0), "i-1", 1),
        protected(running(task("b", 1, 2), "i-2", 3), 100),
        running(task("c", 1, 4), "i-3", 5),
    ];
    let p = run(&svc, 1, &tasks, &[], 10);
    let mut stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    stopped.sort_unstable();
    assert_eq!(stopped, ["a", "c"]);
    // Two wanted gone and one protected left: it cannot scale in further.
    let p = run(&svc, 1, &tasks[1..2], &[], 10);
    assert!(p.stop.is_empty());
    let svc_zero = {
        let mut s = service(json!({"desiredCount": 0}));
        with_deployments(&mut s, vec![deployment(1, 1, RolloutState::Completed)]);
        s
    };
    let p = run(&svc_zero, 1, &tasks[1..2], &[], 85);
    assert!(p.stop.is_empty(), "protected: {:?}", p.stop);
    assert!(reasons(&p).contains(&"TasksProtected"), "{:?}", reasons(&p));
    assert_eq!(
        p.requeue,
        Some(Duration::from_millis(15_100)),
        "looks again when it ends"
    );
    // Once it ends, it goes.
    let p = run(&svc_zero, 1, &tasks[1..2], &[], 100);
    assert_eq!(p.stop.len(), 1);

    // A deployment replaces the unprotected old task and waits for the
    // protected one, saying so.
    let mut svc = service(json!({"desiredCount": 2}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let first = run(&svc, 2, &tasks[..2], &[], 10);
    svc.status = Some(first.status);
    let mut all = tasks[..2].to_vec();
    all.push(running(task("new-1", 2, 11), "i-1", 12));
    all.push(running(task("new-2", 2, 11), "i-3", 12));
    let p = run(&svc, 2, &all, &[], 20);
    let stopped: Vec<&str> = p.stop.iter().map(|s| s.task.as_str()).collect();
    assert_eq!(stopped, ["a"]);
    let primary = &p.status.deployments[0];
    assert_eq!(primary.rollout_state, RolloutState::InProgress);
    assert!(
        primary
            .rollout_state_reason
            .as_deref()
            .is_some_and(|r| r.contains("waiting for 1 protected tasks") && r.contains("(b)")),
        "{primary:?}"
    );
    svc.status = Some(p.status);
    let p = run(&svc, 2, &all[1..], &[], 100);
    assert_eq!(
        p.stop.iter().map(|s| s.task.as_str()).collect::<Vec<_>>(),
        ["b"],
        "its protection over, it is replaced"
    );
}

/// Three zones of one instance each, `a`, `b` and `c`.
fn zones() -> Vec<InstanceSpec> {
    ["a", "b", "c"]
        .into_iter()
        .map(|z| instance(z, &[("ecs.availability-zone", z)]))
        .collect()
}

/// A steady, rebalancing service of 4 tasks: 2 in a, 2 in b, none in c.
fn lopsided(config: serde_json::Value) -> (Service, Vec<Task>) {
    let mut svc = service(json!({"desiredCount": 4, "rebalancing": "ENABLED",
        "deploymentConfiguration": config}));
    with_deployments(&mut svc, vec![deployment(1, 1, RolloutState::Completed)]);
    let tasks = ["a", "a", "b", "b"]
        .iter()
        .enumerate()
        .map(|(i, z)| running(task(&format!("web-1-{i}"), 1, 0), z, 1))
        .collect();
    (svc, tasks)
}

#[test]
fn rebalancing_starts_one_task_more_then_stops_one_where_tasks_crowd() {
    let instances = zones();
    let (svc, mut tasks) = lopsided(json!({}));
    let p = run(&svc, 1, &tasks, &instances, 10);
    assert_eq!(p.create.len(), 1);
    assert!(p.create[0].rebalancing && p.create[0].instance.is_none());
    assert!(p.stop.is_empty());
    assert!(reasons(&p).contains(&"Rebalancing"));

    // While it starts, the service keeps its one task too many.
    let mut moving = task(&p.create[0].name, 1, 5);
    moving
        .metadata
        .labels
        .get_or_insert_default()
        .insert("gantry.dev/rebalancing".into(), "true".into());
    tasks.push(moving.clone());
    let p = run(&svc, 1, &tasks, &instances, 11);
    assert!(p.create.is_empty() && p.stop.is_empty(), "{:?}", p.stop);

    // Running in c: one of a's or b's goes, with the rebalancing reason.
    *tasks.last_mut().expect("the new task") = running(moving, "c", 12);
    let p = run(&svc, 1, &tasks, &instances, 13);
    assert!(p.create.is_empty());
    assert_eq!(p.stop.len(), 1);
    assert_ne!(
        p.stop[0].task,
        tasks[4].metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(
        p.stop[0].reason,
        "Rebalancing activity initiated by (deployment ecs-svc/1)"
    );
}

#[test]
fn without_room_above_its_count_rebalancing_stops_first_within_its_minimum_healthy() {
    let instances = zones();
    let (svc, tasks) = lopsided(json!({"minimumHealthyPercent": 50, "maximumPercent": 100}));
    let p = run(&svc, 1, &tasks, &instances, 10);
    assert!(p.create.is_empty());
    assert_eq!(p.stop.len(), 1);
    assert_eq!(
        p.stop[0].reason,
        "Rebalancing activity initiated by (deployment ecs-svc/1)"
    );
    // 100% healthy and 100% at most: nothing may move.
    let (svc, tasks) = lopsided(json!({"minimumHealthyPercent": 100, "maximumPercent": 100}));
    let p = run(&svc, 1, &tasks, &instances, 10);
    assert!(p.create.is_empty() && p.stop.is_empty());
    // Not enabled: nothing either.
    let (mut svc, tasks) = lopsided(json!({}));
    svc.spec.rebalancing = None;
    let p = run(&svc, 1, &tasks, &instances, 10);
    assert!(p.create.is_empty() && p.stop.is_empty());
}
