//! One process per embedded database, and files only their owner can read.
//!
//! In the embedded mode Vigil's process is the only writer of its SQLite file: its in-process
//! recent list and broadcast see every commit only because of that. A second process on the
//! same file would write events the first never shows (its cached page 1 would go stale). So
//! the embedded store takes an exclusive lock on `<database file>.lock` before opening the
//! database and holds it while open; a second process is refused with the first one's pid,
//! which the holder writes into the lock file. The lock is the operating system's (`flock`),
//! so it goes with the process however it ends: no stale lock to clean up after a crash.
//!
//! The events are the site's data: the directory Vigil creates is `0700`, and the database
//! file `0600`, which SQLite gives its `-wal` and `-shm` files too.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// Permissions of the directories the store creates.
const DIRECTORY_MODE: u32 = 0o700;
/// Permissions of the database and lock files the store creates.
const FILE_MODE: u32 = 0o600;

/// The exclusive claim on one database file, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SoleWriterLock {
    /// Held open: the lock lives as long as this descriptor.
    _file: File,
}

impl SoleWriterLock {
    /// Takes the lock beside `database_file`, or says which process holds it.
    pub fn acquire(database_file: &Path) -> Result<SoleWriterLock, StoreError> {
        let path = lock_path(database_file);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|cause| StoreError::DataDirectory {
                path: path.clone(),
                cause,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StoreError::DatabaseInUse {
                    path: database_file.to_owned(),
                    holder_pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(cause)) => {
                return Err(StoreError::DataDirectory { path, cause });
            }
        }
        // Who holds it, for the next process's message; the lock does not depend on it.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(SoleWriterLock { _file: file })
    }
}

/// `<database file>.lock`.
fn lock_path(database_file: &Path) -> PathBuf {
    let mut name = database_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates `directory` and its missing parents, owner-only.
pub(crate) fn create_private_dir(directory: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
        .map_err(|cause| StoreError::DataDirectory {
            path: directory.to_owned(),
            cause,
        })
}

/// Creates the database file owner-only if it does not exist yet, before SQLite opens it:
/// SQLite gives the journal files the database file's permissions. An existing file keeps
/// the permissions its owner gave it.
pub(crate) fn create_private_file(database_file: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(database_file)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(cause) => Err(StoreError::DataDirectory {
            path: database_file.to_owned(),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("vigil.db");
        let first = SoleWriterLock::acquire(&database).unwrap();
        match SoleWriterLock::acquire(&database) {
            Err(StoreError::DatabaseInUse { path, holder_pid }) => {
                assert_eq!(path, database);
                assert_eq!(holder_pid, Some(std::process::id()));
            }
            other => panic!("the second claim was not refused: {other:?}"),
        }
        drop(first);
        SoleWriterLock::acquire(&database).unwrap();
        let mode = std::fs::metadata(lock_path(&database))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, FILE_MODE);
    }

    #[test]
    fn directories_and_database_files_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        let file = nested.join("vigil.db");
        create_private_file(&file).unwrap();
        create_private_file(&file).unwrap();
        for (path, expected) in [
            (dir.path().join("a"), DIRECTORY_MODE),
            (nested, DIRECTORY_MODE),
            (file, FILE_MODE),
        ] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, expected, "{}", path.display());
        }
    }
}
