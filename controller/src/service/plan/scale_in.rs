//! Which tasks a REPLICA service stops when it has more than it wants, as
//! ECS's scale-in chooses them: tasks not yet running first (youngest
//! first); then, one at a time, the task whose removal keeps the service
//! balanced by its placement strategy. For each `spread` link in order
//! (by default availability zone, then instance) it prefers a task in
//! the value with the most tasks of the service; then the instance with
//! the most; then the youngest. `binpack` and `random` links state no
//! preference here.

use std::{cmp::Reverse, collections::HashMap};

use crds::v1alpha1::PlacementStrategy;

use super::facts::Facts;
use crate::{
    convert,
    placement::{InstanceSpec, SpreadField, Strategy},
};

/// What a task's place is judged by.
#[derive(Debug)]
pub struct Balance<'a> {
    /// The spread fields of the service's strategy, in order.
    fields: Vec<SpreadField>,
    instances: HashMap<&'a str, &'a InstanceSpec>,
}

impl<'a> Balance<'a> {
    /// The service's strategy (ECS's service default when empty; a link
    /// the engine refuses is left out) over these instances.
    #[must_use]
    pub fn new(strategy: &[PlacementStrategy], instances: &'a [InstanceSpec]) -> Self {
        let chain = if strategy.is_empty() {
            Strategy::service_default()
        } else {
            strategy
                .iter()
                .filter_map(|s| convert::strategy(s).ok())
                .collect()
        };
        let fields = chain
            .into_iter()
            .filter_map(|s| match s {
                Strategy::Spread(field) => Some(field),
                Strategy::Binpack(_) | Strategy::Random => None,
            })
            .collect();
        Self {
            fields,
            instances: instances.iter().map(|i| (i.name.as_str(), i)).collect(),
        }
    }

    /// The value of `field` for a task on `instance`; an attribute the
    /// instance lacks (or an instance no longer registered) is one value
    /// of its own, as the engine treats it.
    fn value<'f>(&self, field: &'f SpreadField, instance: &'f str) -> &'f str
    where
        'a: 'f,
    {
        match field {
            SpreadField::Instance => instance,
            SpreadField::Attribute(name) => self
                .instances
                .get(instance)
                .copied()
                .and_then(|i| i.attributes.get(name))
                .map_or("", String::as_str),
        }
    }
}

#[must_use]
pub fn victims<'a>(
    keep: &[&'a Facts<'a>],
    desired: usize,
    balance: &Balance<'_>,
) -> Vec<&'a Facts<'a>> {
    let surplus = keep.len().saturating_sub(desired);
    if surplus == 0 {
        return Vec::new();
    }
    let (mut waiting, running): (Vec<&Facts<'_>>, Vec<&Facts<'_>>) =
        keep.iter().partition(|f| !f.running);
    waiting.sort_by_key(|f| Reverse(f.created()));
    let mut victims: Vec<&Facts<'_>> = waiting.into_iter().take(surplus).collect();
    // Each running task's place at each level (the spread fields, then
    // the instance) as an index, and the service's tasks per place.
    let instance = SpreadField::Instance;
    let levels: Vec<&SpreadField> = balance.fields.iter().chain([&instance]).collect();
    let mut index: Vec<HashMap<&str, usize>> = vec![HashMap::new(); levels.len()];
    let mut running: Vec<(&Facts<'_>, Vec<usize>)> = running
        .into_iter()
        .map(|f| {
            let on = f.instance.unwrap_or_default();
            let places = levels
                .iter()
                .zip(&mut index)
                .map(|(level, seen)| {
                    let next = seen.len();
                    *seen.entry(balance.value(level, on)).or_insert(next)
                })
                .collect();
            (f, places)
        })
        .collect();
    let mut counts: Vec<Vec<usize>> = index.iter().map(|seen| vec![0; seen.len()]).collect();
    for (_, places) in &running {
        for (per, &place) in counts.iter_mut().zip(places) {
            per[place] += 1;
        }
    }
    while victims.len() < surplus {
        let Some(at) = (0..running.len()).max_by(|&i, &j| {
            let ((a, a_places), (b, b_places)) = (&running[i], &running[j]);
            crowding(&counts, a_places)
                .cmp(crowding(&counts, b_places))
                .then_with(|| a.created().cmp(&b.created()))
                .then_with(|| a.task.metadata.name.cmp(&b.task.metadata.name))
        }) else {
            break;
        };
        let (victim, places) = running.swap_remove(at);
        for (per, &place) in counts.iter_mut().zip(&places) {
            per[place] -= 1;
        }
        victims.push(victim);
    }
    victims
}

/// The service's tasks in a task's place at each level.
fn crowding<'c>(counts: &'c [Vec<usize>], places: &'c [usize]) -> impl Iterator<Item = usize> + 'c {
    counts.iter().zip(places).map(|(per, &place)| per[place])
}
