//! Performance-based weights applied to the live proxy: every interval, each
//! production server's requests, errors and latency per profile over the
//! interval (from the proxy's cumulative series), blended with the shadow
//! probes' results when they are on (`probes.rs`, `umbra_control::probes`), go
//! to `umbra-control`'s `WeightController`. The weights it returns are set on
//! the proxy's balancer, recorded in the store's event log (`umbra report`
//! shows them), and pushed to the configured exporters (HAProxy's runtime API,
//! an nginx upstream file).
//!
//! Exports run on blocking threads, never in the loop: each exporter bounds
//! its own I/O by its timeout, one export per exporter runs at a time (a step
//! that finds the previous one still running counts a failure and leaves it),
//! and an exporter whose last export failed or is behind is tried again the
//! next interval. A failure is counted and logged (once while the same error
//! repeats, and again when the exporter recovers), and changes nothing else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};
use umbra_control::WeightsExporter;
use umbra_control::probes::combine;
use umbra_control::weights::{Observation, WeightConfig, WeightController, Weights};
use umbra_proxy::ProxyHandle;
use umbra_proxy::config::Config;
use umbra_proxy::stats::Exposition;
use umbra_store::{EventRow, Store};

use crate::probes::{ProbePlan, Probes};

/// `[control]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// `[control.weights]`: weights from performance (off without the table).
    #[serde(default)]
    pub weights: Option<WeightConfig>,
    /// `[control.canary]`: how the `[canary]` is judged and moved through its
    /// stages (the defaults when the table is absent).
    #[serde(default)]
    pub canary: Option<umbra_control::canary::CanaryConfig>,
    /// `[control.replicas]`: demand forecast and replica advice (off without
    /// the table; see `scaling.rs`).
    #[serde(default)]
    pub replicas: Option<crate::scaling::ReplicasConfig>,
}

impl ControlSection {
    /// The checks that need the proxy's configuration: probes need its profile
    /// set, with at least one request of an allowed method, and a
    /// `[control.canary]` needs a `[canary]` to judge. Returns lines for
    /// `umbra check`.
    pub fn check(&self, config: &Config) -> anyhow::Result<Vec<String>> {
        if self.canary.is_some() && config.canary.is_none() {
            anyhow::bail!(
                "section [control.canary]: there is no [canary] to judge; add its pool, or remove the table"
            );
        }
        let Some(w) = &self.weights else {
            return Ok(Vec::new());
        };
        let mut notes = Vec::new();
        if let Some(p) = w.probes.as_ref().filter(|p| p.enabled) {
            let plan = ProbePlan::new(p, config.profiles.as_ref().map(|p| p.file.as_path()))?;
            let mut note = format!(
                "probes: {} req/s to each of {} production servers, methods {}, {} profiles, probe_weight {}",
                p.rate,
                config.production.servers.len(),
                p.method_names().join(", "),
                plan.profiles(),
                p.probe_weight
            );
            if !plan.left_out.is_empty() {
                note.push_str(&format!(
                    " ({} profiles have no request with these methods and are not probed)",
                    plan.left_out.len()
                ));
            }
            let risky = p.unsafe_methods();
            if !risky.is_empty() {
                note.push_str(&format!(
                    "; warning: {} may change data, and probes hit production",
                    risky.join(", ")
                ));
            }
            notes.push(note);
        }
        for (i, e) in w.export.iter().enumerate() {
            let exporter = e.build(i)?;
            notes.push(format!("weights exported to {}", exporter.describe()));
        }
        Ok(notes)
    }
}

/// Cumulative figures of one (server, profile) series at the last interval.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    requests: u64,
    errors: u64,
    /// Requests × mean latency, in ms.
    total_ms: f64,
}

/// One change of weights, as printed and stored.
#[derive(Debug, Clone)]
pub struct Change {
    pub interval: u64,
    pub weights: Vec<(String, u32)>,
    pub body: Value,
}

/// Whole weights, as the balancers take them.
type Rounded = Vec<(String, u32)>;

/// One exporter and how it has done.
struct Exporter {
    name: String,
    inner: Arc<Mutex<Box<dyn WeightsExporter>>>,
    state: Arc<ExportState>,
}

#[derive(Default)]
struct ExportState {
    /// An export is running on a blocking thread.
    busy: AtomicBool,
    /// The weights the balancer last accepted.
    exported: Mutex<Option<Rounded>>,
    ok: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ExportState {
    /// Counts a failure; logs it when it differs from the last one, so a
    /// balancer that stays down says so once, not every interval.
    fn failed(&self, name: &str, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(why.as_str()) {
            eprintln!("umbra: weights export to {name}: {why}");
        }
        *last = Some(why);
    }

    fn succeeded(&self, name: &str, rounded: Rounded) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        *self.exported.lock().unwrap_or_else(|p| p.into_inner()) = Some(rounded);
        if self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
        {
            eprintln!("umbra: weights export to {name}: working again");
        }
    }

    fn exported(&self) -> Option<Rounded> {
        self.exported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Exporter {
    /// Starts an export of `weights` unless the balancer has them already.
    fn push(&self, weights: &Weights) {
        let rounded = weights.rounded();
        if self.state.exported().as_ref() == Some(&rounded) {
            return;
        }
        if self.state.busy.swap(true, Ordering::AcqRel) {
            self.state.failed(
                &self.name,
                "the previous export is still running; trying again next interval".into(),
            );
            return;
        }
        let (inner, state) = (self.inner.clone(), self.state.clone());
        let (name, weights) = (self.name.clone(), weights.clone());
        // Not awaited: the loop never waits for a balancer.
        tokio::task::spawn_blocking(move || {
            let result = inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .export(&weights);
            match result {
                Ok(()) => state.succeeded(&name, rounded),
                Err(e) => state.failed(&name, e.to_string()),
            }
            state.busy.store(false, Ordering::Release);
        });
    }
}

/// What the admin API reads from the weights loop: the latest weights, the
/// probes and the exporters.
#[derive(Clone)]
pub struct ControlHandle {
    shared: Arc<ControlShared>,
}

struct ControlShared {
    probes: Option<Probes>,
    exporters: Vec<Exporter>,
    latest: Mutex<Option<Weights>>,
}

impl ControlHandle {
    /// The loop's families for `/metrics`: probes and exports.
    pub fn metrics(&self, openmetrics: bool) -> String {
        let mut out = if openmetrics {
            Exposition::openmetrics()
        } else {
            Exposition::default()
        };
        let s = &self.shared;
        if let Some(p) = &s.probes {
            p.render(&mut out);
        }
        if !s.exporters.is_empty() {
            out.family(
                "umbra_weights_exports_total",
                "counter",
                "Weights accepted by each exporter's balancer.",
            );
            for e in &s.exporters {
                out.sample(
                    "umbra_weights_exports_total",
                    &[("exporter", e.name.clone())],
                    e.state.ok.load(Ordering::Relaxed) as f64,
                );
            }
            out.family(
                "umbra_weights_export_failures_total",
                "counter",
                "Weight exports that failed (the balancer kept its weights; retried next interval).",
            );
            for e in &s.exporters {
                out.sample(
                    "umbra_weights_export_failures_total",
                    &[("exporter", e.name.clone())],
                    e.state.failures.load(Ordering::Relaxed) as f64,
                );
            }
        }
        out.text
    }

    /// `weights` (the controller's latest output), `probes` and `exporters`, for `/api/stats`.
    pub fn json(&self) -> Value {
        let s = &self.shared;
        let latest = s.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let exporters: Vec<Value> = s
            .exporters
            .iter()
            .map(|e| {
                let exported = e.state.exported().map(|w| {
                    w.into_iter()
                        .map(|(s, w)| (s, json!(w)))
                        .collect::<serde_json::Map<_, _>>()
                });
                json!({
                    "exporter": e.name,
                    "exports": e.state.ok.load(Ordering::Relaxed),
                    "failures": e.state.failures.load(Ordering::Relaxed),
                    "last_error": *e.state.last_error.lock().unwrap_or_else(|p| p.into_inner()),
                    "exported": exported,
                })
            })
            .collect();
        json!({
            "weights": latest,
            "probes": s.probes.as_ref().map(Probes::json),
            "exporters": exporters,
        })
    }
}

/// The weights loop, ready to run: probes started, exporters built.
pub struct Control {
    config: WeightConfig,
    proxy: ProxyHandle,
    handle: ControlHandle,
}

impl Control {
    /// Builds the exporters and starts the probes (when on). Errors name the key.
    pub fn start(config: WeightConfig, proxy: ProxyHandle) -> anyhow::Result<Control> {
        config.validate().context("section [control.weights]")?;
        let probes = match config.probes.clone().filter(|p| p.enabled) {
            Some(p) => {
                let running = proxy.config();
                let plan = ProbePlan::new(&p, running.profiles.as_ref().map(|p| p.file.as_path()))?;
                Some(Probes::start(p, plan, proxy.clone())?)
            }
            None => None,
        };
        let exporters = config
            .export
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let inner = e.build(i)?;
                Ok(Exporter {
                    name: inner.describe(),
                    inner: Arc::new(Mutex::new(inner)),
                    state: Arc::default(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Control {
            config,
            proxy,
            handle: ControlHandle {
                shared: Arc::new(ControlShared {
                    probes,
                    exporters,
                    latest: Mutex::new(None),
                }),
            },
        })
    }

    pub fn handle(&self) -> ControlHandle {
        self.handle.clone()
    }

    /// Runs the weights loop until `stop` fires. `on_change` hears every
    /// interval that changed a weight (the demo prints them).
    pub async fn run(
        self,
        store: Option<Arc<Store>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut on_change: impl FnMut(&Change) + Send,
    ) -> anyhow::Result<()> {
        let Control {
            config,
            proxy,
            handle,
        } = self;
        let shared = &handle.shared;
        let servers = production_servers(&proxy.stats());
        let mut controller = WeightController::new(config.clone(), servers.clone())?;
        let mut last: BTreeMap<(String, String), Seen> = BTreeMap::new();
        let mut applied: BTreeMap<String, u32> = BTreeMap::new();
        let mut interval = tokio::time::interval(config.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => break,
            }
            let stats = proxy.stats();
            let live = observe(&stats, &servers, &mut last);
            let observations = match &shared.probes {
                Some(p) => {
                    // Servers added by a reload are probed but not weighed by this controller.
                    let probed: Vec<Observation> = p
                        .take()
                        .into_iter()
                        .filter(|o| servers.contains(&o.server))
                        .collect();
                    combine(&live, &probed, p.config().probe_weight)
                }
                None => live,
            };
            let observations = with_cpu(observations, &cpu_utilisation(&proxy));
            // A wrong observation changes nothing (the controller refuses it whole).
            let weights = match controller.step(&observations) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("umbra: weights: interval skipped: {e}");
                    continue;
                }
            };
            *shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(weights.clone());
            for e in &shared.exporters {
                e.push(&weights);
            }
            let rounded = weights.rounded();
            if rounded.iter().all(|(s, w)| applied.get(s) == Some(w)) {
                continue;
            }
            for (server, w) in &rounded {
                proxy.set_weight(server, *w);
                applied.insert(server.clone(), *w);
            }
            let body = json!({
                "interval": weights.interval,
                "servers": weights.servers.iter().map(|s| json!({
                    "server": s.server, "weight": s.weight.round(), "state": format!("{:?}", s.state).to_lowercase(),
                    "latency_ms": s.latency_ms, "error_rate": s.error_rate,
                })).collect::<Vec<_>>(),
            });
            let change = Change {
                interval: weights.interval,
                weights: rounded,
                body,
            };
            if let Some(store) = &store {
                let at = chrono::Utc::now().timestamp_millis().max(0) as u64;
                if let Err(e) = store.add_event(&EventRow {
                    kind: "weights".into(),
                    at_ms: at,
                    body: change.body.clone(),
                }) {
                    eprintln!("umbra: {e}");
                }
            }
            on_change(&change);
        }
        if shared.probes.is_some() {
            let h = handle.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(p) = &h.shared.probes {
                    p.stop();
                }
            })
            .await
            .ok();
        }
        Ok(())
    }
}

/// Each production server's CPU utilisation (0..1): cores in use, from its
/// `metrics` page, over its configured `cpus`. Servers missing either are left out.
fn cpu_utilisation(proxy: &ProxyHandle) -> BTreeMap<String, f64> {
    let config = proxy.config();
    let used: BTreeMap<String, f64> = proxy
        .resource_usage()
        .into_iter()
        .filter(|(role, ..)| role == "production")
        .filter_map(|(_, upstream, cores, _)| Some((upstream, cores?)))
        .collect();
    config
        .production
        .servers
        .iter()
        .filter_map(|s| {
            let name = s.url.authority().to_string();
            let cores = *used.get(&name)?;
            let cpus = s.cpus?;
            Some((name, (cores / cpus).clamp(0.0, 1.0)))
        })
        .collect()
}

/// The observations with each server's CPU utilisation, where it is known:
/// the controller's headroom factor (`cpu_weight`).
fn with_cpu(mut observations: Vec<Observation>, cpu: &BTreeMap<String, f64>) -> Vec<Observation> {
    for o in &mut observations {
        if let Some(u) = cpu.get(&o.server) {
            o.cpu = Some(*u);
        }
    }
    observations
}

fn production_servers(stats: &Value) -> Vec<String> {
    stats["production"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One server's interval: requests, errors, and (profile, requests, mean ms) per profile.
type Interval = (u64, u64, Vec<(String, u64, f64)>);

/// Each server's interval: the difference of its cumulative series since the last call.
fn observe(
    stats: &Value,
    servers: &[String],
    last: &mut BTreeMap<(String, String), Seen>,
) -> Vec<Observation> {
    let mut per_server: BTreeMap<&str, Interval> = servers
        .iter()
        .map(|s| (s.as_str(), (0, 0, Vec::new())))
        .collect();
    for s in stats["series"].as_array().into_iter().flatten() {
        if s["role"] != "production" {
            continue;
        }
        let (Some(server), Some(profile)) = (s["upstream"].as_str(), s["profile"].as_str()) else {
            continue;
        };
        let Some(entry) = per_server.get_mut(server) else {
            continue;
        };
        let now = Seen {
            requests: s["requests"].as_u64().unwrap_or(0),
            errors: s["errors"].as_u64().unwrap_or(0),
            total_ms: s["requests"].as_f64().unwrap_or(0.0)
                * s["latency_ms"]["mean"].as_f64().unwrap_or(0.0),
        };
        let before = last
            .insert((server.to_string(), profile.to_string()), now)
            .unwrap_or_default();
        let n = now.requests.saturating_sub(before.requests);
        if n == 0 {
            continue;
        }
        let mean = ((now.total_ms - before.total_ms) / n as f64).max(0.0);
        entry.0 += n;
        entry.1 += now.errors.saturating_sub(before.errors);
        entry.2.push((profile.to_string(), n, mean));
    }
    per_server
        .into_iter()
        .map(|(server, (requests, errors, profiles))| {
            profiles.into_iter().fold(
                Observation::new(server, requests, errors.min(requests)),
                |o, (p, n, mean)| o.profile(p, n, mean),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stats(series: &[(&str, &str, u64, u64, f64)]) -> Value {
        json!({
            "production": [{"name": "a"}, {"name": "b"}],
            "series": series.iter().map(|(up, p, n, e, mean)| json!({
                "role": "production", "upstream": up, "profile": p, "requests": n, "errors": e,
                "latency_ms": {"mean": mean},
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn cpu_utilisation_reaches_the_controller_as_headroom() {
        let obs = |s: &str| Observation::new(s, 100, 0).profile("p", 100, 10.0);
        let cpu: BTreeMap<String, f64> = [("a".to_string(), 0.2), ("b".to_string(), 0.6)].into();
        let observations = with_cpu(vec![obs("a"), obs("b"), obs("c")], &cpu);
        assert_eq!(observations[0].cpu, Some(0.2));
        assert_eq!(observations[2].cpu, None, "no cpus or no metrics: unknown");
        let mut c = WeightController::new(WeightConfig::default(), ["a", "b", "c"]).unwrap();
        let w = c.step(&observations).unwrap();
        let weight = |s: &str| w.servers.iter().find(|x| x.server == s).unwrap().weight;
        // Same latency and errors: the busier server gets less.
        assert!(weight("a") > weight("b"), "{w:?}");
    }

    #[test]
    fn observations_are_the_interval_not_the_total() {
        let servers = vec!["a".to_string(), "b".to_string()];
        let mut last = BTreeMap::new();
        let first = observe(&stats(&[("a", "p1", 10, 0, 20.0)]), &servers, &mut last);
        assert_eq!(first[0].requests, 10);
        assert_eq!(first[1].requests, 0, "b had no traffic");
        // 10 more requests averaging 40 ms: the total mean moves to 30 ms.
        let second = observe(&stats(&[("a", "p1", 20, 1, 30.0)]), &servers, &mut last);
        assert_eq!(second[0].requests, 10);
        assert_eq!(second[0].errors, 1);
        assert!((second[0].profiles[0].mean_ms - 40.0).abs() < 1e-9);
    }
}
