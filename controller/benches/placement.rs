//! Placement cost per task as the cluster grows.
//!
//! `cargo bench -p controller --bench placement` measures, on clusters of
//! 100 to 100,000 instances (4 vCPU, 16 GiB, each loaded to between 85%
//! and 95%, 90% on average, over 3 zones and 4 instance types):
//! - group `placement`: placing 100 tasks, one after another;
//! - group `placement_batch`: placing a batch of 10,000 tasks;
//! - group `placement_naive`: the scan-everything reference placing 100
//!   tasks, for comparison.
//!
//! Ids are `<strategy>/<instances>`: `binpack` (binpack on memory),
//! `spread_az` (spread over `ecs.availability-zone`) and `member_of`
//! (`attribute:ecs.instance-type =~ t2.*`, random). Throughput is counted
//! in tasks. Only the placements are timed; they are released afterwards.
//!
//! Three more ids, in `placement` and `placement_naive` only, time the
//! paths whose cost once grew with the cluster (docs/placement.md, "Why it
//! stays fast"), each for a task of the group that already runs on every
//! instance: `spread_instance` (ECS's service default, spread over zones
//! then instances), `binpack_spread` (binpack on CPU then spread over
//! instances, for a task that reserves no CPU, so that the instances tied
//! on the least remaining CPU stay tied) and `unplaceable`
//! (a task no instance has the memory for, explained per cause).

use std::{
    collections::BTreeMap,
    hint::black_box,
    time::{Duration, Instant},
};

use controller::placement::{
    Allocation, BinpackField, ClusterState, Constraint, InstanceSpec, Query, SpreadField, Strategy,
    TaskRequest, reference,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng, rngs::SmallRng};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];
const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];
const TYPES: [&str; 4] = ["t2.micro", "t2.small", "m5.large", "c5.xlarge"];
const CPU: u32 = 4096;
const MEMORY: u32 = 16_384;

fn cluster(instances: usize) -> ClusterState {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut state = ClusterState::new();
    for i in 0..instances {
        let id = state.upsert_instance(InstanceSpec {
            name: format!("i-{i:06}"),
            cpu: CPU,
            memory: MEMORY,
            reserved_ports: vec![],
            attributes: BTreeMap::from([
                (
                    "ecs.availability-zone".to_owned(),
                    ZONES[i % ZONES.len()].to_owned(),
                ),
                (
                    "ecs.instance-type".to_owned(),
                    TYPES[(i / 3) % TYPES.len()].to_owned(),
                ),
            ]),
            draining: false,
            connected: true,
            agent_version: None,
            registered_at: None,
            reported_remaining: None,
            awaiting_daemons: false,
        });
        let load: f64 = rng.random_range(0.85..0.95);
        state
            .allocate(
                id,
                Allocation {
                    task: format!("load-{i}"),
                    cpu: (f64::from(CPU) * load) as u32,
                    memory: (f64::from(MEMORY) * load) as u32,
                    ports: vec![],
                    group: BACKGROUND.into(),
                    family: "background".into(),
                },
            )
            .expect("fresh instance");
    }
    state
}

/// The group every instance of [`cluster`] runs one task of.
const BACKGROUND: &str = "service:background";

/// The strategies that every size runs in every group.
const EVERY_GROUP: [&str; 3] = ["binpack", "spread_az", "member_of"];

/// The strategies timed in `placement` and `placement_naive` only.
const GROWING_ONCE: [&str; 3] = ["spread_instance", "binpack_spread", "unplaceable"];

fn task(strategy: &str) -> TaskRequest {
    let background = |strategy| TaskRequest {
        cpu: 1,
        memory: 4,
        ports: vec![],
        group: BACKGROUND.into(),
        family: "background".into(),
        constraints: vec![],
        strategy,
    };
    match strategy {
        "spread_instance" => return background(Strategy::service_default()),
        // No CPU reserved, as many ECS tasks ask: placing one leaves every
        // tie on the least remaining CPU tied, so each placement meets
        // them all.
        "binpack_spread" => {
            return TaskRequest {
                cpu: 0,
                ..background(vec![
                    Strategy::Binpack(BinpackField::Cpu),
                    Strategy::Spread(SpreadField::Instance),
                ])
            };
        }
        "unplaceable" => {
            return TaskRequest {
                memory: MEMORY / 2,
                ..background(Strategy::run_task_default())
            };
        }
        _ => {}
    }
    let (strategy, constraints) = match strategy {
        "binpack" => (vec![Strategy::Binpack(BinpackField::Memory)], vec![]),
        "spread_az" => (
            vec![Strategy::Spread(SpreadField::Attribute(
                "ecs.availability-zone".into(),
            ))],
            vec![],
        ),
        "member_of" => (
            vec![Strategy::Random],
            vec![Constraint::MemberOf(
                Query::parse("attribute:ecs.instance-type =~ t2.*").expect("parses"),
            )],
        ),
        other => panic!("unknown strategy {other}"),
    };
    // Small enough that a batch of 10,000 fits in the 10% left free on
    // the 50 t2 instances of the smallest cluster.
    TaskRequest {
        cpu: 1,
        memory: 4,
        ports: vec![],
        group: "service:bench".into(),
        family: "bench".into(),
        constraints,
        strategy,
    }
}

/// Time `tasks` placements per iteration; release them untimed.
fn run(
    state: &mut ClusterState,
    task: &TaskRequest,
    tasks: usize,
    iters: u64,
    place: fn(&mut ClusterState, &str, &TaskRequest, &mut SmallRng),
) -> Duration {
    let ids: Vec<String> = (0..tasks).map(|i| format!("bench-{i}")).collect();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        for id in &ids {
            place(state, id, task, &mut rng);
        }
        total += start.elapsed();
        for id in &ids {
            state.release(id);
        }
    }
    total
}

fn engine(state: &mut ClusterState, id: &str, task: &TaskRequest, rng: &mut SmallRng) {
    let placed = state.place_and_allocate(id, task, rng);
    black_box(placed.expect("fits"));
}

fn naive(state: &mut ClusterState, id: &str, task: &TaskRequest, _: &mut SmallRng) {
    black_box(reference::place_and_allocate(state, id, task).expect("fits"));
}

fn engine_refused(state: &mut ClusterState, _: &str, task: &TaskRequest, rng: &mut SmallRng) {
    black_box(state.place(task, rng).expect_err("fits nowhere"));
}

fn naive_refused(state: &mut ClusterState, _: &str, task: &TaskRequest, _: &mut SmallRng) {
    black_box(reference::rank_all(state, task).expect_err("fits nowhere"));
}

fn placement(c: &mut Criterion) {
    let clusters: Vec<(usize, ClusterState)> = SIZES.iter().map(|&n| (n, cluster(n))).collect();
    let mut clusters = clusters;
    type Place = fn(&mut ClusterState, &str, &TaskRequest, &mut SmallRng);
    for (group_name, tasks, place, refused) in [
        (
            "placement",
            100,
            engine as Place,
            Some(engine_refused as Place),
        ),
        ("placement_batch", 10_000, engine, None),
        ("placement_naive", 100, naive, Some(naive_refused)),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(tasks as u64));
        let growing = refused.map_or(&[][..], |_| &GROWING_ONCE[..]);
        for &strategy in EVERY_GROUP.iter().chain(growing) {
            let t = task(strategy);
            let place = match (strategy, refused) {
                ("unplaceable", Some(refused)) => refused,
                _ => place,
            };
            for (size, state) in &mut clusters {
                group.bench_function(BenchmarkId::new(strategy, *size), |b| {
                    b.iter_custom(|iters| run(state, &t, tasks, iters, place));
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, placement);
criterion_main!(benches);
