//! How many tasks a service wants: `desiredCount` for REPLICA; for DAEMON,
//! one per ACTIVE, connected instance that meets the service's and the
//! definition's constraints.

use crds::v1alpha1::{SchedulingStrategy, ServiceSpec};

use super::Definition;
use crate::placement::{InstanceSpec, Query};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub daemon: bool,
    pub count: i32,
    /// DAEMON: the instances that should each run one task.
    pub eligible: Vec<&'a str>,
}

#[must_use]
pub fn desired<'a>(
    spec: &ServiceSpec,
    definition: Definition<'_>,
    instances: &'a [InstanceSpec],
) -> Desired<'a> {
    if spec.scheduling_strategy == SchedulingStrategy::Replica {
        return Desired {
            daemon: false,
            count: spec.desired_count.unwrap_or(0).max(0),
            eligible: Vec::new(),
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
    let eligible: Vec<&str> = instances
        .iter()
        .filter(|i| eligible(i, &constraints))
        .map(|i| i.name.as_str())
        .collect();
    Desired {
        daemon: true,
        count: i32::try_from(eligible.len()).unwrap_or(i32::MAX),
        eligible,
    }
}

/// Whether an instance may run a DAEMON service's task.
fn eligible(instance: &InstanceSpec, constraints: &[Query]) -> bool {
    !instance.draining
        && instance.connected
        && constraints.iter().all(|q| q.matches(&instance.attributes))
}
