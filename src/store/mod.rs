//! The run store: the only module that speaks SQL.
//!
//! A run is fully described by its rows: the jobs are written before the first request
//! leaves, every HTTP attempt is a row, and a job is `succeeded` only once its result row is
//! committed. Everything else (resume, status, export, reports) reads from here.

mod batches;
mod jobs_view;
mod lock;
mod models;
mod report;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

pub use batches::{BatchRow, BatchWaiting};
pub use jobs_view::{GradeView, JobView};
pub use lock::{DbLock, LockError, is_held};
pub use models::*;
pub use report::{
    CacheRow, ErrorRow, Failure, GraderRow, GradingRow, GroupBy, LimitUse, Measure, ReportRow,
    ValueCount,
};

/// SQLite accepts at most 32,766 bound variables in one statement; rows are inserted in
/// chunks that stay well below it. These multi-row statements are prepared afresh each time
/// (`persistent(false)`): their text differs with their row count, and the connection's
/// statement cache would keep a hundred of them, each program hundreds of kilobytes, per
/// connection (44 MB of a 200,000-job run's heap).
const MAX_VARIABLES: usize = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open database {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to prepare database {path}")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("no run `{0}` in this database (see `msgbatch status`)")]
    NoSuchRun(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode and brings its schema up
    /// to date. `:memory:` gives a private in-memory database.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let in_memory = display == ":memory:";
        let options = if in_memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(|source| {
                StoreError::Open {
                    path: display.clone(),
                    source,
                }
            })?
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
        let pool = SqlitePoolOptions::new()
            // An in-memory database lives in one connection. A file has the writer and one
            // reader (the dispatcher), which WAL lets proceed side by side; more connections
            // would only add page caches.
            .max_connections(if in_memory { 1 } else { 2 })
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: display.clone(),
                source,
            })?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: display,
                source,
            })?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn create_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO runs (name, created_at_ms, status, input_path, input_sha256,
                               gateway_name, base_url, messages_path, settings, via, loaded,
                               input_format, input_jobs)
             VALUES (?1, ?2, 'loading', ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11) RETURNING id",
        )
        .bind(&run.name)
        .bind(now_ms())
        .bind(&run.input_path)
        .bind(run.checked.as_ref().map_or("", |c| c.sha256.as_str()))
        .bind(&run.gateway_name)
        .bind(&run.base_url)
        .bind(&run.messages_path)
        .bind(&run.settings)
        .bind(run.via)
        .bind(run.checked.as_ref().map_or("", |c| c.format.as_str()))
        .bind(
            run.checked
                .as_ref()
                .map(|c| i64::try_from(c.jobs).unwrap_or(i64::MAX)),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Whether a run of this name exists already.
    pub async fn run_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    pub async fn delete_run(&self, run_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM runs WHERE id = ?1")
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_run_status(
        &self,
        run_id: i64,
        status: RunStatus,
        stop_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = matches!(
            status,
            RunStatus::Completed | RunStatus::Interrupted | RunStatus::BudgetExhausted
        )
        .then(now_ms);
        sqlx::query(
            "UPDATE runs SET status = ?2, stop_reason = ?3, finished_at_ms = ?4 WHERE id = ?1",
        )
        .bind(run_id)
        .bind(status.as_str())
        .bind(stop_reason)
        .bind(finished)
        .execute(&self.pool)
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
        sqlx::query("UPDATE runs SET input_sha256 = ?2, input_format = ?3 WHERE id = ?1")
            .bind(run_id)
            .bind(sha256)
            .bind(format)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that every row of a run's input is stored.
    pub async fn set_loaded(&self, run_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET loaded = 1 WHERE id = ?1")
            .bind(run_id)
            .execute(&self.pool)
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
        let line: i64 = sqlx::query_scalar("SELECT line FROM jobs WHERE id = ?1")
            .bind(last)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(line).unwrap_or(0))
    }

    pub async fn set_run_settings(&self, run_id: i64, settings: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET settings = ?2 WHERE id = ?1")
            .bind(run_id)
            .bind(settings)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts jobs in one transaction.
    pub async fn insert_jobs(&self, run_id: i64, jobs: Vec<NewJob>) -> Result<(), StoreError> {
        const COLUMNS: usize = 10;
        let mut tx = self.pool.begin().await?;
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO jobs (run_id, job_id, model, line, request, request_sha256,
                                   tags, expect, state, error) ",
            );
            builder.push_values(
                jobs.by_ref().take(MAX_VARIABLES / COLUMNS),
                |mut row, job| {
                    row.push_bind(run_id)
                        .push_bind(job.job_id)
                        .push_bind(job.model)
                        .push_bind(i64::try_from(job.line).unwrap_or(i64::MAX))
                        .push_bind(job.request)
                        .push_bind(job.request_sha256)
                        .push_bind(job.tags)
                        .push_bind(job.expect)
                        .push_bind(job.state.as_str())
                        .push_bind(job.error);
                },
            );
            builder.build().persistent(false).execute(&mut *tx).await?;
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

    /// [`Store::job_span`] of each of `runs` that has jobs, in one read of their index.
    pub async fn job_spans(&self, runs: &[i64]) -> Result<Vec<(i64, JobSpan)>, StoreError> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT run_id, min(id), max(id), count(*) FROM jobs WHERE run_id IN (",
        );
        let mut ids = b.separated(", ");
        for id in runs {
            ids.push_bind(*id);
        }
        b.push(") GROUP BY run_id ORDER BY run_id");
        let rows: Vec<(i64, i64, i64, i64)> = b.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(run, first, last, count)| {
                let contiguous = last - first + 1 == count;
                (
                    run,
                    JobSpan {
                        first,
                        last,
                        contiguous,
                    },
                )
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
        // `after` reads each of them once over all pages, and few others;
        // each of them once over all pages; an index on state would cost every insert more.
        let jobs = sqlx::query_as(
            "SELECT id, job_id, model, request, attempts, expect FROM jobs NOT INDEXED
             WHERE id > ?2 AND run_id = ?1 AND state = 'pending'
             ORDER BY id LIMIT ?3",
        )
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(jobs)
    }

    /// Sets every failed job of a run back to pending; returns how many.
    pub async fn reset_failed(&self, run_id: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', error = NULL WHERE run_id = ?1 AND state = 'failed'",
        )
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Commits one writer batch in a single transaction.
    pub async fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        const ATTEMPT_COLUMNS: usize = 13;
        for chunk in batch.attempts.chunks(MAX_VARIABLES / ATTEMPT_COLUMNS) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO attempts (job, kind, attempt, started_at_ms, queue_wait_ms,
                    latency_ms, ttft_ms, http_status, error_type, error_message, error_body,
                    retry_after_ms, request_id) ",
            );
            builder.push_values(chunk, |mut row, a| {
                row.push_bind(a.job)
                    .push_bind(a.kind)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at_ms)
                    .push_bind(a.queue_wait_ms)
                    .push_bind(a.latency_ms)
                    .push_bind(a.ttft_ms)
                    .push_bind(a.http_status)
                    .push_bind(a.error_type.clone())
                    .push_bind(a.error_message.clone())
                    .push_bind(a.error_body.clone())
                    .push_bind(a.retry_after_ms)
                    .push_bind(a.request_id.clone());
            });
            builder.build().persistent(false).execute(&mut *tx).await?;
        }
        const RESULT_COLUMNS: usize = 20;
        for chunk in batch.results.chunks(MAX_VARIABLES / RESULT_COLUMNS) {
            let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO results (job, message_id, response_model, stop_reason,
                    stop_sequence, input_tokens, output_tokens, cache_creation_input_tokens,
                    cache_write_5m_tokens, cache_write_1h_tokens, cache_read_input_tokens,
                    service_tier, latency_ms, ttft_ms, streamed, cost_pico_usd,
                    completed_at_ms, cache_prefix, held_for_warmup, batch) ",
            );
            builder.push_values(chunk, |mut row, r| {
                let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                row.push_bind(r.job)
                    .push_bind(r.message_id.clone())
                    .push_bind(r.response_model.clone())
                    .push_bind(r.stop_reason.clone())
                    .push_bind(r.stop_sequence.clone())
                    .push_bind(tokens(r.usage.input_tokens))
                    .push_bind(tokens(r.usage.output_tokens))
                    .push_bind(tokens(r.usage.cache_creation_input_tokens))
                    .push_bind(tokens(r.usage.cache_write_5m_tokens))
                    .push_bind(tokens(r.usage.cache_write_1h_tokens))
                    .push_bind(tokens(r.usage.cache_read_input_tokens))
                    .push_bind(r.service_tier.clone())
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.streamed)
                    .push_bind(r.cost_pico_usd.map(tokens))
                    .push_bind(r.completed_at_ms)
                    .push_bind(r.cache_prefix)
                    .push_bind(r.held_for_warmup)
                    .push_bind(r.batch);
            });
            builder.build().persistent(false).execute(&mut *tx).await?;
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO responses (job, body, note) ");
            builder.push_values(chunk, |mut row, r| {
                row.push_bind(r.job)
                    .push_bind(r.response.clone())
                    .push_bind(r.note.clone());
            });
            builder.build().persistent(false).execute(&mut *tx).await?;
        }
        let grades: Vec<&GradeRecord> = batch
            .results
            .iter()
            .flat_map(|r| &r.grades)
            .chain(&batch.grades)
            .collect();
        insert_grades(&mut tx, &grades).await?;
        const UPDATE_COLUMNS: usize = 4;
        for chunk in batch.updates.chunks(MAX_VARIABLES / UPDATE_COLUMNS) {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("WITH u (id, state, attempts, error) AS (");
            builder.push_values(chunk, |mut row, u| {
                row.push_bind(u.job)
                    .push_bind(u.state.as_str())
                    .push_bind(u.attempts)
                    .push_bind(u.error.clone());
            });
            builder.push(
                ") UPDATE jobs SET state = u.state, attempts = u.attempts, error = u.error
                   FROM u WHERE jobs.id = u.id",
            );
            builder.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the judge requests of a run cost, in pico-USD.
    pub async fn judge_spend(&self, run_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(g.judge_cost_pico_usd), 0) FROM grades g
             JOIN jobs j ON j.id = g.job WHERE j.run_id = ?1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Judge grades of a run still waiting for a verdict after a request for it failed: how
    /// many, and the most recent reason.
    pub async fn judge_failures(&self, run_id: i64) -> Result<(i64, Option<String>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), (SELECT g2.reason FROM grades g2 INDEXED BY grades_pending
                     CROSS JOIN jobs j2 ON j2.id = g2.job
                     WHERE g2.passed IS NULL AND g2.reason IS NOT NULL AND j2.run_id = ?1
                     ORDER BY g2.graded_at_ms DESC LIMIT 1)
             FROM grades g INDEXED BY grades_pending CROSS JOIN jobs j ON j.id = g.job
             WHERE g.passed IS NULL AND g.reason IS NOT NULL AND j.run_id = ?1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Judge grades of a run still waiting for a verdict.
    pub async fn pending_judges(&self, run_id: i64) -> Result<Vec<PendingJudge>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT g.job, g.grader, g.spec, j.request, b.body AS response
             FROM grades g INDEXED BY grades_pending
             JOIN jobs j ON j.id = g.job JOIN responses b ON b.job = g.job
             WHERE g.passed IS NULL AND j.run_id = ?1 ORDER BY g.job, g.grader",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records judge verdicts.
    pub async fn save_grades(&self, grades: &[GradeRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let refs: Vec<&GradeRecord> = grades.iter().collect();
        insert_grades(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every succeeded job of a run with what grading needs.
    pub async fn gradable(&self, run_id: i64) -> Result<Vec<Gradable>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id AS job, j.job_id, j.expect, b.body AS response, r.latency_ms
             FROM jobs j JOIN results r ON r.job = j.id JOIN responses b ON b.job = j.id
             WHERE j.run_id = ?1 AND j.state = 'succeeded' ORDER BY j.id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The grades a job has now, as (grader, spec, passed) for keeping judge verdicts.
    pub async fn judge_verdicts(&self, run_id: i64) -> Result<Vec<GradeRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT g.job, g.grader, g.kind, g.passed, g.reason, g.spec, g.judge_model,
                    g.judge_input_tokens, g.judge_output_tokens, g.judge_cost_pico_usd
             FROM grades g JOIN jobs j ON j.id = g.job
             WHERE j.run_id = ?1 AND g.kind = 'judge' AND g.passed IS NOT NULL",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces every grade of a run, and sets new `expect` specs by job id first.
    pub async fn replace_grades(
        &self,
        run_id: i64,
        expects: &[(String, String)],
        grades: &[GradeRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (job_id, expect) in expects {
            sqlx::query("UPDATE jobs SET expect = ?3 WHERE run_id = ?1 AND job_id = ?2")
                .bind(run_id)
                .bind(job_id)
                .bind(expect)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM grades WHERE job IN (SELECT id FROM jobs WHERE run_id = ?1)")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let refs: Vec<&GradeRecord> = grades.iter().collect();
        insert_grades(&mut tx, &refs).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finds a run by numeric id or by name.
    pub async fn find_run(&self, key: &str) -> Result<RunRow, StoreError> {
        let row = if let Ok(id) = key.parse::<i64>() {
            sqlx::query_as("SELECT * FROM runs WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        } else {
            sqlx::query_as("SELECT * FROM runs WHERE name = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
        };
        row.ok_or_else(|| StoreError::NoSuchRun(key.to_owned()))
    }

    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM runs ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn run_counts(&self, run_id: i64) -> Result<RunCounts, StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*) AS total,
                    COALESCE(SUM(j.state = 'pending'), 0) AS pending,
                    COALESCE(SUM(j.state = 'succeeded'), 0) AS succeeded,
                    COALESCE(SUM(j.state = 'failed'), 0) AS failed,
                    COALESCE(SUM(j.state = 'rejected'), 0) AS rejected,
                    COALESCE(SUM(r.cost_pico_usd), 0) AS cost_pico_usd,
                    COALESCE(SUM(r.job IS NOT NULL AND r.cost_pico_usd IS NULL), 0) AS unpriced,
                    COALESCE(SUM(r.input_tokens), 0) AS input_tokens,
                    COALESCE(SUM(r.output_tokens), 0) AS output_tokens,
                    COALESCE(SUM(r.cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
                    COALESCE(SUM(r.cache_read_input_tokens), 0) AS cache_read_input_tokens
             FROM jobs j LEFT JOIN results r ON r.job = j.id
             WHERE j.run_id = ?1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The models of a run's jobs with how many of them are still pending, rejected jobs
    /// (which have no model) left out.
    pub async fn run_models(&self, run_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT model, SUM(state = 'pending') FROM jobs
             WHERE run_id = ?1 AND state != 'rejected' GROUP BY model ORDER BY model",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Mean output tokens and result count per model over every run in the database.
    pub async fn mean_output_by_model(&self) -> Result<Vec<(String, f64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.model, AVG(r.output_tokens), COUNT(*) FROM results r
             JOIN jobs j ON j.id = r.job GROUP BY j.model",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Streams every job of a run with its result or last error, in input order, to `sink`.
    pub async fn export_rows<F>(&self, run_id: i64, mut sink: F) -> Result<u64, anyhow::Error>
    where
        F: FnMut(ExportRow) -> anyhow::Result<()>,
    {
        let mut rows = sqlx::query_as::<_, ExportRow>(
            "SELECT j.job_id, j.model, j.state, j.error, b.body AS response, b.note AS note,
                    a.error_type AS last_error_type, a.error_message AS last_error_message,
                    a.error_body AS last_error_body, a.http_status AS last_http_status
             FROM jobs j
             LEFT JOIN responses b ON b.job = j.id
             LEFT JOIN attempts a ON a.id =
                 (SELECT MAX(id) FROM attempts WHERE job = j.id AND kind = 'job')
             WHERE j.run_id = ?1
             ORDER BY j.id",
        )
        .bind(run_id)
        .fetch(&self.pool);
        let mut count = 0;
        while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
            sink(row)?;
            count += 1;
        }
        Ok(count)
    }
}

/// Inserts (or replaces) grade rows.
async fn insert_grades(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    grades: &[&GradeRecord],
) -> Result<(), StoreError> {
    const COLUMNS: usize = 11;
    let now = now_ms();
    for chunk in grades.chunks(MAX_VARIABLES / COLUMNS) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO grades (job, grader, kind, passed, reason, spec, judge_model,
                judge_input_tokens, judge_output_tokens, judge_cost_pico_usd, graded_at_ms) ",
        );
        builder.push_values(chunk, |mut row, g| {
            row.push_bind(g.job)
                .push_bind(g.grader)
                .push_bind(g.kind.clone())
                .push_bind(g.passed)
                .push_bind(g.reason.clone())
                .push_bind(g.spec.clone())
                .push_bind(g.judge_model.clone())
                .push_bind(g.judge_input_tokens)
                .push_bind(g.judge_output_tokens)
                .push_bind(g.judge_cost_pico_usd)
                .push_bind(now);
        });
        builder.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}
