//! Weights in a closed loop through a real HAProxy: three local servers, one
//! twice as slow; traffic goes through HAProxy, the controller scores what the
//! client measured, and the weights go back to HAProxy over its runtime API.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use peers::{HAPROXY, Peer, TestServer, fetch_many, free_port, listening, scratch, wait_until};
use umbra_control::{
    ExportError, HaproxyRuntime, HaproxySocket, Observation, ServerState, WeightConfig,
    WeightController, Weights, WeightsExporter,
};

const FAST: Duration = Duration::from_millis(20);
const SLOW: Duration = Duration::from_millis(40);
const REQUESTS_PER_INTERVAL: usize = 150;

/// HAProxy in the foreground with an admin stats socket in `dir` and one
/// roundrobin backend `app` over `servers` (named s1, s2, ... with weight 1).
fn start_haproxy(dir: &Path, servers: &[&TestServer]) -> (Peer, u16, HaproxySocket) {
    let port = free_port();
    let sock = dir.join("admin.sock");
    let mut conf = format!(
        "global\n  stats socket {} mode 600 level admin\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend app\n\
         backend app\n  balance roundrobin\n",
        sock.display()
    );
    for (i, s) in servers.iter().enumerate() {
        conf.push_str(&format!("  server s{} {} weight 1\n", i + 1, s.addr()));
    }
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, conf).unwrap();
    let mut peer = Peer::start(
        HAPROXY,
        &["-db", "-f", cfg.to_str().unwrap()],
        dir.join("haproxy.log"),
    );
    wait_until("HAProxy listening", || {
        assert!(peer.running(), "HAProxy exited: {}", peer.log());
        listening(port) && sock.exists()
    });
    (peer, port, HaproxySocket::Unix(sock))
}

/// One interval of traffic through HAProxy, rolled up per server as the proxy
/// would measure it.
fn interval(
    port: u16,
    names: &BTreeMap<String, String>,
) -> (Vec<Observation>, BTreeMap<String, usize>) {
    let answers = fetch_many(port, REQUESTS_PER_INTERVAL, 6);
    let mut per: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for a in &answers {
        let addr = names
            .get(&a.server)
            .unwrap_or_else(|| panic!("answer from an unknown server: {a:?}"));
        let e = per.entry(addr.clone()).or_default();
        e.0 += 1;
        if a.status >= 500 {
            e.1 += 1;
        } else {
            e.2 += a.latency.as_secs_f64() * 1000.0;
        }
    }
    let counts = per.iter().map(|(k, v)| (k.clone(), v.0 as usize)).collect();
    let obs = per
        .into_iter()
        .map(|(addr, (n, errors, total_ms))| {
            let ok = n - errors;
            let o = Observation::new(addr, n, errors);
            if ok > 0 {
                o.profile("all", ok, total_ms / ok as f64)
            } else {
                o
            }
        })
        .collect();
    (obs, counts)
}

/// What HAProxy says now, both ways: `show servers state` and `get weight`.
fn haproxy_weights(h: &HaproxyRuntime) -> BTreeMap<String, u32> {
    let state: BTreeMap<String, u32> = h
        .servers()
        .unwrap()
        .into_iter()
        .map(|s| (s.address(), s.weight))
        .collect();
    for s in h.servers().unwrap() {
        assert_eq!(
            h.weight(&s.name).unwrap(),
            s.weight,
            "get weight {}",
            s.name
        );
    }
    state
}

fn rounded(w: &Weights) -> BTreeMap<String, u32> {
    w.rounded().into_iter().collect()
}

#[test]
fn weights_converge_on_real_servers_and_haproxy_applies_them() {
    let dir = scratch("haproxy-loop");
    let (a, b, c) = (
        TestServer::start("fast-a", FAST),
        TestServer::start("fast-b", FAST),
        TestServer::start("slow-c", SLOW),
    );
    let names: BTreeMap<String, String> = [&a, &b, &c]
        .iter()
        .map(|s| (s.name.clone(), s.addr()))
        .collect();
    let (haproxy, port, socket) = start_haproxy(&dir, &[&a, &b, &c]);

    let config = WeightConfig {
        min_samples: 10,
        ..WeightConfig::default()
    };
    let floor = config.floor;
    let mut controller = WeightController::new(config, [a.addr(), b.addr(), c.addr()]).unwrap();
    // Umbra names servers host:port; the exporter finds HAProxy's s1, s2, s3 by address.
    let mut exporter = HaproxyRuntime::new(socket, "app");
    let initial = controller.weights();
    exporter.export(&initial).unwrap();
    assert_eq!(
        haproxy_weights(&exporter),
        rounded(&initial),
        "{}",
        haproxy.log()
    );

    let mut history = Vec::new();
    let mut last_counts = BTreeMap::new();
    for _ in 0..5 {
        let (obs, counts) = interval(port, &names);
        let w = controller.step(&obs).unwrap();
        exporter.export(&w).unwrap();
        assert_eq!(
            haproxy_weights(&exporter),
            rounded(&w),
            "HAProxy shows what was exported"
        );
        for s in &w.servers {
            assert!(
                s.weight >= floor - 1e-9,
                "{} below the floor: {w:?}",
                s.server
            );
        }
        let total: f64 = w.servers.iter().map(|s| s.weight).sum();
        assert!((total - 100.0).abs() < 1e-6, "{total}");
        eprintln!(
            "interval {}: HAProxy weights {:?}, requests {counts:?}",
            w.interval,
            rounded(&w)
        );
        history.push(w);
        last_counts = counts;
    }
    let last = history.last().unwrap();
    let weight = |s: &TestServer| last.get(&s.addr()).unwrap();
    eprintln!(
        "weights after 5 intervals: {:.1} / {:.1} / {:.1}, latencies {:?}",
        weight(&a),
        weight(&b),
        weight(&c),
        last.servers
            .iter()
            .map(|s| s.latency_ms)
            .collect::<Vec<_>>()
    );
    // The rule on the ideal 2:1 service times: 40 / 40 / 20.
    for (s, want) in [(&a, 40.0), (&b, 40.0), (&c, 20.0)] {
        assert!(
            (weight(s) - want).abs() <= 3.0,
            "{}: {:.1}, want {want} ± 3: {history:#?}",
            s.name,
            weight(s)
        );
    }
    // And exactly the rule on the smoothed scores the controller holds.
    let scores: Vec<f64> = last.servers.iter().map(|s| s.score.unwrap()).collect();
    let sum: f64 = scores.iter().sum();
    for (s, score) in last.servers.iter().zip(&scores) {
        let rule = score / sum * 100.0;
        assert!(
            (s.weight - rule).abs() < 1.0,
            "{}: {:.2} vs rule {rule:.2}",
            s.server,
            s.weight
        );
    }
    // HAProxy balanced the last interval by those weights.
    let slow_share =
        last_counts.get(&c.addr()).copied().unwrap_or(0) as f64 / REQUESTS_PER_INTERVAL as f64;
    assert!(
        (0.12..=0.3).contains(&slow_share),
        "slow server got {slow_share:.2} of requests"
    );

    // The slow server starts failing: ejected, HAProxy takes it out of rotation.
    c.failing.store(true, Ordering::Relaxed);
    let (obs, _) = interval(port, &names);
    let w = controller.step(&obs).unwrap();
    assert_eq!(w.servers[2].state, ServerState::Ejected, "{w:?}");
    exporter.export(&w).unwrap();
    assert_eq!(haproxy_weights(&exporter).get(&c.addr()), Some(&0));
    let (_, counts) = interval(port, &names);
    assert_eq!(
        counts.get(&c.addr()),
        None,
        "no traffic to an ejected server: {counts:?}"
    );
    // Healthy servers all stayed above the floor throughout.
    assert!(w.servers.iter().take(2).all(|s| s.weight >= floor));
}

#[test]
fn haproxy_refusals_and_unknown_servers_are_errors_that_say_so() {
    let dir = scratch("haproxy-errors");
    let a = TestServer::start("a", FAST);
    let (_haproxy, _port, socket) = start_haproxy(&dir, &[&a]);
    let h = HaproxyRuntime::new(socket.clone(), "app");
    let e = h.set_weight("s1", 300).unwrap_err();
    assert!(matches!(e, ExportError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("between 0 and 256"), "{e}");

    let mut c = WeightController::new(WeightConfig::default(), ["10.9.9.9:80"]).unwrap();
    let e = HaproxyRuntime::new(socket.clone(), "app")
        .export(&c.step(&[]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"10.9.9.9:80\"") && e.contains(&format!("s1 ({})", a.addr())),
        "{e}"
    );

    let e = HaproxyRuntime::new(socket, "nope")
        .servers()
        .unwrap_err()
        .to_string();
    assert!(e.contains("show servers state nope"), "{e}");

    let e = HaproxyRuntime::new(HaproxySocket::Unix(dir.join("missing.sock")), "app")
        .servers()
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.sock: connect"), "{e}");
}
