use std::time::Duration;

use crds::v1alpha1::{StopCode, Task};

use super::{at, facts, running, stopped, task};
use crate::service::plan::starts::{Rules, Starts, backoff, starts};

fn rules<'a>(failures: &'a [&'a Task], now: i64) -> Rules<'a> {
    Rules {
        daemon: false,
        eligible: &[],
        desired: 4,
        kept: 2,
        max_total: 4,
        failures,
        now: at(now),
    }
}

#[test]
fn replica_starts_what_is_missing_within_maximum_percent() {
    let tasks = [
        running(task("a", 1, 0), "i-1", 1),
        running(task("b", 1, 0), "i-1", 1),
        running(task("old", 0, 0), "i-1", 1),
    ];
    let facts = facts(&tasks, false);
    // (desired, kept, max_total, starts): 3 live now.
    for (desired, kept, max_total, n) in [
        (4, 2, 4, 1),
        (4, 2, 8, 2),
        (4, 2, 3, 0),
        (2, 2, 4, 0),
        (1, 2, 4, 0),
        (0, 0, 0, 0),
    ] {
        let mut r = rules(&[], 10);
        (r.desired, r.kept, r.max_total) = (desired, kept, max_total);
        assert_eq!(
            starts(&facts, &r),
            Starts {
                on: vec![None; n],
                throttled_until: None
            },
            "desired {desired}, kept {kept}, max {max_total}"
        );
    }
}

#[test]
fn daemon_starts_one_task_on_each_eligible_instance_without_one() {
    let tasks = [
        running(task("a", 1, 0), "a", 1),
        stopped(task("b", 1, 0), StopCode::UserInitiated, "x", 2, None),
    ];
    let facts = facts(&tasks, false);
    let mut r = rules(&[], 10);
    r.daemon = true;
    r.eligible = &["a", "b", "c"];
    assert_eq!(
        starts(&facts, &r).on,
        [Some("b".to_owned()), Some("c".to_owned())]
    );
}

#[test]
fn the_start_throttle_doubles_from_one_second_to_fifteen_minutes() {
    for (failures, seconds) in [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 4),
        (10, 512),
        (11, 900),
        (500, 900),
    ] {
        assert_eq!(
            backoff(failures),
            Duration::from_secs(seconds),
            "{failures} failures"
        );
    }
}

#[test]
fn starts_wait_while_the_throttle_holds() {
    let failed: Vec<Task> = [100, 90, 95]
        .iter()
        .map(|at| {
            stopped(
                task("f", 1, 0),
                StopCode::TaskFailedToStart,
                "pull",
                *at,
                None,
            )
        })
        .collect();
    let failures: Vec<&Task> = failed.iter().collect();
    let facts = facts(&[], false);
    // Three failures: 4 s after the last (100 s).
    let held = starts(&facts, &rules(&failures, 103));
    assert_eq!(held.on, Vec::<Option<String>>::new());
    assert_eq!(held.throttled_until, Some(at(104)));
    let free = starts(&facts, &rules(&failures, 104));
    assert_eq!(free.on.len(), 2);
    assert_eq!(free.throttled_until, None);
    // Nothing wanted: nothing to throttle.
    let mut none_wanted = rules(&failures, 101);
    none_wanted.kept = 4;
    assert_eq!(starts(&facts, &none_wanted), Starts::default());
}
