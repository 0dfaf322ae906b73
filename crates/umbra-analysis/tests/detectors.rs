//! Issue 6, acceptance 1: on simulated windows, every detector with its defaults
//! finds a 20% step in the p99 within three windows, and flags at most one
//! window in 10 000 of stationary noise.
//!
//! A window is 10 s of 100 requests/s for one profile: 1000 latencies drawn from
//! a lognormal with a 50 ms median and shape σ = 0.3 (p99 ≈ 2× the median), rolled
//! up by the real `Windower`; the detectors see ln(p99) per window, as the judge
//! feeds them. The step multiplies every latency by 1.2.
//!
//! Why σ = 0.3: the p99 of 1000 draws moves from window to window by about
//! 0.118·σ of itself (3.5% here), so a 20% step is 5.3 of its standard
//! deviations. At σ = 0.5 (p99 3.2× the median) it is 3.5, and no detector that
//! allows one false alarm in 10 000 windows can catch it within three windows
//! every time: the mean of three windows is then only 6 standard errors out,
//! against a limit near 4. `examples/detector_power.rs` prints the rates for
//! any σ; the crate's README has the table.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal};
use umbra_analysis::baseline::Metric;
use umbra_analysis::detect::{DETECTOR_NAMES, DetectorSpec, HoltWintersConfig};
use umbra_analysis::window::{Measurement, Role, WindowKey, Windower, WindowerConfig};

const SIGMA: f64 = 0.3;
const MEDIAN_US: f64 = 50_000.0;
const PER_WINDOW: u64 = 1000; // 100 requests/s × 10 s

/// ln(p99) of `n` windows, each latency multiplied by `scale(window index)`.
fn windows(seed: u64, n: usize, scale: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = LogNormal::new(MEDIAN_US.ln(), SIGMA).unwrap();
    let mut w = Windower::new(WindowerConfig::default()).unwrap();
    let key = WindowKey::new(Role::Shadow, "10.0.0.2:8080", "checkout");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = scale(i);
        for j in 0..PER_WINDOW {
            let latency: f64 = dist.sample(&mut rng) * s;
            w.ingest(&Measurement {
                timestamp_ms: i as u64 * 10_000 + j * 10,
                key: key.clone(),
                latency_us: latency as u64,
                status: 200,
                bytes: 0,
                trace_id: None,
            });
        }
        for win in w.advance((i as u64 + 1) * 10_000 + 2_000) {
            assert_eq!(win.requests, PER_WINDOW);
            out.push(Metric::P99.to_scale(win.p99().unwrap()));
        }
    }
    assert_eq!(out.len(), n);
    out
}

#[test]
fn a_20_percent_p99_step_is_found_within_three_windows_by_every_detector() {
    const BEFORE: usize = 120;
    const TRIALS: u64 = 12;
    let series: Vec<Vec<f64>> = (0..TRIALS)
        .map(|t| {
            windows(
                1000 + t,
                BEFORE + 3,
                |i| if i >= BEFORE { 1.2 } else { 1.0 },
            )
        })
        .collect();
    for name in DETECTOR_NAMES {
        let spec: DetectorSpec = name.parse().unwrap();
        for (t, s) in series.iter().enumerate() {
            let mut d = spec.build().unwrap();
            let mut before = 0;
            for x in &s[..BEFORE] {
                before += d.update(*x).flagged as usize;
            }
            let after: Vec<bool> = s[BEFORE..].iter().map(|x| d.update(*x).flagged).collect();
            assert!(
                after.contains(&true),
                "{name}, trial {t}: the step was not flagged within 3 windows ({after:?})"
            );
            assert!(
                before <= 1,
                "{name}, trial {t}: {before} flags before the step"
            );
        }
    }
}

#[test]
fn stationary_noise_gives_at_most_one_false_alarm_in_10000_windows() {
    let noise = windows(7, 10_000, |_| 1.0);
    for name in DETECTOR_NAMES {
        let mut d = name.parse::<DetectorSpec>().unwrap().build().unwrap();
        let flagged: Vec<usize> = noise
            .iter()
            .enumerate()
            .filter(|(_, x)| d.update(**x).flagged)
            .map(|(i, _)| i)
            .collect();
        assert!(
            flagged.len() <= 1,
            "{name}: {} false alarms in 10 000 windows, at {flagged:?}",
            flagged.len()
        );
    }
}

/// Holt-Winters with a season: a daily-like cycle in the p99 is not an anomaly,
/// a step on top of it is.
#[test]
fn holt_winters_with_a_season_ignores_the_cycle_and_finds_the_step() {
    let season = 60;
    let cycle =
        |i: usize| 1.0 + 0.3 * (2.0 * std::f64::consts::PI * i as f64 / season as f64).sin();
    let before = season * 6;
    let s = windows(11, before + 3, |i| {
        cycle(i) * if i >= before { 1.2 } else { 1.0 }
    });
    let spec = DetectorSpec::HoltWinters(HoltWintersConfig {
        season,
        ..HoltWintersConfig::default()
    });
    let mut d = spec.build().unwrap();
    let false_alarms = s[..before].iter().filter(|x| d.update(**x).flagged).count();
    assert!(false_alarms <= 1, "{false_alarms} flags on the cycle alone");
    assert!(s[before..].iter().any(|x| d.update(*x).flagged));
    // Without the season, the cycle widens the residuals' spread so much that
    // the same step goes unseen.
    let mut plain = DetectorSpec::HoltWinters(HoltWintersConfig::default())
        .build()
        .unwrap();
    for x in &s[..before] {
        plain.update(*x);
    }
    let seen: Vec<bool> = s[before..]
        .iter()
        .map(|x| plain.update(*x).flagged)
        .collect();
    assert_eq!(seen, [false, false, false]);
}
