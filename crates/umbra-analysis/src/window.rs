//! Windows: measurements rolled up per key over a fixed span.
//!
//! A [`Measurement`] is one request as the proxy (or the load generator) saw it:
//! when it ended, which key it belongs to, how long it took, its status and its
//! size. The [`Windower`] adds measurements into per-key accumulators for the
//! span they fall in (spans are aligned to multiples of the span length, so two
//! processes with the same span agree on boundaries) and hands back a closed
//! [`Window`] once the span is over and a short lateness allowance has passed.
//!
//! A window never keeps samples: latency goes into an HdrHistogram, which merges
//! exactly, so windows from several upstreams or proxies, or several consecutive
//! spans, add up into one ([`Window::merge`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Longest latency a window records, in µs (one hour); longer ones are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Which side of the comparison a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The live service users are talking to.
    Production,
    /// A copy of live traffic sent to the new version; its answers are discarded.
    Shadow,
    /// A share of live traffic answered by the new version.
    Canary,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Production, Role::Shadow, Role::Canary];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Production => "production",
            Role::Shadow => "shadow",
            Role::Canary => "canary",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Role::Production),
            "shadow" => Ok(Role::Shadow),
            "canary" => Ok(Role::Canary),
            _ => Err(format!("role `{s}`: expected production, shadow or canary")),
        }
    }
}

/// What a window is about: one role, one upstream, one request profile.
///
/// Strings are `Arc<str>` so that a caller building a measurement per request
/// clones a pointer, not the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowKey {
    pub role: Role,
    /// The upstream (backend address or name) that answered.
    pub upstream: Arc<str>,
    /// The profile id (`umbra_core::Profile::id`) the request was classified into.
    pub profile: Arc<str>,
}

impl WindowKey {
    pub fn new(role: Role, upstream: &str, profile: &str) -> WindowKey {
        WindowKey {
            role,
            upstream: Arc::from(upstream),
            profile: Arc::from(profile),
        }
    }
}

impl fmt::Display for WindowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.role, self.upstream, self.profile)
    }
}

/// A W3C trace id (16 bytes), shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for TraceId {
    type Err = String;

    fn from_str(s: &str) -> Result<TraceId, String> {
        let t = s.trim();
        if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("trace id `{s}`: expected 32 hex digits"));
        }
        u128::from_str_radix(t, 16)
            .map(TraceId)
            .map_err(|e| format!("trace id `{s}`: {e}"))
    }
}

impl Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TraceId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One request, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// When the request ended, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub key: WindowKey,
    pub latency_us: u64,
    /// The HTTP status; 0 when there was no response (connection error, timeout).
    pub status: u16,
    /// Response body bytes.
    pub bytes: u64,
    /// The request's trace id, when it had one; kept only for the slowest and the
    /// failed requests of a window.
    pub trace_id: Option<TraceId>,
}

/// CPU and memory of one upstream at one moment (from the caller's own scraping).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSample {
    pub timestamp_ms: u64,
    pub role: Role,
    pub upstream: Arc<str>,
    /// CPU in use, in cores.
    pub cpu_cores: Option<f64>,
    /// Resident memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// A request kept as an example: its trace id and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceExample {
    pub trace_id: TraceId,
    pub latency_us: u64,
    /// 0 when there was no response.
    pub status: u16,
}

/// The summary of one key over one span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub key: WindowKey,
    /// Start of the span (inclusive), ms since the epoch.
    pub start_ms: u64,
    /// End of the span (exclusive). A merge of consecutive windows covers them all.
    pub end_ms: u64,
    pub requests: u64,
    /// Responses with a 5xx status, and requests that got no response at all.
    pub errors_5xx: u64,
    pub errors_4xx: u64,
    pub bytes: u64,
    /// Latencies in µs.
    #[serde(with = "histogram_serde")]
    pub latency: Histogram<u64>,
    /// Mean CPU of the upstream over the span, in cores, when the caller reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Peak resident memory of the upstream over the span, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The slowest requests that carried a trace id, slowest first (at most a few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slow_traces: Vec<TraceExample>,
    /// The first failed (5xx or no response) requests that carried a trace id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_traces: Vec<TraceExample>,
}

/// Why two windows cannot be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    #[error("cannot merge windows of {a} and {b}: different role or profile")]
    DifferentKey { a: String, b: String },
    #[error("cannot merge the latency histograms of {key}: {reason}")]
    Histogram { key: String, reason: String },
}

/// Why a windower or a histogram cannot be built as configured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowConfigError {
    #[error("window span must be at least 1 ms")]
    ZeroSpan,
    #[error("significant digits {0}: expected 1 to 5")]
    SignificantDigits(u8),
}

/// A new, empty latency histogram with `digits` significant digits, growing as
/// values arrive (up to [`MAX_LATENCY_US`], which callers clamp to).
pub fn new_histogram(digits: u8) -> Result<Histogram<u64>, WindowConfigError> {
    if !(1..=5).contains(&digits) {
        return Err(WindowConfigError::SignificantDigits(digits));
    }
    Histogram::new(digits).map_err(|_| WindowConfigError::SignificantDigits(digits))
}

impl Window {
    /// An empty window for `key` over `[start_ms, end_ms)`.
    pub fn empty(
        key: WindowKey,
        start_ms: u64,
        end_ms: u64,
        digits: u8,
    ) -> Result<Window, WindowConfigError> {
        Ok(Window {
            key,
            start_ms,
            end_ms,
            requests: 0,
            errors_5xx: 0,
            errors_4xx: 0,
            bytes: 0,
            latency: new_histogram(digits)?,
            cpu_cores: None,
            memory_bytes: None,
            slow_traces: Vec::new(),
            error_traces: Vec::new(),
        })
    }

    /// Span length in seconds (at least 1 ms).
    pub fn seconds(&self) -> f64 {
        self.end_ms.saturating_sub(self.start_ms).max(1) as f64 / 1000.0
    }

    /// Requests per second over the span.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds()
    }

    /// Share of requests that failed with a 5xx or no response; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors_5xx as f64 / self.requests as f64)
    }

    /// Share of requests answered with a 4xx; `None` without requests.
    pub fn client_error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors_4xx as f64 / self.requests as f64)
    }

    /// Latency at quantile `q` (0..=1) in µs; `None` without latencies.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        if self.latency.is_empty() || !q.is_finite() {
            return None;
        }
        let v = self.latency.value_at_quantile(q.clamp(0.0, 1.0));
        Some(self.latency.median_equivalent(v) as f64)
    }

    pub fn p50(&self) -> Option<f64> {
        self.latency_quantile(0.50)
    }

    pub fn p90(&self) -> Option<f64> {
        self.latency_quantile(0.90)
    }

    pub fn p99(&self) -> Option<f64> {
        self.latency_quantile(0.99)
    }

    /// Adds `other` into this window. Both must be for the same role and profile;
    /// a different upstream turns this window's upstream into `*` (all upstreams).
    /// The span becomes the union of both spans, so merging windows of the same
    /// span sums throughput, and merging consecutive spans averages it.
    pub fn merge(&mut self, other: &Window) -> Result<(), MergeError> {
        if self.key.role != other.key.role || self.key.profile != other.key.profile {
            return Err(MergeError::DifferentKey {
                a: self.key.to_string(),
                b: other.key.to_string(),
            });
        }
        self.latency
            .add(&other.latency)
            .map_err(|e| MergeError::Histogram {
                key: self.key.to_string(),
                reason: format!("{e:?}"),
            })?;
        if self.key.upstream != other.key.upstream {
            self.key.upstream = Arc::from("*");
        }
        let (a, b) = (self.seconds(), other.seconds());
        self.cpu_cores = match (self.cpu_cores, other.cpu_cores) {
            (Some(x), Some(y)) => Some((x * a + y * b) / (a + b)),
            (x, y) => x.or(y),
        };
        self.memory_bytes = match (self.memory_bytes, other.memory_bytes) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        self.start_ms = self.start_ms.min(other.start_ms);
        self.end_ms = self.end_ms.max(other.end_ms);
        self.requests += other.requests;
        self.errors_5xx += other.errors_5xx;
        self.errors_4xx += other.errors_4xx;
        self.bytes += other.bytes;
        let keep = self.slow_traces.len().max(other.slow_traces.len());
        self.slow_traces.extend_from_slice(&other.slow_traces);
        self.slow_traces
            .sort_by_key(|t| std::cmp::Reverse(t.latency_us));
        self.slow_traces.dedup_by_key(|t| t.trace_id);
        self.slow_traces.truncate(keep);
        let keep = self.error_traces.len().max(other.error_traces.len());
        for t in &other.error_traces {
            if self.error_traces.len() >= keep {
                break;
            }
            if !self.error_traces.iter().any(|e| e.trace_id == t.trace_id) {
                self.error_traces.push(*t);
            }
        }
        Ok(())
    }

    /// The trace ids of the slowest requests, slowest first.
    pub fn slow_trace_ids(&self) -> Vec<TraceId> {
        self.slow_traces.iter().map(|t| t.trace_id).collect()
    }
}

/// How a [`Windower`] cuts time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowerConfig {
    /// Span of a window in ms. Default 10 000 (10 s).
    pub span_ms: u64,
    /// How long after a span ends measurements for it are still accepted (they
    /// arrive out of order from several tasks). Default 2 000 ms.
    pub lateness_ms: u64,
    /// A key that had traffic gets empty windows (zero throughput, no latency) for
    /// this many spans after its last request, so a profile whose traffic stops is
    /// seen to stop; after that it is forgotten. Default 6 (a minute at 10 s).
    pub idle_spans: u32,
    /// How many slow and how many failed requests' trace ids a window keeps. Default 5.
    pub trace_examples: usize,
    /// Significant digits of the latency histograms (1–5). Default 2: values within
    /// 1%, about 14 KiB per window for latencies up to a second (3 digits take
    /// about 90 KiB, and a p99 estimated from a thousand requests moves by several
    /// percent from window to window anyway).
    pub significant_digits: u8,
}

impl Default for WindowerConfig {
    fn default() -> Self {
        WindowerConfig {
            span_ms: 10_000,
            lateness_ms: 2_000,
            idle_spans: 6,
            trace_examples: 5,
            significant_digits: 2,
        }
    }
}

/// What happened to an ingested value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Accepted,
    /// Its span was already closed; it was counted in [`WindowerStats::late`] and dropped.
    Late,
}

/// Counters of a [`Windower`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowerStats {
    pub measurements: u64,
    pub late: u64,
    pub resource_samples: u64,
    pub windows_closed: u64,
}

/// Resource samples of one (role, upstream) within a span.
#[derive(Debug, Clone, Default)]
struct ResourceAcc {
    cpu_sum: f64,
    cpu_n: u64,
    memory_max: Option<u64>,
}

/// Rolls measurements up into windows per key.
///
/// ```
/// use umbra_analysis::window::{Measurement, Role, WindowKey, Windower, WindowerConfig};
/// let mut w = Windower::new(WindowerConfig::default()).unwrap();
/// let key = WindowKey::new(Role::Shadow, "10.0.0.7:8080", "checkout");
/// w.ingest(&Measurement { timestamp_ms: 1_000, key, latency_us: 1200, status: 200, bytes: 512, trace_id: None });
/// assert!(w.advance(11_999).is_empty()); // 10 s span + 2 s lateness not yet over
/// let closed = w.advance(12_000);
/// assert_eq!(closed[0].requests, 1);
/// ```
#[derive(Debug)]
pub struct Windower {
    config: WindowerConfig,
    /// Open spans by start, each with its keys.
    open: BTreeMap<u64, HashMap<WindowKey, Window>>,
    resources: BTreeMap<u64, HashMap<(Role, Arc<str>), ResourceAcc>>,
    /// Keys with traffic in a closed span, for their empty windows.
    last_seen: HashMap<WindowKey, Seen>,
    /// Spans starting before this are closed.
    closed_before: u64,
    stats: WindowerStats,
}

impl Windower {
    pub fn new(config: WindowerConfig) -> Result<Windower, WindowConfigError> {
        if config.span_ms == 0 {
            return Err(WindowConfigError::ZeroSpan);
        }
        new_histogram(config.significant_digits)?;
        Ok(Windower {
            config,
            open: BTreeMap::new(),
            resources: BTreeMap::new(),
            last_seen: HashMap::new(),
            closed_before: 0,
            stats: WindowerStats::default(),
        })
    }

    pub fn config(&self) -> &WindowerConfig {
        &self.config
    }

    pub fn stats(&self) -> WindowerStats {
        self.stats
    }

    fn span_start(&self, ts: u64) -> u64 {
        ts - ts % self.config.span_ms
    }

    /// Adds one measurement to its window.
    pub fn ingest(&mut self, m: &Measurement) -> Ingested {
        let start = self.span_start(m.timestamp_ms);
        if start < self.closed_before {
            self.stats.late += 1;
            return Ingested::Late;
        }
        self.stats.measurements += 1;
        let span = self.config.span_ms;
        let digits = self.config.significant_digits;
        let examples = self.config.trace_examples;
        let keys = self.open.entry(start).or_default();
        let w = match keys.get_mut(&m.key) {
            Some(w) => w,
            None => {
                let Ok(w) = Window::empty(m.key.clone(), start, start.saturating_add(span), digits)
                else {
                    // Unreachable: the digits were checked in `new`.
                    return Ingested::Late;
                };
                keys.entry(m.key.clone()).or_insert(w)
            }
        };
        w.requests += 1;
        w.bytes = w.bytes.saturating_add(m.bytes);
        let failed = m.status == 0 || m.status >= 500;
        if failed {
            w.errors_5xx += 1;
        } else if (400..500).contains(&m.status) {
            w.errors_4xx += 1;
        }
        let latency = m.latency_us.clamp(1, MAX_LATENCY_US);
        // Cannot fail: the histogram resizes and the value is clamped to an hour.
        let _ = w.latency.record(latency);
        if let Some(id) = m.trace_id
            && examples > 0
        {
            let ex = TraceExample {
                trace_id: id,
                latency_us: m.latency_us,
                status: m.status,
            };
            keep_slowest(&mut w.slow_traces, ex, examples);
            if failed && w.error_traces.len() < examples {
                w.error_traces.push(ex);
            }
        }
        Ingested::Accepted
    }

    /// Adds a CPU/memory sample; it is attached to every window of its role and
    /// upstream in the same span (CPU averaged, memory at its peak).
    pub fn ingest_resources(&mut self, r: &ResourceSample) -> Ingested {
        let start = self.span_start(r.timestamp_ms);
        if start < self.closed_before {
            self.stats.late += 1;
            return Ingested::Late;
        }
        self.stats.resource_samples += 1;
        let acc = self
            .resources
            .entry(start)
            .or_default()
            .entry((r.role, r.upstream.clone()))
            .or_default();
        if let Some(c) = r.cpu_cores.filter(|c| c.is_finite() && *c >= 0.0) {
            acc.cpu_sum += c;
            acc.cpu_n += 1;
        }
        if let Some(m) = r.memory_bytes {
            acc.memory_max = Some(acc.memory_max.map_or(m, |x| x.max(m)));
        }
        Ingested::Accepted
    }

    /// Closes every span that ended at least the lateness allowance before
    /// `now_ms` and returns its windows, ordered by start then key.
    pub fn advance(&mut self, now_ms: u64) -> Vec<Window> {
        let Some(horizon) = now_ms.checked_sub(self.config.lateness_ms) else {
            return Vec::new();
        };
        // Spans ending at or before the horizon close.
        let boundary = self.span_start(horizon);
        self.close_before(boundary)
    }

    /// Closes every open span, whatever the time (at shutdown or the end of a file).
    pub fn flush(&mut self) -> Vec<Window> {
        let last_open = self
            .open
            .keys()
            .next_back()
            .copied()
            .max(self.resources.keys().next_back().copied());
        match last_open {
            Some(s) => self.close_before(s.saturating_add(self.config.span_ms)),
            None => Vec::new(),
        }
    }

    fn close_before(&mut self, boundary: u64) -> Vec<Window> {
        if boundary <= self.closed_before {
            return Vec::new();
        }
        let span = self.config.span_ms;
        let digits = self.config.significant_digits;
        let idle_for = u64::from(self.config.idle_spans) * span;
        let still_open = self.open.split_off(&boundary);
        let closing = std::mem::replace(&mut self.open, still_open);
        let still_open = self.resources.split_off(&boundary);
        let resources = std::mem::replace(&mut self.resources, still_open);
        let mut out: Vec<Window> = Vec::new();
        // Spans in order, so that a key quiet between two busy spans gets its empty
        // windows in between, even when several spans close at once.
        for (start, keys) in closing {
            for (key, w) in keys {
                match self.last_seen.get_mut(&key) {
                    Some(seen) => {
                        seen.fill_empty(&key, start, span, idle_for, digits, &mut out);
                        *seen = Seen {
                            traffic: start,
                            emitted: start,
                        };
                    }
                    None => {
                        self.last_seen.insert(
                            key,
                            Seen {
                                traffic: start,
                                emitted: start,
                            },
                        );
                    }
                }
                out.push(w);
            }
        }
        for (key, seen) in &mut self.last_seen {
            seen.fill_empty(key, boundary, span, idle_for, digits, &mut out);
        }
        self.last_seen
            .retain(|_, seen| seen.traffic.saturating_add(idle_for) >= boundary);
        for w in &mut out {
            if let Some(acc) = resources
                .get(&w.start_ms)
                .and_then(|m| m.get(&(w.key.role, w.key.upstream.clone())))
            {
                if acc.cpu_n > 0 {
                    w.cpu_cores = Some(acc.cpu_sum / acc.cpu_n as f64);
                }
                w.memory_bytes = acc.memory_max;
            }
        }
        self.closed_before = boundary;
        out.sort_by(|a, b| a.start_ms.cmp(&b.start_ms).then_with(|| a.key.cmp(&b.key)));
        self.stats.windows_closed += out.len() as u64;
        out
    }
}

/// When a key last had traffic, and the last window (busy or empty) it was given.
#[derive(Debug, Clone, Copy)]
struct Seen {
    traffic: u64,
    emitted: u64,
}

impl Seen {
    /// Empty windows for `key` after the last one emitted, before `until` and no
    /// more than `idle_for` after its last traffic.
    fn fill_empty(
        &mut self,
        key: &WindowKey,
        until: u64,
        span: u64,
        idle_for: u64,
        digits: u8,
        out: &mut Vec<Window>,
    ) {
        let limit = self.traffic.saturating_add(idle_for);
        let mut t = self.emitted.saturating_add(span);
        while t < until && t <= limit {
            if let Ok(w) = Window::empty(key.clone(), t, t.saturating_add(span), digits) {
                out.push(w);
            }
            self.emitted = t;
            t = t.saturating_add(span);
        }
    }
}

/// Keeps `v` the `n` slowest examples, slowest first.
fn keep_slowest(v: &mut Vec<TraceExample>, ex: TraceExample, n: usize) {
    if v.len() == n && v.last().is_some_and(|l| l.latency_us >= ex.latency_us) {
        return;
    }
    let at = v.partition_point(|x| x.latency_us >= ex.latency_us);
    v.insert(at, ex);
    v.truncate(n);
}

/// Histograms as base64 of the HdrHistogram V2 (deflate) serialisation, as in load reports.
pub mod histogram_serde {
    use super::*;

    pub fn encode(h: &Histogram<u64>) -> Result<String, String> {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| format!("cannot serialise a histogram: {e:?}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(buf))
    }

    pub fn decode(s: &str) -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram is not an HdrHistogram V2 serialisation: {e:?}"))?;
        // An auto-resizing copy, so later merges cannot fail on a narrow histogram.
        let mut out = Histogram::new(h.sigfig()).map_err(|e| format!("{e:?}"))?;
        out.add(&h).map_err(|e| format!("{e:?}"))?;
        Ok(out)
    }

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let text = encode(h).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(ts: u64, key: &WindowKey, lat: u64, status: u16) -> Measurement {
        Measurement {
            timestamp_ms: ts,
            key: key.clone(),
            latency_us: lat,
            status,
            bytes: 100,
            trace_id: Some(TraceId(u128::from(lat))),
        }
    }

    #[test]
    fn windows_close_after_span_and_lateness() {
        let mut w = Windower::new(WindowerConfig::default()).unwrap();
        let k = WindowKey::new(Role::Production, "a", "p1");
        for i in 0..100 {
            w.ingest(&m(
                20_000 + i * 10,
                &k,
                1000 + i,
                if i < 3 { 503 } else { 200 },
            ));
        }
        w.ingest(&m(20_500, &k, 50, 404));
        assert!(w.advance(31_999).is_empty());
        let c = w.advance(32_000);
        assert_eq!(c.len(), 1);
        let win = &c[0];
        assert_eq!((win.start_ms, win.end_ms), (20_000, 30_000));
        assert_eq!(win.requests, 101);
        assert_eq!(win.errors_5xx, 3);
        assert_eq!(win.errors_4xx, 1);
        assert!((win.throughput() - 10.1).abs() < 1e-9);
        assert_eq!(win.slow_traces.len(), 5);
        assert_eq!(win.slow_traces[0].latency_us, 1099);
        assert_eq!(win.error_traces.len(), 3);
        let p99 = win.p99().unwrap();
        assert!((1090.0..=1110.0).contains(&p99), "{p99}");
        // Late data for a closed span is counted and dropped.
        assert_eq!(w.ingest(&m(25_000, &k, 1, 200)), Ingested::Late);
        assert_eq!(w.stats().late, 1);
    }

    #[test]
    fn quiet_keys_get_empty_windows_then_are_forgotten() {
        let cfg = WindowerConfig {
            idle_spans: 2,
            ..WindowerConfig::default()
        };
        let mut w = Windower::new(cfg).unwrap();
        let k = WindowKey::new(Role::Shadow, "b", "p2");
        w.ingest(&m(0, &k, 10, 200));
        let c = w.advance(100_000);
        let starts: Vec<u64> = c.iter().map(|x| x.start_ms).collect();
        assert_eq!(starts, vec![0, 10_000, 20_000]);
        assert_eq!(c[1].requests, 0);
        assert_eq!(c[1].throughput(), 0.0);
        assert_eq!(c[1].p99(), None);
        assert!(w.advance(200_000).is_empty());
    }

    #[test]
    fn merges_upstreams_and_spans() {
        let mut w = Windower::new(WindowerConfig::default()).unwrap();
        let a = WindowKey::new(Role::Canary, "a", "p");
        let b = WindowKey::new(Role::Canary, "b", "p");
        for i in 0..10 {
            w.ingest(&m(i, &a, 100, 200));
            w.ingest(&m(10_000 + i, &b, 300, 500));
        }
        let c: Vec<Window> = w.flush().into_iter().filter(|w| w.requests > 0).collect();
        assert_eq!(c.len(), 2);
        let mut x = c[0].clone();
        x.merge(&c[1]).unwrap();
        assert_eq!(&*x.key.upstream, "*");
        assert_eq!((x.start_ms, x.end_ms), (0, 20_000));
        assert_eq!(x.requests, 20);
        assert_eq!(x.error_rate(), Some(0.5));
        assert!((x.throughput() - 1.0).abs() < 1e-9);
        let other = Window::empty(WindowKey::new(Role::Shadow, "a", "p"), 0, 1, 2).unwrap();
        assert!(x.merge(&other).is_err());
    }

    #[test]
    fn resources_attach_to_their_upstream() {
        let mut w = Windower::new(WindowerConfig::default()).unwrap();
        let k = WindowKey::new(Role::Shadow, "s1", "p");
        w.ingest(&m(1, &k, 100, 200));
        for (cpu, mem) in [(1.0, 10), (3.0, 30)] {
            w.ingest_resources(&ResourceSample {
                timestamp_ms: 5,
                role: Role::Shadow,
                upstream: Arc::from("s1"),
                cpu_cores: Some(cpu),
                memory_bytes: Some(mem),
            });
        }
        let c = w.flush();
        assert_eq!(c[0].cpu_cores, Some(2.0));
        assert_eq!(c[0].memory_bytes, Some(30));
    }

    #[test]
    fn window_round_trips_through_json() {
        let mut w = Windower::new(WindowerConfig::default()).unwrap();
        let k = WindowKey::new(Role::Production, "a", "p");
        for i in 0..50 {
            w.ingest(&m(i, &k, 100 + i * 7, 200));
        }
        let c = w.flush();
        let json = serde_json::to_string(&c[0]).unwrap();
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back.requests, 50);
        assert_eq!(back.p99(), c[0].p99());
        assert_eq!(back.slow_traces, c[0].slow_traces);
    }

    #[test]
    fn extreme_timestamps_and_latencies_do_not_panic() {
        let mut w = Windower::new(WindowerConfig::default()).unwrap();
        let k = WindowKey::new(Role::Production, "a", "p");
        for ts in [0, 1, u64::MAX - 5, u64::MAX] {
            w.ingest(&Measurement {
                timestamp_ms: ts,
                key: k.clone(),
                latency_us: u64::MAX,
                status: u16::MAX,
                bytes: u64::MAX,
                trace_id: Some(TraceId(u128::MAX)),
            });
        }
        let mut c = w.advance(u64::MAX);
        c.extend(w.flush());
        assert!(c.iter().map(|x| x.requests).sum::<u64>() >= 2);
        assert!(
            c.iter()
                .all(|x| x.p99().is_none_or(|p| p <= MAX_LATENCY_US as f64 * 1.01))
        );
    }

    #[test]
    fn trace_ids_parse_and_print() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!("xyz".parse::<TraceId>().is_err());
    }
}
