//! Cost and latency reports over one or more runs.
//!
//! Every figure comes from the database by SQL aggregation and can be recomputed by hand:
//! token counts are sums of the `results` columns; costs are those sums times the price table
//! (integer pico-USD, exact); percentiles are nearest-rank order statistics of the stored
//! latencies (the value at 1-based rank `ceil(p/100 · n)` of the `n` sorted values).

mod csv;
mod html;
mod scores;
mod text;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::pricing::{ModelPrice, PriceTable, Rates};
use crate::store::{GroupBy, Measure, ReportRow, RunRow, Store, ValueCount};

pub use csv::{failures_csv, groups_csv};
pub use html::{charts, html};
pub use scores::{JobScore, Score};
pub use text::{count, markdown, table};

/// The percentiles every latency figure reports.
const PERCENTILES: [i64; 4] = [50, 90, 95, 99];
/// A share of `max_tokens` stops at or above this is worth a warning.
const MAX_TOKENS_WARNING: f64 = 0.10;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub group_by: String,
    pub prices: String,
    pub reprice: Option<String>,
    pub runs: Vec<RunInfo>,
    /// One per (run, group).
    pub groups: Vec<Group>,
    /// One per run, over all its jobs.
    pub totals: Vec<Group>,
    /// Each run after the first against the first.
    pub differences: Vec<Difference>,
    pub warnings: Vec<String>,
    /// Per run and pool of models with rate limits: how much of each was used.
    pub limits: Vec<PoolUse>,
    /// Latency distribution per (run, group).
    #[serde(skip)]
    pub histogram: Histogram,
    /// Per run: minutes since its first result, and its spend up to then (pico-USD).
    #[serde(skip)]
    pub spend_over_time: BTreeMap<String, Vec<(f64, i64)>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub input_path: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Jobs {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    pub pending: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Tokens {
    pub input: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
    pub cache_read: i64,
    pub output: i64,
}

/// Money in pico-USD (1e-12 USD), exact.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// Priced results only; see `complete`.
    pub total_pico_usd: i64,
    pub input_pico_usd: i64,
    pub cache_write_pico_usd: i64,
    pub cache_read_pico_usd: i64,
    pub output_pico_usd: i64,
    /// The same tokens through the Message Batches API, at half of every price.
    pub batch_api_pico_usd: i64,
    /// The same tokens sent directly, at the standard prices.
    pub direct_pico_usd: i64,
    /// Results answered through a batch, priced at half.
    pub batch_results: i64,
    /// Cache reads and writes at the plain input price, less what they cost (negative when
    /// writes cost more than reads saved).
    pub caching_saved_pico_usd: i64,
    /// At the `--reprice` table, when given.
    pub reprice_pico_usd: Option<i64>,
    /// Results of models without a price, left out of the figures above.
    pub unpriced_results: i64,
    pub unpriced_models: Vec<String>,
    pub complete: bool,
    /// The sum of the costs stored with each result when it was written.
    pub stored_pico_usd: i64,
    /// Results billed above their model's base tier (a long-context premium, or a price set
    /// by prompt length), per model and threshold; empty when every result is at the base.
    pub above_base: Vec<TierUse>,
}

impl Cost {
    /// The cost in dollars, marked when some results are unpriced, and `unpriced` when no
    /// result is priced: a model without a price never reads as $0.
    pub fn display(&self, incomplete: &str) -> String {
        if !self.complete && self.total_pico_usd == 0 {
            return "unpriced".to_owned();
        }
        let mut cell = usd(self.total_pico_usd);
        if !self.complete {
            cell.push_str(incomplete);
        }
        cell
    }
}

/// How much of one rate limit a pool of models used over a run.
#[derive(Debug, Clone, Serialize)]
pub struct PoolUse {
    pub run: String,
    pub pool: String,
    /// `RPM`, `ITPM` or `OTPM`.
    pub limit: String,
    pub per_minute: u64,
    /// Requests, or tokens as the limit counts them, over the run.
    pub used: i64,
    pub minutes: f64,
    /// The share of the limit used: what was sent beyond the first full bucket (which goes
    /// at once), over what the limit refills in the run's time. Near 1 for a run the limit
    /// bound; 0 for one that never emptied the bucket.
    pub share: f64,
    /// Job attempts of the pool, and those answered 429.
    pub requests: i64,
    pub refused: i64,
}

impl PoolUse {
    pub fn describe(&self) -> String {
        format!(
            "{} · {}: {} {}/min, {:.0}% of it used over {:.1} min (beyond the first full bucket); {} of {} requests answered 429",
            self.run,
            self.pool,
            self.limit,
            text::count(i64::try_from(self.per_minute).unwrap_or(i64::MAX)),
            self.share * 100.0,
            self.minutes,
            self.refused,
            self.requests
        )
    }
}

/// What each pool of a run used of the limits it was sent under (given or learnt, as the run
/// recorded them in its settings).
async fn pool_uses(store: &Store, run: &RunRow) -> anyhow::Result<Vec<PoolUse>> {
    let settings = crate::settings::RunSettings::of(run)?;
    if settings.send.pool_limits.is_empty() {
        return Ok(Vec::new());
    }
    let pool_of = |model: &str| {
        if settings.gateway.limits_per == crate::settings::LimitsPer::Key {
            return crate::limiter::KEY_POOL.to_owned();
        }
        settings
            .gateway
            .pools
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_owned())
    };
    let mut pools: BTreeMap<String, crate::store::LimitUse> = BTreeMap::new();
    for row in store.report_limit_use(run.id).await? {
        let pool = pools
            .entry(pool_of(&row.model))
            .or_insert(crate::store::LimitUse {
                first_ms: i64::MAX,
                ..Default::default()
            });
        pool.input_tokens += row.input_tokens;
        pool.output_tokens += row.output_tokens;
        pool.requests += row.requests;
        pool.refused += row.refused;
        pool.first_ms = pool.first_ms.min(row.first_ms);
        pool.last_ms = pool.last_ms.max(row.last_ms);
    }
    let mut uses = Vec::new();
    for (pool, sums) in pools {
        let Some(limits) = settings.send.pool_limits.get(&pool) else {
            continue;
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "a duration and rates for display"
        )]
        let minutes = (sums.last_ms - sums.first_ms).max(1) as f64 / 60_000.0;
        for (name, per_minute, used) in [
            ("RPM", limits.rpm, sums.requests),
            ("ITPM", limits.itpm, sums.input_tokens),
            ("OTPM", limits.otpm, sums.output_tokens),
        ] {
            let Some(per_minute) = per_minute.filter(|l| *l > 0) else {
                continue;
            };
            #[expect(clippy::cast_precision_loss, reason = "rates for display")]
            let share = (used as f64 - per_minute as f64).max(0.0) / (per_minute as f64 * minutes);
            uses.push(PoolUse {
                run: run.name.clone(),
                pool: pool.clone(),
                limit: name.to_owned(),
                per_minute,
                used,
                minutes,
                share,
                requests: sums.requests,
                refused: sums.refused,
            });
        }
    }
    Ok(uses)
}

/// Results of one model billed at the tier for prompts over a number of input tokens.
#[derive(Debug, Clone, Serialize)]
pub struct TierUse {
    pub model: String,
    pub above_input_tokens: u64,
    pub results: i64,
    pub cost_pico_usd: i64,
}

impl TierUse {
    /// `3 results billed at the rate for prompts over 100,000 input tokens ($0.210000)`.
    pub fn describe(&self) -> String {
        format!(
            "{} result{} billed at the rate for prompts over {} input tokens ({})",
            self.results,
            if self.results == 1 { "" } else { "s" },
            text::count(i64::try_from(self.above_input_tokens).unwrap_or(i64::MAX)),
            usd(self.cost_pico_usd)
        )
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub count: i64,
    pub p50: i64,
    pub p90: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub error_type: String,
    pub http_status: Option<i64>,
    pub attempts: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub run: String,
    pub key: String,
    pub jobs: Jobs,
    pub tokens: Tokens,
    pub cost: Cost,
    /// Cache reads over all input tokens.
    pub cache_hit_ratio: Option<f64>,
    pub latency_ms: Option<Percentiles>,
    /// Streamed results only.
    pub ttft_ms: Option<Percentiles>,
    /// Output tokens over generation time: latency less TTFT for streamed answers whose
    /// tokens after the first took 50 ms or more, else the whole latency.
    pub output_tokens_per_second: Option<f64>,
    /// Attempts per job sent at least once.
    pub attempts_per_job: Option<f64>,
    pub retries: i64,
    pub errors: Vec<ErrorCount>,
    pub stop_reasons: Vec<(String, i64)>,
    /// Present when the group's answers had cache prefixes.
    pub cache: Option<CacheUse>,
    /// Present when the group's jobs have graders.
    pub grading: Option<Grading>,
    #[serde(skip)]
    sums: Sums,
}

/// How a group's answers used the prompt cache's prefixes, and what warming them saved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheUse {
    /// Distinct prefixes (a shared system prompt, tool list or document, with its model).
    pub prefixes: i64,
    /// Answers that wrote their prefix; 1.0 per prefix is the least possible.
    pub writes: i64,
    /// Answers that waited for another job to warm their prefix and read it instead of
    /// writing it again.
    pub writes_avoided: i64,
    /// Those reads at the 5-minute write price, less what they cost as reads (pico-USD).
    pub warmup_saved_pico_usd: i64,
}

impl CacheUse {
    /// `40 answers over 1 prefix: 1.0 write per prefix; warm-up avoided 15 writes ($0.10)`.
    pub fn describe(&self) -> String {
        #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
        let per_prefix = self.writes as f64 / self.prefixes.max(1) as f64;
        let mut line = format!(
            "{} writes over {} prefix{}: {per_prefix:.1} per prefix",
            self.writes,
            self.prefixes,
            if self.prefixes == 1 { "" } else { "es" }
        );
        if self.writes_avoided > 0 {
            line.push_str(&format!(
                "; warm-up avoided {} writes, saving {}",
                self.writes_avoided,
                usd(self.warmup_saved_pico_usd)
            ));
        }
        line
    }
}

/// How a group's answers fared against their graders.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Grading {
    /// Jobs with at least one grade.
    pub graded: i64,
    /// Jobs whose every grader passed.
    pub passed: i64,
    /// Jobs with a judge verdict still to come.
    pub pending: i64,
    pub pass_rate: Option<f64>,
    /// Wilson score interval at 95%.
    pub pass_rate_ci95: Option<(f64, f64)>,
    /// The group's cost over its passing answers.
    pub cost_per_pass_pico_usd: Option<i64>,
    /// What the judge requests cost, apart from the jobs' own cost.
    pub judge_cost_pico_usd: i64,
    pub passing_latency_ms: Option<Percentiles>,
    /// Per grader kind: (kind, graded, passed).
    pub by_grader: Vec<(String, i64, i64)>,
    /// The mean over jobs of each job's score (the share of its samples passing every
    /// grader), with its standard error, and pass@k and pass^k with repeated samples.
    pub score: Option<Score>,
    #[serde(skip)]
    jobs: Vec<JobScore>,
    #[serde(skip)]
    clustered: bool,
}

impl Grading {
    /// Each grader kind's passes, as `kind passed/graded`, joined by `separator`.
    pub fn by_grader_line(&self, separator: &str) -> String {
        self.by_grader
            .iter()
            .map(|(kind, graded, passed)| format!("{kind} {passed}/{graded}"))
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// Sums that become ratios in [`Group::finish`].
#[derive(Debug, Clone, Default)]
struct Sums {
    attempts: i64,
    sent_jobs: i64,
    generation_ms: i64,
}

impl Group {
    /// Share of results that stopped at `max_tokens` or the context window.
    pub fn truncated_share(&self) -> Option<f64> {
        let total: i64 = self.stop_reasons.iter().map(|(_, n)| n).sum();
        let truncated: i64 = self
            .stop_reasons
            .iter()
            .filter(|(r, _)| r == "max_tokens" || r == "model_context_window_exceeded")
            .map(|(_, n)| n)
            .sum();
        ratio(truncated, total)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub run: String,
    pub against: String,
    pub metric: String,
    pub base: f64,
    pub value: f64,
    pub change: f64,
    pub change_pct: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// (run, key) → the distribution function: (latency in ms, share of results at most that
    /// long), thinned to points at least 2% apart in latency.
    pub cdf: BTreeMap<(String, String), Vec<(i64, f64)>>,
}

pub struct Options {
    pub by: GroupBy,
    pub prices: PriceTable,
    pub reprice: Option<PriceTable>,
    /// Also gather what only the charts show (spend over time): the html format.
    pub charts: bool,
    /// Cluster the standard errors of the scores on this tag's values.
    pub cluster_tag: Option<String>,
}

/// The latency cells of a group, as every rendering shows them: n, p50, p90, p95, p99, max,
/// TTFT p50, TTFT p95, output tokens per second, attempts per job.
pub fn latency_cells(g: &Group) -> [String; 10] {
    let ms = |p: Option<Percentiles>, pick: fn(&Percentiles) -> i64| {
        p.map_or_else(|| "-".to_owned(), |p| text::count(pick(&p)))
    };
    [
        g.latency_ms.map_or(0, |l| l.count).to_string(),
        ms(g.latency_ms, |p| p.p50),
        ms(g.latency_ms, |p| p.p90),
        ms(g.latency_ms, |p| p.p95),
        ms(g.latency_ms, |p| p.p99),
        ms(g.latency_ms, |p| p.max),
        ms(g.ttft_ms, |p| p.p50),
        ms(g.ttft_ms, |p| p.p95),
        g.output_tokens_per_second
            .map_or_else(|| "-".to_owned(), |t| format!("{t:.0}")),
        g.attempts_per_job
            .map_or_else(|| "-".to_owned(), |a| format!("{a:.2}")),
    ]
}

/// Signed pico-USD as dollars.
pub fn usd(pico: i64) -> String {
    let amount = crate::pricing::format_usd(pico.unsigned_abs());
    if pico < 0 {
        format!("-{amount}")
    } else {
        amount
    }
}

#[expect(clippy::cast_precision_loss, reason = "ratios for display")]
fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl Report {
    pub async fn build(store: &Store, runs: &[RunRow], options: &Options) -> anyhow::Result<Self> {
        let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let mut merge = Merge {
            names: runs.iter().map(|r| (r.id, r.name.as_str())).collect(),
            by_run: options.by == GroupBy::Run,
            groups: BTreeMap::new(),
            totals: BTreeMap::new(),
        };
        let threshold = long_context_threshold(&options.prices, options.reprice.as_ref());
        let mut unpriced: BTreeSet<String> = BTreeSet::new();
        // Where the runs' rows lie, read once for every scan below.
        let spans = store.job_spans(&ids).await?;
        let rows_span = (
            spans.iter().map(|(_, s)| s.first).min().unwrap_or(1),
            spans.iter().map(|(_, s)| s.last).max().unwrap_or(0),
        );
        // The passes over every row are independent: the longest (the sums) on one connection,
        // the others one after another on the second.
        let (rows, (latencies, ttfts, points)) = tokio::try_join!(
            store.report_rows(&ids, rows_span, &options.by, threshold),
            async {
                let latencies = store
                    .report_values(&ids, rows_span, &options.by, Measure::Latency)
                    .await?;
                let ttfts = store
                    .report_values(&ids, rows_span, &options.by, Measure::Ttft)
                    .await?;
                let points = if options.charts {
                    store.spend_over_time(&spans).await?
                } else {
                    Vec::new()
                };
                Ok((latencies, ttfts, points))
            },
        )?;
        for row in rows {
            merge.create(row.run_id, &row.key);
            merge.each(row.run_id, &row.key, |group| {
                add_row(group, &row, options, &mut unpriced);
            });
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
            merge.each(row.run_id, &row.key, |group| {
                let g = group.grading.get_or_insert_with(Grading::default);
                g.graded += row.graded;
                g.passed += row.passed;
                g.pending += row.pending;
                g.judge_cost_pico_usd += row.judge_cost_pico_usd;
            });
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
            let rates = options.prices.lookup(&row.model).map(|p| p.rates);
            let saved = rates.map_or(0, |r| {
                let per_token = i64::try_from(r.cache_write_5m).unwrap_or(0)
                    - i64::try_from(r.cache_read).unwrap_or(0);
                row.warm_read_tokens * per_token
            });
            merge.each(row.run_id, &row.key, |group| {
                let cache = group.cache.get_or_insert_with(CacheUse::default);
                cache.prefixes += row.prefixes;
                cache.writes += row.writes;
                cache.writes_avoided += row.writes_avoided;
                cache.warmup_saved_pico_usd += saved;
            });
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

        let mut warnings = Vec::new();
        for model in &unpriced {
            warnings.push(format!(
                "no price for model `{model}`: its results are left out of the costs, which are incomplete (give --prices)"
            ));
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        for group in &mut groups {
            group.finish();
            if let Some(share) = group.truncated_share().filter(|s| *s >= MAX_TOKENS_WARNING) {
                // Named by its run: side by side, several runs have a group of this name.
                let group_name = if group.key.is_empty() || group.key == group.run {
                    format!("run {}", group.run)
                } else {
                    format!("run {}, {}", group.run, group.key)
                };
                warnings.push(format!(
                    "{group_name}: {:.0}% of answers stopped at max_tokens and are truncated; raise max_tokens if that was not intended",
                    share * 100.0
                ));
            }
        }
        let mut totals: Vec<Group> = runs
            .iter()
            .filter_map(|r| totals.remove(&(r.name.clone(), r.name.clone())))
            .collect();
        for total in &mut totals {
            total.finish();
            if total.jobs.pending > 0 {
                warnings.push(format!(
                    "run {} has {} pending jobs: this report covers what was finished",
                    total.run, total.jobs.pending
                ));
            }
            if let Some(run) = runs.iter().find(|r| r.name == total.run) {
                if !run.loaded
                    && let Some(expected) = run.input_jobs
                {
                    warnings.push(format!(
                        "run {} stopped before all the jobs of its file were stored ({} of {expected}): `msgbatch resume {}` stores and sends the rest",
                        total.run,
                        total.jobs.total - total.jobs.rejected,
                        total.run
                    ));
                }
                let unbilled = store.unbilled_batch_items(run.id).await?;
                if !unbilled.is_empty() {
                    let kinds: Vec<String> = unbilled
                        .iter()
                        .map(|(kind, n)| format!("{n} {kind}"))
                        .collect();
                    let n: i64 = unbilled.iter().map(|(_, n)| n).sum();
                    warnings.push(format!(
                        "run {}: {n} batch requests ended without an answer ({}); none of them was billed, and `msgbatch resume {} --include-failed` sends them again",
                        total.run,
                        kinds.join(", "),
                        total.run
                    ));
                }
                let (failed, reason) = store.judge_failures(run.id).await?;
                if failed > 0 {
                    warnings.push(format!(
                        "run {}: {failed} judge verdicts are pending because their requests failed (the latest: {}); `msgbatch grade {}` asks again",
                        total.run,
                        reason.as_deref().unwrap_or("no reason recorded"),
                        total.run
                    ));
                }
            }
            let stored = total.cost.stored_pico_usd;
            if options.reprice.is_none() && stored != total.cost.total_pico_usd {
                warnings.push(format!(
                    "run {}: the costs stored with its results add up to {}, the price table gives {}; prices changed since the run or --prices differs, and this report uses the table",
                    total.run,
                    usd(stored),
                    usd(total.cost.total_pico_usd),
                ));
            }
        }
        let mut limits = Vec::new();
        for run in runs {
            limits.extend(pool_uses(store, run).await?);
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
        // A warning said twice (a model unpriced in each run) says nothing more.
        let mut said = std::collections::HashSet::new();
        warnings.retain(|warning| said.insert(warning.clone()));
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
                    gateway: format!(
                        "{} {}{}",
                        r.gateway_name,
                        crate::output::redacted_url(&r.base_url),
                        r.messages_path
                    ),
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

    /// Whether several runs are side by side.
    pub fn multi_run(&self) -> bool {
        self.runs.len() > 1
    }

    /// The rows a rendering shows: every group, then each run's total (unless the groups are
    /// the runs themselves).
    pub fn rows(&self) -> Vec<(String, &Group)> {
        let mut rows: Vec<(String, &Group)> =
            self.groups.iter().map(|g| (self.label(g), g)).collect();
        if self.group_by != "run" {
            rows.extend(self.totals.iter().map(|t| {
                let label = if self.multi_run() {
                    format!("{} (all)", t.run)
                } else {
                    "all".to_owned()
                };
                (label, t)
            }));
        }
        rows
    }

    /// One line per group whose answers had cache prefixes: writes per prefix and what warming
    /// them saved.
    pub fn cache_lines(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter_map(|g| {
                g.cache
                    .as_ref()
                    .map(|c| format!("{}: {}", self.label(g), c.describe()))
            })
            .collect()
    }

    /// One line per group and tier for the results billed above their model's base tier:
    /// `claude-haiku-5-5: 3 results billed at the rate for prompts over 100,000 …`.
    pub fn tier_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for group in &self.groups {
            let label = self.label(group);
            for tier in &group.cost.above_base {
                let who = if tier.model == group.key {
                    label.clone()
                } else {
                    format!("{label} · {}", tier.model)
                };
                lines.push(format!("{who}: {}", tier.describe()));
            }
        }
        lines
    }

    /// The label of a group: its key, prefixed by its run when several runs are shown.
    pub fn label(&self, group: &Group) -> String {
        if self.multi_run() && self.group_by != "run" {
            format!("{} / {}", group.run, group.key)
        } else {
            group.key.clone()
        }
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
        self.output_tokens_per_second = ratio(self.tokens.output * 1000, self.sums.generation_ms);
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

/// The smallest long-context threshold of either table: requests above it are priced one by
/// one. `i64::MAX` when no model has a premium.
fn long_context_threshold(prices: &PriceTable, reprice: Option<&PriceTable>) -> i64 {
    [Some(prices), reprice]
        .into_iter()
        .flatten()
        .flat_map(PriceTable::long_context_thresholds)
        .min()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(i64::MAX)
}

/// The tier a slice is billed at: each slice holds requests of one total input when that is
/// above the smallest threshold of the tables, else requests at every model's base tier.
fn tier_of<'a>(price: &'a ModelPrice, slice: &ReportRow) -> (Option<u64>, &'a Rates) {
    price.tier(u64::try_from(slice.long_total_input).unwrap_or(0))
}

fn add_row(
    group: &mut Group,
    slice: &ReportRow,
    options: &Options,
    unpriced: &mut BTreeSet<String>,
) {
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
        return;
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
    t.input += slice.input_tokens;
    t.cache_write_5m += slice.cache_write_5m;
    t.cache_write_1h += slice.cache_write_1h;
    t.cache_read += slice.cache_read;
    t.output += slice.output_tokens;
    let cost = &mut group.cost;
    cost.stored_pico_usd += slice.stored_cost_pico_usd;
    let pico = |tokens: i64, rate: u64| tokens * i64::try_from(rate).unwrap_or(i64::MAX);
    let Some(price) = options.prices.lookup(&slice.model) else {
        cost.unpriced_results += slice.results;
        if !cost.unpriced_models.contains(&slice.model) {
            cost.unpriced_models.push(slice.model.clone());
        }
        unpriced.insert(slice.model.clone());
        return;
    };
    let (tier, rates) = tier_of(price, slice);
    // A batch bills every token at half the standard price.
    let billed = |full: i64| if slice.batch { full / 2 } else { full };
    let input = billed(pico(slice.input_tokens, rates.input));
    let write = billed(
        pico(slice.cache_write_5m, rates.cache_write_5m)
            + pico(slice.cache_write_1h, rates.cache_write_1h),
    );
    let read = billed(pico(slice.cache_read, rates.cache_read));
    let output = billed(pico(slice.output_tokens, rates.output));
    let total = input + write + read + output;
    let direct = if slice.batch { total * 2 } else { total };
    cost.direct_pico_usd += direct;
    if slice.batch {
        cost.batch_results += slice.results;
    }
    cost.input_pico_usd += input;
    cost.cache_write_pico_usd += write;
    cost.cache_read_pico_usd += read;
    cost.output_pico_usd += output;
    cost.total_pico_usd += total;
    cost.batch_api_pico_usd += direct / 2;
    if let Some(above) = tier {
        match cost
            .above_base
            .iter_mut()
            .find(|t| t.model == slice.model && t.above_input_tokens == above)
        {
            Some(use_) => {
                use_.results += slice.results;
                use_.cost_pico_usd += total;
            }
            None => cost.above_base.push(TierUse {
                model: slice.model.clone(),
                above_input_tokens: above,
                results: slice.results,
                cost_pico_usd: total,
            }),
        }
    }
    let cached = slice.cache_write_5m + slice.cache_write_1h + slice.cache_read;
    cost.caching_saved_pico_usd += billed(pico(cached, rates.input)) - write - read;
    if let Some(reprice) = &options.reprice {
        let other = reprice.lookup(&slice.model).map(|p| {
            let r = tier_of(p, slice).1;
            pico(slice.input_tokens, r.input)
                + pico(slice.cache_write_5m, r.cache_write_5m)
                + pico(slice.cache_write_1h, r.cache_write_1h)
                + pico(slice.cache_read, r.cache_read)
                + pico(slice.output_tokens, r.output)
        });
        if let Some(other) = other {
            *cost.reprice_pico_usd.get_or_insert(0) += other;
        }
    }
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
