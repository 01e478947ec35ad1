//! The data behind each page, as the JSON API serves it and the templates show it.
//!
//! A run's counts, spend, models and stretch of rows are read from what the store keeps of
//! them as rows are written (a few rows, whatever the size of the run, and exact while it
//! runs). What a finished run's report shows does not change, so it is computed once and kept
//! (a report over a million results takes seconds); that of a run that may still move is
//! computed again when looked at.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use super::kept::Status;
use super::kept::{Kept, Stamp, Weigh, stamp};
use crate::diff::{Models, Runs};
use crate::pricing::format_usd;
use crate::report::{self, Report};
use crate::store::view::{Cursor, JobDetail, JobFilter, JobListRow, MAX_PAGE, Outcome, RunTally};
use crate::store::{GradeView, GroupBy, JobSpan, RunCounts, RunRow, Store, StoreError};

/// Jobs a filtered list counts before it says "more than": a count reads every row up to
/// there, and a page only as many as it shows.
pub const COUNT_CAP: i64 = 1_000;

/// Rows one text search reads per request: a search is paged by stretches of the run's rows
/// rather than by matches, so that no request reads them all.
pub const SEARCH_WINDOW: i64 = 20_000;

/// Jobs per page unless asked otherwise.
pub const PAGE: i64 = 50;

/// What a request may fail with.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ViewError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSuchRun(key) => Self::NotFound(format!("no run `{key}` in this store")),
            other => Self::Internal(other.into()),
        }
    }
}

/// The server's one store and what it computes in the background and keeps.
pub struct Data {
    pub store: Store,
    /// The same store on connections of its own, for what is computed in the background.
    report_store: Store,
    reports: Arc<Kept<i64, Stamp, Report>>,
    /// A run's models compared, by run.
    models: Arc<Kept<i64, Stamp, Models>>,
    /// Two runs compared, by the runs.
    diffs: Arc<Diffs>,
}

/// Two runs compared, kept by the runs' ids, for the two runs as they were.
type Diffs = Kept<(i64, i64), (Stamp, Stamp), Runs>;

/// How long a request waits for a report or comparison being computed before it answers
/// without it: a small run's is ready by then, a large one's (seconds, a minute for a million
/// results) is not, and its page says so and looks again.
pub const REPORT_WAIT: Duration = Duration::from_millis(200);

/// The most the comparisons kept may weigh, each kind: a run of a million jobs' models
/// compared weighs about 16 MB.
const COMPARISONS_KEPT_BYTES: usize = 24 << 20;

impl Weigh for Report {
    fn weight(&self) -> usize {
        // Reports are a few numbers per group, and every finished run's is kept.
        0
    }
}

impl Weigh for Models {
    fn weight(&self) -> usize {
        Models::weight(self)
    }
}

impl Weigh for Runs {
    fn weight(&self) -> usize {
        Runs::weight(self)
    }
}

/// A stored time as RFC 3339; one RFC 3339 cannot write (past the year 9999, which only a
/// damaged or doctored store holds) as its milliseconds, rather than failing the page.
fn when(ms: i64) -> String {
    use std::fmt::Write as _;
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let mut out = String::new();
    match write!(out, "{}", humantime::format_rfc3339_seconds(at)) {
        Ok(()) => out,
        Err(_) => format!("{ms} ms after 1970"),
    }
}

/// Spend as pages show it, `+` when some results had no price.
fn spend(pico: i64, unpriced: i64) -> String {
    let shown = format_usd(u64::try_from(pico).unwrap_or(0));
    if unpriced > 0 { shown + "+" } else { shown }
}

/// One run as the runs page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    /// As `msgbatch status` says it.
    pub status: String,
    pub stored_status: String,
    pub stop_reason: Option<String>,
    pub via: String,
    pub jobs: RunCounts,
    /// Jobs with an end: succeeded, failed or rejected.
    pub done: i64,
    pub spend: String,
    pub budget_pico_usd: Option<u64>,
    pub budget: Option<String>,
    pub models: Vec<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub input: String,
    /// The gateway's URL, credentials hidden.
    pub gateway: String,
    pub workers: Vec<WorkerShare>,
    /// Why the run's counts cannot be shown (they are then all 0), for a run whose figures
    /// cannot be added up; `None` for every other run.
    pub problem: Option<String>,
}

/// One worker's part of a run on a PostgreSQL store.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerShare {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub in_hand: i64,
    pub done: i64,
    /// Its share of the jobs the workers did.
    pub share: f64,
    pub spend_pico_usd: i64,
    pub alive: bool,
    pub stopped: bool,
}

/// A run's page: its summary and report.
#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    pub run: RunSummary,
    /// Whether `report` is the run's as it is, or one is being computed: the page answers at
    /// once either way, and looks again until it is ready.
    pub report_status: Status,
    /// `None` while the first report of the run is computed.
    pub report: Option<Arc<Report>>,
    /// Grader kinds, stop reasons: what the job list can be filtered on.
    pub graders: Vec<String>,
    pub stop_reasons: Vec<String>,
    /// The other runs of the store, to compare with.
    pub others: Vec<(i64, String)>,
}

/// One page of a run's jobs.
#[derive(Debug, Clone, Serialize)]
pub struct JobsPage {
    pub run: RunRef,
    pub filter: JobFilter,
    /// The page's number: the one asked for, or the one its link carries (a page found
    /// from a cursor); `None` for a cursor given without one.
    pub page: Option<i64>,
    pub per_page: i64,
    /// Jobs the filter matches, counted up to `matched_cap` (not counted for a text search).
    pub matched: Option<i64>,
    pub matched_cap: i64,
    pub has_next: bool,
    /// The cursor of this page's last job, for the next page (`after=`), when there is one.
    pub next: Option<String>,
    /// Whether jobs come before this page, and the cursor of its first job, for the one
    /// before (`before=`).
    pub has_prev: bool,
    pub prev: Option<String>,
    /// A text search: the stretch of rows this page read, and where the next one starts.
    pub search: Option<SearchWindow>,
    pub jobs: Vec<JobItem>,
    pub models: Vec<String>,
    pub graders: Vec<String>,
    pub stop_reasons: Vec<String>,
}

/// Which page of a job list a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobsAt {
    /// Page `n` (1 is the first): found by stepping over the jobs before it, as old links
    /// and hand-written ones ask.
    Page(i64),
    /// The jobs after this one, as a page's next link asks: found by a seek.
    After(Cursor),
    /// The jobs before this one, as a page's previous link asks: found by a seek.
    Before(Cursor),
}

/// The rows a text search read for one page, as positions in the run (1 is its first job).
#[derive(Debug, Clone, Serialize)]
pub struct SearchWindow {
    /// The row id this page started from (`from=` in the query).
    pub from: i64,
    /// Positions of the first and last rows read, and of the run's last row.
    pub first_read: i64,
    pub last_read: i64,
    pub rows: i64,
    /// The `from=` of the next page, when rows are left to read.
    pub next_from: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub id: i64,
    pub name: String,
}

impl From<&RunRow> for RunRef {
    fn from(run: &RunRow) -> Self {
        Self {
            id: run.id,
            name: run.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobItem {
    #[serde(flatten)]
    pub row: JobListRow,
    pub outcome: Outcome,
    pub grades: Vec<GradeView>,
}

/// One job's page.
#[derive(Debug, Clone, Serialize)]
pub struct JobPage {
    pub run: RunRef,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub detail: JobDetail,
}

impl Data {
    pub fn new(store: Store, report_store: Store) -> Self {
        // Finished runs' reports, and every comparison, are computed one at a time: each
        // reads a whole run or two, and holds a few numbers per job while it does.
        let building = Arc::new(tokio::sync::Mutex::new(()));
        Self {
            store,
            report_store,
            reports: Arc::new(Kept::new(usize::MAX, building.clone(), false)),
            models: Arc::new(Kept::new(COMPARISONS_KEPT_BYTES, building.clone(), true)),
            diffs: Arc::new(Kept::new(COMPARISONS_KEPT_BYTES, building, true)),
        }
    }

    pub async fn find_run(&self, key: &str) -> Result<RunRow, ViewError> {
        // No run is named with a NUL, and PostgreSQL refuses one in a parameter.
        if key.contains('\0') {
            return Err(ViewError::NotFound(
                "no run of that name in this store".to_owned(),
            ));
        }
        Ok(self.store.find_run(key).await?)
    }

    /// A run's report, grouped by model, with its charts' data, waiting no longer than `wait`
    /// (`None`: as long as it takes) for it to be computed (see [`Kept::get`]). A finished
    /// run's report is kept; one still moving is computed again for a look that finds none
    /// under way and none of the last [`super::kept::MOVING_AGE`].
    pub async fn report(
        self: &Arc<Self>,
        run: &RunRow,
        wait: Option<Duration>,
    ) -> Result<(Status, Option<Arc<Report>>), ViewError> {
        let data = Arc::clone(self);
        let row = run.clone();
        self.reports
            .get(run.id, stamp(run), wait, move || async move {
                data.compute_report(&row).await
            })
            .await
            .map_err(|e| match e {
                ViewError::Internal(e) => {
                    ViewError::Internal(anyhow::anyhow!("failed to compute the report: {e:#}"))
                }
                other => other,
            })
    }

    async fn compute_report(&self, run: &RunRow) -> Result<Report, ViewError> {
        Ok(Report::build(
            &self.report_store,
            std::slice::from_ref(run),
            &report::Options {
                by: GroupBy::Model,
                prices: crate::settings::run_prices(run)?,
                reprice: None,
                charts: true,
                cluster_tag: None,
            },
        )
        .await?)
    }

    /// Computes the reports finished runs keep, so that the first look at them is quick too.
    pub async fn warm(self: &Arc<Self>) {
        let Ok(runs) = self.store.runs().await else {
            return;
        };
        let settled: Vec<&RunRow> = runs.iter().rev().filter(|r| stamp(r).is_some()).collect();
        for run in &settled {
            let _ = self.report(run, None).await;
        }
    }

    async fn summary(&self, run: &RunRow) -> Result<RunSummary, ViewError> {
        let tally = self.store.run_tally(run.id).await?;
        self.summary_of(run, tally, None).await
    }

    /// A run's summary with these counts; `problem` says why they are not its own.
    async fn summary_of(
        &self,
        run: &RunRow,
        tally: RunTally,
        problem: Option<String>,
    ) -> Result<RunSummary, ViewError> {
        let RunTally { counts, models, .. } = tally;
        let workers = self.store.workers(run.id).await?;
        let status = self.store.run_state(run).await?.to_string();
        let budget_pico_usd = crate::settings::RunSettings::of(run)?
            .send
            .max_cost_pico_usd;
        let worked: i64 = workers.iter().map(|w| w.jobs_done).sum();
        #[expect(clippy::cast_precision_loss, reason = "a share for display")]
        let workers = workers
            .iter()
            .map(|w| WorkerShare {
                id: w.id,
                host: w.host.clone(),
                pid: w.pid,
                in_hand: w.in_hand,
                done: w.jobs_done,
                share: if worked > 0 {
                    w.jobs_done as f64 / worked as f64
                } else {
                    0.0
                },
                spend_pico_usd: w.spent_pico_usd,
                alive: w.alive,
                stopped: w.stopped_at_ms.is_some(),
            })
            .collect();
        Ok(RunSummary {
            id: run.id,
            name: run.name.clone(),
            status,
            stored_status: run.status.as_str().to_owned(),
            stop_reason: run.stop_reason.clone(),
            via: run.via.clone(),
            done: counts.succeeded + counts.failed + counts.rejected,
            spend: spend(counts.cost_pico_usd, counts.unpriced),
            jobs: counts,
            budget_pico_usd,
            budget: budget_pico_usd.map(format_usd),
            models,
            created_at: when(run.created_at_ms),
            finished_at: run.finished_at_ms.map(when),
            input: run.input_path.clone(),
            gateway: run.shown_url(),
            workers,
            problem,
        })
    }

    /// Every run, newest first. A run whose figures cannot be added up (a result stored with
    /// usage no request could produce) is listed with that problem in place of its counts;
    /// the others as they are.
    pub async fn runs(&self) -> Result<Vec<RunSummary>, ViewError> {
        let mut runs = Vec::new();
        for run in self.store.runs().await?.iter().rev() {
            let summary = match self.store.run_tally(run.id).await {
                Ok(tally) => self.summary_of(run, tally, None).await?,
                Err(error @ StoreError::Overflow(_)) => {
                    self.summary_of(run, RunTally::default(), Some(error.to_string()))
                        .await?
                }
                Err(error) => return Err(error.into()),
            };
            runs.push(summary);
        }
        Ok(runs)
    }

    pub async fn run_page(self: &Arc<Self>, key: &str) -> Result<RunPage, ViewError> {
        let run = self.find_run(key).await?;
        let summary = self.summary(&run).await?;
        let (report_status, report) = self.report(&run, Some(REPORT_WAIT)).await?;
        let (graders, stop_reasons) = report.as_deref().map(filter_values).unwrap_or_default();
        let others = self
            .store
            .runs()
            .await?
            .into_iter()
            .filter(|r| r.id != run.id)
            .rev()
            .map(|r| (r.id, r.name))
            .collect();
        Ok(RunPage {
            run: summary,
            report_status,
            report,
            graders,
            stop_reasons,
            others,
        })
    }

    /// One page of a run's jobs. A text search reads [`SEARCH_WINDOW`] rows at most from
    /// row id `from` (the run's first by default), in input order.
    ///
    /// `at` says which page: a page number, or the jobs just past a cursor (whose page
    /// number, if known, is `numbered`).
    pub async fn jobs_page(
        self: &Arc<Self>,
        key: &str,
        mut filter: JobFilter,
        at: JobsAt,
        numbered: Option<i64>,
        per_page: i64,
        from: Option<i64>,
    ) -> Result<JobsPage, ViewError> {
        let run = self.find_run(key).await?;
        let per_page = per_page.clamp(1, MAX_PAGE);
        let tally = self.store.run_tally(run.id).await?;
        let span = tally.span.unwrap_or(JobSpan {
            first: 0,
            last: -1,
            contiguous: true,
        });
        let window = filter.text.is_some().then(|| {
            let start = from
                .unwrap_or(span.first)
                .clamp(span.first, span.last.max(span.first));
            JobSpan {
                first: start,
                last: span.last.min(start.saturating_add(SEARCH_WINDOW - 1)),
                contiguous: span.contiguous,
            }
        });
        if window.is_some() {
            if !matches!(at, JobsAt::Page(_)) {
                return Err(ViewError::BadRequest(
                    "after, before: a text search goes on with `from`, not a cursor".to_owned(),
                ));
            }
            filter.sort = crate::store::view::JobSort::Input;
        }
        let by_offset = |page: i64| {
            let (read, offset) = match &window {
                Some(window) => (window, 0),
                None => (&span, (page - 1) * per_page),
            };
            self.store
                .job_page(run.id, read, Some(&tally), &filter, offset, per_page + 1)
        };
        let many = |rows: &Vec<JobListRow>| i64::try_from(rows.len()).unwrap_or(i64::MAX);
        // One row more than the page says whether there is a next one (the one before,
        // backwards).
        let (mut rows, page, has_prev, full) = match at {
            JobsAt::Page(page) => {
                let page = page.max(1);
                let rows = by_offset(page).await?;
                let full = many(&rows) > per_page;
                (rows, Some(page), page > 1, full)
            }
            JobsAt::After(cursor) => {
                let rows = self
                    .store
                    .job_page_at(run.id, &span, &filter, cursor, false, per_page + 1)
                    .await?;
                let full = many(&rows) > per_page;
                (rows, numbered, true, full)
            }
            JobsAt::Before(cursor) => {
                let mut rows = self
                    .store
                    .job_page_at(run.id, &span, &filter, cursor, true, per_page + 1)
                    .await?;
                if many(&rows) > per_page {
                    rows.remove(0);
                    // Jobs come before it: it is not the first page, whatever its link says.
                    (rows, numbered.filter(|&n| n > 1), true, true)
                } else {
                    // Nothing before these: the list's first page, read as such (whole, and
                    // numbered 1 whatever the link said).
                    let rows = by_offset(1).await?;
                    let full = many(&rows) > per_page;
                    (rows, Some(1), false, full)
                }
            }
        };
        rows.truncate(usize::try_from(per_page).unwrap_or(usize::MAX));
        let next = (full && window.is_none())
            .then(|| {
                rows.last()
                    .map(|r| Cursor::of(r, filter.sort).text(filter.sort))
            })
            .flatten();
        let prev = (has_prev && window.is_none())
            .then(|| {
                rows.first()
                    .map(|r| Cursor::of(r, filter.sort).text(filter.sort))
            })
            .flatten();
        let search = window.map(|window| {
            let next_from = if full {
                rows.last().map(|r| r.id + 1)
            } else {
                (window.last < span.last).then_some(window.last + 1)
            };
            SearchWindow {
                from: window.first,
                first_read: window.first - span.first + 1,
                last_read: if full {
                    rows.last().map_or(window.last, |r| r.id) - span.first + 1
                } else {
                    window.last - span.first + 1
                },
                rows: span.last - span.first + 1,
                next_from,
            }
        });
        let has_next = match &search {
            Some(search) => search.next_from.is_some(),
            None => full,
        };
        // A text search reads every request and answer it passes: it is not counted too.
        let matched = if filter.is_empty() {
            Some(tally.counts.total)
        } else if filter.text.is_some() {
            None
        } else {
            Some(
                self.store
                    .job_count(run.id, &span, &filter, COUNT_CAP + 1)
                    .await?,
            )
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut grades = self.store.grades_of(&ids).await?;
        let jobs = rows
            .into_iter()
            .map(|row| JobItem {
                outcome: row.outcome(),
                grades: grades.remove(&row.id).unwrap_or_default(),
                row,
            })
            .collect();
        let models = tally.models;
        // What a finished run can be filtered on comes with its kept report (asked for here
        // if it is not, and not waited for: until it is ready, the list offers no values,
        // rather than read every grade of the run on each look); a running run's list offers
        // the grader kinds it has so far.
        let (graders, stop_reasons) = match stamp(&run) {
            Some(_) => match self.report(&run, Some(Duration::ZERO)).await?.1 {
                Some(report) => filter_values(&report),
                None => (Vec::new(), Vec::new()),
            },
            None => (self.store.grader_kinds(run.id).await?, Vec::new()),
        };
        Ok(JobsPage {
            run: RunRef::from(&run),
            filter,
            page,
            per_page,
            matched,
            matched_cap: COUNT_CAP,
            has_next,
            next,
            has_prev,
            prev,
            search,
            jobs,
            models,
            graders,
            stop_reasons,
        })
    }

    pub async fn job_page(&self, key: &str, id: i64) -> Result<JobPage, ViewError> {
        let run = self.find_run(key).await?;
        let detail = self
            .store
            .job_detail(run.id, id)
            .await?
            .ok_or_else(|| ViewError::NotFound(format!("run {} has no job {id}", run.name)))?;
        let passed = detail.grades.iter().filter(|g| g.passed == Some(true));
        let failed = detail.grades.iter().filter(|g| g.passed == Some(false));
        let outcome = Outcome::of(
            &detail.job.state,
            i64::try_from(passed.count()).unwrap_or(0),
            i64::try_from(failed.count()).unwrap_or(0),
        );
        Ok(JobPage {
            run: RunRef::from(&run),
            outcome,
            detail,
        })
    }

    /// Two runs compared: the figures over every job, one page of the changed jobs `keep`
    /// selects (most important change first), and how many it selects. The comparison is
    /// computed in the background and kept (see [`Kept::get`]): until it is ready, the page
    /// says so and has none.
    pub async fn diff(
        self: &Arc<Self>,
        before: &RunRow,
        after: &RunRow,
        keep: impl Fn(crate::diff::RowKey<'_>) -> bool,
        page: i64,
        per_page: i64,
    ) -> Result<DiffPage, ViewError> {
        let stamps = stamp(before).zip(stamp(after));
        let store = self.report_store.clone();
        let (a, b) = (before.clone(), after.clone());
        let (status, runs) = self
            .diffs
            .get(
                (before.id, after.id),
                stamps,
                Some(REPORT_WAIT),
                move || async move {
                    let options = crate::diff::Options::default();
                    Ok(crate::diff::runs(&store, &a, &b, &options).await?)
                },
            )
            .await?;
        let (page, per_page, skip, take) = window(page, per_page);
        let Some(runs) = runs else {
            return Ok(DiffPage {
                status,
                diff: None,
                page,
                per_page,
                matched: 0,
            });
        };
        let (rows, matched) = runs.rows(&self.store, keep, usize::MAX, skip, take).await?;
        let mut diff = runs.diff.clone();
        diff.rows = rows;
        Ok(DiffPage {
            status,
            diff: Some(diff),
            page,
            per_page,
            matched,
        })
    }

    /// A run's models compared: the figures over every job, one page of the jobs `keep`
    /// selects (in the matrix's order), and how many it selects. The comparison is computed
    /// in the background and kept, as two runs' is.
    pub async fn models(
        self: &Arc<Self>,
        run: &RunRow,
        keep: impl Fn(crate::diff::Flags) -> bool,
        page: i64,
        per_page: i64,
    ) -> Result<ModelsPage, ViewError> {
        let store = self.report_store.clone();
        let row = run.clone();
        let (status, models) = self
            .models
            .get(run.id, stamp(run), Some(REPORT_WAIT), move || async move {
                let options = crate::diff::Options::default();
                Ok(crate::diff::models(&store, &row, &options).await?)
            })
            .await?;
        let (page, per_page, skip, take) = window(page, per_page);
        let Some(models) = models else {
            return Ok(ModelsPage {
                status,
                matrix: None,
                page,
                per_page,
                matched: 0,
            });
        };
        let matched = models.count(&keep);
        let rows = models.rows(&self.store, &keep, skip, take).await?;
        let mut matrix = models.matrix.clone();
        matrix.rows = rows;
        Ok(ModelsPage {
            status,
            matrix: Some(matrix),
            page,
            per_page,
            matched,
        })
    }
}

/// A comparison's page as asked for, within bounds (the page, jobs a page), and the rows
/// before it and on it.
fn window(page: i64, per_page: i64) -> (i64, i64, usize, usize) {
    let per_page = per_page.clamp(1, MAX_PAGE);
    let page = page.max(1);
    let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(1);
    (page, per_page, skip, take)
}

/// One page of two runs compared: the figures over every job, the changed jobs of one page.
#[derive(Debug, Serialize)]
pub struct DiffPage {
    /// `computing` until the comparison is ready, when the page has none.
    pub status: Status,
    #[serde(flatten)]
    pub diff: Option<crate::diff::Diff>,
    pub page: i64,
    pub per_page: i64,
    /// Changed jobs the filter selects, over every page.
    pub matched: usize,
}

/// One page of a run's models compared: the figures over every job, the rows of one page.
#[derive(Debug, Serialize)]
pub struct ModelsPage {
    /// `computing` until the comparison is ready, when the page has none.
    pub status: Status,
    #[serde(flatten)]
    pub matrix: Option<crate::diff::Matrix>,
    pub page: i64,
    pub per_page: i64,
    /// Jobs the filter selects, over every page.
    pub matched: usize,
}

/// The grader kinds and stop reasons a run's report saw.
fn filter_values(report: &Report) -> (Vec<String>, Vec<String>) {
    let mut graders: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for group in &report.groups {
        for (reason, _) in &group.stop_reasons {
            if !reasons.contains(reason) {
                reasons.push(reason.clone());
            }
        }
        if let Some(grading) = &group.grading {
            for (kind, _, _) in &grading.by_grader {
                if !graders.contains(kind) {
                    graders.push(kind.clone());
                }
            }
        }
    }
    graders.sort();
    reasons.sort();
    (graders, reasons)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_time_past_the_year_9999_is_shown_not_a_failure() {
        assert_eq!(super::when(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::when(i64::MAX), format!("{} ms after 1970", i64::MAX));
    }
}
