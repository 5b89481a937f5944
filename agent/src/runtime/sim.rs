//! A simulated runtime: containers that exist only in memory, start after
//! a configurable latency and fail at a configurable rate, for scale tests
//! of the control plane with many instances in one process (as kwok does
//! for Kubernetes nodes). A container whose command ends in `exit N`
//! exits with N as soon as it starts.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::v1alpha1::{HealthStatus, NetworkBinding, NetworkMode};
use futures::{StreamExt, stream::BoxStream};
use rand::RngExt;
use tokio::sync::broadcast;

use super::{
    ContainerConfig, Exec, ExecOptions, Info, LogOptions, Observed, Pull, Runtime, RuntimeError,
    SimLoad, State, Stats, TaskResources, labels,
};

/// How simulated containers behave.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    /// How long a start takes.
    pub start_latency: Duration,
    /// The share of starts (0 to 1) whose container exits at once with
    /// code 1.
    pub failure_rate: f64,
    /// How many stops fail (the first ones) before stops work, as a
    /// runtime that does not answer in time.
    pub stop_failures: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            start_latency: Duration::from_millis(10),
            failure_rate: 0.0,
            stop_failures: 0,
        }
    }
}

#[derive(Debug)]
struct Container {
    config: ContainerConfig,
    observed: Observed,
    /// CPU time used so far, and when it was last added up.
    cpu_nanos: f64,
    measured_at: Option<std::time::Instant>,
}

impl Container {
    fn group(&self) -> Option<&str> {
        self.config
            .labels
            .get(labels::TASK_GROUP)
            .map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Containers {
    by_id: BTreeMap<String, Container>,
    next_id: u64,
    next_port: u16,
}

/// The simulated runtime; clones share their containers.
#[derive(Clone, Debug)]
pub struct Sim {
    options: SimOptions,
    /// Stops that are still to fail.
    stop_failures: Arc<std::sync::atomic::AtomicUsize>,
    containers: Arc<Mutex<Containers>>,
    changes: broadcast::Sender<(String, String)>,
    /// What the containers use.
    load: Arc<SimLoad>,
}

impl Sim {
    #[must_use]
    pub fn new(options: SimOptions) -> Self {
        Self {
            options,
            stop_failures: Arc::new(options.stop_failures.into()),
            containers: Arc::new(Mutex::new(Containers {
                next_port: 32768,
                ..Containers::default()
            })),
            changes: broadcast::channel(4096).0,
            load: Arc::default(),
        }
    }

    /// Containers that use a share of `load` (which every simulated
    /// instance of a process should share) rather than nothing.
    #[must_use]
    pub fn with_load(mut self, load: Arc<SimLoad>) -> Self {
        self.load = load;
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut Containers) -> T) -> T {
        f(&mut self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    fn changed(&self, observed: &Observed) {
        if let (Some(instance), Some(uid)) = (
            observed.label(labels::INSTANCE),
            observed.label(labels::TASK_UID),
        ) {
            let _ = self.changes.send((instance.to_owned(), uid.to_owned()));
        }
    }

    fn set_state(
        &self,
        id: &str,
        state: State,
        exit_code: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let observed = self.with(|c| {
            let container = c
                .by_id
                .get_mut(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
            container.observed.state = state;
            container.observed.exit_code = exit_code;
            if state == State::Running {
                container.observed.started_at = Some(k8s_openapi::jiff::Timestamp::now());
                container.measured_at = Some(std::time::Instant::now());
            }
            if let Some(group) = container.group() {
                let name = &container.config.runtime_name;
                if state == State::Running {
                    self.load.started(group, name);
                } else {
                    self.load.stopped(group, name);
                }
            }
            if container.config.health_check.is_some() {
                container.observed.health = Some(if state == State::Running {
                    HealthStatus::Healthy
                } else {
                    HealthStatus::Unknown
                });
            }
            Ok::<_, RuntimeError>(container.observed.clone())
        })?;
        self.changed(&observed);
        Ok(())
    }
}

/// The code a command ending in `exit N` (as `sh -c "exit 3"`) exits
/// with at once: how a test asks the simulation for a failing container.
fn exit_code(command: &[String]) -> Option<i64> {
    command
        .last()?
        .trim()
        .strip_prefix("exit ")?
        .trim()
        .parse()
        .ok()
}

impl Runtime for Sim {
    async fn info(&self) -> Result<Info, RuntimeError> {
        Ok(Info {
            version: "sim".to_owned(),
            memory_mib: None,
            cpus: None,
        })
    }

    /// A simulated command prints itself and exits 0; it reads nothing.
    fn exec(
        &self,
        id: &str,
        options: ExecOptions,
    ) -> BoxStream<'static, Result<Exec, RuntimeError>> {
        let known = self.with(|c| c.by_id.contains_key(id));
        let chunks = if known {
            vec![
                Ok(Exec::Output(
                    format!("simulated: {}\n", options.command.join(" ")).into_bytes(),
                )),
                Ok(Exec::Exited(0)),
            ]
        } else {
            vec![Err(RuntimeError::NotFound(id.to_owned()))]
        };
        futures::stream::iter(chunks).boxed()
    }

    /// A simulated container prints one line: the command it runs.
    fn logs(
        &self,
        id: &str,
        _options: &LogOptions,
    ) -> BoxStream<'static, Result<Vec<u8>, RuntimeError>> {
        let line = self.with(|c| {
            c.by_id
                .get(id)
                .map(|container| format!("simulated: {}\n", container.config.command.join(" ")))
        });
        let chunk = line.ok_or_else(|| RuntimeError::NotFound(id.to_owned()));
        futures::stream::once(async move { chunk.map(String::into_bytes) }).boxed()
    }

    async fn ensure_image(&self, image: &str, _pull: &Pull) -> Result<(), RuntimeError> {
        if image.contains("does-not-exist") {
            return Err(RuntimeError::CannotPull(format!(
                "pull access denied for {image}: the simulated registry has no such image"
            )));
        }
        Ok(())
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String, RuntimeError> {
        self.with(|c| {
            if c.by_id
                .values()
                .any(|other| other.config.runtime_name == config.runtime_name)
            {
                return Err(RuntimeError::Container {
                    kind: "CannotCreateContainerError",
                    message: format!("the name {} is already in use", config.runtime_name),
                });
            }
            c.next_id += 1;
            let id = format!("sim-{:012}", c.next_id);
            let mut network_bindings = Vec::new();
            for port in &config.ports {
                let host_port = match (config.network_mode, port.host_port) {
                    (NetworkMode::Host, _) => port.container_port,
                    (NetworkMode::Bridge, 0) => {
                        c.next_port = c.next_port.checked_add(1).unwrap_or(32768);
                        c.next_port
                    }
                    (NetworkMode::Bridge, fixed) => fixed,
                    // No port mappings in this mode (a TaskDefinition rule).
                    (NetworkMode::None, _) => continue,
                };
                network_bindings.push(NetworkBinding {
                    bind_ip: config.host_ip.clone(),
                    container_port: port.container_port,
                    host_port,
                    protocol: port.protocol,
                });
            }
            let observed = Observed {
                id: id.clone(),
                labels: config.labels.clone(),
                image: config.image.clone(),
                state: State::Created,
                exit_code: None,
                health: None,
                oom_killed: false,
                started_at: None,
                error: None,
                network_bindings,
            };
            c.by_id.insert(
                id.clone(),
                Container {
                    config: config.clone(),
                    observed,
                    cpu_nanos: 0.0,
                    measured_at: None,
                },
            );
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        tokio::time::sleep(self.options.start_latency).await;
        let fails = self.options.failure_rate > 0.0
            && rand::rng().random_bool(self.options.failure_rate.min(1.0));
        let exit = self.with(|c| c.by_id.get(id).and_then(|c| exit_code(&c.config.command)));
        if let Some(code) = exit {
            self.set_state(id, State::Exited, Some(code))
        } else if fails {
            self.set_state(id, State::Exited, Some(1))
        } else {
            self.set_state(id, State::Running, None)
        }
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        let failing = self.stop_failures.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |left| left.checked_sub(1),
        );
        if failing.is_ok() {
            return Err(RuntimeError::Other(format!(
                "the simulated runtime did not stop {id} in time"
            )));
        }
        let running = self.with(|c| {
            c.by_id
                .get(id)
                .map(|container| container.observed.state == State::Running)
        });
        match running {
            None => Err(RuntimeError::NotFound(id.to_owned())),
            // As a process killed by SIGTERM: 128 + 15.
            Some(true) => self.set_state(id, State::Exited, Some(143)),
            Some(false) => Ok(()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(container) = self.with(|c| c.by_id.remove(id))
            && let Some(group) = container.group()
        {
            self.load.stopped(group, &container.config.runtime_name);
        }
        Ok(())
    }

    /// A running container uses its share of its group's demand
    /// ([`SimLoad`]), added up since it was last measured.
    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        self.with(|c| {
            let container = c
                .by_id
                .get_mut(id)
                .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
            if container.observed.state != State::Running {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                return Ok(Stats {
                    cpu_nanos: container.cpu_nanos as u64,
                    memory_bytes: 0,
                });
            }
            let share = container
                .group()
                .map(|g| self.load.share(g))
                .unwrap_or_default();
            let now = std::time::Instant::now();
            let since = container.measured_at.unwrap_or(now);
            container.cpu_nanos += share.cpu / 1024.0 * now.duration_since(since).as_nanos() as f64;
            container.measured_at = Some(now);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Stats {
                cpu_nanos: container.cpu_nanos as u64,
                memory_bytes: (share.memory * 1024.0 * 1024.0) as u64,
            })
        })
    }

    // Simulated containers share nothing on a host.
    async fn prepare_task(&self, _task: &TaskResources) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }

    async fn release_task(&self, _uid: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list(
        &self,
        instance: &str,
        task_uid: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        Ok(self.with(|c| {
            c.by_id
                .values()
                .filter(|container| container.observed.label(labels::INSTANCE) == Some(instance))
                .filter(|container| {
                    task_uid
                        .is_none_or(|uid| container.observed.label(labels::TASK_UID) == Some(uid))
                })
                .map(|container| container.observed.clone())
                .collect()
        }))
    }

    fn changes(&self, instance: &str) -> BoxStream<'static, String> {
        let instance = instance.to_owned();
        tokio_stream_of(self.changes.subscribe())
            .filter_map(move |(of, uid)| {
                let mine = of == instance;
                async move { mine.then_some(uid) }
            })
            .boxed()
    }
}

/// A broadcast receiver as a stream; a lagging receiver skips ahead (the
/// agent's periodic resync covers what it missed).
fn tokio_stream_of<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(item) => return Some((item, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
