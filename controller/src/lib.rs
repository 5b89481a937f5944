//! Gantry's controller: the cluster manager of the ECS model.
//!
//! It will hold (see DESIGN.md, "The shared-state scheduler" and
//! "Controller"):
//! - the placement engine: a pure, indexed model of the cluster that ranks
//!   instances by ECS strategies and filters them by constraints and the
//!   cluster query language, with no I/O;
//! - the scheduler: binds unbound Tasks by reserving in
//!   `ContainerInstance.status.allocations` with a resourceVersion
//!   precondition, retrying on 409 Conflict;
//! - reconcilers for Services (REPLICA and DAEMON, rolling deployments,
//!   circuit breaker), run-task Tasks, TaskDefinitions and
//!   ContainerInstances (Lease-based connectivity, draining).
//!
//! Nothing is here yet; the crate exists so the workspace has its final
//! shape from the start.

pub mod placement;
