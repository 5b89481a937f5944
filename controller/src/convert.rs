//! From the API's kinds to the placement engine's model, and back.
//!
//! The engine knows nothing of Kubernetes; these functions are the only
//! place that decides what a Task asks for (ECS's task-level or summed
//! container resources, fixed host ports, the task group) and what a
//! ContainerInstance offers.

use std::sync::LazyLock;

use crds::v1alpha1::{
    self as api, ContainerInstance, InstanceState, NetworkMode, Resources, Task, TaskDefinitionSpec,
};
use kube::ResourceExt;

use crate::placement::{
    Allocation, Constraint, HostPort, InstanceSpec, Protocol, Query, Strategy, TaskRequest,
};

/// What one task asks of the scheduler.
#[derive(Clone, Debug)]
pub struct Request {
    pub task: TaskRequest,
    /// The instance a `memberOf(ec2InstanceId == <name>)` constraint pins
    /// the task to, as a DAEMON service's tasks are.
    pub pinned: Option<String>,
}

/// The constraint that pins a task to one instance.
#[must_use]
pub fn pin_expression(instance: &str) -> String {
    format!("ec2InstanceId == {instance}")
}

static PIN: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^\s*ec2InstanceId\s*==\s*([A-Za-z0-9._-]+)\s*$").expect("a valid regex")
});

/// The instance `expression` pins a task to, if it is a pin.
#[must_use]
pub fn pinned_instance(expression: &str) -> Option<&str> {
    PIN.captures(expression)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

/// The task group of a service's tasks.
#[must_use]
pub fn service_group(service: &str) -> String {
    format!("service:{service}")
}

/// ECS's default group of a standalone task.
#[must_use]
pub fn default_group(family: &str) -> String {
    format!("family:{family}")
}

/// The family a task runs (its reference without `:N`).
#[must_use]
pub fn family_of(task: &Task) -> &str {
    api::Reference::parse(&task.spec.task_definition).family
}

/// The task's group: its own, or ECS's default for its family.
#[must_use]
pub fn group_of(task: &Task) -> String {
    task.spec
        .group
        .clone()
        .unwrap_or_else(|| default_group(family_of(task)))
}

/// CPU units and MiB a task of this definition reserves, as ECS counts
/// them: the task-level size, or else the containers' sum (a container's
/// soft `memoryReservation` before its hard `memory`).
#[must_use]
pub fn resources(definition: &TaskDefinitionSpec) -> (u32, u32) {
    let containers = &definition.container_definitions;
    let cpu = definition
        .cpu
        .unwrap_or_else(|| containers.iter().filter_map(|c| c.cpu).sum());
    let memory = definition.memory.unwrap_or_else(|| {
        containers
            .iter()
            .filter_map(|c| c.memory_reservation.or(c.memory))
            .sum()
    });
    (cpu, memory)
}

/// The host ports a task of this definition holds: fixed bridge ports and
/// every port in host mode. Dynamic (0) ports are Docker's to choose.
#[must_use]
pub fn host_ports(definition: &TaskDefinitionSpec) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = definition
        .container_definitions
        .iter()
        .flat_map(|c| &c.port_mappings)
        .filter_map(|m| {
            let port = match definition.network_mode {
                NetworkMode::Host => m.container_port,
                NetworkMode::Bridge => m.host_port,
                NetworkMode::None => 0,
            };
            (port != 0).then_some(HostPort {
                port,
                protocol: protocol(m.protocol),
            })
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn protocol(p: api::Protocol) -> Protocol {
    match p {
        api::Protocol::Tcp => Protocol::Tcp,
        api::Protocol::Udp => Protocol::Udp,
    }
}

/// The placement request of a task whose definition is `definition`.
///
/// # Errors
/// A constraint expression that does not parse, or a strategy field the
/// engine does not know, named with the reason.
pub fn request(task: &Task, definition: &TaskDefinitionSpec) -> Result<Request, String> {
    let (cpu, memory) = resources(definition);
    let mut constraints = Vec::new();
    let mut pinned = None;
    for constraint in definition
        .placement_constraints
        .iter()
        .chain(&task.spec.placement_constraints)
    {
        match constraint.type_ {
            api::PlacementConstraintType::DistinctInstance => {
                constraints.push(Constraint::DistinctInstance);
            }
            api::PlacementConstraintType::MemberOf => {
                let expression = constraint.expression.as_deref().unwrap_or_default();
                if let Some(instance) = pinned_instance(expression) {
                    pinned = Some(instance.to_owned());
                    continue;
                }
                let query = Query::parse(expression)
                    .map_err(|e| format!("placement constraint memberOf({expression}): {e}"))?;
                constraints.push(Constraint::MemberOf(query));
            }
        }
    }
    if let Some(target) = &task.spec.container_instance {
        // Start-task: the user chose the instance, and ECS's StartTask
        // applies no placement constraints, only the instance's state and
        // room.
        constraints.clear();
        pinned = Some(target.clone());
    }
    let strategy = if task.spec.placement_strategy.is_empty() {
        Strategy::run_task_default()
    } else {
        task.spec
            .placement_strategy
            .iter()
            .map(strategy)
            .collect::<Result<_, _>>()?
    };
    Ok(Request {
        task: TaskRequest {
            cpu,
            memory,
            ports: host_ports(definition),
            group: group_of(task),
            family: family_of(task).to_owned(),
            constraints,
            strategy,
        },
        pinned,
    })
}

/// One placement strategy of the API in the engine's terms.
///
/// # Errors
/// A field the strategy does not take.
pub fn strategy(s: &api::PlacementStrategy) -> Result<Strategy, String> {
    use crate::placement::{BinpackField, SpreadField};
    let field = s.field.as_deref().unwrap_or_default();
    match s.type_ {
        api::PlacementStrategyType::Random => Ok(Strategy::Random),
        api::PlacementStrategyType::Binpack => match field {
            "cpu" => Ok(Strategy::Binpack(BinpackField::Cpu)),
            "memory" => Ok(Strategy::Binpack(BinpackField::Memory)),
            other => Err(format!("binpack takes field cpu or memory, not {other:?}")),
        },
        api::PlacementStrategyType::Spread => match field {
            "instanceId" | "host" => Ok(Strategy::Spread(SpreadField::Instance)),
            other => other
                .strip_prefix("attribute:")
                .map(|a| Strategy::Spread(SpreadField::Attribute(a.to_owned())))
                .ok_or_else(|| {
                    format!(
                        "spread takes field instanceId, host or attribute:<name>, not {other:?}"
                    )
                }),
        },
    }
}

/// The API form of a service's default strategy (spread over zones, then
/// instances), written into each of its tasks.
#[must_use]
pub fn service_default_strategy() -> Vec<api::PlacementStrategy> {
    vec![
        api::PlacementStrategy {
            type_: api::PlacementStrategyType::Spread,
            field: Some(format!("attribute:{}", crate::placement::AVAILABILITY_ZONE)),
        },
        api::PlacementStrategy {
            type_: api::PlacementStrategyType::Spread,
            field: Some("instanceId".to_owned()),
        },
    ]
}

/// What a ContainerInstance offers the engine.
#[must_use]
pub fn instance_spec(ci: &ContainerInstance) -> InstanceSpec {
    let registered = &ci.spec.registered_resources;
    let reserved_ports = registered
        .ports
        .iter()
        .map(|p| HostPort::tcp(*p))
        .chain(registered.ports_udp.iter().map(|p| HostPort::udp(*p)))
        .collect();
    InstanceSpec {
        name: ci.name_any(),
        cpu: registered.cpu,
        memory: registered.memory,
        reserved_ports,
        attributes: ci.spec.attributes.clone(),
        draining: ci.spec.state == InstanceState::Draining,
        connected: ci.status.as_ref().is_some_and(|s| s.agent_connected),
        awaiting_daemons: ci
            .status
            .as_ref()
            .is_some_and(|s| !s.awaiting_daemons.is_empty()),
        agent_version: ci
            .status
            .as_ref()
            .and_then(|s| s.version_info.as_ref())
            .and_then(|v| v.agent_version.clone()),
        registered_at: ci.creation_timestamp().map(|t| t.0),
        reported_remaining: ci
            .status
            .as_ref()
            .and_then(|s| s.remaining_resources.as_ref())
            .map(|r| (r.cpu, r.memory)),
    }
}

/// The engine's form of a stored allocation, keyed by `key`.
#[must_use]
pub fn allocation(key: String, a: &api::Allocation) -> Allocation {
    Allocation {
        task: key,
        cpu: a.cpu,
        memory: a.memory,
        ports: a
            .ports
            .iter()
            .map(|p| HostPort::tcp(*p))
            .chain(a.ports_udp.iter().map(|p| HostPort::udp(*p)))
            .collect(),
        group: a.group.clone().unwrap_or_default(),
        family: a.task_definition.clone().unwrap_or_default(),
    }
}

/// The stored allocation of a task placed with `request`.
#[must_use]
pub fn stored_allocation(task: &Task, request: &TaskRequest) -> api::Allocation {
    let ports = |protocol| {
        request
            .ports
            .iter()
            .filter(|p| p.protocol == protocol)
            .map(|p| p.port)
            .collect()
    };
    api::Allocation {
        task: task.name_any(),
        task_uid: task.uid().unwrap_or_default(),
        group: Some(request.group.clone()),
        task_definition: Some(request.family.clone()),
        cpu: request.cpu,
        memory: request.memory,
        ports: ports(Protocol::Tcp),
        ports_udp: ports(Protocol::Udp),
    }
}

/// What is left of an instance after its allocations: CPU and memory, and
/// every host port taken (reserved or allocated), as ECS reports it.
#[must_use]
pub fn remaining(ci: &ContainerInstance, allocations: &[api::Allocation]) -> Resources {
    let registered = &ci.spec.registered_resources;
    let cpu: u32 = allocations.iter().map(|a| a.cpu).sum();
    let memory: u32 = allocations.iter().map(|a| a.memory).sum();
    let mut ports: Vec<u16> = registered
        .ports
        .iter()
        .chain(allocations.iter().flat_map(|a| &a.ports))
        .copied()
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let mut ports_udp: Vec<u16> = registered
        .ports_udp
        .iter()
        .chain(allocations.iter().flat_map(|a| &a.ports_udp))
        .copied()
        .collect();
    ports_udp.sort_unstable();
    ports_udp.dedup();
    Resources {
        cpu: registered.cpu.saturating_sub(cpu),
        memory: registered.memory.saturating_sub(memory),
        ports,
        ports_udp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(value: serde_json::Value) -> TaskDefinitionSpec {
        serde_json::from_value(value).expect("a task definition")
    }

    #[test]
    fn resources_are_task_level_or_the_containers_sum() {
        let summed = definition(json!({"containerDefinitions": [
            {"name": "a", "image": "x", "cpu": 100, "memory": 300, "memoryReservation": 128},
            {"name": "b", "image": "x", "cpu": 50, "memory": 64},
        ]}));
        assert_eq!(resources(&summed), (150, 192));
        let sized = definition(json!({"cpu": 512, "memory": 1024, "containerDefinitions": [
            {"name": "a", "image": "x", "cpu": 100, "memory": 300},
        ]}));
        assert_eq!(resources(&sized), (512, 1024));
    }

    #[test]
    fn only_fixed_and_host_mode_ports_are_held() {
        let bridge = definition(json!({"memory": 64, "containerDefinitions": [
            {"name": "a", "image": "x", "portMappings": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 81},
                {"containerPort": 53, "hostPort": 53, "protocol": "udp"},
            ]},
        ]}));
        assert_eq!(
            host_ports(&bridge),
            vec![HostPort::udp(53), HostPort::tcp(8080)]
        );
        let host = definition(
            json!({"memory": 64, "networkMode": "host", "containerDefinitions": [
                {"name": "a", "image": "x", "portMappings": [{"containerPort": 80}]},
            ]}),
        );
        assert_eq!(host_ports(&host), vec![HostPort::tcp(80)]);
    }

    #[test]
    fn a_pin_is_recognised_and_other_expressions_are_not() {
        assert_eq!(pinned_instance(&pin_expression("host-7")), Some("host-7"));
        assert_eq!(pinned_instance(" ec2InstanceId==i-0abc "), Some("i-0abc"));
        assert_eq!(pinned_instance("ec2InstanceId in [a, b]"), None);
        assert_eq!(pinned_instance("attribute:x == y"), None);
    }

    #[test]
    fn a_bad_expression_or_strategy_is_named() {
        let mut task = Task::new(
            "t",
            serde_json::from_value(json!({"taskDefinition": "web"})).expect("a task spec"),
        );
        let def = definition(json!({"memory": 64, "containerDefinitions": [
            {"name": "a", "image": "x"}]}));
        task.spec.placement_constraints = vec![api::PlacementConstraint {
            type_: api::PlacementConstraintType::MemberOf,
            expression: Some("attribute:x ==".into()),
        }];
        let error = request(&task, &def).expect_err("a broken expression");
        assert!(error.contains("memberOf(attribute:x ==)"), "{error}");
        task.spec.placement_constraints.clear();
        let ok = request(&task, &def).expect("a plain task");
        assert_eq!(ok.task.group, "family:web");
        assert_eq!(ok.task.strategy, Strategy::run_task_default());
        assert_eq!(ok.pinned, None);
    }
}
