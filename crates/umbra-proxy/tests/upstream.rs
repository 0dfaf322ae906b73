//! The proxy against upstreams that misbehave: every failure is an answer that
//! names the upstream and what it did wrong, never a panic or a hang.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use umbra_proxy::Proxy;
use umbra_proxy::config::Config;

/// An upstream that answers every request on a connection with `answer`,
/// closing after each answer when `close` is set. Counts connections.
async fn upstream(answer: &'static [u8], close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Requests here have no body: a head is a request.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    if close {
                        // Let the proxy read the answer before the close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn proxy(servers: &[SocketAddr]) -> Proxy {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ url = \"http://{a}\" }}"))
        .collect();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[production]\nservers = [{}]\ntimeout = \"2s\"\n",
        list.join(", ")
    );
    Proxy::start(Config::parse("test.toml", &text).unwrap())
        .await
        .unwrap()
}

/// One request on its own connection; everything the proxy sent until it closed.
async fn fetch(proxy: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_upstream_answers_become_502s_that_say_what_was_wrong() {
    let cases: [(&[u8], &str); 5] = [
        (b"garbage\r\n\r\n", "malformed response head"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            "switched protocols",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Len",
            "the connection closed in the middle of the response head",
        ),
        (b"", "closed before any response"),
    ];
    for (answer, want) in cases {
        let (up, _) = upstream(answer, true).await;
        let p = proxy(&[up]).await;
        let reply = fetch(p.address, "/").await;
        assert!(reply.starts_with("HTTP/1.1 502"), "{want}: {reply}");
        assert!(
            reply.contains(&format!("production upstream {up} failed: ")) && reply.contains(want),
            "{want}: {reply}"
        );
        p.shutdown().await;
    }
}

#[tokio::test]
async fn a_body_cut_short_aborts_the_client_connection_and_the_proxy_carries_on() {
    let (short, _) = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", true).await;
    let p = proxy(&[short]).await;
    let reply = fetch(p.address, "/").await;
    // The head went out before the body failed: the client sees it cut short.
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello"), "{reply}");
    let again = fetch(p.address, "/").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    p.shutdown().await;
}

#[tokio::test]
async fn upstreams_that_close_idle_connections_cost_no_failures() {
    // Keep-alive answers, then the server closes: every pooled connection goes stale.
    let (up, accepted) = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true).await;
    let p = proxy(&[up]).await;
    for i in 0..20 {
        let reply = fetch(p.address, &format!("/{i}")).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok"),
            "{i}: {reply}"
        );
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert!(accepted.load(Ordering::SeqCst) >= 20);
    p.shutdown().await;
}

#[tokio::test]
async fn a_dead_server_is_skipped_for_one_that_answers() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (good, _) = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let p = proxy(&[dead, good]).await;
    for i in 0..10 {
        let reply = fetch(p.address, &format!("/{i}")).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{i}: {reply}");
    }
    p.shutdown().await;
}
