//! JSON lines: one JSON object per line, as written by nginx's `escape=json`
//! formats, application loggers and most log shippers.
//!
//! Each record field is looked up under a list of usual names, first present
//! one wins (a `null`, `""` or `"-"` value counts as absent). A mapping
//! (`jsonl:method=verb,path=http.request.uri`) replaces the list for the
//! fields it names; a dotted path walks nested objects, after first trying the
//! whole text as a key (flattened loggers write `"http.request.method"`).
//!
//! # Units
//!
//! A duration that is a string with a unit (`"12ms"`, `"0.3s"`, `"1m2.5s"`) is
//! read in that unit. A bare number takes its unit from the mapping
//! (`duration=took:us`), else from the key it was found under:
//!
//! - ending `_ms`, `Ms`, `millis` or `_msec`: milliseconds;
//! - ending `_us`, `Us` or `micros`: microseconds; `_ns`, `Ns` or `nanos`: nanoseconds;
//! - ending `_s`, `_sec`, `_secs`, `_seconds` or `Seconds`, or named
//!   `request_time`, or containing `upstream`: seconds (nginx's variables);
//! - anything else (`duration`, `latency`, `response_time`, `elapsed`): milliseconds.
//!
//! A numeric time is an epoch in the mapping's unit (`time=ts:s`), else guessed
//! from its size (see [`time::epoch_to_ms`]). A string time is RFC 3339, nginx's
//! `time_local`, or a number in a string.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use umbra_core::RequestRecord;

use super::LineParser;
use super::field::{self, content, json_kind, shown, split_request_line, split_target};
use super::time::{self, Unit};

/// Which JSON keys give which record fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonMapping {
    overrides: Vec<Override>,
}

#[derive(Debug, Clone, PartialEq)]
struct Override {
    field: Field,
    path: String,
    unit: Option<Unit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Query,
    Protocol,
    Status,
    ResponseBytes,
    RequestBytes,
    Duration,
    UserAgent,
    Referer,
    Time,
    Client,
    ContentType,
    Headers,
}

const FIELDS: [Field; 14] = [
    Field::Method,
    Field::Path,
    Field::Query,
    Field::Protocol,
    Field::Status,
    Field::ResponseBytes,
    Field::RequestBytes,
    Field::Duration,
    Field::UserAgent,
    Field::Referer,
    Field::Time,
    Field::Client,
    Field::ContentType,
    Field::Headers,
];

impl Field {
    /// The names a mapping may use for this field; the first is canonical.
    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Method => &["method"],
            Field::Path => &["path", "url", "uri"],
            Field::Query => &["query"],
            Field::Protocol => &["protocol"],
            Field::Status => &["status"],
            Field::ResponseBytes => &["response_bytes", "bytes"],
            Field::RequestBytes => &["request_bytes"],
            Field::Duration => &["duration", "duration_ms"],
            Field::UserAgent => &["user_agent", "ua"],
            Field::Referer => &["referer"],
            Field::Time => &["time", "timestamp"],
            Field::Client => &["client"],
            Field::ContentType => &["content_type"],
            Field::Headers => &["headers"],
        }
    }

    /// The keys looked up when the mapping does not name this field.
    fn defaults(self) -> &'static [&'static str] {
        match self {
            Field::Method => &["method", "request_method", "verb"],
            Field::Path => &["path", "uri", "url", "request_uri", "request"],
            Field::Query => &["query", "query_string", "args"],
            Field::Protocol => &["protocol", "server_protocol", "http_version", "proto"],
            Field::Status => &["status", "status_code", "response_status"],
            Field::ResponseBytes => &[
                "bytes",
                "body_bytes_sent",
                "response_bytes",
                "size",
                "bytes_sent",
            ],
            Field::RequestBytes => &["request_bytes", "request_length", "request_size"],
            Field::Duration => &[
                "duration",
                "duration_ms",
                "request_time",
                "latency",
                "response_time",
                "elapsed",
            ],
            Field::UserAgent => &["user_agent", "http_user_agent", "ua", "userAgent"],
            Field::Referer => &["referer", "http_referer", "referrer"],
            Field::Time => &[
                "time",
                "timestamp",
                "@timestamp",
                "ts",
                "time_local",
                "time_iso8601",
                "msec",
            ],
            Field::Client => &["client", "remote_addr", "ip", "client_ip"],
            Field::ContentType => &["content_type", "http_content_type"],
            Field::Headers => &["headers"],
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        FIELDS.into_iter().find(|f| f.names().contains(&name))
    }
}

impl JsonMapping {
    /// Parses `field=path[:unit],...` (what follows `jsonl:`).
    pub fn new(spec: &str) -> Result<JsonMapping, String> {
        Self::parse_at(spec, 0)
    }

    /// As [`JsonMapping::new`], with error columns shifted by `offset` characters.
    pub(crate) fn parse_at(spec: &str, offset: usize) -> Result<JsonMapping, String> {
        let mut overrides: Vec<Override> = Vec::new();
        let mut col = offset + 1;
        for item in spec.split(',') {
            let item_col = col;
            col += item.chars().count() + 1;
            let at = |what: String| format!("at column {item_col}: {what}");
            let item = item.trim();
            let (name, path) = item
                .split_once('=')
                .ok_or_else(|| at(format!("`{item}` is not field=json.path")))?;
            let (name, path) = (name.trim(), path.trim());
            let field = Field::from_name(name).ok_or_else(|| {
                let known: Vec<_> = FIELDS.iter().map(|f| f.names()[0]).collect();
                at(format!(
                    "unknown field `{name}`; the fields are {}",
                    known.join(", ")
                ))
            })?;
            let (path, unit) = match path.rsplit_once(':') {
                Some((p, u)) if Unit::parse(u).is_some() => (p, Unit::parse(u)),
                _ => (path, None),
            };
            if unit.is_some() && !matches!(field, Field::Duration | Field::Time) {
                return Err(at(format!(
                    "a unit only applies to duration and time, not {name}"
                )));
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(at(format!(
                    "`{path}` is not a JSON path like `http.request.method`"
                )));
            }
            if overrides.iter().any(|o| o.field == field) {
                return Err(at(format!("{name} is mapped twice")));
            }
            overrides.push(Override {
                field,
                path: path.to_string(),
                unit,
            });
        }
        Ok(JsonMapping { overrides })
    }

    /// Whether this is the default mapping.
    pub fn is_default(&self) -> bool {
        self.overrides.is_empty()
    }
}

impl FromStr for JsonMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        JsonMapping::new(s)
    }
}

impl fmt::Display for JsonMapping {
    /// The overrides as `field=path[:unit],...`; empty for the default mapping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.overrides.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", o.field.names()[0], o.path)?;
            if let Some(u) = o.unit {
                write!(f, ":{}", u.as_str())?;
            }
        }
        Ok(())
    }
}

/// One place to look for a field.
struct Candidate {
    key: String,
    /// The key split at dots, when it has any.
    nested: Option<Vec<String>>,
    unit: Option<Unit>,
}

impl Candidate {
    fn new(key: &str, unit: Option<Unit>) -> Candidate {
        Candidate {
            key: key.to_string(),
            nested: key
                .contains('.')
                .then(|| key.split('.').map(str::to_string).collect()),
            unit,
        }
    }

    /// The value here, unless absent, `null`, `""` or `"-"`.
    fn find<'v>(&self, obj: &'v Map<String, Value>) -> Option<&'v Value> {
        let v = obj.get(&self.key).or_else(|| {
            let (first, rest) = self.nested.as_ref()?.split_first()?;
            rest.iter()
                .try_fold(obj.get(first)?, |v, seg| v.as_object()?.get(seg))
        })?;
        match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() || s == "-" => None,
            v => Some(v),
        }
    }

    /// The unit of a bare-number duration found here (see the module comment).
    fn duration_unit(&self) -> Unit {
        if let Some(u) = self.unit {
            return u;
        }
        let name = self
            .nested
            .as_ref()
            .and_then(|n| n.last())
            .unwrap_or(&self.key);
        let lower = name.to_ascii_lowercase();
        let ends = |suffixes: &[&str]| suffixes.iter().any(|s| lower.ends_with(s));
        if ends(&["_ms", "millis", "_msec"]) || name.ends_with("Ms") {
            Unit::Millis
        } else if ends(&["_us", "micros"]) || name.ends_with("Us") {
            Unit::Micros
        } else if ends(&["_ns", "nanos"]) || name.ends_with("Ns") {
            Unit::Nanos
        } else if ends(&["_s", "_sec", "_secs", "_seconds"])
            || name.ends_with("Seconds")
            || lower == "request_time"
            || lower.contains("upstream")
        {
            Unit::Seconds
        } else {
            Unit::Millis
        }
    }
}

pub(crate) struct JsonParser {
    /// Where to look, per field, in the order of [`FIELDS`].
    candidates: Vec<Vec<Candidate>>,
}

impl JsonParser {
    pub(crate) fn new(mapping: &JsonMapping) -> JsonParser {
        let candidates = FIELDS
            .iter()
            .map(|&f| match mapping.overrides.iter().find(|o| o.field == f) {
                Some(o) => vec![Candidate::new(&o.path, o.unit)],
                None => f
                    .defaults()
                    .iter()
                    .map(|k| Candidate::new(k, None))
                    .collect(),
            })
            .collect();
        JsonParser { candidates }
    }

    fn find<'p, 'v>(
        &'p self,
        obj: &'v Map<String, Value>,
        field: Field,
    ) -> Option<(&'p Candidate, &'v Value)> {
        let i = FIELDS.iter().position(|&f| f == field)?;
        self.candidates[i]
            .iter()
            .find_map(|c| c.find(obj).map(|v| (c, v)))
    }

    fn tried(&self, field: Field) -> String {
        let i = FIELDS.iter().position(|&f| f == field).unwrap_or(0);
        let keys: Vec<_> = self.candidates[i].iter().map(|c| c.key.as_str()).collect();
        keys.join(", ")
    }
}

/// A string, or a number or boolean written as one.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_field(found: Option<(&Candidate, &Value)>) -> Result<Option<String>, String> {
    match found {
        None => Ok(None),
        Some((c, v)) => as_text(v)
            .map(Some)
            .ok_or_else(|| format!("`{}` is {}, not a string", c.key, json_kind(v))),
    }
}

/// A non-negative number, or a string holding one.
fn number(c: &Candidate, v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => time::decimal(s.trim().as_bytes(), 0),
        _ => None,
    };
    n.filter(|n| *n >= 0.0)
        .ok_or_else(|| format!("`{}` ({}) is not a number", c.key, shown_value(v)))
}

fn shown_value(v: &Value) -> String {
    shown(v.to_string().as_bytes())
}

fn bytes_field(found: Option<(&Candidate, &Value)>) -> Result<Option<u64>, String> {
    let Some((c, v)) = found else {
        return Ok(None);
    };
    // HAR-style -1 means unknown.
    if v.as_i64().is_some_and(|n| n < 0) {
        return Ok(None);
    }
    let n = number(c, v)?;
    if n.fract() != 0.0 {
        return Err(format!(
            "`{}` ({}) is not a whole number of bytes",
            c.key, n
        ));
    }
    Ok(Some(n as u64))
}

fn duration_field(found: Option<(&Candidate, &Value)>) -> Result<Option<f64>, String> {
    let Some((c, v)) = found else {
        return Ok(None);
    };
    if v.as_f64().is_some_and(|n| n < 0.0) {
        return Ok(None);
    }
    if let Some(ms) = v.as_str().and_then(time::parse_duration_ms) {
        return Ok(Some(ms));
    }
    let n = number(c, v).map_err(|_| {
        format!(
            "`{}` ({}) is not a duration like 12.5, \"12ms\" or \"0.3s\"",
            c.key,
            shown_value(v)
        )
    })?;
    Ok(Some(n * c.duration_unit().in_ms()))
}

fn time_field(found: Option<(&Candidate, &Value)>) -> Result<Option<i64>, String> {
    let Some((c, v)) = found else {
        return Ok(None);
    };
    let bad = || format!("`{}` ({}) is not a time", c.key, shown_value(v));
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(|n| time::epoch_to_ms(n, c.unit))
            .map(Some)
            .ok_or_else(bad),
        Value::String(s) => {
            let b = s.trim().as_bytes();
            time::parse_rfc3339(b)
                .or_else(|| time::parse_time_local(b))
                .or_else(|| time::decimal(b, 0).and_then(|n| time::epoch_to_ms(n, c.unit)))
                .map(Some)
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Headers as an object (`{"Accept": "*/*"}`, values possibly lists) or as a
/// list of `{"name": ..., "value": ...}`; names are lower-cased.
fn headers_field(
    found: Option<(&Candidate, &Value)>,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let Some((c, v)) = found else {
        return Ok(());
    };
    let value_text = |v: &Value| match v {
        Value::Array(items) => {
            let parts: Vec<_> = items.iter().filter_map(as_text).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
        v => as_text(v),
    };
    match v {
        Value::Object(map) => {
            for (name, value) in map {
                if let Some(value) = value_text(value) {
                    out.push((name.to_ascii_lowercase(), value));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let value = item.get("value").and_then(value_text);
                if let (Some(name), Some(value)) = (name, value) {
                    out.push((name.to_ascii_lowercase(), value));
                }
            }
        }
        v => {
            return Err(format!(
                "`{}` is {}, not an object or a list of headers",
                c.key,
                json_kind(v)
            ));
        }
    }
    Ok(())
}

impl LineParser for JsonParser {
    fn parse(&mut self, line: &[u8]) -> Result<Option<RequestRecord>, String> {
        let Some(line) = content(line) else {
            return Ok(None);
        };
        // Invalid UTF-8 is replaced rather than refusing the whole line.
        let text = String::from_utf8_lossy(line);
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("not valid JSON ({e})"))?;
        let Value::Object(obj) = value else {
            return Err(format!(
                "{} where a JSON object was expected",
                json_kind(&value)
            ));
        };
        self.record(&obj).map(Some)
    }
}

impl JsonParser {
    fn record(&self, obj: &Map<String, Value>) -> Result<RequestRecord, String> {
        let mut rec = RequestRecord::default();
        let method = string_field(self.find(obj, Field::Method))?;
        let protocol = string_field(self.find(obj, Field::Protocol))?;

        let (c, target) = self
            .find(obj, Field::Path)
            .ok_or_else(|| format!("no path: none of {} is present", self.tried(Field::Path)))?;
        let target = as_text(target)
            .ok_or_else(|| format!("`{}` is {}, not a path", c.key, json_kind(target)))?;
        let mut target = target.as_bytes();
        let mut line_method = None;
        let mut line_protocol = None;
        // A whole request line (`"request": "GET /x HTTP/1.1"`) gives method and protocol too.
        let request_line = target
            .contains(&b' ')
            .then(|| split_request_line(target).ok())
            .flatten();
        if let Some(req) = request_line {
            line_method = Some(field::lossy(req.method));
            line_protocol = Some(field::lossy(req.protocol));
            target = req.target;
        }
        (rec.path, rec.query) = split_target(target).map_err(|e| format!("`{}`: {e}", c.key))?;

        rec.method = method.or(line_method).ok_or_else(|| {
            format!(
                "no method: none of {} is present",
                self.tried(Field::Method)
            )
        })?;
        rec.protocol = protocol
            .or(line_protocol)
            .as_deref()
            .and_then(field::protocol);
        if rec.query.is_none() {
            rec.query = string_field(self.find(obj, Field::Query))?
                .map(|q| q.strip_prefix('?').map(str::to_string).unwrap_or(q))
                .filter(|q| !q.is_empty());
        }
        rec.status = match self.find(obj, Field::Status) {
            None => None,
            Some((c, v)) => {
                let n = number(c, v)?;
                if n.fract() != 0.0 || n > 999.0 {
                    return Err(format!("`{}` ({n}) is not an HTTP status", c.key));
                }
                Some(n as u16).filter(|s| *s != 0)
            }
        };
        rec.response_bytes = bytes_field(self.find(obj, Field::ResponseBytes))?;
        rec.request_bytes = bytes_field(self.find(obj, Field::RequestBytes))?;
        rec.duration_ms = duration_field(self.find(obj, Field::Duration))?;
        rec.timestamp_ms = time_field(self.find(obj, Field::Time))?;
        rec.client = string_field(self.find(obj, Field::Client))?;
        rec.user_agent = string_field(self.find(obj, Field::UserAgent))?;
        rec.referer = string_field(self.find(obj, Field::Referer))?;
        rec.content_type = string_field(self.find(obj, Field::ContentType))?;
        headers_field(self.find(obj, Field::Headers), &mut rec.headers)?;

        // nginx JSON formats log headers as top-level `http_x_forwarded_for` keys.
        for (key, value) in obj {
            let Some(name) = key.strip_prefix("http_") else {
                continue;
            };
            if matches!(name, "user_agent" | "referer" | "content_type" | "version")
                || name.is_empty()
            {
                continue;
            }
            if let Some(value) = as_text(value).filter(|v| !v.is_empty() && v != "-") {
                rec.headers
                    .push((name.replace('_', "-").to_ascii_lowercase(), value));
            }
        }
        // Fill what the headers know and the fields did not say.
        let from_header = |rec: &RequestRecord, name: &str| rec.header(name).map(str::to_string);
        if rec.user_agent.is_none() {
            rec.user_agent = from_header(&rec, "user-agent");
        }
        if rec.referer.is_none() {
            rec.referer = from_header(&rec, "referer");
        }
        if rec.content_type.is_none() {
            rec.content_type = from_header(&rec, "content-type");
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(mapping: &str, line: &str) -> Result<Option<RequestRecord>, String> {
        let mapping = if mapping.is_empty() {
            JsonMapping::default()
        } else {
            JsonMapping::new(mapping).expect("valid mapping")
        };
        JsonParser::new(&mapping).parse(line.as_bytes())
    }

    fn ok(mapping: &str, line: &str) -> RequestRecord {
        match parse(mapping, line) {
            Ok(Some(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn default_names() {
        let r = ok(
            "",
            r#"{"time":"2019-01-22T03:56:14+03:30","remote_addr":"10.0.0.1","request":"GET /a/b?c=1 HTTP/1.1","status":"200","body_bytes_sent":"512","request_time":"0.034","http_user_agent":"curl/8","http_referer":"-","http_x_forwarded_for":"1.2.3.4"}"#,
        );
        assert_eq!(r.timestamp_ms, Some(1_548_116_774_000));
        assert_eq!(r.client.as_deref(), Some("10.0.0.1"));
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/a/b"));
        assert_eq!(r.query.as_deref(), Some("c=1"));
        assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.response_bytes, Some(512));
        assert_eq!(r.duration_ms, Some(34.0));
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(r.referer, None);
        assert_eq!(r.header("x-forwarded-for"), Some("1.2.3.4"));
    }

    #[test]
    fn nested_mapping_and_string_durations() {
        let mapping = "method=http.request.method,path=url.original,status=http.response.status_code,duration=event.took,time=ts:ms,headers=http.request.headers";
        let r = ok(
            mapping,
            r#"{"ts":1548116774000,"http":{"request":{"method":"PUT","headers":{"User-Agent":["okhttp/4"],"X-Id":"7"}},"response":{"status_code":204}},"url":{"original":"https://api.example.com/v1/x?y=2"},"event":{"took":"12.5ms"}}"#,
        );
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v1/x");
        assert_eq!(r.query.as_deref(), Some("y=2"));
        assert_eq!(r.status, Some(204));
        assert_eq!(r.duration_ms, Some(12.5));
        assert_eq!(r.timestamp_ms, Some(1_548_116_774_000));
        assert_eq!(r.user_agent.as_deref(), Some("okhttp/4"));
        assert_eq!(r.header("x-id"), Some("7"));

        // A flattened key with dots in it is found as it is.
        let r = ok(
            mapping,
            r#"{"http.request.method":"GET","url.original":"/z","event.took":"0.3s"}"#,
        );
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/z"));
        assert_eq!(r.duration_ms, Some(300.0));
    }

    #[test]
    fn duration_units_follow_the_key() {
        let d = |line: &str| ok("", line).duration_ms;
        assert_eq!(
            d(r#"{"method":"GET","path":"/","duration_ms":12}"#),
            Some(12.0)
        );
        assert_eq!(
            d(r#"{"method":"GET","path":"/","duration":12}"#),
            Some(12.0)
        );
        assert_eq!(
            d(r#"{"method":"GET","path":"/","request_time":0.25}"#),
            Some(250.0)
        );
        assert_eq!(
            d(r#"{"method":"GET","path":"/","latency":"1.5s"}"#),
            Some(1500.0)
        );
        let d = |map: &str, line: &str| ok(map, line).duration_ms;
        assert_eq!(
            d(
                "duration=upstream_response_time",
                r#"{"method":"GET","path":"/","upstream_response_time":"0.002"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            d(
                "duration=took_us",
                r#"{"method":"GET","path":"/","took_us":1500}"#
            ),
            Some(1.5)
        );
        assert_eq!(
            d("duration=took:s", r#"{"method":"GET","path":"/","took":2}"#),
            Some(2000.0)
        );
        assert_eq!(
            d(
                "duration=elapsedMs",
                r#"{"method":"GET","path":"/","elapsedMs":3}"#
            ),
            Some(3.0)
        );
    }

    #[test]
    fn times_in_several_forms() {
        let t =
            |v: &str| ok("", &format!(r#"{{"method":"GET","path":"/","time":{v}}}"#)).timestamp_ms;
        let want = Some(1_548_116_774_000);
        assert_eq!(t("1548116774"), want);
        assert_eq!(t("1548116774000"), want);
        assert_eq!(t(r#""1548116774.0""#), want);
        assert_eq!(t(r#""22/Jan/2019:03:56:14 +0330""#), want);
        assert_eq!(t(r#""2019-01-22T00:26:14.000Z""#), want);
    }

    #[test]
    fn headers_as_a_list_and_absolute_urls() {
        let r = ok(
            "",
            r#"{"verb":"POST","url":"http://h/p?q","headers":[{"name":"Content-Type","value":"application/json"}],"status":0,"bytes":-1}"#,
        );
        assert_eq!(r.path, "/p");
        assert_eq!(r.query.as_deref(), Some("q"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.status, None);
        assert_eq!(r.response_bytes, None);
    }

    #[test]
    fn bad_lines_have_reasons() {
        let err = |m: &str, l: &str| parse(m, l).expect_err(l);
        assert!(err("", "{\"method\":").contains("not valid JSON"));
        assert!(err("", "[1,2]").contains("an array where a JSON object"));
        assert!(err("", r#"{"method":"GET"}"#).contains("no path: none of path, uri"));
        assert!(err("", r#"{"path":"/"}"#).contains("no method"));
        assert!(err("", r#"{"method":"GET","path":"/","status":"ok"}"#).contains("`status`"));
        assert!(
            err("", r#"{"method":"GET","path":"/","duration":"soon"}"#).contains("not a duration")
        );
        assert!(
            err("", r#"{"method":"GET","path":"/","time":"yesterday"}"#).contains("not a time")
        );
        assert!(err("", r#"{"method":"GET","path":"relative"}"#).contains("neither a path"));
        assert_eq!(parse("", "   "), Ok(None));
    }

    #[test]
    fn non_utf8_is_replaced() {
        let mut line = br#"{"method":"GET","path":"/caf"#.to_vec();
        line.push(0xe9);
        line.extend_from_slice(br#""}"#);
        let r = JsonParser::new(&JsonMapping::default())
            .parse(&line)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.path, "/caf\u{fffd}");
    }

    #[test]
    fn mapping_syntax() {
        let m = JsonMapping::new("method=verb, path=a.b ,duration=t:ms").expect("valid");
        assert_eq!(m.to_string(), "method=verb,path=a.b,duration=t:ms");
        let err = |s: &str| JsonMapping::new(s).expect_err(s);
        assert!(err("methd=verb").contains("column 1: unknown field `methd`"));
        assert!(err("method=verb,path").contains("column 13"));
        assert!(err("method=verb,path=a..b").contains("column 13"));
        assert!(err("status=code:ms").contains("only applies"));
        assert!(err("path=a,path=b").contains("twice"));
    }
}
