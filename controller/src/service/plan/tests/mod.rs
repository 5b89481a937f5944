//! Unit tests of the service plan, one file per step, on tasks and
//! services built here (no API server: the plan is pure).

mod classify;
mod complete;
mod deployments;
mod desired;
mod plan;
mod rebalance;
mod replace;
mod scale_in;
mod starts;
mod status;
mod targets;

use std::collections::BTreeMap;

use crds::v1alpha1::{
    Deployment, HealthStatus, RolloutState, Service, StopCode, Task, TaskDefinitionSpec,
    TaskLastStatus,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use serde_json::json;

use super::facts::Facts;
use crate::placement::InstanceSpec;

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("a time")
}

pub fn definition(health_checked: bool) -> TaskDefinitionSpec {
    let mut container = json!({"name": "web", "image": "web:1", "memory": 64});
    if health_checked {
        container["healthCheck"] = json!({"command": ["CMD", "true"]});
    }
    serde_json::from_value(json!({"containerDefinitions": [container]})).expect("a definition")
}

/// A Service `web` of task definition `web`.
pub fn service(spec: serde_json::Value) -> Service {
    let mut spec = spec;
    spec["taskDefinition"] = json!("web");
    let mut service = Service::new("web", serde_json::from_value(spec).expect("a service spec"));
    service.metadata.generation = Some(1);
    service
}

/// A PENDING task of revision `revision`, created at second `created`.
pub fn task(name: &str, revision: i64, created: i64) -> Task {
    let mut task = Task::new(
        name,
        serde_json::from_value(
            json!({"taskDefinition": "web", "taskDefinitionRevision": revision}),
        )
        .expect("a task spec"),
    );
    task.metadata.creation_timestamp = Some(Time(at(created)));
    task.spec.definition = Some(definition(false));
    task
}

/// The task bound to `instance`, RUNNING since `started`.
pub fn running(mut task: Task, instance: &str, started: i64) -> Task {
    task.spec.container_instance = Some(instance.to_owned());
    let status = task.status.get_or_insert_default();
    status.last_status = Some(TaskLastStatus::Running);
    status.started_at = Some(Time(at(started)));
    task
}

pub fn health(mut task: Task, health: HealthStatus) -> Task {
    task.status.get_or_insert_default().health_status = Some(health);
    task
}

/// The task STOPPED at `stopped` with `code` and `reason`; an essential
/// container's exit code if given.
pub fn stopped(
    mut task: Task,
    code: StopCode,
    reason: &str,
    stopped: i64,
    exit: Option<i32>,
) -> Task {
    let status = task.status.get_or_insert_default();
    status.last_status = Some(TaskLastStatus::Stopped);
    status.stop_code = Some(code);
    status.stopped_reason = Some(reason.to_owned());
    status.stopped_at = Some(Time(at(stopped)));
    if let Some(exit) = exit {
        status.containers = vec![
            serde_json::from_value(
                json!({"name": "web", "lastStatus": "STOPPED", "exitCode": exit}),
            )
            .expect("a container status"),
        ];
    }
    task
}

/// The task with the `Scheduled=False` condition its scheduler writes.
pub fn unplaced(mut task: Task, why: &str) -> Task {
    task.status
        .get_or_insert_default()
        .conditions
        .push(condition("Scheduled", "False", why));
    task
}

pub fn condition(type_: &str, status: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: "Test".to_owned(),
        message: message.to_owned(),
        observed_generation: None,
        last_transition_time: Time(at(0)),
    }
}

/// Tasks or instances as the plan takes them, shared.
pub fn shared<T: Clone>(items: &[T]) -> Vec<std::sync::Arc<T>> {
    items.iter().cloned().map(std::sync::Arc::new).collect()
}

pub fn facts(tasks: &[Task], health_checked: bool) -> Vec<Facts<'_>> {
    tasks.iter().map(|t| Facts::of(t, health_checked)).collect()
}

/// Deployment `ecs-svc/<serial>` of `web:<revision>`.
pub fn deployment(serial: u32, revision: i64, state: RolloutState) -> Deployment {
    Deployment {
        id: super::deployment_id(serial),
        status: crds::v1alpha1::DeploymentStatus::Primary,
        task_definition: "web".to_owned(),
        task_definition_revision: revision,
        desired_count: 0,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        rollout_state: state,
        rollout_state_reason: None,
        created_at: None,
        updated_at: None,
    }
}

/// An ACTIVE, connected instance with `attributes`.
pub fn instance(name: &str, attributes: &[(&str, &str)]) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        cpu: 1024,
        memory: 1024,
        reserved_ports: Vec::new(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        draining: false,
        connected: true,
        agent_version: None,
        registered_at: None,
        reported_remaining: None,
        awaiting_daemons: false,
    }
}

/// Each deployment's id and status, newest first.
pub fn ids(deployments: &[Deployment]) -> Vec<(&str, crds::v1alpha1::DeploymentStatus)> {
    deployments
        .iter()
        .map(|d| (d.id.as_str(), d.status))
        .collect()
}

pub fn names<'a>(facts: impl IntoIterator<Item = &'a Facts<'a>>) -> Vec<String> {
    facts.into_iter().map(Facts::name).collect()
}
