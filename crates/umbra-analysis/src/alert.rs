//! Alerts: verdicts turned into firing and resolved alerts, deduplicated.
//!
//! An alert is identified by its fingerprint, a stable hash of profile, role and
//! metric: however many windows, bases (history, production) and upstreams
//! agree, one regression is one alert. The [`AlertManager`] reads the judge's
//! evaluations:
//!
//! - a verdict for a fingerprint with no firing alert opens one
//!   ([`EventKind::Firing`]); further verdicts only update it;
//! - a firing alert is resolved ([`EventKind::Resolved`]) after `resolve_after`
//!   consecutive windows with no verdict on any basis (windows without enough
//!   data do not count), or after `stale_after_ms` without any evaluation at all
//!   (the profile's traffic stopped);
//! - every `resend_every_ms` a firing alert is sent again
//!   ([`EventKind::Repeat`]): Alertmanager resolves alerts that stop arriving, so
//!   its sink needs the repeats; the other sinks ignore them.
//!
//! The alert list is plain serde data ([`AlertManager::alerts`],
//! [`AlertManager::restore`]); the binary stores it. Sending lives in [`sink`].

pub mod sink;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::baseline::Metric;
use crate::verdict::{Evaluation, Status, Verdict};
use crate::window::Role;

/// How alerts fire, repeat and resolve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Consecutive windows without a verdict that resolve an alert. Default 3.
    pub resolve_after: usize,
    /// Resolve an alert that has had no evaluation for this long. Default 5 min.
    pub stale_after_ms: u64,
    /// How often a firing alert is sent again. Default 60 s.
    pub resend_every_ms: u64,
    /// How far ahead a firing alert's `endsAt` is set for Alertmanager (it
    /// resolves the alert itself if no repeat arrives by then). Default 4 min.
    pub ends_after_ms: u64,
    /// Resolved alerts kept in the list, newest first. Default 500.
    pub keep_resolved: usize,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            resolve_after: 3,
            stale_after_ms: 300_000,
            resend_every_ms: 60_000,
            ends_after_ms: 240_000,
            keep_resolved: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 16 hex digits, stable across restarts: FNV-1a of `profile`, `role`, `metric`.
    pub fingerprint: String,
    pub profile: String,
    pub role: Role,
    pub metric: Metric,
    pub state: AlertState,
    /// When the alert started firing (the start of the window of its first
    /// verdict), ms since the epoch.
    pub started_ms: u64,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<u64>,
    /// The last time a verdict supported it.
    pub last_verdict_ms: u64,
    /// The latest verdict.
    pub verdict: Verdict,
    /// Windows with a verdict while firing.
    pub windows: u64,
    #[serde(default)]
    pub last_sent_ms: u64,
    #[serde(default)]
    quiet_windows: usize,
    #[serde(default)]
    last_evaluated_ms: u64,
}

impl Alert {
    pub fn summary(&self) -> String {
        self.verdict.summary()
    }
}

/// The fingerprint of an alert on `metric` of `role` for `profile`.
pub fn fingerprint(profile: &str, role: Role, metric: Metric) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [profile, role.as_str(), metric.as_str()] {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new alert.
    Firing,
    /// A firing alert sent again (for Alertmanager).
    Repeat,
    Resolved,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Firing => "firing",
            EventKind::Repeat => "repeat",
            EventKind::Resolved => "resolved",
        })
    }
}

/// Something for the sinks to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub kind: EventKind,
    /// When the event happened, ms since the epoch.
    pub at_ms: u64,
    /// Alertmanager's `endsAt`: in the future while firing, the resolution time once resolved.
    pub ends_at_ms: u64,
    pub alert: Alert,
}

impl AlertEvent {
    /// One line for people (log and chat sinks).
    pub fn describe(&self) -> String {
        match self.kind {
            EventKind::Resolved => format!(
                "resolved: {} {} of profile {} is back to normal (fired for {})",
                self.alert.role,
                self.alert.metric,
                self.alert.profile,
                fmt_duration(self.at_ms.saturating_sub(self.alert.started_ms))
            ),
            _ => format!("{}: {}", self.kind, self.alert.summary()),
        }
    }
}

fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The alert lifecycle; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct AlertManager {
    config: AlertConfig,
    /// Firing alerts by fingerprint.
    firing: BTreeMap<String, Alert>,
    /// Resolved alerts, newest last.
    resolved: Vec<Alert>,
}

impl AlertManager {
    pub fn new(config: AlertConfig) -> AlertManager {
        AlertManager {
            config,
            firing: BTreeMap::new(),
            resolved: Vec::new(),
        }
    }

    /// Restores a saved alert list (as returned by [`AlertManager::alerts`]).
    pub fn restore(config: AlertConfig, alerts: Vec<Alert>) -> AlertManager {
        let mut m = AlertManager::new(config);
        for a in alerts {
            match a.state {
                AlertState::Firing => {
                    m.firing.insert(a.fingerprint.clone(), a);
                }
                AlertState::Resolved => m.resolved.push(a),
            }
        }
        m.resolved
            .sort_by_key(|a| a.resolved_ms.unwrap_or(a.last_verdict_ms));
        m.trim();
        m
    }

    pub fn config(&self) -> &AlertConfig {
        &self.config
    }

    /// Every alert: firing ones first (oldest first), then resolved ones, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.firing.values().cloned().collect();
        v.sort_by_key(|a| a.started_ms);
        v.extend(self.resolved.iter().rev().cloned());
        v
    }

    /// The firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }

    fn trim(&mut self) {
        let keep = self.config.keep_resolved;
        if self.resolved.len() > keep {
            let drop = self.resolved.len() - keep;
            self.resolved.drain(..drop);
        }
    }

    /// Reads one batch of evaluations (usually one span's) at `now_ms` and returns
    /// what to send.
    pub fn observe(&mut self, evaluations: &[Evaluation], now_ms: u64) -> Vec<AlertEvent> {
        // Per fingerprint and window: whether any basis had a verdict, and the verdict.
        let mut groups: BTreeMap<(String, u64), (Option<&Verdict>, bool, &Evaluation)> =
            BTreeMap::new();
        for e in evaluations {
            let evaluated = matches!(e.status, Status::Normal | Status::Regressed);
            if !evaluated {
                continue;
            }
            let fp = fingerprint(&e.profile, e.role, e.metric);
            let g = groups
                .entry((fp, e.window_start_ms))
                .or_insert((None, false, e));
            if let Some(v) = &e.verdict {
                // Keep the strongest evidence: the smallest p-value.
                if g.0.is_none_or(|old| v.p_value < old.p_value) {
                    g.0 = Some(v);
                }
            }
            g.1 = true;
        }
        let mut events = Vec::new();
        for ((fp, window), (verdict, _, e)) in groups {
            match (self.firing.get_mut(&fp), verdict) {
                (Some(a), Some(v)) => {
                    a.verdict = v.clone();
                    a.last_verdict_ms = window;
                    a.last_evaluated_ms = a.last_evaluated_ms.max(window);
                    a.windows += 1;
                    a.quiet_windows = 0;
                }
                (Some(a), None) => {
                    if window <= a.last_evaluated_ms {
                        continue;
                    }
                    a.last_evaluated_ms = window;
                    a.quiet_windows += 1;
                    if a.quiet_windows >= self.config.resolve_after.max(1)
                        && let Some(mut a) = self.firing.remove(&fp)
                    {
                        a.state = AlertState::Resolved;
                        a.resolved_ms = Some(now_ms);
                        a.last_sent_ms = now_ms;
                        events.push(AlertEvent {
                            kind: EventKind::Resolved,
                            at_ms: now_ms,
                            ends_at_ms: now_ms,
                            alert: a.clone(),
                        });
                        self.resolved.push(a);
                    }
                }
                (None, Some(v)) => {
                    let a = Alert {
                        fingerprint: fp.clone(),
                        profile: e.profile.clone(),
                        role: e.role,
                        metric: e.metric,
                        state: AlertState::Firing,
                        started_ms: v.window_start_ms,
                        resolved_ms: None,
                        last_verdict_ms: window,
                        verdict: v.clone(),
                        windows: 1,
                        last_sent_ms: now_ms,
                        quiet_windows: 0,
                        last_evaluated_ms: window,
                    };
                    events.push(AlertEvent {
                        kind: EventKind::Firing,
                        at_ms: now_ms,
                        ends_at_ms: now_ms.saturating_add(self.config.ends_after_ms),
                        alert: a.clone(),
                    });
                    self.firing.insert(fp, a);
                }
                (None, None) => {}
            }
        }
        events.extend(self.tick(now_ms));
        self.trim();
        events
    }

    /// Repeats and stale resolutions due at `now_ms` (call it now and then even
    /// when no windows close; [`AlertManager::observe`] calls it too).
    pub fn tick(&mut self, now_ms: u64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let stale: Vec<String> = self
            .firing
            .iter()
            .filter(|(_, a)| {
                now_ms.saturating_sub(a.last_evaluated_ms.max(a.last_verdict_ms))
                    > self.config.stale_after_ms
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in stale {
            if let Some(mut a) = self.firing.remove(&fp) {
                a.state = AlertState::Resolved;
                a.resolved_ms = Some(now_ms);
                a.last_sent_ms = now_ms;
                events.push(AlertEvent {
                    kind: EventKind::Resolved,
                    at_ms: now_ms,
                    ends_at_ms: now_ms,
                    alert: a.clone(),
                });
                self.resolved.push(a);
            }
        }
        for a in self.firing.values_mut() {
            if now_ms.saturating_sub(a.last_sent_ms) >= self.config.resend_every_ms {
                a.last_sent_ms = now_ms;
                events.push(AlertEvent {
                    kind: EventKind::Repeat,
                    at_ms: now_ms,
                    ends_at_ms: now_ms.saturating_add(self.config.ends_after_ms),
                    alert: a.clone(),
                });
            }
        }
        self.trim();
        events
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::verdict::{Basis, Threshold};

    fn eval(window: u64, regressed: bool, basis: Basis) -> Evaluation {
        let verdict = regressed.then(|| Verdict {
            profile: "checkout".into(),
            role: Role::Shadow,
            metric: Metric::P99,
            basis,
            window_start_ms: window,
            window_end_ms: window + 10_000,
            baseline: 100.0,
            observed: 140.0,
            change: 0.4,
            threshold: Threshold::RiseRatio(0.2),
            effect_size: 0.4,
            p_value: 1e-9,
            detector: "test".into(),
            agreeing: 2,
            of: 3,
            requests: 1000,
            trace_ids: vec![],
        });
        Evaluation {
            profile: "checkout".into(),
            role: Role::Shadow,
            metric: Metric::P99,
            basis,
            window_start_ms: window,
            window_end_ms: window + 10_000,
            status: if regressed {
                Status::Regressed
            } else {
                Status::Normal
            },
            observed: Some(140.0),
            baseline: Some(100.0),
            crossed: regressed,
            flagged: regressed,
            score: 0.9,
            agreeing: 2,
            verdict,
        }
    }

    #[test]
    fn fires_once_repeats_and_resolves() {
        let mut m = AlertManager::new(AlertConfig::default());
        let mut events = Vec::new();
        let mut t = 0;
        for w in 0..20u64 {
            t = w * 10_000 + 12_000;
            let regressed = (3..12).contains(&w);
            let evs = [
                eval(w * 10_000, regressed, Basis::History),
                eval(w * 10_000, regressed, Basis::Production),
            ];
            events.extend(m.observe(&evs, t));
        }
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == EventKind::Firing).count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == EventKind::Resolved).count(),
            1
        );
        assert!(kinds.contains(&EventKind::Repeat));
        let resolved = events
            .iter()
            .find(|e| e.kind == EventKind::Resolved)
            .unwrap();
        // Windows 12, 13, 14 were quiet: resolved when window 14 was read.
        assert_eq!(resolved.at_ms, 14 * 10_000 + 12_000);
        assert!(m.firing().next().is_none());
        let list = m.alerts();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, AlertState::Resolved);
        assert_eq!(list[0].windows, 9);
        let json = serde_json::to_string(&list).unwrap();
        let back: Vec<Alert> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
        let _ = t;
    }

    #[test]
    fn one_basis_regressed_keeps_the_alert_firing() {
        let mut m = AlertManager::new(AlertConfig::default());
        m.observe(&[eval(0, true, Basis::Production)], 1);
        for w in 1..10 {
            let evs = [
                eval(w * 10_000, false, Basis::History),
                eval(w * 10_000, true, Basis::Production),
            ];
            let evs = m.observe(&evs, w * 10_000);
            assert!(evs.iter().all(|e| e.kind != EventKind::Resolved));
        }
        assert_eq!(m.firing().count(), 1);
    }

    #[test]
    fn stale_alerts_resolve_and_restore_keeps_state() {
        let cfg = AlertConfig::default();
        let mut m = AlertManager::new(cfg);
        m.observe(&[eval(0, true, Basis::History)], 10_000);
        let restored = AlertManager::restore(cfg, m.alerts());
        let mut m = restored;
        assert_eq!(m.firing().count(), 1);
        let evs = m.tick(10_000 + cfg.stale_after_ms + 1);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EventKind::Resolved);
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(
            fingerprint("checkout", Role::Shadow, Metric::P99),
            fingerprint("checkout", Role::Shadow, Metric::P99)
        );
        assert_ne!(
            fingerprint("checkout", Role::Shadow, Metric::P99),
            fingerprint("checkout", Role::Canary, Metric::P99)
        );
        // No ambiguity between "ab"+"c" and "a"+"bc".
        assert_ne!(
            fingerprint("ab", Role::Shadow, Metric::P99),
            fingerprint("a", Role::Shadow, Metric::P99)
        );
        assert_eq!(fingerprint("checkout", Role::Shadow, Metric::P99).len(), 16);
    }
}
