//! The scheduler's picture of each cluster: the placement engine's state
//! fed from the ContainerInstance watch and from the scheduler's own
//! writes, plus the reservations it has made but not yet seen stored.
//!
//! Allocations are keyed `<task uid>@<instance>`: while two schedulers
//! race, one task may briefly hold a reservation on two instances, and the
//! engine must count both.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crds::v1alpha1::ContainerInstance;
use kube::ResourceExt;

use crate::{
    convert,
    placement::{Allocation, ClusterState},
};

#[must_use]
pub fn key(uid: &str, instance: &str) -> String {
    format!("{uid}@{instance}")
}

/// One namespace: an ECS cluster.
#[derive(Debug, Default)]
pub struct Cluster {
    pub state: ClusterState,
    instances: HashMap<String, Arc<ContainerInstance>>,
    /// Task uid → an instance whose stored allocations hold it.
    reserved: HashMap<String, String>,
    /// The uids of every stored allocation, by instance (a task may
    /// briefly be stored on two instances while schedulers race). By
    /// instance, so that taking in one instance costs what it holds, not
    /// what the cluster holds.
    stored: HashMap<String, HashSet<String>>,
    /// Reservations decided here and not yet confirmed, per instance.
    inflight: HashMap<String, Vec<Allocation>>,
    /// Tasks desired STOPPED (uids): their allocations keep their room
    /// until released, but count in no task group, as ECS evaluates
    /// `distinctInstance` (and spread) on desired status.
    stopping: HashSet<String>,
    /// Whether capacity may have changed since unplaceable tasks were
    /// last tried.
    pub changed: bool,
}

impl Cluster {
    /// The latest object seen of an instance.
    #[must_use]
    pub fn instance(&self, name: &str) -> Option<&Arc<ContainerInstance>> {
        self.instances.get(name)
    }

    /// The instance whose stored allocations hold this task, if any.
    #[must_use]
    pub fn reserved_on(&self, uid: &str) -> Option<&str> {
        self.reserved.get(uid).map(String::as_str)
    }

    /// Take in an instance as stored, unless an object as new was already
    /// applied (the watch may trail the scheduler's own writes).
    pub fn apply(&mut self, ci: Arc<ContainerInstance>) {
        let name = ci.name_any();
        if let Some(old) = self.instances.get(&name)
            && !newer(&ci, old)
        {
            return;
        }
        self.state.upsert_instance(convert::instance_spec(&ci));
        self.instances.insert(name.clone(), Arc::clone(&ci));
        self.sync(&name);
        self.changed = true;
    }

    pub fn remove(&mut self, name: &str) {
        self.state.remove_instance(name);
        self.instances.remove(name);
        self.unstore(name);
        self.inflight.remove(name);
        self.changed = true;
    }

    /// Names of every instance, for a relist to drop the vanished.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.instances.keys().cloned().collect()
    }

    /// A task is desired STOPPED: from now on its allocation counts in no
    /// task group, so a replacement may take its place while it stops.
    pub fn stopping(&mut self, uid: &str) {
        if !self.stopping.insert(uid.to_owned()) {
            return;
        }
        if let Some(on) = self.reserved.get(uid).cloned()
            && self.instances.contains_key(&on)
        {
            self.sync(&on);
            self.changed = true;
        }
    }

    /// A task is gone: nothing more to remember of it.
    pub fn forget(&mut self, uid: &str) {
        self.stopping.remove(uid);
    }

    /// Record a reservation being written to `instance`.
    pub fn hold(&mut self, instance: &str, allocation: Allocation) {
        if self.state.allocate_on(instance, allocation.clone()).is_ok() {
            self.inflight
                .entry(instance.to_owned())
                .or_default()
                .push(allocation);
        }
    }

    /// A reservation's write is over: from now on only the stored object
    /// says whether it holds.
    pub fn settle(&mut self, instance: &str, uid: &str) {
        let key = key(uid, instance);
        if let Some(held) = self.inflight.get_mut(instance) {
            held.retain(|a| a.task != key);
        }
        if !self.stored.get(instance).is_some_and(|s| s.contains(uid)) {
            self.state.release(&key);
        }
    }

    /// Make the engine's allocations on `name` those stored, plus the
    /// reservations still being written.
    fn sync(&mut self, name: &str) {
        let Some(id) = self.state.instance_id(name) else {
            return;
        };
        let held: Vec<String> = self.state.allocations(id).map(|a| a.task.clone()).collect();
        for task in held {
            self.state.release(&task);
        }
        self.unstore(name);
        let stored = self.instances[name]
            .status
            .as_ref()
            .map(|s| s.allocations.as_slice())
            .unwrap_or_default();
        for a in stored {
            let key = key(&a.task_uid, name);
            let mut allocation = convert::allocation(key.clone(), a);
            if self.stopping.contains(&a.task_uid) {
                allocation.group.clear();
            }
            if self.state.allocate(id, allocation).is_ok() {
                self.reserved.insert(a.task_uid.clone(), name.to_owned());
                self.stored
                    .entry(name.to_owned())
                    .or_default()
                    .insert(a.task_uid.clone());
            }
        }
        for allocation in self.inflight.get(name).into_iter().flatten() {
            // Already stored, or not: either way it is counted once.
            let _ = self.state.allocate(id, allocation.clone());
        }
    }

    /// Forget what was stored on `name`.
    fn unstore(&mut self, name: &str) {
        for uid in self.stored.remove(name).into_iter().flatten() {
            if self.reserved.get(&uid).is_some_and(|on| on == name) {
                self.reserved.remove(&uid);
            }
        }
    }
}

/// Whether `a` is a later version than `b`. Kubernetes calls
/// resourceVersions opaque, but every real store (etcd, and Gantry's
/// SQLite) issues increasing integers; anything else is taken as newer.
fn newer(a: &ContainerInstance, b: &ContainerInstance) -> bool {
    match (
        a.resource_version().and_then(|v| v.parse::<u64>().ok()),
        b.resource_version().and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{Allocation as Stored, ContainerInstanceStatus};
    use serde_json::json;

    fn instance(rv: &str, allocations: &[(&str, u32)]) -> Arc<ContainerInstance> {
        let mut ci: ContainerInstance = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
            "metadata": {"name": "i-1", "namespace": "default", "resourceVersion": rv},
            "spec": {"registeredResources": {"cpu": 1024, "memory": 1000}},
        }))
        .expect("an instance");
        ci.status = Some(ContainerInstanceStatus {
            agent_connected: true,
            allocations: allocations
                .iter()
                .map(|(uid, memory)| Stored {
                    task: format!("t-{uid}"),
                    task_uid: (*uid).to_owned(),
                    group: None,
                    task_definition: None,
                    cpu: 0,
                    memory: *memory,
                    ports: vec![],
                    ports_udp: vec![],
                })
                .collect(),
            ..ContainerInstanceStatus::default()
        });
        Arc::new(ci)
    }

    fn used_memory(cluster: &Cluster) -> u32 {
        let id = cluster.state.instance_id("i-1").expect("known");
        cluster.state.allocations(id).map(|a| a.memory).sum()
    }

    fn held(uid: &str, memory: u32) -> Allocation {
        Allocation {
            task: key(uid, "i-1"),
            cpu: 0,
            memory,
            ports: vec![],
            group: String::new(),
            family: String::new(),
        }
    }

    #[test]
    fn an_older_object_never_replaces_a_newer_one() {
        let mut c = Cluster::default();
        c.apply(instance("10", &[("a", 100), ("b", 200)]));
        c.apply(instance("9", &[("a", 100)]));
        assert_eq!(used_memory(&c), 300);
        assert_eq!(c.reserved_on("b"), Some("i-1"));
        c.apply(instance("11", &[("b", 200)]));
        assert_eq!(used_memory(&c), 200);
        assert_eq!(c.reserved_on("a"), None);
    }

    #[test]
    fn a_reservation_in_flight_counts_until_settled_and_once_when_stored() {
        let mut c = Cluster::default();
        c.apply(instance("1", &[]));
        c.hold("i-1", held("x", 300));
        // Someone else's write lands first: the watch must not forget ours.
        c.apply(instance("2", &[("y", 100)]));
        assert_eq!(used_memory(&c), 400);
        // Ours is stored: counted once, and it survives settling.
        c.apply(instance("3", &[("y", 100), ("x", 300)]));
        assert_eq!(used_memory(&c), 400);
        c.settle("i-1", "x");
        assert_eq!(used_memory(&c), 400);
        // One that lost is gone after settling.
        c.hold("i-1", held("z", 50));
        assert_eq!(used_memory(&c), 450);
        c.settle("i-1", "z");
        assert_eq!(used_memory(&c), 400);
    }

    #[test]
    fn a_task_desired_stopped_keeps_its_room_but_leaves_its_group() {
        let mut c = Cluster::default();
        let grouped = |rv: &str| {
            let mut ci = (*instance(rv, &[("u1", 100), ("u2", 100)])).clone();
            for a in &mut ci.status.as_mut().expect("status").allocations {
                a.group = Some("service:web".to_owned());
            }
            Arc::new(ci)
        };
        c.apply(grouped("1"));
        let id = c.state.instance_id("i-1").expect("known");
        assert_eq!(c.state.group_count(id, "service:web"), 2);
        c.changed = false;
        c.stopping("u1");
        assert!(c.changed, "a place may have opened");
        assert_eq!(
            c.state.group_count(id, "service:web"),
            1,
            "u1 counts no more"
        );
        assert_eq!(used_memory(&c), 200, "but its room stays taken");
        // A newer version of the instance is read the same way.
        c.apply(grouped("2"));
        assert_eq!(c.state.group_count(id, "service:web"), 1);
        assert_eq!(used_memory(&c), 200);
        // Told before its allocation is seen, it still counts in no group.
        c.stopping("u3");
        let mut ci = (*grouped("3")).clone();
        let mut third = ci.status.as_ref().expect("status").allocations[0].clone();
        third.task_uid = "u3".to_owned();
        ci.status.as_mut().expect("status").allocations.push(third);
        c.apply(Arc::new(ci));
        assert_eq!(c.state.group_count(id, "service:web"), 1, "u2 alone");
        assert_eq!(used_memory(&c), 300);
        c.forget("u1");
        c.apply(grouped("4"));
        assert_eq!(
            c.state.group_count(id, "service:web"),
            2,
            "u1 forgotten: counted again"
        );
    }
}

#[cfg(test)]
mod churn {
    use super::*;
    use crate::placement::{BinpackField, Strategy, TaskRequest};

    /// 128 CPU and 16 MiB, binpacked by memory: 64 fill an instance.
    fn binpacked_task() -> TaskRequest {
        TaskRequest {
            cpu: 128,
            memory: 16,
            ports: vec![],
            group: "g".into(),
            family: "f".into(),
            constraints: vec![],
            strategy: vec![Strategy::Binpack(BinpackField::Memory)],
        }
    }

    #[test]
    fn placements_never_exceed_capacity_through_syncs() {
        let mut c = Cluster::default();
        let mut ci: ContainerInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
            "metadata": {"name": "i-1", "namespace": "default", "resourceVersion": "1"},
            "spec": {"registeredResources": {"cpu": 8192, "memory": 1024}},
            "status": {"agentConnected": true},
        }))
        .expect("ci");
        c.apply(Arc::new(ci.clone()));
        let req = binpacked_task();
        let mut rng = rand::rng();
        let mut placed = 0;
        for i in 0..100u32 {
            let Ok(p) = c.state.place(&req, &mut rng) else {
                continue;
            };
            let uid = format!("u{i}");
            c.hold(
                &p.name,
                crate::placement::allocation_for(&key(&uid, &p.name), &req),
            );
            placed += 1;
            if i.is_multiple_of(7) {
                // The watch delivers an unrelated, newer version.
                ci.metadata.resource_version = Some((100 + i).to_string());
                c.apply(Arc::new(ci.clone()));
            }
        }
        assert_eq!(placed, 64);
    }

    #[test]
    fn binpack_with_syncs_on_many_instances_never_overcommits() {
        let mut c = Cluster::default();
        let mut objects = Vec::new();
        for i in 0..10 {
            let ci: ContainerInstance = serde_json::from_value(serde_json::json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "ContainerInstance",
                "metadata": {"name": format!("i-{i}"), "namespace": "default", "resourceVersion": "1"},
                "spec": {"registeredResources": {"cpu": 8192, "memory": 1024}},
                "status": {"agentConnected": true},
            })).expect("ci");
            c.apply(Arc::new(ci.clone()));
            objects.push(ci);
        }
        let req = binpacked_task();
        let mut rng = rand::rng();
        let mut rv = 1u64;
        for i in 0..700u32 {
            if let Ok(p) = c.state.place(&req, &mut rng) {
                let uid = format!("u{i}");
                c.hold(
                    &p.name,
                    crate::placement::allocation_for(&key(&uid, &p.name), &req),
                );
                // Store it on the object, as a round would, sometimes.
                let n: usize = p.name[2..].parse().unwrap();
                if i.is_multiple_of(3) {
                    rv += 1;
                    let o = &mut objects[n];
                    o.metadata.resource_version = Some(rv.to_string());
                    let st = o.status.get_or_insert_with(Default::default);
                    st.allocations.push(serde_json::from_value(serde_json::json!({"task": uid, "taskUid": uid, "cpu": 128, "memory": 16})).unwrap());
                    c.apply(Arc::new(o.clone()));
                    c.settle(&p.name, &uid);
                }
            }
            for id in c.state.instance_ids().collect::<Vec<_>>() {
                let used: u32 = c.state.allocations(id).map(|a| a.memory).sum();
                assert!(used <= 1024, "over-committed at {i}: {used}");
            }
        }
    }
}
