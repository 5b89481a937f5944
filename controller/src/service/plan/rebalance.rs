//! Rebalancing (`rebalancing: ENABLED`), as ECS's availability-zone
//! rebalancing, generalised to whatever `spread` leads the service's
//! placement strategy: when the values of that field (zones by default)
//! hold the service's running tasks unevenly by two or more, and an
//! instance of the emptiest value could take a task, one task moves.
//!
//! The move reuses what exists: with room under `maximumPercent` the
//! service starts one task more, labelled `gantry.dev/rebalancing`, which
//! the scheduler's spread puts in the emptiest value; once it is healthy
//! the service has one task too many and scale-in (scale_in.rs) stops one
//! where the tasks crowd. Without that room, one task is stopped there
//! first (within `minimumHealthyPercent`) and its replacement goes to the
//! emptiest value. The leading link must be a `spread`: only then does
//! the scheduler's choice even the spread out, so a move never undoes
//! another.

use std::{collections::BTreeMap, sync::Arc};

use crds::v1alpha1::{PlacementConstraint, PlacementStrategy, TaskDefinitionSpec};

use super::{facts::Facts, scale_in};
use crate::{
    convert,
    placement::{InstanceSpec, Query, SpreadField, Strategy},
};

/// An uneven spread: the field, and its fullest and emptiest values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imbalance {
    pub field: String,
    pub fullest: (String, usize),
    pub emptiest: (String, usize),
}

impl Imbalance {
    /// The Event's words.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} {} has {} tasks and {} has {}",
            self.field, self.fullest.0, self.fullest.1, self.emptiest.0, self.emptiest.1
        )
    }
}

/// What the service runs and may run on.
#[derive(Clone, Copy, Debug)]
pub struct Spread<'a> {
    pub strategy: &'a [PlacementStrategy],
    /// The service's and its definition's constraints.
    pub constraints: &'a [PlacementConstraint],
    pub definition: &'a TaskDefinitionSpec,
    pub instances: &'a [Arc<InstanceSpec>],
}

/// The leading spread's imbalance among `running`, if a move would even
/// it out.
#[must_use]
pub fn imbalance(spread: &Spread<'_>, running: &[&Facts<'_>]) -> Option<Imbalance> {
    let chain = if spread.strategy.is_empty() {
        Strategy::service_default()
    } else {
        spread
            .strategy
            .iter()
            .map(convert::strategy)
            .collect::<Result<Vec<_>, _>>()
            .ok()?
    };
    let Some(Strategy::Spread(field)) = chain.first() else {
        return None;
    };
    let by_name: BTreeMap<&str, &InstanceSpec> = spread
        .instances
        .iter()
        .map(|i| (i.name.as_str(), &**i))
        .collect();
    let value = |instance: &InstanceSpec| scale_in::spread_value(field, instance).to_owned();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for f in running {
        let Some(instance) = f.instance.and_then(|i| by_name.get(i)) else {
            continue;
        };
        *counts.entry(value(instance)).or_default() += 1;
    }
    let fullest = counts
        .iter()
        .max_by_key(|(v, n)| (**n, std::cmp::Reverse((*v).clone())))
        .map(|(v, n)| (v.clone(), *n))?;
    let queries: Vec<Query> = spread
        .constraints
        .iter()
        .filter_map(|c| c.expression.as_deref())
        .filter_map(|e| Query::parse(e).ok())
        .collect();
    let (cpu, memory) = convert::resources(spread.definition);
    let emptiest = spread
        .instances
        .iter()
        .map(Arc::as_ref)
        .filter(|i| i.connected && !i.draining && !i.awaiting_daemons)
        .filter(|i| {
            let (left_cpu, left_memory) = i.reported_remaining.unwrap_or((i.cpu, i.memory));
            left_cpu >= cpu && left_memory >= memory
        })
        .filter(|i| queries.iter().all(|q| q.matches(*i)))
        .map(|i| {
            let v = value(i);
            let n = counts.get(&v).copied().unwrap_or(0);
            (v, n)
        })
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))?;
    (fullest.1 >= emptiest.1 + 2).then(|| Imbalance {
        field: match field {
            SpreadField::Instance => "instance".to_owned(),
            SpreadField::Attribute(name) => name.clone(),
        },
        fullest,
        emptiest,
    })
}
