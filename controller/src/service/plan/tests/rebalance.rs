use crds::v1alpha1::{PlacementConstraint, PlacementStrategy, Task};
use serde_json::json;

use super::{definition, facts, instance, running, task};
use crate::{
    placement::InstanceSpec,
    service::plan::{
        facts::Facts,
        rebalance::{Imbalance, Spread, imbalance},
    },
};

fn in_zone(name: &str, zone: &str) -> InstanceSpec {
    instance(name, &[("ecs.availability-zone", zone)])
}

/// Running tasks `t0`, `t1`… on the instances given, one entry each.
fn on(instances: &[&str]) -> Vec<Task> {
    instances
        .iter()
        .enumerate()
        .map(|(i, on)| running(task(&format!("t{i}"), 1, 0), on, 0))
        .collect()
}

fn all<'a>(facts: &'a [Facts<'a>]) -> Vec<&'a Facts<'a>> {
    facts.iter().collect()
}

#[test]
fn a_zone_with_room_two_tasks_below_the_fullest_is_an_imbalance() {
    let definition = definition(false);
    let instances = [
        in_zone("a1", "az-a"),
        in_zone("b1", "az-b"),
        in_zone("c1", "az-c"),
    ];
    let instances = super::shared(&instances);
    let spread = Spread {
        strategy: &[],
        constraints: &[],
        definition: &definition,
        instances: &instances,
    };
    let tasks = on(&["a1", "a1", "a1", "b1", "b1", "b1"]);
    let facts = facts(&tasks, false);
    assert_eq!(
        imbalance(&spread, &all(&facts)),
        Some(Imbalance {
            field: "ecs.availability-zone".to_owned(),
            fullest: ("az-a".to_owned(), 3),
            emptiest: ("az-c".to_owned(), 0),
        })
    );
    // 3, 2, 1 is off by two: one more move; 2, 2, 2 is even.
    let tasks = on(&["a1", "a1", "a1", "b1", "b1", "c1"]);
    let facts = super::facts(&tasks, false);
    assert!(imbalance(&spread, &all(&facts)).is_some());
    let tasks = on(&["a1", "a1", "b1", "b1", "c1", "c1"]);
    let facts = super::facts(&tasks, false);
    assert_eq!(imbalance(&spread, &all(&facts)), None);

    // A zone whose only instance is full, draining, disconnected or
    // awaiting its daemons cannot take a task: nothing to move to.
    let tasks = on(&["a1", "a1", "a1", "b1", "b1", "b1"]);
    let facts = super::facts(&tasks, false);
    for unfit in [
        InstanceSpec {
            reported_remaining: Some((1024, 32)),
            ..in_zone("c1", "az-c")
        },
        InstanceSpec {
            draining: true,
            ..in_zone("c1", "az-c")
        },
        InstanceSpec {
            connected: false,
            ..in_zone("c1", "az-c")
        },
        InstanceSpec {
            awaiting_daemons: true,
            ..in_zone("c1", "az-c")
        },
    ] {
        let instances = super::shared(&[in_zone("a1", "az-a"), in_zone("b1", "az-b"), unfit]);
        let spread = Spread {
            instances: &instances,
            ..spread
        };
        assert_eq!(imbalance(&spread, &all(&facts)), None);
    }
}

#[test]
fn a_spread_off_by_one_or_led_by_binpack_is_left_alone() {
    let definition = definition(false);
    let instances = super::shared(&[in_zone("a1", "az-a"), in_zone("b1", "az-b")]);
    let spread = Spread {
        strategy: &[],
        constraints: &[],
        definition: &definition,
        instances: &instances,
    };
    let tasks = on(&["a1", "a1", "b1"]);
    let facts = facts(&tasks, false);
    assert_eq!(imbalance(&spread, &all(&facts)), None, "2 and 1");
    let tasks = on(&["a1", "a1"]);
    let lopsided = super::facts(&tasks, false);
    assert!(imbalance(&spread, &all(&lopsided)).is_some(), "2 and 0");

    let binpack: Vec<PlacementStrategy> = serde_json::from_value(json!([
        {"type": "binpack", "field": "memory"},
        {"type": "spread", "field": "attribute:ecs.availability-zone"}]))
    .expect("strategies");
    let packed = Spread {
        strategy: &binpack,
        ..spread
    };
    assert_eq!(imbalance(&packed, &all(&lopsided)), None);

    // Spread over instances, and a constraint the empty one fails.
    let by_instance: Vec<PlacementStrategy> =
        serde_json::from_value(json!([{"type": "spread", "field": "instanceId"}]))
            .expect("strategies");
    let spread = Spread {
        strategy: &by_instance,
        ..spread
    };
    let found = imbalance(&spread, &all(&lopsided)).expect("an imbalance");
    assert_eq!(found.describe(), "instance a1 has 2 tasks and b1 has 0");
    let constraints: Vec<PlacementConstraint> = serde_json::from_value(json!([
        {"type": "memberOf", "expression": "attribute:ecs.availability-zone == az-a"}]))
    .expect("constraints");
    let constrained = Spread {
        constraints: &constraints,
        ..spread
    };
    assert_eq!(imbalance(&constrained, &all(&lopsided)), None);
}
