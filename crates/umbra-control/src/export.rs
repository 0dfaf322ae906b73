//! Exporting weights to balancers other than Umbra's own proxy.
//!
//! - [`HaproxyRuntime`]: HAProxy's runtime API over its stats socket
//!   (`set server <backend>/<server> weight N`), no reload needed.
//! - [`NginxUpstreamFile`]: an nginx `upstream` block written atomically to a
//!   file the nginx configuration includes, then a reload command.
//!
//! [`ExportConfig`] is the `[[control.weights.export]]` table that builds either.
//!
//! Both take whole weights from [`Weights::rounded`]: they add up to 100, an
//! ejected server gets 0 (HAProxy: no new traffic; nginx: `down`).

mod config;
mod haproxy;
mod nginx;

use std::path::PathBuf;

pub use config::{ExportConfig, ExportKind};
pub use haproxy::{HaproxyRuntime, HaproxyServer, HaproxySocket};
pub use nginx::NginxUpstreamFile;

use crate::weights::Weights;

/// Something that applies [`Weights`] to a balancer.
///
/// `export` blocks (socket or process I/O, each step bounded by a timeout); an
/// async caller runs it on a blocking thread (`tokio::task::spawn_blocking`).
pub trait WeightsExporter: Send {
    /// One line for logs, like `haproxy unix:/run/haproxy/admin.sock backend app`.
    fn describe(&self) -> String;
    /// Applies the weights. On error nothing is assumed applied; the next
    /// interval tries again with its own weights.
    fn export(&mut self, weights: &Weights) -> Result<(), ExportError>;
}

/// What went wrong while exporting; every message names the balancer's address
/// or file and what it said.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The socket could not be reached, written or read.
    #[error("HAProxy runtime API at {socket}: {action}: {source}")]
    Socket {
        socket: String,
        action: &'static str,
        source: std::io::Error,
    },
    /// HAProxy answered a command with an error.
    #[error("HAProxy runtime API at {socket}: `{command}` answered {reply:?}")]
    Refused {
        socket: String,
        command: String,
        reply: String,
    },
    /// A weight names a server the backend does not have.
    #[error(
        "HAProxy backend {backend:?} has no server named {server:?} or at that address (its servers: {known})"
    )]
    NoSuchServer {
        backend: String,
        server: String,
        known: String,
    },
    /// A name that would change the meaning of a command or a config file.
    #[error("{what} {value:?}: {reason}")]
    BadName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: cannot write the upstream file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reload command `{command}`: {reason}")]
    Reload { command: String, reason: String },
}

/// Names go into commands and config files as they are: refuse anything that
/// could end a token, a command or a block.
fn check_name(what: &'static str, value: &str) -> Result<(), ExportError> {
    let reason = if value.is_empty() {
        Some("is empty")
    } else if value.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, ';' | '{' | '}' | '#' | '"' | '\'')
    }) {
        Some("holds white space, a control character or one of ; { } # \" '")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ExportError::BadName {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
