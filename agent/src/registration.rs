//! The ContainerInstance this agent registers, and the Lease that says it
//! is alive. Liveness is the Lease alone, so heartbeats never bump the
//! instance's resourceVersion (which schedulers write against).

use std::{collections::BTreeMap, time::Duration};

use crds::v1alpha1::{
    CPU_UNITS_PER_CORE, ContainerInstance, ContainerInstanceSpec, InstanceState, Resources,
    VersionInfo,
};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::Namespace,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{Config, Error, runtime::Info};

/// The uid of the cluster's namespace, or `None` (with a warning) if it
/// cannot be read: containers are then told apart by instance name only.
pub async fn cluster_uid(client: &kube::Client, cluster: &str) -> Option<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get(cluster).await {
        Ok(ns) => ns.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cluster's namespace: containers carry no cluster uid");
            None
        }
    }
}

/// What the host offers, from the flags and what the runtime reports.
#[must_use]
pub fn spec(config: &Config, info: &Info) -> ContainerInstanceSpec {
    let cores = info.cpus.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1)
    });
    let cpu = config.cpu.unwrap_or(cores * CPU_UNITS_PER_CORE);
    let memory = config.memory.unwrap_or_else(|| {
        let total = info.memory_mib.or_else(host_memory_mib).unwrap_or(0);
        u32::try_from(total.saturating_sub(u64::from(config.reserved_memory))).unwrap_or(u32::MAX)
    });
    let mut attributes = BTreeMap::from([
        ("ecs.os-type".to_owned(), std::env::consts::OS.to_owned()),
        (
            "ecs.cpu-architecture".to_owned(),
            match std::env::consts::ARCH {
                "aarch64" => "arm64".to_owned(),
                other => other.to_owned(),
            },
        ),
    ]);
    if let Some(t) = &config.instance_type {
        attributes.insert("ecs.instance-type".to_owned(), t.clone());
    }
    if let Some(zone) = &config.availability_zone {
        attributes.insert("ecs.availability-zone".to_owned(), zone.clone());
    }
    attributes.extend(config.attributes.clone());
    ContainerInstanceSpec {
        state: InstanceState::Active,
        registered_resources: Resources {
            cpu,
            memory,
            ports: config.reserved_ports.clone(),
            ports_udp: Vec::new(),
        },
        attributes,
        host_ip: Some(config.host_ip.clone()),
    }
}

/// `MemTotal` from /proc/meminfo, in MiB.
fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The versions an agent reports at registration: its own and its
/// runtime's (the `agentVersion` of placement constraints).
#[must_use]
pub fn version_info(info: &Info) -> VersionInfo {
    VersionInfo {
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        docker_version: Some(info.version.clone()),
    }
}

/// Create the ContainerInstance, or adopt the one that exists (keeping its
/// state, allocations and status) and bring its registration up to date,
/// versions included.
///
/// # Errors
/// [`Error::Registration`] when the API refuses it.
pub async fn register(
    api: &Api<ContainerInstance>,
    config: &Config,
    spec: ContainerInstanceSpec,
    versions: VersionInfo,
    endpoint: Option<&crds::v1alpha1::AgentEndpoint>,
) -> Result<ContainerInstance, Error> {
    let refused = |e: kube::Error| Error::Registration {
        namespace: config.cluster.clone(),
        name: config.name.clone(),
        message: e.to_string(),
    };
    let params = PatchParams::default();
    let status = json!({"status": {"versionInfo": versions, "agentEndpoint": endpoint}});
    if api.get_opt(&config.name).await.map_err(refused)?.is_none() {
        let instance = ContainerInstance::new(&config.name, spec.clone());
        match api.create(&PostParams::default(), &instance).await {
            Ok(_) => {
                return api
                    .patch_status(&config.name, &params, &Patch::Merge(&status))
                    .await
                    .map_err(refused);
            }
            // Another start of the same agent won the race: adopt it.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(refused(e)),
        }
    }
    let patch = json!({"spec": {
        "registeredResources": spec.registered_resources,
        "attributes": spec.attributes,
        "hostIP": spec.host_ip,
    }});
    api.patch(&config.name, &params, &Patch::Merge(&patch))
        .await
        .map_err(refused)?;
    api.patch_status(&config.name, &params, &Patch::Merge(&status))
        .await
        .map_err(refused)
}

/// Renew the instance's Lease every `renew` until the future is dropped,
/// calling `renewed` after each renewal the control plane took. A failed
/// renewal is logged and retried; the controller decides what a lapsed
/// lease means.
pub async fn keep_lease(
    api: Api<Lease>,
    instance: ContainerInstance,
    config: &Config,
    renewed: impl Fn(),
) {
    let mut tick = tokio::time::interval(config.lease_renew);
    // A renewal sent on a connection the network has silently dropped
    // would wait for the client's read timeout (minutes), missing every
    // renewal meanwhile; given up on, its connection goes with it.
    let patience = config.lease_renew * 2;
    loop {
        tick.tick().await;
        match tokio::time::timeout(patience, renew(&api, &instance, config.lease_duration)).await {
            Ok(Ok(())) => renewed(),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!(
                seconds = patience.as_secs(),
                "lease renewal unanswered; giving up on it"
            ),
        }
    }
}

async fn renew(
    api: &Api<Lease>,
    instance: &ContainerInstance,
    duration: Duration,
) -> Result<(), kube::Error> {
    let name = instance.name_any();
    let now = MicroTime(Timestamp::now());
    match api.get_opt(&name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(name.clone());
            api.replace(&name, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    owner_references: Some(vec![owner(instance)]),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: i32::try_from(duration.as_secs()).ok(),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

fn owner(instance: &ContainerInstance) -> OwnerReference {
    OwnerReference {
        api_version: ContainerInstance::api_version(&()).into_owned(),
        kind: ContainerInstance::kind(&()).into_owned(),
        name: instance.name_any(),
        uid: instance.uid().unwrap_or_default(),
        ..OwnerReference::default()
    }
}
