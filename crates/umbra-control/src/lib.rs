//! Umbra's control: turning measurements into decisions.
//!
//! Everything here is plain logic over plain values, so it can be tested without
//! a network and wired by the binary wherever it fits:
//!
//! ```text
//! live and probe Observations ─► probes::combine ─► WeightController ─► Weights ─► WeightsExporter (HaproxyRuntime, NginxUpstreamFile)
//!                                                         └► the proxy's own pool (Weights::rounded)
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
//! - [`probes`]: the shadow probes' settings, their per-interval tally, and
//!   [`probes::combine`], which blends probe and live observations per profile.
//! - [`capacity`]: the stepped search for the highest rate that keeps an SLO
//!   (steps up, then bisection between the last good and the first bad step).
//! - [`forecast`]: demand from a request-rate series with Holt-Winters (daily
//!   seasonality; Holt's linear trend while history is short), and replicas.
//!
//! Statistics come from `umbra-analysis` (its Holt-Winters), reused rather than
//! copied. Nothing here depends on the load generator or the proxy: the binary
//! runs the load steps and feeds their results in.

#![forbid(unsafe_code)]

pub mod capacity;
mod duration;
pub mod error;
pub mod export;
pub mod forecast;
pub mod probes;
pub mod weights;

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
