//! Gantry's controller: the cluster manager of the ECS model
//! (docs/architecture.md, "The shared-state scheduler" and "The path of a
//! Service").
//!
//! - [`placement`]: the placement engine, a pure, indexed model of the
//!   cluster that filters instances by resources, ports and constraints
//!   (with the ECS cluster query language) and ranks them by ECS strategies.
//! - [`scheduler`]: binds unbound Tasks by reserving in
//!   `ContainerInstance.status.allocations` with a resourceVersion
//!   precondition, then binding with another; several may run at once.
//! - [`collector`]: releases allocations whose task is gone, stopped or
//!   bound elsewhere, and keeps each instance's figures ([`tally`]: task
//!   counts; remaining resources) true without a write per task event.
//! - [`service`]: REPLICA and DAEMON services, rolling deployments and the
//!   circuit breaker; [`service::plan`] is the pure part, in named steps.
//! - [`instance`]: agent connectivity from Leases, instance loss, draining.
//! - [`daemons`]: daemons first — what an instance awaits before other
//!   tasks, and the replica tasks a daemon may preempt.
//! - [`autoscaling`]: target tracking of services' desiredCount from the
//!   usage their agents report; [`autoscaling::decide`] is the pure part.
//! - [`task`]: stopped-task retention, and tasks stopped before placement.
//! - [`task_definition`]: revisions and the `Valid` condition;
//!   [`revisions`]: each valid revision recorded, and which revision a
//!   reference (`family`, `family:N`) names.
//! - [`leader`]: Lease-based leader election for the reconcilers.
//! - [`runner`]: how every reconciler runs (span, metrics, error policy);
//!   [`cache`]: the watch-fed caches the sweeps and reconcilers read.
//! - [`metrics`]: Prometheus metrics and probes.

pub mod autoscaling;
pub mod cache;
pub mod collector;
pub mod convert;
pub mod daemons;
pub mod events;
pub mod instance;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod revisions;
pub mod runner;
pub mod scheduled;
pub mod scheduler;
pub mod service;
pub mod tally;
pub mod task;
pub mod task_definition;

use std::{future::Future, sync::Arc, time::Duration};

use futures::FutureExt;
use kube::Client;

pub use metrics::Metrics;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `schedulerName` this process places tasks for.
    pub scheduler_name: String,
    /// Who this process is, in events and the leader Lease.
    pub identity: String,
    /// Run the reconcilers only while holding the leader Lease (the
    /// scheduler always runs: schedulers need no leader).
    pub leader_election: Option<leader::Options>,
    /// How long an instance's agent may stay disconnected before its
    /// tasks are stopped and replaced.
    pub instance_loss_timeout: Duration,
    /// How long stopped tasks are kept before deletion.
    pub task_retention: Duration,
    /// How long an allocation of a task that is not there is kept, in case
    /// the task is new and not yet seen.
    pub allocation_grace: Duration,
    /// How often auto scaling takes a datapoint of each metric.
    pub autoscaling_period: Duration,
    /// The scheduler's member Lease, which shares the tasks of its name
    /// among the replicas running it (`scheduler::members`); `None`: this
    /// replica places every task of the name, racing any other.
    pub scheduler_members: Option<scheduler::members::Options>,
}

impl Config {
    #[must_use]
    pub fn new(identity: &str) -> Self {
        Self {
            scheduler_name: crds::v1alpha1::DEFAULT_SCHEDULER_NAME.to_owned(),
            identity: identity.to_owned(),
            leader_election: None,
            instance_loss_timeout: Duration::from_secs(5 * 60),
            task_retention: Duration::from_secs(60 * 60),
            allocation_grace: Duration::from_secs(10),
            autoscaling_period: Duration::from_secs(60),
            scheduler_members: Some(scheduler::members::Options::new("default", identity)),
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the leader Lease {0}: another replica leads now")]
    LostLeadership(String),
}

/// The state every reconciler shares.
#[allow(missing_debug_implementations)] // the kube client is not Debug
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub events: events::Events,
}

/// Run the scheduler and, while leading (or always, without leader
/// election), every reconciler, until `shutdown` completes.
///
/// # Errors
/// Losing the leader Lease: the process should exit and start again.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut options = scheduler::Options::new(&config.scheduler_name);
    options.members.clone_from(&config.scheduler_members);
    let scheduler = tokio::spawn(scheduler::run(
        client.clone(),
        options,
        Arc::clone(&metrics),
        signal(),
    ));
    let context = Arc::new(Context {
        events: events::Events::new(client.clone(), &config.identity),
        client: client.clone(),
        config: config.clone(),
        metrics,
    });
    let reconcilers = async {
        match &config.leader_election {
            Some(options) => {
                let lease =
                    leader::Lease::acquire(client.clone(), &config.identity, options).await?;
                tracing::info!(lease = %options.name, "leading");
                tokio::select! {
                    () = reconcile(Arc::clone(&context), signal()) => Ok(()),
                    lost = lease.hold() => Err(lost),
                }
            }
            None => {
                reconcile(Arc::clone(&context), signal()).await;
                Ok(())
            }
        }
    };
    let result = tokio::select! {
        result = reconcilers => result,
        () = shutdown => Ok(()),
    };
    let _ = stop.send(true);
    let _ = scheduler.await;
    result
}

/// Every reconciler, until `shutdown`.
pub async fn reconcile(context: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let shutdown = shutdown.shared();
    tokio::join!(
        service::run(Arc::clone(&context), shutdown.clone()),
        instance::run(Arc::clone(&context), shutdown.clone()),
        task::run(Arc::clone(&context), shutdown.clone()),
        task_definition::run(Arc::clone(&context), shutdown.clone()),
        scheduled::run(Arc::clone(&context), shutdown.clone()),
        autoscaling::run(Arc::clone(&context), shutdown.clone()),
        collector::run(Arc::clone(&context), shutdown),
    );
}
