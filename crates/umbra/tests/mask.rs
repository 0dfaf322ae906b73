//! `umbra mask` end to end: the real binary on raw requests and config files.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{scratch, text};

const REQUEST: &str = "POST /users/alice@example.com/orders?card=4111111111111111&q=shoes HTTP/1.1\r\n\
Host: api.example.com\r\n\
Authorization: Bearer s3cr3t-token-value\r\n\
Cookie: session=abc123; theme=dark\r\n\
Content-Type: application/json\r\n\
Content-Length: 72\r\n\
\r\n\
{\"email\":\"bob@example.org\",\"password\":\"hunter2\",\"note\":\"call +14155550123\"}";

/// Runs `umbra mask` with `args`, `stdin` and `env` (name, value; `None` removes).
fn mask(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_umbra"));
    cmd.arg("mask")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("UMBRA_MASK_SECRET");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("run umbra mask");
    if let Err(e) = child.stdin.take().expect("stdin").write_all(stdin) {
        // A run refused before it reads its input (a bad config) may close stdin
        // first: its exit status and stderr say why, and the tests check those.
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    child.wait_with_output().expect("wait for umbra mask")
}

fn request_fixture() -> String {
    // The fixture's Content-Length must match its body.
    let (head, body) = REQUEST.split_once("\r\n\r\n").unwrap();
    let head = head.replace(
        "Content-Length: 72",
        &format!("Content-Length: {}", body.len()),
    );
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn masks_a_request_from_stdin_with_the_defaults() {
    let dir = scratch("mask-defaults");
    let out = mask(&dir, &[], request_fixture().as_bytes(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let (head, body) = stdout.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("POST /users/"), "{head}");
    assert!(
        head.contains("\r\nHost: api.example.com\r\n"),
        "header spelling kept: {head}"
    );
    assert!(head.contains("\r\nAuthorization: Bearer "), "{head}");
    for gone in [
        "alice@",
        "4111111111111111",
        "s3cr3t",
        "abc123",
        "bob@example.org",
        "hunter2",
        "4155550123",
    ] {
        assert!(!stdout.contains(gone), "{gone} survived:\n{stdout}");
    }
    let v: Value = serde_json::from_str(body).expect("still JSON");
    assert_eq!(v["password"], "REDACTED");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(stderr.contains("standard input: masked"), "{stderr}");
    assert!(stderr.contains("credential_header 1"), "{stderr}");
    assert!(stderr.contains("UMBRA_MASK_SECRET is not set"), "{stderr}");
}

#[test]
fn same_secret_same_output_across_runs() {
    let dir = scratch("mask-secret");
    std::fs::write(dir.join("req.http"), request_fixture()).unwrap();
    let run = |secret: &str| {
        let out = mask(
            &dir,
            &["req.http"],
            b"",
            &[("UMBRA_MASK_SECRET", Some(secret))],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("not set"));
        out.stdout
    };
    let a = run("a-secret-shared-by-every-proxy");
    assert_eq!(a, run("a-secret-shared-by-every-proxy"));
    assert_ne!(a, run("another-secret-entirely"));
    // Without a secret, each run draws its own key.
    let r1 = mask(&dir, &["req.http"], b"", &[]).stdout;
    let r2 = mask(&dir, &["req.http"], b"", &[]).stdout;
    assert_ne!(r1, r2);
}

#[test]
fn config_rules_json_report_and_output_file() {
    let dir = scratch("mask-config");
    std::fs::write(dir.join("req.http"), request_fixture()).unwrap();
    std::fs::write(
        dir.join("umbra.toml"),
        r#"
[proxy]
listen = "127.0.0.1:8080"   # not ours: ignored

[mask]
secret_env = "MY_SECRET"

[[mask.rules]]
name = "note"
json = "$.note"
strategy = "drop"
"#,
    )
    .unwrap();
    let out = mask(
        &dir,
        &[
            "--config",
            "umbra.toml",
            "--json",
            "-o",
            "masked.http",
            "req.http",
        ],
        b"",
        &[("MY_SECRET", Some("0123456789abcdef"))],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["input"], "req.http");
    assert_eq!(report["outcome"], "masked");
    assert_eq!(report["masked"]["note"], 1);
    assert_eq!(report["secret"]["source"], "env");
    assert_eq!(report["secret"]["variable"], "MY_SECRET");
    assert!(report["total"].as_u64().unwrap() >= 6);
    let written = std::fs::read_to_string(dir.join("masked.http")).unwrap();
    assert_eq!(report["request"], written.as_str());
    assert!(!written.contains("\"note\""), "{written}");
}

#[test]
fn a_copy_the_proxy_would_drop_exits_3() {
    let dir = scratch("mask-drop");
    let req = "POST /x HTTP/1.1\r\nContent-Encoding: zstd\r\nContent-Length: 4\r\n\r\nabcd";
    let out = mask(&dir, &["-"], req.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("dropped (unsupported_encoding)"),
        "{stderr}"
    );
    let out = mask(&dir, &["--json"], req.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "dropped");
    assert_eq!(report["reason"]["label"], "unsupported_encoding");
    assert!(report["request"].is_null());
}

#[test]
fn bad_input_names_the_input_line_and_problem() {
    let dir = scratch("mask-bad");
    std::fs::write(
        dir.join("bad.http"),
        "GET / HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n",
    )
    .unwrap();
    let out = mask(&dir, &["bad.http"], b"", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: bad.http: line 3 (byte 25): "),
        "{stderr}"
    );

    let out = mask(
        &dir,
        &[],
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("standard input: line 4"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("Content-Length says 10"));

    let out = mask(&dir, &[], b"", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty input"));

    let out = mask(&dir, &["missing.http"], b"", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.http: cannot read"));
}

#[test]
fn bad_config_names_the_rule_and_the_problem() {
    let dir = scratch("mask-bad-config");
    std::fs::write(
        dir.join("umbra.toml"),
        "[mask]\n[[mask.rules]]\nname = \"ok\"\nheader = \"x\"\n[[mask.rules]]\nname = \"cards\"\njson = \"$.cards[-1]\"\n",
    )
    .unwrap();
    let out = mask(
        &dir,
        &["-c", "umbra.toml"],
        request_fixture().as_bytes(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("umbra.toml: [[mask.rules]] number 2 (\"cards\"): json: JSONPath \"$.cards[-1]\", character 9: negative indexes are not supported"),
        "{stderr}"
    );
    std::fs::write(dir.join("typo.toml"), "[mask]\nscan = [\"bodies\"]\n").unwrap();
    let out = mask(
        &dir,
        &["-c", "typo.toml"],
        request_fixture().as_bytes(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("typo.toml") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn help_reads_like_a_manual() {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["mask", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("UMBRA_MASK_SECRET"));
}
