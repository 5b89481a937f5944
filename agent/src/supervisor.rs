//! One supervisor per task bound here: it reads the task and its
//! containers, plans, acts, and writes the status back, each time
//! something changes (a Task or ContainerInstance watch event, a runtime
//! event) and on a periodic resync.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::v1alpha1::{DesiredStatus, ImagePullPolicy, Task, TaskStatus};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{
    Config, container,
    plan::{self, Action, Failure, Input},
    runtime::{Observed, Pull, Runtime, RuntimeError, labels},
    secrets,
};

/// What the supervisors share: the tasks bound here as last watched, the
/// task uids this instance holds allocations for, and the supervisors
/// themselves.
#[derive(Debug, Default)]
pub struct Shared {
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    allocated: Mutex<BTreeSet<String>>,
    supervisors: Mutex<HashMap<String, Supervised>>,
    cut_off: Mutex<CutOff>,
}

/// What `--stop-tasks-when-disconnected` needs to know: when the control
/// plane last answered, and the tasks stopped because it did not, each
/// with its reason, kept here until their status records it (the status
/// cannot be written while the control plane is out of reach, and it is
/// the agent's only other memory).
#[derive(Debug, Default)]
struct CutOff {
    contact: Option<std::time::Instant>,
    /// This disconnection already stopped what ran.
    acted: bool,
    stopped: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn set_task(&self, task: Task) -> Option<String> {
        let uid = task.uid()?;
        lock(&self.tasks).insert(uid.clone(), Arc::new(task));
        Some(uid)
    }

    pub fn remove_task(&self, uid: &str) {
        lock(&self.tasks).remove(uid);
    }

    /// Replace every task (after a watch relist); the uids that went.
    pub fn replace_tasks(&self, tasks: Vec<Task>) -> Vec<String> {
        let fresh: HashMap<String, Arc<Task>> = tasks
            .into_iter()
            .filter_map(|t| Some((t.uid()?, Arc::new(t))))
            .collect();
        let mut current = lock(&self.tasks);
        let gone = current
            .keys()
            .filter(|uid| !fresh.contains_key(*uid))
            .cloned()
            .collect();
        *current = fresh;
        gone
    }

    /// Every task bound here, as last seen.
    pub fn tasks(&self) -> Vec<Arc<Task>> {
        lock(&self.tasks).values().cloned().collect()
    }

    pub fn task_uids(&self) -> Vec<String> {
        lock(&self.tasks).keys().cloned().collect()
    }

    fn task(&self, uid: &str) -> Option<Arc<Task>> {
        lock(&self.tasks).get(uid).cloned()
    }

    /// The task bound here named `namespace/name`.
    pub fn task_named(&self, namespace: &str, name: &str) -> Option<Arc<Task>> {
        lock(&self.tasks)
            .values()
            .find(|t| t.namespace().as_deref() == Some(namespace) && t.name_any() == name)
            .cloned()
    }

    pub fn set_allocated(&self, uids: BTreeSet<String>) {
        *lock(&self.allocated) = uids;
    }

    fn is_allocated(&self, uid: &str) -> bool {
        lock(&self.allocated).contains(uid)
    }

    /// The control plane answered.
    pub fn contact(&self) {
        let mut cut_off = lock(&self.cut_off);
        cut_off.contact = Some(std::time::Instant::now());
        cut_off.acted = false;
    }

    /// If the control plane has not answered for `limit` (and this
    /// disconnection has not already acted), mark every task desired
    /// RUNNING to be stopped, saying why; whether it did.
    pub fn cut_off_after(&self, limit: Duration) -> bool {
        let mut cut_off = lock(&self.cut_off);
        let silent = cut_off.contact.is_some_and(|at| at.elapsed() >= limit);
        if !silent || cut_off.acted {
            return false;
        }
        cut_off.acted = true;
        let reason = format!(
            "the agent could not reach the control plane for {} s \
             (--stop-tasks-when-disconnected)",
            limit.as_secs()
        );
        for (uid, task) in lock(&self.tasks).iter() {
            if task.spec.desired_status == DesiredStatus::Running {
                cut_off.stopped.insert(uid.clone(), reason.clone());
            }
        }
        true
    }

    fn cut_off_reason(&self, uid: &str) -> Option<String> {
        lock(&self.cut_off).stopped.get(uid).cloned()
    }

    fn forget_cut_off(&self, uid: &str) {
        lock(&self.cut_off).stopped.remove(uid);
    }
}

/// A running supervisor: how to wake it, and how to end it.
#[derive(Debug)]
struct Supervised {
    wake: mpsc::UnboundedSender<()>,
    task: tokio::task::AbortHandle,
}

/// End every supervisor (the agent is stopping). Containers are left as
/// they are, as after kill -9; the next start re-adopts them.
pub fn stop_all(shared: &Shared) {
    for (_, supervised) in lock(&shared.supervisors).drain() {
        supervised.task.abort();
    }
}

/// Wake the supervisor of a task, starting one if it has none.
pub fn notify<R: Runtime>(context: &Arc<Context<R>>, uid: &str) {
    let mut supervisors = lock(&context.shared.supervisors);
    if let Some(supervised) = supervisors.get(uid)
        && supervised.wake.send(()).is_ok()
    {
        return;
    }
    let (wake, receiver) = mpsc::unbounded_channel();
    let span = tracing::info_span!("task", uid = %uid);
    let task =
        tokio::spawn(supervise(Arc::clone(context), uid.to_owned(), receiver).instrument(span))
            .abort_handle();
    supervisors.insert(uid.to_owned(), Supervised { wake, task });
}

/// Wake every supervisor.
pub fn notify_all<R: Runtime>(context: &Arc<Context<R>>) {
    let uids: Vec<String> = lock(&context.shared.supervisors).keys().cloned().collect();
    for uid in uids {
        notify(context, &uid);
    }
}

/// The top-level fields of `next` that differ from `before`, with those
/// it dropped as nulls; `None` if nothing changed.
fn changed_fields(
    before: Option<&TaskStatus>,
    next: &TaskStatus,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let before = serde_json::to_value(before.cloned().unwrap_or_default()).ok()?;
    let next = serde_json::to_value(next).ok()?;
    let (before, next) = (before.as_object()?, next.as_object()?);
    let mut changed: serde_json::Map<String, serde_json::Value> = next
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for gone in before.keys().filter(|k| !next.contains_key(*k)) {
        changed.insert(gone.clone(), serde_json::Value::Null);
    }
    (!changed.is_empty()).then_some(changed)
}

/// What every supervisor works with.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct Context<R> {
    pub config: Arc<Config>,
    pub runtime: Arc<R>,
    pub client: kube::Client,
    pub shared: Arc<Shared>,
}

async fn supervise<R: Runtime>(
    context: Arc<Context<R>>,
    uid: String,
    mut wake: mpsc::UnboundedReceiver<()>,
) {
    let mut supervisor = Supervisor {
        context: Arc::clone(&context),
        uid: uid.clone(),
        failure: None,
    };
    loop {
        let next = match supervisor.step().await {
            Ok(Next::Done) => break,
            Ok(Next::Soon) => Duration::from_millis(200),
            Ok(Next::Idle) => context.config.resync,
            Err(e) => {
                tracing::warn!(error = %e, "task step failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            woken = wake.recv() => if woken.is_none() { break },
            () = tokio::time::sleep(next) => {}
        }
        // Many wake-ups while busy are one.
        while wake.try_recv().is_ok() {}
    }
    let mut supervisors = lock(&context.shared.supervisors);
    // A wake-up after the last step must not be lost: only leave if
    // nothing is queued.
    if wake.is_empty() {
        supervisors.remove(&uid);
    } else {
        drop(supervisors);
        notify(&context, &uid);
    }
}

enum Next {
    /// Nothing left: the task is gone and so are its containers.
    Done,
    /// Something is under way; look again shortly.
    Soon,
    /// Steady; the next event or resync will wake it.
    Idle,
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing the task status: {0}")]
    Kube(#[from] kube::Error),
}

struct Supervisor<R> {
    context: Arc<Context<R>>,
    uid: String,
    /// A launch failure not yet written to the status.
    failure: Option<Failure>,
}

impl<R: Runtime> Supervisor<R> {
    async fn observed(&self) -> Result<BTreeMap<String, Observed>, RuntimeError> {
        let mine = self
            .context
            .runtime
            .list(&self.context.config.name, Some(&self.uid))
            .await?;
        let cluster = self.context.config.cluster_uid.as_deref();
        Ok(mine
            .into_iter()
            .filter(|o| container::ours(o, cluster))
            .filter_map(|o| Some((o.label(labels::CONTAINER)?.to_owned(), o)))
            .collect())
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let observed = self.observed().await?;
        let Some(task) = self.context.shared.task(&self.uid) else {
            self.context.shared.forget_cut_off(&self.uid);
            // Deleted (or never ours): stop and remove what runs for it.
            for o in observed.values() {
                self.context
                    .runtime
                    .stop(&o.id, Duration::from_secs(30))
                    .await?;
                self.context.runtime.remove(&o.id).await?;
            }
            self.context.runtime.release_task(&self.uid).await?;
            return Ok(Next::Done);
        };
        let definition = match task.spec.definition.as_ref() {
            Some(snapshot) => task.effective_definition(snapshot),
            None => Err("the task has no task definition snapshot (spec.definition)".to_owned()),
        };
        let definition = match definition {
            Ok(definition) => definition,
            Err(reason) => {
                self.failure = Some(Failure {
                    container: String::new(),
                    reason,
                });
                return self
                    .write_status(&task, &observed, &TaskStatus::default())
                    .await;
            }
        };
        let definition = &definition;
        let recorded = task.status.clone().unwrap_or_default();
        let fenced = self.context.shared.is_allocated(&self.uid);
        if recorded.stop_code.is_some() {
            self.context.shared.forget_cut_off(&self.uid);
        }
        let cut_off = self.context.shared.cut_off_reason(&self.uid);
        let plan = plan::plan(
            &Input {
                definition,
                desired: task.spec.desired_status,
                fenced,
                recorded: &recorded,
                observed: &observed,
                failure: self.failure.as_ref(),
                cut_off: cut_off.as_deref(),
            },
            Timestamp::now(),
        );
        if plan.actions.is_empty() {
            if !fenced && plan.status.stop_code.is_none() && observed.is_empty() {
                tracing::debug!("waiting for this instance's allocation before starting");
            }
            let next = self.write_status(&task, &observed, &plan.status).await?;
            if plan.finished() {
                return self.clean_up(&task, &observed).await;
            }
            // A container waits on one with a startTimeout: no event
            // says when that runs out.
            let timed = |name: &str| {
                definition
                    .container_definitions
                    .iter()
                    .any(|d| d.name == name && d.start_timeout.is_some())
            };
            let waiting = plan.status.stop_code.is_none()
                && definition.container_definitions.iter().any(|d| {
                    !observed.contains_key(&d.name)
                        && d.depends_on.iter().any(|dep| timed(&dep.container_name))
                });
            return Ok(if waiting { Next::Soon } else { next });
        }
        // Why the task stops is recorded before the stops: what caused it
        // (a dependency's startTimeout) may not outlive them.
        if plan.status.stop_code.is_some() && recorded.stop_code.is_none() {
            self.patch(&task, &plan.status).await?;
        }
        let mut status = plan.status.clone();
        // What the task's containers share is made once a step, by its
        // first launch.
        let mut prepared = None;
        for action in &plan.actions {
            if let Err(failure) = self
                .act(
                    &task,
                    definition,
                    &observed,
                    action,
                    &mut status,
                    &mut prepared,
                )
                .await
            {
                if let Action::Stop { .. } = action {
                    // Tried again on the next look; a stop that failed says
                    // nothing about how the task started.
                    tracing::warn!(container = %failure.container, reason = %failure.reason, "stop failed; retrying");
                } else {
                    tracing::info!(container = %failure.container, reason = %failure.reason, "launch failed");
                    self.failure = Some(failure);
                }
                break;
            }
        }
        // Record what acting changed (pull times), then look again at once.
        if status != plan.status {
            self.patch(&task, &status).await?;
        }
        Ok(Next::Soon)
    }

    async fn act(
        &self,
        task: &Task,
        definition: &crds::v1alpha1::TaskDefinitionSpec,
        observed: &BTreeMap<String, Observed>,
        action: &Action,
        status: &mut TaskStatus,
        prepared: &mut Option<Option<String>>,
    ) -> Result<(), Failure> {
        let runtime = &self.context.runtime;
        let failed = |container: &str, e: RuntimeError| Failure {
            container: container.to_owned(),
            reason: e.to_string(),
        };
        match action {
            Action::Launch(name) => {
                let Some(def) = definition
                    .container_definitions
                    .iter()
                    .find(|d| d.name == *name)
                else {
                    return Ok(());
                };
                let mut config = container::config(task, definition, def, &self.context.config);
                config.cgroup_parent = match prepared {
                    Some(parent) => parent.clone(),
                    None => {
                        let resources =
                            container::task_resources(task, definition, &self.context.config);
                        let parent = runtime
                            .prepare_task(&resources)
                            .await
                            .map_err(|e| failed(name, e))?;
                        prepared.insert(parent).clone()
                    }
                };
                let namespace = task.namespace().unwrap_or_default();
                let client = &self.context.client;
                let unready = |reason| Failure {
                    container: name.clone(),
                    reason,
                };
                let secrets = secrets::resolve(client, &namespace, def)
                    .await
                    .map_err(unready)?;
                // Files first: `environment` wins over them, as in ECS.
                let files = secrets::environment_files(client, &namespace, def)
                    .await
                    .map_err(unready)?;
                config.environment.splice(0..0, files);
                config.environment.extend(secrets);
                let pull = Pull {
                    always: def.image_pull_policy == Some(ImagePullPolicy::Always),
                    credentials: secrets::registry_login(client, &namespace, def)
                        .await
                        .map_err(unready)?,
                };
                status
                    .pull_started_at
                    .get_or_insert_with(|| Time(Timestamp::now()));
                runtime
                    .ensure_image(&config.image, &pull)
                    .await
                    .map_err(|e| failed(name, e))?;
                status.pull_stopped_at = Some(Time(Timestamp::now()));
                let id = match runtime.create(&config).await {
                    Ok(id) => id,
                    // Created by an earlier step whose list missed it: the
                    // next look finds it; never a second one.
                    Err(RuntimeError::Container { message, .. })
                        if message.contains("already in use") =>
                    {
                        return Ok(());
                    }
                    Err(e) => return Err(failed(name, e)),
                };
                runtime.start(&id).await.map_err(|e| failed(name, e))
            }
            Action::Start(name) => {
                if let Some(o) = observed.get(name) {
                    runtime.start(&o.id).await.map_err(|e| failed(name, e))?;
                }
                Ok(())
            }
            Action::Stop { container, timeout } => {
                if let Some(o) = observed.get(container) {
                    runtime
                        .stop(&o.id, *timeout)
                        .await
                        .map_err(|e| failed(container, e))?;
                }
                Ok(())
            }
        }
    }

    async fn write_status(
        &mut self,
        task: &Task,
        observed: &BTreeMap<String, Observed>,
        status: &TaskStatus,
    ) -> Result<Next, StepError> {
        let mut status = status.clone();
        if let Some(failure) = self.failure.as_ref().filter(|_| status.stop_code.is_none()) {
            status.stop_code = Some(crds::v1alpha1::StopCode::TaskFailedToStart);
            status.stopped_reason = Some(failure.reason.clone());
            status.last_status = Some(crds::v1alpha1::TaskLastStatus::Stopped);
        }
        if task.status.as_ref() != Some(&status) {
            self.patch(task, &status).await?;
        }
        // Once written, the failure is the status's to remember.
        if status.stop_code.is_some() {
            self.failure = None;
        }
        let transitional = observed.values().any(|o| {
            o.state == crate::runtime::State::Created
                || o.health == Some(crds::v1alpha1::HealthStatus::Unknown)
        });
        Ok(if transitional { Next::Soon } else { Next::Idle })
    }

    async fn patch(&self, task: &Task, status: &TaskStatus) -> Result<(), kube::Error> {
        let api: Api<Task> = Api::namespaced(
            self.context.client.clone(),
            &task.namespace().unwrap_or_default(),
        );
        // Only the fields that changed since the status this was planned
        // from: the service scheduler writes the status too (DEACTIVATING,
        // then STOPPING), and a plan from an older version must not write
        // back what it did not change.
        let Some(changed) = changed_fields(task.status.as_ref(), status) else {
            return Ok(());
        };
        let name = task.name_any();
        let updated = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": changed })),
            )
            .await?;
        // The next step plans from what was written, not from a watch
        // event that may not have arrived yet.
        self.context.shared.set_task(updated);
        Ok(())
    }

    /// A stopped task's containers go after the retention period; then the
    /// supervisor has nothing more to do until the task changes.
    async fn clean_up(
        &self,
        task: &Task,
        observed: &BTreeMap<String, Observed>,
    ) -> Result<Next, StepError> {
        if observed.is_empty() {
            // Again, in case the agent stopped between removing the
            // containers and this.
            self.context.runtime.release_task(&self.uid).await?;
            return Ok(Next::Done);
        }
        let stopped_at = task
            .status
            .as_ref()
            .and_then(|s| s.stopped_at.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        let age = Timestamp::now().duration_since(stopped_at);
        let retention = self.context.config.container_retention;
        if age.as_secs_f64() >= retention.as_secs_f64() {
            for o in observed.values() {
                self.context.runtime.remove(&o.id).await?;
            }
            self.context.runtime.release_task(&self.uid).await?;
            return Ok(Next::Done);
        }
        Ok(Next::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{HealthStatus, StopCode, TaskLastStatus};

    #[test]
    fn only_what_the_plan_changed_is_written_back() {
        let seen = TaskStatus {
            last_status: Some(TaskLastStatus::Running),
            health_status: Some(HealthStatus::Unknown),
            stopped_reason: Some("old".into()),
            ..TaskStatus::default()
        };
        let next = TaskStatus {
            last_status: Some(TaskLastStatus::Running),
            health_status: Some(HealthStatus::Healthy),
            stop_code: Some(StopCode::UserInitiated),
            ..TaskStatus::default()
        };
        let changed = changed_fields(Some(&seen), &next).expect("a change");
        assert_eq!(
            serde_json::Value::Object(changed),
            json!({"healthStatus": "HEALTHY", "stopCode": "UserInitiated", "stoppedReason": null}),
            "lastStatus is not sent back: another writer may have moved it on"
        );
        assert_eq!(changed_fields(Some(&next), &next), None);
    }
}
