//! A lean HTTP/1.1 client connection: one request at a time on a keep-alive
//! connection, request and response buffers reused.
//!
//! Why not hyper here: hyper's client splits each connection into a driver task
//! and a sender joined by channels, and a load generator pays that hop on every
//! request. Measured against nginx on 2 cores, that cost a third of our
//! throughput next to wrk. The generator only needs the simple case (no
//! pipelining, no upgrades, no 100-continue), which this file does in one
//! task; HTTP/2 still goes through hyper.

use bytes::Bytes;
use hyper::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Response;
use crate::record::ErrorKind;
use crate::synth::Synthesised;

/// A response head larger than this is refused (as a malformed response).
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 96;

/// Anything we can speak HTTP/1.1 over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Conn {
    io: Box<dyn Io>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    pos: usize,
    /// The server said `Connection: close`, or the response was delimited by EOF.
    closed: bool,
    /// Requests completed on this connection.
    pub served: u64,
    /// The last failure happened before any response byte arrived.
    pub failed_before_response: bool,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            wbuf: Vec::with_capacity(1024),
            rbuf: Vec::with_capacity(16 << 10),
            pos: 0,
            closed: false,
            served: 0,
            failed_before_response: false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends `req` and reads the whole response.
    pub async fn send(&mut self, req: &Synthesised, host: &[u8]) -> Result<Response, ErrorKind> {
        self.failed_before_response = false;
        self.encode(req, host);
        if let Err(e) = self.io.write_all(&self.wbuf).await {
            self.closed = true;
            self.failed_before_response = true;
            return Err(io_kind(&e));
        }
        let r = self.read_response(&req.method).await;
        if r.is_err() {
            self.closed = true;
        } else {
            self.served += 1;
        }
        r
    }

    fn encode(&mut self, req: &Synthesised, host: &[u8]) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(req.method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(req.path.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        w.extend_from_slice(host);
        w.extend_from_slice(b"\r\n");
        for (k, v) in &req.headers {
            w.extend_from_slice(k.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(v.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if !req.body.is_empty() || matches!(req.method, Method::POST | Method::PUT | Method::PATCH)
        {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(req.body.len().to_string().as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
        append_body(w, &req.body);
    }

    /// Reads more bytes into the buffer, dropping what was consumed.
    async fn fill(&mut self) -> Result<(), ErrorKind> {
        if self.pos == self.rbuf.len() {
            self.rbuf.clear();
            self.pos = 0;
        } else if self.pos > (32 << 10) {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
        self.rbuf.reserve(16 << 10);
        match self.io.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(ErrorKind::Reset),
            Ok(_) => Ok(()),
            Err(e) => Err(io_kind(&e)),
        }
    }

    async fn read_response(&mut self, method: &Method) -> Result<Response, ErrorKind> {
        // Leftovers from a previous response mean the server sent more than it framed.
        self.rbuf.clear();
        self.pos = 0;
        let (status, head_len, framing, close) = loop {
            if let Err(e) = self.fill().await {
                self.failed_before_response = self.rbuf.is_empty();
                return Err(e);
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.rbuf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|s| s.trim().parse::<u64>().ok())
                                .ok_or(ErrorKind::Other)?;
                            if !matches!(framing, Framing::Chunked) {
                                framing = Framing::Length(n);
                            }
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if contains_token(h.value, b"chunked") {
                                framing = Framing::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            if contains_token(h.value, b"close") {
                                close = true;
                            } else if contains_token(h.value, b"keep-alive") {
                                close = false;
                            }
                        }
                    }
                    break (status, len, framing, close);
                }
                Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => {}
                _ => return Err(ErrorKind::Other),
            }
        };
        self.pos = head_len;
        let no_body =
            *method == Method::HEAD || status / 100 == 1 || status == 204 || status == 304;
        let body = if no_body {
            0
        } else {
            match framing {
                Framing::Length(n) => self.skip(n).await?,
                Framing::Chunked => self.chunked().await?,
                Framing::UntilClose => {
                    self.closed = true;
                    self.until_close().await?
                }
            }
        };
        if close {
            self.closed = true;
        }
        Ok(Response {
            status,
            bytes: head_len as u64 + body,
        })
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, n: u64) -> Result<u64, ErrorKind> {
        let mut left = n;
        loop {
            let take = ((self.rbuf.len() - self.pos) as u64).min(left);
            self.pos += take as usize;
            left -= take;
            if left == 0 {
                return Ok(n);
            }
            self.fill().await?;
        }
    }

    async fn until_close(&mut self) -> Result<u64, ErrorKind> {
        let mut n = (self.rbuf.len() - self.pos) as u64;
        self.pos = self.rbuf.len();
        loop {
            match self.fill().await {
                Ok(()) => {
                    n += (self.rbuf.len() - self.pos) as u64;
                    self.pos = self.rbuf.len();
                }
                Err(ErrorKind::Reset) => return Ok(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// The position of the next CRLF at or after `pos`, reading more as needed.
    async fn line_end(&mut self) -> Result<usize, ErrorKind> {
        loop {
            if let Some(i) = self.rbuf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                return Ok(self.pos + i);
            }
            if self.rbuf.len() - self.pos > 4096 {
                return Err(ErrorKind::Other);
            }
            self.fill().await?;
        }
    }

    async fn chunked(&mut self) -> Result<u64, ErrorKind> {
        let mut total = 0;
        loop {
            let end = self.line_end().await?;
            let line = &self.rbuf[self.pos..end];
            let hex = line.split(|b| *b == b';').next().unwrap_or(line);
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or(ErrorKind::Other)?;
            self.pos = end + 2;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let end = self.line_end().await?;
                    let empty = end == self.pos;
                    self.pos = end + 2;
                    if empty {
                        return Ok(total);
                    }
                }
            }
            total += self.skip(size).await?;
            let end = self.line_end().await?;
            self.pos = end + 2;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn append_body(w: &mut Vec<u8>, body: &Bytes) {
    w.extend_from_slice(body);
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

pub(crate) fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused | K::NotFound | K::AddrNotAvailable => ErrorKind::Connect,
        K::TimedOut => ErrorKind::Timeout,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected => ErrorKind::Reset,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hyper::header::HeaderMap;
    use tokio::io::AsyncWriteExt;

    fn req() -> Synthesised {
        Synthesised {
            method: Method::GET,
            path: "/x".into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            wire_bytes: 0,
        }
    }

    async fn exchange(response: &'static [u8]) -> (Result<Response, ErrorKind>, Conn) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = server.read(&mut buf).await;
            server.write_all(response).await.unwrap();
        });
        let mut conn = Conn::new(Box::new(client));
        let r = conn.send(&req(), b"h").await;
        task.await.unwrap();
        (r, conn)
    }

    #[tokio::test]
    async fn reads_length_chunked_and_close_framed_bodies() {
        let (r, c) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert!(!c.is_closed());
        let (r, c) = exchange(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nt: 1\r\n\r\n",
        )
        .await;
        assert_eq!(r.unwrap().status, 404);
        assert!(!c.is_closed());
        let (r, c) = exchange(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbody").await;
        assert_eq!(r.unwrap().status, 200);
        assert!(c.is_closed());
        let (r, _) = exchange(b"garbage\r\n\r\n").await;
        assert_eq!(r.unwrap_err(), ErrorKind::Other);
        let (r, c) = exchange(b"").await;
        assert_eq!(r.unwrap_err(), ErrorKind::Reset);
        assert!(c.failed_before_response);
    }
}
