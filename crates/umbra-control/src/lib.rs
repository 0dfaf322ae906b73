//! Umbra's control: turning measurements into decisions.
//!
//! Everything here is plain logic over plain values, so it can be tested without
//! a network and wired by the binary wherever it fits:
//!
//! ```text
//! live and probe Observations ─► probes::combine ─► WeightController ─► Weights ─► WeightsExporter (HaproxyRuntime, NginxUpstreamFile)
//!                                                         └► the proxy's own pool (Weights::rounded)
//! closed analysis Windows ─► Canary (observe) ─► Share (mirror, percent) ─► the proxy's canary split
//!                                   └► Decision (pass, hold, roll back) ─► CanaryState (stored)
//! load steps (StepResult) ─► CapacitySearch ─► Capacity (capacity_rps, the curve)
//! (timestamp, rate) points ─► Forecaster ─► Forecast (peak over the horizon, recommended replicas)
//! ```
//!
//! - [`weights`]: scores from latency at the profile mix, errors and CPU headroom;
//!   weights `score_i / Σ scores × 100`, smoothed, floored, rate-limited, with
//!   ejection of failing servers and a hold when data is thin.
//! - [`export`]: the [`WeightsExporter`] trait and two exporters: HAProxy's runtime
//!   API over its stats socket, and an nginx `upstream` block written atomically
//!   with a reload hook.
//! - [`canary`]: the canary's progression (shadow, 1%, 5%, ... promoted or
//!   rolled back), each stage judged per profile against production with the
//!   analysis crate's rank and tail tests, in Kayenta's manner (metric
//!   Pass/Marginal/Fail, a score, holds), with an early failure check and
//!   operator overrides; a pure state machine whose state is serde.
//! - [`probes`]: the shadow probes' settings, their per-interval tally, and
//!   [`probes::combine`], which blends probe and live observations per profile.
//! - [`capacity`]: the stepped search for the highest rate that keeps an SLO
//!   (steps up, then bisection between the last good and the first bad step).
//! - [`forecast`]: demand from a request-rate series with Holt-Winters (daily
//!   seasonality; Holt's linear trend while history is short), and replicas.
//!
//! Statistics come from `umbra-analysis` (its Holt-Winters, Mann-Whitney,
//! Hodges-Lehmann and proportion tests), reused rather than
//! copied. Nothing here depends on the load generator or the proxy: the binary
//! runs the load steps and feeds their results in.

#![forbid(unsafe_code)]

pub mod canary;
pub mod capacity;
mod duration;
pub mod error;
pub mod export;
pub mod forecast;
pub mod probes;
pub mod weights;

pub use canary::{
    Action, Canary, CanaryConfig, CanaryState, Cause, Decision, Metric, MetricJudgement, Outcome,
    Phase, ProfileJudgement, Share, StageReport,
};
pub use capacity::{Capacity, CapacityPoint, CapacitySearch, SearchConfig, StepResult};
pub use error::Error;
pub use export::{
    ExportConfig, ExportError, ExportKind, HaproxyRuntime, HaproxySocket, NginxUpstreamFile,
    WeightsExporter,
};
pub use forecast::{Forecast, ForecastConfig, ForecastMethod, Forecaster};
pub use probes::{ProbeConfig, ProbeTally};
pub use weights::{
    Observation, ProfileLatency, ServerState, ServerWeight, WeightConfig, WeightController, Weights,
};
