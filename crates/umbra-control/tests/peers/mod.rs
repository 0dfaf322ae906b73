//! Real peers for the exporter tests: small HTTP servers with a fixed service
//! time, HAProxy and nginx, all on 127.0.0.1 with ports chosen at run time, and
//! a client that says which server answered and how long it took.

// Each test binary uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const NGINX: &str = "/usr/sbin/nginx";

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("umbra-control-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `ready` holds, up to 10 s; `what` names it in the failure.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// An HTTP/1.1 server that answers every request after `service` (a sleep, so
/// requests do not queue behind each other), with its name in `x-server`; 500
/// while `failing` is set. A thread per connection, keep-alive.
pub struct TestServer {
    pub name: String,
    pub port: u16,
    pub failing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(name: &str, service: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, n) = (failing.clone(), stop.clone(), name.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, n) = (f.clone(), n.clone());
                std::thread::spawn(move || serve(conn, &n, service, &f));
            }
        });
        TestServer {
            name: name.to_string(),
            port,
            failing,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, name: &str, service: Duration, failing: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        let mut content_length = 0usize;
        let mut close = false;
        // The head: request line and headers up to the blank line.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if l.starts_with("connection:") && l.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        std::thread::sleep(service);
        let status = if failing.load(Ordering::Relaxed) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nx-server: {name}\r\ncontent-length: {}\r\n{}\r\n{name}",
            name.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if reader.get_mut().write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// One answer as [`fetch`] saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub server: String,
    pub latency: Duration,
}

/// GET / on a fresh connection (`connection: close`), so a balancer picks a
/// server for every request; the latency covers connect to the last byte.
pub fn fetch(port: u16) -> Answer {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let latency = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let server = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-server:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        status,
        server,
        latency,
    }
}

/// `n` requests from `threads` client threads at once.
pub fn fetch_many(port: u16, n: usize, threads: usize) -> Vec<Answer> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let count = n / threads + usize::from(t < n % threads);
            std::thread::spawn(move || (0..count).map(|_| fetch(port)).collect::<Vec<_>>())
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// A peer process (HAProxy, nginx) killed when dropped.
pub struct Peer {
    child: Child,
    pub log: PathBuf,
}

impl Peer {
    pub fn start(program: &str, args: &[&str], log: PathBuf) -> Peer {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: scripts/test installs it (apt-get install haproxy nginx-light)"
        );
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Peer { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Peer {
    /// SIGTERM first, so nginx's master takes its workers down with it; SIGKILL
    /// after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
