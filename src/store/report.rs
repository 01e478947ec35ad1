//! The aggregate queries behind reports. Everything is summed or counted in SQL, in as few
//! passes over the rows as possible, so a report over a million results reads a few hundred
//! rows back, not a million.

use super::sql::{Dialect, Sql};
use super::{JobSpan, Store, StoreError};

/// How results are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Run,
    Tag(String),
}

impl GroupBy {
    /// What a query grouped by its rows' key groups by: the key's own SQL (column 2) only for
    /// a tag. A model's key is a function of the model, so grouping by `j.model` groups by the
    /// key without working out a string for each of a million rows and sorting them on it
    /// beside the model; a run's key is the same for every row (runs are grouped by `run_id`).
    fn key_term(&self) -> Option<&'static str> {
        match self {
            Self::Model => Some("j.model"),
            Self::Run => None,
            Self::Tag(_) => Some("2"),
        }
    }

    /// The SQL expression of the group key over `jobs j`. Runs are grouped by `run_id`, which
    /// every query returns, so their key is empty here.
    fn key(&self, sql: &mut Sql, dialect: Dialect) {
        match self {
            Self::Model => {
                sql.push("CASE WHEN j.model = '' THEN '(rejected)' ELSE j.model END");
            }
            Self::Run => {
                sql.push("''");
            }
            // The tag's name is bound as it is, whatever characters it holds, and compared
            // with the stored keys as text on both databases: a JSON path would need it quoted,
            // and SQLite and PostgreSQL read quotes and backslashes in paths differently.
            Self::Tag(name) => match dialect {
                Dialect::Sqlite => {
                    sql.push("COALESCE((SELECT t.value FROM json_each(j.tags) t WHERE t.key = ");
                    sql.push_bind(name.clone());
                    sql.push("), '(no tag)')");
                }
                Dialect::Postgres => {
                    sql.push("COALESCE(CAST(j.tags AS jsonb) ->> CAST(");
                    sql.push_bind(name.clone());
                    sql.push(" AS TEXT), '(no tag)')");
                }
            },
        }
    }
}

/// Sums over the jobs of one (run, group, model, stop reason) slice, split further by the total
/// input of requests above the long-context threshold so that a premium can be priced request
/// by request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub run_id: i64,
    pub key: String,
    pub model: String,
    /// NULL for jobs without a result.
    pub stop_reason: Option<String>,
    /// Total input of each request in this slice when above the threshold, else 0.
    pub long_total_input: i64,
    pub jobs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    pub pending: i64,
    /// Attempts over the jobs that were sent at least once.
    pub attempts: i64,
    pub sent_jobs: i64,
    pub results: i64,
    pub input_tokens: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
    pub cache_read: i64,
    pub output_tokens: i64,
    /// Sum of the costs stored with the results (pico-USD), priced ones only.
    pub stored_cost_pico_usd: i64,
    pub stored_unpriced: i64,
    /// Generation time (ms): latency less TTFT where streamed and the tokens after the first
    /// took 50 ms or more to come, else the whole latency (a stream that arrives at once has
    /// no span to divide by, and would show millions of tokens a second).
    pub generation_ms: i64,
    /// The results were answered through a batch (billed at half price).
    pub batch: bool,
}

/// What a run spent in one hundredth of the time from its first result to its last.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SpendPoint {
    pub run_id: i64,
    /// The end of the slice, in ms after the run's first result.
    pub at_ms: i64,
    pub cost_pico_usd: i64,
}

/// How many results of a (run, group) have one value of a measure.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ValueCount {
    pub run_id: i64,
    pub key: String,
    pub value: i64,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ErrorRow {
    pub run_id: i64,
    pub key: String,
    pub error_type: String,
    pub http_status: Option<i64>,
    pub count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GradingRow {
    pub run_id: i64,
    pub key: String,
    pub graded: i64,
    pub passed: i64,
    pub pending: i64,
    pub judge_cost_pico_usd: i64,
}

/// How many jobs (each model of a job its own) of a run's group have the same samples with a
/// verdict, the same number that passed every grader, and the same value of the clustering
/// tag.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobScoreRow {
    pub run_id: i64,
    pub key: String,
    pub cluster: Option<String>,
    pub samples: i64,
    pub passed: i64,
    pub jobs: i64,
}

/// What one model of a run sent against its rate limits.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct LimitUse {
    pub model: String,
    /// Uncached input and cache writes of the answers (as ITPM counts them).
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Job attempts, and those answered 429.
    pub requests: i64,
    pub refused: i64,
    /// From the first attempt's start to the last attempt's end (ms since the epoch).
    pub first_ms: i64,
    pub last_ms: i64,
}

/// How a (run, group, model)'s answers used the prompt cache.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CacheRow {
    pub run_id: i64,
    pub key: String,
    pub model: String,
    /// Distinct cache prefixes among the answers.
    pub prefixes: i64,
    /// Answers that wrote their prefix.
    pub writes: i64,
    /// Answers that waited for a warmer and then read the prefix instead of writing it.
    pub writes_avoided: i64,
    /// Cache-read tokens of those answers.
    pub warm_read_tokens: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GraderRow {
    pub run_id: i64,
    pub key: String,
    pub kind: String,
    pub graded: i64,
    pub passed: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    pub run: String,
    pub job_id: String,
    pub model: String,
    pub line: i64,
    pub state: String,
    pub error: Option<String>,
}

/// Which latency column to count.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    Latency,
    Ttft,
}

impl Store {
    /// Everything about jobs and results a report sums, in one pass.
    pub async fn report_rows(
        &self,
        runs: &[i64],
        rows: (i64, i64),
        by: &GroupBy,
        long_context_above: i64,
    ) -> Result<Vec<ReportRow>, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            return self
                .report_rows_folded(runs, rows, by, long_context_above)
                .await;
        }
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        b.push(
            " AS key, j.model AS model, r.stop_reason AS stop_reason,
              CASE WHEN r.input_tokens + r.cache_creation_input_tokens + r.cache_read_input_tokens > ",
        );
        b.push_bind(long_context_above);
        b.push(
            " THEN r.input_tokens + r.cache_creation_input_tokens + r.cache_read_input_tokens
                   ELSE 0 END AS long_total_input,
              COALESCE(r.batch, FALSE) AS batch,
              COUNT(*) AS jobs,
              COUNT(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
              COUNT(*) FILTER (WHERE j.state = 'failed') AS failed,
              COUNT(*) FILTER (WHERE j.state = 'rejected') AS rejected,
              COUNT(*) FILTER (WHERE j.state = 'pending') AS pending,
              CAST(SUM(j.attempts) AS BIGINT) AS attempts,
              COUNT(*) FILTER (WHERE j.attempts > 0) AS sent_jobs,
              COUNT(r.job) AS results,
              CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens,
              CAST(COALESCE(SUM(r.cache_write_5m_tokens), 0) AS BIGINT) AS cache_write_5m,
              CAST(COALESCE(SUM(r.cache_write_1h_tokens), 0) AS BIGINT) AS cache_write_1h,
              CAST(COALESCE(SUM(r.cache_read_input_tokens), 0) AS BIGINT) AS cache_read,
              CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens,
              CAST(COALESCE(SUM(r.cost_pico_usd), 0) AS BIGINT) AS stored_cost_pico_usd,
              COUNT(*) FILTER (WHERE r.job IS NOT NULL AND r.cost_pico_usd IS NULL)
                  AS stored_unpriced,
              CAST(COALESCE(SUM(CASE WHEN r.latency_ms - r.ttft_ms >= 50
                                     THEN r.latency_ms - r.ttft_ms
                                     ELSE r.latency_ms END), 0) AS BIGINT)
                  AS generation_ms
             FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id",
        );
        restrict(&mut b, runs, rows);
        // Column 3 is the model, which holds a model's key (see `key_term`).
        b.push(match by {
            GroupBy::Tag(_) => " GROUP BY 1, 2, 3, 4, 5, 6",
            GroupBy::Model | GroupBy::Run => " GROUP BY 1, 3, 4, 5, 6",
        });
        self.all(b).await
    }

    /// [`Store::report_rows`] on SQLite. SQLite groups by sorting every row (with every column
    /// summed) first, which was most of a report's time over a million results; here each row
    /// is added into its slice's row of a temporary table instead, found by its key among the
    /// few there are. The table lives in the transaction, which is rolled back (nothing of
    /// the store is written).
    async fn report_rows_folded(
        &self,
        runs: &[i64],
        rows: (i64, i64),
        by: &GroupBy,
        long_context_above: i64,
    ) -> Result<Vec<ReportRow>, StoreError> {
        const SUMS: [&str; 15] = [
            "jobs",
            "succeeded",
            "failed",
            "rejected",
            "pending",
            "attempts",
            "sent_jobs",
            "results",
            "input_tokens",
            "cache_write_5m",
            "cache_write_1h",
            "cache_read",
            "output_tokens",
            "stored_cost_pico_usd",
            "stored_unpriced",
        ];
        let mut tx = self.begin().await?;
        tx.execute(Sql::new("DROP TABLE IF EXISTS temp.report_sums"))
            .await?;
        // Keys untyped, so that they are read back as they were computed. A NULL stop reason
        // (no result) is kept apart from every stop reason by its own column: NULLs are never
        // equal in a key.
        let mut create = String::from(
            "CREATE TEMP TABLE report_sums (run_id NOT NULL, key NOT NULL, model NOT NULL,
                 stop_reason NOT NULL, no_stop_reason NOT NULL, long_total_input NOT NULL,
                 batch NOT NULL",
        );
        for column in SUMS.iter().chain(&["generation_ms"]) {
            create.push_str(&format!(", {column} INTEGER NOT NULL"));
        }
        create.push_str(
            ", PRIMARY KEY (run_id, key, model, stop_reason, no_stop_reason, long_total_input,
                            batch))",
        );
        tx.execute(Sql::new(create).once()).await?;
        let mut b = Sql::new("INSERT INTO temp.report_sums SELECT j.run_id, ");
        by.key(&mut b, Dialect::Sqlite);
        b.push(
            ", j.model, COALESCE(r.stop_reason, ''), r.stop_reason IS NULL,
              CASE WHEN r.input_tokens + r.cache_creation_input_tokens + r.cache_read_input_tokens > ",
        );
        b.push_bind(long_context_above);
        b.push(
            " THEN r.input_tokens + r.cache_creation_input_tokens + r.cache_read_input_tokens
                   ELSE 0 END,
              COALESCE(r.batch, FALSE),
              1, j.state = 'succeeded', j.state = 'failed', j.state = 'rejected',
              j.state = 'pending', j.attempts, j.attempts > 0, r.job IS NOT NULL,
              COALESCE(r.input_tokens, 0), COALESCE(r.cache_write_5m_tokens, 0),
              COALESCE(r.cache_write_1h_tokens, 0), COALESCE(r.cache_read_input_tokens, 0),
              COALESCE(r.output_tokens, 0), COALESCE(r.cost_pico_usd, 0),
              r.job IS NOT NULL AND r.cost_pico_usd IS NULL,
              COALESCE(CASE WHEN r.latency_ms - r.ttft_ms >= 50 THEN r.latency_ms - r.ttft_ms
                            ELSE r.latency_ms END, 0)
             FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id",
        );
        restrict(&mut b, runs, rows);
        b.push(
            " ON CONFLICT (run_id, key, model, stop_reason, no_stop_reason, long_total_input,
                           batch) DO UPDATE SET ",
        );
        for (i, column) in SUMS.iter().chain(&["generation_ms"]).enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.push(&format!("{column} = {column} + excluded.{column}"));
        }
        tx.execute(b.once()).await?;
        // A sum past an `i64` turns into a floating-point number in SQLite's arithmetic where
        // SUM() stops with "integer overflow": abs() of the least `i64` stops the same way.
        let mut select = String::from(
            "SELECT run_id, key, model,
                    CASE WHEN no_stop_reason THEN NULL ELSE stop_reason END AS stop_reason,
                    long_total_input, batch",
        );
        for column in SUMS.iter().chain(&["generation_ms"]) {
            select.push_str(&format!(
                ", CASE WHEN typeof({column}) = 'integer' THEN {column}
                        ELSE abs(length({column}) * 0 - 9223372036854775807 - 1) END AS {column}"
            ));
        }
        select.push_str(" FROM temp.report_sums");
        let rows = tx.all(Sql::new(select).once()).await?;
        // Dropping the transaction rolls it back, and the table with it.
        drop(tx);
        Ok(rows)
    }

    /// Counts of each distinct value of a measure per (run, group), in value order: exact
    /// percentiles and histograms follow from them without sorting a million rows.
    pub async fn report_values(
        &self,
        runs: &[i64],
        rows: (i64, i64),
        by: &GroupBy,
        measure: Measure,
    ) -> Result<Vec<ValueCount>, StoreError> {
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        match measure {
            Measure::Latency => {
                b.push(
                    " AS key, r.latency_ms AS value, COUNT(*) AS count
                     FROM jobs j NOT INDEXED JOIN results r ON r.job = j.id",
                );
                restrict(&mut b, runs, rows);
            }
            Measure::Ttft => {
                // Only streamed results have a TTFT; a partial index finds them.
                b.push(
                    " AS key, r.ttft_ms AS value, COUNT(*) AS count
                     FROM results r INDEXED BY results_streamed CROSS JOIN jobs j ON j.id = r.job
                     WHERE r.ttft_ms IS NOT NULL AND r.job BETWEEN ",
                );
                b.push_bind(rows.0);
                b.push(" AND ");
                b.push_bind(rows.1);
                b.push(" AND j.run_id IN (");
                b.push_list(runs);
                b.push(")");
            }
        }
        b.push(" GROUP BY 1, ");
        if let Some(key) = by.key_term() {
            b.push(key).push(", ");
        }
        b.push("3 ORDER BY 1, 2, 3");
        self.all(b).await
    }

    /// How many results of job rows `first..=last` have each latency, in value order, read
    /// from the latency index alone. For a run whose rows are one stretch (so that every
    /// result in it is the run's) and whose results all fall in one group, these are the
    /// counts [`Store::report_values`] gives, without joining each result to its job and
    /// sorting a million of them.
    pub async fn latency_counts(
        &self,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let index = match self.dialect() {
            Dialect::Sqlite => " INDEXED BY results_latency",
            Dialect::Postgres => "",
        };
        let sql = format!(
            "SELECT latency_ms, COUNT(*) FROM results{index} WHERE job BETWEEN $1 AND $2
             GROUP BY latency_ms ORDER BY latency_ms"
        );
        // Built of the two fixed fragments above only.
        self.all(Sql::new(sql).bind(first).bind(last)).await
    }

    /// Each run's spend over time: its results' costs in a hundred slices of the time from
    /// its first result to its last, in order. A run's jobs are nearly always one stretch of
    /// rows, and then its results are a range of `results`' row ids: no join. A run whose
    /// loading was resumed after another run was made has its rows in two stretches, and its
    /// results are picked by run.
    pub async fn spend_over_time(
        &self,
        spans: &[(i64, JobSpan)],
    ) -> Result<Vec<SpendPoint>, StoreError> {
        let mut points = Vec::new();
        for (run, span) in spans {
            let of_run = if span.contiguous {
                "r.job BETWEEN $2 AND $3"
            } else {
                "r.job BETWEEN $2 AND $3 AND r.job IN (SELECT id FROM jobs WHERE run_id = $1)"
            };
            // Grouped by the slice alone (its width, the same in every row, taken as an
            // aggregate): grouping by the span's bounds as well cost a tenth of a second more
            // over a million results.
            let sql = format!(
                "WITH span AS (SELECT MIN(r.completed_at_ms) AS lo, MAX(r.completed_at_ms) AS hi
                               FROM results r WHERE {of_run})
                 SELECT (r.completed_at_ms - s.lo) * 100 / (s.hi - s.lo + 1) AS slice,
                        MIN(s.hi - s.lo + 1) AS width,
                        CAST(COALESCE(SUM(r.cost_pico_usd), 0) AS BIGINT) AS cost
                 FROM results r, span s WHERE {of_run}
                 GROUP BY 1 ORDER BY 1"
            );
            // Built of the two fixed fragments above only.
            let rows: Vec<(i64, i64, i64)> = self
                .all(Sql::new(sql).bind(*run).bind(span.first).bind(span.last))
                .await?;
            points.extend(rows.into_iter().map(|(slice, width, cost)| SpendPoint {
                run_id: *run,
                at_ms: (slice + 1) * width / 100,
                cost_pico_usd: cost,
            }));
        }
        Ok(points)
    }

    /// Failed attempts of jobs per (run, group, error type, HTTP status); judges' failed
    /// attempts show as their pending grades' reasons instead.
    pub async fn report_errors(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<ErrorRow>, StoreError> {
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        // A partial index holds only the failed attempts.
        b.push(concat!(
            " AS key, a.error_type AS error_type, a.http_status AS http_status, COUNT(*) AS count
             FROM attempts a INDEXED BY attempts_failed CROSS JOIN jobs j ON j.id = a.job
             WHERE a.error_type IS NOT NULL AND ",
            answering!("a."),
            " AND j.run_id IN ("
        ));
        b.push_list(runs);
        b.push(") GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 5 DESC");
        self.all(b).await
    }

    /// Grading per (run, group): jobs graded, jobs whose every grader passed, jobs with a judge
    /// still pending, what judging cost, and the latencies of the passing answers.
    pub async fn report_grading(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<GradingRow>, StoreError> {
        // What judging cost: the verdicts, and those billed but not recorded (they came back
        // from a batch for a spec since replaced), which a failed attempt's row keeps.
        let mut b = Sql::new(concat!(
            "WITH g AS (SELECT job, COUNT(*) AS n, COUNT(*) FILTER (WHERE passed) AS ok,
                               COUNT(*) FILTER (WHERE passed IS NULL) AS waiting,
                               CAST(SUM(COALESCE(judge_cost_pico_usd, 0)) AS BIGINT)
                                   AS judge_cost
                        FROM grades GROUP BY job),
                  s AS (SELECT a.job, CAST(SUM(a.cost_pico_usd) AS BIGINT) AS cost ",
            billed_apart!("IN (")
        ));
        b.push_list(runs);
        b.push(
            ") GROUP BY a.job)
             SELECT j.run_id AS run_id, ",
        );
        by.key(&mut b, self.dialect());
        b.push(
            " AS key, COUNT(*) AS graded, COUNT(*) FILTER (WHERE g.ok = g.n) AS passed,
                    COUNT(*) FILTER (WHERE g.waiting > 0) AS pending,
                    CAST(SUM(g.judge_cost + COALESCE(s.cost, 0)) AS BIGINT) AS judge_cost_pico_usd
             FROM g LEFT JOIN s ON s.job = g.job CROSS JOIN jobs j ON j.id = g.job
             WHERE j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") GROUP BY 1, 2");
        self.all(b).await
    }

    /// Per (run, group, job, model): the samples (`--repeat`) with every verdict in and those
    /// that passed every grader, and the job's value of tag `cluster` when given; read back
    /// counted, one row per (run, group, cluster, samples, passed), so that a million jobs are
    /// a few rows and not a million.
    pub async fn report_job_scores(
        &self,
        runs: &[i64],
        by: &GroupBy,
        cluster: Option<&str>,
    ) -> Result<Vec<JobScoreRow>, StoreError> {
        let mut b = Sql::new(
            "WITH g AS (SELECT job, COUNT(*) AS n, COUNT(*) FILTER (WHERE passed) AS ok,
                               COUNT(*) FILTER (WHERE passed IS NULL) AS waiting
                        FROM grades GROUP BY job),
                  s AS (SELECT j.run_id AS run_id, ",
        );
        by.key(&mut b, self.dialect());
        b.push(" AS key, ");
        match (cluster, self.dialect()) {
            (None, _) => {
                b.push("CAST(NULL AS TEXT)");
            }
            (Some(name), Dialect::Sqlite) => {
                b.push("(SELECT CAST(t.value AS TEXT) FROM json_each(j.tags) t WHERE t.key = ");
                b.push_bind(name);
                b.push(")");
            }
            (Some(name), Dialect::Postgres) => {
                b.push("CAST(j.tags AS jsonb) ->> CAST(");
                b.push_bind(name);
                b.push(" AS TEXT)");
            }
        }
        b.push(
            " AS cluster, COUNT(*) AS samples, COUNT(*) FILTER (WHERE g.ok = g.n) AS passed
             FROM g CROSS JOIN jobs j ON j.id = g.job
             WHERE g.waiting = 0 AND j.run_id IN (",
        );
        b.push_list(runs);
        b.push(
            ") GROUP BY 1, 2, 3, j.job_id, j.model)
             SELECT run_id, key, cluster, samples, passed, COUNT(*) AS jobs
             FROM s GROUP BY 1, 2, 3, 4, 5",
        );
        self.all(b).await
    }

    /// Per (run, group, model): how answers used the prompt cache's prefixes. Distinct
    /// prefixes include the model, so counts over models add up. A partial index holds only
    /// the results with a prefix.
    pub async fn report_cache(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<CacheRow>, StoreError> {
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        b.push(
            " AS key, j.model AS model,
              COUNT(DISTINCT r.cache_prefix) AS prefixes,
              COUNT(*) FILTER (WHERE r.cache_prefix IS NOT NULL
                                     AND r.cache_creation_input_tokens > 0) AS writes,
              COUNT(*) FILTER (WHERE r.held_for_warmup AND r.cache_read_input_tokens > 0)
                  AS writes_avoided,
              CAST(COALESCE(SUM(CASE WHEN r.held_for_warmup THEN r.cache_read_input_tokens
                                     ELSE 0 END), 0) AS BIGINT) AS warm_read_tokens
             FROM results r INDEXED BY results_cached CROSS JOIN jobs j ON j.id = r.job
             WHERE r.cache_prefix IS NOT NULL AND j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") GROUP BY 1, 2, 3");
        self.all(b).await
    }

    /// Per model of a run: tokens answered, attempts, 429s and the time they span.
    pub async fn report_limit_use(&self, run_id: i64) -> Result<Vec<LimitUse>, StoreError> {
        let tokens: Vec<(String, i64, i64)> = self
            .all(
                Sql::new(
                    "SELECT j.model,
                            CAST(COALESCE(SUM(r.input_tokens + r.cache_creation_input_tokens), 0)
                                AS BIGINT),
                            CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT)
                     FROM jobs j JOIN results r ON r.job = j.id WHERE j.run_id = $1
                     GROUP BY j.model",
                )
                .bind(run_id),
            )
            .await?;
        let attempts: Vec<(String, i64, i64, i64, i64)> = self
            .all(
                // Messages calls only, not those `answering!` picks: a batch's items are not
                // held to the per-minute limits.
                Sql::new(
                    "SELECT j.model, COUNT(*), COUNT(*) FILTER (WHERE a.http_status = 429),
                            MIN(a.started_at_ms), MAX(a.started_at_ms + a.latency_ms)
                     FROM attempts a JOIN jobs j ON j.id = a.job
                     WHERE j.run_id = $1 AND a.kind = 'job' GROUP BY j.model",
                )
                .bind(run_id),
            )
            .await?;
        Ok(attempts
            .into_iter()
            .map(|(model, requests, refused, first_ms, last_ms)| {
                let (input_tokens, output_tokens) = tokens
                    .iter()
                    .find(|(m, _, _)| *m == model)
                    .map_or((0, 0), |(_, i, o)| (*i, *o));
                LimitUse {
                    model,
                    input_tokens,
                    output_tokens,
                    requests,
                    refused,
                    first_ms,
                    last_ms,
                }
            })
            .collect())
    }

    /// Per (run, group, grader kind): grades given and passed.
    pub async fn report_graders(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<GraderRow>, StoreError> {
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        b.push(
            " AS key, g.kind AS kind, COUNT(*) AS graded, COUNT(*) FILTER (WHERE g.passed) AS passed
             FROM grades g CROSS JOIN jobs j ON j.id = g.job WHERE j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
        self.all(b).await
    }

    /// Latency value counts of the answers that passed every grader.
    pub async fn report_passing_latency(
        &self,
        runs: &[i64],
        by: &GroupBy,
    ) -> Result<Vec<ValueCount>, StoreError> {
        let mut b = Sql::new("SELECT j.run_id AS run_id, ");
        by.key(&mut b, self.dialect());
        b.push(
            " AS key, r.latency_ms AS value, COUNT(*) AS count
             FROM (SELECT job FROM grades GROUP BY job HAVING COUNT(*) FILTER (WHERE passed) = COUNT(*)) p
             CROSS JOIN jobs j ON j.id = p.job CROSS JOIN results r ON r.job = p.job
             WHERE j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
        self.all(b).await
    }

    /// Every grade that failed, with its reason, for reading the failures.
    pub async fn report_failed_grades(&self, runs: &[i64]) -> Result<Vec<Failure>, StoreError> {
        let mut b = Sql::new(
            "SELECT ru.name AS run, j.job_id, j.model, j.line, 'failed ' || g.kind AS state,
                    g.reason AS error
             FROM grades g JOIN jobs j ON j.id = g.job JOIN runs ru ON ru.id = j.run_id
             WHERE NOT g.passed AND j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") ORDER BY j.run_id, j.id, g.grader");
        self.all(b).await
    }

    /// Every job that did not succeed, for reading the failures.
    pub async fn report_failures(&self, runs: &[i64]) -> Result<Vec<Failure>, StoreError> {
        let mut b = Sql::new(
            "SELECT ru.name AS run, j.job_id, j.model, j.line, j.state, j.error
             FROM jobs j JOIN runs ru ON ru.id = j.run_id
             WHERE j.state IN ('failed', 'rejected') AND j.run_id IN (",
        );
        b.push_list(runs);
        b.push(") ORDER BY j.run_id, j.id");
        self.all(b).await
    }
}

/// `WHERE` for `jobs j NOT INDEXED`: the runs' span of row ids (from [`Store::job_spans`]),
/// then the runs themselves.
fn restrict(b: &mut Sql, runs: &[i64], (first, last): (i64, i64)) {
    b.push(" WHERE j.id BETWEEN ");
    b.push_bind(first);
    b.push(" AND ");
    b.push_bind(last);
    b.push(" AND j.run_id IN (");
    b.push_list(runs);
    b.push(")");
}
