//! CPU and memory of each upstream, read from a Prometheus-format endpoint it
//! exposes (named per server in the config).
//!
//! Understood, in this order of preference:
//! - a process's own metrics: `process_cpu_seconds_total`, `process_resident_memory_bytes`;
//! - node_exporter: `node_cpu_seconds_total` (all modes but `idle` and `iowait`),
//!   `node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes`;
//! - cAdvisor / kubelet: `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`.
//!
//! CPU is reported as cores in use: the rise of the CPU-seconds counter between
//! two scrapes over the time between them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

use crate::config::UpstreamUrl;
use crate::forward::HttpClient;
use crate::stats::Exposition;

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// A metrics page larger than this is refused (a misconfigured URL, not metrics).
const MAX_PAGE: usize = 8 << 20;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Usage {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
    pub error: Option<String>,
    #[serde(skip)]
    last_cpu: Option<(f64, Instant)>,
}

/// Last readings, keyed by (role, upstream).
#[derive(Default)]
pub struct Resources {
    pub usage: Mutex<BTreeMap<(String, String), Usage>>,
}

/// What a page said.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<f64>,
}

impl Resources {
    pub fn render(&self, out: &mut Exposition) {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        out.family(
            "umbra_upstream_cpu_cores",
            "gauge",
            "CPU cores an upstream uses, from its metrics endpoint.",
        );
        for ((role, name), u) in usage.iter() {
            if let Some(v) = u.cpu_cores {
                out.sample(
                    "umbra_upstream_cpu_cores",
                    &[("role", role.clone()), ("upstream", name.clone())],
                    v,
                );
            }
        }
        out.family(
            "umbra_upstream_memory_bytes",
            "gauge",
            "Memory an upstream uses, from its metrics endpoint.",
        );
        for ((role, name), u) in usage.iter() {
            if let Some(v) = u.memory_bytes {
                out.sample(
                    "umbra_upstream_memory_bytes",
                    &[("role", role.clone()), ("upstream", name.clone())],
                    v,
                );
            }
        }
        out.family(
            "umbra_upstream_metrics_up",
            "gauge",
            "1 when the last scrape of an upstream's metrics worked.",
        );
        for ((role, name), u) in usage.iter() {
            out.sample(
                "umbra_upstream_metrics_up",
                &[("role", role.clone()), ("upstream", name.clone())],
                if u.error.is_none() { 1.0 } else { 0.0 },
            );
        }
    }

    fn store(&self, key: (String, String), result: Result<Reading, String>) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = usage.entry(key).or_default();
        match result {
            Ok(r) => {
                let now = Instant::now();
                if let (Some(total), Some((prev, at))) = (r.cpu_seconds, u.last_cpu) {
                    let dt = now.duration_since(at).as_secs_f64();
                    if dt > 0.0 && total >= prev {
                        u.cpu_cores = Some((total - prev) / dt);
                    }
                }
                u.last_cpu = r.cpu_seconds.map(|t| (t, now));
                u.memory_bytes = r.memory_bytes;
                u.error = None;
            }
            Err(e) => u.error = Some(e),
        }
    }
}

/// Scrapes every `(role, name, url)` each interval until `stop` is dropped.
pub async fn run(
    resources: Arc<Resources>,
    targets: Vec<(String, String, UpstreamUrl)>,
    client: HttpClient,
    interval: Duration,
    mut stop: watch::Receiver<()>,
) {
    if targets.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for (role, name, url) in &targets {
            let result = scrape(&client, url).await;
            resources.store((role.clone(), name.clone()), result);
        }
    }
}

async fn scrape(client: &HttpClient, url: &UpstreamUrl) -> Result<Reading, String> {
    let mut request = Request::new(Full::default());
    *request.uri_mut() = url.0.clone();
    if let Ok(v) = http::HeaderValue::from_str(url.authority()) {
        request.headers_mut().insert(header::HOST, v);
    }
    request.headers_mut().insert(
        header::ACCEPT,
        http::HeaderValue::from_static("text/plain;version=0.0.4"),
    );
    let page = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: status {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_PAGE);
        let bytes = body
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
    .await
    .map_err(|_| format!("{url}: no answer within {SCRAPE_TIMEOUT:?}"))??;
    let reading = parse(&page);
    if reading == Reading::default() {
        return Err(format!(
            "{url}: no CPU or memory metric found (see the proxy docs for the names read)"
        ));
    }
    Ok(reading)
}

/// Reads CPU seconds and memory bytes from a text-format page.
pub fn parse(page: &str) -> Reading {
    let mut process_cpu = None;
    let mut process_mem = None;
    let mut node_cpu: Option<f64> = None;
    let mut node_total = None;
    let mut node_available = None;
    let mut container_cpu: Option<f64> = None;
    let mut container_mem: Option<f64> = None;
    for line in page.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = split_sample(line) else {
            continue;
        };
        match name {
            "process_cpu_seconds_total" => process_cpu = Some(value),
            "process_resident_memory_bytes" => process_mem = Some(value),
            "node_cpu_seconds_total" => {
                let mode = label(labels, "mode");
                if !matches!(mode, Some("idle") | Some("iowait")) {
                    *node_cpu.get_or_insert(0.0) += value;
                }
            }
            "node_memory_MemTotal_bytes" => node_total = Some(value),
            "node_memory_MemAvailable_bytes" => node_available = Some(value),
            // The pod-level series have no container label; summing the
            // per-container ones would count the pod twice.
            "container_cpu_usage_seconds_total"
                if label(labels, "container").is_none_or(str::is_empty) =>
            {
                *container_cpu.get_or_insert(0.0) += value;
            }
            "container_memory_working_set_bytes"
                if label(labels, "container").is_none_or(str::is_empty) =>
            {
                *container_mem.get_or_insert(0.0) += value;
            }
            _ => {}
        }
    }
    let node_mem = match (node_total, node_available) {
        (Some(t), Some(a)) => Some(t - a),
        _ => None,
    };
    Reading {
        cpu_seconds: process_cpu.or(node_cpu).or(container_cpu),
        memory_bytes: process_mem.or(node_mem).or(container_mem),
    }
}

/// `name{labels} value [timestamp]` → (name, labels, value).
fn split_sample(line: &str) -> Option<(&str, &str, f64)> {
    let (name, rest) = match line.find(['{', ' ', '\t']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, rest) = if let Some(inner) = rest.strip_prefix('{') {
        let end = closing_brace(inner)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        ("", rest)
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The end of a label set, skipping braces inside quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read() {
        let page = "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1.048576e+06\n";
        assert_eq!(
            parse(page),
            Reading {
                cpu_seconds: Some(12.5),
                memory_bytes: Some(1_048_576.0)
            }
        );
    }

    #[test]
    fn node_exporter_metrics_are_read() {
        let page = r#"node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="user"} 20
node_cpu_seconds_total{cpu="0",mode="system"} 5
node_cpu_seconds_total{cpu="1",mode="iowait"} 3
node_cpu_seconds_total{cpu="1",mode="user"} 10
node_memory_MemTotal_bytes 8e9
node_memory_MemAvailable_bytes 6e9
"#;
        assert_eq!(
            parse(page),
            Reading {
                cpu_seconds: Some(35.0),
                memory_bytes: Some(2e9)
            }
        );
    }

    #[test]
    fn quoted_braces_and_garbage_do_not_confuse_the_reader() {
        let page =
            "weird{a=\"}\"} 1\nprocess_cpu_seconds_total{x=\"{}\"} 2 1700000000000\nnot a sample\n";
        assert_eq!(parse(page).cpu_seconds, Some(2.0));
    }

    #[test]
    fn cpu_is_the_rate_between_two_scrapes() {
        let r = Resources::default();
        let key = ("production".to_string(), "a".to_string());
        r.store(
            key.clone(),
            Ok(Reading {
                cpu_seconds: Some(10.0),
                memory_bytes: Some(1.0),
            }),
        );
        std::thread::sleep(Duration::from_millis(100));
        r.store(
            key.clone(),
            Ok(Reading {
                cpu_seconds: Some(10.1),
                memory_bytes: Some(2.0),
            }),
        );
        let usage = r.usage.lock().expect("lock");
        let cores = usage[&key].cpu_cores.expect("a rate");
        assert!((0.5..1.05).contains(&cores), "{cores}");
        assert_eq!(usage[&key].memory_bytes, Some(2.0));
    }
}
