//! One sending process per SQLite database: `run` and `resume` hold an exclusive lock on
//! `<db>.lock`, so two processes can never send the same pending jobs twice. The lock file
//! sits beside the database as it is on disk, symlinks resolved, so that every spelling of
//! its path (a symlink to it or to a directory above it, `..`, a relative path) takes the
//! same lock. A database file with several names (hard links) is refused: SQLite keeps a
//! write-ahead log per name, so two processes writing through two names would corrupt it. Readers
//! (`status`, `export`, reports) need no lock: WAL lets them read while a run writes. On a
//! PostgreSQL store many workers send one run, claiming jobs under leases; what one of them
//! does for all (judging, batches) holds a session advisory lock of that run. Every lock goes
//! with the process that holds it, however it ends: the OS drops the file lock, the server
//! the session's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Most bytes read of a lock file when naming its holder: a pid is at most 20 digits.
const PID_BYTES: u64 = 24;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the database {db} is in use by another msgbatch run{holder}; wait for it to finish, or use another --db"
    )]
    Busy { db: String, holder: String },
    #[error(
        "the database {db} has {links} names (hard links), and SQLite keeps a write-ahead log per name: two processes writing through two of them would corrupt it; use one path (or a symlink)"
    )]
    HardLinked { db: String, links: u64 },
    #[error("failed to create the lock file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as a run sends; released on drop, and by the OS (or the database server)
/// if the process dies.
#[derive(Debug)]
pub struct DbLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    Nothing,
    File(#[expect(dead_code, reason = "held for its lock")] File),
    /// The session that holds the advisory lock, out of the pool: closing it releases the lock.
    Postgres(#[expect(dead_code, reason = "held for its lock")] sqlx::PgConnection),
}

/// The tasks of a run that one process of many does at a time; the value is the first key of
/// the advisory lock (the second is the run's id).
#[derive(Debug, Clone, Copy)]
pub enum RunTask {
    /// Asking the judges once every job is settled (`mj`).
    Judging = 0x6d6a,
    /// Submitting and collecting batches of the Message Batches API (`mb`).
    Batches = 0x6d62,
}

impl DbLock {
    /// A lock that holds nothing, where none is needed.
    pub(super) fn none() -> Self {
        Self {
            _held: Held::Nothing,
        }
    }

    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        if db.as_os_str() == ":memory:" {
            return Ok(Self {
                _held: Held::Nothing,
            });
        }
        let real = resolved(db);
        if let Ok(links) =
            std::fs::metadata(&real).map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            && links > 1
        {
            return Err(LockError::HardLinked {
                db: db.display().to_string(),
                links,
            });
        }
        let path = lock_path(db);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder wrote its pid: read no more than a pid can be, and name it only
                // if it is one.
                let mut pid = String::new();
                let _ = (&mut file).take(PID_BYTES).read_to_string(&mut pid);
                let holder = match pid.trim() {
                    pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                        format!(" (pid {pid})")
                    }
                    _ => String::new(),
                };
                return Err(LockError::Busy {
                    db: db.display().to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            _held: Held::File(file),
        })
    }
}

impl DbLock {
    /// A lock on one task of one run of a PostgreSQL store (`what` names the task), when no
    /// other process holds it.
    pub(super) async fn of_run(
        pool: &sqlx::PgPool,
        what: RunTask,
        run_id: i64,
    ) -> Result<Option<Self>, sqlx::Error> {
        let mut session = pool.acquire().await?.detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(what as i32)
            .bind(i32::try_from(run_id).unwrap_or(i32::MAX))
            .fetch_one(&mut session)
            .await?;
        Ok(taken.then_some(Self {
            _held: Held::Postgres(session),
        }))
    }
}

/// Whether a process is sending from the database now.
pub fn is_held(db: &Path) -> bool {
    if db.as_os_str() == ":memory:" {
        return false;
    }
    let Ok(file) = File::open(lock_path(db)) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}

/// The lock file of the database at `db`: `<db>.lock` beside the file it names once every
/// symlink on the way is resolved. A database not made yet is resolved through its directory
/// (and a symlink that points where it will be made, through its target's).
fn lock_path(db: &Path) -> PathBuf {
    let mut path = resolved(db);
    path.as_mut_os_string().push(".lock");
    path
}

/// `db` with every symlink resolved, as far as what exists allows.
fn resolved(db: &Path) -> PathBuf {
    let mut at = db.to_path_buf();
    // A bound on links to links, as the OS has (40 on Linux), against a loop.
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&at) {
            return real;
        }
        let dir = match at.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::read_link(&at) {
            // A symlink to a file not made yet: follow it, relative to its own directory.
            Ok(target) => at = dir.join(target),
            Err(_) => {
                let (Ok(dir), Some(name)) = (std::fs::canonicalize(&dir), at.file_name()) else {
                    break;
                };
                return dir.join(name);
            }
        }
    }
    db.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runs.db");
        let first = DbLock::acquire(&db).unwrap();
        let err = DbLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains("in use by another msgbatch run"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DbLock::acquire(&db).unwrap();
    }

    #[test]
    fn a_lock_file_that_holds_no_pid_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runs.db");
        let _first = DbLock::acquire(&db).unwrap();
        let forged = format!("1\nstopped: forged{}", "x".repeat(1 << 20));
        std::fs::write(lock_path(&db), forged).unwrap();
        let err = DbLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains("in use by another msgbatch run"), "{err}");
        assert!(!err.contains("pid") && !err.contains("forged"), "{err}");
        assert!(err.len() < 1000, "{}", err.len());
    }

    #[test]
    fn every_spelling_of_a_database_takes_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("data");
        std::fs::create_dir(&real).unwrap();
        let db = real.join("runs.db");
        // Not made yet: a symlink to where it will be, and one to its directory.
        std::os::unix::fs::symlink(&db, dir.path().join("link.db")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("dir")).unwrap();
        let spellings = [
            dir.path().join("link.db"),
            dir.path().join("dir/runs.db"),
            dir.path().join("data/../data/runs.db"),
        ];
        let held = DbLock::acquire(&db).unwrap();
        for spelling in &spellings {
            assert!(is_held(spelling), "{}", spelling.display());
            let err = DbLock::acquire(spelling).unwrap_err().to_string();
            assert!(err.contains("in use by another msgbatch run"), "{err}");
        }
        drop(held);
        std::fs::write(&db, "").unwrap();
        let held = DbLock::acquire(&spellings[0]).unwrap();
        assert!(DbLock::acquire(&db).is_err());
        drop(held);
    }

    #[test]
    fn a_database_with_two_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runs.db");
        std::fs::write(&db, "").unwrap();
        std::fs::hard_link(&db, dir.path().join("other.db")).unwrap();
        for name in [db.clone(), dir.path().join("other.db")] {
            let err = DbLock::acquire(&name).unwrap_err().to_string();
            assert!(err.contains("has 2 names (hard links)"), "{err}");
        }
        std::fs::remove_file(dir.path().join("other.db")).unwrap();
        DbLock::acquire(&db).unwrap();
    }
}
