//! Where the store lives: a SQLite file (the default), or a PostgreSQL database given by URL
//! for runs shared by several machines.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, or `:memory:`.
    File(PathBuf),
    /// A `postgres://` or `postgresql://` URL. It may hold a password: show it only through
    /// [`Location`]'s `Display`, which hides it.
    Postgres(String),
}

impl Location {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Whether there is a database here already (a server is assumed to have one: opening it
    /// says otherwise).
    pub fn exists(&self) -> bool {
        match self {
            Self::File(path) => path.as_os_str() == ":memory:" || path.exists(),
            Self::Postgres(_) => true,
        }
    }

    /// The directory a SQLite file would be created in, when it does not exist (SQLite
    /// itself says only that it is "unable to open database file").
    pub fn missing_directory(&self) -> Option<PathBuf> {
        let Self::File(path) = self else {
            return None;
        };
        if path.as_os_str() == ":memory:" {
            return None;
        }
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty())?;
        (!directory.is_dir()).then(|| directory.to_owned())
    }
}

impl From<&std::path::Path> for Location {
    fn from(path: &std::path::Path) -> Self {
        Self::File(path.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Self {
        Self::File(path.clone())
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Self {
        location.clone()
    }
}

/// A `--db` that names no database.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("the database path is empty: give a file such as msgbatch.db, or a postgres:// URL")]
    Empty,
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(LocationError::Empty);
        }
        Ok(
            if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                Self::Postgres(s.to_owned())
            } else {
                Self::File(PathBuf::from(s))
            },
        )
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

/// A database URL with its password (in the authority or as a `password` parameter) hidden.
fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Not a URL we can take apart: show only its scheme.
        return format!("{}://…", url.split("://").next().unwrap_or("postgres"));
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_shows_without_its_password() {
        let at: Location = "postgres://ops:hunter2@db.internal:5432/runs?sslmode=require"
            .parse()
            .unwrap();
        assert!(at.is_postgres());
        let shown = at.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ops:***@db.internal:5432/runs"), "{shown}");
        let at: Location = "postgresql://db/runs?user=ops&password=hunter2"
            .parse()
            .unwrap();
        assert!(!at.to_string().contains("hunter2"), "{at}");
    }

    #[test]
    fn an_empty_location_and_a_missing_directory_are_named() {
        let error = "".parse::<Location>().unwrap_err().to_string();
        assert!(error.contains("the database path is empty"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let nowhere = Location::File(dir.path().join("no/such/dir/runs.db"));
        assert_eq!(
            nowhere.missing_directory(),
            Some(dir.path().join("no/such/dir"))
        );
        let here = Location::File(dir.path().join("runs.db"));
        assert_eq!(here.missing_directory(), None);
        assert_eq!(Location::File("runs.db".into()).missing_directory(), None);
    }

    #[test]
    fn anything_else_is_a_sqlite_file() {
        let at: Location = "runs/night.db".parse().unwrap();
        assert_eq!(at, Location::File(PathBuf::from("runs/night.db")));
        assert_eq!(at.to_string(), "runs/night.db");
    }
}
