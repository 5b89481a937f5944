//! Which tasks a REPLICA service stops when it has more than it wants:
//! tasks not yet running first (youngest first), then one at a time the
//! youngest task of the instance that runs the most, so the spread stays
//! even (ECS's scale-in keeps tasks balanced across the spread field).

use std::{cmp::Reverse, collections::BTreeMap};

use super::facts::Facts;

#[must_use]
pub fn victims<'a>(keep: &[&'a Facts<'a>], desired: usize) -> Vec<&'a Facts<'a>> {
    let surplus = keep.len().saturating_sub(desired);
    if surplus == 0 {
        return Vec::new();
    }
    let (mut waiting, running): (Vec<&Facts<'_>>, Vec<&Facts<'_>>) =
        keep.iter().partition(|f| !f.running);
    waiting.sort_by_key(|f| Reverse(f.created()));
    let mut per_instance: BTreeMap<&str, Vec<&Facts<'_>>> = BTreeMap::new();
    for f in running {
        per_instance
            .entry(f.instance.unwrap_or_default())
            .or_default()
            .push(f);
    }
    for tasks in per_instance.values_mut() {
        tasks.sort_by_key(|f| f.created());
    }
    let mut victims: Vec<&Facts<'_>> = waiting.into_iter().take(surplus).collect();
    while victims.len() < surplus {
        let Some(tasks) = per_instance.values_mut().max_by_key(|tasks| tasks.len()) else {
            break;
        };
        match tasks.pop() {
            Some(f) => victims.push(f),
            None => break,
        }
    }
    victims
}
