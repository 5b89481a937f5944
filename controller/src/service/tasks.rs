//! The tasks of every Service, from one watch, filed by service; and what
//! each reconcile wrote to them, so that the next one reads the cache only
//! once it holds those writes.
//!
//! Listing a service's tasks from the API server on every reconcile is a
//! consistent read but costs the server a scan of the namespace and the
//! controller a decode of every task, each time any task of the service
//! changes: at a thousand tasks a service, that was most of the API
//! server's time (docs/scale.md). A cache alone would let a reconcile miss
//! the tasks the one before it created and stop a task twice on scale-in,
//! so each reconcile's writes are remembered as expectations, as
//! Kubernetes' ReplicaSet controller does, and until the cache shows them
//! the service's tasks are listed from the API server as before.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use crds::{labels, v1alpha1::Task};
use kube::{ResourceExt, runtime::watcher::Event};

use crate::cache::{Index, Watched};

/// A service: its namespace and name.
type ServiceKey = (String, String);

/// How long an unmet expectation is kept: a write the watch has not shown
/// by then (its task deleted meanwhile, or a resourceVersion that cannot be
/// ordered) stops sending reconciles to the API server.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct ServiceTasks {
    index: RwLock<Watched<Filed>>,
    expected: Mutex<HashMap<ServiceKey, Vec<Expected>>>,
}

#[derive(Default)]
struct Filed {
    by_service: HashMap<ServiceKey, BTreeMap<String, Arc<Task>>>,
    /// The service each task is filed under, by namespace and task name.
    service_of: HashMap<(String, String), String>,
}

/// A write to a task: the resourceVersion it left the task at, if known
/// (a create refused because another reconcile started the slot is not).
#[derive(Clone, Debug)]
pub struct Written {
    pub task: String,
    pub version: Option<String>,
}

struct Expected {
    written: Written,
    at: Instant,
}

impl Index<Task> for Filed {
    fn insert(&mut self, task: &Task) {
        let namespace = task.namespace().unwrap_or_default();
        let name = task.name_any();
        self.forget(&namespace, &name);
        let Some(service) = task.labels().get(labels::SERVICE) else {
            return;
        };
        self.by_service
            .entry((namespace.clone(), service.clone()))
            .or_default()
            .insert(name.clone(), Arc::new(task.clone()));
        self.service_of.insert((namespace, name), service.clone());
    }

    fn remove(&mut self, task: &Task) {
        self.forget(&task.namespace().unwrap_or_default(), &task.name_any());
    }
}

impl Filed {
    fn forget(&mut self, namespace: &str, name: &str) {
        let Some(service) = self
            .service_of
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        let key = (namespace.to_owned(), service);
        if let Some(tasks) = self.by_service.get_mut(&key) {
            tasks.remove(name);
            if tasks.is_empty() {
                self.by_service.remove(&key);
            }
        }
    }
}

impl ServiceTasks {
    /// Take in one event of the watch of services' tasks.
    pub fn apply(&self, event: &Event<Task>) {
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(event);
    }

    /// Remember what a reconcile of the service wrote to its tasks.
    pub fn expect(&self, namespace: &str, service: &str, written: Vec<Written>) {
        if written.is_empty() {
            return;
        }
        let at = Instant::now();
        self.expected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((namespace.to_owned(), service.to_owned()))
            .or_default()
            .extend(written.into_iter().map(|written| Expected { written, at }));
    }

    /// The tasks labelled for the service, from the cache, once it holds
    /// every write of the service's earlier reconciles; `None` until then.
    pub fn read(&self, namespace: &str, service: &str) -> Option<Vec<Arc<Task>>> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        if !index.ready {
            return None;
        }
        let key = (namespace.to_owned(), service.to_owned());
        let tasks = index.live.by_service.get(&key);
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pending) = expected.get_mut(&key) {
            pending.retain(|e| {
                e.at.elapsed() < PATIENCE
                    && !shown(tasks.and_then(|t| t.get(&e.written.task)), &e.written)
            });
            if !pending.is_empty() {
                return None;
            }
            expected.remove(&key);
        }
        Some(
            tasks
                .into_iter()
                .flat_map(BTreeMap::values)
                .cloned()
                .collect(),
        )
    }
}

/// Whether the cached task shows a write: it is there, at the version the
/// write left or a later one. resourceVersions are compared as numbers, as
/// Gantry's API server and etcd-backed ones issue them; one that is not a
/// number only matches exactly (and otherwise waits out [`PATIENCE`]).
fn shown(cached: Option<&Arc<Task>>, written: &Written) -> bool {
    let Some(task) = cached else {
        return false;
    };
    let Some(wanted) = &written.version else {
        return true;
    };
    let Some(seen) = task.metadata.resource_version.as_ref() else {
        return false;
    };
    seen == wanted
        || matches!(
            (seen.parse::<u64>(), wanted.parse::<u64>()),
            (Ok(seen), Ok(wanted)) if seen > wanted
        )
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn task(name: &str, service: Option<&str>, version: &str) -> Task {
        Task {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some(version.to_owned()),
                labels: service
                    .map(|s| BTreeMap::from([(labels::SERVICE.to_owned(), s.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(serde_json::json!({"taskDefinition": "web"}))
                .expect("a task spec"),
            status: None,
        }
    }

    fn names(tasks: Option<Vec<Arc<Task>>>) -> Option<Vec<String>> {
        tasks.map(|t| t.iter().map(|t| t.name_any()).collect())
    }

    fn listed(cache: &ServiceTasks, tasks: &[Task]) {
        cache.apply(&Event::Init);
        for t in tasks {
            cache.apply(&Event::InitApply(t.clone()));
        }
        cache.apply(&Event::InitDone);
    }

    #[test]
    fn nothing_is_read_before_the_first_list_is_in() {
        let cache = ServiceTasks::default();
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(task("a-1-0", Some("a"), "5")));
        assert_eq!(names(cache.read("ns", "a")), None);
        cache.apply(&Event::InitDone);
        assert_eq!(names(cache.read("ns", "a")), Some(vec!["a-1-0".into()]));
    }

    #[test]
    fn tasks_are_filed_by_service_and_move_when_relabelled() {
        let cache = ServiceTasks::default();
        listed(
            &cache,
            &[
                task("a-1-0", Some("a"), "1"),
                task("b-1-0", Some("b"), "2"),
                task("a-1-1", Some("a"), "3"),
                task("loose", None, "4"),
            ],
        );
        assert_eq!(
            names(cache.read("ns", "a")),
            Some(vec!["a-1-0".into(), "a-1-1".into()])
        );
        cache.apply(&Event::Apply(task("a-1-0", Some("b"), "6")));
        assert_eq!(names(cache.read("ns", "a")), Some(vec!["a-1-1".into()]));
        assert_eq!(
            names(cache.read("ns", "b")),
            Some(vec!["a-1-0".into(), "b-1-0".into()])
        );
        cache.apply(&Event::Delete(task("b-1-0", Some("b"), "7")));
        assert_eq!(names(cache.read("ns", "b")), Some(vec!["a-1-0".into()]));
        assert_eq!(names(cache.read("other", "a")), Some(vec![]));
    }

    #[test]
    fn a_relist_replaces_what_was_filed() {
        let cache = ServiceTasks::default();
        listed(
            &cache,
            &[task("a-1-0", Some("a"), "1"), task("a-1-1", Some("a"), "2")],
        );
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(task("a-1-1", Some("a"), "9")));
        // Until the relist is done, the old view stands.
        assert_eq!(names(cache.read("ns", "a")).map(|n| n.len()), Some(2));
        cache.apply(&Event::InitDone);
        assert_eq!(names(cache.read("ns", "a")), Some(vec!["a-1-1".into()]));
    }

    #[test]
    fn a_reconcile_reads_the_cache_only_once_it_shows_the_writes_before() {
        let cache = ServiceTasks::default();
        listed(
            &cache,
            &[
                task("a-1-0", Some("a"), "10"),
                task("b-1-0", Some("b"), "11"),
            ],
        );
        cache.expect(
            "ns",
            "a",
            vec![
                Written {
                    task: "a-1-1".into(),
                    version: None,
                },
                Written {
                    task: "a-1-0".into(),
                    version: Some("14".into()),
                },
            ],
        );
        assert_eq!(names(cache.read("ns", "a")), None, "neither write shown");
        assert!(
            cache.read("ns", "b").is_some(),
            "another service is not held"
        );
        cache.apply(&Event::Apply(task("a-1-1", Some("a"), "12")));
        assert_eq!(names(cache.read("ns", "a")), None, "the stop not shown");
        cache.apply(&Event::Apply(task("a-1-0", Some("a"), "13")));
        assert_eq!(names(cache.read("ns", "a")), None, "an older version");
        cache.apply(&Event::Apply(task("a-1-0", Some("a"), "15")));
        assert_eq!(
            names(cache.read("ns", "a")),
            Some(vec!["a-1-0".into(), "a-1-1".into()])
        );
    }

    #[test]
    fn versions_that_are_not_numbers_are_shown_only_exactly() {
        let written = Written {
            task: "a".into(),
            version: Some("x7".into()),
        };
        let at = |v: &str| Arc::new(task("a", Some("s"), v));
        assert!(shown(Some(&at("x7")), &written));
        assert!(!shown(Some(&at("x8")), &written));
        assert!(!shown(None, &written));
        let created = Written {
            task: "a".into(),
            version: None,
        };
        assert!(shown(Some(&at("1")), &created));
    }
}
