//! `gantry`: the one binary of the project, one subcommand per role.

use std::{
    io::{self, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
};

mod agent_client;
mod agent_command;
mod agent_token_command;
mod apiserver_command;
mod balancer_command;
mod controller_command;
mod down_command;
mod metrics_endpoint;
mod run_task_command;
mod up_command;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry::manifests::{self, Catalog};

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "The Amazon ECS model as a Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as multi-document YAML, or
    /// write one file per CRD into a directory.
    Crd {
        /// Write `<plural>.gantry.dev.yaml` files here instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Serve the embedded, Kubernetes-compatible control plane until
    /// Ctrl-C or SIGTERM; state is kept in the data directory. Or back up,
    /// restore or repair its store.
    Apiserver(ApiserverArgs),
    /// Run the agent: register this host as a ContainerInstance and run
    /// the tasks bound to it in Docker (or a simulated runtime).
    Agent(Box<agent_command::AgentArgs>),
    /// Issue, list and revoke agent tokens: one per agent, good for one
    /// ContainerInstance name in one cluster.
    AgentToken(agent_token_command::AgentTokenArgs),
    /// Run the controller: the scheduler, which places tasks, and the
    /// reconcilers of services, tasks, task definitions and instances.
    Controller(Box<controller_command::ControllerArgs>),
    /// Run the load balancer: serve every LoadBalancer's listeners, check
    /// and drain its targets, and report them in its status.
    Balancer(Box<balancer_command::BalancerArgs>),
    /// Run all of Gantry on this machine: the control plane, the CRDs, the
    /// controller and N local agents (hosts on 127.0.0.2…), optionally
    /// with an example applied; Ctrl-C stops it, keeping its state.
    Up(Box<up_command::UpArgs>),
    /// Start 1 to 10 tasks of a task definition, as `aws ecs run-task`:
    /// with a group, a startedBy and overrides; prints each task created.
    RunTask(Box<run_task_command::RunTaskArgs>),
    /// Print a task's container output, as the agent that runs it keeps
    /// it: `-f` follows it; the caller's token must allow `get tasks/log`.
    Logs(agent_client::LogsArgs),
    /// Run a command in a task's container, as ECS Exec: the task must
    /// have enableExecuteCommand, and the caller's token must allow
    /// `create tasks/exec`; exits with the command's exit code.
    Exec(agent_client::ExecArgs),
    /// Take down what `gantry up` started from a data directory: stop it
    /// if it runs, and remove its containers and their volumes; the state
    /// stays.
    Down(down_command::DownArgs),
    /// Check manifests against Gantry's CRDs offline, as the API server
    /// would on create (schema, list types and CEL rules).
    Validate {
        /// Files or directories (every *.yaml / *.yml inside) to check.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

/// See the workspace's Cargo.toml for why not the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        // The reader went away (`gantry crd | head`): nothing left to say.
        Err(err)
            if err
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Crd { out_dir: None } => {
            out.write_all(crds::all_yaml()?.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in crds::all() {
                let path = dir.join(crds::file_name(&crd));
                std::fs::write(&path, crds::to_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                writeln!(out, "wrote {}", path.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => validate(&paths, &mut out),
        Command::Agent(args) => {
            drop(out);
            init_logging();
            agent_command::run(&args)
        }
        Command::Controller(args) => {
            drop(out);
            init_logging();
            controller_command::run(&args)
        }
        Command::Balancer(args) => {
            drop(out);
            init_logging();
            balancer_command::run(&args)
        }
        Command::AgentToken(args) => {
            drop(out);
            agent_token_command::run(&args)
        }
        Command::Logs(args) => {
            drop(out);
            agent_client::logs(&args)
        }
        Command::Exec(args) => {
            drop(out);
            agent_client::exec(&args)
        }
        Command::Down(args) => {
            drop(out);
            down_command::run(&args)
        }
        Command::RunTask(args) => {
            drop(out);
            run_task_command::run(&args)
        }
        Command::Up(args) => {
            drop(out);
            // Its progress is on stdout; its parts log only warnings.
            init_logging_with("warn");
            up_command::run(&args)
        }
        Command::Apiserver(ApiserverArgs {
            store: Some(command),
            ..
        }) => {
            drop(out);
            apiserver_command::run(&command)
        }
        Command::Apiserver(args) => {
            drop(out);
            serve(&args.serve)
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ApiserverArgs {
    #[command(flatten)]
    serve: ControlPlaneArgs,
    #[command(subcommand)]
    store: Option<apiserver_command::StoreCommand>,
}

/// Where the embedded control plane keeps its state and listens: the flags
/// `gantry apiserver` and `gantry up` share.
#[derive(Debug, clap::Args)]
struct ControlPlaneArgs {
    /// Where the database, certificates, tokens and kubeconfig live.
    #[arg(long, value_name = "DIR", default_value = ".gantry")]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the admin kubeconfig [default: DIR/kubeconfig].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Connections held at once from all client addresses but loopback
    /// [default: what the open-file limit allows].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections held at once from one client address [default: a
    /// quarter of the open-file limit].
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// Seconds an Event is kept after it was last written, as
    /// kube-apiserver's --event-ttl.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    event_ttl_seconds: u64,
}

impl ControlPlaneArgs {
    async fn start(&self) -> anyhow::Result<apiserver::server::Server> {
        use apiserver::server::connections;
        if let Err(e) = connections::raise_open_file_limit() {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
        let mut limits = connections::Limits::default();
        limits.total = self.max_connections.unwrap_or(limits.total);
        limits.per_address = self
            .max_connections_per_address
            .unwrap_or(limits.per_address);
        apiserver::server::Server::start(apiserver::server::Config {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            kubeconfig: self.kubeconfig.clone(),
            store: apiserver::storage::Options::default(),
            connections: limits,
            event_ttl: std::time::Duration::from_secs(self.event_ttl_seconds),
        })
        .await
        .with_context(|| format!("starting the control plane in {}", self.data_dir.display()))
    }
}

fn serve(args: &ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let server = args.start().await?;
        // The banner is for whoever watches; a server keeps serving when
        // nobody reads its output (a closed pipe is not a reason to stop).
        let banner = format!(
            "gantry apiserver listening on https://{}\nkubeconfig: {}\n  export KUBECONFIG={}\n\
             the controller's kubeconfig: {}\n\
             agents: gantry agent-token create NAME --cluster C --write-kubeconfig FILE\n",
            server.addr,
            server.kubeconfig.display(),
            server.kubeconfig.display(),
            server.controller_kubeconfig.display()
        );
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
            eprintln!("gantry apiserver: could not print to stdout ({e}); serving on");
        }
        drop(out);
        shutdown_signal().await?;
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// A client for the control plane of `kubeconfig`, or of the environment.
async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(kube_config(kubeconfig).await?).context("building the Kubernetes client")
}

/// The client configuration of `kubeconfig`, or of the environment.
async fn kube_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG"),
    }
}

/// The client configuration of the kubeconfig `yaml`.
async fn config_from_yaml(yaml: &str) -> anyhow::Result<kube::Config> {
    let file = kube::config::Kubeconfig::from_yaml(yaml).context("reading a kubeconfig")?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .context("the kubeconfig is not usable")
}

/// Logs to stderr, `RUST_LOG` choosing what (info by default).
fn init_logging() {
    init_logging_with("info");
}

fn init_logging_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

fn validate(paths: &[PathBuf], out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::gantry()?;
    let mut invalid = 0;
    for file in yaml_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let docs = match manifests::documents(&text) {
            Ok(docs) => docs,
            Err(err) => {
                writeln!(out, "{}: {err}", file.display())?;
                invalid += 1;
                continue;
            }
        };
        for (index, doc) in docs.iter().enumerate() {
            match catalog.validate(index, doc) {
                Ok(()) => writeln!(
                    out,
                    "{}: {} {} valid",
                    file.display(),
                    doc["kind"].as_str().unwrap_or_default(),
                    doc.pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                )?,
                Err(err) => {
                    writeln!(out, "{}: {err}", file.display())?;
                    invalid += 1;
                }
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The given files, and the YAML files directly inside given directories,
/// in a stable order.
fn yaml_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}
