use std::{collections::HashMap, time::Duration};

use crds::{
    conditions::ConditionType,
    v1alpha1::{RolloutState, TargetState, TaskLastStatus},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::{at, definition, deployment, running, service, task};
use crate::service::plan::{
    Definition, Input,
    classify::{Rules, classify},
    facts::Facts,
    plan,
    targets::{Balancer, Targets, checked, release},
};

fn balancer(name: &str, delay: u64, targets: &[(&str, TargetState)]) -> Balancer {
    Balancer {
        name: name.to_owned(),
        exists: true,
        delay: Duration::from_secs(delay),
        targets: targets
            .iter()
            .map(|(t, s)| ((*t).to_owned(), *s))
            .collect::<HashMap<_, _>>(),
    }
}

fn deactivating(name: &str, since: i64) -> crds::v1alpha1::Task {
    let mut t = running(task(name, 1, 0), "i-1", 1);
    t.spec.desired_status = crds::v1alpha1::DesiredStatus::Stopped;
    let status = t.status.get_or_insert_default();
    status.last_status = Some(TaskLastStatus::Deactivating);
    status.stopping_at = Some(Time(at(since)));
    status.stop_code = Some(crds::v1alpha1::StopCode::ServiceSchedulerInitiated);
    t
}

#[test]
fn a_task_is_healthy_only_once_every_load_balancer_says_so() {
    let tasks = [running(task("a", 1, 0), "i-1", 1)];
    let both = |a, b| Targets {
        balancers: vec![
            balancer("front", 0, &[("a", a)]),
            balancer("back", 0, &[("a", b)]),
        ],
    };
    let judged = |targets: &Targets| {
        let f = Facts::of(&tasks[0], false).behind(targets);
        (f.healthy, f.health_failure())
    };
    use TargetState::{Healthy, Initial, Unhealthy};
    assert_eq!(judged(&Targets::default()), (true, None), "no balancers");
    assert_eq!(judged(&both(Healthy, Healthy)), (true, None));
    assert_eq!(judged(&both(Healthy, Initial)), (false, None));
    assert_eq!(
        judged(&both(Healthy, Unhealthy)),
        (
            false,
            Some("Task failed ELB health checks in (elb back)".to_owned())
        )
    );
}

#[test]
fn a_target_unhealthy_past_the_grace_period_is_replaced() {
    let tasks = [running(task("a", 1, 0), "i-1", 100)];
    let targets = Targets {
        balancers: vec![balancer("front", 0, &[("a", TargetState::Unhealthy)])],
    };
    let facts: Vec<Facts<'_>> = tasks
        .iter()
        .map(|t| Facts::of(t, false).behind(&targets))
        .collect();
    let primary = deployment(1, 1, RolloutState::InProgress);
    let rules = |now| Rules {
        primary: &primary,
        daemon: false,
        eligible: &[],
        disconnected: &[],
        draining: &[],
        registered: &[],
        grace: Duration::from_secs(60),
        now: at(now),
    };
    let within = classify(&facts, &rules(130));
    assert!(within.replace.is_empty(), "within the grace period");
    assert_eq!(within.requeue, Some(Duration::from_millis(30_100)));
    let after = classify(&facts, &rules(161));
    assert_eq!(after.replace.len(), 1);
    assert_eq!(
        after.replace[0].reason,
        "Task failed ELB health checks in (elb front)"
    );
    assert!(after.replace[0].health_failure);
}

#[test]
fn a_deactivating_task_is_released_once_drained_or_after_the_delay() {
    let tasks = [
        deactivating("listed", 100),
        deactivating("drained", 100),
        deactivating("late", 0),
        running(task("running", 1, 0), "i-1", 1),
    ];
    let facts: Vec<Facts<'_>> = tasks.iter().map(|t| Facts::of(t, false)).collect();
    let targets = Targets {
        balancers: vec![balancer(
            "front",
            300,
            &[
                ("listed", TargetState::Draining),
                ("late", TargetState::Draining),
                ("running", TargetState::Healthy),
            ],
        )],
    };
    let out = release(&facts, &targets, at(310));
    let names: Vec<&str> = out.tasks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["drained", "late"]);
    assert_eq!(out.requeue, Some(Duration::from_millis(90_100)));

    // A load balancer that no longer exists holds nothing up.
    let gone = Targets {
        balancers: vec![Balancer {
            name: "front".into(),
            ..Balancer::default()
        }],
    };
    assert_eq!(release(&facts, &gone, at(101)).tasks.len(), 3);
}

#[test]
fn stops_behind_a_load_balancer_drain_first() {
    let svc = service(json!({
        "desiredCount": 1,
        "loadBalancers": [{"loadBalancerName": "front", "containerName": "web", "containerPort": 80}],
    }));
    let mut def = definition(false);
    def.container_definitions[0].port_mappings =
        serde_json::from_value(json!([{"containerPort": 80}])).expect("ports");
    let tasks = [
        running(task("a", 1, 0), "i-1", 1),
        running(task("b", 1, 1), "i-1", 1),
    ];
    let targets = Targets {
        balancers: vec![balancer(
            "front",
            300,
            &[("a", TargetState::Healthy), ("b", TargetState::Healthy)],
        )],
    };
    let mut svc = svc;
    svc.status = Some(crds::v1alpha1::ServiceStatus {
        deployments: vec![deployment(1, 1, RolloutState::Completed)],
        ..Default::default()
    });
    let p = plan(&Input {
        service: &svc,
        definition: Definition::Valid {
            revision: 1,
            spec: &def,
        },
        tasks: &super::shared(&tasks),
        instances: &[],
        targets: &targets,
        former: &[],
        now: at(1000),
    });
    assert_eq!(p.stop.len(), 1, "{:?}", p.stop);
    assert!(
        p.stop[0].drain,
        "a RUNNING task behind a balancer drains first"
    );
}

#[test]
fn a_load_balancer_naming_a_missing_container_or_port_stops_the_service() {
    let def = definition(false);
    let entries = |container: &str, port: u16| {
        serde_json::from_value::<Vec<crds::v1alpha1::ServiceLoadBalancer>>(json!([
            {"loadBalancerName": "front", "containerName": container, "containerPort": port}
        ]))
        .expect("entries")
    };
    let valid = Definition::Valid {
        revision: 1,
        spec: &def,
    };
    let mut why = String::new();
    assert!(matches!(
        checked(valid, &entries("db", 80), &mut why),
        Definition::Invalid("load balancer front: it has no container db")
    ));
    let mut why = String::new();
    assert!(matches!(
        checked(valid, &entries("web", 80), &mut why),
        Definition::Invalid(
            "load balancer front: its container web has no port mapping for containerPort 80"
        )
    ));
    let mut mapped = definition(false);
    mapped.container_definitions[0].port_mappings =
        serde_json::from_value(json!([{"containerPort": 80}])).expect("ports");
    let mut why = String::new();
    assert!(matches!(
        checked(
            Definition::Valid {
                revision: 1,
                spec: &mapped
            },
            &entries("web", 80),
            &mut why
        ),
        Definition::Valid { .. }
    ));
}

#[test]
fn a_deleted_service_drains_its_tasks_before_it_goes() {
    let mut svc = service(json!({
        "desiredCount": 2,
        "loadBalancers": [{"loadBalancerName": "front", "containerName": "web", "containerPort": 80}],
    }));
    svc.status = Some(crds::v1alpha1::ServiceStatus {
        deployments: vec![deployment(3, 1, RolloutState::Completed)],
        ..Default::default()
    });
    let targets = Targets {
        balancers: vec![balancer(
            "front",
            300,
            &[("a", TargetState::Healthy), ("b", TargetState::Draining)],
        )],
    };
    let input = |tasks| Input {
        service: &svc,
        definition: Definition::Missing,
        tasks,
        instances: &[],
        targets: &targets,
        former: &[],
        now: at(200),
    };
    let pending = task("p", 1, 0);
    let tasks = [
        running(task("a", 1, 0), "i-1", 1),
        deactivating("b", 100),
        pending.clone(),
    ];
    let tasks = super::shared(&tasks);
    let d = crate::service::plan::deletion::deletion(&input(&tasks));
    let stops: Vec<(&str, bool, &str)> = d
        .stop
        .iter()
        .map(|s| (s.task.as_str(), s.drain, s.reason.as_str()))
        .collect();
    let reason = "Scaling activity initiated by (deployment ecs-svc/3)";
    assert_eq!(stops, [("a", true, reason), ("p", false, reason)]);
    assert!(d.release.is_empty(), "b is still draining");
    assert!(!d.done);
    // The Service says it is DRAINING, once with an event.
    assert_eq!(d.status.state, Some(crds::v1alpha1::ServiceState::Draining));
    assert_eq!(
        (d.status.desired_count, d.status.running_count),
        (0, 1),
        "a still runs (b, DEACTIVATING, is no longer counted)"
    );
    let ready = crds::conditions::find(&d.status.conditions, ConditionType::Ready).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Draining")
    );
    let events: Vec<&str> = d.events.iter().map(|n| n.reason).collect();
    assert_eq!(events, ["Draining"]);
    let mut draining = svc.clone();
    draining.status = Some(d.status.clone());
    let again = crate::service::plan::deletion::deletion(&Input {
        service: &draining,
        ..input(&tasks)
    });
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.status, d.status, "nothing changed: nothing to write");

    // Once b has drained and a is stopping, the finalizer may go.
    let mut a = deactivating("a", 150);
    a.status.get_or_insert_default().last_status = Some(TaskLastStatus::Stopping);
    let tasks = super::shared(&[a, deactivating("c", 150)]);
    let d = crate::service::plan::deletion::deletion(&input(&tasks));
    let released: Vec<&str> = d.release.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(released, ["c"], "c is listed nowhere: drained");
    assert!(!d.done, "c is still DEACTIVATING");
    let mut c = deactivating("c", 150);
    c.status.get_or_insert_default().last_status = Some(TaskLastStatus::Stopping);
    let c = super::shared(std::slice::from_ref(&c));
    let d = crate::service::plan::deletion::deletion(&input(&c));
    assert!(d.done && d.stop.is_empty());
}
