//! The allocation collector: takes back reservations nobody will use, and
//! keeps each instance's figures (remaining resources from registration
//! on, running and pending task counts; see [`crate::tally`]) true.
//!
//! An allocation is released when its task is STOPPED, bound to another
//! instance, or gone. "Gone" waits `allocation_grace` first: a scheduler
//! reserves before it binds, so a reservation may be seen before its task
//! reaches this process's cache. Releases are conditional writes like the
//! scheduler's, so racing one is safe.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::Arc,
    time::{Duration, Instant},
};

use crds::v1alpha1::{Allocation, ContainerInstance, Task, TaskLastStatus};
use kube::{
    Api, ResourceExt,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::{Context, cache, convert, scheduler, tally::Tally};

/// Why an allocation is released, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Release,
    /// The task is not known (yet?): release after the grace period.
    Orphan,
}

/// Judge one allocation on `instance` against its task as cached.
#[must_use]
pub fn judge(allocation: &Allocation, instance: &str, task: Option<&Task>) -> Verdict {
    let Some(task) = task.filter(|t| t.uid().as_deref() == Some(allocation.task_uid.as_str()))
    else {
        return Verdict::Orphan;
    };
    let stopped = task
        .status
        .as_ref()
        .is_some_and(|s| s.last_status == Some(TaskLastStatus::Stopped));
    let elsewhere = task
        .spec
        .container_instance
        .as_deref()
        .is_some_and(|on| on != instance);
    if stopped || elsewhere {
        Verdict::Release
    } else {
        Verdict::Keep
    }
}

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tasks, task_stream) = cache::cache::<Task>(&context.client, watcher::Config::default());
    let (instances, instance_stream) =
        cache::cache::<ContainerInstance>(&context.client, watcher::Config::default());
    let collect = async {
        let _ = tokio::join!(tasks.wait_until_ready(), instances.wait_until_ready());
        let mut orphans: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            collect(&context, &tasks, &instances, &mut orphans).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = task_stream => {}
        () = instance_stream => {}
        () = collect => {}
    }
}

async fn collect(
    context: &Context,
    tasks: &Store<Task>,
    instances: &Store<ContainerInstance>,
    orphans: &mut HashMap<String, Instant>,
) {
    let grace = context.config.allocation_grace;
    let mut seen = Vec::new();
    let (mut kept, mut released, mut settled) = (0usize, 0usize, 0usize);
    for ci in instances.state() {
        let namespace = ci.namespace().unwrap_or_default();
        let name = ci.name_any();
        let task_of = |a: &Allocation| tasks.get(&ObjectRef::new(&a.task).within(&namespace));
        let mut release = Vec::new();
        for allocation in ci.status.iter().flat_map(|s| &s.allocations) {
            match judge(allocation, &name, task_of(allocation).as_deref()) {
                Verdict::Keep => kept += 1,
                Verdict::Release => release.push(allocation.task_uid.clone()),
                Verdict::Orphan => {
                    seen.push(allocation.task_uid.clone());
                    let first = *orphans
                        .entry(allocation.task_uid.clone())
                        .or_insert_with(Instant::now);
                    if first.elapsed() >= grace {
                        release.push(allocation.task_uid.clone());
                    }
                }
            }
        }
        let Some(first) = figures(&ci, &release, task_of) else {
            continue;
        };
        released += release.len();
        settled += 1;
        let api: Api<ContainerInstance> = Api::namespaced(context.client.clone(), &namespace);
        let conflicts = settle(&api, ci, first, &release, &task_of).await;
        context.metrics.reconciled("allocations", None);
        tracing::info!(instance = %name, released = release.len(), conflicts, "settled allocations and figures");
    }
    orphans.retain(|uid, _| seen.contains(uid));
    tracing::debug!(
        kept,
        released,
        settled,
        orphans = orphans.len(),
        tasks = tasks.state().len(),
        "collector pass"
    );
}

/// What to write on `ci` once the allocations of `release` are taken back:
/// the allocations kept and their task counts, or `None` when the
/// instance already says all of it (its remaining resources included).
fn figures<T: Deref<Target = Task>>(
    ci: &ContainerInstance,
    release: &[String],
    task_of: impl Fn(&Allocation) -> Option<T>,
) -> Option<(Vec<Allocation>, Tally)> {
    let status = ci.status.as_ref();
    let stored = status.map_or(&[][..], |s| s.allocations.as_slice());
    let kept: Vec<Allocation> = stored
        .iter()
        .filter(|a| !release.contains(&a.task_uid))
        .cloned()
        .collect();
    let tally = Tally::of(&kept, task_of);
    let unchanged = kept.len() == stored.len()
        && tally == Tally::stored(ci)
        && status.and_then(|s| s.remaining_resources.as_ref())
            == Some(&convert::remaining(ci, &kept));
    (!unchanged).then_some((kept, tally))
}

/// Write an instance's figures (`first`, as [`figures`] found them on
/// `ci`), re-reading it and working them out again on conflicts (a
/// scheduler reserving there); returns the conflicts met.
async fn settle<T: Deref<Target = Task>>(
    api: &Api<ContainerInstance>,
    mut ci: Arc<ContainerInstance>,
    first: (Vec<Allocation>, Tally),
    release: &[String],
    task_of: impl Fn(&Allocation) -> Option<T>,
) -> u64 {
    let mut conflicts = 0;
    let mut next = Some(first);
    for _ in 0..8 {
        let Some((kept, tally)) = next.take().or_else(|| figures(&ci, release, &task_of)) else {
            return conflicts;
        };
        match scheduler::write_allocations(api, &ci, kept, Some(tally)).await {
            Ok(_) => return conflicts,
            Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
            Err(e) => tracing::warn!(instance = %ci.name_any(), error = %e, "settling failed"),
        }
        match api.get_opt(&ci.name_any()).await {
            Ok(Some(fresh)) => ci = Arc::new(fresh),
            Ok(None) => return conflicts,
            Err(_) => {}
        }
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{TaskSpec, TaskStatus};
    use serde_json::json;

    fn allocation(uid: &str) -> Allocation {
        serde_json::from_value(json!({"task": "t", "taskUid": uid, "cpu": 0, "memory": 10}))
            .expect("an allocation")
    }

    fn task(uid: &str, bound: Option<&str>, last: Option<TaskLastStatus>) -> Task {
        let spec: TaskSpec =
            serde_json::from_value(json!({"taskDefinition": "web"})).expect("a spec");
        let mut task = Task::new("t", spec);
        task.metadata.uid = Some(uid.to_owned());
        task.spec.container_instance = bound.map(str::to_owned);
        task.status = Some(TaskStatus {
            last_status: last,
            ..TaskStatus::default()
        });
        task
    }

    #[test]
    fn allocations_are_judged_by_their_task() {
        let a = allocation("u1");
        assert_eq!(judge(&a, "i-1", None), Verdict::Orphan);
        assert_eq!(
            judge(&a, "i-1", Some(&task("u2", None, None))),
            Verdict::Orphan
        );
        assert_eq!(
            judge(&a, "i-1", Some(&task("u1", None, None))),
            Verdict::Keep
        );
        assert_eq!(
            judge(
                &a,
                "i-1",
                Some(&task("u1", Some("i-1"), Some(TaskLastStatus::Running)))
            ),
            Verdict::Keep
        );
        assert_eq!(
            judge(&a, "i-1", Some(&task("u1", Some("i-2"), None))),
            Verdict::Release
        );
        assert_eq!(
            judge(
                &a,
                "i-1",
                Some(&task("u1", Some("i-1"), Some(TaskLastStatus::Stopped)))
            ),
            Verdict::Release
        );
    }
}
