//! The dashboard end to end (issue 9): the proxy runs with two production
//! servers, a shadow that is slower on `/api/search`, one-second analysis
//! windows and profiles learned from a log (one renamed to carry markup);
//! headless Chromium (Debian's package) keeps one page open on the admin port
//! while clients send traffic. The test reads the live DOM through the DevTools
//! protocol: the profiles, the firing alert and the weights appear; a weight
//! changed through `PUT /api/weights` and new windows show up on the same page
//! without a reload; the page says "disconnected" when the proxy stops. The
//! screenshot (1280×800) is kept in `target/test-artifacts/dashboard.png`.
//!
//! Chromium is driven over `--remote-debugging-pipe` (JSON messages ending in
//! NUL on file descriptors 3 and 4) so the test needs no WebSocket client: a
//! shell maps our stdin and stdout pipes onto those descriptors.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Background, Conn, free_port, get, scratch, umbra};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Path, method, status, body size, latency (ms).
const ROUTES: [(&str, &str, u16, usize, u64); 3] = [
    ("/api/catalog", "GET", 200, 3000, 20),
    ("/api/search", "GET", 200, 1000, 30),
    ("/api/cart", "POST", 201, 100, 25),
];

/// A learned profile name as hostile as a log can make it: it must show as text.
const HOSTILE: &str = "POST /api/cart <img id=injected src=x onerror=alert(1)> & \"q\"";

/// An HTTP/1.1 upstream, a thread per connection; `/api/search` takes
/// `search_factor` times its latency (the shadow's regression).
fn upstream(search_factor: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn, search_factor));
        }
    });
    port
}

fn serve(conn: TcpStream, search_factor: u64) {
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
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
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
        if path.starts_with("/api/search") {
            ms *= search_factor;
        }
        std::thread::sleep(Duration::from_millis(ms));
        let mut reply =
            format!("HTTP/1.1 {status} X\r\ncontent-length: {size}\r\n\r\n").into_bytes();
        reply.resize(reply.len() + size, b'x');
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A combined-format log of the three routes, for `umbra learn`.
fn write_log(dir: &Path) {
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

/// Learns profiles from the log, renames the cart profile to `HOSTILE`, and
/// returns the ids by route.
fn learn(dir: &Path) -> Vec<(&'static str, String)> {
    write_log(dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let mut set = support::json(&dir.join("profiles.json"));
    let mut ids = Vec::new();
    for p in set["profiles"].as_array_mut().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let route = ROUTES
            .iter()
            .map(|r| r.0)
            .find(|r| name.contains(r))
            .unwrap_or_else(|| panic!("profile {name} is none of the routes"));
        ids.push((route, p["id"].as_str().unwrap().to_string()));
        if route == "/api/cart" {
            p["name"] = json!(HOSTILE);
        }
    }
    assert_eq!(ids.len(), 3, "one profile per route: {ids:?}");
    std::fs::write(
        dir.join("profiles.json"),
        serde_json::to_vec_pretty(&set).unwrap(),
    )
    .unwrap();
    ids
}

/// Headless Chromium with one page, driven over the DevTools pipe.
struct Browser {
    child: Child,
    input: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    stderr: PathBuf,
}

impl Browser {
    fn open(url: &str, dir: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: scripts/test installs it (Debian package chromium)"
        );
        let stderr = dir.join("chromium.stderr");
        // fd 3 reads our commands (its stdin), fd 4 writes the replies (its stdout);
        // Chromium's own output goes to stderr.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 1>&2 0</dev/null")
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium-profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start chromium");
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = match output.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&message[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            input,
            messages,
            next_id: 0,
            session: String::new(),
            stderr,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        );
        b.call("Page.navigate", json!({"url": url}));
        b
    }

    /// Sends one command (to the page once attached) and waits up to 20 s for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        match self.call_result(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// The answer to one command, or the error Chromium gave.
    fn call_result(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.messages.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "chromium did not answer {method} in 20 s: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                )
            });
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value (JSON).
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Like `eval`, but `None` when the page could not run it (it is navigating).
    fn try_eval(&mut self, expression: &str) -> Option<Value> {
        let r = self
            .call_result(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .ok()?;
        if r.get("exceptionDetails").is_some() {
            return None;
        }
        Some(r["result"]["value"].clone())
    }

    /// Reads the page's state (`STATE`) until `done` holds, up to `limit`.
    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut state = Value::Null;
        loop {
            // A probe that lands mid-navigation fails; the next one will not.
            if let Some(s) = self.try_eval(STATE) {
                state = s;
                if done(&state) {
                    return state;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard did not show {what} within {limit:?}; it shows:\n{state:#}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A PNG of the viewport.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(r["data"].as_str().unwrap())
    }

    fn close(mut self) {
        self.session.clear();
        self.next_id += 1;
        let mut bytes =
            serde_json::to_vec(&json!({"id": self.next_id, "method": "Browser.close"})).unwrap();
        bytes.push(0);
        let _ = self.input.write_all(&bytes);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What the test reads from the page, as the page shows it.
const STATE: &str = r#"(() => {
  const text = (el) => (el ? el.textContent : null);
  // Between navigation and parsing there is no body yet.
  if (!document.body) return { url: location.href, loading: true };
  return {
    url: location.href,
    polls: Number(document.body.dataset.polls || 0),
    state: document.body.dataset.state || null,
    status: text(document.getElementById('status')),
    title: document.title,
    cards: [...document.querySelectorAll('article.card')].map((c) => ({
      id: c.dataset.profile,
      name: text(c.querySelector('h3 .name')),
      firing: c.classList.contains('firing'),
      series: Object.fromEntries([...c.querySelectorAll('path[data-series]')].map((p) => [p.dataset.series, Number(p.dataset.points)])),
    })),
    alerts: [...document.querySelectorAll('#alerts tr[data-fingerprint]')].map((r) => ({
      profile: r.dataset.profile, state: r.dataset.state, text: r.textContent,
    })),
    servers: [...document.querySelectorAll('#servers li[data-server]')].map((l) => ({
      name: l.dataset.server, weight: Number(l.dataset.weight), text: l.textContent,
    })),
    canary: text(document.querySelector('#canary .body')),
    capacity: text(document.querySelector('#capacity .body')),
    shadows: text(document.querySelector('#shadows .body')),
    facts: text(document.getElementById('facts')),
    images: document.querySelectorAll('img').length,
    injected: document.getElementById('injected') !== null,
    marker: window.umbraTestMarker || null,
  };
})()"#;

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn card<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state["cards"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(id))
}

fn weight_of(state: &Value, server: &str) -> Option<u64> {
    state["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(server))?["weight"]
        .as_u64()
}

/// Points drawn on a profile's chart for one series ("live p99", ...).
fn points(state: &Value, id: &str, series: &str) -> u64 {
    card(state, id)
        .and_then(|c| c["series"][series].as_u64())
        .unwrap_or(0)
}

fn put_weights(admin: u16, body: &str) -> u16 {
    Conn::open(admin)
        .request(
            "PUT",
            "/api/weights",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .status
}

#[test]
fn the_dashboard_shows_profiles_alerts_and_weights_and_updates_itself() {
    let dir = scratch("dashboard");
    let ids = learn(&dir);
    let id_of = |route: &str| ids.iter().find(|(r, _)| *r == route).unwrap().1.clone();
    let (search, cart) = (id_of("/api/search"), id_of("/api/cart"));

    let (prod_a, prod_b) = (upstream(1), upstream(1));
    // The shadow's search takes twice as long: a p99 regression on that profile only.
    let shadow = upstream(2);
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "http://127.0.0.1:{prod_a}", weight = 100 }}, {{ url = "http://127.0.0.1:{prod_b}", weight = 50 }}]
[[shadow]]
name = "next"
url = "http://127.0.0.1:{shadow}"
[mirror]
percent = "100%"
[profiles]
file = "profiles.json"
[analysis]
window = "1s"
lateness = "300ms"
[alerts]
sinks = [{{ kind = "log" }}]
"#
        ),
    )
    .unwrap();
    let mut proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);
    let (a, b) = (format!("127.0.0.1:{prod_a}"), format!("127.0.0.1:{prod_b}"));

    // The page and its assets come from the admin port, with the policy that
    // keeps everything on it.
    for path in ["/", "/dashboard"] {
        let page = get(admin, path);
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(support::text(&page.body).contains("/dashboard/app.js"));
    }
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = get(admin, path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }

    // Clients: one thread per route.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (path, method, status, _, _) in ROUTES {
        let stop = stop.clone();
        clients.push(std::thread::spawn(move || {
            let mut conn = Conn::open(listen);
            let mut i = 0;
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
                i += 1;
            }
        }));
    }

    let mut browser = Browser::open(&format!("http://127.0.0.1:{admin}/"), &dir);

    // Every profile, the firing alert on search and both servers' weights appear.
    let shown = browser.wait_for(
        "three profiles with charts, the search alert and the weights",
        Duration::from_secs(60),
        |s| {
            s["state"] == "live"
                && ids.iter().all(|(_, id)| points(s, id, "live p99") >= 2)
                && points(s, &search, "shadow p99") >= 2
                && s["alerts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|r| r["profile"] == search.as_str() && r["state"] == "firing")
                })
                && weight_of(s, &a) == Some(100)
                && weight_of(s, &b) == Some(50)
        },
    );
    // The alert is the search profile's, in the shadow; no other profile fires.
    let alerts = shown["alerts"].as_array().unwrap();
    for r in alerts.iter().filter(|r| r["state"] == "firing") {
        assert_eq!(r["profile"], search.as_str(), "{shown:#}");
        assert!(r["text"].as_str().unwrap().contains("shadow"), "{r}");
    }
    assert!(
        card(&shown, &search).unwrap()["firing"] == true,
        "{shown:#}"
    );
    assert!(card(&shown, &cart).unwrap()["firing"] == false, "{shown:#}");
    // Weights as shares: 100 and 50 of 150.
    let server_a = shown["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == a.as_str())
        .unwrap();
    assert!(
        server_a["text"]
            .as_str()
            .unwrap()
            .contains("weight 100 · 67%"),
        "{server_a}"
    );
    // Names are shown as learned, markup included, as text.
    assert_eq!(card(&shown, &cart).unwrap()["name"], HOSTILE, "{shown:#}");
    assert!(
        card(&shown, &search).unwrap()["name"]
            .as_str()
            .unwrap()
            .contains("/api/search")
    );
    assert_eq!(
        shown["injected"], false,
        "markup from a profile name became an element"
    );
    assert_eq!(shown["images"], 0);
    // Canary and replicas have no API yet: said plainly, nothing invented.
    assert_eq!(shown["canary"], "No canary configured.", "{shown:#}");
    assert_eq!(shown["capacity"], "No forecast yet.", "{shown:#}");
    assert!(shown["shadows"].as_str().unwrap().contains("next"));
    assert!(shown["facts"].as_str().unwrap().contains("live requests"));
    assert!(shown["title"].as_str().unwrap().contains("firing"));

    // The same page, no reload: a weight changes and windows keep arriving.
    browser.eval("window.umbraTestMarker = 'same page'");
    let before = points(&shown, &search, "live p99");
    assert_eq!(put_weights(admin, &format!("{{\"{a}\": 30}}")), 200);
    let updated = browser.wait_for(
        "the new weight and newer windows",
        Duration::from_secs(20),
        |s| weight_of(s, &a) == Some(30) && points(s, &search, "live p99") > before,
    );
    assert_eq!(updated["marker"], "same page", "the page reloaded");
    let server_a = updated["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == a.as_str())
        .unwrap();
    assert!(
        server_a["text"]
            .as_str()
            .unwrap()
            .contains("weight 30 · 38%"),
        "{server_a}"
    );
    assert!(updated["polls"].as_u64().unwrap() > shown["polls"].as_u64().unwrap());

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "screenshot suspiciously small");
    std::fs::write(artifacts().join("dashboard.png"), &png).unwrap();
    // The same page in dark mode, for people to look at.
    browser.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = browser.screenshot();
    assert!(
        dark.starts_with(b"\x89PNG") && dark != png,
        "dark mode changed nothing"
    );
    std::fs::write(artifacts().join("dashboard-dark.png"), &dark).unwrap();

    // The proxy stops: the page says so and keeps the last data.
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    proxy.signal("TERM");
    assert!(
        proxy.wait(Duration::from_secs(15)).is_some(),
        "proxy stopped"
    );
    let down = browser.wait_for("disconnected", Duration::from_secs(15), |s| {
        s["state"] == "disconnected"
    });
    assert!(
        down["status"]
            .as_str()
            .unwrap()
            .starts_with("disconnected since"),
        "{down:#}"
    );
    assert_eq!(weight_of(&down, &a), Some(30), "last data kept: {down:#}");
    assert!(
        down["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{admin}/"))
    );
    browser.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_the_analysis_the_dashboard_says_so_and_still_shows_the_pool() {
    let dir = scratch("dashboard-off");
    let production = upstream(1);
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            "[listen]\naddress = \"127.0.0.1:{listen}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [production]\nservers = [{{ url = \"http://127.0.0.1:{production}\" }}]\n\
             [analysis]\nenabled = false\n"
        ),
    )
    .unwrap();
    let _proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);
    let mut conn = Conn::open(listen);
    for _ in 0..5 {
        assert_eq!(conn.request("GET", "/api/catalog", &[], b"").status, 200);
    }
    let mut browser = Browser::open(&format!("http://127.0.0.1:{admin}/dashboard"), &dir);
    let name = format!("127.0.0.1:{production}");
    let shown = browser.wait_for("the pool and the note", Duration::from_secs(30), |s| {
        s["state"] == "live"
            && weight_of(s, &name) == Some(100)
            && !s["cards"].as_array().unwrap().is_empty()
    });
    let alerts = browser.eval("document.querySelector('#alerts .body').textContent");
    assert!(
        alerts.as_str().unwrap().contains("the analysis is off"),
        "{alerts}"
    );
    let note = browser.eval("document.querySelector('#profiles .body').textContent");
    assert!(
        note.as_str().unwrap().contains("Charts need the analysis"),
        "{note}"
    );
    assert_eq!(shown["canary"], "No canary configured.");
    assert!(
        !shown["facts"].as_str().unwrap().contains("firing"),
        "{shown:#}"
    );
    browser.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serves canned answers on 127.0.0.1: `routes` maps a path (query ignored) to
/// status, content type and body; anything else is 404.
fn canned(routes: Vec<(&'static str, u16, &'static str, Vec<u8>)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let path = target.split('?').next().unwrap_or("/");
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                    }
                    let (status, kind, body) = routes
                        .iter()
                        .find(|r| r.0 == path)
                        .map(|r| (r.1, r.2, r.3.clone()))
                        .unwrap_or((404, "text/plain", b"not found".to_vec()));
                    let mut reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    reply.extend_from_slice(&body);
                    if out.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The parts no API feeds yet: trace links (from a `trace_url_template` or an
/// alert's `links`), the canary stage and the recommended replicas. The page
/// and its assets come from a real proxy; the API answers are canned, in the
/// shapes the page documents, to check how it renders them, including a
/// `javascript:` link that must stay text.
#[test]
fn trace_links_canary_and_replicas_render_from_their_apis() {
    let dir = scratch("dashboard-canned");
    let production = upstream(1);
    let (listen, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("umbra.toml"),
        format!(
            "[listen]\naddress = \"127.0.0.1:{listen}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [production]\nservers = [{{ url = \"http://127.0.0.1:{production}\" }}]\n"
        ),
    )
    .unwrap();
    let proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);
    let asset = |path: &str| {
        let r = get(admin, path);
        assert_eq!(r.status, 200, "{path}");
        r.body
    };
    let (page, script, style) = (
        asset("/"),
        asset("/dashboard/app.js"),
        asset("/dashboard/app.css"),
    );
    drop(proxy);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    // A verdict as the analysis serialises it: latency in µs, rates as fractions.
    let verdict = |profile: &str,
                   metric: &str,
                   baseline: f64,
                   observed: f64,
                   threshold: Value,
                   ids: &[&str]| {
        json!({"profile": profile, "role": "shadow", "metric": metric, "basis": "production",
               "window_start_ms": now - 2000, "window_end_ms": now - 1000, "baseline": baseline,
               "observed": observed, "change": if threshold.get("rise_by").is_some() { observed - baseline } else { observed / baseline - 1.0 },
               "threshold": threshold, "effect_size": 1.2, "p_value": 1e-9, "detector": "mann-whitney",
               "agreeing": 2, "of": 3, "requests": 40, "trace_ids": ids})
    };
    let alerts = json!({
        "trace_url_template": "http://127.0.0.1:16686/trace/{trace_id}",
        "alerts": [
            {"fingerprint": "f1", "profile": "p-search", "role": "shadow", "metric": "p99",
             "state": "firing", "started_ms": now - 5000, "last_verdict_ms": now - 1000,
             "verdict": verdict("p-search", "p99", 31000.0, 60000.0, json!({"rise_ratio": 0.2}), &[trace]),
             "windows": 3},
            {"fingerprint": "f2", "profile": "p-cart", "role": "shadow", "metric": "error_rate",
             "state": "resolved", "started_ms": now - 60000, "resolved_ms": now - 30000,
             "last_verdict_ms": now - 40000, "verdict": verdict("p-cart", "error_rate", 0.001, 0.05, json!({"rise_by": 0.01}), &["feedface"]),
             "windows": 2,
             "links": {"feedface": "javascript:alert(1)"},
             "trace_url_template": "javascript:alert('{trace_id}')"},
        ]
    });
    let stats = json!({
        "uptime_secs": 5.0,
        "series": [{"role": "production", "upstream": "a", "profile": "p-search",
                    "profile_name": "GET /api/search · browser", "requests": 10, "errors": 0,
                    "error_rate": 0.0, "latency_ms": {"p50": 30.0, "p99": 31.0}}],
        "production": [{"name": "a", "url": "http://a/", "weight": 100, "healthy": true,
                        "ejected": false, "in_flight": 0, "latency_ewma_ms": 30.0,
                        "requests": 10, "failures": 0}],
        "shadows": [], "mirror": {}, "resources": [], "measurements_lost": 0,
        "connections": {"accepted": 1, "open": 1}
    });
    let analysis = json!({"window_ms": 1000, "profiles": {}, "firing": 1, "baselines": 0});
    // The shape `GET /api/canary` answers (crates/umbra/src/canary.rs).
    let canary = json!({
        "name": "v2", "stage": "25%", "phase": {"name": "live", "stage": 2, "percent": 25.0},
        "paused": false, "mirror": false, "percent": 25.0, "outcome": "pass", "score": 100.0,
        "stage_started_ms": now - 10000, "elapsed_s": 10, "interval_s": 300, "holds": 0,
        "profiles": [{"profile": "p-search", "canary_requests": 812, "production_requests": 2431,
                      "result": "pass", "metrics": [
                          {"metric": "latency_p50", "result": "pass", "change": 0.021},
                          {"metric": "latency_p99", "result": "no_data", "change": null}]}],
        "history": [{"at_ms": now - 10000, "outcome": "pass",
                     "reason": "score 100.0 (9 of 9 metrics passed): 5% → 25%"}],
    });
    let capacity = json!({"forecast": {"replicas": 4, "current_replicas": 3, "peak_rps": 812.5,
                          "peak_at_ms": now + 3_600_000, "method": "holt_winters"}});
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    let json_type = "application/json";
    let port = canned(vec![
        ("/", 200, "text/html; charset=utf-8", page),
        ("/dashboard/app.js", 200, "text/javascript", script),
        ("/dashboard/app.css", 200, "text/css", style),
        ("/api/stats", 200, json_type, body(&stats)),
        ("/api/analysis", 200, json_type, body(&analysis)),
        ("/api/alerts", 200, json_type, body(&alerts)),
        ("/api/canary", 200, json_type, body(&canary)),
        ("/api/capacity", 200, json_type, body(&capacity)),
    ]);

    let mut browser = Browser::open(&format!("http://127.0.0.1:{port}/"), &dir);
    let shown = browser.wait_for("the canned alerts", Duration::from_secs(30), |s| {
        s["state"] == "live" && s["alerts"].as_array().is_some_and(|a| a.len() == 2)
    });
    let links = browser.eval(
        "[...document.querySelectorAll('#alerts .traces a')].map((a) => [a.textContent, a.href, a.title])",
    );
    assert_eq!(
        links,
        json!([[
            "4bf92f3577b3…",
            format!("http://127.0.0.1:16686/trace/{trace}"),
            trace
        ]]),
        "{shown:#}"
    );
    // The `javascript:` link is shown as its id, not as a link.
    let resolved = &shown["alerts"][1];
    assert_eq!(resolved["state"], "resolved");
    // Rates as percentages, a `rise_by` change in points.
    for part in ["shadow error rate", "5.0%", "was 0.10%", "+4.90 pt"] {
        assert!(
            resolved["text"].as_str().unwrap().contains(part),
            "{part} in {resolved}"
        );
    }
    assert!(
        resolved["text"].as_str().unwrap().contains("feedface"),
        "{resolved}"
    );
    let firing = shown["alerts"][0]["text"].as_str().unwrap();
    for part in [
        "GET /api/search · browser",
        "shadow p99 latency",
        "60.0 ms",
        "was 31.0 ms",
        "+93.5%",
    ] {
        assert!(firing.contains(part), "{part} in {firing}");
    }
    let canary = shown["canary"].as_str().unwrap();
    for part in [
        "25%",
        "namev2",
        "p-search pass",
        "812 canary / 2431 production",
        "latency_p50 pass (+2.1%)",
        "last decision: score 100.0 (9 of 9 metrics passed): 5% → 25%",
    ] {
        assert!(canary.contains(part), "{part} in {canary}");
    }
    assert!(
        !canary.contains("latency_p99"),
        "no-data metrics are left out: {canary}"
    );
    let capacity = shown["capacity"].as_str().unwrap();
    assert!(
        capacity.starts_with("4 recommended replicas (now 3)"),
        "{capacity}"
    );
    assert!(
        capacity.contains("peak rps813") && capacity.contains("holt_winters"),
        "{capacity}"
    );
    browser.close();
    let _ = std::fs::remove_dir_all(&dir);
}
