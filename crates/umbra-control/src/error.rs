//! The errors of the control logic. Exporters have their own ([`crate::ExportError`]):
//! those are about the outside world, these are about the values handed in.

/// A value given to the controller, the capacity search or the forecaster is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A configuration value out of range; `key` is its name in the TOML section.
    #[error("{section}.{key} = {value}: {reason}")]
    Config {
        /// The TOML section, like `control.weights` or `control.weights.export[1]`.
        section: std::borrow::Cow<'static, str>,
        key: &'static str,
        value: String,
        reason: String,
    },
    /// An observation for a server the controller was not told about.
    #[error("observation for server {server:?}: not one of the controller's servers ({known})")]
    UnknownServer { server: String, known: String },
    /// An observation whose numbers cannot be true.
    #[error("observation for server {server:?}: {reason}")]
    BadObservation { server: String, reason: String },
    /// A server list that cannot be balanced.
    #[error("server list: {0}")]
    Servers(String),
    /// A point of a rate series that cannot be used.
    #[error("rate series point {index} (t = {timestamp_ms} ms): {reason}")]
    BadPoint {
        index: u64,
        timestamp_ms: i64,
        reason: String,
    },
    /// The forecaster has not seen enough of the series to say anything.
    #[error("forecast: {0}")]
    NotEnoughHistory(String),
    /// An operator's canary override that the canary's phase does not allow.
    #[error("canary {action}: {reason}")]
    Canary {
        action: &'static str,
        reason: String,
    },
    /// A load step result that cannot be true.
    #[error("capacity step at {offered_rps} req/s: {reason}")]
    BadStep { offered_rps: f64, reason: String },
}

impl Error {
    pub(crate) fn config(
        section: impl Into<std::borrow::Cow<'static, str>>,
        key: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Error {
        Error::Config {
            section: section.into(),
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
