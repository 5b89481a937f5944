//! The agent's main loop: register, keep the Lease, and feed the task
//! supervisors from three sources — the watch of Tasks bound here, the
//! watch of this instance's allocations (the fence), and the runtime's
//! events — plus a periodic resync.

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use crds::v1alpha1::{ContainerInstance, Task};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::DeleteParams,
    runtime::{WatchStreamExt, watcher},
};
use tracing::Instrument;

use crate::{
    Config, Error, container, endpoint, registration,
    runtime::{Runtime, labels},
    supervisor::{self, Context, Shared},
    usage,
};

/// Run the agent until `shutdown` completes.
///
/// # Errors
/// When the runtime cannot be reached or registration is refused; once
/// running, failures are logged and retried.
pub async fn run<R: Runtime>(
    client: Client,
    config: Config,
    runtime: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let span = tracing::info_span!("agent", cluster = %config.cluster, instance = %config.name);
    run_inner(client, config, runtime, shutdown)
        .instrument(span)
        .await
}

async fn run_inner<R: Runtime>(
    client: Client,
    config: Config,
    runtime: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let info = runtime.info().await?;
    let mut config = config;
    if config.cluster_uid.is_none() {
        config.cluster_uid = registration::cluster_uid(&client, &config.cluster).await;
    }
    let instances: Api<ContainerInstance> = Api::namespaced(client.clone(), &config.cluster);
    let spec = registration::spec(&config, &info);
    let versions = registration::version_info(&info);

    let config = Arc::new(config);
    let context = Arc::new(Context {
        config: Arc::clone(&config),
        runtime: Arc::new(runtime),
        client: client.clone(),
        shared: Arc::new(Shared::default()),
    });
    let endpoint = match (config.endpoint, &config.api) {
        (Some(listen), Some(api)) => {
            let advertise = match listen.ip() {
                ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
                ip => ip,
            };
            Some(endpoint::serve(Arc::clone(&context), api.clone(), listen, advertise).await?)
        }
        _ => None,
    };
    let instance =
        registration::register(&instances, &config, spec, versions, endpoint.as_ref()).await?;
    tracing::info!(runtime = %info.version, endpoint = ?endpoint.as_ref().map(|e| &e.url), "registered");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.cluster);
    context.shared.contact();
    let lease = registration::keep_lease(leases.clone(), instance, &config, || {
        context.shared.contact();
    });
    // How often to look whether the control plane has been silent too
    // long (`--stop-tasks-when-disconnected`).
    let mut silence = tokio::time::interval(Duration::from_secs(1));

    let tasks: Api<Task> = Api::namespaced(client.clone(), &config.cluster);
    let selector = format!("{}={}", crds::labels::CONTAINER_INSTANCE, config.name);
    let mut task_events = watcher(tasks, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut instance_events = watcher(
        instances.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", config.name)),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let sampling = tokio::spawn({
        let context = Arc::clone(&context);
        async move {
            let mut sampler = usage::Sampler::default();
            let mut tick = tokio::time::interval(context.config.stats_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sampler.sample(&context).await;
            }
        }
        .instrument(tracing::Span::current())
    });
    let mut changes = context.runtime.changes(&config.name);
    let mut resync = tokio::time::interval(config.resync);
    let mut relisting = Vec::new();
    let mut synced = false;

    tokio::pin!(shutdown);
    tokio::pin!(lease);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut lease => {}
            event = task_events.try_next() => match event {
                Ok(Some(watcher::Event::Apply(task))) => {
                    if let Some(uid) = context.shared.set_task(task) {
                        supervisor::notify(&context, &uid);
                    }
                }
                Ok(Some(watcher::Event::Delete(task))) => {
                    if let Some(uid) = kube::ResourceExt::uid(&task) {
                        context.shared.remove_task(&uid);
                        supervisor::notify(&context, &uid);
                    }
                }
                Ok(Some(watcher::Event::Init)) => relisting.clear(),
                Ok(Some(watcher::Event::InitApply(task))) => relisting.push(task),
                Ok(Some(watcher::Event::InitDone)) => {
                    let gone = context.shared.replace_tasks(std::mem::take(&mut relisting));
                    for uid in gone.iter().chain(&context.shared.task_uids()) {
                        supervisor::notify(&context, uid);
                    }
                    if !synced {
                        synced = true;
                        adopt(&context).await;
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::warn!(error = %e, "task watch failed; retrying"),
            },
            instance = instance_events.try_next() => match instance {
                Ok(Some(instance)) => {
                    let allocated: BTreeSet<String> = instance
                        .status
                        .iter()
                        .flat_map(|s| &s.allocations)
                        .map(|a| a.task_uid.clone())
                        .collect();
                    context.shared.set_allocated(allocated);
                    supervisor::notify_all(&context);
                }
                Ok(None) => break,
                Err(e) => tracing::warn!(error = %e, "instance watch failed; retrying"),
            },
            Some(uid) = changes.next() => {
                // Before the first task list, an unknown uid may yet be a
                // task of ours; the adoption after the list settles it.
                if synced || context.shared.task_uids().contains(&uid) {
                    supervisor::notify(&context, &uid);
                }
            }
            _ = silence.tick() => {
                if let Some(limit) = config.stop_tasks_when_disconnected
                    && context.shared.cut_off_after(limit)
                {
                    tracing::warn!(
                        seconds = limit.as_secs(),
                        "the control plane has not answered; stopping every task"
                    );
                    supervisor::notify_all(&context);
                }
            }
            _ = resync.tick() => {
                if synced {
                    supervisor::notify_all(&context);
                    adopt(&context).await;
                }
            }
        }
    }
    sampling.abort();
    supervisor::stop_all(&context.shared);
    if config.deregister_on_exit {
        let _ = leases.delete(&config.name, &DeleteParams::default()).await;
        instances
            .delete(&config.name, &DeleteParams::default())
            .await?;
        tracing::info!("deregistered");
    }
    Ok(())
}

/// Give every container labelled with this instance (of this cluster) a
/// supervisor: those of known tasks are re-adopted, the others (tasks
/// deleted while the agent was away) are stopped and removed.
async fn adopt<R: Runtime>(context: &Arc<Context<R>>) {
    match context.runtime.list(&context.config.name, None).await {
        Ok(observed) => {
            let cluster = context.config.cluster_uid.as_deref();
            let uids: BTreeSet<String> = observed
                .iter()
                .filter(|o| container::ours(o, cluster))
                .filter_map(|o| o.label(labels::TASK_UID).map(str::to_owned))
                .collect();
            for uid in uids {
                supervisor::notify(context, &uid);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing containers failed"),
    }
}
