//! Client listeners: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or TLS with
//! ALPN), header and body timeouts, header size limits, graceful drain.
//!
//! hyper answers malformed requests with 400 and oversized heads with 431 and
//! closes the connection; a head that does not arrive within the header
//! timeout closes it too (slowloris). A TLS handshake gets the same time limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Listen;
use crate::forward::{ConnInfo, handle};
use crate::{Shared, log};

#[derive(Default)]
pub struct ConnCounters {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub tls_failed: AtomicU64,
}

pub fn builder(listen: &Listen) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listen.header_timeout)
        .max_buf_size(listen.max_header_bytes.0.max(8192) as usize)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
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

/// Accepts connections until `stop` flips, then lets the requests in flight
/// finish for up to the drain timeout. Returns the connections still open then.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let graceful = GracefulShutdown::new();
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
        let generation = shared.generation.load();
        let builder = generation.http.clone();
        let tls = generation.tls.clone();
        let header_timeout = generation.config.listen.header_timeout;
        drop(generation);
        let shared = shared.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            shared.conns.open.fetch_add(1, Relaxed);
            serve(stream, peer, builder, tls, header_timeout, &shared, watcher).await;
            shared.conns.open.fetch_sub(1, Relaxed);
        });
    }
    drop(listener);
    let drain = shared.generation.load().config.listen.drain_timeout;
    let open = graceful.count();
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    shared: &Arc<Shared>,
    watcher: Watcher,
) {
    let info = Arc::new(ConnInfo::new(peer, tls.is_some()));
    let service = {
        let shared = shared.clone();
        service_fn(move |request| handle(shared.clone(), info.clone(), request))
    };
    match tls {
        None => {
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                _ => {
                    shared.conns.tls_failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        }
    }
}
