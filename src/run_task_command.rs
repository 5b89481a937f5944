//! `gantry run-task`: start tasks of a task definition as `aws ecs
//! run-task` does: 1 to 10 in one call, sharing a group, a `startedBy` and
//! overrides. Each is a Task object the scheduler places (random by
//! default, as run-task).

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::Args;
use crds::v1alpha1::{Reference, Task};
use gantry::manifests::Catalog;
use kube::{Api, ResourceExt, api::PostParams};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RunTaskArgs {
    /// The TaskDefinition (family) to run.
    #[arg(value_name = "TASK_DEFINITION")]
    task_definition: String,
    /// The cluster: its namespace.
    #[arg(long, value_name = "NAME", default_value = "default")]
    cluster: String,
    /// How many tasks to start, 1 to 10 (ECS's limit per call).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    count: u8,
    /// Their task group [default: family:TASK_DEFINITION].
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Who started them (up to 128 characters), as ECS's startedBy.
    #[arg(long, value_name = "TEXT")]
    started_by: Option<String>,
    /// Let `gantry exec` run commands in them (ECS Exec).
    #[arg(long)]
    enable_execute_command: bool,
    /// Overrides as JSON, run-task's shape:
    /// '{"cpu": 512, "memory": 1024, "containerOverrides": [{"name": "app",
    /// "command": [...], "entryPoint": [...], "environment": [{"name": "K",
    /// "value": "V"}], "cpu": 256, "memory": 512, "memoryReservation": 128}]}'.
    #[arg(long, value_name = "JSON")]
    overrides: Option<String>,
    /// The control plane's kubeconfig [default: $KUBECONFIG or
    /// ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

impl RunTaskArgs {
    /// The Task each call creates (named by the server, `FAMILY-xxxxx`).
    ///
    /// # Errors
    /// Overrides that are not JSON.
    fn task(&self) -> anyhow::Result<Value> {
        let mut spec = json!({"taskDefinition": self.task_definition});
        if let Some(group) = &self.group {
            spec["group"] = json!(group);
        }
        if self.enable_execute_command {
            spec["enableExecuteCommand"] = json!(true);
        }
        if let Some(started_by) = &self.started_by {
            spec["startedBy"] = json!(started_by);
        }
        if let Some(overrides) = &self.overrides {
            let parsed: Value =
                serde_json::from_str(overrides).context("--overrides is not JSON")?;
            spec["overrides"] = parsed;
        }
        Ok(json!({
            "apiVersion": "gantry.dev/v1alpha1",
            "kind": "Task",
            "metadata": {
                "generateName": format!("{}-", Reference::parse(&self.task_definition).family),
                "namespace": self.cluster,
            },
            "spec": spec,
        }))
    }
}

pub fn run(args: &RunTaskArgs) -> anyhow::Result<ExitCode> {
    let object = args.task()?;
    // Refused here, whole, before any task starts: a field of the schema's
    // or one it does not declare (a typo in --overrides is not dropped).
    Catalog::gantry()?.validate_strictly(0, &object)?;
    let task: Task = serde_json::from_value(object).context("the task to create")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = super::client(args.kubeconfig.as_ref()).await?;
        let tasks: Api<Task> = Api::namespaced(client, &args.cluster);
        let mut out = io::stdout().lock();
        let mut failures = Vec::new();
        for _ in 0..args.count {
            match tasks.create(&PostParams::default(), &task).await {
                Ok(created) => writeln!(out, "task.gantry.dev/{} created", created.name_any())?,
                Err(e) => failures.push(e.to_string()),
            }
        }
        // As run-task answers with its tasks and its failures.
        for failure in &failures {
            eprintln!("error: {failure}");
        }
        Ok(if failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
