//! The replicas of one scheduler name, and which of them owns a task.
//!
//! Each replica holds a Lease of its own, labelled with the scheduler
//! name, and renews it; every replica watches those Leases. A replica is
//! live while its Lease keeps changing: one not seen to change for the
//! Lease's duration (as kube-controller-manager's leader election judges
//! a holder, by the local clock, never by the holder's timestamps) has
//! stopped. A replica that stops cleanly deletes its Lease, so its tasks
//! move at once.
//!
//! A task belongs to the live replica with the highest rendezvous hash of
//! (replica, task uid): every replica computes the same owner from the
//! same view, and a replica joining or leaving moves only the tasks it
//! takes or held. Views differ for a moment while a change propagates;
//! then two replicas may both place a task, and the binding's
//! resourceVersion precondition lets one win, as without sharding.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};

/// The label naming the scheduler a member Lease belongs to.
pub const SCHEDULER_LABEL: &str = "gantry.dev/scheduler";

/// Where the member Leases live, who this replica is, and their timing.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    /// This replica's name; unique among the replicas of its scheduler.
    pub identity: String,
    /// How long a Lease may go unrenewed before its replica counts as
    /// stopped.
    pub duration: Duration,
}

impl Options {
    #[must_use]
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(10),
        }
    }

    /// How often the Lease is renewed: three times a duration.
    #[must_use]
    pub fn renew(&self) -> Duration {
        self.duration / 3
    }
}

/// The name of a member's Lease: the scheduler's and the replica's.
#[must_use]
pub fn lease_name(scheduler: &str, identity: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("gantry-scheduler-{}-{}", clean(scheduler), clean(identity))
}

/// The replicas this one sees.
#[derive(Debug)]
pub struct View {
    me: String,
    duration: Duration,
    /// Each other replica's Lease: its resourceVersion, and when that was
    /// first seen.
    seen: HashMap<String, (String, Instant)>,
    live: Vec<String>,
    /// When this replica may start placing: a moment after its own Lease
    /// came back through the watch, by when the Leases of replicas that
    /// started with it have too. Until then it would own every task.
    ready_at: Option<Instant>,
    /// When it started: one that cannot see its Lease (no right to write
    /// or watch Leases) places anyway after a Lease's duration, racing
    /// the others as schedulers did before member Leases, rather than
    /// never.
    started: Instant,
}

/// How long after its own Lease is seen a replica waits for those of
/// replicas that started at the same time.
const SETTLE: Duration = Duration::from_millis(250);

impl View {
    #[must_use]
    pub fn new(me: &str, duration: Duration, now: Instant) -> Self {
        Self {
            started: now,
            me: me.to_owned(),
            duration,
            seen: HashMap::new(),
            live: vec![me.to_owned()],
            ready_at: None,
        }
    }

    /// A member Lease as the watch delivers it.
    pub fn observe(&mut self, lease: &Lease, now: Instant) {
        let Some(holder) = holder(lease) else { return };
        if holder == self.me {
            self.ready_at.get_or_insert(now + SETTLE);
            return;
        }
        let version = lease.resource_version().unwrap_or_default();
        match self.seen.get_mut(&holder) {
            Some((seen, _)) if *seen == version => {}
            Some(entry) => *entry = (version, now),
            None => {
                self.seen.insert(holder, (version, now));
            }
        }
    }

    /// After a relist: forget the replicas whose Leases are gone.
    pub fn keep_only(&mut self, leases: &[Lease]) {
        let kept: BTreeSet<String> = leases.iter().filter_map(holder).collect();
        self.seen.retain(|who, _| kept.contains(who));
    }

    /// A member Lease deleted: its replica stopped.
    pub fn forget(&mut self, lease: &Lease) {
        if let Some(holder) = holder(lease) {
            self.seen.remove(&holder);
        }
    }

    /// Work out who is live now; whether that changed.
    pub fn refresh(&mut self, now: Instant) -> bool {
        let mut live: BTreeSet<&str> = self
            .seen
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) < self.duration)
            .map(|(who, _)| who.as_str())
            .collect();
        live.insert(&self.me);
        let live: Vec<String> = live.into_iter().map(str::to_owned).collect();
        if live == self.live {
            return false;
        }
        self.live = live;
        true
    }

    /// Whether this replica has seen enough of the others to place.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        self.ready_at.is_some_and(|at| now >= at)
            || now.duration_since(self.started) >= self.duration
    }

    #[must_use]
    pub fn live(&self) -> &[String] {
        &self.live
    }

    /// Whether this replica owns the task with this uid.
    #[must_use]
    pub fn owns(&self, uid: &str) -> bool {
        owner(&self.live, uid) == Some(self.me.as_str())
    }
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// The member with the highest rendezvous hash of (member, uid).
#[must_use]
pub fn owner<'a>(members: &'a [String], uid: &str) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| score(m, uid))
        .map(String::as_str)
}

/// FNV-1a over both names, then a 64-bit finalizer (splitmix64's) so that
/// names that differ in one byte score far apart. Every replica runs the
/// same function, so the same view gives the same owner.
fn score(member: &str, uid: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0]).chain(uid.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// This replica's Lease, renewed until dropped by [`Membership::leave`].
#[allow(missing_debug_implementations)] // the kube Api is not Debug
pub struct Membership {
    api: Api<Lease>,
    name: String,
    scheduler: String,
    options: Options,
}

impl Membership {
    #[must_use]
    pub fn new(client: Client, scheduler: &str, options: &Options) -> Self {
        Self {
            api: Api::namespaced(client, &options.namespace),
            name: lease_name(scheduler, &options.identity),
            scheduler: scheduler.to_owned(),
            options: options.clone(),
        }
    }

    /// Renew the Lease every [`Options::renew`], for ever.
    pub async fn renew(&self) {
        loop {
            if let Err(e) = self.write().await {
                tracing::warn!(error = %e, lease = %self.name, "cannot renew the scheduler's member Lease");
            }
            tokio::time::sleep(self.options.renew()).await;
        }
    }

    /// Create the Lease, or write a new renewTime into it.
    async fn write(&self) -> Result<(), kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.options.duration.as_secs()).unwrap_or(i32::MAX);
        let spec = LeaseSpec {
            holder_identity: Some(self.options.identity.clone()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(now.clone()),
            ..LeaseSpec::default()
        };
        match self.api.get_opt(&self.name).await? {
            Some(mut lease) => {
                let kept = lease.spec.take().unwrap_or_default();
                lease.spec = Some(LeaseSpec {
                    acquire_time: kept.acquire_time,
                    ..spec
                });
                // Carries the resourceVersion read: a replica of the same
                // identity writing at once loses, and tries again.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some([(SCHEDULER_LABEL.to_owned(), self.scheduler.clone())].into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        acquire_time: Some(now),
                        ..spec
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// Delete the Lease, so the other replicas take this one's tasks now
    /// rather than once it lapses.
    pub async fn leave(&self) {
        if let Err(e) = self.api.delete(&self.name, &DeleteParams::default()).await {
            tracing::debug!(error = %e, lease = %self.name, "cannot delete the member Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name("gantry", holder)),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_member_is_live_while_its_lease_changes_and_gone_once_deleted() {
        let start = Instant::now();
        let later = |s| start + Duration::from_secs(s);
        let mut view = View::new("b", Duration::from_secs(10), start);
        assert!(!view.ready(later(5)), "not before its own Lease is seen");
        assert!(view.ready(later(10)), "nor never, if it cannot see it");
        view.observe(&lease("b", "1"), start);
        assert!(!view.ready(start) && view.ready(start + SETTLE));
        view.observe(&lease("a", "1"), start);
        view.observe(&lease("c", "1"), start);
        assert!(view.refresh(start));
        assert_eq!(view.live(), ["a", "b", "c"]);
        // a renews, c does not.
        view.observe(&lease("a", "2"), later(6));
        view.observe(&lease("c", "1"), later(6));
        assert!(!view.refresh(later(9)));
        assert!(view.refresh(later(11)));
        assert_eq!(view.live(), ["a", "b"]);
        view.forget(&lease("a", "2"));
        assert!(view.refresh(later(12)));
        assert_eq!(view.live(), ["b"], "a replica always counts itself");
    }

    #[test]
    fn tasks_spread_over_the_members_and_a_leaver_moves_only_its_own() {
        let uids: Vec<String> = (0..4000).map(|i| format!("uid-{i}")).collect();
        let four: Vec<String> = ["r0", "r1", "r2", "r3"].map(String::from).to_vec();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for uid in &uids {
            *counts
                .entry(owner(&four, uid).expect("an owner"))
                .or_default() += 1;
        }
        for member in &four {
            let share = counts[member.as_str()];
            assert!(
                (800..1200).contains(&share),
                "{member} owns {share} of 4000"
            );
        }
        let three: Vec<String> = ["r0", "r1", "r3"].map(String::from).to_vec();
        for uid in &uids {
            let before = owner(&four, uid).expect("an owner");
            let after = owner(&three, uid).expect("an owner");
            if before != "r2" {
                assert_eq!(before, after, "{uid} moved though its owner stayed");
            }
        }
        assert_eq!(owner(&[], "uid-1"), None);
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(
            lease_name("gantry", "Host_1:42"),
            "gantry-scheduler-gantry-host-1-42"
        );
    }
}
