//! The cluster as the engine sees it, fed incrementally, with the indexes
//! that keep one placement from scanning every instance.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::jiff::Timestamp;
use smallvec::SmallVec;

use super::{
    Allocation, BinpackField, Cause, Constraint, HostPort, InstanceSpec, SpreadField, Strategy,
    TaskRequest,
    query::{Fact, InstanceView},
};

/// An instance's slot in the state; stable while the instance exists.
pub type InstanceId = u32;
pub(super) type ClassId = usize;
pub(super) type GroupId = u32;

/// A change the state cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("no container instance {0:?}")]
    UnknownInstance(String),
    #[error("task {0:?} already holds an allocation")]
    DuplicateTask(String),
}

/// An instance: what sampling and the fit check read, inline; the rest out
/// of line, so that looking at many instances touches few cache lines.
#[derive(Clone, Debug)]
#[repr(align(64))]
pub(super) struct Instance {
    pub(super) class: ClassId,
    pub(super) cpu: u32,
    pub(super) memory: u32,
    pub(super) used_cpu: u64,
    pub(super) used_memory: u64,
    pub(super) draining: bool,
    pub(super) connected: bool,
    pub(super) awaiting_daemons: bool,
    /// The keys this instance is filed under in its class's capacity
    /// indexes, if it is filed. They may be stale-high (see `dirty`).
    indexed: Option<(i64, i64)>,
    /// Allocated since last filed: its real remaining resources are lower
    /// than its keys say.
    dirty: bool,
    pub(super) cold: Box<Cold>,
}

/// Laid out in the order an allocation touches it.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub(super) struct Cold {
    pub(super) name: String,
    pub(super) agent_version: Option<String>,
    pub(super) registered_at: Option<Timestamp>,
    pub(super) tasks: Vec<Allocation>,
    pub(super) groups: Counts,
    pub(super) families: Counts,
    pub(super) reserved: HashSet<HostPort>,
    pub(super) used_ports: HashMap<HostPort, u32>,
}

/// Tasks per group (or family) on one instance: a handful, kept inline so
/// that counting one more costs no extra memory access.
#[derive(Clone, Debug, Default)]
pub(super) struct Counts(SmallVec<[(u32, u32); 4]>);

impl Counts {
    pub(super) fn get(&self, key: u32) -> u32 {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, n)| *n)
    }

    fn add(&mut self, key: u32) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.0.push((key, 1)),
        }
    }

    fn remove_one(&mut self, key: u32) {
        if let Some(pos) = self.0.iter().position(|(k, _)| *k == key) {
            self.0[pos].1 -= 1;
            if self.0[pos].1 == 0 {
                self.0.swap_remove(pos);
            }
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.0.iter().copied()
    }
}

impl Instance {
    /// Whether any task may be placed here: tasks pinned here are checked
    /// by `ClusterState::check_pinned` instead.
    pub(super) fn schedulable(&self) -> bool {
        self.connected && !self.draining && !self.awaiting_daemons
    }

    pub(super) fn remaining_cpu(&self) -> i64 {
        i64::from(self.cpu) - self.used_cpu as i64
    }

    pub(super) fn remaining_memory(&self) -> i64 {
        i64::from(self.memory) - self.used_memory as i64
    }

    pub(super) fn remaining(&self, field: BinpackField) -> i64 {
        match field {
            BinpackField::Cpu => self.remaining_cpu(),
            BinpackField::Memory => self.remaining_memory(),
        }
    }

    fn port_free(&self, port: &HostPort) -> bool {
        !self.cold.reserved.contains(port) && !self.cold.used_ports.contains_key(port)
    }

    pub(super) fn group_count(&self, group: GroupId) -> u32 {
        self.cold.groups.get(group)
    }
}

/// Instances with identical attributes: a constraint over attributes holds
/// for all of them or none, so it is evaluated once per class.
#[derive(Debug, Default)]
pub(super) struct Class {
    pub(super) attributes: BTreeMap<String, String>,
    /// Schedulable members, for sampling.
    pub(super) members: Vec<InstanceId>,
    member_pos: HashMap<InstanceId, usize>,
    /// Schedulable members by remaining CPU (only once a task binpacks on
    /// CPU) and memory (always: it also finds instances with room).
    pub(super) by_cpu: BTreeSet<(i64, InstanceId)>,
    pub(super) by_memory: BTreeSet<(i64, InstanceId)>,
    /// Per group: the schedulable members running its tasks, by how many,
    /// so that spread over instances finds the fewest without visiting
    /// every task of the group.
    pub(super) by_group: HashMap<GroupId, BTreeSet<(u32, InstanceId)>>,
    /// Results of attribute-only expressions, by source text.
    memo: HashMap<String, bool>,
}

impl Class {
    /// Whether a schedulable member runs no task of `group` (any member,
    /// when the group has no tasks at all).
    pub(super) fn has_fresh(&self, group: Option<GroupId>) -> bool {
        let busy = group
            .and_then(|g| self.by_group.get(&g))
            .map_or(0, BTreeSet::len);
        self.members.len() > busy
    }

    /// Move a member from `before` tasks of `group` to `after`.
    fn regroup(&mut self, id: InstanceId, group: GroupId, before: u32, after: u32) {
        if !self.member_pos.contains_key(&id) {
            return;
        }
        if before > 0
            && let Some(set) = self.by_group.get_mut(&group)
        {
            set.remove(&(before, id));
            if set.is_empty() {
                self.by_group.remove(&group);
            }
        }
        if after > 0 {
            self.by_group.entry(group).or_default().insert((after, id));
        }
    }

    pub(super) fn index(&self, field: BinpackField) -> &BTreeSet<(i64, InstanceId)> {
        match field {
            BinpackField::Cpu => &self.by_cpu,
            BinpackField::Memory => &self.by_memory,
        }
    }
}

impl InstanceView for BTreeMap<String, String> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
    fn any_task_group(&self, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
    fn fact(&self, _: Fact) -> Option<String> {
        None
    }
}

/// A registered instance as a DAEMON service's eligibility sees it: its
/// attributes and facts, but no tasks (nor a count of them).
impl InstanceView for InstanceSpec {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
    fn any_task_group(&self, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
    fn fact(&self, fact: Fact) -> Option<String> {
        match fact {
            Fact::AgentConnected => Some(self.connected.to_string()),
            Fact::AgentVersion => self.agent_version.clone(),
            Fact::Ec2InstanceId => Some(self.name.clone()),
            Fact::RegisteredAt => self.registered_at.map(|t| t.to_string()),
            Fact::RunningTasksCount => None,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Interner {
    ids: HashMap<String, u32>,
    pub(super) names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 names");
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }

    pub(super) fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

/// What a task asks of an instance, resolved against the state once per
/// placement.
#[derive(Debug)]
pub(super) struct Prepared<'t> {
    pub(super) task: &'t TaskRequest,
    pub(super) group: Option<GroupId>,
    pub(super) distinct: bool,
    /// `memberOf` expressions, in the task's order, each flagged when it
    /// looks only at attributes (and so holds per class).
    pub(super) queries: Vec<(&'t super::Query, bool)>,
}

/// Counts of a group's tasks per value of an attribute (and on instances
/// without it).
#[derive(Clone, Debug, Default)]
pub(super) struct ValueCounts {
    present: HashMap<String, u32>,
    missing: u32,
}

impl ValueCounts {
    fn get(&self, value: Option<&str>) -> u32 {
        match value {
            Some(v) => self.present.get(v).copied().unwrap_or(0),
            None => self.missing,
        }
    }

    fn add(&mut self, value: Option<&str>, delta: i64) {
        let count = match value {
            Some(v) if !self.present.contains_key(v) => {
                self.present.entry(v.to_owned()).or_default()
            }
            Some(v) => self.present.get_mut(v).expect("checked"),
            None => &mut self.missing,
        };
        *count = u32::try_from(i64::from(*count) + delta).expect("spread counts stay in range");
        if let Some(v) = value.filter(|_| *count == 0) {
            self.present.remove(v);
        }
    }
}

/// The cluster: instances, their allocations, and the indexes over them.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub(super) slots: Vec<Option<Instance>>,
    free_slots: Vec<InstanceId>,
    by_name: HashMap<String, InstanceId>,
    pub(super) classes: Vec<Class>,
    class_ids: HashMap<BTreeMap<String, String>, ClassId>,
    /// Classes with at least one schedulable member.
    pub(super) live_classes: BTreeSet<ClassId>,
    pub(super) groups: Interner,
    families: Interner,
    /// Per group: the instances running its tasks, and how many.
    pub(super) group_members: HashMap<GroupId, HashMap<InstanceId, u32>>,
    /// Per group and attribute in use by a spread strategy: task counts per
    /// attribute value, kept up to date once first asked for.
    pub(super) spread: HashMap<GroupId, HashMap<String, ValueCounts>>,
    spread_tracked: HashMap<GroupId, Vec<String>>,
    task_home: HashMap<String, InstanceId>,
    /// Whether the classes' `by_cpu` indexes are kept.
    cpu_indexed: bool,
    /// Tasks found unplaceable and why, kept exact as allocations land
    /// (see [`Self::remember_refusal`]).
    refused: Vec<(TaskRequest, super::Unplaceable)>,
    /// Instances whose index keys are stale-high since an allocation.
    dirty: Vec<InstanceId>,
}

impl ClusterState {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registered instances, schedulable or not.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    #[must_use]
    pub fn instance_id(&self, name: &str) -> Option<InstanceId> {
        self.by_name.get(name).copied()
    }

    #[must_use]
    pub fn instance_name(&self, id: InstanceId) -> Option<&str> {
        self.instance(id).map(|i| i.cold.name.as_str())
    }

    /// The allocations held on an instance.
    pub fn allocations(&self, id: InstanceId) -> impl Iterator<Item = &Allocation> {
        self.instance(id)
            .into_iter()
            .flat_map(|i| i.cold.tasks.iter())
    }

    /// Registered `(cpu, memory)` of an instance.
    #[must_use]
    pub fn registered(&self, id: InstanceId) -> Option<(u32, u32)> {
        self.instance(id).map(|i| (i.cpu, i.memory))
    }

    /// Where a task's allocation is.
    #[must_use]
    pub fn task_instance(&self, task: &str) -> Option<InstanceId> {
        self.task_home.get(task).copied()
    }

    /// Every instance id in use.
    pub fn instance_ids(&self) -> impl Iterator<Item = InstanceId> + '_ {
        self.by_name.values().copied()
    }

    /// How many tasks of `family` run on an instance.
    #[must_use]
    pub fn family_count(&self, id: InstanceId, family: &str) -> u32 {
        let Some(family) = self.families.get(family) else {
            return 0;
        };
        self.instance(id).map_or(0, |i| i.cold.families.get(family))
    }

    /// How many tasks of `group` run on an instance.
    #[must_use]
    pub fn group_count(&self, id: InstanceId, group: &str) -> u32 {
        self.groups
            .get(group)
            .and_then(|g| self.group_members.get(&g))
            .and_then(|m| m.get(&id).copied())
            .unwrap_or(0)
    }

    pub(super) fn instance(&self, id: InstanceId) -> Option<&Instance> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Add an instance, or update it in place keeping its allocations.
    pub fn upsert_instance(&mut self, spec: InstanceSpec) -> InstanceId {
        self.refused.clear();
        let kept = self
            .by_name
            .get(&spec.name)
            .copied()
            .map(|id| self.take_instance(id))
            .unwrap_or_default();
        let class = self.class_for(&spec.attributes);
        let instance = Instance {
            class,
            cpu: spec.cpu,
            memory: spec.memory,
            used_cpu: 0,
            used_memory: 0,
            draining: spec.draining,
            connected: spec.connected,
            awaiting_daemons: spec.awaiting_daemons,
            indexed: None,
            dirty: false,
            cold: Box::new(Cold {
                name: spec.name.clone(),
                agent_version: spec.agent_version,
                registered_at: spec.registered_at,
                reserved: spec.reserved_ports.into_iter().collect(),
                ..Cold::default()
            }),
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(instance);
                id
            }
            None => {
                self.slots.push(Some(instance));
                InstanceId::try_from(self.slots.len() - 1).expect("fewer than 2^32 instances")
            }
        };
        self.by_name.insert(spec.name, id);
        self.index_insert(id);
        for allocation in kept {
            self.allocate(id, allocation)
                .expect("a kept allocation fits back where it was");
        }
        id
    }

    /// Remove an instance; its allocations are released and returned.
    pub fn remove_instance(&mut self, name: &str) -> Option<Vec<Allocation>> {
        let id = self.by_name.get(name).copied()?;
        Some(self.take_instance(id))
    }

    /// Record resources held for a task.
    ///
    /// # Errors
    /// An unknown instance, or a task that already holds an allocation.
    pub fn allocate(&mut self, id: InstanceId, allocation: Allocation) -> Result<(), StateError> {
        if self.task_home.contains_key(&allocation.task) {
            return Err(StateError::DuplicateTask(allocation.task));
        }
        if self.instance(id).is_none() {
            return Err(StateError::UnknownInstance(format!("#{id}")));
        }
        let refusals_before = self.refusal_causes(id);
        let group = self.groups.intern(&allocation.group);
        let family = self.families.intern(&allocation.family);
        let instance = self
            .slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .expect("checked above");
        instance.used_cpu += u64::from(allocation.cpu);
        instance.used_memory += u64::from(allocation.memory);
        let class = instance.class;
        let cold = &mut instance.cold;
        for port in &allocation.ports {
            *cold.used_ports.entry(*port).or_default() += 1;
        }
        let before = cold.groups.get(group);
        cold.groups.add(group);
        cold.families.add(family);
        self.classes[class].regroup(id, group, before, before + 1);
        let task = allocation.task.clone();
        cold.tasks.push(allocation);
        // Less remains now: the index keys become stale-high, which still
        // finds every instance with room; binpack refiles them first.
        if instance.indexed.is_some() && !instance.dirty {
            instance.dirty = true;
            self.dirty.push(id);
        }
        self.task_home.insert(task, id);
        *self
            .group_members
            .entry(group)
            .or_default()
            .entry(id)
            .or_default() += 1;
        self.count_spread(group, class, 1);
        self.update_refusals(id, refusals_before);
        Ok(())
    }

    /// Record resources held for a task on the named instance.
    ///
    /// # Errors
    /// As [`ClusterState::allocate`].
    pub fn allocate_on(
        &mut self,
        instance: &str,
        allocation: Allocation,
    ) -> Result<(), StateError> {
        let id = self
            .instance_id(instance)
            .ok_or_else(|| StateError::UnknownInstance(instance.to_owned()))?;
        self.allocate(id, allocation)
    }

    /// Release a task's allocation, wherever it is.
    pub fn release(&mut self, task: &str) -> Option<(InstanceId, Allocation)> {
        let id = self.task_home.remove(task)?;
        self.refused.clear();
        let (groups, families) = (&self.groups, &self.families);
        let instance = self
            .slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .expect("task_home points at a live slot");
        let pos = instance
            .cold
            .tasks
            .iter()
            .position(|a| a.task == task)
            .expect("task_home agrees with tasks");
        let allocation = instance.cold.tasks.swap_remove(pos);
        instance.used_cpu -= u64::from(allocation.cpu);
        instance.used_memory -= u64::from(allocation.memory);
        for port in &allocation.ports {
            decrement(&mut instance.cold.used_ports, port);
        }
        let group = groups.get(&allocation.group).expect("interned on allocate");
        let family = families
            .get(&allocation.family)
            .expect("interned on allocate");
        let before = instance.cold.groups.get(group);
        instance.cold.groups.remove_one(group);
        instance.cold.families.remove_one(family);
        let class = instance.class;
        self.classes[class].regroup(id, group, before, before - 1);
        // More remains now: a stale key could hide the room, so refile.
        self.refile(id);
        if let Some(members) = self.group_members.get_mut(&group) {
            decrement(members, &id);
        }
        self.count_spread(group, class, -1);
        Some((id, allocation))
    }

    fn take_instance(&mut self, id: InstanceId) -> Vec<Allocation> {
        self.refused.clear();
        let tasks: Vec<String> = self
            .instance(id)
            .map(|i| i.cold.tasks.iter().map(|a| a.task.clone()).collect())
            .unwrap_or_default();
        let released = tasks
            .iter()
            .filter_map(|t| self.release(t).map(|(_, a)| a))
            .collect();
        self.index_remove(id);
        if let Some(instance) = self.slots[id as usize].take() {
            self.by_name.remove(&instance.cold.name);
            self.free_slots.push(id);
        }
        released
    }

    fn class_for(&mut self, attributes: &BTreeMap<String, String>) -> ClassId {
        if let Some(id) = self.class_ids.get(attributes) {
            return *id;
        }
        let id = self.classes.len();
        self.classes.push(Class {
            attributes: attributes.clone(),
            ..Class::default()
        });
        self.class_ids.insert(attributes.clone(), id);
        id
    }

    /// Put a schedulable instance into its class's indexes.
    fn index_insert(&mut self, id: InstanceId) {
        let Some(instance) = self.instance(id) else {
            return;
        };
        if !instance.schedulable() {
            return;
        }
        let class_id = instance.class;
        let groups: SmallVec<[(u32, u32); 4]> = instance.cold.groups.iter().collect();
        let class = &mut self.classes[class_id];
        class.member_pos.insert(id, class.members.len());
        class.members.push(id);
        for (group, n) in groups {
            class.regroup(id, group, 0, n);
        }
        self.live_classes.insert(class_id);
        self.index_capacity(id);
    }

    /// Take an instance out of its class's indexes, when it leaves or
    /// stops being schedulable.
    fn index_remove(&mut self, id: InstanceId) {
        let Some(instance) = self.instance(id) else {
            return;
        };
        let class_id = instance.class;
        let groups: SmallVec<[(u32, u32); 4]> = instance.cold.groups.iter().collect();
        self.unindex_capacity(id);
        let class = &mut self.classes[class_id];
        for (group, n) in groups {
            class.regroup(id, group, n, 0);
        }
        if let Some(pos) = class.member_pos.remove(&id) {
            class.members.swap_remove(pos);
            if let Some(moved) = class.members.get(pos) {
                class.member_pos.insert(*moved, pos);
            }
        }
        if class.members.is_empty() {
            self.live_classes.remove(&class_id);
        }
    }

    /// Enter a schedulable instance's remaining resources in the capacity
    /// indexes (after they change).
    fn index_capacity(&mut self, id: InstanceId) {
        let cpu_indexed = self.cpu_indexed;
        let Some(instance) = self
            .slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .filter(|i| i.schedulable())
        else {
            return;
        };
        let (cpu, memory) = (instance.remaining_cpu(), instance.remaining_memory());
        instance.indexed = Some((cpu, memory));
        instance.dirty = false;
        let class = &mut self.classes[instance.class];
        if cpu_indexed {
            class.by_cpu.insert((cpu, id));
        }
        class.by_memory.insert((memory, id));
    }

    /// Take an instance's remaining resources out of the capacity indexes
    /// (before they change).
    fn unindex_capacity(&mut self, id: InstanceId) {
        let Some(instance) = self.slots.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some((cpu, memory)) = instance.indexed.take() else {
            return;
        };
        let class = &mut self.classes[instance.class];
        class.by_cpu.remove(&(cpu, id));
        class.by_memory.remove(&(memory, id));
    }

    /// File an instance under its current remaining resources.
    fn refile(&mut self, id: InstanceId) {
        self.unindex_capacity(id);
        self.index_capacity(id);
    }

    /// Refile every instance allocated to since it was last filed, so that
    /// the capacity indexes are exact (binpack walks them in order).
    pub(super) fn flush_capacity(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if self.instance(id).is_some_and(|i| i.dirty) {
                self.refile(id);
            }
        }
    }

    /// Start keeping the CPU capacity indexes, for binpack on CPU.
    pub(super) fn index_cpu(&mut self) {
        if self.cpu_indexed {
            return;
        }
        self.cpu_indexed = true;
        for (id, slot) in self.slots.iter().enumerate() {
            if let Some((cpu, _)) = slot.as_ref().and_then(|i| i.indexed) {
                let class = slot.as_ref().map_or(0, |i| i.class);
                let id = InstanceId::try_from(id).expect("slots are numbered by InstanceId");
                self.classes[class].by_cpu.insert((cpu, id));
            }
        }
    }

    fn count_spread(&mut self, group: GroupId, class: ClassId, delta: i32) {
        let Some(attributes) = self.spread_tracked.get(&group) else {
            return;
        };
        let values = &self.classes[class].attributes;
        let by_attribute = self
            .spread
            .get_mut(&group)
            .expect("tracked groups have counts");
        for attribute in attributes {
            by_attribute
                .get_mut(attribute)
                .expect("tracked attributes have counts")
                .add(values.get(attribute).map(String::as_str), i64::from(delta));
        }
    }

    /// Start keeping `group`'s task counts per value of `attribute`.
    pub(super) fn track_spread(&mut self, group: GroupId, attribute: &str) {
        if self
            .spread
            .get(&group)
            .is_some_and(|by_attribute| by_attribute.contains_key(attribute))
        {
            return;
        }
        let mut counts = ValueCounts::default();
        for (id, n) in self.group_members.get(&group).into_iter().flatten() {
            let class = self.instance(*id).expect("members are live").class;
            let value = self.classes[class].attributes.get(attribute);
            counts.add(value.map(String::as_str), i64::from(*n));
        }
        self.spread
            .entry(group)
            .or_default()
            .insert(attribute.to_owned(), counts);
        self.spread_tracked
            .entry(group)
            .or_default()
            .push(attribute.to_owned());
    }

    /// Whether a class satisfies an attribute-only expression, memoized.
    pub(super) fn class_matches(&mut self, class: ClassId, query: &super::Query) -> bool {
        let class = &mut self.classes[class];
        if let Some(hit) = class.memo.get(query.source()) {
            return *hit;
        }
        let hit = query.matches(&class.attributes);
        class.memo.insert(query.source().to_owned(), hit);
        hit
    }

    pub(super) fn prepare<'t>(&self, task: &'t TaskRequest) -> Prepared<'t> {
        Prepared {
            task,
            group: self.groups.get(&task.group),
            distinct: task
                .constraints
                .iter()
                .any(|c| matches!(c, Constraint::DistinctInstance)),
            queries: task
                .constraints
                .iter()
                .filter_map(|c| match c {
                    Constraint::MemberOf(q) => Some((q, !q.per_instance())),
                    Constraint::DistinctInstance => None,
                })
                .collect(),
        }
    }

    /// The first check `instance` fails for the task, in ECS's order.
    pub(super) fn check(&self, instance: &Instance, p: &Prepared<'_>) -> Result<(), Cause> {
        self.check_pinned(instance, p)?;
        if instance.awaiting_daemons {
            return Err(Cause::AwaitingDaemons);
        }
        Ok(())
    }

    /// [`Self::check`] for a task pinned to `instance`, which the room
    /// held for daemons does not keep out (it is a daemon's, or named by
    /// its creator).
    pub(super) fn check_pinned(&self, instance: &Instance, p: &Prepared<'_>) -> Result<(), Cause> {
        if instance.draining {
            return Err(Cause::Draining);
        }
        if !instance.connected {
            return Err(Cause::AgentDisconnected);
        }
        self.check_fit(instance, p, true)
    }

    /// Resources, ports and constraints; attribute-only expressions only
    /// when `class_queries` (the fast path checks them per class).
    pub(super) fn check_fit(
        &self,
        instance: &Instance,
        p: &Prepared<'_>,
        class_queries: bool,
    ) -> Result<(), Cause> {
        if instance.remaining_cpu() < i64::from(p.task.cpu) {
            return Err(Cause::InsufficientCpu);
        }
        if instance.remaining_memory() < i64::from(p.task.memory) {
            return Err(Cause::InsufficientMemory);
        }
        if let Some(port) = p.task.ports.iter().find(|port| !instance.port_free(port)) {
            return Err(Cause::PortInUse(*port));
        }
        for (query, per_class) in &p.queries {
            if *per_class && !class_queries {
                continue;
            }
            let view = View {
                state: self,
                instance,
            };
            if !query.matches(&view) {
                return Err(Cause::MemberOf(query.source().to_owned()));
            }
        }
        if p.distinct && p.group.is_some_and(|g| instance.group_count(g) > 0) {
            return Err(Cause::DistinctInstance);
        }
        Ok(())
    }

    /// The instance's rank under `chain`, lowest first: one number per
    /// strategy up to the first `random`.
    pub(super) fn key(
        &self,
        instance: &Instance,
        p: &Prepared<'_>,
        chain: &[Strategy],
        value_count: &dyn Fn(&str, Option<&str>) -> u32,
    ) -> Vec<i64> {
        let mut key = Vec::with_capacity(chain.len());
        for strategy in chain {
            key.push(match strategy {
                Strategy::Random => break,
                Strategy::Binpack(field) => instance.remaining(*field),
                Strategy::Spread(SpreadField::Instance) => {
                    i64::from(p.group.map_or(0, |g| instance.group_count(g)))
                }
                Strategy::Spread(SpreadField::Attribute(attribute)) => {
                    let value = self.classes[instance.class].attributes.get(attribute);
                    i64::from(value_count(attribute, value.map(String::as_str)))
                }
            });
        }
        key
    }

    /// The maintained count of the group's tasks on instances whose
    /// `attribute` is `value` (tracked attributes only).
    pub(super) fn spread_count(
        &self,
        group: Option<GroupId>,
        attribute: &str,
        value: Option<&str>,
    ) -> u32 {
        let Some(group) = group else { return 0 };
        self.spread
            .get(&group)
            .and_then(|by_attribute| by_attribute.get(attribute))
            .map_or(0, |counts| counts.get(value))
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ClusterState {
    /// Why no instance takes the task: every instance's first failed check.
    pub(super) fn explain(&self, p: &Prepared<'_>) -> super::Unplaceable {
        let mut causes = BTreeMap::new();
        for id in self.by_name.values() {
            let instance = self.instance(*id).expect("named instances are live");
            if let Err(cause) = self.check(instance, p) {
                *causes.entry(cause).or_default() += 1;
            }
        }
        super::Unplaceable {
            instances: self.len(),
            causes,
        }
    }

    /// The refusal remembered for a task equal to `task`, if nothing has
    /// made room since.
    pub(super) fn refusal(&self, task: &TaskRequest) -> Option<&super::Unplaceable> {
        self.refused
            .iter()
            .find(|(refused, _)| refused == task)
            .map(|(_, why)| why)
    }

    /// Remember that `task` fits nowhere, so that the next task asking the
    /// same (a service's pending tasks are alike) is refused without a
    /// scan. A release or an instance change forgets every refusal: room
    /// may have appeared. An allocation can change only its instance's
    /// cause, so it updates each refusal by that instance alone, and
    /// forgets one that the instance now takes (a `task:group` expression
    /// can admit a task where a new group runs).
    pub(super) fn remember_refusal(&mut self, task: &TaskRequest, why: &super::Unplaceable) {
        const KEPT: usize = 8;
        if self.refused.len() == KEPT {
            self.refused.remove(0);
        }
        self.refused.push((task.clone(), why.clone()));
    }

    /// Each remembered refusal's cause on `id`, before an allocation there.
    fn refusal_causes(&self, id: InstanceId) -> Vec<Result<(), Cause>> {
        let Some(instance) = self.instance(id) else {
            return Vec::new();
        };
        self.refused
            .iter()
            .map(|(task, _)| self.check(instance, &self.prepare(task)))
            .collect()
    }

    fn update_refusals(&mut self, id: InstanceId, before: Vec<Result<(), Cause>>) {
        if before.is_empty() {
            return;
        }
        let instance = self.instance(id).expect("allocated on a live instance");
        let after: Vec<_> = self
            .refused
            .iter()
            .map(|(task, _)| self.check(instance, &self.prepare(task)))
            .collect();
        let mut k = 0;
        self.refused.retain_mut(|(_, why)| {
            let (before, after) = (&before[k], &after[k]);
            k += 1;
            let Err(after) = after else { return false };
            if let Err(before) = before
                && let Some(n) = why.causes.get_mut(before)
            {
                *n -= 1;
                if *n == 0 {
                    why.causes.remove(before);
                }
            }
            *why.causes.entry(after.clone()).or_default() += 1;
            true
        });
    }
}

/// An instance as the query language sees it.
struct View<'a> {
    state: &'a ClusterState,
    instance: &'a Instance,
}

impl InstanceView for View<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.state.classes[self.instance.class]
            .attributes
            .get(name)
            .map(String::as_str)
    }

    fn any_task_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.instance
            .cold
            .groups
            .keys()
            .any(|g| pred(&self.state.groups.names[g as usize]))
    }

    fn fact(&self, fact: Fact) -> Option<String> {
        let instance = self.instance;
        match fact {
            Fact::AgentConnected => Some(instance.connected.to_string()),
            Fact::AgentVersion => instance.cold.agent_version.clone(),
            Fact::Ec2InstanceId => Some(instance.cold.name.clone()),
            Fact::RegisteredAt => instance.cold.registered_at.map(|t| t.to_string()),
            // The engine's own books: every task placed here and not yet
            // released, newer than the instance's stored count.
            Fact::RunningTasksCount => Some(instance.cold.tasks.len().to_string()),
        }
    }
}
