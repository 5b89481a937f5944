//! Target tracking, as Application Auto Scaling runs it for ECS services
//! (docs/autoscaling.md): a pure function from a service's bounds, its
//! policies, the datapoints of its metrics and the time of its last
//! scaling to the desiredCount it should have, and why.
//!
//! - A datapoint is the service's tasks' use over what they reserve, in
//!   percent, measured once a period ([`measure`]).
//! - Scale out when a metric is above its target for the last
//!   [`SCALE_OUT_DATAPOINTS`] datapoints; scale in when every metric is
//!   below [`SCALE_IN_SHARE`] of its target for the last
//!   [`SCALE_IN_DATAPOINTS`] (ECS's alarms: 3 of 3 high, 15 of 15 low).
//! - The new count is `ceil(desiredCount × value / target)`, the largest
//!   over the policies, held within minCapacity and maxCapacity.
//! - A scale-out waits for the scale-out cooldown after the previous
//!   scale-out, a scale-in for the scale-in cooldown after the previous
//!   scale-in; a scale-in cooldown never holds a scale-out back.
//! - No scale-in while a deployment is in progress (Application Auto
//!   Scaling suspends it then); scale-out goes on.

use std::collections::{BTreeMap, VecDeque};

use crds::v1alpha1::{AutoScaling, DesiredStatus, Task, TaskLastStatus, UtilizationMetric};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::convert;

/// High datapoints in a row that scale out.
pub const SCALE_OUT_DATAPOINTS: usize = 3;
/// Low datapoints in a row that scale in.
pub const SCALE_IN_DATAPOINTS: usize = 15;
/// Below this share of its target a metric is low.
pub const SCALE_IN_SHARE: f64 = 0.9;

/// One period's measure of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datapoint {
    /// Percent, to one decimal.
    pub value: f64,
    /// The running tasks that reported their use.
    pub tasks: usize,
}

/// The service's use of `metric` now: the sum of what its running tasks
/// use over the sum of what they reserve. Tasks that have not reported
/// yet, or reserve none of it, are left out; with none left there is no
/// datapoint.
#[must_use]
pub fn measure(tasks: &[Task], metric: UtilizationMetric) -> Option<Datapoint> {
    let (mut used, mut reserved, mut counted) = (0_u64, 0_u64, 0_usize);
    for task in tasks {
        let Some(status) = &task.status else { continue };
        let (Some(usage), Some(TaskLastStatus::Running)) = (&status.usage, status.last_status)
        else {
            continue;
        };
        if task.spec.desired_status != DesiredStatus::Running {
            continue;
        }
        let Some(definition) = task
            .spec
            .definition
            .as_ref()
            .and_then(|d| task.effective_definition(d).ok())
        else {
            continue;
        };
        let (cpu, memory) = convert::resources(&definition);
        let (use_, reserve) = match metric {
            UtilizationMetric::CpuUtilization => (usage.cpu, cpu),
            UtilizationMetric::MemoryUtilization => (usage.memory, memory),
        };
        if reserve == 0 {
            continue;
        }
        used += u64::from(use_);
        reserved += u64::from(reserve);
        counted += 1;
    }
    #[allow(clippy::cast_precision_loss)] // CPU units and MiB: far below 2^52
    let value = (used as f64 * 1000.0 / reserved as f64).round() / 10.0;
    (counted > 0).then_some(Datapoint {
        value,
        tasks: counted,
    })
}

/// The last datapoints of each metric of one service, newest last; a
/// period without one holds `None`, which breaks a run of them.
#[derive(Clone, Debug, Default)]
pub struct History {
    points: BTreeMap<UtilizationMetric, VecDeque<Option<f64>>>,
    /// When this process last scaled the service out and in, in case the
    /// status read does not show it yet.
    pub scaled_out: Option<Timestamp>,
    pub scaled_in: Option<Timestamp>,
}

impl History {
    pub fn push(&mut self, metric: UtilizationMetric, point: Option<f64>) {
        let points = self.points.entry(metric).or_default();
        points.push_back(point);
        while points.len() > SCALE_IN_DATAPOINTS {
            points.pop_front();
        }
    }

    /// The last `n` datapoints of `metric`, if there are `n` in a row.
    fn run_of(&self, metric: UtilizationMetric, n: usize) -> Option<Vec<f64>> {
        let points = self.points.get(&metric)?;
        let last: Vec<f64> = points.iter().rev().take(n).map_while(|p| *p).collect();
        (last.len() == n).then_some(last)
    }
}

/// What the autoscaler knows of one service.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub scaling: &'a AutoScaling,
    pub desired: i32,
    pub history: &'a History,
    pub last_scale_out: Option<Timestamp>,
    pub last_scale_in: Option<Timestamp>,
    /// A deployment of the service is in progress.
    pub deploying: bool,
    pub now: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    /// Into minCapacity..maxCapacity, at once.
    Bounds,
}

/// A new desiredCount and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: i32,
    pub direction: Direction,
    pub message: String,
}

/// The desiredCount the service should have, if not the one it has.
#[must_use]
pub fn decide(input: &Input<'_>) -> Option<Decision> {
    let Input {
        scaling, desired, ..
    } = *input;
    let (min, max) = (scaling.min_capacity, scaling.max_capacity);
    if desired < min || desired > max {
        let to = desired.clamp(min, max);
        let bound = if desired < min {
            format!("below minCapacity {min}")
        } else {
            format!("above maxCapacity {max}")
        };
        return Some(Decision {
            desired: to,
            direction: Direction::Bounds,
            message: format!("desiredCount {desired} is {bound}: set to {to}"),
        });
    }
    scale_out(input).or_else(|| scale_in(input))
}

/// `ceil(desired × value / target)`, and that formula written out.
fn formula(desired: i32, value: f64, target: f64) -> (i32, String) {
    let wanted = (f64::from(desired) * value / target).ceil();
    #[allow(clippy::cast_possible_truncation)] // clamped below i32::MAX
    let wanted = wanted.clamp(0.0, f64::from(i32::MAX)) as i32;
    (
        wanted,
        format!("ceil({desired} × {value} / {target}) = {wanted}"),
    )
}

fn scale_out(input: &Input<'_>) -> Option<Decision> {
    let Input {
        scaling,
        desired,
        history,
        ..
    } = *input;
    let (policy, value, (wanted, worked)) = scaling
        .target_tracking
        .iter()
        .filter_map(|p| {
            let run = history.run_of(p.metric, SCALE_OUT_DATAPOINTS)?;
            run.iter()
                .all(|v| *v > p.target)
                .then(|| (p, run[0], formula(desired, run[0], p.target)))
        })
        .max_by_key(|(_, _, (wanted, _))| *wanted)?;
    let to = wanted.min(scaling.max_capacity);
    if to <= desired {
        return None;
    }
    if cooling(
        input.last_scale_out,
        policy.scale_out_cooldown_seconds,
        input.now,
    ) {
        return None;
    }
    Some(Decision {
        desired: to,
        direction: Direction::Out,
        message: format!(
            "{} {value}% above its target {}% for {SCALE_OUT_DATAPOINTS} datapoints: \
             desiredCount {desired} → {to} ({worked}{})",
            policy.metric,
            policy.target,
            held(wanted, to, scaling),
        ),
    })
}

fn scale_in(input: &Input<'_>) -> Option<Decision> {
    let Input {
        scaling,
        desired,
        history,
        ..
    } = *input;
    if scaling.disable_scale_in || input.deploying {
        return None;
    }
    // Every policy must be low; the count is the largest any asks for.
    let mut chosen: Option<(i32, String)> = None;
    let mut cooldown = 0;
    for policy in &scaling.target_tracking {
        let run = history.run_of(policy.metric, SCALE_IN_DATAPOINTS)?;
        if !run.iter().all(|v| *v < policy.target * SCALE_IN_SHARE) {
            return None;
        }
        let (wanted, worked) = formula(desired, run[0], policy.target);
        let why = format!(
            "{} {}% below {}% of its target {}% for {SCALE_IN_DATAPOINTS} datapoints ({worked})",
            policy.metric,
            run[0],
            SCALE_IN_SHARE * 100.0,
            policy.target
        );
        cooldown = cooldown.max(policy.scale_in_cooldown_seconds);
        if chosen.as_ref().is_none_or(|(w, _)| wanted > *w) {
            chosen = Some((wanted, why));
        }
    }
    let (wanted, why) = chosen?;
    let to = wanted.max(scaling.min_capacity);
    if to >= desired {
        return None;
    }
    if cooling(input.last_scale_in, cooldown, input.now) {
        return None;
    }
    Some(Decision {
        desired: to,
        direction: Direction::In,
        message: format!(
            "{why}: desiredCount {desired} → {to}{}",
            held(wanted, to, scaling)
        ),
    })
}

/// Whether `now` is within `seconds` of the previous scaling `last`.
fn cooling(last: Option<Timestamp>, seconds: u32, now: Timestamp) -> bool {
    last.is_some_and(|at| now < at + SignedDuration::from_secs(i64::from(seconds)))
}

/// Says so when a bound changed the formula's count.
fn held(wanted: i32, to: i32, scaling: &AutoScaling) -> String {
    if wanted > to {
        format!(", held to maxCapacity {}", scaling.max_capacity)
    } else if wanted < to {
        format!(", held to minCapacity {}", scaling.min_capacity)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scaling(value: serde_json::Value) -> AutoScaling {
        serde_json::from_value(value).expect("an autoScaling")
    }

    /// min 1, max 10, CPU at 50% with the given cooldowns.
    fn cpu_at_50(cooldown: u32) -> AutoScaling {
        scaling(
            json!({"minCapacity": 1, "maxCapacity": 10, "targetTracking": [
            {"metric": "CPUUtilization", "target": 50.0,
             "scaleOutCooldownSeconds": cooldown, "scaleInCooldownSeconds": cooldown}]}),
        )
    }

    fn history(metric: UtilizationMetric, points: &[Option<f64>]) -> History {
        let mut history = History::default();
        for p in points {
            history.push(metric, *p);
        }
        history
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a time")
    }

    fn input<'a>(scaling: &'a AutoScaling, desired: i32, history: &'a History) -> Input<'a> {
        Input {
            scaling,
            desired,
            history,
            last_scale_out: None,
            last_scale_in: None,
            deploying: false,
            now: at(1000),
        }
    }

    const CPU: UtilizationMetric = UtilizationMetric::CpuUtilization;
    const MEMORY: UtilizationMetric = UtilizationMetric::MemoryUtilization;

    #[test]
    fn a_count_outside_the_bounds_is_brought_in_at_once() {
        let s = cpu_at_50(300);
        let none = History::default();
        let raised = decide(&input(&s, 0, &none)).expect("raised");
        assert_eq!((raised.desired, raised.direction), (1, Direction::Bounds));
        assert!(raised.message.contains("below minCapacity 1"), "{raised:?}");
        let lowered = decide(&input(&s, 14, &none)).expect("lowered");
        assert_eq!(
            (lowered.desired, lowered.direction),
            (10, Direction::Bounds)
        );
        assert_eq!(decide(&input(&s, 5, &none)), None);
    }

    #[test]
    fn three_high_datapoints_in_a_row_scale_out_by_the_formula() {
        let s = cpu_at_50(300);
        let two = history(CPU, &[Some(10.0), Some(90.0), Some(80.0)]);
        assert_eq!(decide(&input(&s, 2, &two)), None, "two high are not enough");
        let broken = history(CPU, &[Some(90.0), None, Some(90.0), Some(80.0)]);
        assert_eq!(decide(&input(&s, 2, &broken)), None, "a gap breaks the run");
        let three = history(CPU, &[Some(90.0), Some(95.0), Some(80.0)]);
        let out = decide(&input(&s, 2, &three)).expect("scaled out");
        // ceil(2 × 80 / 50) = 4: the newest datapoint sizes it.
        assert_eq!((out.desired, out.direction), (4, Direction::Out));
        assert!(out.message.contains("ceil(2 × 80 / 50) = 4"), "{out:?}");
        let at_target = history(CPU, &[Some(50.0), Some(50.0), Some(50.0)]);
        assert_eq!(
            decide(&input(&s, 2, &at_target)),
            None,
            "at target is not above"
        );
    }

    #[test]
    fn scale_out_stops_at_max_capacity_and_says_so() {
        let s = cpu_at_50(0);
        let high = history(CPU, &[Some(100.0); 3]);
        let out = decide(&input(&s, 8, &high)).expect("scaled out");
        assert_eq!(out.desired, 10);
        assert!(out.message.contains("held to maxCapacity 10"), "{out:?}");
        assert_eq!(decide(&input(&s, 10, &high)), None, "already at max");
    }

    #[test]
    fn a_cooldown_holds_its_own_direction_only() {
        let s = cpu_at_50(300);
        let high = history(CPU, &[Some(100.0); 3]);
        let mut cooling = input(&s, 2, &high);
        cooling.last_scale_out = Some(at(800));
        assert_eq!(decide(&cooling), None, "200 s after a scale-out");
        cooling.last_scale_out = Some(at(700));
        assert_eq!(decide(&cooling).map(|d| d.desired), Some(4), "300 s after");
        // A recent scale-in never holds a scale-out back.
        let mut after_in = input(&s, 2, &high);
        after_in.last_scale_in = Some(at(999));
        assert_eq!(decide(&after_in).map(|d| d.desired), Some(4));

        let low = history(CPU, &[Some(10.0); 15]);
        let mut cooling = input(&s, 4, &low);
        cooling.last_scale_in = Some(at(900));
        assert_eq!(decide(&cooling), None, "100 s after a scale-in");
        cooling.last_scale_out = Some(at(999));
        cooling.last_scale_in = None;
        assert_eq!(decide(&cooling).map(|d| d.desired), Some(1));
    }

    #[test]
    fn fifteen_low_datapoints_below_ninety_percent_of_target_scale_in() {
        let s = cpu_at_50(0);
        let fourteen = history(CPU, &[Some(10.0); 14]);
        assert_eq!(decide(&input(&s, 6, &fourteen)), None);
        // 45 is 90% of 50: not below it.
        let mut near = vec![Some(20.0); 14];
        near.insert(0, Some(45.0));
        assert_eq!(decide(&input(&s, 6, &history(CPU, &near))), None);
        let low = history(CPU, &[Some(20.0); 15]);
        let scaled = decide(&input(&s, 6, &low)).expect("scaled in");
        // ceil(6 × 20 / 50) = 3.
        assert_eq!((scaled.desired, scaled.direction), (3, Direction::In));
        assert!(
            scaled.message.contains("ceil(6 × 20 / 50) = 3"),
            "{scaled:?}"
        );
        let idle = history(CPU, &[Some(0.0); 15]);
        let floor = decide(&input(&s, 6, &idle)).expect("scaled in");
        assert_eq!(floor.desired, 1);
        assert!(floor.message.contains("held to minCapacity 1"), "{floor:?}");
        assert_eq!(decide(&input(&s, 1, &idle)), None, "already at min");
    }

    #[test]
    fn a_deployment_in_progress_holds_scale_in_but_not_scale_out() {
        let s = cpu_at_50(0);
        let idle = history(CPU, &[Some(0.0); 15]);
        let mut deploying = input(&s, 6, &idle);
        deploying.deploying = true;
        assert_eq!(decide(&deploying), None);
        let high = history(CPU, &[Some(100.0); 3]);
        let mut deploying = input(&s, 6, &high);
        deploying.deploying = true;
        assert_eq!(decide(&deploying).map(|d| d.desired), Some(10));
    }

    #[test]
    fn disable_scale_in_only_adds() {
        let mut s = cpu_at_50(0);
        s.disable_scale_in = true;
        let idle = history(CPU, &[Some(0.0); 15]);
        assert_eq!(decide(&input(&s, 6, &idle)), None);
        let high = history(CPU, &[Some(100.0); 3]);
        assert_eq!(decide(&input(&s, 6, &high)).map(|d| d.desired), Some(10));
    }

    #[test]
    fn any_policy_scales_out_but_all_must_agree_to_scale_in() {
        let s = scaling(
            json!({"minCapacity": 1, "maxCapacity": 20, "targetTracking": [
            {"metric": "CPUUtilization", "target": 50.0,
             "scaleOutCooldownSeconds": 0, "scaleInCooldownSeconds": 0},
            {"metric": "MemoryUtilization", "target": 80.0,
             "scaleOutCooldownSeconds": 0, "scaleInCooldownSeconds": 0}]}),
        );
        let mut h = History::default();
        for _ in 0..15 {
            h.push(CPU, Some(10.0));
            h.push(MEMORY, Some(76.0));
        }
        // Memory is below its target but not below 90% of it (72).
        assert_eq!(decide(&input(&s, 4, &h)), None);
        for _ in 0..3 {
            h.push(MEMORY, Some(160.0));
        }
        // CPU would scale in, memory asks for ceil(4 × 160 / 80) = 8.
        let out = decide(&input(&s, 4, &h)).expect("scaled out");
        assert_eq!((out.desired, out.direction), (8, Direction::Out));
        assert!(out.message.starts_with("MemoryUtilization"), "{out:?}");
        for _ in 0..15 {
            h.push(MEMORY, Some(40.0));
        }
        // Both low: the larger count wins, memory's ceil(4 × 40 / 80) = 2
        // over CPU's ceil(4 × 10 / 50) = 1.
        let scaled = decide(&input(&s, 4, &h)).expect("scaled in");
        assert_eq!((scaled.desired, scaled.direction), (2, Direction::In));
    }

    fn task(name: &str, desired: &str, last: &str, usage: Option<(u32, u32)>) -> Task {
        let mut status = json!({"lastStatus": last});
        if let Some((cpu, memory)) = usage {
            status["usage"] = json!({"cpu": cpu, "memory": memory,
                "sampledAt": "2026-12-04T10:00:00Z"});
        }
        serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"taskDefinition": "web", "desiredStatus": desired,
                "definition": {"cpu": 256, "memory": 512, "containerDefinitions": [
                    {"name": "web", "image": "x"}]}},
            "status": status,
        }))
        .expect("a task")
    }

    #[test]
    fn measure_sums_the_running_tasks_that_reported() {
        let tasks = [
            task("a", "RUNNING", "RUNNING", Some((128, 100))),
            task("b", "RUNNING", "RUNNING", Some((256, 412))),
            task("not-yet", "RUNNING", "RUNNING", None),
            task("pending", "RUNNING", "PENDING", Some((999, 999))),
            task("stopping", "STOPPED", "RUNNING", Some((999, 999))),
        ];
        // (128 + 256) / (256 + 256) = 75%; (100 + 412) / 1024 = 50%.
        assert_eq!(
            measure(&tasks, CPU),
            Some(Datapoint {
                value: 75.0,
                tasks: 2
            })
        );
        assert_eq!(measure(&tasks, MEMORY).map(|p| p.value), Some(50.0));
        assert_eq!(measure(&tasks[2..], CPU), None, "nothing reported");
        let third = [task("a", "RUNNING", "RUNNING", Some((100, 0)))];
        // 100 / 256 = 39.0625%: kept to one decimal.
        assert_eq!(measure(&third, CPU).map(|p| p.value), Some(39.1));
    }
}
