//! The bodies on the live path.
//!
//! [`RequestBody`] streams the client's body to production unchanged while it
//! (1) cuts a client that goes silent for longer than the body timeout, (2)
//! counts bytes, and (3) when the request is mirrored, keeps the chunks it has
//! already passed on (`Bytes` clones: reference counts, no copies) until the body
//! ends, then hands them to the shadow queue. A body over `max_body` stops
//! being kept and is not mirrored.
//!
//! [`ResponseBody`] streams production's response back and records the exchange
//! when the body ends, fails or is dropped by a client that went away.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::Shared;
use crate::h1::H1RequestBody;
use crate::pool::Lease;
use crate::record::Exchange;
use crate::shadow::{CopyDraft, NotMirrored};
use crate::upstream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the client sent no body data for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A client's request body, from whichever server read the request.
pub enum ClientBody {
    Empty,
    /// h2, from hyper's server.
    Hyper(Incoming),
    /// HTTP/1.1, from ours.
    H1(H1RequestBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
        }
    }
}

pub struct RequestBody {
    /// None: an empty body (a retried request that had none).
    inner: Option<ClientBody>,
    timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    /// Bytes passed on so far; None for a body that was empty from the start.
    tally: Option<Arc<AtomicU64>>,
    /// Boxed: a draft copy is large, and a request (with its body) is moved
    /// several times on its way to production; most requests are not copied.
    tee: Option<Box<Tee>>,
}

struct Tee {
    chunks: Vec<Bytes>,
    size: u64,
    max: u64,
    draft: Option<CopyDraft>,
}

impl RequestBody {
    pub fn new(
        inner: ClientBody,
        timeout: Duration,
        tally: Option<Arc<AtomicU64>>,
        copy: Option<(CopyDraft, u64)>,
    ) -> Self {
        RequestBody {
            inner: Some(inner),
            timeout,
            idle: None,
            tally,
            tee: copy.map(|(draft, max)| {
                Box::new(Tee {
                    chunks: Vec::new(),
                    size: 0,
                    max,
                    draft: Some(draft),
                })
            }),
        }
    }
}

/// An empty body: what a request without one is replayed with.
impl Default for RequestBody {
    fn default() -> Self {
        RequestBody {
            inner: None,
            timeout: Duration::ZERO,
            idle: None,
            tally: None,
            tee: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                if let Some(tee) = &mut this.tee {
                    tee.abandon(NotMirrored::Incomplete);
                }
                Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut this.idle {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + this.timeout);
                }
                if let Some(data) = frame.data_ref() {
                    if let Some(t) = &this.tally {
                        t.fetch_add(data.len() as u64, Relaxed);
                    }
                    if let Some(tee) = &mut this.tee {
                        tee.keep(data);
                    }
                }
                if inner.is_end_stream()
                    && let Some(tee) = &mut this.tee
                {
                    tee.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(tee) = &mut this.tee {
                    tee.abandon(NotMirrored::Incomplete);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(tee) = &mut this.tee {
                    tee.finish();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(ClientBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(ClientBody::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Tee {
    fn keep(&mut self, data: &Bytes) {
        if self.draft.is_none() {
            return;
        }
        self.size += data.len() as u64;
        if self.size > self.max {
            self.chunks = Vec::new();
            self.abandon(NotMirrored::TooLarge);
            return;
        }
        self.chunks.push(data.clone());
    }

    fn finish(&mut self) {
        if let Some(draft) = self.draft.take() {
            draft.send(std::mem::take(&mut self.chunks));
        }
    }

    fn abandon(&mut self, why: NotMirrored) {
        if let Some(draft) = self.draft.take() {
            draft.abandon(why);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // The body was dropped before it ended: the client went away, or production
        // answered without reading it all. Either way the copy would be partial.
        self.abandon(NotMirrored::Incomplete);
    }
}

/// What is needed to record a live exchange once its response body is done.
pub struct LiveFinish {
    pub exchange: Exchange,
    /// The request's own handle on the proxy, moved here (not a clone of the
    /// recorder: that is five reference counts up and down per request).
    pub shared: Arc<Shared>,
    pub started: Instant,
    /// When the body was all there already (it came with the head): the
    /// exchange ends then, and needs no clock read of its own.
    pub complete_at: Option<Instant>,
    pub request_tally: Option<Arc<AtomicU64>>,
    pub lease: Option<Lease>,
}

impl LiveFinish {
    pub fn finish(mut self, response_bytes: u64, error: Option<&'static str>) {
        self.exchange.duration = match self.complete_at {
            Some(at) => at.saturating_duration_since(self.started),
            None => self.started.elapsed(),
        };
        self.exchange.response_bytes = response_bytes;
        self.exchange.request_bytes = self.request_tally.as_ref().map_or(0, |t| t.load(Relaxed));
        if error.is_some() && self.exchange.error.is_none() {
            self.exchange.error = error;
        }
        drop(self.lease.take());
        self.shared.recorder.record(self.exchange);
    }
}

// The upstream variant is the common one; boxing it would cost an allocation per
// response to save a few bytes on the rare local answers.
#[allow(clippy::large_enum_variant)]
pub enum ResponseBody {
    Upstream {
        inner: upstream::Body,
        bytes: u64,
        finish: Option<LiveFinish>,
    },
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub fn upstream(inner: upstream::Body, finish: LiveFinish) -> Self {
        ResponseBody::Upstream {
            inner,
            bytes: 0,
            finish: Some(finish),
        }
    }

    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Some(text.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Upstream {
                inner,
                bytes,
                finish,
            } => {
                let polled = ready!(Pin::new(&mut *inner).poll_frame(cx));
                match polled {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            *bytes += d.len() as u64;
                        }
                        if inner.is_end_stream()
                            && let Some(f) = finish.take()
                        {
                            f.finish(*bytes, None);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        if let Some(f) = finish.take() {
                            f.finish(*bytes, Some("upstream body error"));
                        }
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        if let Some(f) = finish.take() {
                            f.finish(*bytes, None);
                        }
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(d) => d.is_none(),
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ResponseBody::Local(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Upstream {
            bytes,
            finish,
            inner,
        } = self
            && let Some(f) = finish.take()
        {
            // An empty body ends without a frame: that is a finished response, not an abort.
            let error = (!inner.is_end_stream()).then_some("client went away");
            f.finish(*bytes, error);
        }
    }
}
