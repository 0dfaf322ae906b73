//! HTTP/1.1 message heads: the request head we write, the response head we parse.
//!
//! A response head is parsed with `httparse`, then the buffer holding it is
//! frozen and every header value is a slice of it (a reference count, no copy),
//! as hyper does. Hop-by-hop fields are dropped while the map is built; they
//! still decide the framing and whether the connection can be reused.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::decode::Framing;

/// A response head larger than this is refused.
pub const MAX_HEAD: usize = 64 << 10;
/// More header fields than this are refused.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head ({0})")]
    Malformed(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields in the response")]
    TooManyFields,
    #[error("invalid header field {0:?} in the response")]
    Field(String),
    #[error("invalid Content-Length {0:?} in the response")]
    ContentLength(String),
    #[error("the response switched protocols (101) though no upgrade was asked for")]
    Switched,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub fields: RawFields,
    pub framing: Framing,
    /// The connection may carry another request once this response is read.
    pub keep_alive: bool,
}

/// What one parse of the buffer found.
#[derive(Debug)]
pub enum Parsed {
    Head(ResponseHead),
    /// A 1xx interim response (consumed from the buffer): wait for the final one.
    Interim,
    /// The head is not complete yet.
    Partial,
}

/// Room for the field offsets of one head: on the stack for the usual few
/// fields (zeroing room for the most a head may have cost more than the
/// parse), on the heap past that. It lives on the stack for one parse, so the
/// variants' size difference is the point.
#[allow(clippy::large_enum_variant)]
pub enum Spans {
    Few([[u32; 4]; 24], usize),
    Many(Vec<[u32; 4]>),
}

impl Spans {
    pub fn new(count: usize) -> Spans {
        if count <= 24 {
            Spans::Few([[0; 4]; 24], count)
        } else {
            Spans::Many(vec![[0; 4]; count])
        }
    }

    pub fn slots(&mut self) -> &mut [[u32; 4]] {
        match self {
            Spans::Few(a, n) => &mut a[..*n],
            Spans::Many(v) => v,
        }
    }
}

/// Where a parsed field's name and value are, as offsets from `base` (the
/// start of the head) and lengths, so they can become slices of the frozen head.
/// Four `u32`s: an array of them is zeroed with one memset, where a tuple with
/// padding was zeroed field by field and cost more than the parse.
pub fn field_span(base: usize, field: &httparse::Header<'_>) -> [u32; 4] {
    [
        (field.name.as_ptr() as usize - base) as u32,
        field.name.len() as u32,
        (field.value.as_ptr() as usize - base) as u32,
        field.value.len() as u32,
    ]
}

/// Parses a response head at the start of `buf`, consuming it when complete.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Parsed, HeadError> {
    // Uninitialised slots: zeroing room for every possible field would cost more than the parse.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(e) => return Err(HeadError::Malformed(parse_error(e))),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("status code"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    if status.is_informational() {
        let _ = buf.split_to(len);
        return match code {
            101 => Err(HeadError::Switched),
            _ => Ok(Parsed::Interim),
        };
    }

    // Where each field is, so the values can be slices of the frozen head.
    let base = buf.as_ptr() as usize;
    let count = response.headers.len();
    let mut spans = Spans::new(count);
    let spans = spans.slots();
    let mut keep_alive = version == Version::HTTP_11;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut listed_hop_by_hop = false;
    let mut has_date = false;
    for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
        let name = field.name.as_bytes();
        let value = field.value;
        *span = field_span(base, field);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length_value(value)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::ContentLength(
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding decides: `gzip, chunked` is chunked, `chunked, gzip` is not.
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= version == Version::HTTP_10;
                } else if !token.is_empty() {
                    listed_hop_by_hop = true;
                }
            }
        }
    }

    let no_body = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if transfer_encoding {
        // With both, Transfer-Encoding wins and the connection must not be reused
        // (RFC 9112 section 6.3): the length was a lie one way or the other.
        if content_length.is_some() || !chunked {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };

    let head: Bytes = buf.split_to(len).freeze();
    // Fields are passed on as they came unless the Connection field names some
    // (they must go too) or both framings came (the length must not be kept).
    let both_framings = transfer_encoding && content_length.is_some();
    let verbatim = !listed_hop_by_hop && !both_framings;
    let fields = RawFields::new(
        head,
        spans,
        verbatim,
        content_length.filter(|_| !both_framings),
        has_date,
    );
    Ok(Parsed::Head(ResponseHead {
        status,
        fields,
        framing,
        keep_alive,
    }))
}

/// The most stretches of end-to-end fields a head passed on verbatim may have
/// (one more than the hop-by-hop fields between them).
const MAX_RUNS: usize = 8;

/// A response's header fields as they came, to be passed on without building
/// a `HeaderMap`: the frozen head, and the stretches of it that hold the
/// end-to-end fields (hop-by-hop ones cut out), each line with its CRLF.
/// A head that cannot be passed on verbatim (bare LF line ends, fields the
/// Connection field names, too many cuts) is turned into a map instead.
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    runs: [(u32, u32); MAX_RUNS],
    /// None: use [`RawFields::to_header_map`].
    n_runs: Option<u8>,
    /// The Content-Length field's value, when there is one that frames the
    /// body (not beside a Transfer-Encoding, where it is dropped).
    pub content_length: Option<u64>,
    pub has_date: bool,
}

impl RawFields {
    fn new(
        head: Bytes,
        spans: &[[u32; 4]],
        verbatim: bool,
        content_length: Option<u64>,
        has_date: bool,
    ) -> RawFields {
        let mut fields = RawFields {
            head,
            runs: [(0, 0); MAX_RUNS],
            n_runs: None,
            content_length,
            has_date,
        };
        if verbatim {
            fields.n_runs = fields.cut(spans);
        }
        fields
    }

    /// The stretches between hop-by-hop lines; None when a line does not end in CRLF.
    fn cut(&mut self, spans: &[[u32; 4]]) -> Option<u8> {
        let head = &self.head[..];
        if !head.ends_with(b"\r\n\r\n") {
            return None;
        }
        let block_end = (head.len() - 2) as u32;
        let mut n = 0usize;
        let mut open: Option<u32> = None;
        for (i, span) in spans.iter().enumerate() {
            let start = span[0];
            // A line ends where the next begins (values lose trailing blanks to the parser).
            let end = spans.get(i + 1).map_or(block_end, |next| next[0]);
            if end < 2 || &head[end as usize - 2..end as usize] != b"\r\n" {
                return None;
            }
            let name = &head[start as usize..(start + span[1]) as usize];
            if is_hop_by_hop(name) {
                if let Some(from) = open.take() {
                    *self.runs.get_mut(n)? = (from, start);
                    n += 1;
                }
            } else if open.is_none() {
                open = Some(start);
            }
        }
        if let Some(from) = open {
            *self.runs.get_mut(n)? = (from, block_end);
            n += 1;
        }
        Some(n as u8)
    }

    /// The end-to-end field lines as they came, CRLFs included; None when
    /// they cannot be passed on verbatim.
    pub fn verbatim(&self) -> Option<impl Iterator<Item = &[u8]>> {
        let n = self.n_runs? as usize;
        Some(
            self.runs[..n]
                .iter()
                .map(|&(from, to)| &self.head[from as usize..to as usize]),
        )
    }

    /// The end-to-end fields as a map (for h2 clients, and heads that cannot
    /// go verbatim). Values are slices of the head, not copies. The parser
    /// accepted every field already; one the `http` crate would refuse is left out.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut parsed =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let complete = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.head,
            &mut parsed,
        );
        if !matches!(complete, Ok(httparse::Status::Complete(_))) {
            return HeaderMap::new();
        }
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        let mut listed_hop_by_hop = false;
        for field in response.headers.iter() {
            let name = field.name.as_bytes();
            if is_hop_by_hop(name) {
                listed_hop_by_hop |= name.eq_ignore_ascii_case(b"connection");
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice_ref(field.value)),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        if listed_hop_by_hop {
            // Names the Connection field lists describe this hop only.
            for field in response.headers.iter() {
                if !field.name.eq_ignore_ascii_case("connection") {
                    continue;
                }
                for token in field.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if let Ok(listed) = HeaderName::from_bytes(token) {
                        headers.remove(listed);
                    }
                }
            }
        }
        if self.content_length.is_none() {
            // Both framings came (or none): the body is re-framed, a length would lie.
            headers.remove(header::CONTENT_LENGTH);
        }
        headers
    }
}

/// An HTTP/1.x request's header fields as our server parsed them, to be
/// forwarded without building a `HeaderMap`: the frozen head, where each field
/// is, and what the proxy changes on the way ([`RequestEdits`]). The map, with
/// the lookups and inserts the live path made on it, cost a few percent of the
/// plain proxy's throughput. Features that need a map (mirroring, the canary,
/// tracing) take [`RawRequest::to_header_map`] instead.
#[derive(Debug, Clone)]
pub struct RawRequest {
    head: Bytes,
    /// Name offset and length, value offset and length, per field, in order.
    spans: Vec<[u32; 4]>,
    /// The body's length, from its Content-Length field.
    pub content_length: Option<u64>,
    /// The Connection field names other fields, which must go too (the map path removes them).
    pub lists_fields: bool,
    pub edits: RequestEdits,
}

/// What the proxy changes in a [`RawRequest`]'s fields when it forwards them.
#[derive(Debug, Clone, Default)]
pub struct RequestEdits {
    /// Replaces every `X-Forwarded-For` field.
    pub forwarded_for: Option<HeaderValue>,
    /// Added when the request has no `X-Forwarded-Proto`.
    pub forwarded_proto: Option<HeaderValue>,
    /// Replaces every `Forwarded` field.
    pub forwarded: Option<HeaderValue>,
    /// Replaces the `Host` field, or is added when there is none.
    pub host: Option<HeaderValue>,
}

const X_FORWARDED_FOR: &[u8] = b"x-forwarded-for";
const X_FORWARDED_PROTO: &[u8] = b"x-forwarded-proto";

impl RawRequest {
    /// `spans` as [`field_span`] gives them, offsets into `head`.
    pub fn new(
        head: Bytes,
        spans: &[[u32; 4]],
        content_length: Option<u64>,
        lists_fields: bool,
    ) -> RawRequest {
        RawRequest {
            head,
            spans: spans.to_vec(),
            content_length,
            lists_fields,
            edits: RequestEdits::default(),
        }
    }

    /// Every field as it came, names in their own case, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|&[n, nl, v, vl]| {
            (
                &self.head[n as usize..(n + nl) as usize],
                &self.head[v as usize..(v + vl) as usize],
            )
        })
    }

    /// The first value of the field `name` (lowercase).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of the field `name` (lowercase), as a slice of the head (no copy).
    pub fn value(&self, name: &[u8]) -> Option<HeaderValue> {
        let v = self.get(name)?;
        HeaderValue::from_maybe_shared(self.head.slice_ref(v)).ok()
    }

    pub fn has(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// The fields as a map, as they came (hop-by-hop ones too: the map path
    /// strips them), less `Expect`, which our server answers itself. Values are
    /// slices of the head. The parser accepted every field already; one the
    /// `http` crate would refuse is left out.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.spans.len() + 3);
        for (name, value) in self.fields() {
            if name.eq_ignore_ascii_case(b"expect") {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice_ref(value)),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        headers
    }

    /// The fields as they go upstream, as a map (for hyper's client, which adds its own `Host`).
    pub fn forwarded_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.spans.len() + 4);
        self.each_forwarded(None, |name, value| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        });
        headers
    }

    /// Writes the fields as they go upstream, each line with its CRLF.
    pub fn write_fields(&self, out: &mut Vec<u8>, default_host: Option<&str>) {
        self.each_forwarded(default_host, |name, value| field_line(out, name, value));
    }

    /// The fields as they go upstream: the ones that came, less hop-by-hop
    /// ones, `Expect` and the ones an edit replaces; then the edits; then
    /// `Host: default_host` when there is no Host at all.
    fn each_forwarded(&self, default_host: Option<&str>, mut each: impl FnMut(&[u8], &[u8])) {
        let e = &self.edits;
        let mut has_host = false;
        let mut has_proto = false;
        for (name, value) in self.fields() {
            // By length first: most names are none of these, and most lengths rule all out.
            let skip = match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => {
                    has_host = true;
                    e.host.is_some()
                }
                6 => name.eq_ignore_ascii_case(b"expect"),
                9 => e.forwarded.is_some() && name.eq_ignore_ascii_case(b"forwarded"),
                15 => e.forwarded_for.is_some() && name.eq_ignore_ascii_case(X_FORWARDED_FOR),
                17 if name.eq_ignore_ascii_case(X_FORWARDED_PROTO) => {
                    has_proto = true;
                    false
                }
                _ => is_hop_by_hop(name),
            };
            if !skip {
                each(name, value);
            }
        }
        if let Some(v) = &e.host {
            each(b"host", v.as_bytes());
        } else if !has_host && let Some(h) = default_host {
            each(b"host", h.as_bytes());
        }
        if let Some(v) = &e.forwarded_for {
            each(X_FORWARDED_FOR, v.as_bytes());
        }
        if let Some(v) = &e.forwarded_proto
            && !has_proto
        {
            each(X_FORWARDED_PROTO, v.as_bytes());
        }
        if let Some(v) = &e.forwarded {
            each(b"forwarded", v.as_bytes());
        }
    }
}

/// One header field line, `name: value` and CRLF.
pub fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "not HTTP/1.x",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// `Content-Length` as one number, or a list of equal numbers (RFC 9110 section 8.6).
pub fn content_length_value(value: &[u8]) -> Result<u64, HeadError> {
    let bad = || HeadError::ContentLength(String::from_utf8_lossy(value).into_owned());
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(bad)?;
        if found.is_some_and(|m| m != n) {
            return Err(bad());
        }
        found = Some(n);
    }
    found.ok_or_else(bad)
}

/// Fields that describe one connection, not the message (RFC 9110 section 7.6.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// A request's fields as they go upstream: a map as it is, or a parsed head with its edits.
#[derive(Clone, Copy)]
pub enum RequestFields<'a> {
    Map(&'a HeaderMap),
    Raw(&'a RawRequest),
}

/// Writes a request head into `out` (cleared first): the request line, every
/// field, a `Host` from `host` when the fields have none, and the framing
/// field when `add_length` says the fields do not carry one.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    fields: RequestFields<'_>,
    host: &str,
    framing: RequestFraming,
    add_length: bool,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match fields {
        RequestFields::Map(headers) => {
            if !headers.contains_key(header::HOST) {
                field_line(out, b"host", host.as_bytes());
            }
            for (name, value) in headers {
                field_line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        RequestFields::Raw(raw) => raw.write_fields(out, Some(host)),
    }
    match framing {
        RequestFraming::Length(n) if add_length => {
            out.extend_from_slice(b"content-length: ");
            let mut digits = [0u8; 20];
            out.extend_from_slice(decimal(n, &mut digits));
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without allocating.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// `n` in hexadecimal, for chunk-size lines.
pub fn hex(mut n: u64, digits: &mut [u8; 16]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            return &digits[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8], method: Method) -> Result<Parsed, HeadError> {
        let mut buf = BytesMut::from(wire);
        parse_response(&mut buf, &method)
    }

    fn head(wire: &[u8]) -> ResponseHead {
        match parse(wire, Method::GET) {
            Ok(Parsed::Head(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_and_reuse_follow_the_response_fields() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\nok");
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.fields.to_header_map()["content-length"], "2");
        assert_eq!(h.fields.to_header_map()["server"], "x");

        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        assert!(!h.fields.to_header_map().contains_key("transfer-encoding"));

        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);

        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive, "both framings: never reuse");

        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);

        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        assert!(!h.fields.to_header_map().contains_key("connection"));

        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "1.0 closes by default");
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);

        let h = head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = head(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        match parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            Method::HEAD,
        ) {
            Ok(Parsed::Head(h)) => {
                assert_eq!(h.framing, Framing::Empty);
                assert_eq!(h.fields.to_header_map()["content-length"], "5");
            }
            other => panic!("{other:?}"),
        }
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
        );
        let map = h.fields.to_header_map();
        let mut names: Vec<_> = map.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "x-kept"]);
        assert!(h.keep_alive);
    }

    #[test]
    fn fields_pass_on_verbatim_without_hop_by_hop_lines() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nDate: d\r\nX-A:  spaced  \r\n\r\nok",
        );
        let lines: Vec<u8> = h
            .fields
            .verbatim()
            .expect("verbatim")
            .flatten()
            .copied()
            .collect();
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "Server: x\r\nContent-Length: 2\r\nDate: d\r\nX-A:  spaced  \r\n"
        );
        assert_eq!(h.fields.content_length, Some(2));
        assert!(h.fields.has_date);
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.fields.has_date);

        // Bare LF line ends, names the Connection field lists, and both framings: a map instead.
        for wire in [
            &b"HTTP/1.1 200 OK\nServer: x\nContent-Length: 0\n\n"[..],
            b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: X-Hop\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        ] {
            let h = head(wire);
            assert!(
                h.fields.verbatim().is_none(),
                "{}",
                String::from_utf8_lossy(wire)
            );
            let map = h.fields.to_header_map();
            assert!(!map.contains_key("x-hop") && !map.contains_key("connection"));
            assert!(!map.contains_key("transfer-encoding"));
        }
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n");
        assert!(
            !h.fields.to_header_map().contains_key("content-length"),
            "the length would lie"
        );
        assert_eq!(h.fields.content_length, None);

        // More cuts than stretches kept: a map.
        let many: String = (0..10)
            .map(|i| format!("X-{i}: 1\r\nKeep-Alive: 1\r\n"))
            .collect();
        let h = head(format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").as_bytes());
        assert!(h.fields.verbatim().is_none());
        assert_eq!(h.fields.to_header_map().len(), 11);
    }

    #[test]
    fn interim_responses_are_skipped_and_101_is_refused() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        );
        assert!(matches!(
            parse_response(&mut buf, &Method::POST),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_response(&mut buf, &Method::POST),
            Ok(Parsed::Head(h)) if h.status == 200
        ));
        assert!(buf.is_empty());
        assert_eq!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).expect_err("101"),
            HeadError::Switched
        );
    }

    #[test]
    fn partial_heads_wait_and_every_prefix_is_partial() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n";
        for cut in 0..wire.len() {
            assert!(
                matches!(parse(&wire[..cut], Method::GET), Ok(Parsed::Partial)),
                "prefix of {cut} bytes"
            );
        }
        assert!(matches!(parse(wire, Method::GET), Ok(Parsed::Head(_))));
    }

    #[test]
    fn bad_heads_are_clear_errors() {
        for (wire, want) in [
            (&b"garbage\r\n\r\n"[..], "malformed response head"),
            (b"HTTP/2 200 OK\r\n\r\n", "malformed response head"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                "malformed response head",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid Content-Length",
            ),
        ] {
            let e = parse(wire, Method::GET).expect_err(&String::from_utf8_lossy(wire));
            assert!(e.to_string().contains(want), "{e}");
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, Method::GET).expect_err("many"),
            HeadError::TooManyFields
        );
        let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(
            parse(&big, Method::GET).expect_err("big"),
            HeadError::TooLarge
        );
    }

    /// A request head as our server parses it, kept raw.
    fn raw_request(wire: &[u8]) -> RawRequest {
        let mut parsed = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut parsed);
        assert!(request.parse(wire).expect("parses").is_complete());
        let base = wire.as_ptr() as usize;
        let spans: Vec<[u32; 4]> = request
            .headers
            .iter()
            .map(|f| field_span(base, f))
            .collect();
        RawRequest::new(Bytes::copy_from_slice(wire), &spans, None, false)
    }

    #[test]
    fn raw_requests_go_as_they_came_less_hop_by_hop_fields_and_with_the_edits() {
        let mut raw = raw_request(
            b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.7\r\n\
              Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nExpect: 100-continue\r\n\
              X-Case: MiXed\r\nTE: trailers\r\nX-Forwarded-Proto: https\r\n\r\n",
        );
        assert_eq!(raw.get(b"x-case"), Some(&b"MiXed"[..]));
        assert_eq!(raw.value(b"host").expect("host"), "shop.example");
        assert!(raw.has(b"keep-alive") && !raw.has(b"x-missing"));
        // Unedited: only hop-by-hop fields and Expect go; no default Host when there is one.
        let mut out = Vec::new();
        raw.write_fields(&mut out, Some("up:80"));
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "Host: shop.example\r\nX-Forwarded-For: 203.0.113.7\r\nX-Case: MiXed\r\n\
             X-Forwarded-Proto: https\r\n"
        );
        // Edited: replaced fields go, the edits come last, a present proto is kept.
        raw.edits = RequestEdits {
            forwarded_for: Some(HeaderValue::from_static("203.0.113.7, 127.0.0.1")),
            forwarded_proto: Some(HeaderValue::from_static("http")),
            forwarded: Some(HeaderValue::from_static("for=127.0.0.1")),
            host: Some(HeaderValue::from_static("up:80")),
        };
        let mut out = Vec::new();
        raw.write_fields(&mut out, Some("never"));
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "X-Case: MiXed\r\nX-Forwarded-Proto: https\r\nhost: up:80\r\n\
             x-forwarded-for: 203.0.113.7, 127.0.0.1\r\nforwarded: for=127.0.0.1\r\n"
        );
        let map = raw.forwarded_map();
        assert_eq!(map.len(), 5);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert!(!map.contains_key("connection") && !map.contains_key("expect"));
        // The map for features that need one keeps everything but Expect.
        let all = raw.to_header_map();
        assert_eq!(all.len(), 7);
        assert!(all.contains_key("keep-alive") && !all.contains_key("expect"));
        // No Host at all: the upstream's authority.
        let bare = raw_request(b"GET / HTTP/1.0\r\nX-A: 1\r\n\r\n");
        let mut out = Vec::new();
        bare.write_fields(&mut out, Some("up:80"));
        assert_eq!(out, b"X-A: 1\r\nhost: up:80\r\n");
    }

    #[test]
    fn request_heads_carry_host_and_framing() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_request(
            &mut out,
            &Method::POST,
            "/p?q=1",
            RequestFields::Map(&h),
            "up:80",
            RequestFraming::Length(1234),
            true,
        );
        assert_eq!(
            out,
            b"POST /p?q=1 HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\ncontent-length: 1234\r\n\r\n"
        );
        h.insert("host", HeaderValue::from_static("shop.example"));
        encode_request(
            &mut out,
            &Method::PUT,
            "/",
            RequestFields::Map(&h),
            "up:80",
            RequestFraming::Chunked,
            true,
        );
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert!(text.starts_with("PUT / HTTP/1.1\r\n"));
        assert!(text.contains("host: shop.example\r\n") && !text.contains("up:80"));
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"));
        let mut d = [0; 16];
        assert_eq!(hex(0, &mut d), b"0");
        assert_eq!(hex(0x1a2b, &mut d), b"1a2b");
        let mut d = [0; 20];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(u64::MAX, &mut d), b"18446744073709551615");
    }
}
