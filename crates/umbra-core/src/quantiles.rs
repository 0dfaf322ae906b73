//! A distribution summarised by a fixed set of quantiles.
//!
//! Profiles describe body sizes and latencies this way: small, readable in the JSON
//! file, enough for the load generator to draw values with the right shape
//! (piecewise-linear inverse CDF), and mergeable when `learn --update` folds new
//! traffic into an old set.

use serde::{Deserialize, Serialize};

/// The cumulative probabilities the fields stand for, in order.
pub const PROBS: [f64; 9] = [0.0, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 1.0];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub min: f64,
    pub p10: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// A distribution that is always `v`.
    pub fn constant(v: f64) -> Quantiles {
        Quantiles::from_values([v; 9])
    }

    pub fn values(&self) -> [f64; 9] {
        [
            self.min, self.p10, self.p25, self.p50, self.p75, self.p90, self.p95, self.p99,
            self.max,
        ]
    }

    pub fn from_values(v: [f64; 9]) -> Quantiles {
        Quantiles {
            min: v[0],
            p10: v[1],
            p25: v[2],
            p50: v[3],
            p75: v[4],
            p90: v[5],
            p95: v[6],
            p99: v[7],
            max: v[8],
        }
    }

    /// Summarises values that are already sorted ascending; `None` when empty.
    pub fn from_sorted(sorted: &[f64]) -> Option<Quantiles> {
        if sorted.is_empty() {
            return None;
        }
        let n = sorted.len();
        let at = |p: f64| -> f64 {
            // Linear interpolation between closest ranks (numpy's default).
            let pos = p * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        };
        Some(Quantiles::from_values(PROBS.map(at)))
    }

    /// Summarises unsorted values (sorts a copy); NaNs are ignored.
    pub fn from_unsorted(values: &[f64]) -> Option<Quantiles> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        Quantiles::from_sorted(&v)
    }

    /// The value at cumulative probability `u` in [0, 1], interpolating linearly
    /// between the stored quantiles. Feeding a uniform `u` draws from the distribution.
    pub fn value_at(&self, u: f64) -> f64 {
        let u = if u.is_nan() { 0.5 } else { u.clamp(0.0, 1.0) };
        let v = self.values();
        for i in 1..PROBS.len() {
            if u <= PROBS[i] {
                let span = PROBS[i] - PROBS[i - 1];
                let frac = if span > 0.0 {
                    (u - PROBS[i - 1]) / span
                } else {
                    0.0
                };
                return v[i - 1] + (v[i] - v[i - 1]) * frac;
            }
        }
        self.max
    }

    /// The cumulative probability of `x` under the piecewise-linear distribution.
    pub fn cdf(&self, x: f64) -> f64 {
        let v = self.values();
        if x < v[0] {
            return 0.0;
        }
        if x >= v[8] {
            return 1.0;
        }
        for i in 1..PROBS.len() {
            if x < v[i] {
                let span = v[i] - v[i - 1];
                let frac = if span > 0.0 {
                    (x - v[i - 1]) / span
                } else {
                    1.0
                };
                return PROBS[i - 1] + (PROBS[i] - PROBS[i - 1]) * frac;
            }
        }
        1.0
    }

    /// The quantiles of the mixture `wa * self + wb * other` (weights need not sum
    /// to one). Used to fold new traffic into an existing profile.
    pub fn mix(&self, wa: f64, other: &Quantiles, wb: f64) -> Quantiles {
        let total = wa + wb;
        if total.is_nan() || total <= 0.0 || wb <= 0.0 {
            return *self;
        }
        if wa <= 0.0 {
            return *other;
        }
        let lo = self.min.min(other.min);
        let hi = self.max.max(other.max);
        let mixed_cdf = |x: f64| (wa * self.cdf(x) + wb * other.cdf(x)) / total;
        let mut out = [0.0; 9];
        out[0] = lo;
        out[8] = hi;
        for (i, p) in PROBS.iter().enumerate().take(8).skip(1) {
            // Bisection on the mixed CDF, which is monotone.
            let (mut a, mut b) = (lo, hi);
            for _ in 0..60 {
                let m = 0.5 * (a + b);
                if mixed_cdf(m) < *p {
                    a = m;
                } else {
                    b = m;
                }
            }
            out[i] = b;
        }
        Quantiles::from_values(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_sorted_matches_numpy_linear() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        let q = Quantiles::from_sorted(&v).unwrap();
        assert_eq!(q.min, 1.0);
        assert_eq!(q.p50, 6.0);
        assert_eq!(q.p10, 2.0);
        assert!((q.p25 - 3.5).abs() < 1e-12);
        assert_eq!(q.max, 11.0);
        assert!(Quantiles::from_sorted(&[]).is_none());
    }

    #[test]
    fn value_at_inverts_cdf() {
        let v: Vec<f64> = (0..1000).map(|i| (i as f64).powi(2)).collect();
        let q = Quantiles::from_sorted(&v).unwrap();
        for u in [0.0, 0.05, 0.3, 0.5, 0.77, 0.93, 0.999, 1.0] {
            let x = q.value_at(u);
            assert!((q.cdf(x) - u).abs() < 1e-9 || u == 1.0, "u={u} x={x}");
        }
    }

    #[test]
    fn mixing_with_itself_is_identity_and_weights_pull() {
        let a = Quantiles::from_unsorted(&(0..100).map(f64::from).collect::<Vec<_>>()).unwrap();
        let b = Quantiles::from_unsorted(&(1000..1100).map(f64::from).collect::<Vec<_>>()).unwrap();
        let same = a.mix(1.0, &a, 3.0);
        for (x, y) in same.values().iter().zip(a.values()) {
            assert!((x - y).abs() < 1e-6);
        }
        // Mostly b: the median sits inside b's range.
        let m = a.mix(1.0, &b, 9.0);
        assert!(m.p50 >= 1000.0 && m.p50 <= 1100.0);
        assert_eq!(m.min, 0.0);
        assert_eq!(m.max, 1099.0);
    }
}
