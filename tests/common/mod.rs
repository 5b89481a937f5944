//! What the end-to-end tests share: the real CLI tools fetched from PyPI,
//! and the control plane to run them against.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use apiserver::server::{Config, Server};

/// A fetched tool: `$env` if set, else `.cache/tools/<name>`. Without it a
/// test fails under CI and is skipped (loudly) elsewhere: `None` means skip.
pub fn tool(env: &str, name: &str) -> Option<PathBuf> {
    let cached = Path::new(".cache/tools").join(name);
    fetched(
        env,
        &cached,
        &format!("scripts/fetch-{name}"),
        Path::is_file,
    )
}

/// Something a `scripts/fetch-*` script installs: `$env` if set, else
/// `cached` (relative to the repository), if `usable` says it is there.
/// Missing, a test fails under CI and is skipped (loudly) elsewhere.
pub fn fetched(
    env: &str,
    cached: &Path,
    script: &str,
    usable: fn(&Path) -> bool,
) -> Option<PathBuf> {
    let found = [
        std::env::var_os(env).map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(cached)),
    ]
    .into_iter()
    .flatten()
    .find(|p| usable(p));
    if found.is_none() {
        let what = cached.display();
        assert!(
            std::env::var("CI").is_err(),
            "{what} is missing: {script} installs it"
        );
        eprintln!("SKIPPED: no {what} (run {script})");
    }
    found
}

/// The control plane on a free loopback port, in `dir`.
pub async fn server(dir: &Path) -> Server {
    server_on(dir, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// A server listening on `listen`.
pub async fn server_on(dir: &Path, listen: std::net::SocketAddr) -> Server {
    Server::start(Config {
        listen,
        ..Config::local(dir)
    })
    .await
    .expect("server starts")
}

/// A CLI pointed at a server through its kubeconfig, run from the repo.
#[derive(Clone, Debug)]
pub struct Cli {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Cli {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "HELM_CACHE_HOME",
                self.kubeconfig.with_file_name("helm-cache"),
            )
            .env(
                "HELM_CONFIG_HOME",
                self.kubeconfig.with_file_name("helm-config"),
            )
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("the tool runs")
    }

    /// Run, expect success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    /// Run, expect failure, return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should have failed");
        String::from_utf8(out.stderr).expect("UTF-8")
    }

    /// `kubectl apply` of each of tests/manifests/invalid (with `extra`
    /// flags) is refused, naming the field its `# expect:` line gives.
    pub fn refuses_invalid_manifests(&self, extra: &[&str]) {
        let invalid = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/invalid");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&invalid)
            .expect("invalid manifests")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 10);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            let field = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .expect("an expect line")
                .trim();
            let mut args = vec!["apply", "-f", file.to_str().expect("UTF-8 path")];
            args.extend_from_slice(extra);
            let stderr = self.fails(&args);
            assert!(
                stderr.contains(field),
                "{}: expected {field} in: {stderr}",
                file.display()
            );
        }
    }
}

/// Real kubectl against a fresh control plane: `scenario` runs on a
/// blocking thread (kubectl blocks; the server's runtime must not) with
/// the CLI and a scratch folder. Without kubectl, skipped as [`tool`] says.
pub async fn with_kubectl(scenario: impl FnOnce(&Cli, &Path) + Send + 'static) {
    let Some(binary) = tool("GANTRY_KUBECTL", "kubectl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let kubectl = Cli {
        binary,
        kubeconfig: server.kubeconfig.clone(),
    };
    let scratch = dir.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || scenario(&kubectl, &scratch)).await;
    server.shutdown().await;
    result.expect("scenario");
}

/// A kube client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig written"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// Whether a Docker engine answers. Without one a test fails under CI and
/// is skipped (loudly) elsewhere: `false` means skip.
pub fn docker() -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        assert!(
            std::env::var("CI").is_err(),
            "Docker is needed: no engine answers `docker version`"
        );
        eprintln!("SKIPPED: no Docker engine");
    }
    answers
}

/// `docker ARGS`: its stdout (a failure shows as empty output; the
/// callers check what they need).
pub fn docker_stdout(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// However a Docker test ends, removes every container the agents of its
/// hosts made and the image tags it made. Declared before the `Gantry`,
/// it drops after it: once the processes that make containers are killed.
pub struct DockerCleanup {
    hosts: Vec<String>,
    images: Vec<String>,
}

impl DockerCleanup {
    #[must_use]
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>, images: &[&str]) -> Self {
        Self {
            hosts: hosts.into_iter().map(str::to_owned).collect(),
            images: images.iter().map(|i| (*i).to_owned()).collect(),
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove_containers(host);
        }
        for image in &self.images {
            docker_stdout(&["rmi", image]);
        }
    }
}

/// Remove every container an agent made for `instance`, running or not.
pub fn remove_containers(instance: &str) {
    let label = format!("label=gantry.dev/instance={instance}");
    for id in docker_stdout(&["ps", "-aq", "--filter", &label]).split_whitespace() {
        let uid = docker_stdout(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"gantry.dev/task-uid\"}}",
            id,
        ]);
        docker_stdout(&["rm", "-f", id]);
        remove_task_cgroups(uid.trim());
    }
    // The task volumes the agent made (shared ones are the test's).
    for volume in docker_stdout(&["volume", "ls", "-q", "--filter", &label]).split_whitespace() {
        docker_stdout(&["volume", "rm", "-f", volume]);
    }
}

/// The cgroups an agent made for a task (agent/src/runtime/cgroup.rs),
/// which a killed agent leaves behind.
pub fn remove_task_cgroups(uid: &str) {
    if uid.is_empty() {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("gantry").join(uid)];
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        dirs.push(entry.path().join("gantry").join(uid));
    }
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

/// `gantry SUBCOMMAND --kubeconfig FILE ARGS…` run to its end: its exit
/// code, stdout and stderr.
pub fn gantry(kubeconfig: &Path, subcommand: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg(subcommand)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("gantry runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write to `path` a kubeconfig with a new agent token for `instance` of
/// `cluster`, issued by `gantry agent-token create` with `admin`'s.
pub fn agent_kubeconfig(admin: &Path, cluster: &str, instance: &str, path: &Path) {
    let file = path.to_string_lossy();
    let args = [
        "create",
        instance,
        "--cluster",
        cluster,
        "--write-kubeconfig",
        &file,
    ];
    let (code, _, stderr) = gantry(admin, "agent-token", &args);
    assert_eq!(code, Some(0), "gantry agent-token {args:?}: {stderr}");
}

/// Run `command`, which must succeed; its standard output.
pub fn succeeds(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image the tests run (scripts/build-image builds it once).
pub fn test_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image");
    succeeds(&mut Command::new(script)).trim().to_owned()
}

/// Create Gantry's CRDs and wait until each is established.
pub async fn install_crds(client: &kube::Client) {
    tokio::time::timeout(std::time::Duration::from_secs(40), crds::install(client))
        .await
        .expect("CRDs established in time")
        .expect("CRDs installed");
}
pub mod gantry;
pub mod invariant;
