//! What `msgbatch view` reads: one page of a run's jobs under filters, one job whole (its
//! request, answer, grades and attempts), and a run's status as `status` says it.
//!
//! Every read here is bounded: a page of jobs is at most [`MAX_PAGE`] rows, a count of the
//! jobs a filter matches stops at a cap, and one job's attempts are at most
//! [`MAX_ATTEMPTS`]. Nothing here writes.

use serde::Serialize;

use super::jobs_view::{EXCERPT_CHARS, answer_excerpt, prompt_excerpt};
use super::sql::{Dialect, Sql};
use super::{GradeView, JobSpan, RunCounts, Store, StoreError};

/// The most jobs one page lists.
pub const MAX_PAGE: i64 = 200;

/// Row ids of a run read by one statement of the jobs without a value on PostgreSQL (see
/// `Store::read_in_order`).
const MISSING_WINDOW: i64 = 16_384;

/// The most attempts one job's page lists (a job is retried a handful of times; a judge's
/// attempts are recorded against the job too).
pub const MAX_ATTEMPTS: i64 = 100;

/// What the runs page shows of a run, as the store keeps it per run and model while the rows
/// are written (`run_tallies`, migrations 0015 and postgres/0008): read in a few rows whatever
/// the size of the run, and the counts of the rows as they are, a run in progress included.
#[derive(Debug, Clone, Default)]
pub struct RunTally {
    pub counts: RunCounts,
    /// The models of its jobs, rejected jobs (which have no model) left out, in order.
    pub models: Vec<String>,
    /// Its jobs, results and priced results by model, for counting the jobs of a list.
    by_model: Vec<(String, i64, i64, i64)>,
    /// `None` for a run without jobs.
    pub span: Option<JobSpan>,
}

impl RunTally {
    /// Of the run's jobs (of `model` only, with one), how many have a value to sort by `key`:
    /// a result (with a cost, for cost).
    fn valued(&self, model: Option<&str>, key: SortKey) -> i64 {
        self.by_model
            .iter()
            .filter(|(m, ..)| model.is_none_or(|model| model == m))
            .map(|&(_, _, results, priced)| {
                if key.column == "cost_pico_usd" {
                    priced
                } else {
                    results
                }
            })
            .sum()
    }

    /// Of the run's jobs (of `model` only, with one), how many there are.
    fn jobs(&self, model: Option<&str>) -> i64 {
        self.by_model
            .iter()
            .filter(|(m, ..)| model.is_none_or(|model| model == m))
            .map(|&(_, jobs, ..)| jobs)
            .sum()
    }
}

/// One row of `run_tallies` summed over its slots (PostgreSQL keeps one row per connection
/// that wrote).
#[derive(sqlx::FromRow)]
struct TallyRow {
    model: String,
    jobs: i64,
    pending: i64,
    succeeded: i64,
    failed: i64,
    rejected: i64,
    results: i64,
    cost_pico_usd: i64,
    unpriced: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_creation_input_tokens: i64,
    cache_read_input_tokens: i64,
    first_job: Option<i64>,
    last_job: Option<i64>,
}

/// How a job came out, as the job list filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered, and every grader with a verdict passed it (at least one has).
    Passed,
    /// Answered, and a grader failed it.
    Failed,
    /// Answered, with no verdict (no graders, or a judge still to answer).
    Answered,
    /// No answer after all its attempts.
    NoAnswer,
    /// Refused before sending (a bad record).
    Rejected,
    /// Not sent yet.
    Pending,
}

impl Outcome {
    pub const ALL: [Self; 6] = [
        Self::Passed,
        Self::Failed,
        Self::Answered,
        Self::NoAnswer,
        Self::Rejected,
        Self::Pending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Answered => "answered",
            Self::NoAnswer => "no_answer",
            Self::Rejected => "rejected",
            Self::Pending => "pending",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// The outcome of a job in `state` with this many passed and failed verdicts.
    pub fn of(state: &str, passed: i64, failed: i64) -> Self {
        match state {
            "succeeded" if failed > 0 => Self::Failed,
            "succeeded" if passed > 0 => Self::Passed,
            "succeeded" => Self::Answered,
            "failed" => Self::NoAnswer,
            "rejected" => Self::Rejected,
            _ => Self::Pending,
        }
    }
}

/// The order of a job list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSort {
    /// Input order.
    #[default]
    Input,
    CostDesc,
    CostAsc,
    LatencyDesc,
    LatencyAsc,
}

impl JobSort {
    pub const ALL: [Self; 5] = [
        Self::Input,
        Self::CostDesc,
        Self::CostAsc,
        Self::LatencyDesc,
        Self::LatencyAsc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::CostDesc => "cost_desc",
            Self::CostAsc => "cost_asc",
            Self::LatencyDesc => "latency_desc",
            Self::LatencyAsc => "latency_asc",
        }
    }

    /// The results column a sort orders by, the index that holds it in that order, and
    /// whether the order is descending; `None` for input order.
    fn key(self) -> Option<SortKey> {
        let (column, index) = match self {
            Self::Input => return None,
            Self::CostDesc | Self::CostAsc => ("cost_pico_usd", "results_cost"),
            Self::LatencyDesc | Self::LatencyAsc => ("latency_ms", "results_latency"),
        };
        Some(SortKey {
            column,
            index,
            descending: matches!(self, Self::CostDesc | Self::LatencyDesc),
            after: None,
        })
    }
}

/// A row of a job list that a page starts after or ends before, as its links name it: the
/// row's value of the list's sort key (`None` in input order, and for a job without a value,
/// which a sorted list shows after the others) and its row id. A page is found from it by a
/// seek on the list's index (`(value, id) > (v, i)`), however deep into the list it is,
/// where a page number has the database step over every row before it.
///
/// Written `ID` in input order, `VALUE.ID` or `none.ID` in a sorted list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cursor {
    pub value: Option<i64>,
    pub id: i64,
}

impl Cursor {
    /// The cursor of a listed row in a list sorted by `sort`.
    pub fn of(row: &JobListRow, sort: JobSort) -> Self {
        let value = match sort.key() {
            None => None,
            Some(key) if key.column == "cost_pico_usd" => row.cost_pico_usd,
            Some(_) => row.latency_ms,
        };
        Self { value, id: row.id }
    }

    /// The cursor as a URL writes it for a list sorted by `sort`.
    pub fn text(self, sort: JobSort) -> String {
        match (sort, self.value) {
            (JobSort::Input, _) => self.id.to_string(),
            (_, Some(value)) => format!("{value}.{}", self.id),
            (_, None) => format!("none.{}", self.id),
        }
    }

    /// A cursor as [`Cursor::text`] writes it for `sort`, or what is wrong with it: digits
    /// only (a value may start with `-`), each fitting 64 bits, and the form of that order.
    pub fn parse(text: &str, sort: JobSort) -> Result<Self, String> {
        fn number(text: &str, signed: bool) -> Option<i64> {
            let digits = if signed {
                text.strip_prefix('-').unwrap_or(text)
            } else {
                text
            };
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            text.parse().ok()
        }
        let row_id =
            |id: &str| number(id, false).ok_or_else(|| format!("`{id}` is not a row id (digits)"));
        if sort == JobSort::Input {
            if text.contains('.') {
                return Err(format!(
                    "`{text}` is a sorted list's cursor; in input order a cursor is a row id"
                ));
            }
            return Ok(Self {
                value: None,
                id: row_id(text)?,
            });
        }
        let Some((value, id)) = text.split_once('.') else {
            return Err(format!(
                "`{text}` is not a cursor of a list sorted by {}: VALUE.ID or none.ID",
                sort.as_str()
            ));
        };
        let value = match value {
            "none" => None,
            value => Some(number(value, true).ok_or_else(|| {
                format!("`{value}` is not a value of the sort (an integer, or none)")
            })?),
        };
        Ok(Self {
            value,
            id: row_id(id)?,
        })
    }
}

/// Of `span`, the rows after row `id` (`backwards`: before it); `None` when there are none.
fn span_past(span: &JobSpan, id: i64, backwards: bool) -> Option<JobSpan> {
    let part = if backwards {
        JobSpan {
            last: span.last.min(id.saturating_sub(1)),
            ..*span
        }
    } else {
        JobSpan {
            first: span.first.max(id.saturating_add(1)),
            ..*span
        }
    };
    (part.first <= part.last).then_some(JobSpan {
        contiguous: false,
        ..part
    })
}

/// How a sorted job list reads its jobs with a value: in the order of `index` (on
/// `results (column, job)`, migrations 0012 and postgres/0005), forwards or backwards, so that
/// a page reads as many index entries as it skips and shows, and sorts nothing. Jobs with the
/// same value follow in row order, reversed with the rest for a descending sort.
///
/// `after`, a (value, row id): only the rows past it in the order the statement reads them
/// (the key's, or the reverse backwards), found by a seek on the index rather than stepped to.
#[derive(Debug, Clone, Copy)]
struct SortKey {
    column: &'static str,
    index: &'static str,
    descending: bool,
    after: Option<(i64, i64)>,
}

/// Which rows of a job list a statement reads.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// Every job, in input order.
    Input,
    /// The jobs with the key's value, in its order.
    Valued(SortKey),
    /// The jobs without it, in input order.
    Missing(SortKey),
}

impl SortKey {
    fn order_by(self) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        format!("r.{} {direction}, r.job {direction}", self.column)
    }

    /// The jobs without a value: no result (or a cost without a price). They follow the
    /// others, in row order, whichever way the others go.
    fn missing(self) -> &'static str {
        if self.column == "cost_pico_usd" {
            " AND (r.job IS NULL OR r.cost_pico_usd IS NULL)"
        } else {
            " AND r.job IS NULL"
        }
    }
}

/// Which jobs of a run a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobFilter {
    pub model: Option<String>,
    pub outcome: Option<Outcome>,
    /// A grader kind (`contains`, `judge`, …): jobs it graded, or with `outcome = failed`,
    /// jobs it failed.
    pub grader: Option<String>,
    pub stop_reason: Option<String>,
    /// `name` (the job has the tag) or `name=value`.
    pub tag: Option<String>,
    /// Text in the request or the answer (case-insensitive for ASCII letters).
    pub text: Option<String>,
    /// One job by its `custom_id`.
    pub job_id: Option<String>,
    pub sort: JobSort,
}

impl JobFilter {
    /// Whether the filter narrows the list at all (its order aside).
    pub fn is_empty(&self) -> bool {
        self.model.is_none()
            && self.outcome.is_none()
            && self.grader.is_none()
            && self.stop_reason.is_none()
            && self.tag.is_none()
            && self.text.is_none()
            && self.job_id.is_none()
    }

    /// Whether the filter keeps every job of a run, or those of one model.
    fn narrows_by_model_at_most(&self) -> bool {
        Self {
            model: None,
            ..self.clone()
        }
        .is_empty()
    }

    /// Appends ` AND …` for each condition to a statement over `jobs j LEFT JOIN results r`.
    fn push_conditions(&self, sql: &mut Sql, dialect: Dialect) {
        if let Some(model) = &self.model {
            sql.push(" AND j.model = ").push_bind(model);
        }
        if let Some(job_id) = &self.job_id {
            sql.push(" AND j.job_id = ").push_bind(job_id);
        }
        if let Some(reason) = &self.stop_reason {
            sql.push(" AND r.stop_reason = ").push_bind(reason);
        }
        let verdict = |sql: &mut Sql, passed: bool, kind: Option<&String>| {
            sql.push(" EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = ")
                .push(if passed { "TRUE" } else { "FALSE" });
            if let Some(kind) = kind {
                sql.push(" AND g.kind = ").push_bind(kind);
            }
            sql.push(")");
        };
        match self.outcome {
            Some(Outcome::Passed) => {
                sql.push(" AND j.state = 'succeeded' AND");
                verdict(sql, true, self.grader.as_ref());
                sql.push(" AND NOT");
                verdict(sql, false, None);
            }
            Some(Outcome::Failed) => {
                sql.push(" AND j.state = 'succeeded' AND");
                verdict(sql, false, self.grader.as_ref());
            }
            Some(Outcome::Answered) => {
                sql.push(
                    " AND j.state = 'succeeded' AND NOT EXISTS (SELECT 1 FROM grades g \
                     WHERE g.job = j.id AND g.passed IS NOT NULL)",
                );
            }
            Some(Outcome::NoAnswer) => {
                sql.push(" AND j.state = 'failed'");
            }
            Some(Outcome::Rejected) => {
                sql.push(" AND j.state = 'rejected'");
            }
            Some(Outcome::Pending) => {
                sql.push(" AND j.state = 'pending'");
            }
            None => {}
        }
        if let Some(kind) = &self.grader
            && !matches!(self.outcome, Some(Outcome::Passed | Outcome::Failed))
        {
            sql.push(" AND EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.kind = ")
                .push_bind(kind)
                .push(")");
        }
        if let Some(tag) = &self.tag {
            let (name, value) = match tag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (tag.as_str(), None),
            };
            let value_of = match dialect {
                // A quoted label: the name is data, whatever characters it holds.
                Dialect::Sqlite => "json_extract(j.tags, '$.' || json_quote(",
                Dialect::Postgres => "(j.tags::jsonb ->> (",
            };
            sql.push(" AND ").push(value_of).push_bind(name).push("))");
            match value {
                Some(value) => {
                    // A number or a flag is matched by its text, as the page shows it.
                    sql.push(" IS NOT NULL AND CAST(")
                        .push(value_of)
                        .push_bind(name)
                        .push(")) AS TEXT) = ")
                        .push_bind(value);
                }
                None => {
                    sql.push(" IS NOT NULL");
                }
            }
        }
        if let Some(text) = &self.text {
            let pattern = format!("%{}%", like_escaped(text));
            match dialect {
                Dialect::Sqlite => {
                    sql.push(" AND (j.request LIKE ")
                        .push_bind(pattern.clone())
                        .push(
                            " ESCAPE '\\' OR EXISTS (SELECT 1 FROM responses b2 \
                             WHERE b2.job = j.id AND b2.body LIKE ",
                        )
                        .push_bind(pattern)
                        .push(" ESCAPE '\\'))");
                }
                // As SQLite's LIKE: case-insensitive for ASCII letters only (the "C" collation's
                // lower case), which is also twice as fast as the database's locale. The
                // answer is looked up job by job: as `EXISTS`, the planner may read every
                // answer of the store into a hash for one window of a search (four seconds on
                // a million results).
                Dialect::Postgres => {
                    sql.push(" AND ((j.request COLLATE \"C\") ILIKE ")
                        .push_bind(pattern.clone())
                        .push(" ESCAPE '\\' OR COALESCE((SELECT (b2.body COLLATE \"C\") ILIKE ")
                        .push_bind(pattern)
                        .push(" ESCAPE '\\' FROM responses b2 WHERE b2.job = j.id), FALSE))");
                }
            }
        }
    }
}

/// `text` with LIKE's wildcards (and its escape character) taken literally.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One job as a list shows it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct JobListRow {
    /// The job's row id: its page is `/runs/{run}/jobs/{id}`.
    pub id: i64,
    pub job_id: String,
    pub model: String,
    pub state: String,
    pub error: Option<String>,
    pub stop_reason: Option<String>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    pub output_tokens: Option<i64>,
    pub tags: Option<String>,
    /// The start of the last user turn's text.
    pub prompt: Option<String>,
    /// The start of the answer's first text block.
    pub answer: Option<String>,
    pub passed: i64,
    pub failed: i64,
}

impl JobListRow {
    pub fn outcome(&self) -> Outcome {
        Outcome::of(&self.state, self.passed, self.failed)
    }
}

/// One job whole: its stored row, result, answer, grades and attempts.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub job: JobRow,
    pub result: Option<ResultRow>,
    /// The answer as received (or as rebuilt from its stream), and what rebuilding it could not
    /// apply cleanly.
    pub response: Option<String>,
    pub response_note: Option<String>,
    pub grades: Vec<GradeRow>,
    pub attempts: Vec<AttemptRow>,
    /// Attempts beyond those listed.
    pub more_attempts: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub run_id: i64,
    pub job_id: String,
    pub model: String,
    pub line: i64,
    pub request: String,
    pub tags: Option<String>,
    pub expect: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ResultRow {
    pub message_id: Option<String>,
    pub response_model: Option<String>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub service_tier: Option<String>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub streamed: bool,
    pub cost_pico_usd: Option<i64>,
    pub completed_at_ms: i64,
    pub batch: bool,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct GradeRow {
    pub grader: i64,
    pub kind: String,
    pub passed: Option<bool>,
    pub reason: Option<String>,
    pub spec: String,
    pub judge_model: Option<String>,
    pub judge_cost_pico_usd: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AttemptRow {
    pub attempt: i64,
    /// `job`, `judge` or `count_tokens`.
    pub kind: String,
    pub started_at_ms: i64,
    pub queue_wait_ms: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub http_status: Option<i64>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub error_body: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub request_id: Option<String>,
}

impl Store {
    /// A run's [`RunTally`].
    pub async fn run_tally(&self, run_id: i64) -> Result<RunTally, StoreError> {
        let rows: Vec<TallyRow> = self
            .all(
                Sql::new(
                    "SELECT model, CAST(SUM(jobs) AS BIGINT) AS jobs,
                            CAST(SUM(pending) AS BIGINT) AS pending,
                            CAST(SUM(succeeded) AS BIGINT) AS succeeded,
                            CAST(SUM(failed) AS BIGINT) AS failed,
                            CAST(SUM(rejected) AS BIGINT) AS rejected,
                            CAST(SUM(results) AS BIGINT) AS results,
                            CAST(SUM(cost_pico_usd) AS BIGINT) AS cost_pico_usd,
                            CAST(SUM(unpriced) AS BIGINT) AS unpriced,
                            CAST(SUM(input_tokens) AS BIGINT) AS input_tokens,
                            CAST(SUM(output_tokens) AS BIGINT) AS output_tokens,
                            CAST(SUM(cache_creation_input_tokens) AS BIGINT)
                                AS cache_creation_input_tokens,
                            CAST(SUM(cache_read_input_tokens) AS BIGINT)
                                AS cache_read_input_tokens,
                            MIN(first_job) AS first_job, MAX(last_job) AS last_job
                     FROM run_tallies WHERE run_id = $1 GROUP BY model ORDER BY model",
                )
                .bind(run_id),
            )
            .await?;
        let mut tally = RunTally::default();
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for row in rows.into_iter().filter(|row| row.jobs > 0) {
            let counts = &mut tally.counts;
            counts.total += row.jobs;
            counts.pending += row.pending;
            counts.succeeded += row.succeeded;
            counts.failed += row.failed;
            counts.rejected += row.rejected;
            counts.unpriced += row.unpriced;
            // A sum past 2^63 (SQLite's tally went to REAL, which the cast saturates) is
            // refused as the sums over the rows are, never shown wrapped or saturated.
            for (sum, value) in [
                (&mut counts.cost_pico_usd, row.cost_pico_usd),
                (&mut counts.input_tokens, row.input_tokens),
                (&mut counts.output_tokens, row.output_tokens),
                (
                    &mut counts.cache_creation_input_tokens,
                    row.cache_creation_input_tokens,
                ),
                (
                    &mut counts.cache_read_input_tokens,
                    row.cache_read_input_tokens,
                ),
            ] {
                *sum = (value != i64::MAX && value != i64::MIN)
                    .then(|| sum.checked_add(value))
                    .flatten()
                    .ok_or_else(|| {
                        StoreError::Overflow(super::DbError(sqlx::Error::Protocol(
                            "a run's tally is past 2^63".to_owned(),
                        )))
                    })?;
            }
            first = first.min(row.first_job.unwrap_or(i64::MAX));
            last = last.max(row.last_job.unwrap_or(i64::MIN));
            if row.jobs > row.rejected {
                tally.models.push(row.model.clone());
            }
            tally
                .by_model
                .push((row.model, row.jobs, row.results, row.results - row.unpriced));
        }
        // The least and greatest row ids its jobs were given: a job deleted since leaves the
        // stretch as wide, and no longer contiguous, which reads as much and stays right.
        if tally.counts.total > 0 && first <= last {
            tally.span = Some(JobSpan {
                first,
                last,
                contiguous: last - first + 1 == tally.counts.total,
            });
        }
        Ok(tally)
    }

    /// One page of a run's jobs under `filter`: at most `limit` (up to [`MAX_PAGE`]) jobs
    /// after the first `offset`. `span` is the run's stretch of rows (its [`RunTally`]'s): in
    /// input order the rows are read in row order over that stretch, and a page stops reading
    /// once full; sorted by cost or latency, they are read in the order of the value's index
    /// ([`SortKey`]), the jobs without a value after the others. `tally`, the run's, says how
    /// many jobs have a value when the filter narrows by model at most, so that a page past
    /// them reads none of them.
    pub async fn job_page(
        &self,
        run_id: i64,
        span: &JobSpan,
        tally: Option<&RunTally>,
        filter: &JobFilter,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<JobListRow>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let offset = offset.max(0);
        // How many jobs the list holds, when the run's tally says.
        let known_jobs = tally
            .filter(|_| filter.narrows_by_model_at_most())
            .map(|tally| tally.jobs(filter.model.as_deref()));
        let rows: Vec<JobListRow> = match filter.sort.key() {
            // Every row of a contiguous stretch is one of the run's jobs: an unfiltered page
            // starts `offset` rows into it, found by row id rather than stepped to.
            None if filter.is_empty() && span.contiguous => {
                let from = JobSpan {
                    first: span.first.saturating_add(offset),
                    ..*span
                };
                self.all(self.page_sql(run_id, &from, filter, Part::Input, 0, limit, false))
                    .await?
            }
            None => {
                let total = known_jobs;
                self.read(run_id, span, filter, Part::Input, offset, limit, total)
                    .await?
            }
            Some(key) => {
                let valued = Part::Valued(key);
                let known = tally
                    .filter(|_| filter.narrows_by_model_at_most())
                    .map(|tally| tally.valued(filter.model.as_deref(), key));
                let mut rows = self
                    .read(run_id, span, filter, valued, offset, limit, known)
                    .await?;
                let shown = i64::try_from(rows.len()).unwrap_or(i64::MAX);
                if shown < limit {
                    // Past the jobs with a value: those without follow. How many were passed
                    // over is known unless this page starts past them all.
                    let passed = match known {
                        Some(count) => offset.min(count),
                        None if shown > 0 || offset == 0 => offset,
                        None => {
                            let count = self.page_sql(run_id, span, filter, valued, 0, 0, false);
                            let (count, _): (i64, i64) = self.one(count).await?;
                            offset.min(count)
                        }
                    };
                    let missing = Part::Missing(key);
                    let total = known_jobs.zip(known).map(|(jobs, valued)| jobs - valued);
                    rows.extend(
                        self.read(
                            run_id,
                            span,
                            filter,
                            missing,
                            offset - passed,
                            limit - shown,
                            total,
                        )
                        .await?,
                    );
                }
                rows
            }
        };
        Ok(self.excerpts_cut(rows))
    }

    /// The rows with their excerpts cut, as SQLite cuts them in SQL: PostgreSQL reads the
    /// whole request and answer.
    fn excerpts_cut(&self, mut rows: Vec<JobListRow>) -> Vec<JobListRow> {
        if self.dialect() == Dialect::Postgres {
            for row in &mut rows {
                row.prompt = row.prompt.as_deref().and_then(prompt_excerpt);
                row.answer = row.answer.as_deref().and_then(answer_excerpt);
            }
        }
        rows
    }

    /// The page of a run's jobs under `filter` just past `cursor`: the (at most `limit`, up
    /// to [`MAX_PAGE`]) jobs that follow it in the list's order, or `backwards`, the last of
    /// those before it; in the list's order either way. Each part of the list is read from
    /// the cursor on by a seek (on the row id, or on the sort's index), so that a page deep in
    /// a million jobs reads no more than one near the start.
    pub async fn job_page_at(
        &self,
        run_id: i64,
        span: &JobSpan,
        filter: &JobFilter,
        cursor: Cursor,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<JobListRow>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let left = |rows: &Vec<JobListRow>| limit - i64::try_from(rows.len()).unwrap_or(limit);
        let mut rows = match filter.sort.key() {
            None => match span_past(span, cursor.id, backwards) {
                Some(past) => {
                    self.read_in_order(run_id, &past, filter, Part::Input, 0, limit, backwards)
                        .await?
                }
                None => Vec::new(),
            },
            Some(key) => {
                let valued = |after| Part::Valued(SortKey { after, ..key });
                let missing = Part::Missing(key);
                match cursor.value {
                    Some(value) => {
                        let seek = valued(Some((value, cursor.id)));
                        let mut rows = self
                            .read_in_order(run_id, span, filter, seek, 0, limit, backwards)
                            .await?;
                        // Past the jobs with a value, those without follow from their first.
                        if !backwards && left(&rows) > 0 {
                            let more = self
                                .read_in_order(run_id, span, filter, missing, 0, left(&rows), false)
                                .await?;
                            rows.extend(more);
                        }
                        rows
                    }
                    None => {
                        let mut rows = match span_past(span, cursor.id, backwards) {
                            Some(past) => {
                                self.read_in_order(
                                    run_id, &past, filter, missing, 0, limit, backwards,
                                )
                                .await?
                            }
                            None => Vec::new(),
                        };
                        // Before the jobs without a value, the last of those with one.
                        if backwards && left(&rows) > 0 {
                            let more = self
                                .read_in_order(
                                    run_id,
                                    span,
                                    filter,
                                    valued(None),
                                    0,
                                    left(&rows),
                                    true,
                                )
                                .await?;
                            rows.extend(more);
                        }
                        rows
                    }
                }
            }
        };
        if backwards {
            rows.reverse();
        }
        Ok(self.excerpts_cut(rows))
    }

    /// At most `limit` rows of `part` of a list after its first `offset`. When the part's
    /// `total` is known, a page nearer its end than its start is read from the end, backwards:
    /// a page reads as many rows as lie between it and the nearer end.
    #[expect(clippy::too_many_arguments, reason = "one page of one part of a list")]
    async fn read(
        &self,
        run_id: i64,
        span: &JobSpan,
        filter: &JobFilter,
        part: Part,
        offset: i64,
        limit: i64,
        total: Option<i64>,
    ) -> Result<Vec<JobListRow>, StoreError> {
        let Some(total) = total else {
            return self
                .read_in_order(run_id, span, filter, part, offset, limit, false)
                .await;
        };
        if offset >= total {
            return Ok(Vec::new());
        }
        let take = limit.min(total - offset);
        let after = total - offset - take;
        if after >= offset {
            return self
                .read_in_order(run_id, span, filter, part, offset, limit, false)
                .await;
        }
        let mut rows = self
            .read_in_order(run_id, span, filter, part, after, take, true)
            .await?;
        rows.reverse();
        Ok(rows)
    }

    /// At most `limit` rows of `part` after its first `offset`, in its order or `backwards`.
    ///
    /// On PostgreSQL the jobs without a value are read a [`MISSING_WINDOW`] of row ids at a
    /// time from the nearer end of the span, each stretch counted and passed over whole while
    /// the offset is past it, as SQLite reads them by row id: the planner, which cannot know
    /// how few rows of a run lack a result, otherwise joins every job of the run to every
    /// result before keeping the last page's 50 (two seconds on a million results).
    #[expect(clippy::too_many_arguments, reason = "one page of one part of a list")]
    async fn read_in_order(
        &self,
        run_id: i64,
        span: &JobSpan,
        filter: &JobFilter,
        part: Part,
        offset: i64,
        limit: i64,
        backwards: bool,
    ) -> Result<Vec<JobListRow>, StoreError> {
        if self.dialect() != Dialect::Postgres || !matches!(part, Part::Missing(_)) {
            return self
                .all(self.page_sql(run_id, span, filter, part, offset, limit, backwards))
                .await;
        }
        let mut rows: Vec<JobListRow> = Vec::new();
        let mut skip = offset;
        let mut edge = if backwards { span.last } else { span.first };
        loop {
            let window = if backwards {
                JobSpan {
                    first: edge.saturating_sub(MISSING_WINDOW - 1).max(span.first),
                    last: edge,
                    ..*span
                }
            } else {
                JobSpan {
                    first: edge,
                    last: edge.saturating_add(MISSING_WINDOW - 1).min(span.last),
                    ..*span
                }
            };
            if window.first > window.last {
                break;
            }
            let last_window = if backwards {
                window.first == span.first
            } else {
                window.last == span.last
            };
            edge = if backwards {
                window.first.saturating_sub(1)
            } else {
                window.last.saturating_add(1)
            };
            if skip > 0 {
                let count = self.page_sql(run_id, &window, filter, part, 0, 0, false);
                let (count, _): (i64, i64) = self.one(count).await?;
                if count <= skip {
                    skip -= count;
                    if last_window {
                        break;
                    }
                    continue;
                }
            }
            let wanted = limit - i64::try_from(rows.len()).unwrap_or(i64::MAX);
            rows.extend(
                self.all::<JobListRow>(
                    self.page_sql(run_id, &window, filter, part, skip, wanted, backwards),
                )
                .await?,
            );
            skip = 0;
            if last_window || i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit {
                break;
            }
        }
        Ok(rows)
    }

    /// The statement of [`Store::job_page`] for one `part` of a list, in its order or
    /// `backwards`; `limit` 0 counts the part's rows instead.
    #[expect(clippy::too_many_arguments, reason = "one page of one part of a list")]
    fn page_sql(
        &self,
        run_id: i64,
        span: &JobSpan,
        filter: &JobFilter,
        part: Part,
        offset: i64,
        limit: i64,
        backwards: bool,
    ) -> Sql {
        let dialect = self.dialect();
        // SQLite cuts the excerpts in SQL; PostgreSQL has no SQLite JSON functions, so they
        // are cut here from the page's rows.
        let excerpts = match dialect {
            Dialect::Sqlite => {
                "CASE WHEN json_valid(j.request) THEN substr(
                    CASE json_type(j.request, '$.messages[#-1].content')
                        WHEN 'text' THEN json_extract(j.request, '$.messages[#-1].content')
                        WHEN 'array' THEN (
                            SELECT group_concat(json_extract(e.value, '$.text'), ' ')
                            FROM json_each(j.request, '$.messages[#-1].content') e
                            WHERE json_extract(e.value, '$.type') = 'text')
                    END, 1, $2)
                 END AS prompt,
                 (SELECT CASE WHEN json_valid(b.body)
                              THEN substr(json_extract(b.body, '$.content[0].text'), 1, $2) END
                  FROM responses b WHERE b.job = j.id) AS answer"
            }
            Dialect::Postgres => {
                "CASE WHEN $2 > 0 THEN j.request END AS prompt,
                 (SELECT b.body FROM responses b WHERE b.job = j.id) AS answer"
            }
        };
        let columns = if limit == 0 {
            // $2 is bound all the same: the numbering stays that of a page.
            "COUNT(*), $2".to_owned()
        } else {
            format!(
                "j.id, j.job_id, j.model, j.state, j.error, r.stop_reason, r.cost_pico_usd,
                 r.latency_ms, r.output_tokens, j.tags, {excerpts},
                 (SELECT COUNT(*) FROM grades g WHERE g.job = j.id AND g.passed = TRUE)
                     AS passed,
                 (SELECT COUNT(*) FROM grades g WHERE g.job = j.id AND g.passed = FALSE)
                     AS failed"
            )
        };
        // The jobs with a value are read from its index, the span tested on each entry before
        // its job is read; the others (and input order) by row id over the span.
        let from = match part {
            Part::Valued(key) => format!(
                "FROM results r INDEXED BY {} CROSS JOIN jobs j ON j.id = r.job
                 WHERE r.{} IS NOT NULL AND r.job BETWEEN $3 AND $4 AND j.run_id = $1",
                key.index, key.column
            ),
            // PostgreSQL is told the results' stretch too, which it does not infer from the
            // join: a join over a window of rows reads that window's results, not all of them.
            Part::Input | Part::Missing(_) if dialect == Dialect::Postgres => {
                "FROM jobs j LEFT JOIN results r ON r.job = j.id AND r.job BETWEEN $3 AND $4
                 WHERE j.run_id = $1 AND j.id BETWEEN $3 AND $4"
                    .to_owned()
            }
            Part::Input | Part::Missing(_) => {
                "FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
                 WHERE j.run_id = $1 AND j.id BETWEEN $3 AND $4"
                    .to_owned()
            }
        };
        // PostgreSQL computes a row's columns before OFFSET skips it: there the page's rows
        // are chosen first, by id, and only they are read whole (page 100 of a list read the
        // answers and grades of the 4,950 jobs before it too). SQLite skips before.
        let chosen_first = dialect == Dialect::Postgres && limit > 0;
        let select = if chosen_first {
            format!("SELECT {columns} FROM (SELECT j.id AS page_id {from}")
        } else {
            format!("SELECT {columns} {from}")
        };
        let mut sql = Sql::new(select)
            .bind(run_id)
            .bind(EXCERPT_CHARS)
            .bind(span.first)
            .bind(span.last)
            .once();
        if let Part::Missing(key) = part {
            sql.push(key.missing());
        }
        if let Part::Valued(key) = part
            && let Some((value, id)) = key.after
        {
            // A row value, which both databases compare as a seek on the index's
            // `(value, row id)` order (SQLite's index ends with the row id).
            let past = if key.descending != backwards {
                "<"
            } else {
                ">"
            };
            sql.push(&format!(" AND (r.{}, r.job) {past} (", key.column))
                .push_bind(value)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        filter.push_conditions(&mut sql, dialect);
        if limit == 0 {
            return sql;
        }
        let order = match part {
            Part::Valued(key) => SortKey {
                descending: key.descending != backwards,
                ..key
            }
            .order_by(),
            Part::Input | Part::Missing(_) if backwards => "j.id DESC".to_owned(),
            Part::Input | Part::Missing(_) => "j.id".to_owned(),
        };
        sql.push(" ORDER BY ")
            .push(&order)
            .push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        if chosen_first {
            sql.push(
                ") AS page JOIN jobs j ON j.id = page.page_id LEFT JOIN results r ON r.job = j.id
                 ORDER BY ",
            )
            .push(&order);
        }
        sql
    }

    /// How many of a run's jobs `filter` matches, counting no further than `cap`; `span` as
    /// for [`Store::job_page`].
    pub async fn job_count(
        &self,
        run_id: i64,
        span: &JobSpan,
        filter: &JobFilter,
        cap: i64,
    ) -> Result<i64, StoreError> {
        let mut sql = Sql::new(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j NOT INDEXED
             LEFT JOIN results r ON r.job = j.id
             WHERE j.run_id = $1 AND j.id BETWEEN $2 AND $3",
        )
        .bind(run_id)
        .bind(span.first)
        .bind(span.last);
        filter.push_conditions(&mut sql, self.dialect());
        sql.push(" LIMIT ")
            .push_bind(cap.max(0))
            .push(") AS matched");
        self.value(sql.once()).await
    }

    /// One job of a run by its row id, whole; `None` when the run has no such job.
    pub async fn job_detail(&self, run_id: i64, id: i64) -> Result<Option<JobDetail>, StoreError> {
        let Some(job) = self
            .optional::<JobRow>(
                Sql::new(
                    "SELECT id, run_id, job_id, model, line, request, tags, expect, state,
                            attempts, error
                     FROM jobs WHERE id = $1 AND run_id = $2",
                )
                .bind(id)
                .bind(run_id),
            )
            .await?
        else {
            return Ok(None);
        };
        let result = self
            .optional::<ResultRow>(
                Sql::new(
                    "SELECT message_id, response_model, stop_reason, stop_sequence, input_tokens,
                            output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
                            service_tier, latency_ms, ttft_ms, streamed, cost_pico_usd,
                            completed_at_ms, batch
                     FROM results WHERE job = $1",
                )
                .bind(id),
            )
            .await?;
        let response: Option<(String, Option<String>)> = self
            .optional(Sql::new("SELECT body, note FROM responses WHERE job = $1").bind(id))
            .await?;
        let grades = self
            .all(
                Sql::new(
                    "SELECT grader, kind, passed, reason, spec, judge_model, judge_cost_pico_usd
                     FROM grades WHERE job = $1 ORDER BY grader",
                )
                .bind(id),
            )
            .await?;
        let attempts = self
            .all(
                Sql::new(
                    "SELECT attempt, kind, started_at_ms, queue_wait_ms, latency_ms, ttft_ms,
                            http_status, error_type, error_message, error_body, retry_after_ms,
                            request_id
                     FROM attempts WHERE job = $1 ORDER BY id LIMIT $2",
                )
                .bind(id)
                .bind(MAX_ATTEMPTS),
            )
            .await?;
        let total: i64 = self
            .value(Sql::new("SELECT COUNT(*) FROM attempts WHERE job = $1").bind(id))
            .await?;
        let (response, response_note) = response.map_or((None, None), |(b, n)| (Some(b), n));
        Ok(Some(JobDetail {
            more_attempts: (total - i64::try_from(attempts.len()).unwrap_or(0)).max(0),
            job,
            result,
            response,
            response_note,
            grades,
            attempts,
        }))
    }

    /// The grader kinds of a run's jobs, for the job list's filter.
    pub async fn grader_kinds(&self, run_id: i64) -> Result<Vec<String>, StoreError> {
        let kinds: Vec<(String,)> = self
            .all(
                Sql::new(
                    "SELECT DISTINCT g.kind FROM grades g JOIN jobs j ON j.id = g.job
                     WHERE j.run_id = $1 ORDER BY g.kind",
                )
                .bind(run_id),
            )
            .await?;
        Ok(kinds.into_iter().map(|(k,)| k).collect())
    }

    /// The grades of the listed jobs, for the job list's grade column.
    pub async fn grades_of(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<GradeView>>, StoreError> {
        let mut by_job: std::collections::HashMap<i64, Vec<GradeView>> =
            std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(by_job);
        }
        let mut sql =
            Sql::new("SELECT job, grader, kind, passed, reason FROM grades WHERE job IN (");
        sql.push_list(ids).push(") ORDER BY job, grader");
        for row in self.all::<GradeView>(sql.once()).await? {
            by_job.entry(row.job).or_default().push(row);
        }
        Ok(by_job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's figures counted over its rows, as `status` counts them.
    async fn counted(
        store: &Store,
        run: i64,
    ) -> (RunCounts, Vec<String>, Option<(i64, i64, bool)>) {
        let models = store.run_models(run).await.unwrap();
        let span = store.job_span(run).await.unwrap();
        (
            store.run_counts(run).await.unwrap(),
            models.into_iter().map(|(m, _)| m).collect(),
            span.map(|s| (s.first, s.last, s.contiguous)),
        )
    }

    async fn tallied(
        store: &Store,
        run: i64,
    ) -> (RunCounts, Vec<String>, Option<(i64, i64, bool)>) {
        let tally = store.run_tally(run).await.unwrap();
        (
            tally.counts,
            tally.models,
            tally.span.map(|s| (s.first, s.last, s.contiguous)),
        )
    }

    async fn assert_tallied(store: &Store, runs: &[i64], when: &str) {
        for &run in runs {
            let (counts, models, span) = counted(store, run).await;
            let (t_counts, t_models, t_span) = tallied(store, run).await;
            assert_eq!(
                format!("{t_counts:?} {t_models:?} {t_span:?}"),
                format!("{counts:?} {models:?} {span:?}"),
                "run {run}, {when}"
            );
        }
    }

    async fn exec(store: &Store, statements: &[&'static str]) {
        for statement in statements {
            store.execute(Sql::new(*statement)).await.unwrap();
        }
    }

    /// Rows of every kind for runs 1 and 2 (run 2 on two models, one unpriced result, a
    /// rejected job), written as an older msgbatch wrote them.
    const ROWS: &[&str] = &[
        "INSERT INTO runs (id, name, created_at_ms, status, input_path, input_sha256,
                           gateway_name, base_url, messages_path, settings)
         VALUES (1, 'one', 0, 'completed', 'a.jsonl', '', 'mock', 'http://m', '/v1/messages', '{}'),
                (2, 'two', 0, 'running', 'b.jsonl', '', 'mock', 'http://m', '/v1/messages', '{}')",
        "INSERT INTO jobs (id, run_id, job_id, model, line, request, request_sha256, state)
         VALUES (1, 1, 'q1', 'a', 1, '{}', '', 'succeeded'),
                (2, 1, 'q2', 'a', 2, '{}', '', 'failed'),
                (3, 2, 'q1', 'a', 1, '{}', '', 'succeeded'),
                (4, 2, 'q1', 'b', 1, '{}', '', 'succeeded'),
                (5, 2, 'q2', '', 2, '{}', '', 'rejected'),
                (6, 2, 'q3', 'b', 3, '{}', '', 'pending')",
        "INSERT INTO results (job, input_tokens, output_tokens, cache_creation_input_tokens,
                              cache_write_5m_tokens, cache_write_1h_tokens,
                              cache_read_input_tokens, latency_ms, streamed, cost_pico_usd,
                              completed_at_ms)
         VALUES (1, 10, 20, 3, 0, 0, 4, 5, 0, 700, 0), (3, 11, 21, 0, 0, 0, 0, 7, 0, 900, 0),
                (4, 12, 22, 0, 0, 0, 5, 9, 0, NULL, 0)",
    ];

    #[tokio::test]
    async fn the_tallies_are_the_counts_of_the_rows_from_the_migration_on_through_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // A store made before the tallies, with runs in it: the migration counts them.
        let pool = super::super::open_sqlite(&path).await.unwrap();
        sqlx::migrate!().run_to(13, &pool).await.unwrap();
        for statement in ROWS {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let store = Store::open(&path).await.unwrap();
        assert_tallied(&store, &[1, 2, 3], "after the migration").await;
        let before = store.run_tally(2).await.unwrap();
        assert_eq!(before.counts.total, 4);
        assert_eq!(before.counts.unpriced, 1);
        assert_eq!(before.models, ["a", "b"]);

        // Jobs added, answered, failed, retried; a result's figures changed; a result and a
        // job deleted by themselves; a run deleted whole.
        let job = |job_id: &str, model: &str, state| super::super::NewJob {
            job_id: job_id.to_owned(),
            model: model.to_owned(),
            sample: 0,
            line: 9,
            request: "{}".to_owned(),
            request_sha256: String::new(),
            tags: None,
            expect: None,
            state,
            error: None,
            params_max_tokens: None,
        };
        let pending = super::super::JobState::Pending;
        store
            .insert_jobs(2, vec![job("q4", "b", pending), job("q5", "c", pending)])
            .await
            .unwrap();
        assert_tallied(&store, &[1, 2], "jobs added").await;
        exec(
            &store,
            &[
                "UPDATE jobs SET state = 'succeeded' WHERE id = 6",
                "INSERT INTO results (job, input_tokens, output_tokens,
                     cache_creation_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
                     cache_read_input_tokens, latency_ms, streamed, cost_pico_usd,
                     completed_at_ms)
                 VALUES (6, 1, 2, 3, 0, 0, 4, 5, 0, 60, 0)",
                "UPDATE jobs SET state = 'failed' WHERE id = 7",
            ],
        )
        .await;
        assert_tallied(&store, &[1, 2], "jobs answered and failed").await;
        assert_eq!(store.reset_failed(1).await.unwrap(), 1);
        assert_tallied(&store, &[1, 2], "failed jobs set pending again").await;
        exec(
            &store,
            &["UPDATE results SET cost_pico_usd = 5, output_tokens = 1 WHERE job = 4"],
        )
        .await;
        assert_tallied(&store, &[1, 2], "a result changed").await;
        exec(&store, &["DELETE FROM results WHERE job = 3"]).await;
        assert_tallied(&store, &[1, 2], "a result deleted").await;
        exec(&store, &["DELETE FROM jobs WHERE id = 4"]).await;
        assert_tallied(&store, &[1, 2], "a job deleted with its result").await;
        let moved = store
            .execute(Sql::new("UPDATE jobs SET model = 'z' WHERE id = 1"))
            .await;
        assert!(moved.is_err(), "a job keeps its model");
        store.delete_run(1).await.unwrap();
        assert_tallied(&store, &[1, 2], "a run deleted").await;
        let left: i64 = store
            .value(Sql::new(
                "SELECT COUNT(*) FROM run_tallies WHERE run_id = 1",
            ))
            .await
            .unwrap();
        assert_eq!(left, 0);
        store.close().await;
    }

    /// The query plan of the job list's statement for `part`, one step a line.
    async fn plan(store: &Store, filter: &JobFilter, part: Part, backwards: bool) -> String {
        let span = JobSpan {
            first: 1,
            last: 1_000_000,
            contiguous: true,
        };
        let sql = store
            .page_sql(1, &span, filter, part, 100, 51, backwards)
            .explained();
        let steps: Vec<(i64, i64, i64, String)> = store.all(sql).await.unwrap();
        steps
            .into_iter()
            .map(|(.., step)| step)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_page_past_a_cursor_seeks_the_sort_s_index_to_it_rather_than_scanning_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        for sort in [
            JobSort::CostDesc,
            JobSort::CostAsc,
            JobSort::LatencyDesc,
            JobSort::LatencyAsc,
        ] {
            let key = SortKey {
                after: Some((5_000, 77)),
                ..sort.key().unwrap()
            };
            for model in [None, Some("claude-haiku-4-5".to_owned())] {
                let filter = JobFilter {
                    model,
                    sort,
                    ..JobFilter::default()
                };
                for backwards in [false, true] {
                    let valued = plan(&store, &filter, Part::Valued(key), backwards).await;
                    let first = valued.lines().next().unwrap_or_default();
                    assert!(
                        first.starts_with(&format!("SEARCH r USING INDEX {} (", key.index))
                            && first.contains(key.column),
                        "{sort:?}: {valued}"
                    );
                    assert!(!valued.contains("TEMP B-TREE"), "{sort:?}: {valued}");
                }
            }
        }
    }

    /// Each model's tally of a run as stored, and as counted over its rows: (model, jobs,
    /// pending, succeeded, failed, rejected, first job, last job).
    async fn per_model(
        store: &Store,
        run: i64,
    ) -> [Vec<(String, i64, i64, i64, i64, i64, i64, i64)>; 2] {
        let tallied = store
            .all(
                Sql::new(
                    "SELECT model, jobs, pending, succeeded, failed, rejected, first_job, last_job
                     FROM run_tallies WHERE run_id = $1 ORDER BY model",
                )
                .bind(run),
            )
            .await
            .unwrap();
        let counted = store
            .all(
                Sql::new(
                    "SELECT model, COUNT(*), COUNT(*) FILTER (WHERE state = 'pending'),
                            COUNT(*) FILTER (WHERE state = 'succeeded'),
                            COUNT(*) FILTER (WHERE state = 'failed'),
                            COUNT(*) FILTER (WHERE state = 'rejected'), MIN(id), MAX(id)
                     FROM jobs WHERE run_id = $1 GROUP BY model ORDER BY model",
                )
                .bind(run),
            )
            .await
            .unwrap();
        [tallied, counted]
    }

    #[tokio::test]
    async fn jobs_stored_many_statements_at_a_time_are_tallied_by_model_and_state_as_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        let mut runs = Vec::new();
        for name in ["one", "two"] {
            let run = super::super::NewRun {
                name: name.to_owned(),
                input_path: "jobs.jsonl".to_owned(),
                gateway_name: "mock".to_owned(),
                base_url: "mock://".to_owned(),
                messages_path: "/v1/messages".to_owned(),
                settings_json: "{}".to_owned(),
                via: "batches",
                checked: None,
            };
            runs.push(store.create_run(&run).await.unwrap());
        }
        let states = [
            super::super::JobState::Pending,
            super::super::JobState::Succeeded,
            super::super::JobState::Failed,
            super::super::JobState::Rejected,
        ];
        let jobs = |from: u64, to: u64| {
            (from..to)
                .map(|line| super::super::NewJob {
                    job_id: format!("q{line}"),
                    // Models interleaved, and one that only a few rows have.
                    model: if line % 7 == 0 {
                        "c"
                    } else if line % 2 == 1 {
                        "b"
                    } else {
                        "a"
                    }
                    .to_owned(),
                    sample: 0,
                    line,
                    request: "{}".to_owned(),
                    request_sha256: String::new(),
                    tags: None,
                    expect: None,
                    state: states[usize::try_from(line % 4).unwrap()],
                    error: None,
                    params_max_tokens: None,
                })
                .collect::<Vec<_>>()
        };
        // Several statements a call, the runs' rows interleaved between calls.
        store.insert_jobs(runs[0], jobs(0, 700)).await.unwrap();
        store.insert_jobs(runs[1], jobs(0, 300)).await.unwrap();
        store.insert_jobs(runs[0], jobs(700, 1_000)).await.unwrap();
        for &run in &runs {
            let [tallied, counted] = per_model(&store, run).await;
            assert_eq!(tallied, counted, "run {run}");
            assert_eq!(tallied.len(), 3, "{tallied:?}");
        }
        assert_tallied(&store, &runs, "jobs added").await;

        // A row with the greatest id there is (written by hand, and counted by nothing): SQLite
        // gives the rows after it ids at random, and the run is counted again from its rows,
        // that one included.
        exec(
            &store,
            &[
                "INSERT INTO jobs (id, run_id, job_id, model, line, request, request_sha256, state)
               VALUES (9223372036854775807, 2, 'last', 'a', 5000, '{}', '', 'pending')",
            ],
        )
        .await;
        store.insert_jobs(runs[1], jobs(300, 600)).await.unwrap();
        let [tallied, counted] = per_model(&store, runs[1]).await;
        assert_eq!(tallied, counted);
        assert_tallied(&store, &runs, "jobs added after the greatest id").await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_store_whose_sums_pass_2_63_opens_and_its_tally_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // Stored before impossible usage was refused: run 2's model `a` holds two results of
        // 9e18 pico-USD each, which no 64-bit sum holds.
        let pool = super::super::open_sqlite(&path).await.unwrap();
        sqlx::migrate!().run_to(13, &pool).await.unwrap();
        for statement in ROWS {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO jobs (id, run_id, job_id, model, line, request, request_sha256, state)
             VALUES (7, 2, 'q7', 'a', 7, '{}', '', 'succeeded')",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO results (job, input_tokens, output_tokens, cache_creation_input_tokens,
                                  cache_write_5m_tokens, cache_write_1h_tokens,
                                  cache_read_input_tokens, latency_ms, streamed, cost_pico_usd,
                                  completed_at_ms)
             VALUES (7, 1, 1, 0, 0, 0, 0, 1, 0, 9000000000000000000, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("UPDATE results SET cost_pico_usd = 9000000000000000000 WHERE job = 3")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        // The migration counts it without failing, and the run's tally says it cannot add
        // it up; the other run is counted as it is.
        let store = Store::open(&path).await.unwrap();
        let error = store.run_tally(2).await.expect_err("a sum past 2^63");
        assert!(matches!(error, StoreError::Overflow(_)), "{error}");
        assert_eq!(store.run_tally(1).await.unwrap().counts.cost_pico_usd, 700);
        // As later writes go past it too: a third result on another model adds up alone.
        exec(
            &store,
            &["UPDATE results SET cost_pico_usd = 9000000000000000000 WHERE job = 1"],
        )
        .await;
        assert_eq!(
            store.run_tally(1).await.unwrap().counts.cost_pico_usd,
            9_000_000_000_000_000_000
        );
        exec(
            &store,
            &["UPDATE results SET cost_pico_usd = 9000000000000000000 WHERE job = 4"],
        )
        .await;
        assert!(matches!(
            store.run_tally(2).await.err(),
            Some(StoreError::Overflow(_))
        ));
    }

    #[tokio::test]
    async fn a_list_sorted_by_cost_or_latency_reads_an_index_in_order_and_sorts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        for sort in [
            JobSort::CostDesc,
            JobSort::CostAsc,
            JobSort::LatencyDesc,
            JobSort::LatencyAsc,
        ] {
            let key = sort.key().unwrap();
            for model in [None, Some("claude-haiku-4-5".to_owned())] {
                let filter = JobFilter {
                    model,
                    sort,
                    ..JobFilter::default()
                };
                for backwards in [false, true] {
                    let valued = plan(&store, &filter, Part::Valued(key), backwards).await;
                    assert!(
                        valued.lines().next().is_some_and(|first| first
                            .split_whitespace()
                            .skip(1)
                            .take(4)
                            .eq(["r", "USING", "INDEX", key.index])),
                        "{sort:?}: {valued}"
                    );
                    assert!(!valued.contains("TEMP B-TREE"), "{sort:?}: {valued}");
                    let missing = plan(&store, &filter, Part::Missing(key), backwards).await;
                    assert!(!missing.contains("TEMP B-TREE"), "{sort:?}: {missing}");
                }
            }
        }
    }
}
