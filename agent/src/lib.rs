//! Gantry's agent: the daemon that turns a host running Docker into a
//! container instance (see DESIGN.md, "Agent").
//!
//! It will hold the registration of the ContainerInstance and its Lease,
//! the watch of Tasks bound to this instance, a container runtime trait
//! with a Docker implementation (through bollard) and a simulated one for
//! scale tests, and the re-adoption of labelled containers after a
//! restart.
//!
//! Nothing is here yet; the crate exists so the workspace has its final
//! shape from the start.
