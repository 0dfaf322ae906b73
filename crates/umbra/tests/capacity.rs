//! End-to-end tests of `umbra capacity` against a server with a known
//! saturation point, and its argument errors.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

mod support;
use support::{json, scratch, text, umbra};

const PROFILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../umbra-load/tests/data/profiles.json"
);

/// A server with `workers` workers and a fixed service time: a first-come
/// first-served queue in front of them, so it serves exactly workers / service
/// requests per second, and past that rate its queue (and latency) grows.
///
/// Completion times are computed (each request takes the worker free soonest,
/// starting when it arrives or when that worker frees up) rather than measured
/// sleeps chained one after another, so timer lateness does not add up and the
/// capacity is what the numbers say. Runs on its own thread and runtime.
fn saturating_server(workers: usize, service: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let free_at = Arc::new(Mutex::new(vec![Instant::now(); workers]));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let free_at = free_at.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let free_at = free_at.clone();
                        async move {
                            let done = {
                                let mut f = free_at.lock().unwrap();
                                let (i, soonest) = f
                                    .iter()
                                    .copied()
                                    .enumerate()
                                    .min_by_key(|(_, t)| *t)
                                    .unwrap();
                                let done = soonest.max(Instant::now()) + service;
                                f[i] = done;
                                done
                            };
                            tokio::time::sleep_until(done).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    format!("http://{addr}")
}

#[test]
fn finds_the_saturation_point_of_a_known_server_within_ten_percent() {
    // 8 workers × 20 ms: 400 requests per second.
    let (workers, service) = (8, Duration::from_millis(20));
    let capacity = workers as f64 / service.as_secs_f64();
    let url = saturating_server(workers, service);
    let dir = scratch("capacity-knee");
    let started = std::time::Instant::now();
    let out = umbra(
        &[
            "capacity",
            "-p",
            PROFILES,
            "-t",
            &url,
            "--slo",
            "p99<250ms,errors<1%",
            "--start",
            "200",
            "--step-duration",
            "3s",
            "--cooldown",
            "500ms",
            "--json",
            "cap.json",
            "--store",
            "cap.db",
        ],
        &dir,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("{stderr}{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the search took {:?}",
        started.elapsed()
    );

    let r = json(&dir.join("cap.json"));
    assert_eq!(r["format"], "umbra-capacity");
    let found = r["capacity_rps"].as_f64().unwrap();
    assert!(
        (found - capacity).abs() <= 0.10 * capacity,
        "found {found:.1} req/s, the server's capacity is {capacity:.1}"
    );
    assert!(r["converged"].as_bool().unwrap(), "{r}");
    let bad = r["first_bad_rps"].as_f64().unwrap();
    assert!(
        bad > found && bad / found - 1.0 <= 0.05 + 1e-9,
        "{found} / {bad}"
    );
    assert_eq!(r["capacity_per_instance_rps"].as_f64(), Some(found));
    // The curve: sorted by rate, the ramp's steps are there, every step below
    // the knee is ok and served what it was offered, the first bad one is not.
    let curve = r["curve"].as_array().unwrap();
    let rates: Vec<f64> = curve
        .iter()
        .map(|p| p["offered_rps"].as_f64().unwrap())
        .collect();
    assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{rates:?}");
    for want in [200.0, 300.0, 400.0, 600.0] {
        assert!(rates.contains(&want), "{rates:?}");
    }
    for p in curve {
        let (offered, ok) = (
            p["offered_rps"].as_f64().unwrap(),
            p["ok"].as_bool().unwrap(),
        );
        assert_eq!(ok, offered <= found, "{p}");
        if ok {
            assert!(p["achieved_rps"].as_f64().unwrap() >= 0.95 * offered, "{p}");
        } else {
            assert!(!p["why"].as_str().unwrap().is_empty(), "{p}");
        }
        assert!(p["phase"].is_string() && p["p99_ms"].is_number(), "{p}");
    }
    // The table marks the knee and the verdict names the capacity.
    assert!(
        stdout.contains("knee") && stdout.contains("capacity "),
        "{stdout}"
    );
    assert!(stderr.contains("step 1: 200.0 req/s offered"), "{stderr}");
    // --store keeps the run for `umbra report` and the proxy's replica advice:
    // the target as given, the capacity per instance, the whole result.
    let store = umbra_store::Store::open_read_only(&dir.join("cap.db")).unwrap();
    let rows = store.capacities(Some(&url)).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].capacity_rps, Some(found));
    assert_eq!(rows[0].body["curve"], r["curve"]);
}

/// `umbra capacity` against a port where nothing listens, with `args` after
/// the profiles and target: the exit code and standard error.
fn capacity_at_nothing(args: &[&str]) -> (Option<i32>, String) {
    let dir = scratch("capacity-args");
    let mut all = vec!["capacity", "-p", PROFILES, "-t", "http://127.0.0.1:9"];
    all.extend_from_slice(args);
    let out = umbra(&all, &dir);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn bad_arguments_name_the_input_and_position() {
    let (code, stderr) = capacity_at_nothing(&["--slo", "p99<300ms,errros<1%"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("objective 2 (column 11) of \"p99<300ms,errros<1%\"")
            && stderr.contains("unknown metric \"errros\""),
        "{stderr}"
    );
    let (code, stderr) = capacity_at_nothing(&["--slo", "p99<300ms", "--steps", "1,3,2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("step 3 of \"1,3,2\""), "{stderr}");
    // A profile the set does not have.
    let (code, stderr) = capacity_at_nothing(&["--slo", "nosuch:p99<1s"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
    // Nothing listens: an error, promptly, not a capacity of zero.
    let (code, stderr) =
        capacity_at_nothing(&["--slo", "p99<1s", "--start", "50", "--step-duration", "3s"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn help_reads_like_a_manual() {
    let dir = scratch("capacity-help");
    let out = umbra(&["capacity", "--help"], &dir);
    let help = text(&out.stdout);
    for want in [
        "--slo",
        "knee",
        "bisect",
        "EXIT CODES",
        "Examples",
        "--json",
        "--efficiency",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
}
