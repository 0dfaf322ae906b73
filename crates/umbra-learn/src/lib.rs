//! Learning request profiles from production traffic.
//!
//! The pipeline is `read` (logs and HAR files to [`umbra_core::RequestRecord`]s) →
//! `template` (concrete paths to path templates) → `features` (records to scaled
//! vectors) → `kmeans` (vectors to clusters) → `profiles` (clusters to a
//! [`umbra_core::ProfileSet`]). `update` folds new traffic into an existing set
//! with exponential decay, and `classify` finds the nearest profile of a request.

#![forbid(unsafe_code)]

pub mod kmeans;
pub mod read;
