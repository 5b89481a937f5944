//! One write round on one instance: reserve, bind, release what was lost.
//!
//! 1. The new allocations are written into the instance's
//!    `status.allocations` with the resourceVersion the scheduler read: a
//!    409 means another writer came first, and nothing was reserved.
//! 2. Each task is bound with its own resourceVersion as precondition, so
//!    a task is bound once even when several schedulers reserved for it.
//! 3. Reservations of tasks that were bound elsewhere, stopped or deleted
//!    meanwhile are taken back at once (the allocation collector would
//!    otherwise find them later).

use std::sync::Arc;

use crds::{
    conditions::{self, ConditionType, Conditions},
    labels,
    v1alpha1::{Allocation, ContainerInstance, DesiredStatus, Task, TaskDefinitionSpec},
};
use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{convert, tally::Tally};

/// A task placed on the instance of the round.
pub struct Placed {
    pub task: Arc<Task>,
    /// The allocation to reserve; `None` when one is already stored there
    /// (a reservation made before this scheduler, or another, stopped).
    pub allocation: Option<Allocation>,
    /// The definition snapshot to write at binding, for a task created
    /// without one.
    pub snapshot: Option<(TaskDefinitionSpec, i64)>,
    /// The instance's resourceVersion the choice was made against: the
    /// reservation may only be written against that version (or one this
    /// scheduler's own successful write led to), or it would stand on
    /// capacity another writer has taken since.
    pub basis: Option<String>,
}

/// How one task's round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Result {
    Bound,
    /// Bound to this instance by another scheduler: its reservation (the
    /// one stored here) holds, and the placement is not this one's.
    BoundByOther,
    /// Bound elsewhere, stopped or deleted: no longer this scheduler's.
    Lost,
    /// Try again with fresh state.
    Retry,
}

pub struct Outcome {
    pub namespace: String,
    pub instance: String,
    /// The newest object of the instance this round saw.
    pub latest: Option<Arc<ContainerInstance>>,
    pub results: Vec<(Arc<Task>, Result)>,
    pub conflicts: u64,
    /// When the reservation succeeded: the version it was written
    /// against, and the version it produced.
    pub reserved: Option<(Option<String>, Option<String>)>,
    /// The reservation met a newer version of the instance (409): every
    /// task is to be retried, and [`Self::latest`] is that version, to
    /// check the same choice against first.
    pub outdated: bool,
}

/// Run one round on `instance` (the newest object the scheduler has).
pub async fn round(
    instances: Api<ContainerInstance>,
    tasks: Api<Task>,
    instance: Arc<ContainerInstance>,
    placed: Vec<Placed>,
) -> Outcome {
    let name = instance.name_any();
    let mut outcome = Outcome {
        namespace: instance.namespace().unwrap_or_default(),
        instance: name.clone(),
        latest: None,
        results: Vec::new(),
        conflicts: 0,
        reserved: None,
        outdated: false,
    };
    let new: Vec<Allocation> = placed.iter().filter_map(|p| p.allocation.clone()).collect();
    let mut latest = instance;
    if !new.is_empty() {
        let tally = Tally::stored(&latest).reserved(new.len());
        let mut allocations = stored(&latest);
        allocations.extend(new);

        match write_allocations(&instances, &latest, allocations, Some(tally)).await {
            Ok(ci) => {
                outcome.reserved = Some((latest.resource_version(), ci.resource_version()));
                latest = Arc::new(ci);
            }
            Err(e) => {
                if is_conflict(&e) {
                    outcome.conflicts += 1;
                    outcome.outdated = true;
                } else {
                    tracing::warn!(instance = %name, error = %e, "reserving failed");
                }
                outcome.latest = instances.get_opt(&name).await.ok().flatten().map(Arc::new);
                outcome.results = placed
                    .into_iter()
                    .map(|p| (p.task, Result::Retry))
                    .collect();
                return outcome;
            }
        }
    }
    let binds = placed.iter().map(|p| bind(&tasks, p, &name));
    let results: Vec<(Result, u64)> = join_all(binds).await;
    let lost: Vec<String> = placed
        .iter()
        .zip(&results)
        .filter(|(p, (r, _))| *r == Result::Lost && p.allocation.is_some())
        .filter_map(|(p, _)| p.task.uid())
        .collect();
    outcome.conflicts += results.iter().map(|(_, c)| c).sum::<u64>();
    if !lost.is_empty() {
        let (ci, conflicts) = release(&instances, latest, &lost).await;
        latest = ci;
        outcome.conflicts += conflicts;
    }
    outcome.latest = Some(latest);
    outcome.results = placed
        .into_iter()
        .zip(results)
        .map(|(p, (r, _))| (p.task, r))
        .collect();
    outcome
}

fn stored(ci: &ContainerInstance) -> Vec<Allocation> {
    ci.status
        .as_ref()
        .map(|s| s.allocations.clone())
        .unwrap_or_default()
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Write an instance's allocations, and the remaining resources and task
/// counts that go with them (`None` leaves the counts for the allocation
/// collector to correct), against the version `ci` was read at. A DAEMON
/// service the instance awaited leaves `awaitingDaemons` in the same
/// write once its task holds a reservation here: from then on other
/// tasks may be placed here too.
///
/// # Errors
/// 409 when the instance changed since.
pub async fn write_allocations(
    api: &Api<ContainerInstance>,
    ci: &ContainerInstance,
    allocations: Vec<Allocation>,
    tally: Option<Tally>,
) -> std::result::Result<ContainerInstance, kube::Error> {
    let remaining = convert::remaining(ci, &allocations);
    let mut patch = json!({
        "metadata": {"resourceVersion": ci.resource_version()},
        "status": {"allocations": allocations, "remainingResources": remaining},
    });
    let awaited = ci
        .status
        .as_ref()
        .map(|s| s.awaiting_daemons.as_slice())
        .unwrap_or_default();
    let still = still_awaited(awaited, &allocations);
    if still.len() != awaited.len() {
        patch["status"]["awaitingDaemons"] = json!(still);
    }
    if let Some(tally) = tally {
        patch["status"]["runningTasksCount"] = json!(tally.running);
        patch["status"]["pendingTasksCount"] = json!(tally.pending);
    }
    api.patch_status(
        &ci.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// The DAEMON services of `awaited` with no task among `allocations`.
fn still_awaited(awaited: &[String], allocations: &[Allocation]) -> Vec<String> {
    awaited
        .iter()
        .filter(|service| {
            let group = convert::service_group(service);
            !allocations
                .iter()
                .any(|a| a.group.as_deref() == Some(group.as_str()))
        })
        .cloned()
        .collect()
}

/// Bind one task; the count is the conflicts met.
async fn bind(api: &Api<Task>, placed: &Placed, instance: &str) -> (Result, u64) {
    let mut task = Arc::clone(&placed.task);
    let mut conflicts = 0;
    for _ in 0..3 {
        let mut spec = json!({"containerInstance": instance});
        if task.spec.definition.is_none()
            && let Some((definition, revision)) = &placed.snapshot
        {
            spec["definition"] = json!(definition);
            spec["taskDefinitionRevision"] = json!(revision);
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": task.resource_version(),
                "labels": {labels::CONTAINER_INSTANCE: instance},
            },
            "spec": spec,
        });
        let name = task.name_any();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(bound) => {
                mark_scheduled(api, &bound).await;
                return (Result::Bound, conflicts);
            }
            Err(e) if is_conflict(&e) => {
                conflicts += 1;
                let fresh = match api.get_opt(&name).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => return (Result::Lost, conflicts),
                    Err(_) => return (Result::Retry, conflicts),
                };
                if fresh.uid() != task.uid()
                    || fresh.spec.desired_status == DesiredStatus::Stopped
                    || fresh.metadata.deletion_timestamp.is_some()
                {
                    return (Result::Lost, conflicts);
                }
                match (fresh.placed_on(), fresh.spec.container_instance.as_deref()) {
                    (Some(on), _) if on == instance => return (Result::BoundByOther, conflicts),
                    (Some(_), _) => return (Result::Lost, conflicts),
                    // Started on another instance by its creator.
                    (None, Some(target)) if target != instance => {
                        return (Result::Lost, conflicts);
                    }
                    (None, _) => task = Arc::new(fresh),
                }
            }
            Err(e) if is_not_found(&e) => return (Result::Lost, conflicts),
            Err(e) => {
                tracing::warn!(task = %name, error = %e, "binding failed");
                return (Result::Retry, conflicts);
            }
        }
    }
    (Result::Retry, conflicts)
}

/// A task once reported unplaceable says it is placed now.
async fn mark_scheduled(api: &Api<Task>, task: &Task) {
    let conditions = task.status.as_ref().map(|s| s.conditions.as_slice());
    if !conditions::is_false(conditions.unwrap_or_default(), ConditionType::Scheduled) {
        return;
    }
    let instance = task.spec.container_instance.clone().unwrap_or_default();
    set_scheduled(
        api,
        task,
        true,
        "Placed",
        format!("placed on container instance {instance}"),
    )
    .await;
}

/// Write the task's `Scheduled` condition; a failure is only logged (the
/// next attempt writes it again).
pub async fn set_scheduled(
    api: &Api<Task>,
    task: &Task,
    placed: bool,
    reason: &str,
    message: String,
) {
    let mut conditions = task
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    Conditions::new(&mut conditions, task.metadata.generation, Timestamp::now()).set(
        ConditionType::Scheduled,
        placed,
        reason,
        message,
    );
    let patch = json!({"status": {"conditions": conditions}});
    if let Err(e) = api
        .patch_status(
            &task.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(task = %task.name_any(), error = %e, "cannot write the Scheduled condition");
    }
}

/// Take the reservations of `uids` back from an instance, re-reading it on
/// conflicts; returns the newest object seen and the conflicts met.
pub async fn release(
    api: &Api<ContainerInstance>,
    mut ci: Arc<ContainerInstance>,
    uids: &[String],
) -> (Arc<ContainerInstance>, u64) {
    let mut conflicts = 0;
    for _ in 0..8 {
        let allocations = stored(&ci);
        let kept: Vec<Allocation> = allocations
            .iter()
            .filter(|a| !uids.contains(&a.task_uid))
            .cloned()
            .collect();
        if kept.len() == allocations.len() {
            return (ci, conflicts);
        }
        match write_allocations(api, &ci, kept, None).await {
            Ok(written) => return (Arc::new(written), conflicts),
            Err(e) => {
                if is_conflict(&e) {
                    conflicts += 1;
                } else {
                    tracing::warn!(instance = %ci.name_any(), error = %e, "releasing failed");
                }
                match api.get_opt(&ci.name_any()).await {
                    Ok(Some(fresh)) => ci = Arc::new(fresh),
                    Ok(None) => return (ci, conflicts),
                    Err(_) => {}
                }
            }
        }
    }
    (ci, conflicts)
}
