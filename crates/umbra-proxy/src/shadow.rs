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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, Semaphore};
use umbra_trace::TraceContext;

use crate::config::HostPolicy;
use crate::forward::{apply_host, strip_hop_by_hop};
use crate::record::{Exchange, Recorder, RequestInfo, Role, TraceInfo};
use crate::stats::Exposition;
use crate::upstream::{self, Answer, Batch, Target, UpstreamError};

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
    /// The live span, when tracing is on: each copy gets a trace of its own linked to it.
    pub trace: Option<TraceContext>,
}

/// How long the dispatcher lets copies gather after taking some: at high rates
/// it then takes a batch per tick instead of being woken for every copy.
const GATHER: Duration = Duration::from_millis(1);
/// The most copies pipelined on one connection.
const MAX_BATCH: usize = 32;

/// A shadow target of the current generation.
pub struct ShadowTarget {
    pub name: Arc<str>,
    /// A plain bounded channel: its `try_send` wakes nobody (the dispatcher polls
    /// it), which keeps a futex and a context switch per copy off the live path.
    queue: Option<SyncSender<Arc<CopyJob>>>,
    wake: Arc<Wake>,
    pub counters: Arc<TargetCounters>,
}

/// Wakes the dispatcher only when it went to sleep on an empty queue.
#[derive(Default)]
struct Wake {
    parked: AtomicBool,
    notify: Notify,
}

impl Drop for ShadowTarget {
    fn drop(&mut self) {
        // Close the queue first, so the woken dispatcher sees it closed once it is empty.
        drop(self.queue.take());
        self.wake.notify.notify_one();
    }
}

/// Everything a dispatcher needs; lives on the shadow runtime.
struct Dispatcher {
    name: Arc<str>,
    target: Target,
    host: HostPolicy,
    timeout: Duration,
    client: upstream::Client<Full<Bytes>>,
    limit: Arc<Semaphore>,
    /// Peak-free EWMA of the answer time, which sets the batch depth.
    latency_ns: AtomicU64,
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
        let (tx, rx) = sync_channel::<Arc<CopyJob>>(c.queue);
        let wake = Arc::new(Wake::default());
        let counters = spec.mirror.target(&c.name);
        let name: Arc<str> = c.name.as_str().into();
        let dispatcher = Arc::new(Dispatcher {
            name: name.clone(),
            target: Target::new(&c.url),
            host: c.host.clone(),
            timeout: c.timeout,
            client: spec.client,
            limit: Arc::new(Semaphore::new(c.concurrency)),
            // Until answers say otherwise, assume a slow shadow: one copy per connection.
            latency_ns: AtomicU64::new(GATHER.as_nanos() as u64),
            counters: counters.clone(),
            mirror: spec.mirror,
            masker: spec.masker,
            recorder: spec.recorder,
        });
        let waker = wake.clone();
        runtime.spawn(async move {
            // A copy found by the last look before sleeping.
            let mut found: Option<Arc<CopyJob>> = None;
            let mut closed = false;
            while !closed {
                let mut took = false;
                loop {
                    // As many copies as one batch takes (one when the shadow is slow).
                    let depth = dispatcher.depth();
                    let mut jobs = Vec::new();
                    while jobs.len() < depth {
                        match found.take().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                            Ok(job) => jobs.push(job),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if jobs.is_empty() {
                        break;
                    }
                    took = true;
                    let n = jobs.len() as u32;
                    dispatcher.counters.queue_depth.fetch_sub(n as u64, Relaxed);
                    let permits = match dispatcher.limit.clone().try_acquire_many_owned(n) {
                        Ok(p) => p,
                        Err(_) => match dispatcher.limit.clone().acquire_many_owned(n).await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let d = dispatcher.clone();
                    tokio::spawn(async move {
                        d.counters.in_flight.fetch_add(n as u64, Relaxed);
                        d.send(jobs).await;
                        d.counters.in_flight.fetch_sub(n as u64, Relaxed);
                        drop(permits);
                    });
                    if closed {
                        break;
                    }
                }
                if closed {
                    return;
                }
                if took {
                    tokio::time::sleep(GATHER).await;
                    continue;
                }
                // Empty: sleep until a copy arrives. The flag is set before the
                // last look, so a copy queued after that look finds it and wakes us.
                waker.parked.store(true, SeqCst);
                match rx.try_recv() {
                    Err(TryRecvError::Empty) => waker.notify.notified().await,
                    Err(TryRecvError::Disconnected) => return,
                    Ok(job) => found = Some(job),
                }
                waker.parked.store(false, SeqCst);
            }
        });
        ShadowTarget {
            name,
            queue: Some(tx),
            wake,
            counters,
        }
    }

    /// The live path's only contact with the shadow: never waits.
    fn offer(&self, job: Arc<CopyJob>) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(job) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
                self.counters.queue_depth.fetch_add(1, Relaxed);
                // Orders the push before the look at the flag (the dispatcher sets the
                // flag, then looks at the queue): one of the two sees the other.
                std::sync::atomic::fence(SeqCst);
                if self.wake.parked.load(SeqCst) && self.wake.parked.swap(false, SeqCst) {
                    self.wake.notify.notify_one();
                }
            }
            Err(_) => {
                self.counters.queue_full.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A copy made ready to send: masked, with the shadow's headers.
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// The copy's span, when tracing is on.
    trace: Option<Box<TraceInfo>>,
}

impl Dispatcher {
    /// Copies per batch: pipelining pays when the shadow answers within about a
    /// gathering tick; a slow shadow gets one copy per connection, as before,
    /// so a batch never queues copies behind a slow answer.
    fn depth(&self) -> usize {
        let latency = self.latency_ns.load(Relaxed).max(1);
        ((GATHER.as_nanos() as u64 / latency) as usize).clamp(1, MAX_BATCH)
    }

    fn observe(&self, head_time: Duration) {
        let sample = head_time.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.latency_ns.load(Relaxed);
        self.latency_ns.store(old - old / 8 + sample / 8, Relaxed);
    }

    /// Masks a copy and gives it the shadow's headers; None when masking failed
    /// closed (counted).
    fn prepare(&self, job: &CopyJob) -> Option<Prepared> {
        let mut copy = umbra_mask::MaskRequest {
            method: job.method.clone(),
            uri: job.uri.clone(),
            headers: job.headers.clone(),
            body: join(&job.body),
        };
        // Fail closed: a copy that could not be masked is never sent.
        let mut masked_counts = Vec::new();
        match self.masker.mask(&mut copy) {
            Ok(report) => {
                if job.trace.is_some() {
                    masked_counts = report
                        .masked()
                        .iter()
                        .map(|(rule, n)| (rule.to_string(), *n as u64))
                        .collect();
                }
                if !report.masked().is_empty() {
                    let mut masked = self.mirror.masked.lock().unwrap_or_else(|p| p.into_inner());
                    for (rule, n) in report.masked() {
                        *masked.entry(rule.to_string()).or_default() += *n as u64;
                    }
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
                return None;
            }
        }
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
        Some(Prepared {
            method: copy.method,
            uri: copy.uri,
            headers,
            body: copy.body,
            trace,
        })
    }

    async fn send(&self, jobs: Vec<Arc<CopyJob>>) {
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(p) = self.prepare(&job) {
                ready.push((job, p));
            }
        }
        if ready.is_empty() {
            return;
        }
        let started = Instant::now();
        if self.target.url.is_https() {
            // TLS goes through hyper, one copy at a time.
            for (job, mut p) in ready {
                let bytes = p.body.len() as u64;
                let trace = p.trace.take();
                let mut request = Request::new(Full::new(p.body));
                *request.method_mut() = p.method;
                *request.uri_mut() = p.uri;
                *request.headers_mut() = p.headers;
                let started = Instant::now();
                let exchange = tokio::time::timeout(self.timeout, async {
                    let response = self
                        .client
                        .send(&self.target, request, None, started)
                        .await
                        .map_err(|e| e.error)?;
                    let head_time = started.elapsed();
                    let status = response.status.as_u16();
                    let mut body = response.body;
                    let mut body_bytes = 0u64;
                    while let Some(frame) = body.frame().await {
                        let frame =
                            frame.map_err(|e| UpstreamError::Read(std::io::Error::other(e)))?;
                        if let Some(d) = frame.data_ref() {
                            body_bytes += d.len() as u64;
                        }
                    }
                    Ok(Answer {
                        status,
                        head_time,
                        body_bytes,
                    })
                })
                .await
                .unwrap_or(Err(UpstreamError::TimedOut(self.timeout)));
                self.record(&job, bytes, started, exchange, trace);
            }
            return;
        }
        let mut traces: Vec<Option<Box<TraceInfo>>> =
            ready.iter_mut().map(|(_, p)| p.trace.take()).collect();
        let mut batch = Batch::default();
        for (_, p) in &ready {
            let target = p.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut headers = p.headers.clone();
            headers.remove(http::header::CONTENT_LENGTH);
            batch.push(
                &p.method,
                target,
                &headers,
                self.target.url.authority(),
                &p.body,
            );
        }
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        self.client
            .pipeline(&self.target, &batch, deadline, self.timeout, |i, result| {
                if let Some((job, p)) = ready.get(i) {
                    let trace = traces.get_mut(i).and_then(Option::take);
                    self.record(job, p.body.len() as u64, started, result, trace);
                }
            })
            .await;
    }

    fn record(
        &self,
        job: &CopyJob,
        request_bytes: u64,
        started: Instant,
        result: Result<Answer, UpstreamError>,
        trace: Option<Box<TraceInfo>>,
    ) {
        let (status, upstream_time, response_bytes, error) = match result {
            Ok(a) => {
                self.counters.sent.fetch_add(1, Relaxed);
                self.observe(a.head_time);
                (a.status, Some(a.head_time), a.body_bytes, None)
            }
            Err(UpstreamError::TimedOut(_)) => {
                self.counters.timed_out.fetch_add(1, Relaxed);
                (0, None, 0, Some("shadow timeout"))
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Relaxed);
                (0, None, 0, Some("shadow request failed"))
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
