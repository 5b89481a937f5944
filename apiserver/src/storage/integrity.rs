//! Noticing a store that lost writes or was damaged, and the ways back:
//! repair (accept what is left), backup and restore.
//!
//! SQLite keeps recent commits in its write-ahead log (`gantry.db-wal`)
//! until a checkpoint copies them into the database. Lose or damage that
//! file while the server is down and SQLite opens, without complaint, an
//! older state, or one where a checkpoint had copied part of a
//! transaction. So the store keeps a mark outside SQLite, `revision`,
//! rewritten after commits (at most every 100 ms, and when the store
//! closes) with the revision just committed; the mark is not synced, since
//! it only needs to never run ahead of what is on disk, and a commit is on
//! disk before its mark is written. On open,
//! a database behind its mark has lost writes; one whose revision counter,
//! objects and event log disagree is damaged. Either way the server
//! refuses to start and says which command brings it back.
//!
//! After a repair or a restore the revision counter jumps past every
//! revision a client may hold and the event log starts empty, so every
//! client's watch is told to list again (410) instead of resuming over
//! revisions that now mean something else.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{Revision, StoreError};

/// The mark's file in the store's directory.
const MARK: &str = "revision";
/// The database's file in the store's directory.
pub(super) const DATABASE: &str = "gantry.db";
/// How far a restore moves the revision counter past the backup's: more
/// revisions than a client could have seen between the backup and the
/// restore.
pub const RESTORE_BUMP: Revision = 1_000_000;

/// The highest revision known to be committed, kept beside the database.
#[derive(Debug)]
pub(super) struct Mark {
    file: File,
}

impl Mark {
    /// Open (or create) the mark in `dir`; the revision it holds.
    pub(super) fn open(dir: &Path) -> Result<(Self, Option<Revision>), StoreError> {
        let path = dir.join(MARK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        Ok((Self { file }, text.trim().parse().ok()))
    }

    /// Record that `revision` is committed. Fixed width, written in place:
    /// one small write, never a file half replaced.
    pub(super) fn record(&self, revision: Revision) {
        let line = format!("{revision:020}\n");
        if let Err(e) = self.file.write_all_at(line.as_bytes(), 0) {
            tracing::warn!("the store's revision mark could not be written: {e}");
        }
    }
}

/// The commands that bring a refused store back, for its error.
fn remedies(dir: &Path) -> String {
    let data = dir.parent().unwrap_or(dir).display();
    format!(
        "restore a backup with `gantry apiserver restore --data-dir {data} BACKUP` \
         (after moving {store} away), or accept what is left with \
         `gantry apiserver repair --data-dir {data}`",
        store = dir.display()
    )
}

/// Refuse a database that SQLite finds damaged, whose revision counter,
/// objects and event log disagree, or that is behind its mark.
pub(super) fn check(
    conn: &Connection,
    dir: &Path,
    revision: Revision,
    mark: Option<Revision>,
) -> Result<(), StoreError> {
    let problem = problem(conn, revision, mark).map_err(|e| StoreError::Database(e.to_string()))?;
    match problem {
        None => Ok(()),
        Some(problem) => Err(StoreError::Damaged(format!(
            "{}: {problem}; {}",
            dir.join(DATABASE).display(),
            remedies(dir)
        ))),
    }
}

/// What SQLite's own check finds damaged, if anything.
fn damage(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    Ok((verdict != "ok").then(|| format!("SQLite finds it damaged ({verdict})")))
}

/// What is wrong with the database, if anything.
fn problem(
    conn: &Connection,
    revision: Revision,
    mark: Option<Revision>,
) -> rusqlite::Result<Option<String>> {
    if let Some(damage) = damage(conn)? {
        return Ok(Some(damage));
    }
    if let Some(mark) = mark.filter(|&m| m > revision) {
        return Ok(Some(format!(
            "it is at revision {revision}, but revision {mark} was committed: \
             its write-ahead log (gantry.db-wal) was lost or damaged"
        )));
    }
    let object = newest(conn, "objects")?;
    let event = newest(conn, "events")?;
    if object.is_some_and(|o| o > revision) || event.is_some_and(|e| e != revision) {
        return Ok(Some(format!(
            "its revision counter ({revision}) disagrees with its newest object ({}) \
             and event ({})",
            object.unwrap_or(0),
            event.unwrap_or(0)
        )));
    }
    Ok(None)
}

/// The newest revision in `table` (`objects` or `events`), if any.
fn newest(conn: &Connection, table: &str) -> rusqlite::Result<Option<Revision>> {
    conn.query_row(&format!("SELECT max(revision) FROM {table}"), [], |row| {
        row.get::<_, Option<i64>>(0)
    })
    .map(|r| r.map(|r| r as Revision))
}

fn database_error(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The revision counter; 0 for a new database.
pub(super) fn counter(conn: &Connection) -> rusqlite::Result<Revision> {
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'revision'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
        .map_or(0, |r| r as Revision))
}

/// Empty the event log and set the counter to `revision`: every watch
/// from before it is told to list again.
fn restart_history(conn: &Connection, revision: Revision) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM events;")?;
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('revision', ?1)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [revision as i64],
    )?;
    conn.execute_batch("COMMIT")
}

/// Accept the store in `dir` as it is: the counter moves past every
/// revision its objects, its log and its mark know, and the log starts
/// empty. A database SQLite finds damaged cannot be accepted.
///
/// # Errors
/// When the database is damaged or cannot be written.
pub fn repair(dir: &Path) -> Result<Revision, StoreError> {
    let conn = Connection::open(dir.join(DATABASE)).map_err(database_error)?;
    if let Some(damage) = damage(&conn).map_err(database_error)? {
        return Err(StoreError::Damaged(format!(
            "{}: {damage}; restore a backup with `gantry apiserver restore`",
            dir.join(DATABASE).display()
        )));
    }
    let (mark, marked) = Mark::open(dir)?;
    let known = [
        Some(counter(&conn).map_err(database_error)?),
        newest(&conn, "objects").map_err(database_error)?,
        newest(&conn, "events").map_err(database_error)?,
        marked,
    ];
    let revision = known.into_iter().flatten().max().unwrap_or(0) + 1;
    restart_history(&conn, revision).map_err(database_error)?;
    mark.record(revision);
    Ok(revision)
}

/// Copy the store in `dir` to `to`, consistently, while it is in use
/// (SQLite's `VACUUM INTO` reads one snapshot); the copy's revision.
///
/// # Errors
/// When the store cannot be read or `to` written (it must not exist).
pub fn backup(dir: &Path, to: &Path) -> Result<Revision, StoreError> {
    let conn = Connection::open_with_flags(
        dir.join(DATABASE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(database_error)?;
    let target = to
        .to_str()
        .ok_or_else(|| StoreError::Database(format!("{}: not UTF-8", to.display())))?;
    // Private from creation, as the store itself: it holds every Secret.
    crate::private::create_file(to)
        .map_err(|e| StoreError::Database(format!("{}: {e}", to.display())))?;
    if std::fs::metadata(to).map(|m| m.len()).unwrap_or(0) > 0 {
        return Err(StoreError::Database(format!(
            "{}: already exists; a backup is never written over a file",
            to.display()
        )));
    }
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(database_error)?;
    let copy = Connection::open(to).map_err(database_error)?;
    counter(&copy).map_err(database_error)
}

/// Make the store in `dir` from the backup `from`: checked first, every
/// object kept with its resourceVersion, the counter moved
/// [`RESTORE_BUMP`] past the backup's and the event log empty. `dir` must
/// hold no store.
///
/// # Errors
/// When `dir` holds a store, or the backup is damaged or unreadable.
pub fn restore(from: &Path, dir: &Path) -> Result<Revision, StoreError> {
    let database = dir.join(DATABASE);
    if std::fs::metadata(&database).is_ok_and(|m| m.len() > 0) {
        return Err(StoreError::Database(format!(
            "{}: a store is already there; move it away first",
            database.display()
        )));
    }
    let backup = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(database_error)?;
    let revision = counter(&backup).map_err(database_error)?;
    let refused = problem(&backup, revision, None).map_err(database_error)?;
    if let Some(problem) = refused {
        return Err(StoreError::Damaged(format!(
            "{}: {problem}",
            from.display()
        )));
    }
    crate::private::create_dir(dir)
        .map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
    crate::private::create_file(&database)
        .map_err(|e| StoreError::Database(format!("{}: {e}", database.display())))?;
    drop(backup);
    // A backup is one self-contained file (see `backup`): copying its
    // bytes into the private file made above copies the store.
    let copied = File::open(from).and_then(|mut source| {
        let mut target = OpenOptions::new().write(true).open(&database)?;
        std::io::copy(&mut source, &mut target)?;
        target.sync_all()
    });
    copied.map_err(|e| StoreError::Database(format!("{}: {e}", from.display())))?;
    let restored = Connection::open(&database).map_err(database_error)?;
    let revision = revision + RESTORE_BUMP;
    restart_history(&restored, revision).map_err(database_error)?;
    let (mark, _) = Mark::open(dir)?;
    mark.record(revision);
    Ok(revision)
}
