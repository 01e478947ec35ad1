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

/// The most jobs of a list a page asked for by its number is read past, when the list is not
/// found by a seek (see [`RunTally::stepped`]): page 201 of 50 jobs a page, counted from the
/// nearer end of a list whose length is known. Each job passed over is read whole and tested
/// (a tag's value parsed from its JSON, or the job of each entry of a sort's index looked up
/// for its model), some 15 µs a job for the slowest: a page 250,000 jobs in took 3 s, one
/// 10,000 in takes about as long as the page's own jobs. Deeper pages are reached by the
/// pages' links, whose cursors are found by a seek however deep they are.
pub const MAX_STEPPED: i64 = 10_000;

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
    /// Its jobs by model, for counting the jobs of a list.
    by_model: Vec<ModelTally>,
    /// `None` for a run without jobs.
    pub span: Option<JobSpan>,
}

/// What a run's tally counts of its jobs of one model.
#[derive(Debug, Clone, Default)]
struct ModelTally {
    model: String,
    jobs: i64,
    pending: i64,
    failed: i64,
    rejected: i64,
    results: i64,
    priced: i64,
}

impl RunTally {
    /// The sum of `count` over the run's models (`model` only, with one).
    fn sum(&self, model: Option<&str>, count: impl Fn(&ModelTally) -> i64) -> i64 {
        self.by_model
            .iter()
            .filter(|m| model.is_none_or(|model| model == m.model))
            .map(count)
            .sum()
    }

    /// Of the run's jobs (of `model` only, with one), how many have a value to sort by `key`:
    /// a result (with a cost, for cost).
    fn valued(&self, model: Option<&str>, key: SortKey) -> i64 {
        self.sum(model, |m| {
            if key.column == "cost_pico_usd" {
                m.priced
            } else {
                m.results
            }
        })
    }

    /// Of the run's jobs (of `model` only, with one), how many there are.
    fn jobs(&self, model: Option<&str>) -> i64 {
        self.sum(model, |m| m.jobs)
    }

    /// How many jobs of the list under `filter` a page asked for by its number, `offset` jobs
    /// in (and `limit` long), is read past to be found, counted from the nearer end of the
    /// list when its length is known. None in a list found by a seek: every job of a run whose
    /// rows are one stretch, in input order (by row id) or sorted (the job before the page is
    /// found in the sort's index alone), and a text search (paged by stretches of rows). None
    /// either in input order under a filter the tally counts (a model, a state: the jobs are
    /// read by row id and each tested on its own row, a million in a fifth of a second).
    pub fn stepped(&self, filter: &JobFilter, offset: i64, limit: i64) -> i64 {
        let contiguous = self.span.is_some_and(|span| span.contiguous);
        let nearer = |total: i64| {
            offset
                .min(total.saturating_sub(offset).saturating_sub(limit))
                .max(0)
        };
        match filter.sort.key() {
            _ if filter.text.is_some() => 0,
            None => match self.matched(filter) {
                Some(_) => 0,
                None => offset,
            },
            Some(_) if filter.is_empty() && contiguous => 0,
            // Past the jobs with a value, those without are read by row id.
            Some(key) if filter.narrows_by_model_at_most() => {
                let valued = self.valued(filter.model.as_deref(), key);
                if offset >= valued { 0 } else { nearer(valued) }
            }
            Some(_) => offset,
        }
    }

    /// How many of the run's jobs `filter` keeps, when the tally says: for a filter on the
    /// model, on an outcome that is a state alone (no answer, rejected, pending), or both.
    pub fn matched(&self, filter: &JobFilter) -> Option<i64> {
        if !filter.is_tallied() {
            return None;
        }
        let model = filter.model.as_deref();
        match filter.outcome {
            None => Some(self.jobs(model)),
            Some(Outcome::NoAnswer) => Some(self.sum(model, |m| m.failed)),
            Some(Outcome::Rejected) => Some(self.sum(model, |m| m.rejected)),
            Some(Outcome::Pending) => Some(self.sum(model, |m| m.pending)),
            Some(Outcome::Passed | Outcome::Failed | Outcome::Answered) => None,
        }
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

/// The statement of [`Store::valued_at`]: the value and row id of the entry at `position`
/// (from 0) of the sort's index over `span`, counted from its nearer end.
fn valued_at_sql(span: &JobSpan, key: SortKey, position: i64, valued: i64) -> Sql {
    let from_end = valued - 1 - position;
    let backwards = from_end < position;
    let order = SortKey {
        descending: key.descending != backwards,
        ..key
    }
    .order_by();
    Sql::new(format!(
        "SELECT r.{column}, r.job FROM results r INDEXED BY {index}
         WHERE r.{column} IS NOT NULL AND r.job BETWEEN $1 AND $2
         ORDER BY {order} LIMIT 1 OFFSET $3",
        column = key.column,
        index = key.index,
    ))
    .bind(span.first)
    .bind(span.last)
    .bind(if backwards { from_end } else { position })
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

/// How a list in input order (or its count) finds the jobs its filter keeps: row by row over
/// the run's stretch, or from an index of what the filter asks for, in row order too, so that
/// a filter few jobs pass reads those jobs rather than every job before them (a count of a
/// thousand jobs a grader failed read ten thousand jobs and their grades).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// Every job of the stretch, by row id, each tested.
    Rows,
    /// The failed verdicts, by job (`grades_failed`, migrations 0020 and postgres/0013), each
    /// job once (at its first failed verdict): `outcome = failed`.
    FailedVerdicts,
    /// The results with one stop reason, by job (`results_stop`, the same migrations).
    StopReason,
    /// The jobs with one `custom_id`, by the unique index on the run's ids.
    JobId,
}

impl Driver {
    /// The `FROM … WHERE …` of a statement over `jobs j` and `results r` (left joined) read
    /// this way, the run's id `$1` and its stretch `$3`–`$4`; and the column it reads in row
    /// order.
    fn from(self, dialect: Dialect) -> (&'static str, &'static str) {
        let postgres = dialect == Dialect::Postgres;
        match self {
            // PostgreSQL is told the results' stretch too, which it does not infer from the
            // join: a join over a window of rows reads that window's results, not all of them.
            Self::Rows | Self::JobId if postgres => (
                "FROM jobs j LEFT JOIN results r ON r.job = j.id AND r.job BETWEEN $3 AND $4
                 WHERE j.run_id = $1 AND j.id BETWEEN $3 AND $4",
                "j.id",
            ),
            Self::Rows => (
                "FROM jobs j NOT INDEXED LEFT JOIN results r ON r.job = j.id
                 WHERE j.run_id = $1 AND j.id BETWEEN $3 AND $4",
                "j.id",
            ),
            // The planner picks the unique index on (run_id, job_id, …) for the few rows of
            // one id, and sorts them.
            Self::JobId => (
                "FROM jobs j LEFT JOIN results r ON r.job = j.id
                 WHERE j.run_id = $1 AND j.id BETWEEN $3 AND $4",
                "j.id",
            ),
            // A job failed by two graders has two failed verdicts: the filter's conditions
            // keep it at the first (see `JobFilter::push_conditions`).
            Self::FailedVerdicts => (
                "FROM grades d INDEXED BY grades_failed CROSS JOIN jobs j ON j.id = d.job
                 LEFT JOIN results r ON r.job = j.id AND r.job BETWEEN $3 AND $4
                 WHERE d.passed = FALSE AND d.job BETWEEN $3 AND $4
                   AND j.run_id = $1 AND j.id BETWEEN $3 AND $4",
                "d.job",
            ),
            // The filter's own condition (`r.stop_reason = …`) picks the index's entries.
            Self::StopReason => (
                "FROM results r INDEXED BY results_stop CROSS JOIN jobs j ON j.id = r.job
                 WHERE r.job BETWEEN $3 AND $4 AND j.run_id = $1 AND j.id BETWEEN $3 AND $4",
                "r.job",
            ),
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

    /// How a list in input order under this filter finds its jobs: by the index of what the
    /// filter keeps that is surest to be narrow, or row by row.
    fn driver(&self) -> Driver {
        #[cfg(test)]
        if tests::ROWS_ONLY.get() {
            return Driver::Rows;
        }
        // A stop reason before failed verdicts: SQLite would read the results of the reason
        // first all the same (its condition makes the results' join an inner one), and then
        // sort them into the verdicts' order.
        if self.job_id.is_some() {
            Driver::JobId
        } else if self.stop_reason.is_some() {
            Driver::StopReason
        } else if self.outcome == Some(Outcome::Failed) {
            Driver::FailedVerdicts
        } else {
            Driver::Rows
        }
    }

    /// Whether a run's tally counts the jobs the filter keeps ([`RunTally::matched`]): it
    /// narrows by model, by an outcome that is a state alone (no answer, rejected, pending),
    /// or both, at most.
    fn is_tallied(&self) -> bool {
        matches!(
            self.outcome,
            None | Some(Outcome::NoAnswer | Outcome::Rejected | Outcome::Pending)
        ) && Self {
            model: None,
            outcome: None,
            ..self.clone()
        }
        .is_empty()
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
    /// `driver` is how the statement reads its rows: read from the failed verdicts (`d`),
    /// a job is kept at its first failed verdict (of the grader kind asked for), which says
    /// the job was failed without looking again (PostgreSQL hashed every failed verdict of the
    /// store to look).
    fn push_conditions(&self, sql: &mut Sql, dialect: Dialect, driver: Driver) {
        if let Some(model) = &self.model {
            sql.push(" AND j.model = ").push_bind(model);
        }
        if let Some(job_id) = &self.job_id {
            sql.push(" AND j.job_id = ").push_bind(job_id);
        }
        if let Some(reason) = &self.stop_reason {
            sql.push(" AND r.stop_reason = ").push_bind(reason);
        }
        // SQLite (3.51) runs an `EXISTS` as a join to its table, which past an OFFSET can
        // count a job once for each row the subquery matches: page 2 of the jobs that passed
        // began with the last of page 1 when one before it passed two graders. With a LIMIT
        // the subquery stays a subquery (PostgreSQL drops such a LIMIT and plans as before).
        let exists_end = match dialect {
            Dialect::Sqlite => " LIMIT 1)",
            Dialect::Postgres => ")",
        };
        let verdict = |sql: &mut Sql, passed: bool, kind: Option<&String>| {
            sql.push(" EXISTS (SELECT 1 FROM grades g WHERE g.job = j.id AND g.passed = ")
                .push(if passed { "TRUE" } else { "FALSE" });
            if let Some(kind) = kind {
                sql.push(" AND g.kind = ").push_bind(kind);
            }
            sql.push(exists_end);
        };
        match self.outcome {
            Some(Outcome::Passed) => {
                sql.push(" AND j.state = 'succeeded' AND");
                verdict(sql, true, self.grader.as_ref());
                sql.push(" AND NOT");
                verdict(sql, false, None);
            }
            Some(Outcome::Failed) if driver == Driver::FailedVerdicts => {
                sql.push(" AND j.state = 'succeeded'");
                if let Some(kind) = &self.grader {
                    sql.push(" AND d.kind = ").push_bind(kind);
                }
                sql.push(
                    " AND NOT EXISTS (SELECT 1 FROM grades d2 WHERE d2.job = d.job \
                     AND d2.passed = FALSE AND d2.grader < d.grader",
                );
                if let Some(kind) = &self.grader {
                    sql.push(" AND d2.kind = ").push_bind(kind);
                }
                sql.push(")");
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
                .push(exists_end);
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
            tally.by_model.push(ModelTally {
                jobs: row.jobs,
                pending: row.pending,
                failed: row.failed,
                rejected: row.rejected,
                results: row.results,
                priced: row.results - row.unpriced,
                model: row.model,
            });
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
        let known_jobs = tally.and_then(|tally| tally.matched(filter));
        if known_jobs.is_some_and(|jobs| offset >= jobs) {
            return Ok(Vec::new());
        }
        // Sorted, every job of a stretch of rows that are all the run's: the job before the
        // page is found in the sort's index alone, counted from its nearer end, and the page
        // is read past it as a next link reads it. (Read from the jobs, page 10,000 of a
        // million took seconds.)
        if let (Some(key), Some(tally)) = (filter.sort.key(), tally)
            && filter.is_empty()
            && span.contiguous
            && offset > 0
        {
            let valued = tally.valued(None, key);
            if offset <= valued
                && let Some(before) = self.valued_at(span, key, offset - 1, valued).await?
            {
                return self
                    .job_page_at(run_id, span, filter, before, false, limit)
                    .await;
            }
        }
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

    /// The cursor of the job at `position` (from 0) among the `valued` jobs with a value of a
    /// list sorted by `key`, when every row of `span` is one of the run's jobs: read from the
    /// sort's index alone (its value and row id), from its nearer end, reading no job.
    async fn valued_at(
        &self,
        span: &JobSpan,
        key: SortKey,
        position: i64,
        valued: i64,
    ) -> Result<Option<Cursor>, StoreError> {
        let row: Option<(i64, i64)> = self
            .optional(valued_at_sql(span, key, position, valued))
            .await?;
        Ok(row.map(|(value, id)| Cursor {
            value: Some(value),
            id,
        }))
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
        // its job is read; the others by row id over the span; input order as its filter's
        // [`Driver`] says.
        let (from, in_order) = match part {
            Part::Valued(key) => (
                format!(
                    "FROM results r INDEXED BY {} CROSS JOIN jobs j ON j.id = r.job
                     WHERE r.{} IS NOT NULL AND r.job BETWEEN $3 AND $4 AND j.run_id = $1",
                    key.index, key.column
                ),
                "j.id",
            ),
            Part::Missing(_) => {
                let (from, column) = Driver::Rows.from(dialect);
                (from.to_owned(), column)
            }
            Part::Input => {
                let (from, column) = filter.driver().from(dialect);
                (from.to_owned(), column)
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
        let driver = match part {
            Part::Input => filter.driver(),
            Part::Valued(_) | Part::Missing(_) => Driver::Rows,
        };
        filter.push_conditions(&mut sql, dialect, driver);
        if limit == 0 {
            return sql;
        }
        // In row order, by the column read in that order (the driver's index's); the page
        // chosen first is put in order by its jobs' row ids.
        let order = |column: &str| match part {
            Part::Valued(key) => SortKey {
                descending: key.descending != backwards,
                ..key
            }
            .order_by(),
            Part::Input | Part::Missing(_) if backwards => format!("{column} DESC"),
            Part::Input | Part::Missing(_) => column.to_owned(),
        };
        sql.push(" ORDER BY ")
            .push(&order(in_order))
            .push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        if chosen_first {
            sql.push(
                ") AS page JOIN jobs j ON j.id = page.page_id LEFT JOIN results r ON r.job = j.id
                 ORDER BY ",
            )
            .push(&order("j.id"));
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
        let cap = cap.max(0);
        // The run's tally counts the jobs of a model, or of a state, without reading them.
        if filter.is_tallied()
            && let Ok(tally) = self.run_tally(run_id).await
            && let Some(matched) = tally.matched(filter)
        {
            return Ok(matched.min(cap));
        }
        self.value(self.count_sql(run_id, span, filter, cap)).await
    }

    /// The statement of [`Store::job_count`] that counts the rows, read as a list in input
    /// order reads them (its filter's [`Driver`]).
    fn count_sql(&self, run_id: i64, span: &JobSpan, filter: &JobFilter, cap: i64) -> Sql {
        // `$2`, a page's excerpt length, is bound all the same: the numbering stays a page's.
        let driver = filter.driver();
        let (from, _) = driver.from(self.dialect());
        let mut sql = Sql::new(format!("SELECT COUNT(*) FROM (SELECT $2 AS one {from}"))
            .bind(run_id)
            .bind(EXCERPT_CHARS)
            .bind(span.first)
            .bind(span.last);
        filter.push_conditions(&mut sql, self.dialect(), driver);
        sql.push(" LIMIT ").push_bind(cap).push(") AS matched");
        sql.once()
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

    thread_local! {
        /// Every list in input order read row by row, as before the [`Driver`]s: what a list
        /// read by an index is compared with.
        pub(super) static ROWS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

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
        store
            .query_plan(store.page_sql(1, &span, filter, part, 100, 51, backwards))
            .await
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

    #[tokio::test]
    async fn a_list_of_failed_jobs_or_of_a_stop_reason_or_an_id_and_its_count_read_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        let span = JobSpan {
            first: 1,
            last: 1_000_000,
            contiguous: true,
        };
        let failed = JobFilter {
            outcome: Some(Outcome::Failed),
            ..JobFilter::default()
        };
        let stop = JobFilter {
            stop_reason: Some("max_tokens".to_owned()),
            model: Some("claude-sonnet-4-6".to_owned()),
            ..JobFilter::default()
        };
        let by_failed = "SEARCH d USING COVERING INDEX grades_failed (job>? AND job<?)";
        let by_stop = "SEARCH r USING INDEX results_stop (stop_reason=? AND rowid>? AND rowid<?)";
        for (filter, firsts) in [
            (failed.clone(), vec![by_failed]),
            (
                JobFilter {
                    grader: Some("judge".to_owned()),
                    stop_reason: Some("end_turn".to_owned()),
                    ..failed
                },
                vec![by_stop],
            ),
            (stop, vec![by_stop]),
            (
                JobFilter {
                    job_id: Some("q1".to_owned()),
                    outcome: Some(Outcome::Failed),
                    ..JobFilter::default()
                },
                vec!["SEARCH j USING INDEX sqlite_autoindex_jobs_1 (run_id=? AND job_id=?)"],
            ),
        ] {
            for backwards in [false, true] {
                let page = plan(&store, &filter, Part::Input, backwards).await;
                let first = page.lines().next().unwrap_or_default();
                assert!(firsts.contains(&first), "{filter:?}:\n{page}");
                // (The excerpt's `json_each` is scanned: one job's request.)
                assert!(
                    !page
                        .lines()
                        .any(|step| step.starts_with("SCAN") && !step.starts_with("SCAN e ")),
                    "{filter:?}:\n{page}"
                );
                if filter.job_id.is_none() {
                    assert!(!page.contains("TEMP B-TREE"), "{filter:?}:\n{page}");
                }
            }
            let count = store
                .query_plan(store.count_sql(1, &span, &filter, 1_001))
                .await;
            // (Whether the index covers what the count reads is the planner's to say.)
            let uncovered = |text: &str| text.replace("COVERING INDEX", "INDEX");
            assert!(
                firsts
                    .iter()
                    .any(|first| uncovered(&count).contains(&uncovered(first))),
                "{filter:?}:\n{count}"
            );
            assert!(!count.contains("SCAN j"), "{filter:?}:\n{count}");
        }
    }

    #[tokio::test]
    async fn a_sorted_list_s_page_by_number_finds_the_job_before_it_in_the_sort_s_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        let span = JobSpan {
            first: 1,
            last: 1_000_000,
            contiguous: true,
        };
        for sort in [JobSort::CostDesc, JobSort::LatencyAsc] {
            let key = sort.key().unwrap();
            // From the start and from the end.
            for position in [5_000, 900_000] {
                let sql = valued_at_sql(&span, key, position, 1_000_000);
                let plan = store.query_plan(sql).await;
                assert!(
                    !plan.contains('\n')
                        && plan.contains(&format!("r USING COVERING INDEX {}", key.index)),
                    "{sort:?}: {plan}"
                );
            }
        }
    }

    /// Rows 1 to 150 of three runs: runs 1 and 2 share rows 1 to 100 (run 2 has every third),
    /// run 3 has rows 101 to 150, one stretch. Their jobs are on two models, every state, results with and without a cost and with three stop
    /// reasons, latencies with ties, two graders whose verdicts pass, fail or wait (a job
    /// failed by both, a failed verdict on a job with no answer), tags.
    fn varied_rows() -> Vec<String> {
        let mut rows = vec![
            "INSERT INTO runs (id, name, created_at_ms, status, input_path, input_sha256,
                               gateway_name, base_url, messages_path, settings)
             VALUES (1, 'one', 0, 'completed', 'a.jsonl', '', 'mock', 'http://m', '/v1', '{}'),
                    (2, 'two', 0, 'completed', 'b.jsonl', '', 'mock', 'http://m', '/v1', '{}'),
                    (3, 'three', 0, 'running', 'c.jsonl', '', 'mock', 'http://m', '/v1', '{}')"
                .to_owned(),
        ];
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for id in 1..=150 {
            let run = match id {
                101.. => 3,
                _ if id % 3 == 0 => 2,
                _ => 1,
            };
            let model = if next(3) == 0 { "b" } else { "a" };
            let state = [
                "succeeded",
                "succeeded",
                "succeeded",
                "failed",
                "rejected",
                "pending",
            ][usize::try_from(next(6)).unwrap()];
            let tags = if next(2) == 0 {
                r#"{"half":"a"}"#
            } else {
                r#"{"half":"b"}"#
            };
            rows.push(format!(
                "INSERT INTO jobs (id, run_id, job_id, model, line, request, request_sha256,
                                   state, tags)
                 VALUES ({id}, {run}, 'q{id}', '{model}', {id}, '{{}}', '', '{state}', '{tags}')"
            ));
            // An answer for most of those answered, and for a job that failed since.
            if state == "succeeded" && next(8) > 0 || state == "failed" && next(4) == 0 {
                let cost = if next(5) == 0 {
                    "NULL".to_owned()
                } else {
                    (next(6) * 100).to_string()
                };
                let stop = ["end_turn", "end_turn", "max_tokens", "refusal"]
                    [usize::try_from(next(4)).unwrap()];
                let latency = next(7) * 10;
                rows.push(format!(
                    "INSERT INTO results (job, input_tokens, output_tokens,
                         cache_creation_input_tokens, cache_write_5m_tokens,
                         cache_write_1h_tokens, cache_read_input_tokens, latency_ms, streamed,
                         cost_pico_usd, completed_at_ms, stop_reason)
                     VALUES ({id}, 1, 2, 0, 0, 0, 0, {latency}, 0, {cost}, 0, '{stop}')"
                ));
            }
            for (grader, kind) in [(0, "contains"), (1, "judge")] {
                let passed = match next(5) {
                    0 | 1 => "TRUE",
                    2 | 3 => "FALSE",
                    _ if kind == "judge" => "NULL",
                    _ => continue,
                };
                rows.push(format!(
                    "INSERT INTO grades (job, grader, kind, passed, spec, graded_at_ms)
                     VALUES ({id}, {grader}, '{kind}', {passed}, '{{}}', 0)"
                ));
            }
        }
        rows
    }

    /// [`varied_rows`] written, and their runs' tallies counted as msgbatch's own writes
    /// count them.
    async fn write_varied_rows(store: &Store) {
        for row in varied_rows() {
            store.execute(Sql::new(row)).await.unwrap();
        }
        for run in 1..=3 {
            store.recount_tallies(run).await.unwrap();
        }
    }

    /// Every list (each filter, each order) of each run of [`varied_rows`], walked page by
    /// page by number and counted, as it reads now and as it read row by row before the
    /// indexes: the same jobs in the same order, and the same counts.
    #[tokio::test]
    async fn every_filter_s_list_and_count_are_those_read_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        write_varied_rows(&store).await;
        let outcomes: Vec<Option<Outcome>> = std::iter::once(None)
            .chain(Outcome::ALL.map(Some))
            .collect();
        let text = |v: &str| Some(v.to_owned());
        let mut lists = 0;
        for run in [1, 3] {
            let tally = store.run_tally(run).await.unwrap();
            let span = tally.span.unwrap();
            assert_eq!(span.contiguous, run == 3, "run {run}");
            for sort in JobSort::ALL {
                for model in [None, text("a")] {
                    for &outcome in &outcomes {
                        for grader in [None, text("judge")] {
                            for stop_reason in [None, text("max_tokens"), text("refusal")] {
                                for (tag, job_id) in
                                    [(None, None), (text("half=a"), None), (None, text("q12"))]
                                {
                                    let filter = JobFilter {
                                        model: model.clone(),
                                        outcome,
                                        grader: grader.clone(),
                                        stop_reason: stop_reason.clone(),
                                        tag,
                                        job_id,
                                        sort,
                                        ..JobFilter::default()
                                    };
                                    check_list(&store, run, &tally, &span, &filter).await;
                                    lists += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(lists > 1_000, "{lists}");
    }

    async fn check_list(
        store: &Store,
        run: i64,
        tally: &RunTally,
        span: &JobSpan,
        filter: &JobFilter,
    ) {
        let ids = |rows: Vec<JobListRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        ROWS_ONLY.set(true);
        let all = ids(store
            .job_page(run, span, None, filter, 0, MAX_PAGE)
            .await
            .unwrap());
        let counted = store.count_sql(run, span, filter, 1_000);
        let counted: i64 = store.value(counted).await.unwrap();
        ROWS_ONLY.set(false);
        let shown = i64::try_from(all.len()).unwrap();
        assert_eq!(counted, shown, "{filter:?}");
        for cap in [3, 1_000] {
            let count = store.job_count(run, span, filter, cap).await.unwrap();
            assert_eq!(count, shown.min(cap), "run {run}, {filter:?}, cap {cap}");
        }
        for per_page in [4, 7] {
            let mut paged = Vec::new();
            for page in 0.. {
                let rows = store
                    .job_page(run, span, Some(tally), filter, page * per_page, per_page)
                    .await
                    .unwrap();
                let got = rows.len();
                paged.extend(ids(rows));
                if i64::try_from(got).unwrap() < per_page {
                    break;
                }
            }
            assert_eq!(paged, all, "run {run}, {filter:?}, {per_page} a page");
        }
    }

    #[tokio::test]
    async fn a_tally_counts_a_model_s_or_a_state_s_jobs_and_says_which_pages_by_number_are_read_far()
     {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db")).await.unwrap();
        write_varied_rows(&store).await;
        let tally = store.run_tally(3).await.unwrap();
        let of = |model: Option<&str>, state: &str| {
            let sql = Sql::new(
                "SELECT COUNT(*) FROM jobs WHERE run_id = 3 AND ($1 IS NULL OR model = $1)
                 AND ($2 = '' OR state = $2)",
            )
            .bind(model)
            .bind(state);
            let store = store.clone();
            async move { store.value::<i64>(sql).await.unwrap() }
        };
        for model in [None, Some("a"), Some("b"), Some("z")] {
            for (outcome, state) in [
                (None, ""),
                (Some(Outcome::NoAnswer), "failed"),
                (Some(Outcome::Rejected), "rejected"),
                (Some(Outcome::Pending), "pending"),
            ] {
                let filter = JobFilter {
                    model: model.map(str::to_owned),
                    outcome,
                    ..JobFilter::default()
                };
                assert_eq!(
                    tally.matched(&filter),
                    Some(of(model, state).await),
                    "{filter:?}"
                );
            }
        }
        for outcome in [Outcome::Passed, Outcome::Failed, Outcome::Answered] {
            let filter = JobFilter {
                outcome: Some(outcome),
                ..JobFilter::default()
            };
            assert_eq!(tally.matched(&filter), None);
        }
        // Found by a seek, or read by row id: never far, however deep.
        let deep = 1_000_000;
        let sorted = JobFilter {
            sort: JobSort::LatencyDesc,
            ..JobFilter::default()
        };
        let tagged = JobFilter {
            tag: Some("half=a".to_owned()),
            ..JobFilter::default()
        };
        let one_model = JobFilter {
            model: Some("a".to_owned()),
            ..JobFilter::default()
        };
        assert_eq!(tally.stepped(&JobFilter::default(), deep, 50), 0);
        assert_eq!(tally.stepped(&sorted, deep, 50), 0);
        assert_eq!(tally.stepped(&one_model, deep, 50), 0);
        assert_eq!(
            tally.stepped(
                &JobFilter {
                    text: Some("x".to_owned()),
                    ..tagged.clone()
                },
                deep,
                50
            ),
            0
        );
        // Read job by job: as far as the page, or from the end when the list's length is
        // known (past the jobs with a value, those without are read by row id).
        assert_eq!(tally.stepped(&tagged, deep, 50), deep);
        let sorted_model = JobFilter {
            sort: JobSort::CostAsc,
            ..one_model
        };
        let valued = tally.valued(Some("a"), JobSort::CostAsc.key().unwrap());
        assert!(valued > 6, "{valued}");
        assert_eq!(tally.stepped(&sorted_model, 2, 2), 2);
        assert_eq!(tally.stepped(&sorted_model, valued - 3, 2), 1);
        assert_eq!(tally.stepped(&sorted_model, valued, 2), 0);
        // A run whose rows are not one stretch cannot be sought in: its sorted list is read.
        let apart = store.run_tally(1).await.unwrap();
        assert!(!apart.span.unwrap().contiguous);
        assert!(apart.valued(None, sorted.sort.key().unwrap()) > 12);
        assert_eq!(apart.stepped(&sorted, 5, 2), 5);
    }
}
