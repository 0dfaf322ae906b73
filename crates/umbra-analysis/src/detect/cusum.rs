//! Two-sided tabular CUSUM.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Detector, Reference, ReferenceConfig, Score, check_positive};

/// Parameters of [`Cusum`].
///
/// With `z_t` the value in reference standard deviations,
///
/// ```text
/// S⁺_t = max(0, S⁺_{t−1} + z_t − k)      S⁻_t = max(0, S⁻_{t−1} − z_t − k)
/// ```
///
/// flagged when `max(S⁺, S⁻) >= h`. `k` is half the shift (in σ) the chart is
/// tuned to find fastest; `h` sets the false-alarm rate. Page's textbook
/// k = 0.5, h = 5 has an in-control run length near 465 (two-sided about half),
/// so the defaults aim at the larger shifts a regression makes and many more
/// quiet windows. The sums are held at or below `2h`, so that once a long
/// regression ends the chart is quiet again after about `h/k` values (the
/// score is taken before that, so a large value still scores near 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CusumConfig {
    /// Allowance k, in σ. Default 1.25.
    pub k: f64,
    /// Decision interval h, in σ. Default 5.0.
    pub h: f64,
    pub reference: ReferenceConfig,
}

impl Default for CusumConfig {
    fn default() -> Self {
        CusumConfig {
            k: 1.25,
            h: 5.0,
            reference: ReferenceConfig::default(),
        }
    }
}

impl CusumConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.k >= 0.0 && self.k.is_finite()) {
            return Err(ConfigError::new("cusum", "k", self.k, "a number >= 0"));
        }
        check_positive("cusum", "h", self.h)?;
        self.reference.validate("cusum")
    }
}

/// Two-sided CUSUM; see [`CusumConfig`].
#[derive(Debug, Clone)]
pub struct Cusum {
    config: CusumConfig,
    reference: Reference,
    upper: f64,
    lower: f64,
}

impl Cusum {
    pub fn new(config: CusumConfig) -> Result<Cusum, ConfigError> {
        config.validate()?;
        Ok(Cusum {
            reference: Reference::new(config.reference),
            config,
            upper: 0.0,
            lower: 0.0,
        })
    }
}

impl Detector for Cusum {
    fn name(&self) -> &'static str {
        "cusum"
    }

    fn update(&mut self, x: f64) -> Score {
        if !x.is_finite() {
            return Score::NONE;
        }
        if !self.reference.ready() {
            self.reference.learn(x);
            return Score::NONE;
        }
        let z = self.reference.z(x);
        let cap = 2.0 * self.config.h;
        let k = self.config.k;
        // The score is taken before the sums are held at 2h, so that a large
        // value still scores near 1; only the state is held.
        let (up, down) = (self.upper + z - k, self.lower - z - k);
        let score = Score::from_ratio(up.max(down).max(0.0) / self.config.h);
        // A NaN can only come from an infinite z; treat it as the cap.
        self.upper = if up.is_nan() { cap } else { up.clamp(0.0, cap) };
        self.lower = if down.is_nan() {
            cap
        } else {
            down.clamp(0.0, cap)
        };
        if !score.flagged {
            self.reference.learn(x);
        }
        score
    }

    fn prime(&mut self, mean: f64, variance: f64) {
        self.reset();
        self.reference.prime(mean, variance);
    }

    fn reset(&mut self) {
        self.reference.reset();
        self.upper = 0.0;
        self.lower = 0.0;
    }

    fn explain(&self) -> String {
        let (side, s) = if self.upper >= self.lower {
            ("upper", self.upper)
        } else {
            ("lower", self.lower)
        };
        format!(
            "cusum: {side} sum {s:.1}σ (h {}σ, k {}σ)",
            self.config.h, self.config.k
        )
    }
}
