//! HAR 1.2 files, as exported by browsers, proxies and API clients.
//!
//! A HAR file is one JSON document, so it is read whole. Each of `log.entries`
//! gives a record; an entry without a request method or URL is a bad entry
//! (reported by its index), not a reason to refuse the file. What we take:
//!
//! - `request.url`, split into path and query (the fragment dropped);
//! - `request.httpVersion`, spelt as access logs do (`h2` → `HTTP/2.0`);
//! - `request.headers`, names lower-cased; HTTP/2 pseudo-headers (`:authority`,
//!   `:path`, ...) are dropped because they repeat the URL and method;
//! - `request.bodySize`, or the length of `postData.text` when it is -1;
//! - `request.postData.mimeType`, else the `Content-Type` header;
//! - `response.status`, where 0 means no response came (`status: None`, and
//!   no response size); `response.bodySize`, else `response.content.size`;
//! - `time` (total milliseconds, -1 for unknown) and `startedDateTime`.
//!
//! HAR has no client address: browsers record the server's.

use serde_json::Value;
use umbra_core::RequestRecord;

use super::field::{self, json_kind, split_target};
use super::time;

/// The records of a HAR document, or why it is not one. Each entry gives
/// `Ok(record)` or `Err(reason)`, in order.
pub(crate) fn entries(doc: &[u8]) -> Result<Vec<Result<RequestRecord, String>>, HarError> {
    let text = String::from_utf8_lossy(field::strip_bom(doc));
    let value: Value = serde_json::from_str(&text).map_err(|e| HarError::Json {
        line: e.line() as u64,
        column: e.column() as u64,
        message: json_message(&e),
    })?;
    let shape = HarError::Shape;
    let Value::Object(top) = value else {
        return Err(shape(format!(
            "the document is {}, not an object with a `log`",
            json_kind(&value)
        )));
    };
    let log = top
        .get("log")
        .ok_or_else(|| shape("there is no `log` at the top level".into()))?;
    let entries = log
        .get("entries")
        .ok_or_else(|| shape("`log` has no `entries`".into()))?;
    let Value::Array(entries) = entries else {
        return Err(shape(format!(
            "`log.entries` is {}, not an array",
            json_kind(entries)
        )));
    };
    Ok(entries.iter().map(entry).collect())
}

/// Why a document is not a HAR file.
#[derive(Debug)]
pub(crate) enum HarError {
    Json {
        line: u64,
        column: u64,
        message: String,
    },
    Shape(String),
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A size field: HAR writes -1 for unknown.
fn size(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_i64)
        .and_then(|n| u64::try_from(n).ok())
        .or_else(|| {
            v.and_then(Value::as_f64)
                .filter(|n| *n >= 0.0)
                .map(|n| n as u64)
        })
}

fn entry(e: &Value) -> Result<RequestRecord, String> {
    let request = e.get("request").ok_or("no `request`")?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("no `request.method`")?;
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or("no `request.url`")?;
    let (path, query) = split_target(url.as_bytes()).map_err(|e| format!("`request.url`: {e}"))?;

    let mut rec = RequestRecord {
        method: method.to_string(),
        path,
        query,
        protocol: request
            .get("httpVersion")
            .and_then(Value::as_str)
            .and_then(field::protocol),
        ..RequestRecord::default()
    };
    if let Some(headers) = request.get("headers").and_then(Value::as_array) {
        for h in headers {
            let name = h
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.starts_with(':'));
            let value = h.get("value").and_then(Value::as_str);
            if let (Some(name), Some(value)) = (name, value) {
                rec.headers
                    .push((name.to_ascii_lowercase(), value.to_string()));
            }
        }
    }
    rec.user_agent = rec.header("user-agent").map(str::to_string);
    rec.referer = rec.header("referer").map(str::to_string);

    let post = request.get("postData");
    rec.content_type = post
        .and_then(|p| p.get("mimeType"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .or_else(|| rec.header("content-type"))
        .map(str::to_string);
    rec.request_bytes = size(request.get("bodySize")).or_else(|| {
        post.and_then(|p| p.get("text"))
            .and_then(Value::as_str)
            .map(|t| t.len() as u64)
    });

    if let Some(response) = e.get("response") {
        rec.status = response
            .get("status")
            .and_then(Value::as_u64)
            .filter(|s| (1..=999).contains(s))
            .map(|s| s as u16);
        if rec.status.is_some() {
            rec.response_bytes = size(response.get("bodySize"))
                .or_else(|| size(response.get("content").and_then(|c| c.get("size"))));
        }
    }
    rec.duration_ms = e.get("time").and_then(Value::as_f64).filter(|t| *t >= 0.0);
    if let Some(started) = e.get("startedDateTime").and_then(Value::as_str) {
        rec.timestamp_ms = Some(
            time::parse_rfc3339(started.as_bytes())
                .ok_or_else(|| format!("`startedDateTime` `{started}` is not an RFC 3339 time"))?,
        );
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry_json: &str) -> Result<RequestRecord, String> {
        let doc = format!(r#"{{"log":{{"version":"1.2","entries":[{entry_json}]}}}}"#);
        let mut all = entries(doc.as_bytes()).expect("a HAR document");
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    #[test]
    fn full_entry() {
        let r = one(
            r#"{"startedDateTime":"2023-03-29T16:58:59.303-07:00","time":23.5,
                "request":{"method":"POST","url":"https://h.example/api/x?a=1#frag","httpVersion":"h2",
                  "headers":[{"name":":authority","value":"h.example"},{"name":"User-Agent","value":"UA/1"},
                             {"name":"Referer","value":"https://h.example/"}],
                  "postData":{"mimeType":"application/json","text":"{\"k\":1}"},"bodySize":-1},
                "response":{"status":201,"bodySize":-1,"content":{"size":42}}}"#,
        )
        .expect("valid entry");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/x");
        assert_eq!(r.query.as_deref(), Some("a=1"));
        assert_eq!(r.protocol.as_deref(), Some("HTTP/2.0"));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.user_agent.as_deref(), Some("UA/1"));
        assert_eq!(r.referer.as_deref(), Some("https://h.example/"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.request_bytes, Some(7));
        assert_eq!(r.status, Some(201));
        assert_eq!(r.response_bytes, Some(42));
        assert_eq!(r.duration_ms, Some(23.5));
        assert_eq!(r.timestamp_ms, Some(1_680_134_339_303));
        assert_eq!(r.client, None);
    }

    #[test]
    fn no_response_and_unknown_time() {
        let r = one(
            r#"{"request":{"method":"GET","url":"http://h/","bodySize":0},
                "response":{"status":0,"bodySize":-1,"content":{"size":0}},"time":-1}"#,
        )
        .expect("valid entry");
        assert_eq!(r.status, None);
        assert_eq!(r.response_bytes, None);
        assert_eq!(r.duration_ms, None);
        assert_eq!(r.timestamp_ms, None);
        assert_eq!(r.request_bytes, Some(0));
    }

    #[test]
    fn bad_entries() {
        assert!(
            one(r#"{"response":{}}"#)
                .expect_err("no request")
                .contains("no `request`")
        );
        assert!(
            one(r#"{"request":{"url":"/"}}"#)
                .expect_err("no method")
                .contains("request.method")
        );
        assert!(
            one(r#"{"request":{"method":"GET"}}"#)
                .expect_err("no url")
                .contains("request.url")
        );
        assert!(
            one(r#"{"request":{"method":"GET","url":"about:blank"}}"#)
                .expect_err("not http")
                .contains("neither a path")
        );
        assert!(
            one(r#"{"startedDateTime":"noon","request":{"method":"GET","url":"/"}}"#)
                .expect_err("bad time")
                .contains("startedDateTime")
        );
    }

    #[test]
    fn not_har() {
        match entries(b"{\"log\":\n[1]\n\"x\"}") {
            Err(HarError::Json { line, column, .. }) => assert_eq!((line, column), (3, 1)),
            other => panic!("{other:?}"),
        }
        let shape = |doc: &str| match entries(doc.as_bytes()) {
            Err(HarError::Shape(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(shape("[]").contains("an array, not an object"));
        assert!(shape("{}").contains("no `log`"));
        assert!(shape(r#"{"log":{}}"#).contains("no `entries`"));
        assert!(shape(r#"{"log":{"entries":{}}}"#).contains("not an array"));
        assert!(entries(b"\xEF\xBB\xBF{\"log\":{\"entries\":[]}}").is_ok_and(|e| e.is_empty()));
    }
}
