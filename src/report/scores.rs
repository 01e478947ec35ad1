//! A group's mean score over its jobs, as "Adding Error Bars to Evals" (Miller, 2024) reports
//! it: each job (each model of a job its own) scores the share of its samples that passed
//! every grader, and the group's score is the mean over jobs with its standard error, plain or
//! clustered on a tag. With repeated samples (`--repeat K`), also pass@K and pass^K.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats;

/// Jobs of a group with the same samples with a verdict, the same passes and the same
/// cluster: the report reads them counted, not one by one, so that a million jobs take a few
/// rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScore {
    pub cluster: Option<String>,
    pub samples: u64,
    pub passed: u64,
    /// How many jobs have these figures.
    pub jobs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Jobs with a verdict on some sample.
    pub jobs: usize,
    /// Samples of each job (`--repeat`): the most any job has.
    pub samples_per_job: u64,
    /// The mean over jobs of each job's share of passing samples (0 to 1).
    pub mean: f64,
    /// Its standard error: the standard deviation of the job scores over √n, or clustered;
    /// `null` with fewer than two jobs (or clusters).
    pub se: Option<f64>,
    /// Clusters of the clustered error (`--cluster tag:NAME`); `null` when not clustered.
    pub clusters: Option<usize>,
    /// With K samples of each job, the chance that at least one of K passes (unbiased
    /// estimate over the jobs that have K samples with a verdict), averaged over jobs.
    pub pass_at_k: Option<f64>,
    /// The chance that all K pass, likewise.
    pub pass_hat_k: Option<f64>,
}

impl Score {
    /// The score of `jobs`, clustered on their clusters when `clustered` (a job without the
    /// tag is a cluster of its own); `None` without jobs.
    #[expect(clippy::cast_precision_loss, reason = "figures for statistics")]
    pub fn of(jobs: &[JobScore], clustered: bool) -> Option<Self> {
        let scored: Vec<&JobScore> = jobs
            .iter()
            .filter(|j| j.samples > 0 && j.jobs > 0)
            .collect();
        let n: u64 = scored.iter().map(|j| j.jobs).sum();
        if n == 0 {
            return None;
        }
        let value = |j: &JobScore| j.passed as f64 / j.samples as f64;
        let mean = scored.iter().map(|j| value(j) * j.jobs as f64).sum::<f64>() / n as f64;
        let (se, clusters) = if clustered {
            // Σ over clusters of (Σ over the cluster's jobs of (x − x̄))², over n; a job without
            // the tag is a cluster of its own.
            // In the clusters' order: the same figure to the last bit, run after run.
            let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
            let mut alone = 0_u64;
            let mut squares = 0.0;
            for job in &scored {
                let deviation = value(job) - mean;
                match job.cluster.as_deref() {
                    Some(cluster) => {
                        *sums.entry(cluster).or_default() += deviation * job.jobs as f64
                    }
                    None => {
                        alone += job.jobs;
                        squares += deviation * deviation * job.jobs as f64;
                    }
                }
            }
            let count = sums.len() + usize::try_from(alone).unwrap_or(usize::MAX);
            squares += sums.values().map(|s| s * s).sum::<f64>();
            ((count >= 2).then(|| squares.sqrt() / n as f64), Some(count))
        } else {
            // The sample standard deviation of the job scores over √n.
            let squares: f64 = scored
                .iter()
                .map(|j| (value(j) - mean).powi(2) * j.jobs as f64)
                .sum();
            let se = (n >= 2).then(|| (squares / (n - 1) as f64).sqrt() / (n as f64).sqrt());
            (se, None)
        };
        let k = scored.iter().map(|j| j.samples).max().unwrap_or(1);
        let over_jobs = |estimate: fn(u64, u64, u64) -> Option<f64>| {
            let (sum, count) = scored
                .iter()
                .filter_map(|j| estimate(j.samples, j.passed, k).map(|e| (e, j.jobs)))
                .fold((0.0, 0_u64), |(sum, count), (e, jobs)| {
                    (sum + e * jobs as f64, count + jobs)
                });
            (k > 1 && count > 0).then(|| sum / count as f64)
        };
        Some(Self {
            jobs: usize::try_from(n).unwrap_or(usize::MAX),
            samples_per_job: k,
            mean,
            se: se.filter(|se| se.is_finite()),
            clusters,
            pass_at_k: over_jobs(stats::pass_at_k),
            pass_hat_k: over_jobs(stats::pass_hat_k),
        })
    }

    /// `0.467 ± 0.052 SE over 30 jobs × 3 samples (5 clusters) · pass@3 0.80 · pass^3 0.12`.
    pub fn describe(&self) -> String {
        let mut line = format!("{:.3}", self.mean);
        match self.se {
            Some(se) => line.push_str(&format!(" ± {se:.3} SE")),
            None => line.push_str(" (no SE)"),
        }
        line.push_str(&format!(" over {} jobs", self.jobs));
        if self.samples_per_job > 1 {
            line.push_str(&format!(" × {} samples", self.samples_per_job));
        }
        if let Some(clusters) = self.clusters {
            line.push_str(&format!(", {clusters} clusters"));
        }
        let k = self.samples_per_job;
        if let Some(p) = self.pass_at_k {
            line.push_str(&format!(" · pass@{k} {p:.3}"));
        }
        if let Some(p) = self.pass_hat_k {
            line.push_str(&format!(" · pass^{k} {p:.3}"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cluster: Option<&str>, samples: u64, passed: u64) -> JobScore {
        JobScore {
            cluster: cluster.map(str::to_owned),
            samples,
            passed,
            jobs: 1,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_mean_is_over_jobs_and_the_error_over_their_scores() {
        // Scores 1, 2/3, 0, 1/3: mean 0.5; sample variance 5/27; SE √(5/27 / 4).
        let jobs = [
            job(None, 3, 3),
            job(None, 3, 2),
            job(None, 3, 0),
            job(None, 3, 1),
        ];
        let score = Score::of(&jobs, false).unwrap();
        assert_eq!((score.jobs, score.samples_per_job), (4, 3));
        assert!(close(score.mean, 0.5));
        assert!(close(score.se.unwrap(), (5.0_f64 / 27.0 / 4.0).sqrt()));
        assert_eq!(score.clusters, None);
        // pass@3 of (3,3), (3,2), (3,0), (3,1): 1, 1, 0, 1 → 0.75; pass^3: 1, 0, 0, 0 → 0.25.
        assert!(close(score.pass_at_k.unwrap(), 0.75));
        assert!(close(score.pass_hat_k.unwrap(), 0.25));
    }

    #[test]
    fn the_clustered_error_sums_within_clusters_first() {
        // Scores 1, 1 in a; 0 in b; 0 alone: mean 0.5; cluster sums of (s − 0.5): 1, −0.5,
        // −0.5; SE √(1 + 0.25 + 0.25) / 4.
        let jobs = [
            job(Some("a"), 1, 1),
            job(Some("a"), 1, 1),
            job(Some("b"), 1, 0),
            job(None, 1, 0),
        ];
        let score = Score::of(&jobs, true).unwrap();
        assert_eq!(score.clusters, Some(3));
        assert!(close(score.se.unwrap(), 1.5_f64.sqrt() / 4.0));
        assert_eq!(
            (score.pass_at_k, score.pass_hat_k),
            (None, None),
            "one sample each"
        );
    }

    #[test]
    fn jobs_read_counted_score_as_they_do_one_by_one() {
        let counted = |cluster: Option<&str>, samples, passed, jobs| JobScore {
            jobs,
            ..job(cluster, samples, passed)
        };
        let one_by_one: Vec<JobScore> = [
            (Some("a"), 3, 3, 4),
            (Some("a"), 3, 1, 2),
            (Some("b"), 3, 0, 3),
            (None, 3, 2, 5),
            (None, 2, 1, 1),
        ]
        .iter()
        .flat_map(|&(cluster, samples, passed, jobs)| {
            std::iter::repeat_n(job(cluster, samples, passed), jobs)
        })
        .collect();
        let rows = [
            counted(Some("a"), 3, 3, 4),
            counted(Some("a"), 3, 1, 2),
            counted(Some("b"), 3, 0, 3),
            counted(None, 3, 2, 5),
            counted(None, 2, 1, 1),
        ];
        for clustered in [false, true] {
            let a = Score::of(&one_by_one, clustered).unwrap();
            let b = Score::of(&rows, clustered).unwrap();
            assert_eq!(
                (a.jobs, a.samples_per_job, a.clusters),
                (b.jobs, b.samples_per_job, b.clusters)
            );
            assert_eq!((b.jobs, b.clusters), (15, clustered.then_some(8)));
            for (x, y) in [
                (a.mean, b.mean),
                (a.se.unwrap(), b.se.unwrap()),
                (a.pass_at_k.unwrap(), b.pass_at_k.unwrap()),
                (a.pass_hat_k.unwrap(), b.pass_hat_k.unwrap()),
            ] {
                assert!(close(x, y), "{x} against {y}");
            }
        }
    }

    #[test]
    fn one_job_or_one_cluster_has_no_error_and_nothing_is_not_a_number() {
        let one = Score::of(&[job(None, 2, 1)], false).unwrap();
        assert_eq!(one.se, None);
        assert!(close(one.mean, 0.5));
        assert!(close(one.pass_at_k.unwrap(), 1.0));
        assert!(close(one.pass_hat_k.unwrap(), 0.0));
        let same = Score::of(&[job(Some("x"), 1, 1), job(Some("x"), 1, 0)], true).unwrap();
        assert_eq!((same.se, same.clusters), (None, Some(1)));
        let ties = Score::of(&[job(None, 1, 1), job(None, 1, 1)], false).unwrap();
        assert_eq!(ties.se, Some(0.0));
        assert!(Score::of(&[], false).is_none());
        let json = serde_json::to_string(&ties).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    }
}
