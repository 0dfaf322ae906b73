//! End-to-end tests of `umbra proxy` against real nginx upstreams on 127.0.0.1.
//!
//! The upstreams are nginx servers that log what they receive as JSON lines
//! (method, URI, the shadow header, credentials, forwarding headers and the
//! whole request body: `proxy_pass` to a sink makes nginx read the body, so
//! `$request_body` is filled).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Background, Conn, Nginx, free_port, get, scratch, umbra, wait_for_port};

/// nginx with a production and a shadow server that log what reaches them.
struct Upstreams {
    _nginx: Nginx,
    prod: u16,
    shadow: u16,
    dir: std::path::PathBuf,
}

impl Upstreams {
    fn start(dir: &Path) -> Upstreams {
        let (sink, prod, shadow) = (free_port(), free_port(), free_port());
        let d = dir.display();
        let servers = format!(
            r#"
  log_format seen escape=json '{{"method":"$request_method","uri":"$request_uri","shadow":"$http_x_umbra_shadow","auth":"$http_authorization","cookie":"$http_cookie","xff":"$http_x_forwarded_for","host":"$host","user":"$http_x_user","test":"$http_x_test","length":"$content_length","body":"$request_body"}}';
  server {{ listen 127.0.0.1:{sink}; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{prod}; client_body_buffer_size 4m; client_max_body_size 16m;
           access_log {d}/prod.log seen; location / {{ proxy_pass http://127.0.0.1:{sink}; }} }}
  server {{ listen 127.0.0.1:{shadow}; client_body_buffer_size 4m; client_max_body_size 16m;
           access_log {d}/shadow.log seen; location / {{ proxy_pass http://127.0.0.1:{sink}; }} }}
"#
        );
        let nginx = Nginx::with_servers(dir, &servers, &[sink, prod, shadow]);
        Upstreams {
            _nginx: nginx,
            prod,
            shadow,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self, which: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join(format!("{which}.log")))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{which}.log: {e}: {l}")))
            .collect()
    }

    /// Waits until the shadow log stops growing (copies are sent after the live answers).
    fn settled_shadow_log(&self) -> Vec<Value> {
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.log("shadow");
            if now.len() == last {
                return now;
            }
            last = now.len();
        }
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("umbra.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `umbra proxy` from flags alone: production at `prod`, then `more` flags (a
/// shadow, say). Returns it with its listen and admin ports.
fn flag_proxy(dir: &Path, prod: u16, more: &[&str]) -> (Background, u16, u16) {
    let (listen, admin) = (free_port(), free_port());
    let listen_addr = format!("127.0.0.1:{listen}");
    let prod_url = format!("http://127.0.0.1:{prod}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let mut args = vec![
        "proxy",
        "--listen",
        &listen_addr,
        "--production",
        &prod_url,
        "--admin",
        &admin_addr,
    ];
    args.extend_from_slice(more);
    (
        Background::start(&args, dir, &[listen, admin]),
        listen,
        admin,
    )
}

fn proxy_config(listen: u16, admin: u16, up: &Upstreams, extra: &str) -> String {
    format!(
        r#"
[listen]
address = "127.0.0.1:{listen}"

[admin]
address = "127.0.0.1:{admin}"

[production]
servers = [{{ url = "http://127.0.0.1:{prod}" }}]

[[shadow]]
name = "v2"
url = "http://127.0.0.1:{shadow}"
{extra}
"#,
        prod = up.prod,
        shadow = up.shadow
    )
}

fn metric(admin: u16, name_and_labels: &str) -> f64 {
    let text = String::from_utf8(get(admin, "/metrics").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn live_requests_reach_production_unchanged_and_the_configured_share_reaches_shadow() {
    let dir = scratch("proxy-share");
    let up = Upstreams::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let config = write_config(
        &dir,
        &proxy_config(listen, admin, &up, "[mirror]\npercent = \"10%\"\n"),
    );
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );

    let n = 10_000;
    let mut conn = Conn::open(listen);
    for i in 0..n {
        let path = format!("/items/{i}?q=a%20b&n={i}");
        let reply = conn.request(
            "GET",
            &path,
            &[
                ("Authorization", "Bearer secret-token"),
                ("X-Test", "kept as sent"),
                ("Cookie", "sid=abc123"),
            ],
            b"",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"ok");
    }
    let shadow = up.settled_shadow_log();
    let prod = up.log("prod");
    assert_eq!(prod.len(), n);
    for (i, r) in prod.iter().enumerate() {
        assert_eq!(r["method"], "GET");
        assert_eq!(r["uri"], format!("/items/{i}?q=a%20b&n={i}"));
        assert_eq!(r["shadow"], "", "production never sees the shadow header");
        assert_eq!(r["auth"], "Bearer secret-token");
        assert_eq!(r["cookie"], "sid=abc123");
        assert_eq!(r["test"], "kept as sent");
        assert_eq!(r["host"], "test.local");
        assert_eq!(r["xff"], "127.0.0.1");
    }
    let share = shadow.len() as f64 / n as f64;
    assert!(
        (share - 0.10).abs() <= 0.01 * 0.10,
        "shadow got {} of {n} ({share})",
        shadow.len()
    );
    for r in &shadow {
        assert_eq!(r["shadow"], "1");
        assert_eq!(r["host"], "test.local", "copies keep the original Host");
        assert!(
            !r["auth"].as_str().unwrap().contains("secret-token"),
            "credentials never reach the shadow: {r}"
        );
        assert!(
            !r["cookie"].as_str().unwrap().contains("abc123"),
            "cookies never reach the shadow: {r}"
        );
    }
    assert_eq!(
        metric(
            admin,
            "umbra_shadow_copies_total{shadow=\"v2\",outcome=\"sent\"}"
        ),
        shadow.len() as f64
    );
}

#[test]
fn bodies_up_to_max_body_reach_the_shadow_whole() {
    let dir = scratch("proxy-bodies");
    let up = Upstreams::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let extra = "[mirror]\npercent = \"100%\"\nmax_body = \"64KiB\"\n";
    let config = write_config(&dir, &proxy_config(listen, admin, &up, extra));
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );

    // Text bodies (so nginx's JSON-escaped log shows them as they are).
    let body = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i * 7 % 36])
            .collect()
    };
    let sizes = [1usize, 1000, 16_384, 65_535, 65_536, 65_537, 300_000];
    let mut conn = Conn::open(listen);
    for (i, n) in sizes.iter().enumerate() {
        let reply = conn.request(
            "POST",
            &format!("/upload/{i}"),
            &[("Content-Type", "text/plain")],
            &body(*n),
        );
        assert_eq!(reply.status, 200);
    }
    // A chunked body streams through too, and is mirrored when it fits.
    let chunked = b"POST /upload/chunked HTTP/1.1\r\nHost: test.local\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    conn.send_raw(chunked);
    assert_eq!(conn.read_reply().expect("reply").status, 200);

    // nginx writes its log line just after the response: read once things settle.
    let shadow = up.settled_shadow_log();
    let prod = up.log("prod");
    let by_uri = |log: &[Value]| -> HashMap<String, String> {
        log.iter()
            .map(|r| {
                (
                    r["uri"].as_str().unwrap().to_string(),
                    r["body"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (prod, shadow) = (by_uri(&prod), by_uri(&shadow));
    for (i, n) in sizes.iter().enumerate() {
        let uri = format!("/upload/{i}");
        let sent = String::from_utf8(body(*n)).unwrap();
        assert_eq!(prod[&uri].len(), *n, "production gets every body whole");
        assert_eq!(prod[&uri], sent);
        if *n <= 65_536 {
            assert_eq!(
                shadow.get(&uri),
                Some(&sent),
                "a body of {n} bytes fits max_body"
            );
        } else {
            assert!(
                !shadow.contains_key(&uri),
                "a body of {n} bytes is over max_body"
            );
        }
    }
    assert_eq!(prod["/upload/chunked"], "hello world");
    assert_eq!(shadow["/upload/chunked"], "hello world");
    assert_eq!(
        metric(
            admin,
            "umbra_mirror_skipped_total{reason=\"body_too_large\"}"
        ),
        2.0
    );
}

#[test]
fn consistent_sampling_mirrors_all_or_none_of_a_users_requests() {
    let dir = scratch("proxy-consistent");
    let up = Upstreams::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let extra = "[mirror]\npercent = \"30%\"\nkey = \"header:x-user\"\n";
    let config = write_config(&dir, &proxy_config(listen, admin, &up, extra));
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );

    let users = 300;
    let per_user = 8;
    let mut conn = Conn::open(listen);
    for round in 0..per_user {
        for u in 0..users {
            let user = format!("user-{u}");
            let reply = conn.request("GET", &format!("/r/{round}"), &[("X-User", &user)], b"");
            assert_eq!(reply.status, 200);
        }
    }
    let shadow = up.settled_shadow_log();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &shadow {
        *counts
            .entry(r["user"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (user, c) in &counts {
        assert_eq!(*c, per_user, "{user}: {c} of {per_user} requests mirrored");
    }
    let share = counts.len() as f64 / users as f64;
    assert!(
        (0.2..0.4).contains(&share),
        "{} of {users} users mirrored",
        counts.len()
    );
}

/// A shadow that answers every request after `delay`, on real sockets.
fn slow_server(delay: Duration, stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            std::thread::sleep(delay);
                            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                                .is_err()
                            {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

/// Sends `n` requests on each of `clients` connections; returns the slowest one.
fn hammer(port: u16, clients: usize, n: usize) -> Duration {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(port);
                let mut worst = Duration::ZERO;
                for i in 0..n {
                    let t = Instant::now();
                    let reply = conn.request("GET", &format!("/c/{c}/{i}"), &[], b"");
                    assert_eq!(reply.status, 200, "a live request failed: {reply:?}");
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap()
}

#[test]
fn a_slow_or_dead_shadow_never_holds_live_requests() {
    let dir = scratch("proxy-slow-shadow");
    let up = Upstreams::start(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let slow = slow_server(Duration::from_millis(300), stop.clone());
    let dead = free_port();
    for (name, port) in [("slow", slow), ("dead", dead)] {
        let (listen, admin) = (free_port(), free_port());
        let text = format!(
            r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "http://127.0.0.1:{prod}" }}]
[[shadow]]
name = "{name}"
url = "http://127.0.0.1:{port}"
queue = 64
concurrency = 8
timeout = "2s"
[mirror]
percent = "100%"
"#,
            prod = up.prod
        );
        let config = write_config(&dir, &text);
        let proxy = Background::start(
            &["proxy", "--config", config.to_str().unwrap()],
            &dir,
            &[listen, admin],
        );
        let rss_before = proxy.rss_kib();
        // 8 clients x 1500 requests, far more copies than the shadow can take.
        let worst = hammer(listen, 8, 1500);
        // The shadow's delay would show in every live request that waited on it;
        // none did. (Throughput against a fast shadow is measured by bench/proxy-vs-nginx.sh.)
        assert!(
            worst < Duration::from_millis(300),
            "{name} shadow: a live request took {worst:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let dropped = metric(
            admin,
            &format!("umbra_shadow_copies_total{{shadow=\"{name}\",outcome=\"queue_full\"}}"),
        );
        let queued = metric(
            admin,
            &format!("umbra_shadow_copies_total{{shadow=\"{name}\",outcome=\"queued\"}}"),
        );
        assert_eq!(
            dropped + queued,
            12_000.0,
            "{name}: every copy is queued or counted as dropped"
        );
        if name == "slow" {
            // 8 at a time for 300 ms each: the queue of 64 overflows.
            assert!(
                dropped > 5_000.0,
                "{name}: the full queue drops copies ({dropped} dropped)"
            );
        } else {
            let failed = metric(
                admin,
                "umbra_shadow_copies_total{shadow=\"dead\",outcome=\"failed\"}",
            );
            assert!(failed > 0.0, "refused copies are counted");
        }
        let rss_after = proxy.rss_kib();
        assert!(
            rss_after < rss_before + 64 * 1024,
            "{name}: memory grew from {rss_before} KiB to {rss_after} KiB"
        );
    }
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let dir = scratch("proxy-prometheus");
    let up = Upstreams::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let extra = "[mirror]\npercent = \"50%\"\n";
    let config = write_config(&dir, &proxy_config(listen, admin, &up, extra));
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );
    let mut conn = Conn::open(listen);
    for i in 0..50 {
        assert_eq!(
            conn.request("GET", &format!("/p/{i}"), &[], b"").status,
            200
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(&metrics.body)
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        support::text(&out.stdout),
        support::text(&out.stderr)
    );

    let web = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: umbra\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (scripts/test installs Debian's prometheus package)");
    wait_for_port(web);
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = "/api/v1/query?query=sum(umbra_requests_total%7Brole%3D%22production%22%7D)";
    let mut seen = None;
    while Instant::now() < deadline {
        let reply = get(web, query);
        if reply.status == 200 {
            let v: Value = serde_json::from_slice(&reply.body).unwrap();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                seen = Some(value.to_string());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(
        seen.as_deref(),
        Some("50"),
        "Prometheus scraped the proxy's request count"
    );
}

#[test]
fn bad_input_gets_clear_answers_and_never_a_panic() {
    let dir = scratch("proxy-bad-input");
    let up = Upstreams::start(&dir);
    let (listen, admin) = (free_port(), free_port());
    let dead = free_port();
    let text = format!(
        r#"
[listen]
address = "127.0.0.1:{listen}"
header_timeout = "1s"
max_header_bytes = "16KiB"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "http://127.0.0.1:{prod}" }}]
"#,
        prod = up.prod
    );
    let config = write_config(&dir, &text);
    let proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );

    // Malformed request line: 400, then the connection closes.
    let mut c = Conn::open(listen);
    c.send_raw(b"GARBAGE\r\n\r\n");
    assert_eq!(c.read_reply().expect("a 400").status, 400);
    assert!(c.closed_within(Duration::from_secs(2)));

    // Oversized head: 431.
    let mut c = Conn::open(listen);
    let big = "a".repeat(40_000);
    c.send_raw(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(c.read_reply().expect("a 431").status, 431);

    // A client that never finishes its head is cut off after the header timeout.
    let mut c = Conn::open(listen);
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let t = Instant::now();
    assert!(c.closed_within(Duration::from_secs(5)), "slow head not cut");
    assert!(t.elapsed() < Duration::from_secs(5));

    // The proxy still serves after all of that.
    assert_eq!(get(listen, "/fine").status, 200);
    assert!(
        proxy.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        proxy.log()
    );
    drop(proxy);

    // A dead production upstream: 502 naming it and why.
    let (_dead_proxy, listen2, admin2) = flag_proxy(&dir, dead, &[]);
    let reply = get(listen2, "/x");
    assert_eq!(reply.status, 502);
    let why = String::from_utf8(reply.body).unwrap();
    assert!(
        why.contains(&format!("127.0.0.1:{dead}")) && why.contains("unreachable"),
        "{why}"
    );
    assert_eq!(
        get(admin2, "/readyz").status,
        200,
        "one failure does not eject"
    );

    // An invalid config is refused with file, line and key.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\naddress = \"127.0.0.1:1\"\n\n[production]\nservers = [{ url = \"http://127.0.0.1:2\", weight = \"heavy\" }]\n",
    )
    .unwrap();
    let out = umbra(&["check", "--config", bad.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = support::text(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("line 5")
            && err.contains("production.servers[0].weight"),
        "{err}"
    );
    let out = umbra(&["check", "--config", config.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    assert!(support::text(&out.stdout).contains("OK"));
}

#[test]
fn sighup_reloads_without_dropping_connections_and_sigterm_drains() {
    let dir = scratch("proxy-reload");
    let up = Upstreams::start(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let slow_prod = slow_server(Duration::from_millis(700), stop.clone());
    let (listen, admin) = (free_port(), free_port());
    let config = write_config(
        &dir,
        &proxy_config(listen, admin, &up, "[mirror]\npercent = \"0%\"\n"),
    );
    let mut proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );

    let mut conn = Conn::open(listen);
    assert_eq!(conn.request("GET", "/before", &[], b"").status, 200);
    std::fs::write(
        &config,
        proxy_config(listen, admin, &up, "[mirror]\npercent = \"100%\"\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(admin, "umbra_config_reloads_total{result=\"ok\"}") < 1.0 {
        assert!(Instant::now() < deadline, "no reload: {}", proxy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same connection keeps working, under the new config.
    assert_eq!(conn.request("GET", "/after", &[], b"").status, 200);
    let shadow = up.settled_shadow_log();
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0]["uri"], "/after");

    // A broken file is refused and the running config kept.
    std::fs::write(&config, "[listen\n").unwrap();
    proxy.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(proxy.log().contains("not reloaded"), "{}", proxy.log());
    assert_eq!(conn.request("GET", "/still", &[], b"").status, 200);

    // Point production at a slow server, start a request, then SIGTERM: it completes.
    std::fs::write(
        &config,
        proxy_config(listen, admin, &up, "").replace(
            &format!("http://127.0.0.1:{}\" }}]", up.prod),
            &format!("http://127.0.0.1:{slow_prod}\" }}]"),
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(admin, "umbra_config_reloads_total{result=\"ok\"}") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "no second reload: {}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let in_flight = std::thread::spawn(move || get(listen, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    proxy.signal("TERM");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"slow");
    let status = proxy
        .wait(Duration::from_secs(10))
        .expect("the proxy exits after draining");
    assert!(status.success(), "{}", proxy.log());
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn exchanges_are_measured_per_profile_and_the_access_log_reads_back() {
    let dir = scratch("proxy-profiles");
    let up = Upstreams::start(&dir);
    // Learn profiles from the bundled shop log, then measure traffic shaped like it.
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/shop-access-1k.log");
    let out = umbra(
        &["learn", log.to_str().unwrap(), "-o", "profiles.json"],
        &dir,
    );
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let (listen, admin) = (free_port(), free_port());
    let extra = format!(
        "[mirror]\npercent = \"100%\"\n\n[profiles]\nfile = \"{}\"\n\n[access_log]\npath = \"{}\"\n",
        dir.join("profiles.json").display(),
        dir.join("access.log").display()
    );
    let config = write_config(&dir, &proxy_config(listen, admin, &up, &extra));
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );
    let out = umbra(
        &[
            "load",
            "-p",
            "profiles.json",
            "-t",
            &format!("http://127.0.0.1:{listen}"),
            "--rate",
            "200",
            "--duration",
            "3s",
            "--quiet",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    std::thread::sleep(Duration::from_millis(1500));

    let stats: Value = serde_json::from_slice(&get(admin, "/api/stats").body).unwrap();
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("profiles.json")).unwrap()).unwrap();
    let ids: Vec<&str> = set["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let series = stats["series"].as_array().unwrap();
    let live: Vec<&Value> = series
        .iter()
        .filter(|s| s["role"] == "production")
        .collect();
    assert!(
        live.len() >= 2,
        "traffic of several profiles is told apart: {stats}"
    );
    for s in series {
        assert!(ids.contains(&s["profile"].as_str().unwrap()), "{s}");
    }
    let compared: u64 = stats["shadow_comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["compared"].as_u64().unwrap())
        .sum();
    assert!(
        compared > 500,
        "copies are paired with their live twins: {stats}"
    );

    // The access log is in the format `umbra learn` reads by default.
    let out = umbra(&["learn", "access.log", "-o", "relearned.json"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let lines = std::fs::read_to_string(dir.join("access.log"))
        .unwrap()
        .lines()
        .count();
    assert!(lines >= 550, "{lines} access log lines");
}

#[test]
fn upstream_cpu_and_memory_are_read_from_their_metrics_endpoints() {
    let dir = scratch("proxy-resources");
    let (prod, shadow) = (free_port(), free_port());
    let d = dir.display();
    let servers = format!(
        r#"
  server {{ listen 127.0.0.1:{prod}; location = /metrics {{ default_type text/plain; alias {d}/prod-metrics.txt; }}
           location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{shadow}; location = /metrics {{ default_type text/plain; alias {d}/node-metrics.txt; }}
           location / {{ return 200 "ok"; }} }}
"#
    );
    let write = |cpu: f64, idle: f64| {
        std::fs::write(
            dir.join("prod-metrics.txt"),
            format!("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\nprocess_resident_memory_bytes 2.5e+08\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("node-metrics.txt"),
            format!(
                "node_cpu_seconds_total{{cpu=\"0\",mode=\"idle\"}} {idle}\nnode_cpu_seconds_total{{cpu=\"0\",mode=\"user\"}} {cpu}\n\
                 node_memory_MemTotal_bytes 8e+09\nnode_memory_MemAvailable_bytes 6e+09\n"
            ),
        )
        .unwrap();
    };
    write(100.0, 5000.0);
    let _nginx = Nginx::with_servers(&dir, &servers, &[prod, shadow]);
    let (listen, admin) = (free_port(), free_port());
    let text = format!(
        r#"
[listen]
address = "127.0.0.1:{listen}"
[admin]
address = "127.0.0.1:{admin}"
[production]
servers = [{{ url = "http://127.0.0.1:{prod}", metrics = "http://127.0.0.1:{prod}/metrics" }}]
metrics_interval = "500ms"
[[shadow]]
name = "v2"
url = "http://127.0.0.1:{shadow}"
metrics = "http://127.0.0.1:{shadow}/metrics"
"#
    );
    let config = write_config(&dir, &text);
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );
    std::thread::sleep(Duration::from_millis(800));
    // Between two scrapes the counters rise by one CPU-second per second or so.
    let start = Instant::now();
    let mut cpu = 100.0;
    let mut seen = (0.0, 0.0);
    while start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        cpu += 0.25;
        write(cpu, 5000.0);
        seen = (
            metric(
                admin,
                &format!(
                    "umbra_upstream_cpu_cores{{role=\"production\",upstream=\"127.0.0.1:{prod}\"}}"
                ),
            ),
            metric(
                admin,
                "umbra_upstream_cpu_cores{role=\"shadow\",upstream=\"v2\"}",
            ),
        );
        if seen.0 > 0.0 && seen.1 > 0.0 {
            break;
        }
    }
    assert!(
        (0.3..3.0).contains(&seen.0) && (0.3..3.0).contains(&seen.1),
        "cpu cores read: {seen:?}"
    );
    assert_eq!(
        metric(
            admin,
            &format!(
                "umbra_upstream_memory_bytes{{role=\"production\",upstream=\"127.0.0.1:{prod}\"}}"
            )
        ),
        2.5e8
    );
    assert_eq!(
        metric(
            admin,
            "umbra_upstream_memory_bytes{role=\"shadow\",upstream=\"v2\"}"
        ),
        2e9
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let dir = scratch("proxy-example");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/umbra.toml");
    let out = umbra(&["check", "--config", example.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    // The commented-out rule block parses too, once uncommented.
    let text = std::fs::read_to_string(&example).unwrap();
    let rules: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [[mirror.rules]]"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| {
            format!(
                "{}\n",
                l.trim_start_matches("# ").split("   #").next().unwrap()
            )
        })
        .collect();
    let variant = text
        .replace("# [[mirror.rules]]", "")
        .replace("\n# targets = [\"v2\"]\n", "\n")
        + "\n"
        + &rules;
    std::fs::write(dir.join("variant.toml"), variant).unwrap();
    let out = umbra(&["check", "--config", "variant.toml"], &dir);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    assert!(
        support::text(&out.stdout).contains("per-route rules: 1"),
        "{}",
        support::text(&out.stdout)
    );
}

/// A server that keeps every request it receives, raw, and answers 200.
fn capture_server() -> (u16, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    use std::io::BufRead;
                    let mut head = Vec::new();
                    loop {
                        let mut line = Vec::new();
                        match reader.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        head.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if text.contains("transfer-encoding: chunked") {
                        // Kept de-chunked: chunk sizes, then the empty last chunk.
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).is_err() {
                                return;
                            }
                            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                                return;
                            };
                            let mut chunk = vec![0; size + 2];
                            if reader.read_exact(&mut chunk).is_err() {
                                return;
                            }
                            if size == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..size]);
                        }
                    }
                    head.extend_from_slice(&body);
                    keep.lock().unwrap().push(head);
                    if reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Splits a raw request into its lower-cased head and its body.
fn split_request(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    (
        String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase(),
        raw[at..].to_vec(),
    )
}

#[test]
fn copies_are_masked_and_production_gets_the_original_bytes() {
    use flate2::{Compression, read::GzDecoder, write::GzEncoder};
    let dir = scratch("proxy-masking");
    let (prod, prod_seen) = capture_server();
    let (shadow, shadow_seen) = capture_server();
    let shadow_url = format!("http://127.0.0.1:{shadow}");
    let (_proxy, listen, admin) = flag_proxy(&dir, prod, &["--shadow", &shadow_url]);
    let json = br#"{"user":{"email":"jane.doe@example.com","phone":"+14155552671"},"card":"4111 1111 1111 1111","note":"call me"}"#;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(json).unwrap();
    let compressed = gz.finish().unwrap();
    let mut conn = Conn::open(listen);
    let reply = conn.request(
        "POST",
        "/orders?email=jane.doe@example.com",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            (
                "Authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            ),
        ],
        &compressed,
    );
    assert_eq!(reply.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow_seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no copy reached the shadow");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Production: the very bytes sent.
    let prod_raw = prod_seen.lock().unwrap()[0].clone();
    let (prod_head, prod_body) = split_request(&prod_raw);
    assert_eq!(prod_body, compressed);
    assert!(
        prod_head.contains("post /orders?email=jane.doe@example.com http/1.1"),
        "{prod_head}"
    );
    assert!(
        prod_head.contains("authorization: bearer eyj"),
        "{prod_head}"
    );
    // Shadow: masked, still gzip, still JSON, with a Content-Length that fits.
    let shadow_raw = shadow_seen.lock().unwrap()[0].clone();
    let (head, body) = split_request(&shadow_raw);
    assert!(head.contains("x-umbra-shadow: 1"), "{head}");
    assert!(
        !head.contains("jane.doe@example.com"),
        "query string masked: {head}"
    );
    assert!(
        !head.contains("eyjhbgcioijiuzi1nij9"),
        "authorization masked: {head}"
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let mut decoded = String::new();
    GzDecoder::new(&body[..])
        .read_to_string(&mut decoded)
        .expect("the masked body is still gzip");
    let v: Value = serde_json::from_str(&decoded).expect("the masked body is still JSON");
    for secret in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "4111111111111111",
        "4155552671",
    ] {
        assert!(
            !decoded.contains(secret),
            "{secret} reached the shadow: {decoded}"
        );
    }
    assert_eq!(
        v["note"], "call me",
        "text without private data is left alone"
    );
    assert!(metric(admin, "umbra_mask_fields_total") >= 4.0);
}

/// Sends `wire` on a fresh connection and reads one reply.
fn exchange_raw(port: u16, wire: &[u8]) -> support::Reply {
    let mut conn = Conn::open(port);
    conn.send_raw(wire);
    conn.read_reply().expect("a reply")
}

#[test]
fn production_gets_the_clients_fields_less_hop_by_hop_ones_with_this_hops_forwarding() {
    let dir = scratch("proxy-fields");
    let (prod, seen) = capture_server();
    let (_proxy, listen, _) = flag_proxy(&dir, prod, &[]);
    let last = || {
        let raw = seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("production saw it");
        split_request(&raw)
    };
    // Kept as sent: names, order, values; hop-by-hop fields go; this hop is appended.
    let reply = exchange_raw(
        listen,
        b"GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: t/1\r\n\
          X-Forwarded-For: 203.0.113.7\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
          X-Case: Kept\r\nTE: trailers\r\n\r\n",
    );
    assert_eq!(reply.status, 200);
    let (head, _) = last();
    assert!(head.starts_with("get /a?b=1 http/1.1\r\n"), "{head}");
    assert!(
        head.contains("host: shop.example\r\nuser-agent: t/1\r\nx-case: kept\r\n"),
        "{head}"
    );
    assert!(
        head.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    for gone in ["connection:", "keep-alive:", "te:"] {
        assert!(!head.contains(gone), "{gone} reached production: {head}");
    }
    // A field the Connection field names goes too.
    exchange_raw(
        listen,
        b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-End: 1\r\n\r\n",
    );
    let (head, _) = last();
    assert!(
        !head.contains("x-hop") && head.contains("x-end: 1"),
        "{head}"
    );
    // Expect is answered here; the body arrives whole, with its length.
    let mut conn = Conn::open(listen);
    conn.send_raw(
        b"POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(conn.read_reply().expect("100 Continue").status, 100);
    conn.send_raw(b"hello");
    assert_eq!(conn.read_reply().expect("a reply").status, 200);
    let (head, body) = last();
    assert_eq!(body, b"hello");
    assert!(
        head.contains("content-length: 5\r\n") && !head.contains("expect"),
        "{head}"
    );
    // A chunked body goes chunked.
    exchange_raw(
        listen,
        b"POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let (head, body) = last();
    assert_eq!(body, b"abcde");
    assert_eq!(
        head.matches("transfer-encoding: chunked").count(),
        1,
        "{head}"
    );
    // No Host at all (HTTP/1.0): production's authority.
    exchange_raw(listen, b"GET /e HTTP/1.0\r\n\r\n");
    let (head, _) = last();
    assert!(
        head.contains(&format!("host: 127.0.0.1:{prod}\r\n")),
        "{head}"
    );

    // RFC 7239 and the upstream's own Host, from the config.
    let (listen2, admin2) = (free_port(), free_port());
    let config = write_config(
        &dir,
        &format!(
            "[listen]\naddress = \"127.0.0.1:{listen2}\"\nforwarded = \"both\"\n\
             [admin]\naddress = \"127.0.0.1:{admin2}\"\n\
             [production]\nservers = [{{ url = \"http://127.0.0.1:{prod}\" }}]\nhost = \"upstream\"\n"
        ),
    );
    let _proxy2 = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen2, admin2],
    );
    exchange_raw(
        listen2,
        b"GET /f HTTP/1.1\r\nHost: shop.example\r\nForwarded: for=203.0.113.7\r\n\r\n",
    );
    let (head, _) = last();
    assert!(
        head.contains(&format!("host: 127.0.0.1:{prod}\r\n")),
        "{head}"
    );
    assert_eq!(head.matches("host:").count(), 1, "{head}");
    assert!(
        head.contains(
            "forwarded: for=203.0.113.7, for=127.0.0.1;proto=http;host=\"shop.example\"\r\n"
        ),
        "{head}"
    );
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
}

/// A server whose answers come in pieces, with pauses between them:
/// `/chunked` chunked with a trailer, `/big` 1 MiB with a length.
fn piecemeal_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let pause = || std::thread::sleep(Duration::from_millis(40));
                if head.starts_with(b"GET /chunked ") {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n",
                    );
                    pause();
                    let _ = stream.write_all(b"6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n");
                } else {
                    let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
                    let _ = stream.write_all(&body[..100_000]);
                    pause();
                    let _ = stream.write_all(&body[100_000..]);
                }
                pause();
            });
        }
    });
    port
}

#[test]
fn responses_that_come_in_pieces_reach_the_client_whole() {
    let dir = scratch("proxy-pieces");
    let prod = piecemeal_server();
    let (_proxy, listen, _) = flag_proxy(&dir, prod, &[]);
    let whole = |path: &str| {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", listen)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        conn.read_to_end(&mut all).unwrap();
        split_request(&all)
    };
    // Chunked, in two pieces, with its trailer.
    let (head, body) = whole("/chunked");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
    );
    // 1 MiB with a length, the first 100 KB and then the rest.
    let (head, body) = whole("/big");
    assert!(head.contains("content-length: 1048576"), "{head}");
    assert_eq!(body.len(), 1 << 20);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn a_changed_profiles_file_is_picked_up_while_running() {
    let dir = scratch("proxy-profiles-reload");
    let up = Upstreams::start(&dir);
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/shop-access-1k.log");
    for (k, out) in [("3", "three.json"), ("6", "six.json")] {
        let o = umbra(&["learn", log.to_str().unwrap(), "--k", k, "-o", out], &dir);
        assert!(o.status.success(), "{}", support::text(&o.stderr));
    }
    std::fs::copy(dir.join("three.json"), dir.join("profiles.json")).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let extra = format!(
        "[profiles]\nfile = \"{}\"\nreload = \"100ms\"\n",
        dir.join("profiles.json").display()
    );
    let config = write_config(&dir, &proxy_config(listen, admin, &up, &extra));
    let _proxy = Background::start(
        &["proxy", "--config", config.to_str().unwrap()],
        &dir,
        &[listen, admin],
    );
    let ids = |file: &str| -> Vec<String> {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        v["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let seen_profiles = || -> Vec<String> {
        let stats: Value = serde_json::from_slice(&get(admin, "/api/stats").body).unwrap();
        stats["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["profile"].as_str().unwrap().to_string())
            .collect()
    };
    let send = |n: usize| {
        let mut conn = Conn::open(listen);
        for i in 0..n {
            assert_eq!(
                conn.request(
                    "GET",
                    &format!("/filter/b{i}"),
                    &[("User-Agent", "Mozilla/5.0")],
                    b""
                )
                .status,
                200
            );
        }
    };
    send(20);
    std::thread::sleep(Duration::from_millis(400));
    let first = seen_profiles();
    assert!(
        !first.is_empty() && first.iter().all(|p| ids("three.json").contains(p)),
        "{first:?}"
    );
    // Replace the file as `umbra learn` does (write, then rename) and keep sending.
    std::fs::copy(dir.join("six.json"), dir.join("next.json")).unwrap();
    std::fs::rename(dir.join("next.json"), dir.join("profiles.json")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    send(20);
    std::thread::sleep(Duration::from_millis(400));
    let six = ids("six.json");
    let now = seen_profiles();
    assert!(
        now.iter().any(|p| six.contains(p)),
        "after the change: {now:?}, six: {six:?}"
    );
}

#[test]
fn two_proxies_with_one_secret_mask_alike_and_another_secret_differs() {
    let dir = scratch("proxy-mask-secret");
    let (shadow, seen) = capture_server();
    let (prod, _) = capture_server();
    let mut proxies = Vec::new();
    let mut ports = Vec::new();
    for secret in [
        "first-secret-0123456789abcdef",
        "first-secret-0123456789abcdef",
        "other-secret-0123456789abcdef",
    ] {
        let listen = free_port();
        let args = [
            "proxy",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--production",
            &format!("http://127.0.0.1:{prod}"),
            "--shadow",
            &format!("http://127.0.0.1:{shadow}"),
        ]
        .map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        proxies.push(Background::start_with_env(
            &args,
            &[("UMBRA_MASK_SECRET", secret)],
            &dir,
            &[listen],
        ));
        ports.push(listen);
    }
    let body = br#"{"email":"jane.doe@example.com","card":"4111111111111111"}"#;
    let mut copies = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        for _ in 0..2 {
            let mut conn = Conn::open(*port);
            let reply = conn.request(
                "POST",
                "/signup",
                &[("Content-Type", "application/json")],
                body,
            );
            assert_eq!(reply.status, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() < 2 * (i + 1) {
            assert!(Instant::now() < deadline, "copies did not arrive");
            std::thread::sleep(Duration::from_millis(20));
        }
        let all = seen.lock().unwrap();
        let (_, a) = split_request(&all[2 * i]);
        let (_, b) = split_request(&all[2 * i + 1]);
        assert_eq!(a, b, "the same input gives the same tokens on one proxy");
        copies.push(String::from_utf8(a).unwrap());
    }
    assert!(
        !copies[0].contains("jane.doe@example.com") && !copies[0].contains("4111111111111111"),
        "{}",
        copies[0]
    );
    assert_eq!(
        copies[0], copies[1],
        "two proxies with the same secret mask alike"
    );
    assert_ne!(copies[0], copies[2], "another secret gives other tokens");
}
