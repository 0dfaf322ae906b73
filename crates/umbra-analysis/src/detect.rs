//! Detectors: one number in, an anomaly score out.
//!
//! Every detector implements [`Detector`]: it is fed one value per window (or per
//! row of a series) and answers with a [`Score`], a number in [0, 1] and whether
//! the detector flags the value. Each detector reduces the value to a ratio `r`
//! of its own statistic to its own limit (a z-score to its band, a cumulative
//! sum to `h`, ...), flags when `r >= 1`, and reports
//!
//! ```text
//! score = r² / (1 + r²)
//! ```
//!
//! so a score of 0.5 is exactly the detector's limit, 0.8 is twice the limit, and
//! a threshold on the score other than 0.5 moves every detector's limit alike.
//!
//! What the detectors share:
//!
//! - A *reference* (the normal level and spread) learned from the values
//!   themselves: plain mean and variance over a warm-up (30 values by default),
//!   then an exponentially weighted mean and variance (alpha 0.01). Nothing is
//!   flagged during the warm-up. [`Detector::prime`] starts a detector from a saved
//!   baseline instead.
//! - A flagged value is never learned: the reference (and Holt-Winters' level,
//!   trend and season) stays where it was, so a lasting shift stays flagged
//!   instead of becoming the new normal.
//! - Detectors are two-sided: a drop is as anomalous as a rise. The verdict
//!   rules say which direction is a regression.
//! - Non-finite values are ignored (score 0, not learned).
//!
//! The parameters and defaults of each detector are documented on its config
//! type and in the crate's README. The defaults are tuned so that on windows of
//! a thousand requests each detector flags at most one window in 10 000 of
//! stationary noise and catches a 20% step in the p99 within three windows (see
//! `tests/detectors.rs`).

mod cusum;
mod ensemble;
mod ewma;
mod holt_winters;
mod moving_average;
mod shewhart;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;

pub use cusum::{Cusum, CusumConfig};
pub use ensemble::{Combine, Ensemble, EnsembleConfig};
pub use ewma::{Ewma, EwmaConfig};
pub use holt_winters::{HoltWinters, HoltWintersConfig};
pub use moving_average::{MovingAverage, MovingAverageConfig};
pub use shewhart::{Shewhart, ShewhartConfig};

/// A detector's answer for one value.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Score {
    /// In [0, 1]; 0.5 is the detector's own limit.
    pub score: f64,
    /// Whether the detector considers the value anomalous (`score >= 0.5`).
    pub flagged: bool,
}

impl Score {
    /// Nothing to say (warming up, or a value that is not a number).
    pub const NONE: Score = Score {
        score: 0.0,
        flagged: false,
    };

    /// The score of a statistic at `r` times the detector's limit.
    pub fn from_ratio(r: f64) -> Score {
        if r.is_nan() {
            return Score::NONE;
        }
        let r = r.abs();
        let score = if r.is_infinite() || r > 1e150 {
            1.0
        } else {
            let r2 = r * r;
            r2 / (1.0 + r2)
        };
        Score {
            score,
            flagged: r >= 1.0,
        }
    }
}

/// A streaming anomaly detector over one series.
pub trait Detector: Send + fmt::Debug {
    /// The detector's name, as on the command line.
    fn name(&self) -> &'static str;

    /// Scores the next value and learns it unless it is flagged.
    fn update(&mut self, x: f64) -> Score;

    /// Tells the detector that `missing` values were skipped (a gap in a series).
    /// Seasonal detectors move their season on; the others ignore gaps.
    fn skip(&mut self, missing: u64) {
        let _ = missing;
    }

    /// Starts from a known mean and variance instead of a warm-up (for example a
    /// baseline restored after a restart).
    fn prime(&mut self, mean: f64, variance: f64);

    /// Forgets everything learned.
    fn reset(&mut self);

    /// Why the last value was scored as it was, for people ("cusum: upper sum 6.1σ
    /// over h 5σ").
    fn explain(&self) -> String {
        self.name().to_string()
    }
}

/// The normal level and spread a detector measures against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferenceConfig {
    /// Weight of a new value after the first `1/alpha`. Default 0.01.
    pub alpha: f64,
    /// Values learned before anything is flagged. Default 30.
    pub warmup: u64,
    /// Smallest standard deviation used (on the detector's scale), so a series
    /// that was constant does not flag every rounding error. Default 0: the
    /// floor is then 1e-9 × max(1, |mean|).
    pub min_sd: f64,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        ReferenceConfig {
            alpha: 0.01,
            warmup: 30,
            min_sd: 0.0,
        }
    }
}

impl ReferenceConfig {
    fn validate(&self, who: &str) -> Result<(), ConfigError> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(ConfigError::new(who, "alpha", self.alpha, "0 < alpha <= 1"));
        }
        if !(self.min_sd >= 0.0 && self.min_sd.is_finite()) {
            return Err(ConfigError::new(
                who,
                "min_sd",
                self.min_sd,
                "a number >= 0",
            ));
        }
        if self.warmup < 2 {
            return Err(ConfigError::new(
                who,
                "warmup",
                self.warmup as f64,
                "at least 2 values",
            ));
        }
        Ok(())
    }
}

/// Deviations beyond this many σ are clamped before a reference learns them.
pub const WINSOR: f64 = 3.0;

/// A [`Baseline`] with the detectors' warm-up and floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reference {
    pub config: ReferenceConfig,
    pub baseline: Baseline,
}

impl Reference {
    pub fn new(config: ReferenceConfig) -> Reference {
        Reference {
            config,
            baseline: Baseline::new(),
        }
    }

    pub fn ready(&self) -> bool {
        self.baseline.is_ready(self.config.warmup)
    }

    pub fn mean(&self) -> f64 {
        self.baseline.mean
    }

    pub fn sd(&self) -> f64 {
        let floor = self
            .config
            .min_sd
            .max(1e-9 * self.baseline.mean.abs().max(1.0));
        self.baseline.sd().max(floor)
    }

    /// `x` in standard deviations from the mean.
    pub fn z(&self, x: f64) -> f64 {
        (x - self.mean()) / self.sd()
    }

    /// Learns `x`. Once warm, the deviation is clamped to ±[`WINSOR`] σ first
    /// (a winsorised update): one large value that was not flagged (the first
    /// window of a step, say) would otherwise widen σ by a tenth and blunt the
    /// detector for the windows that follow.
    pub fn learn(&mut self, x: f64) {
        let x = if self.ready() {
            let (m, sd) = (self.mean(), self.sd());
            x.clamp(m - WINSOR * sd, m + WINSOR * sd)
        } else {
            x
        };
        self.baseline.learn(x, self.config.alpha);
    }

    pub fn prime(&mut self, mean: f64, variance: f64) {
        if mean.is_finite() && variance.is_finite() && variance >= 0.0 {
            // Counted as long-known, so new values weigh alpha from the start.
            let known = (1.0 / self.config.alpha).ceil() as u64;
            self.baseline = Baseline {
                mean,
                variance,
                count: self.config.warmup.max(known),
            };
        }
    }

    pub fn reset(&mut self) {
        self.baseline = Baseline::new();
    }
}

/// A parameter out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detector} {parameter} = {value}: expected {expected}")]
pub struct ConfigError {
    pub detector: String,
    pub parameter: &'static str,
    pub value: f64,
    pub expected: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        detector: &str,
        parameter: &'static str,
        value: f64,
        expected: &'static str,
    ) -> ConfigError {
        ConfigError {
            detector: detector.to_string(),
            parameter,
            value,
            expected,
        }
    }
}

/// A detector and its parameters, as written in configuration:
/// `{ kind = "cusum", k = 1.0, h = 5.0 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DetectorSpec {
    MovingAverage(MovingAverageConfig),
    Ewma(EwmaConfig),
    Cusum(CusumConfig),
    Shewhart(ShewhartConfig),
    HoltWinters(HoltWintersConfig),
    Ensemble(EnsembleConfig),
}

impl Default for DetectorSpec {
    fn default() -> Self {
        DetectorSpec::Ensemble(EnsembleConfig::default())
    }
}

/// The names [`DetectorSpec::from_str`] accepts.
pub const DETECTOR_NAMES: [&str; 6] = [
    "moving-average",
    "ewma",
    "cusum",
    "shewhart",
    "holt-winters",
    "ensemble",
];

impl DetectorSpec {
    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::MovingAverage(_) => "moving-average",
            DetectorSpec::Ewma(_) => "ewma",
            DetectorSpec::Cusum(_) => "cusum",
            DetectorSpec::Shewhart(_) => "shewhart",
            DetectorSpec::HoltWinters(_) => "holt-winters",
            DetectorSpec::Ensemble(_) => "ensemble",
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            DetectorSpec::MovingAverage(c) => c.validate(),
            DetectorSpec::Ewma(c) => c.validate(),
            DetectorSpec::Cusum(c) => c.validate(),
            DetectorSpec::Shewhart(c) => c.validate(),
            DetectorSpec::HoltWinters(c) => c.validate(),
            DetectorSpec::Ensemble(c) => c.validate(),
        }
    }

    /// A new detector with these parameters.
    pub fn build(&self) -> Result<Box<dyn Detector>, ConfigError> {
        self.validate()?;
        Ok(match self {
            DetectorSpec::MovingAverage(c) => Box::new(MovingAverage::new(c.clone())?),
            DetectorSpec::Ewma(c) => Box::new(Ewma::new(c.clone())?),
            DetectorSpec::Cusum(c) => Box::new(Cusum::new(c.clone())?),
            DetectorSpec::Shewhart(c) => Box::new(Shewhart::new(c.clone())?),
            DetectorSpec::HoltWinters(c) => Box::new(HoltWinters::new(c.clone())?),
            DetectorSpec::Ensemble(c) => Box::new(Ensemble::new(c.clone())?),
        })
    }

    /// Sets the season length of Holt-Winters, here or inside an ensemble.
    pub fn with_season(mut self, season: usize) -> DetectorSpec {
        match &mut self {
            DetectorSpec::HoltWinters(c) => c.season = season,
            DetectorSpec::Ensemble(c) => {
                c.members = std::mem::take(&mut c.members)
                    .into_iter()
                    .map(|m| m.with_season(season))
                    .collect();
            }
            _ => {}
        }
        self
    }

    /// Sets the reference's floor on the standard deviation, everywhere.
    pub fn with_min_sd(mut self, min_sd: f64) -> DetectorSpec {
        match &mut self {
            DetectorSpec::MovingAverage(c) => c.min_sd = min_sd,
            DetectorSpec::Ewma(c) => c.reference.min_sd = min_sd,
            DetectorSpec::Cusum(c) => c.reference.min_sd = min_sd,
            DetectorSpec::Shewhart(c) => c.reference.min_sd = min_sd,
            DetectorSpec::HoltWinters(c) => c.min_sd = min_sd,
            DetectorSpec::Ensemble(c) => {
                c.members = std::mem::take(&mut c.members)
                    .into_iter()
                    .map(|m| m.with_min_sd(min_sd))
                    .collect();
            }
        }
        self
    }
}

impl FromStr for DetectorSpec {
    type Err = String;

    /// A detector with its defaults, by name: `moving-average` (or `ma`), `ewma`,
    /// `cusum`, `shewhart`, `holt-winters` (or `hw`), `ensemble`.
    fn from_str(s: &str) -> Result<DetectorSpec, String> {
        Ok(
            match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "moving-average" | "ma" | "zscore" | "z-score" => {
                    DetectorSpec::MovingAverage(MovingAverageConfig::default())
                }
                "ewma" => DetectorSpec::Ewma(EwmaConfig::default()),
                "cusum" => DetectorSpec::Cusum(CusumConfig::default()),
                "shewhart" | "western-electric" => {
                    DetectorSpec::Shewhart(ShewhartConfig::default())
                }
                "holt-winters" | "hw" | "holtwinters" => {
                    DetectorSpec::HoltWinters(HoltWintersConfig::default())
                }
                "ensemble" => DetectorSpec::Ensemble(EnsembleConfig::default()),
                _ => {
                    return Err(format!(
                        "detector `{s}`: expected one of {}",
                        DETECTOR_NAMES.join(", ")
                    ));
                }
            },
        )
    }
}

/// The default spec of every single detector (the ensemble's default members).
pub fn all_single() -> Vec<DetectorSpec> {
    vec![
        DetectorSpec::MovingAverage(MovingAverageConfig::default()),
        DetectorSpec::Ewma(EwmaConfig::default()),
        DetectorSpec::Cusum(CusumConfig::default()),
        DetectorSpec::Shewhart(ShewhartConfig::default()),
        DetectorSpec::HoltWinters(HoltWintersConfig::default()),
    ]
}

pub(crate) fn check_positive(who: &str, name: &'static str, v: f64) -> Result<(), ConfigError> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::new(who, name, v, "a number > 0"))
    }
}

pub(crate) fn check_unit(who: &str, name: &'static str, v: f64) -> Result<(), ConfigError> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(who, name, v, "0 < value <= 1"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn score_is_half_at_the_limit() {
        assert_eq!(Score::from_ratio(1.0).score, 0.5);
        assert!(Score::from_ratio(1.0).flagged);
        assert!(!Score::from_ratio(0.999).flagged);
        assert!((Score::from_ratio(2.0).score - 0.8).abs() < 1e-12);
        assert_eq!(Score::from_ratio(f64::INFINITY).score, 1.0);
        assert_eq!(Score::from_ratio(f64::NAN), Score::NONE);
        assert_eq!(Score::from_ratio(-3.0).score, 0.9);
    }

    #[test]
    fn every_name_builds() {
        for n in DETECTOR_NAMES {
            let spec: DetectorSpec = n.parse().unwrap();
            assert_eq!(spec.name(), n);
            let d = spec.build().unwrap();
            assert_eq!(d.name(), n);
        }
        assert!("nope".parse::<DetectorSpec>().is_err());
    }

    #[test]
    fn specs_read_from_toml_style_json() {
        let spec: DetectorSpec =
            serde_json::from_str(r#"{"kind":"cusum","k":0.5,"h":4.0}"#).unwrap();
        match &spec {
            DetectorSpec::Cusum(c) => assert_eq!((c.k, c.h), (0.5, 4.0)),
            other => panic!("{other:?}"),
        }
        let bad: DetectorSpec = serde_json::from_str(r#"{"kind":"ewma","lambda":1.5}"#).unwrap();
        assert!(bad.build().is_err());
    }

    /// Every detector, fed garbage, answers without panicking.
    #[test]
    fn no_detector_panics_on_odd_input() {
        let odd = [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            -1e308,
            f64::MIN_POSITIVE,
            5e-324,
        ];
        for n in DETECTOR_NAMES {
            let mut d = n
                .parse::<DetectorSpec>()
                .unwrap()
                .with_season(3)
                .build()
                .unwrap();
            for i in 0..200 {
                let s = d.update(odd[i % odd.len()]);
                assert!((0.0..=1.0).contains(&s.score), "{n}: {s:?}");
                if i % 50 == 0 {
                    d.skip(u64::MAX);
                }
            }
            for _ in 0..100 {
                let s = d.update(1.0);
                assert!((0.0..=1.0).contains(&s.score), "{n}: {s:?}");
            }
            let _ = d.explain();
            d.prime(f64::NAN, -1.0);
            d.prime(1.0, 0.0);
            let s = d.update(1.0);
            assert!(!s.flagged, "{n}");
            d.reset();
        }
    }

    /// A constant series is not flagged, and a jump after it is.
    #[test]
    fn constant_series_then_a_jump() {
        for n in DETECTOR_NAMES {
            let mut d = n.parse::<DetectorSpec>().unwrap().build().unwrap();
            for _ in 0..100 {
                assert!(!d.update(5.0).flagged, "{n}");
            }
            let mut flagged = false;
            for _ in 0..3 {
                flagged |= d.update(50.0).flagged;
            }
            assert!(flagged, "{n}");
        }
    }
}
