//! The labels Gantry puts on its objects. Clients select by them
//! (`kubectl get gtask -l gantry.dev/service=web`), so they are part of
//! the API and live here rather than in the code that writes them.

/// On a Task a service started: the service's name. A Service's
/// `status.selector` is `gantry.dev/service=<name>`.
pub const SERVICE: &str = "gantry.dev/service";

/// On a Task a service started: the serial number of its deployment
/// (`ecs-svc/<n>` has `n`).
pub const DEPLOYMENT: &str = "gantry.dev/deployment";

/// On a bound Task: the ContainerInstance it is bound to, so an agent
/// watches only its own tasks.
pub const CONTAINER_INSTANCE: &str = "gantry.dev/container-instance";

/// On a Task a service started to move one of its tasks (`rebalancing:
/// ENABLED`): `"true"`. The service keeps one task above its count until
/// this one runs, then stops one where its tasks crowd.
pub const REBALANCING: &str = "gantry.dev/rebalancing";

/// On a TaskDefinitionRevision: its family (TaskDefinition name).
pub const TASK_DEFINITION: &str = "gantry.dev/task-definition";

/// On the tasks a ScheduledTask starts: its name.
pub const SCHEDULED_TASK: &str = "gantry.dev/scheduled-task";
