//! The statistics of a comparison, as "Adding Error Bars to Evals" (Miller, 2024) sets them
//! out: two models (or two runs) answered the same jobs, so they are compared pair by pair.
//! The difference of their mean scores comes with its standard error (plain, or clustered
//! when jobs share a source), a 95% interval, a two-sided p-value from the normal
//! distribution and the minimum detectable effect at 80% power. Also the estimators of
//! pass@k and pass^k over repeated samples.
//!
//! Everything here is a pure function over slices. No figure is ever NaN or infinite: where a
//! figure cannot be had (one job, no spread, one cluster) it is `None`, and [`Paired::reason`]
//! says why in words.

use std::collections::BTreeMap;

use serde::Serialize;

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The normal quantile of 80% power (one-sided).
pub const Z_POWER80: f64 = 0.841_621_233_572_914_3;

/// How a standard error was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The sample standard deviation of the per-job differences over √n.
    Paired,
    /// The cluster-robust standard error over the given clusters.
    PairedClustered,
}

/// Why a comparison has no standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoError {
    /// A single job: no spread can be seen.
    OneJob,
    /// Every job came out the same under both (every difference is zero).
    AllTies,
    /// Every job differs by the same amount, so the differences have no spread.
    NoSpread,
    /// All jobs are in one cluster: a clustered error needs at least two.
    OneCluster,
}

impl NoError {
    pub fn describe(self) -> &'static str {
        match self {
            Self::OneJob => "one job only: no standard error",
            Self::AllTies => "every job scored the same under both: no difference to test",
            Self::NoSpread => {
                "every job differs by the same amount: no spread to estimate an error from"
            }
            Self::OneCluster => "all jobs are in one cluster: a clustered error needs two or more",
        }
    }
}

/// A paired comparison of B against A over the jobs scored under both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    /// Jobs scored under both.
    pub n: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean(b − a).
    pub diff: f64,
    pub se: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    /// The smallest true difference this comparison would detect at 80% power, α = 0.05.
    pub mde80: Option<f64>,
    /// Clusters, when the error is clustered.
    pub clusters: Option<usize>,
    pub method: Method,
    /// Why the figures above are missing, when they are.
    pub reason: Option<NoError>,
}

impl Paired {
    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.ci95.is_some_and(|[lo, hi]| lo > 0.0 || hi < 0.0)
    }

    /// About how many jobs would give a minimum detectable effect of `effect`, from the
    /// spread seen here (the effect shrinks with √n).
    pub fn jobs_to_resolve(&self, effect: f64) -> Option<u64> {
        let mde = self.mde80?;
        if effect.is_nan() || effect <= 0.0 {
            return None;
        }
        let jobs = (self.n as f64) * (mde / effect).powi(2);
        jobs.is_finite().then(|| jobs.ceil() as u64)
    }
}

/// Compares paired scores `(a, b)`: `None` when there are none.
pub fn paired(pairs: &[(f64, f64)]) -> Option<Paired> {
    let base = Base::new(pairs)?;
    let se = standard_error(&differences(pairs));
    let reason = se.is_none().then_some(NoError::OneJob);
    Some(base.finish(se, reason, None, Method::Paired))
}

/// Compares paired scores `(a, b)` whose jobs fall in clusters (`clusters[i]` is the cluster of
/// `pairs[i]`), with the cluster-robust standard error of [`clustered_standard_error`].
pub fn paired_clustered<K: Ord>(pairs: &[(f64, f64)], clusters: &[K]) -> Option<Paired> {
    let base = Base::new(pairs)?;
    let (se, count) = clustered_standard_error(&differences(pairs), clusters);
    let reason = if base.n < 2 {
        Some(NoError::OneJob)
    } else {
        se.is_none().then_some(NoError::OneCluster)
    };
    Some(base.finish(se, reason, Some(count), Method::PairedClustered))
}

/// Paired scores gathered one pair at a time, for comparisons over more jobs than are worth
/// holding whole: the running sums of each side (for the means) and each pair's difference
/// (its spread is taken about the mean difference, which needs that mean first), with its
/// cluster when the error is clustered. The figures are those of [`paired`] and
/// [`paired_clustered`] over the same pairs in the same order, to the last bit.
#[derive(Debug, Clone)]
pub struct PairedSums {
    sum_a: f64,
    sum_b: f64,
    all_ties: bool,
    diffs: Vec<f64>,
    clusters: Vec<u64>,
}

impl Default for PairedSums {
    fn default() -> Self {
        // The sums start where `Iterator::sum` of `f64` starts, so that they match it.
        Self {
            sum_a: -0.0,
            sum_b: -0.0,
            all_ties: true,
            diffs: Vec::new(),
            clusters: Vec::new(),
        }
    }
}

impl PairedSums {
    /// Adds the pair `(a, b)`, of `cluster` when the error is clustered.
    pub fn push(&mut self, a: f64, b: f64, cluster: Option<u64>) {
        self.sum_a += a;
        self.sum_b += b;
        self.all_ties &= a == b;
        self.diffs.push(b - a);
        if let Some(cluster) = cluster {
            self.clusters.push(cluster);
        }
    }

    /// Pairs added.
    pub fn len(&self) -> usize {
        self.diffs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }

    fn base(&self) -> Option<Base> {
        if self.diffs.is_empty() {
            return None;
        }
        let n = self.diffs.len();
        Some(Base {
            n,
            mean_a: self.sum_a / n as f64,
            mean_b: self.sum_b / n as f64,
            diff: mean(&self.diffs),
            all_ties: self.all_ties,
        })
    }

    /// [`paired`] over the pairs added: `None` when there are none.
    pub fn paired(&self) -> Option<Paired> {
        let base = self.base()?;
        let se = standard_error(&self.diffs);
        let reason = se.is_none().then_some(NoError::OneJob);
        Some(base.finish(se, reason, None, Method::Paired))
    }

    /// [`paired_clustered`] over the pairs added, each pushed with its cluster.
    pub fn paired_clustered(&self) -> Option<Paired> {
        let base = self.base()?;
        let (se, count) = clustered_standard_error(&self.diffs, &self.clusters);
        let reason = if base.n < 2 {
            Some(NoError::OneJob)
        } else {
            se.is_none().then_some(NoError::OneCluster)
        };
        Some(base.finish(se, reason, Some(count), Method::PairedClustered))
    }
}

/// Each pair's `b − a`.
fn differences(pairs: &[(f64, f64)]) -> Vec<f64> {
    pairs.iter().map(|(a, b)| b - a).collect()
}

/// The mean of `values` (NaN when there are none).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The standard error of the mean of `values`: their sample standard deviation over √n.
/// `None` with fewer than two values; it may be zero, or not finite when they are not.
pub fn standard_error(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = mean(values);
    let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    let sd = (squares / (n - 1) as f64).sqrt();
    Some(sd / (n as f64).sqrt())
}

/// The cluster-robust standard error of the mean of `values` (`clusters[i]` is the cluster of
/// `values[i]`), √(Σ_c (Σ_{i∈c} (x_i − x̄))²) / n, and the number of clusters. `None` with
/// fewer than two clusters. The clusters' sums are added in the clusters' order, so the same
/// values give the same figure to the last bit, run after run.
pub fn clustered_standard_error<K: Ord>(values: &[f64], clusters: &[K]) -> (Option<f64>, usize) {
    assert_eq!(values.len(), clusters.len(), "one cluster per value");
    if values.is_empty() {
        return (None, 0);
    }
    let mean = mean(values);
    let mut sums: BTreeMap<&K, f64> = BTreeMap::new();
    for (value, cluster) in values.iter().zip(clusters) {
        *sums.entry(cluster).or_default() += value - mean;
    }
    let count = sums.len();
    let se = (count >= 2)
        .then(|| sums.values().map(|s| s * s).sum::<f64>().sqrt() / values.len() as f64);
    (se, count)
}

/// The means every comparison starts from.
struct Base {
    n: usize,
    mean_a: f64,
    mean_b: f64,
    diff: f64,
    all_ties: bool,
}

impl Base {
    fn new(pairs: &[(f64, f64)]) -> Option<Self> {
        if pairs.is_empty() {
            return None;
        }
        let n = pairs.len();
        let mean = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
        Some(Self {
            n,
            mean_a: mean(|p| p.0),
            mean_b: mean(|p| p.1),
            diff: mean(|p| p.1 - p.0),
            all_ties: pairs.iter().all(|(a, b)| a == b),
        })
    }

    fn finish(
        self,
        se: Option<f64>,
        reason: Option<NoError>,
        clusters: Option<usize>,
        method: Method,
    ) -> Paired {
        // A spread too small to tell from rounding is no spread.
        let tiny = 1e-12 * self.diff.abs().max(1.0);
        let (se, reason) = match se {
            Some(se) if se.is_finite() && se > tiny => (Some(se), reason),
            Some(_) if self.all_ties => (None, Some(NoError::AllTies)),
            Some(_) => (None, Some(NoError::NoSpread)),
            None => (None, reason),
        };
        Paired {
            n: self.n,
            mean_a: self.mean_a,
            mean_b: self.mean_b,
            diff: self.diff,
            se,
            ci95: se.map(|se| [self.diff - Z95 * se, self.diff + Z95 * se]),
            p_value: se.map(|se| two_sided_p(self.diff / se)),
            mde80: se.map(|se| (Z95 + Z_POWER80) * se),
            clusters,
            method,
            reason,
        }
    }
}

/// The two-sided p-value of a z statistic under the standard normal distribution.
pub fn two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// The complementary error function, by the Chebyshev fit of Press et al., "Numerical
/// Recipes" §6.2 (fractional error below 1.2e-7 everywhere): ample for p-values shown to
/// three digits.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| c + t * acc);
    let value = t * (-z * z + poly).exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

/// The unbiased estimate of pass@k from `n` samples of which `c` passed: the chance that at
/// least one of k samples drawn without replacement passes (Chen et al., 2021). `None` when
/// k is 0 or larger than n.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    // 1 − C(n−c, k) / C(n, k), as a product so that nothing overflows.
    let all_fail: f64 = (0..k)
        .map(|i| (n.saturating_sub(c + i)) as f64 / (n - i) as f64)
        .product();
    Some(1.0 - all_fail)
}

/// The estimate of pass^k from `n` samples of which `c` passed: the chance that all of k
/// samples drawn without replacement pass (the reliability measure of τ-bench). `None` when
/// k is 0 or larger than n.
pub fn pass_hat_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    // C(c, k) / C(n, k).
    Some(
        (0..k)
            .map(|i| c.saturating_sub(i) as f64 / (n - i) as f64)
            .product(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn erfc_matches_known_values() {
        // Values of the exact function, to ten digits.
        for (x, expected) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_2),
            (1.0, 0.157_299_207_1),
            (1.959_963_985 / std::f64::consts::SQRT_2, 0.05),
            (3.0, 2.209_049_700e-5),
            (-1.0, 1.842_700_792_9),
        ] {
            let got = erfc(x);
            assert!(
                (got - expected).abs() <= 1.2e-7 * expected.max(1e-300),
                "erfc({x}) = {got}, expected {expected}"
            );
        }
        assert!(close(two_sided_p(Z95), 0.05, 1e-7));
        assert!(close(two_sided_p(-Z95), 0.05, 1e-7));
        assert_eq!(two_sided_p(0.0), 1.0);
        assert!(two_sided_p(40.0) >= 0.0);
    }

    #[test]
    fn a_paired_comparison_matches_a_worked_example() {
        // Scores of A and B on 8 jobs; differences 1, 0, 0, 1, -1, 0, 1, 0.
        let pairs = [
            (0.0, 1.0),
            (1.0, 1.0),
            (0.0, 0.0),
            (0.0, 1.0),
            (1.0, 0.0),
            (1.0, 1.0),
            (0.0, 1.0),
            (1.0, 1.0),
        ];
        let p = paired(&pairs).unwrap();
        assert_eq!(p.n, 8);
        assert!(close(p.mean_a, 0.5, 1e-12));
        assert!(close(p.mean_b, 0.75, 1e-12));
        assert!(close(p.diff, 0.25, 1e-12));
        // Sample variance: Σ(d − 0.25)² / 7 = (3·0.5625 + 3·0.0625 + 1.5625) / 7 = 3.5 / 7.
        let se = (0.5_f64).sqrt() / 8_f64.sqrt();
        assert!(close(p.se.unwrap(), se, 1e-12));
        let [lo, hi] = p.ci95.unwrap();
        assert!(close(lo, 0.25 - Z95 * se, 1e-12) && close(hi, 0.25 + Z95 * se, 1e-12));
        // z = 0.25 / 0.25 = 1: p = erfc(1/√2) = 0.3173105.
        assert!(close(p.p_value.unwrap(), 0.317_310_5, 1e-6));
        assert!(close(p.mde80.unwrap(), (Z95 + Z_POWER80) * se, 1e-12));
        assert!(!p.significant());
        assert_eq!(p.method, Method::Paired);
        assert_eq!(p.clusters, None);
        assert_eq!(p.reason, None);
        // The effect shrinks with √n: a quarter of the MDE takes 16 times the jobs.
        assert_eq!(p.jobs_to_resolve(p.mde80.unwrap() / 4.0), Some(128));
    }

    #[test]
    fn ties_one_job_and_no_spread_give_no_figures_and_say_why() {
        assert_eq!(paired(&[]), None);

        let one = paired(&[(0.0, 1.0)]).unwrap();
        assert_eq!((one.se, one.p_value, one.ci95), (None, None, None));
        assert_eq!(one.reason, Some(NoError::OneJob));
        assert_eq!(one.diff, 1.0);

        let ties = paired(&[(1.0, 1.0), (0.0, 0.0), (0.5, 0.5)]).unwrap();
        assert_eq!(ties.reason, Some(NoError::AllTies));
        assert_eq!((ties.se, ties.mde80), (None, None));

        let shifted = paired(&[(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]).unwrap();
        assert_eq!(shifted.reason, Some(NoError::NoSpread));
        assert_eq!(shifted.p_value, None);
        assert!(!shifted.significant());

        // Nothing serialises as NaN or infinity.
        for p in [one, ties, shifted] {
            let json = serde_json::to_string(&p).unwrap();
            assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        }
    }

    #[test]
    fn the_clustered_error_matches_a_worked_example_with_unequal_clusters() {
        // Differences 1, 1, 0 in cluster x; 0 in y; -1, 0 in z. d̄ = 1/6.
        let pairs = [
            (0.0, 1.0),
            (0.0, 1.0),
            (1.0, 1.0),
            (1.0, 1.0),
            (1.0, 0.0),
            (0.0, 0.0),
        ];
        let clusters = ["x", "x", "x", "y", "z", "z"];
        let p = paired_clustered(&pairs, &clusters).unwrap();
        let d: f64 = 1.0 / 6.0;
        // Cluster sums of deviations: x: 2 − 3d, y: −d, z: −1 − 2d.
        let expected =
            ((2.0 - 3.0 * d).powi(2) + d.powi(2) + (-1.0 - 2.0 * d).powi(2)).sqrt() / 6.0;
        assert!(close(p.se.unwrap(), expected, 1e-12), "{p:?}");
        assert_eq!(p.clusters, Some(3));
        assert_eq!(p.method, Method::PairedClustered);

        // One cluster per job is the plain sum of squared deviations over n: the plain SE
        // with n in place of n − 1.
        let singles = paired_clustered(&pairs, &[0, 1, 2, 3, 4, 5]).unwrap();
        let plain = paired(&pairs).unwrap();
        assert!(close(
            singles.se.unwrap(),
            plain.se.unwrap() * (5.0_f64 / 6.0).sqrt(),
            1e-12
        ));

        let one = paired_clustered(&pairs, &["x"; 6]).unwrap();
        assert_eq!(one.reason, Some(NoError::OneCluster));
        assert_eq!((one.se, one.clusters), (None, Some(1)));
    }

    #[test]
    fn pass_at_k_and_pass_hat_k_match_their_definitions() {
        // 5 samples, 2 passed. pass@2 = 1 − C(3,2)/C(5,2) = 1 − 3/10.
        assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7, 1e-12));
        // pass^2 = C(2,2)/C(5,2) = 1/10.
        assert!(close(pass_hat_k(5, 2, 2).unwrap(), 0.1, 1e-12));
        // k = 1 is the pass rate for both.
        assert!(close(pass_at_k(5, 2, 1).unwrap(), 0.4, 1e-12));
        assert!(close(pass_hat_k(5, 2, 1).unwrap(), 0.4, 1e-12));
        assert_eq!(pass_at_k(3, 0, 3), Some(0.0));
        assert_eq!(pass_at_k(3, 1, 3), Some(1.0));
        assert_eq!(pass_hat_k(3, 3, 3), Some(1.0));
        assert_eq!(pass_hat_k(3, 2, 3), Some(0.0));
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
    }

    /// Pairs gathered one at a time give the figures of the slices, bit for bit.
    #[test]
    fn sums_gathered_one_pair_at_a_time_match_the_slices_exactly() {
        let mut rng = fastrand::Rng::with_seed(11);
        for n in [0_usize, 1, 2, 7, 500] {
            let pairs: Vec<(f64, f64)> = (0..n)
                .map(|_| (rng.f64() * 3e-6, f64::from(rng.f64() < 0.4)))
                .collect();
            let clusters: Vec<u64> = (0..n).map(|_| rng.u64(0..9)).collect();
            let mut plain = PairedSums::default();
            let mut clustered = PairedSums::default();
            for (&(a, b), &c) in pairs.iter().zip(&clusters) {
                plain.push(a, b, None);
                clustered.push(a, b, Some(c));
            }
            assert_eq!(plain.len(), n);
            assert_eq!(plain.paired(), paired(&pairs));
            let (got, want) = (
                clustered.paired_clustered(),
                paired_clustered(&pairs, &clusters),
            );
            // The clusters' sums are added in a hash map's order: equal to rounding.
            assert_eq!(got.as_ref().map(|p| p.diff), want.as_ref().map(|p| p.diff));
            assert_eq!(
                got.as_ref().map(|p| p.clusters),
                want.as_ref().map(|p| p.clusters)
            );
            if let (Some(got), Some(want)) = (got.and_then(|p| p.se), want.and_then(|p| p.se)) {
                assert!(close(got, want, 1e-15), "{got} {want}");
            }
        }
        let ties = [(1.0, 1.0), (0.0, 0.0)];
        let mut sums = PairedSums::default();
        for (a, b) in ties {
            sums.push(a, b, None);
        }
        assert_eq!(sums.paired().unwrap().reason, Some(NoError::AllTies));
    }

    /// A/A comparisons of one random grader reject at about the nominal 5%; when outcomes are
    /// shared within clusters, the clustered error stays calibrated where the plain one
    /// rejects far too often.
    #[test]
    fn comparisons_of_identical_graders_reject_at_about_five_percent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let trials = 2000;
        let jobs = 200;
        let mut plain = 0;
        let mut clustered_plain = 0;
        let mut clustered = 0;
        for _ in 0..trials {
            // Independent jobs, both models passing each with probability 0.6.
            let pairs: Vec<(f64, f64)> = (0..jobs)
                .map(|_| (f64::from(rng.f64() < 0.6), f64::from(rng.f64() < 0.6)))
                .collect();
            plain += usize::from(paired(&pairs).unwrap().significant());

            // 50 passages of 4 questions each; the passage's difficulty moves every
            // question on it, for both models alike, and each model has a per-passage knack.
            let mut pairs = Vec::with_capacity(jobs);
            let mut clusters = Vec::with_capacity(jobs);
            for passage in 0..50 {
                let knack_a = rng.f64() < 0.5;
                let knack_b = rng.f64() < 0.5;
                for _ in 0..4 {
                    pairs.push((f64::from(knack_a), f64::from(knack_b)));
                    clusters.push(passage);
                }
            }
            clustered_plain += usize::from(paired(&pairs).unwrap().significant());
            clustered +=
                usize::from(paired_clustered(&pairs, &clusters).is_some_and(|p| p.significant()));
        }
        let rate = |count: usize| count as f64 / trials as f64;
        assert!(
            (0.03..=0.07).contains(&rate(plain)),
            "plain A/A rejection rate {}",
            rate(plain)
        );
        assert!(
            rate(clustered_plain) > 0.2,
            "the plain error ignores the clusters: {}",
            rate(clustered_plain)
        );
        assert!(
            (0.03..=0.08).contains(&rate(clustered)),
            "clustered A/A rejection rate {}",
            rate(clustered)
        );
    }

    #[test]
    fn a_clustered_error_is_the_same_to_the_last_bit_each_time() {
        // Values whose sum depends on the order they are added in.
        let values: Vec<f64> = (0..5000).map(|i| f64::from(i).sqrt() * 1e-3).collect();
        let clusters: Vec<u32> = (0..5000).map(|i| i % 997).collect();
        let first = clustered_standard_error(&values, &clusters).0.unwrap();
        for _ in 0..20 {
            let again = clustered_standard_error(&values, &clusters).0.unwrap();
            assert_eq!(again.to_bits(), first.to_bits());
        }
    }
}
