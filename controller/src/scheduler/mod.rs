//! The shared-state scheduler (docs/architecture.md, "The shared-state
//! scheduler").
//!
//! It watches Tasks, ContainerInstances and TaskDefinitions, places the
//! unbound Tasks of its `schedulerName` with the placement engine over its
//! cache, and writes each placement as a reservation then a binding, both
//! conditional on the resourceVersion it read ([`bind`]). Nothing is
//! locked: several schedulers may run at once, and a 409 only means
//! another one wrote first.
//!
//! One loop owns the cache; rounds of writes run concurrently, at most one
//! per instance at a time (a second would carry a stale resourceVersion).
//! Placements made while an instance's round is in flight wait for it and
//! go out together in the next one.
//!
//! Replicas of one scheduler name share the tasks rather than race for
//! them: each holds a member Lease and places only the tasks it owns by
//! rendezvous hashing over the live replicas ([`members`]). Replicas of
//! other names compete only for instance capacity.

mod bind;
pub mod cache;
pub mod members;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use crds::{
    stop,
    v1alpha1::{
        ContainerInstance, DesiredStatus, Reference, StopCode, Task, TaskDefinition,
        TaskDefinitionRevision, TaskDefinitionSpec, TaskLastStatus,
    },
};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ObjectReference};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, reflector::Store, watcher},
};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use tracing::Instrument;

pub use bind::write_allocations;

use crate::{
    convert,
    events::{Events, Note},
    metrics::Metrics,
    revisions::{self, Unresolved},
};

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `schedulerName` whose tasks it places.
    pub name: String,
    /// Rounds of writes in flight at once.
    pub concurrency: usize,
    /// Tasks placed per pass of the loop.
    pub batch: usize,
    /// This replica's member Lease, to share the tasks of its name with
    /// the other replicas; `None` places every task of the name.
    pub members: Option<members::Options>,
}

impl Options {
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            concurrency: 64,
            batch: 512,
            members: None,
        }
    }
}

type Key = (String, String);

/// How long a start-task naming an instance this scheduler has not seen
/// waits for it to appear before the task is refused.
const START_TASK_GRACE: Duration = Duration::from_secs(5);

struct Pending {
    task: Arc<Task>,
    since: Instant,
    attempts: u32,
    /// In a round now.
    busy: bool,
    /// Could not be placed; tried again when its cluster changes.
    parked: Option<Instant>,
    /// What the task's condition says, so it is written only on change.
    message: Option<String>,
}

/// Run a scheduler until `shutdown` completes.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let span = tracing::info_span!("scheduler", name = %options.name);
    let mut scheduler = Scheduler::new(client, options, metrics);
    scheduler.run(shutdown).instrument(span).await;
}

struct Scheduler {
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    events: Events,
    clusters: HashMap<String, cache::Cluster>,
    definitions: HashMap<Key, Arc<TaskDefinition>>,
    /// Recorded revisions, for tasks that name `family:N`.
    revisions: Store<TaskDefinitionRevision>,
    /// What keeps [`Self::revisions`] filled, until `run` takes it.
    revisions_feed: Option<BoxFuture<'static, ()>>,
    pending: HashMap<Key, Pending>,
    /// Tasks of this scheduler name that another replica owns, kept to be
    /// taken over when the replicas change.
    others: HashMap<Key, Arc<Task>>,
    /// The replicas of this name, when they share the tasks.
    view: Option<members::View>,
    ready: VecDeque<Key>,
    retry: Vec<(Instant, Key)>,
    /// Instances with a round in flight, and the placements waiting for it.
    rounds: HashMap<Key, Vec<bind::Placed>>,
    /// Per owner (or task), the last unplaceable message published.
    published: HashMap<Key, String>,
    rng: SmallRng,
}

type Round = BoxFuture<'static, bind::Outcome>;

impl Scheduler {
    fn new(client: Client, options: Options, metrics: Arc<Metrics>) -> Self {
        let events = Events::new(client.clone(), &format!("scheduler/{}", options.name));
        let (revisions, feed) =
            crate::cache::cache::<TaskDefinitionRevision>(&client, watcher::Config::default());
        let view = options
            .members
            .as_ref()
            .map(|m| members::View::new(&m.identity, m.duration, Instant::now()));
        Self {
            revisions,
            revisions_feed: Some(Box::pin(feed)),
            client,
            options,
            metrics,
            events,
            clusters: HashMap::new(),
            definitions: HashMap::new(),
            pending: HashMap::new(),
            others: HashMap::new(),
            view,
            ready: VecDeque::new(),
            retry: Vec::new(),
            rounds: HashMap::new(),
            published: HashMap::new(),
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        let config = watcher::Config::default();
        let mut tasks = std::pin::pin!(
            watcher(Api::<Task>::all(self.client.clone()), config.clone()).default_backoff()
        );
        let mut instances = std::pin::pin!(
            watcher(
                Api::<ContainerInstance>::all(self.client.clone()),
                config.clone()
            )
            .default_backoff()
        );
        let mut definitions = std::pin::pin!(
            watcher(Api::<TaskDefinition>::all(self.client.clone()), config).default_backoff()
        );
        let mut revisions = self
            .revisions_feed
            .take()
            .unwrap_or_else(|| Box::pin(std::future::pending()));
        let membership = self
            .options
            .members
            .as_ref()
            .map(|m| members::Membership::new(self.client.clone(), &self.options.name, m));
        let mut renewing: BoxFuture<'_, ()> = match &membership {
            Some(m) => Box::pin(m.renew()),
            None => Box::pin(std::future::pending()),
        };
        let mut leases: futures::stream::BoxStream<'static, _> = match &self.options.members {
            Some(m) => watcher(
                Api::<Lease>::namespaced(self.client.clone(), &m.namespace),
                watcher::Config::default().labels(&format!(
                    "{}={}",
                    members::SCHEDULER_LABEL,
                    self.options.name
                )),
            )
            .default_backoff()
            .boxed(),
            None => futures::stream::pending().boxed(),
        };
        let mut relist_leases: Option<Vec<Lease>> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut rounds: FuturesUnordered<Round> = FuturesUnordered::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut synced = [false; 3];
        let mut relist_tasks: Option<HashSet<Key>> = None;
        let mut relist_instances: Option<HashSet<Key>> = None;
        let mut relist_definitions: Option<HashSet<Key>> = None;
        tracing::info!("scheduler started");
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(outcome) = rounds.next(), if !rounds.is_empty() => {
                    self.finish(outcome, &mut rounds);
                }
                Some(event) = instances.next() => match event {
                    Ok(watcher::Event::Init) => relist_instances = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(ci)) => {
                        if let Some(seen) = &mut relist_instances {
                            seen.insert(key_of(&ci));
                        }
                        self.cluster(&ci).apply(Arc::new(ci));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(seen) = relist_instances.take() {
                            for (namespace, cluster) in &mut self.clusters {
                                for name in cluster.names() {
                                    if !seen.contains(&(namespace.clone(), name.clone())) {
                                        cluster.remove(&name);
                                    }
                                }
                            }
                        }
                        synced[0] = true;
                    }
                    Ok(watcher::Event::Apply(ci)) => self.cluster(&ci).apply(Arc::new(ci)),
                    Ok(watcher::Event::Delete(ci)) => self.cluster(&ci).remove(&ci.name_any()),
                    Err(e) => tracing::warn!(error = %e, "watching container instances"),
                },
                Some(event) = tasks.next() => match event {
                    Ok(watcher::Event::Init) => relist_tasks = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(task)) => {
                        if let Some(seen) = &mut relist_tasks {
                            seen.insert(key_of(&task));
                        }
                        self.observe(task);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(seen) = relist_tasks.take() {
                            self.pending.retain(|k, p| p.busy || seen.contains(k));
                            self.others.retain(|k, _| seen.contains(k));
                        }
                        synced[1] = true;
                    }
                    Ok(watcher::Event::Apply(task)) => self.observe(task),
                    Ok(watcher::Event::Delete(task)) => {
                        if let Some(uid) = task.uid() {
                            self.cluster(&task).forget(&uid);
                        }
                        let key = key_of(&task);
                        if self.pending.get(&key).is_some_and(|p| !p.busy) {
                            self.pending.remove(&key);
                        }
                        self.others.remove(&key);
                    }
                    Err(e) => tracing::warn!(error = %e, "watching tasks"),
                },
                Some(event) = definitions.next() => match event {
                    Ok(watcher::Event::Init) => relist_definitions = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(td)) => {
                        if let Some(seen) = &mut relist_definitions {
                            seen.insert(key_of(&td));
                        }
                        self.define(td);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(seen) = relist_definitions.take() {
                            self.definitions.retain(|k, _| seen.contains(k));
                        }
                        synced[2] = true;
                    }
                    Ok(watcher::Event::Apply(td)) => self.define(td),
                    Ok(watcher::Event::Delete(td)) => {
                        self.definitions.remove(&key_of(&td));
                    }
                    Err(e) => tracing::warn!(error = %e, "watching task definitions"),
                },
                () = &mut revisions => {}
                () = &mut renewing => {}
                Some(event) = leases.next() => {
                    let now = Instant::now();
                    match (event, self.view.as_mut()) {
                        (Ok(watcher::Event::Init), _) => relist_leases = Some(Vec::new()),
                        (Ok(watcher::Event::InitApply(lease)), Some(view)) => {
                            view.observe(&lease, now);
                            if let Some(seen) = &mut relist_leases {
                                seen.push(lease);
                            }
                        }
                        (Ok(watcher::Event::InitDone), Some(view)) => {
                            if let Some(seen) = relist_leases.take() {
                                view.keep_only(&seen);
                            }
                        }
                        (Ok(watcher::Event::Apply(lease)), Some(view)) => view.observe(&lease, now),
                        (Ok(watcher::Event::Delete(lease)), Some(view)) => view.forget(&lease),
                        (Err(e), _) => tracing::warn!(error = %e, "watching scheduler member Leases"),
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    if self.view.as_mut().is_some_and(|v| v.refresh(Instant::now())) {
                        self.reassign();
                    }
                    self.wake();
                }
            }
            let now = Instant::now();
            if synced.iter().all(|s| *s) && self.view.as_ref().is_none_or(|v| v.ready(now)) {
                self.dispatch(&mut rounds);
            }
        }
        // Rounds in flight finish: a half-written round is what the
        // collector exists for, but there is no need to leave one.
        while let Some(outcome) = rounds.next().await {
            self.finish(outcome, &mut FuturesUnordered::new());
        }
        drop(renewing);
        if let Some(membership) = &membership {
            membership.leave().await;
        }
        tracing::info!("scheduler stopped");
    }

    fn cluster(&mut self, object: &impl ResourceExt) -> &mut cache::Cluster {
        self.clusters
            .entry(object.namespace().unwrap_or_default())
            .or_default()
    }

    fn define(&mut self, td: TaskDefinition) {
        let namespace = td.namespace().unwrap_or_default();
        self.definitions.insert(key_of(&td), Arc::new(td));
        if let Some(cluster) = self.clusters.get_mut(&namespace) {
            cluster.changed = true;
        }
    }

    /// Take in a task: queue it if it waits for this scheduler.
    fn observe(&mut self, task: Task) {
        let key = key_of(&task);
        if task.spec.desired_status == DesiredStatus::Stopped
            && task.placed_on().is_some()
            && let Some(uid) = task.uid()
        {
            self.cluster(&task).stopping(&uid);
        }
        let task = Arc::new(task);
        let wanted = self.wants(&task);
        if !wanted || !self.owns(&task) {
            match self.pending.get_mut(&key) {
                // In a round: keep the news, so a retry sees it is done.
                Some(p) if p.busy => p.task = Arc::clone(&task),
                Some(_) => {
                    self.pending.remove(&key);
                }
                None => {}
            }
            if wanted {
                self.others.insert(key, task);
            } else {
                self.others.remove(&key);
            }
            return;
        }
        self.others.remove(&key);
        self.enqueue(key, task);
    }

    /// Queue a task this replica places (or refresh the one queued).
    fn enqueue(&mut self, key: Key, task: Arc<Task>) {
        match self.pending.get_mut(&key) {
            Some(p) if p.task.uid() == task.uid() => p.task = task,
            _ => {
                self.pending.insert(
                    key.clone(),
                    Pending {
                        task,
                        since: Instant::now(),
                        attempts: 0,
                        busy: false,
                        parked: None,
                        message: None,
                    },
                );
                self.ready.push_back(key);
            }
        }
    }

    /// Whether this replica, rather than another of its name, places the
    /// task.
    fn owns(&self, task: &Task) -> bool {
        self.view
            .as_ref()
            .is_none_or(|v| v.owns(task.metadata.uid.as_deref().unwrap_or_default()))
    }

    /// The replicas changed: take the tasks now owned here, hand back
    /// those now another's (unless in a round, which finishes first).
    fn reassign(&mut self) {
        if let Some(view) = &self.view {
            tracing::info!(replicas = ?view.live(), "scheduler replicas changed");
        }
        let taken: Vec<Key> = self
            .others
            .iter()
            .filter(|(_, task)| self.owns(task))
            .map(|(key, _)| key.clone())
            .collect();
        for key in taken {
            if let Some(task) = self.others.remove(&key) {
                self.enqueue(key, task);
            }
        }
        let given: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.busy && !self.owns(&p.task))
            .map(|(key, _)| key.clone())
            .collect();
        for key in given {
            if let Some(p) = self.pending.remove(&key) {
                self.others.insert(key, p.task);
            }
        }
    }

    fn wants(&self, task: &Task) -> bool {
        task.spec.scheduler_name == self.options.name
            && task.placed_on().is_none()
            && task.spec.desired_status == DesiredStatus::Running
            && task.metadata.deletion_timestamp.is_none()
            && task.status.as_ref().is_none_or(|s| {
                s.stop_code.is_none() && s.last_status != Some(TaskLastStatus::Stopped)
            })
    }

    /// Move due retries and parked tasks of changed clusters back to work.
    fn wake(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.retry = later;
        self.ready.extend(due.into_iter().map(|(_, k)| k));
        for (key, p) in &mut self.pending {
            let Some(parked) = p.parked else { continue };
            let changed = self.clusters.get(&key.0).is_some_and(|c| c.changed);
            if changed || now.duration_since(parked) > Duration::from_secs(10) {
                p.parked = None;
                self.ready.push_back(key.clone());
            }
        }
        for cluster in self.clusters.values_mut() {
            cluster.changed = false;
        }
    }

    /// Place what is ready and start the rounds that write it.
    fn dispatch(&mut self, rounds: &mut FuturesUnordered<Round>) {
        let mut placed: BTreeMap<Key, Vec<bind::Placed>> = BTreeMap::new();
        let mut taken = 0;
        while taken < self.options.batch && rounds.len() + placed.len() < self.options.concurrency {
            // Roughly oldest first, but in an order of this scheduler's
            // own: schedulers that all took the same tasks first would
            // mostly reserve twice and lose the bind.
            let window = self.ready.len().min(self.options.batch);
            if window == 0 {
                break;
            }
            let Some(key) = self.ready.remove(self.rng.random_range(0..window)) else {
                break;
            };
            let Some(p) = self.pending.get(&key) else {
                continue;
            };
            if p.busy || p.parked.is_some() {
                continue;
            }
            taken += 1;
            let task = Arc::clone(&p.task);
            match self.place(&task) {
                Ok((instance, placement)) => {
                    if let Some(p) = self.pending.get_mut(&key) {
                        p.busy = true;
                    }
                    placed
                        .entry((key.0.clone(), instance))
                        .or_default()
                        .push(placement);
                }
                Err(NotPlaced::Waiting(message)) => self.unplaceable(&key, message),
                Err(NotPlaced::Refused { instance, reason }) => {
                    self.refuse(&key, &instance, reason);
                }
                Err(NotPlaced::Invalid(reason)) => self.fail(&key, reason),
            }
        }
        for (instance, placements) in placed {
            if let Some(waiting) = self.rounds.get_mut(&instance) {
                waiting.extend(placements);
            } else {
                self.start_round(instance, placements, rounds);
            }
        }
    }

    fn start_round(
        &mut self,
        (namespace, name): Key,
        placements: Vec<bind::Placed>,
        rounds: &mut FuturesUnordered<Round>,
    ) {
        let Some(instance) = self
            .clusters
            .get(&namespace)
            .and_then(|c| c.instance(&name))
            .cloned()
        else {
            for p in placements {
                self.undo(&namespace, &name, &p);
            }
            return;
        };
        // A choice made against another version of the instance is
        // checked again against this one (writing it unchecked could
        // over-commit); one that no longer fits is made anew.
        let current = instance.resource_version();
        let (mut placements, stale): (Vec<_>, Vec<_>) = placements
            .into_iter()
            .partition(|p| p.allocation.is_none() || p.basis == current);
        for p in &stale {
            if let Some(cluster) = self.clusters.get_mut(&namespace) {
                cluster.settle(&name, &p.task.uid().unwrap_or_default());
            }
            placements.extend(self.recheck_or_again(&key_of(p.task.as_ref()), &name));
        }
        if placements.is_empty() {
            return;
        }
        self.rounds.insert((namespace.clone(), name), Vec::new());
        let instances = Api::namespaced(self.client.clone(), &namespace);
        let tasks = Api::namespaced(self.client.clone(), &namespace);
        rounds.push(Box::pin(bind::round(
            instances, tasks, instance, placements,
        )));
    }

    /// Choose an instance for a task and hold its reservation in the cache.
    fn place(&mut self, task: &Task) -> Result<(String, bind::Placed), NotPlaced> {
        self.place_where(task, None)
    }

    /// [`Self::place`], on `on` only when given: the same choice checked
    /// again against a newer version of the instance.
    fn place_where(
        &mut self,
        task: &Task,
        on: Option<&str>,
    ) -> Result<(String, bind::Placed), NotPlaced> {
        let namespace = task.namespace().unwrap_or_default();
        let uid = task.uid().unwrap_or_default();
        let (definition, snapshot) = self.definition(task)?;
        let definition = task
            .effective_definition(&definition)
            .map_err(NotPlaced::Invalid)?;
        let request = convert::request(task, &definition).map_err(NotPlaced::Waiting)?;
        let cluster = self.clusters.entry(namespace).or_default();
        if let Some(on) = cluster.reserved_on(&uid) {
            // Reserved already, by a round that never bound it: bind there.
            let on = on.to_owned();
            return Ok((
                on,
                bind::Placed {
                    task: Arc::new(task.clone()),
                    allocation: None,
                    snapshot,
                    basis: None,
                },
            ));
        }
        let placement = match (&request.pinned, on) {
            (Some(instance), _) => cluster.state.place_on(instance, &request.task),
            (None, Some(instance)) => cluster.state.place_again(instance, &request.task),
            (None, None) => cluster.state.place(&request.task, &mut self.rng),
        }
        .map_err(|unplaceable| match &task.spec.container_instance {
            Some(instance) => NotPlaced::Refused {
                instance: instance.clone(),
                reason: match unplaceable.ranked().first() {
                    Some((cause, _)) => {
                        format!("container instance {instance} cannot run the task: {cause}")
                    }
                    None => format!("container instance {instance} is not registered"),
                },
            },
            None => NotPlaced::Waiting(unplaceable.to_string()),
        })?;
        let allocation =
            crate::placement::allocation_for(&cache::key(&uid, &placement.name), &request.task);
        cluster.hold(&placement.name, allocation);
        let basis = cluster
            .instance(&placement.name)
            .and_then(|ci| ci.resource_version());
        Ok((
            placement.name,
            bind::Placed {
                task: Arc::new(task.clone()),
                allocation: Some(convert::stored_allocation(task, &request.task)),
                snapshot,
                basis,
            },
        ))
    }

    /// The definition a task runs: its snapshot, or its TaskDefinition's
    /// latest valid revision (to be written into it at binding).
    #[allow(clippy::type_complexity)]
    /// The definition a task runs: its snapshot, or the revision its
    /// reference names (then also the snapshot to write at binding).
    fn definition(
        &self,
        task: &Task,
    ) -> Result<(TaskDefinitionSpec, Option<(TaskDefinitionSpec, i64)>), NotPlaced> {
        if let Some(definition) = &task.spec.definition {
            return Ok((definition.clone(), None));
        }
        let reference = Reference::parse(&task.spec.task_definition);
        let namespace = task.namespace().unwrap_or_default();
        let td = self
            .definitions
            .get(&(namespace.clone(), reference.family.to_owned()));
        let records: Vec<_> = self
            .revisions
            .state()
            .into_iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(namespace.as_str())
                    && r.spec.family == reference.family
            })
            .collect();
        let recorded = |n| {
            records
                .iter()
                .find(|r| r.spec.revision == n)
                .map(|r| &r.spec)
        };
        match revisions::resolve(reference, td.map(AsRef::as_ref), recorded, None) {
            Ok((revision, spec)) => Ok((spec.clone(), Some((spec, revision)))),
            // ECS refuses to run a deregistered revision outright.
            Err(e @ Unresolved::Inactive(_)) => Err(NotPlaced::Invalid(e.reason())),
            Err(Unresolved::NotJudged | Unresolved::Invalid(_)) => {
                Err(NotPlaced::Waiting(format!(
                    "task definition {reference} has no valid revision yet (see its Valid condition)"
                )))
            }
            Err(e @ Unresolved::NotFound(_)) => Err(NotPlaced::Waiting(e.reason())),
        }
    }

    /// Drop a placement that will not be written, and try its task again.
    fn undo(&mut self, namespace: &str, instance: &str, placed: &bind::Placed) {
        if let Some(cluster) = self.clusters.get_mut(namespace) {
            cluster.settle(instance, &placed.task.uid().unwrap_or_default());
        }
        self.again(&key_of(placed.task.as_ref()));
    }

    fn again(&mut self, key: &Key) {
        if self.pending.get(key).is_some_and(|p| !self.wants(&p.task)) {
            // Bound elsewhere, stopped or deleted meanwhile.
            self.pending.remove(key);
            return;
        }
        if self.pending.get(key).is_some_and(|p| !self.owns(&p.task)) {
            // Another replica's since the round started.
            if let Some(p) = self.pending.remove(key) {
                self.others.insert(key.clone(), p.task);
            }
            return;
        }
        if let Some(p) = self.pending.get_mut(key) {
            self.metrics.retried(&self.options.name);
            p.busy = false;
            p.attempts += 1;
            let jitter = self
                .rng
                .random_range(0..=10u64 * u64::from(p.attempts.min(20)));
            self.retry
                .push((Instant::now() + Duration::from_millis(jitter), key.clone()));
        }
    }

    fn finish(&mut self, outcome: bind::Outcome, rounds: &mut FuturesUnordered<Round>) {
        let name = self.options.name.clone();
        let name = name.as_str();
        if outcome.conflicts > 0 {
            self.metrics.conflict(name, outcome.conflicts);
        }
        let instance_key = (outcome.namespace.clone(), outcome.instance.clone());
        let cluster = self.clusters.entry(outcome.namespace.clone()).or_default();
        if let Some(latest) = outcome.latest {
            cluster.apply(latest);
        }
        for (task, _) in &outcome.results {
            cluster.settle(&outcome.instance, &task.uid().unwrap_or_default());
        }
        let mut rechecked = Vec::new();
        for (task, result) in outcome.results {
            let key = key_of(task.as_ref());
            if outcome.outdated && result == bind::Result::Retry {
                // The instance changed under the reservation: if the same
                // choice still fits the version just read, write it again
                // against that version; only if not, place anew.
                rechecked.extend(self.recheck_or_again(&key, &outcome.instance));
                continue;
            }
            match result {
                bind::Result::Bound => {
                    if let Some(p) = self.pending.remove(&key) {
                        self.metrics.placed(name, p.since.elapsed());
                    }
                }
                bind::Result::Lost | bind::Result::BoundByOther => {
                    self.pending.remove(&key);
                }
                bind::Result::Retry => self.again(&key),
            }
        }
        let mut waiting = self.rounds.remove(&instance_key).unwrap_or_default();
        waiting.extend(rechecked);
        // Choices made against the version this round wrote over stand on
        // what it wrote: they carry over to the version its write produced
        // (and only to that one: any later change is someone else's).
        if let Some((from, to)) = &outcome.reserved {
            for p in &mut waiting {
                if p.basis == *from {
                    p.basis.clone_from(to);
                }
            }
        }
        if !waiting.is_empty() {
            self.start_round(instance_key, waiting, rounds);
        }
    }

    /// [`Self::recheck`], or else the task placed anew later.
    fn recheck_or_again(&mut self, key: &Key, instance: &str) -> Option<bind::Placed> {
        let placed = self.recheck(key, instance);
        if placed.is_none() {
            self.again(key);
        }
        placed
    }

    /// The same instance for a task whose reservation met a newer version
    /// of it, if the task still fits there by every rule; the placement,
    /// held in the cache.
    fn recheck(&mut self, key: &Key, instance: &str) -> Option<bind::Placed> {
        let p = self.pending.get(key)?;
        if !self.wants(&p.task) || !self.owns(&p.task) {
            return None;
        }
        let task = Arc::clone(&p.task);
        let (on, placed) = self.place_where(&task, Some(instance)).ok()?;
        if on != instance {
            // Reserved elsewhere meanwhile (by a round of another
            // scheduler): nothing is held here, and placing anew binds it
            // where its reservation is.
            return None;
        }
        self.metrics.rechecked(&self.options.name);
        Some(placed)
    }

    /// Park a task nothing can take; say why on it and its owner, once per
    /// new reason.
    /// Stop a task created to start on an instance that cannot run it
    /// (not registered, not ACTIVE, its agent disconnected, or no room),
    /// as ECS's StartTask fails at once rather than waiting. An instance
    /// this cache does not know yet gets a few seconds to appear first.
    fn refuse(&mut self, key: &Key, instance: &str, reason: String) {
        let known = self
            .clusters
            .get(&key.0)
            .is_some_and(|c| c.instance(instance).is_some());
        let young = self
            .pending
            .get(key)
            .is_some_and(|p| p.since.elapsed() < START_TASK_GRACE);
        if !known && young {
            self.unplaceable(key, reason);
            return;
        }
        self.fail(key, reason);
    }

    /// Stop a task that cannot start, with the reason (TaskFailedToStart
    /// and a Warning event), instead of leaving it pending.
    fn fail(&mut self, key: &Key, reason: String) {
        let Some(p) = self.pending.remove(key) else {
            return;
        };
        let task = p.task;
        let events = self.events.clone();
        let api: Api<Task> = Api::namespaced(self.client.clone(), &key.0);
        tokio::spawn(async move {
            let status = task.status.clone().unwrap_or_default();
            let patches = stop::patches(
                &status,
                StopCode::TaskFailedToStart,
                &reason,
                Some(k8s_openapi::jiff::Timestamp::now()),
            );
            let name = task.name_any();
            if let Err(e) = crate::task::write_stop(&api, &name, &patches).await {
                // The task sweep finishes a stop whose second write failed.
                tracing::warn!(task = %name, error = %e, "stopping a task that cannot start failed");
            }
            events
                .publish_about(
                    &task.object_ref(&()),
                    &Note::warning("TaskFailedToStart", reason),
                )
                .await;
        });
    }

    fn unplaceable(&mut self, key: &Key, message: String) {
        self.metrics
            .unplaceable
            .get_or_create(&crate::metrics::SchedulerLabel {
                scheduler: self.options.name.clone(),
            })
            .inc();
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        p.parked = Some(Instant::now());
        if p.message.as_deref() == Some(message.as_str()) {
            return;
        }
        p.message = Some(message.clone());
        let task = Arc::clone(&p.task);
        let owner = task
            .owner_references()
            .iter()
            .find(|o| o.kind == "Service")
            .cloned();
        let (regarding, note) = match &owner {
            Some(service) => (
                ObjectReference {
                    api_version: Some(service.api_version.clone()),
                    kind: Some(service.kind.clone()),
                    name: Some(service.name.clone()),
                    namespace: task.namespace(),
                    uid: Some(service.uid.clone()),
                    ..ObjectReference::default()
                },
                format!(
                    "service ({}) was unable to place a task because no container instance met all of its requirements: {message}",
                    service.name
                ),
            ),
            None => (
                task.object_ref(&()),
                format!(
                    "task {} could not be placed because no container instance met all of its requirements: {message}",
                    task.name_any()
                ),
            ),
        };
        let about = (key.0.clone(), regarding.name.clone().unwrap_or_default());
        let publish = self.published.get(&about) != Some(&note);
        if publish {
            self.published.insert(about, note.clone());
        }
        let events = self.events.clone();
        let api: Api<Task> = Api::namespaced(self.client.clone(), &key.0);
        tokio::spawn(async move {
            if publish {
                events
                    .publish_about(&regarding, &Note::warning("PlacementFailed", note))
                    .await;
            }
            bind::set_scheduled(&api, &task, false, "Unplaceable", message).await;
        });
    }
}

/// Why a task was not placed this time.
enum NotPlaced {
    /// Tried again when the cluster changes (capacity joins, a task
    /// definition turns valid).
    Waiting(String),
    /// Created to start on `instance` (start-task), which cannot run it.
    Refused { instance: String, reason: String },
    /// It can never start: its overrides do not fit its definition, or it
    /// names a deregistered revision.
    Invalid(String),
}

fn key_of(object: &impl ResourceExt) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}
