//! End-to-end tests of the `umbra` binary: run it as a user would and check what
//! it prints, writes and exits with.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Command;

mod support;
use support::{scratch, text, umbra};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn data(rel: &str) -> String {
    format!("{DATA}/{rel}")
}

fn load(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("profile file")).expect("json")
}

#[test]
fn learns_the_shop_log_with_detection_and_no_bad_lines() {
    let dir = scratch("shop");
    let out = umbra(
        &["learn", &data("logs/shop-access-1k.log"), "-o", "p.json"],
        &dir,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("combined (detected), 1000 requests, 0 bad lines"),
        "{err}"
    );
    assert!(err.contains("silhouette"), "says how k was chosen: {err}");
    let set = load(&dir.join("p.json"));
    assert_eq!(set["format"], "umbra-profiles");
    assert_eq!(set["version"], 1);
    let profiles = set["profiles"].as_array().expect("profiles");
    assert!(profiles.len() >= 4);
    let names: Vec<&str> = profiles.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("· bot")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("/image/")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("/filter")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("/product/")), "{names:?}");
    // `profiles show` reads it back.
    let show = umbra(&["profiles", "show", "p.json"], &dir);
    assert!(show.status.success());
    assert!(text(&show.stdout).contains("profiles from 1000 requests"));
}

#[test]
fn every_har_file_is_learned_or_refused_with_a_reason() {
    let dir = scratch("har");
    let mut learned = 0;
    for entry in std::fs::read_dir(data("har")).expect("har dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let out = umbra(
            &[
                "learn",
                path.to_str().expect("utf-8 path"),
                "-o",
                &format!("{name}.json"),
            ],
            &dir,
        );
        let err = text(&out.stderr);
        if out.status.success() {
            learned += 1;
            assert!(err.contains("har"), "{name}: {err}");
            load(&dir.join(format!("{name}.json")));
        } else {
            // A refusal names the file and says why, in one clear line.
            assert_eq!(out.status.code(), Some(1), "{name}: {err}");
            assert!(err.starts_with("error:"), "{name}: {err}");
            assert!(err.contains(&name), "{name}: {err}");
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
        if name == "brokenfile.har" {
            assert!(!out.status.success(), "brokenfile.har is not JSON: {err}");
        }
        if [
            "chrome.har",
            "firefox.har",
            "insomnia.har",
            "postdata.har",
            "with-bom.har",
        ]
        .contains(&name.as_str())
        {
            assert!(out.status.success(), "{name} should be learned: {err}");
        }
    }
    assert!(learned >= 5);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = scratch("bad");
    // Empty input.
    std::fs::write(dir.join("empty.log"), "").expect("write");
    let out = umbra(&["learn", "empty.log"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("empty.log") && err.contains("empty"), "{err}");
    assert!(
        !dir.join("profiles.json").exists(),
        "no profile set from nothing"
    );

    // Not a log at all.
    std::fs::write(
        dir.join("prose.txt"),
        "Dear diary,\ntoday I wrote no access log.\nNone at all.\n",
    )
    .expect("write");
    let out = umbra(&["learn", "prose.txt"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("prose.txt"),
        "{}",
        text(&out.stderr)
    );

    // Missing file.
    let out = umbra(&["learn", "nope.log"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope.log"));

    // Bad arguments exit 2 and name the value.
    let out = umbra(&["learn", "x.log", "--k", "many"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("many"));
    let out = umbra(&["learn", "x.log", "--half-life", "soon"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("soon"));

    // A profile file that is not one.
    std::fs::write(dir.join("not-profiles.json"), "{\"hello\": 1}").expect("write");
    let out = umbra(&["profiles", "show", "not-profiles.json"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not-profiles.json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_lines_are_reported_and_bounded() {
    let dir = scratch("badlines");
    let good = std::fs::read_to_string(data("logs/shop-access-1k.log")).expect("log");
    let mut lines: Vec<String> = good.lines().take(200).map(String::from).collect();
    lines.insert(10, "this is not a log line".to_string());
    lines.insert(
        50,
        "1.2.3.4 - - [22/Jan/2019:03:56:14 +0330] \"\\x16\\x03\\x01\" 400 0 \"-\" \"-\" \"-\""
            .to_string(),
    );
    std::fs::write(dir.join("mixed.log"), lines.join("\n") + "\n").expect("write");
    let out = umbra(&["learn", "mixed.log", "--format", "combined"], &dir);
    let err = text(&out.stderr);
    assert!(out.status.success(), "2 bad of 202 is under 5%: {err}");
    assert!(err.contains("200 requests, 2 bad lines"), "{err}");
    assert!(
        err.contains("mixed.log line 11"),
        "first bad line reported with its number: {err}"
    );
    // Over the bound: fail with a clear message.
    let out = umbra(
        &[
            "learn",
            "mixed.log",
            "--format",
            "combined",
            "--max-bad",
            "1",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--max-bad"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn update_folds_new_traffic_with_decay_and_set_adjusts_the_mix() {
    let dir = scratch("update");
    let generated = umbra(
        &[
            "generate-log",
            "--lines",
            "3000",
            "--seed",
            "4",
            "-o",
            "a.log",
        ],
        &dir,
    );
    assert!(generated.status.success());
    let out = umbra(&["learn", "a.log", "-o", "p.json"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = load(&dir.join("p.json"));
    // The same traffic again, later: nothing new, shares stay close.
    let generated = umbra(
        &[
            "generate-log",
            "--lines",
            "3000",
            "--seed",
            "5",
            "-o",
            "b.log",
        ],
        &dir,
    );
    assert!(generated.status.success());
    let out = umbra(
        &[
            "learn",
            "--update",
            "p.json",
            "b.log",
            "--half-life",
            "6h",
            "-o",
            "p2.json",
            "--json",
        ],
        &dir,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("update: old traffic weighs"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert!(
        summary["update"]["matched"].as_u64().unwrap_or(0) > 2900,
        "{summary}"
    );
    let after = load(&dir.join("p2.json"));
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "same behaviour keeps the same profiles and ids"
    );

    // Volume and mix.
    let first = ids(&after)[0].clone();
    let out = umbra(
        &[
            "profiles",
            "set",
            "p2.json",
            "--baseline-rps",
            "200",
            "--stress",
            "3",
            "--weight",
            &format!("{first}=0.5"),
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let set = load(&dir.join("p2.json"));
    assert_eq!(set["baseline_rps"], 200.0);
    assert_eq!(set["stress"], 3.0);
    assert_eq!(set["profiles"][0]["weight"], 0.5);
    let out = umbra(
        &[
            "profiles",
            "set",
            "p2.json",
            "--weight",
            "no-such-profile=1",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no-such-profile"));
}

#[test]
fn follow_rewrites_the_set_as_the_log_grows() {
    let dir = scratch("follow");
    let generated = umbra(
        &[
            "generate-log",
            "--lines",
            "2000",
            "--seed",
            "6",
            "-o",
            "all.log",
        ],
        &dir,
    );
    assert!(generated.status.success());
    let all = std::fs::read_to_string(dir.join("all.log")).expect("log");
    let lines: Vec<&str> = all.lines().collect();
    std::fs::write(dir.join("live.log"), lines[..1000].join("\n") + "\n").expect("write");
    let child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args([
            "learn",
            "--follow",
            "live.log",
            "-o",
            "p.json",
            "--interval",
            "1s",
            "--for",
            "4s",
        ])
        .current_dir(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait (bounded) for the first rewrite, which folds in the first 1000 lines.
    let seen = |v: &serde_json::Value| -> u64 {
        v["sources"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["records"].as_u64()).sum())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen_first = 0;
    while std::time::Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(dir.join("p.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
        {
            seen_first = seen(&v);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen_first, 1000);
    // The log grows; the next rewrite folds the new lines in.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("live.log"))
        .expect("open");
    f.write_all((lines[1000..].join("\n") + "\n").as_bytes())
        .expect("append");
    drop(f);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = load(&dir.join("p.json"));
    let seen = seen(&last);
    assert_eq!(seen, 2000, "{}", text(&out.stderr));
}

#[test]
fn demo_runs_on_embedded_data() {
    let dir = scratch("demo");
    // Issue 9's acceptance, as a newcomer runs it (with the profile set kept).
    let out = umbra(&["demo", "-o", "demo.json", "--duration", "30s"], &dir);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("read 1000 requests as combined"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: the regression was found on the right profile"),
        "{stdout}"
    );
    // Found on the profile the demo says it slowed, by id.
    let slowed = stdout
        .lines()
        .find_map(|l| l.split(" belongs to: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the slowed endpoint's profile")
        .to_string();
    assert!(
        stdout.contains(&format!("regression found on profile {slowed} ")),
        "{stdout}"
    );
    load(&dir.join("demo.json"));
}

#[test]
fn help_reads_like_a_manual() {
    let dir = scratch("help");
    for cmd in [
        vec!["--help"],
        vec!["learn", "--help"],
        vec!["profiles", "--help"],
        vec!["profiles", "set", "--help"],
        vec!["generate-log", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = umbra(&cmd, &dir);
        assert!(out.status.success(), "{cmd:?}");
        assert!(text(&out.stdout).len() > 200, "{cmd:?}");
    }
}

#[test]
fn reads_gzip_stdin_and_custom_nginx_formats_alike() {
    use std::io::Write;
    let dir = scratch("inputs");
    let log = std::fs::read(data("logs/shop-access-1k.log")).expect("log");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&log).expect("gzip");
    std::fs::write(dir.join("shop.log.gz"), gz.finish().expect("gzip")).expect("write");
    let out = umbra(&["learn", "shop.log.gz", "-o", "gz.json"], &dir);
    assert!(
        text(&out.stderr).contains("combined (detected), 1000 requests, 0 bad lines"),
        "{}",
        text(&out.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["learn", "-", "-o", "stdin.json"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&log)
        .expect("feed stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        text(&out.stderr).contains("-: combined (detected), 1000 requests"),
        "{}",
        text(&out.stderr)
    );

    let format = r#"nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;
    let out = umbra(
        &[
            "learn",
            &data("logs/shop-access-1k.log"),
            "--format",
            format,
            "-o",
            "nginx.json",
        ],
        &dir,
    );
    assert!(
        text(&out.stderr).contains("1000 requests, 0 bad lines"),
        "{}",
        text(&out.stderr)
    );
    // Same input, same seed: the same profiles whichever way it was read.
    let ids = |f: &str| -> Vec<String> {
        load(&dir.join(f))["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("gz.json"), ids("stdin.json"));
    assert_eq!(ids("gz.json"), ids("nginx.json"));
}
