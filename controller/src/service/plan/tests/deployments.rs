use crds::{
    stop::HEALTH_CHECKS_FAILED,
    v1alpha1::{DeploymentCircuitBreaker, DeploymentStatus, RolloutState, StopCode},
};

use super::{at, deployment, facts, ids, running, stopped, task};
use crate::service::plan::{
    deployments::{Breaker, Verdict, breaker_threshold, failures, start, tally},
    facts::Facts,
};

#[test]
fn a_new_revision_starts_a_primary_deployment_and_an_old_one_does_not() {
    let mut deployments = Vec::new();
    let note = start(&mut deployments, ("web", 1), 2, "web", at(5)).expect("started");
    assert_eq!(note.reason, "DeploymentStarted");
    assert_eq!(
        note.message,
        "service (web) started deployment ecs-svc/1 of web:1"
    );
    assert_eq!(deployments.len(), 1);
    let first = &deployments[0];
    assert_eq!(
        (first.id.as_str(), first.status, first.rollout_state),
        (
            "ecs-svc/1",
            DeploymentStatus::Primary,
            RolloutState::InProgress
        )
    );
    assert_eq!(first.desired_count, 2);
    assert_eq!(
        first.rollout_state_reason.as_deref(),
        Some("ECS deployment ecs-svc/1 in progress.")
    );

    assert!(start(&mut deployments, ("web", 1), 2, "web", at(6)).is_none());
    assert_eq!(deployments.len(), 1, "the same revision deploys once");

    start(&mut deployments, ("web", 2), 2, "web", at(7)).expect("started");
    assert_eq!(
        ids(&deployments),
        [
            ("ecs-svc/2", DeploymentStatus::Primary),
            ("ecs-svc/1", DeploymentStatus::Active)
        ]
    );
}

#[test]
fn consecutive_failures_count_since_the_primary_last_had_a_task_running() {
    let primary = deployment(2, 2, RolloutState::InProgress);
    let failed_to_start =
        |n, at| stopped(task(n, 2, 0), StopCode::TaskFailedToStart, "pull", at, None);
    let tasks = [
        failed_to_start("before-run", 10),
        running(task("up", 2, 0), "i-1", 20),
        failed_to_start("after-run", 30),
        stopped(
            task("exit-1", 2, 0),
            StopCode::EssentialContainerExited,
            "x",
            31,
            Some(1),
        ),
        stopped(
            task("exit-0", 2, 0),
            StopCode::EssentialContainerExited,
            "x",
            32,
            Some(0),
        ),
        stopped(
            task("unhealthy", 2, 0),
            StopCode::ServiceSchedulerInitiated,
            HEALTH_CHECKS_FAILED,
            33,
            None,
        ),
        stopped(
            task("scaled", 2, 0),
            StopCode::ServiceSchedulerInitiated,
            "Scaling",
            34,
            None,
        ),
        stopped(
            task("user", 2, 0),
            StopCode::UserInitiated,
            "Task stopped by user",
            35,
            None,
        ),
        failed_to_start("old-revision", 36),
    ];
    let mut tasks = tasks.to_vec();
    tasks[8].spec.task_definition_revision = Some(1);
    let facts = facts(&tasks, false);
    let names: Vec<String> = failures(&facts, &primary)
        .iter()
        .map(|t| t.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["after-run", "exit-1", "unhealthy"]);

    // With nothing running, every failure of the revision counts.
    let none_up: Vec<Facts<'_>> = facts.into_iter().filter(|f| !f.running).collect();
    assert_eq!(failures(&none_up, &primary).len(), 4);
}

#[test]
fn the_breaker_threshold_is_half_the_desired_count_between_3_and_200() {
    for (desired, threshold) in [
        (0, 3),
        (1, 3),
        (6, 3),
        (7, 4),
        (10, 5),
        (399, 200),
        (1000, 200),
    ] {
        assert_eq!(breaker_threshold(desired), threshold, "desired {desired}");
    }
}

fn judge(
    deployments: &mut Vec<crds::v1alpha1::Deployment>,
    config: &DeploymentCircuitBreaker,
    failed: i32,
) -> (Verdict, Vec<&'static str>) {
    let breaker = Breaker {
        config,
        failed,
        desired: 4,
    };
    let mut events = Vec::new();
    let verdict = breaker.judge(deployments, "web", at(50), &mut events);
    (verdict, events.iter().map(|n| n.reason).collect())
}

#[test]
fn the_breaker_fails_an_in_progress_deployment_and_rolls_back_to_the_last_completed() {
    let on = DeploymentCircuitBreaker {
        enable: true,
        rollback: false,
    };
    let with_rollback = DeploymentCircuitBreaker {
        enable: true,
        rollback: true,
    };
    let off = DeploymentCircuitBreaker::default();
    let history = || {
        vec![
            deployment(3, 3, RolloutState::InProgress),
            deployment(2, 2, RolloutState::Failed),
            deployment(1, 1, RolloutState::Completed),
        ]
    };
    // (config, failures, verdict, events)
    let cases: [(&DeploymentCircuitBreaker, i32, Verdict, &[&str]); 5] = [
        (&on, 2, Verdict::Closed, &[]),
        (&off, 10, Verdict::Closed, &[]),
        (&on, 3, Verdict::Tripped, &["CircuitBreakerTripped"]),
        (&with_rollback, 2, Verdict::Closed, &[]),
        (
            &with_rollback,
            3,
            Verdict::RolledBack,
            &["CircuitBreakerTripped", "RollbackStarted"],
        ),
    ];
    for (config, failed, verdict, events) in cases {
        let mut deployments = history();
        assert_eq!(
            judge(&mut deployments, config, failed),
            (verdict, events.to_vec()),
            "{config:?} with {failed} failures"
        );
        match verdict {
            Verdict::Closed => assert_eq!(deployments, history()),
            Verdict::Tripped => {
                assert_eq!(deployments.len(), 3);
                assert_eq!(deployments[0].rollout_state, RolloutState::Failed);
                assert_eq!(
                    deployments[0].rollout_state_reason.as_deref(),
                    Some(
                        "ECS deployment circuit breaker: 3 tasks failed to start or stay up (threshold 3)"
                    )
                );
            }
            Verdict::RolledBack => {
                let rollback = &deployments[0];
                assert_eq!(rollback.id, "ecs-svc/4");
                assert_eq!(rollback.task_definition_revision, 1, "the last COMPLETED");
                assert_eq!(rollback.rollout_state, RolloutState::InProgress);
                assert_eq!(
                    rollback.rollout_state_reason.as_deref(),
                    Some("rolling back to ecs-svc/1 after ecs-svc/3 failed")
                );
                assert_eq!(deployments[1].rollout_state, RolloutState::Failed);
                assert_eq!(deployments[1].status, DeploymentStatus::Active);
            }
        }
    }
    // Only an in-progress deployment trips.
    let mut done = vec![deployment(1, 1, RolloutState::Completed)];
    assert_eq!(judge(&mut done, &on, 9).0, Verdict::Closed);
    // No completed deployment to go back to: it only fails.
    let mut first = vec![deployment(1, 1, RolloutState::InProgress)];
    assert_eq!(judge(&mut first, &with_rollback, 3).0, Verdict::Tripped);
}

#[test]
fn tally_counts_tasks_per_deployment_and_retires_the_drained() {
    let mut pending_old = task("old-pending", 1, 0);
    pending_old.spec.container_instance = None;
    let tasks = [
        running(task("new-1", 3, 0), "i-1", 5),
        task("new-2", 3, 0),
        running(task("old-1", 2, 0), "i-2", 5),
        pending_old,
        stopped(task("gone", 2, 0), StopCode::UserInitiated, "x", 9, None),
    ];
    let facts = facts(&tasks, false);
    let deployments = vec![
        deployment(4, 3, RolloutState::InProgress),
        deployment(3, 2, RolloutState::Completed),
        deployment(2, 1, RolloutState::Completed),
        deployment(1, 0, RolloutState::Completed),
    ];
    let listed = tally(deployments, &facts, ("web", Some(3)), 2);
    let seen: Vec<_> = listed
        .iter()
        .map(|d| {
            (
                d.id.as_str(),
                d.status,
                d.desired_count,
                d.running_count,
                d.pending_count,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ecs-svc/4", DeploymentStatus::Primary, 2, 1, 1),
            ("ecs-svc/3", DeploymentStatus::Active, 0, 1, 0),
            ("ecs-svc/2", DeploymentStatus::Active, 0, 0, 1),
        ],
        "ecs-svc/1 has no tasks left: retired"
    );

    // A drained failed deployment of the revision still asked for stays,
    // so that revision is not deployed again; a rollback sharing the
    // primary's revision counts nothing twice.
    let deployments = vec![
        deployment(3, 2, RolloutState::InProgress),
        deployment(2, 5, RolloutState::Failed),
        deployment(1, 2, RolloutState::Completed),
    ];
    let listed = tally(deployments.clone(), &facts, ("web", Some(5)), 2);
    let seen: Vec<_> = listed
        .iter()
        .map(|d| (d.id.as_str(), d.status, d.running_count))
        .collect();
    assert_eq!(
        seen,
        [
            ("ecs-svc/3", DeploymentStatus::Primary, 1),
            ("ecs-svc/2", DeploymentStatus::Inactive, 0),
        ]
    );
    // Once another revision is asked for, the marker goes.
    assert_eq!(tally(deployments, &facts, ("web", Some(6)), 2).len(), 1);
}
