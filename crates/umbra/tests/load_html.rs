//! `umbra load --html` end to end: a run against a real nginx on 127.0.0.1 writes the
//! HTML report, headless Chromium renders it, and the rendered DOM has the charts, the
//! profile names (escaped) and no injected markup. The screenshot is kept in
//! `target/test-artifacts/load-report.png` for people to look at.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROFILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../umbra-load/tests/data/profiles.json"
);
mod support;
use support::{Nginx, scratch};

const CHROMIUM: &str = "/usr/bin/chromium";
/// A profile name as hostile as a learned one can be: it must show as text.
const HOSTILE: &str = "GET /<img id=injected src=x onerror=alert(1)> & \"q\"";

/// Runs headless Chromium with `extra` arguments on `page`, stdout to `out`, killed
/// after 60 s. Returns its stderr for failure messages.
fn chromium(page: &Path, extra: &[String], out: &Path, dir: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test installs it (Debian package chromium)"
    );
    // A fresh profile each time: no state from another run, no first-run work.
    let profile = dir.join(format!("chromium-profile-{}", extra.len()));
    let err_path = out.with_extension("stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(File::create(out).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            assert!(status.success(), "chromium exited with {status}: {stderr}");
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish in 60 s: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let dir = scratch("render");
    // The test profile set, with one profile renamed to something hostile.
    let set = std::fs::read_to_string(PROFILES).unwrap();
    let name = "GET /product/{id} · browser";
    assert!(set.contains(name), "test profile set changed");
    let hostile = serde_json::to_string(HOSTILE).unwrap();
    let set = set.replace(&format!("\"{name}\""), &hostile);
    let profiles = dir.join("profiles.json");
    std::fs::write(&profiles, set).unwrap();

    let nginx = Nginx::start(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["load", "-p"])
        .arg(&profiles)
        .args(["-t", &nginx.url, "--rate", "300", "--duration", "4s"])
        .args(["--threshold", "p99<5s", "--threshold", "errors<1%"])
        .args(["--json", "r.json", "--html", "report.html"])
        .current_dir(&dir)
        .output()
        .expect("run umbra");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    drop(nginx);

    // merge writes HTML too.
    let merged = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["load", "merge", "r.json", "--html", "merged.html"])
        .current_dir(&dir)
        .output()
        .expect("run umbra load merge");
    assert_eq!(
        merged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert!(dir.join("merged.html").exists());

    let page = dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch.
    for needle in ["http://cdn", "https://", "<script src", "<link"] {
        assert!(!html.contains(needle), "report references {needle}");
    }

    let dom_path = dir.join("dom.html");
    chromium(&page, &["--dump-dom".to_string()], &dom_path, &dir);
    let dom = std::fs::read_to_string(&dom_path).unwrap();
    for id in [
        "latency-over-time",
        "throughput-over-time",
        "latency-percentiles",
    ] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("chart {id} missing from the rendered DOM:\n{dom}"));
        let chart = &dom[at..];
        let chart = &chart[..chart.find("</figure>").unwrap()];
        assert!(chart.contains("<svg"), "{id}: no svg");
        // Every drawn series has points; the run lasted 4 s, so the time charts have
        // at least 3 and the percentile chart its 201.
        let mut lines = 0;
        for part in chart.split("data-points=\"").skip(1) {
            let n: usize = part[..part.find('"').unwrap()].parse().unwrap();
            assert!(n >= 3, "{id}: a series with {n} points");
            lines += 1;
        }
        assert!(lines >= 2, "{id}: {lines} series");
    }
    assert!(dom.contains("data-series=\"p-orders\""), "per-profile line");
    assert!(dom.contains("p-product") && dom.contains("POST /api/orders/{uuid} · api"));
    // The hostile name is text, not an element.
    assert!(
        dom.contains("GET /&lt;img id=injected src=x onerror=alert(1)&gt; &amp;"),
        "escaped name missing"
    );
    assert!(!dom.contains("<img id=\"injected\""), "markup injected");
    assert!(dom.contains("PASSED") && dom.contains("p99&lt;5s"));

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("load-report.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1600".to_string(),
        ],
        &dir.join("screenshot.out"),
        &dir,
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(bytes.len() > 20_000, "screenshot suspiciously small");
    let _ = std::fs::remove_dir_all(&dir);
}
