//! Service discovery: every Service's tasks as `discovery.k8s.io/v1`
//! EndpointSlices, so that Kubernetes-native consumers (and, on a real
//! cluster, a selectorless Kubernetes Service of the same name) find them.
//!
//! [`desired`] is pure: one slice per distinct set of host ports (tasks on
//! static ports share one; each task on dynamic ports gets its own, since a
//! slice's ports apply to all its endpoints). [`sync`] writes what changed
//! and deletes what is no longer wanted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crds::{
    load_balancing::{self, Registration},
    v1alpha1::{Service, Task, TaskLastStatus},
};
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};

use super::plan::facts;

/// The label every EndpointSlice carries: the Service it belongs to.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that says who manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Gantry's value of [`MANAGED_BY`].
pub const MANAGER: &str = "gantry.dev";

/// The ports a Service's endpoints publish: its load balancers' container
/// ports if it has any, else every port its tasks publish.
fn ports_of(service: &Service, task: &Task) -> Vec<(String, u16)> {
    if !service.spec.load_balancers.is_empty() {
        let mut ports: Vec<(String, u16)> = service
            .spec
            .load_balancers
            .iter()
            .map(|e| (e.container_name.clone(), e.container_port))
            .collect();
        ports.dedup();
        return ports;
    }
    task.status
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| {
            c.network_bindings
                .iter()
                .map(|b| (c.name.clone(), b.container_port))
        })
        .collect()
}

fn port_name(container: &str, port: u16) -> String {
    let name: String = container
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{}-{port}", name.trim_matches('-'))
}

/// `(ready, serving, terminating)` of a task, as a Pod's would be.
fn conditions(task: &Task, healthy: bool) -> Option<(bool, bool, bool)> {
    let last = task.status.as_ref().and_then(|s| s.last_status)?;
    Some(match (last, load_balancing::registration(task)) {
        (_, Some(Registration::Registered)) => (healthy, healthy, false),
        (_, Some(Registration::Deregistering)) => (false, true, true),
        (TaskLastStatus::Stopping | TaskLastStatus::Deprovisioning, _) => (false, false, true),
        (TaskLastStatus::Stopped, _) => return None,
        _ => (false, false, false),
    })
}

/// Endpoints that share a slice: one address type, the same named host
/// ports.
type Group = (&'static str, Vec<(String, u16)>);

/// The slices the Service's tasks make. `healthy`: the tasks the service
/// plan counts healthy (`Plan::healthy`); `host_ips`: each instance's
/// `hostIP`, for ports bound on every address.
#[must_use]
pub fn desired(
    service: &Service,
    tasks: &[std::sync::Arc<Task>],
    healthy: &BTreeSet<String>,
    host_ips: &HashMap<String, String>,
) -> Vec<EndpointSlice> {
    let name = service.name_any();
    let mut groups: BTreeMap<Group, Vec<Endpoint>> = BTreeMap::new();
    for task in tasks {
        let Some((ready, serving, terminating)) =
            conditions(task, healthy.contains(&task.name_any()))
        else {
            continue;
        };
        let instance_ip = facts::instance(task)
            .and_then(|i| host_ips.get(i))
            .map(String::as_str);
        let mut host = None;
        let mut ports = Vec::new();
        for (container, container_port) in ports_of(service, task) {
            let Some((ip, host_port)) =
                load_balancing::endpoint(task, &container, container_port, instance_ip)
            else {
                continue;
            };
            host.get_or_insert(ip);
            ports.push((port_name(&container, container_port), host_port));
        }
        let Some(host) = host else { continue };
        let family = if host.contains(':') { "IPv6" } else { "IPv4" };
        groups.entry((family, ports)).or_default().push(Endpoint {
            addresses: vec![host],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: None,
            target_ref: Some(ObjectReference {
                api_version: Some("gantry.dev/v1alpha1".to_owned()),
                kind: Some("Task".to_owned()),
                name: Some(task.name_any()),
                namespace: task.namespace(),
                uid: task.uid(),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        });
    }
    groups
        .into_iter()
        .map(|((family, ports), mut endpoints)| {
            endpoints.sort_by(|a, b| {
                let key = |e: &Endpoint| e.target_ref.as_ref().and_then(|r| r.name.clone());
                key(a).cmp(&key(b))
            });
            let suffix: Vec<String> = ports.iter().map(|(_, p)| p.to_string()).collect();
            let slice_name = if suffix.is_empty() {
                name.clone()
            } else {
                format!("{name}-{}", suffix.join("-"))
            };
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name),
                    namespace: service.namespace(),
                    labels: Some(BTreeMap::from([
                        (SERVICE_NAME.to_owned(), name.clone()),
                        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
                    ])),
                    owner_references: service.controller_owner_ref(&()).map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                address_type: family.to_owned(),
                endpoints,
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port)| EndpointPort {
                            name: Some(name),
                            port: Some(i32::from(port)),
                            protocol: Some("TCP".to_owned()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

/// Whether a stored slice already says what `want` says.
fn same(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.address_type == want.address_type
        && have.endpoints == want.endpoints
        && have.ports == want.ports
        && have.metadata.labels == want.metadata.labels
}

/// Write the slices that differ from `existing` (the Service's slices as
/// last seen) and delete those no longer wanted.
///
/// # Errors
/// The first failed write.
pub async fn sync(
    api: &Api<EndpointSlice>,
    want: Vec<EndpointSlice>,
    existing: &[std::sync::Arc<EndpointSlice>],
) -> Result<(), kube::Error> {
    let params = PatchParams::apply("gantry-controller").force();
    for slice in &want {
        let name = slice.name_any();
        if existing
            .iter()
            .any(|e| e.name_any() == name && same(e, slice))
        {
            continue;
        }
        let mut body = serde_json::to_value(slice).unwrap_or_default();
        body["apiVersion"] = "discovery.k8s.io/v1".into();
        body["kind"] = "EndpointSlice".into();
        api.patch(&name, &params, &Patch::Apply(&body)).await?;
    }
    for gone in existing
        .iter()
        .filter(|e| !want.iter().any(|w| w.name_any() == e.name_any()))
    {
        match api.delete(&gone.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::tests::shared;
    use serde_json::json;

    fn service(lb: bool) -> Service {
        let mut spec = json!({"taskDefinition": "web", "desiredCount": 2});
        if lb {
            spec["loadBalancers"] =
                json!([{"loadBalancerName": "front", "containerName": "web", "containerPort": 80}]);
        }
        let mut s = Service::new("web", serde_json::from_value(spec).expect("a spec"));
        s.metadata.namespace = Some("default".into());
        s.metadata.uid = Some("svc-uid".into());
        s
    }

    fn task(name: &str, last: &str, desired: &str, bind: &str, port: u16) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "spec": {"taskDefinition": "web", "desiredStatus": desired, "containerInstance": "host-1"},
            "status": {"lastStatus": last, "containers": [{"name": "web", "lastStatus": "RUNNING",
                "networkBindings": [{"bindIP": bind, "containerPort": 80, "hostPort": port}]}]},
        }))
        .expect("a task")
    }

    /// An endpoint's address and its ready, serving, terminating flags.
    type Flags = (String, bool, bool, bool);

    fn summary(slices: &[EndpointSlice]) -> Vec<(String, Vec<Flags>)> {
        slices
            .iter()
            .map(|s| {
                let endpoints = s
                    .endpoints
                    .iter()
                    .map(|e| {
                        let c = e.conditions.clone().unwrap_or_default();
                        (
                            e.addresses[0].clone(),
                            c.ready == Some(true),
                            c.serving == Some(true),
                            c.terminating == Some(true),
                        )
                    })
                    .collect();
                (s.name_any(), endpoints)
            })
            .collect()
    }

    #[test]
    fn tasks_on_one_port_share_a_slice_and_carry_their_conditions() {
        let tasks = [
            task("a", "RUNNING", "RUNNING", "127.0.0.2", 80),
            task("b", "DEACTIVATING", "STOPPED", "127.0.0.3", 80),
            task("c", "STOPPING", "STOPPED", "127.0.0.4", 80),
            task("d", "STOPPED", "STOPPED", "127.0.0.5", 80),
            task("e", "RUNNING", "RUNNING", "0.0.0.0", 80),
        ];
        // As the plan judges them with no health check: RUNNING, not told
        // to stop.
        let healthy = BTreeSet::from(["a".to_owned(), "e".to_owned()]);
        let ips = HashMap::from([("host-1".to_owned(), "10.0.0.1".to_owned())]);
        let slices = desired(&service(false), &shared(&tasks), &healthy, &ips);
        assert_eq!(
            summary(&slices),
            [(
                "web-80".to_owned(),
                vec![
                    ("127.0.0.2".to_owned(), true, true, false),
                    ("127.0.0.3".to_owned(), false, true, true),
                    ("127.0.0.4".to_owned(), false, false, true),
                    ("10.0.0.1".to_owned(), true, true, false),
                ]
            )]
        );
        let slice = &slices[0];
        assert_eq!(slice.labels()[SERVICE_NAME], "web");
        assert_eq!(slice.labels()[MANAGED_BY], MANAGER);
        assert_eq!(slice.address_type, "IPv4");
        let port = &slice.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some("web-80"), Some(80))
        );
        assert_eq!(
            slice.metadata.owner_references.as_ref().expect("owned")[0].uid,
            "svc-uid"
        );
    }

    #[test]
    fn dynamic_ports_give_each_task_its_slice() {
        let tasks = [
            task("a", "RUNNING", "RUNNING", "127.0.0.2", 32768),
            task("b", "RUNNING", "RUNNING", "127.0.0.2", 32769),
        ];
        let healthy = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        let names: Vec<String> =
            desired(&service(true), &shared(&tasks), &healthy, &HashMap::new())
                .iter()
                .map(ResourceExt::name_any)
                .collect();
        assert_eq!(names, ["web-32768", "web-32769"]);
    }
}
