//! End to end: the proxy's analysis finds a shadow regression on one profile and
//! a real Alertmanager (Debian's `prometheus-alertmanager`) receives exactly one
//! alert for it, which resolves when the shadow recovers (issue 6, acceptance 3).
//!
//! Everything runs on 127.0.0.1: two small upstreams (production, and a shadow
//! whose `/api/search` can be made 40% slower), the proxy mirroring every
//! request with one-second analysis windows, Alertmanager with a webhook
//! receiver that this test serves, and client threads on three routes.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::routes::{ROUTES, drive, upstream, write_log};
use support::{Background, Conn, free_port, get, scratch, umbra, wait_for_port, webhook};

fn alertmanager_alerts(port: u16) -> Vec<Value> {
    let reply = get(port, "/api/v2/alerts");
    assert_eq!(reply.status, 200, "{}", support::text(&reply.body));
    serde_json::from_slice::<Vec<Value>>(&reply.body).unwrap()
}

/// Every alert Alertmanager notified, as (status, labels).
fn notified(received: &Mutex<Vec<Value>>) -> Vec<(String, Value)> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["status"].as_str().unwrap_or("").to_string(),
                a["labels"].clone(),
            )
        })
        .collect()
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; proxy log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_shadow_regression_on_one_profile_reaches_alertmanager_once_and_resolves() {
    let dir = scratch("alerts-e2e");
    write_log(&dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let profiles = support::json(&dir.join("profiles.json"));
    let search = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().contains("/api/search"))
        .expect("a profile for /api/search")["id"]
        .as_str()
        .unwrap()
        .to_string();

    let slow = Arc::new(AtomicBool::new(false));
    let production = upstream(Arc::new(AtomicBool::new(false)));
    let shadow = upstream(slow.clone());

    let (hook, received, _) = webhook(0);
    let (am, am_cluster) = (free_port(), free_port());
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, profile]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook}/\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let mut alertmanager = std::process::Command::new("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am}"))
        // No gossip: a lone instance, and nothing listening beyond 127.0.0.1.
        .arg(format!("--cluster.listen-address=127.0.0.1:{am_cluster}"))
        .arg("--cluster.peer-timeout=1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
        .expect("prometheus-alertmanager (scripts/test installs Debian's package)");
    wait_for_port(am);

    // Tracing on, towards a collector that is not there: alerts still link
    // their example traces with the tracer's template.
    let (listen, admin, collector) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "http://127.0.0.1:{production}" }}]
[[shadow]]
name = "next"
url = "http://127.0.0.1:{shadow}"
[mirror]
percent = "100%"
[profiles]
file = "profiles.json"
[analysis]
window = "1s"
lateness = "300ms"
[alerts]
sinks = [{{ kind = "log" }}, {{ kind = "alertmanager", url = "http://127.0.0.1:{am}" }}]
[store]
path = "umbra.db"
[tracing]
endpoint = "http://127.0.0.1:{collector}"
link_template = "http://127.0.0.1:16686/trace/{{trace_id}}"
"#
        ),
    )
    .unwrap();
    let proxy = Background::start_with_env(
        &["proxy", "--config", "umbra.toml"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", ""),
            ("OTEL_SDK_DISABLED", ""),
            ("OTEL_TRACES_EXPORTER", ""),
        ],
        &dir,
        &[listen, admin],
    );
    let log = || std::fs::read_to_string(dir.join("umbra-proxy.stderr")).unwrap_or_default();

    // Clients: two threads per route, about 50 requests a second each route.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = drive(listen, 2, &stop);

    // A healthy start: no alert.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        notified(&received).is_empty(),
        "no alert while healthy: {:?}",
        notified(&received)
    );

    // The shadow's search becomes 40% slower: one alert, on that profile.
    slow.store(true, Ordering::Relaxed);
    wait_until(
        "Alertmanager notified a firing alert",
        Duration::from_secs(30),
        || notified(&received).iter().any(|(s, _)| s == "firing"),
        &log,
    );
    let firing = alertmanager_alerts(am);
    assert_eq!(
        firing.len(),
        1,
        "exactly one alert in Alertmanager: {firing:#?}"
    );
    let labels = &firing[0]["labels"];
    assert_eq!(labels["profile"], search.as_str(), "{labels}");
    assert_eq!(labels["role"], "shadow", "{labels}");
    assert_eq!(labels["alertname"], "UmbraRegression", "{labels}");
    // The annotations name the slow requests' traces and link the first (and all).
    let annotations = &firing[0]["annotations"];
    let ids: Vec<&str> = annotations["trace_ids"]
        .as_str()
        .unwrap()
        .split(',')
        .filter(|t| !t.is_empty())
        .collect();
    assert!(!ids.is_empty(), "{annotations:#}");
    let links: Vec<String> = ids
        .iter()
        .map(|t| format!("http://127.0.0.1:16686/trace/{t}"))
        .collect();
    assert_eq!(
        annotations["trace_url"],
        links[0].as_str(),
        "{annotations:#}"
    );
    assert_eq!(
        annotations["trace_urls"],
        links.join(" "),
        "{annotations:#}"
    );
    let ours: Value = serde_json::from_slice(&get(admin, "/api/alerts?state=firing").body).unwrap();
    assert_eq!(ours["alerts"].as_array().unwrap().len(), 1, "{ours:#}");

    // The shadow recovers: the alert resolves.
    slow.store(false, Ordering::Relaxed);
    wait_until(
        "Alertmanager notified the alert resolved",
        Duration::from_secs(30),
        || notified(&received).iter().any(|(s, _)| s == "resolved"),
        &log,
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    // Over the whole run, Alertmanager knew one alert and notified only it.
    let all = notified(&received);
    let distinct: std::collections::BTreeSet<String> =
        all.iter().map(|(_, l)| l.to_string()).collect();
    assert_eq!(distinct.len(), 1, "one alert notified: {all:#?}");
    let active: Vec<Value> = alertmanager_alerts(am)
        .into_iter()
        .filter(|a| a["status"]["state"] == "active")
        .collect();
    assert!(
        active.is_empty(),
        "no alert active after recovery: {active:#?}"
    );

    // The store kept it: `umbra alerts` lists it resolved, after the proxy is gone.
    proxy.signal("TERM");
    let mut proxy = proxy;
    assert!(
        proxy.wait(Duration::from_secs(15)).is_some(),
        "proxy stopped"
    );
    let out = umbra(&["alerts", "--config", "umbra.toml", "--json"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let stored: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["profile"], search.as_str());
    assert_eq!(stored[0]["state"], "resolved");

    // `umbra report` tells the story of the run from the store.
    let out = umbra(
        &[
            "report",
            "--config",
            "umbra.toml",
            "--since",
            "1h",
            "--profiles",
            "profiles.json",
            "-o",
            "report.html",
            "--markdown",
            "report.md",
            "--trace-url",
            "http://127.0.0.1:16686/trace/{trace_id}",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for doc in [&html, &md] {
        assert!(
            doc.contains(&format!("GET /api/search · browser · small ({search})")),
            "{doc}"
        );
        assert!(doc.contains("resolved"), "{doc}");
        for (path, _, _, _, _) in ROUTES {
            assert!(doc.contains(path), "{path} in the latency table: {doc}");
        }
    }
    assert!(!html.contains("<script"), "the report needs no script");

    let _ = alertmanager.kill();
    let _ = alertmanager.wait();
}

#[test]
fn bad_analysis_and_alert_settings_are_named_by_file_line_and_key() {
    let dir = scratch("alerts-config");
    let base = "[listen]\naddress = \"127.0.0.1:0\"\n[production]\nservers = [{ url = \"http://127.0.0.1:9\" }]\n";
    let cases = [
        (
            "[analysis]\nwindow = \"soon\"\n",
            "line 6, column 10, key analysis.window: \"soon\" is not a duration",
        ),
        (
            "[analysis.judge]\nagreement = { n = 4, m = 3 }\n",
            "agreement 4 of 3: expected 1 <= n <= m",
        ),
        (
            "[alerts]\nsinks = [{ kind = \"alertmanager\", url = \"not a url\" }]\n",
            "key alerts.sinks[0]: alertmanager not a url: url `not a url",
        ),
        (
            "[alerts]\nsinks = [{ kind = \"pager\" }]\n",
            "line 6, column 19, key alerts.sinks[0].kind: unknown variant `pager`",
        ),
        (
            "[store]\nfile = \"x.db\"\n",
            "key store.file: unknown field `file`",
        ),
    ];
    for (section, expected) in cases {
        std::fs::write(dir.join("bad.toml"), format!("{base}{section}")).unwrap();
        let out = umbra(&["check", "--config", "bad.toml"], &dir);
        let stderr = support::text(&out.stderr);
        assert!(!out.status.success(), "{section}: accepted");
        assert!(stderr.contains("bad.toml: "), "{section}: {stderr}");
        assert!(stderr.contains(expected), "{section}: {stderr}");
    }
    // `umbra alerts` explains where alerts live when there is no store.
    std::fs::write(dir.join("nostore.toml"), base).unwrap();
    let out = umbra(&["alerts", "--config", "nostore.toml"], &dir);
    assert!(!out.status.success());
    assert!(
        support::text(&out.stderr).contains("has no [store] section"),
        "{}",
        support::text(&out.stderr)
    );
    let out = umbra(&["alerts", "--store", "missing.db"], &dir);
    assert!(
        support::text(&out.stderr).contains("store missing.db: no such file"),
        "{}",
        support::text(&out.stderr)
    );
}

#[test]
fn baselines_and_alerts_survive_a_restart_through_the_store() {
    let dir = scratch("alerts-restart");
    let production = upstream(Arc::new(AtomicBool::new(false)));
    let run = |dir: &Path| {
        let (listen, admin) = (free_port(), free_port());
        std::fs::write(
            dir.join("umbra.toml"),
            format!(
                "[listen]\naddress = \"127.0.0.1:{listen}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
                 [production]\nservers = [{{ url = \"http://127.0.0.1:{production}\" }}]\n\
                 [analysis]\nwindow = \"200ms\"\nlateness = \"100ms\"\n[store]\npath = \"state/umbra.db\"\n"
            ),
        )
        .unwrap();
        let proxy = Background::start(&["proxy", "--config", "umbra.toml"], dir, &[listen, admin]);
        (proxy, listen, admin)
    };
    let baselines = |admin: u16| -> u64 {
        let v: Value = serde_json::from_slice(&get(admin, "/api/analysis").body).unwrap();
        v["baselines"].as_u64().unwrap()
    };

    let (mut proxy, listen, admin) = run(&dir);
    let mut conn = Conn::open(listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    while baselines(admin) == 0 {
        assert!(
            Instant::now() < deadline,
            "no baseline learned: {}",
            proxy.log()
        );
        assert_eq!(conn.request("GET", "/nothing", &[], b"").status, 404);
    }
    // Let a few more windows teach it, then stop: the store keeps what was learned.
    for _ in 0..20 {
        conn.request("GET", "/nothing", &[], b"");
    }
    std::thread::sleep(Duration::from_millis(500));
    let learned = baselines(admin);
    proxy.signal("TERM");
    assert!(proxy.wait(Duration::from_secs(15)).is_some());
    assert!(learned > 0);

    let (proxy, _, admin) = run(&dir);
    assert!(
        proxy
            .log()
            .contains(&format!("{learned} baselines and 0 alerts restored"))
            || baselines(admin) >= learned,
        "{}",
        proxy.log()
    );
    assert!(baselines(admin) >= learned, "{}", proxy.log());
}
