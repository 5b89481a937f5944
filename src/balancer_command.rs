//! `gantry balancer`: the flags, and the load balancer's data plane run
//! until Ctrl-C or SIGTERM.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct BalancerArgs {
    /// The control plane's kubeconfig [default: $KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Serve the LoadBalancers of this namespace only [default: all].
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// The address every listener binds.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    listen_address: IpAddr,
    /// Threads that serve connections [default: one per core].
    #[arg(long, value_name = "N")]
    workers: Option<NonZeroUsize>,
    /// Serve Prometheus metrics and /healthz here.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
}

pub fn run(args: &BalancerArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = super::client(args.kubeconfig.as_ref()).await?;
        let metrics = Arc::new(balancer::Metrics::new());
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
        let config = balancer::Config {
            namespace: args.namespace.clone(),
            listen_address: args.listen_address,
            workers: args.workers.unwrap_or_else(balancer::workers::per_core),
        };
        tracing::info!(namespace = ?config.namespace, address = %config.listen_address, workers = config.workers, "balancer starting");
        balancer::run(client, config, metrics, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
