//! Finding a target's capacity: the highest offered rate at which it keeps its
//! SLO and serves what it is offered.
//!
//! The search steps the rate up from a baseline (× 1, 1.5, 2, 3, 4, 6, 8, ...)
//! until a step fails, then bisects between the last good and the first bad
//! rate until they are within `precision` of each other. A step is good when
//! the SLO held *and* the target served about what it was offered
//! (`achieved ≥ efficiency × offered`): past saturation an open-model generator
//! keeps offering while the target falls behind, and the gap shows before
//! latency percentiles do on a short step.
//!
//! This is the decision logic only; the caller runs each step (the binary does
//! it with `umbra-load`'s open-model executor) and reports a [`StepResult`].

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How the search proceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// The first step's rate (the profile set's baseline, typically).
    pub start_rps: f64,
    /// Multipliers on `start_rps` for the ramp, increasing; after the last one
    /// each step doubles the previous rate.
    pub multipliers: Vec<f64>,
    /// No step goes above this rate; when it passes, the capacity is "at least" it.
    pub max_rps: Option<f64>,
    /// Bisection stops when `first bad / last good − 1 ≤ precision`. Default 0.05.
    pub precision: f64,
    /// A step is good only when `achieved ≥ efficiency × offered`. Default 0.95.
    pub efficiency: f64,
    /// Most steps in all (the search ends with what it has). Default 30.
    pub max_steps: usize,
}

/// The ramp's multipliers: the baseline × 1, 1.5, 2, 3, ... as in the issue.
pub const DEFAULT_MULTIPLIERS: [f64; 9] = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];

impl SearchConfig {
    pub fn new(start_rps: f64) -> SearchConfig {
        SearchConfig {
            start_rps,
            multipliers: DEFAULT_MULTIPLIERS.to_vec(),
            max_rps: None,
            precision: 0.05,
            efficiency: 0.95,
            max_steps: 30,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        const S: &str = "capacity";
        if !(self.start_rps.is_finite() && self.start_rps > 0.0) {
            return Err(Error::config(
                S,
                "start_rps",
                self.start_rps,
                "expected a rate > 0",
            ));
        }
        let increasing = self.multipliers.windows(2).all(|w| w[1] > w[0]);
        if self.multipliers.is_empty()
            || !increasing
            || self
                .multipliers
                .iter()
                .any(|m| !(m.is_finite() && *m > 0.0))
        {
            return Err(Error::config(
                S,
                "multipliers",
                format!("{:?}", self.multipliers),
                "expected increasing numbers > 0, like 1, 1.5, 2, 3",
            ));
        }
        if let Some(m) = self.max_rps
            && !(m.is_finite() && m >= self.start_rps)
        {
            return Err(Error::config(
                S,
                "max_rps",
                m,
                "expected a rate >= the start rate",
            ));
        }
        if !(self.precision > 0.0 && self.precision < 1.0) {
            return Err(Error::config(
                S,
                "precision",
                self.precision,
                "expected 0 < precision < 1 (0.05 is 5%)",
            ));
        }
        if !(self.efficiency > 0.0 && self.efficiency <= 1.0) {
            return Err(Error::config(
                S,
                "efficiency",
                self.efficiency,
                "expected 0 < efficiency <= 1",
            ));
        }
        if self.max_steps < 2 {
            return Err(Error::config(
                S,
                "max_steps",
                self.max_steps,
                "expected at least 2",
            ));
        }
        Ok(())
    }
}

/// What one load step measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Transport errors and 5xx, percent of requests.
    pub error_percent: f64,
    /// Arrivals the generator dropped (too many outstanding), percent of arrivals.
    pub dropped_percent: f64,
    /// Whether every SLO objective held.
    pub slo_passed: bool,
    /// The objectives that failed, with what was observed (`p99<300ms: 812 ms`).
    pub slo_failures: Vec<String>,
}

/// Which part of the search a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stepping up from the start rate.
    Ramp,
    /// The start rate already failed: halving until a rate holds.
    Down,
    /// Between the last good and the first bad rate.
    Bisect,
}

/// One point of the capacity curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityPoint {
    pub phase: Phase,
    #[serde(flatten)]
    pub step: StepResult,
    /// SLO held and achieved ≈ offered.
    pub ok: bool,
    /// Why the step is not ok; empty when it is.
    pub why: String,
}

/// The search's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The highest offered rate that was good; None when none was.
    pub capacity_rps: Option<f64>,
    /// The lowest rate that failed; None when none did (the capacity is then a
    /// lower bound: the search stopped at `max_rps` or `max_steps`).
    pub first_bad_rps: Option<f64>,
    /// Good and bad rates are within the precision: the knee is found.
    pub converged: bool,
    /// One sentence on how the search ended.
    pub summary: String,
    /// Every step in the order it ran.
    pub curve: Vec<CapacityPoint>,
}

/// The search, as a state machine: ask [`next_rate`](Self::next_rate), run a
/// step at that rate, [`record`](Self::record) it, until `next_rate` is None.
#[derive(Debug, Clone)]
pub struct CapacitySearch {
    config: SearchConfig,
    curve: Vec<CapacityPoint>,
    good: Option<f64>,
    bad: Option<f64>,
    /// Ramp position (index into the multipliers, then doublings).
    ramp: usize,
    ramp_done: bool,
}

/// Halvings tried when the start rate already fails.
const MAX_HALVINGS: usize = 5;

impl CapacitySearch {
    pub fn new(config: SearchConfig) -> Result<CapacitySearch, Error> {
        config.validate()?;
        Ok(CapacitySearch {
            config,
            curve: Vec::new(),
            good: None,
            bad: None,
            ramp: 0,
            ramp_done: false,
        })
    }

    fn ramp_rate(&self, i: usize) -> f64 {
        let m = &self.config.multipliers;
        let base = self.config.start_rps;
        match m.get(i) {
            Some(x) => base * x,
            None => {
                let last = m.last().copied().unwrap_or(1.0);
                base * last * 2f64.powi((i + 1 - m.len()) as i32)
            }
        }
    }

    fn phase(&self) -> Phase {
        match (self.good, self.bad) {
            (None, Some(_)) => Phase::Down,
            (_, Some(_)) => Phase::Bisect,
            _ => Phase::Ramp,
        }
    }

    /// The rate of the next step, or None when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.curve.len() >= self.config.max_steps {
            return None;
        }
        match (self.good, self.bad) {
            (Some(g), Some(b)) => (b / g - 1.0 > self.config.precision).then_some((g + b) / 2.0),
            (None, Some(b)) => {
                let downs = self.curve.iter().filter(|p| p.phase == Phase::Down).count();
                (downs < MAX_HALVINGS).then_some(b / 2.0)
            }
            (_, None) => {
                if self.ramp_done {
                    return None;
                }
                let rate = self.ramp_rate(self.ramp);
                match self.config.max_rps {
                    // Past the cap: one step at the cap itself, unless it ran already.
                    Some(max) if rate > max => {
                        let tried = self.good.is_some_and(|g| g >= max);
                        (!tried).then_some(max)
                    }
                    _ => Some(rate),
                }
            }
        }
    }

    /// Records the step just run at `next_rate()`.
    pub fn record(&mut self, step: StepResult) -> Result<&CapacityPoint, Error> {
        let numbers = [
            step.offered_rps,
            step.achieved_rps,
            step.p50_ms,
            step.p99_ms,
            step.error_percent,
            step.dropped_percent,
        ];
        if numbers.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || step.offered_rps <= 0.0 {
            return Err(Error::BadStep {
                offered_rps: step.offered_rps,
                reason: format!(
                    "rates, latencies and percentages must be numbers >= 0: {numbers:?}"
                ),
            });
        }
        let phase = self.phase();
        let mut why = step.slo_failures.join(", ");
        if !step.slo_passed && why.is_empty() {
            why = "SLO failed".into();
        }
        let served = step.achieved_rps / step.offered_rps;
        if served < self.config.efficiency {
            if !why.is_empty() {
                why.push_str("; ");
            }
            why.push_str(&format!(
                "served {:.1} of {:.1} req/s ({:.0}%, below {:.0}%)",
                step.achieved_rps,
                step.offered_rps,
                served * 100.0,
                self.config.efficiency * 100.0
            ));
        }
        let ok = why.is_empty();
        let rate = step.offered_rps;
        if ok {
            self.good = Some(self.good.map_or(rate, |g| g.max(rate)));
        } else {
            self.bad = Some(self.bad.map_or(rate, |b| b.min(rate)));
        }
        if phase == Phase::Ramp {
            self.ramp += 1;
            if self.config.max_rps.is_some_and(|m| rate >= m) {
                self.ramp_done = true;
            }
        }
        self.curve.push(CapacityPoint {
            phase,
            step,
            ok,
            why,
        });
        self.curve.last().ok_or(Error::BadStep {
            offered_rps: rate,
            reason: "not recorded".into(),
        })
    }

    /// The answer so far (the final one once `next_rate` is None).
    pub fn result(&self) -> Capacity {
        let converged = match (self.good, self.bad) {
            (Some(g), Some(b)) => b / g - 1.0 <= self.config.precision,
            _ => false,
        };
        let summary = match (self.good, self.bad) {
            (Some(g), Some(b)) if converged => format!(
                "capacity {g:.1} req/s: the SLO holds there and fails at {b:.1} req/s ({:.1}% above)",
                (b / g - 1.0) * 100.0
            ),
            (Some(g), Some(b)) => format!(
                "capacity between {g:.1} and {b:.1} req/s: the search ran out of steps before narrowing it further"
            ),
            (Some(g), None) => {
                format!("capacity at least {g:.1} req/s: the SLO held at every rate tried")
            }
            (None, Some(b)) => {
                format!("capacity below {b:.1} req/s: the SLO failed at every rate tried")
            }
            (None, None) => "no step has run".to_string(),
        };
        Capacity {
            capacity_rps: self.good,
            first_bad_rps: self.bad,
            converged,
            summary,
            curve: self.curve.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A target that serves up to `cap` req/s and passes its SLO below `slo_at`.
    fn step(rate: f64, cap: f64, slo_at: f64) -> StepResult {
        StepResult {
            offered_rps: rate,
            achieved_rps: rate.min(cap),
            p50_ms: 5.0,
            p99_ms: if rate < slo_at { 50.0 } else { 900.0 },
            error_percent: 0.0,
            dropped_percent: 0.0,
            slo_passed: rate < slo_at,
            slo_failures: if rate < slo_at {
                vec![]
            } else {
                vec!["p99<300ms: 900 ms".into()]
            },
        }
    }

    fn search(config: SearchConfig, cap: f64, slo_at: f64) -> Capacity {
        let mut s = CapacitySearch::new(config).unwrap();
        while let Some(r) = s.next_rate() {
            s.record(step(r, cap, slo_at)).unwrap();
        }
        s.result()
    }

    #[test]
    fn ramps_then_bisects_to_the_knee() {
        let c = search(SearchConfig::new(100.0), 437.0, 1e9);
        let got = c.capacity_rps.unwrap();
        assert!(c.converged, "{c:?}");
        assert!((437.0 * 0.95 / 1.05..=437.0 / 0.95).contains(&got), "{got}");
        let ramp: Vec<f64> = c
            .curve
            .iter()
            .filter(|p| p.phase == Phase::Ramp)
            .map(|p| p.step.offered_rps)
            .collect();
        assert_eq!(ramp, vec![100.0, 150.0, 200.0, 300.0, 400.0, 600.0]);
        assert!(c.curve.iter().skip(6).all(|p| p.phase == Phase::Bisect));
        assert!(c.summary.starts_with("capacity "), "{}", c.summary);
    }

    #[test]
    fn an_slo_failure_alone_marks_a_step_bad() {
        let c = search(SearchConfig::new(100.0), 1e9, 250.0);
        let got = c.capacity_rps.unwrap();
        assert!((250.0 / 1.05..250.0).contains(&got), "{got}");
        let bad = c.curve.iter().find(|p| !p.ok).unwrap();
        assert!(bad.why.contains("p99<300ms"), "{}", bad.why);
    }

    #[test]
    fn a_failing_start_searches_downwards_and_a_cap_bounds_the_ramp() {
        let c = search(SearchConfig::new(100.0), 30.0, 1e9);
        let got = c.capacity_rps.unwrap();
        assert!(got <= 30.0 / 0.95 && got > 25.0, "{c:?}");
        assert_eq!(c.curve[1].phase, Phase::Down);

        let c = search(
            SearchConfig {
                max_rps: Some(250.0),
                ..SearchConfig::new(100.0)
            },
            1e9,
            1e9,
        );
        let rates: Vec<f64> = c.curve.iter().map(|p| p.step.offered_rps).collect();
        assert_eq!(rates, vec![100.0, 150.0, 200.0, 250.0]);
        assert!(
            !c.converged && c.summary.contains("at least 250.0"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn bad_steps_and_configs_are_refused() {
        let mut s = CapacitySearch::new(SearchConfig::new(10.0)).unwrap();
        let mut st = step(10.0, 100.0, 1e9);
        st.p99_ms = f64::NAN;
        assert!(s.record(st).is_err());
        let e = CapacitySearch::new(SearchConfig {
            multipliers: vec![1.0, 3.0, 2.0],
            ..SearchConfig::new(10.0)
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("capacity.multipliers") && e.contains("increasing"),
            "{e}"
        );
    }
}
