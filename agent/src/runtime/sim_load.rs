//! The load simulated containers report (`gantry agent --runtime sim
//! --sim-load FILE`), so that auto scaling can be tried without burning
//! CPU: the file maps a task group to what the whole group demands, as
//! JSON — `{"service:web": {"cpu": 600, "memory": 300}}`, CPU units and
//! MiB — and that demand is shared evenly by the group's running
//! containers, as a load balancer shares requests. Starting more tasks
//! lowers each one's share, so target tracking can reach its target. The
//! file is read at every measure; the count of running
//! containers is shared by every simulated instance of one process.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use serde::Deserialize;

/// What a group demands (or one container's share of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// CPU units (1024 per core).
    #[serde(default)]
    pub cpu: f64,
    /// MiB.
    #[serde(default)]
    pub memory: f64,
}

/// The demand file, and which containers of each group run.
#[derive(Debug, Default)]
pub struct SimLoad {
    file: Option<PathBuf>,
    /// What the file last said.
    read: Mutex<BTreeMap<String, Demand>>,
    running: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl SimLoad {
    /// The demand written in `file` (none until it exists).
    #[must_use]
    pub fn from_file(file: PathBuf) -> Self {
        Self {
            file: Some(file),
            ..Self::default()
        }
    }

    pub(super) fn started(&self, group: &str, container: &str) {
        self.with_running(|r| {
            r.entry(group.to_owned())
                .or_default()
                .insert(container.to_owned());
        });
    }

    pub(super) fn stopped(&self, group: &str, container: &str) {
        self.with_running(|r| {
            if let Some(set) = r.get_mut(group) {
                set.remove(container);
                if set.is_empty() {
                    r.remove(group);
                }
            }
        });
    }

    /// One running container's share of its group's demand.
    pub(super) fn share(&self, group: &str) -> Demand {
        let demand = self.demand(group);
        let running = self.with_running(|r| r.get(group).map_or(0, BTreeSet::len));
        #[allow(clippy::cast_precision_loss)] // a count of containers
        let n = running.max(1) as f64;
        Demand {
            cpu: demand.cpu / n,
            memory: demand.memory / n,
        }
    }

    fn with_running<T>(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeSet<String>>) -> T) -> T {
        f(&mut self.running.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The group's demand as the file says now. A file that cannot be
    /// parsed leaves the demand it said before, with a warning.
    fn demand(&self, group: &str) -> Demand {
        let Some(file) = &self.file else {
            return Demand::default();
        };
        // Read at each measure (a few bytes, once a stats interval per
        // container), so that a test can change it at any time.
        let mut known = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        match std::fs::read(file).map(|bytes| serde_json::from_slice(&bytes)) {
            Ok(Ok(demands)) => *known = demands,
            Ok(Err(e)) => {
                tracing::warn!(file = %file.display(), error = %e, "the simulated load is not valid JSON");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => known.clear(),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the simulated load");
            }
        }
        known.get(group).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_demand_is_shared_by_its_running_containers_and_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("load.json");
        let load = SimLoad::from_file(file.clone());
        assert_eq!(load.share("service:web"), Demand::default(), "no file yet");
        std::fs::write(&file, r#"{"service:web": {"cpu": 600, "memory": 300}}"#).unwrap();
        load.started("service:web", "a");
        assert_eq!(load.share("service:web").cpu, 600.0);
        load.started("service:web", "b");
        load.started("service:web", "c");
        load.started("service:api", "d");
        assert_eq!(load.share("service:web").cpu, 200.0);
        assert_eq!(load.share("service:web").memory, 100.0);
        assert_eq!(load.share("service:api"), Demand::default());
        load.stopped("service:web", "c");
        assert_eq!(load.share("service:web").cpu, 300.0);
        std::fs::write(&file, "not json").unwrap();
        assert_eq!(load.share("service:web").cpu, 300.0, "what it said before");
        std::fs::write(&file, r#"{"service:web": {"cpu": 60}}"#).unwrap();
        assert_eq!(load.share("service:web").cpu, 30.0);
        assert_eq!(load.share("service:web").memory, 0.0);
    }
}
