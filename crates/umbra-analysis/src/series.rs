//! Offline detection on exported series (`umbra detect`).
//!
//! Two inputs are read:
//!
//! - CSV rows `timestamp,value` (a header line is recognised and skipped when
//!   neither of its fields parses; blank lines and `#` comments are skipped;
//!   fields may be quoted). A timestamp is Unix seconds (`1700000000`, with or
//!   without decimals), Unix milliseconds (any number from 1e11 up: 1e11 seconds
//!   is the year 5138, 1e11 ms is March 1973), or RFC 3339
//!   (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00+02:00`). Times are kept to the
//!   millisecond.
//! - Prometheus range-query JSON (`/api/v1/query_range`):
//!   `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{...},"values":[[ts,"v"],...]}]}}`.
//!   Each result is its own series.
//!
//! A row that cannot be read (a value that is not a finite number, a bad
//! timestamp, a missing field) is counted and skipped; the first few are kept
//! with their line (or `result[i].values[j]` position) for the report, and the
//! caller decides whether there were too many.
//!
//! Scoring ([`score_series`]) runs one detector over a series in time order:
//!
//! - rows are put in timestamp order (stably) if they are not already;
//! - **duplicate timestamps** are scored once, on the mean of their values, and
//!   every duplicate row gets that score (a series exported twice over is not
//!   weighted double);
//! - the **interval** is the median difference between consecutive distinct
//!   timestamps; a step longer than 1.5 intervals is a **gap** of
//!   `round(step / interval) − 1` missing points, which the detector is told
//!   about ([`Detector::skip`]): Holt-Winters keeps its season in phase, the
//!   others carry on. Nothing is interpolated, and a flagged region ends at a gap.
//!
//! Every input row gets a score; a row is flagged when its score reaches the
//! threshold (0.5, every detector's own limit, by default).

use std::fmt;

use memchr::memchr;
use serde::{Deserialize, Serialize};

use crate::detect::{ConfigError, Detector, DetectorSpec};

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesFormat {
    Csv,
    Prometheus,
}

impl SeriesFormat {
    /// Prometheus JSON if the data starts with `{` (after white space), CSV otherwise.
    pub fn detect(data: &[u8]) -> SeriesFormat {
        match data.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => SeriesFormat::Prometheus,
            _ => SeriesFormat::Csv,
        }
    }
}

impl fmt::Display for SeriesFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeriesFormat::Csv => "csv",
            SeriesFormat::Prometheus => "prometheus",
        })
    }
}

impl std::str::FromStr for SeriesFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<SeriesFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(SeriesFormat::Csv),
            "prometheus" | "prom" | "json" => Ok(SeriesFormat::Prometheus),
            _ => Err(format!("format `{s}`: expected csv or prometheus")),
        }
    }
}

/// Where a row was in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowPosition {
    /// 1-based line of a CSV file.
    Line(u64),
    /// `result[series].values[index]` of Prometheus JSON.
    Point { series: usize, index: usize },
}

impl fmt::Display for RowPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowPosition::Line(n) => write!(f, "line {n}"),
            RowPosition::Point { series, index } => {
                write!(f, "result[{series}].values[{index}]")
            }
        }
    }
}

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadRow {
    pub source: String,
    pub position: RowPosition,
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.source, self.position, self.reason)
    }
}

/// What went wrong with the input as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("{source_name} line {line} column {column}: not valid JSON: {reason}")]
    Json {
        source_name: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{source_name}: {reason}")]
    Prometheus { source_name: String, reason: String },
    #[error("{source_name}: more than 4 GiB of rows; split the file")]
    TooLarge { source_name: String },
}

/// How reading went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReport {
    pub source: String,
    pub format: SeriesFormat,
    /// Rows read (over every series).
    pub rows: u64,
    pub bad: u64,
    /// The first few bad rows.
    pub first_bad: Vec<BadRow>,
    /// The header line, when there was one.
    pub header: Option<String>,
}

/// One series: rows in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Prometheus labels as `{a="b",...}`; `None` for CSV.
    pub name: Option<String>,
    pub timestamps_ms: Vec<i64>,
    pub values: Vec<f64>,
    /// Where each row was.
    pub positions: Vec<RowPosition>,
    /// `timestamp,value` of each row as written in the input (trimmed, unquoted).
    text: String,
    spans: Vec<(u32, u32)>,
}

impl Series {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Row `i` as `timestamp,value`, in the input's own spelling.
    pub fn row_text(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.text[a as usize..b as usize]
    }

    fn push(&mut self, ts_text: &str, value_text: &str, ts: i64, v: f64, pos: RowPosition) -> bool {
        let start = self.text.len();
        self.text.push_str(ts_text);
        self.text.push(',');
        self.text.push_str(value_text);
        let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(self.text.len())) else {
            return false;
        };
        self.spans.push((a, b));
        self.timestamps_ms.push(ts);
        self.values.push(v);
        self.positions.push(pos);
        true
    }
}

/// Bad rows kept with their position.
pub const FIRST_BAD: usize = 5;

/// Parses a timestamp: Unix seconds, Unix milliseconds (from 1e11) or RFC 3339.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("missing timestamp".to_string());
    }
    let first = t.as_bytes()[0];
    let numeric = first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.';
    if numeric && !t.contains(['T', 't', ':']) {
        let v: f64 = t
            .parse()
            .map_err(|_| format!("timestamp `{t}` is neither a number nor RFC 3339"))?;
        if !v.is_finite() {
            return Err(format!("timestamp `{t}` is not a finite number"));
        }
        let ms = if v.abs() >= 1e11 { v } else { v * 1000.0 };
        if ms.abs() > 8.64e15 {
            return Err(format!("timestamp `{t}` is out of range"));
        }
        return Ok(ms.round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("timestamp `{t}` is not RFC 3339 ({e})"))
}

fn parse_value(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("missing value".to_string());
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("value `{t}` is not a finite number")),
        Err(_) => Err(format!("value `{}` is not a number", shorten(t))),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

fn unquote(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .map(str::trim)
        .unwrap_or(t)
}

/// Reads `data` (named `source` in messages) as `format`, or as detected.
pub fn read_series(
    source: &str,
    data: &[u8],
    format: Option<SeriesFormat>,
) -> Result<(Vec<Series>, ReadReport), SeriesError> {
    let format = format.unwrap_or_else(|| SeriesFormat::detect(data));
    let mut report = ReadReport {
        source: source.to_string(),
        format,
        rows: 0,
        bad: 0,
        first_bad: Vec::new(),
        header: None,
    };
    let series = match format {
        SeriesFormat::Csv => vec![read_csv(source, data, &mut report)?],
        SeriesFormat::Prometheus => read_prometheus(source, data, &mut report)?,
    };
    Ok((series, report))
}

fn bad(report: &mut ReadReport, position: RowPosition, reason: String) {
    report.bad += 1;
    if report.first_bad.len() < FIRST_BAD {
        report.first_bad.push(BadRow {
            source: report.source.clone(),
            position,
            reason,
        });
    }
}

fn read_csv(source: &str, data: &[u8], report: &mut ReadReport) -> Result<Series, SeriesError> {
    let mut s = Series {
        text: String::with_capacity(data.len().min(1 << 30)),
        ..Series::default()
    };
    let estimate = data.len() / 24;
    s.timestamps_ms.reserve(estimate);
    s.values.reserve(estimate);
    s.positions.reserve(estimate);
    s.spans.reserve(estimate);
    let mut line_no = 0u64;
    let mut pos = 0;
    let mut first = true;
    // A UTF-8 byte-order mark is not part of the first field.
    if data.starts_with(&[0xEF, 0xBB, 0xBF]) {
        pos = 3;
    }
    while pos < data.len() {
        let end = memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i);
        let raw = &data[pos..end];
        pos = end + 1;
        line_no += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let here = RowPosition::Line(line_no);
        let Ok(line) = std::str::from_utf8(raw) else {
            bad(report, here, "not UTF-8 text".to_string());
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((ts_text, value_text)) = line.split_once(',') else {
            bad(
                report,
                here,
                format!("expected `timestamp,value`, found `{}`", shorten(line)),
            );
            first = false;
            continue;
        };
        let (ts_text, value_text) = (unquote(ts_text), unquote(value_text));
        if value_text.contains(',') {
            bad(
                report,
                here,
                format!(
                    "expected 2 fields (timestamp,value), found {}",
                    line.split(',').count()
                ),
            );
            first = false;
            continue;
        }
        let ts = parse_timestamp(ts_text);
        let v = parse_value(value_text);
        let was_first = std::mem::replace(&mut first, false);
        match (ts, v) {
            (Ok(ts), Ok(v)) => {
                if !s.push(ts_text, value_text, ts, v, here) {
                    return Err(SeriesError::TooLarge {
                        source_name: source.to_string(),
                    });
                }
                report.rows += 1;
            }
            (Err(_), Err(_)) if was_first => report.header = Some(line.to_string()),
            (Err(e), _) | (_, Err(e)) => bad(report, here, e),
        }
    }
    Ok(s)
}

fn read_prometheus(
    source: &str,
    data: &[u8],
    report: &mut ReadReport,
) -> Result<Vec<Series>, SeriesError> {
    let doc: serde_json::Value = serde_json::from_slice(data).map_err(|e| SeriesError::Json {
        source_name: source.to_string(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    let fail = |reason: String| SeriesError::Prometheus {
        source_name: source.to_string(),
        reason,
    };
    match doc.get("status").and_then(|s| s.as_str()) {
        Some("success") => {}
        Some(other) => {
            let msg = doc.get("error").and_then(|e| e.as_str()).unwrap_or("");
            return Err(fail(format!("status is `{other}`: {msg}")));
        }
        None => {
            return Err(fail(
                "no `status`: not a Prometheus API response".to_string(),
            ));
        }
    }
    let data = doc
        .get("data")
        .ok_or_else(|| fail("no `data`".to_string()))?;
    match data.get("resultType").and_then(|s| s.as_str()) {
        Some("matrix") => {}
        Some(other) => {
            return Err(fail(format!(
                "resultType is `{other}`: expected `matrix` (a range query, /api/v1/query_range)"
            )));
        }
        None => return Err(fail("no `data.resultType`".to_string())),
    }
    let results = data
        .get("result")
        .and_then(|r| r.as_array())
        .ok_or_else(|| fail("`data.result` is not a list".to_string()))?;
    let mut out = Vec::with_capacity(results.len());
    for (si, r) in results.iter().enumerate() {
        let name = r.get("metric").and_then(|m| m.as_object()).map(|m| {
            let labels: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v)).collect();
            format!("{{{}}}", labels.join(","))
        });
        let values = r
            .get("values")
            .and_then(|v| v.as_array())
            .ok_or_else(|| fail(format!("result[{si}] has no `values` list")))?;
        let mut s = Series {
            name,
            ..Series::default()
        };
        for (i, p) in values.iter().enumerate() {
            let here = RowPosition::Point {
                series: si,
                index: i,
            };
            let Some([t, v]) = p
                .as_array()
                .map(|a| a.as_slice())
                .and_then(|a| <&[_; 2]>::try_from(a).ok())
            else {
                bad(report, here, "expected [timestamp, \"value\"]".to_string());
                continue;
            };
            let ts_text = match t {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => {
                    bad(report, here, format!("timestamp {other} is not a number"));
                    continue;
                }
            };
            let value_text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    bad(report, here, format!("value {other} is not a number"));
                    continue;
                }
            };
            match (parse_timestamp(&ts_text), parse_value(&value_text)) {
                (Ok(ts), Ok(val)) => {
                    if !s.push(&ts_text, &value_text, ts, val, here) {
                        return Err(SeriesError::TooLarge {
                            source_name: source.to_string(),
                        });
                    }
                    report.rows += 1;
                }
                (Err(e), _) | (_, Err(e)) => bad(report, here, e),
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// A run of flagged points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Where its first and last rows were in the input.
    pub first: RowPosition,
    pub last: RowPosition,
    /// Distinct timestamps in the region.
    pub points: usize,
    pub peak_score: f64,
    pub peak_ms: i64,
    /// The detector's explanation at the peak (empty unless asked for).
    pub detector: String,
}

/// The result of [`score_series`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Scored {
    /// One score per row, in input order.
    pub scores: Vec<f64>,
    /// Rows with a score at or above the threshold.
    pub flagged: u64,
    pub regions: Vec<Region>,
    /// The median step between distinct timestamps, when there are two or more.
    pub interval_ms: Option<i64>,
    pub gaps: u64,
    /// Points missing in the gaps.
    pub missing: u64,
    /// Rows sharing a timestamp with an earlier row.
    pub duplicates: u64,
    /// Rows earlier than the row before them.
    pub out_of_order: u64,
}

/// How a series is scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOptions {
    pub detector: DetectorSpec,
    /// Score at which a row is flagged, in (0, 1]. Default 0.5.
    pub threshold: f64,
    /// Keep the detector's explanation at each region's peak (costs a little).
    pub explain: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            detector: DetectorSpec::default(),
            threshold: 0.5,
            explain: false,
        }
    }
}

/// Runs the detector over `series`; see the module documentation.
pub fn score_series(series: &Series, options: &ScoreOptions) -> Result<Scored, ConfigError> {
    let mut detector: Box<dyn Detector> = options.detector.build()?;
    let n = series.len();
    let ts = &series.timestamps_ms;
    let mut out = Scored {
        scores: vec![0.0; n],
        ..Scored::default()
    };
    if n == 0 {
        return Ok(out);
    }
    out.out_of_order = ts.windows(2).filter(|w| w[1] < w[0]).count() as u64;
    let order: Vec<usize> = if out.out_of_order == 0 {
        (0..n).collect()
    } else {
        let mut o: Vec<usize> = (0..n).collect();
        o.sort_by_key(|&i| ts[i]);
        o
    };
    // Groups of equal timestamps, as ranges of `order`.
    let mut groups: Vec<(usize, usize)> = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && ts[order[j]] == ts[order[i]] {
            j += 1;
        }
        groups.push((i, j));
        out.duplicates += (j - i - 1) as u64;
        i = j;
    }
    let mut steps: Vec<i64> = groups
        .windows(2)
        .map(|w| ts[order[w[1].0]] - ts[order[w[0].0]])
        .collect();
    out.interval_ms = if steps.is_empty() {
        None
    } else {
        let mid = steps.len() / 2;
        let (_, m, _) = steps.select_nth_unstable(mid);
        Some((*m).max(1))
    };
    let threshold = options.threshold;
    let mut region: Option<Region> = None;
    let mut prev_ts: Option<i64> = None;
    for &(a, b) in &groups {
        let t = ts[order[a]];
        let mut gap = false;
        if let (Some(p), Some(iv)) = (prev_ts, out.interval_ms) {
            let step = t - p;
            if step * 2 > iv * 3 {
                let missing = ((step as f64 / iv as f64).round() as u64)
                    .saturating_sub(1)
                    .max(1);
                out.gaps += 1;
                out.missing += missing;
                detector.skip(missing);
                gap = true;
            }
        }
        prev_ts = Some(t);
        let value = if b - a == 1 {
            series.values[order[a]]
        } else {
            order[a..b].iter().map(|&r| series.values[r]).sum::<f64>() / (b - a) as f64
        };
        let s = detector.update(value).score;
        for &r in &order[a..b] {
            out.scores[r] = s;
        }
        let flagged = s >= threshold;
        if flagged {
            out.flagged += (b - a) as u64;
        }
        let last_pos = series.positions[order[b - 1]];
        match (&mut region, flagged) {
            (Some(reg), true) if !gap => {
                reg.end_ms = t;
                reg.last = last_pos;
                reg.points += 1;
                if s > reg.peak_score {
                    reg.peak_score = s;
                    reg.peak_ms = t;
                    if options.explain {
                        reg.detector = detector.explain();
                    }
                }
            }
            (_, true) => {
                if let Some(done) = region.take() {
                    out.regions.push(done);
                }
                region = Some(Region {
                    start_ms: t,
                    end_ms: t,
                    first: series.positions[order[a]],
                    last: last_pos,
                    points: 1,
                    peak_score: s,
                    peak_ms: t,
                    detector: if options.explain {
                        detector.explain()
                    } else {
                        String::new()
                    },
                });
            }
            (_, false) => {
                if let Some(done) = region.take() {
                    out.regions.push(done);
                }
            }
        }
    }
    if let Some(done) = region.take() {
        out.regions.push(done);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_in_every_spelling() {
        assert_eq!(parse_timestamp("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_timestamp("1700000000.25").unwrap(), 1_700_000_000_250);
        assert_eq!(parse_timestamp("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_timestamp("2023-11-14 23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("1e400").is_err());
        assert!(parse_timestamp("").is_err());
    }

    #[test]
    fn csv_with_header_bad_rows_and_quotes() {
        let data = b"\xEF\xBB\xBFtimestamp,value\n1,1.5\n2,abc\n\n# note\n\"3\", \"2.5\" \r\n4\n5,1,2\n6,NaN\n";
        let (s, r) = read_series("s.csv", data, None).unwrap();
        assert_eq!(r.format, SeriesFormat::Csv);
        assert_eq!(r.header.as_deref(), Some("timestamp,value"));
        assert_eq!(r.rows, 2);
        assert_eq!(r.bad, 4);
        let msgs: Vec<String> = r.first_bad.iter().map(|b| b.to_string()).collect();
        assert_eq!(msgs[0], "s.csv line 3: value `abc` is not a number");
        assert!(
            msgs[1].starts_with("s.csv line 7: expected `timestamp,value`"),
            "{msgs:?}"
        );
        assert_eq!(
            msgs[2],
            "s.csv line 8: expected 2 fields (timestamp,value), found 3"
        );
        assert_eq!(msgs[3], "s.csv line 9: value `NaN` is not a finite number");
        assert_eq!(s[0].row_text(1), "3,2.5");
        assert_eq!(s[0].positions[1], RowPosition::Line(6));
    }

    #[test]
    fn prometheus_matrix() {
        let data = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[1700000000,"1"],[1700000015.5,"x"],[1700000030,"0"]]},
            {"metric":{},"values":[[1700000000,"2"]]}]}}"#;
        let (s, r) = read_series("q.json", data, None).unwrap();
        assert_eq!(r.format, SeriesFormat::Prometheus);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name.as_deref(), Some(r#"{__name__="up",job="a"}"#));
        assert_eq!(s[0].len(), 2);
        assert_eq!(r.bad, 1);
        assert_eq!(
            r.first_bad[0].to_string(),
            "q.json result[0].values[1]: value `x` is not a number"
        );
        let e =
            read_series("q.json", br#"{"status":"error","error":"bad query"}"#, None).unwrap_err();
        assert_eq!(e.to_string(), "q.json: status is `error`: bad query");
        let e = read_series(
            "q.json",
            br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected `matrix`"), "{e}");
        let e = read_series("q.json", b"{\n  \"status\": ", None).unwrap_err();
        assert!(e.to_string().starts_with("q.json line 2 column"), "{e}");
    }

    fn series(points: &[(i64, f64)]) -> Series {
        let mut s = Series::default();
        for (i, (t, v)) in points.iter().enumerate() {
            s.push(
                &t.to_string(),
                &v.to_string(),
                *t,
                *v,
                RowPosition::Line(i as u64 + 1),
            );
        }
        s
    }

    #[test]
    fn gaps_duplicates_and_order() {
        let mut pts: Vec<(i64, f64)> = (0..200)
            .map(|i| (i * 10_000, 5.0 + (i % 3) as f64 * 0.1))
            .collect();
        // A gap of 5 missing points, a duplicate, and two rows swapped.
        pts.retain(|(t, _)| !(500_000..560_000).contains(t));
        pts.push((300_000, 5.1));
        pts.swap(10, 11);
        let s = series(&pts);
        let r = score_series(&s, &ScoreOptions::default()).unwrap();
        assert_eq!(r.scores.len(), s.len());
        assert_eq!(r.interval_ms, Some(10_000));
        assert_eq!(r.gaps, 1);
        assert_eq!(r.missing, 6);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 2);
        assert_eq!(r.flagged, 0);
    }

    #[test]
    fn a_step_makes_one_region() {
        let pts: Vec<(i64, f64)> = (0..300)
            .map(|i| {
                let noise = ((i * 7919) % 11) as f64 / 11.0 - 0.5;
                (
                    i * 1000,
                    if (200..220).contains(&i) { 20.0 } else { 10.0 } + noise,
                )
            })
            .collect();
        let s = series(&pts);
        let opts = ScoreOptions {
            explain: true,
            ..ScoreOptions::default()
        };
        let r = score_series(&s, &opts).unwrap();
        assert!(!r.regions.is_empty());
        let reg = &r.regions[0];
        assert!((200_000..=202_000).contains(&reg.start_ms), "{reg:?}");
        assert!(reg.peak_score > 0.9);
        assert!(reg.detector.starts_with("ensemble"), "{}", reg.detector);
    }
}
