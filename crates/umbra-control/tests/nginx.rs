//! The nginx exporter against a real nginx: the upstream file it writes is
//! included by nginx, its reload hook reloads nginx, and nginx then splits
//! traffic by the new weights.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use peers::{NGINX, Peer, TestServer, fetch_many, free_port, listening, scratch, wait_until};
use umbra_control::{
    NginxUpstreamFile, Observation, WeightConfig, WeightController, WeightsExporter,
};

fn split(port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    // One client thread: nginx's weighted round robin is then exact per cycle.
    for a in fetch_many(port, n, 1) {
        assert_eq!(a.status, 200, "{a:?}");
        *counts.entry(a.server).or_insert(0) += 1;
    }
    counts
}

fn nginx_conf(dir: &Path, port: u16, upstream_file: &Path) -> std::path::PathBuf {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
         fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
         include {};\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}\n}}\n",
        upstream_file.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

#[test]
fn nginx_reloads_the_upstream_file_and_follows_the_weights() {
    let dir = scratch("nginx-upstream");
    let fast = TestServer::start("fast", Duration::from_millis(2));
    let slow = TestServer::start("slow", Duration::from_millis(6));
    let port = free_port();
    let upstream = dir.join("upstream.conf");
    let conf = nginx_conf(&dir, port, &upstream);

    // The slow server takes three times as long: the rule gives 75 / 25.
    let mut controller =
        WeightController::new(WeightConfig::default(), [fast.addr(), slow.addr()]).unwrap();
    let observe = |c: &mut WeightController| {
        c.step(&[
            Observation::new(fast.addr(), 100, 0).profile("p", 100, 2.0),
            Observation::new(slow.addr(), 100, 0).profile("p", 100, 6.0),
        ])
        .unwrap()
    };
    // The first file exists before nginx starts (its configuration includes it).
    let mut exporter = NginxUpstreamFile::new(&upstream, "app");
    exporter.export(&controller.weights()).unwrap();
    let mut nginx = Peer::start(
        NGINX,
        &["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()],
        dir.join("nginx.stderr"),
    );
    wait_until("nginx listening", || {
        assert!(nginx.running(), "nginx exited: {}", nginx.log());
        listening(port)
    });
    let before = split(port, 100);
    assert_eq!(
        before.values().copied().collect::<Vec<_>>(),
        vec![50, 50],
        "{before:?}"
    );

    // From now on every change reloads nginx.
    let mut exporter = exporter.with_reload([
        NGINX,
        "-c",
        conf.to_str().unwrap(),
        "-p",
        dir.to_str().unwrap(),
        "-s",
        "reload",
    ]);
    let mut w = observe(&mut controller);
    while (w.get(&fast.addr()).unwrap() - 75.0).abs() > 1e-6 {
        w = observe(&mut controller);
        assert!(w.interval <= 5, "not converged: {w:?}");
    }
    exporter.export(&w).unwrap();
    let text = std::fs::read_to_string(&upstream).unwrap();
    assert!(
        text.contains(&format!("server {} weight=75;", fast.addr()))
            && text.contains(&format!("server {} weight=25;", slow.addr())),
        "{text}"
    );
    // A reload swaps workers; requests on the new ones follow the new weights.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let counts = split(port, 100);
        if counts.get("fast") == Some(&75) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after.get("fast"), Some(&75), "{after:?}\n{}", nginx.log());
    assert_eq!(after.get("slow"), Some(&25), "{after:?}");
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(!log.contains("[emerg]"), "{log}");
}
