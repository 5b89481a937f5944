//! The placement engine's ECS semantics, one behaviour per test, on small
//! clusters built by hand.

use std::collections::BTreeMap;

use controller::placement::{
    Allocation, BinpackField, Cause, ClusterState, Constraint, HostPort, InstanceSpec, Query,
    SpreadField, StateError, Strategy, TaskRequest,
};
use rand::{SeedableRng, rngs::SmallRng};

fn instance(name: &str, cpu: u32, memory: u32, attributes: &[(&str, &str)]) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        cpu,
        memory,
        reserved_ports: vec![HostPort::tcp(22)],
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        draining: false,
        connected: true,
        agent_version: None,
        registered_at: None,
        reported_remaining: None,
        awaiting_daemons: false,
    }
}

fn task(cpu: u32, memory: u32, strategy: Vec<Strategy>) -> TaskRequest {
    TaskRequest {
        cpu,
        memory,
        ports: vec![],
        group: "service:web".into(),
        family: "web".into(),
        constraints: vec![],
        strategy,
    }
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(7)
}

/// Place `n` tasks one after another; the instance names, sorted.
fn place_all(
    state: &mut ClusterState,
    t: &TaskRequest,
    n: usize,
    rng: &mut SmallRng,
) -> Vec<String> {
    let mut names: Vec<String> = (0..n)
        .map(|i| {
            state
                .place_and_allocate(&format!("t{i}"), t, rng)
                .expect("fits")
                .name
        })
        .collect();
    names.sort();
    names
}

fn memory(state: &ClusterState, name: &str) -> u32 {
    let id = state.instance_id(name).expect("exists");
    state.allocations(id).map(|a| a.memory).sum()
}

#[test]
fn binpack_memory_picks_the_fullest_instance_that_still_fits() {
    let mut state = ClusterState::new();
    for (name, used) in [("a", 100), ("b", 700), ("c", 900), ("d", 500)] {
        state.upsert_instance(instance(name, 4096, 1000, &[]));
        state
            .allocate_on(
                name,
                Allocation {
                    task: format!("{name}-existing"),
                    cpu: 0,
                    memory: used,
                    ports: vec![],
                    group: "other".into(),
                    family: "other".into(),
                },
            )
            .expect("allocates");
    }
    let t = task(10, 200, vec![Strategy::Binpack(BinpackField::Memory)]);
    // c has 100 left (too little); b has 300: the least that fits.
    assert_eq!(state.place(&t, &mut rng()).expect("fits").name, "b");
    state
        .place_and_allocate("t1", &t, &mut rng())
        .expect("fits");
    // b now has 100 left; d with 500 is next.
    assert_eq!(state.place(&t, &mut rng()).expect("fits").name, "d");
}

#[test]
fn spread_over_zones_then_instances_is_the_service_default() {
    let mut state = ClusterState::new();
    for (name, az) in [
        ("a1", "az-a"),
        ("a2", "az-a"),
        ("b1", "az-b"),
        ("c1", "az-c"),
    ] {
        state.upsert_instance(instance(name, 4096, 4096, &[("ecs.availability-zone", az)]));
    }
    let t = task(10, 10, Strategy::service_default());
    let mut rng = rng();
    let mut per_zone: BTreeMap<char, u32> = BTreeMap::from([('a', 0), ('b', 0), ('c', 0)]);
    for i in 0..9 {
        let placed = state
            .place_and_allocate(&format!("t{i}"), &t, &mut rng)
            .expect("fits");
        *per_zone
            .entry(placed.name.chars().next().expect("named"))
            .or_default() += 1;
        let max = per_zone.values().max().expect("three zones");
        let min = per_zone.values().min().expect("three zones");
        assert!(max - min <= 1, "after {} tasks: {per_zone:?}", i + 1);
    }
    assert_eq!(per_zone, BTreeMap::from([('a', 3), ('b', 3), ('c', 3)]));
    // Within az-a the instances share its three tasks as evenly as they can.
    let a1 = state.group_count(state.instance_id("a1").expect("a1"), "service:web");
    let a2 = state.group_count(state.instance_id("a2").expect("a2"), "service:web");
    assert_eq!((a1 + a2, a1.abs_diff(a2)), (3, 1));
}

#[test]
fn distinct_instance_keeps_one_task_of_the_group_per_instance() {
    let mut state = ClusterState::new();
    for name in ["a", "b", "c"] {
        state.upsert_instance(instance(name, 4096, 4096, &[]));
    }
    let mut t = task(1, 1, vec![Strategy::Random]);
    t.constraints.push(Constraint::DistinctInstance);
    let mut rng = rng();
    let names = place_all(&mut state, &t, 3, &mut rng);
    assert_eq!(names, ["a", "b", "c"]);
    let refused = state
        .place(&t, &mut rng)
        .expect_err("every instance runs one");
    assert_eq!(
        refused.causes,
        BTreeMap::from([(Cause::DistinctInstance, 3)])
    );
    // Nor does checking a choice again let a second one onto "b".
    assert_eq!(
        state.place_again("b", &t).expect_err("b runs one").causes,
        BTreeMap::from([(Cause::DistinctInstance, 1)])
    );
    // Another group is not constrained by web's tasks.
    t.group = "service:api".into();
    assert!(state.place(&t, &mut rng).is_ok());
}

#[test]
fn member_of_filters_by_attributes_and_by_the_tasks_already_there() {
    let mut state = ClusterState::new();
    state.upsert_instance(instance(
        "small",
        4096,
        4096,
        &[("ecs.instance-type", "t2.micro")],
    ));
    state.upsert_instance(instance(
        "big",
        4096,
        4096,
        &[("ecs.instance-type", "m5.large")],
    ));
    let mut rng = rng();
    let mut t = task(1, 1, vec![Strategy::Random]);
    t.constraints = vec![Constraint::MemberOf(
        Query::parse("attribute:ecs.instance-type =~ t2.*").expect("parses"),
    )];
    for _ in 0..10 {
        assert_eq!(state.place(&t, &mut rng).expect("fits").name, "small");
    }
    state
        .allocate_on(
            "big",
            Allocation {
                task: "db-1".into(),
                cpu: 1,
                memory: 1,
                ports: vec![],
                group: "service:db".into(),
                family: "db".into(),
            },
        )
        .expect("allocates");
    t.constraints = vec![Constraint::MemberOf(
        Query::parse("task:group == service:db").expect("parses"),
    )];
    assert_eq!(state.place(&t, &mut rng).expect("fits").name, "big");
    t.constraints = vec![Constraint::MemberOf(
        Query::parse("not(task:group == service:db)").expect("parses"),
    )];
    assert_eq!(state.place(&t, &mut rng).expect("fits").name, "small");
}

#[test]
fn member_of_reads_the_facts_of_each_instance() {
    let at = |t: &str| Some(t.parse().expect("a time"));
    let mut state = ClusterState::new();
    // Identical attributes, so one class: the facts still tell them apart.
    for (name, version, registered) in [
        ("a", "1.9.2", "2026-01-10T08:00:00Z"),
        ("b", "1.10.0", "2026-03-01T08:00:00Z"),
        ("c", "1.10.1", "2026-03-01T20:00:00Z"),
    ] {
        state.upsert_instance(InstanceSpec {
            agent_version: Some(version.into()),
            registered_at: at(registered),
            reported_remaining: None,
            awaiting_daemons: false,
            ..instance(name, 4096, 4096, &[("stack", "prod")])
        });
    }
    let mut rng = rng();
    let placed_on = |state: &mut ClusterState, expr: &str, rng: &mut SmallRng| {
        let mut t = task(1, 1, vec![Strategy::Random]);
        t.constraints = vec![Constraint::MemberOf(Query::parse(expr).expect("parses"))];
        let mut names: Vec<String> = (0..30)
            .filter_map(|_| state.place(&t, rng).ok().map(|p| p.name))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(
        placed_on(&mut state, "agentVersion >= 1.10.0", &mut rng),
        ["b", "c"]
    );
    assert_eq!(
        placed_on(&mut state, "registeredAt == 2026-03-01", &mut rng),
        ["b", "c"]
    );
    assert_eq!(
        placed_on(&mut state, "registeredAt < 2026-03-01T12:00:00Z", &mut rng),
        ["a", "b"]
    );
    assert_eq!(
        placed_on(&mut state, "ec2InstanceId in [a, c]", &mut rng),
        ["a", "c"]
    );
    assert_eq!(
        placed_on(&mut state, "agentConnected == true", &mut rng),
        ["a", "b", "c"]
    );

    // At most two tasks per instance, whatever the strategy says.
    let mut t = task(1, 1, vec![Strategy::Binpack(BinpackField::Memory)]);
    t.constraints = vec![Constraint::MemberOf(
        Query::parse("runningTasksCount < 2").expect("parses"),
    )];
    assert_eq!(
        place_all(&mut state, &t, 6, &mut rng),
        ["a", "a", "b", "b", "c", "c"]
    );
    let refused = state
        .place(&t, &mut rng)
        .expect_err("every instance runs two");
    assert_eq!(
        refused.to_string(),
        "3 instances: constraint memberOf(runningTasksCount < 2) not met"
    );
}

#[test]
fn static_host_ports_are_given_once_and_reserved_ports_never() {
    let mut state = ClusterState::new();
    state.upsert_instance(instance("a", 4096, 4096, &[]));
    state.upsert_instance(instance("b", 4096, 4096, &[]));
    let mut rng = rng();
    let mut web = task(1, 1, vec![Strategy::Random]);
    web.ports = vec![HostPort::tcp(80)];
    let first = state
        .place_and_allocate("w1", &web, &mut rng)
        .expect("fits")
        .name;
    let second = state
        .place_and_allocate("w2", &web, &mut rng)
        .expect("fits")
        .name;
    assert_ne!(first, second, "port 80 is taken on {first}");
    let refused = state
        .place(&web, &mut rng)
        .expect_err("port 80 is taken everywhere");
    assert_eq!(refused.to_string(), "2 instances: port 80 in use");
    // The same number over UDP is another port.
    web.ports = vec![HostPort::udp(80)];
    assert!(state.place(&web, &mut rng).is_ok());
    web.ports = vec![HostPort::tcp(22)];
    assert_eq!(
        state.place(&web, &mut rng).expect_err("reserved").causes,
        BTreeMap::from([(Cause::PortInUse(HostPort::tcp(22)), 2)])
    );
    // Released ports are free again.
    state.release("w1");
    web.ports = vec![HostPort::tcp(80)];
    assert_eq!(state.place(&web, &mut rng).expect("fits").name, first);
}

#[test]
fn draining_and_disconnected_instances_take_nothing() {
    let mut state = ClusterState::new();
    state.upsert_instance(InstanceSpec {
        draining: true,
        ..instance("draining", 4096, 4096, &[])
    });
    state.upsert_instance(InstanceSpec {
        connected: false,
        ..instance("lost", 4096, 4096, &[])
    });
    let t = task(1, 1, Strategy::service_default());
    let refused = state.place(&t, &mut rng()).expect_err("nowhere to go");
    assert_eq!(
        refused.to_string(),
        "1 instance: instance is DRAINING; 1: agent disconnected"
    );
    // Reconnecting brings it back, with its allocations kept.
    state.upsert_instance(instance("lost", 4096, 4096, &[]));
    assert_eq!(state.place(&t, &mut rng()).expect("fits").name, "lost");
}

#[test]
fn an_instance_awaiting_its_daemons_takes_only_tasks_pinned_to_it() {
    let mut state = ClusterState::new();
    state.upsert_instance(InstanceSpec {
        awaiting_daemons: true,
        ..instance("new", 4096, 4096, &[])
    });
    let t = task(1, 1, Strategy::service_default());
    let refused = state.place(&t, &mut rng()).expect_err("held for daemons");
    assert_eq!(
        refused.to_string(),
        "1 instance: instance awaits its daemon tasks"
    );
    // The daemon's own task, pinned there, goes.
    let daemon = TaskRequest {
        group: "service:logs".into(),
        ..task(1, 1, vec![])
    };
    assert_eq!(state.place_on("new", &daemon).expect("fits").name, "new");
    // A choice checked again (after a 409) meets every rule place does,
    // the room held for daemons among them.
    assert_eq!(
        state
            .place_again("new", &t)
            .expect_err("held for daemons")
            .to_string(),
        "1 instance: instance awaits its daemon tasks"
    );
    // Once its daemons hold their room, anything may go.
    state.upsert_instance(instance("new", 4096, 4096, &[]));
    assert_eq!(state.place(&t, &mut rng()).expect("fits").name, "new");
}

#[test]
fn unplaceable_counts_each_instance_once_under_its_first_cause() {
    let mut state = ClusterState::new();
    for i in 0..3 {
        state.upsert_instance(instance(
            &format!("tiny{i}"),
            4096,
            64,
            &[("stack", "prod")],
        ));
    }
    for i in 0..2 {
        state.upsert_instance(instance(
            &format!("web{i}"),
            4096,
            4096,
            &[("stack", "prod")],
        ));
        state
            .allocate_on(
                &format!("web{i}"),
                Allocation {
                    task: format!("old{i}"),
                    cpu: 1,
                    memory: 1,
                    ports: vec![HostPort::tcp(80)],
                    group: "service:old".into(),
                    family: "old".into(),
                },
            )
            .expect("allocates");
    }
    for i in 0..5 {
        state.upsert_instance(instance(
            &format!("dev{i}"),
            4096,
            4096,
            &[("stack", "dev")],
        ));
    }
    let mut t = task(10, 512, vec![Strategy::Binpack(BinpackField::Memory)]);
    t.ports = vec![HostPort::tcp(80)];
    t.constraints = vec![Constraint::MemberOf(
        Query::parse("attribute:stack == prod").expect("parses"),
    )];
    let refused = state.place(&t, &mut rng()).expect_err("nothing fits");
    assert_eq!(refused.instances, 10);
    assert_eq!(
        refused.to_string(),
        "5 instances: constraint memberOf(attribute:stack == prod) not met; 3: insufficient memory; 2: port 80 in use"
    );
    let empty = ClusterState::new()
        .place(&t, &mut rng())
        .expect_err("no instances");
    assert_eq!(
        empty.to_string(),
        "no container instances were found in the cluster"
    );
}

#[test]
fn state_changes_keep_allocations_and_refuse_duplicates() {
    let mut state = ClusterState::new();
    let a = state.upsert_instance(instance("a", 1024, 1024, &[("zone", "1")]));
    let alloc = Allocation {
        task: "t1".into(),
        cpu: 512,
        memory: 256,
        ports: vec![HostPort::tcp(8080)],
        group: "g".into(),
        family: "f".into(),
    };
    state.allocate(a, alloc.clone()).expect("allocates");
    assert_eq!(
        state.allocate(a, alloc.clone()),
        Err(StateError::DuplicateTask("t1".into()))
    );
    assert_eq!(
        state.allocate_on(
            "nope",
            Allocation {
                task: "t2".into(),
                ..alloc.clone()
            }
        ),
        Err(StateError::UnknownInstance("nope".into()))
    );
    // New attributes move the instance to another class but keep its tasks.
    let a2 = state.upsert_instance(instance("a", 1024, 1024, &[("zone", "2")]));
    assert_eq!(state.task_instance("t1"), Some(a2));
    assert_eq!(memory(&state, "a"), 256);
    assert_eq!(state.family_count(a2, "f"), 1);
    let t = task(600, 1, vec![Strategy::Binpack(BinpackField::Cpu)]);
    assert!(
        state.place(&t, &mut rng()).is_err(),
        "512 of 1024 CPU units are held"
    );
    assert_eq!(state.release("t1").map(|(_, a)| a), Some(alloc));
    assert!(state.place(&t, &mut rng()).is_ok());
    assert_eq!(state.remove_instance("a").map(|v| v.len()), Some(0));
    assert!(state.is_empty());
}

#[test]
fn spread_over_a_missing_attribute_treats_absence_as_a_value() {
    let mut state = ClusterState::new();
    state.upsert_instance(instance(
        "zoned",
        4096,
        4096,
        &[("ecs.availability-zone", "az-a")],
    ));
    state.upsert_instance(instance("unzoned", 4096, 4096, &[]));
    let t = task(
        1,
        1,
        vec![Strategy::Spread(SpreadField::Attribute(
            "ecs.availability-zone".into(),
        ))],
    );
    let mut rng = rng();
    let names = place_all(&mut state, &t, 2, &mut rng);
    assert_eq!(names, ["unzoned", "zoned"]);
}
