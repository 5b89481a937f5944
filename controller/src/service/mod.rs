//! The Service controller: reads what a Service has, asks [`plan`] what
//! it needs, and carries that out — tasks created with an owner reference,
//! tasks stopped with ECS's stop code and reason, status and events
//! written. A deleted Service drains: it is DRAINING until its tasks have
//! stopped, and they stay as STOPPED records (plan/deletion.rs).
//!
//! A leader-elected reconcile reads the service's tasks from a cache filed
//! by service ([`tasks`]) once that cache shows every write the previous
//! reconciles made, and from the API server (a consistent read) until
//! then, so it always sees the tasks the previous one created or stopped;
//! without leader election it always lists them. Tasks are
//! named by deployment slot (plan/slots.rs), so that two controllers
//! reconciling at once without leader election start a slot once: the
//! second create is a conflict.

pub mod endpoints;
mod instances;
pub mod plan;
mod tasks;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::{
    labels, stop,
    v1alpha1::{
        ContainerInstance, DesiredStatus, LoadBalancer, PlacementConstraint,
        PlacementConstraintType, Reference, SchedulingStrategy, Service, ServiceStatus, Task,
        TaskDefinition, TaskDefinitionRevision, TaskSpec, TaskStatus,
    },
};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher::{self, watcher},
    },
};
use serde_json::json;

use crate::{
    Context, cache, convert,
    revisions::{self, Unresolved},
    runner,
};
use plan::{Definition, NewTask, Stop};

/// What of an instance matters to services: its generation and connectivity.
type Seen = (Option<i64>, bool);

struct State {
    context: Arc<Context>,
    services: Store<Service>,
    instances: Store<ContainerInstance>,
    /// The EndpointSlices Gantry manages.
    slices: Store<EndpointSlice>,
    /// What every load balancer reports.
    balancers: Store<LoadBalancer>,
    /// Every recorded task definition revision.
    revisions: Store<TaskDefinitionRevision>,
    /// Every service's tasks, and what reconciles wrote to them.
    tasks: Arc<tasks::ServiceTasks>,
    /// Every namespace's instances as the plan takes them.
    specs: Arc<instances::InstanceSpecs>,
}

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let (instances, instance_cache) =
        cache::cache::<ContainerInstance>(&client, watcher::Config::default());
    let (slices, slice_cache) = cache::cache::<EndpointSlice>(
        &client,
        watcher::Config::default().labels(&format!(
            "{}={}",
            endpoints::MANAGED_BY,
            endpoints::MANAGER
        )),
    );
    let (revisions, writer) = reflector::store::<TaskDefinitionRevision>();
    let revision_events = reflector::reflector(
        writer,
        watcher(
            Api::<TaskDefinitionRevision>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (balancers, writer) = reflector::store::<LoadBalancer>();
    let balancer_events = reflector::reflector(
        writer,
        watcher(
            Api::<LoadBalancer>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let instance_specs = Arc::new(instances::InstanceSpecs::default());
    let converting = Arc::clone(&instance_specs);
    let instance_events = watcher(
        Api::<ContainerInstance>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .inspect_ok(move |event| converting.apply(event))
    .touched_objects();
    let service_tasks = Arc::new(tasks::ServiceTasks::default());
    let filed = Arc::clone(&service_tasks);
    let task_events = watcher(
        Api::<Task>::all(client.clone()),
        watcher::Config::default().labels(labels::SERVICE),
    )
    .default_backoff()
    .inspect_ok(move |event| filed.apply(event))
    .touched_objects();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let by_definition = services.clone();
    let by_revision = services.clone();
    let by_instance = services.clone();
    let by_balancer = services.clone();
    // Only a change that can move tasks (state, attributes, connectivity,
    // a new instance) concerns services; allocation writes do not.
    let seen: Mutex<HashMap<(String, String), Seen>> = Mutex::new(HashMap::new());
    let controller = controller
        .owns_stream(task_events)
        .watches(
            Api::<TaskDefinition>::all(client.clone()),
            watcher::Config::default(),
            move |td| {
                let namespace = td.namespace();
                let family = td.name_any();
                of_family(&by_definition, namespace.as_deref(), &family)
            },
        )
        .watches_stream(revision_events, move |r: TaskDefinitionRevision| {
            of_family(&by_revision, r.namespace().as_deref(), &r.spec.family)
        })
        .watches_stream(balancer_events, move |lb: LoadBalancer| {
            let namespace = lb.namespace();
            let name = lb.name_any();
            by_balancer
                .state()
                .into_iter()
                .filter(|s| {
                    s.namespace() == namespace
                        && s.spec
                            .load_balancers
                            .iter()
                            .any(|e| e.load_balancer_name == name)
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(instance_events, move |ci: ContainerInstance| {
            let key = (ci.namespace().unwrap_or_default(), ci.name_any());
            let now = (
                ci.metadata.generation,
                ci.status.as_ref().is_some_and(|s| s.agent_connected),
            );
            let changed = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), now)
                != Some(now);
            if !changed {
                return Vec::new();
            }
            by_instance
                .state()
                .into_iter()
                .filter(|s| s.namespace().as_deref() == Some(key.0.as_str()))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        });
    let reconciler = runner::Reconciler {
        retry: Duration::from_secs(2),
        ..runner::Reconciler::new("service", &context.metrics)
    };
    let state = Arc::new(State {
        context,
        services,
        instances,
        slices,
        balancers,
        revisions,
        tasks: service_tasks,
        specs: instance_specs,
    });
    let controller = controller.with_config(
        kube::runtime::controller::Config::default().debounce(Duration::from_millis(50)),
    );
    let reconciling = runner::run(
        controller,
        reconciler,
        state,
        shutdown,
        |service, state| async move { reconcile(&service, &state).await },
    );
    tokio::select! {
        () = reconciling => {}
        () = instance_cache => {}
        () = slice_cache => {}
    }
}

async fn reconcile(service: &Service, state: &State) -> Result<Action, kube::Error> {
    let ctx = &state.context;
    let namespace = service.namespace().unwrap_or_default();
    let held = service.finalizers().iter().any(|f| ours(f));
    if service.metadata.deletion_timestamp.is_some() {
        return if held {
            drain(service, &namespace, state).await
        } else {
            Ok(Action::await_change())
        };
    }
    if !held {
        hold(service, &namespace, ctx).await?;
    }
    let reference = Reference::parse(&service.spec.task_definition);
    let tds: Api<TaskDefinition> = Api::namespaced(ctx.client.clone(), &namespace);
    let td = tds.get_opt(reference.family).await?;
    // Only ends early if the watch is gone, and then the controller is too.
    let _ = state.revisions.wait_until_ready().await;
    let records: Vec<_> = state
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(&namespace) && r.spec.family == reference.family
        })
        .collect();
    // The revision the service runs, which it keeps even if deregistered.
    let running = service
        .status
        .as_ref()
        .and_then(|s| s.deployments.first())
        .filter(|d| d.task_definition == reference.family)
        .map(|d| d.task_definition_revision);
    let resolved = revisions::resolve(
        reference,
        td.as_ref(),
        |n| {
            records
                .iter()
                .find(|r| r.spec.revision == n)
                .map(|r| &r.spec)
        },
        running,
    );
    let definition = match &resolved {
        Ok((revision, spec)) => Definition::Valid {
            revision: *revision,
            spec,
        },
        // Not judged yet: its status change will bring us back.
        Err(Unresolved::NotJudged) => return Ok(Action::requeue(Duration::from_secs(2))),
        Err(Unresolved::NotFound(_)) => Definition::Missing,
        Err(Unresolved::Invalid(why) | Unresolved::Inactive(why)) => Definition::Invalid(why),
    };
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &namespace);
    // Without leader election another controller may be writing these
    // tasks too, and a cache shows its writes late: two controllers that
    // saw different subsets of each other's creates would number new
    // slots apart (plan/slots.rs). Then only a consistent read will do.
    let cached = ctx
        .config
        .leader_election
        .as_ref()
        .and_then(|_| state.tasks.read(&namespace, &service.name_any()));
    let (owned, former) = match cached {
        Some(cached) => of_service(cached, service),
        None => tasks_of(&tasks, service).await?,
    };
    let instances = state.specs.of(&namespace);
    let targets = targets(service, &namespace, state).await;
    let plan = plan::plan(&plan::Input {
        service,
        definition,
        tasks: &owned,
        former: &former,
        instances: &instances,
        targets: &targets,
        now: Timestamp::now(),
    });

    let owner = Arc::new(service.clone());
    let created: Vec<_> = stream::iter(plan.create.clone())
        .map(|new| {
            let (tasks, owner) = (tasks.clone(), Arc::clone(&owner));
            async move { create(&tasks, &owner, &new).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let stopped: Vec<_> = stream::iter(plan.stop.clone())
        .map(|stop| {
            let tasks = tasks.clone();
            async move { stop_task(&tasks, &stop).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let released: Vec<_> = stream::iter(plan.release.clone())
        .map(|(task, version)| {
            let tasks = tasks.clone();
            async move { release(&tasks, &task, version.as_deref()).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut writes = Vec::new();
    let mut failed = None;
    for result in created.into_iter().chain(stopped).chain(released) {
        match result {
            Ok(w) => writes.extend(w),
            Err(e) => failed = Some(e),
        }
    }
    state.tasks.expect(&namespace, &service.name_any(), writes);
    if let Some(e) = failed {
        return Err(e);
    }
    // Only a DAEMON service preempts (daemons::preempt): the copies of
    // every service and instance are not made for the others.
    if service.spec.scheduling_strategy == SchedulingStrategy::Daemon {
        crate::daemons::preempt(
            ctx,
            service,
            &owned,
            &state.services.state(),
            &state.instances.state(),
        )
        .await?;
    }
    publish_endpoints(service, &namespace, &owned, &plan.healthy, state).await?;
    if !written(service, &plan.status) {
        write_status(service, &plan.status, ctx).await?;
    }
    for note in &plan.events {
        ctx.events.publish(service, note).await;
    }
    Ok(Action::requeue(
        plan.requeue.unwrap_or(Duration::from_secs(30)),
    ))
}

/// The Services of a namespace that run a family.
fn of_family(
    services: &Store<Service>,
    namespace: Option<&str>,
    family: &str,
) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == namespace
                && Reference::parse(&s.spec.task_definition).family == family
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The finalizer that keeps a deleted Service DRAINING until its tasks
/// have stopped (plan/deletion.rs).
pub const FINALIZER: &str = "gantry.dev/stop-tasks";

/// The finalizer earlier versions held on Services behind load balancers
/// only; released the same way.
const FORMER_FINALIZER: &str = "gantry.dev/deregister-targets";

fn ours(finalizer: &str) -> bool {
    finalizer == FINALIZER || finalizer == FORMER_FINALIZER
}

/// The tasks labelled for the Service: those it owns, and those an
/// earlier Service of the same name left behind as records.
async fn tasks_of(
    api: &Api<Task>,
    service: &Service,
) -> Result<(Vec<Arc<Task>>, Vec<Arc<Task>>), kube::Error> {
    let name = service.name_any();
    let listed = api
        .list(&ListParams::default().labels(&format!("{}={name}", labels::SERVICE)))
        .await?
        .items;
    Ok(of_service(
        listed.into_iter().map(Arc::new).collect(),
        service,
    ))
}

/// Tasks labelled for the service: those it owns, and the others.
fn of_service(labelled: Vec<Arc<Task>>, service: &Service) -> (Vec<Arc<Task>>, Vec<Arc<Task>>) {
    let uid = service.uid();
    labelled.into_iter().partition(|t| {
        t.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == uid.as_ref())
    })
}

/// Add [`FINALIZER`], on the version read.
async fn hold(service: &Service, namespace: &str, ctx: &Context) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let mut finalizers = service.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": service.resource_version(),
    }});
    api.patch(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// A deleted Service: DRAINING while its tasks stop (drained first behind
/// load balancers); then its tasks are released from it, so that they
/// stay as STOPPED records for the retention period instead of going with
/// it, and it is let go.
async fn drain(service: &Service, namespace: &str, state: &State) -> Result<Action, kube::Error> {
    let ctx = &state.context;
    // `kubectl delete --cascade=orphan`: the tasks are to outlive the
    // Service, running. (Once the garbage collector has orphaned them,
    // they are not the Service's either: `tasks_of` leaves them out.)
    if service.finalizers().iter().any(|f| f == ORPHAN) {
        return let_go(service, namespace, ctx).await;
    }
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), namespace);
    let (owned, _) = tasks_of(&tasks, service).await?;
    let targets = targets(service, namespace, state).await;
    let deletion = plan::deletion::deletion(&plan::Input {
        service,
        definition: Definition::Missing,
        tasks: &owned,
        former: &[],
        instances: &[],
        targets: &targets,
        now: Timestamp::now(),
    });
    if !written(service, &deletion.status) {
        write_status(service, &deletion.status, ctx).await?;
    }
    for note in &deletion.events {
        ctx.events.publish(service, note).await;
    }
    for stop in &deletion.stop {
        stop_task(&tasks, stop).await?;
    }
    for (task, version) in &deletion.release {
        release(&tasks, task, version.as_deref()).await?;
    }
    if !deletion.done || !deletion.stop.is_empty() {
        return Ok(Action::requeue(
            deletion.requeue.unwrap_or(Duration::from_secs(1)),
        ));
    }
    for task in &owned {
        keep_record(&tasks, task).await?;
    }
    let_go(service, namespace, ctx).await
}

/// The finalizer the API server adds for `propagationPolicy: Orphan`.
const ORPHAN: &str = "orphan";

/// Remove our finalizer: the Service may go.
async fn let_go(service: &Service, namespace: &str, ctx: &Context) -> Result<Action, kube::Error> {
    let name = service.name_any();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let finalizers: Vec<&String> = service.finalizers().iter().filter(|f| !ours(f)).collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": service.resource_version(),
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e),
    }
}

/// Release a stopping task from its deleted Service, so the garbage
/// collector leaves it to the retention sweep (controller/src/task.rs).
async fn keep_record(api: &Api<Task>, task: &Task) -> Result<(), kube::Error> {
    if task.owner_references().is_empty() {
        return Ok(());
    }
    let patch = json!({"metadata": {"ownerReferences": null}});
    match api
        .patch(
            &task.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write the Service's EndpointSlices (docs/controller.md, "Load
/// balancers").
async fn publish_endpoints(
    service: &Service,
    namespace: &str,
    tasks: &[Arc<Task>],
    healthy: &BTreeSet<String>,
    state: &State,
) -> Result<(), kube::Error> {
    // Only the instances the tasks are on: a scan of every instance on
    // each reconcile would cost what the cluster holds.
    let host_ips: HashMap<String, String> = tasks
        .iter()
        .filter_map(|t| plan::facts::instance(t))
        .filter_map(|i| {
            let ci = state.instances.get(&ObjectRef::new(i).within(namespace))?;
            Some((i.to_owned(), ci.spec.host_ip.clone()?))
        })
        .collect();
    let want = endpoints::desired(service, tasks, healthy, &host_ips);
    let name = service.name_any();
    let existing: Vec<_> = state
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace)
                && s.labels().get(endpoints::SERVICE_NAME) == Some(&name)
        })
        .collect();
    let api: Api<EndpointSlice> = Api::namespaced(state.context.client.clone(), namespace);
    endpoints::sync(&api, want, &existing).await
}

/// What the service's load balancers report, once the cache of them has
/// been filled; a missing one reports nothing.
async fn targets(service: &Service, namespace: &str, state: &State) -> plan::targets::Targets {
    if service.spec.load_balancers.is_empty() {
        return plan::targets::Targets::default();
    }
    // Only ends early if the watch is gone, and then the controller is too.
    let _ = state.balancers.wait_until_ready().await;
    let balancers = service
        .spec
        .load_balancers
        .iter()
        .map(|entry| {
            let name = &entry.load_balancer_name;
            let lb = state.balancers.get(&ObjectRef::new(name).within(namespace));
            plan::targets::Balancer::of(name, lb.as_deref())
        })
        .collect();
    plan::targets::Targets { balancers }
}

/// Whether the service's status already says `status`, leaving out
/// `autoScaling`, which is the autoscaler's to write
/// (controller/src/autoscaling).
fn written(service: &Service, status: &ServiceStatus) -> bool {
    service.status.as_ref().is_some_and(|current| {
        ServiceStatus {
            auto_scaling: None,
            ..current.clone()
        } == *status
    })
}

async fn write_status(
    service: &Service,
    status: &ServiceStatus,
    ctx: &Context,
) -> Result<(), kube::Error> {
    let api: Api<Service> =
        Api::namespaced(ctx.client.clone(), &service.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(status).unwrap_or_default();
    // Empty lists must be written too, or a merge patch keeps the old ones.
    for list in ["deployments", "conditions"] {
        if body.get(list).is_none() {
            body[list] = json!([]);
        }
    }
    api.patch_status(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": body})),
    )
    .await?;
    Ok(())
}

/// The Task a service starts for `new`.
#[must_use]
pub fn task_for(service: &Service, new: &NewTask) -> Task {
    let name = service.name_any();
    let spec = &service.spec;
    let mut constraints = spec.placement_constraints.clone();
    if let Some(instance) = &new.instance {
        constraints.push(PlacementConstraint {
            type_: PlacementConstraintType::MemberOf,
            expression: Some(convert::pin_expression(instance)),
        });
    }
    let strategy = match spec.scheduling_strategy {
        SchedulingStrategy::Daemon => Vec::new(),
        SchedulingStrategy::Replica if spec.placement_strategy.is_empty() => {
            convert::service_default_strategy()
        }
        SchedulingStrategy::Replica => spec.placement_strategy.clone(),
    };
    Task {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: service.namespace(),
            labels: Some({
                let mut labels = BTreeMap::from([
                    (labels::SERVICE.to_owned(), name.clone()),
                    (labels::DEPLOYMENT.to_owned(), new.deployment.to_string()),
                ]);
                if new.rebalancing {
                    labels.insert(labels::REBALANCING.to_owned(), "true".to_owned());
                }
                labels
            }),
            owner_references: service.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: TaskSpec {
            task_definition: Reference::parse(&spec.task_definition).family.to_owned(),
            task_definition_revision: Some(new.revision),
            definition: Some(new.definition.clone()),
            group: Some(convert::service_group(&name)),
            started_by: Some(plan::deployment_id(new.deployment)),
            overrides: None,
            placement_strategy: strategy,
            placement_constraints: constraints,
            desired_status: DesiredStatus::Running,
            scheduler_name: spec.scheduler_name.clone(),
            enable_execute_command: spec.enable_execute_command,
            protection: None,
            container_instance: None,
        },
        status: None,
    }
}

/// What a write left of a task, for the cache to show before it is read
/// again ([`tasks`]); nothing if the write found the task gone.
type Wrote = Option<tasks::Written>;

fn wrote(task: &Task) -> Wrote {
    Some(tasks::Written {
        task: task.name_any(),
        version: task.resource_version(),
    })
}

async fn create(api: &Api<Task>, service: &Service, new: &NewTask) -> Result<Wrote, kube::Error> {
    match api
        .create(&PostParams::default(), &task_for(service, new))
        .await
    {
        Ok(task) => Ok(wrote(&task)),
        // Taken: another reconcile that saw the same tasks started this
        // slot (see plan/slots.rs).
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(tasks::Written {
            task: new.name.clone(),
            version: None,
        })),
        Err(e) => Err(e),
    }
}

/// Stop a task with the service's stop code and reason. The reason is
/// recorded first: the agent keeps the first stop cause it finds. Behind
/// a load balancer a RUNNING task is deregistered first (DEACTIVATING);
/// [`release`] moves it on once it has drained.
async fn stop_task(api: &Api<Task>, stop: &Stop) -> Result<Wrote, kube::Error> {
    let params = PatchParams::default();
    // The plan stops no task that is stopping, so no cause is recorded to
    // keep.
    let recorded = TaskStatus::default();
    let result = if stop.drain {
        let patches = stop::deactivating(
            stop.code,
            &stop.reason,
            Timestamp::now(),
            stop.version.as_deref(),
        );
        crate::task::write_stop(api, &stop.task, &patches).await
    } else if stop.bound {
        let patches = stop::patches(&recorded, stop.code, &stop.reason, None);
        crate::task::write_stop(api, &stop.task, &patches).await
    } else {
        // No agent has it: it is stopped once it says so.
        let patches = stop::patches(&recorded, stop.code, &stop.reason, Some(Timestamp::now()));
        api.patch(&stop.task, &params, &Patch::Merge(&patches.spec))
            .await?;
        api.patch_status(&stop.task, &params, &Patch::Merge(&patches.status))
            .await
    };
    match result {
        Ok(task) => Ok(wrote(&task)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A deregistered task has drained: on to STOPPING, where its agent stops
/// it. A 409 means its agent reported meanwhile; the next round sees it.
async fn release(api: &Api<Task>, task: &str, version: Option<&str>) -> Result<Wrote, kube::Error> {
    let patch = stop::released(version);
    match api
        .patch_status(task, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(task) => Ok(wrote(&task)),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}
