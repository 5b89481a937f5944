//! Files only the server's own user may read. The store holds every Secret
//! and Helm release in plain text and the pki directory holds the keys and
//! tokens, so they are made private as they are created (mode 0700 for
//! directories, 0600 for files) rather than opened up by the umask and
//! closed down after, which leaves a window in which anyone could read
//! them. What an older version made readable is closed down on start.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Make `dir` and any missing parents, each private; an existing `dir`
/// that others may enter is made private.
///
/// # Errors
/// When a directory cannot be made or its mode set.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    restrict(dir, DIR_MODE)
}

/// Create `path` empty and private if it does not exist; an existing file
/// others may read is made private. For files another library writes:
/// SQLite gives its journal and shared-memory files the database's mode.
///
/// # Errors
/// When the file cannot be created or its mode set.
pub fn create_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    restrict(path, FILE_MODE)
}

/// Write `contents` to `path`, which is private before anything is in it.
///
/// # Errors
/// When the file cannot be written.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // The mode above applies only to a new file; an existing one is
    // narrowed before the new contents go in.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Make an existing file private, if it is not; a missing one is left
/// missing.
///
/// # Errors
/// When the mode cannot be read or set.
pub fn restrict_file(path: &Path) -> io::Result<()> {
    match restrict(path, FILE_MODE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Take away group and other access from `path`, if it has any.
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "mode {current:o}, made {mode:o}");
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
