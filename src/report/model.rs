//! The report's data model: a report, its runs, and per (run, group) the jobs, tokens, cost,
//! latencies, cache use and grading, with the one-line descriptions every rendering shares.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scores::{JobScore, Score};
use super::text;
use crate::pricing::PriceTable;
use crate::store::GroupBy;

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
    pub(super) sums: Sums,
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
    pub(super) jobs: Vec<JobScore>,
    #[serde(skip)]
    pub(super) clustered: bool,
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
pub(super) struct Sums {
    pub(super) attempts: i64,
    pub(super) sent_jobs: i64,
    pub(super) generation_ms: i64,
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
pub(super) fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl Report {
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
