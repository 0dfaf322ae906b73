//! Client listeners: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or TLS with
//! ALPN), header and body timeouts, header size limits, graceful drain.
//!
//! HTTP/1.x is served by our own loop ([`crate::h1`]), h2 by hyper. Malformed
//! requests get 400 and oversized heads 431, and the connection closes; a head
//! that does not arrive within the header timeout closes it too (slowloris).
//! A TLS handshake gets the same time limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::ClientBody;
use crate::config::Listen;
use crate::forward::{ConnInfo, handle};
use crate::{Shared, h1, log};

#[derive(Default)]
pub struct ConnCounters {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub tls_failed: AtomicU64,
}

/// hyper's server, for h2 only: HTTP/1.x is `h1.rs`'s, and the listener has
/// already told the two apart (preface or ALPN).
pub fn builder(listen: &Listen) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(listen.max_header_bytes.0.min(u32::MAX as u64) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(Some(1024));
    b
}

/// Loads a certificate chain and key (PEM) into a server config offering h2 and http/1.1.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not make a TLS config: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Tells every connection that the listener drains, and wakes the idle ones.
///
/// Why not a `watch` channel: a connection waits on this between every two
/// requests, and polling a `watch` (a `Notify`) takes a lock each time; here a
/// wait costs an atomic waker registration, and only connecting and closing lock.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    waiting: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
    ids: AtomicU64,
}

impl Drain {
    /// One connection's view: a future that is ready once the drain began.
    pub fn signal(self: &Arc<Drain>) -> DrainSignal {
        let waker = Arc::new(AtomicWaker::new());
        let id = self.ids.fetch_add(1, Relaxed);
        self.lock().insert(id, waker.clone());
        DrainSignal {
            drain: self.clone(),
            id,
            waker,
        }
    }

    fn start(&self) {
        self.draining.store(true, SeqCst);
        for waker in self.lock().values() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AtomicWaker>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct DrainSignal {
    drain: Arc<Drain>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl DrainSignal {
    pub fn draining(&self) -> bool {
        self.drain.draining.load(SeqCst)
    }
}

impl Future for DrainSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Register first, then look: a drain that starts in between still wakes us.
        self.waker.register(cx.waker());
        if self.draining() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for DrainSignal {
    fn drop(&mut self) {
        self.drain.lock().remove(&self.id);
    }
}

/// Accepts connections until `stop` flips, then lets the requests in flight
/// finish for up to the drain timeout. Returns the connections still open then.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    // Every connection watches this: idle ones close at once, busy ones after their answer.
    let drain = Arc::new(Drain::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, typically: wait a little rather than spin.
                    log::warn(format_args!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        shared.conns.accepted.fetch_add(1, Relaxed);
        shared.conns.open.fetch_add(1, Relaxed);
        let generation = shared.generation.load();
        let builder = generation.http.clone();
        let tls = generation.tls.clone();
        let limits = h1::Limits {
            header_timeout: generation.config.listen.header_timeout,
            max_head: generation.config.listen.max_header_bytes.0 as usize,
        };
        drop(generation);
        let shared = shared.clone();
        let drain = drain.signal();
        tokio::spawn(async move {
            serve(stream, peer, builder, tls, limits, &shared, drain).await;
            shared.conns.open.fetch_sub(1, Relaxed);
        });
    }
    drop(listener);
    drain.start();
    let deadline =
        tokio::time::Instant::now() + shared.generation.load().config.listen.drain_timeout;
    loop {
        let open = shared.conns.open.load(Relaxed) as usize;
        if open == 0 || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first bytes of an h2 connection with prior knowledge (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn serve(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    builder: Arc<http2::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    limits: h1::Limits,
    shared: &Arc<Shared>,
    drain: DrainSignal,
) {
    let info = Arc::new(ConnInfo::new(peer, tls.is_some()));
    match tls {
        None => {
            // h2 by prior knowledge, or HTTP/1.x: the first bytes tell.
            let mut first = BytesMut::with_capacity(8 << 10);
            let sniffed = tokio::time::timeout(limits.header_timeout, async {
                while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
                    if stream.read_buf(&mut first).await? == 0 {
                        break;
                    }
                }
                std::io::Result::Ok(())
            })
            .await;
            if !matches!(sniffed, Ok(Ok(()))) || first.is_empty() {
                return;
            }
            if first.starts_with(H2_PREFACE) {
                let io = Prefixed {
                    prefix: first.freeze(),
                    io: stream,
                };
                serve_hyper(io, &builder, shared, info, drain).await;
            } else {
                let (rd, wr) = stream.into_split();
                h1::serve(Box::new(rd), wr, first, shared, info, limits, drain).await;
            }
        }
        Some(acceptor) => {
            let stream =
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        shared.conns.tls_failed.fetch_add(1, Relaxed);
                        return;
                    }
                };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_hyper(stream, &builder, shared, info, drain).await;
            } else {
                let (rd, wr) = tokio::io::split(stream);
                h1::serve(
                    Box::new(rd),
                    wr,
                    BytesMut::new(),
                    shared,
                    info,
                    limits,
                    drain,
                )
                .await;
            }
        }
    }
}

/// h2 through hyper, shut down gracefully when the listener drains.
async fn serve_hyper<IO>(
    io: IO,
    builder: &http2::Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    info: Arc<ConnInfo>,
    drain: DrainSignal,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let shared = shared.clone();
        service_fn(move |request: Request<Incoming>| {
            let answer = handle(
                shared.clone(),
                info.clone(),
                request.map(ClientBody::Hyper),
                None,
                None,
            );
            async move { Ok::<_, std::convert::Infallible>(answer.await.into_response()) }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drain => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A stream with bytes already read from it put back in front.
struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
