//! `gantry agent`: the flags, and the agent (or N simulated ones) run
//! until Ctrl-C or SIGTERM.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use agent::runtime::{Docker, Sim, SimLoad, SimOptions};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    Docker,
    Sim,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The control plane's kubeconfig [default: $KUBECONFIG, ~/.kube/config
    /// or the in-cluster service account].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The cluster (namespace) to join, as ECS_CLUSTER.
    #[arg(long, value_name = "NAMESPACE", default_value = "default")]
    cluster: String,
    /// This instance's ContainerInstance name.
    #[arg(long, value_name = "INSTANCE_ID")]
    name: String,
    #[arg(long, value_enum, default_value = "docker")]
    runtime: RuntimeKind,
    /// Docker's API socket (unix:// or tcp://) [default: $DOCKER_HOST or
    /// the local socket].
    #[arg(long, value_name = "URI")]
    docker_host: Option<String>,
    /// The address published ports bind to, and the instance's hostIP.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    host_ip: std::net::IpAddr,
    /// CPU units to register [default: 1024 per core].
    #[arg(long, value_name = "UNITS")]
    cpu: Option<u32>,
    /// Memory to register, MiB [default: the host's less --reserved-memory].
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Memory kept back from tasks, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    reserved_memory: u32,
    /// Host ports no task may use.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "22,2375,2376,51678,51679"
    )]
    reserved_ports: Vec<u16>,
    /// The `ecs.instance-type` attribute.
    #[arg(long, value_name = "TYPE")]
    instance_type: Option<String>,
    /// The `ecs.availability-zone` attribute.
    #[arg(long, value_name = "ZONE")]
    availability_zone: Option<String>,
    /// A custom attribute; repeat for more.
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// Where the agent keeps local state (unused by the Docker runtime,
    /// which keeps its state in container labels).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seconds between Lease renewals.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    lease_renew_seconds: u64,
    /// How long a stopped task's containers are kept, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3 * 60 * 60)]
    container_retention_seconds: u64,
    /// Delete the ContainerInstance on Ctrl-C or SIGTERM.
    #[arg(long)]
    deregister_on_exit: bool,
    /// Stop every task once the control plane has not answered for this
    /// many seconds, for workloads that must never run twice: keep it
    /// below the controller's --instance-loss-timeout-seconds, after which
    /// the tasks are started elsewhere. Off by default, as in ECS.
    #[arg(long, value_name = "SECONDS")]
    stop_tasks_when_disconnected: Option<u64>,
    /// The port of the agent's HTTPS endpoint on --host-ip, which serves
    /// its tasks' container output (`gantry logs`); 0 picks a free one.
    /// The address and certificate are published in the instance's status.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    endpoint_port: u16,
    /// The host's cgroup mount, where each task gets a cgroup holding its
    /// task-level cpu and memory limits (Docker's cgroupfs driver); from a
    /// container, mount the host's there. Without it, those limits are
    /// not enforced (the agent warns).
    #[arg(long, value_name = "DIR", default_value = agent::runtime::DEFAULT_CGROUP_ROOT)]
    cgroup_root: PathBuf,
    /// Seconds between measures of the tasks' CPU and memory use, which
    /// go to each Task's status.usage (for auto scaling) and the metrics.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    stats_interval_seconds: u64,
    /// Serve Prometheus metrics (each running task's use) and /healthz,
    /// /readyz here.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// With --runtime sim: run this many instances, named <name>-<i>.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: usize,
    /// With --runtime sim: how long a container start takes, ms.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    sim_start_latency_ms: u64,
    /// With --runtime sim: the share of starts that exit at once with 1.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    sim_failure_rate: f64,
    /// With --runtime sim: how many stops fail before stops work.
    #[arg(long, value_name = "N", default_value_t = 0)]
    sim_stop_failures: usize,
    /// With --runtime sim: a JSON file of what each task group demands in
    /// all, `{"service:web": {"cpu": 600, "memory": 300}}` (CPU units,
    /// MiB), shared by its running containers; read at every measure.
    #[arg(long, value_name = "FILE")]
    sim_load: Option<PathBuf>,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

impl AgentArgs {
    fn config(
        &self,
        name: &str,
        api: &kube::Config,
        metrics: Option<&Arc<agent::usage::Metrics>>,
    ) -> agent::Config {
        let mut config = agent::Config::new(&self.cluster, name);
        config.host_ip = self.host_ip.to_string();
        config.cpu = self.cpu;
        config.memory = self.memory;
        config.reserved_memory = self.reserved_memory;
        config.reserved_ports.clone_from(&self.reserved_ports);
        config.instance_type.clone_from(&self.instance_type);
        config.availability_zone.clone_from(&self.availability_zone);
        config.attributes = self.attributes.iter().cloned().collect::<BTreeMap<_, _>>();
        config.lease_renew = Duration::from_secs(self.lease_renew_seconds.max(1));
        config.lease_duration = config.lease_renew * 4;
        config.container_retention = Duration::from_secs(self.container_retention_seconds);
        config.deregister_on_exit = self.deregister_on_exit;
        config.stop_tasks_when_disconnected =
            self.stop_tasks_when_disconnected.map(Duration::from_secs);
        // Simulated instances share a port number, so each picks its own.
        let port = if self.count > 1 {
            0
        } else {
            self.endpoint_port
        };
        config.endpoint = Some(std::net::SocketAddr::new(self.host_ip, port));
        config.api = Some(api.clone());
        config.stats_interval = Duration::from_secs(self.stats_interval_seconds.max(1));
        config.metrics = metrics.cloned();
        config
    }
}

pub fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    if let Some(limit) = args.stop_tasks_when_disconnected
        && limit <= args.lease_renew_seconds.max(1)
    {
        bail!(
            "--stop-tasks-when-disconnected {limit} must be longer than \
             --lease-renew-seconds {}: the control plane is heard from once a renewal",
            args.lease_renew_seconds
        );
    }
    if args.count == 0 || (args.count > 1 && args.runtime != RuntimeKind::Sim) {
        bail!("--count N runs N simulated instances: it needs --runtime sim and N ≥ 1");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let api = super::kube_config(args.kubeconfig.as_ref()).await?;
        let client =
            kube::Client::try_from(api.clone()).context("building the Kubernetes client")?;
        let metrics = match args.metrics_addr {
            Some(addr) => {
                let metrics = Arc::new(agent::usage::Metrics::default());
                let encoded = Arc::clone(&metrics);
                super::metrics_endpoint::serve(addr, move || encoded.encode()).await?;
                Some(metrics)
            }
            None => None,
        };
        let shutdown = async {
            if let Err(e) = super::shutdown_signal().await {
                tracing::warn!(error = %e, "cannot listen for signals");
                std::future::pending::<()>().await;
            }
        };
        match args.runtime {
            RuntimeKind::Docker => {
                let docker = Docker::connect(args.docker_host.as_deref())
                    .await
                    .context("is Docker running? pass --docker-host URI if it listens elsewhere")?
                    .with_task_cgroups(&args.cgroup_root)
                    .await;
                agent::run(
                    client,
                    args.config(&args.name, &api, metrics.as_ref()),
                    docker,
                    shutdown,
                )
                .await?;
            }
            RuntimeKind::Sim => {
                let options = SimOptions {
                    start_latency: Duration::from_millis(args.sim_start_latency_ms),
                    failure_rate: args.sim_failure_rate,
                    stop_failures: args.sim_stop_failures,
                };
                let load = Arc::new(
                    args.sim_load
                        .clone()
                        .map(SimLoad::from_file)
                        .unwrap_or_default(),
                );
                let (stop, _) = tokio::sync::watch::channel(false);
                let mut agents = tokio::task::JoinSet::new();
                for i in 0..args.count {
                    let name = if args.count == 1 {
                        args.name.clone()
                    } else {
                        format!("{}-{i}", args.name)
                    };
                    let mut stopped = stop.subscribe();
                    let signal = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    agents.spawn(agent::run(
                        client.clone(),
                        args.config(&name, &api, metrics.as_ref()),
                        Sim::new(options).with_load(Arc::clone(&load)),
                        signal,
                    ));
                }
                tokio::select! {
                    () = shutdown => {}
                    Some(result) = agents.join_next() => {
                        result.context("an agent panicked")??;
                    }
                }
                let _ = stop.send(true);
                while let Some(result) = agents.join_next().await {
                    result.context("an agent panicked")??;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
