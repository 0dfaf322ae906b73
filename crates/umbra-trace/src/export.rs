//! The exporter: a bounded queue in front of one background thread that
//! batches spans and posts them to the collector over OTLP/HTTP.
//!
//! The queue is a `std::sync::mpsc::sync_channel`: `try_send` is a few atomic
//! operations and never waits. The thread polls it every few milliseconds
//! instead of blocking in `recv`: a parked receiver would turn every send
//! into a futex wake on the caller's thread (the proxy's recorder polls its
//! own queue for the same reason). Posting runs on a current-thread tokio
//! runtime owned by this thread, with hyper's client (http and https), so a
//! slow collector holds up only this thread; while it waits, the queue fills
//! and further spans are dropped and counted. There are no retries: a retry
//! would hold the queue back for the spans behind it.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::config::{Compression, TraceConfig};
use crate::encode::{self, Kept};
use crate::span::SpanRecord;

/// How often the thread looks at the queue.
const POLL: Duration = Duration::from_millis(5);

pub(crate) struct Queued {
    pub span: SpanRecord,
    pub kept: Kept,
}

/// Counters shared by the tracer (callers) and the export thread.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub recorded: AtomicU64,
    pub discarded: AtomicU64,
    pub queued: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub exported: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub failed_requests: AtomicU64,
    pub requests: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// Flush handshake: a caller bumps `requested` and waits until the thread
/// has exported everything queued before and set `done` to at least that.
#[derive(Default)]
struct Flush {
    requested: AtomicU64,
    done: Mutex<u64>,
    cv: Condvar,
}

pub(crate) struct Exporter {
    tx: SyncSender<Queued>,
    flush: Arc<Flush>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the trace export thread: {0}")]
    Thread(std::io::Error),
    #[error("building the trace export runtime: {0}")]
    Runtime(std::io::Error),
    #[error("TLS for the trace collector: {0}")]
    Tls(rustls::Error),
}

impl Exporter {
    pub fn start(cfg: &TraceConfig, counters: Arc<Counters>) -> Result<Exporter, StartError> {
        let (tx, rx) = sync_channel(cfg.queue_size);
        let flush = Arc::new(Flush::default());
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let client = client(cfg)?;
        let worker = Worker {
            rx,
            counters,
            flush: flush.clone(),
            stop: stop.clone(),
            endpoint: cfg.endpoint.clone(),
            headers: cfg.headers.clone(),
            gzip: cfg.compression == Compression::Gzip,
            timeout: cfg.timeout,
            batch_size: cfg.batch_size,
            queue_size: cfg.queue_size,
            interval: cfg.interval,
            resource: encode::resource(&cfg.service_name, &cfg.resource),
            client,
        };
        let thread = std::thread::Builder::new()
            .name("umbra-trace-export".into())
            .spawn(move || worker.run(runtime))
            .map_err(StartError::Thread)?;
        Ok(Exporter {
            tx,
            flush,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Never waits: false when the queue is full (the span is dropped).
    pub fn try_send(&self, q: Queued) -> bool {
        self.tx.try_send(q).is_ok()
    }

    /// Waits up to `timeout` for everything queued so far to be exported (or
    /// to fail); true if it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.flush.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + timeout;
        let mut done = self.flush.done.lock().unwrap_or_else(|p| p.into_inner());
        while *done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .flush
                .cv
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Flushes, stops the thread and waits for it (up to `timeout`).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        self.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // A thread stuck on a slow collector is left to finish alone.
            if flushed {
                let _ = h.join();
            }
        }
        flushed
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Not joined: dropping a tracer must never wait on a collector.
        self.stop.store(true, Ordering::Release);
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client(cfg: &TraceConfig) -> Result<HttpsClient, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(StartError::Tls)?;
    use hyper_rustls::ConfigBuilderExt;
    let tls = tls.with_webpki_roots().with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector))
}

struct Worker {
    rx: Receiver<Queued>,
    counters: Arc<Counters>,
    flush: Arc<Flush>,
    stop: Arc<AtomicBool>,
    endpoint: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    gzip: bool,
    timeout: Duration,
    batch_size: usize,
    queue_size: usize,
    interval: Duration,
    resource: Resource,
    client: HttpsClient,
}

impl Worker {
    fn run(self, runtime: tokio::runtime::Runtime) {
        let mut batch: Vec<Queued> = Vec::with_capacity(self.batch_size);
        let mut due = Instant::now() + self.interval;
        loop {
            // Read the flush request before draining, so everything queued
            // before it was made is in this round.
            let flush_to = self.flush.requested.load(Ordering::Acquire);
            let stopping = self.stop.load(Ordering::Acquire);
            let mut gone = false;
            // At most one queue's worth per round, so a steady stream of
            // spans cannot keep this loop from checking its deadlines.
            for _ in 0..self.queue_size {
                match self.rx.try_recv() {
                    Ok(q) => {
                        batch.push(q);
                        if batch.len() >= self.batch_size {
                            self.export(&runtime, &mut batch);
                            due = Instant::now() + self.interval;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            let flushing = flush_to > *self.flush.done.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if !batch.is_empty() && (now >= due || flushing || stopping || gone) {
                self.export(&runtime, &mut batch);
            }
            if batch.is_empty() && now >= due {
                due = now + self.interval;
            }
            if flushing {
                let mut done = self.flush.done.lock().unwrap_or_else(|p| p.into_inner());
                *done = (*done).max(flush_to);
                self.flush.cv.notify_all();
            }
            if stopping || gone {
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    fn export(&self, runtime: &tokio::runtime::Runtime, batch: &mut Vec<Queued>) {
        let n = batch.len() as u64;
        let body = encode::encode(&self.resource, batch.iter().map(|q| (&q.span, q.kept)));
        batch.clear();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = runtime.block_on(async {
            match tokio::time::timeout(self.timeout, self.post(body)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                )),
            }
        });
        match outcome {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                self.counters
                    .exported
                    .fetch_add(n - rejected, Ordering::Relaxed);
                self.counters
                    .rejected
                    .fetch_add(rejected, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                self.counters
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                *self
                    .counters
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("exporting {n} spans to {}: {e}", self.endpoint));
            }
        }
    }

    /// Posts one body; the spans the collector rejected (partial success).
    async fn post(&self, body: Vec<u8>) -> Result<u64, String> {
        let body = if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body)
                .and_then(|_| enc.finish())
                .map_err(|e| format!("gzip: {e}"))?
        } else {
            body
        };
        let mut req = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                http::header::USER_AGENT,
                concat!("umbra/", env!("CARGO_PKG_VERSION")),
            );
        if self.gzip {
            req = req.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        // Collectors answer with a small message; more is not read.
        let bytes = Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(format!(
                "HTTP {status}{}{}",
                if text.is_empty() { "" } else { ": " },
                text.trim()
            ));
        }
        let rejected = ExportTraceServiceResponse::decode(bytes.as_ref())
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans.max(0) as u64)
            .unwrap_or(0);
        Ok(rejected)
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
