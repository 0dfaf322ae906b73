//! The canary on the live proxy: `umbra-control`'s [`Canary`] judged on the
//! analysis windows, its share set on the proxy's split, its state kept in the
//! store so a restart resumes the same stage.
//!
//! ```text
//! analysis thread, every tick ──windows──► CanaryControl::observe ──► Canary (judge, stages)
//! admin API (/api/canary/...) ──action──► CanaryControl::act ────────┘      │ Decision
//!                                                                          ▼
//!        proxy split (share) · store (state "canary.<name>", event "canary") · log · alert on a judged rollback
//! ```
//!
//! One mutex guards the canary; both callers hold it only for the judgement
//! and a store write, never across an await.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{Value, json};
use umbra_analysis::baseline::Metric;
use umbra_analysis::verdict::{Basis, Evaluation, Status, Threshold, Verdict};
use umbra_analysis::window::{Role, Window};
use umbra_control::canary::{
    Action, Canary, CanaryConfig, CanaryState, Cause, Decision, Metric as CanaryMetric, Outcome,
    Phase,
};
use umbra_proxy::ProxyHandle;
use umbra_proxy::canary::CanaryShare;
use umbra_store::{EventRow, Store};

/// Hears every decision (the proxy logs them, the demo prints them).
pub type OnDecision = Box<dyn Fn(&str, &Decision) + Send + Sync>;

pub struct CanaryControl {
    name: String,
    canary: Mutex<Canary>,
    proxy: ProxyHandle,
    store: Option<Arc<Store>>,
    on_decision: OnDecision,
}

impl CanaryControl {
    /// Resumes the canary named `name` from the store, or starts it at its first
    /// stage, and sets its share on the proxy.
    pub fn start(
        config: CanaryConfig,
        name: &str,
        proxy: ProxyHandle,
        store: Option<Arc<Store>>,
        on_decision: OnDecision,
    ) -> anyhow::Result<Arc<CanaryControl>> {
        let now = now_ms();
        let saved: Option<CanaryState> = match &store {
            Some(s) => s
                .state(&state_key(name))
                .with_context(|| format!("reading canary {name:?} from the store"))?,
            None => None,
        };
        let canary = match saved {
            Some(state) => {
                let c = Canary::resume(config, state, now)
                    .with_context(|| format!("resuming canary {name:?}"))?;
                eprintln!(
                    "umbra: canary {name}: resumed at {}{}",
                    c.state().phase,
                    if c.state().paused { " (paused)" } else { "" }
                );
                c
            }
            None => {
                let c = Canary::new(config, now).context("section [control.canary]")?;
                eprintln!("umbra: canary {name}: starting at {}", c.state().phase);
                c
            }
        };
        let control = Arc::new(CanaryControl {
            name: name.to_string(),
            canary: Mutex::new(canary),
            proxy,
            store,
            on_decision,
        });
        {
            let c = control.lock();
            control.apply(&c);
            control.save(&c);
        }
        Ok(control)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every decision kept, oldest first.
    pub fn history(&self) -> Vec<Decision> {
        self.lock().state().history.clone()
    }

    /// The alert a decision raises: a judged rollback's failing metric.
    pub fn alert_for(&self, d: &Decision) -> Option<Evaluation> {
        rollback_evaluation(d, self.lock().config())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Canary> {
        self.canary.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges the analysis' closed windows; returns the decision, if one was made.
    pub fn observe(&self, windows: &[Window], now_ms: u64) -> Option<Decision> {
        let mut c = self.lock();
        let d = c.observe(windows, now_ms)?;
        self.decided(&c, &d);
        Some(d)
    }

    /// An operator's override.
    pub fn act(&self, action: Action, reason: Option<&str>) -> anyhow::Result<Decision> {
        let now = now_ms();
        let mut c = self.lock();
        let d = match action {
            Action::Promote => c.promote(now),
            Action::Rollback => c.rollback(now, reason.unwrap_or("rolled back by an operator")),
            Action::Pause => c.pause(now),
            Action::Resume => c.resume_judging(now),
        }
        .map_err(|e| anyhow::anyhow!("canary {}: {e}", self.name))?;
        self.decided(&c, &d);
        Ok(d)
    }

    /// `/api/canary`: the stage (the dashboard shows it), the share, the current
    /// judgement per profile and the latest decisions.
    pub fn status(&self) -> Value {
        let c = self.lock();
        let report = c.report(now_ms());
        let state = c.state();
        let history: Vec<&Decision> = state.history.iter().rev().take(20).collect();
        json!({
            "name": self.name,
            "stage": state.phase.to_string(),
            "phase": state.phase,
            "paused": state.paused,
            "mirror": report.share.mirror,
            "percent": report.share.percent,
            "outcome": report.outcome.as_str(),
            "score": report.score,
            "stage_started_ms": report.stage_started_ms,
            "elapsed_s": report.elapsed_ms / 1000,
            "interval_s": report.interval_ms / 1000,
            "holds": report.holds,
            "profiles": report.profiles,
            "history": history,
        })
    }

    /// Applies, keeps and tells a decision.
    fn decided(&self, c: &Canary, d: &Decision) {
        self.apply(c);
        self.save(c);
        if let Some(store) = &self.store {
            let body = json!({
                "canary": self.name,
                "from": d.from.to_string(),
                "to": d.to.to_string(),
                "outcome": d.outcome.as_str(),
                "by": match d.cause { Cause::Judged => "judge".to_string(), Cause::Operator { action } => format!("operator ({})", action_name(action)) },
                "reason": d.reason,
            });
            if let Err(e) = store.add_event(&EventRow {
                kind: "canary".into(),
                at_ms: d.at_ms,
                body,
            }) {
                eprintln!("umbra: {e}");
            }
        }
        (self.on_decision)(&self.name, d);
    }

    fn apply(&self, c: &Canary) {
        let share = c.share();
        self.proxy.set_canary_share(CanaryShare {
            mirror: share.mirror,
            percent: share.percent,
        });
    }

    fn save(&self, c: &Canary) {
        if let Some(store) = &self.store
            && let Err(e) = store.put_state(&state_key(&self.name), c.state(), now_ms())
        {
            eprintln!("umbra: canary {}: {e}", self.name);
        }
    }
}

fn state_key(name: &str) -> String {
    format!("canary.{name}")
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Promote => "promote",
        Action::Rollback => "rollback",
        Action::Pause => "pause",
        Action::Resume => "resume",
    }
}

/// The alert of a judged rollback: the failing metric of the worst profile as a
/// verdict of role canary against production, so it goes through the same
/// lifecycle and sinks as every other regression. `None` for any other decision.
pub fn rollback_evaluation(d: &Decision, config: &CanaryConfig) -> Option<Evaluation> {
    if d.to != Phase::RolledBack || d.cause != Cause::Judged {
        return None;
    }
    let (profile, m) = d
        .profiles
        .iter()
        .flat_map(|p| p.metrics.iter().map(move |m| (p, m)))
        .filter(|(_, m)| m.result == Outcome::Fail)
        .max_by(|a, b| {
            let change = |m: &umbra_control::canary::MetricJudgement| m.change.unwrap_or(0.0);
            change(a.1).total_cmp(&change(b.1))
        })?;
    let (metric, threshold, scale) = match m.metric {
        CanaryMetric::LatencyP50 => (
            Metric::P50,
            Threshold::RiseRatio(config.latency_threshold),
            1000.0,
        ),
        CanaryMetric::LatencyP99 => (
            Metric::P99,
            Threshold::RiseRatio(config.latency_threshold),
            1000.0,
        ),
        CanaryMetric::ErrorRate => (
            Metric::ErrorRate,
            Threshold::RiseBy(config.error_threshold),
            1.0,
        ),
    };
    // The decision's moment: the alert lifecycle measures staleness from it.
    let start = d.at_ms;
    let verdict = Verdict {
        profile: profile.profile.clone(),
        role: Role::Canary,
        metric,
        basis: Basis::Production,
        window_start_ms: start,
        window_end_ms: d.at_ms,
        baseline: m.production.unwrap_or(0.0) * scale,
        observed: m.canary.unwrap_or(0.0) * scale,
        change: m.change.unwrap_or(0.0),
        threshold,
        effect_size: m.change.unwrap_or(0.0),
        p_value: m.p_value.unwrap_or(1.0),
        detector: format!("canary judge: {}", d.reason),
        // The early check's consecutive failing checks (or one end-of-stage judgement).
        agreeing: config.confirm.max(1) as usize,
        of: config.confirm.max(1) as usize,
        requests: profile.canary_requests,
        trace_ids: Vec::new(),
    };
    Some(Evaluation {
        profile: verdict.profile.clone(),
        role: Role::Canary,
        metric,
        basis: Basis::Production,
        window_start_ms: start,
        window_end_ms: d.at_ms,
        status: Status::Regressed,
        observed: Some(verdict.observed),
        baseline: Some(verdict.baseline),
        crossed: true,
        flagged: true,
        score: 1.0 - verdict.p_value,
        agreeing: 1,
        verdict: Some(verdict),
    })
}

/// One line for people: `canary v2: 5% → rolled back (fail): ...`.
pub fn describe(name: &str, d: &Decision) -> String {
    let by = match d.cause {
        Cause::Judged => String::new(),
        Cause::Operator { action } => format!(" by an operator ({})", action_name(action)),
    };
    if d.from == d.to {
        format!(
            "canary {name}: {} holds{by} ({}): {}",
            d.to,
            d.outcome.as_str(),
            d.reason
        )
    } else {
        format!(
            "canary {name}: {} → {}{by} ({}): {}",
            d.from,
            d.to,
            d.outcome.as_str(),
            d.reason
        )
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
