//! Moving average with a z-score band.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Detector, Score, WINSOR, check_positive};

/// Parameters of [`MovingAverage`].
///
/// The reference is the mean and sample standard deviation of the last `window`
/// values that were not flagged; the current level is the mean of the last
/// `span` values. The statistic is the difference of the two in standard errors,
///
/// ```text
/// z = (mean(last span) − mean(window)) / (sd(window) · √(1/span + 1/window))
/// ```
///
/// flagged when `|z| >= limit`. Averaging a few values before comparing is what
/// lets a band tight enough for one false alarm in 10 000 windows still catch a
/// 20% p99 step within three windows: a single window's p99 is too noisy
/// (and skewed) to be judged alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MovingAverageConfig {
    /// Values in the reference window. Default 120 (20 minutes of 10 s windows).
    pub window: usize,
    /// Values averaged into the current level. Default 3.
    pub span: usize,
    /// Band half-width in standard errors. Default 4.75.
    pub limit: f64,
    /// Values the reference needs before anything is flagged. Default 30.
    pub warmup: usize,
    /// Smallest standard deviation used; 0 means 1e-9 × max(1, |mean|). Default 0.
    pub min_sd: f64,
}

impl Default for MovingAverageConfig {
    fn default() -> Self {
        MovingAverageConfig {
            window: 120,
            span: 3,
            limit: 4.75,
            warmup: 30,
            min_sd: 0.0,
        }
    }
}

impl MovingAverageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let who = "moving-average";
        if self.window < 2 {
            return Err(ConfigError::new(
                who,
                "window",
                self.window as f64,
                "at least 2",
            ));
        }
        if self.span < 1 {
            return Err(ConfigError::new(
                who,
                "span",
                self.span as f64,
                "at least 1",
            ));
        }
        if self.warmup < 2 || self.warmup > self.window {
            return Err(ConfigError::new(
                who,
                "warmup",
                self.warmup as f64,
                "between 2 and window",
            ));
        }
        if !(self.min_sd >= 0.0 && self.min_sd.is_finite()) {
            return Err(ConfigError::new(
                who,
                "min_sd",
                self.min_sd,
                "a number >= 0",
            ));
        }
        check_positive(who, "limit", self.limit)
    }
}

/// Moving average with a z-score band; see [`MovingAverageConfig`].
#[derive(Debug, Clone)]
pub struct MovingAverage {
    config: MovingAverageConfig,
    /// The last `span` values and whether each was flagged.
    recent: VecDeque<(f64, bool)>,
    /// Accepted values, oldest first, as offsets from `pivot`.
    window: VecDeque<f64>,
    pivot: f64,
    sum: f64,
    sum_sq: f64,
    pushes_since_refresh: usize,
    last: (f64, f64),
}

impl MovingAverage {
    pub fn new(config: MovingAverageConfig) -> Result<MovingAverage, ConfigError> {
        config.validate()?;
        Ok(MovingAverage {
            recent: VecDeque::with_capacity(config.span + 1),
            window: VecDeque::with_capacity(config.window + 1),
            config,
            pivot: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            pushes_since_refresh: 0,
            last: (0.0, 0.0),
        })
    }

    fn mean_sd(&self) -> (f64, f64) {
        let n = self.window.len() as f64;
        let m = self.sum / n;
        let var = ((self.sum_sq - self.sum * m) / (n - 1.0)).max(0.0);
        let mean = self.pivot + m;
        let floor = self.config.min_sd.max(1e-9 * mean.abs().max(1.0));
        (mean, var.sqrt().max(floor))
    }

    fn accept(&mut self, x: f64) {
        // Winsorised, as the other detectors' references (see `detect::WINSOR`).
        let x = if self.window.len() >= self.config.warmup {
            let (m, sd) = self.mean_sd();
            x.clamp(m - WINSOR * sd, m + WINSOR * sd)
        } else {
            x
        };
        if self.window.is_empty() {
            self.pivot = x;
        }
        let d = x - self.pivot;
        self.window.push_back(d);
        self.sum += d;
        self.sum_sq += d * d;
        if self.window.len() > self.config.window
            && let Some(old) = self.window.pop_front()
        {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.pushes_since_refresh += 1;
        // Running sums drift; recompute them (around a fresh pivot) now and then.
        if self.pushes_since_refresh >= self.config.window {
            self.refresh();
        }
    }

    fn refresh(&mut self) {
        self.pushes_since_refresh = 0;
        let n = self.window.len();
        if n == 0 {
            return;
        }
        let mean = self.window.iter().sum::<f64>() / n as f64;
        let new_pivot = self.pivot + mean;
        let shift = new_pivot - self.pivot;
        self.pivot = new_pivot;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        for d in &mut self.window {
            *d -= shift;
            self.sum += *d;
            self.sum_sq += *d * *d;
        }
    }
}

impl Detector for MovingAverage {
    fn name(&self) -> &'static str {
        "moving-average"
    }

    fn update(&mut self, x: f64) -> Score {
        if !x.is_finite() {
            return Score::NONE;
        }
        let mut score = Score::NONE;
        if self.window.len() >= self.config.warmup {
            let (mean, sd) = self.mean_sd();
            let k = self.recent.len().min(self.config.span - 1);
            let level =
                (self.recent.iter().rev().take(k).map(|v| v.0).sum::<f64>() + x) / (k + 1) as f64;
            let se = sd * (1.0 / (k + 1) as f64 + 1.0 / self.window.len() as f64).sqrt();
            let z = (level - mean) / se;
            self.last = (z, level);
            score = Score::from_ratio(z / self.config.limit);
        }
        self.recent.push_back((x, score.flagged));
        while self.recent.len() > self.config.span {
            if let Some((v, flagged)) = self.recent.pop_front()
                && !flagged
            {
                self.accept(v);
            }
        }
        // Until the reference is warm, values go straight into it.
        if self.window.len() < self.config.warmup
            && let Some((v, _)) = self.recent.pop_back()
        {
            self.accept(v);
        }
        score
    }

    fn prime(&mut self, mean: f64, variance: f64) {
        if !(mean.is_finite() && variance.is_finite() && variance >= 0.0) {
            return;
        }
        self.reset();
        // A synthetic window with exactly this mean and sample variance: values
        // alternating mean ± sd·√((n−1)/n) (n even).
        let n = (self.config.warmup.max(2) + 1) & !1;
        let n = n.min(self.config.window - self.config.window % 2).max(2);
        let d = (variance * (n as f64 - 1.0) / n as f64).sqrt();
        for i in 0..n {
            self.accept(if i % 2 == 0 { mean + d } else { mean - d });
        }
    }

    fn reset(&mut self) {
        self.recent.clear();
        self.window.clear();
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.pivot = 0.0;
        self.pushes_since_refresh = 0;
        self.last = (0.0, 0.0);
    }

    fn explain(&self) -> String {
        format!(
            "moving-average: mean of the last {} at {:+.1} standard errors (band ±{})",
            self.config.span, self.last.0, self.config.limit
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn primed_window_has_the_given_mean_and_sd() {
        let mut d = MovingAverage::new(MovingAverageConfig::default()).unwrap();
        d.prime(100.0, 4.0);
        let (m, sd) = d.mean_sd();
        assert!((m - 100.0).abs() < 1e-9);
        assert!((sd - 2.0).abs() < 1e-9, "{sd}");
        assert!(!d.update(101.0).flagged);
        let mut hit = false;
        for _ in 0..3 {
            hit |= d.update(112.0).flagged;
        }
        assert!(hit);
    }

    #[test]
    fn sums_stay_exact_over_long_runs_with_a_large_offset() {
        let mut d = MovingAverage::new(MovingAverageConfig::default()).unwrap();
        for i in 0..100_000 {
            let x = 1e9 + (i % 7) as f64;
            d.update(x);
        }
        let (m, sd) = d.mean_sd();
        assert!((m - (1e9 + 3.0)).abs() < 0.2, "{m}");
        assert!((sd - 2.0).abs() < 0.2, "{sd}");
    }
}
