//! How many tasks a service wants: `desiredCount` for REPLICA; for DAEMON,
//! one per ACTIVE, connected instance that meets the service's and the
//! definition's constraints, and one per such instance whose agent is
//! disconnected but whose task is still there. ECS keeps a daemon's task
//! through an agent's disconnection; it goes only when the instance is
//! lost (its tasks are stopped then), drained or no longer eligible.
//! Nothing is started on a disconnected instance.

use crds::v1alpha1::{SchedulingStrategy, ServiceSpec};

use super::Definition;
use crate::placement::{InstanceSpec, Query};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub daemon: bool,
    pub count: i32,
    /// DAEMON: the instances that should each run one task.
    pub eligible: Vec<&'a str>,
    /// DAEMON: instances that would be eligible but for their agent being
    /// disconnected: a task there is kept, none is started.
    pub disconnected: Vec<&'a str>,
}

#[must_use]
pub fn desired<'a>(
    spec: &ServiceSpec,
    definition: Definition<'_>,
    instances: &'a [std::sync::Arc<InstanceSpec>],
) -> Desired<'a> {
    if spec.scheduling_strategy == SchedulingStrategy::Replica {
        return Desired {
            daemon: false,
            count: spec.desired(),
            eligible: Vec::new(),
            disconnected: Vec::new(),
        };
    }
    let constraints: Vec<Query> = spec
        .placement_constraints
        .iter()
        .chain(match definition {
            Definition::Valid { spec, .. } => spec.placement_constraints.as_slice(),
            _ => &[],
        })
        .filter_map(|c| c.expression.as_deref())
        .filter_map(|e| Query::parse(e).ok())
        .collect();
    let (eligible, disconnected): (Vec<&InstanceSpec>, Vec<&InstanceSpec>) = instances
        .iter()
        .map(std::sync::Arc::as_ref)
        .filter(|i| qualifies(i, &constraints))
        .partition(|i| i.connected);
    let names = |instances: Vec<&'a InstanceSpec>| -> Vec<&'a str> {
        instances.into_iter().map(|i| i.name.as_str()).collect()
    };
    Desired {
        daemon: true,
        count: i32::try_from(eligible.len()).unwrap_or(i32::MAX),
        eligible: names(eligible),
        disconnected: names(disconnected),
    }
}

/// Count, too, the disconnected instances that still hold a live task of
/// the service: the task is wanted there, and kept.
pub fn held_while_disconnected(
    desired: &mut Desired<'_>,
    tasks: &[std::sync::Arc<crds::v1alpha1::Task>],
) {
    let held = desired
        .disconnected
        .iter()
        .filter(|instance| {
            tasks.iter().any(|t| {
                t.spec.container_instance.as_deref() == Some(**instance)
                    && t.spec.desired_status == crds::v1alpha1::DesiredStatus::Running
                    && t.status.as_ref().and_then(|s| s.last_status)
                        != Some(crds::v1alpha1::TaskLastStatus::Stopped)
            })
        })
        .count();
    desired.count = desired
        .count
        .saturating_add(i32::try_from(held).unwrap_or(i32::MAX));
}

/// Whether an instance, connected or not, may run a DAEMON service's task.
fn qualifies(instance: &InstanceSpec, constraints: &[Query]) -> bool {
    !instance.draining && constraints.iter().all(|q| q.matches(instance))
}
