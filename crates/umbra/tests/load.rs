//! End-to-end tests of `umbra load` against a real nginx on 127.0.0.1: rate and mix
//! accuracy, thresholds and exit codes, shard merging, and bad input.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{Nginx, free_port, json, scratch, text, umbra};

const PROFILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../umbra-load/tests/data/profiles.json"
);

fn profile_requests(r: &Value) -> Vec<(String, u64, f64)> {
    r["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["requests"].as_u64().unwrap(),
                p["planned_share"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn open_model_against_nginx_hits_the_rate_and_the_mix() {
    let dir = scratch("rate");
    let nginx = Nginx::start(&dir);
    let out = umbra(
        &[
            "load",
            "-p",
            PROFILES,
            "-t",
            &nginx.url,
            "--rate",
            "1000",
            "--duration",
            "4s",
            "--mix",
            "p-orders=0.4",
            "--threshold",
            "p99<5s",
            "--threshold",
            "errors<1%",
            "--json",
            "r.json",
        ],
        &dir,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("p-orders") && stdout.contains("pass p99<5s"),
        "{stdout}"
    );
    let r = json(&dir.join("r.json"));
    assert_eq!(r["format"], "umbra-load-report");
    assert_eq!(r["model"], "open");
    assert_eq!(r["arrivals"], "constant");
    let t = &r["totals"];
    assert_eq!(t["requests"], 4000);
    assert_eq!(t["dropped"], 0);
    assert_eq!(t["status"]["2xx"], 4000);
    let rps = t["achieved_rps"].as_f64().unwrap();
    assert!((rps - 1000.0).abs() <= 10.0, "achieved {rps} req/s");
    for (id, n, share) in profile_requests(&r) {
        let want = if id == "p-orders" { 0.4 } else { 0.6 };
        assert!((share - want).abs() < 1e-9, "{id} planned {share}");
        let got = n as f64 / 4000.0;
        assert!(
            (got - want).abs() < 0.02,
            "{id}: {got} of requests, planned {want}"
        );
    }
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 4, "{series:?}");
    assert!(r["passed"].as_bool().unwrap());
    assert_eq!(r["thresholds"].as_array().unwrap().len(), 2);
}

#[test]
fn failed_threshold_exits_3_and_closed_model_runs() {
    let dir = scratch("thresholds");
    let nginx = Nginx::start(&dir);
    let out = umbra(
        &[
            "load",
            "-p",
            PROFILES,
            "-t",
            &nginx.url,
            "--rate",
            "500",
            "--requests",
            "200",
            "--threshold",
            "p99<1us",
            "--threshold",
            "p-product:errors<1%",
        ],
        &dir,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("FAIL p99<1us"), "{stdout}");
    assert!(stdout.contains("pass p-product:errors<1%"), "{stdout}");

    let out = umbra(
        &[
            "load",
            "-p",
            PROFILES,
            "-t",
            &nginx.url,
            "--connections",
            "4",
            "--duration",
            "1s",
            "--json",
            "c.json",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = json(&dir.join("c.json"));
    assert_eq!(r["model"], "closed");
    assert_eq!(r["connections"], 4);
    assert!(r["totals"]["requests"].as_u64().unwrap() > 100);

    // A plan file sets the run; the command line adds to its thresholds.
    std::fs::write(
        dir.join("plan.toml"),
        "rate = 300\narrivals = \"poisson\"\nduration = \"1s\"\nthresholds = [\"errors<1%\"]\n[mix]\np-orders = 0.5\n",
    )
    .unwrap();
    let out = umbra(
        &[
            "load",
            "-p",
            PROFILES,
            "-t",
            &nginx.url,
            "--plan",
            "plan.toml",
            "--threshold",
            "rps>=100",
            "--json",
            "plan.json",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = json(&dir.join("plan.json"));
    assert_eq!(r["arrivals"], "poisson");
    assert_eq!(r["rate"], 300.0);
    assert_eq!(r["profiles"][1]["planned_share"], 0.5);
    assert_eq!(r["thresholds"].as_array().unwrap().len(), 2);
}

#[test]
fn merged_shards_equal_one_run() {
    let dir = scratch("shards");
    let nginx = Nginx::start(&dir);
    let base = [
        "load",
        "-p",
        PROFILES,
        "-t",
        &nginx.url,
        "--rate",
        "2000",
        "--requests",
        "3000",
        "--seed",
        "5",
        "--arrivals",
        "poisson",
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = umbra(&args, &dir);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    run(&["--json", "whole.json"]);
    run(&["--shard", "0/2", "--json", "s0.json"]);
    run(&["--shard", "1/2", "--json", "s1.json"]);
    let out = umbra(
        &[
            "load",
            "merge",
            "s0.json",
            "s1.json",
            "--json",
            "merged.json",
            "--threshold",
            "errors<1%",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (whole, merged) = (
        json(&dir.join("whole.json")),
        json(&dir.join("merged.json")),
    );
    let s0 = json(&dir.join("s0.json"));
    assert_eq!(s0["shard"]["index"], 0);
    assert_eq!(s0["shard"]["count"], 2);
    assert_eq!(s0["totals"]["requests"], 1500);
    assert_eq!(merged["totals"]["requests"], 3000);
    assert_eq!(profile_requests(&whole), profile_requests(&merged));
    for key in ["status", "errors", "bytes_sent", "dropped"] {
        assert_eq!(whole["totals"][key], merged["totals"][key], "{key}");
    }
    let count = |r: &Value| {
        umbra_load::report::decode_histogram(r["totals"]["histogram"].as_str().unwrap())
            .unwrap()
            .len()
    };
    assert_eq!(count(&whole), 3000);
    assert_eq!(count(&merged), 3000);
    assert_eq!(merged["thresholds"][0]["passed"], true);
}

#[test]
fn unreachable_target_ends_promptly_with_connect_errors() {
    let dir = scratch("unreachable");
    let port = free_port();
    let t0 = Instant::now();
    let out = umbra(
        &[
            "load",
            "-p",
            PROFILES,
            "-t",
            &format!("http://127.0.0.1:{port}"),
            "--rate",
            "100",
            "--duration",
            "60s",
            "--json",
            "u.json",
        ],
        &dir,
    );
    let took = t0.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    let r = json(&dir.join("u.json"));
    assert!(r["totals"]["errors"]["connect"].as_u64().unwrap() > 0);
    assert_eq!(r["totals"]["status"]["2xx"], 0);
}

#[test]
fn bad_input_gets_a_clear_error_and_no_panic() {
    let dir = scratch("bad");
    std::fs::write(
        dir.join("bad.json"),
        "{\"format\": \"umbra-profiles\", \"version\": 1,",
    )
    .unwrap();
    std::fs::write(
        dir.join("plan.toml"),
        "rate = 10\nstages = [ { duration = \"1x\", target = 5 } ]\n",
    )
    .unwrap();
    std::fs::write(dir.join("plan2.toml"), "rate = 10\nbogus = 1\n").unwrap();
    let url = "http://127.0.0.1:9";
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["-p", "missing.json", "-t", url], 1, "missing.json"),
        (vec!["-p", "bad.json", "-t", url], 1, "bad.json line"),
        (vec!["-p", PROFILES, "-t", "ftp://x"], 2, "ftp://x"),
        (vec!["-p", PROFILES, "-t", "localhost:80"], 2, "scheme"),
        (
            vec!["-p", PROFILES, "-t", url, "--threshold", "p98<1ms"],
            2,
            "p98<1ms",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--stages", "10s:5,xs:9"],
            2,
            "stage 2",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--mix", "nobody=0.5"],
            1,
            "nobody",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--mix", "p-orders=0.5,x"],
            1,
            "entry 2",
        ),
        (vec!["-p", PROFILES, "-t", url, "--shard", "2/2"], 2, "2/2"),
        (
            vec!["-p", PROFILES, "-t", url, "--threshold", "nobody:p99<1s"],
            1,
            "nobody",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--plan", "plan.toml"],
            1,
            "stages[0]",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--plan", "plan2.toml"],
            1,
            "bogus",
        ),
        (
            vec!["-p", PROFILES, "-t", url, "--rate", "0"],
            1,
            "nothing to send",
        ),
    ];
    for (args, code, needle) in cases {
        let mut full = vec!["load"];
        full.extend(args.iter().copied());
        let out = umbra(&full, &dir);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{full:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{full:?}: expected {needle:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{full:?}: {stderr}");
    }
    let out = umbra(&["load", "merge", "bad.json"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.json: line 1"),
        "{}",
        text(&out.stderr)
    );
    let out = umbra(&["load", "merge", PROFILES], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("umbra-load-report"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_reads_like_a_manual() {
    let dir = scratch("help");
    let out = umbra(&["load", "--help"], &dir);
    let help = text(&out.stdout);
    for needle in [
        "OPEN MODEL",
        "CLOSED MODEL",
        "EXIT CODES",
        "--threshold",
        "--shard",
        "--stages",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = umbra(&["load", "merge", "--help"], &dir);
    assert!(text(&out.stdout).contains("exact"), "{}", text(&out.stdout));
}
