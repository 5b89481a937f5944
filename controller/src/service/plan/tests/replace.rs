use crds::{
    stop::HEALTH_CHECKS_FAILED,
    v1alpha1::{HealthStatus, StopCode},
};

use super::{facts, health, running, task};
use crate::service::plan::{Stop, classify::Replacement, facts::Facts, replace::stops};

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
        let stopped: Vec<String> = stops(all(), budget, failed)
            .into_iter()
            .map(|s| s.task)
            .collect();
        assert_eq!(stopped, expected, "budget {budget}, failed {failed}");
    }
    let sick = &stops(all(), 0, false)[0];
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
        !stops(all(), 0, false)[1].bound,
        "old-pending has no instance"
    );
}
