//! Gantry's controller: the cluster manager of the ECS model.
//!
//! - [`placement`]: the placement engine, a pure, indexed model of the
//!   cluster that filters instances by resources, ports and constraints
//!   (with the ECS cluster query language) and ranks them by ECS strategies.
//!
//! Still to come (see DESIGN.md, "The shared-state scheduler" and
//! "Controller"): the scheduler, which binds unbound Tasks by reserving in
//! `ContainerInstance.status.allocations` with a resourceVersion
//! precondition and retrying on 409 Conflict; and the reconcilers for
//! Services (REPLICA and DAEMON, rolling deployments, circuit breaker),
//! run-task Tasks, TaskDefinitions and ContainerInstances (Lease-based
//! connectivity, draining).

pub mod placement;
