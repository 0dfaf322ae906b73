//! Performance-based weights applied to the live proxy: every interval, each
//! production server's requests, errors and latency per profile over the
//! interval (from the proxy's cumulative series) go to `umbra-control`'s
//! `WeightController`, and the weights it returns are set on the proxy's
//! balancer and recorded in the store's event log (`umbra report` shows them).
//!
//! Not built yet: the shadow probes (synthetic requests to every server at a low
//! rate) that issue 7 also asks for; scores come from live traffic only.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use umbra_control::weights::{Observation, WeightConfig, WeightController};
use umbra_proxy::ProxyHandle;
use umbra_store::{EventRow, Store};

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
    pub weights: Vec<(String, u32)>,
    pub body: Value,
}

/// Runs the weights loop until `stop` fires. `on_change` hears every interval
/// that changed a weight (the demo prints them).
pub async fn run_weights(
    config: WeightConfig,
    proxy: ProxyHandle,
    store: Option<Arc<Store>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_change: impl FnMut(&Change) + Send,
) -> anyhow::Result<()> {
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
            _ = stop.changed() => return Ok(()),
        }
        let stats = proxy.stats();
        let observations = observe(&stats, &servers, &mut last);
        let weights = controller.step(&observations)?;
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
