//! Our own HTTP/1.1 server for client connections (plain, and TLS without h2).
//!
//! Why not hyper's server here: on a small exchange its dispatcher, the
//! `HeaderMap` it builds and re-encodes, and its graceful-shutdown watcher cost
//! more CPU than the rest of the live path together, and the issue asks for
//! nginx's throughput on one core. This loop does what nginx's does: read a
//! head, parse it with `httparse` into a request whose values are slices of
//! the read buffer, hand it to [`forward::handle`], write the response head
//! and a small body with one write, and wait for the next head on the same
//! buffer. h2 (prior knowledge or ALPN) still goes to hyper.
//!
//! Bad input: a malformed head gets 400 and a head over `max_header_bytes`
//! (or with too many fields) gets 431, and the connection closes; a head that
//! does not arrive within the header timeout closes it silently, as hyper did
//! (on a kept-alive connection, within one to two timeouts: see [`serve`]).
//! A request body is read by whoever polls it (the upstream client, on this
//! task); the connection is reused only when that body was read to its end.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::Shared;
use crate::body::{BoxError, ClientBody, ResponseBody};
use crate::forward::{ConnInfo, LiveResponse, handle};
use crate::server::DrainSignal;
use crate::upstream::{
    BodyStep, Decoder, Fields, Framing, FramingError, RawRequest, Source, Spans, field_line,
    field_span, poll_body,
};

/// More header fields than this in a request get 431.
const MAX_FIELDS: usize = 128;
/// Room made in the read buffer before each read.
const READ_SPACE: usize = 8 << 10;
/// Response data up to this size is copied behind the head (one write);
/// larger frames are written on their own, without a copy.
const COALESCE: usize = 16 << 10;

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// What one client connection needs from the listener's settings.
#[derive(Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_head: usize,
}

/// The read side of a connection and what was read but not used yet.
struct Input {
    io: Reader,
    buf: BytesMut,
}

impl Source for Input {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Input::poll_fill(self, cx)
    }
}

impl Input {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        // `read_buf` keeps no state between polls: a new one per poll is the same future.
        std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// Serves HTTP/1.1 on one connection until the client closes it, a request
/// asks to close it, something goes wrong, or the listener drains.
/// `prefix` holds bytes already read from `rd` (the listener's sniff for h2).
pub async fn serve<W: AsyncWrite + Unpin>(
    rd: Reader,
    mut wr: W,
    prefix: BytesMut,
    shared: &Arc<Shared>,
    conn: Arc<ConnInfo>,
    limits: Limits,
    drain: DrainSignal,
) {
    let mut input = Some(Input {
        io: rd,
        buf: prefix,
    });
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // One timer per connection, re-armed only when it fires after a request was
    // answered: re-arming it for every request would touch the timer wheel (and
    // the clock) on every request. So a head must arrive within one to two header
    // timeouts of the previous answer, and within one of the connection's start.
    let mut answered_since_armed = false;
    let timer = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(timer);
    tokio::pin!(drain);
    // The production timeout's timer, kept across requests (see `forward::within`).
    let mut production_timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    loop {
        let Some(mut inp) = input.take() else { return };
        if drain.draining() {
            return;
        }
        // The next head: what is buffered, then what arrives before the header timeout.
        let parsed = loop {
            match parse_head(&mut inp.buf, limits.max_head) {
                Ok(Some(head)) => break Ok(head),
                Ok(None) => {}
                Err(refusal) => break Err(refusal),
            }
            let read = tokio::select! {
                biased;
                r = inp.fill() => r,
                _ = &mut timer => {
                    if answered_since_armed {
                        answered_since_armed = false;
                        timer.as_mut().reset(Instant::now() + limits.header_timeout);
                        continue;
                    }
                    return;
                }
                _ = &mut drain => {
                    // Idle between requests (or mid-head): nothing in flight to finish.
                    return;
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = match parsed {
            Ok(head) => head,
            Err(refusal) => {
                let _ = refuse(&mut wr, refusal).await;
                return;
            }
        };
        let Head {
            method,
            uri,
            version,
            raw,
            framing,
            mut keep_alive,
            expect_continue,
        } = head;
        let is_head = method == Method::HEAD;
        // Where a body's reader comes back; made only for requests that have a body.
        let mut home: Option<Home> = None;
        let body = match framing {
            None => {
                input = Some(inp);
                ClientBody::Empty
            }
            Some(framing) => {
                if expect_continue && version == Version::HTTP_11 {
                    // The client waits for this before it sends the body.
                    if wr
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let slot = home.insert(Arc::new(Mutex::new(None)));
                ClientBody::H1(H1RequestBody {
                    input: Some(inp),
                    decoder: Decoder::new(framing),
                    home: slot.clone(),
                })
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        let response = handle(
            shared.clone(),
            conn.clone(),
            request,
            Some(raw),
            Some(&mut production_timer),
        )
        .await;
        if let Some(home) = home {
            // The body's reader comes back when the body was read to its end.
            let returned = home.lock().unwrap_or_else(|e| e.into_inner()).take();
            match returned {
                Some((inp, true)) => input = Some(inp),
                _ => keep_alive = false,
            }
        }
        if input.is_none() {
            keep_alive = false;
        }
        if drain.draining() {
            // A drain that began while this request was in flight: answer it, then close.
            keep_alive = false;
        }
        match write_response(&mut wr, &mut out, response, is_head, version, keep_alive).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let _ = wr.shutdown().await;
                return;
            }
        }
        if !keep_alive {
            let _ = wr.shutdown().await;
            return;
        }
        answered_since_armed = true;
    }
}

/// A request head, parsed.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    raw: RawRequest,
    /// None: no body.
    framing: Option<Framing>,
    keep_alive: bool,
    expect_continue: bool,
}

/// Why a head is refused, with the status the client gets.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    why: String,
}

impl Refusal {
    fn bad(why: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            why: why.into(),
        }
    }
}

/// Parses a request head at the start of `buf`, consuming it when complete;
/// None when more bytes are needed.
fn parse_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Refusal> {
    // Empty lines before a request line are allowed (RFC 9112 section 2.2).
    while buf.starts_with(b"\r\n") {
        let _ = buf.split_to(2);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let too_large = || Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        why: format!("request head larger than {max_head} bytes"),
    };
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why: format!("more than {MAX_FIELDS} header fields"),
            });
        }
        Err(e) => return Err(Refusal::bad(format!("malformed request head: {e}"))),
    };
    if len > max_head {
        return Err(too_large());
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = request.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::bad(format!("invalid method {method:?}")))?;

    // Where the target and each field are, so they can be slices of the frozen head.
    let base = buf.as_ptr() as usize;
    let path = request.path.unwrap_or_default();
    let target = (path.as_ptr() as usize - base, path.len());
    let count = request.headers.len();
    let mut spans = Spans::new(count);
    let spans = spans.slots();
    let mut keep_alive = version == Version::HTTP_11;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None;
    let mut expect_continue = false;
    let mut lists_fields = false;
    for (span, field) in spans.iter_mut().zip(request.headers.iter()) {
        let name = field.name.as_bytes();
        let value = field.value;
        *span = field_span(base, field);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = crate::upstream::content_length_value(value).map_err(|_| {
                Refusal::bad(format!(
                    "invalid Content-Length {:?}",
                    String::from_utf8_lossy(value)
                ))
            })?;
            if content_length.is_some_and(|m| m != n) {
                return Err(Refusal::bad("Content-Length fields that disagree"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides: `gzip, chunked` is chunked.
            transfer_encoding = Some(
                value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
            );
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= version == Version::HTTP_10;
                } else if !token.is_empty() {
                    lists_fields = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Refusal {
                    status: StatusCode::EXPECTATION_FAILED,
                    why: format!("unsupported Expect {:?}", String::from_utf8_lossy(value)),
                });
            }
        }
    }
    // RFC 9112 section 6.3: a request body is chunked or has a length; both at
    // once is how requests are smuggled past proxies, so it is refused.
    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(Refusal::bad(
                "both Transfer-Encoding and Content-Length in one request",
            ));
        }
        (Some(true), None) if version == Version::HTTP_11 => Some(Framing::Chunked),
        (Some(_), None) => {
            return Err(Refusal::bad(
                "a Transfer-Encoding that does not end in chunked",
            ));
        }
        (None, Some(0) | None) => None,
        (None, Some(n)) => Some(Framing::Length(n)),
    };

    let head: Bytes = buf.split_to(len).freeze();
    let target = head.slice(target.0..target.0 + target.1);
    let uri = Uri::from_maybe_shared(target.clone()).map_err(|e| {
        Refusal::bad(format!(
            "invalid request target {:?}: {e}",
            String::from_utf8_lossy(&target)
        ))
    })?;
    // The fields stay where they are: no map is built unless a feature needs one.
    let raw = RawRequest::new(head, spans, content_length, lists_fields);
    Ok(Some(Head {
        method,
        uri,
        version,
        raw,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// Answers a refused head and closes: the stream can no longer be trusted.
async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, refusal: Refusal) -> io::Result<()> {
    let text = format!("umbra: {}\n", refusal.why);
    let mut out = Vec::with_capacity(160 + text.len());
    status_line(&mut out, refusal.status);
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n");
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
    wr.write_all(&out).await?;
    wr.shutdown().await
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How the response body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Writes one response. Ok(false): the connection cannot carry another
/// exchange (the body failed or fell short of its length).
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    response: LiveResponse,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> io::Result<bool> {
    match start_response(out, response, is_head, version, keep_alive) {
        // The usual answer: head and body are in `out`, one write.
        Rest::Done { keep_alive } => {
            wr.write_all(out).await?;
            Ok(keep_alive)
        }
        // Boxed: the streaming future is large, and this one is moved whole into
        // the connection's for every response.
        Rest::Stream(stream) => Box::pin(stream.write(wr, out)).await,
    }
}

/// What is left of a response once [`start_response`] has put what it could in `out`.
/// Returned and matched at once, never kept: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Rest {
    /// Nothing: `out` holds the whole response.
    Done { keep_alive: bool },
    /// A body that is not all there yet, or has a large frame.
    Stream(Stream),
}

/// A response body still to be written, and where it stands.
struct Stream {
    body: ResponseBody,
    delimit: Delimit,
    keep_alive: bool,
    sent: u64,
    /// A frame taken from the body but not written yet.
    taken: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

/// Puts the response head in `out` (cleared first), then the body's frames
/// that are ready, when they are small; not async, so a response that is all
/// there costs no future.
fn start_response(
    out: &mut Vec<u8>,
    response: LiveResponse,
    is_head: bool,
    version: Version,
    keep_alive: bool,
) -> Rest {
    let LiveResponse {
        status,
        fields,
        mut body,
    } = response;
    out.clear();
    status_line(out, status);
    let bodiless = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // Production's fields go out as they came when they can; a map otherwise.
    let fields = match fields {
        Fields::Raw(raw) if raw.verbatim().is_some() => Fields::Raw(raw),
        other => Fields::Map(other.into_map()),
    };
    let (declared, has_date) = match &fields {
        Fields::Raw(raw) => (raw.content_length, raw.has_date),
        Fields::Map(map) => (
            map.get(header::CONTENT_LENGTH)
                .and_then(|v| crate::upstream::content_length_value(v.as_bytes()).ok()),
            map.contains_key(header::DATE),
        ),
    };
    let delimit = if bodiless {
        Delimit::None
    } else if let Some(n) = declared {
        Delimit::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        Delimit::Length(n)
    } else if version == Version::HTTP_11 {
        Delimit::Chunked
    } else {
        Delimit::Close
    };
    // A response made here can ask to close (a client too slow with its body).
    let asks_close = matches!(&fields, Fields::Map(map) if map
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close")));
    let keep_alive = keep_alive && delimit != Delimit::Close && !asks_close;
    match &fields {
        Fields::Raw(raw) => {
            for lines in raw.verbatim().into_iter().flatten() {
                out.extend_from_slice(lines);
            }
        }
        Fields::Map(map) => {
            for (name, value) in map {
                if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
                    continue;
                }
                field_line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    drop(fields);
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match delimit {
        Delimit::Length(n) if declared.is_none() => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Delimit::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if delimit == Delimit::None {
        // Whatever body there is (a HEAD's is empty) is not sent; dropping it records the exchange.
        drop(body);
        return Rest::Done { keep_alive };
    }
    let mut sent: u64 = 0;
    loop {
        let frame = if body.is_end_stream() {
            None
        } else {
            match poll_once(&mut body) {
                Some(frame) => frame,
                None => break,
            }
        };
        let data = match frame {
            None => {
                // The end, with everything in `out`.
                let ended_well = !matches!(delimit, Delimit::Length(n) if sent != n);
                if ended_well && delimit == Delimit::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                drop(body);
                return Rest::Done {
                    keep_alive: ended_well && keep_alive,
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data)
                    if data.len() <= COALESCE
                        && out.len() < COALESCE
                        && !matches!(delimit, Delimit::Length(n) if sent + data.len() as u64 > n) =>
                {
                    data
                }
                other => {
                    let taken = Some(Some(Ok(match other {
                        Ok(data) => Frame::data(data),
                        Err(frame) => frame,
                    })));
                    return Rest::Stream(Stream {
                        body,
                        delimit,
                        keep_alive,
                        sent,
                        taken,
                    });
                }
            },
            error => {
                return Rest::Stream(Stream {
                    body,
                    delimit,
                    keep_alive,
                    sent,
                    taken: Some(error),
                });
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if delimit == Delimit::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        out.extend_from_slice(&data);
        if delimit == Delimit::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    Rest::Stream(Stream {
        body,
        delimit,
        keep_alive,
        sent,
        taken: None,
    })
}

impl Stream {
    /// Writes `out` (the head, and what was ready) and the rest of the body.
    async fn write<W: AsyncWrite + Unpin>(self, wr: &mut W, out: &mut Vec<u8>) -> io::Result<bool> {
        let Stream {
            mut body,
            delimit,
            keep_alive,
            mut sent,
            mut taken,
        } = self;
        let mut ended_well = true;
        loop {
            let frame = match taken.take() {
                Some(frame) => frame,
                None if body.is_end_stream() => break,
                // Take what is ready without waiting; flush what is in `out` first if nothing is.
                None => match poll_once(&mut body) {
                    Some(f) => f,
                    None => {
                        if !out.is_empty() {
                            wr.write_all(out).await?;
                            out.clear();
                        }
                        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                    }
                },
            };
            match frame {
                None => break,
                Some(Err(_)) => {
                    ended_well = false;
                    break;
                }
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            if let (Delimit::Chunked, Ok(trailers)) =
                                (delimit, frame.into_trailers())
                            {
                                out.extend_from_slice(b"0\r\n");
                                for (name, value) in &trailers {
                                    field_line(out, name.as_str().as_bytes(), value.as_bytes());
                                }
                                out.extend_from_slice(b"\r\n");
                                wr.write_all(out).await?;
                                out.clear();
                                return Ok(keep_alive);
                            }
                            continue;
                        }
                    };
                    if frame.is_empty() {
                        continue;
                    }
                    if let Delimit::Length(n) = delimit
                        && sent + frame.len() as u64 > n
                    {
                        // More than the declared length would corrupt the next response.
                        ended_well = false;
                        break;
                    }
                    sent += frame.len() as u64;
                    if delimit == Delimit::Chunked {
                        out.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
                    }
                    if frame.len() <= COALESCE {
                        out.extend_from_slice(&frame);
                    } else {
                        wr.write_all(out).await?;
                        out.clear();
                        wr.write_all(&frame).await?;
                    }
                    if delimit == Delimit::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() >= COALESCE {
                        wr.write_all(out).await?;
                        out.clear();
                    }
                }
            }
        }
        if let Delimit::Length(n) = delimit
            && sent != n
        {
            ended_well = false;
        }
        if ended_well && delimit == Delimit::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if !out.is_empty() {
            wr.write_all(out).await?;
            out.clear();
        }
        Ok(ended_well && keep_alive)
    }
}

/// One poll of the body, with a waker that does nothing: `Some` when a frame
/// (or the end) was ready, `None` when the caller must wait properly.
fn poll_once(body: &mut ResponseBody) -> Option<Option<Result<Frame<Bytes>, BoxError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(f) => Some(f),
        Poll::Pending => None,
    }
}

/// A client's request body on one of our HTTP/1.1 connections, read from the
/// connection itself by whoever polls it. When it ends, or is dropped, the
/// reader goes back to the connection through `home`, marked complete or not.
pub struct H1RequestBody {
    input: Option<Input>,
    decoder: Decoder,
    home: Home,
}

/// Where a body's reader goes back to its connection: the reader, and whether the body ended.
type Home = Arc<Mutex<Option<(Input, bool)>>>;

impl H1RequestBody {
    fn go_home(&mut self, complete: bool) {
        if let Some(input) = self.input.take() {
            *self.home.lock().unwrap_or_else(|e| e.into_inner()) = Some((input, complete));
        }
    }
}

impl Drop for H1RequestBody {
    fn drop(&mut self) {
        self.go_home(false);
    }
}

/// What a client's body can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("reading the client's body: {0}")]
    Read(io::Error),
    #[error("the client's body: {0}")]
    Framing(FramingError),
}

impl http_body::Body for H1RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let Some(input) = this.input.as_mut() else {
            return Poll::Ready(None);
        };
        Poll::Ready(
            match std::task::ready!(poll_body(&mut this.decoder, input, cx)) {
                BodyStep::Frame(frame) => {
                    if this.decoder.is_done() {
                        this.go_home(true);
                    }
                    Some(Ok(frame))
                }
                BodyStep::End => {
                    this.go_home(true);
                    None
                }
                BodyStep::Read(e) => {
                    this.go_home(false);
                    Some(Err(ClientBodyError::Read(e)))
                }
                BodyStep::Framing(e) => {
                    this.go_home(false);
                    Some(Err(ClientBodyError::Framing(e)))
                }
            },
        )
    }

    fn is_end_stream(&self) -> bool {
        self.input.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Result<Option<Head>, Refusal> {
        let mut buf = BytesMut::from(wire);
        parse_head(&mut buf, 16 << 10)
    }

    #[test]
    fn heads_parse_into_requests_with_their_framing_and_reuse() {
        let head = parse(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.raw.get(b"host"), Some(&b"x"[..]));
        assert!(!head.raw.lists_fields);
        assert_eq!(head.framing, Some(Framing::Length(5)));
        assert!(head.keep_alive);

        let head = parse(
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Some(Framing::Chunked));
        assert!(!head.keep_alive);

        let head = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, None);
        assert!(!head.keep_alive, "1.0 closes unless asked");
        let head = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);

        let head = parse(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.expect_continue);
        assert!(
            !head.raw.to_header_map().contains_key("expect"),
            "answered here"
        );

        let head = parse(b"GET / HTTP/1.1\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(
            head.raw.lists_fields,
            "x-hop must go: the map path removes it"
        );
    }

    #[test]
    fn partial_heads_wait_and_the_rest_of_the_buffer_stays() {
        let wire = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\n";
        for cut in 0..30 {
            assert!(parse(&wire[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let head = parse_head(&mut buf, 1 << 10).unwrap().unwrap();
        assert_eq!(head.uri, "/one");
        assert_eq!(&buf[..], b"GET /two HTTP/1.1\r\n");
        assert!(parse_head(&mut buf, 1 << 10).unwrap().is_none());
    }

    #[test]
    fn bad_heads_are_refused_with_400_or_431() {
        let status = |wire: &[u8]| parse(wire).err().map(|r| r.status);
        assert_eq!(status(b"GARBAGE\r\n\r\n"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n"),
            Some(StatusCode::EXPECTATION_FAILED)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(
            status(big.as_bytes()),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // Too large even before it is complete.
        assert_eq!(
            status(&big.as_bytes()[..17_000]),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // Many fields (past what the stack holds) are fine up to the limit.
        let some: String = (0..100).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let head = parse(format!("GET / HTTP/1.1\r\n{some}\r\n").as_bytes())
            .unwrap()
            .unwrap();
        let map = head.raw.to_header_map();
        assert_eq!(map.len(), 100);
        assert_eq!(map["x-99"], "99");
        let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }
}
