//! Every namespace's instances as the service plan takes them, converted
//! once per change as the watch brings it rather than on each reconcile.
//!
//! A reconcile that walked every instance of the cluster cost what the
//! cluster holds: at ten thousand instances that was most of the
//! controller's time (docs/scale.md). Here a reconcile takes a shared
//! snapshot, rebuilt only after an instance of its namespace changed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use crds::v1alpha1::ContainerInstance;
use kube::{ResourceExt, runtime::watcher::Event};

use crate::{
    cache::{Index, Watched},
    convert,
    placement::InstanceSpec,
};

pub type Snapshot = Arc<Vec<Arc<InstanceSpec>>>;

#[derive(Default)]
pub struct InstanceSpecs {
    inner: Mutex<Watched<Namespaces>>,
}

#[derive(Default)]
struct Namespaces(HashMap<String, Namespace>);

#[derive(Default)]
struct Namespace {
    by_name: BTreeMap<String, Arc<InstanceSpec>>,
    /// The instances in name order, until one changes.
    snapshot: Option<Snapshot>,
}

impl Index<ContainerInstance> for Namespaces {
    fn insert(&mut self, ci: &ContainerInstance) {
        let ns = self
            .0
            .entry(ci.namespace().unwrap_or_default())
            .or_default();
        ns.by_name
            .insert(ci.name_any(), Arc::new(convert::instance_spec(ci)));
        ns.snapshot = None;
    }

    fn remove(&mut self, ci: &ContainerInstance) {
        if let Some(ns) = self.0.get_mut(&ci.namespace().unwrap_or_default()) {
            ns.by_name.remove(&ci.name_any());
            ns.snapshot = None;
        }
    }
}

impl InstanceSpecs {
    /// Take in one event of the instance watch.
    pub fn apply(&self, event: &Event<ContainerInstance>) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(event);
    }

    /// The namespace's instances, in name order.
    pub fn of(&self, namespace: &str) -> Snapshot {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ns) = inner.live.0.get_mut(namespace) else {
            return Snapshot::default();
        };
        Arc::clone(
            ns.snapshot
                .get_or_insert_with(|| Arc::new(ns.by_name.values().cloned().collect())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(namespace: &str, name: &str, draining: bool) -> ContainerInstance {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "registeredResources": {"cpu": 1024, "memory": 2048},
                "state": if draining { "DRAINING" } else { "ACTIVE" },
            },
        }))
        .expect("an instance")
    }

    fn names(snapshot: &Snapshot) -> Vec<(&str, bool)> {
        snapshot
            .iter()
            .map(|i| (i.name.as_str(), i.draining))
            .collect()
    }

    #[test]
    fn each_namespace_sees_its_instances_as_the_watch_last_showed_them() {
        let specs = InstanceSpecs::default();
        specs.apply(&Event::Init);
        for (ns, name) in [("a", "i-2"), ("b", "i-1"), ("a", "i-1")] {
            specs.apply(&Event::InitApply(instance(ns, name, false)));
        }
        // Nothing until the first list is done.
        assert!(specs.of("a").is_empty());
        specs.apply(&Event::InitDone);
        let first = specs.of("a");
        assert_eq!(names(&first), [("i-1", false), ("i-2", false)]);
        assert!(Arc::ptr_eq(&first, &specs.of("a")), "unchanged: shared");

        specs.apply(&Event::Apply(instance("a", "i-2", true)));
        specs.apply(&Event::Delete(instance("a", "i-1", false)));
        assert_eq!(names(&specs.of("a")), [("i-2", true)]);
        assert_eq!(names(&first), [("i-1", false), ("i-2", false)], "taken");
        assert_eq!(names(&specs.of("b")), [("i-1", false)]);

        // A relist replaces everything once done.
        specs.apply(&Event::Init);
        specs.apply(&Event::InitApply(instance("b", "i-9", false)));
        assert_eq!(names(&specs.of("a")), [("i-2", true)]);
        specs.apply(&Event::InitDone);
        assert!(specs.of("a").is_empty());
        assert_eq!(names(&specs.of("b")), [("i-9", false)]);
    }
}
