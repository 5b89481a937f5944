//! `gantry apiserver backup|restore|repair`: the store's way back from a
//! lost disk or a damaged database (see apiserver/src/storage/integrity.rs).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the store to FILE, consistently, while the server runs (as
    /// `etcdctl snapshot save`). The copy holds every Secret: keep it as
    /// safe as the data directory.
    Backup {
        /// The data directory of the store to copy.
        #[arg(long, value_name = "DIR", default_value = ".gantry")]
        data_dir: PathBuf,
        /// Where to write the copy; must not exist.
        file: PathBuf,
    },
    /// Make the store in the data directory from a backup: every object
    /// with its resourceVersion; clients list afresh. The server must be
    /// stopped and the directory must hold no store.
    Restore {
        #[arg(long, value_name = "DIR", default_value = ".gantry")]
        data_dir: PathBuf,
        /// A file `gantry apiserver backup` wrote.
        file: PathBuf,
    },
    /// Accept a store that lost writes (its write-ahead log was lost or
    /// damaged) as it is, so the server starts again; clients list afresh.
    /// The server must be stopped.
    Repair {
        #[arg(long, value_name = "DIR", default_value = ".gantry")]
        data_dir: PathBuf,
    },
}

pub fn run(command: &StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Backup { data_dir, file } => {
            let revision = apiserver::storage::backup(&data_dir.join("store"), file)
                .with_context(|| format!("backing up the store in {}", data_dir.display()))?;
            println!("backed up at revision {revision} to {}", file.display());
        }
        StoreCommand::Restore { data_dir, file } => {
            let revision = apiserver::storage::restore(file, &data_dir.join("store"))
                .with_context(|| {
                    format!("restoring {} into {}", file.display(), data_dir.display())
                })?;
            println!(
                "restored {} into {}; the store continues at revision {revision}",
                file.display(),
                data_dir.display()
            );
        }
        StoreCommand::Repair { data_dir } => {
            let revision = apiserver::storage::repair(&data_dir.join("store"))
                .with_context(|| format!("repairing the store in {}", data_dir.display()))?;
            println!(
                "the store in {} continues at revision {revision}; clients list afresh",
                data_dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
