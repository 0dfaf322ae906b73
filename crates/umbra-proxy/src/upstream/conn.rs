//! Upstream connections and the idle pool each upstream keeps.
//!
//! A connection belongs to whichever request task checked it out: that task
//! writes the request and reads the response itself, and puts the connection
//! back only when the response has been read to its end and the server allows
//! reuse. The pool is a stack (the most recently used connection goes out
//! first, warm in every cache) behind a mutex that is held for a push or a pop.

use std::io;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Idle connections kept per upstream; more are closed.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Room made in the read buffer before each read.
const READ_SPACE: usize = 8 << 10;

pub struct Conn {
    pub(super) stream: TcpStream,
    pub(super) rbuf: BytesMut,
    /// The encoded request head (kept, so a stale connection's request can be replayed).
    pub(super) wbuf: Vec<u8>,
    /// When its last exchange began: how long it has been idle, give or take
    /// that exchange, without reading the clock when it goes back to the pool.
    used_at: Instant,
}

impl super::decode::Source for Conn {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Conn::poll_fill(self, cx)
    }
}

impl Conn {
    pub(super) async fn connect(addr: &str, timeout: Duration) -> Result<Conn, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        };
        // Heads and small bodies go out in one write each; Nagle would hold them.
        stream.set_nodelay(true).map_err(ConnectError::Io)?;
        Ok(Conn::new(stream))
    }

    pub(super) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_SPACE),
            wbuf: Vec::with_capacity(1024),
            used_at: Instant::now(),
        }
    }

    /// False when the server closed the connection (or sent something unasked)
    /// while it sat idle. Costs no system call unless the reactor saw an event.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` is end of stream.
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        self.make_room();
        self.stream.read_buf(&mut self.rbuf).await
    }

    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        // `read_buf` keeps no state between polls: a new one per poll is the same future.
        pin!(self.stream.read_buf(&mut self.rbuf)).poll(cx)
    }

    fn make_room(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SPACE / 4 {
            self.rbuf.reserve(READ_SPACE);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(io::Error),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// One upstream's idle keep-alive connections.
#[derive(Default)]
pub struct Idle {
    conns: Mutex<Vec<Conn>>,
}

impl Idle {
    /// The most recently used idle connection that is still open, for an
    /// exchange that begins at `now` (the caller's clock read, not another).
    pub(super) fn take(&self, now: Instant) -> Option<Conn> {
        loop {
            let mut conn = self.lock().pop()?;
            if now.saturating_duration_since(conn.used_at) > IDLE_TIMEOUT {
                // Everything below it on the stack is older still.
                let old = std::mem::take(&mut *self.lock());
                drop(old);
                return None;
            }
            if conn.still_open() {
                conn.used_at = now;
                return Some(conn);
            }
        }
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub(super) fn put(&self, conn: Conn) {
        let mut conns = self.lock();
        if conns.len() >= MAX_IDLE {
            return;
        }
        conns.push(conn);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}
