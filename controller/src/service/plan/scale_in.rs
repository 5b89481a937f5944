//! Which tasks a REPLICA service stops when it has more than it wants, as
//! ECS's scale-in chooses them: tasks not yet running first (youngest
//! first); then, one at a time, the task whose removal keeps the service
//! placed by its placement strategy. Each link, in order, ranks:
//! `spread` (by default availability zone, then instance) a task in the
//! value with the most tasks of the service; `binpack` a task on the
//! instance that has the most of the field left (ECS stops where the
//! most room would be left). Then the instance with the most tasks of the
//! service, then the youngest task. `random` states no preference.

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

use crds::v1alpha1::PlacementStrategy;

use super::facts::Facts;
use crate::{
    convert,
    placement::{BinpackField, InstanceSpec, SpreadField, Strategy},
};

/// What a task's place is judged by.
#[derive(Debug)]
pub struct Balance<'a> {
    /// The ranking links of the service's strategy, in order.
    links: Vec<Strategy>,
    instances: HashMap<&'a str, &'a InstanceSpec>,
}

impl<'a> Balance<'a> {
    /// The service's strategy (ECS's service default when empty; a link
    /// the engine refuses is left out) over these instances.
    #[must_use]
    pub fn new(strategy: &[PlacementStrategy], instances: &'a [Arc<InstanceSpec>]) -> Self {
        let chain = if strategy.is_empty() {
            Strategy::service_default()
        } else {
            strategy
                .iter()
                .filter_map(|s| convert::strategy(s).ok())
                .collect()
        };
        Self {
            links: chain
                .into_iter()
                .filter(|s| *s != Strategy::Random)
                .collect(),
            instances: instances.iter().map(|i| (i.name.as_str(), &**i)).collect(),
        }
    }

    /// The value of `field` for a task on `instance`; an attribute the
    /// instance lacks (or an instance no longer registered) is one value
    /// of its own, as the engine treats it.
    fn value<'f>(&self, field: &'f SpreadField, instance: &'f str) -> &'f str
    where
        'a: 'f,
    {
        match self.instances.get(instance) {
            Some(registered) => spread_value(field, registered),
            None if matches!(field, SpreadField::Instance) => instance,
            None => "",
        }
    }

    /// What the instance reports it has left of `field`.
    fn left(&self, field: BinpackField, instance: &str) -> i64 {
        let left = self
            .instances
            .get(instance)
            .and_then(|i| i.reported_remaining);
        left.map_or(0, |(cpu, memory)| {
            i64::from(match field {
                BinpackField::Cpu => cpu,
                BinpackField::Memory => memory,
            })
        })
    }
}

/// The value of `field` an instance has for a spread: its name, or the
/// attribute (an attribute it lacks is the value `""`, one of its own).
#[must_use]
pub fn spread_value<'i>(field: &'i SpreadField, instance: &'i InstanceSpec) -> &'i str {
    match field {
        SpreadField::Instance => &instance.name,
        SpreadField::Attribute(name) => instance.attributes.get(name).map_or("", String::as_str),
    }
}

/// What a task reserves of `field`, by its definition snapshot.
fn size(f: &Facts<'_>, field: BinpackField) -> i64 {
    let definition = f.task.spec.definition.as_ref();
    let effective = definition.and_then(|d| f.task.effective_definition(d).ok());
    effective.map_or(0, |d| {
        let (cpu, memory) = convert::resources(&d);
        i64::from(match field {
            BinpackField::Cpu => cpu,
            BinpackField::Memory => memory,
        })
    })
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
    // Each running task's place at each level (the strategy's links, then
    // the instance) as an index, and each place's standing: tasks of the
    // service for a spread, room left for a binpack. Higher goes first.
    let instance = Strategy::Spread(SpreadField::Instance);
    let levels: Vec<&Strategy> = balance.links.iter().chain([&instance]).collect();
    let mut index: Vec<HashMap<&str, usize>> = vec![HashMap::new(); levels.len()];
    let mut running: Vec<(&Facts<'_>, Vec<usize>)> = running
        .into_iter()
        .map(|f| {
            let on = f.instance.unwrap_or_default();
            let places = levels
                .iter()
                .zip(&mut index)
                .map(|(level, seen)| {
                    let place = match level {
                        Strategy::Spread(field) => balance.value(field, on),
                        Strategy::Binpack(_) | Strategy::Random => on,
                    };
                    let next = seen.len();
                    *seen.entry(place).or_insert(next)
                })
                .collect();
            (f, places)
        })
        .collect();
    let mut standing: Vec<Vec<i64>> = index.iter().map(|seen| vec![0; seen.len()]).collect();
    for ((level, seen), values) in levels.iter().zip(&index).zip(&mut standing) {
        if let Strategy::Binpack(field) = level {
            for (on, &place) in seen {
                values[place] = balance.left(*field, on);
            }
        }
    }
    for (_, places) in &running {
        for ((level, values), &place) in levels.iter().zip(&mut standing).zip(places) {
            if let Strategy::Spread(_) = level {
                values[place] += 1;
            }
        }
    }
    while victims.len() < surplus {
        let Some(at) = (0..running.len()).max_by(|&i, &j| {
            let ((a, a_places), (b, b_places)) = (&running[i], &running[j]);
            ranks(&standing, a_places)
                .cmp(ranks(&standing, b_places))
                .then_with(|| a.created().cmp(&b.created()))
                .then_with(|| a.task.metadata.name.cmp(&b.task.metadata.name))
        }) else {
            break;
        };
        let (victim, places) = running.swap_remove(at);
        for ((level, values), &place) in levels.iter().zip(&mut standing).zip(&places) {
            match level {
                Strategy::Spread(_) => values[place] -= 1,
                // Its room comes back.
                Strategy::Binpack(field) => values[place] += size(victim, *field),
                Strategy::Random => {}
            }
        }
        victims.push(victim);
    }
    victims
}

/// A task's place's standing at each level.
fn ranks<'c>(standing: &'c [Vec<i64>], places: &'c [usize]) -> impl Iterator<Item = i64> + 'c {
    standing
        .iter()
        .zip(places)
        .map(|(values, &place)| values[place])
}
