//! Performance-based weights for the production servers.
//!
//! Each interval, every server that answered enough requests gets a score from
//! what it did:
//!
//! ```text
//! score_i = (1 / latency_i at the profile mix) × (1 − error rate_i) × headroom_i ^ cpu_weight
//! ```
//!
//! `1 / mean latency` is what a server can serve per unit of concurrency
//! (Little's law), so a server twice as slow gets half the score and, by the rule
//! `weight_i = score_i / Σ scores × 100`, half the traffic of a fast one. Latency is
//! taken *at the profile mix*: each profile's mean latency on the server, weighted
//! by one mix shared by all servers, so a server that happened to receive more of
//! the heavy requests is not marked down for it. Headroom is `1 − CPU
//! utilisation` (at least 0.05) when the server's CPU is known.
//!
//! Raw scores are noisy and weights act on production, so the rule is made safe:
//!
//! - **smoothing**: a server's score is an exponentially weighted mean over
//!   intervals (weight `alpha` for the newest);
//! - **hold**: a server with fewer than `min_samples` requests in the interval
//!   keeps its score; when no server has enough, weights do not move at all;
//! - **ejection**: a server whose error rate reaches `eject_error_rate` gets
//!   weight 0 at once for `eject_intervals` intervals (doubling on each ejection
//!   in a row, up to 8 times), then comes back at the floor and climbs by
//!   `max_step`; the last servers standing are never ejected (when all fail,
//!   traffic somewhere beats traffic nowhere);
//! - **floor**: no healthy server gets less than `floor` percent, so each keeps
//!   enough traffic to be measured and to recover;
//! - **rate limit**: no weight moves by more than `max_step` points an interval.

mod spread;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::export::ExportConfig;
use crate::probes::ProbeConfig;

/// The `[control.weights]` settings (TOML; every key optional).
///
/// ```toml
/// interval = "10s"         # how often weights are recomputed
/// alpha = 0.5              # weight of the newest interval in a server's smoothed score
/// floor = 5.0              # least weight (percent) of a healthy server
/// max_step = 10.0          # most a weight moves in one interval (percentage points)
/// min_samples = 20         # fewest requests in an interval for a score to move
/// eject_error_rate = 0.5   # error rate (0..1) at which a server is ejected
/// eject_intervals = 3      # intervals an ejected server rests (doubling when ejected again)
/// cpu_weight = 1.0         # exponent on CPU headroom; 0 ignores CPU
/// [control.weights.mix]    # profile → weight for "latency at the mix"; empty: the interval's own mix
/// p-1a2b3c4d = 0.7
/// [control.weights.probes] # shadow probes (crate::probes::ProbeConfig); off without the table
/// rate = 2.0
/// [[control.weights.export]] # exporters to other balancers (crate::ExportConfig)
/// kind = "nginx"
/// file = "/etc/nginx/conf.d/umbra-upstream.conf"
/// upstream = "app"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightConfig {
    /// How often the caller should call [`WeightController::step`]. Default 10 s.
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    /// Weight of the newest interval's score in the smoothed score, in (0, 1];
    /// 1 means no smoothing. Default 0.5.
    pub alpha: f64,
    /// Least weight of a server that is not ejected, in percent, in [0, 100).
    /// When `servers × floor ≥ 100` all servers get equal weights. Default 5.
    pub floor: f64,
    /// Most any weight may change in one interval, in percentage points, in
    /// (0, 100]. Ejection is exempt: a failing server leaves at once. Default 10.
    pub max_step: f64,
    /// Fewest requests a server must have finished in an interval for its score
    /// to move (and for it to be ejected). Default 20. A server at the floor sees
    /// `floor`% of the traffic, so keep `rate × interval × floor / 100` above
    /// this, or that server is held (and never climbs) until traffic grows.
    pub min_samples: u64,
    /// Error rate (transport errors and 5xx over requests), in (0, 1], at or above
    /// which a server is ejected. Default 0.5.
    pub eject_error_rate: f64,
    /// Intervals an ejected server gets no traffic before it is tried again at
    /// the floor; doubled for each ejection in a row (at most 8×). Default 3.
    pub eject_intervals: u32,
    /// Exponent on CPU headroom (`1 − utilisation`) in the score; 0 ignores CPU.
    /// Default 1.
    pub cpu_weight: f64,
    /// Profile mix for "latency at the mix", by profile id: relative weights.
    /// Empty (the default): the mix of all servers' requests in the interval.
    pub mix: BTreeMap<String, f64>,
    /// `[control.weights.probes]`: synthetic requests sent to every server and
    /// blended with live measurements ([`crate::probes`]). None: live only.
    /// The controller itself does not read it; the caller runs the probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbeConfig>,
    /// `[[control.weights.export]]`: balancers the weights are pushed to after
    /// each change, besides the caller's own. The controller does not read it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export: Vec<ExportConfig>,
}

impl Default for WeightConfig {
    fn default() -> Self {
        WeightConfig {
            interval: Duration::from_secs(10),
            alpha: 0.5,
            floor: 5.0,
            max_step: 10.0,
            min_samples: 20,
            eject_error_rate: 0.5,
            eject_intervals: 3,
            cpu_weight: 1.0,
            mix: BTreeMap::new(),
            probes: None,
            export: Vec::new(),
        }
    }
}

const SECTION: &str = "control.weights";

impl WeightConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, value: f64, reason: &str| Err(Error::config(SECTION, key, value, reason));
        if self.interval.is_zero() {
            return Err(Error::config(
                SECTION,
                "interval",
                "\"0s\"",
                "must be longer than zero",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return bad("alpha", self.alpha, "expected 0 < alpha <= 1");
        }
        if !(self.floor >= 0.0 && self.floor < 100.0) {
            return bad(
                "floor",
                self.floor,
                "expected a percentage, 0 <= floor < 100",
            );
        }
        if !(self.max_step > 0.0 && self.max_step <= 100.0) {
            return bad(
                "max_step",
                self.max_step,
                "expected 0 < max_step <= 100 (points)",
            );
        }
        if self.min_samples == 0 {
            return bad("min_samples", 0.0, "expected at least 1 request");
        }
        if !(self.eject_error_rate > 0.0 && self.eject_error_rate <= 1.0) {
            return bad(
                "eject_error_rate",
                self.eject_error_rate,
                "expected a rate 0 < eject_error_rate <= 1 (0.5 is 50%)",
            );
        }
        if self.eject_intervals == 0 {
            return bad("eject_intervals", 0.0, "expected at least 1 interval");
        }
        if !(self.cpu_weight >= 0.0 && self.cpu_weight.is_finite()) {
            return bad("cpu_weight", self.cpu_weight, "expected a number >= 0");
        }
        for (profile, w) in &self.mix {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(Error::config(
                    SECTION,
                    "mix",
                    format!("{{ {profile:?} = {w} }}"),
                    "a profile's weight must be a number >= 0",
                ));
            }
        }
        if !self.mix.is_empty() && self.mix.values().sum::<f64>() <= 0.0 {
            return Err(Error::config(
                SECTION,
                "mix",
                "(all zero)",
                "at least one profile needs a weight above 0",
            ));
        }
        if let Some(p) = &self.probes {
            p.validate()?;
        }
        for (i, e) in self.export.iter().enumerate() {
            e.validate(i)?;
        }
        Ok(())
    }
}

/// What one server did in one interval, as the proxy measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The server's name, as given to [`WeightController::new`] (`host:port`).
    pub server: String,
    /// Requests that finished in the interval (answered or failed).
    pub requests: u64,
    /// Of those, transport errors and 5xx answers.
    pub errors: u64,
    /// Mean latency per profile of the answered requests.
    pub profiles: Vec<ProfileLatency>,
    /// CPU utilisation in [0, 1] (cores in use over cores the server has), when known.
    pub cpu: Option<f64>,
}

/// One profile's requests on one server in one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileLatency {
    pub profile: String,
    pub requests: u64,
    pub mean_ms: f64,
}

impl Observation {
    pub fn new(server: impl Into<String>, requests: u64, errors: u64) -> Observation {
        Observation {
            server: server.into(),
            requests,
            errors,
            ..Observation::default()
        }
    }

    /// Adds a profile's latency (builder style).
    pub fn profile(mut self, profile: impl Into<String>, requests: u64, mean_ms: f64) -> Self {
        self.profiles.push(ProfileLatency {
            profile: profile.into(),
            requests,
            mean_ms,
        });
        self
    }

    /// Sets the CPU utilisation (builder style).
    pub fn cpu(mut self, utilisation: f64) -> Self {
        self.cpu = Some(utilisation);
        self
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::BadObservation {
                server: self.server.clone(),
                reason,
            })
        };
        if self.errors > self.requests {
            return bad(format!(
                "{} errors out of {} requests",
                self.errors, self.requests
            ));
        }
        for p in &self.profiles {
            if p.requests > 0 && !(p.mean_ms.is_finite() && p.mean_ms > 0.0) {
                return bad(format!(
                    "profile {:?}: mean latency {} ms is not a positive number",
                    p.profile, p.mean_ms
                ));
            }
        }
        if let Some(c) = self.cpu
            && !(c.is_finite() && c >= 0.0)
        {
            return bad(format!("CPU utilisation {c} is not a number >= 0"));
        }
        Ok(())
    }

    /// Mean latency weighted by `mix`; by the server's own requests when it
    /// served none of the mix's profiles. None without any latency.
    fn latency_at(&self, mix: &BTreeMap<String, f64>) -> Option<f64> {
        let weighted = |weight: &dyn Fn(&ProfileLatency) -> f64| {
            let (num, den) =
                self.profiles
                    .iter()
                    .filter(|p| p.requests > 0)
                    .fold((0.0, 0.0), |(n, d), p| {
                        let w = weight(p);
                        (n + w * p.mean_ms, d + w)
                    });
            (den > 0.0).then(|| num / den)
        };
        weighted(&|p| mix.get(&p.profile).copied().unwrap_or(0.0))
            .or_else(|| weighted(&|p| p.requests as f64))
    }

    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Where a server stands after an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Measured this interval; its score moved.
    Scored,
    /// Too few requests this interval (or no latency): its score was kept.
    Held,
    /// Failing: weight 0 while it rests.
    Ejected,
    /// Back from ejection this interval, entering at the floor.
    Readmitted,
    /// Failing like an ejected server, but kept in because every other server is
    /// out too.
    Failing,
}

/// One server's weight and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerWeight {
    pub server: String,
    /// Percent of traffic; the weights of a [`Weights`] add up to 100.
    pub weight: f64,
    pub state: ServerState,
    /// The smoothed score (requests per second per unit of concurrency, after
    /// error and headroom factors); None before the first measurement.
    pub score: Option<f64>,
    /// This interval's latency at the mix, in ms, when measured.
    pub latency_ms: Option<f64>,
    /// This interval's error rate, when the server had requests.
    pub error_rate: Option<f64>,
}

/// The controller's output: one weight per server, in the servers' order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// How many intervals the controller has run (0 for the initial weights).
    pub interval: u64,
    pub servers: Vec<ServerWeight>,
}

impl Weights {
    /// A server's weight in percent.
    pub fn get(&self, server: &str) -> Option<f64> {
        self.servers
            .iter()
            .find(|s| s.server == server)
            .map(|s| s.weight)
    }

    /// Whole weights adding up to 100 (largest remainder), for balancers that
    /// take integers (the proxy's pool, nginx, HAProxy). A server that is not
    /// ejected never rounds to 0.
    pub fn rounded(&self) -> Vec<(String, u32)> {
        let w: Vec<f64> = self.servers.iter().map(|s| s.weight).collect();
        let keep: Vec<bool> = self
            .servers
            .iter()
            .map(|s| s.state != ServerState::Ejected)
            .collect();
        self.servers
            .iter()
            .map(|s| s.server.clone())
            .zip(spread::round(&w, &keep))
            .collect()
    }
}

/// What the controller remembers about one server.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    weight: f64,
    score: Option<f64>,
    state: ServerState,
    /// Intervals left out, while ejected.
    rest: u32,
    /// Ejections in a row (reset by a clean measured interval).
    ejections: u32,
    latency_ms: Option<f64>,
    error_rate: Option<f64>,
}

impl Slot {
    fn new(name: String, weight: f64) -> Slot {
        Slot {
            name,
            weight,
            score: None,
            state: ServerState::Held,
            rest: 0,
            ejections: 0,
            latency_ms: None,
            error_rate: None,
        }
    }
}

/// Turns per-server observations, one interval at a time, into [`Weights`].
///
/// Pure logic: the caller measures, calls [`step`](Self::step) every
/// `config.interval`, and hands the result to the pool or to a
/// [`crate::WeightsExporter`].
#[derive(Debug, Clone)]
pub struct WeightController {
    config: WeightConfig,
    slots: Vec<Slot>,
    interval: u64,
}

impl WeightController {
    /// A controller for `servers` (names such as `host:port`), starting from equal weights.
    pub fn new<S: Into<String>>(
        config: WeightConfig,
        servers: impl IntoIterator<Item = S>,
    ) -> Result<WeightController, Error> {
        config.validate()?;
        let names: Vec<String> = servers.into_iter().map(Into::into).collect();
        check_names(&names)?;
        let each = spread::TOTAL / names.len() as f64;
        Ok(WeightController {
            slots: names.into_iter().map(|n| Slot::new(n, each)).collect(),
            config,
            interval: 0,
        })
    }

    pub fn config(&self) -> &WeightConfig {
        &self.config
    }

    /// The current weights.
    pub fn weights(&self) -> Weights {
        Weights {
            interval: self.interval,
            servers: self
                .slots
                .iter()
                .map(|s| ServerWeight {
                    server: s.name.clone(),
                    weight: s.weight,
                    state: s.state,
                    score: s.score,
                    latency_ms: s.latency_ms,
                    error_rate: s.error_rate,
                })
                .collect(),
        }
    }

    /// Changes the server list (a configuration reload): servers kept keep their
    /// state, new ones enter at the floor, removed ones are forgotten; weights are
    /// then spread to add up to 100 again.
    pub fn set_servers<S: Into<String>>(
        &mut self,
        servers: impl IntoIterator<Item = S>,
    ) -> Result<(), Error> {
        let names: Vec<String> = servers.into_iter().map(Into::into).collect();
        check_names(&names)?;
        let entry = self.entry_weight(names.len());
        let mut old = std::mem::take(&mut self.slots);
        let mut new = Vec::new();
        self.slots = names
            .into_iter()
            .map(|n| match old.iter().position(|s| s.name == n) {
                Some(i) => old.swap_remove(i),
                None => {
                    new.push(n.clone());
                    Slot::new(n, entry)
                }
            })
            .collect();
        self.respread(&new, entry);
        Ok(())
    }

    /// Runs one interval: scores, ejections and the new weights.
    ///
    /// Observations are matched to servers by name; a server without one is
    /// held. Nothing changes when an observation is wrong (unknown server,
    /// errors above requests, a latency that is not a positive number).
    pub fn step(&mut self, observations: &[Observation]) -> Result<Weights, Error> {
        for o in observations {
            o.check()?;
            if !self.slots.iter().any(|s| s.name == o.server) {
                return Err(Error::UnknownServer {
                    server: o.server.clone(),
                    known: self
                        .slots
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        self.interval += 1;
        let c = self.config.clone();
        let mix = if c.mix.is_empty() {
            pooled_mix(observations)
        } else {
            c.mix.clone()
        };
        let entry = self.entry_weight(self.slots.len());

        // Ejected servers rest; those whose rest is over come back at the floor.
        let mut back = Vec::new();
        for s in &mut self.slots {
            if s.state == ServerState::Ejected {
                s.rest = s.rest.saturating_sub(1);
                if s.rest == 0 {
                    s.state = ServerState::Readmitted;
                    back.push(s.name.clone());
                }
            }
        }

        // Scores, and who would be ejected.
        let mut failing = Vec::new();
        let mut scored = false;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.state == ServerState::Ejected {
                continue;
            }
            let obs = observations.iter().find(|o| o.server == s.name);
            s.latency_ms = obs.and_then(|o| o.latency_at(&mix));
            s.error_rate = obs.filter(|o| o.requests > 0).map(Observation::error_rate);
            let Some(o) = obs.filter(|o| o.requests >= c.min_samples) else {
                if s.state != ServerState::Readmitted {
                    s.state = ServerState::Held;
                }
                continue;
            };
            let err = o.error_rate();
            if err >= c.eject_error_rate {
                failing.push(i);
                continue;
            }
            let Some(latency) = s.latency_ms else {
                if s.state != ServerState::Readmitted {
                    s.state = ServerState::Held;
                }
                continue;
            };
            let headroom = o.cpu.map_or(1.0, |u| (1.0 - u.min(1.0)).max(0.05));
            let raw = (1.0 / latency) * (1.0 - err) * headroom.powf(c.cpu_weight);
            s.score = Some(match s.score {
                Some(prev) => c.alpha * raw + (1.0 - c.alpha) * prev,
                None => raw,
            });
            s.state = ServerState::Scored;
            s.ejections = 0;
            scored = true;
        }
        let others_in = self
            .slots
            .iter()
            .enumerate()
            .any(|(i, s)| s.state != ServerState::Ejected && !failing.contains(&i));
        for i in failing {
            let s = &mut self.slots[i];
            if others_in {
                s.state = ServerState::Ejected;
                s.ejections = s.ejections.saturating_add(1);
                let doubling = 1u32 << (s.ejections - 1).min(3);
                s.rest = c.eject_intervals.saturating_mul(doubling);
                s.score = None; // its old performance no longer speaks for it
                s.weight = 0.0;
            } else {
                s.state = ServerState::Failing;
            }
        }

        // Where the weights were, with ejections and entries folded in: built from
        // the weights this interval started with, so a server readmitted and
        // ejected again in the same interval leaves the others where they were.
        let entering: Vec<Option<f64>> = self
            .slots
            .iter()
            .filter(|s| s.state != ServerState::Ejected)
            .map(|s| {
                (s.state == ServerState::Readmitted && back.contains(&s.name)).then_some(entry)
            })
            .collect();
        let mut from = self.active_weights();
        spread::fix(&mut from, &entering);
        spread::apply_floor(&mut from, c.floor);
        let active: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.state != ServerState::Ejected)
            .collect();
        let known: Vec<f64> = active.iter().filter_map(|s| s.score).collect();
        // A server not measured yet counts as average until it is.
        let average = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let mut to: Vec<f64> = active.iter().map(|s| s.score.unwrap_or(average)).collect();
        // The target: shares of the scores, except that a readmitted server stays
        // where it entered until it is measured again.
        let pinned: Vec<Option<f64>> = active
            .iter()
            .zip(&from)
            .map(|(s, w)| (s.state == ServerState::Readmitted && s.score.is_none()).then_some(*w))
            .collect();
        spread::fix(&mut to, &pinned);
        spread::apply_floor(&mut to, c.floor);
        // Thin data everywhere: hold (apart from ejections and entries).
        let w = if scored {
            spread::step_toward(&from, &to, c.max_step)
        } else {
            from
        };
        self.store(&w);
        Ok(self.weights())
    }

    /// The weight a new or readmitted server starts from: the floor, or an equal
    /// share when the floor is 0.
    fn entry_weight(&self, n: usize) -> f64 {
        if self.config.floor > 0.0 {
            self.config.floor
        } else {
            spread::TOTAL / n.max(1) as f64
        }
    }

    /// Spreads 100 over the servers that are not ejected, `entering` ones at
    /// `entry` and the others in their current proportions, floor applied.
    fn respread(&mut self, entering: &[String], entry: f64) {
        let fixed: Vec<Option<f64>> = self
            .slots
            .iter()
            .filter(|s| s.state != ServerState::Ejected)
            .map(|s| entering.contains(&s.name).then_some(entry))
            .collect();
        let mut w = self.active_weights();
        spread::fix(&mut w, &fixed);
        spread::apply_floor(&mut w, self.config.floor);
        self.store(&w);
    }

    /// Weights of the servers that are not ejected, in order.
    fn active_weights(&self) -> Vec<f64> {
        self.slots
            .iter()
            .filter(|s| s.state != ServerState::Ejected)
            .map(|s| s.weight)
            .collect()
    }

    /// Stores `w` (one per server that is not ejected, in order); ejected get 0.
    fn store(&mut self, w: &[f64]) {
        let mut it = w.iter();
        for s in &mut self.slots {
            s.weight = if s.state == ServerState::Ejected {
                0.0
            } else {
                it.next().copied().unwrap_or(0.0)
            };
        }
    }
}

fn check_names(names: &[String]) -> Result<(), Error> {
    if names.is_empty() {
        return Err(Error::Servers("no servers to weigh".into()));
    }
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(Error::Servers(format!(
                "server {} has an empty name",
                i + 1
            )));
        }
        if names[..i].contains(n) {
            return Err(Error::Servers(format!("server {n:?} is listed twice")));
        }
    }
    Ok(())
}

/// The interval's own mix: every profile's share of all servers' requests.
fn pooled_mix(observations: &[Observation]) -> BTreeMap<String, f64> {
    let mut mix = BTreeMap::new();
    for p in observations.iter().flat_map(|o| &o.profiles) {
        *mix.entry(p.profile.clone()).or_insert(0.0) += p.requests as f64;
    }
    mix
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn obs(server: &str, requests: u64, errors: u64, ms: f64) -> Observation {
        Observation::new(server, requests, errors).profile("p", requests - errors, ms)
    }

    fn controller(config: WeightConfig) -> WeightController {
        WeightController::new(config, ["a", "b", "c"]).unwrap()
    }

    #[test]
    fn latency_is_compared_at_one_mix() {
        // Same per-profile latencies, opposite mixes: equal scores, although a
        // plain mean would make b look nine times as fast.
        let a = Observation::new("a", 100, 0)
            .profile("heavy", 90, 100.0)
            .profile("light", 10, 10.0);
        let b = Observation::new("b", 100, 0)
            .profile("heavy", 10, 100.0)
            .profile("light", 90, 10.0);
        let mut c = WeightController::new(WeightConfig::default(), ["a", "b"]).unwrap();
        let w = c.step(&[a, b]).unwrap();
        assert!((w.get("a").unwrap() - 50.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn thin_data_holds_the_weights() {
        let mut c = controller(WeightConfig::default());
        let before = c.weights();
        let w = c
            .step(&[
                obs("a", 5, 0, 10.0),
                obs("b", 5, 0, 10.0),
                obs("c", 5, 0, 50.0),
            ])
            .unwrap();
        assert!(w.servers.iter().all(|s| s.state == ServerState::Held));
        let same = before
            .servers
            .iter()
            .zip(&w.servers)
            .all(|(x, y)| (x.weight - y.weight).abs() < 1e-9);
        assert!(same, "{w:?}");
    }

    #[test]
    fn a_failing_server_is_ejected_then_tried_again_at_the_floor() {
        let mut c = controller(WeightConfig::default());
        let w = c
            .step(&[
                obs("a", 100, 0, 10.0),
                obs("b", 100, 0, 10.0),
                obs("c", 100, 80, 10.0),
            ])
            .unwrap();
        assert_eq!(w.servers[2].state, ServerState::Ejected);
        assert_eq!(w.get("c"), Some(0.0));
        assert!((w.get("a").unwrap() - 50.0).abs() < 1e-9, "{w:?}");
        let healthy = [obs("a", 100, 0, 10.0), obs("b", 100, 0, 10.0)];
        for _ in 0..2 {
            assert_eq!(c.step(&healthy).unwrap().get("c"), Some(0.0));
        }
        let w = c.step(&healthy).unwrap();
        assert_eq!(w.servers[2].state, ServerState::Readmitted);
        // Readmitted at the floor, then climbing by at most max_step.
        assert!((w.get("c").unwrap() - 5.0).abs() < 1e-9, "{w:?}");
        let w = c
            .step(&[
                obs("a", 100, 0, 10.0),
                obs("b", 100, 0, 10.0),
                obs("c", 30, 0, 10.0),
            ])
            .unwrap();
        assert!((w.get("c").unwrap() - 15.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn ejected_again_rests_twice_as_long() {
        let mut c = controller(WeightConfig {
            eject_intervals: 1,
            ..WeightConfig::default()
        });
        let bad = [
            obs("a", 100, 0, 10.0),
            obs("b", 100, 0, 10.0),
            obs("c", 100, 90, 10.0),
        ];
        let healthy = [obs("a", 100, 0, 10.0), obs("b", 100, 0, 10.0)];
        assert_eq!(c.step(&bad).unwrap().servers[2].state, ServerState::Ejected);
        assert_eq!(
            c.step(&healthy).unwrap().servers[2].state,
            ServerState::Readmitted
        );
        assert_eq!(c.step(&bad).unwrap().servers[2].state, ServerState::Ejected);
        // Second ejection in a row: two intervals out.
        assert_eq!(
            c.step(&healthy).unwrap().servers[2].state,
            ServerState::Ejected
        );
        assert_eq!(
            c.step(&healthy).unwrap().servers[2].state,
            ServerState::Readmitted
        );
    }

    #[test]
    fn the_last_servers_are_never_ejected() {
        let mut c = controller(WeightConfig::default());
        let w = c
            .step(&[
                obs("a", 100, 90, 10.0),
                obs("b", 100, 90, 10.0),
                obs("c", 100, 90, 10.0),
            ])
            .unwrap();
        assert!(
            w.servers.iter().all(|s| s.state == ServerState::Failing),
            "{w:?}"
        );
        assert!(w.servers.iter().all(|s| s.weight > 30.0), "{w:?}");
    }

    #[test]
    fn cpu_headroom_lowers_a_busy_server() {
        let mut c = WeightController::new(WeightConfig::default(), ["a", "b"]).unwrap();
        let w = c
            .step(&[
                obs("a", 100, 0, 10.0).cpu(0.2),
                obs("b", 100, 0, 10.0).cpu(0.6),
            ])
            .unwrap();
        // Headroom 0.8 against 0.4: 2:1, so 66.7/33.3; the move from 50 is 16.7
        // points, so the first interval stops at the 10-point cap.
        assert!((w.get("a").unwrap() - 60.0).abs() < 1e-9, "{w:?}");
        let w = c
            .step(&[
                obs("a", 100, 0, 10.0).cpu(0.2),
                obs("b", 100, 0, 10.0).cpu(0.6),
            ])
            .unwrap();
        assert!((w.get("a").unwrap() - 200.0 / 3.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn bad_observations_and_configs_name_what_is_wrong() {
        let mut c = controller(WeightConfig::default());
        let e = c.step(&[obs("z", 10, 0, 1.0)]).unwrap_err().to_string();
        assert!(e.contains("\"z\"") && e.contains("a, b, c"), "{e}");
        let e = c
            .step(&[Observation::new("a", 1, 2)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 errors out of 1"), "{e}");
        let e = c
            .step(&[Observation::new("a", 10, 0).profile("p", 10, f64::NAN)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("profile \"p\""), "{e}");
        assert_eq!(c.weights().interval, 0, "a rejected step changes nothing");
        let e = WeightController::new(
            WeightConfig {
                alpha: 0.0,
                ..WeightConfig::default()
            },
            ["a"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("control.weights.alpha = 0"), "{e}");
        let e = WeightController::new(WeightConfig::default(), ["a", "a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn set_servers_keeps_state_and_enters_new_ones_at_the_floor() {
        let mut c = WeightController::new(WeightConfig::default(), ["a", "b"]).unwrap();
        c.step(&[obs("a", 100, 0, 10.0), obs("b", 100, 0, 10.0)])
            .unwrap();
        c.set_servers(["b", "d"]).unwrap();
        let w = c.weights();
        assert_eq!(w.servers[0].server, "b");
        assert!(w.servers[0].score.is_some());
        assert!((w.get("d").unwrap() - 5.0).abs() < 1e-9, "{w:?}");
        assert!((w.get("b").unwrap() - 95.0).abs() < 1e-9, "{w:?}");
    }
}
