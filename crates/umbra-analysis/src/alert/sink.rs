//! Alert sinks: the log, a generic JSON webhook, a Slack-compatible webhook and
//! Alertmanager's v2 API, fed from a background task.
//!
//! [`Dispatcher::spawn`] starts one task per sink, each behind its own bounded
//! queue, so a slow or dead sink delays nobody else. [`Dispatcher::send`] never
//! waits: when a sink's queue is full the batch is dropped for that sink and
//! counted. A failed send (connection error, timeout, a status other than 2xx)
//! is counted, remembered as the sink's last error and logged to standard
//! error; it is not retried, since a firing alert is sent again every
//! `resend_every_ms` anyway (Alertmanager needs that), and a lost "firing"
//! for chat sinks is better than a flood of retries.
//!
//! What each sink sends:
//!
//! - `log`: one line per firing or resolved alert on standard error.
//! - `webhook`: `POST url` with `{"source":"umbra","version":1,"events":[...]}`,
//!   each event an [`AlertEvent`] as JSON (repeats left out), its `alert`
//!   with a `links` array (the trace viewer links of `verdict.trace_ids`, as
//!   `/api/alerts` gives them; empty without a link template).
//! - `slack`: `POST url` with `{"text": "..."}`, one line per firing or resolved
//!   alert, a firing one followed by its traces as clickable links.
//! - `alertmanager`: `POST {url}/api/v2/alerts` with a list of alerts, each with
//!   `labels` (alertname `UmbraRegression`, profile, role, metric and the
//!   configured extra labels), `annotations` (summary, description, observed,
//!   baseline, change, p_value, basis, trace_ids, and with a link template
//!   `trace_url`, the first trace's link, and `trace_urls`, every link separated
//!   by spaces: annotations are strings), `startsAt`, `endsAt` (in the
//!   future while firing, the resolution time once resolved) and
//!   `generatorURL` when configured. Repeats are sent so Alertmanager keeps the
//!   alert active.
//!
//! The link template is the proxy's `[tracing] link_template` (after the
//! `OTEL_*` resolution), handed over as a string in
//! [`DispatcherConfig::trace_link_template`]: this crate does not depend on the
//! tracer. `{trace_id}` becomes the 32 hex digits of a trace id and
//! `{span_id}` becomes empty, as the admin API renders it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AlertEvent, EventKind};
use crate::window::TraceId;

/// A sink, as configured: `{ kind = "slack", url = "https://hooks.slack.com/..." }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    Log,
    Webhook {
        url: String,
        /// Extra request headers (for example an authorisation token).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    Slack {
        url: String,
    },
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
        url: String,
        /// Extra labels on every alert. Default `severity = "warning"`.
        #[serde(default = "default_labels")]
        labels: BTreeMap<String, String>,
        /// A link back to Umbra; `{fingerprint}` is replaced by the alert's.
        #[serde(default)]
        generator_url: Option<String>,
    },
}

fn default_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("severity".to_string(), "warning".to_string())])
}

impl SinkConfig {
    pub fn name(&self) -> String {
        match self {
            SinkConfig::Log => "log".to_string(),
            SinkConfig::Webhook { url, .. } => format!("webhook {url}"),
            SinkConfig::Slack { url } => format!("slack {}", redact(url)),
            SinkConfig::Alertmanager { url, .. } => format!("alertmanager {url}"),
        }
    }
}

/// Slack webhook URLs are secrets: show the host only.
fn redact(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => format!(
            "{}://{}/…",
            u.scheme_str().unwrap_or("http"),
            u.authority().map(|a| a.as_str()).unwrap_or("")
        ),
        Err(_) => "(invalid url)".to_string(),
    }
}

/// Why a sink cannot be built or a send failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: url `{url}`: {reason}")]
    InvalidUrl {
        sink: String,
        url: String,
        reason: String,
    },
    #[error("{sink}: header `{name}`: {reason}")]
    InvalidHeader {
        sink: String,
        name: String,
        reason: String,
    },
    #[error("{sink}: cannot set up TLS: {reason}")]
    Tls { sink: String, reason: String },
    #[error("{sink}: request failed: {reason}")]
    Request { sink: String, reason: String },
    #[error("{sink}: no answer within {after_ms} ms")]
    Timeout { sink: String, after_ms: u64 },
    #[error("{sink}: answered {status}: {body}")]
    Status {
        sink: String,
        status: u16,
        body: String,
    },
    #[error("trace link template `{template}`: {reason}")]
    InvalidLinkTemplate { template: String, reason: String },
}

/// The viewer link of each trace: `{trace_id}` replaced by its 32 hex digits,
/// `{span_id}` by nothing (an alert names traces, not spans).
pub fn trace_links(template: &str, trace_ids: &[TraceId]) -> Vec<String> {
    trace_ids
        .iter()
        .map(|t| {
            template
                .replace("{trace_id}", &t.to_string())
                .replace("{span_id}", "")
        })
        .collect()
}

/// A template must name the trace; anything else would give every alert the
/// same useless link.
fn check_link_template(template: &str) -> Result<(), SinkError> {
    if template.contains("{trace_id}") {
        Ok(())
    } else {
        Err(SinkError::InvalidLinkTemplate {
            template: template.to_string(),
            reason: "it has no {trace_id}".to_string(),
        })
    }
}

/// The dispatcher's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    pub sinks: Vec<SinkConfig>,
    /// Batches waiting per sink before new ones are dropped. Default 256.
    pub queue: usize,
    /// Time allowed for one send. Default 5 000 ms.
    pub timeout_ms: u64,
    /// Log failed sends to standard error. Default true.
    pub log_failures: bool,
    /// A trace viewer URL with `{trace_id}` (the tracer's `link_template`):
    /// alerts then carry links to their example traces. Default none.
    pub trace_link_template: Option<String>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            sinks: vec![SinkConfig::Log],
            queue: 256,
            timeout_ms: 5_000,
            log_failures: true,
            trace_link_template: None,
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    pub sink: String,
    /// Requests (or log lines) that went out successfully.
    pub sent: u64,
    pub failed: u64,
    /// Batches dropped because the sink's queue was full.
    pub dropped: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One sink, ready to send.
#[derive(Debug, Clone)]
pub struct Sink {
    name: String,
    kind: Kind,
    client: Option<HttpClient>,
    /// The trace viewer link template, when one is configured.
    links: Option<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    Log,
    Webhook {
        url: Uri,
        headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    },
    Slack {
        url: Uri,
    },
    Alertmanager {
        url: Uri,
        labels: BTreeMap<String, String>,
        generator_url: Option<String>,
    },
}

fn parse_url(sink: &str, url: &str) -> Result<Uri, SinkError> {
    let bad = |reason: &str| SinkError::InvalidUrl {
        sink: sink.to_string(),
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let u: Uri = url.trim().parse().map_err(|e| bad(&format!("{e}")))?;
    match u.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("expected an http:// or https:// URL")),
    }
    if u.authority().is_none() {
        return Err(bad("no host"));
    }
    Ok(u)
}

fn http_client(sink: &str) -> Result<HttpClient, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls {
            sink: sink.to_string(),
            reason: e.to_string(),
        })?
        .with_webpki_roots()
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

impl Sink {
    /// Checks the configuration and prepares an HTTP client where one is needed.
    pub fn new(config: &SinkConfig) -> Result<Sink, SinkError> {
        let name = config.name();
        let kind = match config {
            SinkConfig::Log => Kind::Log,
            SinkConfig::Webhook { url, headers } => {
                let mut hs = Vec::new();
                for (k, v) in headers {
                    let bad = |reason: String| SinkError::InvalidHeader {
                        sink: name.clone(),
                        name: k.clone(),
                        reason,
                    };
                    let hn = hyper::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| bad(e.to_string()))?;
                    let hv =
                        hyper::header::HeaderValue::from_str(v).map_err(|e| bad(e.to_string()))?;
                    hs.push((hn, hv));
                }
                Kind::Webhook {
                    url: parse_url(&name, url)?,
                    headers: hs,
                }
            }
            SinkConfig::Slack { url } => Kind::Slack {
                url: parse_url(&name, url)?,
            },
            SinkConfig::Alertmanager {
                url,
                labels,
                generator_url,
            } => {
                let base = url.trim().trim_end_matches('/');
                Kind::Alertmanager {
                    url: parse_url(&name, &format!("{base}/api/v2/alerts"))?,
                    labels: labels.clone(),
                    generator_url: generator_url.clone(),
                }
            }
        };
        let client = match kind {
            Kind::Log => None,
            _ => Some(http_client(&name)?),
        };
        Ok(Sink {
            name,
            kind,
            client,
            links: None,
        })
    }

    /// Links every alert's example traces with `template` (`{trace_id}`, and
    /// `{span_id}`, left empty).
    pub fn with_trace_links(mut self, template: &str) -> Result<Sink, SinkError> {
        check_link_template(template)?;
        self.links = Some(template.to_string());
        Ok(self)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The viewer links of an alert's example traces (none without a template).
    fn links(&self, e: &AlertEvent) -> Vec<String> {
        match &self.links {
            Some(t) => trace_links(t, &e.alert.verdict.trace_ids),
            None => Vec::new(),
        }
    }

    /// The request body this sink sends for `events`, or `None` when it has
    /// nothing to send (only repeats, for sinks that ignore them).
    pub fn payload(&self, events: &[AlertEvent]) -> Option<Value> {
        let news: Vec<&AlertEvent> = events
            .iter()
            .filter(|e| e.kind != EventKind::Repeat)
            .collect();
        match &self.kind {
            Kind::Log => None,
            Kind::Webhook { .. } => (!news.is_empty()).then(|| {
                let events: Vec<Value> = news
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        if let Some(alert) = v.get_mut("alert").and_then(Value::as_object_mut) {
                            alert.insert("links".into(), json!(self.links(e)));
                        }
                        v
                    })
                    .collect();
                json!({ "source": "umbra", "version": 1, "events": events })
            }),
            Kind::Slack { .. } => (!news.is_empty()).then(|| {
                let lines: Vec<String> = news
                    .iter()
                    .map(|e| {
                        let mark = match e.kind {
                            EventKind::Resolved => ":white_check_mark:",
                            _ => ":rotating_light:",
                        };
                        let mut line = format!("{mark} umbra {}", e.describe());
                        let links = self.links(e);
                        if e.kind != EventKind::Resolved && !links.is_empty() {
                            line.push_str("\ntraces: ");
                            let ids = e.alert.verdict.trace_ids.iter();
                            let items: Vec<String> = links
                                .iter()
                                .zip(ids)
                                .map(|(url, id)| slack_link(url, &id.to_string()[..8]))
                                .collect();
                            line.push_str(&items.join(" · "));
                        }
                        line
                    })
                    .collect();
                json!({ "text": lines.join("\n") })
            }),
            Kind::Alertmanager {
                labels,
                generator_url,
                ..
            } => (!events.is_empty()).then(|| {
                Value::Array(
                    events
                        .iter()
                        .map(|e| {
                            let mut a = alertmanager_alert(e, labels, generator_url.as_deref());
                            add_trace_urls(&mut a, &self.links(e));
                            a
                        })
                        .collect(),
                )
            }),
        }
    }

    /// Sends `events`; `Ok(false)` when there was nothing to send.
    pub async fn send(&self, events: &[AlertEvent], timeout: Duration) -> Result<bool, SinkError> {
        if let Kind::Log = self.kind {
            let mut any = false;
            for e in events.iter().filter(|e| e.kind != EventKind::Repeat) {
                eprintln!("umbra alert {}", e.describe());
                any = true;
            }
            return Ok(any);
        }
        let Some(body) = self.payload(events) else {
            return Ok(false);
        };
        self.post_json(&body, timeout).await
    }

    /// POSTs `body` as JSON to this sink's URL (with its headers), under
    /// `timeout`; `Ok(false)` for the log sink, which has no URL. Other senders
    /// of the binary (the replica advice) reuse the webhook sink this way.
    pub async fn post_json(&self, body: &Value, timeout: Duration) -> Result<bool, SinkError> {
        let (url, headers) = match &self.kind {
            Kind::Webhook { url, headers } => (url, headers.as_slice()),
            Kind::Slack { url } | Kind::Alertmanager { url, .. } => (url, &[][..]),
            Kind::Log => return Ok(false),
        };
        let Some(client) = &self.client else {
            return Ok(false);
        };
        let err = |reason: String| SinkError::Request {
            sink: self.name.clone(),
            reason,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| err(e.to_string()))?;
        let mut req = hyper::Request::post(url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("umbra/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| err(e.to_string()))?;
        let work = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| err(error_chain(&e)))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                return Err(SinkError::Status {
                    sink: self.name.clone(),
                    status: status.as_u16(),
                    body: text.trim().to_string(),
                });
            }
            Ok(true)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout {
                sink: self.name.clone(),
                after_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One alert in Alertmanager's v2 `postableAlert` shape.
pub fn alertmanager_alert(
    e: &AlertEvent,
    extra_labels: &BTreeMap<String, String>,
    generator_url: Option<&str>,
) -> Value {
    let a = &e.alert;
    let v = &a.verdict;
    let mut labels = serde_json::Map::new();
    for (k, val) in extra_labels {
        labels.insert(k.clone(), Value::String(val.clone()));
    }
    labels.insert("alertname".into(), "UmbraRegression".into());
    labels.insert("profile".into(), a.profile.clone().into());
    labels.insert("role".into(), a.role.as_str().into());
    labels.insert("metric".into(), a.metric.as_str().into());
    let traces: Vec<String> = v.trace_ids.iter().map(|t| t.to_string()).collect();
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": a.summary(),
            "description": v.detector,
            "observed": format!("{}", v.observed),
            "baseline": format!("{}", v.baseline),
            "change": format!("{}", v.change),
            "p_value": format!("{:e}", v.p_value),
            "basis": v.basis.to_string(),
            "trace_ids": traces.join(","),
            "fingerprint": a.fingerprint,
        },
        "startsAt": rfc3339(a.started_ms),
        "endsAt": rfc3339(e.ends_at_ms),
    });
    if let Some(g) = generator_url {
        alert["generatorURL"] = Value::String(g.replace("{fingerprint}", &a.fingerprint));
    }
    alert
}

/// Slack's link markup, `<url|label>`: `&`, `<` and `>` are Slack's control
/// characters and go as entities (Slack decodes them, in links too); a `|`
/// would end the URL early, so it is percent-encoded.
fn slack_link(url: &str, label: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!("<{}|{}>", esc(url).replace('|', "%7C"), esc(label))
}

/// Alertmanager annotations are strings: the first trace's link alone (for a
/// template's `{{ .Annotations.trace_url }}`), and all of them separated by
/// spaces, which a URL cannot contain.
fn add_trace_urls(alert: &mut Value, links: &[String]) {
    let Some(first) = links.first() else { return };
    if let Some(a) = alert.get_mut("annotations").and_then(Value::as_object_mut) {
        a.insert("trace_url".into(), first.clone().into());
        a.insert("trace_urls".into(), links.join(" ").into());
    }
}

/// Fans alert events out to the sinks' background tasks.
#[derive(Debug)]
pub struct Dispatcher {
    senders: Vec<mpsc::Sender<Arc<Vec<AlertEvent>>>>,
    counters: Vec<(String, Arc<Counters>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// Builds every sink and starts its task. Must be called inside a Tokio runtime.
    pub fn spawn(config: DispatcherConfig) -> Result<Dispatcher, SinkError> {
        let sinks = config
            .sinks
            .iter()
            .map(|c| {
                let sink = Sink::new(c)?;
                match &config.trace_link_template {
                    Some(t) => sink.with_trace_links(t),
                    None => Ok(sink),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let mut d = Dispatcher {
            senders: Vec::new(),
            counters: Vec::new(),
            tasks: Vec::new(),
        };
        for sink in sinks {
            let (tx, mut rx) = mpsc::channel::<Arc<Vec<AlertEvent>>>(config.queue.max(1));
            let counters = Arc::new(Counters::default());
            let c = counters.clone();
            let log = config.log_failures;
            let name = sink.name.clone();
            let task = tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    match sink.send(&batch, timeout).await {
                        Ok(true) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            c.failed.fetch_add(1, Ordering::Relaxed);
                            if log {
                                eprintln!("umbra: alert sink {e}");
                            }
                            if let Ok(mut last) = c.last_error.lock() {
                                *last = Some(e.to_string());
                            }
                        }
                    }
                }
            });
            d.senders.push(tx);
            d.counters.push((name, counters));
            d.tasks.push(task);
        }
        Ok(d)
    }

    /// Queues `events` for every sink without waiting; returns false when some
    /// sink's queue was full (that sink drops the batch and counts it).
    pub fn send(&self, events: Vec<AlertEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        let batch = Arc::new(events);
        let mut all = true;
        for (tx, (_, c)) in self.senders.iter().zip(&self.counters) {
            if tx.try_send(batch.clone()).is_err() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                all = false;
            }
        }
        all
    }

    pub fn stats(&self) -> Vec<SinkStats> {
        self.counters
            .iter()
            .map(|(name, c)| SinkStats {
                sink: name.clone(),
                sent: c.sent.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
            })
            .collect()
    }

    /// Stops taking events, lets every sink finish its queue, and waits.
    pub async fn close(mut self) {
        self.senders.clear();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn configs_read_from_json() {
        let v: Vec<SinkConfig> = serde_json::from_str(
            r#"[{"kind":"log"},
                {"kind":"webhook","url":"http://h/x","headers":{"authorization":"Bearer t"}},
                {"kind":"slack","url":"https://hooks.slack.com/services/a"},
                {"kind":"alertmanager","url":"http://127.0.0.1:9093"}]"#,
        )
        .unwrap();
        assert_eq!(v.len(), 4);
        match &v[3] {
            SinkConfig::Alertmanager { labels, .. } => assert_eq!(labels["severity"], "warning"),
            other => panic!("{other:?}"),
        }
        let e = serde_json::from_str::<SinkConfig>(
            r#"{"kind":"slack","url":"http://x","channel":"general"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("channel"), "{e}");
        let d: DispatcherConfig = serde_json::from_str(r#"{"queue":8}"#).unwrap();
        assert_eq!((d.queue, d.timeout_ms), (8, 5_000));
    }

    #[test]
    fn urls_and_headers_are_checked() {
        let e = Sink::new(&SinkConfig::Slack {
            url: "ftp://x".into(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
        let e = Sink::new(&SinkConfig::Webhook {
            url: "http://127.0.0.1:1/hook".into(),
            headers: BTreeMap::from([("bad header".into(), "x".into())]),
        })
        .unwrap_err();
        assert!(matches!(e, SinkError::InvalidHeader { .. }), "{e}");
        let s = Sink::new(&SinkConfig::Slack {
            url: "https://hooks.slack.com/services/T000/B000/SECRET".into(),
        })
        .unwrap();
        assert!(!s.name().contains("SECRET"), "{}", s.name());
    }
}
