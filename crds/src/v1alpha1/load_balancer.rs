//! LoadBalancer: one stable address in front of a service's tasks, as an
//! Elastic Load Balancing load balancer with one target group.
//!
//! Services register into it through `Service.spec.loadBalancers`; the
//! data plane (`gantry balancer`) serves its listeners, checks its
//! targets' health and reports every target in the status. Field names
//! and defaults are ECS's target-group ones.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a LoadBalancer.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "LoadBalancer",
    plural = "loadbalancers",
    namespaced,
    status = "LoadBalancerStatus",
    shortname = "glb",
    category = "gantry",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.addresses[0]"}"#,
    printcolumn = r#"{"name":"Healthy","type":"integer","jsonPath":".status.healthyTargets"}"#,
    printcolumn = r#"{"name":"Targets","type":"integer","jsonPath":".status.targetCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.listeners.all(l, self.listeners.exists_one(m, m.port == l.port))")
    .message("listener ports must be distinct").field_path(".listeners"))]
pub struct LoadBalancerSpec {
    /// The ports it accepts connections on.
    #[schemars(length(min = 1, max = 10))]
    pub listeners: Vec<Listener>,

    /// How targets are checked before and while they receive traffic.
    #[serde(default)]
    pub health_check: TargetHealthCheck,

    /// Seconds a deregistering target keeps its in-flight connections
    /// before its task is stopped (ECS default 300).
    #[serde(default = "default_deregistration_delay")]
    #[schemars(range(min = 0, max = 3600))]
    pub deregistration_delay_seconds: i32,

    /// How a new connection or request picks its target.
    #[serde(default)]
    pub algorithm: Algorithm,
}

fn default_deregistration_delay() -> i32 {
    300
}

/// One port the load balancer listens on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// TCP forwards connections; HTTP forwards HTTP/1.1 requests, each to
    /// its own target, over kept-alive connections.
    #[serde(default)]
    pub protocol: ListenerProtocol,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

/// How targets are picked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// In turn.
    #[default]
    RoundRobin,
    /// The target with the fewest requests (TCP: connections) in flight.
    LeastOutstandingRequests,
}

/// A target group's health check, with ELB's defaults and ranges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.timeoutSeconds < self.intervalSeconds")
    .message("timeoutSeconds must be less than intervalSeconds").field_path(".timeoutSeconds"))]
pub struct TargetHealthCheck {
    /// HTTP sends `GET path`; TCP only connects. Unset: HTTP if any
    /// listener is HTTP, else TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ListenerProtocol>,
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: String,
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 300))]
    pub interval_seconds: i32,
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 2, max = 120))]
    pub timeout_seconds: i32,
    /// Consecutive successes that make a target healthy.
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 2, max = 10))]
    pub healthy_threshold_count: i32,
    /// Consecutive failures that make a target unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 2, max = 10))]
    pub unhealthy_threshold_count: i32,
    /// HTTP codes that mean healthy: `200`, `200,202`, `200-299`
    /// (within 200–499), as ELB's matcher.
    #[serde(default = "default_success_codes")]
    #[schemars(regex(
        pattern = r"^[2-4][0-9]{2}(-[2-4][0-9]{2})?(,[2-4][0-9]{2}(-[2-4][0-9]{2})?)*$"
    ))]
    pub success_codes: String,
}

impl Default for TargetHealthCheck {
    fn default() -> Self {
        Self {
            protocol: None,
            path: default_path(),
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            healthy_threshold_count: default_healthy_threshold(),
            unhealthy_threshold_count: default_unhealthy_threshold(),
            success_codes: default_success_codes(),
        }
    }
}

fn default_path() -> String {
    "/".to_owned()
}
fn default_interval() -> i32 {
    30
}
fn default_timeout() -> i32 {
    5
}
fn default_healthy_threshold() -> i32 {
    5
}
fn default_unhealthy_threshold() -> i32 {
    2
}
fn default_success_codes() -> String {
    "200".to_owned()
}

impl TargetHealthCheck {
    /// Whether an HTTP status code counts as healthy.
    #[must_use]
    pub fn accepts(&self, code: u16) -> bool {
        self.success_codes.split(',').any(|part| {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                (Ok(low), Ok(high)) => (low..=high).contains(&code),
                _ => false,
            }
        })
    }
}

impl LoadBalancerSpec {
    /// The health check's protocol, defaulted from the listeners.
    #[must_use]
    pub fn health_check_protocol(&self) -> ListenerProtocol {
        self.health_check.protocol.unwrap_or_else(|| {
            if self
                .listeners
                .iter()
                .any(|l| l.protocol == ListenerProtocol::Http)
            {
                ListenerProtocol::Http
            } else {
                ListenerProtocol::Tcp
            }
        })
    }
}

/// What the data plane observed, as `aws elbv2 describe-target-health`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `host:port` of every listener, as the balancer serves it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Every registered or draining target, by task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["task".into(), "container".into()]))]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub healthy_targets: i32,
    #[serde(default)]
    pub target_count: i32,
    /// `Ready`: the listeners are served and at least one target is
    /// healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One target: a task's container port, at its host address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub task: String,
    pub container: String,
    /// `host:hostPort`.
    pub address: String,
    /// The Service that registered it.
    pub service: String,
    pub state: TargetState,
    /// ELB's reason code, e.g. `Target.FailedHealthChecks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// ELB's target health states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Registered, initial health checks under way.
    Initial,
    Healthy,
    Unhealthy,
    /// Deregistering: no new requests, in-flight ones finish.
    Draining,
}

/// ELB's reason codes for a target's state.
pub mod reason {
    pub const INITIAL_HEALTH_CHECKING: &str = "Elb.InitialHealthChecking";
    pub const FAILED_HEALTH_CHECKS: &str = "Target.FailedHealthChecks";
    pub const RESPONSE_CODE_MISMATCH: &str = "Target.ResponseCodeMismatch";
    pub const TIMEOUT: &str = "Target.Timeout";
    pub const DEREGISTRATION_IN_PROGRESS: &str = "Target.DeregistrationInProgress";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_codes_are_lists_and_ranges() {
        let check = |codes: &str| TargetHealthCheck {
            success_codes: codes.to_owned(),
            ..TargetHealthCheck::default()
        };
        assert!(check("200").accepts(200));
        assert!(!check("200").accepts(204));
        assert!(check("200,202").accepts(202));
        assert!(!check("200,202").accepts(201));
        assert!(check("200-299").accepts(250));
        assert!(!check("200-299").accepts(300));
        assert!(check("200,300-399").accepts(302));
    }

    #[test]
    fn the_health_check_protocol_follows_the_listeners() {
        let spec = |protocols: &[ListenerProtocol]| LoadBalancerSpec {
            listeners: protocols
                .iter()
                .enumerate()
                .map(|(i, p)| Listener {
                    port: 80 + u16::try_from(i).expect("small"),
                    protocol: *p,
                })
                .collect(),
            health_check: TargetHealthCheck::default(),
            deregistration_delay_seconds: 300,
            algorithm: Algorithm::RoundRobin,
        };
        use ListenerProtocol::{Http, Tcp};
        assert_eq!(spec(&[Tcp]).health_check_protocol(), Tcp);
        assert_eq!(spec(&[Tcp, Http]).health_check_protocol(), Http);
    }
}
