//! Additive Holt-Winters forecasting with a band on its residuals.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Detector, Score, WINSOR, check_positive, check_unit};
use crate::baseline::Baseline;

/// Parameters of [`HoltWinters`].
///
/// Additive Holt-Winters keeps a level `ℓ`, a trend `b` and `season` seasonal
/// offsets `s`, forecasts `f_t = ℓ + b + s_(t mod m)` and updates
///
/// ```text
/// ℓ' = α(x − s) + (1 − α)(ℓ + b)    b' = β(ℓ' − ℓ) + (1 − β)b    s' = γ(x − ℓ') + (1 − γ)s
/// ```
///
/// The residual `e_t = x_t − f_t` is compared with its own spread σₑ (an
/// exponentially weighted root mean square, weight `residual_alpha`): the mean of
/// the last `span` residuals, in standard errors, is flagged beyond `±limit`.
/// A flagged value is replaced by its forecast when the state is updated, so a
/// shift is not absorbed into the level while it is being reported.
///
/// `season = 0` (the default) means no seasonal term (Holt's linear method): a
/// season length only makes sense for the series at hand, so set it to the
/// number of points in one cycle (8 640 for a day of 10 s windows, 24 for a day of
/// hourly points). Holt-Winters starts from the first `max(warmup, 2·season)`
/// values (level from the first season's mean, trend from the change between
/// the first two seasons, offsets from the seasons' deviations) and flags
/// nothing before that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoltWintersConfig {
    /// Level smoothing α. Default 0.1.
    pub alpha: f64,
    /// Trend smoothing β. Default 0.01.
    pub beta: f64,
    /// Seasonal smoothing γ. Default 0.1.
    pub gamma: f64,
    /// Points per season; 0 for none. Default 0.
    pub season: usize,
    /// Band half-width, in standard errors of the mean residual. Default 4.5.
    pub limit: f64,
    /// Residuals averaged before comparing. Default 3.
    pub span: usize,
    /// Weight of a new squared residual in σₑ². Default 0.01.
    pub residual_alpha: f64,
    /// Values before anything is flagged (at least two seasons). Default 30.
    pub warmup: usize,
    /// Smallest σₑ used; 0 means 1e-9 × max(1, |level|). Default 0.
    pub min_sd: f64,
}

impl Default for HoltWintersConfig {
    fn default() -> Self {
        HoltWintersConfig {
            alpha: 0.1,
            beta: 0.01,
            gamma: 0.1,
            season: 0,
            limit: 4.5,
            span: 3,
            residual_alpha: 0.01,
            warmup: 30,
            min_sd: 0.0,
        }
    }
}

/// Longest season accepted (a week of 10 s windows).
const MAX_SEASON: usize = 60_480;

impl HoltWintersConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let who = "holt-winters";
        check_unit(who, "alpha", self.alpha)?;
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(ConfigError::new(who, "beta", self.beta, "0 <= beta <= 1"));
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return Err(ConfigError::new(
                who,
                "gamma",
                self.gamma,
                "0 <= gamma <= 1",
            ));
        }
        check_unit(who, "residual_alpha", self.residual_alpha)?;
        check_positive(who, "limit", self.limit)?;
        if self.span < 1 {
            return Err(ConfigError::new(
                who,
                "span",
                self.span as f64,
                "at least 1",
            ));
        }
        if self.season > MAX_SEASON {
            return Err(ConfigError::new(
                who,
                "season",
                self.season as f64,
                "at most 60480 points",
            ));
        }
        if self.warmup < 2 {
            return Err(ConfigError::new(
                who,
                "warmup",
                self.warmup as f64,
                "at least 2",
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
        Ok(())
    }
}

/// Holt-Winters residual detector; see [`HoltWintersConfig`].
#[derive(Debug, Clone)]
pub struct HoltWinters {
    config: HoltWintersConfig,
    /// Values collected before the model starts (NaN for skipped points).
    init: Vec<f64>,
    started: bool,
    level: f64,
    trend: f64,
    seasonal: Vec<f64>,
    /// Position in the season of the next value.
    phase: usize,
    /// Mean square of the residuals (`mean` is unused).
    residual: Baseline,
    recent: VecDeque<f64>,
    last: (f64, f64),
}

impl HoltWinters {
    pub fn new(config: HoltWintersConfig) -> Result<HoltWinters, ConfigError> {
        config.validate()?;
        Ok(HoltWinters {
            init: Vec::new(),
            started: false,
            level: 0.0,
            trend: 0.0,
            seasonal: vec![0.0; config.season],
            phase: 0,
            residual: Baseline::new(),
            recent: VecDeque::with_capacity(config.span + 1),
            last: (0.0, 0.0),
            config,
        })
    }

    fn init_len(&self) -> usize {
        self.config.warmup.max(2 * self.config.season)
    }

    fn season_offset(&self) -> f64 {
        self.seasonal.get(self.phase).copied().unwrap_or(0.0)
    }

    /// The forecast of the next value.
    pub fn forecast(&self) -> Option<f64> {
        self.started
            .then(|| self.level + self.trend + self.season_offset())
    }

    fn advance_phase(&mut self, n: u64) {
        let m = self.config.season as u64;
        if m > 0 {
            self.phase = ((self.phase as u64 + n % m) % m) as usize;
        }
    }

    /// One step of the recursions with `x` (or the forecast, for a flagged value).
    fn step(&mut self, x: f64) {
        let c = &self.config;
        let s = self.season_offset();
        let level = c.alpha * (x - s) + (1.0 - c.alpha) * (self.level + self.trend);
        self.trend = c.beta * (level - self.level) + (1.0 - c.beta) * self.trend;
        self.level = level;
        if let Some(slot) = self.seasonal.get_mut(self.phase) {
            *slot = c.gamma * (x - level) + (1.0 - c.gamma) * *slot;
        }
        self.advance_phase(1);
    }

    fn learn_residual(&mut self, e: f64) {
        // A Baseline of e with its mean pinned at 0 is a running mean square.
        let alpha = self.config.residual_alpha;
        // Winsorised once warm, as the other detectors' references.
        let e = if self.residual.count >= self.config.warmup as u64 {
            let lim = WINSOR * self.sd();
            e.clamp(-lim, lim)
        } else {
            e
        };
        self.residual.count = self.residual.count.saturating_add(1);
        let w = alpha.max(1.0 / self.residual.count as f64);
        self.residual.variance += w * (e * e - self.residual.variance);
    }

    fn sd(&self) -> f64 {
        let floor = self.config.min_sd.max(1e-9 * self.level.abs().max(1.0));
        self.residual.variance.max(0.0).sqrt().max(floor)
    }

    /// Starts the model from the collected values, then replays them to learn σₑ.
    fn start(&mut self) {
        let values = std::mem::take(&mut self.init);
        let m = self.config.season;
        let mean = |v: &[f64]| {
            let (s, n) = v
                .iter()
                .filter(|x| x.is_finite())
                .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
            (n > 0).then(|| s / n as f64)
        };
        if m == 0 {
            self.level = mean(&values).unwrap_or(0.0);
            self.trend = 0.0;
        } else {
            // Trend: the change between the first two seasons, over the phases
            // both have (skipped points are NaN).
            let diffs: Vec<f64> = (0..m)
                .filter_map(|i| {
                    let (a, b) = (*values.get(i)?, *values.get(m + i)?);
                    (a.is_finite() && b.is_finite()).then(|| (b - a) / m as f64)
                })
                .collect();
            self.trend = mean(&diffs).unwrap_or(0.0);
            // Phase means of the detrended values, their mean the level (at time
            // 0), their deviations the seasonal offsets.
            let phases: Vec<Option<f64>> = (0..m)
                .map(|i| {
                    let v: Vec<f64> = values
                        .iter()
                        .enumerate()
                        .skip(i)
                        .step_by(m)
                        .map(|(j, x)| x - self.trend * j as f64)
                        .collect();
                    mean(&v)
                })
                .collect();
            let flat: Vec<f64> = phases.iter().flatten().copied().collect();
            let level = mean(&flat).unwrap_or(0.0);
            for (slot, p) in self.seasonal.iter_mut().zip(&phases) {
                *slot = p.map_or(0.0, |p| p - level);
            }
            // The replay starts one step before the first point.
            self.level = level - self.trend;
        }
        self.phase = 0;
        self.started = true;
        for x in values {
            if x.is_finite() {
                let e = x - (self.level + self.trend + self.season_offset());
                self.learn_residual(e);
                self.step(x);
            } else {
                self.level += self.trend;
                self.advance_phase(1);
            }
        }
    }
}

impl Detector for HoltWinters {
    fn name(&self) -> &'static str {
        "holt-winters"
    }

    fn update(&mut self, x: f64) -> Score {
        if !x.is_finite() {
            return Score::NONE;
        }
        if !self.started {
            self.init.push(x);
            if self.init.len() >= self.init_len() {
                self.start();
            }
            return Score::NONE;
        }
        let f = self.level + self.trend + self.season_offset();
        let e = x - f;
        self.recent.push_back(e);
        while self.recent.len() > self.config.span {
            self.recent.pop_front();
        }
        let k = self.recent.len() as f64;
        let mean_e = self.recent.iter().sum::<f64>() / k;
        let stat = mean_e / (self.sd() / k.sqrt());
        self.last = (stat, f);
        let score = Score::from_ratio(stat / self.config.limit);
        if score.flagged || !e.is_finite() {
            self.step(f);
        } else {
            self.learn_residual(e);
            self.step(x);
        }
        if !(self.level.is_finite() && self.trend.is_finite()) {
            // Values near the limits of f64 overflowed the state: start again.
            self.reset();
        }
        score
    }

    fn skip(&mut self, missing: u64) {
        if !self.started {
            let room = self.init_len().saturating_sub(self.init.len());
            let n = (missing.min(room as u64)) as usize;
            self.init.extend(std::iter::repeat_n(f64::NAN, n));
            if self.init.len() >= self.init_len() {
                self.start();
            }
            return;
        }
        self.level += self.trend * missing as f64;
        self.advance_phase(missing);
        self.recent.clear();
        if !self.level.is_finite() {
            self.reset();
        }
    }

    fn prime(&mut self, mean: f64, variance: f64) {
        if !(mean.is_finite() && variance.is_finite() && variance >= 0.0) {
            return;
        }
        self.reset();
        self.level = mean;
        self.residual = Baseline {
            mean: 0.0,
            variance,
            count: (1.0 / self.config.residual_alpha).ceil() as u64,
        };
        self.started = true;
    }

    fn reset(&mut self) {
        self.init.clear();
        self.started = false;
        self.level = 0.0;
        self.trend = 0.0;
        self.seasonal.iter_mut().for_each(|s| *s = 0.0);
        self.phase = 0;
        self.residual = Baseline::new();
        self.recent.clear();
        self.last = (0.0, 0.0);
    }

    fn explain(&self) -> String {
        format!(
            "holt-winters: mean of the last {} residuals at {:+.1} standard errors from the forecast {:.4} (band ±{})",
            self.config.span, self.last.0, self.last.1, self.config.limit
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wave(i: usize, m: usize) -> f64 {
        100.0 + 20.0 * (2.0 * std::f64::consts::PI * i as f64 / m as f64).sin()
    }

    #[test]
    fn learns_a_season_and_flags_a_break_in_it() {
        let m = 24;
        let mut hw = HoltWinters::new(HoltWintersConfig {
            season: m,
            ..HoltWintersConfig::default()
        })
        .unwrap();
        // A seasonal series with a little deterministic jitter is not flagged...
        for i in 0..(m * 20) {
            let jitter = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            let s = hw.update(wave(i, m) + jitter);
            assert!(!s.flagged, "point {i}");
        }
        // ...but the same level out of phase is.
        let mut hit = false;
        for i in 0..3 {
            hit |= hw.update(wave(m * 20 + i + m / 2, m)).flagged;
        }
        assert!(hit);
    }

    #[test]
    fn gaps_keep_the_phase() {
        let m = 10;
        let mut hw = HoltWinters::new(HoltWintersConfig {
            season: m,
            ..HoltWintersConfig::default()
        })
        .unwrap();
        for i in 0..(m * 10) {
            hw.update(wave(i, m));
        }
        hw.skip(7);
        let f = hw.forecast().unwrap();
        assert!((f - wave(m * 10 + 7, m)).abs() < 1.0, "{f}");
        // A gap during the warm-up is also kept in phase.
        let mut hw = HoltWinters::new(HoltWintersConfig {
            season: m,
            ..HoltWintersConfig::default()
        })
        .unwrap();
        for i in 0..(m * 10) {
            if (13..17).contains(&i) {
                if i == 13 {
                    hw.skip(4);
                }
                continue;
            }
            hw.update(wave(i, m));
        }
        let f = hw.forecast().unwrap();
        assert!((f - wave(m * 10, m)).abs() < 1.0, "{f}");
    }
}
