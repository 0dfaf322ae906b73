//! Trace context in and out of HTTP headers: W3C `traceparent`/`tracestate`
//! first, then B3 (the single `b3` header, then the `X-B3-*` set).
//!
//! Parsing follows W3C Trace Context (Level 2, which keeps Level 1's format):
//! lowercase hex only, version `ff` refused, all-zero ids refused, version
//! `00` exactly 55 characters, a later version may be longer but only after a
//! `-`. An invalid `traceparent` is ignored (the W3C rule: the receiver starts
//! a new trace), and B3 is tried next. `tracestate` is carried opaquely and
//! only when `traceparent` was valid.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::id::{IdError, SpanId, TraceId, parse_hex, write_hex};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// W3C trace flags. Only the bits this version knows are ever sent on.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    pub const SAMPLED: u8 = 0x01;
    /// W3C Level 2: the rightmost 56 bits of the trace id are random.
    pub const RANDOM: u8 = 0x02;

    pub const fn new(bits: u8) -> TraceFlags {
        TraceFlags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }

    pub const fn random(self) -> bool {
        self.0 & Self::RANDOM != 0
    }

    pub const fn with_sampled(self, on: bool) -> TraceFlags {
        if on {
            TraceFlags(self.0 | Self::SAMPLED)
        } else {
            TraceFlags(self.0 & !Self::SAMPLED)
        }
    }

    /// The flags to send: unknown bits are cleared, as Level 1 requires of a
    /// participant that does not understand them.
    const fn known(self) -> u8 {
        self.0 & (Self::SAMPLED | Self::RANDOM)
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

/// The header format a context arrived in; `inject` answers in the same one
/// (and always in W3C as well).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// One position in a trace: the span that owns it, its parent, the flags.
///
/// A context read from headers is the *caller's* span (`remote` is true);
/// [`TraceContext::child`] makes the proxy's own span under it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub flags: TraceFlags,
    /// No sampling decision came with the context (B3 without a sampling
    /// state): the sampler decides as for a root.
    pub deferred: bool,
    /// Read from a request: this span is in another process.
    pub remote: bool,
    /// The parent is in another process (a child of a context read from a
    /// request).
    pub parent_remote: bool,
    /// `tracestate`, passed on untouched.
    pub state: Option<HeaderValue>,
    pub format: Format,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("version ff is forbidden")]
    VersionFf,
    #[error("the version is not two lowercase hex digits")]
    Version,
    #[error("{found} characters, expected 55 for version 00")]
    Length { found: usize },
    #[error("a field separator '-' is missing or misplaced")]
    Separator,
    #[error("trace id: {0}")]
    TraceId(IdError),
    #[error("parent id: {0}")]
    SpanId(IdError),
    #[error("the flags are not two lowercase hex digits")]
    Flags,
    #[error("the value is not ASCII")]
    NotAscii,
    #[error("more than one traceparent header")]
    Repeated,
}

/// Why a B3 header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum B3Error {
    #[error("trace id: {0}")]
    TraceId(IdError),
    #[error("span id: {0}")]
    SpanId(IdError),
    #[error("parent span id: {0}")]
    ParentSpanId(IdError),
    #[error("sampling state must be 0, 1 or d")]
    Sampling,
    #[error("expected trace-span[-sampling[-parent]]")]
    Shape,
    #[error("only a sampling state, no ids")]
    NoIds,
    #[error("the value is not ASCII")]
    NotAscii,
}

impl TraceContext {
    /// The caller's context from request headers: `traceparent` (with
    /// `tracestate`) if valid, else `b3`, else `X-B3-TraceId`/`X-B3-SpanId`.
    /// `None` when none is present and valid: start a root.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        Self::from_w3c(headers)
            .ok()
            .flatten()
            .or_else(|| Self::from_b3_single(headers).ok().flatten())
            .or_else(|| Self::from_b3_multi(headers).ok().flatten())
    }

    /// W3C only: `Ok(None)` when there is no `traceparent`.
    pub fn from_w3c(headers: &HeaderMap) -> Result<Option<TraceContext>, ParseError> {
        let mut all = headers.get_all(TRACEPARENT).iter();
        let Some(value) = all.next() else {
            return Ok(None);
        };
        if all.next().is_some() {
            return Err(ParseError::Repeated);
        }
        let (trace_id, span_id, flags) = parse_traceparent(value.as_bytes())?;
        Ok(Some(TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            flags,
            deferred: false,
            remote: true,
            parent_remote: false,
            state: tracestate(headers),
            format: Format::W3c,
        }))
    }

    /// The single `b3` header: `Ok(None)` when absent. A value with only a
    /// sampling state (`b3: 0`) carries no ids and is refused with
    /// [`B3Error::NoIds`].
    pub fn from_b3_single(headers: &HeaderMap) -> Result<Option<TraceContext>, B3Error> {
        let Some(value) = headers.get(B3) else {
            return Ok(None);
        };
        let s = value.to_str().map_err(|_| B3Error::NotAscii)?;
        let mut parts = s.split('-');
        let (Some(t), Some(sp)) = (parts.next(), parts.next()) else {
            return Err(if matches!(s, "0" | "1" | "d") {
                B3Error::NoIds
            } else {
                B3Error::Shape
            });
        };
        let sampling = parts.next();
        let parent = parts.next();
        if parts.next().is_some() {
            return Err(B3Error::Shape);
        }
        let trace_id = TraceId::from_hex(t).map_err(B3Error::TraceId)?;
        let span_id = SpanId::from_hex(sp).map_err(B3Error::SpanId)?;
        if let Some(p) = parent {
            SpanId::from_hex(p).map_err(B3Error::ParentSpanId)?;
        }
        let (sampled, deferred) = match sampling {
            None => (false, true),
            Some("1" | "d") => (true, false),
            Some("0") => (false, false),
            Some(_) => return Err(B3Error::Sampling),
        };
        Ok(Some(TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            flags: TraceFlags::default().with_sampled(sampled),
            deferred,
            remote: true,
            parent_remote: false,
            state: None,
            format: Format::B3Single,
        }))
    }

    /// The `X-B3-*` headers: `Ok(None)` when `X-B3-TraceId` is absent.
    pub fn from_b3_multi(headers: &HeaderMap) -> Result<Option<TraceContext>, B3Error> {
        let Some(t) = headers.get(B3_TRACE_ID) else {
            return Ok(None);
        };
        let t = t.to_str().map_err(|_| B3Error::NotAscii)?;
        let sp = headers
            .get(B3_SPAN_ID)
            .ok_or(B3Error::SpanId(IdError::Length {
                expected: 16,
                found: 0,
            }))?
            .to_str()
            .map_err(|_| B3Error::NotAscii)?;
        let trace_id = TraceId::from_hex(t).map_err(B3Error::TraceId)?;
        let span_id = SpanId::from_hex(sp).map_err(B3Error::SpanId)?;
        if let Some(p) = headers.get(B3_PARENT_SPAN_ID) {
            SpanId::from_hex(p.to_str().map_err(|_| B3Error::NotAscii)?)
                .map_err(B3Error::ParentSpanId)?;
        }
        // X-B3-Flags: 1 is debug, which implies sampled; older tracers sent
        // "true"/"false" for X-B3-Sampled.
        let debug = headers.get(B3_FLAGS).is_some_and(|v| v.as_bytes() == b"1");
        let sampled = match headers.get(B3_SAMPLED).map(HeaderValue::as_bytes) {
            None => None,
            Some(b"1" | b"true") => Some(true),
            Some(b"0" | b"false") => Some(false),
            Some(_) => return Err(B3Error::Sampling),
        };
        let (sampled, deferred) = match (debug, sampled) {
            (true, _) => (true, false),
            (false, Some(s)) => (s, false),
            (false, None) => (false, true),
        };
        Ok(Some(TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            flags: TraceFlags::default().with_sampled(sampled),
            deferred,
            remote: true,
            parent_remote: false,
            state: None,
            format: Format::B3Multi,
        }))
    }

    /// A new trace: random ids, the Level 2 random flag set.
    pub fn root(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_id: None,
            flags: TraceFlags::new(TraceFlags::RANDOM).with_sampled(sampled),
            deferred: false,
            remote: false,
            parent_remote: false,
            state: None,
            format: Format::W3c,
        }
    }

    /// A span under this one: same trace, fresh span id, this span as parent.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent_id: Some(self.span_id),
            flags: self.flags,
            deferred: self.deferred,
            remote: false,
            parent_remote: self.remote,
            state: self.state.clone(),
            format: self.format,
        }
    }

    /// A new trace for a shadow copy, to be linked to this (live) span: the
    /// shadow service's spans then form a trace of their own with the same
    /// shape as production's, which a trace viewer can compare side by side
    /// (Jaeger's trace comparison takes two trace ids), instead of doubling
    /// every service in the production trace. The sampled flag follows the
    /// live span's, so both legs are traced or neither.
    pub fn linked_root(&self) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_id: None,
            flags: TraceFlags::new(TraceFlags::RANDOM).with_sampled(self.flags.sampled()),
            deferred: false,
            remote: false,
            parent_remote: false,
            state: None,
            format: Format::W3c,
        }
    }

    pub fn is_sampled(&self) -> bool {
        self.flags.sampled()
    }

    /// `00-{trace}-{span}-{flags}` in a stack buffer.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(self.trace_id.to_u128(), &mut out[3..35]);
        write_hex(self.span_id.to_u64() as u128, &mut out[36..52]);
        write_hex(self.flags.known() as u128, &mut out[53..55]);
        out
    }

    pub fn traceparent(&self) -> HeaderValue {
        let b = self.traceparent_bytes();
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static("00-0-0-00"))
    }

    /// Writes this context as the parent for the next hop: `traceparent`
    /// (and `tracestate` when there is one) always, and B3 in whichever form
    /// the context came in or the headers already carry, so a service that
    /// speaks only B3 also sees this span as its parent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        match &self.state {
            Some(s) => {
                headers.insert(TRACESTATE, s.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
        if self.format == Format::B3Single || headers.contains_key(B3) {
            headers.insert(B3, self.b3_single());
        }
        if self.format == Format::B3Multi || headers.contains_key(B3_TRACE_ID) {
            let (trace, span) = self.b3_ids();
            headers.insert(B3_TRACE_ID, trace);
            headers.insert(B3_SPAN_ID, span);
            match self.parent_id {
                Some(p) => {
                    let mut b = [0u8; 16];
                    write_hex(p.to_u64() as u128, &mut b);
                    if let Ok(v) = HeaderValue::from_bytes(&b) {
                        headers.insert(B3_PARENT_SPAN_ID, v);
                    }
                }
                None => {
                    headers.remove(B3_PARENT_SPAN_ID);
                }
            }
            headers.insert(
                B3_SAMPLED,
                HeaderValue::from_static(if self.is_sampled() { "1" } else { "0" }),
            );
            headers.remove(B3_FLAGS);
        }
    }

    /// B3 trace id: 16 digits when the id fits 64 bits (so a 64-bit id
    /// received goes on as it came), else 32.
    fn b3_ids(&self) -> (HeaderValue, HeaderValue) {
        let t = self.trace_id.to_u128();
        let mut tb = [0u8; 32];
        let tn = if t >> 64 == 0 { 16 } else { 32 };
        write_hex(t, &mut tb[..tn]);
        let mut sb = [0u8; 16];
        write_hex(self.span_id.to_u64() as u128, &mut sb);
        let empty = HeaderValue::from_static("");
        (
            HeaderValue::from_bytes(&tb[..tn]).unwrap_or(empty.clone()),
            HeaderValue::from_bytes(&sb).unwrap_or(empty),
        )
    }

    fn b3_single(&self) -> HeaderValue {
        let (t, s) = self.b3_ids();
        let mut out = Vec::with_capacity(t.len() + s.len() + 4);
        out.extend_from_slice(t.as_bytes());
        out.push(b'-');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(if self.is_sampled() { b"-1" } else { b"-0" });
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
    }
}

/// Parses a `traceparent` value.
pub fn parse_traceparent(v: &[u8]) -> Result<(TraceId, SpanId, TraceFlags), ParseError> {
    if !v.is_ascii() {
        return Err(ParseError::NotAscii);
    }
    if v.len() < 55 {
        // A too-short value may still have a bad version; report that first.
        if v.len() >= 2 && v[..2] == *b"ff" {
            return Err(ParseError::VersionFf);
        }
        return Err(ParseError::Length { found: v.len() });
    }
    let version = parse_hex(&v[..2]).map_err(|_| ParseError::Version)?;
    if version == 0xff {
        return Err(ParseError::VersionFf);
    }
    if version == 0 && v.len() != 55 {
        return Err(ParseError::Length { found: v.len() });
    }
    // A later version may append fields, always after a dash.
    if v.len() > 55 && v[55] != b'-' {
        return Err(ParseError::Separator);
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(ParseError::Separator);
    }
    // Safe to slice as str: checked ASCII above.
    let s = std::str::from_utf8(v).map_err(|_| ParseError::NotAscii)?;
    let trace_id = TraceId::from_hex(&s[3..35]).map_err(ParseError::TraceId)?;
    let span_id = SpanId::from_hex(&s[36..52]).map_err(ParseError::SpanId)?;
    let flags = parse_hex(&v[53..55]).map_err(|_| ParseError::Flags)? as u8;
    Ok((trace_id, span_id, TraceFlags::new(flags)))
}

/// All `tracestate` headers joined by commas (W3C allows splitting it).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut all = headers.get_all(TRACESTATE).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(all) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn traceparent_parses_and_formats_back() {
        let (t, s, f) = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.sampled());
        let ctx = TraceContext::from_headers(&headers(&[("traceparent", VALID)])).unwrap();
        assert_eq!(ctx.format, Format::W3c);
        assert!(ctx.remote);
        assert_eq!(&ctx.traceparent_bytes()[..], VALID.as_bytes());
        let (_, _, f) =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!f.sampled());
    }

    #[test]
    fn invalid_traceparents_are_refused_with_the_reason() {
        let cases: &[(&str, ParseError)] = &[
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::VersionFf,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ParseError::TraceId(IdError::Zero),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ParseError::SpanId(IdError::Zero),
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ParseError::TraceId(IdError::Digit('B')),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                ParseError::SpanId(IdError::Digit('F')),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                ParseError::Flags,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::Version,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                ParseError::Length { found: 54 },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
                ParseError::Length { found: 56 },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                ParseError::Length { found: 56 },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b701-",
                ParseError::Separator,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::Separator,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                ParseError::Separator,
            ),
            ("", ParseError::Length { found: 0 }),
            ("ff", ParseError::VersionFf),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_traceparent(value.as_bytes()).map(|_| ()),
                Err(*want),
                "{value}"
            );
            // An invalid traceparent is ignored: no context.
            if let Ok(v) = HeaderValue::from_str(value) {
                let mut h = HeaderMap::new();
                h.insert(TRACEPARENT, v);
                assert!(TraceContext::from_headers(&h).is_none(), "{value}");
            }
        }
    }

    #[test]
    fn later_versions_may_carry_more_fields() {
        let (t, _, f) = parse_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-whatever-comes",
        )
        .unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(f.sampled() && f.random());
        // Exactly 55 is fine for a later version too.
        assert!(
            parse_traceparent(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
    }

    #[test]
    fn two_traceparent_headers_are_refused() {
        let h = headers(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert_eq!(TraceContext::from_w3c(&h), Err(ParseError::Repeated));
        assert!(TraceContext::from_headers(&h).is_none());
    }

    #[test]
    fn tracestate_is_kept_and_joined() {
        let h = headers(&[
            ("traceparent", VALID),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(
            ctx.state.as_ref().unwrap(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        let mut out = HeaderMap::new();
        ctx.child().inject(&mut out);
        assert_eq!(out["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    }

    #[test]
    fn child_keeps_the_trace_and_points_at_its_parent() {
        let parent = TraceContext::from_headers(&headers(&[("traceparent", VALID)])).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.parent_id, Some(parent.span_id));
        assert!(!child.remote);
        let mut h = HeaderMap::new();
        child.inject(&mut h);
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(
            tp,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", child.span_id)
        );
        // Round trip through the parser.
        let back = TraceContext::from_headers(&h).unwrap();
        assert_eq!(back.span_id, child.span_id);
    }

    #[test]
    fn unknown_flags_are_not_sent_on() {
        let parent = TraceContext::from_headers(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
        )]))
        .unwrap();
        let tp = parent.child().traceparent();
        assert!(tp.to_str().unwrap().ends_with("-03"), "{tp:?}");
    }

    #[test]
    fn linked_root_is_a_new_trace_with_the_same_decision() {
        let live = TraceContext::root(true);
        let shadow = live.linked_root();
        assert_ne!(shadow.trace_id, live.trace_id);
        assert_eq!(shadow.parent_id, None);
        assert!(shadow.is_sampled());
        assert!(!TraceContext::root(false).linked_root().is_sampled());
    }

    #[test]
    fn b3_single_is_understood() {
        let h = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(ctx.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(ctx.span_id.to_string(), "e457b5a2e4d86bd1");
        assert!(ctx.is_sampled() && !ctx.deferred);
        assert_eq!(ctx.format, Format::B3Single);

        let ctx =
            TraceContext::from_headers(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]))
                .unwrap();
        assert_eq!(ctx.trace_id.to_string(), "000000000000000064fe8b2a57d3eff7");
        assert!(ctx.is_sampled());
        let ctx =
            TraceContext::from_headers(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]))
                .unwrap();
        assert!(!ctx.is_sampled() && !ctx.deferred);
        let ctx =
            TraceContext::from_headers(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]))
                .unwrap();
        assert!(ctx.deferred);

        for (bad, err) in [
            ("0", B3Error::NoIds),
            ("64fe8b2a57d3eff7", B3Error::Shape),
            ("64fe8b2a57d3eff7-e457b5a2e4d86bd1-2", B3Error::Sampling),
            (
                "64FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
                B3Error::TraceId(IdError::Digit('F')),
            ),
            (
                "64fe8b2a57d3eff7-0000000000000000-1",
                B3Error::SpanId(IdError::Zero),
            ),
            (
                "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
                B3Error::ParentSpanId(IdError::Length {
                    expected: 16,
                    found: 15,
                }),
            ),
            ("a-b-c-d-e", B3Error::Shape),
        ] {
            let h = headers(&[("b3", bad)]);
            assert_eq!(TraceContext::from_b3_single(&h), Err(err), "{bad}");
            assert!(TraceContext::from_headers(&h).is_none(), "{bad}");
        }
    }

    #[test]
    fn b3_multi_is_understood() {
        let h = headers(&[
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
            ("X-B3-Sampled", "1"),
        ]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(ctx.format, Format::B3Multi);
        assert_eq!(ctx.span_id.to_string(), "e457b5a2e4d86bd1");
        assert!(ctx.is_sampled());

        let debug = headers(&[
            ("X-B3-TraceId", "64fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Flags", "1"),
        ]);
        assert!(TraceContext::from_headers(&debug).unwrap().is_sampled());
        let deferred = headers(&[
            ("X-B3-TraceId", "64fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ]);
        assert!(TraceContext::from_headers(&deferred).unwrap().deferred);
        let no_span = headers(&[("X-B3-TraceId", "64fe8b2a57d3eff7")]);
        assert!(matches!(
            TraceContext::from_b3_multi(&no_span),
            Err(B3Error::SpanId(_))
        ));
        let bad_sampled = headers(&[
            ("X-B3-TraceId", "64fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "yes"),
        ]);
        assert_eq!(
            TraceContext::from_b3_multi(&bad_sampled),
            Err(B3Error::Sampling)
        );
    }

    #[test]
    fn w3c_wins_over_b3_and_b3_backs_up_a_bad_traceparent() {
        let both = headers(&[
            ("traceparent", VALID),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        assert_eq!(
            TraceContext::from_headers(&both).unwrap().format,
            Format::W3c
        );
        let bad_w3c = headers(&[
            (
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        assert_eq!(
            TraceContext::from_headers(&bad_w3c).unwrap().format,
            Format::B3Single
        );
    }

    #[test]
    fn inject_answers_b3_in_the_form_it_came() {
        let h = headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let child = TraceContext::from_headers(&h).unwrap().child();
        let mut out = h.clone();
        child.inject(&mut out);
        assert_eq!(
            out["b3"].to_str().unwrap(),
            format!("64fe8b2a57d3eff7-{}-1", child.span_id)
        );
        assert!(out.contains_key("traceparent"));

        let h = headers(&[
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "0"),
            ("X-B3-Flags", "0"),
        ]);
        let child = TraceContext::from_headers(&h).unwrap().child();
        let mut out = h.clone();
        child.inject(&mut out);
        assert_eq!(out["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(
            out["x-b3-spanid"].to_str().unwrap(),
            child.span_id.to_string()
        );
        assert_eq!(out["x-b3-parentspanid"], "e457b5a2e4d86bd1");
        assert_eq!(out["x-b3-sampled"], "0");
        assert!(!out.contains_key("x-b3-flags"));
        assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));
    }
}
