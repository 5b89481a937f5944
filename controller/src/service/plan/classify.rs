//! Which live tasks count toward the service and which are to be
//! replaced: tasks of an older revision, on a DRAINING instance, UNHEALTHY
//! past the grace period, or (DAEMON) on an instance that no longer
//! qualifies or already has one. A DAEMON task on a deregistered instance
//! is neither: it is stopped for the deregistration.

use std::time::Duration;

use crds::{stop, v1alpha1::Deployment};
use k8s_openapi::jiff::Timestamp;

use super::facts::{Facts, after, sooner, wait};

#[derive(Debug)]
pub struct Rules<'a> {
    pub primary: &'a Deployment,
    pub daemon: bool,
    /// DAEMON: the instances that should each run one task.
    pub eligible: &'a [&'a str],
    /// DAEMON: instances whose agent is disconnected: a task there is kept.
    pub disconnected: &'a [&'a str],
    /// Instances whose `spec.state` is DRAINING.
    pub draining: &'a [&'a str],
    /// Every registered instance: a DAEMON task on any other was
    /// deregistered with it, and `controller::task` stops it with ECS's
    /// reason for that rather than this plan with a scaling one.
    pub registered: &'a [&'a str],
    /// `healthCheckGracePeriodSeconds`.
    pub grace: Duration,
    pub now: Timestamp,
}

/// A task to replace, and why.
#[derive(Debug)]
pub struct Replacement<'a> {
    pub facts: &'a Facts<'a>,
    pub reason: String,
    /// It failed its health checks (it goes even from a failed deployment).
    pub health_failure: bool,
    /// It runs an older revision than the primary deployment's.
    pub old_revision: bool,
}

#[derive(Debug, Default)]
pub struct Classified<'a> {
    /// Tasks that count toward the desired count.
    pub keep: Vec<&'a Facts<'a>>,
    pub replace: Vec<Replacement<'a>>,
    /// When an UNHEALTHY task's grace period ends.
    pub requeue: Option<Duration>,
}

/// Sort the live tasks not yet stopping.
#[must_use]
pub fn classify<'a>(facts: &'a [Facts<'a>], rules: &Rules<'_>) -> Classified<'a> {
    let mut out = Classified::default();
    let scaling = stop::scaling(&rules.primary.id);
    let mut ordered: Vec<&Facts<'_>> = facts.iter().filter(|f| f.live && !f.stopping).collect();
    // Healthy and running tasks first, so a DAEMON instance keeps its
    // running task.
    ordered.sort_by_key(|f| (!f.healthy, !f.running, f.created()));
    let mut occupied: Vec<&str> = Vec::new();
    for f in ordered {
        let old_revision = !f.is_of(rules.primary);
        let replace = |reason: String, health_failure| Replacement {
            facts: f,
            reason,
            health_failure,
            old_revision,
        };
        if let Some(reason) = f.health_failure() {
            let grace_ends = f.started.map(|s| after(s, rules.grace));
            if grace_ends.is_none_or(|end| end <= rules.now) {
                out.replace.push(replace(reason, true));
                continue;
            }
            if let Some(end) = grace_ends {
                out.requeue = sooner(out.requeue, wait(rules.now, end));
            }
        }
        let on_draining = f.instance.is_some_and(|i| rules.draining.contains(&i));
        if old_revision || on_draining {
            out.replace.push(replace(scaling.clone(), false));
            continue;
        }
        if !rules.daemon {
            out.keep.push(f);
            continue;
        }
        if f.instance.is_some_and(|i| !rules.registered.contains(&i)) {
            continue;
        }
        match f.instance {
            Some(i)
                if (rules.eligible.contains(&i) || rules.disconnected.contains(&i))
                    && !occupied.contains(&i) =>
            {
                occupied.push(i);
                out.keep.push(f);
            }
            _ => out.replace.push(replace(scaling.clone(), false)),
        }
    }
    out
}
