//! The balancer's Prometheus metrics: requests (HTTP) and connections
//! (TCP) per listener, requests per target, active connections, bytes,
//! and target health transitions. Hot-path counters are looked up once
//! per listener or target and kept, so a request takes no label lookup.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub load_balancer: String,
    pub listener: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub load_balancer: String,
    pub listener: u16,
    /// `2xx` … `5xx` as answered to the client.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabel {
    pub load_balancer: String,
    pub listener: u16,
    /// `in` from clients, `out` to them.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub load_balancer: String,
    /// `host:port`.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub load_balancer: String,
    pub target: String,
    /// The state entered.
    pub state: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<CodeLabel, Counter>,
    pub connections: Family<ListenerLabel, Counter>,
    pub active_connections: Family<ListenerLabel, Gauge>,
    pub bytes: Family<BytesLabel, Counter>,
    pub target_requests: Family<TargetLabel, Counter>,
    pub transitions: Family<TransitionLabel, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gantry_balancer");
        let requests = Family::default();
        let connections = Family::default();
        let active_connections = Family::default();
        let bytes = Family::default();
        let target_requests = Family::default();
        let transitions = Family::default();
        registry.register(
            "requests",
            "HTTP requests answered, by listener and status class",
            requests.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections open now, by listener",
            active_connections.clone(),
        );
        registry.register(
            "bytes",
            "Bytes relayed, by listener and direction",
            bytes.clone(),
        );
        registry.register(
            "target_requests",
            "Requests (HTTP) or connections (TCP) sent to each target",
            target_requests.clone(),
        );
        registry.register(
            "target_health_transitions",
            "Changes of a target's health state, by the state entered",
            transitions.clone(),
        );
        Self {
            requests,
            connections,
            active_connections,
            bytes,
            target_requests,
            transitions,
            registry,
        }
    }

    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
