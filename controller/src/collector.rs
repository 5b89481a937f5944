//! The allocation collector: takes back reservations nobody will use.
//!
//! An allocation is released when its task is STOPPED, bound to another
//! instance, or gone. "Gone" waits `allocation_grace` first: a scheduler
//! reserves before it binds, so a reservation may be seen before its task
//! reaches this process's cache. Releases are conditional writes like the
//! scheduler's, so racing one is safe.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crds::v1alpha1::{Allocation, ContainerInstance, Task, TaskLastStatus};
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher::{self, watcher},
    },
};

use crate::{Context, scheduler};

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
    let client = context.client.clone();
    let (tasks, task_writer) = reflector::store::<Task>();
    let (instances, instance_writer) = reflector::store::<ContainerInstance>();
    let task_stream = reflector::reflector(
        task_writer,
        watcher(Api::<Task>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|event| logged(event, "tasks"));
    let instance_stream = reflector::reflector(
        instance_writer,
        watcher(
            Api::<ContainerInstance>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|event| logged(event, "container instances"));
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

fn logged<T>(event: Result<T, watcher::Error>, what: &str) -> futures::future::Ready<()> {
    if let Err(e) = event {
        tracing::warn!(error = %e, "watching {what}");
    }
    futures::future::ready(())
}

async fn collect(
    context: &Context,
    tasks: &Store<Task>,
    instances: &Store<ContainerInstance>,
    orphans: &mut HashMap<String, Instant>,
) {
    let grace = context.config.allocation_grace;
    let mut seen = Vec::new();
    let (mut kept, mut released) = (0usize, 0usize);
    for ci in instances.state() {
        let namespace = ci.namespace().unwrap_or_default();
        let name = ci.name_any();
        let mut release = Vec::new();
        for allocation in ci.status.iter().flat_map(|s| &s.allocations) {
            let task = tasks.get(&ObjectRef::new(&allocation.task).within(&namespace));
            match judge(allocation, &name, task.as_deref()) {
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
        if release.is_empty() {
            continue;
        }
        released += release.len();
        let api: Api<ContainerInstance> = Api::namespaced(context.client.clone(), &namespace);
        let (_, conflicts) = scheduler::release(&api, ci, &release).await;
        context.metrics.reconciled("allocations", None);
        tracing::info!(instance = %name, released = release.len(), conflicts, "released allocations");
    }
    orphans.retain(|uid, _| seen.contains(uid));
    tracing::debug!(
        kept,
        released,
        orphans = orphans.len(),
        tasks = tasks.state().len(),
        "collector pass"
    );
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
