//! `[[control.weights.export]]`: which exporters the live weights loop pushes
//! weights through, as TOML.
//!
//! One flat table per exporter with a `kind`, rather than a tagged enum: serde's
//! internally tagged enums buffer the table, which loses the line numbers and
//! key paths of errors, and a key meant for the other kind is refused with a
//! message that says so rather than "unknown field".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HaproxyRuntime, HaproxySocket, NginxUpstreamFile, WeightsExporter, check_name};
use crate::error::Error;

/// The balancer an exporter speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// HAProxy's runtime API ([`HaproxyRuntime`]).
    Haproxy,
    /// An nginx `upstream` block in a file, then a reload command ([`NginxUpstreamFile`]).
    Nginx,
}

impl ExportKind {
    fn name(self) -> &'static str {
        match self {
            ExportKind::Haproxy => "haproxy",
            ExportKind::Nginx => "nginx",
        }
    }
}

/// One `[[control.weights.export]]` table.
///
/// ```toml
/// [[control.weights.export]]
/// kind = "haproxy"
/// socket = "unix:/run/haproxy/admin.sock"   # or "127.0.0.1:9999"
/// backend = "app"
/// servers = { "10.0.0.1:8080" = "web1" }    # Umbra's name → HAProxy's (optional)
/// timeout = "2s"                            # per runtime API command
///
/// [[control.weights.export]]
/// kind = "nginx"
/// file = "/etc/nginx/conf.d/umbra-upstream.conf"
/// upstream = "app"
/// reload = ["nginx", "-s", "reload"]        # program and arguments, no shell
/// directives = ["keepalive 32"]             # written into the block (optional)
/// timeout = "10s"                           # for the reload command
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub kind: ExportKind,
    /// haproxy: the stats socket (`level admin`): a Unix path or `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// haproxy: the backend whose servers get the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// haproxy: Umbra's name for a server (`host:port`) → HAProxy's server name.
    /// Servers not listed are found by name, then by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, String>,
    /// nginx: the file the `upstream` block is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// nginx: the upstream's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// nginx: the command run after the file changed, as program and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
    /// nginx: directives written into the block after the servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<String>,
    /// haproxy: each runtime API command's bound (default 2 s); nginx: the
    /// reload command's (default 10 s).
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl ExportConfig {
    /// Checks the table; `index` is its place in the array, for messages like
    /// `control.weights.export[1].backend`.
    pub fn validate(&self, index: usize) -> Result<(), Error> {
        self.build(index).map(|_| ())
    }

    /// The exporter this table describes.
    pub fn build(&self, index: usize) -> Result<Box<dyn WeightsExporter>, Error> {
        let section = format!("control.weights.export[{index}]");
        let kind = self.kind.name();
        let bad = |key: &'static str, value: String, reason: String| {
            Error::config(section.clone(), key, value, reason)
        };
        let missing = |key: &'static str, example: &str| {
            bad(
                key,
                "(missing)".into(),
                format!("kind = \"{kind}\" needs it, like {key} = {example}"),
            )
        };
        let foreign = |key: &'static str, other: &str| {
            bad(
                key,
                "(set)".into(),
                format!("a key of kind = \"{other}\", not of kind = \"{kind}\""),
            )
        };
        let name = |key: &'static str, what: &'static str, value: &str| {
            check_name(what, value).map_err(|e| bad(key, format!("{value:?}"), e.to_string()))
        };
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(bad(
                "timeout",
                "\"0s\"".into(),
                "must be longer than zero".into(),
            ));
        }
        match self.kind {
            ExportKind::Haproxy => {
                for (key, set) in [
                    ("file", self.file.is_some()),
                    ("upstream", self.upstream.is_some()),
                    ("reload", !self.reload.is_empty()),
                    ("directives", !self.directives.is_empty()),
                ] {
                    if set {
                        return Err(foreign(key, "nginx"));
                    }
                }
                let Some(socket) = &self.socket else {
                    return Err(missing("socket", "\"unix:/run/haproxy/admin.sock\""));
                };
                let socket: HaproxySocket = match socket.parse() {
                    Ok(s) => s,
                    Err(e) => return Err(bad("socket", format!("{socket:?}"), e)),
                };
                let Some(backend) = &self.backend else {
                    return Err(missing("backend", "\"app\""));
                };
                name("backend", "HAProxy backend", backend)?;
                let mut h = HaproxyRuntime::new(socket, backend.clone());
                for (umbra, haproxy) in &self.servers {
                    name("servers", "HAProxy server", haproxy)?;
                    h = h.with_server_name(umbra.clone(), haproxy.clone());
                }
                if let Some(t) = self.timeout {
                    h = h.with_timeout(t);
                }
                Ok(Box::new(h))
            }
            ExportKind::Nginx => {
                for (key, set) in [
                    ("socket", self.socket.is_some()),
                    ("backend", self.backend.is_some()),
                    ("servers", !self.servers.is_empty()),
                ] {
                    if set {
                        return Err(foreign(key, "haproxy"));
                    }
                }
                let Some(file) = &self.file else {
                    return Err(missing("file", "\"/etc/nginx/conf.d/umbra-upstream.conf\""));
                };
                if file.as_os_str().is_empty() || file.file_name().is_none() {
                    return Err(bad(
                        "file",
                        format!("{:?}", file.display().to_string()),
                        "expected a file path".into(),
                    ));
                }
                let Some(upstream) = &self.upstream else {
                    return Err(missing("upstream", "\"app\""));
                };
                name("upstream", "nginx upstream", upstream)?;
                if self.reload.first().is_some_and(|p| p.trim().is_empty()) {
                    return Err(bad(
                        "reload",
                        format!("{:?}", self.reload),
                        "the first element is the program to run; it is empty".into(),
                    ));
                }
                for d in &self.directives {
                    if d.contains(['{', '}', '\n']) || d.trim().is_empty() {
                        return Err(bad(
                            "directives",
                            format!("{d:?}"),
                            "each must be one simple directive on one line (no braces)".into(),
                        ));
                    }
                }
                let mut n = NginxUpstreamFile::new(file.clone(), upstream.clone())
                    .with_reload(self.reload.clone())
                    .with_directives(self.directives.clone());
                if let Some(t) = self.timeout {
                    n = n.with_reload_timeout(t);
                }
                Ok(Box::new(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        export: Vec<ExportConfig>,
    }

    fn parse(text: &str) -> Vec<ExportConfig> {
        toml::from_str::<Doc>(text).unwrap().export
    }

    #[test]
    fn both_kinds_build_from_toml() {
        let e = parse(
            "[[export]]\nkind = \"haproxy\"\nsocket = \"127.0.0.1:9999\"\nbackend = \"app\"\n\
             servers = { \"10.0.0.1:8080\" = \"web1\" }\ntimeout = \"1s\"\n\
             [[export]]\nkind = \"nginx\"\nfile = \"/tmp/u.conf\"\nupstream = \"app\"\n\
             reload = [\"nginx\", \"-s\", \"reload\"]\n",
        );
        assert_eq!(
            e[0].build(0).unwrap().describe(),
            "haproxy 127.0.0.1:9999 backend app"
        );
        assert_eq!(
            e[1].build(1).unwrap().describe(),
            "nginx upstream app in /tmp/u.conf"
        );
    }

    #[test]
    fn errors_name_the_table_and_the_key() {
        for (text, starts, says) in [
            (
                "kind = \"haproxy\"\nbackend = \"app\"",
                "control.weights.export[0].socket = (missing)",
                "like socket =",
            ),
            (
                "kind = \"haproxy\"\nsocket = \"localhost\"\nbackend = \"app\"",
                "control.weights.export[0].socket = \"localhost\"",
                "host:port",
            ),
            (
                "kind = \"haproxy\"\nsocket = \"/s\"\nbackend = \"a b\"",
                "control.weights.export[0].backend = \"a b\"",
                "white space",
            ),
            (
                "kind = \"haproxy\"\nsocket = \"/s\"\nbackend = \"app\"\nfile = \"/x\"",
                "control.weights.export[0].file = (set)",
                "kind = \"nginx\"",
            ),
            (
                "kind = \"nginx\"\nfile = \"/x\"\nupstream = \"app\"\nbackend = \"b\"",
                "control.weights.export[0].backend = (set)",
                "kind = \"haproxy\"",
            ),
            (
                "kind = \"nginx\"\nfile = \"/x\"",
                "control.weights.export[0].upstream = (missing)",
                "needs it",
            ),
            (
                "kind = \"nginx\"\nfile = \"/x\"\nupstream = \"app\"\nreload = [\"\"]",
                "control.weights.export[0].reload",
                "program",
            ),
            (
                "kind = \"nginx\"\nfile = \"/x\"\nupstream = \"app\"\ndirectives = [\"a { b }\"]",
                "control.weights.export[0].directives",
                "braces",
            ),
            (
                "kind = \"nginx\"\nfile = \"/x\"\nupstream = \"app\"\ntimeout = \"0s\"",
                "control.weights.export[0].timeout",
                "longer than zero",
            ),
        ] {
            let e = parse(&format!("[[export]]\n{text}\n"))[0]
                .validate(0)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(starts) && e.contains(says), "{text}: {e}");
        }
        let e = toml::from_str::<Doc>("[[export]]\nkind = \"envoy\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("envoy") && e.contains("haproxy"), "{e}");
    }
}
