//! Demand forecast and replica advice.
//!
//! Request-rate points `(timestamp, rate)` are averaged into fixed buckets
//! (5 minutes by default) and fed to two of `umbra-analysis`'s Holt-Winters
//! models: one with a daily season, which takes over once it has two seasons of
//! history, and Holt's linear trend (no season), which answers before that. The
//! forecast over the horizon gives the peak demand, and
//!
//! ```text
//! replicas = ceil(peak over the horizon × headroom / capacity per instance)
//! ```
//!
//! clamped to `[min_replicas, max_replicas]`. The capacity per instance is what
//! `umbra capacity` measured against one instance.
//!
//! The analysis crate's Holt-Winters is a detector with a one-step forecast. A
//! multi-step forecast needs no change there: a clone fed its own forecasts
//! moves exactly as the h-step forecast does (see [`forecast_path`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umbra_analysis::detect::{Detector, HoltWinters, HoltWintersConfig};

use crate::error::Error;

/// The forecast settings of `[control.replicas]` (TOML; the binary adds the
/// keys that are about running it: interval, webhook, where capacity comes from).
///
/// ```toml
/// bucket = "5m"                  # points are averaged per bucket
/// season = "1d"                  # length of the seasonal cycle
/// horizon = "1h"                 # how far ahead the peak is looked for
/// headroom = 1.25                # replicas cover the peak × this
/// capacity_per_instance = 400.0  # req/s one instance serves within its SLO (umbra capacity)
/// min_replicas = 2
/// max_replicas = 50
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// Points are averaged into buckets this long. Default 5 min.
    #[serde(with = "crate::duration")]
    pub bucket: Duration,
    /// The seasonal cycle; a whole number of buckets. Default 1 day.
    #[serde(with = "crate::duration")]
    pub season: Duration,
    /// The peak is looked for from now to this far ahead. Default 1 h.
    #[serde(with = "crate::duration")]
    pub horizon: Duration,
    /// Replicas cover the peak times this (≥ 1). Default 1.25.
    pub headroom: f64,
    /// Requests per second one instance serves within its SLO. Required.
    pub capacity_per_instance: f64,
    /// Never advise fewer. Default 1.
    pub min_replicas: u32,
    /// Never advise more. Default: no limit.
    pub max_replicas: Option<u32>,
    /// Level smoothing of Holt-Winters, in (0, 1]. Default 0.2.
    pub alpha: f64,
    /// Trend smoothing, in [0, 1]. Default 0.01.
    pub beta: f64,
    /// Seasonal smoothing, in [0, 1]. Default 0.2.
    pub gamma: f64,
    /// Level smoothing of the trend model that answers while history is short
    /// (it must follow a ramp within hours, so it forgets faster). Default 0.5.
    pub trend_alpha: f64,
    /// Trend smoothing of that model. Default 0.2.
    pub trend_beta: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            bucket: Duration::from_secs(300),
            season: Duration::from_secs(86_400),
            horizon: Duration::from_secs(3_600),
            headroom: 1.25,
            capacity_per_instance: 0.0,
            min_replicas: 1,
            max_replicas: None,
            alpha: 0.2,
            beta: 0.01,
            gamma: 0.2,
            trend_alpha: 0.5,
            trend_beta: 0.2,
        }
    }
}

const SECTION: &str = "control.replicas";

/// Buckets the trend model needs before it answers.
const TREND_WARMUP: usize = 6;

impl ForecastConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let dur = |d: &Duration| format!("{:?}", humantime::format_duration(*d).to_string());
        if self.bucket < Duration::from_secs(1) {
            return Err(Error::config(
                SECTION,
                "bucket",
                dur(&self.bucket),
                "expected at least 1s",
            ));
        }
        let bucket_ms = self.bucket.as_millis();
        if !self.season.as_millis().is_multiple_of(bucket_ms) || self.season < 2 * self.bucket {
            return Err(Error::config(
                SECTION,
                "season",
                dur(&self.season),
                format!(
                    "expected a whole number (at least 2) of buckets of {}",
                    dur(&self.bucket)
                ),
            ));
        }
        if self.horizon.is_zero() {
            return Err(Error::config(
                SECTION,
                "horizon",
                dur(&self.horizon),
                "expected more than 0",
            ));
        }
        if !(self.headroom.is_finite() && self.headroom >= 1.0) {
            return Err(Error::config(
                SECTION,
                "headroom",
                self.headroom,
                "expected a factor >= 1 (1.25 is 25% spare)",
            ));
        }
        if !(self.capacity_per_instance.is_finite() && self.capacity_per_instance > 0.0) {
            return Err(Error::config(
                SECTION,
                "capacity_per_instance",
                self.capacity_per_instance,
                "expected requests per second > 0 (measure it with `umbra capacity`)",
            ));
        }
        if let Some(max) = self.max_replicas
            && max < self.min_replicas
        {
            return Err(Error::config(
                SECTION,
                "max_replicas",
                max,
                format!("below min_replicas ({})", self.min_replicas),
            ));
        }
        for (key, v, lo_open) in [
            ("alpha", self.alpha, true),
            ("beta", self.beta, false),
            ("gamma", self.gamma, false),
            ("trend_alpha", self.trend_alpha, true),
            ("trend_beta", self.trend_beta, false),
        ] {
            let ok = if lo_open {
                v > 0.0 && v <= 1.0
            } else {
                (0.0..=1.0).contains(&v)
            };
            if !ok {
                return Err(Error::config(
                    SECTION,
                    key,
                    v,
                    "expected a smoothing factor in [0, 1] (alpha and trend_alpha above 0)",
                ));
            }
        }
        self.model(self.season_buckets())
            .and(self.model(0))
            .map(|_| ())
    }

    fn season_buckets(&self) -> usize {
        (self.season.as_millis() / self.bucket.as_millis().max(1)) as usize
    }

    fn model(&self, season: usize) -> Result<HoltWinters, Error> {
        let (alpha, beta) = if season == 0 {
            (self.trend_alpha, self.trend_beta)
        } else {
            (self.alpha, self.beta)
        };
        HoltWinters::new(HoltWintersConfig {
            alpha,
            beta,
            gamma: self.gamma,
            season,
            warmup: if season == 0 {
                TREND_WARMUP
            } else {
                2 * season
            },
            // The detector replaces values it flags by its forecast; demand that
            // really shifts must move the model, so nothing is ever flagged.
            limit: f64::MAX,
            ..HoltWintersConfig::default()
        })
        .map_err(|e| {
            Error::config(
                SECTION,
                "season",
                format!("{:?}", humantime::format_duration(self.season).to_string()),
                e.to_string(),
            )
        })
    }
}

/// Which model answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastMethod {
    /// Holt-Winters with the configured season (two seasons of history or more).
    HoltWinters,
    /// Holt's linear trend: history shorter than two seasons.
    Trend,
}

/// The forecast over the horizon and the advice that follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub method: ForecastMethod,
    /// Start of the current (open) bucket, ms since the epoch: the first forecast value.
    pub from_ms: i64,
    pub bucket_ms: i64,
    /// Forecast rate per bucket from `from_ms` on, covering the horizon.
    pub path: Vec<f64>,
    /// The highest of the path and the current rate.
    pub peak_rps: f64,
    pub peak_at_ms: i64,
    /// The mean rate of the current bucket so far (of the last whole one when
    /// the current one is empty).
    pub current_rps: f64,
    /// Replicas for the peak: ceil(peak × headroom / capacity per instance), clamped.
    pub replicas: u32,
    /// Replicas the current rate alone would need (what a reactive autoscaler does).
    pub current_replicas: u32,
    /// Whole buckets seen.
    pub history_buckets: u64,
    /// Points older than a bucket already closed: counted and left out.
    pub late_points: u64,
}

/// Multi-step forecast with an `umbra-analysis` Holt-Winters model: `steps`
/// values from the next one on, or None before the model has started.
///
/// A clone of the model is fed its own forecasts. With `x = ℓ + b + s` the
/// updates give `ℓ' = α(x − s) + (1 − α)(ℓ + b) = ℓ + b`, `b' = b` and
/// `s' = γ(x − ℓ') + (1 − γ)s = s`, so step h forecasts `ℓ + h·b + s_(t+h)`: the
/// textbook h-step forecast, with no change to the analysis crate.
pub fn forecast_path(model: &HoltWinters, steps: usize) -> Option<Vec<f64>> {
    let mut m = model.clone();
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let f = m.forecast()?;
        out.push(f);
        m.update(f);
    }
    Some(out)
}

/// Takes `(timestamp, rate)` points and advises replicas; see the module docs.
#[derive(Debug, Clone)]
pub struct Forecaster {
    config: ForecastConfig,
    bucket_ms: i64,
    seasonal: HoltWinters,
    trend: HoltWinters,
    /// The bucket being filled: (index, sum, count).
    open: Option<(i64, f64, u64)>,
    last_closed: Option<(i64, f64)>,
    buckets: u64,
    points: u64,
    late: u64,
}

impl Forecaster {
    pub fn new(config: ForecastConfig) -> Result<Forecaster, Error> {
        config.validate()?;
        Ok(Forecaster {
            bucket_ms: config.bucket.as_millis() as i64,
            seasonal: config.model(config.season_buckets())?,
            trend: config.model(0)?,
            config,
            open: None,
            last_closed: None,
            buckets: 0,
            points: 0,
            late: 0,
        })
    }

    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// Sets the capacity per instance (a new `umbra capacity` measurement, say)
    /// without losing the history; the value is checked as in the config.
    pub fn set_capacity_per_instance(&mut self, rps: f64) -> Result<(), Error> {
        let config = ForecastConfig {
            capacity_per_instance: rps,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Adds a point: `rate` requests per second at `timestamp_ms` (ms since the
    /// epoch). Points should come in time order; one older than a bucket already
    /// closed is counted ([`Forecast::late_points`]) and left out.
    pub fn push(&mut self, timestamp_ms: i64, rate: f64) -> Result<(), Error> {
        let index = self.points;
        self.points += 1;
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(Error::BadPoint {
                index,
                timestamp_ms,
                reason: format!("rate {rate} is not a number >= 0"),
            });
        }
        let b = timestamp_ms.div_euclid(self.bucket_ms);
        match self.open {
            None => self.open = Some((b, rate, 1)),
            Some((ob, sum, n)) if b == ob => self.open = Some((ob, sum + rate, n + 1)),
            Some((ob, sum, n)) if b > ob => {
                self.close(ob, sum / n as f64);
                let gap = (b - ob - 1) as u64;
                if gap > 0 {
                    self.seasonal.skip(gap);
                    self.trend.skip(gap);
                }
                self.open = Some((b, rate, 1));
            }
            Some(_) => self.late += 1,
        }
        Ok(())
    }

    fn close(&mut self, bucket: i64, mean: f64) {
        self.seasonal.update(mean);
        self.trend.update(mean);
        self.last_closed = Some((bucket, mean));
        self.buckets += 1;
    }

    /// The forecast over the horizon, from the current bucket on.
    pub fn forecast(&self) -> Result<Forecast, Error> {
        let Some((open, sum, n)) = self.open else {
            return Err(Error::NotEnoughHistory("no points yet".into()));
        };
        let steps = self
            .config
            .horizon
            .as_millis()
            .div_ceil(self.bucket_ms as u128) as usize
            + 1;
        let (method, path) = match forecast_path(&self.seasonal, steps) {
            Some(p) => (ForecastMethod::HoltWinters, p),
            None => match forecast_path(&self.trend, steps) {
                Some(p) => (ForecastMethod::Trend, p),
                None => {
                    return Err(Error::NotEnoughHistory(format!(
                        "{} whole bucket(s) of {} so far; the trend needs {TREND_WARMUP}, the seasonal model {} (two seasons)",
                        self.buckets,
                        humantime::format_duration(self.config.bucket),
                        2 * self.config.season_buckets()
                    )));
                }
            },
        };
        // Forecast values are floored at 0: demand is never negative.
        let path: Vec<f64> = path.into_iter().map(|x| x.max(0.0)).collect();
        // The open bucket is partial, but it is real demand: the advice covers it.
        let current = if n > 0 {
            sum / n as f64
        } else {
            self.last_closed.map_or(0.0, |c| c.1)
        };
        let (mut peak, mut peak_at) = (current, open * self.bucket_ms);
        for (i, x) in path.iter().enumerate() {
            if *x > peak {
                peak = *x;
                peak_at = (open + i as i64) * self.bucket_ms;
            }
        }
        Ok(Forecast {
            method,
            from_ms: open * self.bucket_ms,
            bucket_ms: self.bucket_ms,
            path,
            peak_rps: peak,
            peak_at_ms: peak_at,
            current_rps: current,
            replicas: self.replicas_for(peak),
            current_replicas: self.replicas_for(current),
            history_buckets: self.buckets,
            late_points: self.late,
        })
    }

    /// The recommended replica count (the forecast's `replicas`).
    pub fn recommended_replicas(&self) -> Result<u32, Error> {
        self.forecast().map(|f| f.replicas)
    }

    /// ceil(rate × headroom / capacity per instance), clamped.
    pub fn replicas_for(&self, rate: f64) -> u32 {
        let c = &self.config;
        let need = (rate * c.headroom / c.capacity_per_instance).ceil();
        let need = if need.is_finite() && need > 0.0 {
            need.min(u32::MAX as f64) as u32
        } else {
            0
        };
        let need = need.max(c.min_replicas);
        c.max_replicas.map_or(need, |m| need.min(m))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> ForecastConfig {
        ForecastConfig {
            capacity_per_instance: 100.0,
            ..ForecastConfig::default()
        }
    }

    #[test]
    fn forecast_path_is_the_h_step_forecast() {
        let mut m = HoltWinters::new(HoltWintersConfig {
            season: 4,
            limit: f64::MAX,
            ..HoltWintersConfig::default()
        })
        .unwrap();
        // A clean seasonal series with a slope: level + trend·t + season.
        let x = |t: usize| 100.0 + 0.5 * t as f64 + [10.0, -5.0, 0.0, -5.0][t % 4];
        for t in 0..400 {
            m.update(x(t));
        }
        let path = forecast_path(&m, 8).unwrap();
        for (h, f) in path.iter().enumerate() {
            assert!(
                (f - x(400 + h)).abs() < 0.5,
                "step {h}: {f} against {}",
                x(400 + h)
            );
        }
    }

    #[test]
    fn replicas_round_up_and_clamp() {
        let f = Forecaster::new(ForecastConfig {
            min_replicas: 2,
            max_replicas: Some(10),
            ..config()
        })
        .unwrap();
        assert_eq!(f.replicas_for(0.0), 2);
        assert_eq!(f.replicas_for(400.0), 5); // 400 × 1.25 / 100
        assert_eq!(f.replicas_for(401.0), 6);
        assert_eq!(f.replicas_for(1e9), 10);
    }

    #[test]
    fn short_history_says_how_much_more_is_needed() {
        let mut f = Forecaster::new(config()).unwrap();
        assert!(f.forecast().is_err());
        for i in 0..4 {
            f.push(i * 300_000, 50.0).unwrap();
        }
        let e = f.forecast().unwrap_err().to_string();
        assert!(
            e.contains("3 whole bucket(s)") && e.contains("needs 6"),
            "{e}"
        );
        let e = f.push(5 * 300_000, f64::NAN).unwrap_err().to_string();
        assert!(e.contains("point 4") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn configs_name_the_wrong_key() {
        let e = Forecaster::new(ForecastConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("control.replicas.capacity_per_instance = 0"),
            "{e}"
        );
        let e = Forecaster::new(ForecastConfig {
            season: Duration::from_secs(1000),
            ..config()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("control.replicas.season") && e.contains("whole number"),
            "{e}"
        );
    }
}
