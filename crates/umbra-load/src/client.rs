//! The HTTP side: target URLs, connections (HTTP/1.1 or HTTP/2, plain or TLS), a
//! small keep-alive pool for the open model, and error classification.
//!
//! HTTP/1.1 goes through our own lean connection (`client/h1.rs`, which says
//! why); HTTP/2 through hyper's connection-level API. The closed model gives each
//! worker its own connection (no pool bookkeeping per request, as oha does); the
//! open model's pool is a stack of idle connections behind one mutex, held for a
//! push or a pop.

mod h1;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper::header::HeaderValue;
use hyper::{Request, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use tower_service::Service;

use crate::error::Error;
use crate::record::ErrorKind;
use crate::synth::Synthesised;

/// Where the load goes: `http(s)://host:port/optional/prefix`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, for reports.
    pub url: String,
    pub https: bool,
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    /// The URL's path without a trailing slash; prepended to every request path.
    pub prefix: String,
    host: HeaderValue,
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target, Error> {
        let bad = |reason: &str| Error::invalid("target URL", s, reason);
        let uri: Uri = s
            .trim()
            .parse()
            .map_err(|e| bad(&format!("not a URL ({e})")))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("no scheme; write it like http://127.0.0.1:8080"))?;
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            other => return Err(bad(&format!("scheme {other:?} is not http or https"))),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("no host; write it like http://127.0.0.1:8080"))?;
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad(
                "has a query; the target is a base URL, queries come from the profiles",
            ));
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?;
        Ok(Target {
            url: s.trim().to_string(),
            https,
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            host,
        })
    }
}

impl Target {
    fn base_uri(&self) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default()
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// HTTP/2: prior knowledge on http://, ALPN `h2` on https://.
    pub http2: bool,
    /// Accept any server certificate (self-signed test targets).
    pub insecure: bool,
    /// Bound on a whole request: connect, send, and the full response body.
    pub timeout: Duration,
    /// Open model: connections kept idle for reuse (HTTP/2: connections shared).
    pub connections: usize,
}

/// One connection's request sender.
pub enum Sender {
    H1(Box<h1::Conn>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(c) => c.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Why a send failed: the connection was already unusable, or the request failed.
enum SendError {
    Stale,
    Failed(ErrorKind),
}

impl SendError {
    fn kind(&self) -> ErrorKind {
        match self {
            SendError::Stale => ErrorKind::Reset,
            SendError::Failed(k) => *k,
        }
    }
}

/// A response, as much as the recorder needs.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub status: u16,
    /// Status line, headers and body bytes (approximate for the head).
    pub bytes: u64,
}

/// Opens connections to one target and sends requests on them.
pub struct Client {
    connector: HttpsConnector<HttpConnector>,
    target: Target,
    base: Uri,
    http2: bool,
    idle: Mutex<Vec<h1::Conn>>,
    h2: Mutex<Vec<http2::SendRequest<Full<Bytes>>>>,
    h2_next: AtomicUsize,
    max_idle: usize,
    /// HTTP/1.1 open model: one permit per connection, so a burst queues for a
    /// connection instead of opening thousands (latency still counts from the due time).
    conn_permits: tokio::sync::Semaphore,
    first_connect_error: Mutex<Option<String>>,
}

impl Client {
    pub fn new(target: Target, opts: &HttpOptions) -> Result<Client, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let tls = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            builder.with_webpki_roots().with_no_client_auth()
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.timeout));
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if opts.http2 {
            b.enable_http2().wrap_connector(http)
        } else {
            b.enable_http1().wrap_connector(http)
        };
        Ok(Client {
            connector,
            base: target.base_uri(),
            target,
            http2: opts.http2,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            h2_next: AtomicUsize::new(0),
            max_idle: opts.connections.max(1),
            conn_permits: tokio::sync::Semaphore::new(opts.connections.max(1)),
            first_connect_error: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The first connection error's message, to explain an unreachable target.
    pub fn first_connect_error(&self) -> Option<String> {
        self.first_connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn connect_failed(&self, e: &(dyn std::error::Error + 'static)) -> ErrorKind {
        let mut first = self
            .first_connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            *first = Some(msg);
        }
        ErrorKind::Connect
    }

    /// Opens a new connection (HTTP/2: and spawns its driver task).
    pub async fn connect(&self) -> Result<Sender, ErrorKind> {
        let io = self
            .connector
            .clone()
            .call(self.base.clone())
            .await
            .map_err(|e| self.connect_failed(&*e))?;
        if self.http2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| self.connect_failed(&e))?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            Ok(Sender::H1(Box::new(h1::Conn::new(Box::new(TokioIo::new(
                io,
            ))))))
        }
    }

    /// Sends one request on `sender` and reads the whole response body.
    async fn send(&self, sender: &mut Sender, req: &Synthesised) -> Result<Response, SendError> {
        let s = match sender {
            Sender::H1(c) => {
                return c.send(req, self.target.host.as_bytes()).await.map_err(|k| {
                    if c.failed_before_response && c.served > 0 {
                        SendError::Stale
                    } else {
                        SendError::Failed(k)
                    }
                });
            }
            Sender::H2(s) => s,
        };
        // A connection that cannot take a request (GOAWAY, closed) is stale, not a failure.
        s.ready().await.map_err(|_| SendError::Stale)?;
        let mut r = Request::new(Full::new(req.body.clone()));
        *r.method_mut() = req.method.clone();
        *r.uri_mut() = Uri::builder()
            .scheme(self.target.scheme.clone())
            .authority(self.target.authority.clone())
            .path_and_query(req.path.as_str())
            .build()
            .map_err(|_| SendError::Failed(ErrorKind::Other))?;
        *r.headers_mut() = req.headers.clone();
        let resp = s
            .send_request(r)
            .await
            .map_err(|e| SendError::Failed(classify(&e)))?;
        let status = resp.status().as_u16();
        let mut bytes: u64 = 17;
        for (k, v) in resp.headers() {
            bytes += (k.as_str().len() + v.len() + 4) as u64;
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| SendError::Failed(classify(&e)))?;
            if let Some(d) = frame.data_ref() {
                bytes += d.len() as u64;
            }
        }
        Ok(Response { status, bytes })
    }

    /// Sends on the connection in `slot`, opening one if it is empty or closed.
    /// A reused connection found stale (closed by the server while idle, or after
    /// its request limit) is replaced and the request sent again, once: that is
    /// the connection ending, not the target failing the request. `slot` is
    /// emptied when its connection cannot be used again.
    pub async fn send_on(
        &self,
        slot: &mut Option<Sender>,
        req: &Synthesised,
    ) -> Result<Response, ErrorKind> {
        if slot.as_ref().is_some_and(Sender::is_closed) {
            *slot = None;
        }
        let mut retried = slot.is_none();
        loop {
            let s = match slot {
                Some(s) => s,
                None => slot.insert(self.connect().await?),
            };
            match self.send(s, req).await {
                Ok(r) => {
                    if s.is_closed() {
                        *slot = None;
                    }
                    return Ok(r);
                }
                Err(SendError::Stale) if !retried => {
                    *slot = None;
                    retried = true;
                }
                Err(e) => {
                    *slot = None;
                    return Err(e.kind());
                }
            }
        }
    }

    /// Open model: sends on a pooled connection (opening one if none is idle).
    pub async fn send_pooled(&self, req: &Synthesised) -> Result<Response, ErrorKind> {
        if self.http2 {
            let mut slot = self.h2_sender().map(Sender::H2);
            let fresh = slot.is_none();
            let r = self.send_on(&mut slot, req).await;
            match slot {
                Some(Sender::H2(s)) if fresh => {
                    self.h2.lock().unwrap_or_else(|p| p.into_inner()).push(s)
                }
                None => self.forget_h2(),
                _ => {}
            }
            return r;
        }
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self
            .conn_permits
            .acquire()
            .await
            .map_err(|_| ErrorKind::Other)?;
        let popped = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut slot = popped.map(|c| Sender::H1(Box::new(c)));
        let r = self.send_on(&mut slot, req).await;
        if let Some(Sender::H1(c)) = slot {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(*c);
        }
        r
    }

    /// HTTP/2 multiplexes: up to `min(connections, 8)` shared connections, used in
    /// turn; `None` when another should be opened.
    fn h2_sender(&self) -> Option<http2::SendRequest<Full<Bytes>>> {
        let i = self.h2_next.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|s| !s.is_closed());
        if conns.len() >= self.max_idle.min(8) {
            return Some(conns[i % conns.len()].clone());
        }
        None
    }

    fn forget_h2(&self) {
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !s.is_closed());
    }
}

/// Maps a hyper error to our classes by walking its causes for an I/O error.
fn classify(e: &hyper::Error) -> ErrorKind {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return h1::io_kind(io);
        }
        src = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorKind::Reset
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Other
    }
}

/// `--insecure`: a verifier that accepts any certificate (signatures still checked
/// for form by the provider, not for trust).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t: Target = "http://127.0.0.1:8080/api/".parse().unwrap();
        assert_eq!(t.prefix, "/api");
        assert!(!t.https);
        let t: Target = "https://example.com".parse().unwrap();
        assert_eq!(t.prefix, "");
        for (bad, why) in [
            ("127.0.0.1:8080", "scheme"),
            ("ftp://x", "not http"),
            ("http://x/?a=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
