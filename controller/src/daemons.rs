//! Daemons first (docs/controller.md, "Daemons first"): an instance that
//! joins, comes back or stops draining takes its DAEMON services' tasks
//! before any other, and a daemon that does not fit may make room.
//!
//! - The instance reconciler lists in `status.awaitingDaemons`, in the
//!   same write that makes the instance schedulable, the DAEMON services
//!   whose task it should run and does not ([`owed`], [`awaiting`]).
//!   Schedulers place only pinned tasks on such an instance
//!   (controller/src/placement), and a service leaves the list in the
//!   write that reserves its task there (controller/src/scheduler/bind.rs).
//! - A DAEMON service with `preemptReplicaTasks` whose task the scheduler
//!   could not place on an instance for want of room lists itself there
//!   too (so that the room it makes is not taken back), then stops the
//!   smallest REPLICA tasks that make room, as far as each one's service
//!   may lose a task under its minimumHealthyPercent ([`choose`]).

use std::collections::{BTreeMap, BTreeSet};

use crds::{
    conditions::{self, ConditionType},
    labels, stop,
    v1alpha1::{
        ContainerInstance, DesiredStatus, Reference, SchedulingStrategy, Service, StopCode, Task,
        TaskDefinition, TaskLastStatus,
    },
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    Context, convert,
    events::Note,
    placement::{InstanceSpec, Query},
};

/// What the instance reconciler knows of one DAEMON service.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub service: String,
    /// The service's and its task definition's `memberOf` expressions.
    pub constraints: Vec<Query>,
    /// CPU units and MiB its task reserves.
    pub size: (u32, u32),
}

/// The DAEMON services `instance` should run a task of and does not:
/// those whose constraints it meets, that would fit on it empty, and of
/// which `running` (the services with a live task there) has none.
#[must_use]
pub fn owed(
    instance: &InstanceSpec,
    daemons: &[Daemon],
    running: &BTreeSet<String>,
) -> Vec<String> {
    daemons
        .iter()
        .filter(|d| !running.contains(&d.service))
        .filter(|d| d.size.0 <= instance.cpu && d.size.1 <= instance.memory)
        .filter(|d| d.constraints.iter().all(|q| q.matches(instance)))
        .map(|d| d.service.clone())
        .collect()
}

/// The new `awaitingDaemons`: what is owed, when the instance has just
/// become schedulable; otherwise what it awaited that is still owed (a
/// service deleted, no longer eligible, or running there leaves it).
#[must_use]
pub fn awaiting(previous: &[String], became_schedulable: bool, owed: &[String]) -> Vec<String> {
    let mut list: Vec<String> = previous
        .iter()
        .filter(|s| owed.contains(s))
        .cloned()
        .collect();
    if became_schedulable {
        for service in owed {
            if !list.contains(service) {
                list.push(service.clone());
            }
        }
    }
    list
}

/// A task that could make room for a daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub task: String,
    pub service: String,
    pub cpu: u32,
    pub memory: u32,
}

/// The smallest candidates whose stopping frees `short` (CPU units, MiB),
/// taking from each service no more tasks than `may_lose` allows; `None`
/// when even all it allows would not do.
#[must_use]
pub fn choose(
    short: (u32, u32),
    candidates: &[Candidate],
    may_lose: &BTreeMap<String, u32>,
) -> Option<Vec<Candidate>> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by_key(|c| (u64::from(c.cpu) + u64::from(c.memory), c.task.clone()));
    let mut left = may_lose.clone();
    let (mut cpu, mut memory) = (0_u32, 0_u32);
    let mut chosen = Vec::new();
    for candidate in sorted {
        if cpu >= short.0 && memory >= short.1 {
            break;
        }
        // Only a task that frees what is still short is worth stopping.
        let helps =
            (cpu < short.0 && candidate.cpu > 0) || (memory < short.1 && candidate.memory > 0);
        let Some(allowed) = left.get_mut(&candidate.service).filter(|n| **n > 0) else {
            continue;
        };
        if !helps {
            continue;
        }
        *allowed -= 1;
        cpu = cpu.saturating_add(candidate.cpu);
        memory = memory.saturating_add(candidate.memory);
        chosen.push(candidate.clone());
    }
    (cpu >= short.0 && memory >= short.1).then_some(chosen)
}

/// How many RUNNING tasks a REPLICA service may lose now: those above
/// `ceil(desiredCount × minimumHealthyPercent / 100)`, counting only
/// those not already being stopped.
#[must_use]
pub fn may_lose(service: &Service, tasks: &[Task]) -> u32 {
    let desired = service.spec.desired();
    let (min_healthy, _) = service
        .spec
        .deployment_configuration
        .bounds(SchedulingStrategy::Replica);
    let floor = (i64::from(desired) * i64::from(min_healthy) + 99) / 100;
    let running = tasks
        .iter()
        .filter(|t| {
            t.spec.desired_status == DesiredStatus::Running
                && t.status.as_ref().and_then(|s| s.last_status) == Some(TaskLastStatus::Running)
        })
        .count();
    let spare = i64::try_from(running).unwrap_or(i64::MAX) - floor;
    u32::try_from(spare.max(0)).unwrap_or(u32::MAX)
}

/// The DAEMON services of a namespace, with their task definitions'
/// constraints and sizes.
///
/// # Errors
/// Listing Services or TaskDefinitions.
pub async fn daemons(context: &Context, namespace: &str) -> Result<Vec<Daemon>, kube::Error> {
    let services: Api<Service> = Api::namespaced(context.client.clone(), namespace);
    let definitions: Api<TaskDefinition> = Api::namespaced(context.client.clone(), namespace);
    let definitions: BTreeMap<String, TaskDefinition> = definitions
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|td| (td.name_any(), td))
        .collect();
    Ok(services
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| {
            s.spec.scheduling_strategy == SchedulingStrategy::Daemon
                && s.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|s| {
            let family = Reference::parse(&s.spec.task_definition).family;
            let td = definitions.get(family)?;
            let constraints = s
                .spec
                .placement_constraints
                .iter()
                .chain(&td.spec.placement_constraints)
                .filter_map(|c| c.expression.as_deref())
                .filter_map(|e| Query::parse(e).ok())
                .collect();
            Some(Daemon {
                service: s.name_any(),
                constraints,
                size: convert::resources(&td.spec),
            })
        })
        .collect())
}

/// The services with a live (RUNNING desired, not STOPPED) task bound to
/// `instance`, and those tasks.
///
/// # Errors
/// Listing the tasks.
pub async fn bound_to(
    context: &Context,
    namespace: &str,
    instance: &str,
) -> Result<Vec<Task>, kube::Error> {
    let tasks: Api<Task> = Api::namespaced(context.client.clone(), namespace);
    let selector = format!("{}={instance}", labels::CONTAINER_INSTANCE);
    Ok(tasks
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|t| {
            t.spec.desired_status == DesiredStatus::Running
                && t.status.as_ref().and_then(|s| s.last_status) != Some(TaskLastStatus::Stopped)
        })
        .collect())
}

/// Make room for `service`'s pending tasks that did not fit on their
/// instance, if it says `preemptReplicaTasks`.
///
/// # Errors
/// The API's, to be retried.
pub async fn preempt(
    context: &Context,
    service: &Service,
    tasks: &[std::sync::Arc<Task>],
    services: &[std::sync::Arc<Service>],
    instances: &[std::sync::Arc<ContainerInstance>],
) -> Result<(), kube::Error> {
    if service.spec.scheduling_strategy != SchedulingStrategy::Daemon
        || !service.spec.preempt_replica_tasks
    {
        return Ok(());
    }
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    for task in tasks.iter().filter(|t| unplaced(t)) {
        // Unplaced, it is bound nowhere: this is the instance it is pinned to.
        let Some(instance) = crate::service::plan::facts::instance(task) else {
            continue;
        };
        let Some(ci) = instances
            .iter()
            .find(|ci| ci.namespace().as_deref() == Some(&namespace) && ci.name_any() == instance)
        else {
            continue;
        };
        let Some(definition) = &task.spec.definition else {
            continue;
        };
        let need = convert::resources(definition);
        let here = bound_to(context, &namespace, instance).await?;
        let short = shortfall(ci, need, &here);
        if short == (0, 0) {
            continue;
        }
        let mut candidates = Vec::new();
        let mut allowance = BTreeMap::new();
        let now = Timestamp::now();
        for t in &here {
            let Some(owner) = t.labels().get(labels::SERVICE) else {
                continue;
            };
            let Some(other) = services.iter().find(|s| {
                s.namespace().as_deref() == Some(&namespace)
                    && &s.name_any() == owner
                    && s.spec.scheduling_strategy == SchedulingStrategy::Replica
            }) else {
                continue;
            };
            if t.protected_until(now).is_some() {
                continue;
            }
            let Some((cpu, memory)) = allocated(ci, t) else {
                continue;
            };
            if !allowance.contains_key(owner) {
                let siblings = Api::<Task>::namespaced(context.client.clone(), &namespace)
                    .list(&ListParams::default().labels(&format!("{}={owner}", labels::SERVICE)))
                    .await?
                    .items;
                allowance.insert(owner.clone(), may_lose(other, &siblings));
            }
            candidates.push(Candidate {
                task: t.name_any(),
                service: owner.clone(),
                cpu,
                memory,
            });
        }
        let Some(victims) = choose(short, &candidates, &allowance) else {
            let note = Note::warning(
                "PreemptionBlocked",
                format!(
                    "the task of daemon service {name} does not fit on container instance {instance} ({} CPU units and {} MiB short), and stopping the replica tasks there that their services' minimumHealthyPercent allows would not make room",
                    short.0, short.1
                ),
            );
            context.events.publish(service, &note).await;
            continue;
        };
        hold_for(context, ci, &name).await?;
        let api: Api<Task> = Api::namespaced(context.client.clone(), &namespace);
        let reason = format!(
            "Preempted to make room for the task of daemon service {name} (preemptReplicaTasks)"
        );
        for victim in &victims {
            let Some(task) = here.iter().find(|t| t.name_any() == victim.task) else {
                continue;
            };
            // Behind a load balancer a task is deregistered first, and its
            // own service lets it stop once drained (docs/balancer.md).
            let balanced = services.iter().any(|s| {
                s.namespace().as_deref() == Some(&namespace)
                    && s.name_any() == victim.service
                    && !s.spec.load_balancers.is_empty()
            });
            let running =
                task.status.as_ref().and_then(|s| s.last_status) == Some(TaskLastStatus::Running);
            let patches = if balanced && running {
                stop::deactivating(
                    StopCode::ServiceSchedulerInitiated,
                    &reason,
                    now,
                    task.resource_version().as_deref(),
                )
            } else {
                stop::patches(
                    &task.status.clone().unwrap_or_default(),
                    StopCode::ServiceSchedulerInitiated,
                    &reason,
                    None,
                )
            };
            crate::task::write_stop(&api, &victim.task, &patches).await?;
        }
        let names: Vec<&str> = victims.iter().map(|v| v.task.as_str()).collect();
        let note = Note::normal(
            "PreemptedReplicaTasks",
            format!(
                "stopped {} to make room on container instance {instance} for the task of daemon service {name}",
                names.join(", ")
            ),
        );
        context.events.publish(service, &note).await;
    }
    Ok(())
}

/// A task of this service that a scheduler tried and could not place.
fn unplaced(task: &Task) -> bool {
    let conditions = task
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    task.placed_on().is_none()
        && task.spec.desired_status == DesiredStatus::Running
        && conditions::is_false(conditions, ConditionType::Scheduled)
}

/// What `task` has reserved on `ci`.
fn allocated(ci: &ContainerInstance, task: &Task) -> Option<(u32, u32)> {
    let uid = task.uid()?;
    ci.status
        .as_ref()?
        .allocations
        .iter()
        .find(|a| a.task_uid == uid)
        .map(|a| (a.cpu, a.memory))
}

/// How much CPU and memory `need` lacks on `ci` once only the live tasks
/// of `here` hold room: what stopping tasks hold, or an allocation the
/// collector has yet to release, is coming free and is not made twice.
fn shortfall(ci: &ContainerInstance, need: (u32, u32), here: &[Task]) -> (u32, u32) {
    let registered = &ci.spec.registered_resources;
    let (mut cpu, mut memory) = (0_u32, 0_u32);
    for t in here {
        if let Some((c, m)) = allocated(ci, t) {
            cpu = cpu.saturating_add(c);
            memory = memory.saturating_add(m);
        }
    }
    (
        need.0.saturating_sub(registered.cpu.saturating_sub(cpu)),
        need.1
            .saturating_sub(registered.memory.saturating_sub(memory)),
    )
}

/// List `service` in the instance's `awaitingDaemons` before room is made
/// there, on the version read (a 409 is retried by the reconcile).
async fn hold_for(
    context: &Context,
    ci: &ContainerInstance,
    service: &str,
) -> Result<(), kube::Error> {
    let api: Api<ContainerInstance> =
        Api::namespaced(context.client.clone(), &ci.namespace().unwrap_or_default());
    let name = ci.name_any();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Read as it is: schedulers write it often.
        let Some(ci) = api.get_opt(&name).await? else {
            return Ok(());
        };
        let mut awaiting = ci
            .status
            .as_ref()
            .map(|s| s.awaiting_daemons.clone())
            .unwrap_or_default();
        if awaiting.iter().any(|s| s == service) {
            return Ok(());
        }
        awaiting.push(service.to_owned());
        let patch = json!({
            "metadata": {"resourceVersion": ci.resource_version()},
            "status": {"awaitingDaemons": awaiting},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(name: &str, zone: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.to_owned(),
            cpu: 1024,
            memory: 1024,
            reserved_ports: Vec::new(),
            attributes: BTreeMap::from([("ecs.availability-zone".to_owned(), zone.to_owned())]),
            draining: false,
            connected: true,
            awaiting_daemons: false,
            agent_version: None,
            registered_at: None,
            reported_remaining: None,
        }
    }

    fn daemon(service: &str, expression: Option<&str>, size: (u32, u32)) -> Daemon {
        Daemon {
            service: service.to_owned(),
            constraints: expression
                .map(|e| vec![Query::parse(e).expect("a query")])
                .unwrap_or_default(),
            size,
        }
    }

    #[test]
    fn an_instance_owes_the_daemons_it_qualifies_for_fits_and_lacks() {
        let daemons = [
            daemon("logs", None, (128, 128)),
            daemon("metrics", None, (128, 128)),
            daemon(
                "zonal",
                Some("attribute:ecs.availability-zone == az-b"),
                (1, 1),
            ),
            daemon("huge", None, (2048, 128)),
        ];
        let running = BTreeSet::from(["metrics".to_owned()]);
        assert_eq!(
            owed(&instance("a", "az-a"), &daemons, &running),
            ["logs"],
            "metrics runs there, zonal is for az-b, huge never fits"
        );
        assert_eq!(
            owed(&instance("b", "az-b"), &daemons, &BTreeSet::new()),
            ["logs", "metrics", "zonal"]
        );
    }

    #[test]
    fn the_list_grows_only_when_the_instance_becomes_schedulable_and_shrinks_as_owed_goes() {
        let owed = ["logs".to_owned(), "metrics".to_owned()];
        assert_eq!(awaiting(&[], true, &owed), owed);
        assert!(
            awaiting(&[], false, &owed).is_empty(),
            "no transition, no hold"
        );
        let previous = ["metrics".to_owned(), "gone".to_owned()];
        assert_eq!(awaiting(&previous, false, &owed), ["metrics"]);
        assert_eq!(awaiting(&previous, true, &owed), ["metrics", "logs"]);
    }

    fn candidate(task: &str, service: &str, cpu: u32, memory: u32) -> Candidate {
        Candidate {
            task: task.to_owned(),
            service: service.to_owned(),
            cpu,
            memory,
        }
    }

    #[test]
    fn the_smallest_tasks_that_make_room_are_chosen_within_each_services_allowance() {
        let candidates = [
            candidate("web-1", "web", 256, 256),
            candidate("web-2", "web", 256, 256),
            candidate("api-1", "api", 128, 128),
            candidate("batch-1", "batch", 512, 512),
        ];
        let allow = |web, api, batch| {
            BTreeMap::from([
                ("web".to_owned(), web),
                ("api".to_owned(), api),
                ("batch".to_owned(), batch),
            ])
        };
        let names = |chosen: Option<Vec<Candidate>>| {
            chosen.map(|c| c.into_iter().map(|c| c.task).collect::<Vec<_>>())
        };
        // 300 units short: api-1 (128) then web-1 (256).
        assert_eq!(
            names(choose((300, 0), &candidates, &allow(2, 1, 1))),
            Some(vec!["api-1".to_owned(), "web-1".to_owned()])
        );
        // api may lose none: two of web.
        assert_eq!(
            names(choose((300, 0), &candidates, &allow(2, 0, 1))),
            Some(vec!["web-1".to_owned(), "web-2".to_owned()])
        );
        // web may lose one, api none: web-1 and batch-1.
        assert_eq!(
            names(choose((600, 0), &candidates, &allow(1, 0, 1))),
            Some(vec!["web-1".to_owned(), "batch-1".to_owned()])
        );
        assert_eq!(names(choose((300, 0), &candidates, &allow(0, 1, 0))), None);
        assert_eq!(
            names(choose((0, 0), &candidates, &allow(2, 1, 1))),
            Some(vec![])
        );
    }

    fn task(name: &str, desired: &str, last: &str) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"taskDefinition": "web", "desiredStatus": desired},
            "status": {"lastStatus": last},
        }))
        .expect("a task")
    }

    #[test]
    fn a_service_may_lose_its_running_tasks_above_its_minimum_healthy() {
        let service = |desired: i32, min_healthy: Option<i32>| -> Service {
            let mut config = json!({});
            if let Some(m) = min_healthy {
                config["minimumHealthyPercent"] = json!(m);
            }
            serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"taskDefinition": "web", "desiredCount": desired,
                    "deploymentConfiguration": config},
            }))
            .expect("a service")
        };
        let four = [
            task("a", "RUNNING", "RUNNING"),
            task("b", "RUNNING", "RUNNING"),
            task("c", "RUNNING", "RUNNING"),
            task("d", "RUNNING", "RUNNING"),
            task("e", "RUNNING", "PENDING"),
        ];
        assert_eq!(may_lose(&service(4, None), &four), 0, "ECS's default 100%");
        assert_eq!(may_lose(&service(4, Some(50)), &four), 2);
        // ceil(5 × 50%) = 3 of 4 running.
        assert_eq!(may_lose(&service(5, Some(50)), &four), 1);
        // One already being stopped leaves three: one more may go.
        let mut stopping = four.to_vec();
        stopping[0].spec.desired_status = DesiredStatus::Stopped;
        assert_eq!(may_lose(&service(4, Some(50)), &stopping), 1);
    }
}
