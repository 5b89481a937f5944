//! The durable half of the store: objects, recent events and the revision
//! counter in one SQLite database.

use std::path::Path;

use rusqlite::{Connection, params};
use serde_json::Value;

use super::{Event, EventKind, Revision, StoreError, integrity};

/// What a database holds at open.
pub(super) struct Loaded {
    pub(super) objects: Vec<(String, Revision, Value)>,
    pub(super) revision: Revision,
    /// The most recent events, oldest first.
    pub(super) events: Vec<Event>,
}

pub(super) struct Log {
    conn: Connection,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS objects (
        key      TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        value    BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS events (
        revision INTEGER PRIMARY KEY,
        kind     INTEGER NOT NULL,
        key      TEXT NOT NULL,
        value    BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
";

impl Log {
    /// Open the database in `dir`, creating it if needed, check it against
    /// its `mark` (see integrity.rs), and load it.
    pub(super) fn open(
        dir: &Path,
        event_window: usize,
        mark: Option<Revision>,
    ) -> Result<(Self, Loaded), StoreError> {
        let database = |e: rusqlite::Error| StoreError::Database(e.to_string());
        let conn = Connection::open(dir.join(integrity::DATABASE)).map_err(database)?;
        // WAL keeps readers and the writer apart; FULL makes every commit
        // durable before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(database)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(database)?;
        conn.execute_batch(SCHEMA).map_err(database)?;
        let revision = integrity::counter(&conn).map_err(database)?;
        integrity::check(&conn, dir, revision, mark)?;
        Self::load(conn, revision, event_window).map_err(database)
    }

    fn load(
        conn: Connection,
        revision: Revision,
        event_window: usize,
    ) -> rusqlite::Result<(Self, Loaded)> {
        let mut damaged = Vec::new();
        let mut objects = Vec::new();
        {
            let mut statement = conn.prepare("SELECT key, revision, value FROM objects")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let row = Row::read(row, "objects")?;
                match decode(&row.value) {
                    Ok(object) => objects.push((row.key, row.revision, object)),
                    Err(reason) => damaged.push((row, reason)),
                }
            }
        }
        let mut events = Vec::new();
        {
            let mut statement = conn.prepare(
                "SELECT key, revision, value, kind FROM events ORDER BY revision DESC LIMIT ?1",
            )?;
            let mut rows = statement.query([event_window as i64])?;
            while let Some(row) = rows.next()? {
                let kind = kind_from(row.get(3)?);
                let row = Row::read(row, "events")?;
                match decode(&row.value) {
                    Ok(object) => events.push(Event::new(
                        row.revision,
                        kind,
                        row.key,
                        std::sync::Arc::new(object),
                    )),
                    Err(reason) => damaged.push((row, reason)),
                }
            }
        }
        events.reverse();
        if !damaged.is_empty() {
            quarantine(&conn, &damaged)?;
            // Objects left without an event: every watch lists again.
            events.clear();
        }
        Ok((
            Self { conn },
            Loaded {
                objects,
                revision,
                events,
            },
        ))
    }

    /// Write a batch of events and the objects they leave behind in one
    /// transaction; prune events up to `compact_to`.
    pub(super) fn commit(
        &mut self,
        events: &[std::sync::Arc<Event>],
        revision: Revision,
        compact_to: Option<Revision>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO objects (key, revision, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET revision = excluded.revision, value = excluded.value",
            )?;
            let mut remove = tx.prepare_cached("DELETE FROM objects WHERE key = ?1")?;
            let mut log = tx.prepare_cached(
                "INSERT INTO events (revision, kind, key, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in events {
                let bytes = event.object_json();
                let revision = event.revision as i64;
                match event.kind {
                    EventKind::Deleted => {
                        remove.execute([&event.key])?;
                    }
                    EventKind::Added | EventKind::Modified => {
                        put.execute(params![event.key, revision, bytes])?;
                    }
                }
                log.execute(params![revision, kind_code(event.kind), event.key, bytes])?;
            }
            tx.prepare_cached(
                "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            )?
            .execute([revision as i64])?;
            if let Some(to) = compact_to {
                tx.prepare_cached("DELETE FROM events WHERE revision <= ?1")?
                    .execute([to as i64])?;
            }
        }
        tx.commit()
    }
}

/// A stored row as it is, before it is decoded.
struct Row {
    table: &'static str,
    key: String,
    revision: Revision,
    value: Vec<u8>,
}

impl Row {
    /// The first three columns of `row`: key, revision, value.
    fn read(row: &rusqlite::Row<'_>, table: &'static str) -> rusqlite::Result<Self> {
        Ok(Self {
            table,
            key: row.get(0)?,
            revision: row.get::<_, i64>(1)? as Revision,
            value: row.get(2)?,
        })
    }
}

/// A stored object, or why it cannot be served.
fn decode(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Move rows that cannot be decoded out of the way, into the `quarantine`
/// table, so that the server starts without them and they are kept for
/// whoever repairs them; drop the event log (objects went without an
/// event, so every watch must list again).
fn quarantine(conn: &Connection, damaged: &[(Row, String)]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS quarantine (
             source   TEXT NOT NULL,
             key      TEXT NOT NULL,
             revision INTEGER NOT NULL,
             value    BLOB NOT NULL,
             reason   TEXT NOT NULL,
             at       TEXT NOT NULL DEFAULT (datetime('now'))
         );",
    )?;
    for (row, reason) in damaged {
        tx.execute(
            "INSERT INTO quarantine (source, key, revision, value, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![row.table, row.key, row.revision as i64, row.value, reason],
        )?;
        if row.table == "objects" {
            tx.execute("DELETE FROM objects WHERE key = ?1", [&row.key])?;
        }
        tracing::error!(
            key = %row.key,
            revision = row.revision,
            table = row.table,
            "a stored row cannot be decoded ({reason}): it is moved to the quarantine table \
             of the database and the server starts without it"
        );
    }
    tx.execute("DELETE FROM events", [])?;
    tx.commit()
}

fn kind_code(kind: EventKind) -> i64 {
    match kind {
        EventKind::Added => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    }
}

fn kind_from(code: i64) -> EventKind {
    match code {
        0 => EventKind::Added,
        1 => EventKind::Modified,
        _ => EventKind::Deleted,
    }
}
