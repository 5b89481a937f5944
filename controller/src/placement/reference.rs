//! The scan-everything reference placement: every instance checked, every
//! rank computed, spread counts recounted from scratch. It is the oracle
//! the indexed engine is tested against, and the baseline its benchmark
//! is compared with. Its cost grows with the cluster; never use it to
//! schedule.

use std::collections::HashMap;

use super::{
    Placement, SpreadField, Strategy, TaskRequest, Unplaceable,
    engine::allocation_for,
    state::{ClusterState, InstanceId, Prepared},
};

/// The lowest rank among fitting instances, and every instance that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    pub key: Vec<i64>,
    pub best: Vec<InstanceId>,
}

/// Rank every instance for `task`.
///
/// # Errors
/// [`Unplaceable`] when no instance fits.
pub fn rank_all(state: &ClusterState, task: &TaskRequest) -> Result<Ranked, Unplaceable> {
    let p = state.prepare(task);
    let counts = recount(state, &p, &task.strategy);
    let count = |attribute: &str, value: Option<&str>| counts.get(attribute, value);
    let mut ranked: Option<Ranked> = None;
    let mut ids: Vec<InstanceId> = state.instance_ids().collect();
    ids.sort_unstable();
    for id in ids {
        let instance = state.instance(id).expect("listed ids are live");
        if state.check(instance, &p).is_err() {
            continue;
        }
        let key = state.key(instance, &p, &task.strategy, &count);
        match &mut ranked {
            Some(r) if key > r.key => {}
            Some(r) if key == r.key => r.best.push(id),
            _ => {
                ranked = Some(Ranked {
                    key,
                    best: vec![id],
                })
            }
        }
    }
    ranked.ok_or_else(|| state.explain(&p))
}

/// The rank of one instance for `task`, or `None` if it cannot take it.
#[must_use]
pub fn rank(state: &ClusterState, task: &TaskRequest, id: InstanceId) -> Option<Vec<i64>> {
    let p = state.prepare(task);
    let instance = state.instance(id)?;
    state.check(instance, &p).ok()?;
    let counts = recount(state, &p, &task.strategy);
    let count = |attribute: &str, value: Option<&str>| counts.get(attribute, value);
    Some(state.key(instance, &p, &task.strategy, &count))
}

/// Place `task` on the lowest-numbered best instance and record it.
///
/// # Errors
/// [`Unplaceable`] when no instance fits.
pub fn place_and_allocate(
    state: &mut ClusterState,
    task_id: &str,
    task: &TaskRequest,
) -> Result<Placement, Unplaceable> {
    let ranked = rank_all(state, task)?;
    let instance = ranked.best[0];
    state
        .allocate(instance, allocation_for(task_id, task))
        .expect("a fresh task id on a live instance");
    Ok(Placement {
        instance,
        name: state
            .instance_name(instance)
            .expect("placed on a live instance")
            .to_owned(),
    })
}

/// The group's tasks per attribute and value.
#[derive(Debug, Default)]
struct Recount(HashMap<(String, Option<String>), u32>);

impl Recount {
    fn get(&self, attribute: &str, value: Option<&str>) -> u32 {
        self.0
            .get(&(attribute.to_owned(), value.map(str::to_owned)))
            .copied()
            .unwrap_or(0)
    }
}

/// The group's tasks per value of every attribute the chain spreads over,
/// counted over all instances.
fn recount(state: &ClusterState, p: &Prepared<'_>, chain: &[Strategy]) -> Recount {
    let mut counts = Recount::default();
    let Some(group) = p.group else {
        return counts;
    };
    for strategy in chain {
        let Strategy::Spread(SpreadField::Attribute(attribute)) = strategy else {
            continue;
        };
        for id in state.instance_ids() {
            let instance = state.instance(id).expect("listed ids are live");
            let n = instance.group_count(group);
            if n > 0 {
                let value = state.classes[instance.class]
                    .attributes
                    .get(attribute)
                    .cloned();
                *counts.0.entry((attribute.clone(), value)).or_default() += n;
            }
        }
    }
    counts
}
