//! ContainerInstances: whether their agent is connected, what happens when
//! it is gone for good, and draining.
//!
//! The agent renews a Lease named after its instance; the instance object
//! itself is never touched for liveness, so schedulers' reservations do
//! not conflict with heartbeats. This reconciler turns the Lease into
//! `status.agentConnected` and the `AgentConnected` condition, and after
//! `instance_loss_timeout` without renewal stops the tasks bound there so
//! that their services replace them. A returning agent then finds them
//! STOPPED and stops their containers (the agent's fence).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use crds::{
    conditions::{self, ConditionType, Conditions},
    labels, stop,
    v1alpha1::{ContainerInstance, InstanceState, StopCode, Task, TaskLastStatus},
};
use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        predicates, reflector,
        reflector::ObjectRef,
        watcher::{self, watcher},
    },
};
use serde_json::json;

use crate::{Context, convert, daemons, events::Note, runner};

/// What the Lease says of an instance's agent, at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Renewed; good until the given time.
    Connected { until: Timestamp },
    /// Not renewed since the given time (or never, since registration).
    Disconnected { since: Timestamp },
}

/// Read the Lease of an instance.
#[must_use]
pub fn connectivity(
    instance: &ContainerInstance,
    lease: Option<&Lease>,
    now: Timestamp,
) -> Connectivity {
    let spec = lease.and_then(|l| l.spec.as_ref());
    let until = spec.and_then(|s| {
        let renewed = s.renew_time.as_ref()?.0;
        let seconds = i64::from(s.lease_duration_seconds.unwrap_or(0));
        renewed.checked_add(SignedDuration::from_secs(seconds)).ok()
    });
    match until {
        Some(until) if until > now => Connectivity::Connected { until },
        Some(until) => Connectivity::Disconnected { since: until },
        None => Connectivity::Disconnected {
            since: instance.creation_timestamp().map_or(now, |t| t.0),
        },
    }
}

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let (reader, writer) = reflector::store();
    // Only spec changes (state, attributes) and new instances: allocation
    // writes do not concern this reconciler.
    let instances = reflector::reflector(
        writer,
        watcher(
            Api::<ContainerInstance>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(instances, reader).watches(
        Api::<Lease>::all(client),
        watcher::Config::default(),
        |lease| {
            Some(
                ObjectRef::<ContainerInstance>::new(&lease.name_any())
                    .within(&lease.namespace().unwrap_or_default()),
            )
        },
    );
    let reconciler = runner::Reconciler::new("instance", &context.metrics);
    runner::run(
        controller,
        reconciler,
        context,
        shutdown,
        |ci, ctx| async move { reconcile(&ci, &ctx).await },
    )
    .await;
}

/// The conditions an instance reports, from its previous ones: whether
/// its agent is connected and whether it drains.
#[must_use]
pub fn conditions(
    ci: &ContainerInstance,
    connectivity: Connectivity,
    has_lease: bool,
    now: Timestamp,
) -> Vec<Condition> {
    let mut list = ci
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = Conditions::new(&mut list, ci.metadata.generation, now);
    match connectivity {
        Connectivity::Connected { .. } => conditions.set(
            ConditionType::AgentConnected,
            true,
            "LeaseRenewed",
            "the agent renews its Lease",
        ),
        Connectivity::Disconnected { since } => conditions.set(
            ConditionType::AgentConnected,
            false,
            if has_lease { "LeaseExpired" } else { "NoLease" },
            format!("the agent has not renewed its Lease since {since}"),
        ),
    };
    let draining = ci.spec.state == InstanceState::Draining;
    conditions.set(
        ConditionType::Draining,
        draining,
        if draining { "Draining" } else { "Active" },
        if draining {
            "no new tasks are placed here; service tasks are moved away"
        } else {
            "tasks may be placed here"
        },
    );
    list
}

/// The events a change of conditions from `before` to `after` calls for.
#[must_use]
pub fn notes(name: &str, before: &[Condition], after: &[Condition]) -> Vec<Note> {
    let mut notes = Vec::new();
    let was = conditions::find(before, ConditionType::AgentConnected).map(|c| c.status == "True");
    match (
        was,
        conditions::is_true(after, ConditionType::AgentConnected),
    ) {
        (Some(true), false) => notes.push(Note::warning(
            "AgentDisconnected",
            format!("the agent of container instance {name} stopped renewing its Lease"),
        )),
        (Some(false), true) => notes.push(Note::normal(
            "AgentConnected",
            format!("the agent of container instance {name} is connected again"),
        )),
        _ => {}
    }
    if conditions::is_true(after, ConditionType::Draining)
        && !conditions::is_true(before, ConditionType::Draining)
    {
        notes.push(Note::normal(
            "Draining",
            format!(
                "container instance {name} is DRAINING: service tasks move away within their deployment limits; standalone tasks are left alone"
            ),
        ));
    }
    notes
}

async fn reconcile(ci: &ContainerInstance, ctx: &Context) -> Result<Action, kube::Error> {
    let namespace = ci.namespace().unwrap_or_default();
    let name = ci.name_any();
    let instances: Api<ContainerInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    // The store may trail: read the instance and its Lease as they are.
    let Some(ci) = instances.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &namespace);
    let lease = leases.get_opt(&name).await?;
    let now = Timestamp::now();
    let connectivity = connectivity(&ci, lease.as_ref(), now);
    let status = ci.status.clone().unwrap_or_default();
    let connected = matches!(connectivity, Connectivity::Connected { .. });
    let conditions = conditions(&ci, connectivity, lease.is_some(), now);
    // Daemons first: an instance that becomes schedulable in this write
    // lists the daemons it awaits in it, before any scheduler sees it
    // schedulable (controller/src/daemons.rs).
    let draining = ci.spec.state == InstanceState::Draining;
    let became_schedulable = connected
        && !draining
        && (!status.agent_connected
            || conditions::is_true(&status.conditions, ConditionType::Draining));
    let previous = &status.awaiting_daemons;
    let awaiting = if became_schedulable || !previous.is_empty() {
        let known = daemons::daemons(ctx, &namespace).await?;
        let running: BTreeSet<String> = daemons::bound_to(ctx, &namespace, &name)
            .await?
            .iter()
            .filter_map(|t| t.labels().get(labels::SERVICE).cloned())
            .collect();
        let owed = daemons::owed(&convert::instance_spec(&ci), &known, &running);
        daemons::awaiting(previous, became_schedulable, &owed)
    } else {
        previous.clone()
    };
    if conditions != status.conditions
        || status.agent_connected != connected
        || status.observed_generation != ci.metadata.generation
        || awaiting != *previous
    {
        let mut patch = json!({"status": {
            "agentConnected": connected,
            "conditions": conditions,
            "observedGeneration": ci.metadata.generation,
        }});
        if awaiting != *previous {
            // On the version read: a scheduler may have just taken a
            // service off the list.
            patch["status"]["awaitingDaemons"] = json!(awaiting);
            patch["metadata"] = json!({"resourceVersion": ci.resource_version()});
        }
        instances
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for note in notes(&name, &status.conditions, &conditions) {
        ctx.events.publish(&ci, &note).await;
    }
    if became_schedulable && !awaiting.is_empty() {
        let note = Note::normal(
            "AwaitingDaemons",
            format!(
                "container instance {name} takes the tasks of daemon services {} before any other",
                awaiting.join(", ")
            ),
        );
        ctx.events.publish(&ci, &note).await;
    }
    let loss = ctx.config.instance_loss_timeout;
    match connectivity {
        Connectivity::Connected { until } => Ok(Action::requeue(until_then(now, until))),
        Connectivity::Disconnected { since } => {
            let lost_at = since
                .checked_add(SignedDuration::try_from(loss).unwrap_or(SignedDuration::MAX))
                .unwrap_or(Timestamp::MAX);
            if lost_at > now {
                return Ok(Action::requeue(until_then(now, lost_at)));
            }
            let stopped = stop_tasks(ctx, &ci, since).await?;
            if stopped > 0 {
                ctx.events
                    .publish(
                        &ci,
                        &Note::warning(
                            "InstanceLost",
                            format!(
                                "container instance {name} lost: no Lease renewal for {}s; {stopped} task(s) stopped, services replace theirs",
                                loss.as_secs()
                            ),
                        ),
                    )
                    .await;
            }
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

fn until_then(now: Timestamp, then: Timestamp) -> Duration {
    let millis = then.as_millisecond() - now.as_millisecond();
    Duration::from_millis(u64::try_from(millis.max(0)).unwrap_or(0) + 500)
}

/// Mark the tasks of a lost instance STOPPED: no agent will report them.
async fn stop_tasks(
    ctx: &Context,
    ci: &ContainerInstance,
    since: Timestamp,
) -> Result<usize, kube::Error> {
    let name = ci.name_any();
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &ci.namespace().unwrap_or_default());
    let bound = tasks
        .list(&ListParams::default().labels(&format!("{}={name}", labels::CONTAINER_INSTANCE)))
        .await?;
    let mut stopped = 0;
    let now = Timestamp::now();
    for task in bound.items {
        let status = task.status.clone().unwrap_or_default();
        if status.last_status == Some(TaskLastStatus::Stopped) {
            continue;
        }
        let reason = stop::instance_lost(&name, since);
        let patches = stop::patches(&status, StopCode::TerminationNotice, &reason, Some(now));
        crate::task::write_stop(&tasks, &task.name_any(), &patches).await?;
        stopped += 1;
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
    };

    fn lease(renewed: i64, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("a time"))),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn the_lease_decides_connectivity() {
        let ci: ContainerInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
            "metadata": {"name": "i"}, "spec": {},
        }))
        .expect("an instance");
        let at = |s| Timestamp::from_second(s).expect("a time");
        assert_eq!(
            connectivity(&ci, Some(&lease(100, 40)), at(130)),
            Connectivity::Connected { until: at(140) }
        );
        assert_eq!(
            connectivity(&ci, Some(&lease(100, 40)), at(141)),
            Connectivity::Disconnected { since: at(140) }
        );
        assert!(matches!(
            connectivity(&ci, None, at(5)),
            Connectivity::Disconnected { .. }
        ));
    }

    #[test]
    fn conditions_follow_the_lease_and_the_state_and_changes_raise_events() {
        let mut ci: ContainerInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
            "metadata": {"name": "i", "generation": 1}, "spec": {},
        }))
        .expect("an instance");
        let at = |s| Timestamp::from_second(s).expect("a time");
        let up = Connectivity::Connected { until: at(40) };
        let down = Connectivity::Disconnected { since: at(40) };

        let first = conditions(&ci, up, true, at(10));
        assert!(conditions::is_true(&first, ConditionType::AgentConnected));
        assert!(!conditions::is_true(&first, ConditionType::Draining));
        assert!(
            notes("i", &[], &first).is_empty(),
            "nothing changed from unknown"
        );

        ci.status.get_or_insert_default().conditions = first.clone();
        let lost = conditions(&ci, down, false, at(50));
        let reason = |list: &[Condition]| {
            conditions::find(list, ConditionType::AgentConnected).map(|c| c.reason.clone())
        };
        assert_eq!(reason(&lost).as_deref(), Some("NoLease"));
        assert_eq!(
            conditions(&ci, down, true, at(50))
                .first()
                .map(|c| c.reason.as_str()),
            Some("LeaseExpired")
        );
        let said: Vec<_> = notes("i", &first, &lost).iter().map(|n| n.reason).collect();
        assert_eq!(said, ["AgentDisconnected"]);

        ci.status.get_or_insert_default().conditions = lost.clone();
        ci.spec.state = InstanceState::Draining;
        let back = conditions(&ci, up, true, at(60));
        let said: Vec<_> = notes("i", &lost, &back).iter().map(|n| n.reason).collect();
        assert_eq!(said, ["AgentConnected", "Draining"]);
        ci.status.get_or_insert_default().conditions = back.clone();
        assert!(notes("i", &back, &conditions(&ci, up, true, at(70))).is_empty());
    }
}
