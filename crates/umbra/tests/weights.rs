//! The weights loop end to end: the real `umbra proxy` in front of three
//! production servers, one twice as slow, with shadow probes on and only a
//! trickle of live traffic. The weights must converge to about 40/40/20 from
//! the probes, the probes must reach every server (the same requests, safe
//! methods only, marked `x-umbra-probe: 1`), and the exporters must carry the
//! weights to a real HAProxy (read back over its runtime API) and to an nginx
//! upstream file (checked by `nginx -t` as the reload hook).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Background, NGINX, free_port, scratch, text, umbra, wait_for_port};
use umbra_control::{HaproxyRuntime, HaproxySocket};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// One request as a server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    probe: Option<String>,
}

/// An HTTP/1.1 server answering every request after `service` (a sleep, so
/// requests do not queue), keeping what it saw. A thread per connection.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn start(service: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let keep = keep.clone();
                thread::spawn(move || serve(conn, service, &keep));
            }
        });
        Upstream { port, seen }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, service: Duration, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_nodelay(true);
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut probe) = (0usize, None);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-umbra-probe") {
                    probe = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            target,
            probe,
        });
        thread::sleep(service);
        let reply: &[u8] = if method == "HEAD" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

/// HAProxy in the foreground with an admin stats socket and one roundrobin
/// backend `app` over the servers (s1, s2, s3, weight 1).
fn start_haproxy(dir: &Path, servers: &[&Upstream]) -> (Background2, String) {
    let port = free_port();
    let sock = dir.join("haproxy.sock");
    let mut conf = format!(
        "global\n  stats socket {} mode 600 level admin\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend app\n\
         backend app\n  balance roundrobin\n",
        sock.display()
    );
    for (i, s) in servers.iter().enumerate() {
        conf.push_str(&format!("  server s{} {} weight 1\n", i + 1, s.addr()));
    }
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, conf).unwrap();
    assert!(
        Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing: scripts/test installs haproxy"
    );
    let child = Command::new(HAPROXY)
        .args(["-db", "-f", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "HAProxy's stats socket");
        thread::sleep(Duration::from_millis(20));
    }
    (Background2(child), sock.display().to_string())
}

/// A peer process killed when dropped.
struct Background2(std::process::Child);

impl Drop for Background2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The weights lines the proxy printed: (interval, server → weight).
fn weight_lines(log: &str) -> Vec<(u64, BTreeMap<String, u32>)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("umbra: weights (interval ")?;
            let (n, pairs) = rest.split_once(") ")?;
            let weights = pairs
                .split_whitespace()
                .filter_map(|p| {
                    let (s, w) = p.rsplit_once('=')?;
                    Some((s.to_string(), w.parse().ok()?))
                })
                .collect();
            Some((n.parse().ok()?, weights))
        })
        .collect()
}

fn near(weights: &BTreeMap<String, u32>, want: &[(&str, f64)], tolerance: f64) -> bool {
    want.iter().all(|(s, w)| {
        weights
            .get(*s)
            .is_some_and(|got| (*got as f64 - w).abs() <= tolerance)
    })
}

fn get_json(port: u16, path: &str) -> Value {
    serde_json::from_slice(&support::get(port, path).body).unwrap()
}

#[test]
fn probes_alone_move_the_weights_and_haproxy_and_nginx_get_them() {
    let dir = scratch("weights-probes");
    let fast_a = Upstream::start(Duration::from_millis(20));
    let fast_b = Upstream::start(Duration::from_millis(20));
    let slow = Upstream::start(Duration::from_millis(40));
    let (a, b, c) = (fast_a.addr(), fast_b.addr(), slow.addr());

    // Profiles of two GET routes and one POST route.
    support::routes::write_log(&dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (_haproxy, socket) = start_haproxy(&dir, &[&fast_a, &fast_b, &slow]);
    // The nginx hook: `nginx -t` on a configuration that includes the file, so
    // a file nginx would refuse fails the export (and the test).
    let d = dir.display();
    std::fs::write(
        dir.join("nginx-check.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
             include {d}/upstream.conf;\n\
             server {{ listen 127.0.0.1:{}; location / {{ proxy_pass http://app; }} }}\n}}\n",
            free_port()
        ),
    )
    .unwrap();

    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
[listen]
address = "127.0.0.1:{listen}"

[admin]
address = "127.0.0.1:{admin}"

[production]
servers = [{{ url = "http://{a}" }}, {{ url = "http://{b}" }}, {{ url = "http://{c}" }}]

[profiles]
file = "{d}/profiles.json"

[analysis]
enabled = false

[control.weights]
interval = "1s"
min_samples = 5

[control.weights.probes]
rate = 10.0
timeout = "2s"

[[control.weights.export]]
kind = "haproxy"
socket = "{socket}"
backend = "app"
timeout = "1s"

[[control.weights.export]]
kind = "nginx"
file = "{d}/upstream.conf"
upstream = "app"
reload = ["{NGINX}", "-t", "-q", "-c", "{d}/nginx-check.conf", "-p", "{d}"]
timeout = "5s"
"#
    );
    std::fs::write(dir.join("umbra.toml"), config).unwrap();
    let check = umbra(&["check", "--config", "umbra.toml"], &dir);
    let check_out = text(&check.stdout);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        check_out.contains("probes: 10 req/s to each of 3 production servers, methods GET, HEAD"),
        "{check_out}"
    );
    assert!(
        check_out.contains("not probed"),
        "the POST profile is left out: {check_out}"
    );
    let started = Instant::now();
    let mut proxy = Background::start(&["proxy", "--config", "umbra.toml"], &dir, &[listen, admin]);

    // A trickle of live traffic, POSTs included: about one request per server a second.
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let (method, path, body): (&str, &str, &[u8]) = if sent % 2 == 0 {
                    ("GET", "/api/catalog?page=3", b"")
                } else {
                    ("POST", "/api/cart", b"{\"sku\":1}")
                };
                let r = support::Conn::open(listen).request(method, path, &[], body);
                assert_eq!(r.status, 200);
                sent += 1;
                thread::sleep(Duration::from_millis(330));
            }
            sent
        })
    };

    // Wait for the controller's fifth interval, then a little for the exports.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = get_json(admin, "/api/stats");
        if stats["weights"]["interval"].as_u64().unwrap_or(0) >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "five intervals: {}", proxy.log());
        thread::sleep(Duration::from_millis(100));
    }
    let want = [(a.as_str(), 40.0), (b.as_str(), 40.0), (c.as_str(), 20.0)];
    let history = weight_lines(&proxy.log());
    eprintln!("weights as the proxy changed them: {history:?}");
    let first = history
        .iter()
        .find(|(_, w)| near(w, &want, 3.0))
        .unwrap_or_else(|| panic!("never near 40/40/20: {history:?}\n{}", proxy.log()));
    eprintln!("near 40/40/20 at interval {}: {:?}", first.0, first.1);
    assert!(first.0 <= 5, "converged only at interval {}", first.0);

    // What the controller holds now, and the proxy's own balancer.
    let stats = get_json(admin, "/api/stats");
    let latest: BTreeMap<String, u32> = stats["production"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["weight"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert!(
        near(&latest, &want, 3.0),
        "balancer weights now: {latest:?}"
    );
    let servers = stats["weights"]["servers"].as_array().unwrap();
    for s in servers {
        eprintln!(
            "  {}: weight {:.1}, {}, latency at the mix {:.1} ms",
            s["server"],
            s["weight"].as_f64().unwrap(),
            s["state"],
            s["latency_ms"].as_f64().unwrap_or(0.0)
        );
    }

    // HAProxy shows the same weights through its runtime API (exports are
    // asynchronous: give them a moment).
    let runtime = HaproxyRuntime::new(HaproxySocket::Unix(socket.into()), "app");
    let deadline = Instant::now() + Duration::from_secs(5);
    let haproxy = loop {
        let latest: BTreeMap<String, u32> = get_json(admin, "/api/stats")["production"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["weight"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        let state: BTreeMap<String, u32> = runtime
            .servers()
            .unwrap()
            .into_iter()
            .map(|s| (s.address(), s.weight))
            .collect();
        if state == latest {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy {state:?}, the proxy {latest:?}: {}",
            proxy.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    for s in runtime.servers().unwrap() {
        assert_eq!(
            runtime.weight(&s.name).unwrap(),
            s.weight,
            "get weight {}",
            s.name
        );
    }
    eprintln!("HAProxy's weights (show servers state, get weight): {haproxy:?}");

    // The nginx file holds them too, and `nginx -t` accepted it (no failures).
    let file = std::fs::read_to_string(dir.join("upstream.conf")).unwrap();
    eprintln!("{file}");
    assert!(file.contains("upstream app {"), "{file}");
    let exporters = get_json(admin, "/api/stats")["exporters"].clone();
    for e in exporters.as_array().unwrap() {
        assert_eq!(e["failures"], 0, "{exporters:#}\n{}", proxy.log());
        assert!(e["exports"].as_u64().unwrap() >= 1, "{exporters:#}");
        if e["exporter"].as_str().unwrap().starts_with("nginx") {
            let exported = &e["exported"];
            for (server, w) in exported.as_object().unwrap() {
                assert!(
                    file.contains(&format!("server {server} weight={w};")),
                    "{server} {w}: {file}"
                );
            }
        }
    }

    // Probes reached every server: the same requests, safe methods only.
    stop.store(true, Ordering::Relaxed);
    let live_sent = live.join().unwrap();
    let per_server: Vec<Vec<Seen>> = [&fast_a, &fast_b, &slow].iter().map(|u| u.seen()).collect();
    let probes: Vec<Vec<&Seen>> = per_server
        .iter()
        .map(|seen| seen.iter().filter(|s| s.probe.is_some()).collect())
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    for (i, p) in probes.iter().enumerate() {
        eprintln!(
            "server {}: {} probes, {} live requests in {seconds:.1} s",
            i + 1,
            p.len(),
            per_server[i].len() - p.len()
        );
        assert!(p.len() >= 40, "server {}: {} probes", i + 1, p.len());
        for s in p {
            assert_eq!(s.probe.as_deref(), Some("1"), "{s:?}");
            assert!(
                s.method == "GET" || s.method == "HEAD",
                "an unsafe probe: {s:?}"
            );
        }
    }
    let posts = per_server
        .iter()
        .flatten()
        .filter(|s| s.method == "POST")
        .count();
    assert!(posts > 0, "live POSTs reached production");
    assert!(
        per_server
            .iter()
            .flatten()
            .filter(|s| s.method == "POST")
            .all(|s| s.probe.is_none()),
        "only live requests are POSTs"
    );
    // The same requests everywhere: each of the first server's first 30 probes
    // is among every other server's first 40 (probes in flight may cross).
    for (i, p) in probes.iter().enumerate().skip(1) {
        let here: Vec<(&str, &str)> = p
            .iter()
            .take(40)
            .map(|s| (s.method.as_str(), s.target.as_str()))
            .collect();
        for s in probes[0].iter().take(30) {
            assert!(
                here.contains(&(s.method.as_str(), s.target.as_str())),
                "server {} never got the probe {s:?}",
                i + 1
            );
        }
    }
    eprintln!("live requests sent through the proxy: {live_sent}");

    // /metrics: the probe and export families, valid for promtool.
    let metrics = support::get(admin, "/metrics").body;
    let metrics_text = String::from_utf8(metrics.clone()).unwrap();
    for server in [&a, &b, &c] {
        let line = format!("umbra_probe_requests_total{{upstream=\"{server}\",outcome=\"ok\"}} ");
        assert!(metrics_text.contains(&line), "{line}: {metrics_text}");
        assert!(
            metrics_text.contains(&format!(
                "umbra_probe_latency_seconds_count{{upstream=\"{server}\",profile="
            )),
            "{metrics_text}"
        );
    }
    assert!(
        metrics_text.contains("umbra_weights_export_failures_total{exporter=\"haproxy unix:"),
        "{metrics_text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(&metrics).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // And per server in /api/stats.
    let probe_stats = get_json(admin, "/api/stats")["probes"].clone();
    let listed = probe_stats["servers"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{probe_stats:#}");
    for s in listed {
        let means: Vec<String> = s["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1} ms",
                    p["profile"].as_str().unwrap(),
                    p["mean_ms"].as_f64().unwrap()
                )
            })
            .collect();
        eprintln!(
            "probes of {}: {} requests, {}",
            s["server"],
            s["requests"],
            means.join(", ")
        );
        assert!(s["outcomes"]["ok"].as_u64().unwrap() >= 40, "{s}");
    }
    proxy.signal("TERM");
    assert!(
        proxy.wait(Duration::from_secs(10)).is_some(),
        "{}",
        proxy.log()
    );
    assert!(seconds < 60.0);
}

/// Runs `umbra` like `support::umbra`, killing it after `limit` (a proxy that
/// should have refused its configuration would otherwise run forever).
fn umbra_within(args: &[&str], dir: &Path, limit: Duration) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn probe_and_export_settings_are_checked_before_anything_starts() {
    let dir = scratch("weights-check");
    support::routes::write_log(&dir);
    let out = umbra(&["learn", "access.log", "-o", "profiles.json"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let base = "[listen]\naddress = \"127.0.0.1:1\"\n\n[production]\nservers = [{ url = \"http://127.0.0.1:2\" }]\n";
    for (name, extra, says) in [
        (
            "no-profiles",
            "[control.weights.probes]\nrate = 1.0\n",
            "[profiles] file",
        ),
        (
            "no-method",
            "[profiles]\nfile = \"profiles.json\"\n[control.weights.probes]\nmethods = [\"DELETE\"]\n",
            "key control.weights.probes.methods = [\"DELETE\"]",
        ),
        (
            "bad-rate",
            "[profiles]\nfile = \"profiles.json\"\n[control.weights.probes]\nrate = 1000.0\n",
            "control.weights.probes.rate = 1000",
        ),
        (
            "bad-export",
            "[[control.weights.export]]\nkind = \"haproxy\"\nsocket = \"/run/h.sock\"\n",
            "control.weights.export[0].backend = (missing)",
        ),
        (
            "foreign-key",
            "[[control.weights.export]]\nkind = \"nginx\"\nfile = \"u.conf\"\nupstream = \"app\"\nbackend = \"x\"\n",
            "control.weights.export[0].backend = (set): a key of kind = \"haproxy\"",
        ),
    ] {
        let file = format!("{name}.toml");
        std::fs::write(dir.join(&file), format!("{base}{extra}")).unwrap();
        for command in [
            &["check", "--config", file.as_str()][..],
            &["proxy", "--config", file.as_str()],
        ] {
            let out = umbra_within(command, &dir, Duration::from_secs(10));
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} {command:?}: {err}");
            assert!(err.contains(says), "{name} {command:?}: {err}");
            assert!(err.contains(&file), "{name}: the file is named: {err}");
        }
    }
    // Off with enabled = false: no profile set needed.
    std::fs::write(
        dir.join("off.toml"),
        format!("{base}[control.weights.probes]\nenabled = false\n"),
    )
    .unwrap();
    let out = umbra(&["check", "--config", "off.toml"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("probes:"),
        "{}",
        text(&out.stdout)
    );
}
