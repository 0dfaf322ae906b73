//! Several detectors voting.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Detector, DetectorSpec, Score, all_single};

/// How an [`Ensemble`] combines its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Flag when more than half of the members flag; the score is the
    /// (⌊n/2⌋+1)-th highest member score, so it crosses 0.5 exactly when a
    /// majority does.
    #[default]
    Majority,
    /// Flag when any member flags; the score is the highest.
    Any,
    /// Flag when every member flags; the score is the lowest.
    All,
}

/// Parameters of [`Ensemble`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleConfig {
    /// The members. Default: moving-average, ewma, cusum, shewhart and
    /// holt-winters, each with its defaults.
    pub members: Vec<DetectorSpec>,
    /// Default majority.
    pub combine: Combine,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            members: all_single(),
            combine: Combine::Majority,
        }
    }
}

impl EnsembleConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            return Err(ConfigError::new(
                "ensemble",
                "members",
                0.0,
                "at least one member",
            ));
        }
        for m in &self.members {
            m.validate()?;
        }
        Ok(())
    }
}

/// Detectors combined by a vote; see [`Combine`].
#[derive(Debug)]
pub struct Ensemble {
    combine: Combine,
    members: Vec<Box<dyn Detector>>,
    last: Vec<Score>,
    sorted: Vec<f64>,
}

impl Ensemble {
    pub fn new(config: EnsembleConfig) -> Result<Ensemble, ConfigError> {
        config.validate()?;
        let members = config
            .members
            .iter()
            .map(|m| m.build())
            .collect::<Result<Vec<_>, _>>()?;
        let n = members.len();
        Ok(Ensemble {
            combine: config.combine,
            members,
            last: vec![Score::NONE; n],
            sorted: Vec::with_capacity(n),
        })
    }

    /// The members' names and their scores for the last value.
    pub fn last_scores(&self) -> impl Iterator<Item = (&'static str, Score)> + '_ {
        self.members
            .iter()
            .map(|m| m.name())
            .zip(self.last.iter().copied())
    }
}

impl Detector for Ensemble {
    fn name(&self) -> &'static str {
        "ensemble"
    }

    fn update(&mut self, x: f64) -> Score {
        self.sorted.clear();
        for (m, slot) in self.members.iter_mut().zip(self.last.iter_mut()) {
            *slot = m.update(x);
            self.sorted.push(slot.score);
        }
        let n = self.sorted.len();
        let flags = self.last.iter().filter(|s| s.flagged).count();
        self.sorted.sort_by(|a, b| b.total_cmp(a));
        let (score, flagged) = match self.combine {
            Combine::Majority => (self.sorted[n / 2], flags > n / 2),
            Combine::Any => (self.sorted[0], flags > 0),
            Combine::All => (self.sorted[n - 1], flags == n),
        };
        Score { score, flagged }
    }

    fn skip(&mut self, missing: u64) {
        self.members.iter_mut().for_each(|m| m.skip(missing));
    }

    fn prime(&mut self, mean: f64, variance: f64) {
        self.members
            .iter_mut()
            .for_each(|m| m.prime(mean, variance));
    }

    fn reset(&mut self) {
        self.members.iter_mut().for_each(|m| m.reset());
        self.last.iter_mut().for_each(|s| *s = Score::NONE);
    }

    fn explain(&self) -> String {
        let flagged: Vec<String> = self
            .members
            .iter()
            .zip(&self.last)
            .filter(|(_, s)| s.flagged)
            .map(|(m, _)| m.explain())
            .collect();
        if flagged.is_empty() {
            format!("ensemble ({:?}): no member flags", self.combine).to_lowercase()
        } else {
            format!(
                "ensemble: {} of {} flag: {}",
                flagged.len(),
                self.members.len(),
                flagged.join("; ")
            )
        }
    }
}
