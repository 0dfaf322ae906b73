//! The response body of an HTTP/1.1 upstream, read from the connection itself
//! by whoever polls it (hyper's server, on the request's own task).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::UpstreamError;
use super::conn::{Conn, Idle};
use super::decode::{BodyStep, Decoder, poll_body};

pub struct H1Body {
    conn: Option<Conn>,
    decoder: Decoder,
    /// Where the connection goes when the body is done; None when it cannot be reused.
    idle: Option<Arc<Idle>>,
}

impl H1Body {
    pub(super) fn new(conn: Conn, decoder: Decoder, idle: Option<Arc<Idle>>) -> H1Body {
        H1Body {
            conn: Some(conn),
            decoder,
            idle,
        }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            release(conn, self.idle.as_deref());
        }
    }
}

/// Returns a connection whose response was read to its end, unless it cannot
/// carry another exchange (the server said close, or sent bytes past the body).
pub(super) fn release(conn: Conn, idle: Option<&Idle>) {
    if let Some(idle) = idle
        && conn.rbuf.is_empty()
    {
        idle.put(conn);
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        Poll::Ready(match ready!(poll_body(&mut this.decoder, conn, cx)) {
            BodyStep::Frame(frame) => {
                if this.decoder.is_done() {
                    // The last piece: the connection is free before the caller asks again.
                    this.release();
                }
                Some(Ok(frame))
            }
            BodyStep::End => {
                this.release();
                None
            }
            BodyStep::Read(e) => {
                this.conn = None;
                Some(Err(UpstreamError::Read(e)))
            }
            BodyStep::Framing(e) => {
                this.conn = None;
                Some(Err(UpstreamError::Framing(e)))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
