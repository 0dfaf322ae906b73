//! Shadow probes in the weights: the same synthetic requests sent to every
//! production server, measured, and combined with what live traffic showed.
//!
//! Live measurements are not a fair race: the balancer decides which server gets
//! which requests and how many, so a server's live latency depends on the weights
//! themselves, and a server with little traffic has little to say. Probes are the
//! fair comparison: every server gets the very same request at the same moment,
//! at a low rate, whatever its weight. Live traffic still counts (it is the real
//! mix and the real load), so the two are blended per profile:
//!
//! ```text
//! latency_p = w × probe latency_p + (1 − w) × live latency_p    (profiles both measured)
//! error rate = w × probe error rate + (1 − w) × live error rate (servers both measured)
//! ```
//!
//! with `w = probe_weight`. Where only one source measured a profile (or a
//! server), that source's figure is used as it is, so probes alone can drive the
//! weights when there is no live traffic, and live traffic alone when probes are
//! off. `probe_weight = 1` uses probes only, `0` live traffic only. The request
//! count that `min_samples` compares with is the sum over the sources used.
//!
//! Everything here is plain values: the binary sends the probes, feeds each
//! result to a [`ProbeTally`], and hands [`combine`]'s output to the
//! [`crate::WeightController`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::weights::Observation;

const SECTION: &str = "control.weights.probes";

/// Methods that change nothing on the server (RFC 9110 §9.2.1); probes hit
/// production, so others are allowed only when listed on purpose.
pub const SAFE_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE"];

/// The `[control.weights.probes]` settings (TOML; every key optional). Probes
/// are on when the table is present, unless `enabled = false`.
///
/// ```toml
/// [control.weights.probes]
/// enabled = true             # the table alone turns probes on
/// rate = 2.0                 # probe requests per second to each production server
/// methods = ["GET", "HEAD"]  # only templates with these methods are sent
/// timeout = "5s"             # a probe not answered by then counts as an error
/// concurrency = 4            # probes in flight per server; beyond it a probe is skipped
/// probe_weight = 0.5         # share of probes against live traffic in each profile's latency
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Probes run when the table is present and this is true (the default).
    pub enabled: bool,
    /// Probe requests per second sent to each production server, in (0, 100].
    /// Default 2. With probes alone, keep `rate × interval ≥ min_samples`, or
    /// the weights hold.
    pub rate: f64,
    /// Request methods probes may use: templates of the profile set with other
    /// methods are never sent. Default `["GET", "HEAD"]`.
    pub methods: Vec<String>,
    /// Time a probe may take, response body included; later is an error. Default 5 s.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// Probes in flight to one server at most (its connection pool); a probe
    /// due while that many are waiting is skipped and counted. Default 4.
    pub concurrency: usize,
    /// Weight of the probes against live traffic, in [0, 1] (see the module
    /// documentation). Default 0.5.
    pub probe_weight: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: true,
            rate: 2.0,
            methods: vec!["GET".into(), "HEAD".into()],
            timeout: Duration::from_secs(5),
            concurrency: 4,
            probe_weight: 0.5,
        }
    }
}

impl ProbeConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100.0) {
            return Err(Error::config(
                SECTION,
                "rate",
                self.rate,
                "expected 0 < rate <= 100 requests per second per server (probes hit production)",
            ));
        }
        if self.methods.is_empty() {
            return Err(Error::config(
                SECTION,
                "methods",
                "[]",
                "list at least one method, like [\"GET\", \"HEAD\"]",
            ));
        }
        for m in &self.methods {
            if m.is_empty() || !m.bytes().all(is_token_char) {
                return Err(Error::config(
                    SECTION,
                    "methods",
                    format!("{m:?}"),
                    "not an HTTP method name",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::config(
                SECTION,
                "timeout",
                "\"0s\"",
                "must be longer than zero",
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::config(
                SECTION,
                "concurrency",
                0,
                "expected at least 1 probe in flight per server",
            ));
        }
        if !(self.probe_weight >= 0.0 && self.probe_weight <= 1.0) {
            return Err(Error::config(
                SECTION,
                "probe_weight",
                self.probe_weight,
                "expected 0 <= probe_weight <= 1 (1: probes only, 0: live traffic only)",
            ));
        }
        Ok(())
    }

    /// The allowed methods, upper case, without repeats.
    pub fn method_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.methods {
            let m = m.trim().to_ascii_uppercase();
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The allowed methods that are not safe (they may change data on the server).
    pub fn unsafe_methods(&self) -> Vec<String> {
        self.method_names()
            .into_iter()
            .filter(|m| !SAFE_METHODS.contains(&m.as_str()))
            .collect()
    }
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One server's probes over an interval.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    /// Profile → (answered probes, their total latency in ms).
    profiles: BTreeMap<String, (u64, f64)>,
}

/// Probe results of one interval, per server and profile, rolled up into
/// [`Observation`]s the way the proxy's own series are.
#[derive(Debug, Clone, Default)]
pub struct ProbeTally {
    servers: BTreeMap<String, Tally>,
}

impl ProbeTally {
    /// A probe of `profile` answered by `server` after `latency_ms` (response
    /// body included); `error` for a 5xx answer, which counts as an error but
    /// still measures latency, as in live traffic. A latency that is not a
    /// positive number counts as a failure.
    pub fn answered(&mut self, server: &str, profile: &str, latency_ms: f64, error: bool) {
        if !(latency_ms.is_finite() && latency_ms >= 0.0) {
            self.failed(server);
            return;
        }
        let t = self.servers.entry(server.to_string()).or_default();
        t.requests += 1;
        t.errors += u64::from(error);
        let p = t.profiles.entry(profile.to_string()).or_default();
        p.0 += 1;
        // A zero reading (a coarse clock) would read as infinitely fast.
        p.1 += latency_ms.max(0.001);
    }

    /// A probe that got no answer: refused, reset, or over the timeout.
    pub fn failed(&mut self, server: &str) {
        let t = self.servers.entry(server.to_string()).or_default();
        t.requests += 1;
        t.errors += 1;
    }

    /// The interval's observations (one per server probed), leaving the tally empty.
    pub fn take(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.servers)
            .into_iter()
            .map(|(server, t)| {
                t.profiles.into_iter().fold(
                    Observation::new(server, t.requests, t.errors),
                    |o, (profile, (n, total))| o.profile(profile, n, total / n as f64),
                )
            })
            .collect()
    }
}

/// Blends live and probe observations of one interval, server by server and
/// profile by profile, with `probe_weight` (see the module documentation).
///
/// Servers come in `live`'s order, then those only probes saw. A server's CPU
/// reading comes from `live`. `probe_weight` outside [0, 1] is clamped.
pub fn combine(
    live: &[Observation],
    probes: &[Observation],
    probe_weight: f64,
) -> Vec<Observation> {
    let w = if probe_weight.is_nan() {
        0.5
    } else {
        probe_weight.clamp(0.0, 1.0)
    };
    let empty = |server: &str| Observation::new(server, 0, 0);
    let mut out = Vec::with_capacity(live.len().max(probes.len()));
    for l in live {
        let p = probes
            .iter()
            .find(|p| p.server == l.server)
            .cloned()
            .unwrap_or_else(|| empty(&l.server));
        out.push(blend(l, &p, w));
    }
    for p in probes {
        if !live.iter().any(|l| l.server == p.server) {
            out.push(blend(&empty(&p.server), p, w));
        }
    }
    out
}

fn blend(live: &Observation, probe: &Observation, w: f64) -> Observation {
    // A source with weight 0 is left out altogether, its requests too.
    let use_live = w < 1.0 && live.requests > 0;
    let use_probe = w > 0.0 && probe.requests > 0;
    let mix = |l: f64, p: f64, has_l: bool, has_p: bool| match (has_l, has_p) {
        (true, true) => w * p + (1.0 - w) * l,
        (true, false) => l,
        (false, true) => p,
        (false, false) => 0.0,
    };
    let requests =
        if use_live { live.requests } else { 0 } + if use_probe { probe.requests } else { 0 };
    let rate = |o: &Observation| o.errors.min(o.requests) as f64 / o.requests.max(1) as f64;
    let error_rate = mix(rate(live), rate(probe), use_live, use_probe);
    let errors = ((error_rate * requests as f64).round() as u64).min(requests);
    let mut o = Observation::new(live.server.clone(), requests, errors);
    o.cpu = live.cpu;
    let answered = |obs: &Observation, used: bool, profile: &str| {
        obs.profiles
            .iter()
            .find(|p| used && p.profile == profile && p.requests > 0)
            .map(|p| (p.requests, p.mean_ms))
    };
    let mut names: Vec<&str> = Vec::new();
    for p in live.profiles.iter().chain(&probe.profiles) {
        if !names.contains(&p.profile.as_str()) {
            names.push(&p.profile);
        }
    }
    for name in names {
        let l = answered(live, use_live, name);
        let p = answered(probe, use_probe, name);
        if l.is_none() && p.is_none() {
            continue;
        }
        let (ln, lm) = l.unwrap_or((0, 0.0));
        let (pn, pm) = p.unwrap_or((0, 0.0));
        o = o.profile(name, ln + pn, mix(lm, pm, l.is_some(), p.is_some()));
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::weights::{WeightConfig, WeightController};

    fn mean(o: &Observation, profile: &str) -> f64 {
        o.profiles
            .iter()
            .find(|p| p.profile == profile)
            .unwrap()
            .mean_ms
    }

    #[test]
    fn the_tally_rolls_probes_up_per_server_and_profile_and_starts_again() {
        let mut t = ProbeTally::default();
        t.answered("a", "p1", 10.0, false);
        t.answered("a", "p1", 30.0, false);
        t.answered("a", "p2", 5.0, true);
        t.failed("a");
        t.answered("b", "p1", 40.0, false);
        let obs = t.take();
        assert_eq!(obs.len(), 2);
        let a = &obs[0];
        assert_eq!((a.server.as_str(), a.requests, a.errors), ("a", 4, 2));
        // The failure has no latency; the 5xx answer has one.
        assert!((mean(a, "p1") - 20.0).abs() < 1e-9);
        assert!((mean(a, "p2") - 5.0).abs() < 1e-9);
        assert!(t.take().is_empty(), "take leaves the tally empty");
        t.answered("a", "p1", f64::NAN, false);
        let obs = t.take();
        assert_eq!((obs[0].requests, obs[0].errors), (1, 1));
        assert!(obs[0].profiles.is_empty());
    }

    #[test]
    fn probes_alone_and_live_alone_pass_through() {
        let probe = Observation::new("a", 20, 1).profile("p", 19, 12.0);
        let got = combine(&[], std::slice::from_ref(&probe), 0.5);
        assert_eq!(got, vec![probe.clone()]);
        let live = Observation::new("a", 50, 0).profile("p", 50, 30.0).cpu(0.3);
        let got = combine(std::slice::from_ref(&live), &[], 0.5);
        assert_eq!(got, vec![live]);
    }

    #[test]
    fn both_sources_blend_per_profile_by_probe_weight() {
        let live = Observation::new("a", 100, 10)
            .profile("p", 90, 30.0)
            .profile("live-only", 5, 50.0)
            .cpu(0.4);
        let probe =
            Observation::new("a", 20, 0)
                .profile("p", 18, 10.0)
                .profile("probe-only", 2, 7.0);
        let got = &combine(
            std::slice::from_ref(&live),
            std::slice::from_ref(&probe),
            0.25,
        )[0];
        assert_eq!(got.requests, 120);
        // Error rate 0.25 × 0 + 0.75 × 0.1 = 0.075 of 120 requests: 9.
        assert_eq!(got.errors, 9);
        assert!((mean(got, "p") - (0.25 * 10.0 + 0.75 * 30.0)).abs() < 1e-9);
        assert_eq!(
            got.profiles
                .iter()
                .find(|p| p.profile == "p")
                .unwrap()
                .requests,
            108
        );
        assert!((mean(got, "live-only") - 50.0).abs() < 1e-9);
        assert!((mean(got, "probe-only") - 7.0).abs() < 1e-9);
        assert_eq!(got.cpu, Some(0.4));

        // The ends: 1 is probes only, 0 live only (the other source's requests
        // do not count towards min_samples either).
        let only_probes = &combine(
            std::slice::from_ref(&live),
            std::slice::from_ref(&probe),
            1.0,
        )[0];
        assert_eq!((only_probes.requests, only_probes.errors), (20, 0));
        assert!((mean(only_probes, "p") - 10.0).abs() < 1e-9);
        assert!(
            only_probes
                .profiles
                .iter()
                .all(|p| p.profile != "live-only")
        );
        let only_live = &combine(&[live], &[probe], 0.0)[0];
        assert_eq!((only_live.requests, only_live.errors), (100, 10));
        assert!((mean(only_live, "p") - 30.0).abs() < 1e-9);
    }

    #[test]
    fn servers_only_probes_saw_are_kept_after_the_live_ones() {
        let live = [Observation::new("b", 0, 0)];
        let probes = [
            Observation::new("a", 10, 0).profile("p", 10, 5.0),
            Observation::new("b", 10, 0).profile("p", 10, 6.0),
        ];
        let got = combine(&live, &probes, 0.5);
        let names: Vec<&str> = got.iter().map(|o| o.server.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(got[0].requests, 10, "no live requests: probes alone");
    }

    #[test]
    fn identical_probes_outweigh_a_skewed_live_mix() {
        // Live: the balancer happened to send a only light requests and b only
        // heavy ones, so a plain live mean makes b look 5× slower. Per profile,
        // a is as fast as b on light requests and twice as slow on heavy ones;
        // b never served a light one live and a never a heavy one, which only
        // the probes (every profile to every server) reveal.
        let live = [
            Observation::new("a", 100, 0).profile("light", 100, 10.0),
            Observation::new("b", 100, 0).profile("heavy", 100, 50.0),
        ];
        let probes = [
            Observation::new("a", 20, 0)
                .profile("light", 10, 10.0)
                .profile("heavy", 10, 100.0),
            Observation::new("b", 20, 0)
                .profile("light", 10, 10.0)
                .profile("heavy", 10, 50.0),
        ];
        let config = WeightConfig {
            mix: [("light".to_string(), 0.5), ("heavy".to_string(), 0.5)].into(),
            max_step: 100.0,
            alpha: 1.0,
            ..WeightConfig::default()
        };
        let mut with_probes = WeightController::new(config.clone(), ["a", "b"]).unwrap();
        let w = with_probes.step(&combine(&live, &probes, 0.5)).unwrap();
        // Latency at the mix: a (10 + 100) / 2 = 55, b (10 + 50) / 2 = 30.
        assert!(
            (w.servers[0].latency_ms.unwrap() - 55.0).abs() < 1e-9,
            "{w:?}"
        );
        assert!(
            (w.servers[1].latency_ms.unwrap() - 30.0).abs() < 1e-9,
            "{w:?}"
        );
        assert!(w.get("b").unwrap() > 60.0, "{w:?}");
        let mut live_only = WeightController::new(config, ["a", "b"]).unwrap();
        let w = live_only.step(&live).unwrap();
        assert!(w.get("a").unwrap() > 80.0, "live alone favours a: {w:?}");
    }

    #[test]
    fn config_reads_from_toml_with_defaults_and_names_bad_keys() {
        let c: ProbeConfig =
            toml::from_str("rate = 0.5\nmethods = [\"get\", \"GET\", \"OPTIONS\"]\n").unwrap();
        c.validate().unwrap();
        assert!(c.enabled);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.method_names(), ["GET", "OPTIONS"]);
        assert!(c.unsafe_methods().is_empty());
        let c: ProbeConfig = toml::from_str("methods = [\"GET\", \"POST\"]\n").unwrap();
        assert_eq!(c.unsafe_methods(), ["POST"]);
        let e = toml::from_str::<ProbeConfig>("rat = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `rat`"), "{e}");
        for (text, starts) in [
            ("rate = 0", "control.weights.probes.rate = 0"),
            ("rate = 500", "control.weights.probes.rate = 500"),
            ("methods = []", "control.weights.probes.methods = []"),
            (
                "methods = [\"GE T\"]",
                "control.weights.probes.methods = \"GE T\"",
            ),
            ("timeout = \"0s\"", "control.weights.probes.timeout"),
            ("concurrency = 0", "control.weights.probes.concurrency = 0"),
            (
                "probe_weight = 1.5",
                "control.weights.probes.probe_weight = 1.5",
            ),
        ] {
            let c: ProbeConfig = toml::from_str(text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(starts), "{text}: {e}");
        }
    }
}
