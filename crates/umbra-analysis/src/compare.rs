//! Shadow against production: a rank test, a shift estimate and the tails.
//!
//! In the manner of Kayenta's Mann-Whitney classifier, two latency samples from
//! the same window and profile (the *treatment*, shadow or canary, and the
//! *control*, production) are compared with
//!
//! - the Mann-Whitney U test ([`mann_whitney_u`]), two-sided, with average ranks
//!   for ties, the tie-corrected normal approximation with continuity
//!   correction, or the exact null distribution for small samples without ties.
//!   It matches SciPy's `scipy.stats.mannwhitneyu` (`method="asymptotic"`,
//!   `"exact"` and `"auto"`) to 1e-6 (see `tests/mannwhitney.rs` and the script
//!   that made its fixture);
//! - the Hodges-Lehmann shift ([`hodges_lehmann`]): the median of all pairwise
//!   differences `treatment − control` (SciPy terms:
//!   `np.median(np.subtract.outer(x, y))`), computed exactly without forming the
//!   `n·m` differences: the k-th smallest difference is found by bisecting on
//!   the bit patterns of `f64` (at most 64 steps), each counting the differences
//!   at or below a candidate in one merge-like pass, so the cost is
//!   O((n + m) log(n + m)) for the sort and 64·(n + m) after it, with no cap on
//!   the sample sizes;
//! - a relative effect size: the shift over the control's median;
//! - the upper percentiles: p90 and p99 ratios, and a test on the tail (the share
//!   of each sample above the pooled 99th percentile, two-proportion z-test).
//!   A rank test answers "is one sample generally larger"; a shadow whose median
//!   is unchanged but whose tail is heavier (higher variance) passes it, which is
//!   the known weakness of Kayenta's classifier this covers.
//!
//! Samples come as slices of numbers or as HdrHistograms (a window's latencies:
//! values in the same bucket are ties).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc;

/// Which difference the test looks for, as SciPy's `alternative`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// The distributions differ.
    #[default]
    TwoSided,
    /// The first sample is stochastically greater.
    Greater,
    /// The first sample is stochastically less.
    Less,
}

/// How the p-value is computed, as SciPy's `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Exact when a sample has at most 8 values and there are no ties, otherwise
    /// asymptotic (SciPy's rule).
    #[default]
    Auto,
    /// Normal approximation with tie correction and continuity correction.
    Asymptotic,
    /// The exact distribution of U; samples without ties only.
    Exact,
}

/// Why a comparison cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("the {which} sample is empty")]
    Empty { which: &'static str },
    #[error("the {which} sample has a value that is not a finite number at index {index}")]
    NotFinite { which: &'static str, index: usize },
    #[error("the exact Mann-Whitney distribution assumes no ties, and the samples have ties")]
    ExactWithTies,
    #[error(
        "the exact Mann-Whitney distribution for samples of {n1} and {n2} is too large to compute; use the asymptotic method"
    )]
    ExactTooLarge { n1: u64, n2: u64 },
}

/// A sample as its distinct values, ascending, with their counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ranked {
    values: Vec<f64>,
    counts: Vec<u64>,
    n: u64,
}

impl Ranked {
    /// From raw values (any order). Fails on an empty sample or a non-finite value.
    pub fn from_values(v: &[f64], which: &'static str) -> Result<Ranked, CompareError> {
        if v.is_empty() {
            return Err(CompareError::Empty { which });
        }
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(CompareError::NotFinite { which, index });
        }
        let mut s = v.to_vec();
        s.sort_unstable_by(f64::total_cmp);
        let mut values = Vec::with_capacity(s.len());
        let mut counts: Vec<u64> = Vec::with_capacity(s.len());
        for x in s {
            match (values.last(), counts.last_mut()) {
                // `==` groups -0.0 with 0.0, as NumPy's ranking does.
                (Some(&last), Some(c)) if last == x => *c += 1,
                _ => {
                    values.push(x);
                    counts.push(1);
                }
            }
        }
        Ok(Ranked {
            values,
            counts,
            n: v.len() as u64,
        })
    }

    /// From a latency histogram: each bucket's median-equivalent value, with its count.
    pub fn from_histogram(h: &Histogram<u64>) -> Ranked {
        let mut values = Vec::new();
        let mut counts = Vec::new();
        for v in h.iter_recorded() {
            let c = v.count_at_value();
            if c == 0 {
                continue;
            }
            values.push(h.median_equivalent(v.value_iterated_to()) as f64);
            counts.push(c);
        }
        let n = counts.iter().sum();
        Ranked { values, counts, n }
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether any value occurs more than once.
    pub fn has_ties(&self) -> bool {
        self.counts.iter().any(|&c| c > 1)
    }

    /// The smallest value with at least `ceil(q·n)` values at or below it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 || !q.is_finite() {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (v, c) in self.values.iter().zip(&self.counts) {
            seen += c;
            if seen >= rank {
                return Some(*v);
            }
        }
        self.values.last().copied()
    }

    /// Number of values strictly above `t`.
    pub fn count_above(&self, t: f64) -> u64 {
        let i = self.values.partition_point(|v| *v <= t);
        self.counts[i..].iter().sum()
    }

    fn merged(&self, other: &Ranked) -> Ranked {
        let (mut values, mut counts) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < self.values.len() || j < other.values.len() {
            let a = self.values.get(i).copied().unwrap_or(f64::INFINITY);
            let b = other.values.get(j).copied().unwrap_or(f64::INFINITY);
            let (v, c) = if j >= other.values.len() || (i < self.values.len() && a < b) {
                i += 1;
                (a, self.counts[i - 1])
            } else if i >= self.values.len() || b < a {
                j += 1;
                (b, other.counts[j - 1])
            } else {
                i += 1;
                j += 1;
                (a, self.counts[i - 1] + other.counts[j - 1])
            };
            values.push(v);
            counts.push(c);
        }
        Ranked {
            values,
            counts,
            n: self.n + other.n,
        }
    }
}

/// The result of [`mann_whitney_u`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample (SciPy's `statistic`): the number of pairs in which
    /// its value is the larger, ties counting half.
    pub u1: f64,
    pub p_value: f64,
    /// The standardised statistic, when the normal approximation was used.
    pub z: Option<f64>,
    /// The method actually used (never `Auto`).
    pub method: Method,
    pub n1: u64,
    pub n2: u64,
}

/// Standard normal survival function, `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Mann-Whitney U test of `x` against `y`, as `scipy.stats.mannwhitneyu(x, y,
/// alternative=..., method=...)` with its default continuity correction.
///
/// ```
/// use umbra_analysis::compare::{Alternative, Method, mann_whitney_u};
/// let r = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], Alternative::TwoSided, Method::Auto).unwrap();
/// assert_eq!(r.u1, 0.0);
/// assert!((r.p_value - 0.1).abs() < 1e-12); // exact: 2 × 1/20
/// ```
pub fn mann_whitney_u(
    x: &[f64],
    y: &[f64],
    alternative: Alternative,
    method: Method,
) -> Result<MannWhitney, CompareError> {
    let a = Ranked::from_values(x, "first")?;
    let b = Ranked::from_values(y, "second")?;
    mann_whitney_ranked(&a, &b, alternative, method)
}

/// [`mann_whitney_u`] on ranked samples (for example two histograms).
pub fn mann_whitney_ranked(
    x: &Ranked,
    y: &Ranked,
    alternative: Alternative,
    method: Method,
) -> Result<MannWhitney, CompareError> {
    if x.is_empty() {
        return Err(CompareError::Empty { which: "first" });
    }
    if y.is_empty() {
        return Err(CompareError::Empty { which: "second" });
    }
    let (n1, n2) = (x.n as f64, y.n as f64);
    // Average ranks over the merged distinct values.
    let (mut i, mut j) = (0, 0);
    let mut below = 0.0f64;
    let mut r1 = 0.0f64;
    let mut tie_term = 0.0f64;
    let mut ties = false;
    while i < x.values.len() || j < y.values.len() {
        let a = x.values.get(i).copied();
        let b = y.values.get(j).copied();
        let (cx, cy) = match (a, b) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
                (x.counts[i - 1], y.counts[j - 1])
            }
            (Some(a), Some(b)) if a < b => {
                i += 1;
                (x.counts[i - 1], 0)
            }
            (Some(_), None) => {
                i += 1;
                (x.counts[i - 1], 0)
            }
            _ => {
                j += 1;
                (0, y.counts[j - 1])
            }
        };
        let t = (cx + cy) as f64;
        if cx + cy > 1 {
            ties = true;
        }
        r1 += cx as f64 * (below + (t + 1.0) / 2.0);
        tie_term += t * t * t - t;
        below += t;
    }
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let (u, factor) = match alternative {
        Alternative::Greater => (u1, 1.0),
        Alternative::Less => (u2, 1.0),
        Alternative::TwoSided => (u1.max(u2), 2.0),
    };
    let method = match method {
        Method::Auto if (x.n > 8 && y.n > 8) || ties => Method::Asymptotic,
        Method::Auto => Method::Exact,
        m => m,
    };
    let (p, z) = match method {
        Method::Exact => {
            if ties {
                return Err(CompareError::ExactWithTies);
            }
            (exact_sf(x.n, y.n, u.round() as u64)?, None)
        }
        _ => {
            let n = n1 + n2;
            let s = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
            let z = (u - n1 * n2 / 2.0 - 0.5) / s;
            // Every value tied (s = 0): nothing can be told apart.
            let p = if s > 0.0 && z.is_finite() {
                normal_sf(z)
            } else if s > 0.0 {
                if z > 0.0 { 0.0 } else { 1.0 }
            } else {
                1.0
            };
            (p, Some(z))
        }
    };
    Ok(MannWhitney {
        u1,
        p_value: (p * factor).clamp(0.0, 1.0),
        z,
        method,
        n1: x.n,
        n2: y.n,
    })
}

/// Largest amount of work (limb operations, about `m · m·n · limbs`) the exact
/// distribution is computed with: a few seconds at most.
const EXACT_WORK_LIMIT: f64 = 2e9;

/// `P(U >= k)` under the null hypothesis, for samples of `n1` and `n2` without ties.
///
/// The frequencies of U are the coefficients of the Gaussian binomial
/// `[n1+n2 choose m]_q = Π_{i=1..m} (1 − q^(n+i)) / (1 − q^i)` (m the smaller size,
/// n the larger), built one factor at a time in exact integer arithmetic: each
/// coefficient is a fixed number of 64-bit limbs, enough for the total
/// `C(n1+n2, m)`, added and subtracted modulo 2^(64·limbs). Intermediate values
/// may be negative, but the final coefficients lie in [0, total], so the
/// wrapping arithmetic gives them exactly. (Floating point loses everything to
/// cancellation here by a few hundred values; SciPy's own float fallback
/// overflows around 1000.)
fn exact_sf(n1: u64, n2: u64, k: u64) -> Result<f64, CompareError> {
    let too_large = CompareError::ExactTooLarge { n1, n2 };
    let (m, n) = (n1.min(n2) as usize, n1.max(n2) as usize);
    let top = m.checked_mul(n).ok_or(too_large.clone())?;
    // Bits of C(n+m, m), plus a sign bit and a margin.
    let bits: f64 = (0..m)
        .map(|i| ((n + m - i) as f64 / (i + 1) as f64).log2())
        .sum::<f64>()
        + 3.0;
    let limbs = (bits / 64.0).ceil().max(1.0) as usize;
    if m as f64 * top as f64 * limbs as f64 > EXACT_WORK_LIMIT {
        return Err(too_large);
    }
    if k as usize > top {
        return Ok(0.0);
    }
    let k = k as usize;
    let len = top + n + m + 1;
    let mut c = vec![0u64; len * limbs];
    c[0] = 1;
    for i in 1..=m {
        let shift = n + i;
        let deg = (i - 1) * n;
        // Multiply by (1 − q^shift), highest degree first.
        for d in (shift..=deg + shift).rev() {
            let (lo, hi) = c.split_at_mut(d * limbs);
            sub_assign(
                &mut hi[..limbs],
                &lo[(d - shift) * limbs..(d - shift + 1) * limbs],
            );
        }
        // Divide by (1 − q^i): a running sum with stride i, lowest degree first.
        for d in i..=(deg + shift) {
            let (lo, hi) = c.split_at_mut(d * limbs);
            add_assign(&mut hi[..limbs], &lo[(d - i) * limbs..(d - i + 1) * limbs]);
        }
    }
    let mut tail = vec![0u64; limbs];
    let mut total = vec![0u64; limbs];
    for d in 0..=top {
        let coef = &c[d * limbs..(d + 1) * limbs];
        add_assign(&mut total, coef);
        if d >= k {
            add_assign(&mut tail, coef);
        }
    }
    Ok(ratio(&tail, &total))
}

fn add_assign(a: &mut [u64], b: &[u64]) {
    let mut carry = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (s1, c1) = x.overflowing_add(*y);
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *x = s2;
        carry = c1 || c2;
    }
}

fn sub_assign(a: &mut [u64], b: &[u64]) {
    let mut borrow = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (s1, b1) = x.overflowing_sub(*y);
        let (s2, b2) = s1.overflowing_sub(u64::from(borrow));
        *x = s2;
        borrow = b1 || b2;
    }
}

/// `a / b` for non-negative multi-limb integers, `b > 0`, `a <= b`.
fn ratio(a: &[u64], b: &[u64]) -> f64 {
    let Some(top) = b.iter().rposition(|l| *l != 0) else {
        return f64::NAN;
    };
    // The top three limbs of b (and the same of a) carry all of f64's precision.
    let from = top.saturating_sub(2);
    let scaled = |v: &[u64]| {
        v[from..=top].iter().rev().fold(0.0f64, |acc, l| {
            acc * 18_446_744_073_709_551_616.0 + *l as f64
        })
    };
    (scaled(a) / scaled(b)).clamp(0.0, 1.0)
}

/// The Hodges-Lehmann estimate of the shift of `x` over `y`: the median of all
/// differences `x_i − y_j` (as `np.median(np.subtract.outer(x, y))`).
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Result<f64, CompareError> {
    let a = Ranked::from_values(x, "first")?;
    let b = Ranked::from_values(y, "second")?;
    hodges_lehmann_ranked(&a, &b)
}

/// [`hodges_lehmann`] on ranked samples.
pub fn hodges_lehmann_ranked(x: &Ranked, y: &Ranked) -> Result<f64, CompareError> {
    if x.is_empty() {
        return Err(CompareError::Empty { which: "first" });
    }
    if y.is_empty() {
        return Err(CompareError::Empty { which: "second" });
    }
    let total = u128::from(x.n) * u128::from(y.n);
    let h = DiffSelect::new(x, y);
    if total % 2 == 1 {
        Ok(h.kth(total.div_ceil(2)))
    } else {
        let a = h.kth(total / 2);
        let b = h.kth(total / 2 + 1);
        Ok((a + b) / 2.0)
    }
}

/// Selection of the k-th smallest of the pairwise differences `x_i − y_j`.
struct DiffSelect<'a> {
    x: &'a Ranked,
    y: &'a Ranked,
    /// `y_above[j]`: how many y values are at index j or later.
    y_from: Vec<u128>,
}

impl<'a> DiffSelect<'a> {
    fn new(x: &'a Ranked, y: &'a Ranked) -> DiffSelect<'a> {
        let mut y_from = vec![0u128; y.values.len() + 1];
        for j in (0..y.values.len()).rev() {
            y_from[j] = y_from[j + 1] + u128::from(y.counts[j]);
        }
        DiffSelect { x, y, y_from }
    }

    /// How many differences (as computed in floating point) are `<= t`.
    ///
    /// `fl(x − y)` is non-decreasing in x and non-increasing in y, so for each x
    /// (ascending) the y's that qualify are a suffix that only shrinks.
    fn count_le(&self, t: f64) -> u128 {
        let mut j = 0;
        let mut count = 0u128;
        for (xi, cx) in self.x.values.iter().zip(&self.x.counts) {
            while j < self.y.values.len() && xi - self.y.values[j] > t {
                j += 1;
            }
            count += u128::from(*cx) * self.y_from[j];
        }
        count
    }

    /// The k-th smallest difference, 1-based (`1 <= k <= n·m`).
    fn kth(&self, k: u128) -> f64 {
        let lo = self.x.values[0] - self.y.values[self.y.values.len() - 1];
        let hi = self.x.values[self.x.values.len() - 1] - self.y.values[0];
        // Bisect on the total order of f64 bit patterns: the answer is the
        // smallest t with count_le(t) >= k, which is one of the differences.
        let (mut a, mut b) = (order_key(lo), order_key(hi));
        while a < b {
            let mid = a + (b - a) / 2;
            if self.count_le(from_order_key(mid)) >= k {
                b = mid;
            } else {
                a = mid + 1;
            }
        }
        from_order_key(a)
    }
}

/// Maps an f64 to a u64 with the same order (for non-NaN values).
fn order_key(f: f64) -> u64 {
    let b = f.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// How a treatment is classified against its control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// Significance level of both tests. Default 0.01 (one window in a hundred
    /// of two identical versions would be called different; the verdict rule's
    /// N of M windows brings that down to about 3 in 10 000 for 2 of 3).
    pub alpha: f64,
    /// Values each sample needs before it is compared. Default 20.
    pub min_samples: u64,
    /// The pooled quantile of the tail test. Default 0.99.
    pub tail_quantile: f64,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            alpha: 0.01,
            min_samples: 20,
            tail_quantile: 0.99,
        }
    }
}

/// The tail test: the share of each sample above the pooled quantile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TailTest {
    pub quantile: f64,
    /// The pooled quantile's value.
    pub threshold: f64,
    pub treatment_above: u64,
    pub control_above: u64,
    /// One-sided p-value of "the treatment has more of its values in the tail".
    pub p_value: f64,
}

/// What the comparison concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Significantly higher: by rank (with a positive shift) or in the tail.
    Higher,
    /// Significantly lower by rank (with a negative shift), and not higher in the tail.
    Lower,
    /// No significant difference.
    Same,
}

/// Treatment (shadow or canary) against control (production).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub mann_whitney: MannWhitney,
    /// Hodges-Lehmann shift, treatment − control.
    pub shift: f64,
    /// The shift over the control's median (0.2 = 20% slower).
    pub relative_shift: f64,
    /// `U1 / (n1·n2)`: the chance a treatment value exceeds a control value (ties half).
    pub superiority: f64,
    pub p50_ratio: f64,
    pub p90_ratio: f64,
    pub p99_ratio: f64,
    pub tail: TailTest,
    pub class: Class,
}

/// Compares two latency histograms; `None` when either has fewer than
/// `config.min_samples` values.
pub fn compare_histograms(
    treatment: &Histogram<u64>,
    control: &Histogram<u64>,
    config: &CompareConfig,
) -> Option<Comparison> {
    compare(
        &Ranked::from_histogram(treatment),
        &Ranked::from_histogram(control),
        config,
    )
}

/// Compares two ranked samples; `None` when either has fewer than
/// `config.min_samples` values.
pub fn compare(treatment: &Ranked, control: &Ranked, config: &CompareConfig) -> Option<Comparison> {
    if treatment.n < config.min_samples.max(1) || control.n < config.min_samples.max(1) {
        return None;
    }
    let mw = mann_whitney_ranked(
        treatment,
        control,
        Alternative::TwoSided,
        Method::Asymptotic,
    )
    .ok()?;
    let shift = hodges_lehmann_ranked(treatment, control).ok()?;
    let ratio = |q: f64| match (treatment.quantile(q), control.quantile(q)) {
        (Some(t), Some(c)) if c > 0.0 => t / c,
        _ => f64::NAN,
    };
    let median = control.quantile(0.5).unwrap_or(0.0);
    let relative_shift = if median.abs() > 0.0 {
        shift / median
    } else {
        0.0
    };
    let pooled = treatment.merged(control);
    let threshold = pooled.quantile(config.tail_quantile).unwrap_or(0.0);
    let a = treatment.count_above(threshold);
    let b = control.count_above(threshold);
    let (n1, n2) = (treatment.n as f64, control.n as f64);
    let p_hat = (a + b) as f64 / (n1 + n2);
    let se = (p_hat * (1.0 - p_hat) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let diff = a as f64 / n1 - b as f64 / n2;
    let tail_p = if se > 0.0 { normal_sf(diff / se) } else { 1.0 };
    let tail = TailTest {
        quantile: config.tail_quantile,
        threshold,
        treatment_above: a,
        control_above: b,
        p_value: tail_p,
    };
    let rank_significant = mw.p_value < config.alpha;
    let class = if (rank_significant && shift > 0.0) || (tail_p < config.alpha && diff > 0.0) {
        Class::Higher
    } else if rank_significant && shift < 0.0 {
        Class::Lower
    } else {
        Class::Same
    };
    Some(Comparison {
        mann_whitney: mw,
        shift,
        relative_shift,
        superiority: mw.u1 / (n1 * n2),
        p50_ratio: ratio(0.5),
        p90_ratio: ratio(0.9),
        p99_ratio: ratio(0.99),
        tail,
        class,
    })
}

/// One-sided two-proportion z-test: p-value of "`a` of `n1` is a larger share
/// than `b` of `n2`". 1 when either count is 0 trials.
pub fn proportion_higher_p(a: u64, n1: u64, b: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (n1, n2) = (n1 as f64, n2 as f64);
    let p_hat = (a + b) as f64 / (n1 + n2);
    let se = (p_hat * (1.0 - p_hat) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se > 0.0 {
        normal_sf((a as f64 / n1 - b as f64 / n2) / se)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Brute force: every difference, sorted.
    fn hl_brute(x: &[f64], y: &[f64]) -> f64 {
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        d.sort_by(f64::total_cmp);
        let n = d.len();
        if n % 2 == 1 {
            d[n / 2]
        } else {
            (d[n / 2 - 1] + d[n / 2]) / 2.0
        }
    }

    #[test]
    fn hodges_lehmann_matches_brute_force() {
        let mut seed = 12345u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64 / 10.0 - 30.0
        };
        for (n, m) in [(1, 1), (1, 2), (2, 2), (3, 7), (10, 10), (17, 4), (50, 61)] {
            let x: Vec<f64> = (0..n).map(|_| next()).collect();
            let y: Vec<f64> = (0..m).map(|_| next().round()).collect();
            assert_eq!(hodges_lehmann(&x, &y).unwrap(), hl_brute(&x, &y), "{n}×{m}");
        }
        assert_eq!(hodges_lehmann(&[0.0], &[-0.0]).unwrap(), 0.0);
        assert_eq!(
            hodges_lehmann(&[-5.0, 1e300], &[1e-300]).unwrap(),
            hl_brute(&[-5.0, 1e300], &[1e-300])
        );
    }

    #[test]
    fn exact_distribution_small_cases() {
        // n1 = n2 = 3: 20 arrangements, U = 0 once.
        assert!((exact_sf(3, 3, 0).unwrap() - 1.0).abs() < 1e-15);
        assert!((exact_sf(3, 3, 9).unwrap() - 0.05).abs() < 1e-15);
        assert!((exact_sf(3, 3, 8).unwrap() - 0.1).abs() < 1e-15);
        // Symmetry: P(U >= k) + P(U >= mn − k + 1) = 1, here in the multi-limb range.
        // C(140, 60) ≈ 1e40 takes three limbs.
        let (m, n) = (60u64, 80u64);
        let k = 1500;
        let a = exact_sf(m, n, k).unwrap();
        let b = exact_sf(m, n, m * n - k + 1).unwrap();
        assert!((a + b - 1.0).abs() < 1e-12, "{k}: {a} + {b}");
        assert!(matches!(
            exact_sf(2000, 2000, 1),
            Err(CompareError::ExactTooLarge { .. })
        ));
    }

    #[test]
    fn errors_name_the_sample() {
        assert_eq!(
            mann_whitney_u(&[], &[1.0], Alternative::TwoSided, Method::Auto),
            Err(CompareError::Empty { which: "first" })
        );
        assert_eq!(
            hodges_lehmann(&[1.0], &[2.0, f64::NAN]),
            Err(CompareError::NotFinite {
                which: "second",
                index: 1
            })
        );
        assert_eq!(
            mann_whitney_u(&[1.0, 1.0], &[2.0], Alternative::TwoSided, Method::Exact),
            Err(CompareError::ExactWithTies)
        );
        // All tied: nothing to tell apart.
        let r =
            mann_whitney_u(&[5.0; 20], &[5.0; 30], Alternative::TwoSided, Method::Auto).unwrap();
        assert_eq!(r.p_value, 1.0);
    }

    fn hist(values: impl Iterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new(2).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn a_slower_shadow_is_higher_and_an_equal_one_is_not() {
        let control = hist((0..1000u64).map(|i| 40_000 + (i * 7919) % 20_000));
        let same = hist((0..1000u64).map(|i| 40_000 + (i * 104_729) % 20_000));
        let slower = hist((0..1000u64).map(|i| 56_000 + (i * 7919) % 28_000));
        let cfg = CompareConfig::default();
        let c = compare_histograms(&same, &control, &cfg).unwrap();
        assert_eq!(c.class, Class::Same, "{c:?}");
        let c = compare_histograms(&slower, &control, &cfg).unwrap();
        assert_eq!(c.class, Class::Higher);
        assert!((c.relative_shift - 0.4).abs() < 0.05, "{c:?}");
        assert!((c.p99_ratio - 1.4).abs() < 0.05, "{c:?}");
        assert!(compare_histograms(&hist(0..5), &control, &cfg).is_none());
    }

    #[test]
    fn a_heavier_tail_with_the_same_median_is_caught_by_the_tail_test() {
        let control = hist((0..2000u64).map(|i| 40_000 + (i * 7919) % 20_000));
        // Same body, but 2% of requests take 3× as long.
        let shadow = hist((0..2000u64).map(|i| {
            let v = 40_000 + (i * 7919) % 20_000;
            if i % 50 == 0 { v * 3 } else { v }
        }));
        let c = compare_histograms(&shadow, &control, &CompareConfig::default()).unwrap();
        assert!(c.mann_whitney.p_value > 0.01, "{c:?}");
        assert!(c.tail.p_value < 0.01, "{c:?}");
        assert_eq!(c.class, Class::Higher);
    }
}
