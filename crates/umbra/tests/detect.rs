//! End-to-end tests of `umbra detect`: gaps, duplicate timestamps, non-numeric
//! rows with line numbers, Prometheus JSON and `--explain`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fmt::Write as _;
use std::path::Path;

mod support;
use support::{scratch, text, umbra};

/// A steady series with a little deterministic noise, one point every 10 s
/// from 2023-11-14T22:13:20Z, and a step to `high` for points in `step`.
fn series(n: usize, step: std::ops::Range<usize>, high: f64) -> Vec<(i64, f64)> {
    (0..n)
        .map(|i| {
            let noise = ((i * 7919) % 17) as f64 / 17.0 - 0.5;
            let base = if step.contains(&i) { high } else { 100.0 };
            (1_700_000_000 + i as i64 * 10, base + noise)
        })
        .collect()
}

fn csv(points: &[(i64, f64)]) -> String {
    let mut s = String::from("timestamp,value\n");
    for (t, v) in points {
        writeln!(s, "{t},{v}").unwrap();
    }
    s
}

/// The scores file as (timestamp, value, score, flag) text fields.
fn scores(path: &Path) -> Vec<Vec<String>> {
    let body = std::fs::read_to_string(path).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("timestamp,value,score,flag"));
    lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn every_row_gets_a_score_and_a_step_is_flagged() {
    let dir = scratch("detect-step");
    let pts = series(300, 200..230, 110.0);
    std::fs::write(dir.join("s.csv"), csv(&pts)).unwrap();
    let out = umbra(&["detect", "s.csv", "-o", "scores.csv"], &dir);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("s.csv: csv, header `timestamp,value`, 300 rows, 0 bad"),
        "{err}"
    );
    assert!(err.contains("no gaps at a 10s interval"), "{err}");
    let rows = scores(&dir.join("scores.csv"));
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[0][0], "1700000000");
    for r in &rows {
        let score: f64 = r[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(r[3], if score >= 0.5 { "1" } else { "0" });
    }
    let flagged: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r[3] == "1")
        .map(|(i, _)| i)
        .collect();
    assert!(
        flagged.iter().any(|i| (200..203).contains(i)),
        "{flagged:?}"
    );
    assert!(
        flagged.iter().all(|i| (200..240).contains(i)),
        "{flagged:?}"
    );
    // Each detector by name, and a lower threshold flags more.
    for d in [
        "moving-average",
        "ewma",
        "cusum",
        "shewhart",
        "holt-winters",
        "ensemble",
    ] {
        let out = umbra(
            &[
                "detect",
                "s.csv",
                "--detector",
                d,
                "-o",
                &format!("{d}.csv"),
            ],
            &dir,
        );
        assert!(out.status.success(), "{d}: {}", text(&out.stderr));
        let rows = scores(&dir.join(format!("{d}.csv")));
        assert!(rows[200..203].iter().any(|r| r[3] == "1"), "{d}");
    }
    let out = umbra(
        &["detect", "s.csv", "--threshold", "0.05", "-o", "low.csv"],
        &dir,
    );
    assert!(out.status.success());
    let low = scores(&dir.join("low.csv"))
        .iter()
        .filter(|r| r[3] == "1")
        .count();
    assert!(low > flagged.len(), "{low} vs {}", flagged.len());
    // To standard output when there is no -o.
    let out = umbra(&["detect", "s.csv"], &dir);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 301);
}

#[test]
fn gaps_are_reported_and_do_not_shift_the_rows() {
    let dir = scratch("detect-gaps");
    let mut pts = series(200, 0..0, 0.0);
    // 7 missing points after row 99, 12 after row 149.
    pts.drain(100..107);
    pts.drain(143..155);
    std::fs::write(dir.join("gaps.csv"), csv(&pts)).unwrap();
    let out = umbra(
        &[
            "detect",
            "gaps.csv",
            "-o",
            "o.csv",
            "--detector",
            "holt-winters",
            "--season",
            "12",
        ],
        &dir,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("2 gaps (19 missing points) at a 10s interval"),
        "{err}"
    );
    let rows = scores(&dir.join("o.csv"));
    assert_eq!(rows.len(), pts.len());
    for (r, (t, _)) in rows.iter().zip(&pts) {
        assert_eq!(r[0], t.to_string());
    }
    assert!(
        rows.iter().all(|r| r[3] == "0"),
        "a gap alone is not an anomaly"
    );
}

#[test]
fn duplicate_timestamps_share_one_score() {
    let dir = scratch("detect-dups");
    let pts = series(150, 0..0, 0.0);
    let mut body = csv(&pts);
    // Two more rows for the timestamp of row 120, and one out of order at the end.
    let (t, v) = pts[120];
    writeln!(body, "{t},{}", v + 0.2).unwrap();
    writeln!(body, "{t},{}", v - 0.2).unwrap();
    writeln!(body, "{},{}", pts[10].0 + 5, 100.1).unwrap();
    std::fs::write(dir.join("d.csv"), body).unwrap();
    let out = umbra(&["detect", "d.csv", "-o", "o.csv"], &dir);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("2 duplicate timestamps (scored on their mean)"),
        "{err}"
    );
    // The first duplicate goes back in time, and so does the last row.
    assert!(err.contains("2 rows out of order"), "{err}");
    let rows = scores(&dir.join("o.csv"));
    assert_eq!(rows.len(), 153);
    // Rows keep their input order; the duplicates carry the score of their timestamp.
    assert_eq!(rows[150][0], t.to_string());
    assert_eq!(rows[150][2], rows[120][2]);
    assert_eq!(rows[151][2], rows[120][2]);
    assert_eq!(rows[152][0], (pts[10].0 + 5).to_string());
}

#[test]
fn non_numeric_rows_are_reported_with_line_numbers() {
    let dir = scratch("detect-bad");
    let pts = series(200, 0..0, 0.0);
    let mut body = csv(&pts);
    // Lines 2.. are data; break lines 11, 51 and 151, and add a few more.
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    lines[10] = format!("{},n/a", pts[9].0);
    lines[50] = format!("{},", pts[49].0);
    lines[150] = "yesterday,12".to_string();
    lines.push("1700002000,1e999".to_string());
    lines.push("1700002010;5".to_string());
    lines.push("1700002020,abc".to_string());
    lines.push("1700002030,7,8".to_string());
    body = lines.join("\n") + "\n";
    std::fs::write(dir.join("bad.csv"), &body).unwrap();
    let out = umbra(&["detect", "bad.csv", "-o", "o.csv"], &dir);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("197 rows, 7 bad"), "{err}");
    assert!(
        err.contains("bad.csv line 11: value `n/a` is not a number"),
        "{err}"
    );
    assert!(err.contains("bad.csv line 51: missing value"), "{err}");
    assert!(
        err.contains("bad.csv line 151: timestamp `yesterday` is not RFC 3339"),
        "{err}"
    );
    assert!(
        err.contains("bad.csv line 202: value `1e999` is not a finite number"),
        "{err}"
    );
    assert!(
        err.contains("bad.csv line 203: expected `timestamp,value`"),
        "{err}"
    );
    assert!(err.contains("... and 2 more"), "{err}");
    assert_eq!(scores(&dir.join("o.csv")).len(), 197);
    // Too many bad rows fail the command.
    let out = umbra(
        &["detect", "bad.csv", "-o", "o2.csv", "--max-bad", "3"],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: bad.csv: 7 of 204 rows are bad, more than --max-bad 3"),
        "{err}"
    );
    // Nothing readable at all.
    std::fs::write(dir.join("junk.csv"), "a,b\nc,d\n").unwrap();
    let out = umbra(&["detect", "junk.csv"], &dir);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn timestamps_in_milliseconds_and_rfc3339() {
    let dir = scratch("detect-times");
    let pts = series(100, 0..0, 0.0);
    let mut ms = String::new();
    let mut rfc = String::new();
    for (t, v) in &pts {
        writeln!(ms, "{},{v}", t * 1000).unwrap();
        let when = chrono_like(*t);
        writeln!(rfc, "\"{when}\",{v}").unwrap();
    }
    std::fs::write(dir.join("ms.csv"), ms).unwrap();
    std::fs::write(dir.join("rfc.csv"), rfc).unwrap();
    for f in ["ms.csv", "rfc.csv"] {
        let out = umbra(&["detect", f, "-o", "o.csv"], &dir);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("100 rows, 0 bad"), "{err}");
        assert!(err.contains("no gaps at a 10s interval"), "{f}: {err}");
    }
    assert_eq!(scores(&dir.join("o.csv"))[0][0], "2023-11-14T22:13:20Z");
}

/// RFC 3339 for a Unix time, without a date library in the test.
fn chrono_like(t: i64) -> String {
    // 2023-11-14T22:13:20Z is 1_700_000_000; the test series stays within that day.
    let s = t - 1_700_000_000 + 22 * 3600 + 13 * 60 + 20;
    format!(
        "2023-11-14T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[test]
fn prometheus_range_query_json() {
    let dir = scratch("detect-prom");
    let pts = series(150, 100..120, 130.0);
    let values: Vec<String> = pts
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            if i == 42 {
                format!("[{t},\"NaN\"]")
            } else {
                format!("[{t}.5,\"{v}\"]")
            }
        })
        .collect();
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"__name__":"http_p99","route":"/cart"}},"values":[{}]}},{{"metric":{{"route":"/home"}},"values":[[1700000000,"1"],[1700000010,"1"]]}}]}}}}"#,
        values.join(",")
    );
    std::fs::write(dir.join("q.json"), body).unwrap();
    let out = umbra(&["detect", "q.json", "-o", "o.csv", "--explain"], &dir);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("q.json: prometheus, 151 rows, 1 bad"), "{err}");
    assert!(
        err.contains("q.json result[0].values[42]: value `NaN` is not a finite number"),
        "{err}"
    );
    let body = std::fs::read_to_string(dir.join("o.csv")).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("series,timestamp,value,score,flag"));
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(r#""{__name__=""http_p99"",route=""/cart""}",1700000000.5,"#),
        "{first}"
    );
    assert_eq!(body.lines().count(), 152);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"flagged region in {__name__="http_p99",route="/cart"}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("no flagged regions in {route=\"/home\"}"),
        "{stdout}"
    );
    // A query error is an error.
    std::fs::write(
        dir.join("e.json"),
        r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
    )
    .unwrap();
    let out = umbra(&["detect", "e.json"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("e.json: status is `error`: parse error"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_prints_the_flagged_regions() {
    let dir = scratch("detect-explain");
    let pts = series(300, 150..160, 125.0);
    std::fs::write(dir.join("s.csv"), csv(&pts)).unwrap();
    let out = umbra(
        &[
            "detect",
            "s.csv",
            "-o",
            "o.csv",
            "--explain",
            "--detector",
            "cusum",
        ],
        &dir,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("flagged region") && stdout.contains("(cusum, threshold 0.5)"),
        "{stdout}"
    );
    // The region starts at the step: row 150 is line 152 (header, 1-based), at 22:38:20.
    assert!(stdout.contains("2023-11-14T22:38:20Z to "), "{stdout}");
    assert!(stdout.contains("lines 152-"), "{stdout}");
    assert!(stdout.contains("cusum: upper sum"), "{stdout}");
    assert!(
        stdout.contains("peak 1.000") || stdout.contains("peak 0.9"),
        "{stdout}"
    );
    // With the scores on standard output, the explanation goes to standard error.
    let out = umbra(&["detect", "s.csv", "--explain"], &dir);
    assert!(text(&out.stderr).contains("flagged region"));
    assert!(!text(&out.stdout).contains("flagged region"));
    // Standard input works too.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["detect", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(csv(&pts).as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stderr).starts_with("<stdin>: csv"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_arguments_are_refused() {
    let dir = scratch("detect-args");
    std::fs::write(dir.join("s.csv"), csv(&series(10, 0..0, 0.0))).unwrap();
    let out = umbra(&["detect", "s.csv", "--detector", "magic"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected one of moving-average, ewma"),
        "{}",
        text(&out.stderr)
    );
    let out = umbra(&["detect", "s.csv", "--threshold", "0"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let out = umbra(&["detect", "missing.csv"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read missing.csv"));
}
