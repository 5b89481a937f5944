//! A container definition (of the task's effective definition: its
//! overrides applied, `Task::effective_definition`) as the runtime config
//! the agent creates.

use std::{collections::BTreeMap, time::Duration};

use crds::v1alpha1::{ContainerDefinition, Task, TaskDefinitionSpec};
use kube::ResourceExt;

use crate::{
    Config,
    runtime::{ContainerConfig, Observed, PortSpec, Settings, labels},
};

/// The runtime's name for a task's container: unique per task uid, so
/// that a second create of it fails rather than duplicating it.
#[must_use]
pub fn runtime_name(task: &Task, container: &str) -> String {
    let uid = task.uid().unwrap_or_default();
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("gantry-{}-{container}-{short}", task.name_any())
}

#[must_use]
pub fn config(
    task: &Task,
    definition: &TaskDefinitionSpec,
    def: &ContainerDefinition,
    agent: &Config,
) -> ContainerConfig {
    let (instance, host_ip) = (agent.name.as_str(), agent.host_ip.as_str());
    let uid = task.uid().unwrap_or_default();
    let environment = def
        .environment
        .iter()
        .map(|kv| (kv.name.clone(), kv.value.clone()))
        .collect();
    let command = def.command.clone();
    let binds = def
        .mount_points
        .iter()
        .filter_map(|mount| {
            let volume = definition
                .volumes
                .iter()
                .find(|v| v.name == mount.source_volume)?;
            // A volume without a host path is a Docker volume of the task's
            // own.
            let source = volume.host.as_ref().map_or_else(
                || format!("gantry-{uid}-{}", volume.name),
                |host| host.source_path.clone(),
            );
            let mode = if mount.read_only { ":ro" } else { "" };
            Some(format!("{source}:{}{mode}", mount.container_path))
        })
        .collect();
    let mut labels = BTreeMap::from([
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (
            labels::TASK_NAMESPACE.to_owned(),
            task.namespace().unwrap_or_default(),
        ),
        (labels::TASK_NAME.to_owned(), task.name_any()),
        (labels::TASK_UID.to_owned(), uid.clone()),
        (labels::CONTAINER.to_owned(), def.name.clone()),
    ]);
    if let Some(uid) = &agent.cluster_uid {
        labels.insert(labels::CLUSTER_UID.to_owned(), uid.clone());
    }
    // The definition's own labels, under the agent's (which a schema rule
    // keeps them from naming).
    for (key, value) in &def.docker_labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    ContainerConfig {
        runtime_name: runtime_name(task, &def.name),
        image: def.image.clone(),
        command,
        entry_point: def.entry_point.clone(),
        environment,
        ports: def
            .port_mappings
            .iter()
            .map(|p| PortSpec {
                container_port: p.container_port,
                host_port: p.host_port,
                protocol: p.protocol,
            })
            .collect(),
        host_ip: host_ip.to_owned(),
        cpu_shares: def.cpu,
        memory_mib: def.memory,
        memory_reservation_mib: def.memory_reservation,
        health_check: def.health_check.clone(),
        network_mode: definition.network_mode,
        binds,
        stop_timeout: Duration::from_secs(u64::from(def.stop_timeout)),
        labels,
        settings: settings(def),
    }
}

/// ECS's container settings in Docker's terms.
fn settings(def: &ContainerDefinition) -> Settings {
    let linux = def.linux_parameters.clone().unwrap_or_default();
    let capabilities = linux.capabilities.unwrap_or_default();
    let names =
        |caps: &[crds::v1alpha1::Capability]| caps.iter().map(|c| c.docker_name()).collect();
    Settings {
        user: def.user.clone(),
        working_dir: def.working_directory.clone(),
        ulimits: def
            .ulimits
            .iter()
            .map(|u| (u.name.docker_name(), u.soft_limit, u.hard_limit))
            .collect(),
        privileged: def.privileged,
        readonly_rootfs: def.readonly_root_filesystem,
        init: linux.init_process_enabled,
        cap_add: names(&capabilities.add),
        cap_drop: names(&capabilities.drop),
        shm_size_mib: linux.shared_memory_size,
        tmpfs: linux
            .tmpfs
            .iter()
            .map(|t| {
                let mut options = vec![format!("size={}m", t.size)];
                options.extend(t.mount_options.iter().cloned());
                (t.container_path.clone(), options.join(","))
            })
            .collect(),
        dns: def.dns_servers.clone(),
        dns_search: def.dns_search_domains.clone(),
        extra_hosts: def
            .extra_hosts
            .iter()
            .map(|h| format!("{}:{}", h.hostname, h.ip_address))
            .collect(),
        hostname: def.hostname.clone(),
    }
}

/// Whether a container of this instance belongs to this agent's cluster:
/// labelled with its namespace's uid, or with none (made before the label
/// was, or by an agent that could not read it).
#[must_use]
pub fn ours(observed: &Observed, cluster_uid: Option<&str>) -> bool {
    match (observed.label(labels::CLUSTER_UID), cluster_uid) {
        (Some(theirs), Some(mine)) => theirs == mine,
        _ => true,
    }
}
