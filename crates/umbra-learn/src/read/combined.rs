//! The NCSA common and combined formats, as written by Apache and nginx:
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" [extras]
//! ```
//!
//! Common stops after the byte count. Either may be followed by extra fields,
//! which real configurations add freely; we understand the usual ones:
//!
//! - the first extra quoted string is nginx's `"$http_x_forwarded_for"` (the
//!   default `main` format), kept as the `x-forwarded-for` header;
//! - the first bare number is the request time: with a decimal point it is
//!   nginx's `$request_time` in seconds, an integer is Apache's `%D` in
//!   microseconds; further bare numbers (`$upstream_response_time`) are ignored;
//! - `key=value` pairs, the value optionally quoted: `rt=` or `request_time=`
//!   give the request time in seconds, anything else is ignored.
//!
//! This is the hot path of `learn`, so it works on the line's bytes (with
//! `memchr` for the long quoted fields, a plain loop for the short ones, where
//! memchr's setup costs more than it saves), allocates only the output strings,
//! checks each line's UTF-8 once, and remembers the last timestamp
//! (consecutive lines usually share their second).

use umbra_core::RequestRecord;

use super::LineParser;
use super::field::{
    self, LineText, content, parse_bytes, parse_status, present, quoted_end, shown,
    split_request_line, split_target_bytes,
};
use super::time;

pub(crate) struct CombinedParser {
    /// Whether the referer and user agent are required (combined) or absent (common).
    combined: bool,
    last_time: Vec<u8>,
    last_ms: i64,
}

impl CombinedParser {
    pub(crate) fn new(combined: bool) -> Self {
        CombinedParser {
            combined,
            last_time: Vec::new(),
            last_ms: 0,
        }
    }

    fn time(&mut self, raw: &[u8]) -> Result<i64, String> {
        if raw != self.last_time.as_slice() {
            let ms = time::parse_time_local(raw).ok_or_else(|| {
                format!(
                    "time `{}` is not like `22/Jan/2019:03:56:14 +0330`",
                    shown(raw)
                )
            })?;
            self.last_time.clear();
            self.last_time.extend_from_slice(raw);
            self.last_ms = ms;
        }
        Ok(self.last_ms)
    }
}

/// The first `byte` in a short stretch of the line.
fn find_short(byte: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == byte)
}

/// Expects `"` at `pos` and returns the field's raw content, whether it holds
/// escapes, and the position after the closing quote.
fn quoted_at<'a>(
    line: &'a [u8],
    pos: usize,
    what: &str,
) -> Result<(&'a [u8], bool, usize), String> {
    if line.get(pos) != Some(&b'"') {
        return Err(format!("expected the quoted {what} at column {}", pos + 1));
    }
    let (end, escaped) =
        quoted_end(line, pos + 1, true).map_err(|e| format!("{e} (the {what})"))?;
    Ok((&line[pos + 1..end], escaped, end + 1))
}

/// The next space-separated token from `pos` and the position after it.
fn token(line: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = &line[pos.min(line.len())..];
    match find_short(b' ', rest) {
        Some(i) => (&rest[..i], pos + i),
        None => (rest, line.len()),
    }
}

/// Expects a single space at `pos` (several are tolerated) and skips it.
fn space(line: &[u8], pos: usize, before: &str) -> Result<usize, String> {
    if line.get(pos) != Some(&b' ') {
        return Err(match line.get(pos) {
            None => format!("line ends before {before}"),
            Some(_) => format!("expected a space before {before} at column {}", pos + 1),
        });
    }
    let mut p = pos;
    while line.get(p) == Some(&b' ') {
        p += 1;
    }
    Ok(p)
}

impl LineParser for CombinedParser {
    fn parse(&mut self, line: &[u8]) -> Result<Option<RequestRecord>, String> {
        let Some(line) = content(line) else {
            return Ok(None);
        };
        let strings = LineText::new(line);
        // Client: up to the first space (IPv6 addresses have no spaces or brackets).
        let sp = find_short(b' ', line).ok_or("no space after the client address")?;
        let client = present(&line[..sp]).map(|c| strings.string(c));
        // Skip the ident and user fields up to the bracketed time.
        let open = sp + find_short(b'[', &line[sp..]).ok_or("no `[` opening the time")?;
        // The time is 26 bytes long when it is well-formed.
        let close = match line.get(open + 27) {
            Some(b']') => open + 27,
            _ => open + find_short(b']', &line[open..]).ok_or("no `]` closing the time")?,
        };
        let timestamp_ms = self.time(&line[open + 1..close])?;

        let pos = space(line, close + 1, "the request")?;
        let (request, escaped, pos) = quoted_at(line, pos, "request line")?;
        let unescaped;
        let request = if escaped {
            unescaped = field::unescape(request);
            &unescaped[..]
        } else {
            request
        };
        let req = split_request_line(request)?;
        let (path, query) = split_target_bytes(req.target)?;

        let pos = space(line, pos, "the status")?;
        let (status, pos) = token(line, pos);
        let status = parse_status(status)?;
        let pos = space(line, pos, "the byte count")?;
        let (bytes, mut pos) = token(line, pos);
        let response_bytes = parse_bytes(bytes, "byte count")?;

        let mut record = RequestRecord {
            timestamp_ms: Some(timestamp_ms),
            client,
            method: field::interned(req.method, field::METHODS),
            path: strings.string(path),
            query: query.map(|q| strings.string(q)),
            protocol: Some(field::interned(req.protocol, field::PROTOCOLS)),
            status,
            response_bytes,
            ..RequestRecord::default()
        };

        if !self.combined && has_referer_and_ua(line, pos) {
            return Err("a referer and user agent follow the byte count \
                        (this is the combined format, not common)"
                .into());
        }
        if self.combined {
            if pos >= line.len() {
                return Err("line ends after the byte count: no referer and user agent \
                            (is this the common format?)"
                    .into());
            }
            pos = space(line, pos, "the referer")?;
            let (referer, esc, p) = quoted_at(line, pos, "referer")?;
            record.referer = strings.field(referer, esc);
            pos = space(line, p, "the user agent")?;
            let (ua, esc, p) = quoted_at(line, pos, "user agent")?;
            record.user_agent = strings.field(ua, esc);
            pos = p;
        }
        self.extras(line, pos, &strings, &mut record)?;
        Ok(Some(record))
    }
}

impl CombinedParser {
    /// Reads the trailing extra fields described in the module comment.
    fn extras(
        &self,
        line: &[u8],
        mut pos: usize,
        strings: &LineText<'_>,
        record: &mut RequestRecord,
    ) -> Result<(), String> {
        let mut quoted_seen = 0;
        let mut numbers_seen = 0;
        while pos < line.len() {
            if line[pos] == b' ' {
                pos += 1;
                continue;
            }
            if line[pos] == b'"' {
                let (value, esc, p) = quoted_at(line, pos, "extra field")?;
                // Only combined's first extra has a conventional meaning.
                let conventional = quoted_seen == 0 && self.combined;
                if let Some(xff) = conventional.then(|| strings.field(value, esc)).flatten() {
                    record.headers.push(("x-forwarded-for".into(), xff));
                }
                quoted_seen += 1;
                pos = p;
                continue;
            }
            // key=value, the value possibly quoted.
            let key_len = line[pos..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            if key_len > 0 && line.get(pos + key_len) == Some(&b'=') {
                let key = &line[pos..pos + key_len];
                let vpos = pos + key_len + 1;
                let (value, next) = if line.get(vpos) == Some(&b'"') {
                    let (v, _, p) = quoted_at(line, vpos, "extra field")?;
                    (v, p)
                } else {
                    token(line, vpos)
                };
                if matches!(key, b"rt" | b"request_time") {
                    record.duration_ms = field::parse_seconds_ms(value, "request time")?;
                }
                pos = next;
                continue;
            }
            // A bare token: a number (or `-` standing for one) fills the next
            // numeric slot; words such as an upstream address are ignored.
            let (tok, next) = token(line, pos);
            if let Some(ms) = bare_duration(tok) {
                if numbers_seen == 0 {
                    record.duration_ms = ms;
                }
                numbers_seen += 1;
            }
            pos = next;
        }
        Ok(())
    }
}

/// Whether two quoted fields follow `pos`, as combined's referer and user agent do.
fn has_referer_and_ua(line: &[u8], pos: usize) -> bool {
    let second = space(line, pos, "")
        .and_then(|p| quoted_at(line, p, ""))
        .and_then(|(_, _, p)| space(line, p, ""));
    second.is_ok_and(|p| line.get(p) == Some(&b'"'))
}

/// A bare number after the standard fields, in milliseconds: seconds if it has
/// a decimal point (nginx `$request_time`), else microseconds (Apache `%D`).
/// `Some(None)` for a `-`, `None` if the token is not a number at all.
fn bare_duration(tok: &[u8]) -> Option<Option<f64>> {
    if tok == b"-" {
        return Some(None);
    }
    if !tok.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let shift = if find_short(b'.', tok).is_some() {
        3
    } else {
        -3
    };
    time::decimal(tok, shift).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(combined: bool, line: &str) -> Result<Option<RequestRecord>, String> {
        CombinedParser::new(combined).parse(line.as_bytes())
    }

    fn ok(combined: bool, line: &str) -> RequestRecord {
        match parse(combined, line) {
            Ok(Some(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    const SHOP: &str = r#"31.56.96.51 - - [22/Jan/2019:03:56:16 +0330] "GET /image/60844/productModel/200x200 HTTP/1.1" 200 5667 "https://www.zanbil.ir/m/filter/b113" "Mozilla/5.0 (Linux; Android 6.0)" "-""#;

    #[test]
    fn combined_line_with_xff_placeholder() {
        let r = ok(true, SHOP);
        assert_eq!(r.client.as_deref(), Some("31.56.96.51"));
        assert_eq!(r.timestamp_ms, Some(1_548_116_776_000));
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/image/60844/productModel/200x200");
        assert_eq!(r.query, None);
        assert_eq!(r.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.response_bytes, Some(5667));
        assert_eq!(
            r.referer.as_deref(),
            Some("https://www.zanbil.ir/m/filter/b113")
        );
        assert_eq!(
            r.user_agent.as_deref(),
            Some("Mozilla/5.0 (Linux; Android 6.0)")
        );
        assert!(r.headers.is_empty());
        assert_eq!(r.duration_ms, None);
    }

    #[test]
    fn ipv6_client_and_query() {
        let r = ok(
            true,
            r#"2001:db8::1 - alice [10/Oct/2000:13:55:36 -0700] "POST /api/v1/cart?id=7&x=%20 HTTP/2.0" 201 12 "-" "curl/8.0""#,
        );
        assert_eq!(r.client.as_deref(), Some("2001:db8::1"));
        assert_eq!(r.path, "/api/v1/cart");
        assert_eq!(r.query.as_deref(), Some("id=7&x=%20"));
        assert_eq!(r.referer, None);
        assert_eq!(r.timestamp_ms, Some(971_211_336_000));
    }

    #[test]
    fn escaped_quotes_apache_and_nginx_style() {
        let apache = ok(
            true,
            r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /q?s=\"x\" HTTP/1.1" 200 1 "-" "Bot \"quoted\" 1.0""#,
        );
        assert_eq!(apache.query.as_deref(), Some(r#"s="x""#));
        assert_eq!(apache.user_agent.as_deref(), Some(r#"Bot "quoted" 1.0"#));
        let nginx = ok(
            true,
            r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /q?s=\x22x\x22 HTTP/1.1" 200 1 "-" "Bot \x22quoted\x22 1.0""#,
        );
        assert_eq!(nginx.query.as_deref(), Some(r#"s="x""#));
        assert_eq!(nginx.user_agent.as_deref(), Some(r#"Bot "quoted" 1.0"#));
    }

    #[test]
    fn missing_values() {
        let r = ok(
            true,
            r#"- - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.0" 304 - "-" "-""#,
        );
        assert_eq!(r.client, None);
        assert_eq!(r.response_bytes, None);
        assert_eq!(r.referer, None);
        assert_eq!(r.user_agent, None);
        assert_eq!(r.status, Some(304));
    }

    #[test]
    fn trailing_extras_and_request_time() {
        let r = ok(
            true,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" "203.0.113.9, 10.0.0.2" 0.123 0.120"#,
        );
        assert_eq!(r.duration_ms, Some(123.0));
        assert_eq!(r.header("x-forwarded-for"), Some("203.0.113.9, 10.0.0.2"));

        let r = ok(
            true,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" rt=0.045 uct="0.001" urt="0.040""#,
        );
        assert_eq!(r.duration_ms, Some(45.0));

        // Apache %D: microseconds.
        let r = ok(
            true,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" 2500"#,
        );
        assert_eq!(r.duration_ms, Some(2.5));

        // Common with a trailing request time.
        let r = ok(
            false,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 0.007"#,
        );
        assert_eq!(r.duration_ms, Some(7.0));
        assert_eq!(r.user_agent, None);

        // Unknown bare words are ignored.
        let r = ok(
            true,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" example.com 10.0.0.7:80 0.010"#,
        );
        assert_eq!(r.duration_ms, Some(10.0));
    }

    #[test]
    fn absolute_uri_in_request_line() {
        let r = ok(
            true,
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET http://example.com/x/y?z=1 HTTP/1.1" 200 5 "-" "ua""#,
        );
        assert_eq!(r.path, "/x/y");
        assert_eq!(r.query.as_deref(), Some("z=1"));
    }

    #[test]
    fn common_line() {
        let r = ok(
            false,
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
        );
        assert_eq!(r.path, "/apache_pb.gif");
        assert_eq!(r.user_agent, None);
        // The combined parser refuses it, saying why.
        let err = parse(
            true,
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
        )
        .expect_err("common is not combined");
        assert!(err.contains("common format"), "{err}");
        // And the other way round.
        let err = parse(false, SHOP).expect_err("combined is not common");
        assert!(err.contains("combined format"), "{err}");
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(parse(true, ""), Ok(None));
        assert_eq!(parse(true, "  \r\n"), Ok(None));
        assert_eq!(parse(true, "# rotated"), Ok(None));
    }

    #[test]
    fn bad_lines_have_reasons() {
        let cases = [
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "-" 400 0 "-" "-""#,
                "no request line",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "\x16\x03\x01\x00\xA5\x01\x00" 400 166 "-" "-""#,
                "is not METHOD TARGET PROTOCOL",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1 200 5"#,
                "unterminated quoted field",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 2x0 5 "-" "ua""#,
                "status `2x0`",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 many "-" "ua""#,
                "byte count `many`",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000 13:55:36 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua""#,
                "time `10/Oct/2000 13:55:36 +0000`",
            ),
            (
                r#"1.2.3.4 - - 10/Oct/2000:13:55:36 +0000 "GET /a HTTP/1.1" 200 5"#,
                "no `[`",
            ),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "OPTIONS * HTTP/1.1" 200 5 "-" "ua""#,
                "neither a path nor an absolute URL",
            ),
            ("garbage", "no space"),
            (
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200"#,
                "line ends before the byte count",
            ),
        ];
        for (line, want) in cases {
            let err = parse(true, line).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn non_utf8_is_replaced_not_refused() {
        let mut line = br#"1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /caf"#.to_vec();
        line.push(0xe9);
        line.extend_from_slice(br#" HTTP/1.1" 200 5 "-" "ua"#);
        line.push(0xff);
        line.push(b'"');
        let r = CombinedParser::new(true)
            .parse(&line)
            .expect("parses")
            .expect("a record");
        assert_eq!(r.path, "/caf\u{fffd}");
        assert_eq!(r.user_agent.as_deref(), Some("ua\u{fffd}"));
    }
}
