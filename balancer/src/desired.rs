//! What each LoadBalancer should serve, from the API's objects alone: its
//! spec, and one target per task of each Service that names it. Pure, so
//! the data plane and its tests agree on the rule (which tasks count and
//! at what address is `crds::load_balancing`'s).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use crds::{
    labels,
    load_balancing::{self, Registration},
    v1alpha1::{ContainerInstance, LoadBalancer, LoadBalancerSpec, Service, Task},
};
use kube::ResourceExt;

/// A LoadBalancer by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One target: a task's container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub task: String,
    pub container: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTarget {
    pub key: TargetKey,
    pub service: String,
    pub address: SocketAddr,
    /// Deregistering: no new traffic, in-flight traffic drains.
    pub draining: bool,
}

impl DesiredTarget {
    /// Task `task`'s container `web`, of service `web`, at
    /// `127.0.0.1:port`: a target for tests and benchmarks that serve
    /// without the API.
    #[must_use]
    pub fn loopback(task: impl Into<String>, port: u16, draining: bool) -> Self {
        Self {
            key: TargetKey {
                task: task.into(),
                container: "web".into(),
            },
            service: "web".into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            draining,
        }
    }
}

/// What one LoadBalancer should serve.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub key: Key,
    pub generation: Option<i64>,
    pub spec: LoadBalancerSpec,
    pub targets: Vec<DesiredTarget>,
}

impl Desired {
    /// LoadBalancer `namespace/name` at its first generation.
    #[must_use]
    pub fn new(
        namespace: &str,
        name: &str,
        spec: LoadBalancerSpec,
        targets: Vec<DesiredTarget>,
    ) -> Self {
        Self {
            key: Key {
                namespace: namespace.into(),
                name: name.into(),
            },
            generation: Some(1),
            spec,
            targets,
        }
    }
}

/// Every LoadBalancer and its targets.
#[must_use]
pub fn desired(
    balancers: &[Arc<LoadBalancer>],
    services: &[Arc<Service>],
    tasks: &[Arc<Task>],
    instances: &[Arc<ContainerInstance>],
) -> Vec<Desired> {
    let host_ips: HashMap<(String, String), &str> = instances
        .iter()
        .map(Arc::as_ref)
        .filter_map(|ci| {
            let ip = ci.spec.host_ip.as_deref()?;
            Some(((ci.namespace().unwrap_or_default(), ci.name_any()), ip))
        })
        .collect();
    let mut by_service: HashMap<(String, &str), Vec<&Task>> = HashMap::new();
    for task in tasks.iter().map(Arc::as_ref) {
        if let Some(service) = task.labels().get(labels::SERVICE) {
            by_service
                .entry((task.namespace().unwrap_or_default(), service.as_str()))
                .or_default()
                .push(task);
        }
    }
    let mut out: Vec<Desired> = balancers
        .iter()
        .map(Arc::as_ref)
        .map(|lb| Desired {
            key: Key {
                namespace: lb.namespace().unwrap_or_default(),
                name: lb.name_any(),
            },
            generation: lb.metadata.generation,
            spec: lb.spec.clone(),
            targets: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    for service in services.iter().map(Arc::as_ref) {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let tasks = by_service
            .get(&(namespace.clone(), name.as_str()))
            .map_or(&[][..], Vec::as_slice);
        for entry in &service.spec.load_balancers {
            let key = Key {
                namespace: namespace.clone(),
                name: entry.load_balancer_name.clone(),
            };
            let Ok(i) = out.binary_search_by(|d| d.key.cmp(&key)) else {
                continue;
            };
            for task in tasks {
                let Some(registration) = load_balancing::registration(task) else {
                    continue;
                };
                let instance = task
                    .spec
                    .container_instance
                    .as_ref()
                    .and_then(|ci| host_ips.get(&(namespace.clone(), ci.clone())).copied());
                let Some((host, port)) = load_balancing::endpoint(
                    task,
                    &entry.container_name,
                    entry.container_port,
                    instance,
                ) else {
                    continue;
                };
                let Ok(ip) = host.parse::<IpAddr>() else {
                    continue;
                };
                out[i].targets.push(DesiredTarget {
                    key: TargetKey {
                        task: task.name_any(),
                        container: entry.container_name.clone(),
                    },
                    service: name.clone(),
                    address: SocketAddr::new(ip, port),
                    draining: registration == Registration::Deregistering,
                });
            }
        }
    }
    for d in &mut out {
        d.targets.sort_by(|a, b| a.key.cmp(&b.key));
        d.targets.dedup_by(|a, b| a.key == b.key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lb(name: &str) -> LoadBalancer {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "LoadBalancer",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {"listeners": [{"port": 8080}]},
        }))
        .expect("a load balancer")
    }

    fn service(name: &str, lb: &str) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"taskDefinition": name, "desiredCount": 2, "loadBalancers": [
                {"loadBalancerName": lb, "containerName": "web", "containerPort": 80}]},
        }))
        .expect("a service")
    }

    fn task(name: &str, service: &str, last: &str, desired: &str, port: u16) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"gantry.dev/service": service}},
            "spec": {"taskDefinition": service, "desiredStatus": desired,
                     "containerInstance": "host-1"},
            "status": {"lastStatus": last, "containers": [{"name": "web", "lastStatus": "RUNNING",
                "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": port}]}]},
        }))
        .expect("a task")
    }

    fn instance() -> ContainerInstance {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
            "metadata": {"name": "host-1", "namespace": "default"},
            "spec": {"hostIP": "127.0.0.2", "registeredResources": {"cpu": 1024, "memory": 1024}},
        }))
        .expect("an instance")
    }

    #[test]
    fn each_service_task_is_a_target_of_the_balancers_it_names() {
        let balancers = [lb("front"), lb("other")].map(Arc::new);
        let services = [service("web", "front"), service("api", "missing")].map(Arc::new);
        let tasks = [
            task("web-1", "web", "RUNNING", "RUNNING", 32001),
            task("web-2", "web", "DEACTIVATING", "STOPPED", 32002),
            task("web-3", "web", "ACTIVATING", "RUNNING", 32003),
            task("api-1", "api", "RUNNING", "RUNNING", 32004),
        ]
        .map(Arc::new);
        let out = desired(&balancers, &services, &tasks, &[Arc::new(instance())]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].key.name, "front");
        let targets: Vec<_> = out[0]
            .targets
            .iter()
            .map(|t| (t.key.task.as_str(), t.address.to_string(), t.draining))
            .collect();
        assert_eq!(
            targets,
            [
                ("web-1", "127.0.0.2:32001".to_owned(), false),
                ("web-2", "127.0.0.2:32002".to_owned(), true),
            ]
        );
        assert!(out[1].targets.is_empty(), "no service names `other`");
    }
}
