//! Tasks after their run: stopped tasks are deleted after the retention
//! period (ECS keeps them visible for about an hour), a task stopped
//! before any agent took it is marked STOPPED here (no agent will), a
//! STOPPED task still desired RUNNING is desired STOPPED, a task whose
//! instance was deregistered (its ContainerInstance deleted) is stopped
//! with ECS's reason so that its service replaces it, and the
//! tasks-by-status gauge is kept.
//!
//! Deregistration is noticed here, from the tasks, rather than by a
//! finalizer on the instance: like Kubernetes' pod garbage collector for
//! pods of deleted Nodes, it works whether or not a controller was running
//! when the instance went, and `kubectl delete ci` never hangs.
//!
//! It also times each change of a task's `spec.protection` (scale-in
//! protection) in `status.protection`, from when it is seen.
//!
//! The last two repair stops cut short: a stop is two writes, status and
//! spec (the status subresource takes no spec, the object no status), and
//! a controller killed between them leaves the task half stopped.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crds::{
    stop,
    v1alpha1::{
        ContainerInstance, DesiredStatus, ProtectionStatus, StopCode, Task, TaskLastStatus,
    },
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::{Context, cache, metrics::StatusLabel, runner};

/// What to do with one task now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chore {
    None,
    /// Stopped before placement: record it STOPPED.
    MarkStopped,
    /// STOPPED, but still desired RUNNING: a stopped task never runs
    /// again, so it is desired STOPPED, as ECS shows every stopped task.
    DesireStopped,
    /// Stopped longer ago than the retention period.
    Delete,
    /// Bound to an instance that is no longer registered: no agent will
    /// report it, so it is recorded STOPPED, as ECS stops the tasks of an
    /// instance deregistered by force.
    Deregistered,
    /// Its `spec.protection` changed: record until when it lasts, timed
    /// from now, as ECS times UpdateTaskProtection from the call.
    TimeProtection(ProtectionStatus),
}

/// The chore of `task`; `registered` says whether the instance it was
/// placed on, if any, is registered as far as the caller's cache knows.
#[must_use]
pub fn chore(task: &Task, registered: bool, retention: Duration, now: Timestamp) -> Chore {
    let status = task.status.clone().unwrap_or_default();
    if status.last_status == Some(TaskLastStatus::Stopped)
        && task.spec.desired_status == DesiredStatus::Running
    {
        return Chore::DesireStopped;
    }
    if status.last_status == Some(TaskLastStatus::Stopped) {
        let stopped = status
            .stopped_at
            .map(|t| t.0)
            .or_else(|| task.creation_timestamp().map(|t| t.0));
        let expired = stopped.is_some_and(|t| {
            now.as_millisecond() - t.as_millisecond()
                >= i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
        });
        return if expired { Chore::Delete } else { Chore::None };
    }
    if task.placed_on().is_some() && !registered {
        return Chore::Deregistered;
    }
    if task.placed_on().is_none()
        && (task.spec.desired_status == DesiredStatus::Stopped || status.stop_code.is_some())
    {
        return Chore::MarkStopped;
    }
    if let (Some(protection), Some(generation)) = (task.spec.protection, task.metadata.generation)
        && status.protection.as_ref().map(|p| p.observed_generation) != Some(generation)
    {
        let minutes = u64::from(protection.expires_in_minutes);
        return Chore::TimeProtection(ProtectionStatus {
            observed_generation: generation,
            expiration_date: protection
                .enabled
                .then(|| Time(now + Duration::from_secs(minutes * 60))),
        });
    }
    Chore::None
}

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (store, stream) = cache::cache::<Task>(&context.client, watcher::Config::default());
    let (instances, instance_stream) =
        cache::cache::<ContainerInstance>(&context.client, watcher::Config::default());
    let sweep = async {
        let _ = tokio::join!(store.wait_until_ready(), instances.wait_until_ready());
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            sweep(&context, &store, &instances).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = stream => {}
        () = instance_stream => {}
        () = sweep => {}
    }
}

async fn sweep(context: &Context, store: &Store<Task>, instances: &Store<ContainerInstance>) {
    let now = Timestamp::now();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for status in [
        "PROVISIONING",
        "PENDING",
        "ACTIVATING",
        "RUNNING",
        "DEACTIVATING",
        "STOPPING",
        "DEPROVISIONING",
        "STOPPED",
    ] {
        counts.insert(status.to_owned(), 0);
    }
    for task in store.state() {
        let last = task
            .status
            .as_ref()
            .and_then(|s| s.last_status)
            .unwrap_or(TaskLastStatus::Provisioning);
        let last = serde_json::to_value(last)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(last).or_default() += 1;
        let registered = task.placed_on().is_none_or(|name| {
            let namespace = task.namespace().unwrap_or_default();
            instances
                .get(&ObjectRef::new(name).within(&namespace))
                .is_some()
        });
        let result = match chore(&task, registered, context.config.task_retention, now) {
            Chore::None => continue,
            Chore::Delete => delete(context, &task).await,
            Chore::MarkStopped => mark_stopped(context, &task, now).await,
            Chore::DesireStopped => desire_stopped(context, &task).await,
            Chore::Deregistered => deregistered(context, &task, now).await,
            Chore::TimeProtection(protection) => time_protection(context, &task, protection).await,
        };
        context
            .metrics
            .reconciled("task", result.as_ref().err().map(runner::error_kind));
        if let Err(e) = result {
            tracing::warn!(task = %crate::events::key(task.as_ref()), error = %e, "task chore failed");
        }
    }
    for (status, n) in counts {
        context
            .metrics
            .tasks
            .get_or_create(&StatusLabel { status })
            .set(n);
    }
}

async fn delete(context: &Context, task: &Task) -> Result<(), kube::Error> {
    let api: Api<Task> = Api::namespaced(
        context.client.clone(),
        &task.namespace().unwrap_or_default(),
    );
    match api.delete(&task.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn desire_stopped(context: &Context, task: &Task) -> Result<(), kube::Error> {
    let spec = serde_json::json!({"spec": {"desiredStatus": DesiredStatus::Stopped}});
    merge(context, task, &spec, false).await
}

/// A merge patch of the task, or of its status; a task gone meanwhile
/// needs nothing more.
async fn merge(
    context: &Context,
    task: &Task,
    patch: &serde_json::Value,
    status: bool,
) -> Result<(), kube::Error> {
    let api: Api<Task> = Api::namespaced(
        context.client.clone(),
        &task.namespace().unwrap_or_default(),
    );
    let (name, params, patch) = (task.name_any(), PatchParams::default(), Patch::Merge(patch));
    let result = if status {
        api.patch_status(&name, &params, &patch).await
    } else {
        api.patch(&name, &params, &patch).await
    };
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn mark_stopped(context: &Context, task: &Task, now: Timestamp) -> Result<(), kube::Error> {
    let api: Api<Task> = Api::namespaced(
        context.client.clone(),
        &task.namespace().unwrap_or_default(),
    );
    let status = task.status.clone().unwrap_or_default();
    let patches = stop::patches(
        &status,
        StopCode::UserInitiated,
        stop::STOPPED_BY_USER,
        Some(now),
    );
    api.patch_status(
        &task.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patches.status),
    )
    .await?;
    Ok(())
}

async fn time_protection(
    context: &Context,
    task: &Task,
    protection: ProtectionStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"status": {"protection": protection}});
    merge(context, task, &patch, true).await
}

/// Write a stop: its cause into the status first, then `desiredStatus:
/// STOPPED` into the spec, so that the agent that sees the spec finds the
/// cause recorded and does not record its own (crds/src/stop.rs). A stop
/// cut short between the two is finished by the sweep above.
///
/// # Errors
/// Either write's.
pub async fn write_stop(
    api: &Api<Task>,
    name: &str,
    patches: &stop::StopPatches,
) -> Result<Task, kube::Error> {
    let params = PatchParams::default();
    api.patch_status(name, &params, &Patch::Merge(&patches.status))
        .await?;
    api.patch(name, &params, &Patch::Merge(&patches.spec)).await
}

/// Stop a task of a deregistered instance, once the API server confirms
/// the instance is gone (this process's cache may not have seen a new
/// one yet).
async fn deregistered(context: &Context, task: &Task, now: Timestamp) -> Result<(), kube::Error> {
    let namespace = task.namespace().unwrap_or_default();
    let instance = task.placed_on().unwrap_or_default().to_owned();
    let instances: Api<ContainerInstance> = Api::namespaced(context.client.clone(), &namespace);
    if instances.get_opt(&instance).await?.is_some() {
        return Ok(());
    }
    let api: Api<Task> = Api::namespaced(context.client.clone(), &namespace);
    let status = task.status.clone().unwrap_or_default();
    let patches = stop::patches(
        &status,
        StopCode::UserInitiated,
        stop::DEREGISTRATION_FORCED,
        Some(now),
    );
    write_stop(&api, &task.name_any(), &patches).await?;
    tracing::info!(task = %crate::events::key(task), %instance, "stopped: its instance was deregistered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{TaskSpec, TaskStatus};
    use serde_json::json;

    fn place(task: &mut Task, on: &str) {
        task.spec.container_instance = Some(on.into());
        task.labels_mut()
            .insert(crds::labels::CONTAINER_INSTANCE.into(), on.into());
    }

    #[test]
    fn a_protection_is_timed_once_per_generation_from_when_it_is_seen() {
        let spec: TaskSpec = serde_json::from_value(json!({
            "taskDefinition": "web", "protection": {"enabled": true},
        }))
        .expect("a spec");
        let mut task = Task::new("t", spec);
        place(&mut task, "i-1");
        task.metadata.generation = Some(3);
        let at = |s| Timestamp::from_second(s).expect("a time");
        let hour = Duration::from_secs(3600);
        let timed = ProtectionStatus {
            observed_generation: 3,
            // ECS's default: two hours.
            expiration_date: Some(Time(at(10 + 7200))),
        };
        assert_eq!(
            chore(&task, true, hour, at(10)),
            Chore::TimeProtection(timed.clone())
        );
        assert_eq!(
            task.protected_until(at(10)),
            Some(at(10 + 7200)),
            "untimed yet: from now"
        );
        task.status.get_or_insert_default().protection = Some(timed);
        assert_eq!(
            chore(&task, true, hour, at(500)),
            Chore::None,
            "timed already"
        );
        assert_eq!(task.protected_until(at(7209)), Some(at(7210)));
        assert_eq!(task.protected_until(at(7210)), None, "over");
        // Disabled (a new generation): timed as nothing.
        task.spec.protection = Some(crds::v1alpha1::TaskProtection {
            enabled: false,
            expires_in_minutes: 120,
        });
        task.metadata.generation = Some(4);
        assert_eq!(
            chore(&task, true, hour, at(600)),
            Chore::TimeProtection(ProtectionStatus {
                observed_generation: 4,
                expiration_date: None
            })
        );
        assert_eq!(task.protected_until(at(600)), None);
    }

    #[test]
    fn stopped_tasks_go_after_retention_and_unplaced_stops_are_recorded() {
        let spec: TaskSpec =
            serde_json::from_value(json!({"taskDefinition": "web"})).expect("a spec");
        let mut task = Task::new("t", spec);
        let at = |s| Timestamp::from_second(s).expect("a time");
        let hour = Duration::from_secs(3600);
        assert_eq!(chore(&task, true, hour, at(10)), Chore::None);
        task.spec.desired_status = DesiredStatus::Stopped;
        assert_eq!(chore(&task, true, hour, at(10)), Chore::MarkStopped);
        place(&mut task, "i-1");
        assert_eq!(
            chore(&task, true, hour, at(10)),
            Chore::None,
            "the agent stops a bound task"
        );
        task.status = Some(TaskStatus {
            last_status: Some(TaskLastStatus::Stopped),
            stopped_at: Some(Time(at(100))),
            ..TaskStatus::default()
        });
        assert_eq!(chore(&task, true, hour, at(3699)), Chore::None);
        assert_eq!(chore(&task, true, hour, at(3700)), Chore::Delete);
        // Stopped, but the spec write was cut short.
        task.spec.desired_status = DesiredStatus::Running;
        assert_eq!(chore(&task, true, hour, at(200)), Chore::DesireStopped);
    }

    #[test]
    fn a_live_task_of_a_deregistered_instance_is_stopped_and_a_stopped_one_kept() {
        let spec: TaskSpec =
            serde_json::from_value(json!({"taskDefinition": "web"})).expect("a spec");
        let mut task = Task::new("t", spec);
        let at = |s| Timestamp::from_second(s).expect("a time");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            chore(&task, false, hour, at(10)),
            Chore::None,
            "an unbound task is on no instance"
        );
        task.spec.container_instance = Some("i-1".into());
        assert_eq!(
            chore(&task, false, hour, at(10)),
            Chore::None,
            "a task started on an instance (start-task) is the scheduler's until placed there"
        );
        place(&mut task, "i-1");
        assert_eq!(chore(&task, true, hour, at(10)), Chore::None);
        assert_eq!(chore(&task, false, hour, at(10)), Chore::Deregistered);
        task.status = Some(TaskStatus {
            last_status: Some(TaskLastStatus::Running),
            ..TaskStatus::default()
        });
        assert_eq!(chore(&task, false, hour, at(10)), Chore::Deregistered);
        task.spec.desired_status = DesiredStatus::Stopped;
        task.status = Some(TaskStatus {
            last_status: Some(TaskLastStatus::Stopped),
            stopped_at: Some(Time(at(100))),
            ..TaskStatus::default()
        });
        assert_eq!(
            chore(&task, false, hour, at(200)),
            Chore::None,
            "kept for the retention period like any stopped task"
        );
        assert_eq!(chore(&task, false, hour, at(3700)), Chore::Delete);
    }
}
