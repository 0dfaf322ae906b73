//! Arrival plans: when each request is due.
//!
//! A plan is a request rate over time, piecewise linear (a flat rate, or k6-style
//! stages that ramp between targets). Arrival `k` is due when the expected count
//! of arrivals so far, the integral of the rate, reaches `k` (constant arrivals)
//! or the `k`-th partial sum of exponential draws (Poisson arrivals). The
//! schedule is a pure function of the plan and the seed, so every shard of a
//! distributed run computes the same global schedule and keeps its own share.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::error::Error;

/// One stage of a ramp: reach `target` requests per second over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

/// Parses `30s:100,2m:400,30s:0`. Errors name the stage by position.
pub fn parse_stages(text: &str) -> Result<Vec<Stage>, Error> {
    let mut out = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let what = format!("stage {} of --stages {text:?}", i + 1);
        let entry = entry.trim();
        let Some((d, t)) = entry.split_once(':') else {
            return Err(Error::invalid(
                what,
                entry,
                "expected DURATION:RATE, like 30s:100",
            ));
        };
        let duration =
            parse_duration(d).map_err(|reason| Error::invalid(what.clone(), entry, reason))?;
        let target = parse_rate(t).map_err(|reason| Error::invalid(what.clone(), entry, reason))?;
        out.push(Stage { duration, target });
    }
    Ok(out)
}

/// `30s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s, 2m or 1h30m"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate (requests per second, a number >= 0)"
        )),
    }
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly, `1 / rate` apart (wrk2, k6's constant-arrival-rate).
    Constant,
    /// Independently, as real users do: exponential gaps with mean `1 / rate`.
    Poisson,
}

impl FromStr for Arrivals {
    type Err = String;
    fn from_str(s: &str) -> Result<Arrivals, String> {
        match s.trim() {
            "constant" => Ok(Arrivals::Constant),
            "poisson" => Ok(Arrivals::Poisson),
            other => Err(format!(
                "{other:?} is not an arrival process (constant or poisson)"
            )),
        }
    }
}

/// This process's part of a distributed run: arrival `k` belongs to shard `k mod count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad =
            || format!("{s:?} is not a shard; write INDEX/COUNT with 0 <= INDEX < COUNT, like 0/4");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn owns(&self, k: u64) -> bool {
        k % self.count == self.index
    }
}

/// One linear piece of the rate curve.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    /// Seconds; infinite for an open-ended flat rate.
    len: f64,
    r0: f64,
    r1: f64,
    /// Expected arrivals before `start`.
    before: f64,
}

impl Segment {
    fn slope(&self) -> f64 {
        if self.len.is_finite() && self.len > 0.0 {
            (self.r1 - self.r0) / self.len
        } else {
            0.0
        }
    }
    fn count(&self) -> f64 {
        if self.len.is_finite() {
            0.5 * (self.r0 + self.r1) * self.len
        } else {
            f64::INFINITY
        }
    }
}

/// Requests per second over time, piecewise linear.
#[derive(Debug, Clone)]
pub struct RateCurve {
    segments: Vec<Segment>,
}

impl RateCurve {
    /// A flat rate, for `duration` or for ever.
    pub fn flat(rate: f64, duration: Option<Duration>) -> RateCurve {
        RateCurve::from_pieces(&[(
            duration.map_or(f64::INFINITY, |d| d.as_secs_f64()),
            rate,
            rate,
        )])
    }

    /// k6 stages: start at 0 and ramp linearly to each target in turn; every target
    /// is multiplied by `stress`.
    pub fn stages(stages: &[Stage], stress: f64) -> RateCurve {
        let mut from = 0.0;
        let pieces: Vec<(f64, f64, f64)> = stages
            .iter()
            .map(|s| {
                let to = s.target * stress;
                let p = (s.duration.as_secs_f64(), from, to);
                from = to;
                p
            })
            .collect();
        RateCurve::from_pieces(&pieces)
    }

    fn from_pieces(pieces: &[(f64, f64, f64)]) -> RateCurve {
        let mut segments = Vec::with_capacity(pieces.len());
        let (mut start, mut before) = (0.0, 0.0);
        for &(len, r0, r1) in pieces {
            let s = Segment {
                start,
                len,
                r0,
                r1,
                before,
            };
            start += len;
            before += s.count();
            segments.push(s);
        }
        RateCurve { segments }
    }

    /// When the curve ends, if it does.
    pub fn end(&self) -> Option<f64> {
        self.segments
            .last()
            .map(|s| s.start + s.len)
            .filter(|e| e.is_finite())
    }

    /// The rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        for s in &self.segments {
            if t < s.start + s.len {
                return s.r0 + s.slope() * (t - s.start).max(0.0);
            }
        }
        0.0
    }

    /// The time at which the expected count reaches `n`, or `None` past the end.
    /// `hint` remembers the segment, so walking a schedule costs O(1) per arrival.
    fn time_of(&self, n: f64, hint: &mut usize) -> Option<f64> {
        while let Some(s) = self.segments.get(*hint) {
            let x = n - s.before;
            if x <= s.count() {
                let (a, b) = (0.5 * s.slope(), s.r0);
                // Solve a·τ² + b·τ = x in the stable form (no cancellation when a ≈ 0).
                let disc = (b * b + 4.0 * a * x).max(0.0);
                let denom = b + disc.sqrt();
                if denom > 0.0 {
                    let tau = (2.0 * x / denom).min(s.len);
                    return Some(s.start + tau);
                }
                if x <= 0.0 {
                    return Some(s.start);
                }
            }
            *hint += 1;
        }
        None
    }
}

/// The global arrival schedule: yields `(k, due)` in order, seconds from the start.
#[derive(Debug, Clone)]
pub struct Schedule {
    curve: RateCurve,
    arrivals: Arrivals,
    rng: SmallRng,
    count: f64,
    k: u64,
    hint: usize,
    end: Option<f64>,
    limit: Option<u64>,
}

impl Schedule {
    /// `duration` cuts the curve short; `requests` bounds the global number of arrivals.
    pub fn new(
        curve: RateCurve,
        arrivals: Arrivals,
        seed: u64,
        duration: Option<Duration>,
        requests: Option<u64>,
    ) -> Schedule {
        let end = match (curve.end(), duration.map(|d| d.as_secs_f64())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Schedule {
            curve,
            arrivals,
            // Its own stream, so arrival times do not depend on what requests draw.
            rng: SmallRng::seed_from_u64(seed ^ 0x5EED_A441_7A15_0001),
            count: 0.0,
            k: 0,
            hint: 0,
            end,
            limit: requests,
        }
    }

    /// The schedule's end in seconds, if bounded by time.
    pub fn end(&self) -> Option<f64> {
        self.end
    }

    /// The next arrival, or `None` when the plan is over.
    pub fn next_arrival(&mut self) -> Option<(u64, f64)> {
        if self.limit.is_some_and(|l| self.k >= l) {
            return None;
        }
        let n = match self.arrivals {
            // Arrival k is due when k arrivals are expected: the first at t = 0.
            Arrivals::Constant => self.k as f64,
            Arrivals::Poisson => {
                let u: f64 = self.rng.random();
                self.count += -(1.0 - u).ln();
                self.count
            }
        };
        let t = self.curve.time_of(n, &mut self.hint)?;
        if self.end.is_some_and(|e| t >= e) {
            return None;
        }
        let k = self.k;
        self.k += 1;
        Some((k, t))
    }
}

/// Parses `--mix 'search=0.5,p-1234=0.2'` into (profile key, fraction) pairs.
pub fn parse_mix(text: &str) -> Result<Vec<(String, f64)>, Error> {
    let mut out = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let what = format!("entry {} of --mix {text:?}", i + 1);
        let Some((k, v)) = entry.rsplit_once('=') else {
            return Err(Error::invalid(
                what,
                entry,
                "expected PROFILE=FRACTION, like search=0.5",
            ));
        };
        let f = match v.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && (0.0..=1.0).contains(&f) => f,
            _ => {
                return Err(Error::invalid(
                    what,
                    entry,
                    format!("{v:?} is not a fraction between 0 and 1"),
                ));
            }
        };
        out.push((k.trim().to_string(), f));
    }
    Ok(out)
}

/// The per-profile fractions of the run: the set's mix, with `overrides` pinned and
/// the other profiles sharing what is left in proportion to the set's mix.
pub fn resolve_mix(
    set: &umbra_core::ProfileSet,
    overrides: &[(String, f64)],
) -> Result<Vec<f64>, Error> {
    let base: Vec<f64> = set.mix().into_iter().map(|(_, f)| f).collect();
    if overrides.is_empty() {
        return Ok(base);
    }
    let mut pinned: Vec<Option<f64>> = vec![None; base.len()];
    for (key, f) in overrides {
        let Some(i) = set
            .profiles
            .iter()
            .position(|p| p.id == *key)
            .or_else(|| set.profiles.iter().position(|p| p.name == *key))
        else {
            return Err(Error::invalid(
                "mix entry",
                format!("{key}={f}"),
                format!(
                    "no profile has the id or name {key:?} (ids: {})",
                    set.profiles
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        pinned[i] = Some(*f);
    }
    let pinned_sum: f64 = pinned.iter().flatten().sum();
    if pinned_sum > 1.0 + 1e-9 {
        return Err(Error::invalid(
            "mix",
            overrides
                .iter()
                .map(|(k, f)| format!("{k}={f}"))
                .collect::<Vec<_>>()
                .join(","),
            format!("the fractions add up to {pinned_sum}, more than 1"),
        ));
    }
    let rest: f64 = base
        .iter()
        .zip(&pinned)
        .filter(|(_, p)| p.is_none())
        .map(|(b, _)| b)
        .sum();
    let left = (1.0 - pinned_sum).max(0.0);
    let mut out: Vec<f64> = base
        .iter()
        .zip(&pinned)
        .map(|(b, p)| match p {
            Some(f) => *f,
            None if rest > 0.0 => b / rest * left,
            None => 0.0,
        })
        .collect();
    // Every profile pinned (or the rest weigh nothing): scale the pins to sum to 1.
    let total: f64 = out.iter().sum();
    if total <= 0.0 {
        return Err(Error::invalid(
            "mix",
            format!("{overrides:?}"),
            "every profile has fraction 0: nothing to send",
        ));
    }
    for f in &mut out {
        *f /= total;
    }
    Ok(out)
}

/// A plan file (`--plan plan.toml`): the same settings as the command line, which
/// wins where both give one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub rate: Option<f64>,
    pub stress: Option<f64>,
    pub arrivals: Option<Arrivals>,
    pub stages: Option<StagesSpec>,
    pub duration: Option<String>,
    pub requests: Option<u64>,
    pub connections: Option<u64>,
    #[serde(default)]
    pub mix: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub thresholds: Vec<String>,
}

/// Stages as the command-line string or as a table array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StagesSpec {
    Text(String),
    List(Vec<StageEntry>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    pub duration: String,
    pub target: f64,
}

impl PlanFile {
    /// Reads a plan file; errors carry the file, line and key.
    pub fn load(path: &Path) -> Result<PlanFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let plan: PlanFile = toml::from_str(&text).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let bad = |key: &str, value: String, reason: String| Error::File {
            path: path.to_path_buf(),
            message: format!("{key} = {value}: {reason}"),
        };
        for (key, v) in [("rate", plan.rate), ("stress", plan.stress)] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(bad(key, v.to_string(), "expected a number >= 0".into()));
            }
        }
        if let Some(d) = &plan.duration {
            parse_duration(d).map_err(|r| bad("duration", format!("{d:?}"), r))?;
        }
        for (k, f) in &plan.mix {
            if !(f.is_finite() && (0.0..=1.0).contains(f)) {
                return Err(bad(
                    &format!("mix.{k}"),
                    f.to_string(),
                    "expected a fraction between 0 and 1".into(),
                ));
            }
        }
        plan.stages_list()
            .map_err(|e| bad("stages", String::new(), e.to_string()))?;
        Ok(plan)
    }

    /// The stages, parsed.
    pub fn stages_list(&self) -> Result<Option<Vec<Stage>>, Error> {
        match &self.stages {
            None => Ok(None),
            Some(StagesSpec::Text(t)) => parse_stages(t).map(Some),
            Some(StagesSpec::List(l)) => l
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let what = format!("stages[{i}]");
                    let duration = parse_duration(&e.duration)
                        .map_err(|r| Error::invalid(what.clone(), &e.duration, r))?;
                    if !(e.target.is_finite() && e.target >= 0.0) {
                        return Err(Error::invalid(
                            what,
                            e.target.to_string(),
                            "target must be a rate >= 0",
                        ));
                    }
                    Ok(Stage {
                        duration,
                        target: e.target,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn times(mut s: Schedule) -> Vec<f64> {
        std::iter::from_fn(|| s.next_arrival().map(|(_, t)| t)).collect()
    }

    #[test]
    fn constant_rate_spaces_arrivals_evenly() {
        let s = Schedule::new(
            RateCurve::flat(100.0, Some(Duration::from_secs(2))),
            Arrivals::Constant,
            1,
            None,
            None,
        );
        let t = times(s);
        assert_eq!(t.len(), 200);
        assert!((t[1] - 0.01).abs() < 1e-12);
        assert!((t[199] - 1.99).abs() < 1e-9);
    }

    #[test]
    fn stages_ramp_like_k6() {
        let st = parse_stages("10s:100,10s:100,10s:0").unwrap();
        let c = RateCurve::stages(&st, 1.0);
        assert_eq!(c.end(), Some(30.0));
        assert!((c.rate_at(5.0) - 50.0).abs() < 1e-9);
        assert!((c.rate_at(15.0) - 100.0).abs() < 1e-9);
        assert!((c.rate_at(25.0) - 50.0).abs() < 1e-9);
        let t = times(Schedule::new(c, Arrivals::Constant, 1, None, None));
        // 500 + 1000 + 500 expected arrivals.
        assert!((1999..=2000).contains(&t.len()), "{}", t.len());
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // Half the ramp's arrivals come in its last 2.93 s (sqrt(1/2) of 10 s).
        let first_ramp = t.iter().filter(|x| **x < 10.0).count();
        assert!((499..=500).contains(&first_ramp));
    }

    #[test]
    fn poisson_has_the_right_mean_and_is_seeded() {
        let mk = |seed| {
            Schedule::new(
                RateCurve::flat(1000.0, Some(Duration::from_secs(10))),
                Arrivals::Poisson,
                seed,
                None,
                None,
            )
        };
        let a = times(mk(7));
        assert_eq!(a, times(mk(7)));
        assert!((a.len() as f64 - 10_000.0).abs() < 400.0, "{}", a.len());
    }

    #[test]
    fn requests_bound_and_shards_partition() {
        let mut s = Schedule::new(
            RateCurve::flat(10.0, None),
            Arrivals::Constant,
            1,
            None,
            Some(7),
        );
        let mut n = 0;
        while s.next_arrival().is_some() {
            n += 1;
        }
        assert_eq!(n, 7);
        let sh: Shard = "1/3".parse().unwrap();
        assert!(sh.owns(4) && !sh.owns(3));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn bad_stages_name_the_stage() {
        let e = parse_stages("30s:100,2x:400").unwrap_err().to_string();
        assert!(e.contains("stage 2") && e.contains("2x:400"), "{e}");
        let e = parse_stages("30s:100,10s").unwrap_err().to_string();
        assert!(e.contains("stage 2") && e.contains("DURATION:RATE"), "{e}");
        let e = parse_stages("30s:-1").unwrap_err().to_string();
        assert!(e.contains("not a rate"), "{e}");
    }

    #[test]
    fn mix_entries_parse_and_fail_clearly() {
        assert_eq!(
            parse_mix("a=0.5, b = 0.25").unwrap(),
            vec![("a".into(), 0.5), ("b".into(), 0.25)]
        );
        let e = parse_mix("a=0.5,b").unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
        let e = parse_mix("a=2").unwrap_err().to_string();
        assert!(e.contains("between 0 and 1"), "{e}");
    }
}
