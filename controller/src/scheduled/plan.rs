//! What a ScheduledTask should do now: a pure function of its spec and
//! status, the tasks its runs started, and the time.
//!
//! - The run due is the latest time the schedule names after the last
//!   run's (or, before any, after the object's creation). Runs missed
//!   meanwhile (the controller was down, or the object suspended) are
//!   caught up once, by that latest one, as long as it is at most a day
//!   old (EventBridge's default maximum event age); older, it is recorded
//!   as skipped.
//! - With a flexible window, a run starts at a point within the window
//!   after its time, the same point for the same run whoever computes it.
//! - While tasks of an earlier run are not STOPPED, `Forbid` skips the
//!   run, `Replace` stops them first, `Allow` starts it anyway.
//! - A run's tasks are named `<name>-<minute>-<i>` (the minute since the
//!   epoch of its scheduled time): a run started twice (a status write
//!   lost) creates nothing twice.

use std::time::Duration;

use crds::v1alpha1::{
    ConcurrencyPolicy, RunOutcome, ScheduledRun, ScheduledTaskSpec, ScheduledTaskStatus, StopCode,
    TaskLastStatus,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::schedule::Schedule;
use crate::events::Note;

/// A run older than this is not caught up (EventBridge Scheduler's default
/// `MaximumEventAgeInSeconds`).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Runs kept in the status.
pub const RUNS_KEPT: usize = 10;

/// One task of the schedule's runs, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTask {
    pub name: String,
    /// The minute (since the epoch) of its run's scheduled time.
    pub minute: i64,
    pub stopped: bool,
    /// Stopped as it should: its essential containers exited 0.
    pub succeeded: bool,
    /// Why it stopped, if it did.
    pub reason: Option<String>,
}

/// What the plan is made from.
#[derive(Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub spec: &'a ScheduledTaskSpec,
    pub status: &'a ScheduledTaskStatus,
    pub created: Timestamp,
    pub tasks: &'a [RunTask],
    pub now: Timestamp,
}

/// What to do, and what to report.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Tasks to stop first (`Replace`), with why.
    pub stop: Vec<(String, String)>,
    /// The names of the tasks to start, for the run at `minute`.
    pub start: Option<(i64, Vec<String>)>,
    pub status: ScheduledTaskStatus,
    pub notes: Vec<Note>,
    /// When to look again, events aside.
    pub requeue: Option<Duration>,
    /// Why the schedule cannot be read, if it cannot.
    pub invalid: Option<String>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// A run's tasks' names.
#[must_use]
pub fn task_names(name: &str, minute: i64, count: u8) -> Vec<String> {
    (0..count).map(|i| format!("{name}-{minute}-{i}")).collect()
}

/// Where in its window a flexible run starts: a fixed point for the run,
/// from its schedule's uid and time.
fn offset(uid: &str, minute: i64, window_minutes: u32) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (uid, minute).hash(&mut hasher);
    let window = u64::from(window_minutes) * 60;
    Duration::from_secs(hasher.finish() % window.max(1))
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_secs(u64::try_from((then.as_second() - now.as_second()).max(1)).unwrap_or(1))
}

#[must_use]
pub fn plan(input: &Input<'_>) -> Plan {
    let spec = input.spec;
    let mut plan = Plan {
        status: input.status.clone(),
        ..Plan::default()
    };
    let schedule =
        match Schedule::parse(&spec.schedule, spec.schedule_expression_timezone.as_deref()) {
            Ok(schedule) => schedule,
            Err(e) => {
                plan.invalid = Some(e);
                plan.status.next_schedule_time = None;
                report(&mut plan.status, input.tasks);
                return plan;
            }
        };
    let last = input.status.last_schedule_time.as_ref().map(|t| t.0);
    let after = last.unwrap_or(input.created);
    let now = input.now;
    let window = spec
        .flexible_time_window
        .map_or(0, |w| w.maximum_window_in_minutes);
    let starts_at = |due: Timestamp| {
        let minute = due.as_second().div_euclid(60);
        let delay = offset(input.uid, minute, window);
        let secs = i64::try_from(delay.as_secs()).unwrap_or(0);
        Timestamp::from_second(due.as_second() + if window == 0 { 0 } else { secs }).unwrap_or(due)
    };
    let mut last_run = last;
    if !spec.suspend
        && let Some((due, count)) = schedule.latest_due(after, now, input.created)
    {
        let starting = starts_at(due);
        if starting > now {
            // Within its flexible window, not yet.
            plan.status.next_schedule_time = Some(time(starting));
            plan.requeue = Some(until(now, starting));
            report(&mut plan.status, input.tasks);
            return plan;
        }
        last_run = Some(due);
        run(input, &mut plan, due, count);
    }
    plan.status.last_schedule_time = last_run.map(time);
    let next = schedule
        .next_after(last_run.unwrap_or(after).max(now), input.created)
        .map(starts_at);
    plan.status.next_schedule_time = if spec.suspend { None } else { next.map(time) };
    plan.requeue = next.filter(|_| !spec.suspend).map(|n| until(now, n));
    report(&mut plan.status, input.tasks);
    plan
}

/// The run due at `due` (the latest of `count` missed): started, skipped,
/// or started after stopping what runs.
fn run(input: &Input<'_>, plan: &mut Plan, due: Timestamp, count: u64) {
    let spec = input.spec;
    let minute = due.as_second().div_euclid(60);
    let mut record = |outcome: RunOutcome, reason: Option<String>| {
        plan.status.runs.insert(
            0,
            ScheduledRun {
                scheduled_time: time(due),
                tasks: Vec::new(),
                outcome,
                reason,
            },
        );
    };
    let age = input.now.as_second() - due.as_second();
    if age > i64::try_from(MAX_AGE.as_secs()).unwrap_or(i64::MAX) {
        let why = format!("the run at {due} was missed by more than a day, so it is not caught up");
        plan.notes.push(Note::warning("RunSkipped", why.clone()));
        record(RunOutcome::Skipped, Some(why));
        return;
    }
    let earlier: Vec<&RunTask> = input
        .tasks
        .iter()
        .filter(|t| t.minute < minute && !t.stopped)
        .collect();
    let started = input.tasks.iter().any(|t| t.minute == minute);
    if !started && !earlier.is_empty() {
        let names: Vec<&str> = earlier.iter().map(|t| t.name.as_str()).collect();
        match spec.concurrency_policy {
            ConcurrencyPolicy::Forbid => {
                let why = format!(
                    "the run at {due} is skipped: tasks of an earlier run still run ({}) and concurrencyPolicy is Forbid",
                    names.join(", ")
                );
                plan.notes.push(Note::normal("RunSkipped", why.clone()));
                record(RunOutcome::Skipped, Some(why));
                return;
            }
            ConcurrencyPolicy::Replace => {
                let why = format!("replaced by the run of {} at {due}", input.name);
                plan.stop = names
                    .iter()
                    .map(|n| ((*n).to_owned(), why.clone()))
                    .collect();
            }
            ConcurrencyPolicy::Allow => {}
        }
    }
    let names = task_names(input.name, minute, spec.count);
    if !started {
        let missed = if count > 1 {
            format!(
                " ({} runs were missed; this one catches them up)",
                count - 1
            )
        } else {
            String::new()
        };
        plan.notes.push(Note::normal(
            "RunStarted",
            format!("started {} for the run at {due}{missed}", names.join(", ")),
        ));
    }
    record(RunOutcome::Running, None);
    plan.start = Some((minute, names));
}

/// The runs' outcomes and the active tasks, from the tasks observed.
fn report(status: &mut ScheduledTaskStatus, tasks: &[RunTask]) {
    for run in &mut status.runs {
        let minute = run.scheduled_time.0.as_second().div_euclid(60);
        let mine: Vec<&RunTask> = tasks.iter().filter(|t| t.minute == minute).collect();
        if mine.is_empty() {
            continue;
        }
        run.tasks = mine.iter().map(|t| t.name.clone()).collect();
        run.tasks.sort();
        (run.outcome, run.reason) = if mine.iter().any(|t| !t.stopped) {
            (RunOutcome::Running, None)
        } else if let Some(failed) = mine.iter().find(|t| !t.succeeded) {
            (
                RunOutcome::Failed,
                Some(format!(
                    "{}: {}",
                    failed.name,
                    failed.reason.as_deref().unwrap_or("stopped")
                )),
            )
        } else {
            (RunOutcome::Succeeded, None)
        };
    }
    status
        .runs
        .dedup_by(|a, b| a.scheduled_time == b.scheduled_time);
    status.runs.truncate(RUNS_KEPT);
    let mut active: Vec<String> = tasks
        .iter()
        .filter(|t| !t.stopped)
        .map(|t| t.name.clone())
        .collect();
    active.sort();
    status.active_count = u32::try_from(active.len()).unwrap_or(u32::MAX);
    status.active = active;
}

/// A task's part in its run's outcome: stopped, and stopped well.
#[must_use]
pub fn judged(task: &crds::v1alpha1::Task) -> (bool, bool, Option<String>) {
    let Some(status) = task.status.as_ref() else {
        return (false, false, None);
    };
    let stopped = status.last_status == Some(TaskLastStatus::Stopped);
    let essential = |name: &str| {
        task.spec.definition.as_ref().is_none_or(|d| {
            d.container_definitions
                .iter()
                .any(|c| c.name == name && c.essential)
        })
    };
    let exits_ok = status
        .containers
        .iter()
        .filter(|c| essential(&c.name))
        .all(|c| c.exit_code == Some(0));
    let succeeded =
        stopped && status.stop_code == Some(StopCode::EssentialContainerExited) && exits_ok;
    let reason = stopped.then(|| {
        let bad = status
            .containers
            .iter()
            .find(|c| essential(&c.name) && c.exit_code != Some(0));
        match (bad, status.stopped_reason.as_deref()) {
            (Some(c), _) if status.stop_code == Some(StopCode::EssentialContainerExited) => {
                format!("container {} exited with {:?}", c.name, c.exit_code)
            }
            (_, Some(why)) => why.to_owned(),
            (_, None) => "stopped".to_owned(),
        }
    });
    (stopped, succeeded, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn spec(schedule: &str, policy: &str) -> ScheduledTaskSpec {
        serde_json::from_value(serde_json::json!({
            "schedule": schedule, "taskDefinition": "job", "count": 2,
            "concurrencyPolicy": policy,
        }))
        .expect("a spec")
    }

    fn task(name: &str, minute: i64, stopped: bool) -> RunTask {
        RunTask {
            name: name.to_owned(),
            minute,
            stopped,
            succeeded: stopped,
            reason: None,
        }
    }

    fn plan_at(
        spec: &ScheduledTaskSpec,
        status: &ScheduledTaskStatus,
        tasks: &[RunTask],
        now: &str,
    ) -> Plan {
        plan(&Input {
            name: "nightly",
            uid: "u1",
            spec,
            status,
            created: at("2026-01-01T00:00:00Z"),
            tasks,
            now: at(now),
        })
    }

    const MINUTE_0010: i64 = 1_767_226_200 / 60;

    #[test]
    fn a_due_run_starts_its_tasks_and_the_next_is_reported() {
        let spec = spec("rate(10 minutes)", "Allow");
        let plan = plan_at(
            &spec,
            &ScheduledTaskStatus::default(),
            &[],
            "2026-01-01T00:10:02Z",
        );
        assert_eq!(
            plan.start,
            Some((
                MINUTE_0010,
                vec![
                    format!("nightly-{MINUTE_0010}-0"),
                    format!("nightly-{MINUTE_0010}-1")
                ]
            ))
        );
        assert_eq!(
            plan.status.last_schedule_time,
            Some(Time(at("2026-01-01T00:10:00Z")))
        );
        assert_eq!(
            plan.status.next_schedule_time,
            Some(Time(at("2026-01-01T00:20:00Z")))
        );
        assert_eq!(plan.requeue, Some(Duration::from_secs(598)));
        assert_eq!(plan.status.runs[0].outcome, RunOutcome::Running);
        // Before it is due: nothing, and the time it will be.
        let early = plan_at(
            &spec,
            &ScheduledTaskStatus::default(),
            &[],
            "2026-01-01T00:09:00Z",
        );
        assert_eq!(early.start, None);
        assert_eq!(early.requeue, Some(Duration::from_secs(60)));
    }

    #[test]
    fn missed_runs_are_caught_up_once_unless_older_than_a_day() {
        let spec = spec("rate(10 minutes)", "Allow");
        let last = ScheduledTaskStatus {
            last_schedule_time: Some(Time(at("2026-01-01T00:10:00Z"))),
            ..ScheduledTaskStatus::default()
        };
        let plan = plan_at(&spec, &last, &[], "2026-01-01T01:15:00Z");
        let (minute, names) = plan.start.expect("one catch-up");
        assert_eq!(minute, at("2026-01-01T01:10:00Z").as_second() / 60);
        assert_eq!(names.len(), 2);
        assert!(
            plan.notes[0].message.contains("5 runs were missed"),
            "{:?}",
            plan.notes
        );
        // Every two days: the run of the 3rd, seen 25 hours late.
        let rare = super::tests::spec("rate(2 days)", "Allow");
        let stale = plan_at(
            &rare,
            &ScheduledTaskStatus::default(),
            &[],
            "2026-01-04T01:00:00Z",
        );
        assert_eq!(stale.start, None);
        assert_eq!(stale.status.runs[0].outcome, RunOutcome::Skipped);
        assert_eq!(
            stale.status.last_schedule_time,
            Some(Time(at("2026-01-03T00:00:00Z"))),
            "and it is not tried again"
        );
        assert_eq!(
            stale.status.next_schedule_time,
            Some(Time(at("2026-01-05T00:00:00Z")))
        );
    }

    #[test]
    fn forbid_skips_and_replace_stops_what_still_runs() {
        let status = ScheduledTaskStatus {
            last_schedule_time: Some(Time(at("2026-01-01T00:10:00Z"))),
            ..ScheduledTaskStatus::default()
        };
        let running = [task("nightly-old-0", MINUTE_0010, false)];
        let now = "2026-01-01T00:20:01Z";
        let forbid = plan_at(&spec("rate(10 minutes)", "Forbid"), &status, &running, now);
        assert_eq!(forbid.start, None);
        assert_eq!(forbid.status.runs[0].outcome, RunOutcome::Skipped);
        assert!(
            forbid.status.runs[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("nightly-old-0")),
            "{:?}",
            forbid.status.runs
        );
        assert_eq!(forbid.status.active, ["nightly-old-0"]);
        let replace = plan_at(&spec("rate(10 minutes)", "Replace"), &status, &running, now);
        assert_eq!(replace.stop.len(), 1);
        assert!(replace.start.is_some());
        let allow = plan_at(&spec("rate(10 minutes)", "Allow"), &status, &running, now);
        assert!(allow.stop.is_empty() && allow.start.is_some());
        // A run whose tasks exist already was started: never skipped, and
        // started again only by name (which creates nothing).
        let minute = at("2026-01-01T00:20:00Z").as_second() / 60;
        let both = [running[0].clone(), task("nightly-x-0", minute, false)];
        let again = plan_at(&spec("rate(10 minutes)", "Forbid"), &status, &both, now);
        assert!(again.start.is_some() && again.notes.is_empty());
    }

    #[test]
    fn outcomes_come_from_the_runs_tasks() {
        let status = ScheduledTaskStatus {
            last_schedule_time: Some(Time(at("2026-01-01T00:10:00Z"))),
            runs: vec![ScheduledRun {
                scheduled_time: Time(at("2026-01-01T00:10:00Z")),
                tasks: Vec::new(),
                outcome: RunOutcome::Running,
                reason: None,
            }],
            ..ScheduledTaskStatus::default()
        };
        let mut failed = task("nightly-b", MINUTE_0010, true);
        failed.succeeded = false;
        failed.reason = Some("container job exited with Some(3)".into());
        let tasks = [task("nightly-a", MINUTE_0010, true), failed];
        let plan = plan_at(
            &spec("rate(10 minutes)", "Allow"),
            &status,
            &tasks,
            "2026-01-01T00:15:00Z",
        );
        let run = &plan.status.runs[0];
        assert_eq!(run.outcome, RunOutcome::Failed);
        assert_eq!(run.tasks, ["nightly-a", "nightly-b"]);
        assert_eq!(
            run.reason.as_deref(),
            Some("nightly-b: container job exited with Some(3)")
        );
        assert_eq!(plan.status.active_count, 0);
    }

    #[test]
    fn a_flexible_run_waits_for_its_point_in_the_window() {
        let mut spec = spec("rate(1 hour)", "Allow");
        spec.flexible_time_window = Some(crds::v1alpha1::FlexibleTimeWindow {
            maximum_window_in_minutes: 30,
        });
        let due = at("2026-01-01T01:00:00Z");
        let delay = offset("u1", due.as_second() / 60, 30);
        assert!(delay < Duration::from_secs(30 * 60));
        let starts = due.as_second() + i64::try_from(delay.as_secs()).expect("small");
        let before = Timestamp::from_second(starts - 1)
            .expect("a time")
            .to_string();
        let waiting = plan_at(&spec, &ScheduledTaskStatus::default(), &[], &before);
        assert_eq!(waiting.start, None);
        assert_eq!(waiting.requeue, Some(Duration::from_secs(1)));
        let then = Timestamp::from_second(starts).expect("a time").to_string();
        let started = plan_at(&spec, &ScheduledTaskStatus::default(), &[], &then);
        assert!(started.start.is_some());
    }

    #[test]
    fn an_unreadable_schedule_is_reported_and_a_suspended_one_waits() {
        let bad = spec("cron(0 9 * * 2 *)", "Allow");
        let plan = plan_at(
            &bad,
            &ScheduledTaskStatus::default(),
            &[],
            "2026-01-02T00:00:00Z",
        );
        assert!(plan.invalid.is_some_and(|e| e.contains("only one")));
        assert_eq!(plan.start, None);
        let mut suspended = spec("rate(10 minutes)", "Allow");
        suspended.suspend = true;
        let plan = plan_at(
            &suspended,
            &ScheduledTaskStatus::default(),
            &[],
            "2026-01-01T05:00:00Z",
        );
        assert_eq!((plan.start, plan.requeue), (None, None));
        assert_eq!(plan.status.next_schedule_time, None);
    }
}
