//! Windows ► judge ► alerts, on simulated traffic: a shadow that is 40% slower
//! on one profile only raises exactly one alert naming that profile, which
//! resolves when the shadow recovers.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use umbra_analysis::alert::{AlertConfig, AlertManager, AlertState, EventKind};
use umbra_analysis::baseline::{Baselines, Metric};
use umbra_analysis::verdict::{Basis, Judge, JudgeConfig, Status};
use umbra_analysis::window::{
    Measurement, Role, TraceId, Window, WindowKey, Windower, WindowerConfig,
};

/// One span of traffic: 1000 requests per (role, profile) with latencies scaled
/// by `slow(role, profile)` and 5xx with probability `errors(role, profile)`.
fn span(
    rng: &mut StdRng,
    w: &mut Windower,
    i: u64,
    slow: impl Fn(Role, &str) -> f64,
    errors: impl Fn(Role, &str) -> f64,
) -> Vec<Window> {
    let dist = LogNormal::new(30_000f64.ln(), 0.4).unwrap();
    for role in [Role::Production, Role::Shadow] {
        for profile in ["checkout", "search"] {
            let key = WindowKey::new(role, &format!("{role}-1"), profile);
            let (s, e) = (slow(role, profile), errors(role, profile));
            for j in 0..1000u64 {
                let lat: f64 = dist.sample(rng) * s;
                w.ingest(&Measurement {
                    timestamp_ms: i * 10_000 + j * 10,
                    key: key.clone(),
                    latency_us: lat as u64,
                    status: if rng.random::<f64>() < e { 503 } else { 200 },
                    bytes: 1000,
                    trace_id: Some(TraceId(rng.random())),
                });
            }
        }
    }
    w.advance((i + 1) * 10_000 + 2_000)
}

#[test]
fn a_slower_shadow_on_one_profile_fires_one_alert_and_resolves() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut w = Windower::new(WindowerConfig::default()).unwrap();
    let mut judge = Judge::new(JudgeConfig::default()).unwrap();
    let mut alerts = AlertManager::new(AlertConfig::default());
    let mut events = Vec::new();
    let mut first_verdict = None;
    let mut first_history = None;
    for i in 0..120u64 {
        let slow_from = 40;
        let windows = span(
            &mut rng,
            &mut w,
            i,
            |role, profile| {
                if role == Role::Shadow && profile == "checkout" && (slow_from..80).contains(&i) {
                    1.4
                } else {
                    1.0
                }
            },
            |_, _| 0.001,
        );
        let evals = judge.observe(&windows);
        assert!(!evals.is_empty());
        for e in &evals {
            if let Some(v) = &e.verdict {
                assert_eq!(
                    (v.profile.as_str(), v.role),
                    ("checkout", Role::Shadow),
                    "{v:?}"
                );
                match v.basis {
                    Basis::Production => first_verdict.get_or_insert((i, v.clone())),
                    Basis::History => first_history.get_or_insert((i, v.clone())),
                };
            }
        }
        events.extend(alerts.observe(&evals, (i + 1) * 10_000 + 2_000));
    }
    let (at, v) = first_verdict.expect("a verdict against production");
    assert!((40..=42).contains(&at), "first verdict in window {at}");
    assert_eq!(v.metric, Metric::P99);
    // The shadow's own history agrees: it had learned the shadow before it slowed down.
    let (at, h) = first_history.expect("a verdict against the shadow's history");
    assert!(
        (40..=42).contains(&at),
        "first history verdict in window {at}"
    );
    assert_eq!(h.metric, Metric::P99);
    assert!((v.change - 0.4).abs() < 0.15, "{v:?}");
    assert!(v.p_value < 1e-6, "{v:?}");
    assert!((v.effect_size - 0.4).abs() < 0.1, "{v:?}");
    assert_eq!(v.trace_ids.len(), 5);
    assert!(
        v.summary().contains("shadow p99 of profile checkout is +"),
        "{}",
        v.summary()
    );

    let firing: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Firing)
        .collect();
    assert_eq!(
        firing.len(),
        1,
        "{:?}",
        events.iter().map(|e| e.describe()).collect::<Vec<_>>()
    );
    assert_eq!(firing[0].alert.profile, "checkout");
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    // Resolved a few windows after the shadow recovered (window 80).
    let at = resolved[0].at_ms / 10_000;
    assert!((81..=87).contains(&at), "resolved at window {at}");
    let list = alerts.alerts();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, AlertState::Resolved);
}

#[test]
fn more_shadow_errors_on_one_profile_are_an_error_rate_alert() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut w = Windower::new(WindowerConfig::default()).unwrap();
    let mut judge = Judge::new(JudgeConfig::default()).unwrap();
    let mut alerts = AlertManager::new(AlertConfig::default());
    let mut fired = Vec::new();
    for i in 0..60u64 {
        let windows = span(
            &mut rng,
            &mut w,
            i,
            |_, _| 1.0,
            |role, profile| {
                if role == Role::Shadow && profile == "search" && i >= 40 {
                    0.05
                } else {
                    0.002
                }
            },
        );
        let evals = judge.observe(&windows);
        for e in alerts.observe(&evals, (i + 1) * 10_000) {
            if e.kind == EventKind::Firing {
                fired.push((i, e));
            }
        }
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (at, e) = &fired[0];
    assert!((40..=42).contains(at), "{at}");
    assert_eq!(
        (e.alert.profile.as_str(), e.alert.metric),
        ("search", Metric::ErrorRate)
    );
    // Failed requests' trace ids, not the slowest ones.
    assert!(!e.alert.verdict.trace_ids.is_empty());
}

/// Baselines saved and restored: a judge started from them needs no warm-up.
#[test]
fn restored_baselines_catch_a_regression_right_after_a_restart() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut w = Windower::new(WindowerConfig::default()).unwrap();
    let mut judge = Judge::new(JudgeConfig::default()).unwrap();
    for i in 0..50u64 {
        let windows = span(&mut rng, &mut w, i, |_, _| 1.0, |_, _| 0.0);
        for e in judge.observe(&windows) {
            assert!(e.verdict.is_none(), "{e:?}");
        }
    }
    let saved = serde_json::to_string(judge.baselines()).unwrap();
    let restored: Baselines = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored.len(), judge.baselines().len());
    let mut judge = Judge::with_baselines(JudgeConfig::default(), restored).unwrap();
    let mut found = None;
    for i in 50..53u64 {
        // Production itself gets 40% slower: only its own history can tell.
        let windows = span(
            &mut rng,
            &mut w,
            i,
            |role, p| {
                if role == Role::Production && p == "search" {
                    1.4
                } else {
                    1.0
                }
            },
            |_, _| 0.0,
        );
        for e in judge.observe(&windows) {
            assert_ne!(e.status, Status::Warmup, "{e:?}");
            if let Some(v) = e.verdict {
                found.get_or_insert((i, v));
            }
        }
    }
    let (i, v) = found.expect("a verdict within three windows of the restart");
    assert!(i <= 52);
    assert_eq!(
        (v.profile.as_str(), v.role, v.metric, v.basis),
        ("search", Role::Production, Metric::P99, Basis::History)
    );
}
