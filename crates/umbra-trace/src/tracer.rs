//! The tracer: the head sampler, the tail rules, exemplars and the export
//! queue behind one cheaply cloned handle.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::{LinkTemplate, TraceConfig};
use crate::context::TraceContext;
use crate::encode::Kept;
use crate::exemplar::{Exemplar, Exemplars};
use crate::export::{Counters, Exporter, Queued, StartError};
use crate::id::{SpanId, TraceId};
use crate::sampler::Sampler;
use crate::span::SpanRecord;

/// A handle on tracing; clones share one queue and one export thread. A
/// disabled tracer (no configuration, or turned off) does nothing at all.
#[derive(Clone)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sampler: Sampler,
    slow: Option<Duration>,
    keep_errors: bool,
    link: Option<LinkTemplate>,
    exemplars: Exemplars,
    counters: Arc<Counters>,
    exporter: Exporter,
}

/// Counts since start. `recorded = discarded + queued + dropped_queue_full`;
/// every queued span ends up in `exported`, `rejected` or `failed` (or is
/// still waiting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans handed to [`Tracer::record`].
    pub recorded: u64,
    /// Neither sampled nor kept by a tail rule.
    pub discarded: u64,
    pub queued: u64,
    /// Dropped because the export queue was full (a slow or down collector).
    pub dropped_queue_full: u64,
    /// Accepted by the collector.
    pub exported: u64,
    /// Refused by the collector in a partial success.
    pub rejected: u64,
    /// In export requests that failed (connection, timeout, HTTP error).
    pub failed: u64,
    pub requests: u64,
    pub failed_requests: u64,
}

impl TraceStats {
    /// Spans that were to be exported and were not.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.rejected + self.failed
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Tracer(disabled)"),
            Some(i) => write!(f, "Tracer({})", i.sampler),
        }
    }
}

impl Tracer {
    pub fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// Starts the export thread; a disabled configuration gives a disabled
    /// tracer.
    pub fn new(cfg: &TraceConfig) -> Result<Tracer, StartError> {
        if !cfg.enabled {
            return Ok(Tracer::disabled());
        }
        let counters = Arc::new(Counters::default());
        let exporter = Exporter::start(cfg, counters.clone())?;
        Ok(Tracer {
            inner: Some(Arc::new(Inner {
                sampler: cfg.sampler,
                slow: cfg.slow,
                keep_errors: cfg.keep_errors,
                link: cfg.link_template.clone(),
                exemplars: Exemplars::new(cfg.exemplars),
                counters,
                exporter,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The context of our span for a request whose headers carried `parent`
    /// (from [`TraceContext::from_headers`]): a child of it, or a new root,
    /// with the head sampling decision in its sampled flag. `None` when
    /// tracing is off: then the proxy should pass the caller's headers on
    /// untouched rather than name a span that is never exported as parent.
    pub fn start(&self, parent: Option<&TraceContext>) -> Option<TraceContext> {
        let inner = self.inner.as_ref()?;
        Some(match parent {
            Some(p) => {
                let mut c = p.child();
                c.flags = c
                    .flags
                    .with_sampled(inner.sampler.decide(Some(p), p.trace_id));
                c.deferred = false;
                c
            }
            None => {
                let mut c = TraceContext::root(false);
                c.flags = c.flags.with_sampled(inner.sampler.decide(None, c.trace_id));
                c
            }
        })
    }

    /// Whether the head decision exports `ctx`'s span: tracing is on and the
    /// context is sampled.
    pub fn sampled(&self, ctx: &TraceContext) -> bool {
        self.inner.is_some() && ctx.is_sampled()
    }

    /// Whether a span with these measurements would be exported: sampled, or
    /// kept by a tail rule (at least `slow`, or failed). The proxy can ask
    /// this before building a [`SpanRecord`] at all.
    pub fn keeps(
        &self,
        sampled: bool,
        duration: Duration,
        http_status: Option<u16>,
        error: bool,
    ) -> bool {
        self.keep_reason(sampled, duration, http_status, error)
            .is_some()
    }

    /// Why a span with these measurements would be exported on its own
    /// ([`Tracer::keeps`] with the reason); `None` when it would not be, or
    /// when tracing is off.
    pub fn keep_reason(
        &self,
        sampled: bool,
        duration: Duration,
        http_status: Option<u16>,
        error: bool,
    ) -> Option<Kept> {
        self.inner.as_ref().and_then(|i| {
            i.kept(
                sampled,
                duration,
                http_status.is_some_and(|s| s >= 500) || error,
            )
        })
    }

    /// Whether a tail rule (slow or failed) can keep a span the head sampler
    /// did not: without one, an unsampled span is never exported, alone or
    /// for a twin.
    pub fn has_tail_rules(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.slow.is_some() || i.keep_errors)
    }

    /// Hands a finished span to the exporter if sampling or a tail rule
    /// keeps it. Never blocks and never fails: a full queue drops the span
    /// and counts it. A slow span with a profile and a role becomes that
    /// pair's newest exemplar.
    pub fn record(&self, span: SpanRecord) {
        let Some(inner) = &self.inner else { return };
        inner.counters.recorded.fetch_add(1, Ordering::Relaxed);
        let Some(kept) = inner.kept(span.flags.sampled(), span.duration, span.failed()) else {
            inner.counters.discarded.fetch_add(1, Ordering::Relaxed);
            return;
        };
        inner.enqueue(span, kept);
    }

    /// Spans that belong together (a live span and its shadow copies): all
    /// are exported if any one is kept, so a slow shadow arrives with the
    /// live twin it is to be compared with.
    pub fn record_linked(&self, spans: Vec<SpanRecord>) {
        let Some(inner) = &self.inner else { return };
        inner
            .counters
            .recorded
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        let kept = spans
            .iter()
            .filter_map(|s| inner.kept(s.flags.sampled(), s.duration, s.failed()))
            .max();
        let Some(kept) = kept else {
            inner
                .counters
                .discarded
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
            return;
        };
        for s in spans {
            inner.enqueue(s, kept);
        }
    }

    /// The rest of [`Tracer::record_linked`]'s group, when its spans finish
    /// apart: `span` belongs with a span that was already kept for `twin`
    /// (its reason), so it is exported whatever its own sampling says, under
    /// the stronger of its own reason and the twin's, as `record_linked`
    /// would have exported the two together.
    pub fn record_for_twin(&self, span: SpanRecord, twin: Kept) {
        let Some(inner) = &self.inner else { return };
        inner.counters.recorded.fetch_add(1, Ordering::Relaxed);
        let own = inner.kept(span.flags.sampled(), span.duration, span.failed());
        inner.enqueue(span, own.max(Some(twin)).unwrap_or(twin));
    }

    /// The trace viewer URL for a trace, when a template is configured.
    pub fn trace_url(&self, trace_id: TraceId, span_id: Option<SpanId>) -> Option<String> {
        self.inner
            .as_ref()?
            .link
            .as_ref()
            .map(|t| t.render(trace_id, span_id))
    }

    /// Recent slow requests per (profile, role); `None` when tracing is off.
    pub fn exemplars(&self) -> Option<&Exemplars> {
        self.inner.as_ref().map(|i| &i.exemplars)
    }

    pub fn stats(&self) -> TraceStats {
        let Some(i) = &self.inner else {
            return TraceStats::default();
        };
        let c = &i.counters;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        TraceStats {
            recorded: l(&c.recorded),
            discarded: l(&c.discarded),
            queued: l(&c.queued),
            dropped_queue_full: l(&c.dropped_queue_full),
            exported: l(&c.exported),
            rejected: l(&c.rejected),
            failed: l(&c.failed),
            requests: l(&c.requests),
            failed_requests: l(&c.failed_requests),
        }
    }

    /// The last export failure, for a log line or the admin API.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .as_ref()?
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `timeout` for the spans recorded so far to be exported
    /// (or to fail). True if they were; always true when tracing is off.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|i| i.exporter.flush(timeout))
    }

    /// Flushes and stops the export thread; for the end of the process.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|i| i.exporter.shutdown(timeout))
    }
}

impl Inner {
    /// The reason to keep a span, if any: the tail rules first, as they say
    /// more about the span than the head decision does.
    fn kept(&self, sampled: bool, duration: Duration, failed: bool) -> Option<Kept> {
        if failed && self.keep_errors {
            Some(Kept::Error)
        } else if self.slow.is_some_and(|s| duration >= s) {
            Some(Kept::Slow)
        } else if sampled {
            Some(Kept::Sampled)
        } else {
            None
        }
    }

    fn enqueue(&self, span: SpanRecord, kept: Kept) {
        // Only a slow span becomes an exemplar, and only once it is queued
        // (an exemplar must point at a trace that will exist).
        let exemplar = match (&span.profile, &span.role) {
            (Some(p), Some(r)) if self.slow.is_some_and(|s| span.duration >= s) => Some((
                p.clone(),
                r.clone(),
                Exemplar {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    latency: span.duration,
                    at: span.end(),
                },
            )),
            _ => None,
        };
        if self.exporter.try_send(Queued { span, kept }) {
            self.counters.queued.fetch_add(1, Ordering::Relaxed);
            if let Some((p, r, e)) = exemplar {
                self.exemplars.observe(p.as_str(), r.as_str(), e);
            }
        } else {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
