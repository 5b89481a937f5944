//! A service behind a LoadBalancer on real Docker, with `gantry balancer`,
//! `gantry controller` and three `gantry agent` processes (hosts on
//! 127.0.0.5-7), driven with real kubectl. A client in the test keeps
//! sending requests, on kept-alive and on new connections, and checks
//! every response, while the service rolls to a new image, scales in from
//! 4 to 1, drains a host and loses a container to `docker kill`; a task
//! whose health endpoint fails is replaced; a slow request outlives the
//! scale-in that stops its task; the EndpointSlices follow the tasks.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crds::v1alpha1::{LoadBalancer, Service, TargetState, Task, TaskLastStatus};
use kube::{ResourceExt, api::ListParams};
use serde_json::Value;

use common::{
    Cli, docker_stdout,
    gantry::{Gantry, last, ready},
};

const NS: &str = "lb";
const HOSTS: [(&str, &str); 3] = [
    ("lb-1", "127.0.0.5"),
    ("lb-2", "127.0.0.6"),
    ("lb-3", "127.0.0.7"),
];
const ROLLED: &str = "gantry-test/busybox:lb-rolled";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The web service behind the load balancer `web` on `port`. Each task
/// answers `/` with its container's hostname, `/health` with `ok`, and
/// `/cgi-bin/slow` after 5 s.
fn manifest(image: &str, desired: u32, port: u16) -> String {
    format!(
        r#"apiVersion: gantry.dev/v1alpha1
kind: LoadBalancer
metadata:
  name: web
spec:
  listeners:
    - port: {port}
      protocol: HTTP
  healthCheck:
    path: /health
    intervalSeconds: 5
    timeoutSeconds: 2
    healthyThresholdCount: 2
    unhealthyThresholdCount: 2
  deregistrationDelaySeconds: 30
---
apiVersion: gantry.dev/v1alpha1
kind: TaskDefinition
metadata:
  name: web
spec:
  containerDefinitions:
    - name: web
      image: {image}
      cpu: 32
      memory: 32
      stopTimeout: 2
      command:
        - sh
        - -c
        - >-
          mkdir -p /tmp/www/cgi-bin && hostname > /tmp/www/index.html &&
          echo ok > /tmp/www/health &&
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\nsleep 5\necho slow-done\n'
          > /tmp/www/cgi-bin/slow && chmod +x /tmp/www/cgi-bin/slow &&
          exec httpd -f -p 8080 -h /tmp/www
      portMappings:
        - containerPort: 8080
          hostPort: 0
---
apiVersion: gantry.dev/v1alpha1
kind: Service
metadata:
  name: web
spec:
  taskDefinition: web
  desiredCount: {desired}
  deploymentConfiguration:
    minimumHealthyPercent: 100
    maximumPercent: 200
  loadBalancers:
    - loadBalancerName: web
      containerName: web
      containerPort: 8080
"#
    )
}

/// One answer the load saw.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    what: String,
}

/// Clients that keep requesting `/` until stopped: half on kept-alive
/// connections, half on a new connection each time. Every answer must be
/// a 200 whose body is a container's hostname.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<Failure>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

const WORKERS: usize = 8;

impl Load {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..WORKERS)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let keep_alive = i % 2 == 0;
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        match request(&mut conn, port, keep_alive) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(what) => {
                                conn = None;
                                failures.lock().expect("lock").push(Failure {
                                    at: Instant::now(),
                                    what,
                                });
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                        if !keep_alive {
                            conn = None;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            workers,
        }
    }

    /// Requests answered and failures since `mark`.
    fn since(&self, mark: &Mark) -> (u64, Vec<Failure>) {
        let failures = self
            .failures
            .lock()
            .expect("lock")
            .iter()
            .filter(|f| f.at >= mark.at)
            .cloned()
            .collect();
        (self.ok.load(Ordering::Relaxed) - mark.ok, failures)
    }

    fn mark(&self) -> Mark {
        Mark {
            at: Instant::now(),
            ok: self.ok.load(Ordering::Relaxed),
        }
    }

    /// The phase since `mark` had no failure and at least 200 requests/s.
    fn clean(&self, mark: &Mark, phase: &str) {
        let (ok, failures) = self.since(mark);
        let seconds = mark.at.elapsed().as_secs_f64();
        let rate = ok as f64 / seconds;
        eprintln!(
            "{phase}: {ok} requests in {seconds:.1} s ({rate:.0}/s), {} failed",
            failures.len()
        );
        let what: Vec<&str> = failures.iter().map(|f| f.what.as_str()).collect();
        assert!(failures.is_empty(), "{phase}: failed requests: {what:?}");
        assert!(rate >= 200.0, "{phase}: only {rate:.0} requests/s");
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

struct Mark {
    at: Instant,
    ok: u64,
}

/// `GET /` on the connection (opened if there is none); Ok if the answer
/// is a 200 with a hostname.
fn request(
    conn: &mut Option<BufReader<TcpStream>>,
    port: u16,
    keep_alive: bool,
) -> Result<(), String> {
    if conn.is_none() {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        *conn = Some(BufReader::new(stream));
    }
    let reader = conn.as_mut().ok_or("no connection")?;
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    reader
        .get_mut()
        .write_all(format!("GET / HTTP/1.1\r\nHost: web\r\n{close}\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("read: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {status:?}"));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read header: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or("no content-length")?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read body: {e}"))?;
    let body = String::from_utf8_lossy(&body);
    if body.trim().len() != 12 {
        return Err(format!("body {body:?} is not a container's hostname"));
    }
    Ok(())
}

/// `GET /cgi-bin/slow` on its own connection: the body.
fn slow_request(port: u16) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /cgi-bin/slow HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") && answer.contains("slow-done") {
        Ok(answer)
    } else {
        Err(answer)
    }
}

struct Scenario {
    g: Gantry,
    kubectl: Cli,
    dir: tempfile::TempDir,
    port: u16,
}

impl Scenario {
    fn apply(&self, image: &str, desired: u32) {
        let path = self.dir.path().join("web.yaml");
        std::fs::write(&path, manifest(image, desired, self.port)).expect("manifest written");
        self.kubectl
            .ok(&["apply", "-n", NS, "-f", path.to_str().expect("UTF-8 path")]);
    }

    /// `kubectl patch` an instance's `spec.state`.
    fn set_state(&self, instance: &str, state: &str) {
        let patch = format!(r#"{{"spec":{{"state":"{state}"}}}}"#);
        self.kubectl.ok(&[
            "patch",
            "ci",
            instance,
            "-n",
            NS,
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    async fn balancer(&self) -> LoadBalancer {
        self.g
            .api::<LoadBalancer>(NS)
            .get("web")
            .await
            .expect("the load balancer")
    }

    /// Ready with `n` live tasks, all of `image`, all healthy targets.
    async fn settled(&self, n: usize, image: &str, what: &str) -> Vec<Task> {
        for _ in 0..1800 {
            let service = self.g.api::<Service>(NS).get("web").await.expect("service");
            let tasks = self.g.live_tasks(NS, "web").await;
            let lb = self.balancer().await;
            let targets = lb.status.map(|s| s.targets).unwrap_or_default();
            let healthy = targets
                .iter()
                .filter(|t| t.state == TargetState::Healthy)
                .count();
            if ready(&service)
                && tasks.len() == n
                && tasks.iter().all(|t| image_of(t) == image)
                && healthy == n
                && targets.len() == n
            {
                return tasks;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "never {what}: {:#?}\n{:#?}\n{}",
            self.g.live_tasks(NS, "web").await,
            self.balancer().await.status,
            self.g.logs()
        );
    }

    /// The EndpointSlices of `web` through kubectl: (address, ready,
    /// serving, terminating) by task.
    fn endpoints(&self) -> Vec<(String, String, bool, bool, bool)> {
        let out = self.kubectl.ok(&[
            "get",
            "endpointslices.discovery.k8s.io",
            "-n",
            NS,
            "-l",
            "kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=gantry.dev",
            "-o",
            "json",
        ]);
        let list: Value = serde_json::from_str(&out).expect("JSON");
        let mut out = Vec::new();
        for slice in list["items"].as_array().into_iter().flatten() {
            let port = slice["ports"][0]["port"].as_i64().unwrap_or(0);
            for e in slice["endpoints"].as_array().into_iter().flatten() {
                let flag = |c: &str| e["conditions"][c].as_bool().unwrap_or(false);
                out.push((
                    e["targetRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    format!("{}:{port}", e["addresses"][0].as_str().unwrap_or_default()),
                    flag("ready"),
                    flag("serving"),
                    flag("terminating"),
                ));
            }
        }
        out.sort();
        out
    }

    /// The slices list exactly `tasks`, at their addresses, ready.
    async fn endpoints_follow(&self, tasks: &[Task]) {
        let mut want: Vec<(String, String, bool, bool, bool)> = tasks
            .iter()
            .map(|t| (t.name_any(), address(t), true, true, false))
            .collect();
        want.sort();
        for _ in 0..100 {
            if self.endpoints() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(self.endpoints(), want, "EndpointSlices follow the tasks");
    }
}

fn image_of(task: &Task) -> String {
    task.spec
        .definition
        .as_ref()
        .map(|d| d.container_definitions[0].image.clone())
        .unwrap_or_default()
}

fn address(task: &Task) -> String {
    let binding = task
        .status
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.network_bindings.first())
        .expect("a binding");
    format!("{}:{}", binding.bind_ip, binding.host_port)
}

fn container_of(task: &Task) -> String {
    task.status
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.runtime_id.clone())
        .expect("a container id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balanced_service_loses_no_request_through_deployments_scaling_drains_and_kills() {
    if !common::docker() {
        return;
    }
    let Some(binary) = common::tool("GANTRY_KUBECTL", "kubectl") else {
        return;
    };
    let image = common::test_image();
    let _cleanup = common::DockerCleanup::new(HOSTS.map(|(host, _)| host), &[ROLLED]);
    docker_stdout(&["tag", &image, ROLLED]);
    let mut g = Gantry::start(NS).await;
    g.controller("controller", &[]);
    let port = free_port();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    g.spawn(
        "balancer",
        &[
            "balancer",
            "--namespace",
            NS,
            "--listen-address",
            "127.0.0.1",
            "--metrics-addr",
            &metrics,
        ],
    );
    g.docker_agents(NS, &HOSTS);
    g.instances_connected(NS, 3).await;
    let kubectl = Cli {
        binary,
        kubeconfig: g.kubeconfig.clone(),
    };
    let s = Scenario {
        g,
        kubectl,
        dir: tempfile::tempdir().expect("tempdir"),
        port,
    };

    // One address answers; kubectl shows both targets healthy.
    s.apply(&image, 2);
    let tasks = s.settled(2, &image, "served 2 tasks").await;
    let shown = s.kubectl.ok(&[
        "get", "glb", "web", "-n", NS, "-o",
        "jsonpath={.status.healthyTargets}/{.status.targetCount} {.status.addresses[0]} {.status.targets[*].state}",
    ]);
    assert_eq!(shown, format!("2/2 127.0.0.1:{port} healthy healthy"));
    s.endpoints_follow(&tasks).await;
    let load = Load::start(port);
    let mark = load.mark();
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.clean(&mark, "warm-up");

    // A rolling deployment to a new image tag, 100% / 200%.
    let mark = load.mark();
    s.apply(ROLLED, 2);
    let tasks = s.settled(2, ROLLED, "rolled to the new tag").await;
    load.clean(&mark, "rolling deployment");
    s.endpoints_follow(&tasks).await;

    // Scale out to 4, then in to 1.
    s.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=4"]);
    s.settled(4, ROLLED, "scaled to 4").await;
    let mark = load.mark();
    s.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=1"]);
    let tasks = s.settled(1, ROLLED, "scaled in to 1").await;
    load.clean(&mark, "scale-in 4 to 1");
    s.endpoints_follow(&tasks).await;

    // Drain the host of the one task: it moves, and nothing fails.
    s.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=2"]);
    let tasks = s.settled(2, ROLLED, "back at 2").await;
    let host = tasks[0].spec.container_instance.clone().expect("bound");
    let mark = load.mark();
    s.set_state(&host, "DRAINING");
    let tasks = loop {
        let tasks = s.settled(2, ROLLED, "drained").await;
        if tasks
            .iter()
            .all(|t| t.spec.container_instance.as_deref() != Some(&host))
        {
            break tasks;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    load.clean(&mark, "drain");
    s.endpoints_follow(&tasks).await;
    s.set_state(&host, "ACTIVE");

    // A slow request outlives the scale-in that stops its task: the task
    // stays DEACTIVATING (its target draining, its endpoint terminating)
    // until the request is done.
    let slow: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || slow_request(port)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    s.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=1"]);
    let mut seen_draining = false;
    let mut seen_terminating = false;
    let mut stopped_after = None;
    while started.elapsed() < Duration::from_secs(40) {
        let all =
            s.g.api::<Task>(NS)
                .list(&ListParams::default())
                .await
                .expect("tasks");
        let leaving = all.items.iter().find(|t| {
            tasks.iter().any(|k| k.name_any() == t.name_any())
                && t.spec.desired_status == crds::v1alpha1::DesiredStatus::Stopped
        });
        if let Some(t) = leaving {
            match last(t) {
                Some(TaskLastStatus::Deactivating) => {
                    let lb = s.balancer().await;
                    seen_draining |= lb
                        .status
                        .iter()
                        .flat_map(|s| &s.targets)
                        .any(|x| x.task == t.name_any() && x.state == TargetState::Draining);
                    seen_terminating |= s
                        .endpoints()
                        .iter()
                        .any(|e| e.0 == t.name_any() && e.4 && e.3 && !e.2);
                }
                Some(TaskLastStatus::Stopping | TaskLastStatus::Stopped) => {
                    stopped_after.get_or_insert(started.elapsed());
                    break;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for request in slow {
        request
            .join()
            .expect("joined")
            .unwrap_or_else(|e| panic!("the slow request failed: {e}"));
    }
    let stopped_after = stopped_after.expect("the task stopped");
    assert!(
        seen_draining,
        "the target was draining while its request ran"
    );
    assert!(
        seen_terminating,
        "its endpoint was serving and terminating meanwhile"
    );
    assert!(
        stopped_after >= Duration::from_secs(3) && stopped_after < Duration::from_secs(30),
        "the task stopped after its slow request, before the 30 s delay: {stopped_after:?}"
    );
    let tasks = s.settled(1, ROLLED, "scaled in to 1 again").await;
    s.endpoints_follow(&tasks).await;

    // `docker kill`: only requests in flight on that container may fail,
    // and its target leaves within one health-check interval.
    s.kubectl
        .ok(&["scale", "-n", NS, "gsvc/web", "--replicas=3"]);
    let tasks = s.settled(3, ROLLED, "at 3").await;
    let victim = &tasks[1];
    let mark = load.mark();
    docker_stdout(&["kill", &container_of(victim)]);
    let killed = Instant::now();
    loop {
        let lb = s.balancer().await;
        let still_healthy = lb
            .status
            .iter()
            .flat_map(|s| &s.targets)
            .any(|t| t.task == victim.name_any() && t.state == TargetState::Healthy);
        if !still_healthy {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the killed task's target stayed healthy for more than 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left_after = killed.elapsed();
    s.settled(3, ROLLED, "replaced the killed task").await;
    let (ok, failures) = load.since(&mark);
    eprintln!(
        "docker kill: target out after {left_after:?}; {ok} answered, {} failed: {failures:?}",
        failures.len()
    );
    assert!(
        failures.len() <= WORKERS,
        "more failures ({}) than requests in flight ({WORKERS} clients)",
        failures.len()
    );

    // A failing health endpoint: unhealthy in the status, then replaced
    // with the load balancer named in the stop reason.
    let tasks = s.g.live_tasks(NS, "web").await;
    let sick = &tasks[0];
    docker_stdout(&["exec", &container_of(sick), "rm", "/tmp/www/health"]);
    let mut seen_unhealthy = None;
    let mut stopped_sick = None;
    for _ in 0..600 {
        let lb = s.balancer().await;
        if let Some(t) = lb
            .status
            .iter()
            .flat_map(|s| &s.targets)
            .find(|t| t.task == sick.name_any() && t.state == TargetState::Unhealthy)
        {
            seen_unhealthy = Some(t.reason.clone());
        }
        let now =
            s.g.api::<Task>(NS)
                .get(&sick.name_any())
                .await
                .expect("task");
        let reason = now.status.as_ref().and_then(|s| s.stopped_reason.clone());
        if let Some(reason) = reason {
            assert_eq!(reason, "Task failed ELB health checks in (elb web)");
            stopped_sick = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen_unhealthy,
        Some(Some("Target.ResponseCodeMismatch".to_owned())),
        "the target went unhealthy for its 404 first"
    );
    // Start-first, as ECS replaces an unhealthy task when maximumPercent
    // allows: its replacement ran before it was stopped.
    let stopping_at = stopped_sick
        .as_ref()
        .and_then(|t| t.status.as_ref()?.stopping_at.clone())
        .expect("the sick task's stoppingAt");
    let earlier: Vec<String> = tasks.iter().map(ResourceExt::name_any).collect();
    let replacement_started =
        s.g.api::<Task>(NS)
            .list(&ListParams::default().labels("gantry.dev/service=web"))
            .await
            .expect("tasks")
            .items
            .into_iter()
            .filter(|t| !earlier.contains(&t.name_any()))
            .filter_map(|t| t.status?.started_at)
            .min();
    assert!(
        replacement_started
            .as_ref()
            .is_some_and(|started| started.0 < stopping_at.0),
        "a replacement started ({replacement_started:?}) before the sick task was stopped ({stopping_at:?})"
    );
    s.settled(3, ROLLED, "replaced the unhealthy task").await;
    let (_, failures) = load.since(&mark);
    load.finish();
    assert!(failures.len() <= WORKERS, "{failures:?}");

    // What happened shows in the balancer's metrics.
    let scraped = s.g.scrape(metrics_port).await;
    let value = |line_start: &str| -> f64 {
        scraped
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{scraped}"))
    };
    let lb = format!("load_balancer=\"{NS}/web\",listener=\"{port}\"");
    assert!(
        value(&format!(
            "gantry_balancer_requests_total{{{lb},code=\"2xx\"}}"
        )) > 1000.0
    );
    assert!(value(&format!("gantry_balancer_connections_total{{{lb}}}")) > 100.0);
    assert!(scraped.contains("gantry_balancer_target_health_transitions_total{"));
    assert!(scraped.contains(r#"state="unhealthy""#), "{scraped}");

    // Deleting the Service drains its tasks first: a slow request started
    // before the delete completes, and the Service goes once its tasks
    // have left their load balancer.
    let slow = std::thread::spawn(move || slow_request(port));
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.kubectl
        .ok(&["delete", "gsvc", "web", "-n", NS, "--wait=false"]);
    let services = s.g.api::<Service>(NS);
    let mut seen_deactivating = false;
    let deleted = Instant::now();
    while services.get_opt("web").await.expect("get").is_some() {
        let tasks = s.g.live_tasks(NS, "web").await;
        seen_deactivating |= tasks
            .iter()
            .any(|t| last(t) == Some(TaskLastStatus::Deactivating));
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "the Service was never deleted: {tasks:#?}\n{}",
            s.g.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slow.join()
        .expect("joined")
        .unwrap_or_else(|e| panic!("the slow request failed across the delete: {e}"));
    assert!(
        seen_deactivating,
        "the deleted Service's tasks drained first"
    );
}
