//! The readers against real captures in `shared/data` (see its README).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use umbra_core::RequestRecord;
use umbra_learn::read::{Format, Position, ReadError, SourceReport, read_source};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn path(rel: &str) -> String {
    let p = format!("{DATA}/{rel}");
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: the tests expect shared/ beside the repository"
    );
    p
}

fn read(rel: &str, format: &Format) -> Result<(SourceReport, Vec<RequestRecord>), ReadError> {
    let mut records = Vec::new();
    let report = read_source(&path(rel), format, &mut |r| records.push(r))?;
    assert_eq!(report.records, records.len() as u64);
    Ok((report, records))
}

/// Reads a HAR file both as `har` and as `auto`, checks both agree, and
/// returns the records.
fn har(rel: &str) -> (SourceReport, Vec<RequestRecord>) {
    let (report, records) = read(rel, &Format::Har).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.format, Format::Har);
    assert!(!report.detected);
    let (auto, auto_records) = read(rel, &Format::Auto).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auto.format, Format::Har);
    assert!(auto.detected);
    assert_eq!(auto_records, records);
    (report, records)
}

#[test]
fn shop_log_is_detected_as_combined() {
    let (report, records) = read("logs/shop-access-1k.log", &Format::Auto).expect("readable");
    assert_eq!(report.format, Format::Combined);
    assert!(report.detected);
    assert_eq!(report.records, 1000);
    assert_eq!(report.bad, 0, "{:?}", report.first_bad);
    // 22/Jan/2019:03:56:14 +0330 is 00:26:14 UTC.
    assert_eq!(report.first_ms, Some(1_548_116_774_000));
    assert!(report.last_ms >= report.first_ms);

    let first = &records[0];
    assert_eq!(first.client.as_deref(), Some("54.36.149.41"));
    assert_eq!(first.method, "GET");
    assert!(first.path.starts_with("/filter/27|13%20%D9%85"));
    assert_eq!(first.status, Some(200));
    assert_eq!(first.response_bytes, Some(30577));
    assert_eq!(first.referer, None);
    assert!(
        first
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.contains("AhrefsBot"))
    );
    assert!(records.iter().all(|r| r.path.starts_with('/')));
    assert!(
        records
            .iter()
            .all(|r| r.protocol.as_deref() == Some("HTTP/1.1"))
    );
    let methods = |m: &str| records.iter().filter(|r| r.method == m).count();
    assert_eq!(
        (methods("GET"), methods("HEAD"), methods("POST")),
        (976, 10, 14)
    );

    // The same file named explicitly reads the same.
    let (explicit, again) = read("logs/shop-access-1k.log", &Format::Combined).expect("readable");
    assert!(!explicit.detected);
    assert_eq!(again, records);
}

#[test]
fn chrome_har() {
    let (report, records) = har("har/chrome.har");
    assert_eq!((report.records, report.bad), (3, 0));
    let r = &records[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/"));
    assert_eq!(r.protocol.as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.status, Some(304));
    assert!(r.user_agent.is_some());
    assert!(
        r.headers
            .iter()
            .all(|(n, _)| !n.starts_with(':') && *n == n.to_lowercase())
    );
    // The second request never got a response (status 0).
    assert_eq!(records[1].status, None);
    assert_eq!(records[1].response_bytes, None);
    assert_eq!(records[2].protocol.as_deref(), Some("HTTP/3"));
    assert_eq!(
        records[2].path,
        "/images/branding/googlelogo/2x/googlelogo_light_color_272x92dp.png"
    );
}

#[test]
fn firefox_har() {
    let (report, records) = har("har/firefox.har");
    assert_eq!((report.records, report.bad), (14, 0));
    // 2023-03-29T16:58:59.303-07:00
    assert_eq!(records[0].timestamp_ms, Some(1_680_134_339_303));
    assert_eq!(report.first_ms, Some(1_680_134_339_303));
    let q = records
        .iter()
        .find(|r| r.path == "/github-btn.html")
        .expect("the sponsor button");
    assert_eq!(
        q.query.as_deref(),
        Some("user=mhils&type=sponsor&size=large")
    );
    // An empty httpVersion is unknown, not "".
    assert_eq!(records[1].protocol, None);
}

#[test]
fn insomnia_har() {
    let (report, records) = har("har/insomnia.har");
    assert_eq!(report.records, 1);
    let r = &records[0];
    assert_eq!(r.status, Some(200));
    assert_eq!(r.duration_ms, Some(70.402));
    // bodySize is -1 (unknown); the empty postData text says 0.
    assert_eq!(r.request_bytes, Some(0));
    // bodySize -1 falls back to content.size.
    assert_eq!(r.response_bytes, Some(250));
    assert_eq!(r.user_agent, None);
}

#[test]
fn postdata_and_bom_hars() {
    let (_, plain) = har("har/postdata.har");
    let (report, bom) = har("har/with-bom.har");
    assert_eq!(report.records, 1);
    assert_eq!(plain, bom);
    let r = &bom[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/metrics");
    assert_eq!(r.content_type.as_deref(), Some("text/plain;charset=UTF-8"));
    assert_eq!(r.request_bytes, Some(1310));
    assert_eq!(r.status, Some(200));
}

#[test]
fn error_log_har_keeps_the_failed_request() {
    let (report, records) = har("har/error_log.har");
    assert_eq!((report.records, report.bad), (2, 0));
    assert_eq!(records[0].status, None);
    assert_eq!(records[0].path, "/");
    assert_eq!(records[1].method, "POST");
    assert_eq!(records[1].status, Some(405));
    assert_eq!(
        records[1].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(records[1].request_bytes, Some(23));
}

#[test]
fn incomplete_log_har_has_no_responses() {
    let (report, records) = har("har/incomplete_log.har");
    assert_eq!((report.records, report.bad), (4, 0));
    assert!(
        records
            .iter()
            .all(|r| r.status.is_none() && r.response_bytes.is_none())
    );
}

#[test]
fn corrupted_gzip_body_har_is_read() {
    // The response body does not decode, but bodies are never decoded here.
    let (report, records) = har("har/corrupted_gzip_body.har");
    assert_eq!(report.records, 1);
    assert_eq!(records[0].status, Some(200));
    assert_eq!(records[0].response_bytes, Some(24));
}

#[test]
fn brokenfile_har_is_refused_with_the_position() {
    for format in [Format::Har, Format::Auto] {
        let err = read("har/brokenfile.har", &format).expect_err("not JSON");
        match &err {
            ReadError::HarJson { line, column, .. } => assert_eq!((*line, *column), (5, 1)),
            other => panic!("{other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("brokenfile.har line 5 column 1: not a HAR file: invalid JSON"),
            "{msg}"
        );
    }
}

#[test]
fn a_log_is_not_a_har_file() {
    let err = read("logs/shop-access-1k.log", &Format::Har).expect_err("not HAR");
    assert!(matches!(err, ReadError::HarJson { line: 1, .. }), "{err}");
}

#[test]
fn bad_har_entries_are_positioned_by_index() {
    let dir = std::env::temp_dir().join(format!("umbra-read-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("partial.har");
    std::fs::write(
        &file,
        r#"{"log":{"entries":[{"request":{"method":"GET","url":"https://a/b"}},{"request":{"method":"GET"}}]}}"#,
    )
    .expect("write");
    let mut n = 0;
    let report = read_source(file.to_str().expect("utf-8"), &Format::Auto, &mut |_| {
        n += 1
    })
    .expect("readable");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((report.records, report.bad, n), (1, 1, 1));
    assert_eq!(report.first_bad[0].position, Position::HarEntry);
    assert_eq!(report.first_bad[0].line, 1);
    assert!(
        report.first_bad[0]
            .to_string()
            .ends_with("log.entries[1]: no `request.url`")
    );
}
