//! End to end: the proxy's spans reach a real OTLP decoder (PyPI's
//! `opentelemetry-proto` behind a small receiver) with their parents, links and
//! attributes (`http.route` from the profiles among them), an alert on a slow
//! shadow carries trace ids that are in the exported spans (issue 8,
//! acceptance 1 and 2), and a leg of a mirrored request kept by a tail rule
//! brings its unsampled twin.

#![allow(clippy::unwrap_used)]

#[path = "../../umbra-trace/tests/support/mod.rs"]
mod otlp;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::routes::{ROUTES, upstream, upstream_seeing, write_log};
use support::{Background, Conn, free_port, get, scratch, umbra};

#[test]
fn spans_reach_an_otlp_decoder_and_alerts_carry_exported_trace_ids() {
    let dir = scratch("traces-e2e");
    write_log(&dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let profiles = support::json(&dir.join("profiles.json"));
    let search = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().contains("/api/search"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let receiver = otlp::Receiver::start(&[]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let production = upstream_seeing(Arc::new(AtomicBool::new(false)), Some(seen.clone()));
    // The shadow is 40% slower on /api/search from the start.
    let shadow = upstream(Arc::new(AtomicBool::new(true)));
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
servers = [{{ url = "http://127.0.0.1:{production}" }}]
[[shadow]]
name = "next"
url = "http://127.0.0.1:{shadow}"
[mirror]
percent = "100%"
[profiles]
file = "profiles.json"
[tracing]
endpoint = "{}"
service_name = "umbra-e2e"
sampler = "parentbased_always_on"
interval = "200ms"
link_template = "http://127.0.0.1:16686/trace/{{trace_id}}"
[analysis]
window = "1s"
lateness = "300ms"
"#,
            receiver.url()
        ),
    )
    .unwrap();
    // The variables a deployment may set must not steer the test elsewhere.
    let proxy = Background::start_with_env(
        &["proxy", "--config", "umbra.toml"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", ""),
            ("OTEL_SDK_DISABLED", ""),
        ],
        &dir,
        &[listen, admin],
    );

    // Clients: every request carries a traceparent of its own, as from a traced caller.
    let stop = Arc::new(AtomicBool::new(false));
    // Per request: its trace id, the caller's span id, the route.
    type Sent = Vec<(String, String, &'static str)>;
    let sent: Arc<Mutex<Sent>> = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for (path, method, status, _, _) in ROUTES {
        for t in 0..2u64 {
            let (stop, sent) = (stop.clone(), sent.clone());
            clients.push(std::thread::spawn(move || {
                let mut conn = Conn::open(listen);
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let trace = format!("{:032x}", rand_u128(i, path));
                    let parent = format!("{:016x}", (i + 1) * 0x9e37_79b9);
                    let header = format!("00-{trace}-{parent}-01");
                    let body: &[u8] = if method == "POST" {
                        b"{\"sku\":1}"
                    } else {
                        b""
                    };
                    let reply = conn.request(
                        method,
                        &format!("{path}?n={i}"),
                        &[("traceparent", &header)],
                        body,
                    );
                    assert_eq!(reply.status, status);
                    sent.lock().unwrap().push((trace, parent, path));
                    i += 2;
                }
            }));
        }
    }

    // The analysis flags the shadow's search; its alert names slow requests' traces.
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let v: Value =
            serde_json::from_slice(&get(admin, "/api/alerts?state=firing").body).unwrap();
        if let Some(a) = v["alerts"].as_array().and_then(|a| a.first()) {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no alert: {}", proxy.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(alert["profile"], search.as_str(), "{alert:#}");
    assert_eq!(alert["role"], "shadow");
    let alert_traces: Vec<String> = alert["verdict"]["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(
        !alert_traces.is_empty(),
        "the alert carries example traces: {alert:#}"
    );

    // Everything measured so far has been exported (200 ms batches).
    std::thread::sleep(Duration::from_secs(2));
    let spans = receiver.spans();
    let by_trace =
        |t: &str| -> Vec<&Value> { spans.iter().filter(|s| s["trace_id"] == t).collect() };
    for t in &alert_traces {
        let found = by_trace(t);
        assert!(!found.is_empty(), "alert trace {t} was exported");
        let s = found[0];
        assert_eq!(s["attributes"]["umbra.role"], "shadow", "{s:#}");
        assert_eq!(s["attributes"]["umbra.profile"], search.as_str(), "{s:#}");
    }

    // A live span continues the caller's trace under the caller's span, as a
    // server span with the exchange's attributes; production saw it as parent.
    let (trace, parent, path) = sent.lock().unwrap()[0].clone();
    let live: Vec<&Value> = by_trace(&trace)
        .into_iter()
        .filter(|s| s["attributes"]["umbra.role"] == "production")
        .collect();
    assert_eq!(live.len(), 1, "one live span for trace {trace}");
    let live = live[0];
    assert_eq!(live["parent_span_id"], parent.as_str(), "{live:#}");
    assert_eq!(live["kind"], 2, "SPAN_KIND_SERVER: {live:#}");
    assert_eq!(live["resource"]["service.name"], "umbra-e2e", "{live:#}");
    let a = &live["attributes"];
    assert!(
        a["http.response.status_code"].as_i64().is_some(),
        "{live:#}"
    );
    assert!(
        a["umbra.profile"].as_str().unwrap().starts_with("p-"),
        "{live:#}"
    );
    assert_eq!(
        a["umbra.upstream"],
        format!("127.0.0.1:{production}"),
        "{live:#}"
    );
    // `http.route` is the request's template in the profile set (these three
    // routes have no variable segment, so it is the path, without the query),
    // one of the templates of the profile the request went to.
    assert_eq!(a["http.route"], path, "{live:#}");
    let templates: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == a["umbra.profile"])
        .unwrap()["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert!(templates.contains(&path), "{path} in {templates:?}");
    let live_span = live["span_id"].as_str().unwrap();
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|tp| *tp == format!("00-{trace}-{live_span}-01")),
        "production received our span as its parent"
    );

    // Its shadow copy has a trace of its own, linked to the live span.
    let copy: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["links"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|l| l["span_id"] == live_span && l["trace_id"] == trace.as_str())
            })
        })
        .collect();
    assert_eq!(copy.len(), 1, "one shadow span linked to {live_span}");
    let copy = copy[0];
    assert_ne!(copy["trace_id"], trace.as_str());
    assert_eq!(copy["kind"], 3, "SPAN_KIND_CLIENT: {copy:#}");
    assert_eq!(copy["attributes"]["umbra.role"], "shadow");
    assert_eq!(copy["attributes"]["umbra.upstream"], "next");
    assert_eq!(copy["attributes"]["umbra.live.trace_id"], trace.as_str());
    assert_eq!(copy["attributes"]["http.route"], path, "{copy:#}");
    assert!(
        copy["attributes"]["umbra.queue_wait_us"].as_i64().is_some(),
        "{copy:#}"
    );
    assert!(
        copy["attributes"]["umbra.mask.masked"].as_i64().is_some(),
        "{copy:#}"
    );
    receiver.requests();
}

/// With the head sampler off, only the tail rule (`slow`) keeps spans; a
/// mirrored request's legs still go out together: first the shadow is the
/// slow one and brings its fast live twin (so the copy's link points at an
/// exported span), then production is, and brings its fast copy. Requests
/// slow on neither side export nothing.
#[test]
fn a_leg_kept_by_a_tail_rule_brings_its_unsampled_twin() {
    let dir = scratch("traces-linked");
    write_log(&dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let receiver = otlp::Receiver::start(&[]);
    // /api/search takes 60 ms, or 84 ms while its upstream's flag is set;
    // /api/catalog 40 ms. The tail rule keeps 75 ms and more.
    let (production_slow, shadow_slow) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
    );
    let production = upstream(production_slow.clone());
    let shadow = upstream(shadow_slow.clone());
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
servers = [{{ url = "http://127.0.0.1:{production}" }}]
[[shadow]]
name = "next"
url = "http://127.0.0.1:{shadow}"
[mirror]
percent = "100%"
[profiles]
file = "profiles.json"
[tracing]
endpoint = "{}"
sampler = "always_off"
slow = "75ms"
interval = "200ms"
[analysis]
enabled = false
"#,
            receiver.url()
        ),
    )
    .unwrap();
    let _proxy = Background::start_with_env(
        &["proxy", "--config", "umbra.toml"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", ""),
            ("OTEL_SDK_DISABLED", ""),
        ],
        &dir,
        &[listen, admin],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["/api/search", "/api/search", "/api/catalog"]
        .into_iter()
        .map(|path| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(listen);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let reply = conn.request("GET", &format!("{path}?q=w{i}"), &[], b"");
                    assert_eq!(reply.status, 200);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    shadow_slow.store(false, Ordering::Relaxed);
    production_slow.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // The linker's gauges are valid Prometheus text; nothing was forgotten.
    let metrics = support::text(&get(admin, "/metrics").body);
    assert!(
        metrics.contains("# TYPE umbra_trace_twins_waiting gauge")
            && metrics.contains("umbra_trace_twins_forgotten_total 0"),
        "{metrics}"
    );
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus package)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        support::text(&out.stdout),
        support::text(&out.stderr)
    );
    // Copies finish within 100 ms; spans leave in 200 ms batches.
    std::thread::sleep(Duration::from_secs(2));
    let spans = receiver.spans();

    let ms = |s: &Value| {
        (s["end_time_unix_nano"].as_u64().unwrap() - s["start_time_unix_nano"].as_u64().unwrap())
            as f64
            / 1e6
    };
    let id = |s: &Value| {
        (
            s["trace_id"].as_str().unwrap().to_string(),
            s["span_id"].as_str().unwrap().to_string(),
        )
    };
    let live: std::collections::HashMap<(String, String), &Value> = spans
        .iter()
        .filter(|s| s["attributes"]["umbra.role"] == "production")
        .map(|s| (id(s), s))
        .collect();
    let copies: Vec<(&Value, (String, String))> = spans
        .iter()
        .filter(|s| s["attributes"]["umbra.role"] == "shadow")
        .map(|s| {
            let l = &s["links"][0];
            let twin = (
                l["trace_id"].as_str().unwrap().to_string(),
                l["span_id"].as_str().unwrap().to_string(),
            );
            (s, twin)
        })
        .collect();
    assert!(!copies.is_empty() && !live.is_empty(), "{spans:#?}");
    for s in &spans {
        // Nothing was head-sampled; the tail rule says why each span went out.
        assert_eq!(s["flags"].as_u64().unwrap() & 1, 0, "{s:#}");
        assert_eq!(s["attributes"]["umbra.kept"], "slow", "{s:#}");
        let route = s["attributes"]["http.route"].as_str();
        assert!(
            matches!(route, Some("/api/search" | "/api/catalog")),
            "{s:#}"
        );
    }
    // No copy links to a live span that was not exported.
    let mut slow_copy_fast_live = 0;
    let mut fast_copy_slow_live = 0;
    let mut has_slow_copy: std::collections::HashSet<&(String, String)> = Default::default();
    for (copy, twin) in &copies {
        let l = live
            .get(twin)
            .unwrap_or_else(|| panic!("the live twin {twin:?} of {copy:#} was exported"));
        let (c, l) = (ms(copy), ms(l));
        // Every span went out for its own slowness or its twin's.
        assert!(c >= 75.0 || l >= 75.0, "copy {c} ms, live {l} ms");
        if c >= 75.0 {
            has_slow_copy.insert(twin);
            if l < 75.0 {
                slow_copy_fast_live += 1;
            }
        } else if l >= 75.0 {
            fast_copy_slow_live += 1;
        }
    }
    for (key, l) in &live {
        assert!(
            ms(l) >= 75.0 || has_slow_copy.contains(key),
            "a fast live span went out without a slow copy: {l:#}"
        );
    }
    assert!(
        slow_copy_fast_live > 0,
        "a slow copy brought its fast live twin: {spans:#?}"
    );
    assert!(
        fast_copy_slow_live > 0,
        "a slow live span brought its fast copy: {spans:#?}"
    );
}

/// A distinct nonzero trace id per client request.
fn rand_u128(i: u64, path: &str) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in path.bytes().chain(i.to_le_bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h | 1
}

/// `/metrics` in OpenMetrics carries the latest slow request's trace as an
/// exemplar on its latency bucket, and a real Prometheus (exemplar storage on)
/// stores it, with the collector down all along.
#[test]
fn openmetrics_exemplars_reach_a_real_prometheus() {
    let dir = scratch("traces-exemplars");
    let production = upstream(Arc::new(AtomicBool::new(false)));
    let (listen, admin, dead) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            "[listen]\naddress = \"127.0.0.1:{listen}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [production]\nservers = [{{ url = \"http://127.0.0.1:{production}\" }}]\n\
             [tracing]\nendpoint = \"http://127.0.0.1:{dead}\"\nsampler = \"always_off\"\nslow = \"30ms\"\n"
        ),
    )
    .unwrap();
    let _proxy = Background::start_with_env(
        &["proxy", "--config", "umbra.toml"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_TRACES_SAMPLER", ""),
        ],
        &dir,
        &[listen, admin],
    );
    let mut conn = Conn::open(listen);
    for i in 0..20 {
        // /api/search takes 60 ms: slow by the tail rule, so each is an exemplar.
        assert_eq!(
            conn.request("GET", &format!("/api/search?q={i}"), &[], b"")
                .status,
            200
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Conn::open(admin);
    let reply = c.request(
        "GET",
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
        b"",
    );
    let text = support::text(&reply.body);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        reply.headers
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE umbra_requests counter"), "{text}");
    let exemplar_line = text
        .lines()
        .find(|l| {
            l.starts_with("umbra_request_duration_seconds_bucket") && l.contains(" # {trace_id=\"")
        })
        .unwrap_or_else(|| panic!("no exemplar in {text}"));
    let trace_id = exemplar_line
        .split("trace_id=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // The plain format has no exemplars and no EOF.
    let plain = support::text(&get(admin, "/metrics").body);
    assert!(
        !plain.contains(" # {") && !plain.contains("# EOF"),
        "{plain}"
    );

    let web = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: umbra\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (scripts/test installs Debian's prometheus package)");
    support::wait_for_port(web);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stored = Vec::new();
    while Instant::now() < deadline {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reply = get(
            web,
            &format!(
                "/api/v1/query_exemplars?query=umbra_request_duration_seconds_bucket&start={}&end={}",
                now - 600,
                now + 60
            ),
        );
        if reply.status == 200 {
            let v: Value = serde_json::from_slice(&reply.body).unwrap();
            stored = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
                .collect();
            if !stored.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        stored.contains(&trace_id),
        "Prometheus stored exemplar {trace_id}: {stored:?}; {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
}
