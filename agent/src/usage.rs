//! What the tasks use: every `--stats-interval-seconds`, each RUNNING
//! task's running containers are measured ([`Runtime::stats`]), their CPU
//! rate worked out from the previous measure (or, the first time, from
//! the container's start), and the sum written to the Task's
//! `status.usage` when it changed — at most one write per task per
//! interval, so usage costs the API server no more than that — and to
//! the agent's Prometheus metrics. Auto scaling reads `status.usage`
//! (controller/src/autoscaling).

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use crds::v1alpha1::{DesiredStatus, Task, TaskLastStatus, TaskUsage};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::json;

use crate::{
    runtime::{Runtime, State},
    supervisor::Context,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub namespace: String,
    pub task: String,
    pub group: String,
    pub instance: String,
}

/// The agent's Prometheus metrics: each running task's use.
#[derive(Debug)]
pub struct Metrics {
    pub cpu: Family<TaskLabels, Gauge>,
    pub memory: Family<TaskLabels, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let cpu = Family::<TaskLabels, Gauge>::default();
        let memory = Family::<TaskLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("gantry");
        registry.register(
            "task_cpu_units",
            "CPU units (1024 per core) a running task uses, as last measured",
            cpu.clone(),
        );
        registry.register(
            "task_memory_mib",
            "MiB of memory a running task uses, as last measured",
            memory.clone(),
        );
        Self {
            cpu,
            memory,
            registry,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The previous measure of each container: CPU time and when.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<String, (u64, Instant)>,
    /// The label sets published last time, to take down those of tasks
    /// that no longer run.
    published: HashSet<TaskLabels>,
}

impl Sampler {
    /// Measure every running task once, and record what changed.
    pub async fn sample<R: Runtime>(&mut self, context: &Context<R>) {
        let mut seen = HashSet::new();
        let mut published = HashSet::new();
        for task in context.shared.tasks() {
            if !running(&task) {
                continue;
            }
            let Some(usage) = self.measure(context, &task, &mut seen).await else {
                continue;
            };
            let labels = TaskLabels {
                namespace: task.namespace().unwrap_or_default(),
                task: task.name_any(),
                group: task.spec.group.clone().unwrap_or_default(),
                instance: context.config.name.clone(),
            };
            if let Some(metrics) = &context.config.metrics {
                metrics.cpu.get_or_create(&labels).set(usage.cpu.into());
                metrics
                    .memory
                    .get_or_create(&labels)
                    .set(usage.memory.into());
            }
            published.insert(labels);
            let recorded = task.status.as_ref().and_then(|s| s.usage.as_ref());
            if recorded.is_none_or(|r| (r.cpu, r.memory) != (usage.cpu, usage.memory)) {
                write(context, &task, &usage).await;
            }
        }
        self.previous.retain(|id, _| seen.contains(id));
        if let Some(metrics) = &context.config.metrics {
            for gone in self.published.difference(&published) {
                metrics.cpu.remove(gone);
                metrics.memory.remove(gone);
            }
        }
        self.published = published;
    }

    /// The task's use now, summed over its running containers; `None`
    /// when none could be measured.
    async fn measure<R: Runtime>(
        &mut self,
        context: &Context<R>,
        task: &Task,
        seen: &mut HashSet<String>,
    ) -> Option<TaskUsage> {
        let uid = task.uid()?;
        let containers = context
            .runtime
            .list(&context.config.name, Some(&uid))
            .await
            .map_err(|e| tracing::debug!(task = %task.name_any(), error = %e, "listing for stats"))
            .ok()?;
        let (mut cpu, mut memory, mut measured) = (0.0, 0_u64, false);
        for container in containers.iter().filter(|c| c.state == State::Running) {
            let Ok(stats) = context.runtime.stats(&container.id).await else {
                continue;
            };
            let now = Instant::now();
            let (before, then) = self
                .previous
                .get(&container.id)
                .copied()
                .unwrap_or_else(|| {
                    // First measure: the average since it started.
                    let running_for = container
                        .started_at
                        .map(|at| Timestamp::now().duration_since(at))
                        .and_then(|d| std::time::Duration::try_from(d).ok())
                        .unwrap_or_default();
                    (0, now.checked_sub(running_for).unwrap_or(now))
                });
            let elapsed = now.duration_since(then).as_secs_f64();
            if elapsed > 0.0 {
                #[allow(clippy::cast_precision_loss)] // nanoseconds of CPU time
                let used = stats.cpu_nanos.saturating_sub(before) as f64;
                cpu += used / 1e9 / elapsed * 1024.0;
            }
            memory += stats.memory_bytes;
            measured = true;
            seen.insert(container.id.clone());
            self.previous
                .insert(container.id.clone(), (stats.cpu_nanos, now));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rounded, ≥ 0
        let cpu = cpu.round().clamp(0.0, f64::from(u32::MAX)) as u32;
        measured.then(|| TaskUsage {
            cpu,
            memory: u32::try_from(memory.div_ceil(1024 * 1024)).unwrap_or(u32::MAX),
            sampled_at: Time(Timestamp::now()),
        })
    }
}

fn running(task: &Task) -> bool {
    task.spec.desired_status == DesiredStatus::Running
        && task
            .status
            .as_ref()
            .is_some_and(|s| s.last_status == Some(TaskLastStatus::Running))
}

async fn write<R: Runtime>(context: &Context<R>, task: &Task, usage: &TaskUsage) {
    let api: Api<Task> = Api::namespaced(
        context.client.clone(),
        &task.namespace().unwrap_or_default(),
    );
    let patch = json!({"status": {"usage": usage}});
    if let Err(e) = api
        .patch_status(
            &task.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(task = %task.name_any(), error = %e, "writing usage failed");
    }
}
