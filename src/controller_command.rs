//! `gantry controller`: the flags, and the controller run until Ctrl-C or
//! SIGTERM (or, with leader election, until the Lease is lost).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The control plane's kubeconfig [default: $KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Place the tasks whose spec.schedulerName is this.
    #[arg(long, value_name = "NAME", default_value = "gantry")]
    scheduler_name: String,
    /// Run the reconcilers only while holding the leader Lease; the
    /// scheduler runs in every replica either way. On by default, as in
    /// kube-controller-manager: two replicas reconciling one Service at
    /// once each act on what the other has not yet done.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    leader_elect: bool,
    /// Namespace of the leader Lease [default: $POD_NAMESPACE or default].
    #[arg(long, value_name = "NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Seconds a leader that stops renewing keeps the Lease.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    leader_elect_lease_seconds: u64,
    /// Serve Prometheus metrics and /healthz, /readyz here.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds an instance's agent may be disconnected before its tasks
    /// are stopped and replaced elsewhere.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    instance_loss_timeout_seconds: u64,
    /// Seconds a stopped task is kept before it is deleted.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    task_retention_seconds: u64,
    /// Seconds an allocation whose task cannot be found is kept.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    allocation_grace_seconds: u64,
    /// Seconds between auto scaling's datapoints: ECS's alarms look at
    /// one-minute datapoints (3 high in a row scale out, 15 low scale in).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    autoscaling_period_seconds: u64,
    /// This replica's name in events and the leader Lease [default:
    /// $POD_NAME or host-pid].
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Seconds a scheduler replica's member Lease lasts unrenewed before
    /// the other replicas of its name take its tasks. Replicas share the
    /// tasks of their name through these Leases (in the leader-election
    /// namespace).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    scheduler_lease_seconds: u64,
}

impl ControllerArgs {
    fn config(&self) -> controller::Config {
        let identity = self.identity.clone().unwrap_or_else(|| {
            std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "gantry".to_owned());
                format!("{host}-{}", std::process::id())
            })
        });
        let mut config = controller::Config::new(&identity);
        config.scheduler_name.clone_from(&self.scheduler_name);
        config.instance_loss_timeout = Duration::from_secs(self.instance_loss_timeout_seconds);
        config.task_retention = Duration::from_secs(self.task_retention_seconds);
        config.allocation_grace = Duration::from_secs(self.allocation_grace_seconds);
        config.autoscaling_period = Duration::from_secs(self.autoscaling_period_seconds.max(1));
        let namespace = self.leader_elect_namespace.clone().unwrap_or_else(|| {
            std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_owned())
        });
        let mut members = controller::scheduler::members::Options::new(&namespace, &identity);
        members.duration = Duration::from_secs(self.scheduler_lease_seconds.max(2));
        config.scheduler_members = Some(members);
        if self.leader_elect {
            let mut options = controller::leader::Options::new(&namespace);
            options.duration = Duration::from_secs(self.leader_elect_lease_seconds.max(2));
            options.renew = options.duration / 3;
            config.leader_election = Some(options);
        }
        config
    }
}

pub fn run(args: &ControllerArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = super::client(args.kubeconfig.as_ref()).await?;
        let metrics = Arc::new(controller::Metrics::new());
        if let Some(addr) = args.metrics_addr {
            let metrics = Arc::clone(&metrics);
            super::metrics_endpoint::serve(addr, move || metrics.encode()).await?;
        }
        let shutdown = async {
            if let Err(e) = super::shutdown_signal().await {
                tracing::warn!(error = %e, "cannot listen for signals");
                std::future::pending::<()>().await;
            }
        };
        let config = args.config();
        tracing::info!(identity = %config.identity, scheduler = %config.scheduler_name, "controller starting");
        controller::run(client, config, metrics, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
