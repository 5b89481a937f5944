//! `gantry logs`: a task's container output, read from the agent that runs
//! it (agent/src/endpoint.rs). The agent's address and certificate come
//! from its ContainerInstance's status, and the caller's own bearer token
//! goes with the request: the control plane decides, through the agent,
//! whether it may read the task's log.

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Args;
use crds::v1alpha1::{ContainerInstance, Task};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use kube::Api;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The Task.
    #[arg(value_name = "TASK")]
    task: String,
    /// The container [default: the task's only one].
    #[arg(short = 'c', long, value_name = "NAME")]
    container: Option<String>,
    /// Keep printing what the container prints, until it stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only output of the last this many seconds.
    #[arg(long, value_name = "SECONDS")]
    since: Option<u64>,
    /// Only the last this many lines.
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
    /// The cluster: its namespace.
    #[arg(long, value_name = "NAME", default_value = "default")]
    cluster: String,
    /// The control plane's kubeconfig [default: $KUBECONFIG or
    /// ~/.kube/config]; its token is shown to the agent.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

impl LogsArgs {
    /// The request's path and query.
    fn path(&self) -> anyhow::Result<String> {
        let mut query = vec![format!("follow={}", self.follow)];
        if let Some(container) = &self.container {
            query.push(format!("container={container}"));
        }
        if let Some(seconds) = self.since {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
            let from = now.saturating_sub(Duration::from_secs(seconds)).as_secs();
            query.push(format!("since={from}"));
        }
        if let Some(tail) = self.tail {
            query.push(format!("tail={tail}"));
        }
        Ok(format!(
            "/tasks/{}/{}/logs?{}",
            self.cluster,
            self.task,
            query.join("&")
        ))
    }
}

pub fn run(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let config = super::kube_config(args.kubeconfig.as_ref()).await?;
        let token = config
            .auth_info
            .token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned())
            .context("the kubeconfig holds no bearer token to show the agent")?;
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        let task = Api::<Task>::namespaced(client.clone(), &args.cluster)
            .get(&args.task)
            .await
            .with_context(|| format!("reading task {}", args.task))?;
        let Some(instance) = task.spec.container_instance.clone() else {
            bail!("task {} is not placed on an instance yet", args.task);
        };
        let endpoint = Api::<ContainerInstance>::namespaced(client, &args.cluster)
            .get(&instance)
            .await
            .with_context(|| format!("reading container instance {instance}"))?
            .status
            .and_then(|s| s.agent_endpoint)
            .with_context(|| {
                format!("the agent of {instance} publishes no endpoint (status.agentEndpoint)")
            })?;
        fetch(&endpoint, &token, &args.path()?).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// GET `path` from the agent at `endpoint`, trusting only its published
/// certificate, and copy the body to stdout as it comes.
async fn fetch(
    endpoint: &crds::v1alpha1::AgentEndpoint,
    token: &str,
    path: &str,
) -> anyhow::Result<()> {
    let address = endpoint
        .url
        .strip_prefix("https://")
        .with_context(|| format!("the agent's endpoint {} is not https", endpoint.url))?;
    let socket: std::net::SocketAddr = address
        .parse()
        .with_context(|| format!("the agent's endpoint {} is not ADDRESS:PORT", endpoint.url))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            endpoint.certificate.as_bytes(),
        )
    {
        roots
            .add(certificate.context("the agent's certificate is not PEM")?)
            .context("the agent's certificate is not usable")?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the agent at {}", endpoint.url))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::IpAddress(socket.ip().into()),
            tcp,
        )
        .await
        .with_context(|| format!("TLS with the agent at {}", endpoint.url))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let said = body.collect().await?.to_bytes();
        bail!(
            "the agent answered {status}: {}",
            String::from_utf8_lossy(&said).trim()
        );
    }
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}
