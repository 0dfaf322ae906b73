//! The access log: nginx's `log_format` language, so `umbra learn` (and every
//! log tool) reads it back.
//!
//! Named formats: `combined` (nginx's combined plus `$request_time`, which
//! `umbra learn` reads by default), `common`, and `json` (one object per line;
//! read it back with `umbra learn --format jsonl:...`, see the README).
//! Anything else is a format string with `$variables`.

use std::fmt::Write;
use std::time::SystemTime;

use chrono::{DateTime, Local, Utc};
use http::HeaderName;

use crate::record::Exchange;

pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time";
pub const COMMON: &str =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent";

#[derive(Debug, Clone)]
pub struct LogFormat {
    parts: Vec<Part>,
    json: bool,
    /// Request headers that `$http_NAME` variables name (other than the ones always kept).
    pub captured: Vec<HeaderName>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    Status,
    BodyBytesSent,
    RequestLength,
    RequestTime,
    UpstreamAddr,
    UpstreamResponseTime,
    Host,
    Referer,
    UserAgent,
    Profile,
    /// Index into `captured`.
    Header(usize),
}

impl LogFormat {
    pub fn parse(spec: &str) -> Result<LogFormat, String> {
        let (text, json) = match spec {
            "combined" => (COMBINED, false),
            "common" => (COMMON, false),
            "json" => return Ok(LogFormat::json()),
            other => (other, false),
        };
        let mut parts = Vec::new();
        let mut captured: Vec<HeaderName> = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            let braced = chars.peek().is_some_and(|(_, c)| *c == '{');
            if braced {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if braced && chars.next().map(|(_, c)| c) != Some('}') {
                return Err(format!("column {}: unterminated ${{...}}", at + 1));
            }
            if name.is_empty() {
                return Err(format!("column {}: '$' without a variable name", at + 1));
            }
            let var = match name.as_str() {
                "remote_addr" => Var::RemoteAddr,
                "remote_user" => Var::RemoteUser,
                "time_local" => Var::TimeLocal,
                "time_iso8601" => Var::TimeIso8601,
                "msec" => Var::Msec,
                "request" => Var::Request,
                "request_method" => Var::RequestMethod,
                "request_uri" => Var::RequestUri,
                "uri" => Var::Uri,
                "args" | "query_string" => Var::Args,
                "server_protocol" => Var::ServerProtocol,
                "status" => Var::Status,
                "body_bytes_sent" | "bytes_sent" => Var::BodyBytesSent,
                "request_length" => Var::RequestLength,
                "request_time" => Var::RequestTime,
                "upstream_addr" => Var::UpstreamAddr,
                "upstream_response_time" | "upstream_header_time" => Var::UpstreamResponseTime,
                "host" => Var::Host,
                "http_referer" => Var::Referer,
                "http_user_agent" => Var::UserAgent,
                "umbra_profile" => Var::Profile,
                other => match other.strip_prefix("http_") {
                    Some(h) => {
                        let header = HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                            .map_err(|_| {
                                format!("column {}: ${other} names no valid header", at + 1)
                            })?;
                        let i = captured
                            .iter()
                            .position(|c| *c == header)
                            .unwrap_or_else(|| {
                                captured.push(header);
                                captured.len() - 1
                            });
                        Var::Header(i)
                    }
                    None => return Err(format!("column {}: unknown variable ${other}", at + 1)),
                },
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(LogFormat {
            parts,
            json,
            captured,
        })
    }

    fn json() -> LogFormat {
        LogFormat {
            parts: Vec::new(),
            json: true,
            captured: Vec::new(),
        }
    }

    /// Appends the line for `e` (without the newline).
    pub fn render(&self, e: &Exchange, profile: &str, out: &mut String) {
        if self.json {
            render_json(e, profile, out);
            return;
        }
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => self.render_var(*v, e, profile, out),
            }
        }
    }

    fn render_var(&self, v: Var, e: &Exchange, profile: &str, out: &mut String) {
        let r = &e.request;
        let header = |out: &mut String, h: &Option<http::HeaderValue>| match h {
            Some(v) => escape(&String::from_utf8_lossy(v.as_bytes()), out),
            None => out.push('-'),
        };
        match v {
            Var::RemoteAddr => match r.client {
                Some(ip) => {
                    let _ = write!(out, "{ip}");
                }
                None => out.push('-'),
            },
            Var::RemoteUser => out.push('-'),
            Var::TimeLocal => {
                let t: DateTime<Local> = r.received.into();
                let _ = write!(out, "{}", t.format("%d/%b/%Y:%H:%M:%S %z"));
            }
            Var::TimeIso8601 => {
                let t: DateTime<Local> = r.received.into();
                let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%:z"));
            }
            Var::Msec => {
                let ms = r
                    .received
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let _ = write!(out, "{ms:.3}");
            }
            Var::Request => {
                out.push_str(r.method.as_str());
                out.push(' ');
                escape(request_uri(r), out);
                let _ = write!(out, " {}", protocol(r.version));
            }
            Var::RequestMethod => out.push_str(r.method.as_str()),
            Var::RequestUri => escape(request_uri(r), out),
            Var::Uri => escape(r.uri.path(), out),
            Var::Args => escape(r.uri.query().unwrap_or(""), out),
            Var::ServerProtocol => out.push_str(protocol(r.version)),
            Var::Status => {
                let _ = write!(out, "{}", if e.status == 0 { 502 } else { e.status });
            }
            Var::BodyBytesSent => {
                let _ = write!(out, "{}", e.response_bytes);
            }
            Var::RequestLength => {
                let _ = write!(out, "{}", e.request_bytes);
            }
            Var::RequestTime => {
                let _ = write!(out, "{:.3}", e.duration.as_secs_f64());
            }
            Var::UpstreamAddr => out.push_str(&e.upstream),
            Var::UpstreamResponseTime => match e.upstream_time {
                Some(t) => {
                    let _ = write!(out, "{:.3}", t.as_secs_f64());
                }
                None => out.push('-'),
            },
            Var::Host => header(out, &r.host),
            Var::Referer => header(out, &r.referer),
            Var::UserAgent => header(out, &r.user_agent),
            Var::Profile => out.push_str(profile),
            Var::Header(i) => header(out, r.captured.get(i).unwrap_or(&None)),
        }
    }
}

fn request_uri(r: &crate::record::RequestInfo) -> &str {
    r.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// nginx's escaping for quoted log fields: `"`, `\` and control bytes as `\xHH`.
fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn render_json(e: &Exchange, profile: &str, out: &mut String) {
    let r = &e.request;
    let text = |v: &Option<http::HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let t: DateTime<Utc> = r.received.into();
    let line = serde_json::json!({
        "time": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "remote_addr": r.client.map(|c| c.to_string()),
        "method": r.method.as_str(),
        "uri": request_uri(r),
        "protocol": protocol(r.version),
        "status": if e.status == 0 { 502 } else { e.status },
        "bytes_sent": e.response_bytes,
        "request_length": e.request_bytes,
        "request_time": e.duration.as_secs_f64(),
        "upstream": &*e.upstream,
        "referer": text(&r.referer),
        "user_agent": text(&r.user_agent),
        "content_type": text(&r.content_type),
        "profile": profile,
    });
    out.push_str(&line.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_formats_and_custom_strings_parse() {
        assert!(LogFormat::parse("combined").is_ok());
        let f = LogFormat::parse("$remote_addr $http_x_request_id ${status}ms").expect("valid");
        assert_eq!(f.captured, vec![HeaderName::from_static("x-request-id")]);
        let e = LogFormat::parse("$remote_addr $nope").expect_err("unknown");
        assert!(e.contains("column 14") && e.contains("$nope"), "{e}");
        assert!(LogFormat::parse("a ${status").is_err());
    }

    #[test]
    fn quoted_fields_are_escaped_as_nginx_does() {
        let mut out = String::new();
        escape("a\"b\\c\n", &mut out);
        assert_eq!(out, "a\\x22b\\x5Cc\\x0A");
    }
}
