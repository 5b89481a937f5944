use crds::{
    stop::HEALTH_CHECKS_FAILED,
    v1alpha1::{HealthStatus, StopCode},
};

use super::{facts, health, running, task};
use crate::service::plan::{
    Stop,
    classify::Replacement,
    facts::Facts,
    replace::{Cover, Rules, stops, unhealthy_allowance},
};

fn replacement<'a>(f: &'a Facts<'a>, health_failure: bool, old_revision: bool) -> Replacement<'a> {
    Replacement {
        facts: f,
        reason: if health_failure {
            HEALTH_CHECKS_FAILED.to_owned()
        } else {
            "Scaling".to_owned()
        },
        health_failure,
        old_revision,
    }
}

#[test]
fn healthy_tasks_stop_only_within_the_budget_and_unhealthy_ones_always() {
    let tasks = [
        running(task("old-1", 1, 0), "i-1", 1),
        running(task("old-2", 1, 0), "i-1", 1),
        health(
            running(task("sick", 2, 0), "i-2", 1),
            HealthStatus::Unhealthy,
        ),
        task("old-pending", 1, 0),
    ];
    let facts = facts(&tasks, false);
    let all = || {
        vec![
            replacement(&facts[0], false, true),
            replacement(&facts[1], false, true),
            replacement(&facts[2], true, false),
            replacement(&facts[3], false, true),
        ]
    };
    // (budget, primary failed, stopped)
    let cases: [(i64, bool, &[&str]); 5] = [
        (0, false, &["sick", "old-pending"]),
        (-2, false, &["sick", "old-pending"]),
        (1, false, &["sick", "old-pending", "old-1"]),
        (5, false, &["sick", "old-pending", "old-1", "old-2"]),
        // A failed deployment without rollback leaves the old revision
        // alone, but not a task that fails its health checks.
        (5, true, &["sick"]),
    ];
    for (budget, failed, expected) in cases {
        let rules = Rules {
            budget,
            primary_failed: failed,
            unhealthy: 1,
        };
        let stopped: Vec<String> = stops(all(), rules).into_iter().map(|s| s.task).collect();
        assert_eq!(stopped, expected, "budget {budget}, failed {failed}");
    }
    let none_spare = Rules {
        budget: 0,
        primary_failed: false,
        unhealthy: 1,
    };
    let sick = &stops(all(), none_spare)[0];
    assert_eq!(
        sick,
        &Stop {
            task: "sick".into(),
            bound: true,
            code: StopCode::ServiceSchedulerInitiated,
            reason: HEALTH_CHECKS_FAILED.into(),
            drain: false,
            version: None,
        }
    );
    assert!(
        !stops(all(), none_spare)[1].bound,
        "old-pending has no instance"
    );
}

#[test]
fn an_unhealthy_task_waits_for_a_healthy_replacement_unless_none_can_start() {
    let replica = |healthy, coming| Cover {
        daemon: false,
        desired: 2,
        healthy,
        coming,
    };
    // (cover, unhealthy tasks, how many may stop)
    let cases = [
        // Desired 2: one healthy, one unhealthy, its replacement starting.
        (replica(1, 1), 1, 0),
        // The replacement is healthy: the unhealthy task goes.
        (replica(2, 0), 1, 1),
        // Both unhealthy, two replacements on their way, one healthy yet.
        (replica(0, 2), 2, 0),
        (replica(1, 1), 2, 1),
        (replica(2, 0), 2, 2),
        // maximumPercent left no room to start one: stop one at a time.
        (replica(1, 0), 1, 1),
        (replica(0, 0), 2, 1),
        // Nothing unhealthy, nothing to stop.
        (replica(2, 0), 0, 0),
    ];
    for (cover, unhealthy, expected) in cases {
        assert_eq!(
            unhealthy_allowance(cover, unhealthy),
            expected,
            "{cover:?} with {unhealthy} unhealthy"
        );
    }
    // A DAEMON instance has no room for two: its task stops at once.
    let daemon = Cover {
        daemon: true,
        ..replica(0, 0)
    };
    assert_eq!(unhealthy_allowance(daemon, 2), 2);
}

#[test]
fn unhealthy_tasks_beyond_the_allowance_stay_the_oldest_go_first() {
    let tasks = [
        health(
            running(task("sick-new", 1, 5), "i-1", 6),
            HealthStatus::Unhealthy,
        ),
        health(
            running(task("sick-old", 1, 0), "i-2", 1),
            HealthStatus::Unhealthy,
        ),
    ];
    let facts = facts(&tasks, true);
    let all = || {
        vec![
            replacement(&facts[0], true, false),
            replacement(&facts[1], true, false),
        ]
    };
    for (allowed, expected) in [
        (0, &[][..]),
        (1, &["sick-old"][..]),
        (2, &["sick-old", "sick-new"][..]),
    ] {
        let rules = Rules {
            budget: 5,
            primary_failed: false,
            unhealthy: allowed,
        };
        let stopped: Vec<String> = stops(all(), rules).into_iter().map(|s| s.task).collect();
        assert_eq!(stopped, expected, "allowance {allowed}");
    }
}
