//! The data behind each page, as the JSON API serves it and the templates show it.
//!
//! What a finished run shows does not change, so its counts and its report are computed once
//! and kept (a report over a million results takes seconds); a run that may still move is
//! read afresh on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::output::redacted_url;
use crate::pricing::format_usd;
use crate::report::{self, Report};
use crate::store::view::{JobDetail, JobFilter, JobListRow, MAX_PAGE, Outcome};
use crate::store::{GradeView, GroupBy, RunCounts, RunRow, Store, StoreError};

/// Jobs a filtered list counts before it says "more than".
pub const COUNT_CAP: i64 = 10_000;

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

/// The server's one store and what it keeps of finished runs.
pub struct Data {
    pub store: Store,
    counts: Mutex<HashMap<i64, (Stamp, RunCounts)>>,
    reports: Mutex<HashMap<i64, (Stamp, Arc<Report>)>>,
}

/// What a kept figure of a run was computed for: it holds while the run is the same finished
/// run (a resumed run is running again, and finishes later).
type Stamp = (String, Option<i64>);

fn stamp(run: &RunRow) -> Option<Stamp> {
    let settled = matches!(
        run.status.as_str(),
        "completed" | "interrupted" | "budget_exhausted"
    ) && run.loaded;
    settled.then(|| (run.status.clone(), run.finished_at_ms))
}

fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
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
    pub report: Arc<Report>,
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
    pub page: i64,
    pub per_page: i64,
    /// Jobs the filter matches, counted up to `matched_cap`.
    pub matched: i64,
    pub matched_cap: i64,
    pub has_next: bool,
    pub jobs: Vec<JobItem>,
    pub models: Vec<String>,
    pub graders: Vec<String>,
    pub stop_reasons: Vec<String>,
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
    pub fn new(store: Store) -> Self {
        Self {
            store,
            counts: Mutex::default(),
            reports: Mutex::default(),
        }
    }

    pub async fn find_run(&self, key: &str) -> Result<RunRow, ViewError> {
        Ok(self.store.find_run(key).await?)
    }

    async fn counts(&self, run: &RunRow) -> Result<RunCounts, ViewError> {
        let stamp = stamp(run);
        if let Some(stamp) = &stamp
            && let Ok(kept) = self.counts.lock()
            && let Some((at, counts)) = kept.get(&run.id)
            && at == stamp
        {
            return Ok(counts.clone());
        }
        let counts = self.store.run_counts(run.id).await?;
        if let Some(stamp) = stamp
            && let Ok(mut kept) = self.counts.lock()
        {
            kept.insert(run.id, (stamp, counts.clone()));
        }
        Ok(counts)
    }

    /// A run's report, grouped by model, with its charts' data.
    pub async fn report(&self, run: &RunRow) -> Result<Arc<Report>, ViewError> {
        let stamp = stamp(run);
        if let Some(stamp) = &stamp
            && let Ok(kept) = self.reports.lock()
            && let Some((at, report)) = kept.get(&run.id)
            && at == stamp
        {
            return Ok(report.clone());
        }
        let report = Arc::new(
            Report::build(
                &self.store,
                std::slice::from_ref(run),
                &report::Options {
                    by: GroupBy::Model,
                    prices: crate::settings::run_prices(&run.settings)?,
                    reprice: None,
                    charts: true,
                },
            )
            .await?,
        );
        if let Some(stamp) = stamp
            && let Ok(mut kept) = self.reports.lock()
        {
            kept.insert(run.id, (stamp, report.clone()));
        }
        Ok(report)
    }

    /// Computes what finished runs keep, so that the first look at them is quick too.
    pub async fn warm(&self) {
        let Ok(runs) = self.store.runs().await else {
            return;
        };
        for run in runs.iter().rev() {
            if stamp(run).is_some() {
                let _ = self.counts(run).await;
                let _ = self.report(run).await;
            }
        }
    }

    async fn summary(&self, run: &RunRow, locked: bool) -> Result<RunSummary, ViewError> {
        let counts = self.counts(run).await?;
        let workers = self.store.workers(run.id).await?;
        let status = self.store.shown_status(run, locked, &workers).await?;
        let models = self
            .store
            .run_models(run.id)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let budget_pico_usd = serde_json::from_str::<serde_json::Value>(&run.settings)
            .ok()
            .and_then(|s| s["send"]["max_cost_pico_usd"].as_u64());
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
            stored_status: run.status.clone(),
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
            gateway: redacted_url(&format!("{}{}", run.base_url, run.messages_path)).into_owned(),
            workers,
        })
    }

    /// Every run, newest first.
    pub async fn runs(&self) -> Result<Vec<RunSummary>, ViewError> {
        let locked = self.store.is_locked();
        let mut runs = Vec::new();
        for run in self.store.runs().await?.iter().rev() {
            runs.push(self.summary(run, locked).await?);
        }
        Ok(runs)
    }

    pub async fn run_page(&self, key: &str) -> Result<RunPage, ViewError> {
        let run = self.find_run(key).await?;
        let summary = self.summary(&run, self.store.is_locked()).await?;
        let report = self.report(&run).await?;
        let (graders, stop_reasons) = filter_values(&report);
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
            report,
            graders,
            stop_reasons,
            others,
        })
    }

    pub async fn jobs_page(
        &self,
        key: &str,
        filter: JobFilter,
        page: i64,
        per_page: i64,
    ) -> Result<JobsPage, ViewError> {
        let run = self.find_run(key).await?;
        let per_page = per_page.clamp(1, MAX_PAGE);
        let page = page.max(1);
        // One row more than the page says whether there is a next one.
        let mut rows = self
            .store
            .job_page(run.id, &filter, (page - 1) * per_page, per_page + 1)
            .await?;
        let has_next = i64::try_from(rows.len()).unwrap_or(i64::MAX) > per_page;
        rows.truncate(usize::try_from(per_page).unwrap_or(usize::MAX));
        let matched = if filter.is_empty() {
            self.counts(&run).await?.total
        } else {
            self.store.job_count(run.id, &filter, COUNT_CAP + 1).await?
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
        let models = self
            .store
            .run_models(run.id)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        // What a finished run can be filtered on comes with its kept report; a running run's
        // list offers what it has so far without a report's scan.
        let (graders, stop_reasons) = if stamp(&run).is_some() {
            filter_values(&*self.report(&run).await?)
        } else {
            (self.store.grader_kinds(run.id).await?, Vec::new())
        };
        Ok(JobsPage {
            run: RunRef::from(&run),
            filter,
            page,
            per_page,
            matched,
            matched_cap: COUNT_CAP,
            has_next,
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

    pub async fn diff(&self, a: &str, b: &str) -> Result<crate::diff::Diff, ViewError> {
        let before = self.find_run(a).await?;
        let after = self.find_run(b).await?;
        Ok(crate::diff::compare(
            &self.store,
            &before,
            &after,
            crate::diff::DEFAULT_LIMIT,
            &crate::diff::Options::default(),
        )
        .await?)
    }

    pub async fn models(&self, key: &str) -> Result<crate::diff::Matrix, ViewError> {
        let run = self.find_run(key).await?;
        Ok(crate::diff::matrix(&self.store, &run, &crate::diff::Options::default()).await?)
    }
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
