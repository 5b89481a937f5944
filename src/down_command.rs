//! `gantry down`: take down what `gantry up` started from a data
//! directory — the `gantry up` process if it still runs, then every
//! container its agents made (and their per-task volumes). The state in
//! the data directory stays, as after Ctrl-C.
//!
//! `gantry up` leaves a record in the data directory (`up.json`: its pid
//! and its cluster's namespace uid, which its agents label every
//! container with), so this finds its own containers and none of another
//! `gantry up` on the same Docker engine.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use agent::runtime::Docker;
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

/// What `gantry up` records for `gantry down`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub pid: u32,
    pub cluster: String,
    /// The uid of the cluster's namespace: the agents' container label.
    pub cluster_uid: String,
    /// Whether its agents ran Docker containers (`false`: simulated).
    pub docker: bool,
}

impl Record {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("up.json")
    }

    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn read(data_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(data_dir);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no gantry up has run with --data-dir {} ({} is missing)",
                data_dir.display(),
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not valid", path.display()))
    }
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory `gantry up` ran with.
    #[arg(long, value_name = "DIR", default_value = ".gantry")]
    data_dir: PathBuf,
    /// Docker's API socket [default: $DOCKER_HOST or the local socket].
    #[arg(long, value_name = "URI")]
    docker_host: Option<String>,
}

/// Whether `pid` is a running `gantry up` (not a process that took its
/// pid since).
fn running_up(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first()
            .is_some_and(|program| program.ends_with(b"gantry"))
            && args.contains(&&b"up"[..])
    })
}

pub fn run(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let record = Record::read(&args.data_dir)?;
    if running_up(record.pid) {
        println!("==> stopping gantry up (pid {})", record.pid);
        let sent = Command::new("kill")
            .args(["-TERM", &record.pid.to_string()])
            .status()
            .context("running kill")?;
        if !sent.success() && running_up(record.pid) {
            bail!("could not signal gantry up (pid {})", record.pid);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while running_up(record.pid) {
            if Instant::now() > deadline {
                bail!("gantry up (pid {}) did not stop within 60 s", record.pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        // A `--runtime sim` up made no containers.
        if record.docker {
            // The cgroups too, which the agents made for their tasks.
            let docker = Docker::connect(args.docker_host.as_deref())
                .await
                .context("is Docker running? pass --docker-host URI")?
                .with_task_cgroups(std::path::Path::new(agent::runtime::DEFAULT_CGROUP_ROOT))
                .await;
            let (containers, volumes) = docker
                .remove_cluster(&record.cluster_uid)
                .await
                .context("removing the containers")?;
            println!(
                "==> removed {containers} containers and {volumes} volumes of cluster {}",
                record.cluster
            );
        }
        println!(
            "==> down; the state stays in {} (remove it to start afresh)",
            args.data_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}
