//! Shewhart individuals chart with the Western Electric rules.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Detector, Reference, ReferenceConfig, Score, check_positive};

/// Parameters of [`Shewhart`].
///
/// Each value is placed in reference standard deviations, `z`, and the four
/// Western Electric rules are checked on each side of the centre line, each with
/// its own zone boundary:
///
/// 1. one value beyond `zones[0]`;
/// 2. two of the last three beyond `zones[1]` (the current one among them);
/// 3. four of the last five beyond `zones[2]` (the current one among them);
/// 4. the last `run` values all beyond `zones[3]`.
///
/// The Western Electric handbook's zones are 3σ, 2σ, 1σ and the centre line with
/// a run of 8. Together those rules raise a false alarm every 92 points or so
/// on normal data (one in 128 runs of eight falls on one side by chance), which is
/// a false alarm every quarter hour at 10 s windows. The defaults keep the four
/// rules with wider zones (5σ, 3.25σ, 2.5σ, and rule 4 beyond 1.5σ instead of
/// on the centre line's side), for well under one false alarm in 10 000 windows
/// on the skewed noise of a p99. Rules 1 and 2 are the ones that can act
/// within three windows of a step; 3 and 4 catch smaller, lasting shifts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShewhartConfig {
    /// Zone boundaries of rules 1–4, in σ. Default [5.0, 3.25, 2.5, 1.5].
    pub zones: [f64; 4],
    /// Length of rule 4's run. Default 8.
    pub run: usize,
    pub reference: ReferenceConfig,
}

impl Default for ShewhartConfig {
    fn default() -> Self {
        ShewhartConfig {
            zones: [5.0, 3.25, 2.5, 1.5],
            run: 8,
            reference: ReferenceConfig::default(),
        }
    }
}

impl ShewhartConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for z in &self.zones[..3] {
            check_positive("shewhart", "zones", *z)?;
        }
        if !(self.zones[3] >= 0.0 && self.zones[3].is_finite()) {
            return Err(ConfigError::new(
                "shewhart",
                "zones[3]",
                self.zones[3],
                "a number >= 0",
            ));
        }
        if self.run < 2 {
            return Err(ConfigError::new(
                "shewhart",
                "run",
                self.run as f64,
                "at least 2",
            ));
        }
        self.reference.validate("shewhart")
    }
}

/// Shewhart chart with Western Electric rules; see [`ShewhartConfig`].
#[derive(Debug, Clone)]
pub struct Shewhart {
    config: ShewhartConfig,
    reference: Reference,
    /// Recent z values, newest last.
    recent: VecDeque<f64>,
    /// The rule (1–4) with the highest ratio on the last value, and that ratio.
    last: (u8, f64),
}

impl Shewhart {
    pub fn new(config: ShewhartConfig) -> Result<Shewhart, ConfigError> {
        config.validate()?;
        Ok(Shewhart {
            reference: Reference::new(config.reference),
            recent: VecDeque::with_capacity(config.run.max(5) + 1),
            config,
            last: (0, 0.0),
        })
    }

    /// The rule (1–4) that decided the last score, 0 before any.
    pub fn last_rule(&self) -> u8 {
        self.last.0
    }

    /// The ratio of each rule's statistic to its zone on one side (`side` ±1).
    fn ratios(&self, side: f64) -> [f64; 4] {
        let z = &self.config.zones;
        let w: Vec<f64> = self.recent.iter().rev().map(|v| v * side).collect();
        let cur = w[0];
        // Rule 2: the current value and the larger of the two before it.
        let r2 = match w.get(1..3) {
            Some(prev) => cur.min(prev[0].max(prev[1])) / z[1],
            None => 0.0,
        };
        // Rule 3: the current value and the third largest of the four before it.
        let r3 = match w.get(1..5) {
            Some(prev) => {
                let mut p = [prev[0], prev[1], prev[2], prev[3]];
                p.sort_by(|a, b| b.total_cmp(a));
                cur.min(p[2]) / z[2]
            }
            None => 0.0,
        };
        // Rule 4: the smallest of the run.
        let r4 = match w.get(..self.config.run) {
            Some(run) => {
                let low = run.iter().copied().fold(f64::INFINITY, f64::min);
                if z[3] > 0.0 {
                    low / z[3]
                } else if low > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        [cur / z[0], r2, r3, r4]
    }
}

impl Detector for Shewhart {
    fn name(&self) -> &'static str {
        "shewhart"
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
        let z = if z.is_nan() { 0.0 } else { z };
        self.recent.push_back(z);
        while self.recent.len() > self.config.run.max(5) {
            self.recent.pop_front();
        }
        let mut best = (0u8, 0.0f64);
        for side in [1.0, -1.0] {
            for (i, r) in self.ratios(side).into_iter().enumerate() {
                if r > best.1 {
                    best = (i as u8 + 1, r);
                }
            }
        }
        self.last = best;
        let score = Score::from_ratio(best.1);
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
        self.recent.clear();
        self.last = (0, 0.0);
    }

    fn explain(&self) -> String {
        let z = &self.config.zones;
        let what = match self.last.0 {
            1 => format!("rule 1, one value beyond {}σ", z[0]),
            2 => format!("rule 2, two of three beyond {}σ", z[1]),
            3 => format!("rule 3, four of five beyond {}σ", z[2]),
            4 => format!("rule 4, {} in a row beyond {}σ", self.config.run, z[3]),
            _ => "no rule".to_string(),
        };
        format!("shewhart: {what} (at {:.2} of its zone)", self.last.1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn primed(zones: [f64; 4]) -> Shewhart {
        let mut s = Shewhart::new(ShewhartConfig {
            zones,
            ..ShewhartConfig::default()
        })
        .unwrap();
        s.prime(0.0, 1.0);
        s
    }

    #[test]
    fn each_classic_rule_fires_on_its_pattern() {
        let classic = [3.0, 2.0, 1.0, 0.0];
        let cases: [(&[f64], u8); 4] = [
            (&[0.0, 3.5], 1),
            (&[2.5, 0.0, 2.5], 2),
            (&[1.5, 1.5, 0.0, 1.5, 1.5], 3),
            (&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 4),
        ];
        for (values, rule) in cases {
            let mut s = primed(classic);
            let mut last = Score::NONE;
            for v in values {
                last = s.update(*v);
            }
            assert!(last.flagged, "rule {rule}: {values:?}");
            assert_eq!(s.last_rule(), rule, "{values:?}");
            // Mirrored below the centre line.
            let mut s = primed(classic);
            for v in values {
                last = s.update(-v);
            }
            assert!(last.flagged, "rule {rule} below: {values:?}");
        }
        // Near misses.
        for values in [
            &[2.9][..],
            &[2.5, 0.0, 1.9],
            &[1.5, 1.5, 0.0, 0.5, 1.5],
            &[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.1, 0.5],
        ] {
            let mut s = primed(classic);
            let mut last = Score::NONE;
            for v in values {
                last = s.update(*v);
            }
            assert!(!last.flagged, "{values:?}");
        }
    }
}
