//! The indexed placement: the same choice as the reference scan, found
//! without looking at every instance.
//!
//! A placement is the lowest rank among the instances that can take the
//! task, where the rank is one number per strategy of the chain (see
//! `ClusterState::key`). The search narrows a candidate set strategy by
//! strategy: `spread` over an attribute visits the classes whose value has
//! the fewest tasks of the group first; `spread` over instances tries the
//! instances without such a task first, then walks the classes' group
//! indexes from the fewest; `binpack` walks the classes' capacity indexes
//! upward from what the task needs, gathering ties for the rest of the
//! chain until one reaches the lowest rank the rest can give; `random`
//! (and the end of the chain) samples. Ties left at the end are broken
//! arbitrarily. A task that fits nowhere is remembered with its reasons
//! (`ClusterState::remember_refusal`), so its like is refused at once.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, btree_set},
};

use rand::{Rng, RngExt};

use super::{
    Allocation, BinpackField, Placement, SpreadField, Strategy, TaskRequest, Unplaceable,
    state::{ClassId, ClusterState, InstanceId, Prepared},
};

/// Random draws before `random` falls back to walking the capacity index.
const SAMPLES: usize = 32;

/// Where the search may still look.
#[derive(Debug)]
enum Candidates {
    /// Schedulable members of these classes; with `fresh_only`, only those
    /// running no task of the group.
    Classes {
        classes: Vec<ClassId>,
        fresh_only: bool,
    },
    /// Exactly these instances.
    List(Vec<InstanceId>),
}

impl ClusterState {
    /// Choose an instance for `task`, without recording anything.
    ///
    /// # Errors
    /// [`Unplaceable`] with the per-cause counts when no instance fits.
    pub fn place(
        &mut self,
        task: &TaskRequest,
        rng: &mut impl Rng,
    ) -> Result<Placement, Unplaceable> {
        if let Some(why) = self.refusal(task) {
            return Err(why.clone());
        }
        if task
            .strategy
            .contains(&Strategy::Binpack(BinpackField::Cpu))
        {
            self.index_cpu();
        }
        if task
            .strategy
            .iter()
            .any(|s| matches!(s, Strategy::Binpack(_)))
        {
            self.flush_capacity();
        }
        let group = self.groups.get(&task.group);
        if let Some(group) = group {
            for strategy in &task.strategy {
                if let Strategy::Spread(SpreadField::Attribute(attribute)) = strategy {
                    self.track_spread(group, attribute);
                }
            }
        }
        let classes = self.eligible_classes(task);
        let p = self.prepare(task);
        let candidates = Candidates::Classes {
            classes,
            fresh_only: false,
        };
        match self.best(candidates, &task.strategy, &p, rng) {
            Some(instance) => Ok(Placement {
                instance,
                name: self
                    .instance_name(instance)
                    .expect("placed on a live instance")
                    .to_owned(),
            }),
            None => {
                let why = self.explain(&p);
                self.remember_refusal(task, &why);
                Err(why)
            }
        }
    }

    /// Choose an instance for `task` and record its allocation as `task_id`.
    ///
    /// # Errors
    /// As [`ClusterState::place`].
    pub fn place_and_allocate(
        &mut self,
        task_id: &str,
        task: &TaskRequest,
        rng: &mut impl Rng,
    ) -> Result<Placement, Unplaceable> {
        let placement = self.place(task, rng)?;
        self.allocate(placement.instance, allocation_for(task_id, task))
            .expect("a fresh task id on a live instance");
        Ok(placement)
    }

    /// Check `task` against the named instance only (a task pinned there,
    /// as a DAEMON service's are), without recording anything.
    ///
    /// # Errors
    /// [`Unplaceable`] with that instance's cause, or with no instances if
    /// it is unknown.
    pub fn place_on(&self, name: &str, task: &TaskRequest) -> Result<Placement, Unplaceable> {
        self.check_named(name, task, true)
    }

    /// Check `task` again on the instance it was placed on, against a
    /// newer version of that instance: every check [`Self::place`] makes
    /// of a candidate (the strategy aside, which chose it), so a choice
    /// that still fits can be written again rather than made anew.
    ///
    /// # Errors
    /// As [`Self::place_on`].
    pub fn place_again(&self, name: &str, task: &TaskRequest) -> Result<Placement, Unplaceable> {
        self.check_named(name, task, false)
    }

    fn check_named(
        &self,
        name: &str,
        task: &TaskRequest,
        pinned: bool,
    ) -> Result<Placement, Unplaceable> {
        let Some(id) = self.instance_id(name) else {
            return Err(Unplaceable {
                instances: 0,
                causes: BTreeMap::new(),
            });
        };
        let instance = self.instance(id).expect("named instances are live");
        let p = self.prepare(task);
        let checked = if pinned {
            self.check_pinned(instance, &p)
        } else {
            self.check(instance, &p)
        };
        match checked {
            Ok(()) => Ok(Placement {
                instance: id,
                name: name.to_owned(),
            }),
            Err(cause) => Err(Unplaceable {
                instances: 1,
                causes: BTreeMap::from([(cause, 1)]),
            }),
        }
    }

    /// Place tasks one after another, each seeing the ones before it.
    pub fn place_batch<'a>(
        &mut self,
        tasks: impl IntoIterator<Item = (&'a str, &'a TaskRequest)>,
        rng: &mut impl Rng,
    ) -> Vec<Result<Placement, Unplaceable>> {
        tasks
            .into_iter()
            .map(|(id, task)| self.place_and_allocate(id, task, rng))
            .collect()
    }

    /// Live classes whose attributes satisfy every attribute-only
    /// `memberOf` expression of the task.
    fn eligible_classes(&mut self, task: &TaskRequest) -> Vec<ClassId> {
        let queries: Vec<_> = task
            .constraints
            .iter()
            .filter_map(|c| match c {
                super::Constraint::MemberOf(q) if !q.per_instance() => Some(q),
                _ => None,
            })
            .collect();
        let live: Vec<ClassId> = self.live_classes.iter().copied().collect();
        live.into_iter()
            .filter(|class| queries.iter().all(|q| self.class_matches(*class, q)))
            .collect()
    }

    fn best(
        &self,
        candidates: Candidates,
        chain: &[Strategy],
        p: &Prepared<'_>,
        rng: &mut impl Rng,
    ) -> Option<InstanceId> {
        let Some((first, rest)) = chain.split_first() else {
            return self.any_fit(candidates, p, rng);
        };
        match (first, candidates) {
            (Strategy::Random, candidates) => self.any_fit(candidates, p, rng),
            (_, Candidates::List(ids)) => self.best_in_list(ids, chain, p, rng),
            (
                Strategy::Binpack(field),
                Candidates::Classes {
                    classes,
                    fresh_only,
                },
            ) => self.binpack(&classes, fresh_only, *field, rest, p, rng),
            (
                Strategy::Spread(SpreadField::Attribute(attribute)),
                Candidates::Classes {
                    classes,
                    fresh_only,
                },
            ) => {
                let mut levels: BTreeMap<u32, Vec<ClassId>> = BTreeMap::new();
                for class in classes {
                    let value = self.classes[class].attributes.get(attribute);
                    let count = self.spread_count(p.group, attribute, value.map(String::as_str));
                    levels.entry(count).or_default().push(class);
                }
                levels.into_values().find_map(|classes| {
                    self.best(
                        Candidates::Classes {
                            classes,
                            fresh_only,
                        },
                        rest,
                        p,
                        rng,
                    )
                })
            }
            (
                Strategy::Spread(SpreadField::Instance),
                Candidates::Classes {
                    classes,
                    fresh_only,
                },
            ) => {
                let fresh: Vec<ClassId> = classes
                    .iter()
                    .copied()
                    .filter(|c| self.classes[*c].has_fresh(p.group))
                    .collect();
                if !fresh.is_empty() {
                    let fresh = Candidates::Classes {
                        classes: fresh,
                        fresh_only: true,
                    };
                    if let Some(found) = self.best(fresh, rest, p, rng) {
                        return Some(found);
                    }
                }
                if fresh_only {
                    return None;
                }
                self.fewest_of_group(&classes, rest, p, rng)
            }
        }
    }

    /// Every candidate runs a task of the group: the fitting ones with the
    /// fewest, from the classes' group indexes in order. The rest of the
    /// chain ranks that level; with nothing left to rank, one of its first
    /// few is as good as any.
    fn fewest_of_group(
        &self,
        classes: &[ClassId],
        rest: &[Strategy],
        p: &Prepared<'_>,
        rng: &mut impl Rng,
    ) -> Option<InstanceId> {
        let group = p.group?;
        let by_count = Merged::new(
            classes
                .iter()
                .filter_map(|c| self.classes[*c].by_group.get(&group))
                .map(|members| members.range(..))
                .collect(),
        );
        let rest_ranks = ranks(rest);
        let mut level = None;
        let mut found = Vec::new();
        for (count, id) in by_count {
            if level.is_some_and(|level| count != level) {
                break;
            }
            if !self.fits(id, false, p) {
                continue;
            }
            level = Some(count);
            found.push(id);
            if !rest_ranks && found.len() == SAMPLES {
                break;
            }
        }
        if found.is_empty() {
            None
        } else if rest_ranks {
            self.best(Candidates::List(found), rest, p, rng)
        } else {
            Some(found[rng.random_range(0..found.len())])
        }
    }

    /// The lowest rank `chain` can give any candidate of `classes`, one
    /// number per strategy as [`ClusterState::key`] has them: a candidate
    /// that has it cannot be beaten.
    fn floor(&self, chain: &[Strategy], classes: &[ClassId], p: &Prepared<'_>) -> Vec<i64> {
        let mut floor = Vec::with_capacity(chain.len());
        for strategy in chain {
            floor.push(match strategy {
                Strategy::Random => break,
                Strategy::Binpack(BinpackField::Cpu) => i64::from(p.task.cpu),
                Strategy::Binpack(BinpackField::Memory) => i64::from(p.task.memory),
                Strategy::Spread(SpreadField::Instance) => {
                    let Some(group) = p.group else {
                        floor.push(0);
                        continue;
                    };
                    // The fewest in any class: none where a member is
                    // fresh, else its group index's first.
                    let mut fewest = u32::MAX;
                    for class in classes {
                        let class = &self.classes[*class];
                        let busy = class.by_group.get(&group);
                        if class.members.len() > busy.map_or(0, |b| b.len()) {
                            fewest = 0;
                            break;
                        }
                        if let Some((count, _)) = busy.and_then(|b| b.first()) {
                            fewest = fewest.min(*count);
                        }
                    }
                    i64::from(if fewest == u32::MAX { 0 } else { fewest })
                }
                Strategy::Spread(SpreadField::Attribute(attribute)) => classes
                    .iter()
                    .map(|c| {
                        let value = self.classes[*c].attributes.get(attribute);
                        self.spread_count(p.group, attribute, value.map(String::as_str))
                    })
                    .min()
                    .map_or(0, i64::from),
            });
        }
        floor
    }

    /// Whether a schedulable member of an eligible class takes the task.
    fn fits(&self, id: InstanceId, fresh_only: bool, p: &Prepared<'_>) -> bool {
        let instance = self.instance(id).expect("indexed instances are live");
        if fresh_only && p.group.is_some_and(|g| instance.group_count(g) > 0) {
            return false;
        }
        self.check_fit(instance, p, false).is_ok()
    }

    /// The least remaining `field` that still fits, across the classes'
    /// capacity indexes; ties go to the rest of the chain.
    fn binpack(
        &self,
        classes: &[ClassId],
        fresh_only: bool,
        field: BinpackField,
        rest: &[Strategy],
        p: &Prepared<'_>,
        rng: &mut impl Rng,
    ) -> Option<InstanceId> {
        let need = i64::from(match field {
            BinpackField::Cpu => p.task.cpu,
            BinpackField::Memory => p.task.memory,
        });
        let by_remaining = Merged::new(
            classes
                .iter()
                .map(|c| self.classes[*c].index(field).range((need, 0)..))
                .collect(),
        );
        let rest_ranks = ranks(rest);
        let mut floor = None;
        let count =
            |attribute: &str, value: Option<&str>| self.spread_count(p.group, attribute, value);
        let mut ties: Vec<InstanceId> = Vec::new();
        let mut best_remaining = None;
        for (remaining, id) in by_remaining {
            if best_remaining.is_some_and(|best| remaining != best) {
                break;
            }
            if !self.fits(id, fresh_only, p) {
                continue;
            }
            if !rest_ranks {
                return Some(id);
            }
            let instance = self.instance(id).expect("indexed instances are live");
            let floor = floor.get_or_insert_with(|| self.floor(rest, classes, p));
            if self.key(instance, p, rest, &count) == *floor {
                return Some(id);
            }
            best_remaining = Some(remaining);
            ties.push(id);
        }
        if ties.is_empty() {
            None
        } else {
            self.best(Candidates::List(ties), rest, p, rng)
        }
    }

    /// Any instance that takes the task: a few uniform draws, then a walk
    /// of the memory index so that a fit is found whenever one exists.
    /// (Index keys may be stale-high after allocations, never low, so the
    /// walk from `need` upward still meets every instance with room.)
    fn any_fit(
        &self,
        candidates: Candidates,
        p: &Prepared<'_>,
        rng: &mut impl Rng,
    ) -> Option<InstanceId> {
        let (classes, fresh_only) = match candidates {
            Candidates::List(ids) => {
                if ids.is_empty() {
                    return None;
                }
                let start = rng.random_range(0..ids.len());
                return (0..ids.len())
                    .map(|k| ids[(start + k) % ids.len()])
                    .find(|id| self.fits(*id, false, p));
            }
            Candidates::Classes {
                classes,
                fresh_only,
            } => (classes, fresh_only),
        };
        let total: usize = classes.iter().map(|c| self.classes[*c].members.len()).sum();
        if total == 0 {
            return None;
        }
        for _ in 0..SAMPLES {
            let mut draw = rng.random_range(0..total);
            for class in &classes {
                let members = &self.classes[*class].members;
                if draw < members.len() {
                    let id = members[draw];
                    if self.fits(id, fresh_only, p) {
                        return Some(id);
                    }
                    break;
                }
                draw -= members.len();
            }
        }
        let need = i64::from(p.task.memory);
        let start = rng.random_range(0..classes.len());
        (0..classes.len())
            .map(|k| classes[(start + k) % classes.len()])
            .find_map(|class| {
                self.classes[class]
                    .by_memory
                    .range((need, 0)..)
                    .map(|(_, id)| *id)
                    .find(|id| self.fits(*id, fresh_only, p))
            })
    }

    /// The lowest-ranked fitting instance of an explicit list, ties broken
    /// at random.
    fn best_in_list(
        &self,
        ids: Vec<InstanceId>,
        chain: &[Strategy],
        p: &Prepared<'_>,
        rng: &mut impl Rng,
    ) -> Option<InstanceId> {
        let count =
            |attribute: &str, value: Option<&str>| self.spread_count(p.group, attribute, value);
        let mut best: Option<(Vec<i64>, InstanceId)> = None;
        let mut ties = 0u32;
        for id in ids {
            let instance = self.instance(id).expect("listed instances are live");
            if self.check_fit(instance, p, false).is_err() {
                continue;
            }
            let key = self.key(instance, p, chain, &count);
            match &best {
                Some((best_key, _)) if key > *best_key => {}
                Some((best_key, _)) if key == *best_key => {
                    ties += 1;
                    if rng.random_range(0..=ties) == 0 {
                        best = Some((key, id));
                    }
                }
                _ => {
                    ties = 0;
                    best = Some((key, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }
}

/// Several classes' ordered indexes walked as one, in order.
struct Merged<'a, K> {
    cursors: Vec<btree_set::Range<'a, (K, InstanceId)>>,
    heap: BinaryHeap<Reverse<(K, InstanceId, usize)>>,
}

impl<'a, K: Ord + Copy> Merged<'a, K> {
    fn new(cursors: Vec<btree_set::Range<'a, (K, InstanceId)>>) -> Self {
        let mut merged = Self {
            heap: BinaryHeap::with_capacity(cursors.len()),
            cursors,
        };
        for k in 0..merged.cursors.len() {
            merged.advance(k);
        }
        merged
    }

    fn advance(&mut self, k: usize) {
        if let Some(&(key, id)) = self.cursors[k].next() {
            self.heap.push(Reverse((key, id, k)));
        }
    }
}

impl<K: Ord + Copy> Iterator for Merged<'_, K> {
    type Item = (K, InstanceId);

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((key, id, k)) = self.heap.pop()?;
        self.advance(k);
        Some((key, id))
    }
}

/// Whether `chain` ranks candidates at all: `random` and an empty chain
/// take any fit.
fn ranks(chain: &[Strategy]) -> bool {
    !matches!(chain.first(), None | Some(Strategy::Random))
}

/// The allocation a placed task holds.
#[must_use]
pub fn allocation_for(task_id: &str, task: &TaskRequest) -> Allocation {
    Allocation {
        task: task_id.to_owned(),
        cpu: task.cpu,
        memory: task.memory,
        ports: task.ports.clone(),
        group: task.group.clone(),
        family: task.family.clone(),
    }
}
