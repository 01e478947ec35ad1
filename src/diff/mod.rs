//! Which answers changed: two runs compared job by job (`msgbatch diff A B`), or the models of
//! one run that fanned out compared side by side (`msgbatch diff RUN`).
//!
//! Jobs are matched by `custom_id`, and by model too when either run fanned out over several.
//! A job's outcome is what a reader checks first: passed or failed its graders, answered
//! without graders, failed to get an answer, or still pending.

mod paired;
mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::pricing::CostOverflow;
use crate::store::{GradeView, JobView, RunRow, Store};

pub use paired::{Measures, Metric, Pair, PairedComparison};
pub use render::{csv, html, markdown, table};

/// How the paired comparisons of a diff are made.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Cluster the standard errors on this tag's values (jobs that share a source).
    pub cluster_tag: Option<String>,
    /// The model each other model of a run is compared with [default: the first listed].
    pub baseline: Option<String>,
}

/// The job's value of the clustering tag, if it has one.
fn cluster_of(view: &JobView, tag: Option<&str>) -> Option<String> {
    let tag = tag?;
    let tags: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(view.tags.as_deref()?).ok()?;
    match tags.get(tag)? {
        serde_json::Value::String(value) => Some(value.clone()),
        other => Some(other.to_string()),
    }
}

/// What `msgbatch diff` shows: two runs job by job, or one run's models side by side.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Comparison {
    Runs(Diff),
    Models(Matrix),
}

/// Rows of each kind listed in full by default.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest changes in cost and in latency listed, at most.
pub const LARGEST_CHANGES: usize = 10;

/// How one job of one run came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered, and every grader that has a verdict passed it.
    Pass,
    /// Answered, and a grader failed it.
    Fail,
    /// Answered; no grader has a verdict.
    Answered,
    /// No answer after all its attempts.
    Error,
    Pending,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Answered => "answered",
            Self::Error => "error",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
        }
    }

    /// The outcome of a job in `state` with these verdicts.
    fn of(state: &str, grades: &[GradeView]) -> Self {
        match state {
            "succeeded" if grades.iter().any(|g| g.passed == Some(false)) => Self::Fail,
            "succeeded" if grades.iter().any(|g| g.passed == Some(true)) => Self::Pass,
            "succeeded" => Self::Answered,
            "failed" => Self::Error,
            "rejected" => Self::Rejected,
            _ => Self::Pending,
        }
    }

    fn answered(self) -> bool {
        matches!(self, Self::Pass | Self::Fail | Self::Answered)
    }

    /// A grader has a verdict on it.
    fn graded(self) -> bool {
        matches!(self, Self::Pass | Self::Fail)
    }
}

/// One job of one run, as a comparison shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSide {
    pub outcome: Outcome,
    /// The graders that failed it, as `kind#index`.
    pub failed_graders: Vec<String>,
    pub grades: Vec<GradeView>,
    pub stop_reason: Option<String>,
    pub cost_pico_usd: Option<i64>,
    pub latency_ms: Option<i64>,
    pub output_tokens: Option<i64>,
    pub error: Option<String>,
    pub answer: Option<String>,
}

impl JobSide {
    fn new(view: JobView, grades: Vec<GradeView>) -> Self {
        let failed_graders: Vec<String> = grades
            .iter()
            .filter(|g| g.passed == Some(false))
            .map(|g| format!("{}#{}", g.kind, g.grader))
            .collect();
        let outcome = Outcome::of(&view.state, &grades);
        Self {
            outcome,
            failed_graders,
            grades,
            stop_reason: view.stop_reason,
            cost_pico_usd: view.cost_pico_usd,
            latency_ms: view.latency_ms,
            output_tokens: view.output_tokens,
            error: view.error,
            answer: view.answer.map(|a| excerpt(&a)),
        }
    }
}

/// What changed for one job between the two runs, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Passed its graders before, fails them now.
    Regression,
    /// Answered before, no answer now.
    NewlyFailed,
    /// In the first run only.
    Missing,
    /// Cut at `max_tokens` now, not before.
    NewlyTruncated,
    StopReasonChanged,
    /// Failed its graders before, passes them now.
    Improvement,
    /// No answer before, answered now.
    Fixed,
    /// In the second run only.
    New,
    /// Among the largest changes in cost.
    Cost,
    /// Among the largest changes in latency.
    Latency,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regression => "regression",
            Self::NewlyFailed => "newly failed",
            Self::Missing => "missing",
            Self::NewlyTruncated => "newly truncated",
            Self::StopReasonChanged => "stop reason changed",
            Self::Improvement => "improvement",
            Self::Fixed => "fixed",
            Self::New => "new",
            Self::Cost => "cost change",
            Self::Latency => "latency change",
        }
    }
}

/// One listed job: the change, and the job in each run.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub change: Change,
    pub job_id: String,
    pub model: String,
    pub prompt: Option<String>,
    pub before: Option<JobSide>,
    pub after: Option<JobSide>,
}

impl DiffRow {
    pub fn cost_delta(&self) -> Option<i64> {
        Some(self.after.as_ref()?.cost_pico_usd? - self.before.as_ref()?.cost_pico_usd?)
    }

    pub fn latency_delta(&self) -> Option<i64> {
        Some(self.after.as_ref()?.latency_ms? - self.before.as_ref()?.latency_ms?)
    }
}

/// Counts over every matched job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub matched: usize,
    /// Jobs of each kind of change, keyed (in JSON) by the same snake_case name as each row's
    /// `change`.
    pub counts: BTreeMap<Change, usize>,
    pub passed_before: usize,
    pub passed_after: usize,
    pub graded_before: usize,
    pub graded_after: usize,
    pub cost_before_pico_usd: i64,
    pub cost_after_pico_usd: i64,
    pub latency_p50_before_ms: Option<i64>,
    pub latency_p50_after_ms: Option<i64>,
}

/// Two runs compared job by job.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub before: String,
    pub after: String,
    /// Jobs matched by model as well as id.
    pub by_model: bool,
    /// Samples of each job (`--repeat`), the most of either run: the totals count every
    /// sample, the listed rows show each job's first, and a job's score is the mean over its
    /// samples.
    pub samples: usize,
    pub totals: Totals,
    /// The listed jobs, most important change first; each kind cut at the limit.
    pub rows: Vec<DiffRow>,
    /// Jobs of each kind left out by the limit.
    pub left_out: BTreeMap<Change, usize>,
    /// The second run against the first over the jobs both answered: score, cost, latency.
    pub comparisons: Vec<PairedComparison>,
}

impl Diff {
    /// Whether some comparison shows a significant drop of the mean score.
    pub fn significant_drop(&self) -> bool {
        self.comparisons
            .iter()
            .any(PairedComparison::significant_drop)
    }

    pub fn regressions(&self) -> usize {
        self.totals
            .counts
            .get(&Change::Regression)
            .copied()
            .unwrap_or(0)
    }
}

/// A job of a run (one model of it): its first sample as listed, and the measures of every
/// sample averaged (a job's score is the mean over its samples of "every grader passed").
struct Loaded {
    view: JobView,
    grades: Vec<GradeView>,
    measures: Measures,
    /// Every sample, the first included: outcome, cost and latency, for the totals.
    samples: Vec<Sample>,
}

/// What the totals count of a sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    outcome: Outcome,
    cost_pico_usd: Option<i64>,
    latency_ms: Option<i64>,
}

/// The most samples of one job and model among `jobs`: 1 without `--repeat`.
fn samples_of(jobs: &[Loaded]) -> usize {
    jobs.iter().map(|j| j.samples.len()).max().unwrap_or(1)
}

/// The jobs of a run in input order, the samples (`--repeat`) of each (job, model) made one.
/// A record's rows are stored together, a model's samples next to each other, so the samples
/// of a job are consecutive rows.
async fn load(store: &Store, run: &RunRow) -> anyhow::Result<Vec<Loaded>> {
    let mut grades = store.grade_views(run.id).await?;
    let mut jobs: Vec<Loaded> = Vec::new();
    let mut sum = paired::MeanMeasures::default();
    for view in store.job_views(run.id).await? {
        let g = grades.remove(&view.id).unwrap_or_default();
        let outcome = Outcome::of(&view.state, &g);
        let measures = Measures::new(outcome, view.cost_pico_usd, view.latency_ms);
        let sample = Sample {
            outcome,
            cost_pico_usd: view.cost_pico_usd,
            latency_ms: view.latency_ms,
        };
        if let Some(last) = jobs.last_mut()
            && last.view.job_id == view.job_id
            && last.view.model == view.model
        {
            sum.add(&measures);
            last.samples.push(sample);
            continue;
        }
        if let Some(last) = jobs.last_mut() {
            last.measures = sum.mean();
        }
        sum = paired::MeanMeasures::default();
        sum.add(&measures);
        jobs.push(Loaded {
            view,
            grades: g,
            measures,
            samples: vec![sample],
        });
    }
    if let Some(last) = jobs.last_mut() {
        last.measures = sum.mean();
    }
    Ok(jobs)
}

/// Compares two runs job by job, listing at most `limit` jobs of each kind of change.
pub async fn compare(
    store: &Store,
    before: &RunRow,
    after: &RunRow,
    limit: usize,
    options: &Options,
) -> anyhow::Result<Diff> {
    let a = load(store, before).await?;
    let b = load(store, after).await?;
    let models = |jobs: &[Loaded]| {
        jobs.iter()
            .map(|j| j.view.model.clone())
            .collect::<BTreeSet<_>>()
    };
    let by_model = models(&a).len() > 1 || models(&b).len() > 1;
    let samples = samples_of(&a).max(samples_of(&b));
    let key = |v: &JobView| {
        if by_model {
            (v.job_id.clone(), v.model.clone())
        } else {
            (v.job_id.clone(), String::new())
        }
    };
    let mut prompts: HashMap<(String, String), Option<String>> = HashMap::new();
    let mut after_jobs: HashMap<(String, String), (JobSide, Measures, Vec<Sample>)> =
        HashMap::new();
    let mut after_order: Vec<((String, String), String)> = Vec::new();
    for Loaded {
        view,
        grades,
        measures,
        samples,
    } in b
    {
        let k = key(&view);
        prompts.insert(k.clone(), view.prompt.as_deref().map(excerpt));
        after_order.push((k.clone(), view.model.clone()));
        after_jobs.insert(k, (JobSide::new(view, grades), measures, samples));
    }
    let mut rows: Vec<DiffRow> = Vec::new();
    let mut totals = Totals::default();
    let mut latencies = (Vec::new(), Vec::new());
    let mut changed: Vec<DiffRow> = Vec::new();
    let mut pairs: Vec<Pair> = Vec::new();
    for Loaded {
        view,
        grades,
        measures,
        samples,
    } in a
    {
        let k = key(&view);
        let cluster = cluster_of(&view, options.cluster_tag.as_deref());
        let prompt = view.prompt.as_deref().map(excerpt);
        let model = view.model.clone();
        let before_side = JobSide::new(view, grades);
        let after_side = after_jobs.remove(&k);
        let row = |change, after: Option<JobSide>| DiffRow {
            change,
            job_id: k.0.clone(),
            model: model.clone(),
            prompt: prompt.clone(),
            before: Some(before_side.clone()),
            after,
        };
        let Some((after_side, after_measures, after_samples)) = after_side else {
            rows.push(row(Change::Missing, None));
            continue;
        };
        totals.matched += 1;
        tally(&mut totals, &samples, &after_samples, &mut latencies)?;
        pairs.push(Pair {
            a: measures,
            b: after_measures,
            cluster,
        });
        let (x, y) = (before_side.outcome, after_side.outcome);
        let change = if x == Outcome::Pass && y == Outcome::Fail {
            Some(Change::Regression)
        } else if x.answered() && y == Outcome::Error {
            Some(Change::NewlyFailed)
        } else if x == Outcome::Fail && y == Outcome::Pass {
            // A grade flip says more than the stop reason that came with it, as a regression
            // does.
            Some(Change::Improvement)
        } else if x.answered() && y.answered() && before_side.stop_reason != after_side.stop_reason
        {
            if after_side.stop_reason.as_deref() == Some("max_tokens") {
                Some(Change::NewlyTruncated)
            } else {
                Some(Change::StopReasonChanged)
            }
        } else if x == Outcome::Error && y.answered() {
            Some(Change::Fixed)
        } else {
            None
        };
        match change {
            Some(change) => rows.push(row(change, Some(after_side))),
            None => changed.push(row(Change::Cost, Some(after_side))),
        }
    }
    for (k, model) in after_order {
        if let Some((after_side, ..)) = after_jobs.remove(&k) {
            rows.push(DiffRow {
                change: Change::New,
                job_id: k.0.clone(),
                model,
                prompt: prompts.remove(&k).flatten(),
                before: None,
                after: Some(after_side),
            });
        }
    }
    // The largest changes in cost and in latency among the jobs that changed nothing else.
    let largest = |rows: &mut Vec<DiffRow>, measure: fn(&DiffRow) -> Option<i64>| {
        rows.sort_by_key(|r| std::cmp::Reverse(measure(r).map_or(0, i64::abs)));
        rows.iter()
            .take_while(|r| measure(r).is_some_and(|d| d != 0))
            .cloned()
            .collect::<Vec<_>>()
    };
    let by_cost = largest(&mut changed, DiffRow::cost_delta);
    let by_latency = largest(&mut changed, DiffRow::latency_delta);
    rows.extend(by_cost);
    rows.extend(by_latency.into_iter().map(|mut r| {
        r.change = Change::Latency;
        r
    }));
    rows.sort_by_key(|r| r.change);
    let mut left_out = BTreeMap::new();
    let mut kept = Vec::new();
    let mut seen: BTreeMap<Change, usize> = BTreeMap::new();
    for row in rows {
        let n = seen.entry(row.change).or_default();
        *n += 1;
        if !matches!(row.change, Change::Cost | Change::Latency) {
            *totals.counts.entry(row.change).or_default() += 1;
        }
        let most = if matches!(row.change, Change::Cost | Change::Latency) {
            limit.min(LARGEST_CHANGES)
        } else {
            limit
        };
        if *n <= most {
            kept.push(row);
        } else if most == limit {
            *left_out.entry(row.change).or_default() += 1;
        }
    }
    totals.latency_p50_before_ms = median(&mut latencies.0);
    totals.latency_p50_after_ms = median(&mut latencies.1);
    Ok(Diff {
        comparisons: paired::compare(
            &before.name,
            &after.name,
            &pairs,
            options.cluster_tag.as_deref(),
        ),
        before: before.name.clone(),
        after: after.name.clone(),
        by_model,
        samples,
        totals,
        rows: kept,
        left_out,
    })
}

/// Counts every sample of a matched job into the totals, and its latency into the latencies.
fn tally(
    totals: &mut Totals,
    before: &[Sample],
    after: &[Sample],
    latencies: &mut (Vec<i64>, Vec<i64>),
) -> Result<(), CostOverflow> {
    for (samples, passed, graded, cost, latency) in [
        (
            before,
            &mut totals.passed_before,
            &mut totals.graded_before,
            &mut totals.cost_before_pico_usd,
            &mut latencies.0,
        ),
        (
            after,
            &mut totals.passed_after,
            &mut totals.graded_after,
            &mut totals.cost_after_pico_usd,
            &mut latencies.1,
        ),
    ] {
        for sample in samples {
            *graded += usize::from(sample.outcome.graded());
            *passed += usize::from(sample.outcome == Outcome::Pass);
            add_cost(cost, sample.cost_pico_usd)?;
            latency.extend(sample.latency_ms);
        }
    }
    Ok(())
}

/// `*sum += cost`, or [`CostOverflow`]: a sum of stored costs is never wrapped or saturated.
fn add_cost(sum: &mut i64, cost: Option<i64>) -> Result<(), CostOverflow> {
    *sum = sum.checked_add(cost.unwrap_or(0)).ok_or(CostOverflow)?;
    Ok(())
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

/// The start of a text, on one line, at most 200 characters.
pub fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &trimmed[..end]),
        None => trimmed.to_owned(),
    }
}

/// One job of a run that fanned out over models, with its answer from each.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    pub job_id: String,
    pub prompt: Option<String>,
    /// The models' outcomes differ.
    pub disagree: bool,
    /// Some model failed it (a grader, or no answer).
    pub failed: bool,
    /// Per model, in the order of `Matrix::models`; `None` where the job did not go to it.
    pub cells: Vec<Option<JobSide>>,
}

/// A run's jobs against its models.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub run: String,
    pub models: Vec<String>,
    /// The model each other one is compared with.
    pub baseline: Option<String>,
    pub jobs: usize,
    /// Samples of each job and model (`--repeat`): the per-model totals count every sample,
    /// the rows show each job's first, and a job's score is the mean over its samples.
    pub samples: usize,
    pub disagreements: usize,
    pub failures: usize,
    /// Per model: passed, graded, answered, errors, cost.
    pub per_model: Vec<ModelTotals>,
    /// Disagreements first, then failures, then the rest, each in input order.
    pub rows: Vec<MatrixRow>,
    /// Each model against the baseline over the jobs both answered: score, cost, latency.
    pub comparisons: Vec<PairedComparison>,
}

impl Matrix {
    /// Whether some model scores significantly below the baseline.
    pub fn significant_drop(&self) -> bool {
        self.comparisons
            .iter()
            .any(PairedComparison::significant_drop)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelTotals {
    pub model: String,
    pub passed: usize,
    pub graded: usize,
    pub answered: usize,
    pub errors: usize,
    pub cost_pico_usd: i64,
}

/// The jobs × models matrix of one run, each model compared with the baseline.
pub async fn matrix(store: &Store, run: &RunRow, options: &Options) -> anyhow::Result<Matrix> {
    let jobs = load(store, run).await?;
    let samples = samples_of(&jobs);
    // The models in the order the run lists them: the order of a job's fan-out.
    let mut listed: Vec<String> = Vec::new();
    for job in &jobs {
        if !listed.contains(&job.view.model) {
            listed.push(job.view.model.clone());
        }
    }
    let baseline = match &options.baseline {
        Some(model) if listed.contains(model) => Some(model.clone()),
        Some(model) => anyhow::bail!(
            "--baseline {model}: run {} has no jobs of that model (its models: {})",
            run.name,
            listed.join(", ")
        ),
        None => listed.first().cloned(),
    };
    let mut clusters: HashMap<String, Option<String>> = HashMap::new();
    let models: Vec<String> = jobs
        .iter()
        .map(|j| j.view.model.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let column: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut per_model: Vec<ModelTotals> = models
        .iter()
        .map(|m| ModelTotals {
            model: m.clone(),
            ..ModelTotals::default()
        })
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut by_job: HashMap<String, MatrixRow> = HashMap::new();
    // Per job, each model's measures over its samples.
    let mut measures: HashMap<String, Vec<Option<Measures>>> = HashMap::new();
    for Loaded {
        view,
        grades,
        measures: mean,
        samples,
    } in jobs
    {
        let i = column[view.model.as_str()];
        if !clusters.contains_key(&view.job_id) {
            let cluster = cluster_of(&view, options.cluster_tag.as_deref());
            clusters.insert(view.job_id.clone(), cluster);
        }
        let prompt = view.prompt.as_deref().map(excerpt);
        let job_id = view.job_id.clone();
        measures
            .entry(job_id.clone())
            .or_insert_with(|| vec![None; models.len()])[i] = Some(mean);
        let side = JobSide::new(view, grades);
        let totals = &mut per_model[i];
        for sample in samples {
            totals.passed += usize::from(sample.outcome == Outcome::Pass);
            totals.graded += usize::from(sample.outcome.graded());
            totals.answered += usize::from(sample.outcome.answered());
            totals.errors += usize::from(sample.outcome == Outcome::Error);
            add_cost(&mut totals.cost_pico_usd, sample.cost_pico_usd)?;
        }
        let row = by_job.entry(job_id.clone()).or_insert_with(|| {
            order.push(job_id.clone());
            MatrixRow {
                job_id,
                prompt,
                disagree: false,
                failed: false,
                cells: vec![None; models.len()],
            }
        });
        row.cells[i] = Some(side);
    }
    let mut rows: Vec<MatrixRow> = order
        .into_iter()
        .filter_map(|id| by_job.remove(&id))
        .map(|mut row| {
            let outcomes: BTreeSet<Outcome> =
                row.cells.iter().flatten().map(|c| c.outcome).collect();
            row.disagree = outcomes.len() > 1;
            row.failed = outcomes.contains(&Outcome::Fail) || outcomes.contains(&Outcome::Error);
            row
        })
        .collect();
    let mut comparisons = Vec::new();
    if let Some(base) = baseline.as_deref().map(|m| column[m]) {
        for other in listed
            .iter()
            .map(|m| column[m.as_str()])
            .filter(|&i| i != base)
        {
            let pairs: Vec<Pair> = rows
                .iter()
                .filter_map(|row| {
                    let cells = measures.get(&row.job_id)?;
                    let (Some(a), Some(b)) = (cells[base], cells[other]) else {
                        return None;
                    };
                    Some(Pair {
                        a,
                        b,
                        cluster: clusters.get(&row.job_id).cloned().flatten(),
                    })
                })
                .collect();
            comparisons.extend(paired::compare(
                &models[base],
                &models[other],
                &pairs,
                options.cluster_tag.as_deref(),
            ));
        }
    }
    rows.sort_by_key(|r| (!r.disagree, !r.failed));
    Ok(Matrix {
        baseline,
        comparisons,
        run: run.name.clone(),
        jobs: rows.len(),
        samples,
        disagreements: rows.iter().filter(|r| r.disagree).count(),
        failures: rows.iter().filter(|r| r.failed).count(),
        models,
        per_model,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_line_and_cut_on_a_character() {
        assert_eq!(excerpt("  two\nlines \t"), "two lines");
        let long = "é".repeat(300);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }
}
