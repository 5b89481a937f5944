use super::{facts, names, running, task};
use crate::service::plan::{facts::Facts, scale_in::victims};

#[test]
fn scale_in_stops_waiting_tasks_first_then_evens_out_the_most_crowded_instances() {
    // (name, created, instance it runs on)
    let tasks = [
        ("a-old", 1, Some("a")),
        ("a-mid", 2, Some("a")),
        ("a-new", 3, Some("a")),
        ("b-old", 1, Some("b")),
        ("b-new", 4, Some("b")),
        ("c", 1, Some("c")),
        ("waiting-old", 5, None),
        ("waiting-new", 6, None),
    ]
    .map(|(name, created, on)| match on {
        Some(on) => running(task(name, 1, created), on, created + 1),
        None => task(name, 1, created),
    });
    let facts = facts(&tasks, false);
    let keep: Vec<&Facts<'_>> = facts.iter().collect();
    // (desired, victims in order)
    let cases: [(usize, &[&str]); 7] = [
        (8, &[]),
        (9, &[]),
        (7, &["waiting-new"]),
        (6, &["waiting-new", "waiting-old"]),
        (5, &["waiting-new", "waiting-old", "a-new"]),
        // Ties go to the last instance in name order.
        (
            3,
            &["waiting-new", "waiting-old", "a-new", "b-new", "a-mid"],
        ),
        (
            2,
            &["waiting-new", "waiting-old", "a-new", "b-new", "a-mid", "c"],
        ),
    ];
    for (desired, expected) in cases {
        assert_eq!(
            names(victims(&keep, desired)),
            expected,
            "desired {desired}"
        );
    }
}
