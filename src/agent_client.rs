//! `gantry logs` and `gantry exec`: a task's container output, and a
//! command run in one of its containers, through the agent that runs it
//! (agent/src/endpoint.rs). The agent's address and certificate come from
//! its ContainerInstance's status, and the caller's own bearer token goes
//! with the request: the control plane decides, through the agent, what
//! it may do.

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Args;
use crds::v1alpha1::{AgentEndpoint, ContainerInstance, Task};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use kube::Api;

/// The trailer in which the agent gives an exec's exit code.
const EXIT_CODE: &str = "gantry-exit-code";

/// Which task, and how to reach the control plane.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The Task.
    #[arg(value_name = "TASK")]
    task: String,
    /// The container [default: the task's only one].
    #[arg(short = 'c', long, value_name = "NAME")]
    container: Option<String>,
    /// The cluster: its namespace.
    #[arg(long, value_name = "NAME", default_value = "default")]
    cluster: String,
    /// The control plane's kubeconfig [default: $KUBECONFIG or
    /// ~/.kube/config]; its token is shown to the agent.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Keep printing what the container prints, until it stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only output of the last this many seconds.
    #[arg(long, value_name = "SECONDS")]
    since: Option<u64>,
    /// Only the last this many lines.
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Give the command a terminal (with -i; this one is put in raw mode
    /// while it runs, when it is one).
    #[arg(short = 't', long, requires = "stdin")]
    tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The agent that runs a task, and the caller's token for it.
struct Agent {
    endpoint: AgentEndpoint,
    token: String,
}

impl TaskArgs {
    /// Find the agent that runs the task.
    async fn agent(&self) -> anyhow::Result<Agent> {
        let config = super::kube_config(self.kubeconfig.as_ref()).await?;
        let token = config
            .auth_info
            .token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned())
            .context("the kubeconfig holds no bearer token to show the agent")?;
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        let task = Api::<Task>::namespaced(client.clone(), &self.cluster)
            .get(&self.task)
            .await
            .with_context(|| format!("reading task {}", self.task))?;
        let Some(instance) = task.spec.container_instance.clone() else {
            bail!("task {} is not placed on an instance yet", self.task);
        };
        let endpoint = Api::<ContainerInstance>::namespaced(client, &self.cluster)
            .get(&instance)
            .await
            .with_context(|| format!("reading container instance {instance}"))?
            .status
            .and_then(|s| s.agent_endpoint)
            .with_context(|| {
                format!("the agent of {instance} publishes no endpoint (status.agentEndpoint)")
            })?;
        Ok(Agent { endpoint, token })
    }

    fn path(&self, what: &str) -> String {
        format!("/tasks/{}/{}/{what}", self.cluster, self.task)
    }
}

impl LogsArgs {
    /// The request's path and query.
    fn path(&self) -> anyhow::Result<String> {
        let mut query = vec![format!("follow={}", self.follow)];
        if let Some(container) = &self.task.container {
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
        Ok(format!("{}?{}", self.task.path("logs"), query.join("&")))
    }
}

pub fn logs(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let agent = args.task.agent().await?;
        let response = agent
            .request(hyper::Method::GET, &args.path()?, None)
            .await?;
        copy_out(response.into_body()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn exec(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let code = runtime.block_on(async {
        let agent = args.task.agent().await?;
        let size = args.tty.then(terminal_size).flatten();
        let body = serde_json::json!({
            "container": args.task.container,
            "command": args.command,
            "stdin": args.stdin,
            "tty": args.tty,
            "size": size,
        });
        let response = agent
            .request(hyper::Method::POST, &args.task.path("exec"), Some(body))
            .await?;
        if args.stdin {
            let upgraded = hyper::upgrade::on(response)
                .await
                .context("the agent did not take the exec's input")?;
            // Restored when dropped, however the exec ends.
            let _raw = args.tty.then(RawTerminal::enter).flatten();
            return interactive(upgraded).await;
        }
        copy_out(response.into_body())
            .await?
            .context("the agent gave no exit code: the command may still run")
    })?;
    // An exit code is 0-255 on Linux; a shell shows others modulo 256.
    Ok(ExitCode::from(
        u8::try_from(code.rem_euclid(256)).unwrap_or(1),
    ))
}

/// Standard input to the agent and the command's output back, framed as
/// agent/src/frames.rs says; its exit code.
async fn interactive(upgraded: hyper::upgrade::Upgraded) -> anyhow::Result<i64> {
    use agent::frames::{self, Kind};
    let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    // Reading standard input blocks: a thread of its own, which the
    // process's end stops.
    let (input, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0_u8; 8192];
        loop {
            match std::io::Read::read(&mut stdin, &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = typed.recv().await {
            if frames::write(&mut writer, Kind::Stdin, &bytes)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = frames::write(&mut writer, Kind::StdinClosed, b"").await;
    });
    let mut out = std::io::stdout().lock();
    while let Some((kind, payload)) = frames::read(&mut reader).await? {
        match kind {
            Kind::Output => {
                out.write_all(&payload)?;
                out.flush()?;
            }
            Kind::Exit => {
                return String::from_utf8_lossy(&payload)
                    .parse()
                    .context("the agent's exit code is not a number");
            }
            Kind::Error => bail!("the agent: {}", String::from_utf8_lossy(&payload)),
            Kind::Stdin | Kind::StdinClosed => {}
        }
    }
    bail!("the agent closed the connection without an exit code")
}

/// This terminal's size, columns by rows, when stdout is one.
fn terminal_size() -> Option<(u16, u16)> {
    let stdout = std::io::stdout();
    if !std::io::IsTerminal::is_terminal(&stdout) {
        return None;
    }
    let size = rustix::termios::tcgetwinsize(&stdout).ok()?;
    Some((size.ws_col, size.ws_row))
}

/// This terminal in raw mode (keys go to the remote one as typed, and it
/// echoes them), back as it was when dropped.
struct RawTerminal(rustix::termios::Termios);

impl RawTerminal {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Copy a body to stdout as it comes; the exit code its trailers give.
async fn copy_out(mut body: Incoming) -> anyhow::Result<Option<i64>> {
    let mut out = std::io::stdout().lock();
    let mut code = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(trailers) = frame.trailers_ref() {
            code = trailers
                .get(EXIT_CODE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
        }
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(code)
}

impl Agent {
    /// Send a request to the agent, trusting only its published
    /// certificate; the response, once it says it succeeded.
    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let url = &self.endpoint.url;
        let address = url
            .strip_prefix("https://")
            .with_context(|| format!("the agent's endpoint {url} is not https"))?;
        let socket: std::net::SocketAddr = address
            .parse()
            .with_context(|| format!("the agent's endpoint {url} is not ADDRESS:PORT"))?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                self.endpoint.certificate.as_bytes(),
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
            .with_context(|| format!("connecting to the agent at {url}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(
                rustls::pki_types::ServerName::IpAddress(socket.ip().into()),
                tcp,
            )
            .await
            .with_context(|| format!("TLS with the agent at {url}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // An interactive exec takes the connection over.
        tokio::spawn(connection.with_upgrades());
        let upgrade = body
            .as_ref()
            .is_some_and(|b| b["stdin"] == serde_json::Value::Bool(true));
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = hyper::Request::builder();
        if upgrade {
            request = request
                .header(hyper::header::CONNECTION, "Upgrade")
                .header(hyper::header::UPGRADE, agent::frames::PROTOCOL);
        }
        let request = request
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, address)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            // Trailers carry an exec's exit code.
            .header(hyper::header::TE, "trailers")
            .body(Full::new(Bytes::from(bytes)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let upgraded = upgrade && status == hyper::StatusCode::SWITCHING_PROTOCOLS;
        if !status.is_success() && !upgraded {
            let said = response.into_body().collect().await?.to_bytes();
            bail!(
                "the agent answered {status}: {}",
                String::from_utf8_lossy(&said).trim()
            );
        }
        Ok(response)
    }
}
