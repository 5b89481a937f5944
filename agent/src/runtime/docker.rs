//! The Docker runtime, through bollard.

use std::{collections::HashMap, time::Duration};

use bollard::{
    auth::DockerCredentials,
    models::{
        ContainerCreateBody, ContainerStateStatusEnum, HealthConfig, HealthStatusEnum, HostConfig,
        HostConfigLogConfig, PortBinding, ResourcesUlimits, VolumeCreateRequest,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
        InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder, RemoveVolumeOptions, StatsOptions,
        StopContainerOptionsBuilder,
    },
};
use crds::v1alpha1::{HealthStatus, NetworkBinding, NetworkMode, Protocol};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};

use super::{
    ContainerConfig, Exec, ExecOptions, Info, LogOptions, Observed, Pull, Runtime, RuntimeError,
    State, Stats, TaskCgroups, TaskResources, labels,
};

/// Docker through its API socket.
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    /// Where task-level limits are enforced; `None`: they are not.
    cgroups: Option<TaskCgroups>,
}

/// Where the host's cgroups are mounted, usually.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const MIB: i64 = 1024 * 1024;

impl Docker {
    /// Connect to `host` (a `unix://` or `tcp://` URI), or to the local
    /// default (`DOCKER_HOST`, else the usual socket), and agree on an API
    /// version the engine speaks.
    ///
    /// # Errors
    /// [`RuntimeError::Unreachable`] when no engine answers there.
    pub async fn connect(host: Option<&str>) -> Result<Self, RuntimeError> {
        let at = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |e: bollard::errors::Error| RuntimeError::Unreachable {
            at: at.clone(),
            message: e.to_string(),
        };
        let client = match host {
            Some(uri) if uri.starts_with("unix://") => {
                bollard::Docker::connect_with_unix(uri, 120, bollard::API_DEFAULT_VERSION)
            }
            Some(uri) => bollard::Docker::connect_with_http(uri, 120, bollard::API_DEFAULT_VERSION),
            None => bollard::Docker::connect_with_local_defaults(),
        }
        .map_err(unreachable)?;
        let client = client.negotiate_version().await.map_err(unreachable)?;
        client.ping().await.map_err(unreachable)?;
        Ok(Self {
            client,
            cgroups: None,
        })
    }

    /// Enforce task-level cpu and memory with a cgroup per task under
    /// `root`, the cgroup mount of the engine's host (see
    /// agent/src/runtime/cgroup.rs). Only with the engine's `cgroupfs`
    /// driver, and only where the agent may write `root`; otherwise it
    /// says why in a warning and tasks run without the task-level limit.
    #[must_use]
    pub async fn with_task_cgroups(mut self, root: &std::path::Path) -> Self {
        let driver = match self.client.info().await {
            Ok(info) => info.cgroup_driver.map(|d| d.to_string()),
            Err(e) => Some(format!("unknown ({e})")),
        };
        let cgroups = match driver.as_deref() {
            Some("cgroupfs") => TaskCgroups::open(root).map_err(|e| e.to_string()),
            other => Err(format!(
                "the engine's cgroup driver is {}, not cgroupfs",
                other.unwrap_or("unknown")
            )),
        };
        match cgroups {
            Ok(cgroups) => self.cgroups = Some(cgroups),
            Err(why) => tracing::warn!(
                reason = %why,
                "task-level cpu and memory will not be enforced on this host"
            ),
        }
        self
    }

    /// Remove every container labelled with the cluster uid (running ones
    /// killed) and the per-task volumes they mounted, as `gantry down`
    /// does: how many of each.
    ///
    /// # Errors
    /// The engine's, but for what is already gone.
    pub async fn remove_cluster(&self, cluster_uid: &str) -> Result<(usize, usize), RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={cluster_uid}", labels::CLUSTER_UID)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(Self::other)?;
        let mut volumes = Vec::new();
        for summary in &containers {
            let Some(id) = &summary.id else { continue };
            self.remove(id).await?;
            if let Some(uid) = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::TASK_UID))
            {
                self.release_task(uid).await?;
            }
            volumes.extend(
                summary
                    .mounts
                    .iter()
                    .flatten()
                    .filter_map(|m| m.name.clone())
                    // Named per task by the agent; a host path is not ours.
                    .filter(|name| name.starts_with("gantry-")),
            );
        }
        // And what the agents made for the cluster: task volumes of tasks
        // whose containers are gone, autoprovisioned shared ones.
        volumes.extend(
            self.volumes_labelled(&format!("{}={cluster_uid}", labels::CLUSTER_UID))
                .await?,
        );
        volumes.sort();
        volumes.dedup();
        for volume in &volumes {
            self.remove_volume(volume).await?;
        }
        Ok((containers.len(), volumes.len()))
    }

    fn other(e: bollard::errors::Error) -> RuntimeError {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            } => RuntimeError::NotFound(message),
            e => RuntimeError::Other(e.to_string()),
        }
    }
}

fn port_key(container_port: u16, protocol: Protocol) -> String {
    let protocol = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{container_port}/{protocol}")
}

fn create_body(config: &ContainerConfig) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let host_network = config.network_mode == NetworkMode::Host;
    for port in &config.ports {
        if host_network {
            continue;
        }
        port_bindings
            .entry(port_key(port.container_port, port.protocol))
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(config.host_ip.clone()),
                // Empty: Docker picks a free port (ECS's dynamic mapping).
                host_port: Some(if port.host_port == 0 {
                    String::new()
                } else {
                    port.host_port.to_string()
                }),
            });
    }
    let healthcheck = config.health_check.as_ref().map(|h| HealthConfig {
        test: Some(h.command.clone()),
        interval: Some(i64::from(h.interval) * NANOS_PER_SECOND),
        timeout: Some(i64::from(h.timeout) * NANOS_PER_SECOND),
        retries: Some(i64::from(h.retries)),
        start_period: h.start_period.map(|s| i64::from(s) * NANOS_PER_SECOND),
        start_interval: None,
    });
    let settings = &config.settings;
    let some = |list: &[String]| (!list.is_empty()).then(|| list.to_vec());
    ContainerCreateBody {
        image: Some(config.image.clone()),
        user: settings.user.clone(),
        working_dir: settings.working_dir.clone(),
        hostname: settings.hostname.clone(),
        cmd: (!config.command.is_empty()).then(|| config.command.clone()),
        entrypoint: (!config.entry_point.is_empty()).then(|| config.entry_point.clone()),
        env: Some(
            config
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        exposed_ports: Some(
            config
                .ports
                .iter()
                .map(|p| port_key(p.container_port, p.protocol))
                .collect(),
        ),
        labels: Some(config.labels.clone().into_iter().collect()),
        healthcheck,
        stop_timeout: i64::try_from(config.stop_timeout.as_secs()).ok(),
        host_config: Some(HostConfig {
            // Docker's minimum share is 2; ECS sends 2 for cpu 0 too.
            cpu_shares: Some(i64::from(config.cpu_shares.unwrap_or(0).max(2))),
            memory: config.memory_mib.map(|m| i64::from(m) * MIB),
            memory_reservation: config.memory_reservation_mib.map(|m| i64::from(m) * MIB),
            network_mode: Some(
                match config.network_mode {
                    NetworkMode::Bridge => "bridge",
                    NetworkMode::Host => "host",
                    NetworkMode::None => "none",
                }
                .to_owned(),
            ),
            port_bindings: Some(port_bindings),
            binds: (!config.binds.is_empty()).then(|| config.binds.clone()),
            ulimits: (!settings.ulimits.is_empty()).then(|| {
                settings
                    .ulimits
                    .iter()
                    .map(|(name, soft, hard)| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            privileged: Some(settings.privileged),
            readonly_rootfs: Some(settings.readonly_rootfs),
            init: settings.init,
            cap_add: some(&settings.cap_add),
            cap_drop: some(&settings.cap_drop),
            shm_size: settings.shm_size_mib.map(|m| i64::from(m) * MIB),
            tmpfs: (!settings.tmpfs.is_empty())
                .then(|| settings.tmpfs.clone().into_iter().collect()),
            dns: some(&settings.dns),
            dns_search: some(&settings.dns_search),
            extra_hosts: some(&settings.extra_hosts),
            volumes_from: some(&settings.volumes_from),
            log_config: settings
                .log_driver
                .as_ref()
                .map(|(driver, options)| HostConfigLogConfig {
                    typ: Some(driver.clone()),
                    config: Some(options.clone().into_iter().collect()),
                }),
            cgroup_parent: config.cgroup_parent.clone(),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

impl Runtime for Docker {
    fn exec(
        &self,
        id: &str,
        options: ExecOptions,
    ) -> BoxStream<'static, Result<Exec, RuntimeError>> {
        let (client, id) = (self.client.clone(), id.to_owned());
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        tokio::spawn(async move {
            let run = async {
                let ExecOptions {
                    command,
                    tty,
                    size,
                    stdin,
                } = options;
                let create = bollard::exec::CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    cmd: Some(command),
                    ..bollard::exec::CreateExecOptions::default()
                };
                let exec = client.create_exec(&id, create).await?;
                let start = bollard::exec::StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                };
                if let bollard::exec::StartExecResults::Attached {
                    mut output,
                    mut input,
                } = client.start_exec(&exec.id, Some(start)).await?
                {
                    if let (true, Some((width, height))) = (tty, size) {
                        let resize = bollard::exec::ResizeExecOptions { height, width };
                        if let Err(e) = client.resize_exec(&exec.id, resize).await {
                            tracing::debug!(error = %e, "the exec's terminal keeps its size");
                        }
                    }
                    // Dropped when the output ends, which ends the input.
                    let (_ended, end) = tokio::sync::oneshot::channel::<()>();
                    if let Some(mut stdin) = stdin {
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            while let Some(bytes) = stdin.next().await {
                                if input.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            // Closing the write half is the command's end of
                            // input; but with a terminal Docker takes it for
                            // the end of the whole exec and drops the output
                            // still to come, so the input stays open (as a
                            // terminal's does: its end is a ^D typed).
                            if !tty {
                                let _ = input.shutdown().await;
                            }
                            let _ = end.await;
                        });
                    }
                    while let Some(chunk) = output.next().await {
                        let bytes = chunk?.into_bytes().to_vec();
                        if sender.unbounded_send(Ok(Exec::Output(bytes))).is_err() {
                            break;
                        }
                    }
                }
                let inspected = client.inspect_exec(&exec.id).await?;
                Ok::<_, bollard::errors::Error>(inspected.exit_code.unwrap_or(-1))
            };
            let end = run.await.map(Exec::Exited).map_err(Self::other);
            let _ = sender.unbounded_send(end);
        });
        receiver.boxed()
    }
    fn logs(
        &self,
        id: &str,
        options: &LogOptions,
    ) -> BoxStream<'static, Result<Vec<u8>, RuntimeError>> {
        let mut query = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(options.follow);
        if let Some(since) = options.since {
            query = query.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        if let Some(tail) = options.tail {
            query = query.tail(&tail.to_string());
        }
        self.client
            .logs(id, Some(query.build()))
            .map(|chunk| {
                chunk
                    .map(|output| output.into_bytes().to_vec())
                    .map_err(Self::other)
            })
            .boxed()
    }

    async fn info(&self) -> Result<Info, RuntimeError> {
        let version = self.client.version().await.map_err(Self::other)?;
        let info = self.client.info().await.map_err(Self::other)?;
        Ok(Info {
            version: version.version.unwrap_or_default(),
            memory_mib: info.mem_total.and_then(|m| u64::try_from(m / MIB).ok()),
            cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()),
        })
    }

    async fn ensure_image(&self, image: &str, pull: &Pull) -> Result<(), RuntimeError> {
        if !pull.always && self.client.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (name, tag) = match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (image, "latest"),
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let credentials = pull.credentials.as_ref().map(|login| DockerCredentials {
            username: Some(login.username.clone()),
            password: Some(login.password.clone()),
            serveraddress: Some(login.registry.clone()),
            ..DockerCredentials::default()
        });
        self.client
            .create_image(Some(options), None, credentials)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { message, .. }
                | bollard::errors::Error::DockerStreamError { error: message } => {
                    RuntimeError::CannotPull(message)
                }
                e => RuntimeError::CannotPull(e.to_string()),
            })
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&config.runtime_name)
            .build();
        self.client
            .create_container(Some(options), create_body(config))
            .await
            .map(|created| created.id)
            .map_err(|e| RuntimeError::Container {
                kind: "CannotCreateContainerError",
                message: e.to_string(),
            })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| RuntimeError::Container {
                kind: "CannotStartContainerError",
                message: e.to_string(),
            })
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.client.stop_container(id, Some(options)).await {
            // 304: it had stopped already.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            other => other.map_err(Self::other),
        }
    }

    /// One sample of Docker's stats, without waiting for a second one
    /// (`one-shot`): the agent works out rates between its own samples.
    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let sample = self
            .client
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?
            .map_err(Self::other)?;
        let cpu_nanos = sample
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or_default();
        let memory = sample.memory_stats.unwrap_or_default();
        // As `docker stats` shows it: the page cache that can be reclaimed
        // is not counted (cgroup v2 calls it inactive_file, v1
        // total_inactive_file).
        let cache = memory
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or_default();
        Ok(Stats {
            cpu_nanos,
            memory_bytes: memory.usage.unwrap_or_default().saturating_sub(cache),
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.client.remove_container(id, Some(options)).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            other => other.map_err(Self::other),
        }
    }

    async fn prepare_task(&self, task: &TaskResources) -> Result<Option<String>, RuntimeError> {
        for volume in &task.volumes {
            self.ensure_volume(task, volume).await?;
        }
        let limited = task.limits.cpu.is_some() || task.limits.memory_mib.is_some();
        let Some(cgroups) = self.cgroups.as_ref().filter(|_| limited) else {
            return Ok(None);
        };
        cgroups
            .create(&task.uid, task.limits)
            .map_err(|e| RuntimeError::Container {
                kind: "ResourceInitializationError",
                message: format!("the task's cgroup: {e}"),
            })?;
        Ok(Some(TaskCgroups::parent(&task.uid)))
    }

    async fn release_task(&self, uid: &str) -> Result<(), RuntimeError> {
        if let Some(cgroups) = &self.cgroups {
            cgroups
                .remove(uid)
                .map_err(|e| RuntimeError::Other(format!("the task's cgroup: {e}")))?;
        }
        // Its task-scoped volumes, which carry its uid (shared ones do not).
        for volume in self
            .volumes_labelled(&format!("{}={uid}", labels::TASK_UID))
            .await?
        {
            self.remove_volume(&volume).await?;
        }
        Ok(())
    }

    async fn list(
        &self,
        instance: &str,
        task_uid: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        // Docker ANDs label filters: only this task's containers are
        // inspected, not the whole host's.
        let mut wanted = vec![format!("{}={instance}", labels::INSTANCE)];
        wanted.extend(task_uid.map(|uid| format!("{}={uid}", labels::TASK_UID)));
        let filters = HashMap::from([("label".to_owned(), wanted)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(Self::other)?;
        let mut observed = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            match self.inspect(&id).await {
                Ok(o) => observed.push(o),
                // Removed between the list and the inspect.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(observed)
    }

    fn changes(&self, instance: &str) -> BoxStream<'static, String> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{}={instance}", labels::INSTANCE)],
            ),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        self.client
            .events(Some(options))
            .filter_map(|event| async move {
                let event = event.ok()?;
                let mut attributes = event.actor?.attributes?;
                attributes.remove(labels::TASK_UID)
            })
            .boxed()
    }
}

impl Docker {
    /// A task volume is made with the task's labels (so that it goes
    /// with the task); a shared one is found by name, or made if
    /// `autoprovision` says so, labelled with the cluster only.
    async fn ensure_volume(
        &self,
        task: &TaskResources,
        volume: &super::VolumeConfig,
    ) -> Result<(), RuntimeError> {
        let unready = |message: String| RuntimeError::Container {
            kind: "ResourceInitializationError",
            message,
        };
        let mut labels = volume.labels.clone();
        if volume.shared {
            match self.client.inspect_volume(&volume.name).await {
                Ok(_) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) if volume.autoprovision => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    return Err(unready(format!(
                        "shared volume {} does not exist on this host and autoprovision is false",
                        volume.name
                    )));
                }
                Err(e) => return Err(Self::other(e)),
            }
            labels.extend(
                task.labels
                    .iter()
                    .filter(|(k, _)| *k == labels::CLUSTER_UID)
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        } else {
            labels.extend(task.labels.clone());
        }
        let options = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            driver: volume.driver.clone(),
            driver_opts: Some(volume.driver_opts.clone().into_iter().collect()),
            labels: Some(labels.into_iter().collect()),
            ..VolumeCreateRequest::default()
        };
        self.client
            .create_volume(options)
            .await
            .map(drop)
            .map_err(|e| unready(format!("volume {}: {e}", volume.name)))
    }

    /// The names of the volumes with this `key=value` label.
    async fn volumes_labelled(&self, label: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .client
            .list_volumes(Some(options))
            .await
            .map_err(Self::other)?;
        Ok(listed
            .volumes
            .into_iter()
            .flatten()
            .map(|v| v.name)
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(Self::other(e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Observed, RuntimeError> {
        let inspected = self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(Self::other)?;
        let config = inspected.config.unwrap_or_default();
        let state = inspected.state.unwrap_or_default();
        let status = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => State::Created,
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => State::Running,
            _ => State::Exited,
        };
        let health = state.health.and_then(|h| match h.status? {
            HealthStatusEnum::HEALTHY => Some(HealthStatus::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(HealthStatus::Unhealthy),
            HealthStatusEnum::STARTING => Some(HealthStatus::Unknown),
            HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
        });
        let mut network_bindings = Vec::new();
        let host_network = inspected
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        if host_network {
            for key in config.exposed_ports.iter().flatten() {
                if let Some((port, protocol)) = parse_port_key(key) {
                    network_bindings.push(NetworkBinding {
                        bind_ip: "0.0.0.0".to_owned(),
                        container_port: port,
                        host_port: port,
                        protocol,
                    });
                }
            }
        } else if let Some(ports) = inspected.network_settings.and_then(|n| n.ports) {
            for (key, bindings) in ports {
                let Some((container_port, protocol)) = parse_port_key(&key) else {
                    continue;
                };
                for binding in bindings.into_iter().flatten() {
                    let Some(host_port) = binding.host_port.and_then(|p| p.parse().ok()) else {
                        continue;
                    };
                    network_bindings.push(NetworkBinding {
                        bind_ip: binding.host_ip.unwrap_or_default(),
                        container_port,
                        host_port,
                        protocol,
                    });
                }
            }
        }
        network_bindings.sort_by_key(|b| (b.container_port, b.protocol, b.host_port));
        Ok(Observed {
            id: inspected.id.unwrap_or_else(|| id.to_owned()),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            image: config.image.unwrap_or_default(),
            state: status,
            exit_code: state.exit_code,
            health,
            oom_killed: state.oom_killed.unwrap_or(false),
            // Docker says 0001-01-01 for never.
            started_at: state
                .started_at
                .and_then(|at| at.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .filter(|at| at.as_second() > 0),
            error: state.error,
            network_bindings,
        })
    }
}

fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/')?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}
