//! Shadow copies: from the live path's `try_send` to the shadow's response.
//!
//! Each shadow target has a bounded queue. The live path only ever calls
//! `try_send` on it; a full queue drops the copy and counts it. A dispatcher per
//! target, on the proxy's separate shadow runtime (so shadow tasks never share
//! a worker thread with live ones), takes copies off the queue under the
//! target's concurrency limit, masks each one, and sends it through the
//! target's own connection pool with its own timeout. Whatever happens there,
//! a timeout, a refused connection, a mask that fails closed, ends in a
//! counter and an [`Exchange`] record, never on the live side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Semaphore, mpsc};
use umbra_trace::TraceContext;

use crate::config::HostPolicy;
use crate::forward::{apply_host, strip_hop_by_hop};
use crate::record::{Exchange, Recorder, RequestInfo, Role, TraceInfo};
use crate::stats::Exposition;
use crate::upstream::{self, Target};

pub const SHADOW_HEADER: &str = "x-umbra-shadow";

/// Why a sampled request was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotMirrored {
    TooLarge,
    Incomplete,
}

/// Counters that outlive reloads (Prometheus counters must never go down).
#[derive(Default)]
pub struct MirrorCounters {
    pub sampled: AtomicU64,
    pub rate_limited: AtomicU64,
    pub too_large: AtomicU64,
    pub incomplete: AtomicU64,
    targets: Mutex<HashMap<String, Arc<TargetCounters>>>,
    pub masked: Mutex<HashMap<String, u64>>,
    pub mask_dropped: Mutex<HashMap<String, u64>>,
}

#[derive(Default)]
pub struct TargetCounters {
    pub queued: AtomicU64,
    pub queue_full: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub mask_dropped: AtomicU64,
    pub in_flight: AtomicU64,
    pub queue_depth: AtomicU64,
}

impl MirrorCounters {
    pub fn target(&self, name: &str) -> Arc<TargetCounters> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "umbra_mirror_sampled_total",
            "counter",
            "Requests picked for mirroring.",
        );
        out.sample(
            "umbra_mirror_sampled_total",
            &[],
            self.sampled.load(Relaxed) as f64,
        );
        out.family(
            "umbra_mirror_skipped_total",
            "counter",
            "Sampled requests not copied, by reason (rate_limit, body_too_large, body_incomplete).",
        );
        for (reason, n) in [
            ("rate_limit", &self.rate_limited),
            ("body_too_large", &self.too_large),
            ("body_incomplete", &self.incomplete),
        ] {
            out.sample(
                "umbra_mirror_skipped_total",
                &[("reason", reason.into())],
                n.load(Relaxed) as f64,
            );
        }
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = targets.keys().collect();
        names.sort();
        out.family(
            "umbra_shadow_copies_total",
            "counter",
            "Copies by shadow and outcome (queued, queue_full, sent, failed, timeout, mask_dropped).",
        );
        for name in &names {
            let t = &targets[*name];
            for (outcome, n) in [
                ("queued", &t.queued),
                ("queue_full", &t.queue_full),
                ("sent", &t.sent),
                ("failed", &t.failed),
                ("timeout", &t.timed_out),
                ("mask_dropped", &t.mask_dropped),
            ] {
                out.sample(
                    "umbra_shadow_copies_total",
                    &[("shadow", name.to_string()), ("outcome", outcome.into())],
                    n.load(Relaxed) as f64,
                );
            }
        }
        out.family(
            "umbra_shadow_in_flight",
            "gauge",
            "Shadow requests being sent now.",
        );
        for name in &names {
            out.sample(
                "umbra_shadow_in_flight",
                &[("shadow", name.to_string())],
                targets[*name].in_flight.load(Relaxed) as f64,
            );
        }
        out.family(
            "umbra_shadow_queue_depth",
            "gauge",
            "Copies waiting in a shadow's queue.",
        );
        for name in &names {
            out.sample(
                "umbra_shadow_queue_depth",
                &[("shadow", name.to_string())],
                targets[*name].queue_depth.load(Relaxed) as f64,
            );
        }
        drop(targets);
        out.family(
            "umbra_mask_fields_total",
            "counter",
            "Values masked in shadow copies, by rule.",
        );
        let masked = self.masked.lock().unwrap_or_else(|p| p.into_inner());
        let mut rules: Vec<_> = masked.iter().collect();
        rules.sort();
        for (rule, n) in rules {
            out.sample(
                "umbra_mask_fields_total",
                &[("rule", rule.clone())],
                *n as f64,
            );
        }
        drop(masked);
        out.family(
            "umbra_mask_dropped_total",
            "counter",
            "Copies not sent because they could not be masked safely, by reason.",
        );
        let dropped = self.mask_dropped.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons: Vec<_> = dropped.iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            out.sample(
                "umbra_mask_dropped_total",
                &[("reason", reason.clone())],
                *n as f64,
            );
        }
    }
}

/// One copy, shared by every target it goes to.
pub struct CopyJob {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body as it arrived; joined on the shadow side, not on the live path.
    pub body: Vec<Bytes>,
    pub twin: u64,
    pub request: Arc<RequestInfo>,
    pub enqueued: Instant,
    pub trace: Option<TraceContext>,
}

/// A shadow target of the current generation.
pub struct ShadowTarget {
    pub name: Arc<str>,
    queue: mpsc::Sender<Arc<CopyJob>>,
    pub counters: Arc<TargetCounters>,
}

/// Everything a dispatcher needs; lives on the shadow runtime.
struct Dispatcher {
    name: Arc<str>,
    target: Target,
    host: HostPolicy,
    timeout: Duration,
    client: upstream::Client<Full<Bytes>>,
    limit: Arc<Semaphore>,
    counters: Arc<TargetCounters>,
    mirror: Arc<MirrorCounters>,
    masker: Arc<umbra_mask::Masker>,
    recorder: Recorder,
}

pub struct TargetSpec<'a> {
    pub config: &'a crate::config::Shadow,
    pub client: upstream::Client<Full<Bytes>>,
    pub masker: Arc<umbra_mask::Masker>,
    pub recorder: Recorder,
    pub mirror: Arc<MirrorCounters>,
}

impl ShadowTarget {
    /// Starts the target's dispatcher on `runtime`. It ends once the generation
    /// that owns this target is gone and its queue is empty.
    pub fn start(spec: TargetSpec<'_>, runtime: &tokio::runtime::Handle) -> ShadowTarget {
        let c = spec.config;
        let (tx, mut rx) = mpsc::channel::<Arc<CopyJob>>(c.queue);
        let counters = spec.mirror.target(&c.name);
        let name: Arc<str> = c.name.as_str().into();
        let dispatcher = Arc::new(Dispatcher {
            name: name.clone(),
            target: Target::new(&c.url),
            host: c.host.clone(),
            timeout: c.timeout,
            client: spec.client,
            limit: Arc::new(Semaphore::new(c.concurrency)),
            counters: counters.clone(),
            mirror: spec.mirror,
            masker: spec.masker,
            recorder: spec.recorder,
        });
        runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                dispatcher
                    .counters
                    .queue_depth
                    .store(rx.len() as u64, Relaxed);
                let Ok(permit) = dispatcher.limit.clone().acquire_owned().await else {
                    break;
                };
                let d = dispatcher.clone();
                tokio::spawn(async move {
                    d.counters.in_flight.fetch_add(1, Relaxed);
                    d.send(&job).await;
                    d.counters.in_flight.fetch_sub(1, Relaxed);
                    drop(permit);
                });
            }
        });
        ShadowTarget {
            name,
            queue: tx,
            counters,
        }
    }

    /// The live path's only contact with the shadow: never waits.
    fn offer(&self, job: Arc<CopyJob>) {
        match self.queue.try_send(job) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.counters.queue_full.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Dispatcher {
    async fn send(&self, job: &CopyJob) {
        let mut copy = umbra_mask::MaskRequest {
            method: job.method.clone(),
            uri: job.uri.clone(),
            headers: job.headers.clone(),
            body: join(&job.body),
        };
        let mut masked_counts = Vec::new();
        // Fail closed: a copy that could not be masked is never sent.
        match self.masker.mask(&mut copy) {
            Ok(report) => {
                if job.trace.is_some() {
                    masked_counts = report
                        .masked()
                        .iter()
                        .map(|(rule, n)| (rule.to_string(), *n as u64))
                        .collect();
                }
                let mut masked = self.mirror.masked.lock().unwrap_or_else(|p| p.into_inner());
                for (rule, n) in report.masked() {
                    *masked.entry(rule.to_string()).or_default() += *n as u64;
                }
                if let Some(why) = report.body_stripped() {
                    // Sent without its body, as `on_failure` asks: count it with the drops.
                    *self
                        .mirror
                        .mask_dropped
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(format!("body_stripped_{}", why.as_str()))
                        .or_default() += 1;
                }
            }
            Err(dropped) => {
                self.counters.mask_dropped.fetch_add(1, Relaxed);
                *self
                    .mirror
                    .mask_dropped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(dropped.as_str().to_string())
                    .or_default() += 1;
                return;
            }
        }
        let request_bytes = copy.body.len() as u64;
        let mut headers = copy.headers;
        strip_hop_by_hop(&mut headers);
        headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
        apply_host(&mut headers, &self.host, &self.target.url);
        if !headers.contains_key(http::header::HOST)
            && let Some(a) = job
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            // An HTTP/2 request carries its host as :authority; HTTP/1.1 needs the header.
            headers.insert(http::header::HOST, a);
        }
        let trace = job.trace.as_ref().map(|live| {
            let own = live.linked_root();
            own.inject(&mut headers);
            Box::new(TraceInfo {
                ctx: own,
                live: Some(live.clone()),
                start: SystemTime::now(),
                queue_wait: Some(job.enqueued.elapsed()),
                masked: masked_counts,
            })
        });
        let mut request = Request::new(Full::new(copy.body));
        *request.method_mut() = copy.method;
        *request.uri_mut() = copy.uri;
        *request.headers_mut() = headers;

        let started = Instant::now();
        let exchange = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .send(&self.target, request)
                .await
                .map_err(|e| e.error)?;
            let head = started.elapsed();
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame?.data_ref() {
                    bytes += d.len() as u64;
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, head, bytes))
        })
        .await;
        let (status, upstream_time, response_bytes, error) = match exchange {
            Ok(Ok((status, head, bytes))) => {
                self.counters.sent.fetch_add(1, Relaxed);
                (status, Some(head), bytes, None)
            }
            Ok(Err(_)) => {
                self.counters.failed.fetch_add(1, Relaxed);
                (0, None, 0, Some("shadow request failed"))
            }
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Relaxed);
                (0, None, 0, Some("shadow timeout"))
            }
        };
        self.recorder.record(Exchange {
            role: Role::Shadow,
            upstream: self.name.clone(),
            request: job.request.clone(),
            request_bytes,
            status,
            response_bytes,
            duration: started.elapsed(),
            upstream_time,
            error,
            twin: job.twin,
            trace,
        });
    }
}

/// A copy waiting for its request body to end.
pub struct CopyDraft {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub twin: u64,
    pub request: Arc<RequestInfo>,
    pub targets: Vec<Arc<ShadowTarget>>,
    pub counters: Arc<MirrorCounters>,
    /// The live span, when tracing is on: each copy gets a trace of its own linked to it.
    pub trace: Option<TraceContext>,
}

impl CopyDraft {
    /// Queues the copy with its whole body on every target.
    pub fn send(self, body: Vec<Bytes>) {
        let job = Arc::new(CopyJob {
            method: self.method,
            uri: self.uri,
            version: self.version,
            headers: self.headers,
            body,
            twin: self.twin,
            request: self.request,
            enqueued: Instant::now(),
            trace: self.trace,
        });
        for t in &self.targets {
            t.offer(job.clone());
        }
    }

    pub fn abandon(self, why: NotMirrored) {
        match why {
            NotMirrored::TooLarge => self.counters.too_large.fetch_add(1, Relaxed),
            NotMirrored::Incomplete => self.counters.incomplete.fetch_add(1, Relaxed),
        };
    }
}

fn join(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for c in many {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    }
}
