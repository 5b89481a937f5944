//! A container definition (of the task's effective definition: its
//! overrides applied, `Task::effective_definition`) as the runtime config
//! the agent creates.

use std::{collections::BTreeMap, time::Duration};

use crds::v1alpha1::{ContainerDefinition, Task, TaskDefinitionSpec, Volume, VolumeScope};
use kube::ResourceExt;

use crate::{
    Config,
    runtime::{
        ContainerConfig, Limits, Observed, PortSpec, Settings, TaskResources, VolumeConfig, labels,
    },
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
    let host_ip = agent.host_ip.as_str();
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
            let source = volume.host.as_ref().map_or_else(
                || docker_volume_name(&uid, volume),
                |host| host.source_path.clone(),
            );
            let mode = if mount.read_only { ":ro" } else { "" };
            Some(format!("{source}:{}{mode}", mount.container_path))
        })
        .collect();
    let mut labels = task_labels(task, agent);
    labels.insert(labels::CONTAINER.to_owned(), def.name.clone());
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
        settings: settings(task, def),
        // Set once the task's cgroup is made (`Runtime::prepare_task`).
        cgroup_parent: None,
    }
}

/// The labels of everything the agent makes for a task.
fn task_labels(task: &Task, agent: &Config) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (labels::INSTANCE.to_owned(), agent.name.clone()),
        (
            labels::TASK_NAMESPACE.to_owned(),
            task.namespace().unwrap_or_default(),
        ),
        (labels::TASK_NAME.to_owned(), task.name_any()),
        (labels::TASK_UID.to_owned(), task.uid().unwrap_or_default()),
    ]);
    if let Some(uid) = &agent.cluster_uid {
        labels.insert(labels::CLUSTER_UID.to_owned(), uid.clone());
    }
    if let Some(group) = &task.spec.group {
        labels.insert(labels::TASK_GROUP.to_owned(), group.clone());
    }
    labels
}

/// Docker's name for a volume that is not a host path: a shared one's
/// own name (other tasks find it by it), else one of the task's.
fn docker_volume_name(task_uid: &str, volume: &Volume) -> String {
    match &volume.docker_volume_configuration {
        Some(docker) if docker.scope == VolumeScope::Shared => volume.name.clone(),
        _ => format!("gantry-{task_uid}-{}", volume.name),
    }
}

/// What the task's containers share: its task-level limits and its Docker
/// volumes (a volume with neither `host` nor `dockerVolumeConfiguration`
/// is a local one of the task's).
#[must_use]
pub fn task_resources(
    task: &Task,
    definition: &TaskDefinitionSpec,
    agent: &Config,
) -> TaskResources {
    let uid = task.uid().unwrap_or_default();
    let volumes = definition
        .volumes
        .iter()
        .filter(|v| v.host.is_none())
        .map(|volume| {
            let docker = volume
                .docker_volume_configuration
                .clone()
                .unwrap_or_default();
            VolumeConfig {
                name: docker_volume_name(&uid, volume),
                shared: docker.scope == VolumeScope::Shared,
                autoprovision: docker.autoprovision,
                driver: docker.driver,
                driver_opts: docker.driver_opts,
                labels: docker.labels,
            }
        })
        .collect();
    TaskResources {
        labels: task_labels(task, agent),
        uid,
        limits: Limits {
            cpu: definition.cpu,
            memory_mib: definition.memory,
        },
        volumes,
    }
}

/// ECS's container settings in Docker's terms.
fn settings(task: &Task, def: &ContainerDefinition) -> Settings {
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
        volumes_from: def
            .volumes_from
            .iter()
            .map(|from| {
                let mode = if from.read_only { ":ro" } else { "" };
                format!("{}{mode}", runtime_name(task, &from.source_container))
            })
            .collect(),
        log_driver: def
            .log_configuration
            .as_ref()
            .map(|log| (log.log_driver.docker_name(), log.options.clone())),
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
