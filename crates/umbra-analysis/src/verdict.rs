//! Verdicts: a threshold crossed and a detector agreeing, N of the last M windows.
//!
//! The [`Judge`] takes the windows of a span and evaluates every rule (a metric
//! and a threshold) for every profile and role, on two bases:
//!
//! - **history**: the window against the role's own baseline for that profile.
//!   The threshold is checked against the baseline's typical value, and the
//!   agreeing detector is the configured one (the ensemble by default), fed the
//!   metric on its detector scale.
//! - **production** (shadow and canary only, latency and error metrics): the
//!   window against production's window of the same profile and span. The
//!   threshold is checked against production's value, and the agreeing
//!   "detector" is the comparison: for latency, the Mann-Whitney test or the tail
//!   test says the treatment is significantly higher ([`crate::compare`]); for
//!   error rates, a one-sided two-proportion z-test.
//!
//! A window *agrees* when its threshold is crossed and its detector flags.
//! A **regression** is declared on a basis for a window that agrees when at
//! least `n` of its last `m` evaluated windows agree (default 2 of 3); windows without enough data (fewer
//! than `min_requests` requests for a latency percentile, none at all for a
//! rate) are not evaluated and do not count. A regression produces a
//! [`Verdict`].
//!
//! Baselines learn a window only when its detector did not flag it and it did not
//! produce a verdict, so a regression is never learned as normal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineConfig, BaselineKey, Baselines, Metric};
use crate::compare::{
    Class, CompareConfig, Comparison, compare_histograms, normal_sf, proportion_higher_p,
};
use crate::detect::{ConfigError, Detector, DetectorSpec};
use crate::window::{Role, TraceId, Window};

/// When a metric's change is large enough to matter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// `observed >= baseline × (1 + r)`: `0.2` is "up 20%".
    RiseRatio(f64),
    /// `observed >= baseline + d`: `0.01` on an error rate is "up 1 point".
    RiseBy(f64),
    /// `observed <= baseline × (1 − r)`: `0.1` is "down 10%".
    FallRatio(f64),
}

impl Threshold {
    /// The change the threshold measures: a ratio minus one, or a difference.
    pub fn change(&self, observed: f64, baseline: f64) -> f64 {
        match self {
            Threshold::RiseRatio(_) | Threshold::FallRatio(_) => {
                if baseline > 0.0 {
                    observed / baseline - 1.0
                } else if observed > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                }
            }
            Threshold::RiseBy(_) => observed - baseline,
        }
    }

    /// Whether the change reaches the threshold (to within 1e-9, so that 120
    /// against 100 is "up 20%" despite rounding).
    pub fn crossed(&self, observed: f64, baseline: f64) -> bool {
        const EPS: f64 = 1e-9;
        let c = self.change(observed, baseline);
        match *self {
            Threshold::RiseRatio(r) | Threshold::RiseBy(r) => c >= r - EPS,
            Threshold::FallRatio(r) => c <= -r + EPS,
        }
    }

    /// +1 when a rise is the regression, −1 when a fall is.
    pub fn direction(&self) -> f64 {
        match self {
            Threshold::FallRatio(_) => -1.0,
            _ => 1.0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (Threshold::RiseRatio(v) | Threshold::RiseBy(v) | Threshold::FallRatio(v)) = *self;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("threshold {self}: expected a number >= 0"));
        }
        if matches!(self, Threshold::FallRatio(_)) && v > 1.0 {
            return Err(format!("threshold {self}: a fall is at most 100%"));
        }
        Ok(())
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::RiseRatio(r) => write!(f, "up {}%", r * 100.0),
            Threshold::RiseBy(d) => write!(f, "up {d}"),
            Threshold::FallRatio(r) => write!(f, "down {}%", r * 100.0),
        }
    }
}

/// One metric and its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub metric: Metric,
    pub threshold: Threshold,
}

/// N of the last M windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub n: usize,
    pub m: usize,
}

impl Default for Agreement {
    fn default() -> Self {
        Agreement { n: 2, m: 3 }
    }
}

/// How the judge decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeConfig {
    /// Default: p99 up 20%, error rate up 1 point, throughput down 10%.
    pub rules: Vec<Rule>,
    /// The detector of the history basis. Default: the ensemble.
    pub detector: DetectorSpec,
    /// Default 2 of the last 3 windows.
    pub agreement: Agreement,
    pub baseline: BaselineConfig,
    pub compare: CompareConfig,
    /// Requests a window needs before its latency percentiles are judged. Default 20.
    pub min_requests: u64,
    /// Example trace ids a verdict carries. Default 5.
    pub trace_ids: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            rules: vec![
                Rule {
                    metric: Metric::P99,
                    threshold: Threshold::RiseRatio(0.20),
                },
                Rule {
                    metric: Metric::ErrorRate,
                    threshold: Threshold::RiseBy(0.01),
                },
                Rule {
                    metric: Metric::Throughput,
                    threshold: Threshold::FallRatio(0.10),
                },
            ],
            detector: DetectorSpec::default(),
            agreement: Agreement::default(),
            baseline: BaselineConfig::default(),
            compare: CompareConfig::default(),
            min_requests: 20,
            trace_ids: 5,
        }
    }
}

/// A judge configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeConfigError {
    #[error("judge: {0}")]
    Invalid(String),
    #[error("judge: {0}")]
    Detector(#[from] ConfigError),
}

impl JudgeConfig {
    pub fn validate(&self) -> Result<(), JudgeConfigError> {
        let a = self.agreement;
        if a.n == 0 || a.m == 0 || a.n > a.m || a.m > 1000 {
            return Err(JudgeConfigError::Invalid(format!(
                "agreement {} of {}: expected 1 <= n <= m <= 1000",
                a.n, a.m
            )));
        }
        for r in &self.rules {
            r.threshold
                .validate()
                .map_err(|e| JudgeConfigError::Invalid(format!("rule for {}: {e}", r.metric)))?;
        }
        self.baseline
            .validate()
            .map_err(JudgeConfigError::Invalid)?;
        let c = &self.compare;
        if !(c.alpha > 0.0 && c.alpha < 1.0) {
            return Err(JudgeConfigError::Invalid(format!(
                "compare alpha {}: expected 0 < alpha < 1",
                c.alpha
            )));
        }
        if !(c.tail_quantile > 0.0 && c.tail_quantile < 1.0) {
            return Err(JudgeConfigError::Invalid(format!(
                "compare tail_quantile {}: expected 0 < q < 1",
                c.tail_quantile
            )));
        }
        self.detector.validate()?;
        Ok(())
    }
}

/// What a window is compared against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// The role's own baseline for the profile.
    History,
    /// Production's window of the same profile and span.
    Production,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::History => "history",
            Basis::Production => "production",
        })
    }
}

/// A declared regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub profile: String,
    pub role: Role,
    pub metric: Metric,
    pub basis: Basis,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// The reference value, in the metric's unit: the baseline's typical value
    /// (history) or production's value in the same window.
    pub baseline: f64,
    pub observed: f64,
    /// The thresholded change: `observed / baseline − 1`, or the difference for
    /// `rise_by` thresholds.
    pub change: f64,
    pub threshold: Threshold,
    /// History: the change in baseline standard deviations (on the detector
    /// scale). Production, latency: the Hodges-Lehmann shift over production's
    /// median. Production, rates: the difference in rates.
    pub effect_size: f64,
    /// History: one-sided normal p-value of the value given the baseline.
    /// Production: the comparison's p-value (Mann-Whitney or tail test for
    /// latency, two-proportion z-test for rates).
    pub p_value: f64,
    /// What agreed: the detector's explanation or the comparison's.
    pub detector: String,
    /// Windows that agreed among the last `m` evaluated.
    pub agreeing: usize,
    pub of: usize,
    pub requests: u64,
    /// Slowest (latency) or failed (error rates) requests of the window.
    pub trace_ids: Vec<TraceId>,
}

impl Verdict {
    /// One line for people.
    pub fn summary(&self) -> String {
        let how = match self.threshold {
            Threshold::RiseBy(_) => format!("{:+.4}", self.change),
            _ => format!("{:+.1}%", self.change * 100.0),
        };
        let against = match self.basis {
            Basis::History => "its baseline",
            Basis::Production => "production",
        };
        format!(
            "{} {} of profile {} is {} against {} ({} vs {}{}), {} of the last {} windows, p = {:.2e}",
            self.role,
            self.metric,
            self.profile,
            how,
            against,
            fmt_value(self.metric, self.observed),
            fmt_value(self.metric, self.baseline),
            if self.metric.unit().is_empty() {
                String::new()
            } else {
                format!(" {}", self.metric.unit())
            },
            self.agreeing,
            self.of,
            self.p_value
        )
    }
}

fn fmt_value(m: Metric, v: f64) -> String {
    if m.is_latency() || matches!(m, Metric::Memory) {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// How one rule fared on one basis in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not enough data in the window (or no production window to compare with).
    Insufficient,
    /// The baseline is still learning.
    Warmup,
    /// Evaluated, no regression.
    Normal,
    /// Evaluated, regression declared.
    Regressed,
}

/// The judgement of one rule on one basis for one profile and role in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub profile: String,
    pub role: Role,
    pub metric: Metric,
    pub basis: Basis,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub status: Status,
    pub observed: Option<f64>,
    pub baseline: Option<f64>,
    pub crossed: bool,
    /// The detector (or comparison) flagged this window.
    pub flagged: bool,
    /// The detector's score (history) or 1 − p (production).
    pub score: f64,
    pub agreeing: usize,
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TrackKey {
    profile: Arc<str>,
    role: Role,
    metric: Metric,
    basis: Basis,
}

#[derive(Debug)]
struct Track {
    detector: Option<Box<dyn Detector>>,
    recent: VecDeque<bool>,
}

impl Track {
    fn push(&mut self, agrees: bool, m: usize) -> usize {
        self.recent.push_back(agrees);
        while self.recent.len() > m {
            self.recent.pop_front();
        }
        self.recent.iter().filter(|a| **a).count()
    }
}

/// Smallest standard deviation the detectors use per metric (on its scale):
/// 1% for latency, 0.1 point for rates, 0.1 req/s, 0.01 cores, 1 MiB.
fn min_sd(metric: Metric) -> f64 {
    match metric {
        Metric::P50 | Metric::P90 | Metric::P99 => 0.01,
        Metric::ErrorRate | Metric::ClientErrorRate => 0.001,
        Metric::Throughput => 0.1,
        Metric::Cpu => 0.01,
        Metric::Memory => 1_048_576.0,
    }
}

/// Turns windows into evaluations and verdicts. See the module documentation.
#[derive(Debug)]
pub struct Judge {
    config: JudgeConfig,
    baselines: Baselines,
    tracks: HashMap<TrackKey, Track>,
}

impl Judge {
    pub fn new(config: JudgeConfig) -> Result<Judge, JudgeConfigError> {
        let baselines = Baselines::new(config.baseline);
        Judge::with_baselines(config, baselines)
    }

    /// A judge starting from saved baselines (detectors are primed from them).
    pub fn with_baselines(
        config: JudgeConfig,
        baselines: Baselines,
    ) -> Result<Judge, JudgeConfigError> {
        config.validate()?;
        let baselines = Baselines::from_entries(config.baseline, baselines.entries());
        Ok(Judge {
            config,
            baselines,
            tracks: HashMap::new(),
        })
    }

    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// The baselines, for persistence.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Forgets what was learned about one profile and role (after a deploy that
    /// makes the old normal wrong).
    pub fn forget(&mut self, profile: &str, role: Role) {
        self.baselines.forget(profile, role);
        self.tracks
            .retain(|k, _| !(&*k.profile == profile && k.role == role));
    }

    /// Judges the windows of one or more spans. Windows of the same span, profile
    /// and role are merged first (across upstreams); shadow and canary windows are
    /// compared with the production window of the same span and profile.
    pub fn observe(&mut self, windows: &[Window]) -> Vec<Evaluation> {
        let mut merged: BTreeMap<(u64, Arc<str>, Role), Window> = BTreeMap::new();
        for w in windows {
            let k = (w.start_ms, w.key.profile.clone(), w.key.role);
            match merged.get_mut(&k) {
                Some(m) => {
                    // Same role and profile, so this cannot fail; a failure keeps the first.
                    let _ = m.merge(w);
                }
                None => {
                    merged.insert(k, w.clone());
                }
            }
        }
        let mut out = Vec::new();
        for ((start, profile, role), w) in &merged {
            let production = if *role == Role::Production {
                None
            } else {
                merged.get(&(*start, profile.clone(), Role::Production))
            };
            let mut comparison: Option<Option<Comparison>> = None;
            for rule in self.config.rules.clone() {
                out.push(self.history(w, rule));
                if *role != Role::Production
                    && (rule.metric.is_latency()
                        || matches!(rule.metric, Metric::ErrorRate | Metric::ClientErrorRate))
                {
                    out.push(self.against_production(w, production, rule, &mut comparison));
                }
            }
        }
        out
    }

    fn evaluation(&self, w: &Window, rule: Rule, basis: Basis, status: Status) -> Evaluation {
        Evaluation {
            profile: w.key.profile.to_string(),
            role: w.key.role,
            metric: rule.metric,
            basis,
            window_start_ms: w.start_ms,
            window_end_ms: w.end_ms,
            status,
            observed: None,
            baseline: None,
            crossed: false,
            flagged: false,
            score: 0.0,
            agreeing: 0,
            verdict: None,
        }
    }

    fn trace_ids(&self, w: &Window, metric: Metric) -> Vec<TraceId> {
        let from = if matches!(metric, Metric::ErrorRate) && !w.error_traces.is_empty() {
            &w.error_traces
        } else {
            &w.slow_traces
        };
        from.iter()
            .take(self.config.trace_ids)
            .map(|t| t.trace_id)
            .collect()
    }

    fn history(&mut self, w: &Window, rule: Rule) -> Evaluation {
        let metric = rule.metric;
        let mut ev = self.evaluation(w, rule, Basis::History, Status::Insufficient);
        let Some(value) = metric.value(w, self.config.min_requests) else {
            return ev;
        };
        ev.observed = Some(value);
        let x = metric.to_scale(value);
        let bkey = BaselineKey {
            profile: w.key.profile.to_string(),
            role: w.key.role,
            metric,
        };
        let tkey = TrackKey {
            profile: w.key.profile.clone(),
            role: w.key.role,
            metric,
            basis: Basis::History,
        };
        let ready = self.baselines.ready(&bkey).copied();
        let track = self.tracks.entry(tkey).or_insert_with(|| Track {
            detector: None,
            recent: VecDeque::new(),
        });
        if track.detector.is_none() {
            let spec = self.config.detector.clone().with_min_sd(min_sd(metric));
            // Validated with the config, so this cannot fail.
            let Ok(mut d) = spec.build() else {
                return ev;
            };
            if let Some(b) = ready {
                d.prime(b.mean, b.variance);
            }
            track.detector = Some(d);
        }
        let Some(detector) = track.detector.as_mut() else {
            return ev;
        };
        let score = detector.update(x);
        let explanation = if score.flagged {
            detector.explain()
        } else {
            String::new()
        };
        ev.score = score.score;
        ev.flagged = score.flagged;
        let Some(base) = ready else {
            ev.status = Status::Warmup;
            if !score.flagged {
                self.baselines.learn(&bkey, x, w.start_ms);
            }
            return ev;
        };
        let reference = metric.from_scale(base.mean);
        ev.baseline = Some(reference);
        ev.crossed = rule.threshold.crossed(value, reference);
        let agrees = ev.crossed && score.flagged;
        ev.agreeing = track.push(agrees, self.config.agreement.m);
        // Declared on an agreeing window only: a verdict then always carries
        // evidence of the regression, never a recovered window's values.
        let regression = agrees && ev.agreeing >= self.config.agreement.n;
        let sd = base.sd().max(min_sd(metric));
        let z = (x - base.mean) / sd;
        if regression {
            ev.status = Status::Regressed;
            ev.verdict = Some(Verdict {
                profile: ev.profile.clone(),
                role: ev.role,
                metric,
                basis: Basis::History,
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                baseline: reference,
                observed: value,
                change: rule.threshold.change(value, reference),
                threshold: rule.threshold,
                effect_size: z,
                p_value: normal_sf(z * rule.threshold.direction()),
                detector: if explanation.is_empty() {
                    format!(
                        "{} (this window not flagged; it flagged {} of the last {})",
                        self.config.detector.name(),
                        ev.agreeing,
                        self.config.agreement.m
                    )
                } else {
                    explanation
                },
                agreeing: ev.agreeing,
                of: self.config.agreement.m,
                requests: w.requests,
                trace_ids: self.trace_ids(w, metric),
            });
        } else {
            ev.status = Status::Normal;
            if !score.flagged {
                self.baselines.learn(&bkey, x, w.start_ms);
            }
        }
        ev
    }

    fn against_production(
        &mut self,
        w: &Window,
        production: Option<&Window>,
        rule: Rule,
        comparison: &mut Option<Option<Comparison>>,
    ) -> Evaluation {
        let metric = rule.metric;
        let mut ev = self.evaluation(w, rule, Basis::Production, Status::Insufficient);
        let Some(p) = production else {
            return ev;
        };
        let (Some(observed), Some(reference)) = (
            metric.value(w, self.config.min_requests),
            metric.value(p, self.config.min_requests),
        ) else {
            return ev;
        };
        ev.observed = Some(observed);
        ev.baseline = Some(reference);
        ev.crossed = rule.threshold.crossed(observed, reference);
        let alpha = self.config.compare.alpha;
        let (flagged, p_value, effect, what) = if metric.is_latency() {
            let c = comparison.get_or_insert_with(|| {
                compare_histograms(&w.latency, &p.latency, &self.config.compare)
            });
            let Some(c) = c else {
                return ev;
            };
            let want = if rule.threshold.direction() > 0.0 {
                Class::Higher
            } else {
                Class::Lower
            };
            // The rank test speaks for the median; the tail test for p90 and p99 too.
            let p_value = if metric == Metric::P50 {
                c.mann_whitney.p_value
            } else {
                c.mann_whitney.p_value.min(c.tail.p_value)
            };
            let what = format!(
                "mann-whitney p = {:.2e}, hodges-lehmann shift {:+.0} µs ({:+.1}%), tail above p{}: {} vs {} (p = {:.2e})",
                c.mann_whitney.p_value,
                c.shift,
                c.relative_shift * 100.0,
                (c.tail.quantile * 100.0).round(),
                c.tail.treatment_above,
                c.tail.control_above,
                c.tail.p_value
            );
            (c.class == want, p_value, c.relative_shift, what)
        } else {
            let (a, b) = match metric {
                Metric::ClientErrorRate => (w.errors_4xx, p.errors_4xx),
                _ => (w.errors_5xx, p.errors_5xx),
            };
            let pv = proportion_higher_p(a, w.requests, b, p.requests);
            let what = format!(
                "two-proportion z-test: {a} of {} against {b} of {}, p = {pv:.2e}",
                w.requests, p.requests
            );
            (pv < alpha, pv, observed - reference, what)
        };
        ev.flagged = flagged;
        ev.score = 1.0 - p_value;
        let agrees = ev.crossed && flagged;
        let tkey = TrackKey {
            profile: w.key.profile.clone(),
            role: w.key.role,
            metric,
            basis: Basis::Production,
        };
        let m = self.config.agreement.m;
        let track = self.tracks.entry(tkey).or_insert_with(|| Track {
            detector: None,
            recent: VecDeque::new(),
        });
        ev.agreeing = track.push(agrees, m);
        if agrees && ev.agreeing >= self.config.agreement.n {
            ev.status = Status::Regressed;
            ev.verdict = Some(Verdict {
                profile: ev.profile.clone(),
                role: ev.role,
                metric,
                basis: Basis::Production,
                window_start_ms: w.start_ms,
                window_end_ms: w.end_ms,
                baseline: reference,
                observed,
                change: rule.threshold.change(observed, reference),
                threshold: rule.threshold,
                effect_size: effect,
                p_value,
                detector: what,
                agreeing: ev.agreeing,
                of: m,
                requests: w.requests,
                trace_ids: self.trace_ids(w, metric),
            });
        } else {
            ev.status = Status::Normal;
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thresholds() {
        let up = Threshold::RiseRatio(0.2);
        assert!(up.crossed(120.0, 100.0));
        assert!(!up.crossed(119.0, 100.0));
        assert!(up.crossed(1.0, 0.0), "from nothing to something is a rise");
        assert!(!up.crossed(0.0, 0.0));
        let by = Threshold::RiseBy(0.01);
        assert!(by.crossed(0.021, 0.011));
        assert!(!by.crossed(0.015, 0.011));
        let down = Threshold::FallRatio(0.1);
        assert!(down.crossed(89.0, 100.0));
        assert!(!down.crossed(91.0, 100.0));
        assert_eq!(down.direction(), -1.0);
        assert_eq!(up.to_string(), "up 20%");
    }

    #[test]
    fn config_reads_from_json_and_is_checked() {
        let c: JudgeConfig = serde_json::from_str(
            r#"{"rules":[{"metric":"p90","threshold":{"rise_ratio":0.3}}],
                "agreement":{"n":3,"m":5},
                "detector":{"kind":"cusum","h":6.0}}"#,
        )
        .unwrap();
        assert_eq!(c.rules[0].metric, Metric::P90);
        assert_eq!(c.agreement, Agreement { n: 3, m: 5 });
        assert_eq!(c.min_requests, 20);
        assert!(Judge::new(c).is_ok());
        let bad = JudgeConfig {
            agreement: Agreement { n: 4, m: 3 },
            ..JudgeConfig::default()
        };
        assert!(
            Judge::new(bad)
                .unwrap_err()
                .to_string()
                .contains("agreement 4 of 3")
        );
        let bad = JudgeConfig {
            rules: vec![Rule {
                metric: Metric::Throughput,
                threshold: Threshold::FallRatio(2.0),
            }],
            ..JudgeConfig::default()
        };
        assert!(Judge::new(bad).is_err());
        assert!(serde_json::from_str::<JudgeConfig>(r#"{"rulez":[]}"#).is_err());
    }

    #[test]
    fn windows_without_traffic_are_insufficient_for_latency() {
        let mut j = Judge::new(JudgeConfig::default()).unwrap();
        let key = crate::window::WindowKey::new(Role::Shadow, "s", "p");
        let w = Window::empty(key, 0, 10_000, 2).unwrap();
        let evs = j.observe(&[w]);
        let p99 = evs
            .iter()
            .find(|e| e.metric == Metric::P99 && e.basis == Basis::History)
            .unwrap();
        assert_eq!(p99.status, Status::Insufficient);
        // No production window: nothing to compare with.
        let prod = evs
            .iter()
            .find(|e| e.metric == Metric::P99 && e.basis == Basis::Production)
            .unwrap();
        assert_eq!(prod.status, Status::Insufficient);
        // Throughput is known (zero) and warming up.
        let tp = evs.iter().find(|e| e.metric == Metric::Throughput).unwrap();
        assert_eq!((tp.status, tp.observed), (Status::Warmup, Some(0.0)));
    }
}
