//! The `gantry` binary's own pieces: what its subcommands share.

pub mod manifests;
