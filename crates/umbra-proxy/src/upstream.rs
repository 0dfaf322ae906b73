//! The upstream client: our own HTTP/1.1 for `http://` upstreams, hyper for the rest.
//!
//! Why not hyper's client for plain HTTP/1.1: it splits each connection into a
//! driver task and a handle joined by channels, so every request crosses to
//! the connection's task and its response crosses back, two wake-ups and two
//! hand-offs that nginx's event loop never pays. Here the request's own task
//! checks a connection out of the upstream's idle pool, writes the head (one
//! write, with a small body when it is already there), streams a larger body,
//! parses the response head with `httparse`, and hands hyper's server a body
//! that reads from the connection itself. The connection goes back to the pool
//! when that body has been read to its end and the server allows reuse.
//!
//! `https://` upstreams still go through hyper (with rustls), as does
//! everything this client does not speak.

mod body;
mod conn;
mod decode;
mod head;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpStream;

pub use self::body::H1Body;
use self::conn::Conn;
pub use self::conn::{ConnectError, Idle};
pub use self::decode::{BodyStep, Decoded, Decoder, Framing, FramingError, Source, poll_body};
pub use self::head::{
    HeadError, RawFields, RawRequest, RequestEdits, Spans, content_length_value, field_line,
    field_span, is_hop_by_hop,
};
use self::head::{Parsed, RequestFields, RequestFraming};
use crate::body::BoxError;
use crate::config::UpstreamUrl;
use crate::forward::{HttpClient, upstream_uri};

/// A request body this small that is already there goes out with the head.
const COALESCE: usize = 16 << 10;

/// One upstream as the client sees it: where to connect and its idle connections.
pub struct Target {
    pub url: UpstreamUrl,
    /// `host:port`, with the scheme's port filled in.
    addr: Box<str>,
    pub idle: Arc<Idle>,
}

impl Target {
    pub fn new(url: &UpstreamUrl) -> Target {
        let host = url.0.host().unwrap_or_default();
        let port = url
            .0
            .port_u16()
            .unwrap_or(if url.is_https() { 443 } else { 80 });
        Target {
            url: url.clone(),
            addr: format!("{host}:{port}").into(),
            idle: Arc::new(Idle::default()),
        }
    }
}

/// Why an upstream exchange failed. Messages say what went wrong in words a
/// person can act on; the caller names the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(ConnectError),
    #[error("sending the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("the connection closed before any response")]
    Closed,
    #[error("the connection closed in the middle of the response head")]
    TruncatedHead,
    #[error("{0}")]
    Head(#[from] HeadError),
    #[error("response body: {0}")]
    Framing(#[from] FramingError),
    #[error("the client's request body failed: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body had {got} bytes where Content-Length said {expected}")]
    RequestLength { got: u64, expected: u64 },
    #[error("{0}")]
    Address(String),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{}", root_cause(.0))]
    Hyper(#[source] hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// No connection was made: nothing reached the upstream.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Hyper(e) => e.is_connect(),
            _ => false,
        }
    }
}

/// The innermost cause, which is the part a person can act on ("Connection refused").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A failed send, with the request when none of it was sent (so it can go elsewhere).
pub struct SendError<B> {
    pub error: UpstreamError,
    pub unsent: Option<Request<B>>,
}

/// A response body from any upstream.
pub enum Body {
    /// Read whole with the head (the connection is already back in its pool), or empty.
    Full(Option<Bytes>),
    H1(H1Body),
    Hyper(Incoming),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) => data.is_none(),
            Body::H1(b) => b.is_end_stream(),
            Body::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::H1(b) => b.size_hint(),
            Body::Hyper(b) => b.size_hint(),
        }
    }
}

/// A response's fields, from any upstream.
pub enum Fields {
    /// From hyper (https upstreams), or made here.
    Map(HeaderMap),
    /// From our HTTP/1.1 client: passed on as they came when the client speaks HTTP/1.1.
    Raw(RawFields),
}

impl Fields {
    pub fn into_map(self) -> HeaderMap {
        match self {
            Fields::Map(m) => m,
            Fields::Raw(r) => r.to_header_map(),
        }
    }
}

/// A response head and its body, from any upstream.
pub struct Reply {
    pub status: StatusCode,
    pub fields: Fields,
    pub body: Body,
}

impl Reply {
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.fields.into_map();
        response
    }
}

/// The client for one kind of request body.
pub struct Client<B> {
    connect_timeout: Duration,
    hyper: HttpClient<B>,
}

impl<B> Client<B>
where
    B: http_body::Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(connect_timeout: Duration, hyper: HttpClient<B>) -> Client<B> {
        Client {
            connect_timeout,
            hyper,
        }
    }

    /// Sends `request` (its URI's path and query; its headers as they are, or
    /// `raw`'s fields with their edits when given) to `to`, and returns the
    /// response as soon as its head has arrived. `now`: the caller's clock, read
    /// just before (the idle pool ages connections with it).
    pub async fn send(
        &self,
        to: &Target,
        request: Request<B>,
        raw: Option<&RawRequest>,
        now: Instant,
    ) -> Result<Reply, SendError<B>> {
        // Boxed: hyper's future is twice the size of ours, and every request's
        // future is moved whole into its caller's (a memcpy per request).
        if to.url.is_https() {
            return Box::pin(self.send_hyper(to, request, raw)).await;
        }
        self.send_h1(to, request, raw, now).await
    }

    async fn send_hyper(
        &self,
        to: &Target,
        request: Request<B>,
        raw: Option<&RawRequest>,
    ) -> Result<Reply, SendError<B>> {
        let (mut parts, body) = request.into_parts();
        if let Some(raw) = raw {
            parts.headers = raw.forwarded_map();
        }
        parts.uri = match upstream_uri(&to.url, &parts.uri) {
            Ok(u) => u,
            Err(e) => {
                return Err(SendError {
                    error: UpstreamError::Address(e),
                    unsent: None,
                });
            }
        };
        parts.version = Version::HTTP_11;
        // hyper consumes the request: keep what a retry elsewhere needs, when that is cheap to have.
        let replay = body.is_end_stream().then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        match self.hyper.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                Ok(Reply {
                    status: parts.status,
                    fields: Fields::Map(parts.headers),
                    body: Body::Hyper(body),
                })
            }
            Err(e) => {
                let unsent = match replay {
                    Some((method, uri, headers)) if e.is_connect() => {
                        let mut r = Request::new(B::default());
                        *r.method_mut() = method;
                        *r.uri_mut() = uri;
                        *r.headers_mut() = headers;
                        Some(r)
                    }
                    _ => None,
                };
                Err(SendError {
                    error: UpstreamError::Hyper(e),
                    unsent,
                })
            }
        }
    }

    async fn send_h1(
        &self,
        to: &Target,
        request: Request<B>,
        raw: Option<&RawRequest>,
        now: Instant,
    ) -> Result<Reply, SendError<B>> {
        let (parts, mut body) = request.into_parts();
        let (fields, content_length) = match raw {
            Some(raw) => (RequestFields::Raw(raw), raw.content_length),
            None => (
                RequestFields::Map(&parts.headers),
                parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<u64>().ok()),
            ),
        };
        let framing = request_framing(&parts.method, content_length, &body);
        let (mut conn, mut reused) = match to.idle.take(now) {
            Some(c) => (c, true),
            // Boxed: connecting is rare (the pool has one) and its future is large.
            None => match Box::pin(Conn::connect(&to.addr, self.connect_timeout)).await {
                Ok(c) => (c, false),
                Err(e) => {
                    return Err(SendError {
                        error: UpstreamError::Connect(e),
                        unsent: Some(Request::from_parts(parts, body)),
                    });
                }
            },
        };
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        head::encode_request(
            &mut conn.wbuf,
            &parts.method,
            target,
            fields,
            to.url.authority(),
            framing.0,
            framing.1,
        );
        let replayable = framing.0 == RequestFraming::None;
        let response = loop {
            match exchange(&mut conn, &parts.method, &mut body, framing.0).await {
                Ok(r) => break r,
                // A pooled connection the server closed while we were sending (it
                // can close an idle connection at any moment): nothing of the
                // response came, so a bodiless request goes once more on a fresh one.
                Err(Failure {
                    error,
                    before_response: true,
                }) if reused && replayable => {
                    let _ = error;
                    reused = false;
                    let mut fresh =
                        match Box::pin(Conn::connect(&to.addr, self.connect_timeout)).await {
                            Ok(c) => c,
                            Err(e) => {
                                return Err(SendError {
                                    error: UpstreamError::Connect(e),
                                    unsent: Some(Request::from_parts(parts, body)),
                                });
                            }
                        };
                    std::mem::swap(&mut fresh.wbuf, &mut conn.wbuf);
                    conn = fresh;
                }
                Err(f) => {
                    return Err(SendError {
                        error: f.error,
                        unsent: None,
                    });
                }
            }
        };
        let Exchanged { head, body_sent } = response;
        let keep = head.keep_alive && body_sent;
        let body = match head.framing {
            Framing::Empty => {
                body::release(conn, keep.then_some(&*to.idle));
                Body::Full(None)
            }
            // The common small response: its body came with its head.
            Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
                let data = conn.rbuf.split_to(n as usize).freeze();
                body::release(conn, keep.then_some(&*to.idle));
                Body::Full(Some(data))
            }
            framing => Body::H1(H1Body::new(
                conn,
                Decoder::new(framing),
                keep.then(|| to.idle.clone()),
            )),
        };
        Ok(Reply {
            status: head.status,
            fields: Fields::Raw(head.fields),
            body,
        })
    }
}

/// How the request body goes on the wire, and whether we add the framing field,
/// decided as hyper's client does: a Content-Length from the client is kept,
/// an exact size becomes one, anything else is chunked.
fn request_framing<B: http_body::Body>(
    method: &Method,
    content_length: Option<u64>,
    body: &B,
) -> (RequestFraming, bool) {
    if let Some(n) = content_length {
        let framing = if n == 0 {
            RequestFraming::None
        } else {
            RequestFraming::Length(n)
        };
        return (framing, false);
    }
    if body.is_end_stream() {
        return (RequestFraming::None, false);
    }
    match body.size_hint().exact() {
        Some(0) if matches!(*method, Method::GET | Method::HEAD) => (RequestFraming::None, false),
        Some(n) => (RequestFraming::Length(n), true),
        None => (RequestFraming::Chunked, true),
    }
}

struct Exchanged {
    head: head::ResponseHead,
    /// The request body went out whole (the server may have answered before it did).
    body_sent: bool,
}

struct Failure {
    error: UpstreamError,
    /// Nothing of a response arrived: the request may never have been seen.
    before_response: bool,
}

impl Failure {
    fn early(error: UpstreamError) -> Failure {
        Failure {
            error,
            before_response: true,
        }
    }
    fn late(error: UpstreamError) -> Failure {
        Failure {
            error,
            before_response: false,
        }
    }
}

/// Requests encoded back to back, to go out on one connection in one write
/// (HTTP/1.1 pipelining). The server answers them in order.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// Where each request starts in `buf`, and its method (a HEAD answer has no body).
    starts: Vec<(usize, Method)>,
    bodiless: bool,
}

/// One answer of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// From the write of the batch to this answer's head.
    pub head_time: Duration,
    pub body_bytes: u64,
}

/// Connections opened again for one batch when a server closes one mid-batch.
const BATCH_RECONNECTS: usize = 3;

impl Batch {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Adds a request: its path and query, its headers (a `Host` from `host`
    /// when they have none), and a `Content-Length` of its body, which goes whole.
    pub fn push(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        host: &str,
        body: &[u8],
    ) {
        let start = self.buf.len();
        let mut head = Vec::new();
        let framing = if body.is_empty() && !headers.contains_key(header::CONTENT_LENGTH) {
            RequestFraming::None
        } else {
            RequestFraming::Length(body.len() as u64)
        };
        head::encode_request(
            &mut head,
            method,
            target,
            RequestFields::Map(headers),
            host,
            framing,
            true,
        );
        self.buf.extend_from_slice(&head);
        self.buf.extend_from_slice(body);
        if self.starts.is_empty() {
            self.bodiless = true;
        }
        self.bodiless &= body.is_empty();
        self.starts.push((start, method.clone()));
    }
}

impl<B> Client<B>
where
    B: http_body::Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Sends every request of `batch` on one connection in one write and reads
    /// the answers in order, reporting each (or what ended the batch) to `each`
    /// with its index. A server that closes the connection after an answer
    /// (`Connection: close`) has not read the rest: they go again on a new
    /// connection. Only `http://` targets; the caller sends others one by one.
    pub async fn pipeline(
        &self,
        to: &Target,
        batch: &Batch,
        deadline: tokio::time::Instant,
        timeout: Duration,
        mut each: impl FnMut(usize, Result<Answer, UpstreamError>),
    ) {
        let mut next = 0;
        let mut reconnects = 0;
        let mut fresh_only = false;
        while next < batch.starts.len() {
            let pooled = if fresh_only {
                None
            } else {
                to.idle.take(Instant::now())
            };
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => match Conn::connect(&to.addr, self.connect_timeout).await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        fail_from(next, batch.len(), UpstreamError::Connect(e), &mut each);
                        return;
                    }
                },
            };
            conn.rbuf.clear();
            let from = batch.starts[next].0;
            let sent_at = tokio::time::Instant::now();
            let written =
                tokio::time::timeout_at(deadline, write_all(&conn.stream, &batch.buf[from..]))
                    .await;
            let mut answered_here = 0;
            let mut keep = true;
            let outcome = match written {
                Err(_) => Err(UpstreamError::TimedOut(timeout)),
                Ok(Err(e)) => Err(UpstreamError::Write(e)),
                Ok(Ok(())) => loop {
                    if next == batch.len() {
                        break Ok(());
                    }
                    let method = &batch.starts[next].1;
                    match tokio::time::timeout_at(deadline, read_whole(&mut conn, method)).await {
                        Err(_) => break Err(UpstreamError::TimedOut(timeout)),
                        Ok(Err(e)) => break Err(e),
                        Ok(Ok((status, body_bytes, keep_alive))) => {
                            let head_time = sent_at.elapsed();
                            each(
                                next,
                                Ok(Answer {
                                    status,
                                    head_time,
                                    body_bytes,
                                }),
                            );
                            next += 1;
                            answered_here += 1;
                            if !keep_alive {
                                keep = false;
                                break Ok(());
                            }
                        }
                    }
                },
            };
            match outcome {
                Ok(()) if keep => body::release(conn, Some(&to.idle)),
                // Closed after an answer: the rest were never read; they go again.
                Ok(()) => {
                    reconnects += 1;
                    if next < batch.len() && reconnects > BATCH_RECONNECTS {
                        fail_from(next, batch.len(), UpstreamError::Closed, &mut each);
                        return;
                    }
                }
                // A pooled connection the server had closed: nothing came back, so
                // a bodiless batch goes again on a fresh one (as single requests do).
                Err(UpstreamError::Closed | UpstreamError::Read(_) | UpstreamError::Write(_))
                    if reused && answered_here == 0 && batch.bodiless && !fresh_only =>
                {
                    fresh_only = true;
                }
                Err(e) => {
                    fail_from(next, batch.len(), e, &mut each);
                    return;
                }
            }
        }
    }
}

/// Reports `error` for requests `from..to` of a batch: the first gets it as it
/// is, the rest a copy that says the same.
fn fail_from(
    from: usize,
    to: usize,
    error: UpstreamError,
    each: &mut impl FnMut(usize, Result<Answer, UpstreamError>),
) {
    for i in from + 1..to {
        each(i, Err(error.same_again()));
    }
    if from < to {
        each(from, Err(error));
    }
}

impl UpstreamError {
    /// An error that reads the same and is counted the same (io errors do not clone).
    fn same_again(&self) -> UpstreamError {
        let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            UpstreamError::TimedOut(d) => UpstreamError::TimedOut(*d),
            UpstreamError::Connect(ConnectError::Timeout(d)) => {
                UpstreamError::Connect(ConnectError::Timeout(*d))
            }
            UpstreamError::Connect(ConnectError::Io(e)) => {
                UpstreamError::Connect(ConnectError::Io(io(e)))
            }
            UpstreamError::Write(e) => UpstreamError::Write(io(e)),
            UpstreamError::Closed => UpstreamError::Closed,
            other => UpstreamError::Read(io::Error::other(other.to_string())),
        }
    }
}

/// Reads one whole answer: (status, body bytes, whether the connection may be reused).
async fn read_whole(conn: &mut Conn, method: &Method) -> Result<(u16, u64, bool), UpstreamError> {
    let head = loop {
        match head::parse_response(&mut conn.rbuf, method)? {
            Parsed::Head(head) => break head,
            Parsed::Interim => continue,
            Parsed::Partial => {}
        }
        let nothing_yet = conn.rbuf.is_empty();
        match conn.fill().await {
            Ok(0) if nothing_yet => return Err(UpstreamError::Closed),
            Ok(0) => return Err(UpstreamError::TruncatedHead),
            Ok(_) => {}
            Err(e) => return Err(UpstreamError::Read(e)),
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut bytes = 0u64;
    loop {
        match decoder.decode(&mut conn.rbuf)? {
            decode::Decoded::Data(d) => bytes += d.len() as u64,
            decode::Decoded::Trailers(_) => {}
            decode::Decoded::End => break,
            decode::Decoded::NeedMore => match conn.fill().await {
                Ok(0) => {
                    decoder.eof()?;
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(UpstreamError::Read(e)),
            },
        }
    }
    Ok((head.status.as_u16(), bytes, head.keep_alive))
}

/// Writes the request (head in `conn.wbuf`, then the body) and reads the response head.
async fn exchange<B>(
    conn: &mut Conn,
    method: &Method,
    body: &mut B,
    framing: RequestFraming,
) -> Result<Exchanged, Failure>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    conn.rbuf.clear();
    let body_sent = match framing {
        RequestFraming::None => {
            write_all(&conn.stream, &conn.wbuf)
                .await
                .map_err(|e| Failure::early(UpstreamError::Write(e)))?;
            true
        }
        // Boxed: its future is four times the rest of this one, and every
        // request's future is moved whole into its caller's; most have no body.
        _ => Box::pin(send_body(conn, body, framing)).await?,
    };
    loop {
        match head::parse_response(&mut conn.rbuf, method) {
            Ok(Parsed::Head(head)) => return Ok(Exchanged { head, body_sent }),
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) => {}
            Err(e) => return Err(Failure::late(UpstreamError::Head(e))),
        }
        let nothing_yet = conn.rbuf.is_empty();
        match conn.fill().await {
            Ok(0) if nothing_yet => return Err(Failure::early(UpstreamError::Closed)),
            Ok(0) => return Err(Failure::late(UpstreamError::TruncatedHead)),
            Ok(_) => {}
            Err(e) if nothing_yet => return Err(Failure::early(UpstreamError::Read(e))),
            Err(e) => return Err(Failure::late(UpstreamError::Read(e))),
        }
    }
}

/// Writes the head and the body. Returns false when the server answered before
/// the body was all sent (its bytes are in the read buffer): the rest is not
/// sent and the connection is not reused.
async fn send_body<B>(
    conn: &mut Conn,
    body: &mut B,
    framing: RequestFraming,
) -> Result<bool, Failure>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let chunked = framing == RequestFraming::Chunked;
    let expected = match framing {
        RequestFraming::Length(n) => Some(n),
        _ => None,
    };
    let mut sent: u64 = 0;
    let late = Failure::late;
    // A small first piece that is already here goes out with the head.
    let mut ended = false;
    if let Some(frame) = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(f) => Poll::Ready(Some(f)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
    {
        match frame {
            None => ended = true,
            Some(Err(e)) => return Err(late(UpstreamError::RequestBody(e.into()))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if data.len() <= COALESCE {
                        sent += data.len() as u64;
                        check_length(sent, expected).map_err(late)?;
                        push_piece(&mut conn.wbuf, &data, chunked);
                    } else {
                        write_all(&conn.stream, &conn.wbuf)
                            .await
                            .map_err(|e| Failure::early(UpstreamError::Write(e)))?;
                        conn.wbuf.clear();
                        sent += data.len() as u64;
                        check_length(sent, expected).map_err(late)?;
                        if !write_piece(conn, &data, chunked).await? {
                            return Ok(false);
                        }
                    }
                }
                ended = body.is_end_stream();
            }
        }
    }
    if ended {
        finish_body(&mut conn.wbuf, sent, expected, chunked).map_err(late)?;
        write_all(&conn.stream, &conn.wbuf)
            .await
            .map_err(|e| Failure::early(UpstreamError::Write(e)))?;
        return Ok(true);
    }
    if !conn.wbuf.is_empty() {
        write_all(&conn.stream, &conn.wbuf)
            .await
            .map_err(|e| Failure::early(UpstreamError::Write(e)))?;
    }
    loop {
        // Wait for the next piece, or for the server to answer early.
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            answered = answered_early(&conn.stream, &mut conn.rbuf) => {
                answered.map_err(late)?;
                return Ok(false);
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(late(UpstreamError::RequestBody(e.into()))),
            Some(Ok(frame)) => {
                // Trailers of a client's body are not forwarded (hyper's client does not either).
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                check_length(sent, expected).map_err(late)?;
                if !write_piece(conn, &data, chunked).await? {
                    return Ok(false);
                }
            }
        }
    }
    conn.wbuf.clear();
    finish_body(&mut conn.wbuf, sent, expected, chunked).map_err(late)?;
    if !conn.wbuf.is_empty() {
        write_all(&conn.stream, &conn.wbuf)
            .await
            .map_err(|e| Failure::late(UpstreamError::Write(e)))?;
    }
    Ok(true)
}

fn check_length(sent: u64, expected: Option<u64>) -> Result<(), UpstreamError> {
    match expected {
        Some(n) if sent > n => Err(UpstreamError::RequestLength {
            got: sent,
            expected: n,
        }),
        _ => Ok(()),
    }
}

/// The end of the body: the last chunk, or a check that the length was met.
fn finish_body(
    out: &mut Vec<u8>,
    sent: u64,
    expected: Option<u64>,
    chunked: bool,
) -> Result<(), UpstreamError> {
    if let Some(n) = expected
        && sent != n
    {
        return Err(UpstreamError::RequestLength {
            got: sent,
            expected: n,
        });
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    Ok(())
}

fn push_piece(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let mut digits = [0u8; 16];
        out.extend_from_slice(head::hex(data.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Writes one piece of body, watching for an early answer. False: the server answered.
async fn write_piece(conn: &mut Conn, data: &Bytes, chunked: bool) -> Result<bool, Failure> {
    conn.wbuf.clear();
    if data.len() <= COALESCE {
        push_piece(&mut conn.wbuf, data, chunked);
        return write_watching(conn, None).await.map_err(Failure::late);
    }
    if chunked {
        let mut digits = [0u8; 16];
        conn.wbuf
            .extend_from_slice(head::hex(data.len() as u64, &mut digits));
        conn.wbuf.extend_from_slice(b"\r\n");
        if !write_watching(conn, None).await.map_err(Failure::late)? {
            return Ok(false);
        }
    }
    if !write_watching(conn, Some(data))
        .await
        .map_err(Failure::late)?
    {
        return Ok(false);
    }
    if chunked {
        conn.wbuf.clear();
        conn.wbuf.extend_from_slice(b"\r\n");
        return write_watching(conn, None).await.map_err(Failure::late);
    }
    Ok(true)
}

/// Writes `data` (or `conn.wbuf` when None) unless the server starts answering
/// first: a server that refuses a body (413) answers and stops reading, and
/// waiting to write the rest would wait for ever.
async fn write_watching(conn: &mut Conn, data: Option<&Bytes>) -> Result<bool, UpstreamError> {
    let mut done = 0;
    loop {
        let buf: &[u8] = match data {
            Some(d) => d,
            None => &conn.wbuf,
        };
        if done == buf.len() {
            return Ok(true);
        }
        match conn.stream.try_write(&buf[done..]) {
            Ok(n) => {
                done += n;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(UpstreamError::Write(e)),
        }
        tokio::select! {
            biased;
            answered = answered_early(&conn.stream, &mut conn.rbuf) => {
                answered?;
                return Ok(false);
            }
            w = conn.stream.writable() => w.map_err(UpstreamError::Write)?,
        }
    }
}

/// Resolves when the server has sent something (moved into the read buffer)
/// while we were still sending; an error when it closed or reset instead.
async fn answered_early(stream: &TcpStream, rbuf: &mut BytesMut) -> Result<(), UpstreamError> {
    loop {
        stream.readable().await.map_err(UpstreamError::Read)?;
        rbuf.reserve(1024);
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Err(UpstreamError::Closed),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(UpstreamError::Read(e)),
        }
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
