//! `gantry up`: the whole of Gantry on this machine, in one process — the
//! embedded control plane, the CRDs, the controller and N local agents,
//! each a "host" on its own 127.0.0.x address — optionally with an example
//! workload applied and waited for. Ctrl-C stops it all; the state stays
//! in the data directory for the next start.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use agent::runtime::{Docker, Sim, SimOptions};
use anyhow::{Context, bail};
use clap::Args;
use crds::{
    conditions::{self, ConditionType},
    labels,
    v1alpha1::{
        ContainerInstance, LoadBalancer, ScheduledTask, Service, Task, TaskDefinition,
        TaskLastStatus,
    },
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};

use crate::agent_command::RuntimeKind;

/// The examples `--example` knows, with their manifests.
const EXAMPLES: &[(&str, &str)] = &[("web", include_str!("../examples/web.yaml"))];

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    control_plane: super::ControlPlaneArgs,
    /// Local agents to run, named host-1… on 127.0.0.2….
    #[arg(long, value_name = "N", default_value_t = 3)]
    agents: u8,
    #[arg(long, value_enum, default_value = "docker")]
    runtime: RuntimeKind,
    /// Docker's API socket [default: $DOCKER_HOST or the local socket].
    #[arg(long, value_name = "URI")]
    docker_host: Option<String>,
    /// The cluster (namespace) the agents join.
    #[arg(long, value_name = "NAMESPACE", default_value = "default")]
    cluster: String,
    /// Apply an example (web), wait until it is Ready and print where its
    /// tasks answer.
    #[arg(long, value_name = "NAME")]
    example: Option<String>,
    /// Seconds an agent may be disconnected before its tasks are replaced.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    instance_loss_timeout_seconds: u64,
    /// The address the load balancer's listeners bind.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    balancer_address: IpAddr,
}

/// What `gantry up` says as it goes: one line a step, on stdout.
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    // Nobody reading is no reason to stop a running cluster.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

pub fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    if !(1..=200).contains(&args.agents) {
        bail!("--agents takes 1 to 200 local hosts (127.0.0.2 to 127.0.0.201)");
    }
    let example = match &args.example {
        Some(name) => Some(
            EXAMPLES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, yaml)| *yaml)
                .with_context(|| format!("no example {name:?}; there is: web"))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        say(format!(
            "==> starting the control plane in {}",
            args.control_plane.data_dir.display()
        ));
        let server = args.control_plane.start().await?;
        say(format!("    listening on https://{}", server.addr));
        let client = super::client(Some(&server.kubeconfig)).await?;
        tokio::time::timeout(Duration::from_secs(60), crds::install(&client))
            .await
            .context("the CRDs were not established within 60 s")??;
        say("==> CRDs installed");
        let cluster_uid = ensure_namespace(&client, &args.cluster).await?;
        super::down_command::Record {
            pid: std::process::id(),
            cluster: args.cluster.clone(),
            cluster_uid: cluster_uid.clone(),
            docker: matches!(args.runtime, RuntimeKind::Docker),
        }
        .write(&args.control_plane.data_dir)?;

        let (stop, stopped) = watch::channel(false);
        let signal = || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let mut parts = JoinSet::new();
        let mut config = controller::Config::new("gantry-up");
        // The Lease `gantry controller` takes by default, so that one
        // started beside this waits rather than reconciling too. Under one
        // identity, a restarted `gantry up` takes it back at once.
        config.leader_election = Some(controller::leader::Options::new("default"));
        config.instance_loss_timeout = Duration::from_secs(args.instance_loss_timeout_seconds);
        let metrics = Arc::new(controller::Metrics::new());
        // The controller and the load balancer act as the controller,
        // which may not touch Secrets; each agent has its own token
        // (apiserver/src/server/access.rs).
        let controller_client = super::client(Some(&server.controller_kubeconfig)).await?;
        let controller = controller::run(controller_client.clone(), config, metrics, signal());
        parts.spawn(async move { controller.await.context("the controller stopped") });
        say("==> controller running");
        let balancer = balancer::run(
            controller_client,
            balancer::Config {
                namespace: Some(args.cluster.clone()),
                listen_address: args.balancer_address,
                workers: balancer::workers::per_core(),
            },
            Arc::new(balancer::Metrics::new()),
            signal(),
        );
        parts.spawn(async move { balancer.await.context("the load balancer stopped") });
        say(format!(
            "==> load balancer running on {}",
            args.balancer_address
        ));

        let docker = match args.runtime {
            RuntimeKind::Docker => Some(
                Docker::connect(args.docker_host.as_deref())
                    .await
                    .context("is Docker running? pass --docker-host URI, or --runtime sim")?
                    .with_task_cgroups(std::path::Path::new(agent::runtime::DEFAULT_CGROUP_ROOT))
                    .await,
            ),
            RuntimeKind::Sim => None,
        };
        let mut hosts = Vec::new();
        for i in 1..=args.agents {
            let name = format!("host-{i}");
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i + 1));
            let mut config = agent::Config::new(&args.cluster, &name);
            config.host_ip = ip.to_string();
            config.cluster_uid = Some(cluster_uid.clone());
            let grant = apiserver::agent_token::Grant {
                cluster: args.cluster.clone(),
                instance: name.clone(),
            };
            let token = super::agent_token_command::reissue(&client, &grant).await?;
            let api = super::config_from_yaml(&server.kubeconfig_for(&token.bearer())).await?;
            let client = Client::try_from(api.clone()).context("building the agent's client")?;
            config.endpoint = Some(std::net::SocketAddr::new(ip, 0));
            config.api = Some(api);
            let signal = signal();
            match &docker {
                Some(docker) => {
                    let docker = docker.clone();
                    parts.spawn(async move {
                        agent::run(client, config, docker, signal)
                            .await
                            .context("an agent stopped")
                    });
                }
                None => {
                    parts.spawn(async move {
                        agent::run(client, config, Sim::new(SimOptions::default()), signal)
                            .await
                            .context("an agent stopped")
                    });
                }
            }
            hosts.push(name);
        }
        wait_for_instances(&client, &args.cluster, &hosts).await?;
        say(format!(
            "==> {} agents ({} runtime) registered: {}",
            hosts.len(),
            match args.runtime {
                RuntimeKind::Docker => "docker",
                RuntimeKind::Sim => "sim",
            },
            hosts.join(", ")
        ));
        say(format!(
            "\nGantry is up. Use it with kubectl:\n  export KUBECONFIG={}\n  kubectl get gantry\n",
            absolute(&server.kubeconfig).display()
        ));

        let workload = async {
            match example {
                Some(yaml) => run_example(&client, &args.cluster, yaml, &args.runtime).await,
                None => Ok(()),
            }
        };
        let outcome = tokio::select! {
            result = workload => match result {
                Ok(()) => {
                    say("Press Ctrl-C to stop (state is kept for the next start).");
                    wait_for_stop(&mut parts).await
                }
                Err(e) => Err(e),
            },
            result = wait_for_stop(&mut parts) => result,
        };
        say("==> stopping");
        let _ = stop.send(true);
        while let Some(part) = parts.join_next().await {
            if let Ok(Err(e)) = part {
                tracing::debug!(error = %e, "stopping");
            }
        }
        server.shutdown().await;
        say("==> stopped");
        outcome.map(|()| ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM, or a part that stopped by itself (an error).
async fn wait_for_stop(parts: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        signal = super::shutdown_signal() => signal.context("listening for Ctrl-C"),
        Some(part) = parts.join_next() => match part.context("a part of gantry up panicked")? {
            Ok(()) => bail!("a part of gantry up stopped by itself"),
            Err(e) => Err(e),
        },
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

async fn wait_for_instances(
    client: &Client,
    cluster: &str,
    hosts: &[String],
) -> anyhow::Result<()> {
    let api: Api<ContainerInstance> = Api::namespaced(client.clone(), cluster);
    for _ in 0..120 {
        let list = api.list(&ListParams::default()).await?;
        let connected = hosts.iter().all(|h| {
            list.items.iter().any(|ci| {
                &ci.name_any() == h && ci.status.as_ref().is_some_and(|s| s.agent_connected)
            })
        });
        if connected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the agents did not register and connect within 60 s")
}

/// Build the example's image if it is missing, apply it, wait until its
/// Services are Ready and print where their tasks answer.
async fn run_example(
    client: &Client,
    namespace: &str,
    yaml: &str,
    runtime: &RuntimeKind,
) -> anyhow::Result<()> {
    let documents = gantry::manifests::documents(yaml).context("the example's manifest")?;
    if *runtime == RuntimeKind::Docker {
        for image in images(&documents) {
            build_image(&image).await?;
        }
    }
    let mut services = Vec::new();
    for document in &documents {
        let kind = document["kind"].as_str().unwrap_or_default();
        let name = document["metadata"]["name"].as_str().unwrap_or_default();
        match kind {
            "TaskDefinition" => apply::<TaskDefinition>(client, namespace, document).await?,
            "LoadBalancer" => apply::<LoadBalancer>(client, namespace, document).await?,
            "ScheduledTask" => apply::<ScheduledTask>(client, namespace, document).await?,
            "Service" => {
                apply::<Service>(client, namespace, document).await?;
                services.push(name.to_owned());
            }
            other => bail!("the example has a {other}, which gantry up cannot apply"),
        }
        say(format!("==> applied {}/{name}", kind.to_lowercase()));
    }
    for service in &services {
        wait_ready(client, namespace, service).await?;
        for (lb, address) in balanced(client, namespace, service).await? {
            say(format!(
                "==> service {service} answers at http://{address}/ (load balancer {lb})"
            ));
        }
        say(format!(
            "==> service {service} is Ready; its tasks answer at:"
        ));
        for address in addresses(client, namespace, service).await? {
            say(format!("    {address}"));
        }
    }
    Ok(())
}

/// The images a manifest's task definitions use.
fn images(documents: &[Value]) -> Vec<String> {
    let mut images: Vec<String> = documents
        .iter()
        .filter(|d| d["kind"] == "TaskDefinition")
        .flat_map(|d| {
            d["spec"]["containerDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect();
    images.sort();
    images.dedup();
    images
}

/// The examples' images are built here from Debian's static busybox (no
/// registry can be pulled from), by the script the tests use too.
async fn build_image(image: &str) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image");
    say(format!("==> image {image}: building it if it is missing"));
    let (program, arg) = (script.clone(), image.to_owned());
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await?
    .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} {image} failed ({status})", script.display());
    }
    Ok(())
}

/// Create the object, or merge its spec into the one there.
async fn apply<K>(client: &Client, namespace: &str, document: &Value) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object: K = serde_json::from_value(document.clone()).context("the example's object")?;
    let name = object.name_any();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = serde_json::json!({"spec": document["spec"]});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Until the Service's `Ready` condition is True, saying how far it is.
async fn wait_ready(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let mut said = String::new();
    for _ in 0..600 {
        let service = api.get(name).await?;
        // Not reconciled yet: nothing to tell.
        let Some(status) = service.status.clone() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let ready = conditions::find(&status.conditions, ConditionType::Ready);
        if ready.is_some_and(|c| c.status == "True") {
            return Ok(());
        }
        let progress = format!(
            "    {name}: {} running, {} pending of {} desired{}",
            status.running_count,
            status.pending_count,
            status.desired_count,
            ready
                .map(|c| format!(" ({}: {})", c.reason, c.message))
                .unwrap_or_default()
        );
        if progress != said {
            say(&progress);
            said = progress;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("service {name} was not Ready within 5 minutes; see kubectl describe")
}

/// The load balancers of a Service, with the address of each listener.
async fn balanced(
    client: &Client,
    namespace: &str,
    service: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let balancers: Api<LoadBalancer> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for entry in services.get(service).await?.spec.load_balancers {
        let name = entry.load_balancer_name;
        let Some(lb) = balancers.get_opt(&name).await? else {
            continue;
        };
        for address in lb.status.map(|s| s.addresses).unwrap_or_default() {
            out.push((name.clone(), address));
        }
    }
    Ok(out)
}

/// `host:port` of every published port of the Service's running tasks.
async fn addresses(client: &Client, namespace: &str, service: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<Task> = Api::namespaced(client.clone(), namespace);
    let tasks = api
        .list(&ListParams::default().labels(&format!("{}={service}", labels::SERVICE)))
        .await?;
    let mut out = Vec::new();
    for task in tasks.items {
        let Some(status) = &task.status else { continue };
        if status.last_status != Some(TaskLastStatus::Running) {
            continue;
        }
        for binding in status.containers.iter().flat_map(|c| &c.network_bindings) {
            let host = match binding.bind_ip.as_str() {
                "" | "0.0.0.0" => "127.0.0.1",
                ip => ip,
            };
            let on = task
                .labels()
                .get(labels::CONTAINER_INSTANCE)
                .cloned()
                .unwrap_or_default();
            out.push(format!(
                "{host}:{}  (task {} on {on})",
                binding.host_port,
                task.name_any()
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// The cluster's namespace, made if it is missing (agents register their
/// instances in it, and the API server refuses objects in a namespace
/// that does not exist): its uid, which labels the agents' containers.
async fn ensure_namespace(client: &kube::Client, cluster: &str) -> anyhow::Result<String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": cluster}}))
        .context("a namespace")?;
    let namespace = match namespaces
        .create(&kube::api::PostParams::default(), &namespace)
        .await
    {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => namespaces
            .get(cluster)
            .await
            .with_context(|| format!("reading the namespace {cluster}"))?,
        Err(e) => return Err(e).with_context(|| format!("creating the namespace {cluster}")),
    };
    namespace
        .uid()
        .with_context(|| format!("the namespace {cluster} has no uid"))
}
