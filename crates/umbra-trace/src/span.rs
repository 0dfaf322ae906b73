//! A finished span as a plain value: what the proxy measured, ready to be
//! judged by the tail rules and encoded by the exporter.
//!
//! Strings are [`Str`], which holds a `&'static str`, an `Arc<str>` or a
//! `String`: route, profile and upstream names are shared `Arc<str>` in the
//! proxy, so putting them on a span is a reference count, not a copy.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::context::{TraceContext, TraceFlags};
use crate::id::{SpanId, TraceId};

/// Attribute keys. OpenTelemetry's HTTP semantic conventions where one fits,
/// `umbra.*` for the rest.
pub mod keys {
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const URL_PATH: &str = "url.path";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const REQUEST_BODY_SIZE: &str = "http.request.body.size";
    pub const RESPONSE_BODY_SIZE: &str = "http.response.body.size";
    pub const ERROR_TYPE: &str = "error.type";
    pub const PROFILE: &str = "umbra.profile";
    /// `live`, `shadow` or `canary`.
    pub const ROLE: &str = "umbra.role";
    pub const UPSTREAM: &str = "umbra.upstream";
    /// Time a shadow copy waited in its queue before it was sent, in µs.
    pub const QUEUE_WAIT_US: &str = "umbra.queue_wait_us";
    /// Values masked in a copy, all rules together. Counts only: a masked
    /// value never reaches a span.
    pub const MASKED: &str = "umbra.mask.masked";
    /// Prefix of per-rule mask counts: `umbra.mask.rule.<rule name>`.
    pub const MASK_RULE_PREFIX: &str = "umbra.mask.rule.";
    /// Why a copy was not sent (fail-closed masking).
    pub const MASK_DROPPED: &str = "umbra.mask.dropped";
    /// On a shadow span's link: the linked span is the live twin.
    pub const LINK_ROLE: &str = "umbra.link";
    /// On a shadow span: its live twin's trace id, searchable as a tag.
    pub const LIVE_TRACE_ID: &str = "umbra.live.trace_id";
    /// Why the span was kept: `sampled`, `slow` or `error`.
    pub const KEPT: &str = "umbra.kept";
}

/// A string that is cheap to put on a span.
#[derive(Clone, PartialEq, Eq)]
pub enum Str {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl Str {
    pub fn as_str(&self) -> &str {
        match self {
            Str::Static(s) => s,
            Str::Shared(s) => s,
            Str::Owned(s) => s,
        }
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Str {
    fn from(s: &'static str) -> Str {
        Str::Static(s)
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Str {
        Str::Shared(s)
    }
}

impl From<&Arc<str>> for Str {
    fn from(s: &Arc<str>) -> Str {
        Str::Shared(s.clone())
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str::Owned(s)
    }
}

impl From<Cow<'static, str>> for Str {
    fn from(s: Cow<'static, str>) -> Str {
        match s {
            Cow::Borrowed(b) => Str::Static(b),
            Cow::Owned(o) => Str::Owned(o),
        }
    }
}

/// An attribute value (the OTLP kinds a proxy needs).
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    Str(Str),
    I64(i64),
    F64(f64),
    Bool(bool),
}

macro_rules! value_from {
    ($($t:ty => $v:ident as $as:ty),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x as $as)
            }
        }
    )*};
}
value_from!(i64 => I64 as i64, i32 => I64 as i64, u32 => I64 as i64, u16 => I64 as i64, f64 => F64 as f64);

impl From<u64> for Value {
    fn from(x: u64) -> Value {
        Value::I64(i64::try_from(x).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(x: usize) -> Value {
        Value::I64(i64::try_from(x).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(x: bool) -> Value {
        Value::Bool(x)
    }
}

impl<T: Into<Str>> From<T> for Value {
    fn from(x: T) -> Value {
        Value::Str(x.into())
    }
}

#[derive(Clone, PartialEq, Debug)]
pub struct Attribute {
    pub key: Str,
    pub value: Value,
}

/// OTLP span kinds. The proxy's legs are `Client` spans (it calls
/// production and the shadows); a proxy that also records its server side
/// would use `Server`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// The span's outcome. HTTP semantic conventions: a client span is an error
/// for a 4xx or 5xx or a transport failure; the message names the cause.
#[derive(Clone, PartialEq, Debug, Default)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error(Str),
}

/// A link to another span (a shadow span's link to its live twin).
#[derive(Clone, PartialEq, Debug)]
pub struct SpanLink {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
    /// The linked span is in another process.
    pub remote: bool,
    pub attributes: Vec<Attribute>,
}

impl SpanLink {
    pub fn to(ctx: &TraceContext) -> SpanLink {
        SpanLink {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            flags: ctx.flags,
            remote: ctx.remote,
            attributes: Vec::new(),
        }
    }
}

/// A finished span.
#[derive(Clone, PartialEq, Debug)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    /// The parent is in another process (it came in a request header).
    pub parent_remote: bool,
    /// The head sampling decision is the sampled bit.
    pub flags: TraceFlags,
    pub trace_state: Option<Str>,
    pub name: Str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    pub status: SpanStatus,
    /// The response status, if there was a response: the tail rule for
    /// failures reads it, and it is exported as `http.response.status_code`.
    pub http_status: Option<u16>,
    /// Exemplars are kept per (profile, role); both are also exported as
    /// `umbra.profile` and `umbra.role`.
    pub profile: Option<Str>,
    pub role: Option<Str>,
    pub attributes: Vec<Attribute>,
    pub links: Vec<SpanLink>,
}

impl SpanRecord {
    /// A span for `ctx` (its span id, trace, parent and flags), started at
    /// `start`. A context that came from a header is the caller's, not ours:
    /// use [`TraceContext::child`] first.
    pub fn new(
        ctx: &TraceContext,
        name: impl Into<Str>,
        kind: SpanKind,
        start: SystemTime,
    ) -> SpanRecord {
        SpanRecord {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_id: ctx.parent_id,
            parent_remote: ctx.parent_remote,
            flags: ctx.flags,
            trace_state: ctx
                .state
                .as_ref()
                .and_then(|s| s.to_str().ok())
                .map(|s| Str::Owned(s.to_string())),
            name: name.into(),
            kind,
            start,
            duration: Duration::ZERO,
            status: SpanStatus::Unset,
            http_status: None,
            profile: None,
            role: None,
            attributes: Vec::with_capacity(8),
            links: Vec::new(),
        }
    }

    pub fn set(&mut self, key: impl Into<Str>, value: impl Into<Value>) -> &mut Self {
        self.attributes.push(Attribute {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a link to the live twin's span, tagged `umbra.link = live`, and
    /// the twin's trace id as `umbra.live.trace_id` (trace search by tag).
    pub fn link_live(&mut self, live: &TraceContext) -> &mut Self {
        let mut link = SpanLink::to(live);
        link.attributes.push(Attribute {
            key: keys::LINK_ROLE.into(),
            value: "live".into(),
        });
        self.links.push(link);
        self.set(keys::LIVE_TRACE_ID, Str::Owned(live.trace_id.to_string()))
    }

    /// Mask decisions as counts: the total and one count per rule that
    /// fired. Rule names only, never the values they masked.
    pub fn mask_counts<'a>(&mut self, per_rule: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut total = 0u64;
        for (rule, n) in per_rule {
            total += n;
            let mut key = String::with_capacity(keys::MASK_RULE_PREFIX.len() + rule.len());
            key.push_str(keys::MASK_RULE_PREFIX);
            key.push_str(rule);
            self.set(key, n);
        }
        self.set(keys::MASKED, total);
    }

    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }

    /// A failure for the tail rule: a 5xx, or an error status (transport
    /// failures, timeouts).
    pub fn failed(&self) -> bool {
        self.http_status.is_some_and(|s| s >= 500) || matches!(self.status, SpanStatus::Error(_))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mask_counts_are_counts_per_rule_and_a_total() {
        let ctx = TraceContext::root(true);
        let mut s = SpanRecord::new(&ctx, "shadow", SpanKind::Client, SystemTime::now());
        s.mask_counts([("email", 2), ("card", 1)]);
        let get = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key.as_str() == k)
                .map(|a| a.value.clone())
        };
        assert_eq!(get("umbra.mask.rule.email"), Some(Value::I64(2)));
        assert_eq!(get("umbra.mask.rule.card"), Some(Value::I64(1)));
        assert_eq!(get("umbra.mask.masked"), Some(Value::I64(3)));
    }

    #[test]
    fn failed_means_5xx_or_an_error_status() {
        let ctx = TraceContext::root(false);
        let mut s = SpanRecord::new(&ctx, "live", SpanKind::Client, SystemTime::now());
        s.http_status = Some(404);
        assert!(!s.failed());
        s.http_status = Some(503);
        assert!(s.failed());
        s.http_status = None;
        s.status = SpanStatus::Error("connect refused".into());
        assert!(s.failed());
    }
}
