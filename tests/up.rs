//! `gantry up --example web`, as the README's first command runs it: the
//! example reaches Ready on real Docker, every address printed (the load
//! balancer's and each task's) answers, a second `gantry up` on the same
//! engine leaves its containers alone, Ctrl-C stops it cleanly, a second
//! start finds its state again, and `gantry down` takes it all down.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const HOSTS: [&str; 3] = ["host-1", "host-2", "host-3"];

/// `gantry up` with its stdout read line by line on a thread.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(dir: &Path, example: bool) -> Self {
        let flags: &[&str] = if example {
            &["--agents", "3", "--example", "web"]
        } else {
            &["--agents", "3"]
        };
        Self::start_with(dir, flags)
    }

    /// `gantry up` with these flags.
    fn start_with(dir: &Path, flags: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        command
            .args(["up", "--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::from(command.spawn().expect("gantry up starts"))
    }

    /// Follow a started `gantry up` whose stdout is piped.
    fn from(mut child: Child) -> Self {
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Lines until one contains `marker` (which is returned last).
    fn until(&mut self, marker: &str, within: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("up| {line}");
                    self.seen.push(line.clone());
                    let done = line.contains(marker);
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(_) => panic!(
                    "gantry up never printed {marker:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Ctrl-C, and the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        self.until("==> stopped", Duration::from_secs(60));
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gantry up did not exit within 30 s of Ctrl-C");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("the address answers over TCP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: gantry\r\n\r\n")
        .expect("request sent");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn up_runs_the_web_example_until_ctrl_c_and_keeps_its_state() {
    if !common::docker() {
        return;
    }
    let _containers = common::DockerCleanup::new(HOSTS, &[]);
    let dir = tempfile::tempdir().expect("tempdir");

    let mut up = Up::start(dir.path(), true);
    up.until(
        "agents (docker runtime) registered",
        Duration::from_secs(120),
    );
    let kubeconfig = up.until("export KUBECONFIG=", Duration::from_secs(10));
    assert!(
        kubeconfig
            .last()
            .is_some_and(|l| l.contains(&dir.path().join("kubeconfig").display().to_string())),
        "the kubeconfig is in the data dir: {kubeconfig:?}"
    );
    let lines = up.until("Press Ctrl-C", Duration::from_secs(300));
    let addresses: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("(task "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    // desiredCount 2, host port 80: two tasks on two hosts.
    assert_eq!(addresses.len(), 2, "one address per task: {lines:#?}");
    assert_ne!(addresses[0], addresses[1], "two hosts");
    for address in &addresses {
        assert!(address.ends_with(":80"), "published on port 80: {address}");
        let response = get(address);
        assert!(
            response.starts_with("HTTP/1.") && response.contains("Hello from Gantry"),
            "{address} serves the page: {response:?}"
        );
    }
    // One address for the service: the load balancer's, which answers
    // from both tasks.
    let balanced: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("(load balancer web)"))
        .collect();
    assert_eq!(balanced.len(), 1, "one balanced address: {lines:#?}");
    let url = balanced[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL");
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(address, "127.0.0.1:8080");
    for _ in 0..4 {
        let response = get(address);
        assert!(
            response.starts_with("HTTP/1.")
                && response.contains(" 200 ")
                && response.contains("Hello from Gantry"),
            "the load balancer serves the page: {response:?}"
        );
    }
    // A second `gantry up` on the same Docker engine, whose host-1 has
    // the name of one of ours, leaves our containers alone; its `gantry
    // down` stops it and removes none of them.
    let ours = cluster_uid(dir.path());
    assert_eq!(
        containers_of(&ours, false).len(),
        2,
        "our two tasks' containers"
    );
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut other = Up::start_with(other_dir.path(), &["--agents", "1"]);
    other.until("Press Ctrl-C", Duration::from_secs(120));
    assert_ne!(cluster_uid(other_dir.path()), ours);
    // Its agent adopts what it finds at start, and looks again every 10 s.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        containers_of(&ours, false).len(),
        2,
        "the other up's host-1 stopped none of ours"
    );
    for address in &addresses {
        assert!(get(address).contains("Hello from Gantry"), "{address}");
    }
    let said = down(other_dir.path());
    assert!(said.contains("==> stopping gantry up"), "{said}");
    assert!(said.contains("removed 0 containers"), "{said}");
    assert!(
        other.child.try_wait().expect("wait").is_some(),
        "gantry down stopped it"
    );
    assert_eq!(containers_of(&ours, false).len(), 2);

    assert!(up.interrupt().success(), "Ctrl-C is a clean stop");

    // The state is kept: a second start finds the service and its tasks.
    let mut again = Up::start(dir.path(), false);
    again.until("Press Ctrl-C", Duration::from_secs(120));
    let kubeconfig = dir.path().join("kubeconfig");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (service, running) = rt.block_on(async {
        let client = common::client(&kubeconfig).await;
        let services: kube::Api<crds::v1alpha1::Service> = kube::Api::default_namespaced(client);
        let service = services
            .get("web")
            .await
            .expect("the service is still there");
        let mut running = 0;
        for _ in 0..120 {
            running = services
                .get("web")
                .await
                .expect("service")
                .status
                .map_or(0, |s| s.running_count);
            if running == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (service, running)
    });
    assert_eq!(service.spec.desired_count, Some(2));
    assert_eq!(running, 2, "its two tasks run again after the restart");
    assert_eq!(containers_of(&ours, false).len(), 2, "adopted, not doubled");

    // `gantry down` while it runs: it stops, and its containers go.
    let said = down(dir.path());
    assert!(said.contains("==> stopping gantry up"), "{said}");
    assert!(said.contains("removed 2 containers"), "{said}");
    let status = again.child.wait().expect("gantry up exits");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(containers_of(&ours, true).is_empty(), "nothing is left");
    // Nothing left to stop: a second down changes nothing.
    let said = down(dir.path());
    assert!(!said.contains("stopping"), "{said}");
    assert!(said.contains("removed 0 containers"), "{said}");
}

/// The cluster uid `gantry up` recorded in its data dir.
fn cluster_uid(dir: &Path) -> String {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("up.json")).expect("up.json"))
            .expect("a record");
    record["clusterUid"]
        .as_str()
        .expect("clusterUid")
        .to_owned()
}

/// The ids of the containers labelled with a cluster uid: running ones,
/// or all.
fn containers_of(uid: &str, all: bool) -> Vec<String> {
    let label = format!("label=gantry.dev/cluster-uid={uid}");
    let mut args = vec!["ps", "-q", "--filter", &label];
    if all {
        args.push("-a");
    }
    common::docker_stdout(&args)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `gantry down --data-dir DIR`, which must succeed; what it said.
fn down(dir: &Path) -> String {
    common::succeeds(
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["down", "--data-dir"])
            .arg(dir),
    )
}

#[test]
fn up_with_a_cluster_name_makes_its_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command
        .args(["up", "--listen", "127.0.0.1:0", "--agents", "2"])
        .args(["--runtime", "sim", "--cluster", "prod", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut up = Up::from(command.spawn().expect("gantry up starts"));
    up.until("Press Ctrl-C", Duration::from_secs(120));
    let kubeconfig = dir.path().join("kubeconfig");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let instances = rt.block_on(async {
        let client = common::client(&kubeconfig).await;
        let instances: kube::Api<crds::v1alpha1::ContainerInstance> =
            kube::Api::namespaced(client, "prod");
        instances
            .list(&kube::api::ListParams::default())
            .await
            .expect("listed in prod")
            .items
            .len()
    });
    assert_eq!(instances, 2, "both agents registered in prod");
    assert!(up.interrupt().success(), "Ctrl-C is a clean stop");
}
