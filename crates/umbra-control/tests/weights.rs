//! The weight controller on synthetic observations: convergence to the rule,
//! and the safety properties (total, floor, step cap, ejection) on random input.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use umbra_control::{Observation, ServerState, WeightConfig, WeightController};

fn obs(server: &str, requests: u64, errors: u64, ms: f64) -> Observation {
    Observation::new(server, requests, errors).profile("p", requests - errors, ms)
}

#[test]
fn three_servers_one_twice_as_slow_converge_within_five_intervals() {
    // Latencies jitter by a few percent from interval to interval, as measured ones do.
    let jitter = [1.00, 1.04, 0.97, 1.02, 0.99];
    let mut c = WeightController::new(WeightConfig::default(), ["a", "b", "c"]).unwrap();
    let mut w = c.weights();
    for (i, j) in jitter.iter().enumerate() {
        w = c
            .step(&[
                obs("a", 200, 0, 10.0 * j),
                obs("b", 200, 0, 10.0 / j),
                obs("c", 100, 0, 20.0 * j),
            ])
            .unwrap();
        eprintln!("interval {}: {:?}", i + 1, w.rounded());
    }
    for (s, want) in [("a", 40.0), ("b", 40.0), ("c", 20.0)] {
        let got = w.get(s).unwrap();
        assert!((got - want).abs() < 1.5, "{s}: {got} (want {want}): {w:?}");
    }
}

#[test]
fn a_very_slow_healthy_server_keeps_the_floor() {
    // By the rule alone the slow server would get 100/41 ≈ 2.4%.
    let mut c = WeightController::new(WeightConfig::default(), ["a", "b", "c"]).unwrap();
    let mut w = c.weights();
    for _ in 0..10 {
        w = c
            .step(&[
                obs("a", 200, 0, 10.0),
                obs("b", 200, 0, 10.0),
                obs("c", 50, 0, 200.0),
            ])
            .unwrap();
    }
    assert!((w.get("c").unwrap() - 5.0).abs() < 1e-9, "{w:?}");
    assert!((w.get("a").unwrap() - 47.5).abs() < 1e-9, "{w:?}");
    assert_eq!(
        w.rounded(),
        vec![("a".into(), 48), ("b".into(), 47), ("c".into(), 5)]
    );
}

#[test]
fn the_config_reads_from_toml_and_rejects_unknown_keys() {
    let c: WeightConfig = toml::from_str(
        "interval = \"30s\"\nfloor = 2.5\nmax_step = 20\n[mix]\np-1 = 0.7\np-2 = 0.3\n",
    )
    .unwrap();
    assert_eq!(c.interval, std::time::Duration::from_secs(30));
    assert_eq!((c.floor, c.max_step, c.min_samples), (2.5, 20.0, 20));
    assert_eq!(c.mix.len(), 2);
    c.validate().unwrap();
    let e = toml::from_str::<WeightConfig>("flor = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `flor`"), "{e}");
    let e = toml::from_str::<WeightConfig>("interval = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"soon\" is not a duration"), "{e}");
    let bad: WeightConfig = toml::from_str("floor = 120").unwrap();
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.starts_with("control.weights.floor = 120"), "{e}");
}

#[test]
fn probes_and_exporters_read_from_the_weights_table() {
    let c: WeightConfig = toml::from_str(
        "interval = \"5s\"\n\
         [probes]\nrate = 1.5\nprobe_weight = 0.8\n\
         [[export]]\nkind = \"haproxy\"\nsocket = \"unix:/run/haproxy/admin.sock\"\nbackend = \"app\"\n\
         [[export]]\nkind = \"nginx\"\nfile = \"/etc/nginx/u.conf\"\nupstream = \"app\"\n\
         reload = [\"nginx\", \"-s\", \"reload\"]\n",
    )
    .unwrap();
    c.validate().unwrap();
    let probes = c.probes.as_ref().unwrap();
    assert_eq!((probes.rate, probes.probe_weight), (1.5, 0.8));
    assert_eq!(probes.methods, ["GET", "HEAD"], "safe methods by default");
    assert_eq!(c.export.len(), 2);
    assert!(
        WeightConfig::default().probes.is_none(),
        "probes are off by default"
    );
    // A bad value deep inside still names its table and key.
    let bad: WeightConfig =
        toml::from_str("[[export]]\nkind = \"nginx\"\nupstream = \"app\"\n").unwrap();
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("control.weights.export[0].file = (missing)"),
        "{e}"
    );
    let bad: WeightConfig = toml::from_str("[probes]\nrate = -1\n").unwrap();
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.starts_with("control.weights.probes.rate = -1"), "{e}");
    let e = toml::from_str::<WeightConfig>("[probes]\nrates = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `rates`"), "{e}");
}

/// One server's interval: requests, errors, latency (ms), CPU or none.
fn server_interval() -> impl Strategy<Value = (u64, u64, f64, Option<f64>)> {
    (
        0u64..400,
        0u64..100,
        1.0f64..500.0,
        proptest::option::of(0.0f64..1.2),
    )
        .prop_map(|(n, e, ms, cpu)| (n, e.min(n), ms, cpu))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn weights_stay_safe_whatever_the_observations(
        servers in 1usize..6,
        floor in 0.0f64..15.0,
        max_step in 1.0f64..40.0,
        intervals in proptest::collection::vec(proptest::collection::vec(server_interval(), 6), 1..25),
    ) {
        let names: Vec<String> = (0..servers).map(|i| format!("10.0.0.{i}:80")).collect();
        let config = WeightConfig { floor, max_step, ..WeightConfig::default() };
        let mut c = WeightController::new(config.clone(), names.clone()).unwrap();
        let mut prev = c.weights();
        for round in intervals {
            let obs: Vec<Observation> = names
                .iter()
                .zip(round)
                .map(|(n, (req, err, ms, cpu))| {
                    let o = obs(n, req, err, ms);
                    match cpu { Some(u) => o.cpu(u), None => o }
                })
                .collect();
            let w = c.step(&obs).unwrap();
            let total: f64 = w.servers.iter().map(|s| s.weight).sum();
            prop_assert!((total - 100.0).abs() < 1e-6, "total {}", total);
            let active = w.servers.iter().filter(|s| s.state != ServerState::Ejected).count();
            prop_assert!(active >= 1, "every server ejected: {:?}", w);
            let floor_here = floor.min(100.0 / active as f64);
            for (s, p) in w.servers.iter().zip(&prev.servers) {
                if s.state == ServerState::Ejected {
                    prop_assert_eq!(s.weight, 0.0);
                    continue;
                }
                prop_assert!(s.weight >= floor_here - 1e-6, "{} at {} below the floor {}", s.server, s.weight, floor_here);
                // The cap binds changes that come from scores, i.e. when the set of
                // servers in rotation did not change.
                let same_set = w.servers.iter().zip(&prev.servers).all(|(x, y)| {
                    (x.state == ServerState::Ejected) == (y.state == ServerState::Ejected)
                        && x.state != ServerState::Readmitted
                });
                if same_set {
                    prop_assert!((s.weight - p.weight).abs() <= max_step + 1e-6,
                        "{} moved {} -> {}", s.server, p.weight, s.weight);
                }
            }
            let rounded: u32 = w.rounded().iter().map(|(_, x)| x).sum();
            prop_assert!((100..=100 + servers as u32).contains(&rounded), "rounded total {}", rounded);
            prev = w;
        }
    }
}
