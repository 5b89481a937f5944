//! One LoadBalancer's targets as the data plane holds them: health, the
//! connections or requests in flight on each, draining, and the choice of
//! a target for the next connection or request.
//!
//! A target list update replaces the list, never a target: a target that
//! stays keeps its health and its in-flight count, and whatever holds an
//! [`Inflight`] keeps its target alive after it leaves the list, so no
//! connection is cut by a reload.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crds::v1alpha1::{
    Algorithm, ListenerProtocol, LoadBalancerSpec, Target, TargetHealthCheck, TargetState, reason,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::{
    desired::{Desired, DesiredTarget, Key, TargetKey},
    health::{self, Health, Thresholds},
    metrics::{Metrics, TargetLabel, TransitionLabel},
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const INITIAL: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

fn code(state: TargetState) -> u8 {
    match state {
        TargetState::Healthy => HEALTHY,
        TargetState::Unhealthy => UNHEALTHY,
        TargetState::Initial | TargetState::Draining => INITIAL,
    }
}

/// One target.
#[derive(Debug)]
pub struct Backend {
    pub key: TargetKey,
    pub service: String,
    pub address: SocketAddr,
    health: Mutex<Health>,
    /// `health.state`, readable without the lock on the hot path.
    state: AtomicU8,
    draining: AtomicBool,
    draining_since: Mutex<Option<Instant>>,
    /// Drained: no longer reported; its task may stop.
    drained: AtomicBool,
    /// Connections (TCP) or requests (HTTP) in flight.
    active: AtomicUsize,
    /// Gone from the desired targets: its health checks end.
    removed: AtomicBool,
    requests: Counter,
    changed: Arc<Notify>,
}

impl Backend {
    fn new(t: &DesiredTarget, lb: &Key, metrics: &Metrics, changed: &Arc<Notify>) -> Self {
        let requests = metrics
            .target_requests
            .get_or_create(&TargetLabel {
                load_balancer: lb.to_string(),
                target: t.address.to_string(),
            })
            .clone();
        Self {
            key: t.key.clone(),
            service: t.service.clone(),
            address: t.address,
            health: Mutex::new(Health::default()),
            state: AtomicU8::new(INITIAL),
            draining: AtomicBool::new(false),
            draining_since: Mutex::new(None),
            drained: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
            requests,
            changed: Arc::clone(changed),
        }
    }

    #[must_use]
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    #[must_use]
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn start_draining(&self, now: Instant) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            *lock(&self.draining_since) = Some(now);
            self.changed.notify_one();
        }
    }

    #[must_use]
    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }
}

/// A connection or request on its way to a target; dropping it ends it.
#[derive(Debug)]
pub struct Inflight {
    pub backend: Arc<Backend>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let left = self.backend.active.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.backend.draining() {
            self.backend.changed.notify_one();
        }
    }
}

#[derive(Debug)]
struct Inner {
    spec: LoadBalancerSpec,
    generation: Option<i64>,
    backends: Vec<Arc<Backend>>,
}

/// One LoadBalancer's targets.
#[derive(Debug)]
pub struct Pool {
    pub key: Key,
    inner: RwLock<Inner>,
    next: AtomicUsize,
    /// Wakes the status writer (health changed, a drain may be done).
    pub changed: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Pool {
    #[must_use]
    pub fn new(desired: &Desired, metrics: Arc<Metrics>, changed: Arc<Notify>) -> Self {
        Self {
            key: desired.key.clone(),
            inner: RwLock::new(Inner {
                spec: desired.spec.clone(),
                generation: desired.generation,
                backends: Vec::new(),
            }),
            next: AtomicUsize::new(0),
            changed,
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    #[must_use]
    pub fn spec(&self) -> LoadBalancerSpec {
        self.read().spec.clone()
    }

    #[must_use]
    pub fn generation(&self) -> Option<i64> {
        self.read().generation
    }

    #[must_use]
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.read().backends.clone()
    }

    /// Take a new desired state; the targets that are new (their health
    /// checks are the caller's to start).
    pub fn apply(&self, desired: &Desired, now: Instant) -> Vec<Arc<Backend>> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.spec = desired.spec.clone();
        inner.generation = desired.generation;
        let mut old: HashMap<(TargetKey, SocketAddr), Arc<Backend>> = inner
            .backends
            .drain(..)
            .map(|b| ((b.key.clone(), b.address), b))
            .collect();
        let mut fresh = Vec::new();
        for t in &desired.targets {
            let backend = old.remove(&(t.key.clone(), t.address)).unwrap_or_else(|| {
                let b = Arc::new(Backend::new(t, &self.key, &self.metrics, &self.changed));
                fresh.push(Arc::clone(&b));
                b
            });
            if t.draining {
                backend.start_draining(now);
            }
            inner.backends.push(backend);
        }
        for gone in old.into_values() {
            gone.removed.store(true, Ordering::SeqCst);
        }
        if !fresh.is_empty() {
            self.changed.notify_one();
        }
        fresh
    }

    /// End every target (the LoadBalancer is gone).
    pub fn close(&self) {
        for b in &self.read().backends {
            b.removed.store(true, Ordering::SeqCst);
        }
    }

    /// A target for the next connection or request, not one of `tried`.
    /// Healthy targets only; if none is healthy, every unhealthy one (ELB
    /// fails open). Never a draining or initial one.
    #[must_use]
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Inflight> {
        let inner = self.read();
        let usable = |b: &&Arc<Backend>, state: u8| {
            !b.draining() && b.state.load(Ordering::Relaxed) == state && !tried.contains(&b.address)
        };
        for _ in 0..4 {
            // Healthy targets, or if there are none, unhealthy ones.
            let state = if inner.backends.iter().any(|b| usable(&b, HEALTHY)) {
                HEALTHY
            } else {
                UNHEALTHY
            };
            let candidates = || inner.backends.iter().filter(move |b| usable(b, state));
            let n = candidates().count();
            if n == 0 {
                return None;
            }
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let chosen = match inner.spec.algorithm {
                Algorithm::RoundRobin => candidates().nth(start % n),
                Algorithm::LeastOutstandingRequests => candidates()
                    .cycle()
                    .skip(start % n)
                    .take(n)
                    .min_by_key(|b| b.active()),
            }?;
            // Counted before draining is read, as `sweep` sets draining
            // before it reads the count: one of the two sees the other.
            chosen.active.fetch_add(1, Ordering::SeqCst);
            if chosen.draining() {
                chosen.active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            chosen.requests.inc();
            return Some(Inflight {
                backend: Arc::clone(chosen),
            });
        }
        None
    }

    /// The proxy could not reach `backend`: out at once.
    pub fn refused(&self, backend: &Backend, why: &str) {
        let changed = lock(&backend.health).refused(why);
        if changed {
            self.transitioned(backend, TargetState::Unhealthy);
        }
    }

    /// One active check's result.
    pub fn observe(&self, backend: &Backend, result: Result<(), health::Failure>) {
        let thresholds = Thresholds::of(&self.read().spec.health_check);
        let (changed, state) = {
            let mut health = lock(&backend.health);
            (health.observe(result, thresholds), health.state)
        };
        if changed {
            self.transitioned(backend, state);
        }
    }

    fn transitioned(&self, backend: &Backend, state: TargetState) {
        backend.state.store(code(state), Ordering::Relaxed);
        tracing::info!(lb = %self.key, target = %backend.address, task = %backend.key.task, ?state, "target health changed");
        self.metrics
            .transitions
            .get_or_create(&TransitionLabel {
                load_balancer: self.key.to_string(),
                target: backend.address.to_string(),
                state: state_name(state),
            })
            .inc();
        self.changed.notify_one();
    }

    /// The health check to run and how often.
    #[must_use]
    pub fn check_config(&self) -> (ListenerProtocol, TargetHealthCheck) {
        let inner = self.read();
        (
            inner.spec.health_check_protocol(),
            inner.spec.health_check.clone(),
        )
    }

    /// Mark drained the draining targets with nothing in flight or past
    /// the deregistration delay; when to look again for the rest.
    pub fn sweep(&self, now: Instant) -> Option<Duration> {
        let inner = self.read();
        let delay = Duration::from_secs(
            u64::try_from(inner.spec.deregistration_delay_seconds.max(0)).unwrap_or(0),
        );
        let mut next: Option<Duration> = None;
        for b in inner.backends.iter().filter(|b| b.draining()) {
            if b.drained.load(Ordering::SeqCst) {
                continue;
            }
            let since = lock(&b.draining_since).unwrap_or(now);
            let deadline = since + delay;
            if b.active() == 0 || deadline <= now {
                b.drained.store(true, Ordering::SeqCst);
                tracing::info!(lb = %self.key, target = %b.address, task = %b.key.task, in_flight = b.active(), "target drained");
            } else {
                let wait = deadline - now;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        next
    }

    /// The targets as the status reports them: drained ones are gone.
    #[must_use]
    pub fn targets(&self) -> Vec<Target> {
        self.read()
            .backends
            .iter()
            .filter(|b| !b.drained.load(Ordering::SeqCst))
            .map(|b| {
                let health = b.health();
                let (state, reason, description) = if b.draining() {
                    (
                        TargetState::Draining,
                        Some(reason::DEREGISTRATION_IN_PROGRESS),
                        Some(format!(
                            "Target deregistration is in progress; {} in flight",
                            b.active()
                        )),
                    )
                } else {
                    (health.state, health.reason, health.description)
                };
                Target {
                    task: b.key.task.clone(),
                    container: b.key.container.clone(),
                    address: b.address.to_string(),
                    service: b.service.clone(),
                    state,
                    reason: reason.map(str::to_owned),
                    description,
                }
            })
            .collect()
    }
}

#[must_use]
pub fn state_name(state: TargetState) -> &'static str {
    match state {
        TargetState::Initial => "initial",
        TargetState::Healthy => "healthy",
        TargetState::Unhealthy => "unhealthy",
        TargetState::Draining => "draining",
    }
}

/// Run `backend`'s active health checks until it is removed.
pub async fn check_health(pool: Arc<Pool>, backend: Arc<Backend>) {
    loop {
        if backend.removed() {
            return;
        }
        let (protocol, config) = pool.check_config();
        let result = health::check(backend.address, protocol, &config).await;
        if backend.removed() {
            return;
        }
        pool.observe(&backend, result);
        let interval = u64::try_from(config.interval_seconds.max(1)).unwrap_or(30);
        tokio::time::sleep(Duration::from_secs(interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{Listener, TargetHealthCheck};

    fn desired(targets: &[(&str, u16, bool)], algorithm: Algorithm, delay: i32) -> Desired {
        let spec = LoadBalancerSpec {
            listeners: vec![Listener {
                port: 8080,
                protocol: ListenerProtocol::Http,
            }],
            health_check: TargetHealthCheck::default(),
            deregistration_delay_seconds: delay,
            algorithm,
        };
        let targets = targets
            .iter()
            .map(|(task, port, draining)| DesiredTarget::loopback(*task, *port, *draining))
            .collect();
        Desired::new("default", "front", spec, targets)
    }

    fn pool(d: &Desired) -> Pool {
        let pool = Pool::new(d, Arc::new(Metrics::new()), Arc::new(Notify::new()));
        pool.apply(d, Instant::now());
        pool
    }

    fn healthy(pool: &Pool) {
        for b in pool.backends() {
            for _ in 0..5 {
                pool.observe(&b, Ok(()));
            }
        }
    }

    fn port(i: &Inflight) -> u16 {
        i.backend.address.port()
    }

    #[test]
    fn only_healthy_targets_get_traffic_and_all_unhealthy_fail_open() {
        let d = desired(
            &[("a", 1, false), ("b", 2, false)],
            Algorithm::RoundRobin,
            0,
        );
        let pool = pool(&d);
        assert!(pool.pick(&[]).is_none(), "initial targets get nothing");
        healthy(&pool);
        let picks: Vec<u16> = (0..4)
            .map(|_| port(&pool.pick(&[]).expect("one")))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2, "{picks:?}");
        let a = &pool.backends()[0];
        pool.refused(a, "connection refused");
        for _ in 0..4 {
            assert_eq!(port(&pool.pick(&[]).expect("b")), 2);
        }
        let b = &pool.backends()[1];
        pool.refused(b, "connection refused");
        assert!(pool.pick(&[]).is_some(), "all unhealthy: fail open");
        let tried = [SocketAddr::from(([127, 0, 0, 1], 1))];
        assert_eq!(port(&pool.pick(&tried).expect("b")), 2);
    }

    #[test]
    fn least_outstanding_requests_picks_the_least_busy() {
        let d = desired(
            &[("a", 1, false), ("b", 2, false)],
            Algorithm::LeastOutstandingRequests,
            0,
        );
        let pool = pool(&d);
        healthy(&pool);
        let held: Vec<Inflight> = (0..3).map(|_| pool.pick(&[]).expect("one")).collect();
        let on_1 = held.iter().filter(|i| port(i) == 1).count();
        assert!(on_1 == 1 || on_1 == 2, "spread: {on_1}");
        let next = pool.pick(&[]).expect("one");
        assert_eq!(
            port(&next),
            if on_1 == 1 { 1 } else { 2 },
            "the less busy one"
        );
    }

    #[test]
    fn a_draining_target_takes_nothing_new_and_drains_when_idle_or_late() {
        let d = desired(
            &[("a", 1, false), ("b", 2, false)],
            Algorithm::RoundRobin,
            300,
        );
        let pool = pool(&d);
        healthy(&pool);
        let on_a = loop {
            let i = pool.pick(&[]).expect("one");
            if port(&i) == 1 {
                break i;
            }
        };
        let now = Instant::now();
        let fresh = pool.apply(
            &desired(
                &[("a", 1, true), ("b", 2, false)],
                Algorithm::RoundRobin,
                300,
            ),
            now,
        );
        assert!(fresh.is_empty(), "a reload keeps its targets");
        for _ in 0..4 {
            assert_eq!(port(&pool.pick(&[]).expect("b")), 2);
        }
        assert!(pool.sweep(now).is_some(), "a request is in flight");
        let states: Vec<_> = pool.targets().iter().map(|t| t.state).collect();
        assert_eq!(states, [TargetState::Draining, TargetState::Healthy]);
        drop(on_a);
        assert_eq!(pool.sweep(now), None);
        let left: Vec<_> = pool.targets().into_iter().map(|t| t.task).collect();
        assert_eq!(left, ["b"], "drained targets leave the status");

        // Past the delay, a target drains with requests still in flight.
        let d = desired(&[("b", 2, true)], Algorithm::RoundRobin, 300);
        let held = pool.pick(&[]).expect("b");
        pool.apply(&d, now);
        assert!(pool.sweep(now + Duration::from_secs(299)).is_some());
        assert_eq!(pool.sweep(now + Duration::from_secs(301)), None);
        assert!(pool.targets().is_empty());
        drop(held);
    }

    #[test]
    fn a_target_that_leaves_is_removed_and_a_new_one_starts_initial() {
        let d = desired(&[("a", 1, false)], Algorithm::RoundRobin, 0);
        let pool = pool(&d);
        healthy(&pool);
        let a = pool.backends()[0].clone();
        let fresh = pool.apply(
            &desired(&[("c", 3, false)], Algorithm::RoundRobin, 0),
            Instant::now(),
        );
        assert_eq!(fresh.len(), 1);
        assert!(a.removed());
        assert_eq!(pool.targets()[0].state, TargetState::Initial);
    }
}
