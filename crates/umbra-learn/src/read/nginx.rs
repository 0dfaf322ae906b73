//! Lines written by an nginx `log_format` the user gives us.
//!
//! The format is cut into literal text and `$variables` (`${var}` too). A line
//! is matched left to right: literals must appear as written, and each variable
//! takes everything up to the next literal. A variable between two `"` takes
//! everything up to the closing quote instead, with backslash escapes honoured,
//! so a user agent containing the next literal does not cut it short. The last
//! variable takes the rest of the line.

use std::fmt;
use std::str::FromStr;

use memchr::memchr;
use memchr::memmem::Finder;
use umbra_core::RequestRecord;

use super::LineParser;
use super::field::{
    self, content, lossy, parse_bytes, parse_status, present, quoted_end, shown,
    split_request_line, split_target, text,
};
use super::time;

/// A parsed nginx `log_format` string.
#[derive(Debug, Clone, PartialEq)]
pub struct NginxFormat {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(Vec<u8>),
    Var(Var),
}

/// The variables we know what to do with; everything else is matched and dropped.
#[derive(Debug, Clone, PartialEq)]
enum Var {
    RemoteAddr,
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
    BytesSent,
    RequestLength,
    RequestTime,
    UpstreamResponseTime,
    Referer,
    UserAgent,
    ContentType,
    /// `$http_NAME`, as the lower-case header name with `-` for `_`.
    Header(String),
    Ignored(String),
}

impl Var {
    fn from_name(name: &str) -> Var {
        match name {
            "remote_addr" => Var::RemoteAddr,
            "time_local" => Var::TimeLocal,
            "time_iso8601" => Var::TimeIso8601,
            "msec" => Var::Msec,
            "request" => Var::Request,
            "request_method" => Var::RequestMethod,
            "request_uri" => Var::RequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "server_protocol" => Var::ServerProtocol,
            "status" => Var::Status,
            "body_bytes_sent" => Var::BodyBytesSent,
            "bytes_sent" => Var::BytesSent,
            "request_length" => Var::RequestLength,
            "request_time" => Var::RequestTime,
            "upstream_response_time" => Var::UpstreamResponseTime,
            "http_referer" => Var::Referer,
            "http_user_agent" => Var::UserAgent,
            "content_type" | "http_content_type" => Var::ContentType,
            _ => match name.strip_prefix("http_") {
                Some(h) if !h.is_empty() => Var::Header(h.replace('_', "-")),
                _ => Var::Ignored(name.to_string()),
            },
        }
    }
}

impl NginxFormat {
    /// Parses a `log_format` string. It may be given bare
    /// (`$remote_addr - $remote_user ...`) or as in `nginx.conf`, as one or more
    /// single-quoted parts that are joined (`'$remote_addr ' '"$request"'`).
    pub fn new(log_format: &str) -> Result<NginxFormat, String> {
        Self::parse_at(log_format, 0)
    }

    /// The format string (quoted parts already joined).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// As [`NginxFormat::new`], with error columns shifted by `offset` characters
    /// (for messages about a longer string this one was cut from).
    pub(crate) fn parse_at(spec: &str, offset: usize) -> Result<NginxFormat, String> {
        let chars = unquote(spec, offset)?;
        let source: String = chars.iter().map(|&(_, c)| c).collect();
        let tokens = tokenise(&chars)?;
        let has =
            |f: &dyn Fn(&Var) -> bool| tokens.iter().any(|t| matches!(t, Token::Var(v) if f(v)));
        if !has(&|v| matches!(v, Var::Request | Var::RequestUri | Var::Uri)) {
            return Err(
                "the log_format has no $request, $request_uri or $uri, so requests have no path"
                    .into(),
            );
        }
        if !has(&|v| matches!(v, Var::Request | Var::RequestMethod)) {
            return Err(
                "the log_format has no $request or $request_method, so requests have no method"
                    .into(),
            );
        }
        Ok(NginxFormat { source, tokens })
    }
}

impl FromStr for NginxFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        NginxFormat::new(s)
    }
}

impl fmt::Display for NginxFormat {
    /// Written back in the single-quoted form [`NginxFormat::new`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self.source.replace('\\', "\\\\").replace('\'', "\\'");
        write!(f, "'{escaped}'")
    }
}

/// The format's characters, each with its 1-based column in the user's string.
/// Single-quoted parts, as written in `nginx.conf`, are unquoted and joined.
fn unquote(spec: &str, offset: usize) -> Result<Vec<(usize, char)>, String> {
    let all: Vec<(usize, char)> = spec
        .chars()
        .enumerate()
        .map(|(i, c)| (offset + i + 1, c))
        .collect();
    let mut out = if spec.trim_start().starts_with('\'') {
        join_quoted(&all)?
    } else {
        all
    };
    // Lines are read without surrounding whitespace, so the format is too.
    while out.last().is_some_and(|&(_, c)| c.is_whitespace()) {
        out.pop();
    }
    let lead = out.iter().take_while(|&&(_, c)| c.is_whitespace()).count();
    out.drain(..lead);
    if out.is_empty() {
        return Err("the log_format is empty".into());
    }
    Ok(out)
}

/// Joins `'part one' 'part two'` as nginx does, undoing `\'`, `\"` and `\\`.
fn join_quoted(all: &[(usize, char)]) -> Result<Vec<(usize, char)>, String> {
    let mut chars = all.iter().copied().peekable();
    let mut out = Vec::new();
    loop {
        // Between parts: whitespace, then a quote or the end.
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let start = match chars.next() {
            None => return Ok(out),
            Some((col, '\'')) => col,
            Some((col, c)) => {
                return Err(format!(
                    "at column {col}: expected `'` to start the next quoted part, found `{c}`"
                ));
            }
        };
        loop {
            match chars.next() {
                None => {
                    return Err(format!(
                        "at column {start}: the quoted part starting here is not closed"
                    ));
                }
                Some((_, '\'')) => break,
                Some((col, '\\')) => match chars.peek() {
                    Some(&(c2, e @ ('\'' | '\\' | '"'))) => {
                        chars.next();
                        out.push((c2, e));
                    }
                    _ => out.push((col, '\\')),
                },
                Some(ch) => out.push(ch),
            }
        }
    }
}

fn tokenise(chars: &[(usize, char)]) -> Result<Vec<Token>, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let (col, c) = chars[i];
        if c != '$' {
            literal.push(c);
            i += 1;
            continue;
        }
        let (name, next) = if chars.get(i + 1).map(|&(_, c)| c) == Some('{') {
            let close = chars[i + 2..]
                .iter()
                .position(|&(_, c)| c == '}')
                .ok_or_else(|| format!("at column {col}: `${{` without a closing `}}`"))?;
            (
                chars[i + 2..i + 2 + close]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect::<String>(),
                i + 3 + close,
            )
        } else {
            let len = chars[i + 1..]
                .iter()
                .take_while(|&&(_, c)| is_name(c))
                .count();
            (
                chars[i + 1..i + 1 + len].iter().map(|&(_, c)| c).collect(),
                i + 1 + len,
            )
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(format!(
                "at column {col}: `$` is not followed by a variable name"
            ));
        }
        if literal.is_empty() {
            if let Some(Token::Var(prev)) = tokens.last() {
                return Err(format!(
                    "at column {col}: ${name} follows ${} with no text between them, \
                     so a line cannot be split between the two",
                    var_name(prev)
                ));
            }
        } else {
            tokens.push(Token::Literal(std::mem::take(&mut literal).into_bytes()));
        }
        tokens.push(Token::Var(Var::from_name(&name.to_ascii_lowercase())));
        i = next;
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal.into_bytes()));
    }
    Ok(tokens)
}

/// How a variable's extent is found in a line.
enum Step {
    Literal(Vec<u8>),
    /// Up to the closing quote (the next literal starts with it).
    Quoted(Var),
    /// Up to the next literal, found with the finder.
    Until(Var, Box<Finder<'static>>, Vec<u8>),
    /// To the end of the line.
    Rest(Var),
}

pub(crate) struct NginxParser {
    steps: Vec<Step>,
}

impl NginxParser {
    pub(crate) fn new(format: &NginxFormat) -> NginxParser {
        let t = &format.tokens;
        let steps = t
            .iter()
            .enumerate()
            .map(|(i, tok)| match tok {
                Token::Literal(l) => Step::Literal(l.clone()),
                Token::Var(v) => {
                    let before = i.checked_sub(1).and_then(|j| t.get(j));
                    match (before, t.get(i + 1)) {
                        (Some(Token::Literal(b)), Some(Token::Literal(a)))
                            if b.ends_with(b"\"") && a.starts_with(b"\"") =>
                        {
                            Step::Quoted(v.clone())
                        }
                        (_, Some(Token::Literal(a))) => {
                            Step::Until(v.clone(), Box::new(Finder::new(a).into_owned()), a.clone())
                        }
                        _ => Step::Rest(v.clone()),
                    }
                }
            })
            .collect();
        NginxParser { steps }
    }
}

/// A variable's raw value and whether it holds escapes.
type Raw<'a> = Option<(&'a [u8], bool)>;

/// What a line gave for each variable we use.
#[derive(Default)]
struct Captures<'a> {
    remote_addr: Raw<'a>,
    time_local: Raw<'a>,
    time_iso8601: Raw<'a>,
    msec: Raw<'a>,
    request: Raw<'a>,
    request_method: Raw<'a>,
    request_uri: Raw<'a>,
    uri: Raw<'a>,
    args: Raw<'a>,
    server_protocol: Raw<'a>,
    status: Raw<'a>,
    body_bytes_sent: Raw<'a>,
    bytes_sent: Raw<'a>,
    request_length: Raw<'a>,
    request_time: Raw<'a>,
    upstream_response_time: Raw<'a>,
    referer: Raw<'a>,
    user_agent: Raw<'a>,
    content_type: Raw<'a>,
    headers: Vec<(&'a str, &'a [u8], bool)>,
}

impl<'a> Captures<'a> {
    fn set(&mut self, var: &'a Var, value: &'a [u8], escaped: bool) {
        let slot = match var {
            Var::RemoteAddr => &mut self.remote_addr,
            Var::TimeLocal => &mut self.time_local,
            Var::TimeIso8601 => &mut self.time_iso8601,
            Var::Msec => &mut self.msec,
            Var::Request => &mut self.request,
            Var::RequestMethod => &mut self.request_method,
            Var::RequestUri => &mut self.request_uri,
            Var::Uri => &mut self.uri,
            Var::Args => &mut self.args,
            Var::ServerProtocol => &mut self.server_protocol,
            Var::Status => &mut self.status,
            Var::BodyBytesSent => &mut self.body_bytes_sent,
            Var::BytesSent => &mut self.bytes_sent,
            Var::RequestLength => &mut self.request_length,
            Var::RequestTime => &mut self.request_time,
            Var::UpstreamResponseTime => &mut self.upstream_response_time,
            Var::Referer => &mut self.referer,
            Var::UserAgent => &mut self.user_agent,
            Var::ContentType => &mut self.content_type,
            Var::Header(name) => {
                self.headers.push((name, value, escaped));
                return;
            }
            Var::Ignored(_) => return,
        };
        *slot = Some((value, escaped));
    }
}

/// The value with escapes undone, as bytes.
fn raw_bytes(raw: (&[u8], bool)) -> std::borrow::Cow<'_, [u8]> {
    match raw {
        (v, true) => field::unescape(v).into(),
        (v, false) => v.into(),
    }
}

impl LineParser for NginxParser {
    fn parse(&mut self, line: &[u8]) -> Result<Option<RequestRecord>, String> {
        let Some(line) = content(line) else {
            return Ok(None);
        };
        let mut caps = Captures::default();
        let mut pos = 0;
        for step in &self.steps {
            match step {
                Step::Literal(l) => {
                    if !line[pos..].starts_with(l) {
                        return Err(format!(
                            "expected `{}` at column {}, found `{}`",
                            shown(l),
                            pos + 1,
                            shown(&line[pos..(pos + l.len() + 10).min(line.len())])
                        ));
                    }
                    pos += l.len();
                }
                Step::Quoted(var) => {
                    let (end, escaped) = quoted_end(line, pos, false)
                        .map_err(|e| format!("{e} (${})", var_name(var)))?;
                    caps.set(var, &line[pos..end], escaped);
                    pos = end;
                }
                Step::Until(var, finder, lit) => {
                    let end = pos
                        + finder.find(&line[pos..]).ok_or_else(|| {
                            format!(
                                "expected `{}` after ${} (from column {})",
                                shown(lit),
                                var_name(var),
                                pos + 1
                            )
                        })?;
                    let value = &line[pos..end];
                    caps.set(var, value, memchr(b'\\', value).is_some());
                    pos = end;
                }
                Step::Rest(var) => {
                    let value = &line[pos..];
                    caps.set(var, value, memchr(b'\\', value).is_some());
                    pos = line.len();
                }
            }
        }
        build(caps).map(Some)
    }
}

fn var_name(v: &Var) -> String {
    match v {
        Var::Header(h) => format!("http_{}", h.replace('-', "_")),
        Var::Ignored(n) => n.clone(),
        other => {
            let dbg = format!("{other:?}");
            // CamelCase to snake_case: RequestUri → request_uri.
            let mut s = String::new();
            for (i, c) in dbg.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    s.push('_');
                }
                s.push(c.to_ascii_lowercase());
            }
            s
        }
    }
}

/// Makes a record of the captured values, preferring the most precise source
/// of each field: `$request` over `$request_uri` over `$uri` (which nginx has
/// already decoded), `$body_bytes_sent` over `$bytes_sent` (which counts
/// headers), `$request_time` over `$upstream_response_time`.
fn build(c: Captures<'_>) -> Result<RequestRecord, String> {
    let mut rec = RequestRecord {
        client: c.remote_addr.and_then(|(v, e)| text(v, e)),
        ..RequestRecord::default()
    };
    if let Some(raw) = c.request {
        let request = raw_bytes(raw);
        let req = split_request_line(&request)?;
        rec.method = lossy(req.method);
        rec.protocol = Some(lossy(req.protocol));
        (rec.path, rec.query) = split_target(req.target)?;
    } else {
        let method = c.request_method.and_then(|(v, _)| present(v));
        rec.method = lossy(method.ok_or("no $request_method")?);
        let target = c.request_uri.or(c.uri).map(raw_bytes);
        let target = target
            .as_deref()
            .and_then(present)
            .ok_or("no $request_uri or $uri")?;
        (rec.path, rec.query) = split_target(target)?;
    }
    if rec.query.is_none() {
        rec.query = c.args.and_then(|(v, e)| text(v, e));
    }
    if let Some((v, _)) = c.server_protocol {
        rec.protocol = field::protocol(&lossy(v));
    }

    rec.timestamp_ms = if let Some((v, _)) = c.time_local.filter(|(v, _)| present(v).is_some()) {
        Some(
            time::parse_time_local(v)
                .ok_or_else(|| format!("$time_local `{}` is not a time", shown(v)))?,
        )
    } else if let Some((v, _)) = c.time_iso8601.filter(|(v, _)| present(v).is_some()) {
        Some(
            time::parse_rfc3339(v)
                .ok_or_else(|| format!("$time_iso8601 `{}` is not a time", shown(v)))?,
        )
    } else if let Some((v, _)) = c.msec.filter(|(v, _)| present(v).is_some()) {
        let secs =
            time::decimal(v, 0).ok_or_else(|| format!("$msec `{}` is not a number", shown(v)))?;
        time::epoch_to_ms(secs, Some(time::Unit::Seconds))
    } else {
        None
    };

    if let Some((v, _)) = c.status {
        rec.status = parse_status(v)?;
    }
    if let Some((v, _)) = c.body_bytes_sent.or(c.bytes_sent) {
        rec.response_bytes = parse_bytes(v, "bytes sent")?;
    }
    if let Some((v, _)) = c.request_length {
        rec.request_bytes = parse_bytes(v, "$request_length")?;
    }
    if let Some((v, _)) = c.request_time {
        rec.duration_ms = field::parse_seconds_ms(v, "$request_time")?;
    } else if let Some((v, _)) = c.upstream_response_time {
        rec.duration_ms = field::parse_seconds_ms(v, "$upstream_response_time")?;
    }
    rec.referer = c.referer.and_then(|(v, e)| text(v, e));
    rec.user_agent = c.user_agent.and_then(|(v, e)| text(v, e));
    rec.content_type = c.content_type.and_then(|(v, e)| text(v, e));
    for (name, v, e) in c.headers {
        if let Some(value) = text(v, e) {
            rec.headers.push((name.to_string(), value));
        }
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(fmt: &str) -> NginxParser {
        NginxParser::new(&NginxFormat::new(fmt).expect("valid format"))
    }

    const TIMED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for" $request_time"#;

    #[test]
    fn request_time_and_forwarded_for() {
        let r = parser(TIMED)
            .parse(br#"10.1.2.3 - bob [22/Jan/2019:03:56:14 +0330] "GET /cart?x=1 HTTP/1.1" 200 512 "https://shop/" "Mozilla/5.0 \"x\" \x22y\x22" "203.0.113.7, 10.0.0.1" 0.251"#)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.client.as_deref(), Some("10.1.2.3"));
        assert_eq!(r.timestamp_ms, Some(1_548_116_774_000));
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/cart"));
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.response_bytes, Some(512));
        assert_eq!(r.referer.as_deref(), Some("https://shop/"));
        assert_eq!(r.user_agent.as_deref(), Some(r#"Mozilla/5.0 "x" "y""#));
        assert_eq!(r.header("x-forwarded-for"), Some("203.0.113.7, 10.0.0.1"));
        assert_eq!(r.duration_ms, Some(251.0));
    }

    #[test]
    fn quoted_conf_form_and_braced_variables() {
        let f = NginxFormat::new(
            r#"'${remote_addr}|$msec|$request_method|$request_uri|$status|$request_length|$upstream_response_time|$content_type|$http_x_request_id' '|$server_protocol'"#,
        )
        .expect("valid");
        assert!(f.as_str().ends_with("|$server_protocol"));
        let r = NginxParser::new(&f)
            .parse(b"::1|1548116774.250|POST|/api/v2/items?page=2|201|734|0.010, 0.020|application/json|abc-123|HTTP/2.0")
            .expect("parses")
            .expect("a record");
        assert_eq!(r.client.as_deref(), Some("::1"));
        assert_eq!(r.timestamp_ms, Some(1_548_116_774_250));
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v2/items");
        assert_eq!(r.query.as_deref(), Some("page=2"));
        assert_eq!(r.request_bytes, Some(734));
        assert_eq!(r.duration_ms, Some(30.0));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.header("x-request-id"), Some("abc-123"));
        assert_eq!(r.protocol.as_deref(), Some("HTTP/2.0"));
        // Display gives back something new() accepts and that means the same.
        assert_eq!(NginxFormat::new(&f.to_string()), Ok(f));
    }

    #[test]
    fn iso_time_and_missing_values() {
        let r = parser(r#"$time_iso8601 $remote_addr "$request" $status $bytes_sent $request_time "$http_user_agent""#)
            .parse(br#"2019-01-22T03:56:14+03:30 - "HEAD / HTTP/1.0" 304 - - "-""#)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.timestamp_ms, Some(1_548_116_774_000));
        assert_eq!(r.client, None);
        assert_eq!(r.response_bytes, None);
        assert_eq!(r.duration_ms, None);
        assert_eq!(r.user_agent, None);
    }

    #[test]
    fn format_errors_say_where() {
        let err = |s: &str| NginxFormat::new(s).expect_err(s);
        assert!(err("$remote_addr $status").contains("no $request"));
        assert!(err("$request_uri $status").contains("no method"));
        assert!(
            err("$request $").contains("column 10"),
            "{}",
            err("$request $")
        );
        assert!(err("$request ${status").contains("column 10"));
        assert!(err("$request$status").contains("column 9"));
        assert!(err("'$request").contains("not closed"));
        assert!(err("'$request' x").contains("column 12"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn lines_that_do_not_match() {
        let mut p = parser(TIMED);
        let e = p
            .parse(b"10.1.2.3 - bob 22/Jan/2019")
            .expect_err("no bracket");
        assert!(e.contains("expected ` [`"), "{e}");
        let e = p
            .parse(br#"10.1.2.3 - bob [22/Jan/2019:03:56:14 +0330] "-" 400 0 "-" "-" "-" 0.000"#)
            .expect_err("no request");
        assert!(e.contains("no request line"), "{e}");
        let e = p
            .parse(br#"10.1.2.3 - bob [22/Jan/2019:03:56:14 +0330] "GET / HTTP/1.1" 200 1 "-" "-" "-" slow"#)
            .expect_err("bad time");
        assert!(e.contains("$request_time `slow`"), "{e}");
    }
}
