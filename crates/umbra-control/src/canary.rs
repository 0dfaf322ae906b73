//! Canary progression: shadow, then growing shares of live traffic, each stage
//! judged against production in the manner of Kayenta, until the canary is
//! promoted or rolled back.
//!
//! ```text
//!            pass           pass           pass                 pass
//!  Shadow ───────► 1% ───────► 5% ─ ─ ─ ─ ─► 50% ─────────────────────► Promoted
//!    │  ▲           │  ▲                       │  (the next stage is 100%, or none is left)
//!    └──┘ hold      └──┘ hold                  │
//!    │              │                          │
//!    └──────────────┴──── fail, early failure, max_holds holds in a row ──► RolledBack
//! ```
//!
//! This is a pure state machine: no I/O, no clock. The caller hands it the
//! analysis crate's closed [`Window`]s each tick with the time ([`Canary::observe`]),
//! applies [`Canary::share`] to the proxy's router, and stores
//! [`Canary::state`] (serde) so a restart can [`Canary::resume`].
//!
//! Per stage it keeps, per profile, the canary's and production's windows since
//! the stage started, merged across upstreams and spans. Shadow-role windows are
//! ignored: they belong to the shadow environment, not to the canary. During the
//! shadow stage the canary's measurements are the mirrored copies it answered
//! (the proxy labels them `canary`); production's are the live requests.
//!
//! Two checks run on that cumulative data:
//!
//! - **early failure**, with the strict `fail_alpha`: a profile's metric that
//!   fails on `confirm` counted checks in a row rolls back at once, *even when
//!   paused*: a pause stops progress, not protection, since users keep being
//!   served by the canary. A check counts when the profile's canary requests
//!   have doubled since its last counted one (see `early_check` for why not
//!   every tick).
//! - **end of stage**, once `interval` has passed (not when paused): each
//!   metric of each profile is Pass, Marginal or Fail ([`Outcome`]), the score
//!   is `100 × passed / judged`. Any Fail, or a score below `marginal_score`,
//!   rolls back; a score at or above `pass_score` moves to the next stage; a
//!   Marginal score, or no data at all, holds: the stage clock restarts while
//!   the data keeps accumulating, and `max_holds` holds in a row roll back. No
//!   data is never a pass: a canary nobody measured is not known to be good.
//!
//! Per metric, a change at or above the threshold that is significant at
//! `fail_alpha` fails; one that is large and significant only at `alpha` is
//! Marginal; anything else passes (a small change, significant or not, is
//! within tolerance; a large one without significance is not evidence). At the end of a stage both levels are divided by the number of
//! judged metrics, so `alpha` is the stage's false-alarm rate rather than each
//! metric's. `latency_p99` waits for 500 latencies a side and `error_rate` for
//! `5 / error_threshold` requests a side: the analysis crate's proportion
//! tests are normal approximations, far too sure of themselves on a few
//! events. Each of these rules is there because, without it, healthy canaries
//! were rolled back in the simulation of `tests/canary.rs` (15 of 20 runs with
//! none of them; 8 of 1000 with all of them, mostly three holds in a row on a
//! small but significant difference that the accumulating data kept
//! significant).
//!
//! A 100% stage is never judged: there would be no production left to compare
//! with, so entering it (or passing the last stage) is promotion.

mod judge;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use umbra_analysis::window::{Role, Window};

use crate::error::Error;
pub use judge::{Metric, MetricJudgement, Outcome, ProfileJudgement};
use judge::{Rules, StageJudgement, describe, judge_profile, judge_stage, score_stage};

/// The `[control.canary]` settings (TOML; every key optional).
///
/// ```toml
/// stages = [1, 5, 25, 50, 100]   # live shares in percent; 100 (if given) means promotion
/// shadow = true                  # a shadow-only stage first: mirrored copies, no users
/// interval = "5m"                # how long each stage is judged over
/// min_requests = 50              # canary and production requests a profile needs to be judged
/// latency_threshold = 0.2        # relative latency rise that fails (0.2 = 20% slower)
/// error_threshold = 0.01         # absolute rise in 5xx rate that fails (0.01 = one point)
/// alpha = 0.01                   # significance at the end of a stage
/// fail_alpha = 0.001             # significance of the early failure check mid-stage
/// confirm = 2                    # checks in a row an early failure must hold
/// pass_score = 95                # score (% of judged metrics that passed) to go on
/// marginal_score = 75            # below it the stage fails; between the two it holds
/// max_holds = 3                  # held intervals in a row before rollback; 0 holds forever
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Live shares of traffic in percent, strictly increasing, each in (0, 100];
    /// 100, if present, must be last. Default `[1, 5, 25, 50, 100]`.
    pub stages: Vec<f64>,
    /// Start with a shadow-only stage. Default true.
    pub shadow: bool,
    /// How long each stage is judged over. Default 5 min.
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    /// Requests a profile needs on *both* sides over the stage before it is
    /// judged. Default 50.
    pub min_requests: u64,
    /// Relative latency rise (p50 shift, p99 ratio − 1) that fails. Default 0.2.
    pub latency_threshold: f64,
    /// Absolute rise in the 5xx rate that fails. Default 0.01 (one point).
    pub error_threshold: f64,
    /// Significance level of the end-of-stage judgement. Default 0.01.
    pub alpha: f64,
    /// Significance level of the early failure check, at most `alpha`: it looks
    /// every tick, so it must be stricter. Default 0.001.
    pub fail_alpha: f64,
    /// Consecutive early checks (with new canary data) a failure must hold. Default 2.
    pub confirm: u32,
    /// Score at or above which a stage passes. Default 95.
    pub pass_score: f64,
    /// Score at or above which a stage that did not pass holds; below, it fails. Default 75.
    pub marginal_score: f64,
    /// Held intervals in a row (marginal or no data) after which the canary is
    /// rolled back: with 3, the third hold in a row rolls back. 0 holds forever.
    /// Default 3.
    pub max_holds: u32,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            stages: vec![1.0, 5.0, 25.0, 50.0, 100.0],
            shadow: true,
            interval: Duration::from_secs(300),
            min_requests: 50,
            latency_threshold: 0.2,
            error_threshold: 0.01,
            alpha: 0.01,
            fail_alpha: 0.001,
            confirm: 2,
            pass_score: 95.0,
            marginal_score: 75.0,
            max_holds: 3,
        }
    }
}

const SECTION: &str = "control.canary";

impl CanaryConfig {
    /// Checks every value; the error names the key and what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, value: &dyn std::fmt::Display, reason: &str| {
            Err(Error::config(SECTION, key, value, reason))
        };
        let stages = format!("{:?}", self.stages);
        if self.stages.is_empty() {
            return bad("stages", &"[]", "expected at least one stage");
        }
        for (i, s) in self.stages.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0 && *s <= 100.0) {
                return bad(
                    "stages",
                    &stages,
                    &format!(
                        "stage {} is {s}: expected a percentage, 0 < stage <= 100",
                        i + 1
                    ),
                );
            }
            if i > 0 && *s <= self.stages[i - 1] {
                return bad(
                    "stages",
                    &stages,
                    &format!(
                        "stage {} ({s}) is not above stage {} ({}): stages must increase",
                        i + 1,
                        i,
                        self.stages[i - 1]
                    ),
                );
            }
            if *s >= 100.0 && i + 1 < self.stages.len() {
                return bad("stages", &stages, "100 means promotion, so it must be last");
            }
        }
        if !self.shadow && self.judged_stages() == 0 {
            return bad(
                "stages",
                &stages,
                "with shadow = false, at least one stage below 100 is needed, or nothing is ever judged",
            );
        }
        if self.interval.is_zero() {
            return bad("interval", &"\"0s\"", "must be longer than zero");
        }
        if self.min_requests == 0 {
            return bad("min_requests", &0, "expected at least 1 request");
        }
        if !(self.latency_threshold.is_finite() && self.latency_threshold > 0.0) {
            return bad(
                "latency_threshold",
                &self.latency_threshold,
                "expected a relative rise > 0 (0.2 = 20% slower)",
            );
        }
        if !(self.error_threshold > 0.0 && self.error_threshold <= 1.0) {
            return bad(
                "error_threshold",
                &self.error_threshold,
                "expected a rise in rate, 0 < error_threshold <= 1 (0.01 = one point)",
            );
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", &self.alpha, "expected 0 < alpha < 1");
        }
        if !(self.fail_alpha > 0.0 && self.fail_alpha <= self.alpha) {
            return bad(
                "fail_alpha",
                &self.fail_alpha,
                &format!(
                    "expected 0 < fail_alpha <= alpha ({}): the early check looks every tick, so it must be the stricter",
                    self.alpha
                ),
            );
        }
        if self.confirm == 0 {
            return bad("confirm", &0, "expected at least 1 check");
        }
        if !(self.pass_score > 0.0 && self.pass_score <= 100.0) {
            return bad(
                "pass_score",
                &self.pass_score,
                "expected 0 < pass_score <= 100",
            );
        }
        if !(self.marginal_score >= 0.0 && self.marginal_score <= self.pass_score) {
            return bad(
                "marginal_score",
                &self.marginal_score,
                &format!(
                    "expected 0 <= marginal_score <= pass_score ({})",
                    self.pass_score
                ),
            );
        }
        Ok(())
    }

    /// Stages that are judged: those below 100 (a 100% stage is promotion).
    fn judged_stages(&self) -> usize {
        self.stages.iter().take_while(|s| **s < 100.0).count()
    }

    /// The phase of live stage `index`: Promoted for a 100% stage or past the end.
    fn live(&self, index: usize) -> Phase {
        match self.stages.get(index) {
            Some(p) if *p < 100.0 => Phase::Live {
                stage: index,
                percent: *p,
            },
            _ => Phase::Promoted,
        }
    }

    fn first_phase(&self) -> Phase {
        if self.shadow {
            Phase::Shadow
        } else {
            self.live(0)
        }
    }

    /// The phase after `phase` passes.
    fn next(&self, phase: &Phase) -> Phase {
        match phase {
            Phase::Shadow => self.live(0),
            Phase::Live { stage, .. } => self.live(stage + 1),
            terminal => terminal.clone(),
        }
    }

    /// The end of a stage's levels: Marginal at `alpha`, Fail at `fail_alpha`.
    fn rules(&self) -> Rules {
        Rules {
            min_requests: self.min_requests,
            latency_threshold: self.latency_threshold,
            error_threshold: self.error_threshold,
            alpha: self.alpha,
            fail_alpha: self.fail_alpha,
        }
    }

    /// The early check's: everything at `fail_alpha`.
    fn early_rules(&self) -> Rules {
        Rules {
            alpha: self.fail_alpha,
            ..self.rules()
        }
    }
}

/// Where the canary is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Phase {
    /// The canary answers mirrored copies only; no user sees it.
    Shadow,
    /// The canary answers `percent`% of live traffic; `stage` indexes `stages`.
    Live { stage: usize, percent: f64 },
    /// Done: the canary takes all traffic.
    Promoted,
    /// Done: the canary takes no traffic.
    RolledBack,
}

impl Phase {
    /// Promoted and RolledBack: nothing more happens.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Shadow => f.write_str("shadow"),
            Phase::Live { percent, .. } => write!(f, "{percent}%"),
            Phase::Promoted => f.write_str("promoted"),
            Phase::RolledBack => f.write_str("rolled back"),
        }
    }
}

/// What the proxy must do with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// Send the canary mirrored copies (answers discarded).
    pub mirror: bool,
    /// Percent of live traffic the canary answers.
    pub percent: f64,
}

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Rollback,
    Pause,
    Resume,
}

/// Why a decision was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// The judgement of the data (end of stage, early failure, too many holds).
    Judged,
    /// An operator's override.
    Operator { action: Action },
}

/// One entry of the canary's history: a phase change, a hold, or an override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: u64,
    pub from: Phase,
    /// Equal to `from` for a hold, a pause and a resume.
    pub to: Phase,
    /// The judgement behind it; for an override, the judgement at that moment.
    pub outcome: Outcome,
    pub cause: Cause,
    /// Percent of judged metrics that passed; None when nothing was judged.
    pub score: Option<f64>,
    /// One line for people.
    pub reason: String,
    pub profiles: Vec<ProfileJudgement>,
}

/// Most decisions kept in [`CanaryState::history`]; older ones are dropped.
pub const HISTORY: usize = 100;

/// Everything that must survive a restart (the binary stores it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryState {
    pub phase: Phase,
    /// Judging is paused: no stage ends; early failure still rolls back.
    pub paused: bool,
    pub stage_started_ms: u64,
    /// Held intervals in a row in this stage.
    pub holds: u32,
    /// The last [`HISTORY`] decisions, oldest first.
    pub history: Vec<Decision>,
    /// When the state last changed (creation, a decision).
    pub updated_ms: u64,
}

/// The current stage's judgement, for people and the admin API; decides nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub phase: Phase,
    pub paused: bool,
    pub share: Share,
    pub stage_started_ms: u64,
    /// Time since the stage (or the last hold) started.
    pub elapsed_ms: u64,
    pub interval_ms: u64,
    pub holds: u32,
    /// What the stage would be judged now (with `alpha`).
    pub outcome: Outcome,
    pub score: Option<f64>,
    pub profiles: Vec<ProfileJudgement>,
    /// Windows that could not be merged into the stage's data (histograms out of range).
    pub ignored_windows: u64,
}

/// One profile's data over the current stage.
#[derive(Debug, Clone, Default)]
struct Sides {
    canary: Option<Window>,
    production: Option<Window>,
}

/// The canary controller: a [`CanaryState`] plus the current stage's data.
#[derive(Debug, Clone)]
pub struct Canary {
    config: CanaryConfig,
    state: CanaryState,
    data: BTreeMap<Arc<str>, Sides>,
    /// Counted early checks in a row each profile's metric failed.
    streaks: BTreeMap<(Arc<str>, Metric), u32>,
    /// Canary requests of each profile at its last counted early check.
    checked: BTreeMap<Arc<str>, u64>,
    /// When the stage's data began: its entry (or the restart), not moved by
    /// holds, whose clock restart must not drop windows that arrive late.
    since_ms: u64,
    ignored_windows: u64,
}

impl Canary {
    /// A canary at its first stage: shadow, or the first live stage when `shadow = false`.
    pub fn new(config: CanaryConfig, now_ms: u64) -> Result<Canary, Error> {
        config.validate()?;
        let state = CanaryState {
            phase: config.first_phase(),
            paused: false,
            stage_started_ms: now_ms,
            holds: 0,
            history: Vec::new(),
            updated_ms: now_ms,
        };
        Ok(Canary::with_state(config, state))
    }

    /// Continues a stored state in the same phase and stage.
    ///
    /// The stage clock restarts at `now_ms`: the windows of the stage before the
    /// restart are gone, so the stage is judged over a full interval of new data.
    /// A stage the config no longer has is clamped to its last stage below 100
    /// (a config change never promotes), and the percent is the config's.
    pub fn resume(config: CanaryConfig, state: CanaryState, now_ms: u64) -> Result<Canary, Error> {
        config.validate()?;
        let mut state = state;
        if let Phase::Live { stage, .. } = state.phase {
            state.phase = match config.judged_stages() {
                0 => Phase::Shadow, // only "100" is left: back to no users, judged again
                n => config.live(stage.min(n - 1)),
            };
        }
        state.stage_started_ms = now_ms;
        Ok(Canary::with_state(config, state))
    }

    fn with_state(config: CanaryConfig, state: CanaryState) -> Canary {
        let since_ms = state.stage_started_ms;
        Canary {
            config,
            state,
            data: BTreeMap::new(),
            streaks: BTreeMap::new(),
            checked: BTreeMap::new(),
            since_ms,
            ignored_windows: 0,
        }
    }

    pub fn config(&self) -> &CanaryConfig {
        &self.config
    }

    /// What to store to [`Canary::resume`] after a restart.
    pub fn state(&self) -> &CanaryState {
        &self.state
    }

    /// What the proxy must do now. A pause keeps the current share.
    pub fn share(&self) -> Share {
        match self.state.phase {
            Phase::Shadow => Share {
                mirror: true,
                percent: 0.0,
            },
            Phase::Live { percent, .. } => Share {
                mirror: false,
                percent,
            },
            Phase::Promoted => Share {
                mirror: false,
                percent: 100.0,
            },
            Phase::RolledBack => Share {
                mirror: false,
                percent: 0.0,
            },
        }
    }

    /// Takes the windows closed since the last call (possibly none) and decides.
    ///
    /// Returns a decision when the phase changed or a hold was recorded; `None`
    /// otherwise, and always once promoted or rolled back.
    pub fn observe(&mut self, windows: &[Window], now_ms: u64) -> Option<Decision> {
        if self.state.phase.is_terminal() {
            return None;
        }
        self.absorb(windows);
        if let Some(d) = self.early_check(now_ms) {
            return Some(d);
        }
        let interval_ms = u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX);
        if self.state.paused || now_ms.saturating_sub(self.state.stage_started_ms) < interval_ms {
            return None;
        }
        Some(self.end_stage(now_ms))
    }

    /// Adds the windows to the stage's data.
    fn absorb(&mut self, windows: &[Window]) {
        for w in windows {
            // Windows that began before the stage describe the previous stage's traffic.
            if w.key.role == Role::Shadow || w.start_ms < self.since_ms {
                continue;
            }
            let sides = self.data.entry(w.key.profile.clone()).or_default();
            let side = match w.key.role {
                Role::Canary => &mut sides.canary,
                _ => &mut sides.production,
            };
            match side {
                Some(acc) => {
                    if acc.merge(w).is_err() {
                        self.ignored_windows += 1;
                    }
                }
                None => *side = Some(w.clone()),
            }
        }
    }

    /// The stage's data judged as at the end of a stage.
    fn judge_all(&self) -> StageJudgement {
        let sides: Vec<_> = self
            .data
            .iter()
            .map(|(p, s)| (&**p, s.canary.as_ref(), s.production.as_ref()))
            .collect();
        let c = &self.config;
        judge_stage(&sides, &c.rules(), c.pass_score, c.marginal_score)
    }

    /// Judges at `fail_alpha` each profile whose canary requests have at least
    /// doubled since its last counted check; rolls back when a metric has
    /// failed `confirm` such checks in a row.
    ///
    /// Checks are spaced geometrically rather than every tick: the data is
    /// cumulative, so a check a tick later re-reads almost the same evidence,
    /// and hundreds of such looks per stage would turn `fail_alpha` into a
    /// near certainty of a false alarm somewhere. With doubling, each counted
    /// check has at least as much new data as old, a failure is confirmed on
    /// mostly fresh evidence, and a stage has about log2(requests /
    /// min_requests) looks per profile.
    fn early_check(&mut self, now_ms: u64) -> Option<Decision> {
        let rules = self.config.early_rules();
        let mut confirmed: Option<(Arc<str>, MetricJudgement)> = None;
        for (profile, sides) in &self.data {
            let n = sides.canary.as_ref().map_or(0, |w| w.requests);
            let last = self.checked.get(profile).copied().unwrap_or(0);
            if n < self.config.min_requests || n < last.saturating_mul(2) {
                continue;
            }
            self.checked.insert(profile.clone(), n);
            let j = judge_profile(
                profile,
                sides.canary.as_ref(),
                sides.production.as_ref(),
                &rules,
            );
            for m in j.metrics {
                let key = (profile.clone(), m.metric);
                if m.result != Outcome::Fail {
                    self.streaks.remove(&key);
                    continue;
                }
                let streak = self.streaks.entry(key).or_insert(0);
                *streak += 1;
                // Of several confirmed failures, name the most certain one.
                let stronger = confirmed
                    .as_ref()
                    .is_none_or(|(_, c)| m.p_value.unwrap_or(1.0) < c.p_value.unwrap_or(1.0));
                if *streak >= self.config.confirm && stronger {
                    confirmed = Some((profile.clone(), m));
                }
            }
        }
        let (profile, m) = confirmed?;
        // The record shows what the early check saw: each profile at fail_alpha.
        let profiles = self
            .data
            .iter()
            .map(|(p, s)| judge_profile(p, s.canary.as_ref(), s.production.as_ref(), &rules))
            .collect();
        let judgement = score_stage(profiles, self.config.pass_score, self.config.marginal_score);
        let reason = format!(
            "profile {profile} {}, failing {} checks in a row: rolled back early",
            describe(&m),
            self.config.confirm
        );
        Some(self.decide(now_ms, Phase::RolledBack, Cause::Judged, judgement, reason))
    }

    /// The end of an interval: pass, hold or roll back.
    fn end_stage(&mut self, now_ms: u64) -> Decision {
        let j = self.judge_all();
        let from = self.state.phase.clone();
        let score = match j.score {
            Some(s) => format!("score {s:.1} ({} of {} metrics passed)", j.passed, j.judged),
            None => "no metric judged".to_string(),
        };
        match j.outcome {
            Outcome::Pass => {
                let to = self.config.next(&from);
                let reason = format!("{score}: {from} → {to}");
                self.decide(now_ms, to, Cause::Judged, j, reason)
            }
            Outcome::Fail => {
                let fails = failures(&j);
                let why = match fails.first() {
                    Some((profile, m)) => {
                        let more = match fails.len() - 1 {
                            0 => String::new(),
                            n => format!(" and {n} more failing metric(s)"),
                        };
                        format!("profile {profile} {}{more}", describe(m))
                    }
                    None => format!(
                        "{score}, below marginal_score {}{}",
                        self.config.marginal_score,
                        marginal_list(&j)
                    ),
                };
                self.decide(
                    now_ms,
                    Phase::RolledBack,
                    Cause::Judged,
                    j,
                    format!("{why}: rolled back"),
                )
            }
            Outcome::Marginal | Outcome::NoData => {
                let why = if j.outcome == Outcome::NoData {
                    self.no_data_reason()
                } else {
                    format!(
                        "{score}, below pass_score {}{}",
                        self.config.pass_score,
                        marginal_list(&j)
                    )
                };
                self.state.holds += 1;
                let max = self.config.max_holds;
                if max > 0 && self.state.holds >= max {
                    let reason = format!(
                        "{why}; {} intervals in a row without a pass (max_holds = {max}): rolled back",
                        self.state.holds
                    );
                    return self.decide(now_ms, Phase::RolledBack, Cause::Judged, j, reason);
                }
                let of = if max > 0 {
                    format!(" of {max}")
                } else {
                    String::new()
                };
                let reason = format!("{why}: held at {from} (hold {}{of})", self.state.holds);
                // The clock restarts, the data does not: the next look has more of it.
                self.state.stage_started_ms = now_ms;
                self.decide(now_ms, from, Cause::Judged, j, reason)
            }
        }
    }

    fn no_data_reason(&self) -> String {
        let n = self.config.min_requests;
        let busiest = self
            .data
            .iter()
            .map(|(p, s)| (p, s.canary.as_ref().map_or(0, |w| w.requests)))
            .max_by_key(|(_, r)| *r);
        match busiest {
            Some((p, r)) if r > 0 => format!(
                "no profile had {n} canary and production requests (most canary: {r} for profile {p})"
            ),
            _ => format!("no canary requests (a profile needs {n})"),
        }
    }

    /// Records a decision; a change of phase starts the new stage afresh.
    fn decide(
        &mut self,
        now_ms: u64,
        to: Phase,
        cause: Cause,
        j: StageJudgement,
        reason: String,
    ) -> Decision {
        let from = self.state.phase.clone();
        if to != from {
            self.state.phase = to.clone();
            self.state.stage_started_ms = now_ms;
            self.since_ms = now_ms;
            self.state.holds = 0;
            self.data.clear();
            self.streaks.clear();
            self.checked.clear();
        }
        let decision = Decision {
            at_ms: now_ms,
            from,
            to,
            outcome: j.outcome,
            cause,
            score: j.score,
            reason,
            profiles: j.profiles,
        };
        let h = &mut self.state.history;
        h.push(decision.clone());
        if h.len() > HISTORY {
            h.drain(..h.len() - HISTORY);
        }
        self.state.updated_ms = now_ms;
        decision
    }

    fn operator(&self, action: &'static str) -> Result<(), Error> {
        let reason = match self.state.phase {
            Phase::Promoted => "the canary is already promoted",
            Phase::RolledBack => "the canary was rolled back; deploy it again to start over",
            _ => return Ok(()),
        };
        Err(Error::Canary {
            action,
            reason: reason.to_string(),
        })
    }

    /// Moves one stage forward now (from the last stage: promoted). Allowed while
    /// paused, which stays paused: pause plus promote is manual stepping.
    pub fn promote(&mut self, now_ms: u64) -> Result<Decision, Error> {
        self.operator("promote")?;
        let from = self.state.phase.clone();
        let to = self.config.next(&from);
        let reason = format!("operator promoted: {from} → {to}");
        let j = self.judge_all();
        Ok(self.decide(now_ms, to, operator(Action::Promote), j, reason))
    }

    /// Sends the canary no more traffic; `reason` is recorded.
    pub fn rollback(&mut self, now_ms: u64, reason: &str) -> Result<Decision, Error> {
        self.operator("rollback")?;
        let reason = match reason.trim() {
            "" => "operator rolled back".to_string(),
            r => format!("operator rolled back: {}", one_line(r)),
        };
        let j = self.judge_all();
        Ok(self.decide(
            now_ms,
            Phase::RolledBack,
            operator(Action::Rollback),
            j,
            reason,
        ))
    }

    /// Stops stages from ending (the share stays); early failure still rolls back.
    pub fn pause(&mut self, now_ms: u64) -> Result<Decision, Error> {
        self.operator("pause")?;
        if self.state.paused {
            return Err(Error::Canary {
                action: "pause",
                reason: "judging is already paused".into(),
            });
        }
        self.state.paused = true;
        let reason = format!(
            "operator paused judging at {} (an early failure still rolls back)",
            self.state.phase
        );
        let j = self.judge_all();
        let phase = self.state.phase.clone();
        Ok(self.decide(now_ms, phase, operator(Action::Pause), j, reason))
    }

    /// Un-pauses. If the interval has passed meanwhile, the next [`Canary::observe`]
    /// judges the stage on everything gathered so far.
    pub fn resume_judging(&mut self, now_ms: u64) -> Result<Decision, Error> {
        self.operator("resume")?;
        if !self.state.paused {
            return Err(Error::Canary {
                action: "resume",
                reason: "judging is not paused".into(),
            });
        }
        self.state.paused = false;
        let reason = format!("operator resumed judging at {}", self.state.phase);
        let j = self.judge_all();
        let phase = self.state.phase.clone();
        Ok(self.decide(now_ms, phase, operator(Action::Resume), j, reason))
    }

    /// The stage's judgement so far, as the end of the stage would see it now.
    pub fn report(&self, now_ms: u64) -> StageReport {
        let j = self.judge_all();
        StageReport {
            phase: self.state.phase.clone(),
            paused: self.state.paused,
            share: self.share(),
            stage_started_ms: self.state.stage_started_ms,
            elapsed_ms: now_ms.saturating_sub(self.state.stage_started_ms),
            interval_ms: u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX),
            holds: self.state.holds,
            outcome: j.outcome,
            score: j.score,
            profiles: j.profiles,
            ignored_windows: self.ignored_windows,
        }
    }
}

fn operator(action: Action) -> Cause {
    Cause::Operator { action }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Failing metrics, most certain first.
fn failures(j: &StageJudgement) -> Vec<(&str, &MetricJudgement)> {
    let mut v: Vec<_> = j
        .profiles
        .iter()
        .flat_map(|p| p.metrics.iter().map(move |m| (p.profile.as_str(), m)))
        .filter(|(_, m)| m.result == Outcome::Fail)
        .collect();
    v.sort_by(|a, b| {
        a.1.p_value
            .unwrap_or(1.0)
            .total_cmp(&b.1.p_value.unwrap_or(1.0))
    });
    v
}

/// "; marginal: profile a latency_p99 +24.0% ..., and 2 more" (at most two named).
fn marginal_list(j: &StageJudgement) -> String {
    let all: Vec<String> = j
        .profiles
        .iter()
        .flat_map(|p| p.metrics.iter().map(move |m| (p, m)))
        .filter(|(_, m)| m.result != Outcome::Pass && m.result != Outcome::NoData)
        .map(|(p, m)| format!("profile {} {}", p.profile, describe(m)))
        .collect();
    match all.len() {
        0 => String::new(),
        n if n <= 2 => format!("; marginal: {}", all.join(", ")),
        n => format!("; marginal: {}, and {} more", all[..2].join(", "), n - 2),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use umbra_analysis::window::WindowKey;

    const T0: u64 = 1_700_000_000_000;
    const MIN: u64 = 60_000;

    /// `n` requests of `profile` spread evenly over 10..30 ms, in a 1 s window at `start`.
    fn window(role: Role, upstream: &str, profile: &str, start: u64, n: u64) -> Window {
        let key = WindowKey::new(role, upstream, profile);
        let mut w = Window::empty(key, start, start + 1000, 2).unwrap();
        for i in 0..n {
            w.latency.record(10_000 + 20_000 * i / n.max(1)).unwrap();
        }
        w.requests = n;
        w
    }

    fn requests(c: &Canary, now_ms: u64) -> Vec<(String, u64, u64)> {
        c.report(now_ms)
            .profiles
            .into_iter()
            .map(|p| (p.profile, p.canary_requests, p.production_requests))
            .collect()
    }

    #[test]
    fn the_share_follows_the_phase_and_a_pause_keeps_it() {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        let share = |mirror, percent| Share { mirror, percent };
        assert_eq!(c.share(), share(true, 0.0));
        c.promote(T0).unwrap();
        assert_eq!(c.share(), share(false, 1.0));
        c.pause(T0).unwrap();
        assert_eq!(c.share(), share(false, 1.0));
        for _ in 0..3 {
            c.promote(T0).unwrap();
        }
        assert_eq!(
            c.state().phase,
            Phase::Live {
                stage: 3,
                percent: 50.0
            }
        );
        c.promote(T0).unwrap();
        assert_eq!(
            (c.state().phase.clone(), c.share()),
            (Phase::Promoted, share(false, 100.0))
        );
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        c.rollback(T0, "").unwrap();
        assert_eq!(c.share(), share(false, 0.0));
    }

    #[test]
    fn without_shadow_it_starts_at_the_first_stage_and_100_is_promotion() {
        let config = CanaryConfig {
            shadow: false,
            stages: vec![2.0, 100.0],
            ..CanaryConfig::default()
        };
        let mut c = Canary::new(config, T0).unwrap();
        assert_eq!(
            c.state().phase,
            Phase::Live {
                stage: 0,
                percent: 2.0
            }
        );
        let d = c.promote(T0 + 1).unwrap();
        assert_eq!(
            (d.from, d.to),
            (
                Phase::Live {
                    stage: 0,
                    percent: 2.0
                },
                Phase::Promoted
            )
        );
    }

    #[test]
    fn shadow_windows_and_windows_from_before_the_stage_are_ignored() {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        c.observe(
            &[
                window(Role::Shadow, "s", "p", T0, 100),
                window(Role::Production, "a", "p", T0 - 1000, 100),
                window(Role::Production, "a", "p", T0, 7),
                window(Role::Canary, "c", "p", T0, 3),
            ],
            T0 + 1000,
        );
        assert_eq!(requests(&c, T0 + 1000), [("p".to_string(), 3, 7)]);
    }

    #[test]
    fn windows_merge_across_upstreams_and_spans_per_profile() {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        for s in 0..3 {
            let t = T0 + s * 1000;
            let ws = [
                window(Role::Production, "a", "p", t, 10),
                window(Role::Production, "b", "p", t, 20),
                window(Role::Production, "a", "q", t, 1),
                window(Role::Canary, "c", "p", t, 2),
            ];
            assert_eq!(c.observe(&ws, t + 1000), None);
        }
        assert_eq!(
            requests(&c, T0 + 3000),
            [("p".to_string(), 6, 90), ("q".to_string(), 0, 3)]
        );
    }

    #[test]
    fn a_window_arriving_late_after_a_hold_still_counts() {
        let config = CanaryConfig {
            interval: Duration::from_secs(60),
            ..CanaryConfig::default()
        };
        let mut c = Canary::new(config, T0).unwrap();
        let d = c.observe(&[], T0 + MIN).unwrap();
        assert_eq!((d.outcome, d.from == d.to), (Outcome::NoData, true));
        assert_eq!(c.state().stage_started_ms, T0 + MIN);
        // Its span began before the hold, but within the stage.
        c.observe(
            &[window(Role::Canary, "c", "p", T0 + 50_000, 4)],
            T0 + MIN + 2000,
        );
        assert_eq!(requests(&c, T0 + MIN + 2000), [("p".to_string(), 4, 0)]);
    }

    #[test]
    fn history_keeps_the_last_hundred_decisions() {
        let config = CanaryConfig {
            interval: Duration::from_secs(60),
            max_holds: 0,
            ..CanaryConfig::default()
        };
        let mut c = Canary::new(config, T0).unwrap();
        for i in 1..=130 {
            let d = c.observe(&[], T0 + i * MIN).unwrap();
            assert_eq!(
                d.reason,
                format!("no canary requests (a profile needs 50): held at shadow (hold {i})")
            );
        }
        let h = &c.state().history;
        assert_eq!(
            (h.len(), h[0].at_ms, h[99].at_ms),
            (HISTORY, T0 + 31 * MIN, T0 + 130 * MIN)
        );
        assert_eq!(c.state().holds, 130);
        assert_eq!(c.state().phase, Phase::Shadow);
    }

    #[test]
    fn resume_clamps_a_stage_the_config_no_longer_has() {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        for _ in 0..4 {
            c.promote(T0).unwrap();
        }
        let state = c.state().clone();
        assert_eq!(
            state.phase,
            Phase::Live {
                stage: 3,
                percent: 50.0
            }
        );
        let fewer = CanaryConfig {
            stages: vec![10.0, 20.0, 100.0],
            ..CanaryConfig::default()
        };
        let c = Canary::resume(fewer, state.clone(), T0 + 5).unwrap();
        // Clamped to the last stage below 100, never promoted by a config change.
        assert_eq!(
            c.state().phase,
            Phase::Live {
                stage: 1,
                percent: 20.0
            }
        );
        assert_eq!(c.state().stage_started_ms, T0 + 5);
        assert_eq!(c.state().history, state.history);
        let only_100 = CanaryConfig {
            stages: vec![100.0],
            ..CanaryConfig::default()
        };
        let c = Canary::resume(only_100, state, T0).unwrap();
        assert_eq!(c.state().phase, Phase::Shadow);
    }

    #[test]
    fn terminal_phases_ignore_windows() {
        let mut c = Canary::new(CanaryConfig::default(), T0).unwrap();
        c.rollback(T0, "bad deploy\nsecond line").unwrap();
        assert_eq!(
            c.state().history[0].reason,
            "operator rolled back: bad deploy second line"
        );
        assert_eq!(
            c.observe(&[window(Role::Canary, "c", "p", T0, 5)], T0 + 10 * MIN),
            None
        );
        assert!(c.report(T0).profiles.is_empty());
    }
}
