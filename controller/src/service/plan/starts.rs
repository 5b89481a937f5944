//! What a service starts: the missing REPLICA tasks within
//! `maximumPercent`, or a task for each eligible DAEMON instance without
//! one; none while the start throttle holds after consecutive failures.

use std::time::Duration;

use crds::v1alpha1::Task;
use k8s_openapi::jiff::Timestamp;

use super::facts::{Facts, after, stopped_at};

#[derive(Debug)]
pub struct Rules<'a> {
    pub daemon: bool,
    /// DAEMON: the instances that should each run one task.
    pub eligible: &'a [&'a str],
    pub desired: i32,
    /// How many tasks the classification kept.
    pub kept: usize,
    /// `maximumPercent` of desiredCount: the most live tasks at once.
    pub max_total: i64,
    /// The primary deployment's consecutive failures.
    pub failures: &'a [&'a Task],
    pub now: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Starts {
    /// One entry per task to start: the instance a DAEMON task is pinned
    /// to, or `None`.
    pub on: Vec<Option<String>>,
    /// Tasks were wanted but the throttle holds until then.
    pub throttled_until: Option<Timestamp>,
}

/// Delay before another start after `failures` consecutive failures:
/// doubling from one second, at most 15 minutes, as ECS throttles.
#[must_use]
pub fn backoff(failures: usize) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(10);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(15 * 60))
}

#[must_use]
pub fn starts(facts: &[Facts<'_>], rules: &Rules<'_>) -> Starts {
    let on: Vec<Option<String>> = if rules.daemon {
        let occupied: Vec<&str> = facts
            .iter()
            .filter(|f| f.live)
            .filter_map(|f| f.instance)
            .collect();
        rules
            .eligible
            .iter()
            .filter(|i| !occupied.contains(i))
            .map(|i| Some((*i).to_owned()))
            .collect()
    } else {
        let live = i64::try_from(facts.iter().filter(|f| f.live).count()).unwrap_or(i64::MAX);
        let want = i64::from(rules.desired) - i64::try_from(rules.kept).unwrap_or(0);
        let n = want.min(rules.max_total - live).max(0);
        vec![None; usize::try_from(n).unwrap_or(0)]
    };
    let throttled_until = rules
        .failures
        .iter()
        .filter_map(|t| stopped_at(t))
        .max()
        .map(|last| after(last, backoff(rules.failures.len())))
        .filter(|until| *until > rules.now);
    match throttled_until {
        Some(until) if !on.is_empty() => Starts {
            on: Vec::new(),
            throttled_until: Some(until),
        },
        _ => Starts {
            on,
            throttled_until: None,
        },
    }
}
