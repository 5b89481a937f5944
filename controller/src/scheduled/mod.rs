//! ScheduledTasks: tasks started on a schedule, as EventBridge Scheduler
//! starts ECS tasks. `plan` decides from the object, the tasks of its
//! runs and the time; this module reads them and carries the plan out:
//! stops (`Replace`), then the run's tasks (created as `gantry run-task`
//! creates them, owned by the ScheduledTask), then the status, and looks
//! again when the next run is due.

pub mod plan;
pub mod schedule;

use std::{collections::BTreeMap, sync::Arc};

use crds::{
    conditions::{ConditionType, Conditions, reason},
    labels,
    stop::patches,
    v1alpha1::{DesiredStatus, ScheduledTask, StopCode, Task, TaskSpec},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{Context, runner};
use plan::{Input, RunTask};

/// The label on a run's tasks: the minute since the epoch of the run's
/// scheduled time.
const SCHEDULED_MINUTE: &str = "gantry.dev/scheduled-minute";

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let controller = Controller::new(
        Api::<ScheduledTask>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Task>::all(client),
        watcher::Config::default().labels(labels::SCHEDULED_TASK),
    );
    let reconciler = runner::Reconciler::new("scheduledtask", &context.metrics);
    runner::run(
        controller,
        reconciler,
        context,
        shutdown,
        |scheduled, ctx| async move { reconcile(&scheduled, &ctx).await },
    )
    .await;
}

async fn reconcile(scheduled: &ScheduledTask, ctx: &Context) -> Result<Action, kube::Error> {
    if scheduled.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = scheduled.namespace().unwrap_or_default();
    let name = scheduled.name_any();
    let uid = scheduled.uid().unwrap_or_default();
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{}={name}", labels::SCHEDULED_TASK);
    let mine: Vec<Task> = tasks
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        // A ScheduledTask made again under the same name starts afresh.
        .filter(|t| t.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let observed: Vec<RunTask> = mine
        .iter()
        .filter_map(|t| {
            let minute = t.labels().get(SCHEDULED_MINUTE)?.parse().ok()?;
            let (stopped, succeeded, reason) = plan::judged(t);
            Some(RunTask {
                name: t.name_any(),
                minute,
                stopped,
                succeeded,
                reason,
            })
        })
        .collect();
    let status = scheduled.status.clone().unwrap_or_default();
    let created = scheduled
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let plan = plan::plan(&Input {
        name: &name,
        uid: &uid,
        spec: &scheduled.spec,
        status: &status,
        created,
        tasks: &observed,
        now: Timestamp::now(),
    });

    for (task, why) in &plan.stop {
        let recorded = mine
            .iter()
            .find(|t| t.name_any() == *task)
            .and_then(|t| t.status.clone())
            .unwrap_or_default();
        let stop = patches(&recorded, StopCode::UserInitiated, why, None);
        crate::task::write_stop(&tasks, task, &stop).await?;
    }
    if let Some((minute, names)) = &plan.start {
        for task_name in names {
            let task = task_for(scheduled, task_name, *minute);
            match tasks.create(&PostParams::default(), &task).await {
                // Started by an earlier reconcile whose status write was lost.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for note in &plan.notes {
        ctx.events.publish(scheduled, note).await;
    }

    let mut next = plan.status;
    next.observed_generation = scheduled.metadata.generation;
    let valid = plan.invalid.is_none();
    Conditions::new(
        &mut next.conditions,
        scheduled.metadata.generation,
        Timestamp::now(),
    )
    .set(
        ConditionType::Valid,
        valid,
        if valid {
            reason::valid::VALID
        } else {
            reason::valid::INVALID
        },
        plan.invalid
            .clone()
            .unwrap_or_else(|| format!("runs on {}", scheduled.spec.schedule)),
    );
    if scheduled.status.as_ref() != Some(&next) {
        let api: Api<ScheduledTask> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": next })),
        )
        .await?;
    }
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// A task of the run at `minute`, as `gantry run-task` makes one.
fn task_for(scheduled: &ScheduledTask, name: &str, minute: i64) -> Task {
    let spec = &scheduled.spec;
    Task {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: scheduled.namespace(),
            labels: Some(BTreeMap::from([
                (labels::SCHEDULED_TASK.to_owned(), scheduled.name_any()),
                (SCHEDULED_MINUTE.to_owned(), minute.to_string()),
            ])),
            owner_references: scheduled.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: TaskSpec {
            task_definition: spec.task_definition.clone(),
            task_definition_revision: None,
            definition: None,
            group: spec.group.clone(),
            started_by: Some(format!("scheduled-task/{}", scheduled.name_any())),
            overrides: spec.overrides.clone(),
            placement_strategy: spec.placement_strategy.clone(),
            placement_constraints: spec.placement_constraints.clone(),
            desired_status: DesiredStatus::Running,
            scheduler_name: crds::v1alpha1::DEFAULT_SCHEDULER_NAME.to_owned(),
            enable_execute_command: spec.enable_execute_command,
            protection: None,
            container_instance: None,
        },
        status: None,
    }
}
