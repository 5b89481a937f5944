//! A Service being deleted, as ECS deletes one: it goes DRAINING, its
//! tasks are stopped (deregistered and drained first behind load
//! balancers, as for any other stop), and it is gone once none is RUNNING
//! or DEACTIVATING. The Service holds a finalizer until then; its tasks
//! stay as STOPPED records for the retention period (the controller
//! releases them from the Service before it lets the Service go).

use std::time::Duration;

use crds::{
    stop,
    v1alpha1::{ServiceStatus, TaskLastStatus},
};

use super::{
    Input, Stop,
    facts::Facts,
    status::Report,
    targets::{self, Release},
};
use crate::events::Note;

/// What deleting the Service needs next.
#[derive(Debug, Default, PartialEq)]
pub struct Deletion {
    pub stop: Vec<Stop>,
    /// DEACTIVATING tasks that have drained, with their resourceVersions.
    pub release: Vec<(String, Option<String>)>,
    /// No task is RUNNING or DEACTIVATING any more: the finalizer may go.
    pub done: bool,
    pub requeue: Option<Duration>,
    /// DRAINING, with the tasks still running.
    pub status: ServiceStatus,
    pub events: Vec<Note>,
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
    let mut events = Vec::new();
    let status = Report::new(input).draining(input.service.status.as_ref(), &facts, &mut events);
    Deletion {
        stop,
        release: tasks,
        done,
        requeue,
        status,
        events,
    }
}
