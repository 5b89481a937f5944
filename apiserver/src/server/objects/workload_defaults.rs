//! kube-apiserver's defaults for Deployments, DaemonSets and the pod
//! templates they hold (its `SetDefaults_*` functions of apps/v1 and
//! core/v1), so that what a client reads back, and what a GitOps tool
//! compares with its manifest, is what a real cluster would show. Only
//! fields left empty are filled; a value the client set is never changed.
//! Applied before a write is compared with the stored object, so an
//! unchanged manifest stays a no-op.

use serde_json::{Map, Value, json};

/// A Deployment's defaults: one replica, a 25%/25% rolling update, ten
/// old ReplicaSets kept, 600 s to progress.
pub(super) fn deployment(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    fill(spec, "replicas", json!(1));
    rolling_update(spec, "strategy", json!("25%"), json!("25%"));
    fill(spec, "revisionHistoryLimit", json!(10));
    fill(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

/// A DaemonSet's defaults: a rolling update one pod at a time, ten old
/// revisions kept.
pub(super) fn daemon_set(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    rolling_update(spec, "updateStrategy", json!(1), json!(0));
    fill(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        pod_spec(pod);
    }
}

/// `SetDefaults_PodSpec` and what it reaches: containers, probes,
/// volumes.
fn pod_spec(pod: &mut Map<String, Value>) {
    fill(pod, "dnsPolicy", json!("ClusterFirst"));
    fill(pod, "restartPolicy", json!("Always"));
    fill(pod, "terminationGracePeriodSeconds", json!(30));
    fill(pod, "securityContext", json!({}));
    fill(pod, "schedulerName", json!("default-scheduler"));
    let host_network = pod.get("hostNetwork") == Some(&json!(true));
    for list in ["initContainers", "containers"] {
        for container in objects(pod, list) {
            self::container(container, host_network);
        }
    }
    for volume in objects(pod, "volumes") {
        self::volume(volume);
    }
}

fn container(container: &mut Map<String, Value>, host_network: bool) {
    let pull = container
        .get("image")
        .and_then(Value::as_str)
        .map(pull_policy);
    if let Some(pull) = pull {
        fill(container, "imagePullPolicy", json!(pull));
    }
    fill(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    fill(container, "terminationMessagePolicy", json!("File"));
    for port in objects(container, "ports") {
        fill(port, "protocol", json!("TCP"));
        // On the host's network a container's port is the host's port.
        if host_network && let Some(number) = port.get("containerPort").cloned() {
            fill(port, "hostPort", number);
        }
    }
    for env in objects(container, "env") {
        if let Some(field) = env
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            fill(field, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            self::probe(probe);
        }
    }
    if let Some(lifecycle) = container
        .get_mut("lifecycle")
        .and_then(Value::as_object_mut)
    {
        for hook in ["postStart", "preStop"] {
            if let Some(hook) = lifecycle.get_mut(hook).and_then(Value::as_object_mut) {
                handler(hook);
            }
        }
    }
}

/// `Always` for an image without a tag or tagged `latest`, else
/// `IfNotPresent` (a digest pins the image).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A tag follows the last `:` after the last `/` (a registry's port
    // comes before a `/`).
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn probe(probe: &mut Map<String, Value>) {
    fill(probe, "timeoutSeconds", json!(1));
    fill(probe, "periodSeconds", json!(10));
    fill(probe, "successThreshold", json!(1));
    fill(probe, "failureThreshold", json!(3));
    handler(probe);
}

/// A probe's or hook's action.
fn handler(handler: &mut Map<String, Value>) {
    if let Some(get) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        fill(get, "path", json!("/"));
        fill(get, "scheme", json!("HTTP"));
    }
    if let Some(grpc) = handler.get_mut("grpc").and_then(Value::as_object_mut) {
        fill(grpc, "service", json!(""));
    }
}

/// A volume with no source is an emptyDir; files from ConfigMaps,
/// Secrets and the downward API are 0644 (420) unless set.
fn volume(volume: &mut Map<String, Value>) {
    const SOURCES_WITH_MODE: [&str; 4] = ["configMap", "secret", "downwardAPI", "projected"];
    let has_source = volume.keys().any(|k| k != "name");
    if !has_source {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in SOURCES_WITH_MODE {
        if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
            fill(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = volume.get_mut("hostPath").and_then(Value::as_object_mut) {
        fill(host_path, "type", json!(""));
    }
}

/// Set `key` when it is absent or null.
fn fill(map: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

/// The object at `key`, made one when absent or null; `None` when it is
/// something else, which the type check then refuses.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    fill(map, key, json!({}));
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// A rolling update's defaults, under `strategy` of type RollingUpdate.
fn rolling_update(spec: &mut Map<String, Value>, key: &str, unavailable: Value, surge: Value) {
    let Some(strategy) = object_at(spec, key) else {
        return;
    };
    fill(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    if let Some(rolling) = object_at(strategy, "rollingUpdate") {
        fill(rolling, "maxUnavailable", unavailable);
        fill(rolling, "maxSurge", surge);
    }
}

/// The objects of the list at `key`.
fn objects<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_gets_what_kube_apiserver_fills_and_keeps_what_was_set() {
        let mut deployment = json!({"spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{
                    "name": "web", "image": "registry:5000/web:1",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 5}
                }, {"name": "log", "image": "log", "imagePullPolicy": "Never"}],
                "volumes": [{"name": "scratch"}, {"name": "settings", "configMap": {"name": "web"}}],
                "terminationGracePeriodSeconds": 5
            }}
        }});
        super::deployment(&mut deployment);
        assert_eq!(
            deployment,
            json!({"spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{
                        "name": "web", "image": "registry:5000/web:1",
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}}],
                        "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                            "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
                    }, {
                        "name": "log", "image": "log", "imagePullPolicy": "Never",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "volumes": [{"name": "scratch", "emptyDir": {}},
                                {"name": "settings", "configMap": {"name": "web", "defaultMode": 420}}],
                    "terminationGracePeriodSeconds": 5,
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "securityContext": {},
                    "schedulerName": "default-scheduler"
                }}
            }})
        );
        let once = deployment.clone();
        super::deployment(&mut deployment);
        assert_eq!(deployment, once, "defaults are a fixed point");
    }

    #[test]
    fn recreate_gets_no_rolling_update_and_a_daemon_set_rolls_one_at_a_time() {
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        super::deployment(&mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
        let mut daemons = json!({"spec": {"template": {"spec": {
            "hostNetwork": true,
            "containers": [{"name": "agent", "image": "agent:latest", "ports": [{"containerPort": 9100}]}]
        }}}});
        super::daemon_set(&mut daemons);
        assert_eq!(
            daemons["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let agent = &daemons["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(agent["imagePullPolicy"], "Always");
        assert_eq!(
            agent["ports"],
            json!([{"containerPort": 9100, "protocol": "TCP", "hostPort": 9100}])
        );
    }

    #[test]
    fn the_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:1", "IfNotPresent"),
            ("busybox@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), policy, "{image}");
        }
    }
}
