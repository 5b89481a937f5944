//! A cgroup per task, so that task-level `cpu` and `memory` are limits on
//! the host as ECS's agent makes them (its `/ecs/<task>` cgroup): the
//! task's containers are created under it (Docker's `CgroupParent`), and
//! what they use together cannot pass it. Docker's `cgroupfs` driver
//! only: a parent is a path under the cgroup mount, which the agent
//! writes before the first container and removes after the last.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Where task cgroups live, under the hierarchy's root.
const PARENT: &str = "gantry";
/// CFS period, as Docker's default (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// What one task may use together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU units (1024 = one CPU): a hard limit, as in ECS.
    pub cpu: Option<u32>,
    pub memory_mib: Option<u32>,
}

/// cgroup v1 (one hierarchy per controller) or v2 (one unified tree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The host's cgroup mount, as the Docker daemon sees it.
#[derive(Clone, Debug)]
pub struct TaskCgroups {
    root: PathBuf,
    version: Version,
}

impl TaskCgroups {
    /// Task cgroups under `root` (usually `/sys/fs/cgroup`), if the agent
    /// may make them there.
    ///
    /// # Errors
    /// Why not: no cgroup mount there, or no right to write it.
    pub fn open(root: &Path) -> io::Result<Self> {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else if root.join("memory").is_dir() {
            Version::V1
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} holds no cgroup hierarchy", root.display()),
            ));
        };
        let cgroups = Self {
            root: root.to_owned(),
            version,
        };
        // The parent is made once and kept: proof that it can be written.
        for dir in cgroups.parents() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        if version == Version::V2 {
            enable_controllers(root)?;
            enable_controllers(&root.join(PARENT))?;
        }
        Ok(cgroups)
    }

    /// The `CgroupParent` of a task's containers.
    #[must_use]
    pub fn parent(uid: &str) -> String {
        format!("/{PARENT}/{uid}")
    }

    fn parents(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => ["memory", "cpu"]
                .iter()
                .map(|c| self.root.join(c).join(PARENT))
                .collect(),
            Version::V2 => vec![self.root.join(PARENT)],
        }
    }

    /// Make the task's cgroup with its limits (again: it is idempotent).
    ///
    /// # Errors
    /// The file system's.
    pub fn create(&self, uid: &str, limits: Limits) -> io::Result<()> {
        let dir = |controller: &str| match self.version {
            Version::V1 => self.root.join(controller).join(PARENT).join(uid),
            Version::V2 => self.root.join(PARENT).join(uid),
        };
        let memory = limits
            .memory_mib
            .map(|m| (u64::from(m) * 1024 * 1024).to_string());
        // The quota is the task's share of one period; the kernel refuses
        // less than 1 ms.
        let quota = limits
            .cpu
            .map(|units| (u64::from(units) * CPU_PERIOD_US / 1024).max(1000));
        match self.version {
            Version::V1 => {
                let (memory_dir, cpu_dir) = (dir("memory"), dir("cpu"));
                std::fs::create_dir_all(&memory_dir)?;
                std::fs::create_dir_all(&cpu_dir)?;
                if let Some(bytes) = memory {
                    write(&memory_dir, "memory.limit_in_bytes", &bytes)?;
                }
                if let (Some(quota), Some(units)) = (quota, limits.cpu) {
                    write(&cpu_dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    write(&cpu_dir, "cpu.cfs_quota_us", &quota.to_string())?;
                    write(&cpu_dir, "cpu.shares", &units.max(2).to_string())?;
                }
            }
            Version::V2 => {
                let task = dir("");
                std::fs::create_dir_all(&task)?;
                if let Some(bytes) = memory {
                    write(&task, "memory.max", &bytes)?;
                }
                if let Some(quota) = quota {
                    write(&task, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        Ok(())
    }

    /// Remove the task's cgroup wherever the runtime made it (runc makes
    /// the parent in every hierarchy and leaves it behind).
    ///
    /// # Errors
    /// The file system's, but for what is already gone.
    pub fn remove(&self, uid: &str) -> io::Result<()> {
        let dirs: Vec<PathBuf> = match self.version {
            Version::V1 => std::fs::read_dir(&self.root)?
                .filter_map(Result::ok)
                .map(|entry| entry.path().join(PARENT).join(uid))
                .collect(),
            Version::V2 => vec![self.root.join(PARENT).join(uid)],
        };
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// cgroup v2 gives a child a controller only if its parent enables it.
fn enable_controllers(dir: &Path) -> io::Result<()> {
    write(dir, "cgroup.subtree_control", "+memory +cpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn v1_limits_go_to_the_memory_and_cpu_hierarchies() {
        let root = tempfile::tempdir().expect("tempdir");
        for controller in ["memory", "cpu", "pids"] {
            std::fs::create_dir(root.path().join(controller)).expect("mkdir");
        }
        let cgroups = TaskCgroups::open(root.path()).expect("v1");
        let limits = Limits {
            cpu: Some(256),
            memory_mib: Some(64),
        };
        cgroups.create("u1", limits).expect("create");
        let task = |c: &str| root.path().join(c).join("gantry/u1");
        assert_eq!(
            read(task("memory").join("memory.limit_in_bytes")),
            (64 * 1024 * 1024).to_string()
        );
        assert_eq!(read(task("cpu").join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(task("cpu").join("cpu.shares")), "256");
        // runc made it in another hierarchy too; every one goes.
        std::fs::create_dir_all(task("pids")).expect("mkdir");
        for c in ["memory", "cpu"] {
            for file in std::fs::read_dir(task(c)).expect("dir") {
                std::fs::remove_file(file.expect("entry").path()).expect("rm");
            }
        }
        cgroups.remove("u1").expect("remove");
        for c in ["memory", "cpu", "pids"] {
            assert!(!task(c).exists(), "{c}");
        }
        cgroups.remove("u1").expect("removing twice is fine");
    }

    #[test]
    fn v2_limits_go_to_one_directory_with_its_controllers_enabled() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").expect("v2");
        let cgroups = TaskCgroups::open(root.path()).expect("v2");
        cgroups
            .create(
                "u2",
                Limits {
                    cpu: Some(64),
                    memory_mib: None,
                },
            )
            .expect("create");
        let task = root.path().join("gantry/u2");
        assert_eq!(read(task.join("cpu.max")), "6250 100000");
        assert!(!task.join("memory.max").exists(), "no memory limit asked");
        assert_eq!(
            read(root.path().join("gantry/cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(TaskCgroups::parent("u2"), "/gantry/u2");
    }

    #[test]
    fn no_hierarchy_is_an_error_that_says_where() {
        let root = tempfile::tempdir().expect("tempdir");
        let e = TaskCgroups::open(root.path()).expect_err("nothing there");
        assert!(e.to_string().contains("no cgroup hierarchy"), "{e}");
    }
}
