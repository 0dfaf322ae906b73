//! Umbra's analysis: windows, baselines, detectors, shadow-vs-production
//! comparison, verdicts and alerts.
//!
//! The stages pass plain values along, and the binary wires them:
//!
//! ```text
//! Measurement ─► Windower ─► Window ─► Judge (Baselines, detectors, Comparison) ─► Evaluation/Verdict
//!                                                                                      │
//!                                                  AlertManager (firing, resolved) ◄───┘
//!                                                           │ AlertEvent
//!                                                           ▼
//!                                             Dispatcher ─► sinks (log, webhook, Slack, Alertmanager)
//! ```
//!
//! - [`window`]: measurements rolled up per (role, upstream, profile) and span.
//! - [`baseline`]: slowly adapting means and variances per (profile, role, metric).
//! - [`detect`]: streaming anomaly detectors behind one trait.
//! - [`compare`]: Mann-Whitney U, Hodges-Lehmann and upper-percentile comparison
//!   of shadow against production.
//! - [`verdict`]: thresholds plus detector agreement over N of the last M windows.
//! - [`alert`]: the alert lifecycle and its sinks.
//! - [`series`]: offline detection on exported series (`umbra detect`).
//!
//! Nothing here touches the network except the alert sinks, and nothing here
//! stores anything: baselines and alerts are serde values the caller persists.

#![forbid(unsafe_code)]

pub mod alert;
pub mod baseline;
pub mod compare;
pub mod detect;
pub mod series;
pub mod verdict;
pub mod window;
