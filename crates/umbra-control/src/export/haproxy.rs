//! HAProxy's runtime API: one command per connection to the stats socket
//! (HAProxy's non-interactive mode answers and closes), each bounded by a timeout.
//!
//! The socket must be declared with `level admin` in HAProxy's `global` section,
//! like `stats socket /run/haproxy/admin.sock mode 600 level admin`, and the
//! backend must use a dynamic algorithm (roundrobin, leastconn, random): static
//! ones accept only weights of 0% and 100%, and HAProxy says so.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{ExportError, WeightsExporter, check_name};
use crate::weights::Weights;

/// Where HAProxy's stats socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaproxySocket {
    /// A Unix socket: `unix:/run/haproxy/admin.sock` or just the path.
    Unix(PathBuf),
    /// A TCP socket: `127.0.0.1:9999` (HAProxy's `ipv4@` prefix is accepted).
    Tcp(String),
}

impl FromStr for HaproxySocket {
    type Err = String;
    fn from_str(s: &str) -> Result<HaproxySocket, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("unix@")) {
            return Ok(HaproxySocket::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(HaproxySocket::Unix(PathBuf::from(s)));
        }
        let addr = s
            .strip_prefix("ipv4@")
            .or_else(|| s.strip_prefix("ipv6@"))
            .unwrap_or(s);
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(HaproxySocket::Tcp(addr.to_string()))
            }
            _ => Err(format!(
                "HAProxy stats socket {s:?}: expected a Unix socket path (unix:/run/haproxy/admin.sock) or host:port"
            )),
        }
    }
}

impl std::fmt::Display for HaproxySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaproxySocket::Unix(p) => write!(f, "unix:{}", p.display()),
            HaproxySocket::Tcp(a) => f.write_str(a),
        }
    }
}

/// One server of a backend, as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyServer {
    pub name: String,
    pub addr: String,
    pub port: Option<u16>,
    /// The current (user) weight.
    pub weight: u32,
    /// The weight in HAProxy's configuration.
    pub initial_weight: u32,
}

impl HaproxyServer {
    /// `addr:port`, the form Umbra names servers by.
    pub fn address(&self) -> String {
        match self.port {
            Some(p) if self.addr.contains(':') => format!("[{}]:{p}", self.addr),
            Some(p) => format!("{}:{p}", self.addr),
            None => self.addr.clone(),
        }
    }
}

/// Sets weights on one HAProxy backend through the runtime API.
///
/// A weight's server (Umbra names servers `host:port`) is found in the backend by
/// an explicit mapping ([`with_server_name`](Self::with_server_name)), else by a
/// HAProxy server of that name, else by a server at that address and port.
#[derive(Debug, Clone)]
pub struct HaproxyRuntime {
    socket: HaproxySocket,
    backend: String,
    names: BTreeMap<String, String>,
    timeout: Duration,
}

impl HaproxyRuntime {
    pub fn new(socket: HaproxySocket, backend: impl Into<String>) -> HaproxyRuntime {
        HaproxyRuntime {
            socket,
            backend: backend.into(),
            names: BTreeMap::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Maps Umbra's name for a server to HAProxy's.
    pub fn with_server_name(
        mut self,
        umbra: impl Into<String>,
        haproxy: impl Into<String>,
    ) -> Self {
        self.names.insert(umbra.into(), haproxy.into());
        self
    }

    /// Bounds connecting, writing and reading each command (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Sends one command and returns HAProxy's answer, trimmed.
    pub fn command(&self, command: &str) -> Result<String, ExportError> {
        let io = |action: &'static str| {
            let socket = self.socket.to_string();
            move |source| ExportError::Socket {
                socket,
                action,
                source,
            }
        };
        let mut line = command.trim_end().as_bytes().to_vec();
        line.push(b'\n');
        let reply = match &self.socket {
            HaproxySocket::Unix(path) => {
                let s = UnixStream::connect(path).map_err(io("connect"))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(io("connect"))?;
                s.set_write_timeout(Some(self.timeout))
                    .map_err(io("connect"))?;
                exchange(s, &line)
            }
            HaproxySocket::Tcp(addr) => {
                let sock_addr = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
                    .map_err(io("resolve"))?
                    .next()
                    .ok_or_else(|| io("resolve")(std::io::ErrorKind::NotFound.into()))?;
                let s =
                    TcpStream::connect_timeout(&sock_addr, self.timeout).map_err(io("connect"))?;
                s.set_read_timeout(Some(self.timeout))
                    .map_err(io("connect"))?;
                s.set_write_timeout(Some(self.timeout))
                    .map_err(io("connect"))?;
                exchange(s, &line)
            }
        };
        let reply = reply.map_err(io("send the command and read the answer"))?;
        Ok(String::from_utf8_lossy(&reply).trim().to_string())
    }

    fn refused(&self, command: &str, reply: String) -> ExportError {
        ExportError::Refused {
            socket: self.socket.to_string(),
            command: command.to_string(),
            reply,
        }
    }

    /// The backend's servers (`show servers state <backend>`).
    pub fn servers(&self) -> Result<Vec<HaproxyServer>, ExportError> {
        check_name("HAProxy backend", &self.backend)?;
        let command = format!("show servers state {}", self.backend);
        let reply = self.command(&command)?;
        parse_servers_state(&reply).ok_or_else(|| self.refused(&command, reply))
    }

    /// A server's current weight (`get weight <backend>/<server>`).
    pub fn weight(&self, server: &str) -> Result<u32, ExportError> {
        check_name("HAProxy server", server)?;
        let command = format!("get weight {}/{server}", self.backend);
        let reply = self.command(&command)?;
        // "40 (initial 1)"
        reply
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| self.refused(&command, reply))
    }

    /// Sets a server's weight (0 to 256; 0 takes it out of the rotation).
    pub fn set_weight(&self, server: &str, weight: u32) -> Result<(), ExportError> {
        check_name("HAProxy backend", &self.backend)?;
        check_name("HAProxy server", server)?;
        let command = format!("set server {}/{server} weight {weight}", self.backend);
        let reply = self.command(&command)?;
        // Success is an empty answer; anything else is HAProxy saying why not.
        if reply.is_empty() {
            Ok(())
        } else {
            Err(self.refused(&command, reply))
        }
    }

    /// HAProxy's name for the server Umbra calls `umbra`.
    fn resolve<'a>(&self, umbra: &str, servers: &'a [HaproxyServer]) -> Option<&'a HaproxyServer> {
        let wanted = self.names.get(umbra).map_or(umbra, String::as_str);
        servers
            .iter()
            .find(|s| s.name == wanted)
            .or_else(|| servers.iter().find(|s| s.address() == umbra))
    }
}

impl WeightsExporter for HaproxyRuntime {
    fn describe(&self) -> String {
        format!("haproxy {} backend {}", self.socket, self.backend)
    }

    /// Resolves every server first, so a weight for an unknown server changes nothing.
    fn export(&mut self, weights: &Weights) -> Result<(), ExportError> {
        let servers = self.servers()?;
        let mut plan = Vec::new();
        for (name, weight) in weights.rounded() {
            let server =
                self.resolve(&name, &servers)
                    .ok_or_else(|| ExportError::NoSuchServer {
                        backend: self.backend.clone(),
                        server: name.clone(),
                        known: servers
                            .iter()
                            .map(|s| format!("{} ({})", s.name, s.address()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            plan.push((server, weight));
        }
        for (server, weight) in plan {
            if server.weight != weight {
                self.set_weight(&server.name, weight)?;
            }
        }
        Ok(())
    }
}

/// Writes one command line and reads the answer to the end (HAProxy closes the
/// connection after answering in non-interactive mode).
fn exchange(mut s: impl Read + Write, line: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(line)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Parses `show servers state` (format version 1): a version line, a `#` header
/// naming the columns, one line per server. Columns are found by name, so a
/// HAProxy that adds columns is still read right. None when it is not that.
fn parse_servers_state(reply: &str) -> Option<Vec<HaproxyServer>> {
    let mut lines = reply.lines().map(str::trim).filter(|l| !l.is_empty());
    lines.next()?.parse::<u32>().ok()?;
    let header: Vec<&str> = lines
        .next()?
        .strip_prefix('#')?
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (name, addr, weight) = (col("srv_name")?, col("srv_addr")?, col("srv_uweight")?);
    let (initial, port) = (col("srv_iweight"), col("srv_port"));
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        out.push(HaproxyServer {
            name: f.get(name)?.to_string(),
            addr: f.get(addr)?.to_string(),
            port: port.and_then(|i| f.get(i)).and_then(|p| p.parse().ok()),
            weight: f.get(weight)?.parse().ok()?,
            initial_weight: initial
                .and_then(|i| f.get(i))
                .and_then(|w| w.parse().ok())
                .unwrap_or(0),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // As HAProxy 2.6 prints it.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 be_app 1 s1 127.0.0.1 2 0 40 1 1 1 0 2 0 0 0 0 - 19001 - 0 0 - - 0\n3 be_app 2 s2 127.0.0.1 2 0 0 1 1 1 0 2 0 0 0 0 - 19002 - 0 0 - - 0\n";

    #[test]
    fn reads_servers_state_by_column_name() {
        let s = parse_servers_state(STATE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].weight, s[0].initial_weight),
            ("s1", 40, 1)
        );
        assert_eq!(s[1].address(), "127.0.0.1:19002");
        assert_eq!(parse_servers_state("Can't find backend."), None);
    }

    #[test]
    fn socket_addresses() {
        assert_eq!(
            "unix:/run/h.sock".parse::<HaproxySocket>().unwrap(),
            HaproxySocket::Unix("/run/h.sock".into())
        );
        assert_eq!(
            "ipv4@127.0.0.1:9999".parse::<HaproxySocket>().unwrap(),
            HaproxySocket::Tcp("127.0.0.1:9999".into())
        );
        let e = "localhost".parse::<HaproxySocket>().unwrap_err();
        assert!(e.contains("\"localhost\""), "{e}");
    }

    #[test]
    fn names_that_would_inject_commands_are_refused() {
        let h = HaproxyRuntime::new(HaproxySocket::Unix("/nonexistent".into()), "app");
        let e = h
            .set_weight("s1; shutdown sessions", 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HAProxy server"), "{e}");
    }
}
