//! Learning request profiles from production traffic.
//!
//! The pipeline is `read` (logs and HAR files to [`umbra_core::RequestRecord`]s) →
//! `template` (concrete paths to path templates) → `features` (records to scaled
//! vectors) → `kmeans` (vectors to clusters) → `profiles` (clusters to a
//! [`umbra_core::ProfileSet`]). `update` folds new traffic into an existing set
//! with exponential decay, and `classify` finds the nearest profile of a request.

#![forbid(unsafe_code)]

pub mod classify;
pub mod fake;
pub mod features;
pub mod kmeans;
pub mod profiles;
pub mod read;
pub mod synth;
pub mod template;
pub mod update;
pub mod user_agent;
