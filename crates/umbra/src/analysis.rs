//! The live analysis behind `umbra proxy`: the proxy's measurements rolled into
//! windows, judged, turned into alerts, sent to the sinks and kept in the store.
//!
//! ```text
//! proxy recorder thread ──Feed──► Windower (mutex) ◄── analysis thread, every tick:
//!                                                        advance ► Judge ► AlertManager
//!                                                        ► Dispatcher (log, webhook, Slack, Alertmanager)
//!                                                        ► Store (alerts, baselines) ► View (admin API)
//! ```
//!
//! The feed runs on the proxy's recorder thread, never on the live path: one
//! mutex and one hash lookup per exchange. Everything else runs on the
//! analysis thread with its own one-thread runtime (the sinks' HTTP requests).
//! Baselines and alerts are restored from the store at start, so a restart keeps
//! what was learned and what is firing.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use umbra_analysis::alert::sink::{Dispatcher, DispatcherConfig, SinkConfig, SinkStats};
use umbra_analysis::alert::{Alert, AlertConfig, AlertEvent, AlertManager, AlertState};
use umbra_analysis::baseline::{BaselineEntry, Baselines};
use umbra_analysis::verdict::{Judge, JudgeConfig};
use umbra_analysis::window::{
    Measurement, ResourceSample, Role, Window, WindowKey, Windower, WindowerConfig, WindowerStats,
};
use umbra_proxy::config::{duration, parse_toml};
use umbra_proxy::record::{self, Exchange, Observer};
use umbra_store::{AlertRow, Store, WindowRow};

use crate::canary::CanaryControl;

/// The store document that holds the baselines.
const BASELINES: &str = "analysis.baselines";

/// The sections of `umbra.toml` the binary reads itself (the proxy lets them through).
#[derive(Debug, Default, Deserialize)]
pub struct Sections {
    #[serde(default)]
    pub analysis: AnalysisSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub store: Option<StoreSection>,
    #[serde(default)]
    pub control: crate::control::ControlSection,
    /// The tracer's viewer link template (`[tracing] link_template` with the
    /// `OTEL_*` variables applied), set by `umbra proxy`: the sinks link each
    /// alert's example traces with it.
    #[serde(skip)]
    pub trace_link_template: Option<String>,
}

impl Sections {
    /// Reads the sections from the config file; errors name the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<Sections> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Sections = parse_toml(&path.display().to_string(), &text)?;
        s.check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    /// The checks serde cannot do: the judge's settings and the sinks' URLs.
    pub fn check(&self) -> Result<(), String> {
        let a = &self.analysis;
        if a.window < Duration::from_millis(100) {
            return Err(format!(
                "key analysis.window: {:?} is too short (at least 100ms)",
                a.window
            ));
        }
        self.windower_config()
            .map_err(|e| format!("section [analysis]: {e}"))?;
        a.judge
            .validate()
            .map_err(|e| format!("section [analysis.judge]: {e}"))?;
        if let Some(w) = &self.control.weights {
            w.validate()
                .map_err(|e| format!("section [control.weights]: {e}"))?;
        }
        if let Some(c) = &self.control.canary {
            c.validate()
                .map_err(|e| format!("section [control.canary]: {e}"))?;
        }
        if let Some(r) = &self.control.replicas {
            r.validate()
                .map_err(|e| format!("section [control.replicas]: {e}"))?;
        }
        for (i, s) in self.alerts.sinks.iter().enumerate() {
            umbra_analysis::alert::sink::Sink::new(s)
                .map_err(|e| format!("key alerts.sinks[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// One line per section for `umbra check`.
    pub fn notes(&self) -> Vec<String> {
        let a = &self.analysis;
        let mut notes = Vec::new();
        if a.enabled {
            let rules: Vec<String> = a
                .judge
                .rules
                .iter()
                .map(|r| format!("{} {}", r.metric, r.threshold))
                .collect();
            notes.push(format!(
                "analysis: {} windows; regression when {} and the {} detector agree in {} of {} windows",
                humantime::format_duration(a.window),
                rules.join(", "),
                a.judge.detector.name(),
                a.judge.agreement.n,
                a.judge.agreement.m
            ));
            let sinks: Vec<String> = self.alerts.sinks.iter().map(SinkConfig::name).collect();
            notes.push(format!("alerts to: {}", sinks.join(", ")));
        } else {
            notes.push("analysis: off".to_string());
        }
        if let Some(w) = &self.control.weights {
            notes.push(format!(
                "weights from performance every {} (floor {}, at most {} points a step)",
                humantime::format_duration(w.interval),
                w.floor,
                w.max_step
            ));
        }
        if let Some(c) = &self.control.canary {
            let stages: Vec<String> = c.stages.iter().map(|p| format!("{p}%")).collect();
            notes.push(format!(
                "canary stages: {}{}, {} each; fails on latency up {}% or errors up {} points (p < {}), holds at most {} intervals",
                if c.shadow { "shadow, " } else { "" },
                stages.join(", "),
                humantime::format_duration(c.interval),
                c.latency_threshold * 100.0,
                c.error_threshold * 100.0,
                c.fail_alpha,
                c.max_holds
            ));
        }
        if let Some(r) = &self.control.replicas {
            notes.push(r.note());
        }
        match &self.store {
            Some(s) => notes.push(format!("store: {}", s.path.display())),
            None => notes.push("store: none (baselines and alerts live in memory)".to_string()),
        }
        notes
    }

    fn windower_config(&self) -> Result<WindowerConfig, String> {
        let a = &self.analysis;
        let c = WindowerConfig {
            span_ms: a.window.as_millis() as u64,
            lateness_ms: a.lateness.as_millis() as u64,
            idle_spans: a.idle_windows,
            trace_examples: a.trace_examples,
            significant_digits: a.significant_digits,
        };
        Windower::new(c.clone()).map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn alert_config(&self) -> AlertConfig {
        let a = &self.alerts;
        AlertConfig {
            resolve_after: a.resolve_after,
            stale_after_ms: a.stale_after.as_millis() as u64,
            resend_every_ms: a.resend_every.as_millis() as u64,
            ends_after_ms: a.ends_after.as_millis() as u64,
            keep_resolved: a.keep_resolved,
        }
    }

    fn dispatcher_config(&self) -> DispatcherConfig {
        let a = &self.alerts;
        DispatcherConfig {
            sinks: a.sinks.clone(),
            queue: a.queue,
            timeout_ms: a.timeout.as_millis() as u64,
            log_failures: true,
            trace_link_template: self.trace_link_template.clone(),
        }
    }
}

/// `[analysis]`: windows and the judge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// Measure and judge at all. Default true.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Span of a window. Default 10s.
    #[serde(default = "defaults::window", with = "duration")]
    pub window: Duration,
    /// How long after a window ends late measurements still count. Default 2s.
    #[serde(default = "defaults::lateness", with = "duration")]
    pub lateness: Duration,
    /// Empty windows a key gets after its traffic stops, before it is forgotten. Default 6.
    #[serde(default = "defaults::idle_windows")]
    pub idle_windows: u32,
    /// Slow and failed requests' trace ids kept per window. Default 5.
    #[serde(default = "defaults::trace_examples")]
    pub trace_examples: usize,
    /// Significant digits of the latency histograms. Default 2.
    #[serde(default = "defaults::significant_digits")]
    pub significant_digits: u8,
    /// Windows per profile and role kept for `/api/analysis`. Default 360 (an hour of 10s windows).
    #[serde(default = "defaults::history")]
    pub history: usize,
    /// Rules, detector, agreement, baselines and comparison (see examples/umbra.toml).
    #[serde(default)]
    pub judge: JudgeConfig,
}

impl Default for AnalysisSection {
    fn default() -> Self {
        AnalysisSection {
            enabled: true,
            window: defaults::window(),
            lateness: defaults::lateness(),
            idle_windows: defaults::idle_windows(),
            trace_examples: defaults::trace_examples(),
            significant_digits: defaults::significant_digits(),
            history: defaults::history(),
            judge: JudgeConfig::default(),
        }
    }
}

/// `[alerts]`: the lifecycle and the sinks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Consecutive quiet windows that resolve an alert. Default 3.
    #[serde(default = "defaults::resolve_after")]
    pub resolve_after: usize,
    /// Resolve an alert whose profile has not been evaluated for this long. Default 5m.
    #[serde(default = "defaults::stale_after", with = "duration")]
    pub stale_after: Duration,
    /// Send a firing alert again this often (Alertmanager expires alerts that stop coming). Default 1m.
    #[serde(default = "defaults::resend_every", with = "duration")]
    pub resend_every: Duration,
    /// Alertmanager `endsAt` ahead of now while firing. Default 4m.
    #[serde(default = "defaults::ends_after", with = "duration")]
    pub ends_after: Duration,
    /// Resolved alerts kept. Default 500.
    #[serde(default = "defaults::keep_resolved")]
    pub keep_resolved: usize,
    /// Where alerts go. Default: the log (standard error).
    #[serde(default = "defaults::sinks")]
    pub sinks: Vec<SinkConfig>,
    /// Batches waiting per sink before new ones are dropped. Default 256.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// Time allowed for one send. Default 5s.
    #[serde(default = "defaults::timeout", with = "duration")]
    pub timeout: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            resolve_after: defaults::resolve_after(),
            stale_after: defaults::stale_after(),
            resend_every: defaults::resend_every(),
            ends_after: defaults::ends_after(),
            keep_resolved: defaults::keep_resolved(),
            sinks: defaults::sinks(),
            queue: defaults::queue(),
            timeout: defaults::timeout(),
        }
    }
}

/// `[store]`: the embedded database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: PathBuf,
    /// How long window summaries are kept for `umbra report`. Default 7 days.
    #[serde(default = "defaults::keep_windows", with = "duration")]
    pub keep_windows: Duration,
}

impl StoreSection {
    pub fn at(path: PathBuf) -> StoreSection {
        StoreSection {
            path,
            keep_windows: defaults::keep_windows(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    use umbra_analysis::alert::sink::SinkConfig;

    pub fn yes() -> bool {
        true
    }
    pub fn window() -> Duration {
        Duration::from_secs(10)
    }
    pub fn lateness() -> Duration {
        Duration::from_secs(2)
    }
    pub fn idle_windows() -> u32 {
        6
    }
    pub fn trace_examples() -> usize {
        5
    }
    pub fn significant_digits() -> u8 {
        2
    }
    pub fn history() -> usize {
        360
    }
    pub fn resolve_after() -> usize {
        3
    }
    pub fn stale_after() -> Duration {
        Duration::from_secs(300)
    }
    pub fn resend_every() -> Duration {
        Duration::from_secs(60)
    }
    pub fn ends_after() -> Duration {
        Duration::from_secs(240)
    }
    pub fn keep_resolved() -> usize {
        500
    }
    pub fn sinks() -> Vec<SinkConfig> {
        vec![SinkConfig::Log]
    }
    pub fn queue() -> usize {
        256
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn keep_windows() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

/// One window of one profile and role, merged across upstreams, for people.
#[derive(Debug, Clone, Serialize)]
pub struct WindowSummary {
    pub start_ms: u64,
    pub end_ms: u64,
    pub requests: u64,
    pub throughput: f64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl WindowSummary {
    fn of(w: &Window) -> WindowSummary {
        WindowSummary {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            requests: w.requests,
            throughput: w.throughput(),
            mean_ms: (!w.latency.is_empty()).then(|| w.latency.mean() / 1000.0),
            p50_ms: w.p50().map(|us| us / 1000.0),
            p99_ms: w.p99().map(|us| us / 1000.0),
            error_rate: w.error_rate(),
            cpu_cores: w.cpu_cores,
            memory_bytes: w.memory_bytes,
        }
    }
}

/// What the admin API shows; the analysis thread replaces it after every tick.
#[derive(Debug, Default)]
struct View {
    alerts: Vec<Alert>,
    /// By profile, then role: the latest windows, oldest first.
    windows: BTreeMap<String, BTreeMap<Role, VecDeque<WindowSummary>>>,
    sinks: Vec<SinkStats>,
    windower: WindowerStats,
    baselines: usize,
    store_errors: u64,
}

/// Reads the upstreams' CPU and memory (the proxy's scrapes), once per tick.
pub type ResourceSource = Box<dyn Fn() -> Vec<ResourceSample> + Send + Sync>;

struct Shared {
    windower: Mutex<Windower>,
    resources: Mutex<Option<ResourceSource>>,
    /// The canary controller, judged on every tick's windows once the proxy has started.
    canary: Mutex<Option<Arc<CanaryControl>>>,
    view: RwLock<View>,
    window_ms: u64,
    store: Option<String>,
}

/// The admin API's side of the analysis: cheap to clone.
#[derive(Clone)]
pub struct AnalysisHandle {
    shared: Arc<Shared>,
}

impl AnalysisHandle {
    /// Where CPU and memory readings come from (the proxy, once it has started).
    pub fn set_resources(&self, source: ResourceSource) {
        *self
            .shared
            .resources
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The canary to judge on every tick (the proxy's, once it has started).
    pub fn set_canary(&self, canary: Arc<CanaryControl>) {
        *self.shared.canary.lock().unwrap_or_else(|p| p.into_inner()) = Some(canary);
    }

    /// Alerts, firing first; only those in `state` when given.
    pub fn alerts(&self, state: Option<AlertState>) -> Vec<Alert> {
        let view = self.shared.view.read().unwrap_or_else(|p| p.into_inner());
        view.alerts
            .iter()
            .filter(|a| state.is_none_or(|s| a.state == s))
            .cloned()
            .collect()
    }

    /// The windows per profile and role, the sinks' counters and the feed's.
    pub fn summary(&self) -> Value {
        let view = self.shared.view.read().unwrap_or_else(|p| p.into_inner());
        json!({
            "window_ms": self.shared.window_ms,
            "store": self.shared.store,
            "profiles": view.windows,
            "firing": view.alerts.iter().filter(|a| a.state == AlertState::Firing).count(),
            "baselines": view.baselines,
            "sinks": view.sinks,
            "measurements": view.windower,
            "store_errors": view.store_errors,
        })
    }

    /// Prometheus text (or OpenMetrics) for the firing alerts, appended to the proxy's `/metrics`.
    pub fn metrics(&self, openmetrics: bool) -> String {
        use std::fmt::Write;
        let view = self.shared.view.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP umbra_alerts_firing Regression alerts firing, by profile, role and metric.\n\
             # TYPE umbra_alerts_firing gauge\n",
        );
        for a in view.alerts.iter().filter(|a| a.state == AlertState::Firing) {
            let _ = writeln!(
                out,
                "umbra_alerts_firing{{profile=\"{}\",role=\"{}\",metric=\"{}\"}} 1",
                escape(&a.profile),
                a.role,
                a.metric
            );
        }
        // OpenMetrics names a counter family without its `_total` suffix.
        let family = if openmetrics {
            "umbra_analysis_late_measurements"
        } else {
            "umbra_analysis_late_measurements_total"
        };
        let _ = writeln!(
            out,
            "# HELP {family} Measurements that arrived after their window closed.\n# TYPE {family} counter"
        );
        let _ = writeln!(
            out,
            "umbra_analysis_late_measurements_total {}",
            view.windower.late
        );
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The running analysis.
pub struct Analysis {
    handle: AnalysisHandle,
    store: Option<Arc<Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Analysis {
    /// Opens the store, restores baselines and alerts, starts the sinks and the
    /// analysis thread. Returns `None` when `[analysis] enabled = false`.
    pub fn start(sections: &Sections) -> anyhow::Result<Option<Analysis>> {
        if !sections.analysis.enabled {
            return Ok(None);
        }
        let windower = Windower::new(
            sections
                .windower_config()
                .map_err(|e| anyhow::anyhow!("[analysis]: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("[analysis]: {e}"))?;
        let store = match &sections.store {
            Some(s) => Some(Arc::new(Store::open(&s.path)?)),
            None => None,
        };
        let judge_config = sections.analysis.judge.clone();
        let (mut baselines, mut alerts) = (Vec::<BaselineEntry>::new(), Vec::<Alert>::new());
        if let Some(store) = &store {
            baselines = store.state(BASELINES)?.unwrap_or_default();
            for row in store.alerts(&umbra_store::AlertQuery::default())? {
                let fingerprint = row.fingerprint.clone();
                let alert: Alert = serde_json::from_value(row.body).with_context(|| {
                    format!(
                        "store {}: alert {fingerprint} cannot be read by this version",
                        store.path()
                    )
                })?;
                alerts.push(alert);
            }
        }
        let restored = (baselines.len(), alerts.len());
        let judge = Judge::with_baselines(
            judge_config.clone(),
            Baselines::from_entries(judge_config.baseline, baselines),
        )?;
        let manager = AlertManager::restore(sections.alert_config(), alerts);
        let shared = Arc::new(Shared {
            windower: Mutex::new(windower),
            resources: Mutex::new(None),
            canary: Mutex::new(None),
            view: RwLock::new(View::default()),
            window_ms: sections.analysis.window.as_millis() as u64,
            store: store.as_ref().map(|s| s.path().to_string()),
        });
        if let Some(s) = &store {
            eprintln!(
                "umbra: store {}: {} baselines and {} alerts restored",
                s.path(),
                restored.0,
                restored.1
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the analysis runtime")?;
        let dispatcher = {
            let _enter = runtime.enter();
            Dispatcher::spawn(sections.dispatcher_config())?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let store_handle = store.clone();
        let worker = Worker {
            shared: shared.clone(),
            judge,
            manager,
            dispatcher: Some(dispatcher),
            store,
            history: sections.analysis.history.max(1),
            store_errors: 0,
            keep_windows: sections
                .store
                .as_ref()
                .map_or(Duration::ZERO, |s| s.keep_windows),
            last_prune: 0,
        };
        let tick = Duration::from_millis((shared.window_ms / 4).clamp(50, 1000));
        let thread = std::thread::Builder::new()
            .name("umbra-analysis".into())
            .spawn(move || runtime.block_on(worker.run(tick, stopped)))
            .context("starting the analysis thread")?;
        Ok(Some(Analysis {
            handle: AnalysisHandle { shared },
            stop: Some(stop),
            thread: Some(thread),
            store: store_handle,
        }))
    }

    pub fn handle(&self) -> AnalysisHandle {
        self.handle.clone()
    }

    /// The store it opened, for the other loops that record into it.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// What the proxy's recorder hands every measured exchange to. `canary` is
    /// the `[canary] name`: its shadow-stage copies are judged as the canary.
    pub fn feed(&self, canary: Option<&str>) -> Box<dyn Observer> {
        Box::new(Feed {
            shared: self.handle.shared.clone(),
            canary_copies: canary.map(Arc::from),
        })
    }

    /// Saves baselines and alerts, lets the sinks send what they hold (a few
    /// seconds at most) and stops the thread.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Analysis {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs on the proxy's recorder thread.
struct Feed {
    shared: Arc<Shared>,
    /// The shadow target that carries the canary's shadow-stage copies.
    canary_copies: Option<Arc<str>>,
}

impl Observer for Feed {
    fn exchange(&mut self, e: &Exchange, profile: &Arc<str>, at_ms: u64) {
        let m = Measurement {
            timestamp_ms: at_ms,
            key: WindowKey {
                role: match e.role {
                    record::Role::Production => Role::Production,
                    record::Role::Canary => Role::Canary,
                    record::Role::Shadow if self.canary_copies.as_ref() == Some(&e.upstream) => {
                        Role::Canary
                    }
                    record::Role::Shadow => Role::Shadow,
                },
                upstream: e.upstream.clone(),
                profile: profile.clone(),
            },
            latency_us: e.duration.as_micros().min(u128::from(u64::MAX)) as u64,
            status: e.status,
            bytes: e.response_bytes,
            trace_id: e
                .trace
                .as_ref()
                .map(|t| umbra_analysis::window::TraceId(t.ctx.trace_id.to_u128())),
        };
        self.shared
            .windower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ingest(&m);
    }
}

struct Worker {
    shared: Arc<Shared>,
    judge: Judge,
    manager: AlertManager,
    dispatcher: Option<Dispatcher>,
    store: Option<Arc<Store>>,
    history: usize,
    store_errors: u64,
    keep_windows: Duration,
    last_prune: u64,
}

impl Worker {
    async fn run(mut self, tick: Duration, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut windows_view: BTreeMap<String, BTreeMap<Role, VecDeque<WindowSummary>>> =
            BTreeMap::new();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The restored alerts and baselines are visible before the first tick.
        self.publish(&windows_view);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = &mut stop => break,
            }
            let now = now_ms();
            let samples = self
                .shared
                .resources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|read| read())
                .unwrap_or_default();
            let windows = {
                let mut windower = self
                    .shared
                    .windower
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for s in &samples {
                    windower.ingest_resources(s);
                }
                windower.advance(now)
            };
            let mut events = Vec::new();
            if !windows.is_empty() {
                let summaries = remember(&mut windows_view, &windows, self.history);
                self.save_windows(&summaries, now);
                let evaluations = self.judge.observe(&windows);
                events = self.manager.observe(&evaluations, now);
                self.save_baselines(now);
            }
            // The canary is judged on every tick: a stage can end without a new window.
            let canary = self
                .shared
                .canary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(c) = canary
                && let Some(d) = c.observe(&windows, now)
                && let Some(ev) = c.alert_for(&d)
            {
                events.extend(self.manager.observe(&[ev], now));
            }
            events.extend(self.manager.tick(now));
            if !events.is_empty() {
                self.save_alerts(&events, now);
                if let Some(d) = &self.dispatcher {
                    d.send(events);
                }
            }
            self.publish(&windows_view);
        }
        // Shutting down: keep what was learned and what is firing, and give the
        // sinks a moment to send what they hold.
        self.save_baselines(now_ms());
        let all: Vec<Alert> = self.manager.alerts();
        self.save_rows(&all, now_ms());
        if let Some(d) = self.dispatcher.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), d.close()).await;
        }
    }

    fn save_windows(&mut self, summaries: &[(String, Role, WindowSummary)], now: u64) {
        let Some(store) = &self.store else {
            return;
        };
        let rows: Vec<WindowRow> = summaries
            .iter()
            .filter_map(|(profile, role, w)| {
                Some(WindowRow {
                    profile: profile.clone(),
                    role: role.to_string(),
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                    body: serde_json::to_value(w).ok()?,
                })
            })
            .collect();
        let keep = self.keep_windows.as_millis() as u64;
        let result = store.put_windows(&rows).and_then(|()| {
            // Pruning once a minute is plenty.
            if now / 60_000 != self.last_prune / 60_000 {
                self.last_prune = now;
                store.prune_windows(now.saturating_sub(keep))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            self.store_errors += 1;
            eprintln!("umbra: {e}");
        }
    }

    fn save_baselines(&mut self, now: u64) {
        if let Some(store) = &self.store
            && let Err(e) = store.put_state(BASELINES, &self.judge.baselines().entries(), now)
        {
            self.store_errors += 1;
            eprintln!("umbra: {e}");
        }
    }

    fn save_alerts(&mut self, events: &[AlertEvent], now: u64) {
        let alerts: Vec<Alert> = events.iter().map(|e| e.alert.clone()).collect();
        self.save_rows(&alerts, now);
    }

    fn save_rows(&mut self, alerts: &[Alert], now: u64) {
        let Some(store) = &self.store else {
            return;
        };
        let rows: Vec<AlertRow> = alerts.iter().filter_map(|a| alert_row(a, now)).collect();
        let result = store.put_alerts(&rows).and_then(|()| {
            store.prune_resolved(self.manager.config().keep_resolved)?;
            Ok(())
        });
        if let Err(e) = result {
            self.store_errors += 1;
            eprintln!("umbra: {e}");
        }
    }

    fn publish(&self, windows: &BTreeMap<String, BTreeMap<Role, VecDeque<WindowSummary>>>) {
        let view = View {
            alerts: self.manager.alerts(),
            windows: windows.clone(),
            sinks: self
                .dispatcher
                .as_ref()
                .map(Dispatcher::stats)
                .unwrap_or_default(),
            windower: self
                .shared
                .windower
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stats(),
            baselines: self.judge.baselines().len(),
            store_errors: self.store_errors,
        };
        *self.shared.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }
}

/// Merges a span's windows per profile and role (across upstreams) and keeps the
/// latest `history` of each.
fn remember(
    view: &mut BTreeMap<String, BTreeMap<Role, VecDeque<WindowSummary>>>,
    windows: &[Window],
    history: usize,
) -> Vec<(String, Role, WindowSummary)> {
    let mut merged: BTreeMap<(u64, &str, Role), Window> = BTreeMap::new();
    for w in windows {
        let k = (w.start_ms, &*w.key.profile, w.key.role);
        match merged.get_mut(&k) {
            // Same span, profile and role: the merge cannot fail; if it did, the first stands.
            Some(m) => {
                let _ = m.merge(w);
            }
            None => {
                merged.insert(k, w.clone());
            }
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for ((_, profile, role), w) in merged {
        let summary = WindowSummary::of(&w);
        let q = view
            .entry(profile.to_string())
            .or_default()
            .entry(role)
            .or_default();
        q.push_back(summary.clone());
        while q.len() > history {
            q.pop_front();
        }
        out.push((profile.to_string(), role, summary));
    }
    out
}

fn alert_row(a: &Alert, now: u64) -> Option<AlertRow> {
    Some(AlertRow {
        fingerprint: a.fingerprint.clone(),
        profile: a.profile.clone(),
        role: a.role.to_string(),
        metric: a.metric.to_string(),
        state: match a.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
        .to_string(),
        started_ms: a.started_ms,
        resolved_ms: a.resolved_ms,
        updated_ms: now,
        body: serde_json::to_value(a).ok()?,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
