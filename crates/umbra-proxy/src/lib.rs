//! Umbra's shadowing reverse proxy.
//!
//! Live requests go to a production pool (weighted power of two choices over
//! peak-EWMA, health checks, ejection) and back as fast as production answers.
//! A configurable share is copied, masked, and sent to one or more shadows
//! through bounded queues on a separate runtime, so nothing a shadow does can
//! reach a live request. Every exchange, live and shadow, is classified to its
//! nearest profile off the hot path and measured per (role, upstream, profile).
//!
//! The running configuration is a [`Generation`], swapped whole on a reload
//! (`arc-swap`), so a request sees one consistent configuration from start to
//! end and a reload never drops a connection.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod canary;
pub mod config;
pub mod forward;
pub mod h1;
mod health;
mod log;
pub mod mirror;
pub mod pool;
pub mod record;
pub mod resources;
pub mod server;
pub mod shadow;
pub mod stats;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderName;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::access_log::LogFormat;
use crate::body::RequestBody;
use crate::canary::{CanaryRoute, CanaryShare, CanarySplit};
use crate::config::Config;
use crate::forward::HttpClient;
use crate::mirror::MirrorPlan;
use crate::pool::Pool;
use crate::record::{Recorder, RecorderSettings};
use crate::resources::Resources;
use crate::server::ConnCounters;
use crate::shadow::{MirrorCounters, ShadowTarget, TargetSpec};
use crate::stats::{Exposition, StatsTable};

pub use crate::config::{ConfigError, Flags};

/// One configuration, with everything built from it.
pub struct Generation {
    pub config: Arc<Config>,
    pub pool: Arc<Pool>,
    pub upstream: upstream::Client<RequestBody>,
    pub mirror: MirrorPlan,
    pub shadows: Vec<Arc<ShadowTarget>>,
    /// `[canary]`: the new version's pool and its shadow-stage copies.
    pub canary: Option<CanaryRoute>,
    /// Request headers the access log format names.
    pub log_captured: Vec<HeaderName>,
    /// hyper's h2 server settings.
    pub http: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    pub tls: Option<TlsAcceptor>,
    /// Dropping the generation drops this, which ends its background tasks.
    _stop: watch::Sender<()>,
}

/// State that lives as long as the proxy, across reloads.
pub struct Shared {
    pub generation: ArcSwap<Generation>,
    /// Built once at start: tracing settings need a restart to change.
    pub tracer: umbra_trace::Tracer,
    pub recorder: Recorder,
    pub mirror_counters: Arc<MirrorCounters>,
    pub stats: Arc<Mutex<StatsTable>>,
    pub conns: ConnCounters,
    pub resources: Arc<Resources>,
    /// The canary's share, set by its controller; kept across reloads.
    pub canary: CanarySplit,
    recorder_settings: Arc<Mutex<RecorderSettings>>,
    background: tokio::runtime::Handle,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    started: Instant,
    build_lock: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the background runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<usize>,
    background: Option<tokio::sync::oneshot::Sender<()>>,
    background_thread: Option<std::thread::JoinHandle<()>>,
    recorder_thread: Option<std::thread::JoinHandle<()>>,
}

/// The proxy as the admin API sees it.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the listener and starts serving. Must be called inside a Tokio runtime.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        Proxy::start_observed(config, None).await
    }

    /// [`Proxy::start`], with every measured exchange also handed to `observer`
    /// on the recorder thread.
    pub async fn start_observed(
        config: Config,
        observer: Option<Box<dyn record::Observer>>,
    ) -> Result<Proxy, StartError> {
        let (handle, background, background_thread) =
            background_runtime().map_err(StartError::Runtime)?;
        let stats = Arc::new(Mutex::new(StatsTable::default()));
        let settings = Arc::new(Mutex::new(recorder_settings(&config)?));
        let tracer = build_tracer(&config)?;
        let (recorder, recorder_thread) =
            record::start(stats.clone(), settings.clone(), observer, tracer.clone());
        let mirror_counters = Arc::new(MirrorCounters::default());
        let resources = Arc::new(Resources::default());
        let config = Arc::new(config);
        let generation = build_generation(
            config.clone(),
            None,
            &recorder,
            &mirror_counters,
            &resources,
            &handle,
        )
        .map_err(StartError::Config)?;
        let listener = TcpListener::bind(config.listen.address)
            .await
            .map_err(|source| StartError::Bind {
                address: config.listen.address,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            address: config.listen.address,
            source,
        })?;
        if tracer.is_enabled() {
            log::info(format_args!("tracing: {}", tracing_summary(&config)));
        }
        let shared = Arc::new(Shared {
            generation: ArcSwap::from_pointee(generation),
            tracer,
            recorder,
            mirror_counters,
            stats,
            conns: ConnCounters::default(),
            resources,
            canary: CanarySplit::default(),
            recorder_settings: settings,
            background: handle,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            started: Instant::now(),
            build_lock: Mutex::new(()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(server::accept_loop(listener, shared.clone(), stop_rx));
        log::info(format_args!(
            "proxy listening on {address}{}",
            if config.listen.tls.is_some() {
                " (TLS)"
            } else {
                ""
            }
        ));
        Ok(Proxy {
            shared,
            address,
            stop,
            accept,
            background: Some(background),
            background_thread: Some(background_thread),
            recorder_thread: Some(recorder_thread),
        })
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, waits up to the drain timeout for requests in flight,
    /// then stops the shadows and the recorder. Returns the connections still
    /// open when the drain timed out.
    pub async fn shutdown(mut self) -> usize {
        let _ = self.stop.send(true);
        let left = (&mut self.accept).await.unwrap_or(0);
        log::info(format_args!(
            "proxy stopped ({left} connections cut at the drain timeout)"
        ));
        // Stopping the background runtime ends the shadow dispatchers and drops
        // their recorder clones; the last clone is ours.
        if let Some(tx) = self.background.take() {
            let _ = tx.send(());
        }
        let background = self.background_thread.take();
        let recorder = self.recorder_thread.take();
        let tracer = self.shared.tracer.clone();
        let shared = self.shared;
        tokio::task::spawn_blocking(move || {
            if let Some(t) = background {
                let _ = t.join();
            }
            drop(shared);
            if let Some(t) = recorder {
                // The recorder ends when the last `Recorder` is dropped; handles
                // held elsewhere (the admin API) may keep it alive, so do not wait forever.
                let deadline = Instant::now() + Duration::from_secs(2);
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // The spans of the last requests go out, or are given up on.
            tracer.shutdown(Duration::from_secs(2));
        })
        .await
        .ok();
        left
    }
}

impl ProxyHandle {
    pub fn config(&self) -> Arc<Config> {
        self.shared.generation.load().config.clone()
    }

    /// Applies a new configuration without dropping connections. The listen
    /// address cannot change this way (that needs a restart); it is refused.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let s = &self.shared;
        let _one_at_a_time = s.build_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = s.generation.load_full();
        let result = (|| {
            if config.listen.address != current.config.listen.address {
                return Err(format!(
                    "listen.address changed from {} to {}: restart the proxy to move it",
                    current.config.listen.address, config.listen.address
                ));
            }
            // The canary's controller, its stored state and the analysis feed are
            // keyed by its name: a new canary starts with a new process.
            let name = |c: &Config| c.canary.as_ref().map(|c| c.name.clone());
            if name(&config) != name(&current.config) {
                return Err(format!(
                    "canary.name changed from {:?} to {:?}: restart the proxy to start a new canary",
                    name(&current.config),
                    name(&config)
                ));
            }
            let settings = recorder_settings(&config).map_err(|e| e.to_string())?;
            let next = build_generation(
                Arc::new(config),
                Some(&current),
                &s.recorder,
                &s.mirror_counters,
                &s.resources,
                &s.background,
            )?;
            *s.recorder_settings
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = settings;
            s.generation.store(Arc::new(next));
            Ok(())
        })();
        match &result {
            Ok(()) => {
                s.reloads_ok.fetch_add(1, Relaxed);
                log::info(format_args!("configuration reloaded"));
            }
            Err(e) => {
                s.reloads_failed.fetch_add(1, Relaxed);
                log::warn(format_args!("configuration not reloaded: {e}"));
            }
        }
        result
    }

    /// The latest CPU (cores) and memory (bytes) readings per (role, upstream),
    /// for upstreams with a `metrics` URL that answered.
    pub fn resource_usage(&self) -> Vec<(String, String, Option<f64>, Option<f64>)> {
        let usage = self
            .shared
            .resources
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        usage
            .iter()
            .filter(|(_, u)| u.error.is_none())
            .map(|((role, upstream), u)| {
                (role.clone(), upstream.clone(), u.cpu_cores, u.memory_bytes)
            })
            .collect()
    }

    /// Sets a production server's balancing weight (`host:port` or URL).
    pub fn set_weight(&self, server: &str, weight: u32) -> bool {
        self.shared
            .generation
            .load()
            .pool
            .set_weight(server, weight)
    }

    /// The canary's name, when `[canary]` is configured.
    pub fn canary_name(&self) -> Option<String> {
        let g = self.shared.generation.load();
        g.canary.as_ref().map(|c| c.name.to_string())
    }

    /// Sets what the canary gets: shadow-stage copies, or a share of live traffic.
    pub fn set_canary_share(&self, share: CanaryShare) {
        self.shared.canary.set(share);
    }

    pub fn canary_share(&self) -> CanaryShare {
        self.shared.canary.get()
    }

    /// Ready when at least one production server is neither failing checks nor ejected.
    pub fn ready(&self) -> bool {
        let g = self.shared.generation.load();
        g.pool
            .endpoints
            .iter()
            .any(|e| e.healthy() && !g.pool.is_ejected(e))
    }

    /// Requests sent to each production server since it joined the pool
    /// (`host:port`, count): the counters the balancer already keeps, read
    /// without a lock. A server dropped by a reload and added back starts at 0.
    pub fn production_requests(&self) -> Vec<(Arc<str>, u64)> {
        self.shared
            .generation
            .load()
            .pool
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.requests.load(Relaxed)))
            .collect()
    }

    /// The trace viewer link of a trace (`[tracing] link_template`), if one is set.
    pub fn trace_url(&self, trace_id_hex: &str) -> Option<String> {
        let id = umbra_trace::TraceId::from_hex(trace_id_hex).ok()?;
        self.shared.tracer.trace_url(id, None)
    }

    /// `/metrics` in Prometheus text format (0.0.4).
    pub fn metrics(&self) -> String {
        self.render_metrics(Exposition::default())
    }

    /// `/metrics` in OpenMetrics 1.0, with the latest slow request's trace as an
    /// exemplar on each latency histogram (when tracing is on), without the
    /// closing `# EOF` (the caller may add its own families first).
    pub fn openmetrics(&self) -> String {
        self.render_metrics(Exposition::openmetrics())
    }

    fn render_metrics(&self, mut out: Exposition) -> String {
        let s = &self.shared;
        let exemplars = s.tracer.exemplars();
        s.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(&mut out, &|profile, role| {
                exemplars.and_then(|e| e.latest(profile, role))
            });
        s.mirror_counters.render(&mut out);
        s.resources.render(&mut out);
        if s.tracer.is_enabled() {
            let t = s.tracer.stats();
            out.family(
                "umbra_trace_spans_total",
                "counter",
                "Spans by outcome: exported, discarded by sampling, dropped (queue full), failed or rejected by the collector.",
            );
            for (outcome, n) in [
                ("exported", t.exported),
                ("discarded", t.discarded),
                ("dropped", t.dropped_queue_full),
                ("failed", t.failed),
                ("rejected", t.rejected),
            ] {
                out.sample(
                    "umbra_trace_spans_total",
                    &[("outcome", outcome.to_string())],
                    n as f64,
                );
            }
            let (waiting, evicted) = {
                let st = s.stats.lock().unwrap_or_else(|p| p.into_inner());
                (st.linked_waiting, st.linked_evicted)
            };
            out.family(
                "umbra_trace_twins_waiting",
                "gauge",
                "Spans of mirrored requests held until a twin is kept by a tail rule (slow or failed), so the two are exported together.",
            );
            out.sample("umbra_trace_twins_waiting", &[], waiting as f64);
            out.family(
                "umbra_trace_twins_forgotten_total",
                "counter",
                "Mirrored requests whose held spans were forgotten to bound memory; a twin kept later is exported without them.",
            );
            out.sample("umbra_trace_twins_forgotten_total", &[], evicted as f64);
        }
        let g = s.generation.load();
        let servers: Vec<_> = g.pool.endpoints.iter().collect();
        let label = |e: &pool::Endpoint| vec![("upstream", e.name.to_string())];
        out.family(
            "umbra_upstream_weight",
            "gauge",
            "Balancing weight of each production server.",
        );
        for e in &servers {
            out.sample("umbra_upstream_weight", &label(e), e.weight() as f64);
        }
        out.family(
            "umbra_upstream_healthy",
            "gauge",
            "1 when a production server passes its health checks and is not ejected.",
        );
        for e in &servers {
            let up = e.healthy() && !g.pool.is_ejected(e);
            out.sample(
                "umbra_upstream_healthy",
                &label(e),
                if up { 1.0 } else { 0.0 },
            );
        }
        out.family(
            "umbra_upstream_in_flight",
            "gauge",
            "Requests in flight to each production server.",
        );
        for e in &servers {
            out.sample("umbra_upstream_in_flight", &label(e), e.in_flight() as f64);
        }
        out.family(
            "umbra_upstream_latency_ewma_seconds",
            "gauge",
            "Peak-EWMA response-head latency the balancer uses for each production server.",
        );
        for e in &servers {
            out.sample(
                "umbra_upstream_latency_ewma_seconds",
                &label(e),
                e.ewma().as_secs_f64(),
            );
        }
        out.family(
            "umbra_upstream_ejections_total",
            "counter",
            "Passive ejections of each production server.",
        );
        for e in &servers {
            out.sample(
                "umbra_upstream_ejections_total",
                &label(e),
                e.ejections() as f64,
            );
        }
        if let Some(c) = &g.canary {
            let share = s.canary.get();
            let name = vec![("canary", c.name.to_string())];
            out.family(
                "umbra_canary_live_percent",
                "gauge",
                "Percent of live requests the canary answers.",
            );
            out.sample("umbra_canary_live_percent", &name, share.percent);
            out.family(
                "umbra_canary_mirrored",
                "gauge",
                "1 while the canary is in its shadow stage (receives copies, answers no user).",
            );
            out.sample(
                "umbra_canary_mirrored",
                &name,
                if share.mirror { 1.0 } else { 0.0 },
            );
        }
        out.family(
            "umbra_connections_accepted_total",
            "counter",
            "Client connections accepted.",
        );
        out.sample(
            "umbra_connections_accepted_total",
            &[],
            s.conns.accepted.load(Relaxed) as f64,
        );
        out.family(
            "umbra_connections_open",
            "gauge",
            "Client connections open now.",
        );
        out.sample(
            "umbra_connections_open",
            &[],
            s.conns.open.load(Relaxed) as f64,
        );
        out.family(
            "umbra_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        out.sample(
            "umbra_tls_handshake_failures_total",
            &[],
            s.conns.tls_failed.load(Relaxed) as f64,
        );
        out.family(
            "umbra_measurements_lost_total",
            "counter",
            "Exchanges not measured because the recorder's queue was full.",
        );
        out.sample(
            "umbra_measurements_lost_total",
            &[],
            s.recorder.lost.load(Relaxed) as f64,
        );
        out.family(
            "umbra_config_reloads_total",
            "counter",
            "Configuration reloads, by result.",
        );
        out.sample(
            "umbra_config_reloads_total",
            &[("result", "ok".into())],
            s.reloads_ok.load(Relaxed) as f64,
        );
        out.sample(
            "umbra_config_reloads_total",
            &[("result", "failed".into())],
            s.reloads_failed.load(Relaxed) as f64,
        );
        out.family(
            "umbra_uptime_seconds",
            "gauge",
            "Seconds since the proxy started.",
        );
        out.sample(
            "umbra_uptime_seconds",
            &[],
            s.started.elapsed().as_secs_f64(),
        );
        out.text
    }

    /// `/api/stats`: the same figures as JSON, with latency percentiles.
    pub fn stats(&self) -> Value {
        let s = &self.shared;
        let mut v = s.stats.lock().unwrap_or_else(|p| p.into_inner()).to_json();
        let g = s.generation.load();
        let servers: Vec<Value> = g
            .pool
            .endpoints
            .iter()
            .map(|e| {
                json!({
                    "name": &*e.name, "url": e.url.to_string(), "weight": e.weight(),
                    "healthy": e.healthy(), "ejected": g.pool.is_ejected(e),
                    "in_flight": e.in_flight(), "latency_ewma_ms": e.ewma().as_secs_f64() * 1000.0,
                    "requests": e.requests.load(Relaxed), "failures": e.failures.load(Relaxed),
                })
            })
            .collect();
        let shadows: Vec<Value> = g
            .shadows
            .iter()
            .map(|t| {
                let c = &t.counters;
                json!({
                    "name": &*t.name, "queued": c.queued.load(Relaxed), "queue_full": c.queue_full.load(Relaxed),
                    "sent": c.sent.load(Relaxed), "failed": c.failed.load(Relaxed),
                    "timeout": c.timed_out.load(Relaxed), "mask_dropped": c.mask_dropped.load(Relaxed),
                    "in_flight": c.in_flight.load(Relaxed), "queue_depth": c.queue_depth.load(Relaxed),
                })
            })
            .collect();
        let m = &s.mirror_counters;
        let resources = s.resources.usage.lock().unwrap_or_else(|p| p.into_inner());
        let resources: Vec<Value> = resources
            .iter()
            .map(|((role, name), u)| json!({"role": role, "upstream": name, "cpu_cores": u.cpu_cores, "memory_bytes": u.memory_bytes, "error": u.error}))
            .collect();
        if let Value::Object(map) = &mut v {
            map.insert(
                "uptime_secs".into(),
                json!(s.started.elapsed().as_secs_f64()),
            );
            map.insert("production".into(), json!(servers));
            map.insert("shadows".into(), json!(shadows));
            if let Some(c) = &g.canary {
                let share = s.canary.get();
                let servers: Vec<Value> = c
                    .pool
                    .endpoints
                    .iter()
                    .map(|e| {
                        json!({
                            "name": &*e.name, "url": e.url.to_string(), "weight": e.weight(),
                            "ejected": c.pool.is_ejected(e), "in_flight": e.in_flight(),
                            "requests": e.requests.load(Relaxed), "failures": e.failures.load(Relaxed),
                        })
                    })
                    .collect();
                map.insert(
                    "canary".into(),
                    json!({"name": &*c.name, "mirror": share.mirror, "percent": share.percent, "servers": servers}),
                );
            }
            map.insert(
                "mirror".into(),
                json!({
                    "sampled": m.sampled.load(Relaxed), "rate_limited": m.rate_limited.load(Relaxed),
                    "body_too_large": m.too_large.load(Relaxed), "body_incomplete": m.incomplete.load(Relaxed),
                }),
            );
            map.insert("resources".into(), json!(resources));
            map.insert(
                "measurements_lost".into(),
                json!(s.recorder.lost.load(Relaxed)),
            );
            map.insert(
                "connections".into(),
                json!({"accepted": s.conns.accepted.load(Relaxed), "open": s.conns.open.load(Relaxed)}),
            );
        }
        v
    }
}

/// `[tracing]` resolved with the `OTEL_*` variables.
fn trace_config(config: &Config) -> Result<umbra_trace::TraceConfig, StartError> {
    umbra_trace::TraceConfig::from_env_and(config.tracing.as_ref())
        .map_err(|e| StartError::Config(format!("tracing: {e}")))
}

/// The tracer from `[tracing]` and the `OTEL_*` variables (disabled when neither asks for it).
fn build_tracer(config: &Config) -> Result<umbra_trace::Tracer, StartError> {
    let cfg = trace_config(config)?;
    umbra_trace::Tracer::new(&cfg).map_err(|e| StartError::Config(format!("tracing: {e}")))
}

/// The trace viewer link template the proxy's tracer uses (`[tracing]
/// link_template`, after the `OTEL_*` resolution), or `None` when tracing is
/// off or no template is set: for the alert sinks, which link the traces the
/// tracer exports and must not name any other.
pub fn trace_link_template(config: &Config) -> Result<Option<String>, StartError> {
    let cfg = trace_config(config)?;
    Ok(cfg
        .link_template
        .filter(|_| cfg.enabled)
        .map(|t| t.as_str().to_string()))
}

fn tracing_summary(config: &Config) -> String {
    umbra_trace::TraceConfig::from_env_and(config.tracing.as_ref())
        .map(|c| c.summary())
        .unwrap_or_default()
}

fn recorder_settings(config: &Config) -> Result<RecorderSettings, StartError> {
    let access_log = match &config.access_log {
        Some(a) => Some((
            a.path.clone(),
            LogFormat::parse(&a.format)
                .map_err(|e| StartError::Config(format!("access_log.format: {e}")))?,
        )),
        None => None,
    };
    Ok(RecorderSettings {
        profiles: config.profiles.as_ref().map(|p| (p.file.clone(), p.reload)),
        access_log,
    })
}

/// A separate runtime for shadow dispatch, health checks and metric scrapes:
/// live requests never share a worker thread with them. One thread drives it
/// (a current-thread runtime: no work-stealing machinery for a single worker)
/// until the sender is used or dropped.
fn background_runtime() -> std::io::Result<(
    tokio::runtime::Handle,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("umbra-shadow")
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("umbra-shadow".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = rx.await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok((handle, tx, thread))
}

fn client<B>(connect_timeout: Duration) -> HttpClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

fn build_generation(
    config: Arc<Config>,
    previous: Option<&Generation>,
    recorder: &Recorder,
    mirror_counters: &Arc<MirrorCounters>,
    resources: &Arc<Resources>,
    background: &tokio::runtime::Handle,
) -> Result<Generation, String> {
    let masker = Arc::new(masker(&config)?);
    let tls = match &config.listen.tls {
        Some(t) => Some(TlsAcceptor::from(Arc::new(server::tls_config(
            &t.cert, &t.key,
        )?))),
        None => None,
    };
    let log_captured = match &config.access_log {
        Some(a) => LogFormat::parse(&a.format)?.captured,
        None => Vec::new(),
    };
    let pool = Arc::new(Pool::new(
        &config.production.servers,
        config.production.ejection.clone(),
        previous.map(|g| &*g.pool),
    ));
    let (stop, stop_rx) = watch::channel(());
    let shadow_names: Vec<String> = config.shadow.iter().map(|s| s.name.clone()).collect();
    let shadows = {
        // Dispatchers live on the background runtime.
        let _inside = background.enter();
        config
            .shadow
            .iter()
            .map(|s| {
                Arc::new(ShadowTarget::start(
                    TargetSpec {
                        config: s,
                        client: upstream::Client::new(
                            config.production.connect_timeout,
                            client(config.production.connect_timeout),
                        ),
                        masker: masker.clone(),
                        recorder: recorder.clone(),
                        mirror: mirror_counters.clone(),
                    },
                    background,
                ))
            })
            .collect()
    };
    let canary = match &config.canary {
        Some(c) => {
            let copy = c.copy_target();
            let copies = {
                let _inside = background.enter();
                Arc::new(ShadowTarget::start(
                    TargetSpec {
                        config: &copy,
                        client: upstream::Client::new(
                            config.production.connect_timeout,
                            client(config.production.connect_timeout),
                        ),
                        masker: masker.clone(),
                        recorder: recorder.clone(),
                        mirror: mirror_counters.clone(),
                    },
                    background,
                ))
            };
            let sampling = crate::config::Mirror {
                percent: c.mirror,
                key: c.key.clone(),
                max_body: config.mirror.max_body,
                ..crate::config::Mirror::default()
            };
            Some(CanaryRoute {
                name: c.name.as_str().into(),
                pool: Arc::new(Pool::new(
                    &c.servers,
                    config.production.ejection.clone(),
                    previous.and_then(|g| g.canary.as_ref()).map(|r| &*r.pool),
                )),
                key: c.key.clone(),
                host: c.host.clone(),
                copies,
                mirror: MirrorPlan::new(&sampling, std::slice::from_ref(&c.name)),
            })
        }
        None => None,
    };
    if let Some(check) = &config.production.health {
        let _inside = background.enter();
        background.spawn(health::run(
            pool.clone(),
            check.clone(),
            client(check.timeout),
            stop_rx.clone(),
        ));
    }
    let scrape: Vec<_> = config
        .production
        .servers
        .iter()
        .filter_map(|s| {
            s.metrics
                .clone()
                .map(|m| ("production".to_string(), s.url.authority().to_string(), m))
        })
        .chain(config.shadow.iter().filter_map(|s| {
            s.metrics
                .clone()
                .map(|m| ("shadow".to_string(), s.name.clone(), m))
        }))
        .chain(config.canary.iter().flat_map(|c| {
            c.servers.iter().filter_map(|s| {
                s.metrics
                    .clone()
                    .map(|m| ("canary".to_string(), s.url.authority().to_string(), m))
            })
        }))
        .collect();
    if !scrape.is_empty() {
        let _inside = background.enter();
        background.spawn(resources::run(
            resources.clone(),
            scrape,
            client(Duration::from_secs(2)),
            config.production.metrics_interval,
            stop_rx.clone(),
        ));
    }
    Ok(Generation {
        mirror: MirrorPlan::new(&config.mirror, &shadow_names),
        upstream: upstream::Client::new(
            config.production.connect_timeout,
            client(config.production.connect_timeout),
        ),
        http: Arc::new(server::builder(&config.listen)),
        pool,
        shadows,
        canary,
        log_captured,
        tls,
        config,
        _stop: stop,
    })
}

/// Where a config came from, for reloads.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Flags(Flags),
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Flags(f) => Config::from_flags(f),
        }
    }
}

/// The masker of a config: its `[mask]` rules, or the safe defaults without them.
fn masker(config: &Config) -> Result<umbra_mask::Masker, String> {
    match &config.mask {
        None => Ok(umbra_mask::Masker::defaults()),
        Some(mask) => umbra_mask::Masker::new(mask).map_err(|e| format!("[mask]: {e}")),
    }
}

/// Everything `Proxy::start` would check, without starting: the masking rules,
/// the TLS files, the access-log format and the profile set. Returns a summary.
pub fn check(config: &Config) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let tracing = umbra_trace::TraceConfig::from_env_and(config.tracing.as_ref())
        .map_err(|e| format!("tracing: {e}"))?;
    notes.push(format!("tracing: {}", tracing.summary()));
    let masker = masker(config)?;
    notes.push(format!(
        "masking: {} ({}); hash secret: {}",
        if config.mask.is_some() {
            "the [mask] rules"
        } else {
            "the default rules"
        },
        masker.rule_names().collect::<Vec<_>>().join(", "),
        masker.secret_source()
    ));
    if let Some(t) = &config.listen.tls {
        server::tls_config(&t.cert, &t.key).map_err(|e| format!("listen.tls: {e}"))?;
    }
    notes.push(format!(
        "listen on {}{}",
        config.listen.address,
        if config.listen.tls.is_some() {
            " with TLS (h2, http/1.1)"
        } else {
            " (HTTP/1.1 and h2c)"
        }
    ));
    notes.push(format!(
        "production: {}",
        config
            .production
            .servers
            .iter()
            .map(|s| format!("{} (weight {})", s.url, s.weight))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for s in &config.shadow {
        notes.push(format!(
            "shadow {:?}: {} (queue {}, concurrency {}, timeout {:?})",
            s.name, s.url, s.queue, s.concurrency, s.timeout
        ));
    }
    notes.push(format!(
        "mirror: {} of requests by default, per-route rules: {}, bodies up to {} bytes",
        config.mirror.percent,
        config.mirror.rules.len(),
        config.mirror.max_body.0
    ));
    if let Some(c) = &config.canary {
        notes.push(format!(
            "canary {:?}: {} (split {}; shadow stage copies {} of requests)",
            c.name,
            c.servers
                .iter()
                .map(|s| s.url.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match &c.key {
                crate::config::SampleKey::Random => "per request".to_string(),
                k => format!("sticky on {k}"),
            },
            c.mirror
        ));
    }
    if let Some(p) = &config.profiles {
        let set =
            umbra_core::ProfileSet::load(&p.file).map_err(|e| format!("profiles.file: {e}"))?;
        notes.push(format!(
            "profiles: {} from {}",
            set.profiles.len(),
            p.file.display()
        ));
    }
    if let Some(a) = &config.access_log {
        LogFormat::parse(&a.format).map_err(|e| format!("access_log.format: {e}"))?;
        notes.push(format!("access log: {} ({})", a.path.display(), a.format));
    }
    if let Some(a) = &config.admin {
        notes.push(format!("admin on {}", a.address));
    }
    Ok(notes)
}
