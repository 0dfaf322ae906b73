//! Demand forecast and replica advice on the live proxy (`[control.replicas]`).
//!
//! ```text
//! every interval, on the wall clock's multiples of it:
//!   production servers' request counters ─► RateMeter (requests since the last tick / elapsed)
//!     ─► Forecaster (umbra-control: buckets, Holt-Winters with a season, Holt's trend before that)
//!     ─► Advice ─► ScalingHandle: /metrics (umbra_recommended_replicas, ...), /api/capacity
//!          └► when the recommendation changes: the log, the store's event log, the webhook task
//! ```
//!
//! The rate comes from counters the balancer keeps anyway (`ProxyHandle::
//! production_requests`: a few atomic loads a tick), so the live path pays
//! nothing. Ticks fall on multiples of the interval, and each rate is filed at
//! the middle of the span it measured, so every bucket gets the samples of its
//! own span. The bucket history is kept in the store (when there is one), so a
//! restart does not cost the two seasons the seasonal model needs. The webhook
//! runs on a task of its own that only ever sends the newest advice: a slow or
//! dead receiver delays nothing and never queues stale advice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use umbra_analysis::alert::sink::{Sink, SinkConfig};
use umbra_control::{Forecast, ForecastConfig, ForecastMethod, Forecaster};
use umbra_proxy::ProxyHandle;
use umbra_proxy::stats::Exposition;
use umbra_store::{CapacityRow, EventRow, Store};

/// The store document that keeps the bucket history across restarts.
const HISTORY: &str = "scaling.history";
/// Most buckets kept in the store (three days of 5-minute buckets is 864).
const MAX_HISTORY: usize = 20_000;
/// Shortest interval: shorter ticks measure the scheduler more than the traffic.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `[control.replicas]`: every key optional except that the capacity per
/// instance must come from somewhere (this key or a capacity curve in the store).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicasConfig {
    /// Rates are averaged into buckets this long. Default 5m.
    #[serde(deserialize_with = "duration")]
    pub bucket: Duration,
    /// The seasonal cycle, a whole number of buckets. Default 1d.
    #[serde(deserialize_with = "duration")]
    pub season: Duration,
    /// How far ahead the peak is looked for. Default 1h.
    #[serde(deserialize_with = "duration")]
    pub horizon: Duration,
    /// Replicas cover the peak times this (>= 1). Default 1.25.
    pub headroom: f64,
    /// Requests per second one instance serves within its SLO. Default: the
    /// newest capacity curve in the store (`umbra capacity --store`).
    pub capacity_per_instance: Option<f64>,
    /// Which stored curve: the target as `umbra capacity --target` named it.
    /// Default: the newest curve whose host:port is a production server's.
    pub capacity_target: Option<String>,
    /// Never advise fewer. Default 1.
    pub min_replicas: u32,
    /// Never advise more. Default: no limit.
    pub max_replicas: Option<u32>,
    /// Holt-Winters smoothing: level, trend, season; and the trend model's.
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub trend_alpha: f64,
    pub trend_beta: f64,
    /// How often the rate is sampled and the forecast made. Default: the bucket.
    #[serde(deserialize_with = "optional_duration")]
    pub interval: Option<Duration>,
    /// POSTed the advice as JSON whenever the recommendation changes.
    pub webhook: Option<String>,
    /// Extra request headers for the webhook (an authorisation token, say).
    pub webhook_headers: BTreeMap<String, String>,
    /// Time allowed for one webhook request. Default 5s.
    #[serde(deserialize_with = "duration")]
    pub webhook_timeout: Duration,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        let f = ForecastConfig::default();
        ReplicasConfig {
            bucket: f.bucket,
            season: f.season,
            horizon: f.horizon,
            headroom: f.headroom,
            capacity_per_instance: None,
            capacity_target: None,
            min_replicas: f.min_replicas,
            max_replicas: f.max_replicas,
            alpha: f.alpha,
            beta: f.beta,
            gamma: f.gamma,
            trend_alpha: f.trend_alpha,
            trend_beta: f.trend_beta,
            interval: None,
            webhook: None,
            webhook_headers: BTreeMap::new(),
            webhook_timeout: Duration::from_secs(5),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    umbra_proxy::config::duration::deserialize(d)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl ReplicasConfig {
    /// The forecaster's settings, with `capacity` per instance.
    pub fn forecast_config(&self, capacity: f64) -> ForecastConfig {
        ForecastConfig {
            bucket: self.bucket,
            season: self.season,
            horizon: self.horizon,
            headroom: self.headroom,
            capacity_per_instance: capacity,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            alpha: self.alpha,
            beta: self.beta,
            gamma: self.gamma,
            trend_alpha: self.trend_alpha,
            trend_beta: self.trend_beta,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(self.bucket)
    }

    /// The checks serde cannot do; each error starts with `control.replicas.<key>`.
    pub fn validate(&self) -> Result<(), String> {
        // Without a configured capacity any positive stand-in checks the rest.
        self.forecast_config(self.capacity_per_instance.unwrap_or(1.0))
            .validate()
            .map_err(|e| e.to_string())?;
        let key = |k: &str, v: &dyn std::fmt::Display, why: &str| {
            Err(format!("control.replicas.{k} = {v}: {why}"))
        };
        if let Some(t) = &self.capacity_target {
            if self.capacity_per_instance.is_some() {
                return key(
                    "capacity_target",
                    &format!("{t:?}"),
                    "only used when capacity_per_instance is not set; set one or the other",
                );
            }
            if t.trim().is_empty() {
                return key(
                    "capacity_target",
                    &"\"\"",
                    "expected the target URL a capacity run was saved under",
                );
            }
        }
        let interval = self.interval();
        let shown = format!("{:?}", human(interval));
        if interval < MIN_INTERVAL {
            return key("interval", &shown, "expected at least 100ms");
        }
        if interval > self.bucket || !self.bucket.as_nanos().is_multiple_of(interval.as_nanos()) {
            return key(
                "interval",
                &shown,
                &format!(
                    "expected the bucket ({:?}) or a whole fraction of it, so every sample falls in one bucket",
                    human(self.bucket)
                ),
            );
        }
        if self.webhook_timeout.is_zero() {
            return key("webhook_timeout", &"\"0s\"", "expected more than 0");
        }
        match &self.webhook {
            Some(_) => {
                self.webhook_sink()?;
            }
            None if !self.webhook_headers.is_empty() => {
                return key(
                    "webhook_headers",
                    &"{ ... }",
                    "headers given but no webhook URL to send them to",
                );
            }
            None => {}
        }
        Ok(())
    }

    fn webhook_sink(&self) -> Result<Option<Sink>, String> {
        let Some(url) = &self.webhook else {
            return Ok(None);
        };
        Sink::new(&SinkConfig::Webhook {
            url: url.clone(),
            headers: self.webhook_headers.clone(),
        })
        .map(Some)
        .map_err(|e| format!("control.replicas.webhook: {e}"))
    }

    /// One line for `umbra check` and the start-up log.
    pub fn note(&self) -> String {
        let capacity = match (self.capacity_per_instance, &self.capacity_target) {
            (Some(c), _) => format!("{c} req/s per instance"),
            (None, Some(t)) => {
                format!("capacity per instance from the store's newest curve for {t}")
            }
            (None, None) => {
                "capacity per instance from the store's newest curve for a production server"
                    .to_string()
            }
        };
        format!(
            "replicas: forecast every {} ({} buckets, {} season, {} horizon, headroom {}), {capacity}{}",
            human(self.interval()),
            human(self.bucket),
            human(self.season),
            human(self.horizon),
            self.headroom,
            match &self.webhook {
                Some(u) => format!(", webhook {}", redact(u)),
                None => String::new(),
            }
        )
    }
}

/// A webhook URL may carry a secret in its path: show the scheme and host only.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            if rest.len() > host.len() {
                format!("{scheme}://{host}/…")
            } else {
                format!("{scheme}://{host}")
            }
        }
        None => "(invalid url)".to_string(),
    }
}

/// The request rate from cumulative per-server counters.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: BTreeMap<Arc<str>, u64>,
    at: Option<Instant>,
}

impl RateMeter {
    /// Requests per second since the last call and the span it covers; `None`
    /// on the first call, which only takes the baseline. A server new since the
    /// last call counts whole (it joined in between); one whose counter went
    /// down was removed and added back, and counts from 0 (a counter reset).
    pub fn sample(&mut self, counts: &[(Arc<str>, u64)], now: Instant) -> Option<(f64, Duration)> {
        let first = self.at.is_none();
        let mut delta = 0u64;
        let mut next = BTreeMap::new();
        for (name, n) in counts {
            delta += match self.last.get(name) {
                Some(before) if n >= before => n - before,
                Some(_) => *n,
                None if first => 0,
                None => *n,
            };
            next.insert(name.clone(), *n);
        }
        let elapsed = self.at.map(|a| now.saturating_duration_since(a));
        self.last = next;
        self.at = Some(now);
        match elapsed {
            Some(e) if !e.is_zero() => Some((delta as f64 / e.as_secs_f64(), e)),
            _ => None,
        }
    }
}

/// Where the capacity per instance in use came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CapacitySource {
    Config,
    /// A curve saved by `umbra capacity --store`.
    Store {
        target: String,
        measured_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapacityInUse {
    pub rps: f64,
    pub source: CapacitySource,
}

impl CapacityInUse {
    fn describe(&self) -> String {
        match &self.source {
            CapacitySource::Config => "control.replicas.capacity_per_instance".to_string(),
            CapacitySource::Store {
                target,
                measured_ms,
            } => format!(
                "the store's capacity curve for {target} measured {}",
                rfc3339(*measured_ms as i64)
            ),
        }
    }
}

/// The authority (`host:port`) of a URL as `umbra capacity --target` takes it.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// The newest stored curve with a capacity for `target`, or for one of `servers`.
fn stored_capacity(
    rows: &[CapacityRow],
    target: Option<&str>,
    servers: &[Arc<str>],
) -> Option<CapacityInUse> {
    // Rows come newest first.
    rows.iter()
        .filter(|r| match target {
            Some(t) => r.target.trim_end_matches('/') == t.trim().trim_end_matches('/'),
            None => servers.iter().any(|s| **s == *authority(&r.target)),
        })
        .find_map(|r| {
            let rps = r.capacity_rps.filter(|c| c.is_finite() && *c > 0.0)?;
            Some(CapacityInUse {
                rps,
                source: CapacitySource::Store {
                    target: r.target.clone(),
                    measured_ms: r.measured_ms,
                },
            })
        })
}

/// Which model the published advice comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    HoltWinters,
    Trend,
    /// Too little history for either model: the rate of the moment, as a
    /// reactive autoscaler would use it.
    CurrentRate,
}

impl Method {
    const ALL: [Method; 3] = [Method::HoltWinters, Method::Trend, Method::CurrentRate];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::HoltWinters => "holt-winters",
            Method::Trend => "trend",
            Method::CurrentRate => "current-rate",
        }
    }
}

/// The advice of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub at_ms: i64,
    pub method: Method,
    /// `None` while no capacity per instance is known.
    pub recommended: Option<u32>,
    /// What the current rate alone needs (what a reactive autoscaler would do).
    pub current_replicas: Option<u32>,
    pub peak_rps: f64,
    pub peak_at_ms: i64,
    pub current_rps: f64,
    pub history_buckets: u64,
    /// Forecast rate per bucket from `from_ms` on (empty for `CurrentRate`).
    pub from_ms: i64,
    pub path: Vec<f64>,
    /// Why the models are not answering yet, when they are not.
    pub note: Option<String>,
}

/// The forecaster and what feeds it; no I/O, so it is tested with a made-up clock.
pub struct Scaler {
    config: ReplicasConfig,
    forecaster: Forecaster,
    bucket_ms: i64,
    /// Leading quiet buckets are not fed: a proxy started before its traffic was
    /// moved to it would otherwise teach the model a quiet start.
    seen_traffic: bool,
    /// The bucket being filled: (index, sum, count); closed ones go to `history`.
    open: Option<(i64, f64, u64)>,
    history: VecDeque<(i64, f64)>,
    keep: usize,
    /// Buckets closed so far (the history is capped; this is not).
    closed: u64,
}

/// The bucket history as kept in the store.
#[derive(Debug, Serialize, Deserialize)]
struct SavedHistory {
    bucket_ms: i64,
    season_ms: i64,
    /// (bucket index since the epoch, mean rate).
    buckets: Vec<(i64, f64)>,
}

impl Scaler {
    pub fn new(config: ReplicasConfig) -> anyhow::Result<Scaler> {
        config.validate().map_err(anyhow::Error::msg)?;
        let forecaster =
            Forecaster::new(config.forecast_config(config.capacity_per_instance.unwrap_or(1.0)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let season_buckets =
            (config.season.as_millis() / config.bucket.as_millis().max(1)) as usize;
        Ok(Scaler {
            bucket_ms: config.bucket.as_millis() as i64,
            keep: (3 * season_buckets).clamp(16, MAX_HISTORY),
            config,
            forecaster,
            seen_traffic: false,
            open: None,
            history: VecDeque::new(),
            closed: 0,
        })
    }

    pub fn set_capacity(&mut self, rps: f64) -> anyhow::Result<()> {
        self.forecaster
            .set_capacity_per_instance(rps)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Adds a rate measured around `at_ms` (ms since the epoch).
    pub fn observe(&mut self, at_ms: i64, rate: f64) -> anyhow::Result<()> {
        if !self.seen_traffic && rate <= 0.0 {
            return Ok(());
        }
        self.seen_traffic = true;
        self.forecaster
            .push(at_ms, rate)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let b = at_ms.div_euclid(self.bucket_ms);
        match self.open {
            Some((ob, sum, n)) if b == ob => self.open = Some((ob, sum + rate, n + 1)),
            Some((ob, _, _)) if b < ob => {} // late: the forecaster counts it
            Some((ob, sum, n)) => {
                self.history.push_back((ob, sum / n as f64));
                self.closed += 1;
                while self.history.len() > self.keep {
                    self.history.pop_front();
                }
                self.open = Some((b, rate, 1));
            }
            None => self.open = Some((b, rate, 1)),
        }
        Ok(())
    }

    /// The advice now, or `None` before the first traffic. `capacity_known`
    /// says whether the forecaster's capacity is real or the stand-in.
    pub fn advise(&self, now_ms: i64, capacity_known: bool) -> Option<Advice> {
        let (open, sum, n) = self.open?;
        let replicas = |rate: f64| capacity_known.then(|| self.forecaster.replicas_for(rate));
        Some(match self.forecaster.forecast() {
            Ok(f) => advice_of(now_ms, &f, capacity_known),
            Err(e) => {
                let current = sum / n as f64;
                Advice {
                    at_ms: now_ms,
                    method: Method::CurrentRate,
                    recommended: replicas(current),
                    current_replicas: replicas(current),
                    peak_rps: current,
                    peak_at_ms: open * self.bucket_ms,
                    current_rps: current,
                    history_buckets: self.closed,
                    from_ms: open * self.bucket_ms,
                    path: Vec::new(),
                    note: Some(e.to_string()),
                }
            }
        })
    }

    fn saved(&self) -> SavedHistory {
        SavedHistory {
            bucket_ms: self.bucket_ms,
            season_ms: self.config.season.as_millis() as i64,
            buckets: self.history.iter().copied().collect(),
        }
    }

    /// Replays a saved history, keeping only buckets from the last `keep`
    /// buckets before `now_ms`; returns how many were used, or why none were.
    fn restore(&mut self, saved: &SavedHistory, now_ms: i64) -> Result<usize, String> {
        let season_ms = self.config.season.as_millis() as i64;
        if saved.bucket_ms != self.bucket_ms || saved.season_ms != season_ms {
            return Err(format!(
                "it was kept with {} buckets and a {} season; starting afresh",
                human(Duration::from_millis(saved.bucket_ms.max(0) as u64)),
                human(Duration::from_millis(saved.season_ms.max(0) as u64))
            ));
        }
        let oldest = now_ms.div_euclid(self.bucket_ms) - self.keep as i64;
        let mut used = 0;
        for &(b, mean) in saved.buckets.iter().filter(|(b, _)| *b >= oldest) {
            if mean.is_finite() && mean >= 0.0 {
                self.observe(b * self.bucket_ms, mean)
                    .map_err(|e| e.to_string())?;
                used += 1;
            }
        }
        // The last replayed bucket is still open here: a live sample in a later
        // bucket closes it, as it would have been closed without the restart.
        Ok(used)
    }
}

/// The advice a forecast gives; replicas only when the capacity is real.
fn advice_of(now_ms: i64, f: &Forecast, capacity_known: bool) -> Advice {
    Advice {
        at_ms: now_ms,
        method: match f.method {
            ForecastMethod::HoltWinters => Method::HoltWinters,
            ForecastMethod::Trend => Method::Trend,
        },
        recommended: capacity_known.then_some(f.replicas),
        current_replicas: capacity_known.then_some(f.current_replicas),
        peak_rps: f.peak_rps,
        peak_at_ms: f.peak_at_ms,
        current_rps: f.current_rps,
        history_buckets: f.history_buckets,
        from_ms: f.from_ms,
        path: f.path.clone(),
        note: None,
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The JSON the webhook receives and the store keeps when the recommendation changes.
fn change_body(config: &ReplicasConfig, a: &Advice, previous: Option<u32>, capacity: f64) -> Value {
    json!({
        "source": "umbra",
        "version": 1,
        "recommended_replicas": a.recommended,
        "previous_replicas": previous,
        "current_replicas": a.current_replicas,
        "peak_rps": a.peak_rps,
        "peak_at": rfc3339(a.peak_at_ms),
        "current_rps": a.current_rps,
        "method": a.method.as_str(),
        "horizon": human(config.horizon),
        "horizon_secs": config.horizon.as_secs_f64(),
        "capacity_per_instance": capacity,
        "headroom": config.headroom,
        "at": rfc3339(a.at_ms),
    })
}

/// Webhook deliveries, for `/metrics` and the API.
#[derive(Debug, Default)]
struct WebhookCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What the admin API reads: the latest advice and where things stand.
#[derive(Clone)]
pub struct ScalingHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: ReplicasConfig,
    view: Mutex<View>,
    webhook: Option<Arc<WebhookCounters>>,
}

#[derive(Default)]
struct View {
    advice: Option<Advice>,
    capacity: Option<CapacityInUse>,
    /// Why there is no capacity, when there is none.
    capacity_missing: Option<String>,
}

impl ScalingHandle {
    pub fn new(config: ReplicasConfig) -> ScalingHandle {
        let webhook = config
            .webhook
            .is_some()
            .then(|| Arc::new(WebhookCounters::default()));
        ScalingHandle {
            inner: Arc::new(Inner {
                config,
                view: Mutex::new(View::default()),
                webhook,
            }),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gauges (and the webhook counter) for `/metrics`; families appear
    /// once they have a value.
    pub fn metrics(&self, openmetrics: bool) -> String {
        let mut out = Exposition {
            text: String::new(),
            openmetrics,
        };
        let view = self.view();
        let mut gauge = |name: &str, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.family(name, "gauge", help);
                out.sample(name, &[], v);
            }
        };
        let a = view.advice.as_ref();
        gauge(
            "umbra_recommended_replicas",
            "Replicas for the forecast peak over the horizon: ceil(peak x headroom / capacity per instance), clamped.",
            a.and_then(|a| a.recommended).map(f64::from),
        );
        gauge(
            "umbra_forecast_current_replicas",
            "Replicas the current request rate alone needs (what a reactive autoscaler would ask for).",
            a.and_then(|a| a.current_replicas).map(f64::from),
        );
        gauge(
            "umbra_forecast_peak_rps",
            "Highest forecast request rate (req/s) from now to the horizon.",
            a.map(|a| a.peak_rps),
        );
        gauge(
            "umbra_forecast_peak_timestamp_seconds",
            "When the forecast peak is due (Unix time, start of its bucket).",
            a.map(|a| a.peak_at_ms as f64 / 1000.0),
        );
        gauge(
            "umbra_forecast_current_rps",
            "Production request rate (req/s) of the current bucket.",
            a.map(|a| a.current_rps),
        );
        gauge(
            "umbra_forecast_history_buckets",
            "Whole buckets of request rate the forecast has seen.",
            a.map(|a| a.history_buckets as f64),
        );
        gauge(
            "umbra_forecast_capacity_per_instance_rps",
            "Requests per second one instance serves within its SLO, as the advice uses it.",
            view.capacity.as_ref().map(|c| c.rps),
        );
        if let Some(a) = a {
            out.family(
                "umbra_forecast_method",
                "gauge",
                "1 for the model behind the current advice: holt-winters (seasonal), trend (short history) or current-rate (warming up).",
            );
            for m in Method::ALL {
                let v = if m == a.method { 1.0 } else { 0.0 };
                out.sample("umbra_forecast_method", &[("method", m.as_str().into())], v);
            }
        }
        if let Some(w) = &self.inner.webhook {
            out.family(
                "umbra_replicas_webhook_requests_total",
                "counter",
                "Replica advice sent to the webhook, by result.",
            );
            for (result, n) in [("ok", &w.sent), ("failed", &w.failed)] {
                out.sample(
                    "umbra_replicas_webhook_requests_total",
                    &[("result", result.into())],
                    n.load(Relaxed) as f64,
                );
            }
        }
        out.text
    }

    /// `/api/capacity`.
    pub fn api(&self) -> Value {
        let c = &self.inner.config;
        let view = self.view();
        let mut v = json!({
            "bucket_secs": c.bucket.as_secs_f64(),
            "season_secs": c.season.as_secs_f64(),
            "horizon_secs": c.horizon.as_secs_f64(),
            "interval_secs": c.interval().as_secs_f64(),
            "headroom": c.headroom,
            "min_replicas": c.min_replicas,
            "max_replicas": c.max_replicas,
            "capacity_per_instance": view.capacity.as_ref().map(|c| c.rps),
            "capacity_source": view.capacity.as_ref().map(CapacityInUse::describe),
        });
        let state = match (&view.advice, &view.capacity) {
            (None, _) => "waiting for traffic",
            (Some(_), None) => "no capacity",
            (Some(a), Some(_)) if a.method == Method::CurrentRate => "warming up",
            (Some(_), Some(_)) => "forecasting",
        };
        v["state"] = json!(state);
        if let Some(why) = &view.capacity_missing {
            v["capacity_missing"] = json!(why);
        }
        if let Some(a) = &view.advice {
            v["recommended_replicas"] = json!(a.recommended);
            v["current_replicas"] = json!(a.current_replicas);
            v["method"] = json!(a.method.as_str());
            v["peak_rps"] = json!(a.peak_rps);
            v["peak_at_ms"] = json!(a.peak_at_ms);
            v["current_rps"] = json!(a.current_rps);
            v["history_buckets"] = json!(a.history_buckets);
            v["updated_ms"] = json!(a.at_ms);
            v["from_ms"] = json!(a.from_ms);
            v["path"] = json!(a.path);
            if let Some(n) = &a.note {
                v["note"] = json!(n);
            }
        }
        if let (Some(url), Some(w)) = (&c.webhook, &self.inner.webhook) {
            v["webhook"] = json!({
                "url": redact(url),
                "sent": w.sent.load(Relaxed),
                "failed": w.failed.load(Relaxed),
                "last_error": *w.last_error.lock().unwrap_or_else(|p| p.into_inner()),
            });
        }
        v
    }
}

/// Runs the forecast loop until `stop` fires, publishing into `handle`.
pub async fn run(
    handle: ScalingHandle,
    proxy: ProxyHandle,
    store: Option<Arc<Store>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = handle.inner.config.clone();
    let mut scaler = Scaler::new(config.clone())?;
    let interval = config.interval();
    let interval_ms = interval.as_millis().max(1) as i64;

    if let Some(store) = &store {
        match store.state::<SavedHistory>(HISTORY) {
            Ok(Some(saved)) => match scaler.restore(&saved, now_ms()) {
                Ok(n) => eprintln!(
                    "umbra: replicas: {n} buckets of request rate restored from the store"
                ),
                Err(why) => {
                    eprintln!("umbra: replicas: the stored rate history is not used: {why}")
                }
            },
            Ok(None) => {}
            Err(e) => eprintln!("umbra: replicas: {e}; starting without history"),
        }
    }

    let mut capacity = resolve_capacity(&config, store.as_deref(), &proxy, None);
    apply_capacity(&handle, &mut scaler, &capacity)?;

    let (webhook_tx, webhook_rx) = watch::channel::<Option<Value>>(None);
    let webhook_task = match (
        config.webhook_sink().map_err(anyhow::Error::msg)?,
        &handle.inner.webhook,
    ) {
        (Some(sink), Some(counters)) => Some(tokio::spawn(deliver(
            sink,
            config.webhook_timeout,
            interval.max(Duration::from_secs(1)),
            webhook_rx,
            counters.clone(),
        ))),
        _ => None,
    };

    let mut meter = RateMeter::default();
    meter.sample(&proxy.production_requests(), Instant::now());
    let mut published: Option<u32> = None;
    let mut saved_at = Instant::now();
    let save_every = config.bucket.max(Duration::from_secs(60));
    loop {
        // The next multiple of the interval on the wall clock.
        let now = now_ms();
        let wait = interval_ms - now.rem_euclid(interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = stop.changed() => break,
        }
        let Some((rate, span)) = meter.sample(&proxy.production_requests(), Instant::now()) else {
            continue;
        };
        let now = now_ms();
        // Filed at the middle of the span it measured.
        let at = now - span.as_millis() as i64 / 2;
        let before = scaler.closed;
        if let Err(e) = scaler.observe(at, rate) {
            eprintln!("umbra: replicas: {e}");
            continue;
        }
        if config.capacity_per_instance.is_none() {
            // A capacity run saved since start takes effect without a restart.
            let next = resolve_capacity(&config, store.as_deref(), &proxy, capacity.as_ref().ok());
            if next != capacity {
                capacity = next;
                apply_capacity(&handle, &mut scaler, &capacity)?;
            }
        }
        let known = handle.view().capacity.is_some();
        let Some(advice) = scaler.advise(now, known) else {
            continue;
        };
        let changed = advice.recommended.is_some() && advice.recommended != published;
        if changed {
            let body = change_body(
                &config,
                &advice,
                published,
                handle.view().capacity.as_ref().map_or(0.0, |c| c.rps),
            );
            eprintln!(
                "umbra: replicas {} -> {} (peak {:.1} req/s at {} by {}; now {:.1} req/s, which alone needs {})",
                published.map_or("none".to_string(), |p| p.to_string()),
                advice.recommended.unwrap_or(0),
                advice.peak_rps,
                rfc3339(advice.peak_at_ms),
                advice.method.as_str(),
                advice.current_rps,
                advice.current_replicas.unwrap_or(0),
            );
            if let Some(store) = &store
                && let Err(e) = store.add_event(&EventRow {
                    kind: "replicas".into(),
                    at_ms: now.max(0) as u64,
                    body: body.clone(),
                })
            {
                eprintln!("umbra: replicas: {e}");
            }
            if webhook_task.is_some() {
                webhook_tx.send_replace(Some(body));
            }
            published = advice.recommended;
        }
        handle.view().advice = Some(advice);
        if let Some(store) = &store
            && scaler.closed != before
            && saved_at.elapsed() >= save_every
        {
            save_history(store, &scaler);
            saved_at = Instant::now();
        }
    }
    if let Some(store) = &store
        && !scaler.history.is_empty()
    {
        save_history(store, &scaler);
    }
    drop(webhook_tx);
    if let Some(t) = webhook_task {
        // A send in flight ends within its timeout; nothing new starts.
        let _ = tokio::time::timeout(config.webhook_timeout + Duration::from_secs(1), t).await;
    }
    Ok(())
}

fn save_history(store: &Store, scaler: &Scaler) {
    if let Err(e) = store.put_state(HISTORY, &scaler.saved(), now_ms().max(0) as u64) {
        eprintln!("umbra: replicas: {e}");
    }
}

/// The capacity per instance: the config's, or the newest stored curve's.
fn resolve_capacity(
    config: &ReplicasConfig,
    store: Option<&Store>,
    proxy: &ProxyHandle,
    current: Option<&CapacityInUse>,
) -> Result<CapacityInUse, String> {
    if let Some(rps) = config.capacity_per_instance {
        return Ok(CapacityInUse {
            rps,
            source: CapacitySource::Config,
        });
    }
    let which = match &config.capacity_target {
        Some(t) => format!("target {t}"),
        None => "any production server".to_string(),
    };
    let Some(store) = store else {
        return Err(format!(
            "capacity_per_instance is not set and there is no store to find a capacity curve in ({which})"
        ));
    };
    let rows = match store.capacities(None) {
        Ok(r) => r,
        // A read that fails keeps what was found before.
        Err(e) => return current.cloned().ok_or_else(|| e.to_string()),
    };
    let servers: Vec<Arc<str>> = proxy
        .production_requests()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    stored_capacity(&rows, config.capacity_target.as_deref(), &servers).ok_or_else(|| {
        format!(
            "capacity_per_instance is not set and the store {} has no capacity curve with a capacity for {which}; \
             run `umbra capacity --store` against one instance, or set the key",
            store.path()
        )
    })
}

fn apply_capacity(
    handle: &ScalingHandle,
    scaler: &mut Scaler,
    capacity: &Result<CapacityInUse, String>,
) -> anyhow::Result<()> {
    let mut view = handle.view();
    match capacity {
        Ok(c) => {
            scaler.set_capacity(c.rps)?;
            eprintln!(
                "umbra: replicas: capacity {:.1} req/s per instance, from {}",
                c.rps,
                c.describe()
            );
            view.capacity = Some(c.clone());
            view.capacity_missing = None;
        }
        Err(why) => {
            eprintln!("umbra: replicas: no advice until a capacity is known: {why}");
            view.capacity = None;
            view.capacity_missing = Some(why.clone());
        }
    }
    Ok(())
}

/// Sends the newest advice to the webhook. A failure is counted and logged
/// (once until the receiver answers again), and the newest advice is tried
/// again with a backoff up to `max_backoff`: a receiver that was down still
/// learns the recommendation, and never an outdated one.
async fn deliver(
    sink: Sink,
    timeout: Duration,
    max_backoff: Duration,
    mut rx: watch::Receiver<Option<Value>>,
    counters: Arc<WebhookCounters>,
) {
    let mut failing = false;
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let mut backoff = Duration::from_secs(1).min(max_backoff);
        loop {
            let Some(body) = rx.borrow_and_update().clone() else {
                break;
            };
            match sink.post_json(&body, timeout).await {
                Ok(_) => {
                    counters.sent.fetch_add(1, Relaxed);
                    if failing {
                        eprintln!("umbra: replicas webhook: delivered again");
                        failing = false;
                    }
                    break;
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Relaxed);
                    if !failing {
                        eprintln!("umbra: replicas webhook: {e} (retrying with the newest advice)");
                        failing = true;
                    }
                    *counters
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        r = rx.changed() => if r.is_err() { return },
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Result<ReplicasConfig, String> {
        let c: ReplicasConfig =
            umbra_proxy::config::parse_toml("umbra.toml", text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn config_defaults_and_keys() {
        let c = parse("capacity_per_instance = 40.0\n").unwrap();
        assert_eq!(c.bucket, Duration::from_secs(300));
        assert_eq!(c.interval(), Duration::from_secs(300));
        assert_eq!(c.season, Duration::from_secs(86_400));
        assert_eq!(c.headroom, 1.25);
        let c = parse(
            "bucket = \"1m\"\ninterval = \"10s\"\nseason = \"1h\"\nhorizon = \"15m\"\nmin_replicas = 2\nmax_replicas = 9\n\
             webhook = \"http://127.0.0.1:9/hook\"\nwebhook_headers = { authorization = \"Bearer x\" }\nwebhook_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(c.interval(), Duration::from_secs(10));
        assert_eq!(c.capacity_per_instance, None);
        assert!(
            c.note().contains("webhook http://127.0.0.1:9/…"),
            "{}",
            c.note()
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        for (text, want) in [
            ("bucket = \"7m\"\n", "control.replicas.season"),
            ("headroom = 0.5\n", "control.replicas.headroom = 0.5"),
            (
                "capacity_per_instance = -1.0\n",
                "control.replicas.capacity_per_instance = -1",
            ),
            (
                "min_replicas = 5\nmax_replicas = 2\n",
                "control.replicas.max_replicas = 2",
            ),
            (
                "interval = \"7s\"\nbucket = \"1m\"\nseason = \"1h\"\n",
                "control.replicas.interval = \"7s\"",
            ),
            (
                "interval = \"10m\"\n",
                "control.replicas.interval = \"10m\"",
            ),
            (
                "interval = \"10ms\"\nbucket = \"1s\"\nseason = \"1m\"\n",
                "at least 100ms",
            ),
            (
                "capacity_per_instance = 1.0\ncapacity_target = \"http://a:1\"\n",
                "control.replicas.capacity_target",
            ),
            (
                "webhook = \"ftp://x\"\n",
                "control.replicas.webhook: webhook ftp://x: url `ftp://x`",
            ),
            (
                "webhook_headers = { a = \"b\" }\n",
                "control.replicas.webhook_headers",
            ),
            (
                "webhook_timeout = \"0s\"\n",
                "control.replicas.webhook_timeout",
            ),
            ("alpha = 2.0\n", "control.replicas.alpha = 2"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Unknown keys and bad durations are caught while parsing, with the key.
        let e = parse("buckets = \"1m\"\n").unwrap_err();
        assert!(e.contains("unknown field `buckets`"), "{e}");
        let e = parse("horizon = 3600\n").unwrap_err();
        assert!(e.contains("key horizon"), "{e}");
    }

    /// Every key of the table is shown in examples/umbra.toml, which must parse.
    #[test]
    fn the_example_documents_every_key() {
        let text = include_str!("../../../examples/umbra.toml");
        let start = text
            .find("\n[control.replicas]\n")
            .expect("a [control.replicas] table");
        let table: String = text[start + 1..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .map(|l| format!("{l}\n"))
            .collect();
        let example: toml::Table = toml::from_str(&table).unwrap();
        parse(&table).unwrap();
        for key in [
            "bucket",
            "season",
            "horizon",
            "headroom",
            "capacity_per_instance",
            "capacity_target",
            "min_replicas",
            "max_replicas",
            "alpha",
            "beta",
            "gamma",
            "trend_alpha",
            "trend_beta",
            "interval",
            "webhook",
            "webhook_headers",
            "webhook_timeout",
        ] {
            // Keys that exclude each other are shown commented out.
            assert!(
                example.contains_key(key) || table.contains(&format!("# {key} = ")),
                "examples/umbra.toml does not show control.replicas.{key}"
            );
        }
    }

    fn counts(v: &[(&str, u64)]) -> Vec<(Arc<str>, u64)> {
        v.iter().map(|(s, n)| (Arc::from(*s), *n)).collect()
    }

    #[test]
    fn the_rate_is_the_delta_over_the_elapsed_time() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.sample(&counts(&[("a", 500), ("b", 100)]), t0), None);
        let s = Duration::from_secs(1);
        // 30 + 20 requests in 2 s.
        let (r, span) = m
            .sample(&counts(&[("a", 530), ("b", 120)]), t0 + 2 * s)
            .unwrap();
        assert_eq!((r, span), (25.0, 2 * s));
        // A server joins (its 7 requests count) and one disappears.
        let (r, _) = m
            .sample(&counts(&[("a", 540), ("c", 7)]), t0 + 3 * s)
            .unwrap();
        assert_eq!(r, 17.0);
        // `a` is dropped and added back by reloads: its counter restarts at 0.
        let (r, _) = m
            .sample(&counts(&[("a", 4), ("c", 7)]), t0 + 4 * s)
            .unwrap();
        assert_eq!(r, 4.0);
        // No time passed: no rate, and the baseline stays.
        assert_eq!(m.sample(&counts(&[("a", 9), ("c", 7)]), t0 + 4 * s), None);
    }

    #[test]
    fn capacity_comes_from_the_newest_matching_curve() {
        let row = |target: &str, at: u64, rps: Option<f64>| CapacityRow {
            target: target.into(),
            measured_ms: at,
            capacity_rps: rps,
            body: json!({}),
        };
        // Newest first, as the store returns them.
        let rows = vec![
            row("http://10.0.0.9:80", 40, Some(900.0)),
            row("http://127.0.0.1:9000/", 30, None),
            row("http://127.0.0.1:9000", 20, Some(412.5)),
            row("http://127.0.0.1:9001", 10, Some(100.0)),
        ];
        let servers = vec![Arc::from("127.0.0.1:9000"), Arc::from("127.0.0.1:9001")];
        let c = stored_capacity(&rows, None, &servers).unwrap();
        assert_eq!(
            c.rps, 412.5,
            "the newest with a capacity for a production server"
        );
        let c = stored_capacity(&rows, Some("http://10.0.0.9:80/"), &servers).unwrap();
        assert_eq!(c.rps, 900.0);
        assert!(stored_capacity(&rows, Some("http://nowhere"), &servers).is_none());
        assert!(stored_capacity(&rows, None, &[Arc::from("x:1")]).is_none());
    }

    fn small() -> ReplicasConfig {
        ReplicasConfig {
            bucket: Duration::from_secs(1),
            season: Duration::from_secs(6),
            horizon: Duration::from_secs(3),
            headroom: 1.0,
            capacity_per_instance: Some(30.0),
            ..ReplicasConfig::default()
        }
    }

    #[test]
    fn advice_warms_up_on_the_current_rate_then_forecasts_a_ramp() {
        let mut s = Scaler::new(small()).unwrap();
        let t0 = 1_767_571_200_000;
        // Quiet before traffic arrives: not fed, no advice yet.
        s.observe(t0 + 500, 0.0).unwrap();
        assert!(s.advise(t0 + 1000, true).is_none());
        s.observe(t0 + 1500, 40.0).unwrap();
        let a = s.advise(t0 + 2000, true).unwrap();
        assert_eq!(a.method, Method::CurrentRate);
        assert_eq!((a.recommended, a.current_replicas), (Some(2), Some(2)));
        assert!(a.note.as_deref().unwrap().contains("bucket"), "{a:?}");
        // A steady ramp of 20 req/s a second: the trend model looks ahead.
        for i in 2..12 {
            s.observe(t0 + i * 1000 + 500, 20.0 + 20.0 * i as f64)
                .unwrap();
        }
        let a = s.advise(t0 + 12_000, true).unwrap();
        assert_eq!(a.method, Method::Trend);
        assert_eq!(a.current_rps, 240.0, "{a:?}");
        assert!(a.peak_rps > 270.0, "{a:?}");
        assert!(
            a.recommended.unwrap() > a.current_replicas.unwrap(),
            "the advice is ahead of the current rate: {a:?}"
        );
        // Without a capacity there are rates but no replicas.
        let a = s.advise(t0 + 12_000, false).unwrap();
        assert_eq!((a.recommended, a.current_replicas), (None, None));
    }

    #[test]
    fn history_survives_a_restart_and_a_changed_bucket_is_refused() {
        let t0 = 1_767_571_200_000;
        let mut s = Scaler::new(small()).unwrap();
        let rate = |i: i64| if i % 6 >= 4 { 100.0 } else { 20.0 };
        for i in 0..16 {
            s.observe(t0 + i * 1000 + 500, rate(i)).unwrap();
        }
        let saved = s.saved();
        assert_eq!(saved.buckets.len(), 15, "the last bucket is still open");
        let mut again = Scaler::new(small()).unwrap();
        let n = again.restore(&saved, t0 + 16_000).unwrap();
        assert_eq!(n, 15);
        // The open bucket's sample comes live; then both agree.
        s.observe(t0 + 16_500, rate(16)).unwrap();
        again.observe(t0 + 15_500, rate(15)).unwrap();
        again.observe(t0 + 16_500, rate(16)).unwrap();
        let (a, b) = (
            s.advise(t0 + 17_000, true).unwrap(),
            again.advise(t0 + 17_000, true).unwrap(),
        );
        assert_eq!(a.method, Method::HoltWinters);
        assert_eq!((a.recommended, a.peak_rps), (b.recommended, b.peak_rps));
        // Too old to matter: nothing is replayed.
        let mut late = Scaler::new(small()).unwrap();
        assert_eq!(late.restore(&saved, t0 + 1_000_000).unwrap(), 0);
        let mut other = Scaler::new(ReplicasConfig {
            bucket: Duration::from_secs(2),
            ..small()
        })
        .unwrap();
        assert!(
            other
                .restore(&saved, t0 + 16_000)
                .unwrap_err()
                .contains("1s buckets")
        );
    }

    #[test]
    fn metrics_and_api_before_and_after_advice() {
        let h = ScalingHandle::new(ReplicasConfig {
            webhook: Some("http://127.0.0.1:9/secret/path".into()),
            ..small()
        });
        assert!(!h.metrics(false).contains("umbra_recommended_replicas"));
        assert_eq!(h.api()["state"], "waiting for traffic");
        let mut s = Scaler::new(small()).unwrap();
        s.observe(1_000_500, 50.0).unwrap();
        {
            let mut v = h.view();
            v.advice = s.advise(1_001_000, true);
            v.capacity = Some(CapacityInUse {
                rps: 30.0,
                source: CapacitySource::Config,
            });
        }
        let text = h.metrics(false);
        assert!(
            text.contains(
                "\n# TYPE umbra_recommended_replicas gauge\numbra_recommended_replicas 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("umbra_forecast_method{method=\"current-rate\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("umbra_replicas_webhook_requests_total{result=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            h.metrics(true)
                .contains("# TYPE umbra_replicas_webhook_requests counter\n")
        );
        let api = h.api();
        assert_eq!(api["state"], "warming up");
        assert_eq!(api["recommended_replicas"], 2);
        assert_eq!(api["webhook"]["url"], "http://127.0.0.1:9/…");
        assert_eq!(
            api["capacity_source"],
            "control.replicas.capacity_per_instance"
        );
    }
}
