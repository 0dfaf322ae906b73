//! Umbra's tracing: trace context in and out of requests, spans for the live
//! and shadow legs, head and tail sampling, and OTLP/HTTP export that never
//! touches the caller.
//!
//! How the proxy uses it, per request:
//!
//! ```
//! # use std::time::{Duration, SystemTime};
//! # use http::HeaderMap;
//! # use umbra_trace::{SpanKind, SpanRecord, TraceConfig, TraceContext, Tracer};
//! # let tracer = Tracer::disabled();
//! # let mut headers = HeaderMap::new();
//! let incoming = TraceContext::from_headers(&headers); // W3C, then B3
//! if let Some(live) = tracer.start(incoming.as_ref()) {
//!     live.inject(&mut headers); // production sees our span as its parent
//!     let shadow = live.linked_root(); // the copy's own trace
//!     // ... later, off the hot path, when the exchanges are measured:
//!     let mut span = SpanRecord::new(&live, "live GET /orders/{id}", SpanKind::Client, SystemTime::now());
//!     span.duration = Duration::from_millis(12);
//!     span.http_status = Some(200);
//!     tracer.record(span);
//!     let mut copy = SpanRecord::new(&shadow, "shadow GET /orders/{id}", SpanKind::Client, SystemTime::now());
//!     copy.link_live(&live);
//!     tracer.record(copy);
//! }
//! ```
//!
//! Why not the OpenTelemetry SDK (`opentelemetry` + `opentelemetry-otlp`):
//! the SDK decides sampling when a span starts and then records through a
//! `Span` object behind locks; Umbra needs tail rules on measurements it only
//! has at the end (latency, status), and a hot path that costs a few atomic
//! operations at 20k+ requests a second. So spans here are plain values made
//! after the fact, and the crate encodes them with the OTLP message types of
//! `opentelemetry-proto` (prost, no tonic) and posts them itself.

#![forbid(unsafe_code)]

pub mod config;
pub mod context;
mod encode;
pub mod exemplar;
mod export;
pub mod id;
pub mod sampler;
pub mod span;
mod tracer;

pub use config::{Compression, ConfigError, LinkTemplate, Origin, TraceConfig, TraceFileConfig};
pub use context::{B3Error, Format, ParseError, TraceContext, TraceFlags, parse_traceparent};
pub use encode::Kept;
pub use exemplar::{Exemplar, ExemplarSeries, Exemplars};
pub use export::StartError;
pub use id::{IdError, SpanId, TraceId};
pub use sampler::{RootSampler, Sampler, SamplerError};
pub use span::{Attribute, SpanKind, SpanLink, SpanRecord, SpanStatus, Str, Value, keys};
pub use tracer::{TraceStats, Tracer};
