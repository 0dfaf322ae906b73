//! Umbra's load generator: turns a profile set into traffic with the shape of
//! production, at a volume the user sets, and measures the target honestly.
//!
//! The pieces, each in its own module: [`plan`] says when each request is due,
//! [`synth`] what it is, [`client`] sends it, [`record`] measures it, [`exec`]
//! runs the whole thing (open or closed model), [`report`] is the result,
//! [`threshold`] judges it and [`merge`] adds up the reports of a sharded run.

#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod exec;
pub mod html;
pub mod merge;
pub mod plan;
pub mod record;
pub mod report;
pub mod synth;
pub mod threshold;

pub use client::{HttpOptions, Target};
pub use error::Error;
pub use exec::{Model, Progress, RunConfig, StopSignal, run};
pub use plan::{Arrivals, PlanFile, RateCurve, Shard, Stage};
pub use report::Report;
pub use threshold::Threshold;
