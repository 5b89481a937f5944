//! `gantry balancer`: the data plane of Gantry's LoadBalancers.
//!
//! It watches LoadBalancers, the Services that name them, their Tasks and
//! the ContainerInstances (for host addresses), and for each LoadBalancer:
//! - listens on its ports ([`proxy`]: TCP relays connections, HTTP relays
//!   requests over kept-alive connections to targets), on every one of
//!   the data plane's threads ([`workers`]);
//! - keeps one [`pool::Pool`] of targets, one per task of those services
//!   (the rule is `crds::load_balancing`'s, computed in [`desired`]),
//!   checks them ([`health`]) and takes a refused one out at once;
//! - drains deregistering targets (their task DEACTIVATING): no new
//!   traffic, in-flight traffic finishes, and once idle or past the
//!   deregistration delay the target leaves the status, which is what the
//!   service scheduler waits for before it stops the task;
//! - writes the status ([`status`]): addresses, every target with its
//!   state and reason, and `Ready`.
//!
//! One balancer writes a LoadBalancer's status; see docs/balancer.md.

pub mod desired;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod status;
pub mod workers;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crds::v1alpha1::{
    ContainerInstance, ListenerProtocol, LoadBalancer, LoadBalancerSpec, LoadBalancerStatus,
    Service, Task,
};
use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, watcher},
    },
};
use serde_json::json;
use tokio::{sync::Notify, task::AbortHandle};
use workers::Workers;

use desired::{Desired, Key};
pub use metrics::Metrics;
use pool::Pool;
use status::Listening;

/// How the balancer runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Serve the LoadBalancers of this namespace only; all if unset.
    pub namespace: Option<String>,
    /// The address every listener binds.
    pub listen_address: IpAddr,
    /// Threads that serve connections ([`workers::per_core`] is the
    /// usual choice).
    pub workers: NonZeroUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("watching {0} failed for good")]
    Watch(&'static str),
    #[error("cannot start the data plane's threads: {0}")]
    Workers(#[source] std::io::Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache of one kind, and its watch as a stream of "something changed".
fn cache<K>(api: Api<K>) -> (Store<K>, BoxStream<'static, ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(|_| ())
        .boxed();
    (store, stream)
}

/// Serve every LoadBalancer until `shutdown` completes.
///
/// # Errors
/// When the watches end, which they do not while the API server answers.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let ns = config.namespace.as_deref();
    let (balancers, lb_events) = cache::<LoadBalancer>(api(&client, ns));
    let (services, svc_events) = cache::<Service>(api(&client, ns));
    let (tasks, task_events) = cache::<Task>(api(&client, ns));
    let (instances, ci_events) = cache::<ContainerInstance>(api(&client, ns));
    let mut events = futures::stream::select_all([lb_events, svc_events, task_events, ci_events]);
    let workers = Workers::start(config.workers).map_err(Error::Workers)?;
    let mut served = Served {
        client: client.clone(),
        config,
        workers,
        metrics,
        entries: BTreeMap::new(),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => if event.is_none() { return Err(Error::Watch("the API")) },
        }
        // Take in whatever else arrived at once: one reload for a burst.
        while let Some(Some(())) = events.next().now_or_never() {}
        let ready = [
            balancers.wait_until_ready().now_or_never(),
            services.wait_until_ready().now_or_never(),
            tasks.wait_until_ready().now_or_never(),
            instances.wait_until_ready().now_or_never(),
        ];
        if ready.iter().any(|r| !matches!(r, Some(Ok(())))) {
            continue;
        }
        let objects = balancers.state();
        let desired = desired::desired(
            &objects,
            &services.state(),
            &tasks.state(),
            &instances.state(),
        );
        served.reconcile(desired, &objects);
    }
    for entry in served.entries.values() {
        entry.stop();
    }
    // The workers' runtimes end here, and with them every connection.
    drop(served);
    Ok(())
}

/// Every LoadBalancer being served.
struct Served {
    client: Client,
    config: Config,
    workers: Workers,
    metrics: Arc<Metrics>,
    entries: BTreeMap<Key, Entry>,
}

/// One LoadBalancer being served: its targets, listeners and status
/// writer.
struct Entry {
    pool: Arc<Pool>,
    listeners: BTreeMap<u16, (ListenerProtocol, workers::Listener)>,
    listening: Arc<Mutex<Listening>>,
    writer: AbortHandle,
}

impl Entry {
    fn stop(&self) {
        self.pool.close();
        self.writer.abort();
    }
}

impl Served {
    fn reconcile(&mut self, desired: Vec<Desired>, objects: &[Arc<LoadBalancer>]) {
        let now = Instant::now();
        let wanted: Vec<Key> = desired.iter().map(|d| d.key.clone()).collect();
        self.entries.retain(|key, entry| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(lb = %key, "no longer serving");
                entry.stop();
            }
            keep
        });
        for d in desired {
            if !self.entries.contains_key(&d.key) {
                let reported = objects
                    .iter()
                    .find(|o| {
                        o.metadata.name.as_deref() == Some(d.key.name.as_str())
                            && o.metadata.namespace.as_deref() == Some(d.key.namespace.as_str())
                    })
                    .and_then(|o| o.status.clone())
                    .unwrap_or_default();
                let entry = self.start(&d, reported);
                self.entries.insert(d.key.clone(), entry);
            }
            let Some(entry) = self.entries.get_mut(&d.key) else {
                continue;
            };
            for backend in entry.pool.apply(&d, now) {
                tokio::spawn(pool::check_health(Arc::clone(&entry.pool), backend));
            }
            listen(entry, &d.spec, &self.config, &self.workers, &self.metrics);
        }
    }

    fn start(&self, d: &Desired, reported: LoadBalancerStatus) -> Entry {
        tracing::info!(lb = %d.key, "serving");
        let changed = Arc::new(Notify::new());
        let pool = Arc::new(Pool::new(d, Arc::clone(&self.metrics), changed));
        let listening = Arc::new(Mutex::new(Listening::default()));
        let api: Api<LoadBalancer> = Api::namespaced(self.client.clone(), &d.key.namespace);
        let writer = tokio::spawn(write_status(
            api,
            Arc::clone(&pool),
            Arc::clone(&listening),
            reported,
        ))
        .abort_handle();
        Entry {
            pool,
            listeners: BTreeMap::new(),
            listening,
            writer,
        }
    }
}

/// Bind the listeners the spec has and the entry lacks; close those it no
/// longer has. Open connections of a closed listener carry on.
fn listen(
    entry: &mut Entry,
    spec: &LoadBalancerSpec,
    config: &Config,
    workers: &Workers,
    metrics: &Metrics,
) {
    let wanted: BTreeMap<u16, ListenerProtocol> = spec
        .listeners
        .iter()
        .map(|l| (l.port, l.protocol))
        .collect();
    entry
        .listeners
        .retain(|port, (protocol, _)| wanted.get(port) == Some(protocol));
    let mut listening = lock(&entry.listening);
    let before = listening.clone();
    listening.errors.clear();
    for (&port, &protocol) in &wanted {
        if entry.listeners.contains_key(&port) {
            continue;
        }
        let address = SocketAddr::new(config.listen_address, port);
        let counters = proxy::Counters::new(metrics, &entry.pool.key.to_string(), port);
        let listener = match workers.listen(address, protocol, &entry.pool, &counters) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lb = %entry.pool.key, %address, error = %e, "cannot listen");
                listening.errors.insert(port, e.to_string());
                continue;
            }
        };
        tracing::info!(lb = %entry.pool.key, %address, ?protocol, "listening");
        entry.listeners.insert(port, (protocol, listener));
    }
    listening.addresses = entry
        .listeners
        .keys()
        .map(|port| SocketAddr::new(config.listen_address, *port).to_string())
        .collect();
    if *listening != before {
        entry.pool.changed.notify_one();
    }
}

/// Write the LoadBalancer's status whenever it changes: a health
/// transition, a drain, a reload, a listener.
async fn write_status(
    api: Api<LoadBalancer>,
    pool: Arc<Pool>,
    listening: Arc<Mutex<Listening>>,
    mut last: LoadBalancerStatus,
) {
    loop {
        let next_drain = pool.sweep(Instant::now());
        let listening_now = lock(&listening).clone();
        let status = status::status(
            &last,
            pool.generation(),
            &listening_now,
            pool.targets(),
            Timestamp::now(),
        );
        if status != last {
            let mut body = serde_json::to_value(&status).unwrap_or_default();
            // Empty lists are written too, or a merge patch keeps old ones.
            for list in ["addresses", "targets", "conditions"] {
                if body.get(list).is_none() {
                    body[list] = json!([]);
                }
            }
            let patch = json!({ "status": body });
            match api
                .patch_status(
                    &pool.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => last = status,
                Err(e) => {
                    tracing::warn!(lb = %pool.key, error = %e, "cannot write the status");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let wait = next_drain.map_or(Duration::from_secs(5), |d| d.min(Duration::from_secs(5)));
        tokio::select! {
            () = pool.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
