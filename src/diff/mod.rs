//! Which answers changed: two runs compared job by job (`msgbatch diff A B`), or the models of
//! one run that fanned out compared side by side (`msgbatch diff RUN`).
//!
//! Jobs are matched by `custom_id`, and by model too when either run fanned out over several.
//! A job's outcome is what a reader checks first: passed or failed its graders, answered
//! without graders, failed to get an answer, or still pending.

mod blocks;
mod paired;
mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::pricing::CostOverflow;
use crate::store::{GradeView, JobScore, ListedJob, RunRow, Store};
use blocks::Blocks;

pub use paired::{Measures, Metric, Pair, PairedComparison};

pub use render::{
    HTML_AGREEING_ROWS, HTML_MAX_ROWS, csv, csv_models_header, csv_models_row, html,
    json_models_head, json_models_row, json_models_tail, markdown, markdown_models_head,
    markdown_models_row, markdown_models_tail, table,
};

/// How the paired comparisons of a diff are made.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Cluster the standard errors on this tag's values (jobs that share a source).
    pub cluster_tag: Option<String>,
    /// The model each other model of a run is compared with [default: the first listed].
    pub baseline: Option<String>,
}

/// The job's value of the clustering tag, if it has one, from its tags as stored.
fn cluster_of(tags: Option<&str>, tag: Option<&str>) -> Option<String> {
    let tag = tag?;
    let tags: serde_json::Map<String, serde_json::Value> = serde_json::from_str(tags?).ok()?;
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
        Self::of_verdicts(
            state,
            grades.iter().any(|g| g.passed == Some(true)),
            grades.iter().any(|g| g.passed == Some(false)),
        )
    }

    /// The outcome of a job in `state` that some grader passed, or failed.
    fn of_verdicts(state: &str, passed: bool, failed: bool) -> Self {
        match state {
            "succeeded" if failed => Self::Fail,
            "succeeded" if passed => Self::Pass,
            "succeeded" => Self::Answered,
            "failed" => Self::Error,
            "rejected" => Self::Rejected,
            _ => Self::Pending,
        }
    }

    /// The outcome `as_str` names.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pass,
            Self::Fail,
            Self::Answered,
            Self::Error,
            Self::Pending,
            Self::Rejected,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
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
    fn of(view: &ListedJob<'_>) -> Self {
        let grades: Vec<GradeView> = view
            .grades
            .iter()
            .map(|g| GradeView {
                job: view.id,
                grader: g.grader,
                kind: g.kind.as_ref().to_owned(),
                passed: g.passed,
                reason: g.reason.as_deref().map(str::to_owned),
            })
            .collect();
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
            stop_reason: view.stop_reason.as_deref().map(str::to_owned),
            cost_pico_usd: view.cost_pico_usd,
            latency_ms: view.latency_ms,
            output_tokens: view.output_tokens,
            error: view.error.as_deref().map(str::to_owned),
            answer: view.answer.as_deref().map(excerpt),
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

/// A job of a run (one model of it) as a comparison of two runs keeps it: its first
/// sample's row id and what decides its change, the mean of its samples' measures, and
/// what the totals count of every sample.
#[derive(Debug, Clone, Copy)]
struct Side {
    /// The row id of its first sample, the one listed.
    id: i64,
    outcome: Outcome,
    /// Its first sample's stop reason, as its number in [`Names`] (0 for none).
    stop: u32,
    /// Its model, as its number in [`Names`].
    model: u32,
    cost_pico_usd: Option<i64>,
    latency_ms: Option<i64>,
    measures: Measures,
    samples: u32,
    passed: u32,
    graded: u32,
    /// The sum of its samples' costs.
    cost_sum: i64,
}

/// Texts many jobs share (stop reasons, cluster values), each kept once and numbered from 1.
#[derive(Debug, Default)]
struct Names {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Names {
    fn number(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else { return 0 };
        if let Some(&n) = self.index.get(name) {
            return n;
        }
        self.names.push(name.to_owned());
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.index.insert(name.to_owned(), n);
        n
    }

    /// Roughly the bytes it holds.
    fn weight(&self) -> usize {
        self.names.iter().map(|n| 2 * n.len() + 64).sum()
    }

    fn name(&self, n: u32) -> Option<&str> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.names.get(i).map(String::as_str)
    }
}

/// One (job, model) of a run, its samples read: see [`Sides`].
struct Group {
    job_id: String,
    model: String,
    tags: Option<String>,
    side: Side,
    /// Its samples' latencies.
    latencies: Vec<i64>,
    /// Its sample 0 is among its rows.
    has_first: bool,
}

/// A run's rows in row order made into its (job, model)s, their samples (`--repeat`) made
/// one. A record's rows are stored together, a model's samples next to each other, so the
/// samples of a job are consecutive rows; a (job, model) whose samples are not is said, not
/// miscounted. Every (job, model) has one sample 0, so a stretch of its rows without it is
/// the sign, and nothing is held of the (job, model)s gone by.
struct Sides<'r> {
    run: &'r str,
    current: Option<(Group, paired::MeanMeasures)>,
}

impl<'r> Sides<'r> {
    fn new(run: &'r str) -> Self {
        Self { run, current: None }
    }

    /// Takes the next row; gives the (job, model) it ends, if any.
    fn push(
        &mut self,
        row: JobScore<'_>,
        stops: &mut Names,
        models: &mut Names,
    ) -> anyhow::Result<Option<Group>> {
        let outcome = Outcome::of_verdicts(&row.state, row.passed, row.failed);
        let measures = Measures::new(outcome, row.cost_pico_usd, row.latency_ms);
        let same = self
            .current
            .as_ref()
            .is_some_and(|(g, _)| g.job_id == row.job_id && g.model == row.model);
        let ended = if same { None } else { self.finish()? };
        let (group, sum) = self.current.get_or_insert_with(|| {
            (
                Group {
                    side: Side {
                        id: row.id,
                        outcome,
                        stop: stops.number(row.stop_reason.as_deref()),
                        model: models.number(Some(row.model.as_ref())),
                        cost_pico_usd: row.cost_pico_usd,
                        latency_ms: row.latency_ms,
                        measures,
                        samples: 0,
                        passed: 0,
                        graded: 0,
                        cost_sum: 0,
                    },
                    job_id: row.job_id.into_owned(),
                    model: row.model.into_owned(),
                    tags: row.tags.map(std::borrow::Cow::into_owned),
                    latencies: Vec::new(),
                    has_first: false,
                },
                paired::MeanMeasures::default(),
            )
        });
        sum.add(&measures);
        let side = &mut group.side;
        side.samples += 1;
        side.passed += u32::from(outcome == Outcome::Pass);
        side.graded += u32::from(outcome.graded());
        add_cost(&mut side.cost_sum, row.cost_pico_usd)?;
        group.latencies.extend(row.latency_ms);
        group.has_first |= row.sample == 0;
        Ok(ended)
    }

    /// Ends the (job, model) under way, if any, and gives it.
    fn finish(&mut self) -> anyhow::Result<Option<Group>> {
        let Some((mut group, sum)) = self.current.take() else {
            return Ok(None);
        };
        if !group.has_first {
            anyhow::bail!(
                "run {}: the samples of job {} on {} are not stored together, or its first is missing; msgbatch stores them in one stretch",
                self.run,
                group.job_id,
                group.model
            );
        }
        group.side.measures = sum.mean();
        Ok(Some(group))
    }
}

/// A listed job of a comparison of two runs: its row id in the first run and in the second,
/// each from its run's first row id (see [`Bases`]), and what a listing selects on. The job
/// is in a run when its outcome there is given (16 bytes: a comparison may list a million
/// jobs).
#[derive(Debug, Clone, Copy)]
struct Listed {
    a: u32,
    b: u32,
    /// Its model (the first run's), as its number in [`Runs::models`].
    model: u32,
    before: Option<Outcome>,
    after: Option<Outcome>,
}

const _: () = assert!(std::mem::size_of::<Listed>() == 16);

/// The first row id of each run of a comparison, from which a [`Listed`] counts its rows'.
#[derive(Debug, Clone, Copy)]
struct Bases {
    a: i64,
    b: i64,
}

impl Listed {
    /// Its row id in the first run, if it is there.
    fn a(&self, bases: Bases) -> Option<i64> {
        self.before.map(|_| bases.a + i64::from(self.a))
    }

    /// Its row id in the second run, if it is there.
    fn b(&self, bases: Bases) -> Option<i64> {
        self.after.map(|_| bases.b + i64::from(self.b))
    }

    fn of(a: Option<&Side>, b: Option<&Side>, bases: Bases) -> anyhow::Result<Self> {
        let offset = |side: Option<&Side>, base: i64| -> anyhow::Result<u32> {
            let Some(side) = side else { return Ok(0) };
            side.id
                .checked_sub(base)
                .and_then(|offset| u32::try_from(offset).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "row {} is more than {} rows past its run's first ({base}); msgbatch compares runs whose rows are nearer together",
                        side.id,
                        u32::MAX
                    )
                })
        };
        Ok(Self {
            a: offset(a, bases.a)?,
            b: offset(b, bases.b)?,
            model: a.or(b).map_or(0, |s| s.model),
            before: a.map(|s| s.outcome),
            after: b.map(|s| s.outcome),
        })
    }
}

/// What a listing of a comparison of two runs selects a row on.
#[derive(Debug, Clone, Copy)]
pub struct RowKey<'a> {
    pub change: Change,
    pub model: &'a str,
    pub before: Option<Outcome>,
    pub after: Option<Outcome>,
}

/// Two runs compared job by job, the figures made and the changed jobs found in two passes
/// over the runs' figures; the listed rows (answers, verdicts) are read on demand by
/// [`Runs::load_rows`]. It holds a few numbers per changed job.
#[derive(Debug)]
pub struct Runs {
    /// Everything but the rows and what the listing's limit left out.
    pub diff: Diff,
    before_id: i64,
    after_id: i64,
    /// Every changed job of each kind, in the order listed (the largest changes in cost and
    /// latency, [`LARGEST_CHANGES`] of each).
    listed: BTreeMap<Change, Blocks<Listed>>,
    bases: Bases,
    /// The largest changes in cost and latency there are, listed or not.
    largest: BTreeMap<Change, usize>,
    models: Names,
}

/// The change of a job both runs have, by what decides it; `None` when nothing but cost
/// or latency changed. Both runs' stop reasons are numbered in one [`Names`], `max_tokens`
/// as `max_tokens`, so equal numbers are equal reasons.
fn change_of(before: &Side, after: &Side, max_tokens: u32) -> Option<Change> {
    let (x, y) = (before.outcome, after.outcome);
    if x == Outcome::Pass && y == Outcome::Fail {
        Some(Change::Regression)
    } else if x.answered() && y == Outcome::Error {
        Some(Change::NewlyFailed)
    } else if x == Outcome::Fail && y == Outcome::Pass {
        // A grade flip says more than the stop reason that came with it, as a regression
        // does.
        Some(Change::Improvement)
    } else if x.answered() && y.answered() && before.stop != after.stop {
        if after.stop == max_tokens {
            Some(Change::NewlyTruncated)
        } else {
            Some(Change::StopReasonChanged)
        }
    } else if x == Outcome::Error && y.answered() {
        Some(Change::Fixed)
    } else {
        None
    }
}

/// What a job of the first run is matched on in the second: its id, and its model when
/// either run has several.
fn key_of(group: &Group, by_model: bool) -> (String, String) {
    let model = if by_model {
        group.model.clone()
    } else {
        String::new()
    };
    (group.job_id.clone(), model)
}

/// A job that changed nothing but its cost or latency, as the largest such changes are
/// chosen: the largest change first, ties in the first run's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Largest {
    change: std::cmp::Reverse<u64>,
    /// For the latency: the cost's change, whose order breaks the latency's ties.
    then: std::cmp::Reverse<u64>,
    order: usize,
}

/// The rows of the [`LARGEST_CHANGES`] smallest keys given (the largest changes), and how
/// many were given.
#[derive(Default)]
struct Top {
    kept: Vec<(Largest, Listed)>,
    count: usize,
}

impl Top {
    fn add(&mut self, key: Largest, row: Listed) {
        self.count += 1;
        self.kept.push((key, row));
        if self.kept.len() >= 2 * LARGEST_CHANGES {
            self.cut();
        }
    }

    fn cut(&mut self) {
        self.kept.sort_unstable_by_key(|(key, _)| *key);
        self.kept.truncate(LARGEST_CHANGES);
    }

    /// The rows kept, the largest change first.
    fn rows(mut self) -> Vec<Listed> {
        self.cut();
        self.kept.into_iter().map(|(_, row)| row).collect()
    }
}

/// Compares two runs job by job, listing at most `limit` jobs of each kind of change.
pub async fn compare(
    store: &Store,
    before: &RunRow,
    after: &RunRow,
    limit: usize,
    options: &Options,
) -> anyhow::Result<Diff> {
    let mut runs = runs(store, before, after, options).await?;
    runs.load_rows(store, |_| true, limit, 0, usize::MAX)
        .await?;
    let mut left_out = BTreeMap::new();
    for (change, n) in &runs.diff.totals.counts {
        if *n > limit {
            left_out.insert(*change, n - limit);
        }
    }
    // The largest changes in cost and latency are cut at the limit too when it is the
    // smaller, and then say so.
    if limit <= LARGEST_CHANGES {
        for (change, n) in &runs.largest {
            if *n > limit {
                left_out.insert(*change, n - limit);
            }
        }
    }
    runs.diff.left_out = left_out;
    Ok(runs.diff)
}

/// Two runs compared job by job, no row read yet (see [`Runs::load_rows`]).
///
/// One pass over the first run's figures (outcome, stop reason, cost, latency; no answer) in
/// its order, each chunk of its rows read with the same jobs' rows of the second run, then
/// one over the second run's jobs the first lacks: what is held is a chunk of rows and the
/// changed jobs found, whatever the size of the runs.
pub async fn runs(
    store: &Store,
    before: &RunRow,
    after: &RunRow,
    options: &Options,
) -> anyhow::Result<Runs> {
    let models_of = async |run: &RunRow| -> anyhow::Result<BTreeSet<String>> {
        Ok(store.run_model_names(run.id).await?.into_iter().collect())
    };
    let (models_a, models_b) = (models_of(before).await?, models_of(after).await?);
    let by_model = models_a.len() > 1 || models_b.len() > 1;
    let clustered = options.cluster_tag.is_some();
    // Where each run's rows lie, in one read of both runs' index.
    let shapes = store.run_shapes(&[before.id, after.id]).await?;
    let shape = |run: &RunRow| shapes.iter().find(|s| s.run == run.id).copied();
    let (shape_a, shape_b) = (shape(before), shape(after));
    let bases = Bases {
        a: shape_a.map_or(0, |s| s.span.first),
        b: shape_b.map_or(0, |s| s.span.first),
    };
    let mut stops = Names::default();
    // Numbered first, so that a change to it is known whichever run has it first.
    let max_tokens = stops.number(Some("max_tokens"));
    let mut models = Names::default();
    let mut clusters = Names::default();
    let mut samples = 1_usize;
    let mut totals = Totals::default();
    let mut sums = paired::PairSums::new(clustered);
    let (mut latencies_before, mut latencies_after) = (Latencies::default(), Latencies::default());
    let mut listed: BTreeMap<Change, Blocks<Listed>> = BTreeMap::new();
    // The jobs that changed nothing else, by their changes of cost and of latency.
    let (mut by_cost, mut by_latency) = (Top::default(), Top::default());
    let mut order = 0_usize;

    let mut firsts = Sides::new(&before.name);
    // The second run's jobs of the chunks read so far whose job of the first run is not
    // yet whole.
    let mut partners: HashMap<(String, String), Group> = HashMap::new();
    let mut compare_one = |a: Group,
                           partners: &mut HashMap<(String, String), Group>,
                           clusters: &mut Names|
     -> anyhow::Result<()> {
        samples = samples.max(a.side.samples as usize);
        let cluster = clusters
            .number(cluster_of(a.tags.as_deref(), options.cluster_tag.as_deref()).as_deref());
        let Some(b) = partners.remove(&key_of(&a, by_model)) else {
            listed.entry(Change::Missing).or_default().push(Listed::of(
                Some(&a.side),
                None,
                bases,
            )?);
            return Ok(());
        };
        let (x, y) = (&a.side, &b.side);
        samples = samples.max(y.samples as usize);
        totals.passed_after += y.passed as usize;
        totals.graded_after += y.graded as usize;
        add_cost(&mut totals.cost_after_pico_usd, Some(y.cost_sum))?;
        latencies_after.extend(&b.latencies);
        totals.matched += 1;
        totals.passed_before += x.passed as usize;
        totals.graded_before += x.graded as usize;
        add_cost(&mut totals.cost_before_pico_usd, Some(x.cost_sum))?;
        latencies_before.extend(&a.latencies);
        sums.add(&x.measures, &y.measures, clusters.name(cluster));
        let row = Listed::of(Some(x), Some(y), bases)?;
        match change_of(x, y, max_tokens) {
            Some(change) => listed.entry(change).or_default().push(row),
            None => {
                let cost = y
                    .cost_pico_usd
                    .zip(x.cost_pico_usd)
                    .and_then(|(y, x)| y.checked_sub(x));
                let latency = y
                    .latency_ms
                    .zip(x.latency_ms)
                    .and_then(|(y, x)| y.checked_sub(x));
                let size = |d: Option<i64>| std::cmp::Reverse(d.map_or(0, i64::unsigned_abs));
                order += 1;
                if cost.is_some_and(|d| d != 0) {
                    let key = Largest {
                        change: size(cost),
                        then: std::cmp::Reverse(0),
                        order,
                    };
                    by_cost.add(key, row);
                }
                if latency.is_some_and(|d| d != 0) {
                    let key = Largest {
                        change: size(latency),
                        then: size(cost),
                        order,
                    };
                    by_latency.add(key, row);
                }
            }
        }
        Ok(())
    };
    let other = (after.id, shape_b.map_or(1, |s| s.samples));
    if let Some(run) = &shape_a {
        store
            .each_job_score_with_partners(
                run,
                other,
                by_model,
                clustered,
                |found, rows| -> anyhow::Result<()> {
                    let mut seconds = Sides::new(&after.name);
                    for row in found {
                        if let Some(b) = seconds.push(row, &mut stops, &mut models)? {
                            partners.entry(key_of(&b, by_model)).or_insert(b);
                        }
                    }
                    if let Some(b) = seconds.finish()? {
                        partners.entry(key_of(&b, by_model)).or_insert(b);
                    }
                    for row in rows {
                        if let Some(a) = firsts.push(row, &mut stops, &mut models)? {
                            compare_one(a, &mut partners, &mut clusters)?;
                        }
                    }
                    Ok(())
                },
            )
            .await?;
    }
    if let Some(a) = firsts.finish()? {
        compare_one(a, &mut partners, &mut clusters)?;
    }

    // Jobs of the second run only, in its order.
    let mut new: Blocks<Listed> = Blocks::default();
    let mut seconds = Sides::new(&after.name);
    let mut add_new = |b: Group| -> anyhow::Result<()> {
        samples = samples.max(b.side.samples as usize);
        new.push(Listed::of(None, Some(&b.side), bases)?);
        Ok(())
    };
    if let Some(run) = &shape_b {
        store
            .each_job_score_without_partner(
                run,
                before.id,
                by_model,
                false,
                |row| -> anyhow::Result<()> {
                    if let Some(b) = seconds.push(row, &mut stops, &mut models)? {
                        add_new(b)?;
                    }
                    Ok(())
                },
            )
            .await?;
    }
    if let Some(b) = seconds.finish()? {
        add_new(b)?;
    }
    if !new.is_empty() {
        listed.insert(Change::New, new);
    }
    totals.counts = listed.iter().map(|(k, rows)| (*k, rows.len())).collect();
    // The largest changes in cost and in latency among the jobs that changed nothing else,
    // largest first (the latency's ties in the order of the cost's).
    let mut largest = BTreeMap::new();
    for (change, top) in [(Change::Cost, by_cost), (Change::Latency, by_latency)] {
        if top.count > 0 {
            largest.insert(change, top.count);
            listed.insert(change, top.rows().into_iter().collect());
        }
    }
    totals.latency_p50_before_ms = latencies_before.median();
    totals.latency_p50_after_ms = latencies_after.median();
    Ok(Runs {
        diff: Diff {
            comparisons: sums.compare(&before.name, &after.name, options.cluster_tag.as_deref()),
            before: before.name.clone(),
            after: after.name.clone(),
            by_model,
            samples,
            totals,
            rows: Vec::new(),
            left_out: BTreeMap::new(),
        },
        before_id: before.id,
        after_id: after.id,
        listed,
        bases,
        largest,
        models,
    })
}

impl Runs {
    /// The listed jobs `keep` selects, kind by kind (most important first, each in its
    /// order), at most `per_kind` of each kind, after the first `skip`, at most `take`, read
    /// into `diff.rows`; and how many `keep` selects in all (each kind cut at `per_kind`).
    pub async fn load_rows(
        &mut self,
        store: &Store,
        keep: impl Fn(RowKey<'_>) -> bool,
        per_kind: usize,
        skip: usize,
        take: usize,
    ) -> anyhow::Result<usize> {
        let (mut rows, matched) = self.rows(store, keep, per_kind, skip, take).await?;
        self.diff.rows.append(&mut rows);
        Ok(matched)
    }

    /// The rows [`Runs::load_rows`] reads, returned rather than kept, with how many `keep`
    /// selects in all.
    pub async fn rows(
        &self,
        store: &Store,
        keep: impl Fn(RowKey<'_>) -> bool,
        per_kind: usize,
        mut skip: usize,
        take: usize,
    ) -> anyhow::Result<(Vec<DiffRow>, usize)> {
        let mut chosen: Vec<(Change, Listed)> = Vec::new();
        let mut matched = 0;
        for (change, rows) in &self.listed {
            let selected = rows
                .iter()
                .filter(|r| {
                    keep(RowKey {
                        change: *change,
                        model: self.models.name(r.model).unwrap_or_default(),
                        before: r.before,
                        after: r.after,
                    })
                })
                .take(per_kind);
            for row in selected {
                matched += 1;
                if skip > 0 {
                    skip -= 1;
                } else if chosen.len() < take {
                    chosen.push((*change, *row));
                }
            }
        }
        let rows = listed_rows(store, self.before_id, self.after_id, self.bases, &chosen).await?;
        Ok((rows, matched))
    }

    /// Roughly the bytes it holds.
    pub fn weight(&self) -> usize {
        let listed: usize = self.listed.values().map(Blocks::weight).sum();
        listed + self.models.weight()
    }
}

/// A job of a run as a listed row shows it.
struct Shown {
    job_id: String,
    model: String,
    prompt: Option<String>,
    side: JobSide,
}

/// The jobs of a run with these row ids, by row id.
async fn shown(
    store: &Store,
    run_id: i64,
    mut ids: Vec<i64>,
) -> anyhow::Result<HashMap<i64, Shown>> {
    ids.sort_unstable();
    ids.dedup();
    let chunks: Vec<Vec<i64>> = ids.chunks(ROW_CHUNK * 2).map(<[i64]>::to_vec).collect();
    let mut shown = HashMap::new();
    store
        .each_listed_job(run_id, chunks, |views| -> anyhow::Result<()> {
            for view in &views {
                shown.insert(
                    view.id,
                    Shown {
                        job_id: view.job_id.as_ref().to_owned(),
                        model: view.model.as_ref().to_owned(),
                        prompt: view.prompt.as_deref().map(excerpt),
                        side: JobSide::of(view),
                    },
                );
            }
            Ok(())
        })
        .await?;
    Ok(shown)
}

/// The listed jobs of a comparison of two runs, read from the store by the row ids of the
/// job in each run, in the order given.
async fn listed_rows(
    store: &Store,
    before: i64,
    after: i64,
    bases: Bases,
    listed: &[(Change, Listed)],
) -> anyhow::Result<Vec<DiffRow>> {
    let shown_a = shown(
        store,
        before,
        listed.iter().filter_map(|r| r.1.a(bases)).collect(),
    )
    .await?;
    let shown_b = shown(
        store,
        after,
        listed.iter().filter_map(|r| r.1.b(bases)).collect(),
    )
    .await?;
    let mut rows = Vec::new();
    for (change, row) in listed {
        let change = *change;
        let a = row.a(bases).and_then(|id| shown_a.get(&id));
        let b = row.b(bases).and_then(|id| shown_b.get(&id));
        // A row deleted since the first pass is left out.
        let Some(first) = a.or(b) else { continue };
        rows.push(DiffRow {
            change,
            job_id: first.job_id.clone(),
            model: first.model.clone(),
            prompt: first.prompt.clone(),
            before: a.map(|s| s.side.clone()),
            after: b.map(|s| s.side.clone()),
        });
    }
    Ok(rows)
}

/// `*sum += cost`, or [`CostOverflow`]: a sum of stored costs is never wrapped or saturated.
fn add_cost(sum: &mut i64, cost: Option<i64>) -> Result<(), CostOverflow> {
    *sum = sum.checked_add(cost.unwrap_or(0)).ok_or(CostOverflow)?;
    Ok(())
}

/// Latencies in milliseconds, for their exact median, held as compactly as they allow: a
/// count of each value while there are few distinct ones (latencies to the millisecond
/// recur: a million of them take a few thousand values), and past [`Latencies::MOST_COUNTED`]
/// the values themselves, 4 bytes each where they fit a `u32` (any latency under 49 days), 8
/// for the rest.
#[derive(Debug, Default)]
struct Latencies {
    counts: HashMap<i64, u64>,
    /// Set once the values are held rather than counted.
    values: Option<Values>,
}

#[derive(Debug, Default)]
struct Values {
    small: Vec<u32>,
    /// Those below zero or of 2³² ms and more.
    other: Vec<i64>,
}

impl Values {
    fn push(&mut self, value: i64) {
        match u32::try_from(value) {
            Ok(small) => self.small.push(small),
            Err(_) => self.other.push(value),
        }
    }

    /// The value at `k` (from 0) in order.
    fn nth(mut self, mut k: usize) -> Option<i64> {
        self.other.sort_unstable();
        // In order: the values below zero, the small ones, those of 2³² ms and more.
        let below = self.other.partition_point(|&v| v < 0);
        if k < below {
            return self.other.get(k).copied();
        }
        k -= below;
        if k < self.small.len() {
            return Some(i64::from(*self.small.select_nth_unstable(k).1));
        }
        self.other.get(below + k - self.small.len()).copied()
    }
}

impl Latencies {
    /// Distinct values counted at most (about 2 MB of counts) before the values are held.
    const MOST_COUNTED: usize = 1 << 16;

    fn extend(&mut self, values: &[i64]) {
        for &value in values {
            match &mut self.values {
                Some(held) => held.push(value),
                None => {
                    *self.counts.entry(value).or_default() += 1;
                    if self.counts.len() > Self::MOST_COUNTED {
                        let mut held = Values::default();
                        for (value, count) in self.counts.drain() {
                            for _ in 0..count {
                                held.push(value);
                            }
                        }
                        self.counts = HashMap::new();
                        self.values = Some(held);
                    }
                }
            }
        }
    }

    /// The median (the lower of the two middle values of an even count).
    fn median(self) -> Option<i64> {
        if let Some(values) = self.values {
            let n = values.small.len() + values.other.len();
            return values.nth(n.checked_sub(1)? / 2);
        }
        let n: u64 = self.counts.values().sum();
        let k = n.checked_sub(1)? / 2;
        let mut counts: Vec<(i64, u64)> = self.counts.into_iter().collect();
        counts.sort_unstable();
        let mut below = 0;
        for (value, count) in counts {
            below += count;
            if k < below {
                return Some(value);
            }
        }
        None
    }
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
    /// Disagreements first (those with a failure first), then failures, then the rest, each
    /// in input order: those read so far (see [`Models`]), every job's from [`matrix`].
    pub rows: Vec<MatrixRow>,
    /// Each model against the baseline over the jobs both answered: score, cost, latency.
    pub comparisons: Vec<PairedComparison>,
    /// Jobs where the models disagree or some model failed, listed or not.
    #[serde(skip)]
    pub listed: usize,
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

/// What a listing of a matrix's rows selects on: whether the models disagree on a job or
/// some model failed it, and its cells' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub disagree: bool,
    pub failed: bool,
    /// One bit per [`Outcome`] some cell has.
    outcomes: u8,
}

impl Flags {
    fn of(outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let mut mask = 0_u8;
        for outcome in outcomes {
            mask |= 1 << outcome as u8;
        }
        let has = |o: Outcome| mask & (1 << o as u8) != 0;
        Self {
            disagree: mask.count_ones() > 1,
            failed: has(Outcome::Fail) || has(Outcome::Error),
            outcomes: mask,
        }
    }

    /// Some model's cell has this outcome.
    pub fn has(self, outcome: Outcome) -> bool {
        self.outcomes & (1 << outcome as u8) != 0
    }

    /// Listed in full: the models disagree or some model failed.
    pub fn listed(self) -> bool {
        self.disagree || self.failed
    }

    /// Where its row comes in a listing: disagreements (those with a failure first), then
    /// failures, then the rest.
    fn rank(self) -> u8 {
        match (self.disagree, self.failed) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }
    }
}

/// What the first pass over a run keeps of each job: the end of its cells' row ids in
/// [`Models::ids`], and its flags.
#[derive(Debug, Clone, Copy)]
struct Entry {
    end: u32,
    flags: Flags,
}

/// The jobs × models comparison of a run, its figures made in one pass over the rows' scores,
/// costs and latencies; the rows themselves (answers, graders' verdicts) are read on demand,
/// a chunk at a time, by [`Models::each_row`]. It holds a few numbers per job: the row id of
/// each model's first sample, its flags, and for the comparisons each job's differences.
#[derive(Debug, Clone)]
pub struct Models {
    /// Everything but the rows.
    pub matrix: Matrix,
    run_id: i64,
    jobs: Blocks<Entry>,
    /// Per job, in input order, the row id of each of its models' first sample.
    ids: Blocks<i64>,
}

/// Jobs whose rows are read from the store at a time.
const ROW_CHUNK: usize = 500;

/// A job of the first pass, while its rows come in.
struct JobAcc {
    job_id: String,
    hash: u64,
    cluster: Option<String>,
    /// Per model of it, in order: the model's index in order of appearance, its first
    /// sample's outcome, and the sums of every sample's measures.
    cells: Vec<(usize, Outcome, paired::MeanMeasures)>,
}

/// The first job of a run met again in row order after other jobs' rows (its rows come in
/// two stretches or more), among the jobs of these hashes: the run read again, the jobs of
/// the hashes named only (two jobs may share a hash).
async fn split_job(
    store: &Store,
    run: &RunRow,
    hashes: &std::collections::HashSet<u64>,
) -> anyhow::Result<Option<String>> {
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut last: Option<String> = None;
    let mut split: Option<String> = None;
    store
        .each_job_score(run.id, false, |row| -> anyhow::Result<()> {
            if split.is_some() || last.as_deref() == Some(row.job_id.as_ref()) {
                return Ok(());
            }
            if hashes.contains(&hash_of(&row.job_id)) && !seen.insert(row.job_id.to_string()) {
                split = Some(row.job_id.to_string());
            }
            last = Some(row.job_id.into_owned());
            Ok(())
        })
        .await?;
    Ok(split)
}

fn hash_of(text: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(text)
}

/// The jobs × models matrix of one run, each model compared with the baseline, its rows
/// not yet read (see [`Models::each_row`]).
pub async fn models(store: &Store, run: &RunRow, options: &Options) -> anyhow::Result<Models> {
    let clustered = options.cluster_tag.is_some();
    // Models in order of appearance: the order of a job's fan-out.
    let mut listed: Vec<String> = Vec::new();
    let mut totals: Vec<ModelTotals> = Vec::new();
    // Per model in order of appearance, its comparison with the baseline.
    let mut sums: Vec<Option<paired::PairSums>> = Vec::new();
    let mut samples = 1;
    let mut group_samples = 0;
    let mut jobs: Blocks<Entry> = Blocks::default();
    let mut ids: Blocks<i64> = Blocks::default();
    // Each job's hash, to tell a job whose rows come in two stretches: sorted once at the end,
    // 8 bytes a job where a set would take about three times that.
    let mut hashes: Vec<u64> = Vec::new();
    let mut current: Option<JobAcc> = None;
    let (mut disagreements, mut failures) = (0, 0);
    let baseline = options.baseline.as_deref();
    let mut finish = |job: JobAcc, listed: &[String], end: usize| -> anyhow::Result<()> {
        hashes.push(job.hash);
        let flags = Flags::of(job.cells.iter().map(|c| c.1));
        disagreements += usize::from(flags.disagree);
        failures += usize::from(flags.failed);
        jobs.push(Entry {
            end: u32::try_from(end).map_err(|_| anyhow::anyhow!("too many jobs"))?,
            flags,
        });
        let base_model = match baseline {
            Some(model) => listed.iter().position(|m| m == model),
            None => (!listed.is_empty()).then_some(0),
        };
        let Some(base) = job
            .cells
            .iter()
            .find(|c| Some(c.0) == base_model)
            .map(|c| c.2.mean())
        else {
            return Ok(());
        };
        for (model, _, cell) in &job.cells {
            if Some(*model) == base_model {
                continue;
            }
            if sums.len() <= *model {
                sums.resize(*model + 1, None);
            }
            sums[*model]
                .get_or_insert_with(|| paired::PairSums::new(clustered))
                .add(&base, &cell.mean(), job.cluster.as_deref());
        }
        Ok(())
    };
    store
        .each_job_score(run.id, clustered, |row| -> anyhow::Result<()> {
            let grades_outcome = Outcome::of_verdicts(&row.state, row.passed, row.failed);
            let measures = Measures::new(grades_outcome, row.cost_pico_usd, row.latency_ms);
            let model = match listed.iter().position(|m| *m == row.model) {
                Some(i) => i,
                None => {
                    listed.push(row.model.as_ref().to_owned());
                    totals.push(ModelTotals {
                        model: row.model.as_ref().to_owned(),
                        ..ModelTotals::default()
                    });
                    listed.len() - 1
                }
            };
            let t = &mut totals[model];
            t.passed += usize::from(grades_outcome == Outcome::Pass);
            t.graded += usize::from(grades_outcome.graded());
            t.answered += usize::from(grades_outcome.answered());
            t.errors += usize::from(grades_outcome == Outcome::Error);
            add_cost(&mut t.cost_pico_usd, row.cost_pico_usd)?;
            let same_job = current.as_ref().is_some_and(|j| j.job_id == row.job_id);
            if !same_job && let Some(job) = current.take() {
                finish(job, &listed, ids.len())?;
            }
            let job = current.get_or_insert_with(|| JobAcc {
                hash: hash_of(&row.job_id),
                cluster: cluster_of(row.tags.as_deref(), options.cluster_tag.as_deref()),
                job_id: row.job_id.into_owned(),
                cells: Vec::new(),
            });
            match job.cells.last_mut() {
                Some((m, _, sum)) if *m == model => {
                    sum.add(&measures);
                    group_samples += 1;
                    samples = samples.max(group_samples);
                }
                _ => {
                    if job.cells.iter().any(|c| c.0 == model) {
                        anyhow::bail!(
                            "run {}: the samples of job {} on {} are not stored together; msgbatch stores them in one stretch",
                            run.name,
                            job.job_id,
                            row.model
                        );
                    }
                    let mut sum = paired::MeanMeasures::default();
                    sum.add(&measures);
                    job.cells.push((model, grades_outcome, sum));
                    ids.push(row.id);
                    group_samples = 1;
                }
            }
            Ok(())
        })
        .await?;
    if let Some(job) = current.take() {
        finish(job, &listed, ids.len())?;
    }
    hashes.sort_unstable();
    let twice: std::collections::HashSet<u64> = hashes
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    drop(hashes);
    if !twice.is_empty()
        && let Some(job) = split_job(store, run, &twice).await?
    {
        anyhow::bail!(
            "run {}: the rows of job {job} are not stored together; msgbatch stores a job's rows in one stretch",
            run.name,
        );
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
    let mut comparisons = Vec::new();
    if let Some(base) = &baseline {
        for (model, sums) in listed.iter().zip(&sums) {
            if let Some(sums) = sums {
                comparisons.extend(sums.compare(base, model, options.cluster_tag.as_deref()));
            }
        }
    }
    totals.sort_by(|a, b| a.model.cmp(&b.model));
    let models: Vec<String> = totals.iter().map(|t| t.model.clone()).collect();
    let listed_jobs = jobs.iter().filter(|j| j.flags.listed()).count();
    Ok(Models {
        matrix: Matrix {
            run: run.name.clone(),
            baseline,
            jobs: jobs.len(),
            samples,
            disagreements,
            failures,
            models,
            per_model: totals,
            rows: Vec::new(),
            comparisons,
            listed: listed_jobs,
        },
        run_id: run.id,
        jobs,
        ids,
    })
}

impl Models {
    /// The jobs whose flags `keep` selects.
    pub fn count(&self, keep: impl Fn(Flags) -> bool) -> usize {
        self.jobs.iter().filter(|j| keep(j.flags)).count()
    }

    /// The rows `keep` selects, in the matrix's order (see [`Flags::rank`]), after the first
    /// `skip`, at most `take`, each given to `sink` as it is read: no more than a chunk or
    /// two of them is held (the next read while `sink` takes these).
    pub async fn each_row(
        &self,
        store: &Store,
        keep: impl Fn(Flags) -> bool,
        mut skip: usize,
        take: usize,
        mut sink: impl FnMut(MatrixRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut chunks: Vec<Vec<usize>> = Vec::new();
        let mut taken = 0;
        'ranks: for rank in 0..4 {
            for (i, job) in self.jobs.iter().enumerate() {
                if job.flags.rank() != rank || !keep(job.flags) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if taken == take {
                    break 'ranks;
                }
                taken += 1;
                match chunks.last_mut() {
                    Some(chunk) if chunk.len() < ROW_CHUNK => chunk.push(i),
                    _ => chunks.push(vec![i]),
                }
            }
        }
        let ids: Vec<Vec<i64>> = chunks
            .iter()
            .map(|jobs| {
                let mut ids: Vec<i64> =
                    jobs.iter().flat_map(|&j| self.ids_of(j)).copied().collect();
                ids.sort_unstable();
                ids
            })
            .collect();
        let column: HashMap<&str, usize> = self
            .matrix
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        let mut chunks = chunks.iter();
        store
            .each_listed_job(self.run_id, ids, |views| {
                let jobs = chunks.next().map_or(&[][..], Vec::as_slice);
                self.rows_of(jobs, &views, &column, &mut sink)
            })
            .await
    }

    /// The rows `keep` selects as [`Models::each_row`] gives them, into `matrix.rows`.
    pub async fn load_rows(
        &mut self,
        store: &Store,
        keep: impl Fn(Flags) -> bool,
        skip: usize,
        take: usize,
    ) -> anyhow::Result<()> {
        let mut rows = self.rows(store, keep, skip, take).await?;
        self.matrix.rows.append(&mut rows);
        Ok(())
    }

    /// The rows `keep` selects as [`Models::each_row`] gives them.
    pub async fn rows(
        &self,
        store: &Store,
        keep: impl Fn(Flags) -> bool,
        skip: usize,
        take: usize,
    ) -> anyhow::Result<Vec<MatrixRow>> {
        let mut rows = Vec::new();
        self.each_row(store, keep, skip, take, |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Roughly the bytes it holds, its rows aside.
    pub fn weight(&self) -> usize {
        self.jobs.weight() + self.ids.weight()
    }

    fn ids_of(&self, job: usize) -> impl Iterator<Item = &i64> {
        let end = |j: usize| self.jobs.get(j).map_or(0, |e| e.end as usize);
        let start = job.checked_sub(1).map_or(0, end);
        self.ids.range(start, end(job))
    }

    /// The rows of these jobs, made of their rows read from the store (in row order),
    /// given to `sink` in turn.
    fn rows_of(
        &self,
        jobs: &[usize],
        views: &[ListedJob<'_>],
        column: &HashMap<&str, usize>,
        sink: &mut impl FnMut(MatrixRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for &job in jobs {
            let mut row: Option<MatrixRow> = None;
            for id in self.ids_of(job) {
                // A row deleted since the first pass is left out.
                let Ok(found) = views.binary_search_by_key(id, |v| v.id) else {
                    continue;
                };
                let view = &views[found];
                let Some(&i) = column.get(view.model.as_ref()) else {
                    continue;
                };
                let row = row.get_or_insert_with(|| MatrixRow {
                    job_id: view.job_id.as_ref().to_owned(),
                    prompt: view.prompt.as_deref().map(excerpt),
                    disagree: false,
                    failed: false,
                    cells: vec![None; column.len()],
                });
                row.cells[i] = Some(JobSide::of(view));
            }
            if let Some(mut row) = row {
                let flags = Flags::of(row.cells.iter().flatten().map(|c| c.outcome));
                row.disagree = flags.disagree;
                row.failed = flags.failed;
                sink(row)?;
            }
        }
        Ok(())
    }
}

/// The jobs × models matrix of one run with every row read: for a run small enough to hold.
pub async fn matrix(store: &Store, run: &RunRow, options: &Options) -> anyhow::Result<Matrix> {
    let mut models = models(store, run, options).await?;
    models.load_rows(store, |_| true, 0, usize::MAX).await?;
    Ok(models.matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(outcome: Outcome, answer: &str) -> JobSide {
        JobSide {
            outcome,
            failed_graders: vec!["contains#0".to_owned()],
            grades: Vec::new(),
            stop_reason: Some("end_turn".to_owned()),
            cost_pico_usd: Some(12),
            latency_ms: None,
            output_tokens: Some(3),
            error: None,
            answer: Some(answer.to_owned()),
        }
    }

    /// The JSON of a run's models written a row at a time is the whole matrix's JSON, to the
    /// byte, with rows and without.
    #[test]
    fn models_written_row_by_row_are_the_whole_json() {
        let pairs = [Pair {
            a: Measures::new(Outcome::Pass, Some(5), Some(7)),
            b: Measures::new(Outcome::Fail, Some(3), Some(9)),
            cluster: None,
        }];
        let mut matrix = Matrix {
            run: "big \"run\"\n".to_owned(),
            models: vec!["a".to_owned(), "b".to_owned()],
            baseline: Some("a".to_owned()),
            jobs: 2,
            samples: 1,
            disagreements: 1,
            failures: 1,
            per_model: vec![ModelTotals {
                model: "a".to_owned(),
                passed: 1,
                ..ModelTotals::default()
            }],
            rows: vec![
                MatrixRow {
                    job_id: "q1".to_owned(),
                    prompt: Some("say\n  \"x\"".to_owned()),
                    disagree: true,
                    failed: true,
                    cells: vec![Some(side(Outcome::Pass, "x\n}")), None],
                },
                MatrixRow {
                    job_id: "q2".to_owned(),
                    prompt: None,
                    disagree: false,
                    failed: false,
                    cells: vec![None, Some(side(Outcome::Fail, ""))],
                },
            ],
            comparisons: paired::compare("a", "b", &pairs, None),
            listed: 1,
        };
        for _ in 0..3 {
            let mut streamed = render::json_models_head(&matrix).unwrap();
            for (i, row) in matrix.rows.iter().enumerate() {
                let mut bytes = Vec::new();
                render::json_models_row(&mut bytes, row, i == 0).unwrap();
                streamed.push_str(std::str::from_utf8(&bytes).unwrap());
            }
            streamed.push_str(&render::json_models_tail(&matrix, matrix.rows.len()).unwrap());
            let whole = serde_json::to_string_pretty(&Comparison::Models(matrix.clone())).unwrap();
            assert_eq!(streamed, whole);
            matrix.rows.pop();
            matrix.comparisons.clear();
        }
    }

    /// The median of latencies, counted or kept in 4 bytes where they fit, is the plain lower
    /// median of them all, whatever the mix of those below zero, small and past 2³² ms.
    #[test]
    fn the_latencies_median_is_the_plain_lower_median() {
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(Latencies::default().median(), None);
        // Few values or many, counted or held (past `MOST_COUNTED` distinct ones).
        let sizes = (1..200).chain([Latencies::MOST_COUNTED * 3]);
        for n in sizes {
            let spread = if n > 200 { 1 << 40 } else { 5_000 };
            let values: Vec<i64> = (0..n)
                .map(|_| match rng.u8(0..6) {
                    0 => -rng.i64(1..1_000),
                    1 => (1 << 32) + rng.i64(0..1_000),
                    2 => i64::from(u32::MAX),
                    _ => rng.i64(0..spread),
                })
                .collect();
            let mut latencies = Latencies::default();
            for chunk in values.chunks(3) {
                latencies.extend(chunk);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            assert_eq!(latencies.values.is_some(), n > 200);
            assert_eq!(latencies.median(), Some(sorted[(n - 1) / 2]), "{n} values");
        }
    }

    /// A listed job gives back its row ids in each run, and one too far past its run's first
    /// row to count from it is said, not wrapped into another row's id.
    #[test]
    fn a_listed_job_gives_back_its_row_ids() {
        let side = |id: i64| Side {
            id,
            outcome: Outcome::Pass,
            stop: 0,
            model: 3,
            cost_pico_usd: None,
            latency_ms: None,
            measures: Measures::default(),
            samples: 1,
            passed: 1,
            graded: 1,
            cost_sum: 0,
        };
        let bases = Bases { a: -5, b: 1 << 40 };
        let far = i64::from(u32::MAX);
        let row = Listed::of(Some(&side(far - 5)), Some(&side((1 << 40) + 7)), bases).unwrap();
        assert_eq!(
            (row.a(bases), row.b(bases)),
            (Some(far - 5), Some((1 << 40) + 7))
        );
        assert_eq!(row.model, 3);
        let only_b = Listed::of(None, Some(&side((1 << 40) + 7)), bases).unwrap();
        assert_eq!(
            (only_b.a(bases), only_b.b(bases)),
            (None, Some((1 << 40) + 7))
        );
        for id in [far - 4, -6, i64::MIN] {
            let error = Listed::of(Some(&side(id)), None, bases).unwrap_err();
            assert!(
                error.to_string().contains("rows past its run's first"),
                "{error}"
            );
        }
    }

    #[test]
    fn excerpts_are_one_line_and_cut_on_a_character() {
        assert_eq!(excerpt("  two\nlines \t"), "two lines");
        let long = "é".repeat(300);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }
}
