//! `gantry up --example web`, as the README's first command runs it: the
//! example reaches Ready on real Docker, every address printed (the load
//! balancer's and each task's) answers,
//! Ctrl-C stops it cleanly, and a second start finds its state again.

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

/// Removes the agents' containers however the test ends.
struct Containers;

impl Drop for Containers {
    fn drop(&mut self) {
        for host in HOSTS {
            common::remove_containers(host);
        }
    }
}

/// `gantry up` with its stdout read line by line on a thread.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(dir: &Path, example: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        command
            .args(["up", "--listen", "127.0.0.1:0", "--agents", "3"])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if example {
            command.args(["--example", "web"]);
        }
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
    let _containers = Containers;
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
    assert!(again.interrupt().success(), "Ctrl-C is a clean stop");
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
