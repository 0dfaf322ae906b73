//! The shadow probes (`[control.weights.probes]`): at a low rate, one request
//! shaped like the proxy's profiles is synthesised (with `umbra-load`'s
//! synthesis) and the very same request is sent to every production server
//! directly, past the balancer, with `x-umbra-probe: 1`. Each result goes into
//! `umbra-control`'s `ProbeTally`, which the weights loop takes every interval
//! and blends with the live measurements (`umbra_control::probes::combine`).
//!
//! ```text
//! probe thread (own runtime) ── every 1/rate s: build request k ──► server 1, 2, ... (own pools)
//!        │ result per (server, profile)                               x-umbra-probe: 1
//!        ▼
//!   ProbeTally (mutex) ◄── weights loop, every interval: take ► combine with live ► controller
//!   ProbeStats (mutex) ◄── /metrics, /api/stats
//! ```
//!
//! Probes never touch the live path: they run on a thread of their own with a
//! one-thread runtime and their own connections (one small pool per server), and
//! a server that falls behind gets at most `concurrency` probes in flight (a
//! probe due beyond that is skipped and counted, never queued).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use umbra_control::probes::{ProbeConfig, ProbeTally};
use umbra_control::weights::Observation;
use umbra_core::ProfileSet;
use umbra_load::client::Client;
use umbra_load::record::ErrorKind;
use umbra_load::synth::{Synth, arrival_rng};
use umbra_load::{HttpOptions, Target};
use umbra_proxy::ProxyHandle;
use umbra_proxy::stats::Exposition;

/// The header every probe carries, so servers (and their logs) can tell probes apart.
pub const PROBE_HEADER: &str = "x-umbra-probe";

/// What the probes send: the proxy's profile set, kept to the allowed methods.
pub struct ProbePlan {
    synth: Synth,
    /// Profile ids, by the synthesiser's profile index.
    ids: Vec<Arc<str>>,
    /// Profiles left out because none of their requests uses an allowed method.
    pub left_out: Vec<String>,
}

impl ProbePlan {
    /// Loads the profile set named by `[profiles] file` and keeps the templates
    /// whose method is allowed; refuses to start without a set, or when no
    /// profile has a request with an allowed method.
    pub fn new(config: &ProbeConfig, profiles: Option<&Path>) -> anyhow::Result<ProbePlan> {
        let Some(path) = profiles else {
            bail!(
                "section [control.weights.probes]: probes send requests shaped like the proxy's \
                 profiles, and there are none: set [profiles] file = \"profiles.json\" (from \
                 `umbra learn`), or turn probes off with enabled = false"
            );
        };
        let mut set = ProfileSet::load(path).with_context(|| {
            format!(
                "[control.weights.probes]: the profile set {}",
                path.display()
            )
        })?;
        let methods = config.method_names();
        let mut left_out = Vec::new();
        set.profiles.retain_mut(|p| {
            p.templates
                .retain(|t| methods.contains(&t.method.trim().to_ascii_uppercase()));
            if p.templates.is_empty() {
                left_out.push(p.name.clone());
            }
            !p.templates.is_empty()
        });
        if set.profiles.is_empty() {
            bail!(
                "key control.weights.probes.methods = {methods:?}: no profile in {} has a request \
                 with these methods, so there is nothing to probe with",
                path.display()
            );
        }
        let mix: Vec<f64> = set.mix().into_iter().map(|(_, f)| f).collect();
        let mut synth = Synth::new(&set, &mix, "");
        // Probes are measurements of our own; they start no traces in the servers' backends.
        synth.set_traceparent(false);
        Ok(ProbePlan {
            synth,
            ids: set
                .profiles
                .iter()
                .map(|p| Arc::from(p.id.as_str()))
                .collect(),
            left_out,
        })
    }

    pub fn profiles(&self) -> usize {
        self.ids.len()
    }
}

/// Why a probe ended, as the metrics label it.
fn outcome(result: &Result<u16, ErrorKind>) -> &'static str {
    match result {
        Ok(s) if *s >= 500 => "5xx",
        Ok(_) => "ok",
        Err(ErrorKind::Connect) => "connect",
        Err(ErrorKind::Timeout) => "timeout",
        Err(ErrorKind::Reset) => "reset",
        Err(ErrorKind::Other) => "other",
    }
}

/// Everything probes have done since the start, for `/metrics` and `/api/stats`.
#[derive(Debug, Default)]
struct ProbeStats {
    /// (server, outcome) → probes.
    outcomes: BTreeMap<(String, &'static str), u64>,
    /// server → probes skipped because `concurrency` were still in flight.
    skipped: BTreeMap<String, u64>,
    /// (server, profile) → (answered probes, their total latency in seconds).
    latency: BTreeMap<(String, Arc<str>), (u64, f64)>,
}

struct Shared {
    config: ProbeConfig,
    tally: Mutex<ProbeTally>,
    stats: Mutex<ProbeStats>,
}

impl Shared {
    fn record(
        &self,
        server: &str,
        profile: &Arc<str>,
        result: Result<u16, ErrorKind>,
        took: Duration,
    ) {
        let label = outcome(&result);
        {
            let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(status) => {
                    t.answered(server, profile, took.as_secs_f64() * 1000.0, status >= 500)
                }
                Err(_) => t.failed(server),
            }
        }
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *s.outcomes.entry((server.to_string(), label)).or_default() += 1;
        if result.is_ok() {
            let l = s
                .latency
                .entry((server.to_string(), profile.clone()))
                .or_default();
            l.0 += 1;
            l.1 += took.as_secs_f64();
        }
    }

    fn skipped(&self, server: &str) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *s.skipped.entry(server.to_string()).or_default() += 1;
    }
}

/// The running probes; stopped by [`Probes::stop`] or when dropped.
pub struct Probes {
    shared: Arc<Shared>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Probes {
    /// Starts the probe thread. The servers are read from the proxy's running
    /// configuration at every probe, so a reload's servers are probed too.
    pub fn start(
        config: ProbeConfig,
        plan: ProbePlan,
        proxy: ProxyHandle,
    ) -> anyhow::Result<Probes> {
        let shared = Arc::new(Shared {
            config,
            tally: Mutex::new(ProbeTally::default()),
            stats: Mutex::new(ProbeStats::default()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the probes' runtime")?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("umbra-probes".into())
            .spawn(move || runtime.block_on(probe_loop(s, plan, proxy, stopped)))
            .context("starting the probes' thread")?;
        Ok(Probes {
            shared,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.shared.config
    }

    /// The probes finished since the last call, one observation per server.
    pub fn take(&self) -> Vec<Observation> {
        self.shared
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The probe families of `/metrics`.
    pub fn render(&self, out: &mut Exposition) {
        let s = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        out.family(
            "umbra_probe_requests_total",
            "counter",
            "Shadow probes sent to each production server, by outcome (ok, 5xx, connect, timeout, reset, other).",
        );
        for ((server, outcome), n) in &s.outcomes {
            out.sample(
                "umbra_probe_requests_total",
                &[
                    ("upstream", server.clone()),
                    ("outcome", outcome.to_string()),
                ],
                *n as f64,
            );
        }
        out.family(
            "umbra_probe_skipped_total",
            "counter",
            "Shadow probes not sent because the server still had `concurrency` probes in flight.",
        );
        for (server, n) in &s.skipped {
            out.sample(
                "umbra_probe_skipped_total",
                &[("upstream", server.clone())],
                *n as f64,
            );
        }
        out.family(
            "umbra_probe_latency_seconds",
            "summary",
            "Latency of answered shadow probes (response body included), by server and profile.",
        );
        for ((server, profile), (n, total)) in &s.latency {
            let labels = [
                ("upstream", server.clone()),
                ("profile", profile.to_string()),
            ];
            out.sample("umbra_probe_latency_seconds_sum", &labels, *total);
            out.sample("umbra_probe_latency_seconds_count", &labels, *n as f64);
        }
    }

    /// The probes' settings and totals per server, for `/api/stats`.
    pub fn json(&self) -> Value {
        let c = &self.shared.config;
        let s = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        let blank = |name: &str| json!({"server": name, "requests": 0, "outcomes": {}, "skipped": 0, "profiles": []});
        let mut servers: BTreeMap<&str, Value> = BTreeMap::new();
        for ((server, outcome), n) in &s.outcomes {
            let v = servers.entry(server).or_insert_with(|| blank(server));
            v["requests"] = json!(v["requests"].as_u64().unwrap_or(0) + n);
            v["outcomes"][*outcome] = json!(n);
        }
        for (server, n) in &s.skipped {
            servers.entry(server).or_insert_with(|| blank(server))["skipped"] = json!(n);
        }
        for ((server, profile), (n, total)) in &s.latency {
            let v = servers.entry(server).or_insert_with(|| blank(server));
            if let Some(list) = v["profiles"].as_array_mut() {
                list.push(json!({
                    "profile": &**profile,
                    "answered": n,
                    "mean_ms": total * 1000.0 / (*n).max(1) as f64,
                }));
            }
        }
        json!({
            "rate": c.rate,
            "methods": c.method_names(),
            "probe_weight": c.probe_weight,
            "servers": servers.into_values().collect::<Vec<_>>(),
        })
    }
}

impl Probes {
    /// Stops the probe thread and waits for it (blocking, briefly: the loop
    /// ends at once, and probes in flight are dropped with its runtime).
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One production server's probe client.
struct Server {
    client: Arc<Client>,
    /// At most `concurrency` probes in flight.
    permits: Arc<tokio::sync::Semaphore>,
}

async fn probe_loop(
    shared: Arc<Shared>,
    plan: ProbePlan,
    proxy: ProxyHandle,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let c = shared.config.clone();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / c.rate));
    // A stalled thread sends the next probe late rather than a burst to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let options = HttpOptions {
        http2: false,
        insecure: false,
        timeout: c.timeout,
        connections: c.concurrency,
    };
    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let seed: u64 = rand::random();
    let marker = HeaderName::from_static(PROBE_HEADER);
    for k in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        // The running configuration's servers: a reload adds or removes some.
        let config = proxy.config();
        let wanted: Vec<(String, String)> = config
            .production
            .servers
            .iter()
            .map(|s| (s.url.authority().to_string(), s.url.to_string()))
            .collect();
        servers.retain(|name, _| wanted.iter().any(|(n, _)| n == name));
        for (name, url) in &wanted {
            if servers.contains_key(name) || refused.contains_key(name) {
                continue;
            }
            let client = url
                .parse::<Target>()
                .and_then(|t| Client::new(t, &options))
                .map_err(|e| e.to_string());
            match client {
                Ok(client) => {
                    servers.insert(
                        name.clone(),
                        Server {
                            client: Arc::new(client),
                            permits: Arc::new(tokio::sync::Semaphore::new(c.concurrency)),
                        },
                    );
                }
                Err(e) => {
                    eprintln!("umbra: probes: server {url}: {e}; not probed");
                    refused.insert(name.clone(), e);
                }
            }
        }
        let p = plan.synth.profile_of(seed, k);
        let mut request = plan.synth.build(p, &mut arrival_rng(seed, k));
        request
            .headers
            .insert(marker.clone(), HeaderValue::from_static("1"));
        let request = Arc::new(request);
        let profile = plan.ids.get(p).cloned().unwrap_or_else(|| Arc::from("all"));
        // The same request to every server at the same moment: a fair race.
        for (name, server) in &servers {
            let Ok(permit) = server.permits.clone().try_acquire_owned() else {
                shared.skipped(name);
                continue;
            };
            let (client, request, profile, shared, name) = (
                server.client.clone(),
                request.clone(),
                profile.clone(),
                shared.clone(),
                name.clone(),
            );
            let timeout = c.timeout;
            tokio::spawn(async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, client.send_pooled(&request)).await
                {
                    Ok(Ok(response)) => Ok(response.status),
                    Ok(Err(kind)) => Err(kind),
                    Err(_) => Err(ErrorKind::Timeout),
                };
                shared.record(&name, &profile, result, started.elapsed());
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn outcomes_are_labelled_as_the_metrics_document() {
        assert_eq!(outcome(&Ok(200)), "ok");
        assert_eq!(outcome(&Ok(404)), "ok");
        assert_eq!(outcome(&Ok(503)), "5xx");
        assert_eq!(outcome(&Err(ErrorKind::Timeout)), "timeout");
        assert_eq!(outcome(&Err(ErrorKind::Connect)), "connect");
    }

    #[test]
    fn without_a_profile_set_probes_are_refused_naming_the_key() {
        let e = ProbePlan::new(&ProbeConfig::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("[control.weights.probes]") && e.contains("[profiles] file"),
            "{e}"
        );
    }
}
