//! Field-level helpers shared by the parsers: line trimming, quoted fields and
//! their escapes, request lines and request targets.
//!
//! Everything works on bytes: log lines are not always UTF-8, and only the
//! string fields that end up in a record are converted (lossily).

use memchr::{memchr, memchr2, memchr3, memrchr};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The content of a line without its line ending, surrounding whitespace and a
/// leading byte-order mark; `None` for blank lines and `#` comments.
pub fn content(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_prefix(BOM).unwrap_or(line).trim_ascii();
    match line.first() {
        None | Some(b'#') => None,
        Some(_) => Some(line),
    }
}

/// Strips a UTF-8 byte-order mark.
pub fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(BOM).unwrap_or(b)
}

/// Bytes as a `String`, replacing invalid UTF-8 rather than refusing the line.
/// `str::from_utf8` first: its validation is several times faster than
/// `from_utf8_lossy`'s, and almost every field is valid.
pub fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Makes `String`s of parts of one line, checking the line's UTF-8 once
/// rather than each field's: one pass over the line costs less than six
/// short ones. Parts that are not inside the line (unescaped copies, constant
/// defaults) and lines that are not valid UTF-8 go through [`lossy`].
pub struct LineText<'a> {
    line: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> LineText<'a> {
    pub fn new(line: &'a [u8]) -> LineText<'a> {
        LineText {
            line,
            text: std::str::from_utf8(line).ok(),
        }
    }

    pub fn string(&self, part: &[u8]) -> String {
        if let Some(text) = self.text {
            // Where `part` lies in the line, if it does: comparing addresses
            // is safe, and a slice inside the line's range is part of it.
            let base = self.line.as_ptr() as usize;
            let start = part.as_ptr() as usize;
            if start >= base && start + part.len() <= base + self.line.len() {
                let offset = start - base;
                // Fields end at ASCII delimiters, so this is on char boundaries;
                // `get` checks anyway.
                if let Some(s) = text.get(offset..offset + part.len()) {
                    return s.to_owned();
                }
            }
        }
        lossy(part)
    }

    /// A logged string field (see [`text`]).
    pub fn field(&self, raw: &[u8], escaped: bool) -> Option<String> {
        let raw = present(raw)?;
        Some(if escaped {
            lossy(&unescape(raw))
        } else {
            self.string(raw)
        })
    }
}

/// Like [`lossy`], but common values come from a table without validating
/// them again (the method and protocol of every request line).
pub fn interned(b: &[u8], table: &[&'static str]) -> String {
    match table.iter().find(|t| t.as_bytes() == b) {
        Some(t) => (*t).to_owned(),
        None => lossy(b),
    }
}

pub const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];
pub const PROTOCOLS: &[&str] = &["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/2", "HTTP/3"];

/// A short, printable rendering of some input for an error message.
pub fn shown(b: &[u8]) -> String {
    const MAX: usize = 60;
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            // ASCII control bytes as nginx logs them (`\x16`).
            if c.is_ascii_control() {
                s.push_str(&format!("\\x{:02X}", c as u32));
            } else if c.is_control() {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for &bad in chunk.invalid() {
            s.push_str(&format!("\\x{bad:02X}"));
        }
    }
    if s.chars().count() > MAX {
        s = s.chars().take(MAX).collect();
        s.push('…');
    }
    s
}

/// A field that may be missing: `-` and the empty string mean "not logged".
pub fn present(b: &[u8]) -> Option<&[u8]> {
    match b {
        b"" | b"-" => None,
        _ => Some(b),
    }
}

/// Finds the end of a quoted field whose content starts at `start` (just after
/// the opening quote). A backslash escapes the next byte (Apache's `\"`; nginx's
/// `\x22` has no quote in it anyway). When `strict_end` is set, a quote only
/// closes the field if a space or the end of the line follows; this survives
/// loggers that write quotes inside fields unescaped.
///
/// Returns the index of the closing quote and whether the field holds escapes.
pub fn quoted_end(line: &[u8], start: usize, strict_end: bool) -> Result<(usize, bool), String> {
    let mut i = start;
    let mut escaped = false;
    loop {
        let rest = line
            .get(i..)
            .ok_or_else(|| "unterminated quoted field".to_string())?;
        let j =
            memchr2(b'"', b'\\', rest).ok_or_else(|| "unterminated quoted field".to_string())?;
        let k = i + j;
        if line[k] == b'\\' {
            escaped = true;
            i = k + 2;
        } else if strict_end && !matches!(line.get(k + 1), None | Some(b' ')) {
            i = k + 1;
        } else {
            return Ok((k, escaped));
        }
    }
}

/// Undoes the escapes nginx (`\xHH`) and Apache (`\"`, `\\`, `\n`, `\xhh`) write
/// into quoted fields.
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(j) = memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + j]);
        let k = i + j;
        match raw.get(k + 1) {
            Some(b'x') => {
                let hex = raw.get(k + 2..k + 4).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i = k + 4;
                    }
                    None => {
                        out.push(b'\\');
                        i = k + 1;
                    }
                }
            }
            Some(&c @ (b'"' | b'\\' | b'\'')) => {
                out.push(c);
                i = k + 2;
            }
            Some(b'n') => {
                out.push(b'\n');
                i = k + 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i = k + 2;
            }
            Some(b'r') => {
                out.push(b'\r');
                i = k + 2;
            }
            _ => {
                out.push(b'\\');
                i = k + 1;
            }
        }
    }
    out.extend_from_slice(&raw[i..]);
    out
}

/// A logged string field as a `String`, escapes undone; `None` for `-` and empty.
pub fn text(raw: &[u8], escaped: bool) -> Option<String> {
    let raw = present(raw)?;
    Some(if escaped {
        lossy(&unescape(raw))
    } else {
        lossy(raw)
    })
}

/// The parts of `METHOD TARGET PROTOCOL`.
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub protocol: &'a [u8],
}

fn is_method(m: &[u8]) -> bool {
    (1..=32).contains(&m.len())
        && m[0].is_ascii_alphabetic()
        && m.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Splits a request line. Anything that is not `METHOD TARGET HTTP/x` (a `-` for
/// a connection that sent nothing, a TLS handshake sent to a plain-text port,
/// an HTTP/0.9 request) is refused with the reason.
pub fn split_request_line(req: &[u8]) -> Result<RequestLine<'_>, String> {
    if present(req).is_none() {
        return Err(format!(
            "no request line (`{}`): the client sent no complete request",
            shown(req)
        ));
    }
    let not_request = || {
        format!(
            "request line `{}` is not METHOD TARGET PROTOCOL",
            shown(req)
        )
    };
    let sp1 = memchr(b' ', req).ok_or_else(not_request)?;
    let sp2 = memrchr(b' ', req).ok_or_else(not_request)?;
    let method = &req[..sp1];
    let protocol = &req[sp2 + 1..];
    if sp2 <= sp1 + 1 || !is_method(method) || !protocol.starts_with(b"HTTP/") {
        return Err(not_request());
    }
    Ok(RequestLine {
        method,
        target: &req[sp1 + 1..sp2],
        protocol,
    })
}

/// Splits a request target into path and query. An origin-form target
/// (`/a/b?c`) is kept as logged; an absolute URL (`http://host/a?c#f`) gives
/// its path (or `/`) and query, without the fragment. An empty query is `None`.
pub fn split_target(target: &[u8]) -> Result<(String, Option<String>), String> {
    let (path, query) = split_target_bytes(target)?;
    Ok((lossy(path), query.map(lossy)))
}

/// [`split_target`] without making strings.
pub fn split_target_bytes(target: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    let (path, query) = if target.first() == Some(&b'/') {
        match memchr(b'?', target) {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, &b""[..]),
        }
    } else if let Some(after) = scheme_end(target) {
        let rest = &target[after..];
        let rest = match memchr(b'#', rest) {
            Some(h) => &rest[..h],
            None => rest,
        };
        // The authority ends at the first `/` or `?`.
        match memchr2(b'/', b'?', rest) {
            None => (&b"/"[..], &b""[..]),
            Some(i) if rest[i] == b'?' => (&b"/"[..], &rest[i + 1..]),
            Some(i) => {
                let rest = &rest[i..];
                match memchr(b'?', rest) {
                    Some(q) => (&rest[..q], &rest[q + 1..]),
                    None => (rest, &b""[..]),
                }
            }
        }
    } else {
        return Err(format!(
            "request target `{}` is neither a path nor an absolute URL",
            shown(target)
        ));
    };
    Ok((path, (!query.is_empty()).then_some(query)))
}

/// The index just after `scheme://`, if the target starts with one.
fn scheme_end(target: &[u8]) -> Option<usize> {
    let colon = memchr3(b':', b'/', b'?', target).filter(|&i| target[i] == b':')?;
    let scheme = &target[..colon];
    let ok = !scheme.is_empty()
        && scheme[0].is_ascii_alphabetic()
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    (ok && target[colon + 1..].starts_with(b"//")).then_some(colon + 3)
}

/// A non-negative integer; `None` for anything else, including overflow.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// An HTTP status; 0 (nginx's `000`, HAR's "no response") means no response.
pub fn parse_status(b: &[u8]) -> Result<Option<u16>, String> {
    if b == b"-" {
        return Ok(None);
    }
    match parse_u64(b) {
        Some(0) => Ok(None),
        Some(s) if s <= 999 => Ok(Some(s as u16)),
        _ => Err(format!("status `{}` is not an HTTP status", shown(b))),
    }
}

/// A byte count; `-` means none was logged.
pub fn parse_bytes(b: &[u8], what: &str) -> Result<Option<u64>, String> {
    if b == b"-" {
        return Ok(None);
    }
    parse_u64(b)
        .map(Some)
        .ok_or_else(|| format!("{what} `{}` is not a number", shown(b)))
}

/// A time in seconds as logged by nginx (`0.123`) in milliseconds; `-` is none.
/// nginx writes several upstream times as `0.010, 0.020` or `0.010 : 0.020`
/// (one per upstream tried); those are summed.
pub fn parse_seconds_ms(b: &[u8], what: &str) -> Result<Option<f64>, String> {
    let b = b.trim_ascii();
    if present(b).is_none() {
        return Ok(None);
    }
    if let Some(ms) = super::time::decimal(b, 3) {
        return Ok(Some(ms));
    }
    let mut total = 0.0;
    let mut any = false;
    for part in b.split(|&c| c == b',' || c == b':') {
        let part = part.trim_ascii();
        if part == b"-" {
            continue;
        }
        total += super::time::decimal(part, 3)
            .ok_or_else(|| format!("{what} `{}` is not a number of seconds", shown(b)))?;
        any = true;
    }
    Ok(any.then_some(total))
}

/// Normalises how protocols are spelt across sources: `http/2.0` → `HTTP/2.0`,
/// HAR's `h2`/`h3` → `HTTP/2.0`/`HTTP/3`; empty is unknown.
pub fn protocol(p: &str) -> Option<String> {
    let p = p.trim();
    if p.is_empty() || p == "-" {
        return None;
    }
    Some(match p.to_ascii_lowercase().as_str() {
        "h2" | "h2c" | "http/2" => "HTTP/2.0".to_string(),
        "h3" | "http/3.0" => "HTTP/3".to_string(),
        lower if lower.starts_with("http/") => p.to_ascii_uppercase(),
        _ => p.to_string(),
    })
}

/// What a JSON value is, for error messages: "`log.entries` is an object, not an array".
pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_skips_blank_and_comments() {
        assert_eq!(content(b"\r\n"), None);
        assert_eq!(content(b"   \t"), None);
        assert_eq!(content(b"#Fields: date time"), None);
        assert_eq!(content(b"\xEF\xBB\xBFabc\r\n"), Some(&b"abc"[..]));
    }

    #[test]
    fn quoted_fields_honour_escapes() {
        let line = br#""a \"b\" c" rest"#;
        let (end, esc) = quoted_end(line, 1, true).expect("terminated");
        assert_eq!(&line[1..end], br#"a \"b\" c"#);
        assert!(esc);
        assert_eq!(unescape(&line[1..end]), br#"a "b" c"#);
        assert_eq!(unescape(br"\x22q\x22 \x5C \xZZ"), br#""q" \ \xZZ"#);
        assert!(quoted_end(b"\"abc", 1, true).is_err());
        assert!(quoted_end(b"\"abc\\", 1, true).is_err());
        // An unescaped quote inside is not taken as the end with strict_end.
        let line = br#""say "hi"" 1"#;
        let (end, _) = quoted_end(line, 1, true).expect("terminated");
        assert_eq!(&line[1..end], br#"say "hi""#);
    }

    #[test]
    fn line_text_slices_or_falls_back() {
        let line = b"GET /caf\xc3\xa9 x";
        let t = LineText::new(line);
        assert_eq!(t.string(&line[4..10]), "/caf\u{e9}");
        assert_eq!(t.string(b"/elsewhere"), "/elsewhere");
        assert_eq!(t.field(&line[0..3], false).as_deref(), Some("GET"));
        assert_eq!(t.field(&line[11..11], false), None);
        let bad = b"GET /caf\xe9 x";
        assert_eq!(LineText::new(bad).string(&bad[4..9]), "/caf\u{fffd}");
    }

    #[test]
    fn request_lines() {
        let r = split_request_line(b"GET /a?b HTTP/1.1").expect("valid");
        assert_eq!(
            (r.method, r.target, r.protocol),
            (&b"GET"[..], &b"/a?b"[..], &b"HTTP/1.1"[..])
        );
        // A target with a space in it (logged raw) stays whole.
        let r = split_request_line(b"GET /a b HTTP/1.0").expect("valid");
        assert_eq!(r.target, b"/a b");
        for bad in [
            &b"-"[..],
            b"",
            b"\\x16\\x03\\x01\\x00",
            b"GET /",
            b"GET",
            b"GET / FTP/1.0",
            b"G@T / HTTP/1.1",
        ] {
            assert!(split_request_line(bad).is_err(), "{}", shown(bad));
        }
    }

    #[test]
    fn targets() {
        let t = |s: &[u8]| split_target(s).expect("valid");
        assert_eq!(t(b"/a/b?c=1"), ("/a/b".into(), Some("c=1".into())));
        assert_eq!(t(b"/a?"), ("/a".into(), None));
        assert_eq!(t(b"http://h:80/x?y#z"), ("/x".into(), Some("y".into())));
        assert_eq!(t(b"https://h"), ("/".into(), None));
        assert_eq!(t(b"http://h?q"), ("/".into(), Some("q".into())));
        assert!(split_target(b"*").is_err());
        assert!(split_target(b"example.com:443").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_status(b"200"), Ok(Some(200)));
        assert_eq!(parse_status(b"000"), Ok(None));
        assert!(parse_status(b"2x0").is_err());
        assert_eq!(parse_bytes(b"-", "bytes"), Ok(None));
        assert_eq!(parse_bytes(b"123", "bytes"), Ok(Some(123)));
        assert_eq!(parse_seconds_ms(b"0.123", "t"), Ok(Some(123.0)));
        assert_eq!(parse_seconds_ms(b"0.010, 0.020", "t"), Ok(Some(30.0)));
        assert_eq!(parse_seconds_ms(b"0.010 : -", "t"), Ok(Some(10.0)));
        assert_eq!(parse_seconds_ms(b"-", "t"), Ok(None));
        assert!(parse_seconds_ms(b"soon", "t").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol("http/2.0").as_deref(), Some("HTTP/2.0"));
        assert_eq!(protocol("h3").as_deref(), Some("HTTP/3"));
        assert_eq!(protocol("HTTP/1.1").as_deref(), Some("HTTP/1.1"));
        assert_eq!(protocol(""), None);
    }

    #[test]
    fn shown_is_short_and_printable() {
        assert_eq!(shown(b"\x16\x03\xff\n"), "\\x16\\x03\\xFF\\x0A");
        assert_eq!(shown(&[b'a'; 100]).chars().count(), 61);
    }
}
