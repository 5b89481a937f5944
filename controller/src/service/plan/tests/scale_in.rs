use crds::v1alpha1::PlacementStrategy;
use serde_json::json;

use super::{facts, instance, names, running, task};
use crate::placement::InstanceSpec;
use crate::service::plan::{
    facts::Facts,
    scale_in::{Balance, victims},
};

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
        // Ties go to the youngest task, then the last name.
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
            names(victims(&keep, desired, &Balance::new(&[], &[]))),
            expected,
            "desired {desired}"
        );
    }
}

/// Tasks `(name, created, instance)`, all running.
fn running_on(tasks: &[(&str, i64, &str)]) -> Vec<crds::v1alpha1::Task> {
    tasks
        .iter()
        .map(|(name, created, on)| running(task(name, 1, *created), on, created + 1))
        .collect()
}

#[test]
fn scale_in_keeps_the_zones_balanced_first_then_the_instances() {
    // Zone 1: one instance with three tasks. Zone 2: two with two each.
    let instances = [
        instance("a", &[("ecs.availability-zone", "zone-1")]),
        instance("b", &[("ecs.availability-zone", "zone-2")]),
        instance("c", &[("ecs.availability-zone", "zone-2")]),
    ];
    let tasks = running_on(&[
        ("a-1", 1, "a"),
        ("a-2", 2, "a"),
        ("a-3", 3, "a"),
        ("b-1", 1, "b"),
        ("b-2", 2, "b"),
        ("c-1", 1, "c"),
        ("c-2", 4, "c"),
    ]);
    let facts = facts(&tasks, false);
    let keep: Vec<&Facts<'_>> = facts.iter().collect();
    let strategy = |value: serde_json::Value| -> Vec<PlacementStrategy> {
        serde_json::from_value(value).expect("a strategy")
    };
    // (strategy, instances, desired, victims in order)
    type Case<'a> = (
        Vec<PlacementStrategy>,
        &'a [InstanceSpec],
        usize,
        &'a [&'a str],
    );
    // Left: a 100 MiB and 900 CPU, b 500 MiB, c 300 MiB (and 10 CPU).
    let reporting = [("a", 900, 100), ("b", 10, 500), ("c", 10, 300)].map(|(name, cpu, memory)| {
        let mut i = instance(name, &[("ecs.availability-zone", "zone-1")]);
        i.reported_remaining = Some((cpu, memory));
        i
    });
    let cases: [Case<'_>; 9] = [
        // The service default: zone 2 (4 tasks) before zone 1 (3), though
        // a is the most crowded instance; then the zones are even, and a
        // is.
        (Vec::new(), &instances, 6, &["c-2"]),
        (Vec::new(), &instances, 5, &["c-2", "a-3"]),
        // Spread over instances only: a first.
        (
            strategy(json!([{"type": "spread", "field": "instanceId"}])),
            &instances,
            6,
            &["a-3"],
        ),
        (
            strategy(json!([{"type": "spread", "field": "host"}])),
            &instances,
            5,
            &["a-3", "c-2"],
        ),
        // random states no preference, and neither does binpack where no
        // instance reports what it has left: the instance rule.
        (
            strategy(json!([{"type": "binpack", "field": "memory"}])),
            &instances,
            6,
            &["a-3"],
        ),
        // binpack: the instance with the most memory left first, and its
        // room grows with each task stopped there (64 MiB each).
        (
            strategy(json!([{"type": "binpack", "field": "memory"}])),
            &reporting,
            4,
            &["b-2", "b-1", "c-2"],
        ),
        (
            strategy(json!([{"type": "binpack", "field": "cpu"}])),
            &reporting,
            6,
            &["a-3"],
        ),
        (
            strategy(json!([{"type": "random"}])),
            &instances,
            6,
            &["a-3"],
        ),
        // A custom attribute: rack r1 (a, b: 5 tasks) against r2 (c: 2).
        (
            strategy(json!([{"type": "spread", "field": "attribute:rack"}])),
            &[
                instance("a", &[("rack", "r1")]),
                instance("b", &[("rack", "r1")]),
                instance("c", &[("rack", "r2")]),
            ],
            3,
            &["a-3", "b-2", "a-2", "c-2"],
        ),
    ];
    for (strategy, instances, desired, expected) in cases {
        let instances = super::shared(instances);
        let balance = Balance::new(&strategy, &instances);
        assert_eq!(
            names(victims(&keep, desired, &balance)),
            expected,
            "{strategy:?} down to {desired}"
        );
    }
}
