//! Baselines: what a metric normally looks like for one profile and role.
//!
//! A [`Baseline`] is an exponentially weighted mean and variance. The first
//! values are averaged with equal weights (weight `1/n`), so a baseline is an
//! ordinary mean and variance until it has seen `1/alpha` values; after that each
//! new value has weight `alpha`. With the default `alpha = 0.01` and 10 s windows a
//! baseline has a half-life of ln 2 / 0.01 ≈ 69 windows (about 11.5 minutes), and
//! a sudden change moves it by 1% of the change per window. The judge never
//! feeds it a window that alerted (or that its detector flagged), so a regression
//! is not learned as the new normal.
//!
//! Baselines are kept on the *detector scale* of their metric (see
//! [`Metric::to_scale`]): latency percentiles as natural logarithms of µs, rates as
//! they are. [`Baselines`] is plain serde data for the binary to persist.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::window::{Role, Window};

/// A quantity measured per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Median latency, µs.
    P50,
    /// 90th percentile latency, µs.
    P90,
    /// 99th percentile latency, µs.
    P99,
    /// Share of requests failing with a 5xx or no response.
    ErrorRate,
    /// Share of requests answered with a 4xx.
    ClientErrorRate,
    /// Requests per second.
    Throughput,
    /// CPU in cores.
    Cpu,
    /// Resident memory, bytes.
    Memory,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::ErrorRate,
        Metric::ClientErrorRate,
        Metric::Throughput,
        Metric::Cpu,
        Metric::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::ErrorRate => "error_rate",
            Metric::ClientErrorRate => "client_error_rate",
            Metric::Throughput => "throughput",
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }

    /// Whether the metric is a latency percentile.
    pub fn is_latency(self) -> bool {
        matches!(self, Metric::P50 | Metric::P90 | Metric::P99)
    }

    /// The quantile of a latency metric.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Metric::P50 => Some(0.50),
            Metric::P90 => Some(0.90),
            Metric::P99 => Some(0.99),
            _ => None,
        }
    }

    /// The unit values are shown in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::P50 | Metric::P90 | Metric::P99 => "µs",
            Metric::ErrorRate | Metric::ClientErrorRate => "",
            Metric::Throughput => "req/s",
            Metric::Cpu => "cores",
            Metric::Memory => "bytes",
        }
    }

    /// The metric's value in a window, or `None` when the window cannot tell
    /// (no requests, or fewer than `min_requests` for a latency percentile; no
    /// resource samples). Throughput is always known: no traffic is 0 req/s.
    pub fn value(self, w: &Window, min_requests: u64) -> Option<f64> {
        match self {
            Metric::P50 | Metric::P90 | Metric::P99 => {
                if w.requests < min_requests.max(1) {
                    return None;
                }
                w.latency_quantile(self.quantile().unwrap_or(0.5))
            }
            Metric::ErrorRate => w.error_rate(),
            Metric::ClientErrorRate => w.client_error_rate(),
            Metric::Throughput => Some(w.throughput()),
            Metric::Cpu => w.cpu_cores,
            Metric::Memory => w.memory_bytes.map(|m| m as f64),
        }
    }

    /// Maps a value to the scale detectors and baselines work on: the natural
    /// logarithm for latency (its noise is multiplicative and "p99 up 20%" is a
    /// ratio; latencies below 1 µs count as 1 µs), the value itself otherwise.
    pub fn to_scale(self, v: f64) -> f64 {
        if self.is_latency() {
            v.max(1.0).ln()
        } else {
            v
        }
    }

    /// The inverse of [`Metric::to_scale`].
    pub fn from_scale(self, s: f64) -> f64 {
        if self.is_latency() { s.exp() } else { s }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Metric, String> {
        let t = s.trim().to_ascii_lowercase().replace('-', "_");
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == t)
            .ok_or_else(|| {
                format!(
                    "metric `{s}`: expected one of p50, p90, p99, error_rate, client_error_rate, throughput, cpu, memory"
                )
            })
    }
}

/// How baselines learn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Weight of a new value once the baseline is past its first `1/alpha` values.
    /// Default 0.01 (half-life ≈ 69 values).
    pub alpha: f64,
    /// Values a baseline needs before it is used. Default 30.
    pub warmup: u64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            alpha: 0.01,
            warmup: 30,
        }
    }
}

impl BaselineConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!(
                "baseline alpha {}: expected 0 < alpha <= 1",
                self.alpha
            ));
        }
        Ok(())
    }
}

/// An exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    /// Population variance (weighted).
    pub variance: f64,
    /// Values learned so far.
    pub count: u64,
}

impl Baseline {
    pub const fn new() -> Baseline {
        Baseline {
            mean: 0.0,
            variance: 0.0,
            count: 0,
        }
    }

    /// Learns `x` with weight `max(alpha, 1/n)`. Non-finite values are ignored.
    pub fn learn(&mut self, x: f64, alpha: f64) {
        if !x.is_finite() {
            return;
        }
        self.count = self.count.saturating_add(1);
        let w = alpha.max(1.0 / self.count as f64).min(1.0);
        let d = x - self.mean;
        self.mean += w * d;
        self.variance = (1.0 - w) * (self.variance + w * d * d);
    }

    pub fn sd(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    pub fn is_ready(&self, warmup: u64) -> bool {
        self.count >= warmup.max(1)
    }
}

/// Which baseline: one per profile, role and metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BaselineKey {
    pub profile: String,
    pub role: Role,
    pub metric: Metric,
}

/// One stored baseline, for persistence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineEntry {
    #[serde(flatten)]
    pub key: BaselineKey,
    #[serde(flatten)]
    pub baseline: Baseline,
    /// Start of the last window learned, ms since the epoch.
    pub updated_ms: u64,
}

/// Every baseline, by key. Serialises as a list of [`BaselineEntry`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    config: BaselineConfig,
    map: BTreeMap<BaselineKey, (Baseline, u64)>,
}

impl Baselines {
    pub fn new(config: BaselineConfig) -> Baselines {
        Baselines {
            config,
            map: BTreeMap::new(),
        }
    }

    /// Restores saved baselines.
    pub fn from_entries(config: BaselineConfig, entries: Vec<BaselineEntry>) -> Baselines {
        let map = entries
            .into_iter()
            .filter(|e| e.baseline.mean.is_finite() && e.baseline.variance.is_finite())
            .map(|e| (e.key, (e.baseline, e.updated_ms)))
            .collect();
        Baselines { config, map }
    }

    pub fn config(&self) -> &BaselineConfig {
        &self.config
    }

    pub fn get(&self, key: &BaselineKey) -> Option<&Baseline> {
        self.map.get(key).map(|(b, _)| b)
    }

    /// The baseline if it has finished its warm-up.
    pub fn ready(&self, key: &BaselineKey) -> Option<&Baseline> {
        self.get(key).filter(|b| b.is_ready(self.config.warmup))
    }

    /// Learns one value (on the metric's scale) from the window starting at `at_ms`.
    pub fn learn(&mut self, key: &BaselineKey, x: f64, at_ms: u64) {
        let alpha = self.config.alpha;
        let e = self
            .map
            .entry(key.clone())
            .or_insert((Baseline::new(), at_ms));
        e.0.learn(x, alpha);
        e.1 = at_ms;
    }

    /// Forgets the baselines of one profile and role (for example after the shadow
    /// version is promoted, when its old normal no longer applies).
    pub fn forget(&mut self, profile: &str, role: Role) {
        self.map
            .retain(|k, _| !(k.profile == profile && k.role == role));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn entries(&self) -> Vec<BaselineEntry> {
        self.map
            .iter()
            .map(|(k, (b, at))| BaselineEntry {
                key: k.clone(),
                baseline: *b,
                updated_ms: *at,
            })
            .collect()
    }
}

impl Serialize for Baselines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Baselines {
    /// Restores entries with the default configuration; use
    /// [`Baselines::from_entries`] to choose another.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Baselines, D::Error> {
        let entries = Vec::<BaselineEntry>::deserialize(d)?;
        Ok(Baselines::from_entries(BaselineConfig::default(), entries))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_values_give_the_plain_mean_and_variance() {
        let mut b = Baseline::new();
        for x in [1.0, 2.0, 3.0, 4.0] {
            b.learn(x, 0.01);
        }
        assert!((b.mean - 2.5).abs() < 1e-12);
        assert!((b.variance - 1.25).abs() < 1e-12);
        b.learn(f64::NAN, 0.01);
        assert_eq!(b.count, 4);
    }

    #[test]
    fn adapts_slowly_after_warmup() {
        let mut b = Baseline::new();
        for _ in 0..1000 {
            b.learn(10.0, 0.01);
        }
        b.learn(20.0, 0.01);
        assert!((b.mean - 10.1).abs() < 1e-9);
    }

    #[test]
    fn baselines_round_trip_through_json() {
        let mut set = Baselines::new(BaselineConfig::default());
        let key = BaselineKey {
            profile: "checkout".into(),
            role: Role::Shadow,
            metric: Metric::P99,
        };
        for i in 0..40 {
            set.learn(&key, Metric::P99.to_scale(1000.0 + i as f64), i * 10_000);
        }
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains("\"metric\":\"p99\""), "{json}");
        let back: Baselines = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get(&key), set.get(&key));
        assert!(back.ready(&key).is_some());
        let mut back = back;
        back.forget("checkout", Role::Shadow);
        assert!(back.is_empty());
    }

    #[test]
    fn metrics_parse() {
        assert_eq!("p99".parse::<Metric>().unwrap(), Metric::P99);
        assert_eq!("error-rate".parse::<Metric>().unwrap(), Metric::ErrorRate);
        assert!("p42".parse::<Metric>().is_err());
    }
}
