use std::time::Duration;

use crds::{
    stop::HEALTH_CHECKS_FAILED,
    v1alpha1::{HealthStatus, RolloutState},
};

use super::{at, deployment, facts, health, names, running, task};
use crate::service::plan::classify::{Classified, Rules, classify};

const SCALING: &str = "Scaling activity initiated by (deployment ecs-svc/2)";

fn rules<'a>(primary: &'a crds::v1alpha1::Deployment, now: i64) -> Rules<'a> {
    Rules {
        primary,
        daemon: false,
        eligible: &[],
        disconnected: &[],
        draining: &["drained"],
        registered: &[],
        grace: Duration::from_secs(60),
        now: at(now),
    }
}

fn replaced(c: &Classified<'_>) -> Vec<(String, String, bool, bool)> {
    c.replace
        .iter()
        .map(|r| {
            (
                r.facts.name(),
                r.reason.clone(),
                r.health_failure,
                r.old_revision,
            )
        })
        .collect()
}

#[test]
fn replica_tasks_are_kept_or_replaced_by_revision_instance_and_health() {
    let primary = deployment(2, 2, RolloutState::InProgress);
    let tasks = [
        running(task("current", 2, 1), "i-1", 10),
        running(task("old", 1, 0), "i-1", 10),
        running(task("on-drained", 2, 2), "drained", 10),
        health(
            running(task("sick-long", 2, 3), "i-2", 10),
            HealthStatus::Unhealthy,
        ),
        health(
            running(task("sick-new", 2, 4), "i-2", 50),
            HealthStatus::Unhealthy,
        ),
        task("pending", 2, 5),
    ];
    // At 100 s, sick-long is past its 60 s grace; sick-new (started at 50)
    // is not.
    let facts = facts(&tasks, false);
    let c = classify(&facts, &rules(&primary, 100));
    assert_eq!(
        names(c.keep.iter().copied()),
        ["current", "sick-new", "pending"]
    );
    assert_eq!(
        replaced(&c),
        [
            ("old".into(), SCALING.into(), false, true),
            ("on-drained".into(), SCALING.into(), false, false),
            ("sick-long".into(), HEALTH_CHECKS_FAILED.into(), true, false),
        ]
    );
    // Looked at again when sick-new's grace ends (110 s), and a little.
    assert_eq!(c.requeue, Some(Duration::from_millis(10_100)));
}

#[test]
fn an_unhealthy_task_without_a_start_time_has_no_grace() {
    let primary = deployment(2, 2, RolloutState::InProgress);
    let mut sick = health(
        running(task("sick", 2, 0), "i-1", 0),
        HealthStatus::Unhealthy,
    );
    sick.status.get_or_insert_default().started_at = None;
    let tasks = [sick];
    let facts = facts(&tasks, false);
    let c = classify(&facts, &rules(&primary, 1));
    assert_eq!(replaced(&c)[0].1, HEALTH_CHECKS_FAILED);
    assert_eq!(c.requeue, None);
}

#[test]
fn daemon_keeps_one_task_per_eligible_instance_preferring_the_running_one() {
    let primary = deployment(2, 2, RolloutState::InProgress);
    let mut pinned_pending = task("a-pending", 2, 0);
    pinned_pending.spec.placement_constraints = serde_json::from_value(serde_json::json!([
        {"type": "memberOf", "expression": "ec2InstanceId == a"}
    ]))
    .expect("constraints");
    let tasks = [
        pinned_pending,
        running(task("a-running", 2, 5), "a", 6),
        running(task("b", 2, 1), "b", 2),
        running(task("gone", 2, 1), "left", 2),
        running(task("deregistered", 2, 1), "d", 2),
    ];
    let facts = facts(&tasks, false);
    let mut r = rules(&primary, 100);
    r.daemon = true;
    r.eligible = &["a", "b"];
    r.registered = &["a", "b", "left"];
    let c = classify(&facts, &r);
    assert_eq!(names(c.keep.iter().copied()), ["b", "a-running"]);
    let replaced: Vec<String> = c.replace.iter().map(|r| r.facts.name()).collect();
    assert_eq!(
        replaced,
        ["gone", "a-pending"],
        "the task on a deregistered instance is left to its own stop"
    );
}

#[test]
fn stopping_and_stopped_tasks_are_neither_kept_nor_replaced() {
    let primary = deployment(1, 1, RolloutState::InProgress);
    let mut asked = running(task("asked", 1, 0), "i-1", 1);
    asked.spec.desired_status = crds::v1alpha1::DesiredStatus::Stopped;
    let gone = super::stopped(
        task("gone", 1, 0),
        crds::v1alpha1::StopCode::UserInitiated,
        "x",
        2,
        None,
    );
    let tasks = [asked, gone];
    let facts = facts(&tasks, false);
    let c = classify(&facts, &rules(&primary, 10));
    assert!(c.keep.is_empty() && c.replace.is_empty());
}
