//! Service auto scaling end to end: simulated agents report the use their
//! containers make of a load written to a file (`--sim-load`), the
//! controller tracks its target from the Tasks' `status.usage`, and
//! desiredCount follows through the scale subresource, with an Event for
//! each change. The pure decision is unit-tested in
//! controller/src/autoscaling/decide.rs.

mod common;

use std::{path::Path, time::Duration};

use crds::v1alpha1::Service;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use common::gantry::Gantry;

/// A task definition reserving 256 CPU units.
fn task_definition(name: &str) -> Value {
    sized(name, "gantry-test/app:1", &[])
}

fn sized(name: &str, image: &str, command: &[&str]) -> Value {
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"cpu": 256, "memory": 64, "containerDefinitions": [
            {"name": "app", "image": image, "command": command, "stopTimeout": 1}]},
    })
}

fn free_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The CPU units each live task of `service` last reported.
async fn cpu_shares(g: &Gantry, ns: &str, service: &str) -> Vec<u32> {
    g.live_tasks(ns, service)
        .await
        .iter()
        .filter_map(|t| t.status.as_ref()?.usage.as_ref().map(|u| u.cpu))
        .collect()
}

fn service(name: &str, desired: i32, auto_scaling: Option<Value>) -> Value {
    let mut spec = json!({"taskDefinition": name, "desiredCount": desired});
    if let Some(scaling) = auto_scaling {
        spec["autoScaling"] = scaling;
    }
    json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": name}, "spec": spec,
    })
}

fn load(file: &Path, demand: &Value) {
    std::fs::write(file, demand.to_string()).expect("the load file");
}

fn desired(service: &Service) -> i32 {
    service.spec.desired()
}

/// The notes of `reason` Events about `about`, oldest first.
async fn notes(g: &Gantry, ns: &str, about: &str, reason: &str) -> Vec<String> {
    g.events(ns)
        .await
        .into_iter()
        .filter(|(r, why, _)| r == about && why == reason)
        .map(|(_, _, note)| note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_follows_its_cpu_target_within_its_bounds() {
    let ns = "autoscaling";
    let mut g = Gantry::start(ns).await;
    let file = g.dir.path().join("load.json");
    // `api` (first) is not auto scaled; `worker` (last) tracks memory and
    // has no load; `web`, between them, is the one under test.
    load(
        &file,
        &json!({"service:web": {"cpu": 384}, "service:api": {"cpu": 2048}}),
    );
    let metrics = free_address();
    let (file_arg, metrics_arg) = (file.display().to_string(), metrics.to_string());
    g.agents_with(
        ns,
        "host",
        3,
        (4096, 4096),
        &[
            "--sim-load",
            &file_arg,
            "--stats-interval-seconds",
            "1",
            "--metrics-addr",
            &metrics_arg,
        ],
    );
    g.controller("controller", &["--autoscaling-period-seconds", "1"]);
    g.instances_connected(ns, 3).await;
    let cpu_at_50 = |min: i32, max: i32| {
        json!({"minCapacity": min, "maxCapacity": max, "targetTracking": [{
            "metric": "CPUUtilization", "target": 50,
            "scaleOutCooldownSeconds": 12, "scaleInCooldownSeconds": 0}]})
    };
    // worker leaves its count to auto scaling: it starts at minCapacity.
    let mut worker = service(
        "worker",
        0,
        Some(
            json!({"minCapacity": 2, "maxCapacity": 3, "targetTracking": [
            {"metric": "MemoryUtilization", "target": 80}]}),
        ),
    );
    worker["spec"]
        .as_object_mut()
        .expect("a spec")
        .remove("desiredCount");
    g.apply(
        ns,
        &[
            task_definition("api"),
            service("api", 1, None),
            task_definition("web"),
            service("web", 1, Some(cpu_at_50(1, 6))),
            task_definition("worker"),
            worker,
        ],
    )
    .await;

    // One task carrying 384 of its 256 units: 150%, three times in a row,
    // asks for ceil(1 × 150 / 50) = 3.
    let note = g.until_event(ns, "web", "ScaledOut").await;
    assert!(
        note.contains("CPUUtilization 150% above its target 50%")
            && note.contains("desiredCount 1 → 3 (ceil(1 × 150 / 50) = 3)"),
        "{note}"
    );
    let web = g
        .service_until(ns, "web", "three tasks running", |s| {
            desired(s) == 3 && s.status.as_ref().is_some_and(|st| st.running_count == 3)
        })
        .await;
    let scaled = web
        .status
        .and_then(|s| s.auto_scaling)
        .expect("status.autoScaling");
    let first_out = scaled.last_scale_out_time.expect("lastScaleOutTime").0;

    // Three tasks share the 384 units: 128 each, 50%, on target. Each
    // task reports its own share in status.usage and in the metrics.
    let even = |shares: &[u32]| shares.len() == 3 && shares.iter().all(|c| c.abs_diff(128) <= 13);
    for _ in 0..100 {
        if even(&cpu_shares(&g, ns, "web").await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shares = cpu_shares(&g, ns, "web").await;
    assert!(
        even(&shares),
        "each of 3 tasks uses about 128 units: {shares:?}"
    );
    let text = g.scrape(metrics.port()).await;
    let web_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gantry_task_cpu_units{") && l.contains("group=\"service:web\""))
        .collect();
    assert_eq!(web_lines.len(), 3, "one gauge per web task: {text}");

    // The load grows past what six tasks can hold at target: scaled to
    // maxCapacity, and not before the scale-out cooldown has passed.
    load(
        &file,
        &json!({"service:web": {"cpu": 2048}, "service:api": {"cpu": 2048}}),
    );
    let last_out = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|s| s.auto_scaling.as_ref())
            .and_then(|a| a.last_scale_out_time.as_ref())
            .map(|t| t.0)
    };
    let web = g
        .service_until(ns, "web", "scaled to maxCapacity", |s| {
            desired(s) == 6 && last_out(s) != Some(first_out)
        })
        .await;
    let second_out = last_out(&web).expect("lastScaleOutTime");
    assert!(
        second_out.duration_since(first_out).as_secs() >= 12,
        "the second scale-out ({second_out}) waited the 12 s cooldown after the first \
         ({first_out}): {:#?}",
        g.events(ns).await
    );
    let outs = notes(&g, ns, "web", "ScaledOut").await;
    assert_eq!(outs.len(), 2, "{outs:#?}");
    assert!(
        outs.iter()
            .any(|n| n.contains("desiredCount 3 → 6") && n.contains("held to maxCapacity 6")),
        "{outs:#?}"
    );

    // Idle: fifteen low datapoints, then down to minCapacity.
    load(&file, &json!({"service:api": {"cpu": 2048}}));
    let web = g
        .service_until(ns, "web", "scaled in to minCapacity", |s| desired(s) == 1)
        .await;
    let note = g.until_event(ns, "web", "ScaledIn").await;
    assert!(
        note.contains("below 90% of its target 50% for 15 datapoints")
            && note.contains("desiredCount 6 → 1")
            && note.contains("held to minCapacity 1"),
        "{note}"
    );
    let metric = &web
        .status
        .and_then(|s| s.auto_scaling)
        .expect("status")
        .current_metrics[0];
    assert_eq!(metric.target, 50.0);

    // A count set by hand below minCapacity is raised at once.
    let services = g.api::<Service>(ns);
    services
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scaled by hand");
    g.service_until(ns, "web", "raised to minCapacity", |s| desired(s) == 1)
        .await;
    let note = g.until_event(ns, "web", "CapacityBounds").await;
    assert!(
        note.contains("desiredCount 0 is below minCapacity 1"),
        "{note}"
    );

    // Its neighbours: api, not auto scaled, keeps its count whatever its
    // load; worker measures 0% of its memory target, which would scale
    // it in, but it is at its minCapacity already.
    let api = services.get("api").await.expect("api");
    assert_eq!(desired(&api), 1);
    assert!(api.status.and_then(|s| s.auto_scaling).is_none());
    let worker = g
        .service_until(ns, "worker", "two tasks running", |s| {
            s.status.as_ref().is_some_and(|st| st.running_count == 2)
        })
        .await;
    assert_eq!(worker.spec.desired_count, None, "never written");
    let worker_metrics = worker
        .status
        .and_then(|s| s.auto_scaling)
        .expect("worker's status.autoScaling")
        .current_metrics;
    assert_eq!(worker_metrics.len(), 1);
    assert_eq!(worker_metrics[0].value, Some(0.0), "{worker_metrics:?}");
    assert!(notes(&g, ns, "worker", "ScaledIn").await.is_empty());
    assert!(notes(&g, ns, "api", "ScaledOut").await.is_empty());
}

/// The same on real Docker: a container that spins takes all the CPU its
/// task reserves (256 units, the cgroup's quota), 100% of its target of
/// 50%, and its service gets a second task; an idle neighbour keeps one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_burning_cpu_on_docker_scales_its_service_out() {
    if !common::docker() {
        return;
    }
    let ns = "autoscaling-docker";
    let image = common::test_image();
    let host = "autoscale-1";
    let _cleanup = common::DockerCleanup::new([host], &[]);
    let mut g = Gantry::start(ns).await;
    let metrics = free_address();
    let metrics_arg = metrics.to_string();
    g.docker_agents_with(
        ns,
        &[(host, "127.0.0.1")],
        &[
            "--stats-interval-seconds",
            "1",
            "--metrics-addr",
            &metrics_arg,
        ],
    );
    g.controller("controller", &["--autoscaling-period-seconds", "1"]);
    g.instances_connected(ns, 1).await;
    let up_to_two = json!({"minCapacity": 1, "maxCapacity": 2, "targetTracking": [
        {"metric": "CPUUtilization", "target": 50}]});
    g.apply(
        ns,
        &[
            sized("burn", &image, &["sh", "-c", "while :; do :; done"]),
            service("burn", 1, Some(up_to_two.clone())),
            sized("idle", &image, &["sleep", "3600"]),
            service("idle", 1, Some(up_to_two)),
        ],
    )
    .await;

    let note = g.until_event(ns, "burn", "ScaledOut").await;
    assert!(
        note.contains("above its target 50%") && note.contains("desiredCount 1 → 2"),
        "{note}"
    );
    g.service_until(ns, "burn", "two tasks running", |s| {
        desired(s) == 2 && s.status.as_ref().is_some_and(|st| st.running_count == 2)
    })
    .await;
    // Docker's own figures, as the agent reported them: the spinner near
    // its quota, the sleeper near nothing, both holding some memory.
    let burning = g.live_tasks(ns, "burn").await;
    let usage = burning
        .iter()
        .find_map(|t| t.status.as_ref()?.usage.clone())
        .expect("a burning task's usage");
    assert!(
        (150..=300).contains(&usage.cpu) && usage.memory > 0,
        "{usage:?}"
    );
    let idle = g.live_tasks(ns, "idle").await;
    let resting = idle
        .iter()
        .find_map(|t| t.status.as_ref()?.usage.clone())
        .expect("an idle task's usage");
    assert!(resting.cpu < 30, "{resting:?}");
    let text = g.scrape(metrics.port()).await;
    assert!(
        text.lines().any(
            |l| l.starts_with("gantry_task_cpu_units{") && l.contains("group=\"service:burn\"")
        ),
        "{text}"
    );
    let services = g.api::<Service>(ns);
    let idle = services.get("idle").await.expect("idle");
    assert_eq!(desired(&idle), 1);
    assert!(notes(&g, ns, "idle", "ScaledOut").await.is_empty());
}
