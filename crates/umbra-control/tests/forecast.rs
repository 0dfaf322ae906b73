//! The forecaster on synthetic demand: a daily pattern with noise, one point a
//! minute, averaged into 5-minute buckets.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use rand::{Rng, SeedableRng, rngs::StdRng};
use umbra_control::{ForecastConfig, ForecastMethod, Forecaster};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Some Monday, 00:00 UTC, in ms.
const T0: i64 = 1_767_571_200_000;

/// Requests per second at `t` (ms): 200 at night, a morning bump to ~350 at
/// 09:00 and a sharp afternoon peak of ~1000 at 14:00.
fn demand(t: i64) -> f64 {
    let h = (t - T0).rem_euclid(DAY) as f64 / HOUR as f64;
    let bump = |centre: f64, height: f64, width: f64| {
        height * (-(h - centre).powi(2) / (2.0 * width * width)).exp()
    };
    200.0 + bump(9.0, 150.0, 1.5) + bump(14.0, 800.0, 1.0)
}

/// The true peak of day `d` and its time.
fn true_peak(d: i64) -> (f64, i64) {
    (0..DAY / MINUTE)
        .map(|m| T0 + d * DAY + m * MINUTE)
        .map(|t| (demand(t), t))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

fn config(horizon_h: u64) -> ForecastConfig {
    ForecastConfig {
        horizon: std::time::Duration::from_secs(horizon_h * 3600),
        capacity_per_instance: 100.0,
        headroom: 1.25,
        ..ForecastConfig::default()
    }
}

/// Feeds one noisy point a minute (±8%) from `from` up to, not including, `to`.
fn feed(f: &mut Forecaster, rng: &mut StdRng, from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let noise = 1.0 + rng.random_range(-0.08..0.08);
        f.push(t, demand(t) * noise).unwrap();
        t += MINUTE;
    }
}

#[test]
fn predicts_the_next_daily_peak_within_ten_percent() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut f = Forecaster::new(config(12)).unwrap();
    // Three days and the morning of the fourth, to 08:00.
    let now = T0 + 3 * DAY + 8 * HOUR;
    feed(&mut f, &mut rng, T0, now);
    let fc = f.forecast().unwrap();
    assert_eq!(fc.method, ForecastMethod::HoltWinters);
    let (peak, at) = true_peak(3);
    let err = (fc.peak_rps - peak).abs() / peak;
    eprintln!(
        "forecast peak {:.1} req/s at {:+} min from the true peak {peak:.1}; error {:.1}%",
        fc.peak_rps,
        (fc.peak_at_ms - at) / MINUTE,
        err * 100.0
    );
    assert!(err <= 0.10, "forecast {:.1}, true {peak:.1}", fc.peak_rps);
    assert!(
        (fc.peak_at_ms - at).abs() <= 30 * MINUTE,
        "peak at {} vs {at}",
        fc.peak_at_ms
    );
    // The evening after the peak is forecast back down: the model learned the
    // day's shape, not just a level.
    let evening = ((T0 + 3 * DAY + 19 * HOUR - fc.from_ms) / fc.bucket_ms) as usize;
    let e = fc.path[evening];
    assert!(
        (e - demand(T0 + 3 * DAY + 19 * HOUR)).abs() < 40.0,
        "19:00 forecast {e:.1}"
    );
}

#[test]
fn replicas_rise_ahead_of_the_peak_and_fall_after_it() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut f = Forecaster::new(config(1)).unwrap();
    let day = T0 + 3 * DAY;
    feed(&mut f, &mut rng, T0, day + 8 * HOUR);
    let (peak, peak_at) = true_peak(3);
    let for_peak = f.replicas_for(peak);
    // When a reactive autoscaler (replicas from the demand of the moment, no
    // noise) first has enough for the peak.
    let reactive_at = (0..DAY / MINUTE)
        .map(|m| day + m * MINUTE)
        .find(|t| f.replicas_for(demand(*t)) >= for_peak)
        .unwrap();
    let mut advised_at = None;
    let mut most = 0;
    let mut t = day + 8 * HOUR;
    while t < day + 20 * HOUR {
        feed(&mut f, &mut rng, t, t + 5 * MINUTE);
        t += 5 * MINUTE;
        let r = f.recommended_replicas().unwrap();
        most = most.max(r);
        if advised_at.is_none() && r >= for_peak {
            advised_at = Some(t);
        }
    }
    let advised_at = advised_at.expect("the advice never covered the peak");
    eprintln!(
        "peak {peak:.0} req/s at 14:00 needs {for_peak} replicas; advised {} min before the peak, reactive {} min before",
        (peak_at - advised_at) / MINUTE,
        (peak_at - reactive_at) / MINUTE
    );
    assert!(
        advised_at <= reactive_at - 30 * MINUTE,
        "advice at {} min, reactive at {} min (from midnight)",
        (advised_at - day) / MINUTE,
        (reactive_at - day) / MINUTE
    );
    // Ahead, but not by over-provisioning all day: never far above the need,
    // and back down by the evening.
    assert!(
        most <= for_peak + 1,
        "advised up to {most}, peak needs {for_peak}"
    );
    let evening = f.forecast().unwrap();
    assert!(evening.replicas <= 4, "20:00: {evening:?}");
}

#[test]
fn short_history_falls_back_to_the_trend() {
    let mut f = Forecaster::new(config(1)).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    // Six hours of a ramp from 100 to 400 req/s (50 more each hour), ±3% noise.
    let ramp = |t: i64| 100.0 + 50.0 * (t - T0) as f64 / HOUR as f64;
    let mut t = T0;
    while t < T0 + 6 * HOUR {
        f.push(t, ramp(t) * (1.0 + rng.random_range(-0.03..0.03)))
            .unwrap();
        t += MINUTE;
    }
    let fc = f.forecast().unwrap();
    assert_eq!(fc.method, ForecastMethod::Trend);
    let want = ramp(T0 + 7 * HOUR);
    let err = (fc.peak_rps - want).abs() / want;
    eprintln!(
        "trend forecast {:.1} req/s for {want:.1} an hour ahead",
        fc.peak_rps
    );
    assert!(
        err <= 0.10,
        "trend forecast {:.1} for {want:.1}",
        fc.peak_rps
    );
    // Points from before a closed bucket are counted, not used.
    f.push(T0, 1e6).unwrap();
    assert_eq!(f.forecast().unwrap().late_points, 1);
    assert!((f.forecast().unwrap().peak_rps - fc.peak_rps).abs() < 1e-9);
}

#[test]
fn the_config_reads_from_toml() {
    let c: ForecastConfig = toml::from_str(
        "bucket = \"1m\"\nseason = \"1d\"\nhorizon = \"2h\"\ncapacity_per_instance = 412.5\nmax_replicas = 40\n",
    )
    .unwrap();
    assert_eq!(c.bucket, std::time::Duration::from_secs(60));
    assert_eq!(c.season, std::time::Duration::from_secs(86_400));
    assert_eq!(
        (c.capacity_per_instance, c.max_replicas, c.headroom),
        (412.5, Some(40), 1.25)
    );
    Forecaster::new(c).unwrap();
    let e = toml::from_str::<ForecastConfig>("horizon = 3600")
        .unwrap_err()
        .to_string();
    assert!(e.contains("horizon"), "{e}");
    let c: ForecastConfig = toml::from_str("bucket = \"7m\"\ncapacity_per_instance = 1").unwrap();
    let e = Forecaster::new(c).unwrap_err().to_string();
    assert!(
        e.contains("control.replicas.season") && e.contains("buckets of \"7m\""),
        "{e}"
    );
}
