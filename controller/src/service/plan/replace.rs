//! Which replacements stop now. A task that does not count as healthy
//! goes at once; a healthy one only while the healthy tasks left stay at
//! or above `minimumHealthyPercent`, so a deployment or a drain never
//! takes the service below it. A failed deployment without rollback
//! leaves the older revision's tasks alone.

use super::{Stop, classify::Replacement};

/// `budget`: how many healthy tasks may stop (healthy now minus the
/// minimum healthy).
#[must_use]
pub fn stops(
    mut replace: Vec<Replacement<'_>>,
    mut budget: i64,
    primary_failed: bool,
) -> Vec<Stop> {
    // Unhealthy ones first: they cost no budget.
    replace.sort_by_key(|r| r.facts.healthy);
    let mut stops = Vec::new();
    for r in replace {
        if primary_failed && r.old_revision && !r.health_failure {
            continue;
        }
        if r.facts.healthy {
            if budget <= 0 {
                continue;
            }
            budget -= 1;
        }
        stops.push(Stop::by_scheduler(r.facts, r.reason));
    }
    stops
}
