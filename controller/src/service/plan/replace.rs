//! Which replacements stop now. A healthy task goes only while the
//! healthy tasks left stay at or above `minimumHealthyPercent`, so a
//! deployment or a drain never takes the service below it. A failed
//! deployment without rollback leaves the older revision's tasks alone.
//!
//! An UNHEALTHY REPLICA task is replaced start-first, as ECS does since
//! October 2023: its replacement starts (within `maximumPercent`) and it
//! stops once healthy tasks cover the desired count without it. When
//! nothing is starting that could cover it (`maximumPercent` leaves no
//! room, starts are held, or no instance can take the replacement),
//! unhealthy tasks stop one at a time, each freeing room for its
//! replacement. A DAEMON task has no room for a
//! second task on its instance: it stops at once.

use super::{Stop, classify::Replacement};

/// What decides how many replacements may stop.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// How many healthy tasks may stop (healthy now minus the minimum
    /// healthy).
    pub budget: i64,
    pub primary_failed: bool,
    /// How many UNHEALTHY tasks may stop ([`unhealthy_allowance`]).
    pub unhealthy: usize,
}

/// The tasks that could stand in for an unhealthy one.
#[derive(Clone, Copy, Debug)]
pub struct Cover {
    pub daemon: bool,
    pub desired: usize,
    /// Kept tasks that count as healthy.
    pub healthy: usize,
    /// Kept tasks not healthy yet (but placeable), plus the tasks this
    /// round starts.
    pub coming: usize,
}

/// How many of `unhealthy` tasks may stop now.
#[must_use]
pub fn unhealthy_allowance(cover: Cover, unhealthy: usize) -> usize {
    if cover.daemon {
        return unhealthy;
    }
    let covered = (cover.healthy + unhealthy).saturating_sub(cover.desired);
    if covered == 0 && cover.coming == 0 {
        // Nothing on its way: make room for one replacement.
        return unhealthy.min(1);
    }
    covered.min(unhealthy)
}

#[must_use]
pub fn stops(mut replace: Vec<Replacement<'_>>, rules: Rules) -> Vec<Stop> {
    // Unhealthy ones first, the oldest first: they cost no budget.
    replace.sort_by_key(|r| (!r.health_failure, r.facts.healthy, r.facts.created()));
    let (mut budget, mut unhealthy) = (rules.budget, rules.unhealthy);
    let mut stops = Vec::new();
    for r in replace {
        if rules.primary_failed && r.old_revision && !r.health_failure {
            continue;
        }
        if r.health_failure {
            if unhealthy == 0 {
                continue;
            }
            unhealthy -= 1;
        } else if r.facts.healthy {
            if budget <= 0 {
                continue;
            }
            budget -= 1;
        }
        stops.push(Stop::by_scheduler(r.facts, r.reason));
    }
    stops
}
