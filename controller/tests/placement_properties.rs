//! Properties of the placement engine over random clusters and task
//! streams, each placement checked against the scan-everything reference.

use std::collections::{BTreeMap, HashMap};

use controller::placement::{
    Allocation, BinpackField, ClusterState, Constraint, HostPort, InstanceSpec, Query, SpreadField,
    Strategy, TaskRequest, reference,
};
use proptest::{prelude::*, strategy::Strategy as Generator};
use rand::{SeedableRng, rngs::SmallRng};

const ZONE: &str = "ecs.availability-zone";
const TYPE: &str = "ecs.instance-type";

fn spread(attribute: &str) -> Strategy {
    Strategy::Spread(SpreadField::Attribute(attribute.to_owned()))
}

fn chains() -> Vec<Vec<Strategy>> {
    use BinpackField::{Cpu, Memory};
    vec![
        vec![],
        vec![Strategy::Random],
        vec![Strategy::Binpack(Cpu)],
        vec![Strategy::Binpack(Memory)],
        vec![spread(ZONE)],
        vec![Strategy::Spread(SpreadField::Instance)],
        Strategy::service_default(),
        vec![spread(ZONE), Strategy::Binpack(Memory)],
        vec![
            Strategy::Binpack(Memory),
            Strategy::Spread(SpreadField::Instance),
        ],
        vec![spread(TYPE), Strategy::Binpack(Cpu), Strategy::Random],
        vec![Strategy::Spread(SpreadField::Instance), spread(ZONE)],
        vec![Strategy::Binpack(Cpu), Strategy::Binpack(Memory)],
    ]
}

const EXPRESSIONS: [&str; 6] = [
    "attribute:ecs.instance-type =~ t2.*",
    "attribute:ecs.availability-zone in [az-a, az-b]",
    "attribute:stack == prod or attribute:stack !exists",
    "not(task:group == service:b)",
    "task:group == service:a or attribute:ecs.instance-type == m5.large",
    "attribute:cores >= 4",
];

fn arb_instance() -> impl Generator<Value = InstanceSpec> {
    (
        prop::sample::select(vec![512u32, 1024, 2048, 4096]),
        prop::sample::select(vec![256u32, 512, 1024, 2048]),
        prop::option::weighted(0.9, prop::sample::select(vec!["az-a", "az-b", "az-c"])),
        prop::sample::select(vec!["t2.micro", "t2.small", "m5.large"]),
        prop::option::of(prop::sample::select(vec!["prod", "dev"])),
        prop::sample::select(vec!["2", "4", "8"]),
        prop::sample::subsequence(vec![HostPort::tcp(22), HostPort::tcp(80)], 0..=2),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(cpu, memory, zone, kind, stack, cores, reserved, draining, connected, awaiting)| {
                let mut attributes = BTreeMap::from([
                    (TYPE.to_owned(), kind.to_owned()),
                    ("cores".to_owned(), cores.to_owned()),
                ]);
                if let Some(zone) = zone {
                    attributes.insert(ZONE.to_owned(), zone.to_owned());
                }
                if let Some(stack) = stack {
                    attributes.insert("stack".to_owned(), stack.to_owned());
                }
                InstanceSpec {
                    name: String::new(),
                    cpu,
                    memory,
                    reserved_ports: reserved,
                    attributes,
                    draining,
                    connected,
                    agent_version: None,
                    registered_at: None,
                    reported_remaining: None,
                    awaiting_daemons: awaiting,
                }
            },
        )
}

fn arb_task() -> impl Generator<Value = TaskRequest> {
    (
        0u32..600,
        0u32..600,
        prop::sample::subsequence(
            vec![
                HostPort::tcp(80),
                HostPort::tcp(443),
                HostPort::udp(80),
                HostPort::tcp(8080),
            ],
            0..=2,
        ),
        prop::sample::select(vec!["service:a", "service:b", "family:c"]),
        prop::bool::weighted(0.25),
        prop::option::weighted(0.35, prop::sample::select(EXPRESSIONS.to_vec())),
        prop::sample::select(chains()),
    )
        .prop_map(
            |(cpu, memory, ports, group, distinct, member_of, strategy)| {
                let mut constraints = vec![];
                if distinct {
                    constraints.push(Constraint::DistinctInstance);
                }
                if let Some(expr) = member_of {
                    constraints.push(Constraint::MemberOf(Query::parse(expr).expect("valid")));
                }
                TaskRequest {
                    cpu,
                    memory,
                    ports,
                    group: group.to_owned(),
                    family: group.rsplit(':').next().unwrap_or(group).to_owned(),
                    constraints,
                    strategy,
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Place(TaskRequest),
    /// Place the n-th task asked for before (modulo how many), as a
    /// service asks for its tasks one after another: an unplaceable one is
    /// refused from memory, which must still agree with the reference.
    Again(usize),
    /// Release the n-th live task (modulo how many there are).
    Release(usize),
    /// Flip an instance's draining or connected flag.
    Flip {
        instance: usize,
        drain: bool,
    },
}

fn arb_op() -> impl Generator<Value = Op> {
    prop_oneof![
        6 => arb_task().prop_map(Op::Place),
        3 => any::<usize>().prop_map(Op::Again),
        2 => any::<usize>().prop_map(Op::Release),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(instance, drain)| Op::Flip { instance, drain }),
    ]
}

/// The no-over-commit invariant (docs/architecture.md, "Invariants"),
/// checked on the engine's own books.
fn assert_invariants(state: &ClusterState, reserved: &HashMap<String, Vec<HostPort>>) {
    for id in state.instance_ids() {
        let name = state.instance_name(id).expect("live");
        let (cpu, memory) = state.registered(id).expect("live");
        let allocations: Vec<&Allocation> = state.allocations(id).collect();
        let used_cpu: u32 = allocations.iter().map(|a| a.cpu).sum();
        let used_memory: u32 = allocations.iter().map(|a| a.memory).sum();
        assert!(used_cpu <= cpu, "{name}: {used_cpu} of {cpu} CPU units");
        assert!(
            used_memory <= memory,
            "{name}: {used_memory} of {memory} MiB"
        );
        let mut ports: Vec<HostPort> = allocations.iter().flat_map(|a| a.ports.clone()).collect();
        let count = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), count, "{name}: a host port given twice");
        for port in &ports {
            assert!(
                !reserved[name].contains(port),
                "{name}: reserved port {port} given out"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Each placement is one of the reference's best choices, a task is
    /// unplaceable exactly when the reference finds no fit (for the same
    /// reasons), and no instance is ever over-committed.
    #[test]
    fn engine_agrees_with_the_reference(
        instances in prop::collection::vec(arb_instance(), 0..30),
        ops in prop::collection::vec(arb_op(), 1..80),
        seed in any::<u64>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = ClusterState::new();
        let mut specs = Vec::new();
        let mut reserved = HashMap::new();
        for (i, mut spec) in instances.into_iter().enumerate() {
            spec.name = format!("i{i}");
            reserved.insert(spec.name.clone(), spec.reserved_ports.clone());
            state.upsert_instance(spec.clone());
            specs.push(spec);
        }
        let mut live: Vec<String> = Vec::new();
        let mut asked: Vec<TaskRequest> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            let op = match op {
                Op::Again(k) if !asked.is_empty() => Op::Place(asked[k % asked.len()].clone()),
                op => op,
            };
            match op {
                Op::Place(task) => {
                    asked.push(task.clone());
                    let expected = reference::rank_all(&state, &task);
                    match (state.place(&task, &mut rng), expected) {
                        (Ok(placed), Ok(ranked)) => {
                            prop_assert_eq!(
                                reference::rank(&state, &task, placed.instance),
                                Some(ranked.key.clone()),
                                "engine chose {} but the best rank is {:?} on {:?}", placed.name, ranked.key, ranked.best
                            );
                            prop_assert!(ranked.best.contains(&placed.instance));
                            if task.constraints.contains(&Constraint::DistinctInstance) {
                                prop_assert_eq!(state.group_count(placed.instance, &task.group), 0);
                            }
                            let id = format!("t{n}");
                            state.allocate(placed.instance, Allocation {
                                task: id.clone(),
                                cpu: task.cpu,
                                memory: task.memory,
                                ports: task.ports.clone(),
                                group: task.group.clone(),
                                family: task.family.clone(),
                            }).expect("allocates");
                            live.push(id);
                        }
                        (Err(engine), Err(reference)) => prop_assert_eq!(engine, reference),
                        (engine, reference) => prop_assert!(false, "engine {:?} vs reference {:?}", engine, reference),
                    }
                }
                Op::Release(k) if !live.is_empty() => {
                    let task = live.swap_remove(k % live.len());
                    prop_assert!(state.release(&task).is_some());
                }
                Op::Release(_) => {}
                Op::Flip { instance, drain } if !specs.is_empty() => {
                    let count = specs.len();
                    let spec = &mut specs[instance % count];
                    if drain { spec.draining = !spec.draining } else { spec.connected = !spec.connected }
                    state.upsert_instance(spec.clone());
                }
                Op::Flip { .. } | Op::Again(_) => {}
            }
            assert_invariants(&state, &reserved);
        }
    }

    /// Spreading over zones keeps every two zones within one task of each
    /// other, unless the emptier zone has no instance with room.
    #[test]
    fn spread_keeps_zones_within_one_task_when_capacity_allows(
        zones in prop::collection::vec((1usize..4, prop::sample::select(vec![64u32, 256, 4096])), 2..5),
        tasks in 1usize..60,
        seed in any::<u64>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = ClusterState::new();
        for (z, (count, memory)) in zones.iter().enumerate() {
            for i in 0..*count {
                state.upsert_instance(InstanceSpec {
                    name: format!("z{z}-{i}"),
                    cpu: 100_000,
                    memory: *memory,
                    reserved_ports: vec![],
                    attributes: BTreeMap::from([(ZONE.to_owned(), format!("z{z}"))]),
                    draining: false,
                    connected: true,
                    agent_version: None,
                    registered_at: None,
                    reported_remaining: None,
                    awaiting_daemons: false,
                });
            }
        }
        let task = TaskRequest {
            cpu: 1,
            memory: 32,
            ports: vec![],
            group: "service:web".into(),
            family: "web".into(),
            constraints: vec![],
            strategy: vec![spread(ZONE)],
        };
        let mut per_zone = vec![0u32; zones.len()];
        for n in 0..tasks {
            let Ok(placed) = state.place_and_allocate(&format!("t{n}"), &task, &mut rng) else { break };
            let zone: usize = placed.name[1..placed.name.find('-').expect("dash")].parse().expect("zone");
            per_zone[zone] += 1;
            for (a, &ca) in per_zone.iter().enumerate() {
                for (b, &cb) in per_zone.iter().enumerate() {
                    if ca > cb + 1 {
                        let (count, memory) = zones[b];
                        let room = memory / 32 * count as u32;
                        prop_assert!(cb >= room, "zone {a} has {ca} tasks, zone {b} only {cb} with room for {room}");
                    }
                }
            }
        }
    }
}
