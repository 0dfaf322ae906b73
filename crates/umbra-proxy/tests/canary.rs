//! The canary split on the real proxy: the share of live requests the canary
//! answers, stickiness per user, the shadow stage (copies only), and a dead
//! canary that users never notice.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_proxy::Proxy;
use umbra_proxy::canary::CanaryShare;
use umbra_proxy::config::Config;

#[derive(Default)]
struct Seen {
    live: AtomicUsize,
    copies: AtomicUsize,
}

/// An upstream that answers every request with its own name, counting live
/// requests and shadow copies (`x-umbra-shadow: 1`) apart.
async fn upstream(name: &'static str) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    if head.contains("\r\nx-umbra-shadow: 1\r\n") {
                        counts.copies.fetch_add(1, Ordering::SeqCst);
                    } else {
                        counts.live.fetch_add(1, Ordering::SeqCst);
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn proxy(production: SocketAddr, canary: SocketAddr, key: Option<&str>) -> Proxy {
    let key = key.map(|k| format!("key = \"{k}\"\n")).unwrap_or_default();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [production]\nservers = [{{ url = \"http://{production}\" }}]\ntimeout = \"2s\"\n\
         [canary]\nname = \"v2\"\nservers = [{{ url = \"http://{canary}\" }}]\n{key}"
    );
    Proxy::start(Config::parse("test.toml", &text).unwrap())
        .await
        .unwrap()
}

/// Sends `n` requests on one keep-alive connection, each with `header` when
/// given; returns the answers' bodies.
async fn send(proxy: SocketAddr, n: usize, header: Option<&str>) -> Vec<String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    let mut bodies = Vec::with_capacity(n);
    let mut buf = Vec::new();
    for _ in 0..n {
        s.write_all(format!("GET /x HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes())
            .await
            .unwrap();
        // Each answer: a head with content-length, then that many bytes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                if buf.len() >= end + 4 + len {
                    bodies.push(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no answer in time");
            let mut chunk = [0u8; 4096];
            let read = s.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the proxy closed the connection");
            buf.extend_from_slice(&chunk[..read]);
        }
    }
    bodies
}

fn live(percent: f64) -> CanaryShare {
    CanaryShare {
        mirror: false,
        percent,
    }
}

#[tokio::test]
async fn the_canary_answers_its_share_and_nothing_before_it_is_given_one() {
    let (prod, prod_seen) = upstream("production").await;
    let (canary, canary_seen) = upstream("canary").await;
    let p = proxy(prod, canary, None).await;
    let h = p.handle();

    let bodies = send(p.address, 500, None).await;
    assert!(bodies.iter().all(|b| b == "production"), "no share yet");
    assert_eq!(canary_seen.live.load(Ordering::SeqCst), 0);

    h.set_canary_share(live(5.0));
    let bodies = send(p.address, 4000, None).await;
    let on_canary = bodies.iter().filter(|b| *b == "canary").count();
    // The Weyl sequence holds the share to within a request or two.
    assert!(
        (195..=205).contains(&on_canary),
        "{on_canary} of 4000 at 5%"
    );
    assert_eq!(canary_seen.live.load(Ordering::SeqCst), on_canary);
    assert_eq!(prod_seen.copies.load(Ordering::SeqCst), 0);

    // Measured under their own role.
    let stats = h.stats();
    let canary_requests: u64 = stats["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["role"] == "canary")
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut measured = canary_requests;
    while measured < on_canary as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        measured = h.stats()["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["role"] == "canary")
            .map(|s| s["requests"].as_u64().unwrap())
            .sum();
    }
    assert_eq!(measured, on_canary as u64);
    assert!(
        h.metrics()
            .contains("umbra_canary_live_percent{canary=\"v2\"} 5")
    );

    h.set_canary_share(live(0.0));
    let bodies = send(p.address, 300, None).await;
    assert!(bodies.iter().all(|b| b == "production"), "rolled back");
    p.shutdown().await;
}

#[tokio::test]
async fn a_user_stays_on_one_side_and_keeps_the_canary_as_it_grows() {
    let (prod, _) = upstream("production").await;
    let (canary, _) = upstream("canary").await;
    let p = proxy(prod, canary, Some("cookie:session")).await;
    let h = p.handle();
    let mut on_canary_before = Vec::new();
    for percent in [5.0, 25.0, 50.0] {
        h.set_canary_share(live(percent));
        let mut on_canary = Vec::new();
        for user in 0..200 {
            let cookie = format!("Cookie: theme=dark; session=user-{user}");
            let bodies = send(p.address, 5, Some(&cookie)).await;
            assert!(
                bodies.iter().all(|b| *b == bodies[0]),
                "user {user} was split at {percent}%: {bodies:?}"
            );
            if bodies[0] == "canary" {
                on_canary.push(user);
            }
        }
        for u in &on_canary_before {
            assert!(
                on_canary.contains(u),
                "user {u} left the canary at {percent}%"
            );
        }
        let share = on_canary.len() as f64 / 2.0;
        assert!(
            (share - percent).abs() <= percent * 0.5 + 3.0,
            "{share}% of users at {percent}%"
        );
        on_canary_before = on_canary;
    }
    p.shutdown().await;
}

#[tokio::test]
async fn the_shadow_stage_sends_copies_and_no_user_to_the_canary() {
    let (prod, prod_seen) = upstream("production").await;
    let (canary, canary_seen) = upstream("canary").await;
    let p = proxy(prod, canary, None).await;
    p.handle().set_canary_share(CanaryShare {
        mirror: true,
        percent: 0.0,
    });
    let bodies = send(p.address, 300, None).await;
    assert!(bodies.iter().all(|b| b == "production"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while canary_seen.copies.load(Ordering::SeqCst) < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(canary_seen.copies.load(Ordering::SeqCst), 300);
    assert_eq!(canary_seen.live.load(Ordering::SeqCst), 0);
    assert_eq!(prod_seen.live.load(Ordering::SeqCst), 300);
    p.shutdown().await;
}

#[tokio::test]
async fn users_of_a_dead_canary_are_answered_by_production() {
    let (prod, prod_seen) = upstream("production").await;
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let p = proxy(prod, dead, None).await;
    p.handle().set_canary_share(live(50.0));
    let bodies = send(p.address, 200, None).await;
    assert_eq!(bodies.len(), 200);
    assert!(bodies.iter().all(|b| b == "production"), "{bodies:?}");
    assert_eq!(prod_seen.live.load(Ordering::SeqCst), 200);
    p.shutdown().await;
}
