//! The store's contract: revisions, compare-and-swap, durability across
//! restarts and kill -9, and watches that resume or say Gone.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use apiserver::storage::{EventKind, Options, Revision, Store, StoreError};
use serde_json::{Value, json};

fn open(dir: &Path) -> Store {
    Store::open(dir, Options::default()).expect("store opens")
}

fn object(name: &str, n: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": n}})
}

fn revision_of(object: &Value) -> Revision {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a resourceVersion")
}

fn names(objects: &[std::sync::Arc<Value>]) -> Vec<Value> {
    objects
        .iter()
        .map(|o| o["metadata"]["name"].clone())
        .collect()
}

#[tokio::test]
async fn writes_take_successive_revisions_that_objects_carry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store
        .create("/cm/ns/a", object("a", 1))
        .await
        .expect("created");
    let b = store
        .create("/cm/ns/b", object("b", 1))
        .await
        .expect("created");
    let a2 = store
        .update("/cm/ns/a", object("a", 2), Some(revision_of(&a)))
        .await
        .expect("updated");
    assert_eq!(
        [revision_of(&a), revision_of(&b), revision_of(&a2)],
        [1, 2, 3]
    );
    assert_eq!(store.revision(), 3);
    let (rev, got) = store.get("/cm/ns/a").expect("present");
    assert_eq!((rev, got["data"]["n"].clone()), (3, json!(2)));
    let (at, listed) = store.list("/cm/ns/");
    assert_eq!(at, 3);
    assert_eq!(names(&listed), [json!("a"), json!("b")]);
    assert!(store.list("/cm/nx/").1.is_empty());
}

#[tokio::test]
async fn stale_and_missing_writes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = store.create("/k/a", object("a", 1)).await.expect("created");
    assert_eq!(
        store.create("/k/a", object("a", 9)).await,
        Err(StoreError::AlreadyExists { key: "/k/a".into() })
    );
    store
        .update("/k/a", object("a", 2), None)
        .await
        .expect("unconditional update");
    let stale = StoreError::Conflict {
        key: "/k/a".into(),
        expected: 1,
        current: 2,
    };
    assert_eq!(
        store
            .update("/k/a", object("a", 3), Some(revision_of(&a)))
            .await,
        Err(stale.clone())
    );
    assert_eq!(store.delete("/k/a", Some(1)).await, Err(stale));
    assert_eq!(
        store.update("/k/zz", object("zz", 1), None).await,
        Err(StoreError::NotFound {
            key: "/k/zz".into()
        })
    );
    assert_eq!(store.revision(), 2, "refusals take no revision");
    assert_eq!(store.get("/k/a").expect("present").1["data"]["n"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_that_read_the_same_revision_cannot_both_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.create("/k/x", object("x", 0)).await.expect("created");
    for round in 0..50 {
        let (read, _) = store.get("/k/x").expect("present");
        let (one, two) = tokio::join!(
            store.update("/k/x", object("x", round * 2 + 1), Some(read)),
            store.update("/k/x", object("x", round * 2 + 2), Some(read)),
        );
        let wins = [&one, &two].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {one:?} / {two:?}");
        let lost = if one.is_ok() { two } else { one };
        assert!(matches!(lost, Err(StoreError::Conflict { expected, .. }) if expected == read));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_modify_write_under_contention_loses_no_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .create("/k/counter", object("counter", 0))
        .await
        .expect("created");
    let writers = 8;
    let increments = 40;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..increments {
                loop {
                    let (read, current) = store.get("/k/counter").expect("present");
                    let n = current["data"]["n"].as_u64().expect("n");
                    match store
                        .update("/k/counter", object("counter", n + 1), Some(read))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("writer");
    }
    let (_, counter) = store.get("/k/counter").expect("present");
    assert_eq!(
        counter["data"]["n"],
        json!(writers * increments),
        "after {conflicts} conflicts"
    );
}

#[tokio::test]
async fn a_reopened_store_keeps_every_object_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for i in 0..20 {
            store
                .create(&format!("/k/{i:02}"), object("o", i))
                .await
                .expect("created");
        }
        store.delete("/k/05", None).await.expect("deleted");
        assert_eq!(store.revision(), 21);
    }
    let store = open(dir.path());
    assert_eq!(
        store.revision(),
        21,
        "the deletion's revision is remembered"
    );
    assert_eq!(store.list("/k/").1.len(), 19);
    assert!(store.get("/k/05").is_none());
    assert_eq!(store.get("/k/07").expect("present").0, 8);
    let next = store
        .create("/k/new", object("new", 0))
        .await
        .expect("created");
    assert_eq!(revision_of(&next), 22, "revisions are never reused");
    // The event log survived too: a watch resumes across the restart.
    let mut watch = store.watch("/k/", Some(19)).expect("resumable");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = watch.next().await.expect("event").expect("ok");
        seen.push((event.revision, event.kind));
    }
    assert_eq!(
        seen,
        [
            (20, EventKind::Added),
            (21, EventKind::Deleted),
            (22, EventKind::Added)
        ]
    );
}

#[tokio::test]
async fn a_watch_replays_from_its_revision_then_follows_its_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .create("/cm/a/1", object("1", 0))
        .await
        .expect("created");
    let mid = store
        .create("/cm/b/1", object("1", 0))
        .await
        .expect("created");
    store
        .create("/cm/a/2", object("2", 0))
        .await
        .expect("created");
    let mut watch = store
        .watch("/cm/a/", Some(revision_of(&mid)))
        .expect("watch");
    let first = watch.next().await.expect("event").expect("ok");
    assert_eq!((first.revision, first.key.as_str()), (3, "/cm/a/2"));
    // Live events: another namespace is filtered out, this one arrives.
    store
        .update("/cm/b/1", object("1", 1), None)
        .await
        .expect("updated");
    store.delete("/cm/a/1", None).await.expect("deleted");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("in time")
        .expect("event")
        .expect("ok");
    assert_eq!(
        (next.revision, next.kind, next.key.as_str()),
        (5, EventKind::Deleted, "/cm/a/1")
    );
    assert_eq!(
        revision_of(&next.object),
        5,
        "a deletion carries its own revision"
    );
    assert_eq!(next.object["data"]["n"], json!(0), "and the last state");
}

#[tokio::test]
async fn a_watch_without_a_revision_starts_with_what_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .create("/cm/a/1", object("1", 0))
        .await
        .expect("created");
    store
        .create("/cm/a/2", object("2", 0))
        .await
        .expect("created");
    store.delete("/cm/a/1", None).await.expect("deleted");
    let mut watch = store.watch("/cm/a/", None).expect("watch");
    let first = watch.next().await.expect("event").expect("ok");
    assert_eq!(
        (first.kind, first.key.as_str(), first.revision),
        (EventKind::Added, "/cm/a/2", 2)
    );
    store
        .create("/cm/a/3", object("3", 0))
        .await
        .expect("created");
    let next = watch.next().await.expect("event").expect("ok");
    assert_eq!((next.kind, next.revision), (EventKind::Added, 4));
}

/// One write to `/k/obj` per call, so revisions advance one by one.
async fn churn(store: &Store, n: u64) {
    match store.update("/k/obj", object("obj", n), None).await {
        Err(StoreError::NotFound { .. }) => {
            store
                .create("/k/obj", object("obj", n))
                .await
                .expect("created");
        }
        other => {
            other.expect("updated");
        }
    }
}

#[tokio::test]
async fn a_revision_older_than_the_log_is_gone_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        event_window: 10,
        ..Options::default()
    };
    {
        let store = Store::open(dir.path(), options.clone()).expect("opens");
        for i in 0..40 {
            churn(&store, i).await;
        }
        assert!(matches!(
            store.watch("/k/", Some(1)),
            Err(StoreError::Gone { requested: 1, .. })
        ));
        let mut recent = store.watch("/k/", Some(35)).expect("recent enough");
        assert_eq!(
            recent.next().await.expect("event").expect("ok").revision,
            36
        );
    }
    let store = Store::open(dir.path(), options).expect("reopens");
    assert!(matches!(
        store.watch("/k/", Some(5)),
        Err(StoreError::Gone { .. })
    ));
    let mut recent = store.watch("/k/", Some(38)).expect("recent enough");
    assert_eq!(
        recent.next().await.expect("event").expect("ok").revision,
        39
    );
}

#[tokio::test]
async fn a_slow_watcher_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        Options {
            broadcast_capacity: 4,
            ..Options::default()
        },
    )
    .expect("opens");
    let mut watch = store.watch("/k/", Some(0)).expect("watch");
    for i in 0..50 {
        churn(&store, i).await;
    }
    for expected in 1..=50 {
        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!(event.revision, expected);
    }
}

const STORM_DIR: &str = "GANTRY_TEST_STORM_DIR";

/// Child side: write until killed, printing each acknowledged write.
fn storm(dir: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(Path::new(dir), Options::default()).expect("opens");
        let mut writers = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("/storm/{w}/{n}");
                    let stored = store.create(&key, object("s", n)).await.expect("created");
                    println!("ack {key} {}", revision_of(&stored));
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
    });
}

#[test]
fn kill_9_during_a_write_storm_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(STORM_DIR) {
        storm(&dir);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill_9_during_a_write_storm_loses_no_acknowledged_write",
            "--nocapture",
        ])
        .env(STORM_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let mut acked: Vec<(String, Revision)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.expect("readable");
        if let Some(rest) = line.strip_prefix("ack ") {
            let (key, revision) = rest.split_once(' ').expect("key and revision");
            acked.push((key.to_owned(), revision.parse().expect("revision")));
        }
        if acked.len() >= 3000 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(
        acked.len() >= 3000,
        "only {} writes acknowledged in time",
        acked.len()
    );

    let store = open(dir.path());
    let lost: Vec<&(String, Revision)> = acked
        .iter()
        .filter(|(key, revision)| store.get(key).map(|(r, _)| r) != Some(*revision))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let highest = acked.iter().map(|(_, r)| *r).max().expect("some");
    assert!(store.revision() >= highest);
}

#[tokio::test]
async fn an_undecodable_row_is_quarantined_and_the_store_starts_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for name in ["a", "b", "c", "d", "e"] {
            store
                .create(&format!("/k/{name}"), object(name, 1))
                .await
                .expect("created");
        }
    }
    // Damage two rows as a bug or a stray write could: nesting deeper than
    // any decoder takes, and a value that is not an object.
    let database = dir.path().join("gantry.db");
    {
        let conn = rusqlite::Connection::open(&database).expect("opens");
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for (key, value) in [("/k/b", deep.as_str()), ("/k/d", "[1, 2]")] {
            conn.execute(
                "UPDATE objects SET value = ?1 WHERE key = ?2",
                rusqlite::params![value.as_bytes(), key],
            )
            .expect("damaged");
        }
    }
    let store = open(dir.path());
    assert_eq!(store.revision(), 5, "the counter stays");
    let listed: Vec<String> = store
        .list("/k/")
        .1
        .iter()
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(listed, ["a", "c", "e"]);
    // The objects went without an event: watches must list again.
    assert!(matches!(
        store.watch("/k/", Some(2)),
        Err(StoreError::Gone { .. })
    ));
    let next = store.create("/k/f", object("f", 1)).await.expect("writes");
    assert_eq!(revision_of(&next), 6);
    drop(store);
    {
        let conn = rusqlite::Connection::open(&database).expect("opens");
        let kept: Vec<(String, String)> = conn
            .prepare("SELECT key, reason FROM quarantine ORDER BY key")
            .expect("a quarantine table")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].0, "/k/b");
        assert!(kept[0].1.contains("recursion limit"), "{kept:?}");
        assert_eq!(kept[1], ("/k/d".into(), "not a JSON object".into()));
    }
    // Once moved aside, the store opens clean and the rest stays.
    let store = open(dir.path());
    assert_eq!(store.list("/k/").1.len(), 4);
    assert_eq!(store.revision(), 6);
}
