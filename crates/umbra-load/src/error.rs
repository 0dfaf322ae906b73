//! The library's one error type. Every message names the value that was wrong and
//! where it came from, so the binary can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line or plan-file value that does not parse.
    #[error("{what} {value:?}: {reason}")]
    Invalid {
        /// What the value is, with its position: `stage 2 of "30s:100,x"`, `--mix entry 1`.
        what: String,
        value: String,
        reason: String,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A plan or report file whose content is wrong; the message carries line and key.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl Error {
    pub(crate) fn invalid(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Invalid {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
