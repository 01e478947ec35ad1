//! One sending process per database: `run` and `resume` hold an exclusive lock on
//! `<db>.lock` (on PostgreSQL, a session advisory lock), so two processes can never send the
//! same pending jobs twice. Readers (`status`, `export`, reports) need no lock: WAL (or
//! PostgreSQL's MVCC) lets them read while a run writes. The lock goes with the process that
//! holds it, however it ends: the OS drops the file lock, the server the session's lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the database {db} is in use by another msgbatch run{holder}; wait for it to finish, or use another --db"
    )]
    Busy { db: String, holder: String },
    #[error("failed to create the lock file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to take the sending lock of database {db}")]
    Database {
        db: String,
        #[source]
        source: sqlx::Error,
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

/// The advisory lock key of sending on a PostgreSQL store (`msgbatch` in ASCII), and its two
/// halves as `pg_locks` shows them.
const SENDING_KEY: i64 = 0x6d73_6762_6174_6368;
const SENDING_KEY_HI: i64 = SENDING_KEY >> 32;
const SENDING_KEY_LO: i64 = SENDING_KEY & 0xffff_ffff;

impl DbLock {
    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        if db.as_os_str() == ":memory:" {
            return Ok(Self {
                _held: Held::Nothing,
            });
        }
        let mut path = PathBuf::from(db.as_os_str());
        path.as_mut_os_string().push(".lock");
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
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
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

    /// Takes the sending lock of a PostgreSQL store on a session of its own.
    pub(super) async fn acquire_postgres(
        pool: &sqlx::PgPool,
        location: &super::Location,
    ) -> Result<Self, LockError> {
        let db = location.to_string();
        let failed = |source| LockError::Database {
            db: db.clone(),
            source,
        };
        let mut session = pool.acquire().await.map_err(failed)?.detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SENDING_KEY)
            .fetch_one(&mut session)
            .await
            .map_err(failed)?;
        if !taken {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT a.application_name FROM pg_locks l
                 JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.classid::bigint = $1 AND l.objid::bigint = $2
                 LIMIT 1",
            )
            .bind(SENDING_KEY_HI)
            .bind(SENDING_KEY_LO)
            .fetch_optional(&mut session)
            .await
            .map_err(failed)?;
            return Err(LockError::Busy {
                db,
                holder: holder.map(|h| format!(" ({h})")).unwrap_or_default(),
            });
        }
        Ok(Self {
            _held: Held::Postgres(session),
        })
    }
}

/// Whether a process holds the sending lock of a PostgreSQL store now.
pub(super) async fn is_held_postgres(pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                        AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2)",
    )
    .bind(SENDING_KEY_HI)
    .bind(SENDING_KEY_LO)
    .fetch_one(pool)
    .await
}

/// Whether a process is sending from the database now.
pub fn is_held(db: &Path) -> bool {
    if db.as_os_str() == ":memory:" {
        return false;
    }
    let mut path = PathBuf::from(db.as_os_str());
    path.as_mut_os_string().push(".lock");
    let Ok(file) = File::open(&path) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
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
}
