//! Which tasks are targets of a load balancer, and at what address: one
//! rule shared by the controller (deregistration, EndpointSlices) and the
//! data plane (`gantry balancer`), so they never disagree on a target.

use crate::v1alpha1::{DesiredStatus, Task, TaskLastStatus};

/// Where a task stands with its service's load balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// RUNNING and meant to keep running: it takes new traffic once
    /// healthy.
    Registered,
    /// Leaving: DEACTIVATING (the service scheduler drains it before the
    /// stop), or RUNNING but already told to stop or being deleted. It
    /// takes no new traffic; what it has in flight may finish.
    Deregistering,
}

/// The task's registration, or `None` while it is not running (starting,
/// stopping, stopped).
#[must_use]
pub fn registration(task: &Task) -> Option<Registration> {
    let status = task.status.as_ref()?;
    match status.last_status? {
        TaskLastStatus::Deactivating => Some(Registration::Deregistering),
        TaskLastStatus::Running
            if task.spec.desired_status == DesiredStatus::Running
                && status.stop_code.is_none()
                && task.metadata.deletion_timestamp.is_none() =>
        {
            Some(Registration::Registered)
        }
        TaskLastStatus::Running => Some(Registration::Deregistering),
        _ => None,
    }
}

/// `(host, hostPort)` where the task's `container` publishes
/// `container_port`. The host is the binding's address unless the port
/// is bound on every address, then the instance's `hostIP`.
#[must_use]
pub fn endpoint(
    task: &Task,
    container: &str,
    container_port: u16,
    instance_ip: Option<&str>,
) -> Option<(String, u16)> {
    let status = task.status.as_ref()?;
    let binding = status
        .containers
        .iter()
        .filter(|c| c.name == container)
        .flat_map(|c| &c.network_bindings)
        .find(|b| b.container_port == container_port)?;
    let host = match binding.bind_ip.as_str() {
        "" | "0.0.0.0" | "::" => instance_ip.filter(|ip| !ip.is_empty())?,
        ip => ip,
    };
    Some((host.to_owned(), binding.host_port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(last: &str, desired: &str, bind_ip: &str) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": {"taskDefinition": "web", "desiredStatus": desired},
            "status": {"lastStatus": last, "containers": [
                {"name": "side", "lastStatus": "RUNNING",
                 "networkBindings": [{"bindIP": "10.0.0.9", "containerPort": 80, "hostPort": 1}]},
                {"name": "web", "lastStatus": "RUNNING",
                 "networkBindings": [{"bindIP": bind_ip, "containerPort": 80, "hostPort": 32768}]},
            ]},
        }))
        .expect("a task")
    }

    #[test]
    fn running_tasks_register_and_leaving_ones_deregister() {
        let at = |last, desired| registration(&task(last, desired, "127.0.0.2"));
        assert_eq!(at("RUNNING", "RUNNING"), Some(Registration::Registered));
        assert_eq!(at("RUNNING", "STOPPED"), Some(Registration::Deregistering));
        assert_eq!(
            at("DEACTIVATING", "STOPPED"),
            Some(Registration::Deregistering)
        );
        assert_eq!(at("ACTIVATING", "RUNNING"), None);
        assert_eq!(at("STOPPING", "STOPPED"), None);
    }

    #[test]
    fn the_endpoint_is_the_named_containers_binding() {
        let bound = task("RUNNING", "RUNNING", "127.0.0.2");
        assert_eq!(
            endpoint(&bound, "web", 80, Some("10.1.1.1")),
            Some(("127.0.0.2".to_owned(), 32768))
        );
        assert_eq!(endpoint(&bound, "web", 81, None), None);
        let everywhere = task("RUNNING", "RUNNING", "0.0.0.0");
        assert_eq!(
            endpoint(&everywhere, "web", 80, Some("10.1.1.1")),
            Some(("10.1.1.1".to_owned(), 32768))
        );
        assert_eq!(endpoint(&everywhere, "web", 80, None), None);
    }
}
