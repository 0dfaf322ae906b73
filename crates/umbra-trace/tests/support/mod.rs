//! The Python OTLP receiver (`tests/otlp_receiver.py`) as a test peer.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use umbra_trace::{TraceConfig, TraceFileConfig};

/// The Python with `opentelemetry-proto` installed: `UMBRA_OTLP_PYTHON`, or
/// the virtual environment `scripts/test` makes under `target/`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("UMBRA_OTLP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/otlp-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test once (it creates the virtual environment with the \
         opentelemetry-proto package), or set UMBRA_OTLP_PYTHON to a python that has it",
        venv.display()
    );
    venv
}

pub struct Receiver {
    child: Child,
    // Held open: the receiver exits when it closes.
    _stdin: ChildStdin,
    pub port: u16,
}

impl Receiver {
    pub fn start(args: &[&str]) -> Receiver {
        // Relative to the workspace, so other crates' tests can use this module too.
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../umbra-trace/tests/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver did not start: {line:?}"));
        Receiver {
            child,
            _stdin: stdin,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET `path`, parsed as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap()
    }

    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.get("/spans").as_array().unwrap().clone()
    }

    /// The requests seen; fails the test on any the receiver could not decode.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let reqs = self.get("/requests").as_array().unwrap().clone();
        for r in &reqs {
            assert!(r["error"].is_null(), "the receiver refused a request: {r}");
        }
        reqs
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration from these variables (the process environment is left
/// alone) over the `[tracing]` TOML `file`.
pub fn config(vars: &[(&str, &str)], file: &str) -> TraceConfig {
    let file: TraceFileConfig = toml::from_str(file).unwrap();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TraceConfig::from_lookup(
        |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        Some(&file),
    )
    .unwrap()
}

pub fn find<'a>(spans: &'a [serde_json::Value], span_id: &str) -> &'a serde_json::Value {
    spans
        .iter()
        .find(|s| s["span_id"] == span_id)
        .unwrap_or_else(|| panic!("no span {span_id} among {spans:#?}"))
}
