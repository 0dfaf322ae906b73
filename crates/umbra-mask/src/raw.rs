//! Raw HTTP/1.1 requests: one read from bytes into a [`MaskRequest`] and written
//! back, for `umbra mask` and for tests that want to see a copy as it would go out.
//!
//! A chunked body is de-chunked and written back with `Content-Length` (the copy
//! is a whole body either way); trailers are dropped and reported.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::MaskRequest;

/// A request read from raw bytes, with what is needed to write it back as it came
/// (header name spellings, HTTP version).
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub request: MaskRequest,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The body came chunked and was rewritten with `Content-Length`.
    pub dechunked: bool,
    /// Trailer fields after a chunked body, dropped.
    pub trailers_dropped: usize,
    spellings: Vec<(HeaderName, String)>,
}

/// What is wrong with the input, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line} (byte {offset}): {problem}")]
pub struct RawError {
    /// 1-based line.
    pub line: usize,
    /// 0-based byte offset.
    pub offset: usize,
    pub problem: String,
}

const MAX_HEADERS: usize = 256;

fn err_at(input: &[u8], offset: usize, problem: impl Into<String>) -> RawError {
    let offset = offset.min(input.len());
    RawError {
        line: 1 + input[..offset].iter().filter(|&&c| c == b'\n').count(),
        offset,
        problem: problem.into(),
    }
}

/// Lines of the head: (start offset, line without its line break).
fn head_lines(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= input.len() {
            return None;
        }
        let start = pos;
        let end = memchr::memchr(b'\n', &input[pos..]).map_or(input.len(), |i| pos + i);
        pos = end + 1;
        let line = &input[start..end];
        Some((start, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

/// Finds the line httparse refused, for an error that points at it.
fn locate(input: &[u8], e: httparse::Error) -> RawError {
    let mut lines = head_lines(input);
    let Some((_, first)) = lines.next() else {
        return err_at(input, 0, "empty input");
    };
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine => {
            for (start, line) in lines {
                if line.is_empty() {
                    break;
                }
                let mut buf = line.to_vec();
                buf.extend_from_slice(b"\r\n\r\n");
                let mut h = [httparse::EMPTY_HEADER; 1];
                if let Err(e) = httparse::parse_headers(&buf, &mut h) {
                    let what = match e {
                        httparse::Error::HeaderName => {
                            "header name is empty or holds a character names cannot"
                        }
                        httparse::Error::HeaderValue => "header value holds a control character",
                        _ => "not a `Name: value` header line",
                    };
                    return err_at(input, start, what);
                }
            }
            let what = if first.is_empty() {
                "the request line is empty"
            } else {
                "malformed line break in the request line"
            };
            err_at(input, 0, what)
        }
        httparse::Error::Version => err_at(
            input,
            0,
            format!(
                "request line {:?}: expected `METHOD target HTTP/1.1`",
                String::from_utf8_lossy(first)
            ),
        ),
        httparse::Error::TooManyHeaders => {
            err_at(input, 0, format!("more than {MAX_HEADERS} headers"))
        }
        _ => err_at(
            input,
            0,
            format!(
                "request line {:?}: expected `METHOD target HTTP/1.1`",
                String::from_utf8_lossy(first)
            ),
        ),
    }
}

/// Reads one request. Errors name the line and byte offset.
pub fn parse(input: &[u8]) -> Result<RawRequest, RawError> {
    let mut hbuf = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hbuf);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(err_at(
                input,
                input.len(),
                "the head ends without the blank line that closes it",
            ));
        }
        Err(e) => return Err(locate(input, e)),
    };
    let method_s = req.method.unwrap_or_default();
    let method = Method::from_bytes(method_s.as_bytes()).map_err(|_| {
        err_at(
            input,
            0,
            format!("method {method_s:?} is not a valid token"),
        )
    })?;
    let target = req.path.unwrap_or_default();
    let uri: Uri = target
        .parse()
        .map_err(|e| err_at(input, 0, format!("request target {target:?}: {e}")))?;
    let minor_version = req.version.unwrap_or(1);

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut spellings: Vec<(HeaderName, String)> = Vec::new();
    for (i, h) in req.headers.iter().enumerate() {
        let line_start = head_lines(input).nth(i + 1).map_or(0, |(s, _)| s);
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            err_at(
                input,
                line_start,
                format!("header name {:?} is invalid", h.name),
            )
        })?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| {
            err_at(
                input,
                line_start,
                format!("value of header {} is invalid", h.name),
            )
        })?;
        if name.as_str() != h.name && !spellings.iter().any(|(n, _)| *n == name) {
            spellings.push((name.clone(), h.name.to_string()));
        }
        headers.append(name, value);
    }

    let rest = &input[head_len..];
    let te: Vec<&HeaderValue> = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    let cl: Vec<&HeaderValue> = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    let (body, used, dechunked, trailers) = if !te.is_empty() {
        if !cl.is_empty() {
            return Err(err_at(
                input,
                head_len,
                "both Content-Length and Transfer-Encoding are set (a request smuggling ambiguity)",
            ));
        }
        let last = te
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.rsplit(',').next())
            .map(|s| s.trim().to_ascii_lowercase());
        if last.as_deref() != Some("chunked") || te.len() > 1 {
            return Err(err_at(
                input,
                head_len,
                "Transfer-Encoding other than a single `chunked` is not supported",
            ));
        }
        let (body, used, trailers) = dechunk(input, head_len)?;
        (body, used, true, trailers)
    } else if let Some(first) = cl.first() {
        let parse_cl = |v: &HeaderValue| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        let n = parse_cl(first).ok_or_else(|| {
            err_at(
                input,
                head_len,
                format!(
                    "Content-Length {:?} is not a number",
                    String::from_utf8_lossy(first.as_bytes())
                ),
            )
        })?;
        if cl.iter().any(|v| parse_cl(v) != Some(n)) {
            return Err(err_at(input, head_len, "Content-Length headers disagree"));
        }
        if (rest.len() as u64) < n {
            return Err(err_at(
                input,
                input.len(),
                format!(
                    "the body is {} bytes but Content-Length says {n}",
                    rest.len()
                ),
            ));
        }
        let n = n as usize;
        (rest[..n].to_vec(), n, false, 0)
    } else {
        (Vec::new(), 0, false, 0)
    };
    let after = &rest[used..];
    if !after.iter().all(|c| matches!(c, b'\r' | b'\n')) {
        let what = if te.is_empty() && cl.is_empty() {
            format!(
                "{} bytes after the head, but no Content-Length or Transfer-Encoding says there is a body",
                after.len()
            )
        } else {
            format!(
                "{} bytes after the body (only one request is read)",
                after.len()
            )
        };
        return Err(err_at(input, head_len + used, what));
    }
    if dechunked {
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(body.len() as u64),
        );
    }
    Ok(RawRequest {
        request: MaskRequest {
            method,
            uri,
            headers,
            body: body.into(),
        },
        minor_version,
        dechunked,
        trailers_dropped: trailers,
        spellings,
    })
}

/// A chunked body from `start`: the data, the bytes used, and the trailer count.
fn dechunk(input: &[u8], start: usize) -> Result<(Vec<u8>, usize, usize), RawError> {
    let mut body = Vec::new();
    let mut pos = start;
    let line = |pos: usize| -> Result<(&[u8], usize), RawError> {
        match memchr::memchr(b'\n', &input[pos..]) {
            Some(i) => {
                let l = &input[pos..pos + i];
                Ok((l.strip_suffix(b"\r").unwrap_or(l), pos + i + 1))
            }
            None => Err(err_at(
                input,
                pos,
                "chunked body ends in the middle of a line",
            )),
        }
    };
    loop {
        let (l, next) = line(pos)?;
        let size_s = l
            .split(|&c| c == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(size_s)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 15)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                err_at(
                    input,
                    pos,
                    format!(
                        "chunk size {:?} is not a hexadecimal number",
                        String::from_utf8_lossy(l)
                    ),
                )
            })?;
        pos = next;
        if size == 0 {
            let mut trailers = 0;
            loop {
                let (t, next) = line(pos)?;
                pos = next;
                if t.is_empty() {
                    return Ok((body, pos - start, trailers));
                }
                trailers += 1;
            }
        }
        if input.len() - pos < size {
            return Err(err_at(
                input,
                input.len(),
                format!(
                    "chunk of {size} bytes is cut short ({} left)",
                    input.len() - pos
                ),
            ));
        }
        body.extend_from_slice(&input[pos..pos + size]);
        pos += size;
        let (l, next) = line(pos)?;
        if !l.is_empty() {
            return Err(err_at(
                input,
                pos,
                "chunk data is longer than its size says",
            ));
        }
        pos = next;
    }
}

impl RawRequest {
    /// The request as raw HTTP/1.1 bytes (header names as they were spelled).
    pub fn write(&self) -> Vec<u8> {
        let r = &self.request;
        let mut out = Vec::with_capacity(r.body.len() + 512);
        out.extend_from_slice(r.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(r.uri.to_string().as_bytes());
        out.extend_from_slice(format!(" HTTP/1.{}\r\n", self.minor_version).as_bytes());
        for (name, value) in &r.headers {
            let spelled = self
                .spellings
                .iter()
                .find(|(n, _)| n == name)
                .map_or(name.as_str(), |(_, s)| s.as_str());
            out.extend_from_slice(spelled.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&r.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        let r = parse(raw).unwrap();
        assert_eq!(r.request.method, Method::POST);
        assert_eq!(r.request.uri, "/a?b=1");
        assert_eq!(&r.request.body[..], b"hello");
        assert_eq!(r.write(), raw);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(&r.request.body[..], b"hello world");
        assert!(r.dechunked);
        assert_eq!(r.trailers_dropped, 1);
        assert_eq!(r.request.headers["content-length"], "11");
        assert!(!r.request.headers.contains_key("transfer-encoding"));
    }

    #[test]
    fn lf_only_and_trailing_newlines_are_fine() {
        let r = parse(b"GET /x HTTP/1.1\nHost: a\n\n\n").unwrap();
        assert_eq!(r.request.uri, "/x");
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = parse(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n").unwrap_err();
        assert_eq!((e.line, e.offset), (3, 25), "{e}");
        let e = parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err();
        assert!(e.problem.contains("blank line"), "{e}");
        let e = parse(b"GET / HTTP/9\r\n\r\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert!(e.problem.contains("Content-Length says 10"), "{e}");
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcdef").unwrap_err();
        assert!(e.problem.contains("after the body"), "{e}");
        let e = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap_err();
        assert!(e.problem.contains("hexadecimal"), "{e}");
        assert_eq!(e.line, 4);
        let e =
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err();
        assert!(e.problem.contains("smuggling"), "{e}");
        let e = parse(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(e.problem.contains("no Content-Length"), "{e}");
    }
}
