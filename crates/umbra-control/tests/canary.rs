//! The canary controller on simulated traffic: five profiles with log-normal
//! latencies around 20 ms and a little background of 5xx, production on two
//! upstreams, the canary on one, closed-loop (each span's split follows
//! `share()` at that moment).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use umbra_analysis::window::{Role, Window, WindowKey};
use umbra_control::{
    Action, Canary, CanaryConfig, CanaryState, Cause, Decision, Error, Outcome, Phase, Share,
};

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
const INTERVAL: u64 = 5 * MINUTE;

fn canary(config: CanaryConfig) -> Canary {
    Canary::new(config, T0).unwrap()
}

fn no_shadow() -> CanaryConfig {
    CanaryConfig {
        shadow: false,
        ..CanaryConfig::default()
    }
}

fn live(stage: usize, percent: f64) -> Phase {
    Phase::Live { stage, percent }
}

/// The decisions that were holds (phase unchanged, judged).
fn holds(run: &Run) -> usize {
    run.decisions
        .iter()
        .filter(|d| d.from == d.to && d.cause == Cause::Judged)
        .count()
}

#[test]
fn a_healthy_canary_is_promoted_after_one_interval_per_stage() {
    // Shadow, 1%, 5%, 25%, 50%: five intervals; entering 100% is the promotion.
    for seed in 1..=4 {
        let mut c = canary(CanaryConfig::default());
        let run = Sim::new(seed, Faults::default()).run(&mut c, 60 * MINUTE, 1);
        let path: Vec<String> = run.decisions.iter().map(|d| d.to.to_string()).collect();
        assert_eq!(
            path,
            ["1%", "5%", "25%", "50%", "promoted"],
            "seed {seed}: {:#?}",
            run.decisions
        );
        assert_eq!(run.ended_ms, Some(5 * INTERVAL), "seed {seed}");
        for d in &run.decisions {
            assert_eq!((d.outcome, d.cause.clone()), (Outcome::Pass, Cause::Judged));
            assert!(d.score.unwrap() >= 95.0, "{}", d.reason);
        }
        // At 1% the busy profiles are judged, the quiet one is not.
        let at_1 = &run.decisions[1].profiles;
        let judged = |p: &str| at_1.iter().find(|j| j.profile == p).unwrap().result;
        assert_eq!(judged("p-home"), Outcome::Pass);
        assert_eq!(judged("p-admin"), Outcome::NoData);
        assert_eq!(
            c.share(),
            Share {
                mirror: false,
                percent: 100.0
            }
        );
    }
}

/// Runs a canary 30% slower on `profile` from the first live stage.
fn slow_live_run(seed: u64, profile: &'static str) -> Run {
    let faults = Faults {
        slow: Some((profile, 1.3)),
        ..Faults::default()
    };
    let mut c = canary(no_shadow());
    let run = Sim::new(seed, faults).run(&mut c, 60 * MINUTE, 1);
    let d = run.decisions.last().unwrap();
    assert_eq!(run.decisions.len(), 1, "{:#?}", run.decisions);
    assert_eq!(
        (d.from.clone(), d.to.clone()),
        (live(0, 1.0), Phase::RolledBack)
    );
    let named = format!("profile {profile} latency_p");
    assert!(d.reason.starts_with(&named), "{}", d.reason);
    assert_eq!((d.outcome, d.cause.clone()), (Outcome::Fail, Cause::Judged));
    assert_eq!(run.max_percent, 1.0);
    run
}

#[test]
fn slower_on_one_profile_is_rolled_back_early_in_the_first_live_stage() {
    // Rolled back within the 1% stage, and before its end when the early check
    // confirms in time. 30% slower reads as a p50 shift of about +20% to +25%
    // of production's median (log-normal latencies), close to the threshold, so
    // a check can fall just short and break the streak (seed 1 of p-home does:
    // +22.9%, +19.8%, +24.2%); the end of the stage then rolls it back.
    let mut early = 0;
    for profile in ["p-home", "p-search"] {
        for seed in 1..=4 {
            let run = slow_live_run(seed, profile);
            let ended = run.ended_ms.unwrap();
            assert!(ended <= INTERVAL, "{profile} seed {seed}: {ended} ms");
            if ended < INTERVAL {
                let reason = &run.decisions[0].reason;
                assert!(
                    reason.ends_with("failing 2 checks in a row: rolled back early"),
                    "{reason}"
                );
                early += 1;
            }
        }
    }
    assert!(early >= 5, "only {early} of 8 runs were caught early");
}

#[test]
fn slower_on_one_profile_is_rolled_back_in_shadow() {
    let faults = Faults {
        slow: Some(("p-item", 1.3)),
        ..Faults::default()
    };
    let mut c = canary(CanaryConfig::default());
    let run = Sim::new(7, faults).run(&mut c, 60 * MINUTE, 1);
    let d = run.decisions.last().unwrap();
    assert_eq!(
        (d.from.clone(), d.to.clone()),
        (Phase::Shadow, Phase::RolledBack),
        "{:#?}",
        run.decisions
    );
    assert!(
        d.reason.starts_with("profile p-item latency_p"),
        "{}",
        d.reason
    );
    assert_eq!(run.max_percent, 0.0);
}

#[test]
fn errors_three_points_up_on_one_profile_are_rolled_back() {
    let faults = Faults {
        errors: Some(("p-home", 0.03)),
        ..Faults::default()
    };
    // With the shadow stage, the mirrored copies give it away before any user sees it.
    let mut c = canary(CanaryConfig::default());
    let run = Sim::new(3, faults).run(&mut c, 60 * MINUTE, 1);
    let d = run.decisions.last().unwrap();
    assert_eq!(
        (d.from.clone(), d.to.clone()),
        (Phase::Shadow, Phase::RolledBack)
    );
    assert!(
        d.reason.starts_with("profile p-home error_rate +"),
        "{}",
        d.reason
    );
    // Live from the start: the error rate is judged from 500 requests a side
    // (one point = 5 errors), which p-home reaches at 5%, not at 1%.
    let mut c = canary(no_shadow());
    let run = Sim::new(3, faults).run(&mut c, 60 * MINUTE, 1);
    let d = run.decisions.last().unwrap();
    assert_eq!(
        (d.from.clone(), d.to.clone()),
        (live(1, 5.0), Phase::RolledBack),
        "{:#?}",
        run.decisions
    );
    assert!(
        d.reason.starts_with("profile p-home error_rate +"),
        "{}",
        d.reason
    );
    assert!(run.max_percent <= 5.0);
}

#[test]
fn no_canary_traffic_holds_and_never_passes_then_rolls_back_after_max_holds() {
    let faults = Faults {
        silent: true,
        ..Faults::default()
    };
    let mut c = canary(CanaryConfig::default());
    let run = Sim::new(1, faults).run(&mut c, 60 * MINUTE, 1);
    let kinds: Vec<_> = run
        .decisions
        .iter()
        .map(|d| (d.outcome, d.to.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Outcome::NoData, Phase::Shadow),
            (Outcome::NoData, Phase::Shadow),
            (Outcome::NoData, Phase::RolledBack),
        ]
    );
    assert_eq!(run.ended_ms, Some(3 * INTERVAL));
    let last = &run.decisions[2].reason;
    assert!(
        last.starts_with("no canary requests (a profile needs 50)"),
        "{last}"
    );
    assert!(
        last.contains("3 intervals in a row without a pass (max_holds = 3)"),
        "{last}"
    );

    let forever = CanaryConfig {
        max_holds: 0,
        ..CanaryConfig::default()
    };
    let mut c = canary(forever);
    let run = Sim::new(1, faults).run(&mut c, 60 * MINUTE, 10);
    assert_eq!(run.decisions.len(), 12);
    assert!(
        run.decisions
            .iter()
            .all(|d| d.outcome == Outcome::NoData && d.to == Phase::Shadow)
    );
    assert_eq!(c.state().holds, 12);
}

#[test]
fn a_canary_slower_within_the_threshold_is_promoted() {
    // 10% slower on the busiest profile: significant with this much data, but
    // within the 20% tolerance, so every stage passes (Kayenta's rule).
    let faults = Faults {
        slow: Some(("p-home", 1.1)),
        ..Faults::default()
    };
    let mut c = canary(no_shadow());
    let run = Sim::new(2, faults).run(&mut c, 5 * INTERVAL, 10);
    let outcomes: Vec<Outcome> = run.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [Outcome::Pass; 4], "{:#?}", run.decisions);
    assert_eq!(c.state().phase, Phase::Promoted);
    assert_eq!(run.ended_ms, Some(4 * INTERVAL));
}

#[test]
fn a_large_significant_change_short_of_the_strict_level_holds() {
    // 20% slower on a quiet profile (reads as a p50 shift of about +14%, over
    // the 10% threshold here) with a few hundred canary requests: significant
    // at alpha, far from the (here extreme) fail_alpha: held, not rolled back.
    let config = CanaryConfig {
        shadow: false,
        stages: vec![5.0, 100.0],
        latency_threshold: 0.1,
        fail_alpha: 1e-20,
        confirm: 1000,
        ..CanaryConfig::default()
    };
    let faults = Faults {
        slow: Some(("p-cart", 1.2)),
        ..Faults::default()
    };
    let mut c = canary(config);
    let run = Sim::new(3, faults).run(&mut c, INTERVAL + 10_000, 10);
    assert_eq!(run.decisions.len(), 1, "{:#?}", run.decisions);
    let d = &run.decisions[0];
    assert_eq!(d.outcome, Outcome::Marginal, "{d:#?}");
    assert_eq!(d.to, live(0, 5.0), "held, not promoted or rolled back");
    assert!(d.reason.contains("p-cart latency_p50 +"), "{}", d.reason);
    assert!(
        d.reason.contains("held at 5% (hold 1 of 3)"),
        "{}",
        d.reason
    );
}

#[test]
fn the_state_survives_json_and_resume_continues_the_stage() {
    let mut c = canary(no_shadow());
    let mut sim = Sim::new(5, Faults::default());
    let run = sim.run(&mut c, INTERVAL + 2 * MINUTE, 10);
    assert_eq!(run.decisions.len(), 1);
    assert_eq!(c.state().phase, live(1, 5.0));
    assert!(!c.report(sim.now_ms).profiles.is_empty());

    let json = serde_json::to_string(c.state()).unwrap();
    let state: CanaryState = serde_json::from_str(&json).unwrap();
    assert_eq!(&state, c.state());
    assert!(
        json.contains(r#""phase":{"name":"live","stage":1,"percent":5.0}"#),
        "{json}"
    );

    let restart = sim.now_ms + 30_000;
    sim.now_ms = restart;
    let mut c = Canary::resume(
        CanaryConfig {
            shadow: false,
            ..CanaryConfig::default()
        },
        state,
        restart,
    )
    .unwrap();
    assert_eq!(c.state().phase, live(1, 5.0));
    assert_eq!(c.state().stage_started_ms, restart);
    assert!(
        c.report(restart).profiles.is_empty(),
        "the old windows are gone"
    );
    let run = sim.run(&mut c, INTERVAL, 1);
    // A full interval of new data, then on to 25%.
    let d = run.decisions.last().unwrap();
    assert_eq!(
        (d.at_ms, d.from.clone(), d.to.clone()),
        (restart + INTERVAL, live(1, 5.0), live(2, 25.0))
    );
    assert_eq!(c.state().history.len(), 2);
}

#[test]
fn operator_overrides_are_recorded_and_impossible_ones_refused() {
    let mut c = canary(CanaryConfig::default());
    let d = c.promote(T0 + 1).unwrap();
    assert_eq!((d.from, d.to.clone()), (Phase::Shadow, live(0, 1.0)));
    assert_eq!(
        d.cause,
        Cause::Operator {
            action: Action::Promote
        }
    );
    assert_eq!(d.reason, "operator promoted: shadow → 1%");
    assert_eq!(c.state().stage_started_ms, T0 + 1);

    let e = c.resume_judging(T0 + 2).unwrap_err();
    assert_eq!(e.to_string(), "canary resume: judging is not paused");
    let d = c.pause(T0 + 3).unwrap();
    assert_eq!(
        (d.to, d.cause),
        (
            live(0, 1.0),
            Cause::Operator {
                action: Action::Pause
            }
        )
    );
    assert!(c.state().paused);
    assert!(matches!(
        c.pause(T0 + 4),
        Err(Error::Canary {
            action: "pause",
            ..
        })
    ));
    c.resume_judging(T0 + 5).unwrap();
    assert!(!c.state().paused);

    let d = c.rollback(T0 + 6, "checkout errors in the logs").unwrap();
    assert_eq!(d.to, Phase::RolledBack);
    assert_eq!(
        d.reason,
        "operator rolled back: checkout errors in the logs"
    );
    let e = c.promote(T0 + 7).unwrap_err();
    assert_eq!(
        e.to_string(),
        "canary promote: the canary was rolled back; deploy it again to start over"
    );
    for e in [
        c.pause(T0).unwrap_err(),
        c.rollback(T0, "again").unwrap_err(),
    ] {
        assert!(e.to_string().contains("rolled back"), "{e}");
    }
    let causes: Vec<_> = c.state().history.iter().map(|d| d.cause.clone()).collect();
    let op = |action| Cause::Operator { action };
    assert_eq!(
        causes,
        [
            op(Action::Promote),
            op(Action::Pause),
            op(Action::Resume),
            op(Action::Rollback)
        ]
    );

    let mut c = canary(no_shadow());
    for to in [live(1, 5.0), live(2, 25.0), live(3, 50.0), Phase::Promoted] {
        assert_eq!(c.promote(T0).unwrap().to, to);
    }
    let e = c.rollback(T0, "too late").unwrap_err();
    assert_eq!(
        e.to_string(),
        "canary rollback: the canary is already promoted"
    );
}

#[test]
fn a_paused_canary_does_not_advance_but_still_rolls_back_on_a_confirmed_failure() {
    let mut c = canary(no_shadow());
    c.pause(T0).unwrap();
    let mut sim = Sim::new(4, Faults::default());
    let run = sim.run(&mut c, 3 * INTERVAL, 10);
    assert!(run.decisions.is_empty(), "{:#?}", run.decisions);
    assert_eq!(c.state().phase, live(0, 1.0));
    let report = c.report(sim.now_ms);
    let seen = (report.outcome, report.paused, report.elapsed_ms);
    assert_eq!(seen, (Outcome::Pass, true, 3 * INTERVAL));

    // Un-paused after the interval passed: judged at the next tick on all it gathered.
    c.resume_judging(sim.now_ms).unwrap();
    let run = sim.run(&mut c, 10_000, 10);
    assert_eq!(run.decisions.last().unwrap().to, live(1, 5.0));

    // A slow canary, paused from the start: safety over the pause.
    let mut c = canary(no_shadow());
    c.pause(T0).unwrap();
    let slow = Faults {
        slow: Some(("p-home", 1.3)),
        ..Faults::default()
    };
    let run = Sim::new(4, slow).run(&mut c, 3 * INTERVAL, 1);
    let d = run.decisions.last().unwrap();
    let seen = (d.to.clone(), d.cause.clone());
    assert_eq!(
        seen,
        (Phase::RolledBack, Cause::Judged),
        "{:#?}",
        run.decisions
    );
    assert!(d.reason.ends_with("rolled back early"), "{}", d.reason);
}

#[test]
fn two_hundred_healthy_canaries_are_promoted() {
    // 10 s windows (the windower's default span) keep this affordable.
    // Measured over 1000 seeds: 1 rolled back (seed 451: p-cart's error rate
    // +1.1 points on a handful of errors, where the proportion test's normal
    // approximation is too sure of itself). Before the judge passed small
    // significant changes (Kayenta's rule), 8 were: 5 after three holds in a row
    // on a small but significant difference.
    let mut rolled_back = Vec::new();
    for seed in 0..200 {
        let mut c = canary(CanaryConfig::default());
        let mut sim = Sim::new(seed, Faults::default());
        sim.span_ms = 10_000;
        let run = sim.run(&mut c, 60 * MINUTE, 1);
        match c.state().phase {
            Phase::Promoted => assert!(holds(&run) <= 3, "seed {seed}"),
            Phase::RolledBack => {
                rolled_back.push((seed, run.decisions.last().unwrap().reason.clone()))
            }
            ref other => panic!("seed {seed} still at {other} after an hour"),
        }
    }
    assert!(rolled_back.is_empty(), "{rolled_back:#?}");
}

#[test]
fn the_config_reads_every_key_from_control_canary() {
    #[derive(serde::Deserialize)]
    struct File {
        control: Control,
    }
    #[derive(serde::Deserialize)]
    struct Control {
        canary: CanaryConfig,
    }
    let f: File = toml::from_str(
        r#"
        [control.canary]
        stages = [2, 10, 50]
        shadow = false
        interval = "2m 30s"
        min_requests = 100
        latency_threshold = 0.25
        error_threshold = 0.02
        alpha = 0.05
        fail_alpha = 0.005
        confirm = 3
        pass_score = 90
        marginal_score = 60
        max_holds = 0
        "#,
    )
    .unwrap();
    let c = f.control.canary;
    c.validate().unwrap();
    assert_eq!(
        c,
        CanaryConfig {
            stages: vec![2.0, 10.0, 50.0],
            shadow: false,
            interval: std::time::Duration::from_secs(150),
            min_requests: 100,
            latency_threshold: 0.25,
            error_threshold: 0.02,
            alpha: 0.05,
            fail_alpha: 0.005,
            confirm: 3,
            pass_score: 90.0,
            marginal_score: 60.0,
            max_holds: 0,
        }
    );
    let empty: CanaryConfig = toml::from_str("").unwrap();
    assert_eq!(empty, CanaryConfig::default());
    let e = toml::from_str::<CanaryConfig>("stage = [1]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `stage`"), "{e}");
    let e = toml::from_str::<CanaryConfig>("interval = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"soon\" is not a duration"), "{e}");
}

#[test]
fn bad_configs_name_the_key_and_the_problem() {
    let bad = |c: CanaryConfig| c.validate().unwrap_err().to_string();
    let with = |f: fn(&mut CanaryConfig)| {
        let mut c = CanaryConfig::default();
        f(&mut c);
        bad(c)
    };
    assert_eq!(
        with(|c| c.stages = vec![1.0, 5.0, 5.0]),
        "control.canary.stages = [1.0, 5.0, 5.0]: stage 3 (5) is not above stage 2 (5): stages must increase"
    );
    assert_eq!(
        with(|c| c.stages = vec![1.0, 100.0, 50.0]),
        "control.canary.stages = [1.0, 100.0, 50.0]: 100 means promotion, so it must be last"
    );
    assert_eq!(
        with(|c| c.stages = vec![100.0, 100.0]),
        "control.canary.stages = [100.0, 100.0]: 100 means promotion, so it must be last"
    );
    assert!(
        with(|c| c.stages = vec![0.0, 5.0])
            .contains("stage 1 is 0: expected a percentage, 0 < stage <= 100")
    );
    assert!(with(|c| c.stages = vec![5.0, 120.0]).contains("stage 2 is 120"));
    assert!(with(|c| c.stages = vec![]).contains("stages = []: expected at least one stage"));
    assert!(
        with(|c| {
            c.shadow = false;
            c.stages = vec![100.0];
        })
        .contains("with shadow = false, at least one stage below 100 is needed")
    );
    assert!(
        with(|c| c.interval = std::time::Duration::ZERO).starts_with("control.canary.interval")
    );
    assert!(with(|c| c.min_requests = 0).starts_with("control.canary.min_requests = 0"));
    assert!(
        with(|c| c.latency_threshold = -0.1).starts_with("control.canary.latency_threshold = -0.1")
    );
    assert!(with(|c| c.error_threshold = 1.5).starts_with("control.canary.error_threshold = 1.5"));
    assert!(with(|c| c.alpha = 1.0).starts_with("control.canary.alpha = 1"));
    assert_eq!(
        with(|c| c.fail_alpha = 0.05),
        "control.canary.fail_alpha = 0.05: expected 0 < fail_alpha <= alpha (0.01): the early check looks every tick, so it must be the stricter"
    );
    assert!(with(|c| c.confirm = 0).starts_with("control.canary.confirm = 0"));
    assert!(with(|c| c.pass_score = 120.0).starts_with("control.canary.pass_score = 120"));
    assert!(
        with(|c| c.marginal_score = 96.0)
            .contains("expected 0 <= marginal_score <= pass_score (95)")
    );
    assert!(
        Canary::new(
            CanaryConfig {
                confirm: 0,
                ..CanaryConfig::default()
            },
            T0
        )
        .is_err()
    );
}
