//! The statistics of a comparison, as "Adding Error Bars to Evals" (Miller, 2024) sets them
//! out: two models (or two runs) answered the same jobs, so they are compared pair by pair.
//! The difference of their mean scores comes with its standard error (plain, or clustered
//! when jobs share a source), a 95% interval, a two-sided p-value from the normal
//! distribution and the minimum detectable effect at 80% power. Also the estimators of
//! pass@k and pass^k over repeated samples.
//!
//! Everything here is a pure function over slices, or the same gathered one pair at a time
//! in bounded memory ([`PairedSums`]). No figure is ever NaN or infinite: where a
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
    let mut sums = PairedSums::default();
    for &(a, b) in pairs {
        sums.push(a, b, None);
    }
    sums.paired()
}

/// Compares paired scores `(a, b)` whose jobs fall in clusters (`clusters[i]` is the cluster of
/// `pairs[i]`), with the cluster-robust standard error of [`PairedSums::paired_clustered`].
pub fn paired_clustered<K: Ord>(pairs: &[(f64, f64)], clusters: &[K]) -> Option<Paired> {
    assert_eq!(pairs.len(), clusters.len(), "one cluster per pair");
    let mut numbers: BTreeMap<&K, usize> = BTreeMap::new();
    let mut sums = PairedSums::default();
    for (&(a, b), cluster) in pairs.iter().zip(clusters) {
        let next = numbers.len();
        let number = *numbers.entry(cluster).or_insert(next);
        sums.push(a, b, Some(Cluster::Shared(number)));
    }
    sums.paired_clustered()
}

/// The cluster of a pair, when the error is clustered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// The cluster numbered so, of the pairs that share it (numbers from 0, given in turn).
    Shared(usize),
    /// A cluster of its own.
    Alone,
}

/// The running mean of values and the sum of their squared deviations from it, by Welford's
/// update: as exact as taking the mean first and the deviations after, with nothing held.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    n: u64,
    mean: f64,
    /// Σ (x − mean)².
    squares: f64,
}

impl Spread {
    #[expect(clippy::cast_precision_loss, reason = "counts for statistics")]
    fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.squares += delta * (x - self.mean);
    }

    /// Σ (x − `center`)² over the values pushed.
    #[expect(clippy::cast_precision_loss, reason = "counts for statistics")]
    fn squares_about(&self, center: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        self.squares + self.n as f64 * (self.mean - center).powi(2)
    }
}

/// A shared cluster's pairs: how many, and the sum of their shifted differences.
#[derive(Debug, Clone, Copy, Default)]
struct ClusterSum {
    n: u64,
    sum: f64,
}

/// Paired scores gathered one pair at a time, in bounded memory whatever the number of pairs:
/// the running sums of each side and of the differences (for the means, as a slice's sum
/// adds them), the differences' spread, and with clusters each shared cluster's count and sum
/// and the spread of the pairs alone in theirs. The spreads and the clusters' sums are of the
/// differences less the first one, so that differences far from zero lose nothing to
/// rounding. [`paired`] and [`paired_clustered`] are these over a slice.
#[derive(Debug, Clone)]
pub struct PairedSums {
    n: usize,
    sum_a: f64,
    sum_b: f64,
    sum_diff: f64,
    all_ties: bool,
    /// The first difference, taken from every difference below.
    shift: f64,
    /// The sum of the shifted differences.
    sum_shifted: f64,
    spread: Spread,
    /// Per shared cluster, by its number.
    shared: Vec<ClusterSum>,
    /// The shifted differences of the pairs each in a cluster of its own.
    alone: Spread,
}

impl Default for PairedSums {
    fn default() -> Self {
        // The sums start where `Iterator::sum` of `f64` starts, so that they match it.
        Self {
            n: 0,
            sum_a: -0.0,
            sum_b: -0.0,
            sum_diff: -0.0,
            all_ties: true,
            shift: 0.0,
            sum_shifted: 0.0,
            spread: Spread::default(),
            shared: Vec::new(),
            alone: Spread::default(),
        }
    }
}

impl PairedSums {
    /// Adds the pair `(a, b)`, of `cluster` when the error is clustered.
    pub fn push(&mut self, a: f64, b: f64, cluster: Option<Cluster>) {
        let diff = b - a;
        if self.n == 0 {
            self.shift = diff;
        }
        let shifted = diff - self.shift;
        self.n += 1;
        self.sum_a += a;
        self.sum_b += b;
        self.sum_diff += diff;
        self.all_ties &= a == b;
        self.sum_shifted += shifted;
        self.spread.push(shifted);
        match cluster {
            Some(Cluster::Shared(number)) => {
                if self.shared.len() <= number {
                    self.shared.resize(number + 1, ClusterSum::default());
                }
                let cluster = &mut self.shared[number];
                cluster.n += 1;
                cluster.sum += shifted;
            }
            Some(Cluster::Alone) => self.alone.push(shifted),
            None => {}
        }
    }

    /// Pairs added.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[expect(clippy::cast_precision_loss, reason = "counts for statistics")]
    fn base(&self) -> Option<Base> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        Some(Base {
            n: self.n,
            mean_a: self.sum_a / n,
            mean_b: self.sum_b / n,
            diff: self.sum_diff / n,
            all_ties: self.all_ties,
        })
    }

    /// The comparison of the pairs added, its standard error the sample standard deviation of
    /// the differences over √n: `None` when there are none.
    #[expect(clippy::cast_precision_loss, reason = "counts for statistics")]
    pub fn paired(&self) -> Option<Paired> {
        let base = self.base()?;
        let se = (self.n >= 2).then(|| {
            let n = self.n as f64;
            (self.spread.squares / (n - 1.0)).sqrt() / n.sqrt()
        });
        let reason = se.is_none().then_some(NoError::OneJob);
        Some(base.finish(se, reason, None, Method::Paired))
    }

    /// The comparison of the pairs added, each pushed with its cluster, its standard error
    /// cluster-robust: √(Σ_c (Σ_{i∈c} (d_i − d̄))²) / n over the clusters c, `None` with fewer
    /// than two. A shared cluster's sum of deviations is its shifted sum less its size times
    /// d̄ shifted; the clusters of one pair add the squares of theirs, as their spread gives
    /// them.
    #[expect(clippy::cast_precision_loss, reason = "counts for statistics")]
    pub fn paired_clustered(&self) -> Option<Paired> {
        let base = self.base()?;
        let center = self.sum_shifted / self.n as f64;
        let shared = self.shared.iter().filter(|c| c.n > 0);
        let count = shared.clone().count() + usize::try_from(self.alone.n).unwrap_or(usize::MAX);
        let se = (count >= 2).then(|| {
            let squares: f64 = shared
                .map(|c| (c.sum - c.n as f64 * center).powi(2))
                .sum::<f64>()
                + self.alone.squares_about(center);
            squares.sqrt() / self.n as f64
        });
        let reason = if base.n < 2 {
            Some(NoError::OneJob)
        } else {
            se.is_none().then_some(NoError::OneCluster)
        };
        Some(base.finish(se, reason, Some(count), Method::PairedClustered))
    }
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

    /// The standard error of the mean of `values` taken the plain way, the mean first and
    /// the deviations after: what the running sums must give.
    fn two_pass_se(values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (squares / (n - 1.0)).sqrt() / n.sqrt()
    }

    /// The cluster-robust standard error taken the plain way: each cluster's deviations from
    /// the mean summed, then squared.
    fn two_pass_clustered_se(values: &[f64], clusters: &[u64]) -> f64 {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let mut sums: BTreeMap<u64, f64> = BTreeMap::new();
        for (v, c) in values.iter().zip(clusters) {
            *sums.entry(*c).or_default() += v - mean;
        }
        sums.values().map(|s| s * s).sum::<f64>().sqrt() / values.len() as f64
    }

    /// Pairs gathered one at a time, nothing of them held, give the plain way's figures:
    /// the same means to the last bit, the same errors to rounding, even where every
    /// difference is far from zero and their spread is small beside it (B a few seconds
    /// slower than A on every job, give or take milliseconds).
    #[test]
    fn sums_gathered_one_pair_at_a_time_match_the_plain_two_pass_figures() {
        let mut rng = fastrand::Rng::with_seed(11);
        for (n, offset, spread) in [
            (2_usize, 0.0, 1.0),
            (7, 0.0, 3e-6),
            (500, 0.0, 1.0),
            (5000, 4e6, 1.0),
            (5000, 1e9, 0.25),
            (20_000, -3.0, 1e-3),
        ] {
            // Differences about `offset`: B takes that much longer than A, give or take.
            let pairs: Vec<(f64, f64)> = (0..n)
                .map(|_| (rng.f64() * spread, offset + 2.0 * rng.f64() * spread))
                .collect();
            // The plain way's figures over the differences less the offset, which takes
            // nothing from them (a difference and the offset are within a factor of two, so
            // the subtraction is exact): the deviations are the same, without the rounding
            // of a mean far from zero.
            let diffs: Vec<f64> = pairs.iter().map(|(a, b)| b - a - offset).collect();
            // Shared clusters, and now and then a pair alone in its own.
            let clusters: Vec<Option<u64>> = (0..n)
                .map(|_| (rng.u32(0..4) > 0).then(|| rng.u64(0..9)))
                .collect();
            let keys: Vec<u64> = clusters
                .iter()
                .enumerate()
                .map(|(i, c)| c.unwrap_or(1_000 + i as u64))
                .collect();
            let mut plain = PairedSums::default();
            let mut clustered = PairedSums::default();
            for (&(a, b), c) in pairs.iter().zip(&clusters) {
                plain.push(a, b, None);
                let cluster = c.map_or(Cluster::Alone, |c| Cluster::Shared(c as usize));
                clustered.push(a, b, Some(cluster));
            }
            assert_eq!(plain.len(), n);
            let (p, c) = (
                plain.paired().unwrap(),
                clustered.paired_clustered().unwrap(),
            );
            let sum = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
            assert_eq!(p.mean_a.to_bits(), sum(|p| p.0).to_bits());
            assert_eq!(p.mean_b.to_bits(), sum(|p| p.1).to_bits());
            assert_eq!(p.diff.to_bits(), sum(|p| p.1 - p.0).to_bits());
            assert_eq!(c.diff.to_bits(), p.diff.to_bits());
            let near = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want;
            let want = two_pass_se(&diffs);
            assert!(
                near(p.se.unwrap(), want),
                "n {n}: {:?} against {want}",
                p.se
            );
            let want = two_pass_clustered_se(&diffs, &keys);
            assert!(
                near(c.se.unwrap(), want),
                "n {n}: {:?} against {want}",
                c.se
            );
            let count = keys.iter().collect::<std::collections::BTreeSet<_>>().len();
            assert_eq!(c.clusters, Some(count));
            assert_eq!(paired(&pairs), Some(p));
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
        let pairs: Vec<(f64, f64)> = (0..5000)
            .map(|i| (0.0, f64::from(i).sqrt() * 1e-3))
            .collect();
        let clusters: Vec<u32> = (0..5000).map(|i| i % 997).collect();
        let first = paired_clustered(&pairs, &clusters).unwrap().se.unwrap();
        for _ in 0..20 {
            let again = paired_clustered(&pairs, &clusters).unwrap().se.unwrap();
            assert_eq!(again.to_bits(), first.to_bits());
        }
    }
}
