//! The paired comparisons of a diff: for two runs (B against A) or for each model of a run
//! against its baseline, the difference of mean score, cost per job and latency over the jobs
//! that both sides answered, with the figures of [`crate::stats`] and one plain sentence.
//!
//! A sample's score is 1 when every grader with a verdict passed it and 0 when one failed it,
//! and a job's score is the mean over its samples (`--repeat`) that have a verdict; a job
//! without a verdict on either side (ungraded, no answer, pending) is left out of the score
//! comparison, as it says nothing about the models' quality. Cost and latency are a job's
//! means over its answered samples likewise.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{JobSide, Outcome};
use crate::report::{count, usd};
use crate::stats::{self, Paired};

/// What a comparison measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of jobs passing every grader (0 to 1).
    Score,
    /// Cost per job in USD.
    CostUsd,
    /// Latency per job in milliseconds.
    LatencyMs,
}

/// One comparison of B against A.
#[derive(Debug, Clone, Serialize)]
pub struct PairedComparison {
    pub metric: Metric,
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub figures: Paired,
    /// The tag whose values make the clusters, when the error is clustered.
    pub cluster_tag: Option<String>,
    /// The comparison in one sentence.
    pub verdict: String,
}

impl PairedComparison {
    /// A significant drop of the mean score from A to B.
    pub fn significant_drop(&self) -> bool {
        self.metric == Metric::Score && self.figures.significant() && self.figures.diff < 0.0
    }
}

/// What one side of a job brings to a comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measures {
    /// 1 when every grader with a verdict passed, 0 when one failed, `None` without verdicts.
    pub score: Option<f64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
}

impl Measures {
    pub fn of(side: &JobSide) -> Self {
        Self::new(side.outcome, side.cost_pico_usd, side.latency_ms)
    }

    #[expect(clippy::cast_precision_loss, reason = "figures for statistics")]
    pub fn new(outcome: Outcome, cost_pico_usd: Option<i64>, latency_ms: Option<i64>) -> Self {
        Self {
            score: match outcome {
                Outcome::Pass => Some(1.0),
                Outcome::Fail => Some(0.0),
                _ => None,
            },
            cost_usd: cost_pico_usd.map(|p| p as f64 / 1e12),
            latency_ms: latency_ms.map(|ms| ms as f64),
        }
    }

    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Score => self.score,
            Metric::CostUsd => self.cost_usd,
            Metric::LatencyMs => self.latency_ms,
        }
    }
}

/// Sums of the measures of a job's samples, for their means.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeanMeasures {
    score: (f64, u32),
    cost_usd: (f64, u32),
    latency_ms: (f64, u32),
}

impl MeanMeasures {
    pub fn add(&mut self, sample: &Measures) {
        for (sum, value) in [
            (&mut self.score, sample.score),
            (&mut self.cost_usd, sample.cost_usd),
            (&mut self.latency_ms, sample.latency_ms),
        ] {
            if let Some(value) = value {
                sum.0 += value;
                sum.1 += 1;
            }
        }
    }

    /// The mean of each measure over the samples that have it; `None` where none has.
    pub fn mean(&self) -> Measures {
        let mean = |(sum, n): (f64, u32)| (n > 0).then(|| sum / f64::from(n));
        Measures {
            score: mean(self.score),
            cost_usd: mean(self.cost_usd),
            latency_ms: mean(self.latency_ms),
        }
    }
}

/// A job as both sides answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: Measures,
    pub b: Measures,
    /// The job's value of the clustering tag.
    pub cluster: Option<String>,
}

/// The comparisons of B against A over `pairs`, clustered on `cluster_tag` when given: one per
/// metric that some job has on both sides.
#[cfg(test)]
pub fn compare(
    a: &str,
    b: &str,
    pairs: &[Pair],
    cluster_tag: Option<&str>,
) -> Vec<PairedComparison> {
    let mut sums = PairSums::new(cluster_tag.is_some());
    for pair in pairs {
        sums.add(&pair.a, &pair.b, pair.cluster.as_deref());
    }
    sums.compare(a, b, cluster_tag)
}

/// The comparisons of B against A gathered one job at a time, in the order the jobs come:
/// per metric the running figures of [`stats::PairedSums`], and the clusters as numbers (a
/// value of the clustering tag is named once, however many jobs share it). What it holds
/// grows with the tag's values, not with the jobs.
#[derive(Debug, Clone)]
pub struct PairSums {
    clustered: bool,
    metrics: [stats::PairedSums; 3],
    /// Each value of the clustering tag seen, and its number.
    tags: HashMap<String, usize>,
}

const METRICS: [Metric; 3] = [Metric::Score, Metric::CostUsd, Metric::LatencyMs];

impl PairSums {
    pub fn new(clustered: bool) -> Self {
        Self {
            clustered,
            metrics: Default::default(),
            tags: HashMap::new(),
        }
    }

    /// Adds one job that both sides have, with its value of the clustering tag: a job
    /// without the tag is a cluster of its own.
    pub fn add(&mut self, a: &Measures, b: &Measures, cluster: Option<&str>) {
        let cluster = self.clustered.then(|| match cluster {
            Some(value) => {
                let next = self.tags.len();
                match self.tags.get(value) {
                    Some(&number) => stats::Cluster::Shared(number),
                    None => {
                        self.tags.insert(value.to_owned(), next);
                        stats::Cluster::Shared(next)
                    }
                }
            }
            None => stats::Cluster::Alone,
        });
        for (sums, metric) in self.metrics.iter_mut().zip(METRICS) {
            if let (Some(x), Some(y)) = (a.get(metric), b.get(metric)) {
                sums.push(x, y, cluster);
            }
        }
    }

    /// The comparisons of B against A: one per metric that some job has on both sides.
    pub fn compare(&self, a: &str, b: &str, cluster_tag: Option<&str>) -> Vec<PairedComparison> {
        let mut out = Vec::new();
        for (sums, metric) in self.metrics.iter().zip(METRICS) {
            let figures = if self.clustered {
                sums.paired_clustered()
            } else {
                sums.paired()
            };
            let Some(figures) = figures else { continue };
            let verdict = verdict(metric, a, b, &figures, cluster_tag);
            out.push(PairedComparison {
                metric,
                a: a.to_owned(),
                b: b.to_owned(),
                figures,
                cluster_tag: cluster_tag.map(str::to_owned),
                verdict,
            });
        }
        out
    }
}

/// `−4.0`, `+1.2`, `+0.0`: a signed figure with a true minus sign.
fn signed(value: f64, decimals: usize) -> String {
    let text = format!("{:.decimals$}", value.abs());
    let zero = text.chars().all(|c| c == '0' || c == '.');
    if value < 0.0 && !zero {
        format!("−{text}")
    } else {
        format!("+{text}")
    }
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_owned()
    } else if p < 0.01 {
        format!("p = {p:.3}")
    } else {
        format!("p = {p:.2}")
    }
}

/// How a figure of one metric is written: in points of score, in dollars, in milliseconds.
fn amount(metric: Metric, value: f64) -> String {
    match metric {
        Metric::Score => format!("{} pts", signed(value * 100.0, 1)),
        Metric::CostUsd => {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "USD to pico-USD for display"
            )]
            let pico = (value * 1e12).round() as i64;
            let text = usd(pico.abs());
            if pico < 0 {
                format!("−{text}")
            } else {
                format!("+{text}")
            }
        }
        Metric::LatencyMs => format!("{} ms", signed(value, 0)),
    }
}

/// An unsigned magnitude of one metric (a detectable effect).
fn magnitude(metric: Metric, value: f64) -> String {
    amount(metric, value)
        .trim_start_matches(['+', '−'])
        .to_owned()
}

fn verdict(metric: Metric, a: &str, b: &str, p: &Paired, cluster_tag: Option<&str>) -> String {
    let what = match metric {
        Metric::Score => "",
        Metric::CostUsd => " cost per job",
        Metric::LatencyMs => " latency",
    };
    let mut out = format!("{b} − {a}{what}: {}", amount(metric, p.diff));
    // Cost and latency also as a share of A's mean, which is what a reader compares.
    let relative = (metric != Metric::Score && p.mean_a > 0.0).then_some(p.mean_a);
    let (Some(ci), Some(p_value), Some(mde)) = (p.ci95, p.p_value, p.mde80) else {
        let reason = p
            .reason
            .map_or("no standard error", stats::NoError::describe);
        let _ = write!(out, " over {} jobs; {reason}", count(p.n as i64));
        return out;
    };
    let interval = match (metric, relative) {
        (Metric::Score, _) => format!(
            "95% CI {} to {}",
            signed(ci[0] * 100.0, 1),
            signed(ci[1] * 100.0, 1)
        ),
        (_, Some(base)) => format!(
            "{}%, 95% CI {}% to {}%",
            signed(p.diff / base * 100.0, 1),
            signed(ci[0] / base * 100.0, 1),
            signed(ci[1] / base * 100.0, 1)
        ),
        (_, None) => format!(
            "95% CI {} to {}",
            amount(metric, ci[0]),
            amount(metric, ci[1])
        ),
    };
    let _ = write!(out, " ({interval}, {})", p_text(p_value));
    if !p.significant() {
        if metric == Metric::Score && mde >= 1.0 {
            out.push_str(": no significant difference; too few jobs to tell any difference apart");
        } else {
            let _ = write!(
                out,
                ": no significant difference; differences under {} cannot be told apart at this size",
                magnitude(metric, mde)
            );
        }
        if metric == Metric::Score {
            // A round effect about half the detectable one (10 points at most), and the jobs
            // it would take.
            let target = (mde * 100.0 / 2.0).round().clamp(1.0, 10.0);
            if target < mde * 100.0
                && let Some(jobs) = p.jobs_to_resolve(target / 100.0)
            {
                let _ = write!(
                    out,
                    " — about {} jobs would resolve {target} pts",
                    count(i64::try_from(round_jobs(jobs)).unwrap_or(i64::MAX))
                );
            }
        }
    }
    if let (Some(tag), Some(clusters)) = (cluster_tag, p.clusters) {
        let _ = write!(out, " [clustered on tag {tag}: {clusters} clusters]");
    }
    out
}

/// A job count to two significant figures, as an estimate should be given.
fn round_jobs(jobs: u64) -> u64 {
    if jobs < 100 {
        return jobs;
    }
    let digits = jobs.ilog10();
    let unit = 10_u64.pow(digits - 1);
    jobs.div_ceil(unit) * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(outcome: Outcome, cost: i64, latency: i64) -> JobSide {
        JobSide {
            outcome,
            failed_graders: Vec::new(),
            grades: Vec::new(),
            stop_reason: None,
            cost_pico_usd: Some(cost),
            latency_ms: Some(latency),
            output_tokens: None,
            error: None,
            answer: None,
        }
    }

    fn pair(a: &JobSide, b: &JobSide, cluster: Option<&str>) -> Pair {
        Pair {
            a: Measures::of(a),
            b: Measures::of(b),
            cluster: cluster.map(str::to_owned),
        }
    }

    #[test]
    fn scores_costs_and_latencies_are_compared_over_jobs_both_sides_have() {
        // Four jobs scored under both; a fifth where B has no answer; a sixth ungraded.
        let a = [
            side(Outcome::Pass, 2_000_000, 100),
            side(Outcome::Pass, 2_000_000, 100),
            side(Outcome::Fail, 2_000_000, 100),
            side(Outcome::Pass, 2_000_000, 100),
            side(Outcome::Pass, 2_000_000, 100),
            side(Outcome::Answered, 2_000_000, 100),
        ];
        let mut b = [
            side(Outcome::Fail, 1_000_000, 90),
            side(Outcome::Pass, 1_000_000, 110),
            side(Outcome::Fail, 1_000_000, 100),
            side(Outcome::Fail, 1_000_000, 100),
            side(Outcome::Error, 0, 0),
            side(Outcome::Answered, 1_000_000, 100),
        ];
        b[4].cost_pico_usd = None;
        b[4].latency_ms = None;
        let pairs: Vec<Pair> = a.iter().zip(&b).map(|(a, b)| pair(a, b, None)).collect();
        let got = compare("sonnet", "haiku", &pairs, None);
        let metrics: Vec<Metric> = got.iter().map(|c| c.metric).collect();
        assert_eq!(metrics, [Metric::Score, Metric::CostUsd, Metric::LatencyMs]);
        let score = &got[0];
        assert_eq!(score.figures.n, 4);
        assert_eq!(score.figures.diff, -0.5);
        assert!(
            score
                .verdict
                .starts_with("haiku − sonnet: −50.0 pts (95% CI"),
            "{}",
            score.verdict
        );
        // Every job B answered cost half as much: no spread, said in words.
        let cost = &got[1];
        assert_eq!(cost.figures.n, 5);
        assert_eq!(cost.figures.se, None);
        assert_eq!(
            cost.verdict,
            "haiku − sonnet cost per job: −$0.000001 over 5 jobs; every job differs by the same amount: no spread to estimate an error from"
        );
        assert_eq!(got[2].figures.n, 5);
    }

    #[test]
    fn a_difference_too_small_to_see_says_how_many_jobs_would_see_it() {
        // 400 jobs; A passes 300, B passes 296, with disagreements on 40 jobs both ways.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..400 {
            let (x, y) = match i {
                0..18 => (Outcome::Pass, Outcome::Fail),
                18..40 => (Outcome::Fail, Outcome::Pass),
                40..300 => (Outcome::Pass, Outcome::Pass),
                _ => (Outcome::Fail, Outcome::Fail),
            };
            a.push(side(x, 1, 1));
            b.push(side(y, 1, 1));
        }
        let pairs: Vec<Pair> = a.iter().zip(&b).map(|(a, b)| pair(a, b, None)).collect();
        let score = &compare("a", "b", &pairs, None)[0];
        assert!(!score.figures.significant());
        // Worked by hand: d̄ = 4/400; s² = (18·1.01² + 22·0.99² + 360·0.01²)/399 = 0.10015;
        // SE = √(s²/400) = 0.015823; z = 0.632; MDE = 2.8016·SE = 4.43 pts; 2 pts needs
        // 400·(4.43/2)² = 1,965 jobs.
        assert_eq!(
            score.verdict,
            "b − a: +1.0 pts (95% CI −2.1 to +4.1, p = 0.53): no significant difference; differences under 4.4 pts cannot be told apart at this size — about 2,000 jobs would resolve 2 pts"
        );
    }

    #[test]
    fn clusters_come_from_the_tag_and_jobs_without_it_stand_alone() {
        let pass = side(Outcome::Pass, 1, 1);
        let fail = side(Outcome::Fail, 1, 1);
        let pairs = [
            pair(&fail, &pass, Some("doc1")),
            pair(&fail, &pass, Some("doc1")),
            pair(&pass, &pass, Some("doc2")),
            pair(&pass, &fail, None),
        ];
        let score = &compare("a", "b", &pairs, Some("passage"))[0];
        assert_eq!(score.figures.clusters, Some(3));
        assert!(
            score
                .verdict
                .ends_with("[clustered on tag passage: 3 clusters]"),
            "{}",
            score.verdict
        );
    }

    #[test]
    fn estimates_of_jobs_keep_two_figures() {
        assert_eq!(round_jobs(87), 87);
        assert_eq!(round_jobs(1_394), 1_400);
        assert_eq!(round_jobs(3_301), 3_400);
        assert_eq!(round_jobs(120_001), 130_000);
    }
}
