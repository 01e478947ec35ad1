//! Cost and latency reports over one or more runs.
//!
//! Every figure comes from the database by SQL aggregation and can be recomputed by hand:
//! token counts are sums of the `results` columns; costs are those sums times the price table
//! (integer pico-USD, exact); percentiles are nearest-rank order statistics of the stored
//! latencies (the value at 1-based rank `ceil(p/100 · n)` of the `n` sorted values).
//!
//! This file gathers the figures into groups; `model` holds what a report is, `cost` prices
//! its slices, `warnings` says what it leaves out, `limits` how runs used their rate limits,
//! and `text`, `html` and `csv` render it.

mod cost;
mod csv;
mod html;
mod limits;
mod model;
mod scores;
mod text;
mod warnings;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::pricing::PriceTable;
use crate::store::{GroupBy, Measure, ReportRow, RunRow, Store, ValueCount};
use cost::SumOverflow;

pub use csv::{failures_csv, groups_csv};
pub use html::{charts, html};
pub use model::{
    CacheUse, Cost, Difference, ErrorCount, Grading, Group, Histogram, Jobs, Options, Percentiles,
    PoolUse, Report, RunInfo, TierUse, Tokens, latency_cells, usd,
};
pub use scores::{JobScore, Score};
pub use text::{count, markdown, table};

use model::ratio;

/// The percentiles every latency figure reports.
const PERCENTILES: [i64; 4] = [50, 90, 95, 99];

impl Report {
    pub async fn build(store: &Store, runs: &[RunRow], options: &Options) -> anyhow::Result<Self> {
        let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let mut merge = Merge {
            names: runs.iter().map(|r| (r.id, r.name.as_str())).collect(),
            by_run: options.by == GroupBy::Run,
            groups: BTreeMap::new(),
            totals: BTreeMap::new(),
        };
        let threshold = cost::long_context_threshold(&options.prices, options.reprice.as_ref());
        let mut unpriced: BTreeSet<String> = BTreeSet::new();
        // Where the runs' rows lie, read once for every scan below.
        let spans = store.job_spans(&ids).await?;
        let rows_span = (
            spans.iter().map(|(_, s)| s.first).min().unwrap_or(1),
            spans.iter().map(|(_, s)| s.last).max().unwrap_or(0),
        );
        // The passes over every row are independent: each half of the rows goes through them
        // on its own connection, so that both cores work at once, and the halves' figures are
        // added up as they merge.
        let halves = |(first, last): (i64, i64)| {
            let middle = first + (last - first) / 2;
            [(first, middle), (middle + 1, last)]
        };
        let [low, high] = halves(rows_span);
        let sums = |rows: (i64, i64)| store.report_rows(&ids, rows, &options.by, threshold);
        let (mut rows, more_rows) = tokio::try_join!(sums(low), sums(high))?;
        rows.extend(more_rows);
        // A run whose rows are one stretch and whose results all fall in one group (one model
        // of a run grouped by model, say) has its latencies counted from the latency index
        // alone; the others' are counted by joining results to their jobs.
        let mut latencies: Vec<ValueCount> = Vec::new();
        let mut joined: Vec<(i64, (i64, i64))> = Vec::new();
        for (run, span) in &spans {
            let mut keys = rows
                .iter()
                .filter(|r| r.run_id == *run && r.results > 0)
                .map(|r| r.key.as_str());
            let first = keys.next();
            match first {
                Some(key) if span.contiguous && keys.all(|k| k == key) => {
                    let key = key.to_owned();
                    latencies.extend(
                        store
                            .latency_counts(span.first, span.last)
                            .await?
                            .into_iter()
                            .map(|(value, count)| ValueCount {
                                run_id: *run,
                                key: key.clone(),
                                value,
                                count,
                            }),
                    );
                }
                _ => joined.push((*run, (span.first, span.last))),
            }
        }
        let joined_runs: Vec<i64> = joined.iter().map(|(run, _)| *run).collect();
        let joined_span = (
            joined.iter().map(|(_, s)| s.0).min().unwrap_or(1),
            joined.iter().map(|(_, s)| s.1).max().unwrap_or(0),
        );
        let [joined_low, joined_high] = halves(joined_span);
        let half = |rows: (i64, i64), joined_rows: (i64, i64)| {
            let ids = &ids;
            let joined_runs = &joined_runs;
            async move {
                let latencies = if joined_runs.is_empty() {
                    Vec::new()
                } else {
                    store
                        .report_values(joined_runs, joined_rows, &options.by, Measure::Latency)
                        .await?
                };
                let ttfts = store
                    .report_values(ids, rows, &options.by, Measure::Ttft)
                    .await?;
                Ok::<_, crate::store::StoreError>((latencies, ttfts))
            }
        };
        let ((more_latencies, mut ttfts), (most_latencies, more_ttfts)) =
            tokio::try_join!(half(low, joined_low), half(high, joined_high))?;
        latencies.extend(more_latencies);
        latencies.extend(most_latencies);
        ttfts.extend(more_ttfts);
        let points = if options.charts {
            store.spend_over_time(&spans).await?
        } else {
            Vec::new()
        };
        for row in rows {
            merge.create(row.run_id, &row.key);
            merge.try_each(row.run_id, &row.key, |group| {
                add_row(group, &row, options, &mut unpriced)
            })?;
        }
        let mut histogram = Histogram::default();
        for (rows, is_ttft) in [(latencies, false), (ttfts, true)] {
            let values = merge.values(rows, |group, counts| {
                let p = percentiles(counts);
                if is_ttft {
                    group.ttft_ms = p;
                } else {
                    group.latency_ms = p;
                }
            });
            if !is_ttft {
                histogram = Histogram::from_values(&values);
            }
        }
        for row in store.report_errors(&ids, &options.by).await? {
            merge.each(row.run_id, &row.key, |group| {
                match group
                    .errors
                    .iter_mut()
                    .find(|e| e.error_type == row.error_type && e.http_status == row.http_status)
                {
                    Some(e) => e.attempts += row.count,
                    None => group.errors.push(ErrorCount {
                        error_type: row.error_type.clone(),
                        http_status: row.http_status,
                        attempts: row.count,
                    }),
                }
            });
        }
        for row in store.report_grading(&ids, &options.by).await? {
            merge.try_each(row.run_id, &row.key, |group| {
                let g = group.grading.get_or_insert_with(Grading::default);
                g.graded += row.graded;
                g.passed += row.passed;
                g.pending += row.pending;
                cost::add(&mut g.judge_cost_pico_usd, row.judge_cost_pico_usd)
            })?;
        }
        let clustered = options.cluster_tag.is_some();
        for row in store
            .report_job_scores(&ids, &options.by, options.cluster_tag.as_deref())
            .await?
        {
            let job = JobScore {
                cluster: row.cluster,
                samples: u64::try_from(row.samples).unwrap_or(0),
                passed: u64::try_from(row.passed).unwrap_or(0),
                jobs: u64::try_from(row.jobs).unwrap_or(0),
            };
            merge.each(row.run_id, &row.key, |group| {
                let g = group.grading.get_or_insert_with(Grading::default);
                g.clustered = clustered;
                g.jobs.push(job.clone());
            });
        }
        for row in store.report_graders(&ids, &options.by).await? {
            merge.each(row.run_id, &row.key, |group| {
                let Some(grading) = group.grading.as_mut() else {
                    return;
                };
                match grading
                    .by_grader
                    .iter_mut()
                    .find(|(k, _, _)| *k == row.kind)
                {
                    Some(entry) => {
                        entry.1 += row.graded;
                        entry.2 += row.passed;
                    }
                    None => grading
                        .by_grader
                        .push((row.kind.clone(), row.graded, row.passed)),
                }
            });
        }
        for row in store.report_cache(&ids, &options.by).await? {
            let saved = match options.prices.lookup(&row.model) {
                Some(price) => price
                    .rates
                    .warmup_saved_pico_usd(u64::try_from(row.warm_read_tokens).unwrap_or(0))?,
                None => 0,
            };
            merge.try_each(row.run_id, &row.key, |group| {
                let cache = group.cache.get_or_insert_with(CacheUse::default);
                cache.prefixes += row.prefixes;
                cache.writes += row.writes;
                cache.writes_avoided += row.writes_avoided;
                cost::add(&mut cache.warmup_saved_pico_usd, saved)
            })?;
        }
        let passing = store.report_passing_latency(&ids, &options.by).await?;
        merge.values(passing, |group, counts| {
            if let Some(grading) = group.grading.as_mut() {
                grading.passing_latency_ms = percentiles(counts);
            }
        });
        let Merge {
            groups, mut totals, ..
        } = merge;

        let mut warnings = warnings::unpriced(&unpriced);
        let mut groups: Vec<Group> = groups.into_values().collect();
        for group in &mut groups {
            group.finish();
            warnings.extend(warnings::truncated(group));
        }
        let mut totals: Vec<Group> = runs
            .iter()
            .filter_map(|r| totals.remove(&(r.name.clone(), r.name.clone())))
            .collect();
        for total in &mut totals {
            total.finish();
            warnings.extend(warnings::of_run(store, runs, total, options).await?);
        }
        let mut limits = Vec::new();
        for run in runs {
            limits.extend(limits::pool_uses(store, run).await?);
        }
        let mut spend_over_time: BTreeMap<String, Vec<(f64, i64)>> = BTreeMap::new();
        for point in points {
            let name = runs
                .iter()
                .find(|r| r.id == point.run_id)
                .map_or_else(String::new, |r| r.name.clone());
            let line = spend_over_time.entry(name).or_default();
            let spent = line.last().map_or(0, |(_, s)| *s) + point.cost_pico_usd;
            #[expect(clippy::cast_precision_loss, reason = "minutes for a chart")]
            line.push((point.at_ms as f64 / 60_000.0, spent));
        }
        let differences = differences(&totals);
        let mut states = Vec::with_capacity(runs.len());
        for run in runs {
            states.push(store.run_state(run).await?);
        }
        warnings::said_once(&mut warnings);
        Ok(Self {
            generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            group_by: match &options.by {
                GroupBy::Model => "model".to_owned(),
                GroupBy::Run => "run".to_owned(),
                GroupBy::Tag(name) => format!("tag:{name}"),
            },
            prices: options.prices.describe(),
            reprice: options.reprice.as_ref().map(PriceTable::describe),
            runs: runs
                .iter()
                .zip(states)
                .map(|(r, state)| RunInfo {
                    id: r.id,
                    name: r.name.clone(),
                    status: state.to_string(),
                    input_path: r.input_path.clone(),
                    // A run stored before keys in a messages path's query were hidden
                    // holds them: the path is shown through the redaction too.
                    gateway: format!("{} {}", r.gateway_name, r.shown_url()),
                })
                .collect(),
            groups,
            totals,
            differences,
            warnings,
            limits,
            histogram,
            spend_over_time,
        })
    }
}

/// Counts of each value by (run, group) and by (run, run).
type Values = BTreeMap<(String, String), BTreeMap<i64, i64>>;

/// Sorts value counts into their groups and their runs' totals.
/// Folds rows into their (run, group) and into their run's total: every figure of a report
/// reaches both through [`Merge::each`].
struct Merge<'a> {
    names: HashMap<i64, &'a str>,
    by_run: bool,
    groups: BTreeMap<(String, String), Group>,
    totals: BTreeMap<(String, String), Group>,
}

impl Merge<'_> {
    fn run(&self, id: i64) -> String {
        self.names.get(&id).copied().unwrap_or("?").to_owned()
    }

    /// The (run, group) key of a row's group and of its run's total.
    fn keys(&self, run_id: i64, key: &str) -> [(String, String); 2] {
        let run = self.run(run_id);
        let group = if self.by_run {
            run.clone()
        } else {
            key.to_owned()
        };
        [(run.clone(), group), (run.clone(), run)]
    }

    /// Makes a row's group and its run's total, if they are not there yet.
    fn create(&mut self, run_id: i64, key: &str) {
        let [group, total] = self.keys(run_id, key);
        for (map, (run, key)) in [(&mut self.groups, group), (&mut self.totals, total)] {
            map.entry((run.clone(), key.clone()))
                .or_insert_with(|| Group {
                    run,
                    key,
                    ..Group::default()
                });
        }
    }

    /// Adds a row's figures to its group and to its run's total with `f`, which stops at a
    /// sum beyond an `i64`: the two are summed apart, and either may overflow.
    fn try_each(
        &mut self,
        run_id: i64,
        key: &str,
        mut f: impl FnMut(&mut Group) -> Result<(), SumOverflow>,
    ) -> Result<(), SumOverflow> {
        let mut result = Ok(());
        self.each(run_id, key, |group| {
            if result.is_ok() {
                result = f(group);
            }
        });
        result
    }

    /// Applies `f` to a row's group and to its run's total.
    fn each(&mut self, run_id: i64, key: &str, mut f: impl FnMut(&mut Group)) {
        let [group, total] = self.keys(run_id, key);
        if let Some(group) = self.groups.get_mut(&group) {
            f(group);
        }
        if let Some(total) = self.totals.get_mut(&total) {
            f(total);
        }
    }

    /// Counts the values of a measure per group and per run total, and hands each group its
    /// counts. Returns the groups' counts.
    fn values(
        &mut self,
        rows: Vec<ValueCount>,
        mut f: impl FnMut(&mut Group, &BTreeMap<i64, i64>),
    ) -> Values {
        let mut groups = Values::new();
        let mut totals = Values::new();
        for row in rows {
            let [group, total] = self.keys(row.run_id, &row.key);
            *groups
                .entry(group)
                .or_default()
                .entry(row.value)
                .or_default() += row.count;
            *totals
                .entry(total)
                .or_default()
                .entry(row.value)
                .or_default() += row.count;
        }
        for (map, values) in [(&mut self.groups, &groups), (&mut self.totals, &totals)] {
            for (key, counts) in values {
                if let Some(group) = map.get_mut(key) {
                    f(group, counts);
                }
            }
        }
        groups
    }
}

/// Nearest-rank percentiles from the counts of each distinct value: the value at 1-based rank
/// `ceil(p/100 · n)` of the `n` sorted values.
fn percentiles(counts: &BTreeMap<i64, i64>) -> Option<Percentiles> {
    let n: i64 = counts.values().sum();
    if n == 0 {
        return None;
    }
    let at_rank = |rank: i64| {
        let mut seen = 0;
        for (value, count) in counts {
            seen += count;
            if seen >= rank {
                return *value;
            }
        }
        counts.keys().next_back().copied().unwrap_or(0)
    };
    let rank = |p: i64| (p * n + 99) / 100;
    Some(Percentiles {
        count: n,
        p50: at_rank(rank(PERCENTILES[0])),
        p90: at_rank(rank(PERCENTILES[1])),
        p95: at_rank(rank(PERCENTILES[2])),
        p99: at_rank(rank(PERCENTILES[3])),
        max: at_rank(n),
    })
}

impl Histogram {
    /// Each group's distribution function, from its exact latencies.
    fn from_values(values: &Values) -> Self {
        let cdf = values
            .iter()
            .map(|(key, counts)| {
                let total: i64 = counts.values().sum();
                let mut points: Vec<(i64, f64)> = Vec::new();
                let mut seen = 0;
                let last = counts.keys().next_back().copied();
                for (value, count) in counts {
                    seen += count;
                    #[expect(clippy::cast_precision_loss, reason = "a share for a chart")]
                    let share = seen as f64 / total.max(1) as f64;
                    #[expect(clippy::cast_precision_loss, reason = "a latency for a chart")]
                    let far = points
                        .last()
                        .is_none_or(|(v, _)| *value as f64 >= (*v).max(1) as f64 * 1.02);
                    if far || Some(*value) == last {
                        points.push((*value, share));
                    } else if let Some(point) = points.last_mut() {
                        point.1 = share;
                    }
                }
                (key.clone(), points)
            })
            .collect();
        Self { cdf }
    }
}

impl Group {
    /// Turns the sums into ratios once every row is in.
    fn finish(&mut self) {
        let t = &self.tokens;
        self.cache_hit_ratio = ratio(
            t.cache_read,
            t.input + t.cache_write_5m + t.cache_write_1h + t.cache_read,
        );
        self.cost.complete = self.cost.unpriced_results == 0;
        self.attempts_per_job = ratio(self.sums.attempts, self.sums.sent_jobs);
        self.retries = self.sums.attempts - self.sums.sent_jobs;
        self.output_tokens_per_second = match self.tokens.output.checked_mul(1000) {
            Some(output) => ratio(output, self.sums.generation_ms),
            // Past an `i64` only in a store written by hand: the same rate, in floating point.
            None => ratio(self.tokens.output, self.sums.generation_ms).map(|r| r * 1000.0),
        };
        self.stop_reasons
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let cost = self.cost.total_pico_usd;
        if let Some(g) = &mut self.grading {
            // Pending judges are left out of the rate until their verdict is in.
            let decided = g.graded - g.pending;
            g.pass_rate = ratio(g.passed, decided);
            g.score = Score::of(&std::mem::take(&mut g.jobs), g.clustered);
            // Wilson's interval holds for independent answers: one sample of each job.
            g.pass_rate_ci95 = if g.score.as_ref().is_some_and(|s| s.samples_per_job > 1) {
                None
            } else {
                crate::eval::wilson(g.passed, decided)
            };
            g.cost_per_pass_pico_usd = (g.passed > 0).then(|| cost / g.passed);
        }
        self.errors.sort_by(|a, b| {
            b.attempts
                .cmp(&a.attempts)
                .then_with(|| a.error_type.cmp(&b.error_type))
        });
    }
}

/// Adds a slice of rows to a group: its jobs, tokens and cost.
fn add_row(
    group: &mut Group,
    slice: &ReportRow,
    options: &Options,
    unpriced: &mut BTreeSet<String>,
) -> Result<(), SumOverflow> {
    let jobs = &mut group.jobs;
    jobs.total += slice.jobs;
    jobs.succeeded += slice.succeeded;
    jobs.failed += slice.failed;
    jobs.rejected += slice.rejected;
    jobs.pending += slice.pending;
    group.sums.attempts += slice.attempts;
    group.sums.sent_jobs += slice.sent_jobs;
    group.sums.generation_ms += slice.generation_ms;
    if slice.results == 0 {
        return Ok(());
    }
    let reason = slice
        .stop_reason
        .clone()
        .unwrap_or_else(|| "(none)".to_owned());
    match group.stop_reasons.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, n)) => *n += slice.results,
        None => group.stop_reasons.push((reason, slice.results)),
    }
    let t = &mut group.tokens;
    cost::add(&mut t.input, slice.input_tokens)?;
    cost::add(&mut t.cache_write_5m, slice.cache_write_5m)?;
    cost::add(&mut t.cache_write_1h, slice.cache_write_1h)?;
    cost::add(&mut t.cache_read, slice.cache_read)?;
    cost::add(&mut t.output, slice.output_tokens)?;
    cost::add_slice(&mut group.cost, slice, options, unpriced)
}

#[expect(clippy::cast_precision_loss, reason = "comparisons for display")]
fn differences(totals: &[Group]) -> Vec<Difference> {
    let Some((first, rest)) = totals.split_first() else {
        return Vec::new();
    };
    let metrics = |g: &Group| -> Vec<(&'static str, Option<f64>)> {
        vec![
            ("cost_usd", Some(g.cost.total_pico_usd as f64 / 1e12)),
            ("succeeded_share", ratio(g.jobs.succeeded, g.jobs.total)),
            ("output_tokens", Some(g.tokens.output as f64)),
            ("latency_p50_ms", g.latency_ms.map(|l| l.p50 as f64)),
            ("latency_p95_ms", g.latency_ms.map(|l| l.p95 as f64)),
            ("ttft_p50_ms", g.ttft_ms.map(|l| l.p50 as f64)),
            ("attempts_per_job", g.attempts_per_job),
        ]
    };
    let base = metrics(first);
    let mut out = Vec::new();
    for run in rest {
        for ((name, base), (_, value)) in base.iter().zip(metrics(run)) {
            if let (Some(base), Some(value)) = (base, value) {
                out.push(Difference {
                    run: run.run.clone(),
                    against: first.run.clone(),
                    metric: (*name).to_owned(),
                    base: *base,
                    value,
                    change: value - base,
                    change_pct: (*base != 0.0).then(|| (value - base) / base * 100.0),
                });
            }
        }
    }
    out
}
