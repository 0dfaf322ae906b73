//! The canary controller on simulated traffic: five profiles with log-normal
//! latencies around 20 ms and a little background of 5xx, production on two
//! upstreams, the canary on one, closed-loop (each span's split follows
//! `share()` at that moment).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use umbra_analysis::window::{Role, Window, WindowKey};
use umbra_control::{Canary, CanaryConfig, Decision, Phase, Share};

const T0: u64 = 1_700_000_000_000;

/// (profile, requests per second over all versions, median latency in ms).
const PROFILES: [(&str, f64, f64); 5] = [
    ("p-home", 120.0, 18.0),
    ("p-search", 60.0, 25.0),
    ("p-item", 40.0, 20.0),
    ("p-cart", 20.0, 30.0),
    ("p-admin", 4.0, 45.0), // quiet: too few canary requests at 1% to be judged
];

/// Spread of latencies (σ of their logarithm): p99 ≈ 2.5 × the median.
const SIGMA: f64 = 0.4;
/// 5xx share of every version, healthy or not.
const BASE_ERRORS: f64 = 0.002;

/// How the simulated canary differs from production.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// (profile, latency factor) on the canary.
    slow: Option<(&'static str, f64)>,
    /// (profile, extra 5xx share) on the canary.
    errors: Option<(&'static str, f64)>,
    /// The canary gets no requests at all (not routed, or not measured).
    silent: bool,
}

struct Sim {
    rng: SmallRng,
    now_ms: u64,
    span_ms: u64,
    /// Share of requests copied to the canary while it is in shadow.
    mirror: f64,
    faults: Faults,
}

/// One run of the controller: what it decided and the most live traffic it was given.
#[derive(Debug, Default)]
struct Run {
    decisions: Vec<Decision>,
    max_percent: f64,
    /// Time from the start to the first roll back or promotion.
    ended_ms: Option<u64>,
}

impl Sim {
    fn new(seed: u64, faults: Faults) -> Sim {
        Sim {
            rng: SmallRng::seed_from_u64(seed),
            now_ms: T0,
            span_ms: 1000,
            mirror: 0.1,
            faults,
        }
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller: enough for latencies, and needs nothing but rand.
        let u: f64 = 1.0 - self.rng.random::<f64>();
        let v: f64 = self.rng.random();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// One span of traffic split as `share` says; returns its closed windows.
    fn span(&mut self, share: Share) -> Vec<Window> {
        let (start, end) = (self.now_ms, self.now_ms + self.span_ms);
        let mut windows = Vec::new();
        for (profile, rps, median) in PROFILES {
            let mut prod = [
                Window::empty(
                    WindowKey::new(Role::Production, "prod-a", profile),
                    start,
                    end,
                    2,
                )
                .unwrap(),
                Window::empty(
                    WindowKey::new(Role::Production, "prod-b", profile),
                    start,
                    end,
                    2,
                )
                .unwrap(),
            ];
            let mut canary = Window::empty(
                WindowKey::new(Role::Canary, "canary", profile),
                start,
                end,
                2,
            )
            .unwrap();
            let n = (rps * self.span_ms as f64 / 1000.0).round() as u64;
            let slow = match self.faults.slow {
                Some((p, f)) if p == profile => f,
                _ => 1.0,
            };
            let extra = match self.faults.errors {
                Some((p, e)) if p == profile => e,
                _ => 0.0,
            };
            for i in 0..n {
                let live_canary = self.rng.random::<f64>() * 100.0 < share.percent;
                let copy = share.mirror && self.rng.random::<f64>() < self.mirror;
                let served: &mut Window = if live_canary {
                    &mut canary
                } else {
                    &mut prod[(i % 2) as usize]
                };
                let factor = if live_canary { slow } else { 1.0 };
                let errors = if live_canary {
                    BASE_ERRORS + extra
                } else {
                    BASE_ERRORS
                };
                let z = self.normal();
                let failed = self.rng.random::<f64>() < errors;
                record(served, median * factor * (SIGMA * z).exp(), failed);
                if copy {
                    let z = self.normal();
                    let failed = self.rng.random::<f64>() < BASE_ERRORS + extra;
                    record(&mut canary, median * slow * (SIGMA * z).exp(), failed);
                }
            }
            if self.faults.silent {
                canary.requests = 0;
                canary.errors_5xx = 0;
                canary.latency.reset();
            }
            windows.extend(prod.into_iter().chain([canary]).filter(|w| w.requests > 0));
        }
        self.now_ms = end;
        windows
    }

    /// Feeds spans to the controller, calling `observe` every `tick` spans,
    /// for at most `duration_ms` or until the canary is done.
    fn run(&mut self, canary: &mut Canary, duration_ms: u64, tick: usize) -> Run {
        let mut run = Run::default();
        let stop = self.now_ms + duration_ms;
        let mut batch = Vec::new();
        while self.now_ms < stop {
            let share = canary.share();
            run.max_percent = run.max_percent.max(share.percent);
            for _ in 0..tick {
                batch.extend(self.span(share));
            }
            if let Some(d) = canary.observe(&batch, self.now_ms) {
                run.decisions.push(d);
            }
            batch.clear();
            if canary.state().phase.is_terminal() {
                run.ended_ms = Some(self.now_ms - T0);
                break;
            }
        }
        run
    }
}

fn record(w: &mut Window, ms: f64, failed: bool) {
    w.latency.record((ms * 1000.0).max(1.0) as u64).unwrap();
    w.requests += 1;
    if failed {
        w.errors_5xx += 1;
    }
}

const MINUTE: u64 = 60_000;

#[test]
#[ignore = "an experiment: prints how often a healthy canary holds or rolls back"]
fn experiment_healthy() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let span: u64 = std::env::var("SPAN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut rolled = 0;
    let mut holds = 0;
    for seed in 0..seeds {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        let mut sim = Sim::new(seed, Faults::default());
        sim.span_ms = span;
        let run = sim.run(&mut c, 60 * MINUTE, 1);
        for d in &run.decisions {
            if d.from == d.to {
                holds += 1;
                if std::env::var("VERBOSE").is_ok() {
                    println!("seed {seed} hold: {}", d.reason);
                }
            }
            if d.to == Phase::RolledBack {
                rolled += 1;
                println!("seed {seed} ROLLED BACK: {}", d.reason);
            }
        }
    }
    println!("{seeds} runs: {rolled} rolled back, {holds} holds");
}

#[test]
#[ignore = "an experiment: p-value calibration on healthy data"]
fn experiment_calibration() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut ps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for seed in 0..seeds {
        let mut c = Canary::new(
            CanaryConfig {
                max_holds: 0,
                ..CanaryConfig::default()
            },
            T0,
        )
        .unwrap();
        let mut sim = Sim::new(seed, Faults::default());
        sim.span_ms = 10_000;
        let run = sim.run(&mut c, 60 * MINUTE, 1);
        for d in run.decisions.iter().filter(|d| {
            d.from != d.to && d.to != Phase::RolledBack && d.from.clone() != Phase::RolledBack
        }) {
            for p in &d.profiles {
                for m in &p.metrics {
                    if let Some(pv) = m.p_value {
                        ps.entry(format!("{:?} {}", d.from, m.metric))
                            .or_default()
                            .push(pv);
                    }
                }
            }
        }
    }
    for (k, v) in ps {
        let n = v.len() as f64;
        let below = |a: f64| v.iter().filter(|p| **p < a).count() as f64 / n;
        println!(
            "{k:40} n={n:5} <0.05 {:.4} <0.01 {:.4} <0.001 {:.4}",
            below(0.05),
            below(0.01),
            below(0.001)
        );
    }
}
