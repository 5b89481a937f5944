//! The control plane's storage: every object, one revision counter, and a
//! bounded event log, as etcd is to kube-apiserver.
//!
//! - One revision counter for the whole store. Each write takes the next
//!   revision, which becomes the object's `metadata.resourceVersion`.
//! - Writes are compare-and-swap: an update or delete may name the
//!   revision it read, and is refused with [`StoreError::Conflict`] if the
//!   object has moved on.
//! - Durability: SQLite in WAL mode with `synchronous=FULL`. A write is
//!   acknowledged only after its transaction is on disk, so it survives
//!   kill -9. One writer thread commits whatever has queued up in a single
//!   transaction (group commit), so fsync does not cap throughput.
//! - Reads come from memory, updated before a write is acknowledged: a
//!   client reads its own writes.
//! - Watches replay the event log from a revision and then follow new
//!   events. A revision older than the log is [`StoreError::Gone`] (HTTP
//!   410), and the client must list again.

mod integrity;
mod sqlite;

pub use integrity::{RESTORE_BUMP, backup, repair, restore};

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ops::Bound,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
    thread,
};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A point in the store's history; the `resourceVersion` of what was
/// written at it.
pub type Revision = u64;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One committed write. For a deletion, `object` is the last state with
/// the deletion's revision, as Kubernetes watches report it.
#[derive(Debug)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    pub key: String,
    pub object: Arc<Value>,
    /// `object` as JSON, encoded once however many watchers send it.
    json: std::sync::OnceLock<Vec<u8>>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.revision, self.kind, &self.key, &self.object)
            == (other.revision, other.kind, &other.key, &other.object)
    }
}

impl Event {
    /// A new event.
    #[must_use]
    pub fn new(revision: Revision, kind: EventKind, key: String, object: Arc<Value>) -> Self {
        Self {
            revision,
            kind,
            key,
            object,
            json: std::sync::OnceLock::new(),
        }
    }

    /// The object as JSON, encoded on first use and shared after.
    pub fn object_json(&self) -> &[u8] {
        self.json
            .get_or_init(|| serde_json::to_vec(&*self.object).unwrap_or_default())
    }
}

/// Why a store operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    #[error(
        "{key} has been modified: resourceVersion {expected} is stale, the object is at {current}"
    )]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    #[error("too old resource version: {requested} (oldest available: {oldest})")]
    Gone {
        requested: Revision,
        oldest: Revision,
    },
    /// A revision the store has not reached: the client saw writes the
    /// store no longer has, or made the revision up.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge {
        requested: Revision,
        current: Revision,
    },
    #[error("the store is closed")]
    Closed,
    /// The database lost writes or is damaged: what, and the commands that
    /// bring it back (see `integrity.rs`).
    #[error("the store cannot be trusted: {0}")]
    Damaged(String),
    #[error("storage failure: {0}")]
    Database(String),
}

/// Tuning of a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events kept for watches to resume from; older revisions are Gone.
    pub event_window: usize,
    /// Writes committed together at most.
    pub max_batch: usize,
    /// Events buffered for live watchers before a slow one falls back to
    /// the log.
    pub broadcast_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            event_window: 100_000,
            max_batch: 1024,
            broadcast_capacity: 16_384,
        }
    }
}

/// A stored object and the revision it was written at.
#[derive(Clone, Debug)]
struct Stored {
    revision: Revision,
    object: Arc<Value>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Stored>,
    revision: Revision,
    /// Events with revisions in `(compacted, revision]`.
    log: VecDeque<Arc<Event>>,
    compacted: Revision,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
enum Write {
    Create {
        key: String,
        object: Value,
    },
    Update {
        key: String,
        object: Value,
        precondition: Option<Revision>,
    },
    Delete {
        key: String,
        precondition: Option<Revision>,
    },
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Self::Create { key, .. } | Self::Update { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug)]
struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Arc<Value>, StoreError>>,
}

/// A handle on the store; clones share it.
#[derive(Clone, Debug)]
pub struct Store {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Request>,
}

impl Store {
    /// Open (or create) the store in `dir`, loading what it holds.
    ///
    /// # Errors
    /// When the directory or the database cannot be opened.
    pub fn open(dir: &Path, options: Options) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |e: std::io::Error| StoreError::Database(format!("{path}: {e}"))
        };
        crate::private::create_dir(dir).map_err(io(dir))?;
        let database = dir.join(integrity::DATABASE);
        crate::private::create_file(&database).map_err(io(&database))?;
        for journal in ["gantry.db-wal", "gantry.db-shm"] {
            crate::private::restrict_file(&dir.join(journal)).map_err(io(&dir.join(journal)))?;
        }
        let (mark, marked) = integrity::Mark::open(dir)?;
        let (log, loaded) = sqlite::Log::open(dir, options.event_window, marked)?;
        mark.record(loaded.revision);
        let compacted = loaded
            .events
            .first()
            .map_or(loaded.revision, |e| e.revision - 1);
        let state = State {
            objects: loaded
                .objects
                .into_iter()
                .map(|(key, revision, object)| {
                    (
                        key,
                        Stored {
                            revision,
                            object: Arc::new(object),
                        },
                    )
                })
                .collect(),
            revision: loaded.revision,
            log: loaded.events.into_iter().map(Arc::new).collect(),
            compacted,
        };
        let (events, _) = broadcast::channel(options.broadcast_capacity);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            events,
        });
        let (writes, queue) = mpsc::channel(options.max_batch * 4);
        let writer = Writer {
            log,
            mark,
            marked_at: None,
            shared: Arc::clone(&shared),
            options,
        };
        thread::Builder::new()
            .name("gantry-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Database(format!("starting the writer: {e}")))?;
        Ok(Self { shared, writes })
    }

    /// The latest revision.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.shared.read().revision
    }

    /// The oldest revision whose events are still logged: a watch (or a
    /// continued list) from before it cannot be served.
    #[must_use]
    pub fn compacted(&self) -> Revision {
        self.shared.read().compacted
    }

    /// The object at `key` and its revision.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<(Revision, Arc<Value>)> {
        self.shared
            .read()
            .objects
            .get(key)
            .map(|s| (s.revision, Arc::clone(&s.object)))
    }

    /// Every object whose key starts with `prefix`, in key order, and the
    /// revision they were read at.
    #[must_use]
    pub fn list(&self, prefix: &str) -> (Revision, Vec<Arc<Value>>) {
        let state = self.shared.read();
        let objects = state
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, s)| Arc::clone(&s.object))
            .collect();
        (state.revision, objects)
    }

    /// Store a new object at `key`.
    ///
    /// # Errors
    /// `AlreadyExists`, or a storage failure.
    pub async fn create(&self, key: &str, object: Value) -> Result<Arc<Value>, StoreError> {
        self.submit(Write::Create {
            key: key.to_owned(),
            object,
        })
        .await
    }

    /// Replace the object at `key`; with a precondition, only if it is
    /// still at that revision.
    ///
    /// # Errors
    /// `NotFound`, `Conflict`, or a storage failure.
    pub async fn update(
        &self,
        key: &str,
        object: Value,
        precondition: Option<Revision>,
    ) -> Result<Arc<Value>, StoreError> {
        self.submit(Write::Update {
            key: key.to_owned(),
            object,
            precondition,
        })
        .await
    }

    /// Remove the object at `key`; with a precondition, only if it is
    /// still at that revision. Returns its last state.
    ///
    /// # Errors
    /// `NotFound`, `Conflict`, or a storage failure.
    pub async fn delete(
        &self,
        key: &str,
        precondition: Option<Revision>,
    ) -> Result<Arc<Value>, StoreError> {
        self.submit(Write::Delete {
            key: key.to_owned(),
            precondition,
        })
        .await
    }

    async fn submit(&self, write: Write) -> Result<Arc<Value>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Request { write, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Follow the objects under `prefix`. From a revision: every event
    /// after it. From `None`: an `Added` event for each current object,
    /// then every event after them.
    ///
    /// # Errors
    /// `Gone` when `from` is older than the event log, `TooLarge` when it
    /// is newer than the store.
    pub fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Watch, StoreError> {
        // Subscribe before reading, so no event falls between the two.
        let live = self.shared.events.subscribe();
        let state = self.shared.read();
        let backlog = match from {
            None => state
                .objects
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, s)| {
                    Arc::new(Event::new(
                        s.revision,
                        EventKind::Added,
                        key.clone(),
                        Arc::clone(&s.object),
                    ))
                })
                .collect(),
            Some(from) => replay(&state, prefix, from)?,
        };
        Ok(Watch {
            shared: Arc::clone(&self.shared),
            prefix: prefix.to_owned(),
            backlog,
            live,
            // A client that claims a revision not reached yet has seen
            // nothing after it either.
            last: state.revision.max(from.unwrap_or(0)),
        })
    }
}

/// Logged events under `prefix` after `from`.
fn replay(state: &State, prefix: &str, from: Revision) -> Result<VecDeque<Arc<Event>>, StoreError> {
    if from > state.revision {
        return Err(StoreError::TooLarge {
            requested: from,
            current: state.revision,
        });
    }
    if from < state.compacted {
        return Err(StoreError::Gone {
            requested: from,
            oldest: state.compacted,
        });
    }
    let skip = state.log.partition_point(|e| e.revision <= from);
    Ok(state
        .log
        .iter()
        .skip(skip)
        .filter(|e| e.key.starts_with(prefix))
        .cloned()
        .collect())
}

/// Events under a prefix, in revision order.
#[derive(Debug)]
pub struct Watch {
    shared: Arc<Shared>,
    prefix: String,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    /// Events up to here are in the backlog or were delivered.
    last: Revision,
}

impl Watch {
    /// Events already queued for this watcher (for a watch from `None`:
    /// the initial `Added` events not yet taken).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.backlog.len()
    }

    /// The revision this watcher has seen up to.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.last
    }

    /// The next event; `None` once the store is gone, `Gone` if this
    /// watcher fell so far behind that the log no longer has its events.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok(event));
        }
        loop {
            match self.live.recv().await {
                Ok(event) if event.revision <= self.last => {}
                Ok(event) => {
                    self.last = event.revision;
                    if event.key.starts_with(&self.prefix) {
                        return Some(Ok(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live buffer: catch up from the log.
                    let state = self.shared.read();
                    match replay(&state, &self.prefix, self.last) {
                        Ok(backlog) => {
                            self.backlog = backlog;
                            self.last = state.revision;
                        }
                        Err(gone) => return Some(Err(gone)),
                    }
                    drop(state);
                    if let Some(event) = self.backlog.pop_front() {
                        return Some(Ok(event));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// How often the writer records the revision it has committed to (see
/// integrity.rs): a write-ahead log lost with only the last moment's
/// commits in it goes unnoticed.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The one thread that writes: decides each queued write against the
/// current state, commits the batch in one transaction, then publishes it.
struct Writer {
    log: sqlite::Log,
    /// Written after commits, at most every [`MARK_EVERY`] and when the
    /// writer stops (see integrity.rs).
    mark: integrity::Mark,
    marked_at: Option<std::time::Instant>,
    shared: Arc<Shared>,
    options: Options,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        self.mark.record(self.shared.read().revision);
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let (outcomes, revision) = self.decide(&batch);
        let events: Vec<Arc<Event>> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .cloned()
            .collect();
        let compact_to = self.compaction(revision, events.len());
        if !events.is_empty()
            && let Err(e) = self.log.commit(&events, revision, compact_to)
        {
            let failure = StoreError::Database(e.to_string());
            for request in batch {
                let _ = request.reply.send(Err(failure.clone()));
            }
            return;
        }
        // Not after every commit: a write to another file makes the next
        // commit's fsync slower (the filesystem's journal orders them),
        // which at 16 writers cut conditional updates from about 17,000
        // to 5,600 a second. A mark a little behind is still a lower bound.
        if !events.is_empty() && self.marked_at.is_none_or(|at| at.elapsed() >= MARK_EVERY) {
            self.mark.record(revision);
            self.marked_at = Some(std::time::Instant::now());
        }
        self.apply(&events, revision, compact_to);
        for event in &events {
            // No receiver is fine: nobody is watching.
            let _ = self.shared.events.send(Arc::clone(event));
        }
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            let _ = request.reply.send(outcome.map(|e| Arc::clone(&e.object)));
        }
    }

    /// Each write's event (or refusal), in order, each seeing the ones
    /// before it; and the revision the batch ends at.
    fn decide(&self, batch: &[Request]) -> (Vec<Result<Arc<Event>, StoreError>>, Revision) {
        let state = self.shared.read();
        let mut revision = state.revision;
        let mut touched: HashMap<&str, Option<Stored>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            let key = request.write.key();
            let current = match touched.get(key) {
                Some(stored) => stored.clone(),
                None => state.objects.get(key).cloned(),
            };
            let outcome = match (&request.write, current) {
                (Write::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists {
                    key: key.to_owned(),
                }),
                (Write::Update { .. } | Write::Delete { .. }, None) => Err(StoreError::NotFound {
                    key: key.to_owned(),
                }),
                (
                    Write::Update {
                        precondition: Some(expected),
                        ..
                    }
                    | Write::Delete {
                        precondition: Some(expected),
                        ..
                    },
                    Some(current),
                ) if *expected != current.revision => Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected: *expected,
                    current: current.revision,
                }),
                (Write::Create { object, .. }, None) | (Write::Update { object, .. }, Some(_)) => {
                    revision += 1;
                    let kind = if matches!(request.write, Write::Create { .. }) {
                        EventKind::Added
                    } else {
                        EventKind::Modified
                    };
                    Ok((kind, with_revision(object.clone(), revision)))
                }
                (Write::Delete { .. }, Some(current)) => {
                    revision += 1;
                    Ok((
                        EventKind::Deleted,
                        with_revision((*current.object).clone(), revision),
                    ))
                }
            };
            outcomes.push(outcome.map(|(kind, object)| {
                let object = Arc::new(object);
                touched.insert(
                    key,
                    (kind != EventKind::Deleted).then(|| Stored {
                        revision,
                        object: Arc::clone(&object),
                    }),
                );
                Arc::new(Event::new(revision, kind, key.to_owned(), object))
            }));
        }
        (outcomes, revision)
    }

    /// The revision to compact the log to after this batch, if it is time:
    /// in steps of a tenth of the window, so that pruning stays cheap.
    fn compaction(&self, revision: Revision, new_events: usize) -> Option<Revision> {
        let state = self.shared.read();
        let window = self.options.event_window;
        let kept = state.log.len() + new_events;
        (kept > window + window / 10).then(|| {
            let oldest_kept = revision - (window as Revision) + 1;
            oldest_kept - 1
        })
    }

    fn apply(&self, events: &[Arc<Event>], revision: Revision, compact_to: Option<Revision>) {
        let mut state = self
            .shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for event in events {
            match event.kind {
                EventKind::Deleted => {
                    state.objects.remove(&event.key);
                }
                EventKind::Added | EventKind::Modified => {
                    state.objects.insert(
                        event.key.clone(),
                        Stored {
                            revision: event.revision,
                            object: Arc::clone(&event.object),
                        },
                    );
                }
            }
            state.log.push_back(Arc::clone(event));
        }
        state.revision = revision;
        if let Some(to) = compact_to {
            while state.log.front().is_some_and(|e| e.revision <= to) {
                state.log.pop_front();
            }
            state.compacted = state.compacted.max(to);
        }
    }
}

/// `object` with `metadata.resourceVersion` set to `revision`.
fn with_revision(mut object: Value, revision: Revision) -> Value {
    if !object.is_object() {
        object = Value::Object(serde_json::Map::new());
    }
    let metadata = object
        .as_object_mut()
        .expect("made an object above")
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    object
}
