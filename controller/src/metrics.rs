//! Prometheus metrics, served with health probes on `--metrics-addr`.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

/// A failed reconcile: which reconciler, and what kind of error
/// (`runner::error_kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulerLabel {
    pub scheduler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// Every metric Gantry's controller exports.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ControllerLabel, Counter>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    /// Seconds from a task seen unbound to its binding.
    pub placement_latency: Histogram,
    pub placements: Family<SchedulerLabel, Counter>,
    /// 409s met while reserving or binding, as the Omega paper counts them.
    pub conflicts: Family<SchedulerLabel, Counter>,
    /// Reservations written again on the same instance after a 409, the
    /// same choice checked against the newer version first.
    pub rechecks: Family<SchedulerLabel, Counter>,
    /// Placements started over after a failed round: the conflicts that
    /// cost work (Omega's conflict fraction is these per placement).
    pub retries: Family<SchedulerLabel, Counter>,
    pub unplaceable: Family<SchedulerLabel, Counter>,
    pub tasks: Family<StatusLabel, Gauge>,
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
        let reconciles = Family::default();
        let reconcile_errors = Family::default();
        let placement_latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let placements = Family::default();
        let conflicts = Family::default();
        let rechecks = Family::default();
        let retries = Family::default();
        let unplaceable = Family::default();
        let tasks = Family::default();
        let mut registry = Registry::with_prefix("gantry");
        registry.register(
            "reconciles",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller and kind of error",
            reconcile_errors.clone(),
        );
        registry.register(
            "placement_duration_seconds",
            "Time from a task seen unbound to its binding",
            placement_latency.clone(),
        );
        registry.register(
            "placements",
            "Tasks bound, per scheduler",
            placements.clone(),
        );
        registry.register(
            "placement_conflicts",
            "409 Conflicts met while reserving or binding, per scheduler",
            conflicts.clone(),
        );
        registry.register(
            "placement_rechecks",
            "Reservations written again on the same instance after a 409, per scheduler",
            rechecks.clone(),
        );
        registry.register(
            "placement_retries",
            "Placements started over after a failed round, per scheduler",
            retries.clone(),
        );
        registry.register(
            "placement_failures",
            "Placement attempts that found no instance, per scheduler",
            unplaceable.clone(),
        );
        registry.register(
            "tasks",
            "Tasks by lastStatus (PROVISIONING when not yet reported)",
            tasks.clone(),
        );
        Self {
            reconciles,
            reconcile_errors,
            placement_latency,
            placements,
            conflicts,
            rechecks,
            retries,
            unplaceable,
            tasks,
            registry,
        }
    }

    /// Count a reconcile, and its error's kind if it failed.
    pub fn reconciled(&self, controller: &'static str, error: Option<&'static str>) {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabel { controller, error })
                .inc();
        }
    }

    pub fn placed(&self, scheduler: &str, latency: Duration) {
        count(&self.placements, scheduler, 1);
        self.placement_latency.observe(latency.as_secs_f64());
    }

    pub fn conflict(&self, scheduler: &str, n: u64) {
        count(&self.conflicts, scheduler, n);
    }

    pub fn rechecked(&self, scheduler: &str) {
        count(&self.rechecks, scheduler, 1);
    }

    pub fn retried(&self, scheduler: &str) {
        count(&self.retries, scheduler, 1);
    }

    /// One scheduler's placements, 409s, rechecks and retries.
    #[must_use]
    pub fn counts(&self, scheduler: &str) -> [u64; 4] {
        let label = SchedulerLabel {
            scheduler: scheduler.to_owned(),
        };
        [
            &self.placements,
            &self.conflicts,
            &self.rechecks,
            &self.retries,
        ]
        .map(|family| family.get_or_create(&label).get())
    }

    /// The text exposition format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Add `n` to one scheduler's counter of `family`.
fn count(family: &Family<SchedulerLabel, Counter>, scheduler: &str, n: u64) {
    family
        .get_or_create(&SchedulerLabel {
            scheduler: scheduler.to_owned(),
        })
        .inc_by(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_errors_are_counted_by_reconciler_and_kind() {
        let metrics = Metrics::new();
        metrics.reconciled("service", None);
        metrics.reconciled("service", Some("conflict"));
        metrics.reconciled("service", Some("conflict"));
        metrics.reconciled("instance", Some("not_found"));
        let text = metrics.encode();
        for line in [
            r#"gantry_reconciles_total{controller="service"} 3"#,
            r#"gantry_reconcile_errors_total{controller="service",error="conflict"} 2"#,
            r#"gantry_reconcile_errors_total{controller="instance",error="not_found"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
