use crds::v1alpha1::{HealthStatus, RolloutState};

use super::{at, deployment, facts, health, running, task};
use crate::service::plan::{complete::Done, facts::Facts};

#[test]
fn a_deployment_completes_when_only_its_tasks_run_all_healthy_at_desired_count() {
    let tasks = [
        health(running(task("a", 2, 0), "i-1", 1), HealthStatus::Healthy),
        health(running(task("b", 2, 0), "i-2", 1), HealthStatus::Healthy),
        running(task("starting", 2, 0), "i-2", 1),
        running(task("old", 1, 0), "i-3", 1),
    ];
    // Health-checked: only HEALTHY tasks count as healthy.
    let facts = facts(&tasks, true);
    let two: Vec<&Facts<'_>> = facts[..2].iter().collect();
    let three: Vec<&Facts<'_>> = facts[..3].iter().collect();
    let only_new = &facts[..3];
    let cases = [
        // (kept, all tasks, desired, starting, done)
        (&two, only_new, 2, false, false), // `starting` is live, not kept
        (&two, &facts[..2], 2, false, true),
        (&two, &facts[..2], 2, true, false),
        (&two, &facts[..2], 3, false, false),
        (&three, only_new, 3, false, false), // `starting` is not yet healthy
        (&two, &facts[..], 2, false, false), // `old` still runs
    ];
    for (i, (keep, all, desired, starting, done)) in cases.into_iter().enumerate() {
        let d = Done {
            keep,
            facts: all,
            desired,
            starting,
        };
        assert_eq!(d.holds(), done, "case {i}");
    }

    let d = Done {
        keep: &two,
        facts: &facts[..2],
        desired: 2,
        starting: false,
    };
    let mut primary = deployment(2, 2, RolloutState::InProgress);
    let note = d.mark(&mut primary, "web", at(9)).expect("completed");
    assert_eq!(note.message, "service (web) deployment ecs-svc/2 completed");
    assert_eq!(primary.rollout_state, RolloutState::Completed);
    assert_eq!(
        primary.rollout_state_reason.as_deref(),
        Some("ECS deployment ecs-svc/2 completed.")
    );
    assert!(d.mark(&mut primary, "web", at(10)).is_none(), "once");
    let mut failed = deployment(2, 2, RolloutState::Failed);
    assert!(d.mark(&mut failed, "web", at(10)).is_none());
}
