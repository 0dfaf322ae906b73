//! Three routes of a small shop API served by a thread-per-connection
//! HTTP/1.1 upstream (`/api/search` 40% slower on demand), and an access log of
//! them for `umbra learn`: the peers of the analysis and tracing end-to-end tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Conn;

/// The three routes: path, method, response status, body size, base latency.
pub const ROUTES: [(&str, &str, u16, usize, u64); 3] = [
    ("/api/catalog", "GET", 200, 5000, 40),
    ("/api/search", "GET", 200, 1000, 60),
    ("/api/cart", "POST", 201, 100, 50),
];

/// An HTTP/1.1 upstream, a thread per connection, answering each route after its
/// latency (`/api/search` 40% later while `slow` is set).
pub fn upstream(slow: Arc<AtomicBool>) -> u16 {
    upstream_seeing(slow, None)
}

/// [`upstream`], keeping every `traceparent` it receives in `seen`.
pub fn upstream_seeing(slow: Arc<AtomicBool>, seen: Option<Arc<Mutex<Vec<String>>>>) -> u16 {
    spawn(slow, 140, seen, None)
}

/// Requests an upstream answered, live ones and shadow copies (`x-umbra-shadow`) apart.
#[derive(Default)]
pub struct Served {
    pub live: AtomicU64,
    pub copies: AtomicU64,
}

/// An upstream whose `/api/search` takes `search_percent`% of its usual time,
/// counting what it serves.
pub fn upstream_counting(search_percent: u64, served: Arc<Served>) -> u16 {
    spawn(
        Arc::new(AtomicBool::new(true)),
        search_percent,
        None,
        Some(served),
    )
}

fn spawn(
    slow: Arc<AtomicBool>,
    slow_percent: u64,
    seen: Option<Arc<Mutex<Vec<String>>>>,
    served: Option<Arc<Served>>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let slow = slow.clone();
            let seen = seen.clone();
            let served = served.clone();
            std::thread::spawn(move || {
                serve(
                    conn,
                    &slow,
                    slow_percent,
                    seen.as_deref(),
                    served.as_deref(),
                )
            });
        }
    });
    port
}

fn serve(
    conn: TcpStream,
    slow: &AtomicBool,
    slow_percent: u64,
    seen: Option<&Mutex<Vec<String>>>,
    served: Option<&Served>,
) {
    let _ = conn.set_nodelay(true);
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        let mut copy = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("x-umbra-shadow") {
                    copy = true;
                } else if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("traceparent")
                    && let Some(seen) = seen
                {
                    seen.lock().unwrap().push(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, size, mut ms) = ROUTES
            .iter()
            .find(|r| path.starts_with(r.0))
            .map(|r| (r.2, r.3, r.4))
            .unwrap_or((404, 10, 1));
        if path.starts_with("/api/search") && slow.load(Ordering::Relaxed) {
            ms = ms * slow_percent / 100;
        }
        if let Some(s) = served {
            if copy { &s.copies } else { &s.live }.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(ms));
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {size}\r\n\r\n");
        let mut reply = head.into_bytes();
        reply.resize(reply.len() + size, b'x');
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A combined-format log of the three routes, for `umbra learn`.
pub fn write_log(dir: &Path) {
    let mut log = String::new();
    for i in 0..900 {
        let (path, method, status, size, _) = ROUTES[i % 3];
        let query = match i % 3 {
            0 => format!("?page={}", i % 50),
            1 => format!("?q=w{}", i % 997),
            _ => String::new(),
        };
        log.push_str(&format!(
            "10.0.{}.{} - - [26/Nov/2026:10:{:02}:{:02} +0000] \"{method} {path}{query} HTTP/1.1\" {status} {size} \"-\" \"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\"\n",
            i % 10,
            1 + i % 250,
            (i / 60) % 60,
            i % 60
        ));
    }
    std::fs::write(dir.join("access.log"), log).unwrap();
}

/// Clients: `threads` per route, each on its own keep-alive connection, asking
/// for the routes with varied queries (and a JSON body for the POST) until
/// `stop`; every answer must have the route's status.
pub fn drive(port: u16, threads: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let mut clients = Vec::new();
    for (path, method, status, _, _) in ROUTES {
        for t in 0..threads {
            let stop = stop.clone();
            clients.push(std::thread::spawn(move || {
                let mut conn = Conn::open(port);
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let target = match path {
                        "/api/catalog" => format!("{path}?page={}", i % 50),
                        "/api/search" => format!("{path}?q=w{}", i % 997),
                        _ => path.to_string(),
                    };
                    let body: &[u8] = if method == "POST" {
                        b"{\"sku\":1}"
                    } else {
                        b""
                    };
                    let reply = conn.request(
                        method,
                        &target,
                        &[(
                            "user-agent",
                            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                        )],
                        body,
                    );
                    assert_eq!(reply.status, status, "{method} {target}");
                    i += threads;
                }
            }));
        }
    }
    clients
}
