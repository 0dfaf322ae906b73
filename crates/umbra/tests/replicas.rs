//! End to end: `umbra proxy` with `[control.replicas]` forecasts its own live
//! request rate and publishes recommended replicas ahead of the peak.
//!
//! A day in miniature: one-second buckets and a six-second season, the client
//! sending 20 req/s for four seconds and 100 req/s for two, on the wall clock's
//! seconds. Once the seasonal model has its two seasons, the advice on
//! `/metrics` must cover the peak while the current rate is still low (the
//! forecast, not the rate of the moment), and come back down after it; the
//! webhook (a receiver in this test, which fails its first request) gets the
//! changes as JSON; `umbra report` lists them from the store.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{Background, Conn, Nginx, free_port, get, scratch, text, umbra, webhook};

const LOW: f64 = 20.0;
const HIGH: f64 = 100.0;
/// Requests per second per instance: LOW needs 1 replica, HIGH 4.
const CAPACITY: f64 = 30.0;

/// The demand at wall-clock second `s`: the peak is seconds 4 and 5 of every six.
fn demand(s: u64) -> f64 {
    if s % 6 >= 4 { HIGH } else { LOW }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Sends requests through the proxy at `rate(second)` until `stop`.
fn client(listen: u16, stop: Arc<AtomicBool>, rate: fn(u64) -> f64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn = Conn::open(listen);
        let mut next = now_ms();
        while !stop.load(Ordering::Relaxed) {
            let now = now_ms();
            if next > now {
                std::thread::sleep(Duration::from_secs_f64((next - now) / 1000.0));
            } else if now - next > 200.0 {
                // Stalled (a busy machine): no burst that would land in the wrong second.
                next = now;
            }
            assert_eq!(conn.request("GET", "/", &[], b"").status, 200);
            next += 1000.0 / rate((next / 1000.0) as u64);
        }
    })
}

/// The samples of `/metrics`, by name and labels as written.
fn metrics(admin: u16) -> BTreeMap<String, f64> {
    text(&get(admin, "/metrics").body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn wait_until<T>(
    what: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; proxy log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn promtool_accepts(body: &[u8]) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(body).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_advice_covers_the_peak_before_it_comes_and_reaches_the_webhook() {
    let dir = scratch("replicas-e2e");
    let nginx = Nginx::start(&dir);
    let (hook, received, hook_requests) = webhook(1);
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "{url}" }}]
[store]
path = "umbra.db"
[control.replicas]
bucket = "1s"
season = "6s"
horizon = "3s"
headroom = 1.0
capacity_per_instance = {CAPACITY}
alpha = 0.3
beta = 0.05
gamma = 0.5
webhook = "http://127.0.0.1:{hook}/scale"
webhook_headers = {{ authorization = "Bearer test" }}
webhook_timeout = "2s"
"#,
            url = nginx.url
        ),
    )
    .unwrap();
    let mut proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);
    let log = || std::fs::read_to_string(dir.join("umbra-proxy.stderr")).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = client(listen, stop.clone(), demand);

    let key = |m: &str| format!("umbra_forecast_method{{method=\"{m}\"}}");
    let mut methods_seen = std::collections::BTreeSet::new();
    // Ahead: the seasonal model's advice covers the peak (at least 80% of it)
    // while the current rate alone needs one replica.
    let peak_replicas = (HIGH / CAPACITY).ceil();
    let ahead = wait_until(
        "advice ahead of the peak",
        Duration::from_secs(60),
        &log,
        || {
            let m = metrics(admin);
            for method in ["current-rate", "trend", "holt-winters"] {
                if m.get(&key(method)) == Some(&1.0) {
                    methods_seen.insert(method);
                }
            }
            let (rec, cur) = (
                *m.get("umbra_recommended_replicas")?,
                *m.get("umbra_forecast_current_replicas")?,
            );
            (m.get(&key("holt-winters")) == Some(&1.0)
                && cur == 1.0
                && rec >= (0.8 * HIGH / CAPACITY).ceil())
            .then_some((rec, m))
        },
    );
    eprintln!("ahead of the peak: {ahead:?}");
    assert!(
        ahead.0 <= peak_replicas + 1.0,
        "no wild over-provisioning: {ahead:?}"
    );
    assert!(
        methods_seen.contains("current-rate") || methods_seen.contains("trend"),
        "the short-history models answered first: {methods_seen:?}"
    );
    // And after the peak it comes back down: not stuck at the maximum.
    wait_until(
        "advice back down after the peak",
        Duration::from_secs(20),
        &log,
        || {
            let m = metrics(admin);
            (m.get(&key("holt-winters")) == Some(&1.0)
                && m.get("umbra_recommended_replicas") == Some(&1.0))
            .then_some(())
        },
    );

    // The page passes promtool, and the API answers in the dashboard's format.
    promtool_accepts(&get(admin, "/metrics").body);
    let api: Value = serde_json::from_slice(&get(admin, "/api/capacity").body).unwrap();
    assert_eq!(api["state"], "forecasting", "{api:#}");
    assert_eq!(api["method"], "holt-winters", "{api:#}");
    assert_eq!(api["capacity_per_instance"], CAPACITY, "{api:#}");
    assert_eq!(
        api["capacity_source"],
        "control.replicas.capacity_per_instance"
    );
    assert!(
        api["recommended_replicas"].is_u64() && api["current_replicas"].is_u64(),
        "{api:#}"
    );
    assert!(
        api["path"].as_array().is_some_and(|p| p.len() == 4),
        "{api:#}"
    );

    // The webhook: its first request failed (counted), the newest advice was
    // sent again, and every change since arrived with the documented keys.
    let bodies = wait_until("webhook deliveries", Duration::from_secs(10), &log, || {
        let r = received.lock().unwrap().clone();
        r.iter()
            .any(|b| {
                b["method"] == "holt-winters"
                    && b["recommended_replicas"].as_f64() >= Some(0.8 * HIGH / CAPACITY)
            })
            .then_some(r)
    });
    for b in &bodies {
        for k in [
            "recommended_replicas",
            "current_replicas",
            "peak_rps",
            "current_rps",
        ] {
            assert!(b[k].is_number(), "{k} in {b}");
        }
        assert!(
            b["peak_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{b}"
        );
        assert_eq!(b["horizon"], "3s", "{b}");
        assert!(
            ["current-rate", "trend", "holt-winters"].contains(&b["method"].as_str().unwrap()),
            "{b}"
        );
        assert_ne!(
            b["recommended_replicas"], b["previous_replicas"],
            "only changes are sent: {b}"
        );
    }
    let m = metrics(admin);
    assert_eq!(
        m["umbra_replicas_webhook_requests_total{result=\"failed\"}"],
        1.0
    );
    assert!(m["umbra_replicas_webhook_requests_total{result=\"ok\"}"] >= bodies.len() as f64);
    assert!(hook_requests.load(Ordering::Relaxed) > bodies.len());

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    proxy.signal("TERM");
    assert!(
        proxy
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{}",
        log()
    );
    assert!(log().contains("umbra: replicas"), "{}", log());

    // The store kept every change; the report lists them.
    let out = umbra(
        &["report", "--store", "umbra.db", "--markdown", "report.md"],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let section = report
        .split("## Replica advice")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let rows = section
        .lines()
        .filter(|l| l.contains("holt-winters"))
        .count();
    assert!(rows >= 2, "{section}");
    assert!(section.contains(" → "), "{section}");
}

#[test]
fn capacity_comes_from_the_store_when_not_configured() {
    let dir = scratch("replicas-store");
    let nginx = Nginx::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "{url}" }}]
[analysis]
enabled = false
[store]
path = "umbra.db"
[control.replicas]
bucket = "1s"
season = "2s"
headroom = 1.0
"#,
            url = nginx.url
        ),
    )
    .unwrap();
    let _proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);
    let log = || std::fs::read_to_string(dir.join("umbra-proxy.stderr")).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = client(listen, stop.clone(), |_| 20.0);

    // Rates but no replicas while no capacity is known, and the API says why.
    let api = wait_until("a measured rate", Duration::from_secs(15), &log, || {
        let api: Value = serde_json::from_slice(&get(admin, "/api/capacity").body).ok()?;
        api["current_rps"].is_number().then_some(api)
    });
    assert_eq!(api["state"], "no capacity", "{api:#}");
    assert!(
        api["capacity_missing"]
            .as_str()
            .unwrap()
            .contains("umbra capacity --store"),
        "{api:#}"
    );
    assert!(!metrics(admin).contains_key("umbra_recommended_replicas"));

    // A capacity run saved for the production server is picked up without a
    // restart (another target's, newer, is not).
    let store = umbra_store::Store::open(&dir.join("umbra.db")).unwrap();
    let row = |target: &str, rps: f64| umbra_store::CapacityRow {
        target: target.to_string(),
        measured_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        capacity_rps: Some(rps),
        body: serde_json::json!({}),
    };
    store.add_capacity(&row(&nginx.url, 8.0)).unwrap();
    store.add_capacity(&row("http://10.9.9.9:80", 1.0)).unwrap();
    let rec = wait_until(
        "replicas from the stored capacity",
        Duration::from_secs(15),
        &log,
        || metrics(admin).get("umbra_recommended_replicas").copied(),
    );
    // About 20 req/s over 8 per instance.
    assert!((2.0..=4.0).contains(&rec), "{rec}");
    let api: Value = serde_json::from_slice(&get(admin, "/api/capacity").body).unwrap();
    assert_eq!(api["capacity_per_instance"], 8.0, "{api:#}");
    assert!(
        api["capacity_source"]
            .as_str()
            .unwrap()
            .contains(&format!("capacity curve for {}", nginx.url)),
        "{api:#}"
    );
    assert!(
        log().contains("capacity 8.0 req/s per instance, from the store"),
        "{}",
        log()
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}

#[test]
fn bad_settings_name_the_key_and_no_table_means_no_forecast() {
    let dir = scratch("replicas-check");
    let base = "[listen]\naddress = \"127.0.0.1:9\"\n[production]\nservers = [{ url = \"http://127.0.0.1:9\" }]\n";
    for (table, want) in [
        (
            "bucket = \"1m\"\ninterval = \"7s\"\n",
            "control.replicas.interval = \"7s\"",
        ),
        ("headroom = 0.9\n", "control.replicas.headroom = 0.9"),
        ("webhook = \"not a url\"\n", "control.replicas.webhook"),
        ("bukket = \"1m\"\n", "unknown field `bukket`"),
    ] {
        std::fs::write(
            dir.join("bad.toml"),
            format!("{base}[control.replicas]\n{table}"),
        )
        .unwrap();
        let out = umbra(&["check", "--config", "bad.toml"], &dir);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{table}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains(want),
            "{table}: {err}"
        );
    }
    std::fs::write(
        dir.join("good.toml"),
        format!("{base}[control.replicas]\ncapacity_per_instance = 50.0\nhorizon = \"30m\"\n"),
    )
    .unwrap();
    let out = umbra(&["check", "--config", "good.toml"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replicas: forecast every 5m (5m buckets, 1day season, 30m horizon, headroom 1.25), 50 req/s per instance"),
        "{}",
        text(&out.stdout)
    );

    // Without the table, /api/capacity is 404 (the dashboard's "no forecast yet").
    let nginx = Nginx::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let _proxy = Background::start(
        &[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--production",
            &nginx.url,
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        &dir,
        &[listen, admin],
    );
    assert_eq!(get(admin, "/api/capacity").status, 404);
    assert!(!text(&get(admin, "/metrics").body).contains("umbra_recommended_replicas"));
}
