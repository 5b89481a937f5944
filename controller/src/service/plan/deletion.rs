//! A Service being deleted while behind load balancers: its tasks are
//! deregistered and drained before they go, as for any other stop. The
//! Service holds a finalizer until none of its tasks is RUNNING or
//! DEACTIVATING; then the garbage collector deletes what is left.

use std::time::Duration;

use crds::{stop, v1alpha1::TaskLastStatus};

use super::{
    Input, Stop,
    facts::Facts,
    targets::{self, Release},
};

/// What deleting the Service needs next.
#[derive(Debug, Default, PartialEq)]
pub struct Deletion {
    pub stop: Vec<Stop>,
    /// DEACTIVATING tasks that have drained, with their resourceVersions.
    pub release: Vec<(String, Option<String>)>,
    /// No task is RUNNING or DEACTIVATING any more: the finalizer may go.
    pub done: bool,
    pub requeue: Option<Duration>,
}

#[must_use]
pub fn deletion(input: &Input<'_>) -> Deletion {
    let facts: Vec<Facts<'_>> = input.tasks.iter().map(|t| Facts::of(t, false)).collect();
    let deployment = input
        .service
        .status
        .as_ref()
        .and_then(|s| s.deployments.first())
        .map_or_else(|| super::deployment_id(0), |d| d.id.clone());
    let reason = stop::scaling(&deployment);
    let stop = facts
        .iter()
        .filter(|f| f.live && !f.stopping)
        .map(|f| Stop {
            drain: f.running && input.targets.any(),
            ..Stop::by_scheduler(f, reason.clone())
        })
        .collect();
    let Release { tasks, requeue } = targets::release(&facts, input.targets, input.now);
    let done = facts.iter().all(|f| {
        let last = f.task.status.as_ref().and_then(|s| s.last_status);
        !f.live
            || !matches!(
                last,
                Some(TaskLastStatus::Running | TaskLastStatus::Deactivating)
            )
    });
    Deletion {
        stop,
        release: tasks,
        done,
        requeue,
    }
}
