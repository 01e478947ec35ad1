//! One sending process per database: `run` and `resume` hold an exclusive lock on
//! `<db>.lock`, so two processes can never send the same pending jobs twice. Readers
//! (`status`, `export`, reports) need no lock: WAL lets them read while a run writes.

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
}

/// Held for as long as a run sends; released on drop, and by the OS if the process dies.
#[derive(Debug)]
pub struct DbLock {
    _file: Option<File>,
}

impl DbLock {
    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        if db.as_os_str() == ":memory:" {
            return Ok(Self { _file: None });
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
        Ok(Self { _file: Some(file) })
    }
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
