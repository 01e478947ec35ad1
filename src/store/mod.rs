//! The run store: the only module that speaks SQL.
//!
//! A run is fully described by its rows: the jobs are written before the first request
//! leaves, every HTTP attempt is a row, and a job is `succeeded` only once its result row is
//! committed. Everything else (resume, status, export, reports) reads from here.
//!
//! The store is a SQLite file by default, or a PostgreSQL database for runs that several
//! machines share. Each statement is written once for both (see [`sql`]); the schemas are
//! `migrations/` (SQLite) and `migrations/postgres/`.

/// The condition that the attempt row prefixed `$a` (`"a."`, or `""` for unaliased) tried to
/// answer its job: a Messages call (`job`) or an item of a Message Batch (`batch`), and not a
/// judge's request or a token count recorded against the job. Every query about a job's own
/// attempts (its last error, the errors a report counts, what `export` writes) picks them with
/// this, so that a run reads the same whichever way it was sent.
macro_rules! answering {
    ($a:literal) => {
        concat!("(", $a, "kind IN ('job', 'batch'))")
    };
}

/// The attempts of the runs picked by `$runs` (a condition on `j.run_id`, after it) that were
/// billed for what no result or grade holds: a judge's verdict that came back from a batch for
/// a grader spec since replaced. Their `a.cost_pico_usd` is spent as surely as a result's:
/// what a run spent (its budget, its workers' grants, its report's judging) counts them
/// through this. Read through the partial index of failed attempts, as each has an error.
macro_rules! billed_apart {
    ($runs:literal) => {
        concat!(
            "FROM attempts a INDEXED BY attempts_failed CROSS JOIN jobs j ON j.id = a.job
             WHERE a.error_type IS NOT NULL AND a.cost_pico_usd IS NOT NULL AND j.run_id ",
            $runs
        )
    };
}

/// What the judge requests of the run bound as `$1` cost, in pico-USD, as an SQL expression:
/// its verdicts, and those billed but recorded as no verdict ([`billed_apart`]).
macro_rules! judge_spend {
    () => {
        concat!(
            "(COALESCE((SELECT SUM(g.judge_cost_pico_usd) FROM grades g
                        JOIN jobs j ON j.id = g.job WHERE j.run_id = $1), 0)
              + COALESCE((SELECT SUM(a.cost_pico_usd) ",
            billed_apart!("= $1"),
            "), 0))"
        )
    };
}

mod added;
mod batches;
mod failures;
mod jobs_view;
mod location;
mod lock;
mod models;
mod report;
#[cfg(test)]
mod samples_migration_test;
mod sql;
pub mod view;
mod workers;

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, Postgres, Sqlite};

pub use batches::{
    BatchCallRecord, BatchItem, BatchKind, BatchRow, BatchWaiting, JudgeWaiting, REPLACED_SPEC,
    replaced_since, spec_hash,
};
pub use failures::FailureKind;
pub use jobs_view::{GradeView, JobScore, ListedGrade, ListedJob};
pub use location::Location;
pub use lock::{DbLock, LockError, RunTask};
pub use models::*;
pub use report::{
    CacheRow, ErrorRow, Failure, GraderRow, GradingRow, GroupBy, JobScoreRow, LimitUse, Measure,
    ReportRow, ValueCount,
};
pub use sql::Dialect;
use sql::{Sql, block_rows};
pub use workers::{Unfinished, WorkerRow};

/// The most arguments one statement binds: SQLite accepts at most 32,766 (PostgreSQL
/// 65,535); rows are inserted in chunks that stay well below it.
const MAX_VARIABLES: usize = 30_000;

/// The run key that means the latest run, wherever a run id or name is asked for. New runs
/// may not be named so; a run an older msgbatch let be named so is found by its name first.
pub const LAST_RUN: &str = "last";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open database {path}")]
    Open {
        path: String,
        #[source]
        source: DbError,
    },
    #[error("failed to open database {path}: the directory {} does not exist", directory.display())]
    NoDirectory {
        path: String,
        directory: std::path::PathBuf,
    },
    #[error("failed to prepare database {path}")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("no run `{0}` in this database (see `msgbatch status`)")]
    NoSuchRun(String),
    #[error(
        "workers share a run through a PostgreSQL store: give --db postgres://… (or MSGBATCH_DB)"
    )]
    NeedsPostgres,
    /// A sum over results that does not fit a 64-bit integer: some result holds usage (or a
    /// cost) no request could produce. Said for the figures that hold it, never saturated.
    #[error(
        "figures beyond what msgbatch can add up (over $9.2M or 2^63 tokens): a result holds \
         usage no request could produce"
    )]
    Overflow(#[source] DbError),
    #[error(transparent)]
    Sql(DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_overflow(&error) {
            Self::Overflow(DbError(error))
        } else {
            Self::Sql(DbError(error))
        }
    }
}

/// Whether the database refused a sum too large for its integers: SQLite's `integer
/// overflow`, PostgreSQL's `numeric_value_out_of_range` (a `CAST(SUM(..) AS BIGINT)`).
fn is_overflow(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.code().as_deref() == Some("22003") || e.message().contains("integer overflow")
        }
        _ => false,
    }
}

/// A database error shown once: sqlx writes its cause into its message and also gives it as
/// its source, which `{:#}` would print twice. This one's source is the cause's own.
#[derive(Debug)]
pub struct DbError(pub sqlx::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0).and_then(std::error::Error::source)
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    location: Location,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A row type both databases read into.
pub trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one [`Sql`] on a SQLite or PostgreSQL executor (a pool or a transaction), as
/// `$run(query)` on the query built from it: `$dialect` is [`Sql::sqlite`] or
/// [`Sql::postgres`], which give the text and arguments for that database.
macro_rules! on {
    ($dialect:ident, $executor:expr, $sql:expr, $query:ident, $run:ident) => {{
        let sql: Sql = $sql;
        let persistent = sql.persistent();
        let (text, args) = sql.$dialect()?;
        sqlx::$query(AssertSqlSafe(text), args)
            .persistent(persistent)
            .$run($executor)
            .await
    }};
}

/// One transaction on either database.
enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    async fn execute(&mut self, sql: Sql) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Sqlite(tx) => on!(sqlite, &mut **tx, sql, query_with, execute)?.rows_affected(),
            Self::Postgres(tx) => {
                on!(postgres, &mut **tx, sql, query_with, execute)?.rows_affected()
            }
        })
    }

    /// Runs an insert; on SQLite, returns the row id of the last row it wrote.
    async fn insert(&mut self, sql: Sql) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Self::Sqlite(tx) => {
                Some(on!(sqlite, &mut **tx, sql, query_with, execute)?.last_insert_rowid())
            }
            Self::Postgres(tx) => {
                on!(postgres, &mut **tx, sql, query_with, execute)?;
                None
            }
        })
    }

    async fn all<T: Record>(&mut self, sql: Sql) -> Result<Vec<T>, StoreError> {
        Ok(match self {
            Self::Sqlite(tx) => on!(sqlite, &mut **tx, sql, query_as_with, fetch_all)?,
            Self::Postgres(tx) => on!(postgres, &mut **tx, sql, query_as_with, fetch_all)?,
        })
    }

    async fn one<T: Record>(&mut self, sql: Sql) -> Result<T, StoreError> {
        Ok(match self {
            Self::Sqlite(tx) => on!(sqlite, &mut **tx, sql, query_as_with, fetch_one)?,
            Self::Postgres(tx) => on!(postgres, &mut **tx, sql, query_as_with, fetch_one)?,
        })
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.commit().await?,
            Self::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Opens the store at `location` and brings its schema up to date: a SQLite file is
    /// created if needed and kept in WAL mode (`:memory:` gives a private in-memory
    /// database); a PostgreSQL database must exist.
    pub async fn open(location: impl Into<Location>) -> Result<Self, StoreError> {
        Self::open_keeping(location, 0).await
    }

    /// Opens the store as [`Store::open`] does, with `connections` connections (at most six)
    /// to a PostgreSQL server open from the start and kept open however long they are idle
    /// (a SQLite file's are opened as they are asked for, in no time). For a server answering
    /// pages: a connection opened while a page waits cost it a tenth of a second on a busy
    /// machine, and the pool opens one for nearly every statement of a page in a row (each
    /// connection goes back to the pool on a task of its own, after the next is asked for).
    pub async fn open_keeping(
        location: impl Into<Location>,
        connections: u32,
    ) -> Result<Self, StoreError> {
        let location: Location = location.into();
        let shown = location.to_string();
        let open = |source| StoreError::Open {
            path: shown.clone(),
            source: DbError(source),
        };
        if let Some(directory) = location.missing_directory() {
            return Err(StoreError::NoDirectory {
                path: shown,
                directory,
            });
        }
        let pool = match &location {
            Location::File(path) => Pool::Sqlite(open_sqlite(path).await.map_err(open)?),
            Location::Postgres(url) => {
                // The application name says which process holds a lock or a session.
                let options = PgConnectOptions::from_str(url)
                    .map_err(open)?
                    // As SQLite's `synchronous = NORMAL` in WAL mode: a commit survives
                    // msgbatch dying at once, and the server's crash may lose the last
                    // fraction of a second of commits (whose jobs are then sent again),
                    // without every commit waiting for a disk flush.
                    .options([("synchronous_commit", "off")])
                    .application_name(&format!(
                        "msgbatch pid {} on {}",
                        std::process::id(),
                        host_name()
                    ));
                // One connection first, so that a server that cannot be reached or refuses us
                // says why at once; the pool would retry until its timeout and say only that.
                let first = sqlx::ConnectOptions::connect(&options)
                    .await
                    .map_err(open)?;
                sqlx::Connection::close(first).await.map_err(open)?;
                let pool = PgPoolOptions::new()
                    // The writer, the dispatcher, the loader, a report's second reader, and a
                    // heartbeat that must not wait behind them for long.
                    .max_connections(6)
                    .min_connections(connections.min(6))
                    .acquire_timeout(Duration::from_secs(60))
                    .connect_with(options)
                    .await
                    .map_err(open)?;
                // Opened now rather than once asked for: held at once, the pool opens them.
                let mut held = Vec::new();
                for _ in 0..connections.min(6) {
                    held.push(pool.acquire().await.map_err(open)?);
                }
                drop(held);
                Pool::Postgres(pool)
            }
        };
        let migrated = match &pool {
            Pool::Sqlite(pool) => sqlx::migrate!().run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        };
        migrated.map_err(|source| StoreError::Migrate {
            path: shown.clone(),
            source,
        })?;
        Ok(Self { pool, location })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Closes the store for every clone. A SQLite file is checkpointed first, so that the
    /// database file alone holds every committed run (a copy of it without its `-wal` is
    /// whole) and the write-ahead log is left empty; SQLite does this itself only when the
    /// last connection of any process closes, which another process reading the store
    /// prevents. A checkpoint that cannot finish at once (a reader in the middle of a long
    /// query) is left to the next command: the committed data is safe in the log meanwhile.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => {
                if !pool.is_closed()
                    && let Ok(mut connection) = pool.acquire().await
                {
                    let _ = sqlx::query("PRAGMA busy_timeout = 2000")
                        .execute(&mut *connection)
                        .await;
                    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                        .execute(&mut *connection)
                        .await;
                    // The connection goes back to the pool, which closes it.
                    drop(connection);
                }
                pool.close().await;
            }
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Holds a SQLite store for one sending process; see [`DbLock`]. A PostgreSQL store is
    /// shared by workers, which claim jobs under leases instead (and take [`Store::lock_run`]
    /// for what one of them does for all).
    pub async fn lock(&self) -> Result<DbLock, LockError> {
        match &self.location {
            Location::File(path) => DbLock::acquire(path),
            Location::Postgres(_) => Ok(DbLock::none()),
        }
    }

    /// Whether a process is sending from a SQLite store now (see [`Store::workers`] for a
    /// PostgreSQL one).
    pub fn is_locked(&self) -> bool {
        match &self.location {
            Location::File(path) => lock::is_held(path),
            Location::Postgres(_) => false,
        }
    }

    /// On a PostgreSQL store, the lock on one task of a run that one worker does for all, or
    /// `None` while another process holds it. A SQLite store has one sender, holding
    /// [`Store::lock`], and needs no other.
    pub async fn lock_run(&self, what: RunTask, run_id: i64) -> Result<Option<DbLock>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(Some(DbLock::none())),
            Pool::Postgres(pool) => Ok(DbLock::of_run(pool, what, run_id).await?),
        }
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    async fn execute(&self, sql: Sql) -> Result<u64, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => on!(sqlite, pool, sql, query_with, execute)?.rows_affected(),
            Pool::Postgres(pool) => on!(postgres, pool, sql, query_with, execute)?.rows_affected(),
        })
    }

    async fn all<T: Record>(&self, sql: Sql) -> Result<Vec<T>, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => on!(sqlite, pool, sql, query_as_with, fetch_all)?,
            Pool::Postgres(pool) => on!(postgres, pool, sql, query_as_with, fetch_all)?,
        })
    }

    async fn one<T: Record>(&self, sql: Sql) -> Result<T, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => on!(sqlite, pool, sql, query_as_with, fetch_one)?,
            Pool::Postgres(pool) => on!(postgres, pool, sql, query_as_with, fetch_one)?,
        })
    }

    async fn optional<T: Record>(&self, sql: Sql) -> Result<Option<T>, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => on!(sqlite, pool, sql, query_as_with, fetch_optional)?,
            Pool::Postgres(pool) => on!(postgres, pool, sql, query_as_with, fetch_optional)?,
        })
    }

    /// The one value of a one-row, one-column statement.
    async fn value<T>(&self, sql: Sql) -> Result<T, StoreError>
    where
        (T,): Record,
    {
        let (value,) = self.one::<(T,)>(sql).await?;
        Ok(value)
    }

    /// Each row of a statement in turn, without holding them all.
    async fn each<T: Record, E: From<StoreError>>(
        &self,
        sql: Sql,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut count = 0;
        match &self.pool {
            Pool::Sqlite(pool) => {
                let (text, args) = sql.sqlite().map_err(StoreError::from)?;
                let mut rows =
                    sqlx::query_as_with::<Sqlite, T, _>(AssertSqlSafe(text), args).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
                    sink(row)?;
                    count += 1;
                }
            }
            Pool::Postgres(pool) => {
                let (text, args) = sql.postgres().map_err(StoreError::from)?;
                let mut rows =
                    sqlx::query_as_with::<Postgres, T, _>(AssertSqlSafe(text), args).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
                    sink(row)?;
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    pub async fn create_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        self.value(
            Sql::new(
                "INSERT INTO runs (name, created_at_ms, status, input_path, input_sha256,
                                   gateway_name, base_url, messages_path, settings, via, loaded,
                                   input_format, input_jobs)
                 VALUES ($1, $2, 'loading', $3, $4, $5, $6, $7, $8, $9, FALSE, $10, $11)
                 RETURNING id",
            )
            .bind(run.name.as_str())
            .bind(now_ms())
            .bind(run.input_path.as_str())
            .bind(run.checked.as_ref().map_or("", |c| c.sha256.as_str()))
            .bind(run.gateway_name.as_str())
            .bind(run.base_url.as_str())
            .bind(run.messages_path.as_str())
            .bind(run.settings_json.as_str())
            .bind(run.via)
            .bind(run.checked.as_ref().map_or("", |c| c.format.as_str()))
            .bind(
                run.checked
                    .as_ref()
                    .map(|c| i64::try_from(c.jobs).unwrap_or(i64::MAX)),
            ),
        )
        .await
    }

    /// Whether a run of this name exists already.
    pub async fn run_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let found: Option<(i64,)> = self
            .optional(Sql::new("SELECT id FROM runs WHERE name = $1").bind(name))
            .await?;
        Ok(found.is_some())
    }

    pub async fn delete_run(&self, run_id: i64) -> Result<(), StoreError> {
        self.execute(Sql::new("DELETE FROM runs WHERE id = $1").bind(run_id))
            .await?;
        Ok(())
    }

    pub async fn set_run_status(
        &self,
        run_id: i64,
        status: RunStatus,
        stop_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = status.is_finished().then(now_ms);
        self.execute(
            Sql::new(
                "UPDATE runs SET status = $2, stop_reason = $3, finished_at_ms = $4 WHERE id = $1",
            )
            .bind(run_id)
            .bind(status.as_str())
            .bind(stop_reason)
            .bind(finished),
        )
        .await?;
        Ok(())
    }

    /// Records the input file's sha256 (of the file as given) and the format it was read as.
    pub async fn set_input(
        &self,
        run_id: i64,
        sha256: &str,
        format: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            Sql::new("UPDATE runs SET input_sha256 = $2, input_format = $3 WHERE id = $1")
                .bind(run_id)
                .bind(sha256)
                .bind(format),
        )
        .await?;
        Ok(())
    }

    /// Records that every row of a run's input is stored.
    pub async fn set_loaded(&self, run_id: i64) -> Result<(), StoreError> {
        self.execute(Sql::new("UPDATE runs SET loaded = TRUE WHERE id = $1").bind(run_id))
            .await?;
        Ok(())
    }

    /// The input line of a run's last stored row (0 for a run without rows): a partly loaded
    /// run goes on loading after it, its rows being stored in file order, whole records at a
    /// time.
    pub async fn last_stored_line(&self, run_id: i64) -> Result<u64, StoreError> {
        let Some(JobSpan { last, .. }) = self.job_span(run_id).await? else {
            return Ok(0);
        };
        let line: i64 = self
            .value(Sql::new("SELECT line FROM jobs WHERE id = $1").bind(last))
            .await?;
        Ok(u64::try_from(line).unwrap_or(0))
    }

    /// Replaces a run's settings with `settings_json` (see [`RunRow::settings_json`]).
    pub async fn set_run_settings(
        &self,
        run_id: i64,
        settings_json: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            Sql::new("UPDATE runs SET settings = $2 WHERE id = $1")
                .bind(run_id)
                .bind(settings_json),
        )
        .await?;
        Ok(())
    }

    /// Records the way a run of `--via auto` was given at its first session: its settings
    /// and its `via` column, together.
    pub async fn set_run_via(
        &self,
        run_id: i64,
        settings_json: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            Sql::new("UPDATE runs SET settings = $2, via = $3 WHERE id = $1")
                .bind(run_id)
                .bind(settings_json)
                .bind(via),
        )
        .await?;
        Ok(())
    }

    /// Inserts jobs in one transaction, and counts them into their run's tallies in it (on
    /// SQLite here, once per statement; on PostgreSQL by a trigger, once per statement).
    pub async fn insert_jobs(&self, run_id: i64, jobs: Vec<NewJob>) -> Result<(), StoreError> {
        const COLUMNS: usize = 12;
        let mut added = (self.dialect() == Dialect::Sqlite).then(added::AddedJobs::default);
        let mut tx = self.begin().await?;
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut sql = Sql::new(
                "INSERT INTO jobs (run_id, job_id, model, sample, line, request,
                                   request_sha256, tags, expect, state, error,
                                   params_max_tokens) ",
            );
            let mut rows = 0;
            sql.push_values(jobs.by_ref().take(block_rows(COLUMNS)), |row, job| {
                rows += 1;
                if let Some(added) = &mut added {
                    added.row(&job.model, job.state);
                }
                row.bind(run_id)
                    .bind(job.job_id)
                    .bind(job.model)
                    .bind(i64::from(job.sample))
                    .bind(i64::try_from(job.line).unwrap_or(i64::MAX))
                    .bind(job.request)
                    .bind(job.request_sha256)
                    .bind(job.tags)
                    .bind(job.expect)
                    .bind(job.state.as_str())
                    .bind(job.error)
                    .bind(job.params_max_tokens.and_then(|m| i64::try_from(m).ok()));
            });
            let last = tx.insert(sql.block(rows, COLUMNS)).await?;
            if let (Some(added), Some(last)) = (&mut added, last) {
                added.written(last);
            }
        }
        if let Some(added) = added {
            added.write(&mut tx, run_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The row ids of a run's first and last jobs, and whether every row between them is one
    /// of its jobs, or `None` for a run without jobs. A run's jobs are stored in one stretch
    /// of rows, unless its loading stopped and was resumed after another run was made. The
    /// run's index is ordered by job id, so this reads it whole: ask once per scan.
    pub async fn job_span(&self, run_id: i64) -> Result<Option<JobSpan>, StoreError> {
        Ok(self
            .job_spans(&[run_id])
            .await?
            .into_iter()
            .next()
            .map(|(_, span)| span))
    }

    /// The steps of a statement's query plan on SQLite, one a line: for tests that check an
    /// index is used.
    #[cfg(test)]
    pub(crate) async fn query_plan(&self, sql: Sql) -> String {
        let steps: Vec<(i64, i64, i64, String)> = self.all(sql.explained()).await.unwrap();
        steps
            .into_iter()
            .map(|(.., step)| step)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// [`Store::job_span`] of each of `runs` that has jobs, in one read of their index.
    pub async fn job_spans(&self, runs: &[i64]) -> Result<Vec<(i64, JobSpan)>, StoreError> {
        Ok(self
            .run_shapes(runs)
            .await?
            .into_iter()
            .map(|shape| (shape.run, shape.span))
            .collect())
    }

    /// The [`RunShape`] of each of `runs` that has jobs, by run, in one read of their index.
    pub async fn run_shapes(&self, runs: &[i64]) -> Result<Vec<RunShape>, StoreError> {
        let mut sql = Sql::new(
            "SELECT run_id, min(id), max(id), count(*), max(sample) + 1 FROM jobs
             WHERE run_id IN (",
        );
        sql.push_list(runs)
            .push(") GROUP BY run_id ORDER BY run_id");
        let rows: Vec<(i64, i64, i64, i64, i64)> = self.all(sql).await?;
        Ok(rows
            .into_iter()
            .map(|(run, first, last, rows, samples)| RunShape {
                run,
                span: JobSpan {
                    first,
                    last,
                    contiguous: last - first + 1 == rows,
                },
                rows,
                samples: samples.max(1),
            })
            .collect())
    }

    /// The row id just before a run's first job: where a scan of its jobs by row id starts.
    pub async fn before_first_job(&self, run_id: i64) -> Result<i64, StoreError> {
        Ok(self
            .job_span(run_id)
            .await?
            .map_or(i64::MAX - 1, |span| span.first - 1))
    }

    /// Pending jobs of a run with row id above `after` (at least
    /// [`Store::before_first_job`]), in row order.
    pub async fn pending_jobs(
        &self,
        run_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PendingJob>, StoreError> {
        // A run's jobs are (nearly always) one stretch of rows, so a rowid range scan from
        // `after` reads each of them once over all pages, and few others; an index on state
        // would cost every insert more.
        self.all(
            Sql::new(
                "SELECT id, job_id, model, request, attempts, expect FROM jobs NOT INDEXED
                 WHERE id > $2 AND run_id = $1 AND state = 'pending'
                 ORDER BY id LIMIT $3",
            )
            .bind(run_id)
            .bind(after)
            .bind(limit),
        )
        .await
    }

    /// Sets every failed job of a run back to pending; returns how many.
    pub async fn reset_failed(&self, run_id: i64) -> Result<u64, StoreError> {
        self.execute(
            Sql::new(
                "UPDATE jobs SET state = 'pending', error = NULL
                 WHERE run_id = $1 AND state = 'failed'",
            )
            .bind(run_id),
        )
        .await
    }

    /// Commits one writer batch in a single transaction. A job claimed under a lease is
    /// updated, and its result recorded, only while the lease is still the one it was
    /// claimed with; returns the jobs whose outcome was dropped because another worker holds
    /// them now. Attempts are always recorded: they were sent, and may have been billed.
    pub async fn write(&self, batch: &WriteBatch) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.begin().await?;
        let lost = Self::write_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(lost)
    }

    /// [`Store::write`] within a transaction of the caller's, which commits it.
    async fn write_in(tx: &mut Tx, batch: &WriteBatch) -> Result<Vec<i64>, StoreError> {
        let fenced = batch.updates.iter().any(|u| u.lease.is_some());
        let mut lost = Vec::new();
        const UPDATE_COLUMNS: usize = 5;
        for chunk in batch.updates.chunks(block_rows(UPDATE_COLUMNS)) {
            let mut sql = Sql::new("WITH u (id, state, attempts, error, lease) AS (");
            sql.push_values(chunk, |row, u| {
                row.bind(u.job)
                    .bind(u.state.as_str())
                    .bind(u.attempts)
                    .bind(u.error.clone())
                    .bind(u.lease);
            });
            if fenced {
                // Rows are locked in id order, as every writer locks them, so that two
                // workers' writers finishing the same jobs wait for each other, not deadlock.
                sql.push(
                    "), locked AS (SELECT j.id FROM jobs j JOIN u ON u.id = j.id
                                   ORDER BY j.id FOR UPDATE OF j)
                     UPDATE jobs SET state = u.state, attempts = u.attempts, error = u.error,
                           lease_worker = NULL, lease_token = NULL, lease_until_ms = NULL
                       FROM u, locked WHERE jobs.id = u.id AND locked.id = u.id
                         AND (u.lease IS NULL OR jobs.lease_token = u.lease)
                       RETURNING jobs.id",
                );
                let kept: Vec<(i64,)> = tx.all(sql.block(chunk.len(), UPDATE_COLUMNS)).await?;
                let kept: std::collections::HashSet<i64> =
                    kept.into_iter().map(|(id,)| id).collect();
                lost.extend(chunk.iter().map(|u| u.job).filter(|id| !kept.contains(id)));
            } else {
                sql.push(
                    ") UPDATE jobs SET state = u.state, attempts = u.attempts, error = u.error
                       FROM u WHERE jobs.id = u.id",
                );
                tx.execute(sql.block(chunk.len(), UPDATE_COLUMNS)).await?;
            }
        }
        let kept = |job: i64| !lost.contains(&job);
        const ATTEMPT_COLUMNS: usize = 15;
        for chunk in batch.attempts.chunks(block_rows(ATTEMPT_COLUMNS)) {
            let mut sql = Sql::new(
                "INSERT INTO attempts (job, kind, attempt, started_at_ms, queue_wait_ms,
                    latency_ms, ttft_ms, http_status, error_type, error_message, error_body,
                    retry_after_ms, request_id, batch, cost_pico_usd) ",
            );
            sql.push_values(chunk, |row, a| {
                row.bind(a.job)
                    .bind(a.kind)
                    .bind(a.attempt)
                    .bind(a.started_at_ms)
                    .bind(a.queue_wait_ms)
                    .bind(a.latency_ms)
                    .bind(a.ttft_ms)
                    .bind(a.http_status)
                    .bind(a.error_type.clone())
                    .bind(a.error_message.clone())
                    .bind(a.error_body.clone())
                    .bind(a.retry_after_ms)
                    .bind(a.request_id.clone())
                    .bind(a.batch)
                    .bind(a.cost_pico_usd);
            });
            tx.execute(sql.block(chunk.len(), ATTEMPT_COLUMNS)).await?;
        }
        let results: Vec<&ResultRecord> = batch.results.iter().filter(|r| kept(r.job)).collect();
        const RESULT_COLUMNS: usize = 20;
        for chunk in results.chunks(block_rows(RESULT_COLUMNS)) {
            let mut sql = Sql::new(
                "INSERT INTO results (job, message_id, response_model, stop_reason,
                    stop_sequence, input_tokens, output_tokens, cache_creation_input_tokens,
                    cache_write_5m_tokens, cache_write_1h_tokens, cache_read_input_tokens,
                    service_tier, latency_ms, ttft_ms, streamed, cost_pico_usd,
                    completed_at_ms, cache_prefix, held_for_warmup, batch) ",
            );
            sql.push_values(chunk, |row, r| {
                row.bind(r.job)
                    .bind(r.message_id.clone())
                    .bind(r.response_model.clone())
                    .bind(r.stop_reason.clone())
                    .bind(r.stop_sequence.clone())
                    .bind(saturating(r.usage.input_tokens))
                    .bind(saturating(r.usage.output_tokens))
                    .bind(saturating(r.usage.cache_creation_input_tokens))
                    .bind(saturating(r.usage.cache_write_5m_tokens))
                    .bind(saturating(r.usage.cache_write_1h_tokens))
                    .bind(saturating(r.usage.cache_read_input_tokens))
                    .bind(r.service_tier.clone())
                    .bind(r.latency_ms)
                    .bind(r.ttft_ms)
                    .bind(r.streamed)
                    .bind(r.cost_pico_usd.map(saturating))
                    .bind(r.completed_at_ms)
                    .bind(r.cache_prefix)
                    .bind(r.held_for_warmup)
                    .bind(r.batch);
            });
            tx.execute(sql.block(chunk.len(), RESULT_COLUMNS)).await?;
            let mut sql = Sql::new("INSERT INTO responses (job, body, note) ");
            sql.push_values(chunk, |row, r| {
                row.bind(r.job)
                    .bind(r.response.as_str())
                    .bind(r.note.clone());
            });
            tx.execute(sql.block(chunk.len(), 3)).await?;
        }
        let grades: Vec<&GradeRecord> = results
            .iter()
            .flat_map(|r| &r.grades)
            .chain(&batch.grades)
            .collect();
        insert_grades(tx, &grades).await?;
        if let Some(worker) = batch.worker {
            let done = batch
                .updates
                .iter()
                .filter(|u| u.state != JobState::Pending && kept(u.job));
            let spent = results
                .iter()
                .filter_map(|r| r.cost_pico_usd.map(saturating))
                .chain(batch.grades.iter().filter_map(|g| g.judge_cost_pico_usd))
                .chain(batch.attempts.iter().filter_map(|a| a.cost_pico_usd))
                .sum::<i64>();
            tx.execute(
                Sql::new(
                    "UPDATE workers SET jobs_done = jobs_done + $2,
                                        spent_pico_usd = spent_pico_usd + $3
                     WHERE id = $1",
                )
                .bind(worker)
                .bind(i64::try_from(done.count()).unwrap_or(i64::MAX))
                .bind(spent),
            )
            .await?;
        }
        Ok(lost)
    }

    /// What the judge requests of a run cost, in pico-USD: its verdicts, and those billed
    /// but not recorded (see [`Store::replaced_judge_verdicts`]).
    pub async fn judge_spend(&self, run_id: i64) -> Result<i64, StoreError> {
        self.value(Sql::new(concat!("SELECT CAST(", judge_spend!(), " AS BIGINT)")).bind(run_id))
            .await
    }

    /// Judge verdicts of a run that came back from a batch for a grader spec since replaced
    /// (`msgbatch grade --expect` while the batch was open): billed, kept as attempts, and
    /// not recorded as any grade's verdict. How many, and what they cost in pico-USD.
    pub async fn replaced_judge_verdicts(&self, run_id: i64) -> Result<(i64, i64), StoreError> {
        self.one(
            Sql::new(
                "SELECT COUNT(*), CAST(COALESCE(SUM(a.cost_pico_usd), 0) AS BIGINT)
                 FROM attempts a INDEXED BY attempts_failed CROSS JOIN jobs j ON j.id = a.job
                 WHERE a.error_type IS NOT NULL AND a.error_type = $2 AND a.kind = 'judge'
                   AND j.run_id = $1",
            )
            .bind(run_id)
            .bind(REPLACED_SPEC),
        )
        .await
    }

    /// Judge grades of a run still waiting for a verdict after a request for it failed: how
    /// many, and the most recent reason.
    pub async fn judge_failures(&self, run_id: i64) -> Result<(i64, Option<String>), StoreError> {
        self.one(
            Sql::new(
                "SELECT COUNT(*), (SELECT g2.reason FROM grades g2 INDEXED BY grades_pending
                         CROSS JOIN jobs j2 ON j2.id = g2.job
                         WHERE g2.passed IS NULL AND g2.reason IS NOT NULL AND j2.run_id = $1
                         ORDER BY g2.graded_at_ms DESC LIMIT 1)
                 FROM grades g INDEXED BY grades_pending CROSS JOIN jobs j ON j.id = g.job
                 WHERE g.passed IS NULL AND g.reason IS NOT NULL AND j.run_id = $1",
            )
            .bind(run_id),
        )
        .await
    }

    /// Judge grades of a run still waiting for a verdict, but for those a batch still open
    /// asks for: their verdict comes with its results, and is never paid for twice.
    pub async fn pending_judges(&self, run_id: i64) -> Result<Vec<PendingJudge>, StoreError> {
        self.all(
            Sql::new(
                "SELECT g.job, g.grader, g.spec, j.request, b.body AS response
                 FROM grades g INDEXED BY grades_pending
                 JOIN jobs j ON j.id = g.job JOIN responses b ON b.job = g.job
                 WHERE g.passed IS NULL AND j.run_id = $1
                   AND NOT EXISTS (SELECT 1 FROM batch_items i JOIN batches t ON t.id = i.batch
                                   WHERE i.job = g.job AND i.grader = g.grader
                                     AND t.state != 'recorded')
                 ORDER BY g.job, g.grader",
            )
            .bind(run_id),
        )
        .await
    }

    /// Records judge verdicts.
    pub async fn save_grades(&self, grades: &[GradeRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let refs: Vec<&GradeRecord> = grades.iter().collect();
        insert_grades(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every succeeded job of a run with what grading needs.
    pub async fn gradable(&self, run_id: i64) -> Result<Vec<Gradable>, StoreError> {
        self.all(
            Sql::new(
                "SELECT j.id AS job, j.job_id, j.expect, b.body AS response, r.latency_ms
                 FROM jobs j JOIN results r ON r.job = j.id JOIN responses b ON b.job = j.id
                 WHERE j.run_id = $1 AND j.state = 'succeeded' ORDER BY j.id",
            )
            .bind(run_id),
        )
        .await
    }

    /// The grades a job has now, as (grader, spec, passed) for keeping judge verdicts.
    pub async fn judge_verdicts(&self, run_id: i64) -> Result<Vec<GradeRecord>, StoreError> {
        self.all(
            Sql::new(
                "SELECT g.job, g.grader, g.kind, g.passed, g.reason, g.spec, g.judge_model,
                        g.judge_input_tokens, g.judge_output_tokens, g.judge_cost_pico_usd
                 FROM grades g JOIN jobs j ON j.id = g.job
                 WHERE j.run_id = $1 AND g.kind = 'judge' AND g.passed IS NOT NULL",
            )
            .bind(run_id),
        )
        .await
    }

    /// Replaces every grade of a run, and sets new `expect` specs by job id first.
    pub async fn replace_grades(
        &self,
        run_id: i64,
        expects: &[(String, String)],
        grades: &[GradeRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for (job_id, expect) in expects {
            tx.execute(
                Sql::new("UPDATE jobs SET expect = $3 WHERE run_id = $1 AND job_id = $2")
                    .bind(run_id)
                    .bind(job_id)
                    .bind(expect),
            )
            .await?;
        }
        tx.execute(
            Sql::new("DELETE FROM grades WHERE job IN (SELECT id FROM jobs WHERE run_id = $1)")
                .bind(run_id),
        )
        .await?;
        let refs: Vec<&GradeRecord> = grades.iter().collect();
        insert_grades(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finds a run by numeric id or by name, or the latest run by [`LAST_RUN`] (unless a run
    /// is named so).
    pub async fn find_run(&self, key: &str) -> Result<RunRow, StoreError> {
        let by_id = match key.parse::<i64>() {
            Ok(id) => {
                self.optional(Sql::new("SELECT * FROM runs WHERE id = $1").bind(id))
                    .await?
            }
            Err(_) => None,
        };
        // A run an older msgbatch let be named with a number is found by it when no run has
        // that id.
        let found = match by_id {
            Some(run) => Some(run),
            None => {
                self.optional(Sql::new("SELECT * FROM runs WHERE name = $1").bind(key))
                    .await?
            }
        };
        let found = match found {
            None if key == LAST_RUN => {
                self.optional(Sql::new("SELECT * FROM runs ORDER BY id DESC LIMIT 1"))
                    .await?
            }
            found => found,
        };
        found.ok_or_else(|| StoreError::NoSuchRun(key.to_owned()))
    }

    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        self.all(Sql::new("SELECT * FROM runs ORDER BY id")).await
    }

    /// Where `run` stands now: see [`RunState`]. Every command that shows a run's status
    /// shows this.
    pub async fn run_state(&self, run: &RunRow) -> Result<RunState, StoreError> {
        let sending = self.is_locked() || self.workers(run.id).await?.iter().any(|w| w.alive);
        let running = run.status == RunStatus::Running;
        let submitted = self
            .open_batches(run.id)
            .await?
            .iter()
            .filter(|b| b.remote_id.is_some())
            .count();
        Ok(if submitted > 0 && !(running && sending) {
            RunState::Submitted(submitted)
        } else if running && !sending {
            RunState::Died
        } else {
            RunState::Stored(run.status)
        })
    }

    pub async fn run_counts(&self, run_id: i64) -> Result<RunCounts, StoreError> {
        self.one(
            Sql::new(
                "SELECT COUNT(*) AS total,
                        COUNT(*) FILTER (WHERE j.state = 'pending') AS pending,
                        COUNT(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
                        COUNT(*) FILTER (WHERE j.state = 'failed') AS failed,
                        COUNT(*) FILTER (WHERE j.state = 'rejected') AS rejected,
                        CAST(COALESCE(SUM(r.cost_pico_usd), 0) AS BIGINT) AS cost_pico_usd,
                        COUNT(*) FILTER (WHERE r.job IS NOT NULL AND r.cost_pico_usd IS NULL)
                            AS unpriced,
                        CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens,
                        CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens,
                        CAST(COALESCE(SUM(r.cache_creation_input_tokens), 0) AS BIGINT)
                            AS cache_creation_input_tokens,
                        CAST(COALESCE(SUM(r.cache_read_input_tokens), 0) AS BIGINT)
                            AS cache_read_input_tokens
                 FROM jobs j LEFT JOIN results r ON r.job = j.id
                 WHERE j.run_id = $1",
            )
            .bind(run_id),
        )
        .await
    }

    /// The models of a run's jobs with how many of them are still pending, rejected jobs
    /// (which have no model) left out.
    pub async fn run_models(&self, run_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.all(
            Sql::new(
                "SELECT model, COUNT(*) FILTER (WHERE state = 'pending') FROM jobs
                 WHERE run_id = $1 AND state != 'rejected' GROUP BY model ORDER BY model",
            )
            .bind(run_id),
        )
        .await
    }

    /// Mean output tokens and result count per model over every run in the database.
    pub async fn mean_output_by_model(&self) -> Result<Vec<(String, f64, i64)>, StoreError> {
        self.all(Sql::new(
            "SELECT j.model, CAST(AVG(r.output_tokens) AS DOUBLE PRECISION), COUNT(*)
             FROM results r JOIN jobs j ON j.id = r.job GROUP BY j.model",
        ))
        .await
    }

    /// Streams every job of a run with its result or last error, in input order, to `sink`.
    pub async fn export_rows<F>(&self, run_id: i64, sink: F) -> Result<u64, anyhow::Error>
    where
        F: FnMut(ExportRow) -> anyhow::Result<()>,
    {
        self.each(
            Sql::new(concat!(
                "SELECT j.job_id, j.model, j.sample, j.state, j.error,
                        (SELECT CASE WHEN COUNT(*) FILTER (WHERE NOT g.passed) > 0 THEN FALSE
                                     WHEN COUNT(*) = 0
                                          OR COUNT(*) FILTER (WHERE g.passed IS NULL) > 0
                                         THEN NULL
                                     ELSE TRUE END
                         FROM grades g WHERE g.job = j.id) AS passed,
                        b.body AS response, b.note AS note,
                        a.error_type AS last_error_type, a.error_message AS last_error_message,
                        a.error_body AS last_error_body, a.http_status AS last_http_status,
                        a.kind AS last_kind
                 FROM jobs j
                 LEFT JOIN responses b ON b.job = j.id
                 LEFT JOIN attempts a ON a.id =
                     (SELECT MAX(id) FROM attempts WHERE job = j.id AND ",
                answering!(""),
                ")
                 WHERE j.run_id = $1
                 ORDER BY j.id"
            ))
            .bind(run_id),
            sink,
        )
        .await
    }
}

/// A count or cost as the store keeps it (as i64).
fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A duration in whole ms, as the store keeps them.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// This machine's name, for telling the processes that share a store apart.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned())
}

/// Hidden, for tests: the most pages a SQLite store may grow to, set on every connection.
pub const MAX_PAGE_COUNT_ENV: &str = "MSGBATCH_TEST_MAX_PAGE_COUNT";

/// Opens a SQLite file (or `:memory:`) tuned for the run's one writer and one reader.
async fn open_sqlite(path: &std::path::Path) -> Result<SqlitePool, sqlx::Error> {
    let in_memory = path.as_os_str() == ":memory:";
    let options = if in_memory {
        SqliteConnectOptions::from_str("sqlite::memory:")?
    } else {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
    }
    .synchronous(SqliteSynchronous::Normal)
    .foreign_keys(true)
    .busy_timeout(Duration::from_secs(30))
    // SQLite's default 2 MiB of page cache per connection. 16 MiB kept the job index of a
    // million-job load in memory, but measured no faster (the OS caches the file anyway),
    // made a report over a million results slower (3.4 s against 2.8 s) and cost up to
    // 32 MiB more per run.
    .pragma("cache_size", "-2048")
    // Checkpoint less often than every 1,000 pages: bulk loads rewrite the same index
    // pages many times, and each checkpoint copies them again.
    .pragma("wal_autocheckpoint", "8192")
    // Large sorts (a report's GROUP BY over a million results) may use a second thread:
    // the sums over a million rows take 1.4 s instead of 2.1 s.
    .pragma("threads", "2");
    // For tests only: a ceiling on the database's pages makes SQLite answer SQLITE_FULL
    // ("database or disk is full") exactly as a full disk does, part-way through a run.
    let options = match std::env::var(MAX_PAGE_COUNT_ENV) {
        Ok(pages) if !in_memory && pages.parse::<u32>().is_ok() => {
            options.pragma("max_page_count", pages)
        }
        _ => options,
    };
    SqlitePoolOptions::new()
        // An in-memory database lives in one connection. A file has the writer and one
        // reader (the dispatcher), which WAL lets proceed side by side; more connections
        // would only add page caches.
        .max_connections(if in_memory { 1 } else { 2 })
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
}

/// Inserts (or replaces) grade rows.
async fn insert_grades(tx: &mut Tx, grades: &[&GradeRecord]) -> Result<(), StoreError> {
    const COLUMNS: usize = 11;
    let now = now_ms();
    for chunk in grades.chunks(MAX_VARIABLES / COLUMNS) {
        let mut sql = Sql::new(
            "INSERT INTO grades (job, grader, kind, passed, reason, spec, judge_model,
                judge_input_tokens, judge_output_tokens, judge_cost_pico_usd, graded_at_ms) ",
        );
        sql.push_values(chunk, |row, g| {
            row.bind(g.job)
                .bind(g.grader)
                .bind(g.kind.as_str())
                .bind(g.passed)
                .bind(g.reason.clone())
                .bind(g.spec.as_str())
                .bind(g.judge_model.clone())
                .bind(g.judge_input_tokens)
                .bind(g.judge_output_tokens)
                .bind(g.judge_cost_pico_usd)
                .bind(now);
        });
        sql.push(
            " ON CONFLICT (job, grader) DO UPDATE SET kind = excluded.kind,
                passed = excluded.passed, reason = excluded.reason, spec = excluded.spec,
                judge_model = excluded.judge_model,
                judge_input_tokens = excluded.judge_input_tokens,
                judge_output_tokens = excluded.judge_output_tokens,
                judge_cost_pico_usd = excluded.judge_cost_pico_usd,
                graded_at_ms = excluded.graded_at_ms",
        );
        tx.execute(sql.once()).await?;
    }
    Ok(())
}
