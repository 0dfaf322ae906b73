//! The client against scripted servers on 127.0.0.1: reuse, stale connections,
//! every way a response can end, bad responses, request bodies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

/// What the server does with one request on a connection.
#[derive(Clone)]
enum Step {
    /// Reads a request (head and Content-Length body), writes these bytes.
    Answer(&'static [u8]),
    /// Reads a request, then closes without answering.
    ReadAndClose,
    /// Reads only the head, answers, and closes (a server refusing a body).
    AnswerHeadOnly(&'static [u8]),
    /// Answers (keep-alive, as far as the client knows), then closes: an idle timeout.
    AnswerThenClose(&'static [u8]),
}

/// A server that plays one script per accepted connection and keeps what it read.
struct Script {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Script {
    async fn start(connections: Vec<Vec<Step>>) -> Script {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            let mut scripts: VecDeque<_> = connections.into();
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let steps = scripts.pop_front().unwrap_or_default();
                tokio::spawn(play(stream, steps, s.clone()));
            }
        });
        Script {
            addr,
            accepted,
            seen,
        }
    }

    fn target(&self) -> Target {
        Target::new(&format!("http://{}", self.addr).parse().expect("url"))
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn play(mut stream: TcpStream, steps: Vec<Step>, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    for step in steps {
        let head_only = matches!(step, Step::AnswerHeadOnly(_));
        let Some(request) = read_request(&mut stream, &mut buf, head_only).await else {
            return;
        };
        seen.lock().expect("lock").push(request);
        match step {
            Step::Answer(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Step::ReadAndClose => return,
            Step::AnswerThenClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Step::AnswerHeadOnly(bytes) => {
                let _ = stream.write_all(bytes).await;
                // Give the client time to read before the close (a reset would lose the answer).
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        }
    }
    // Script over: hold the connection open until the client goes.
    let mut rest = [0u8; 1024];
    while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
}

/// One request: the head, and a Content-Length or chunked body unless `head_only`.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Option<Vec<u8>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let chunked = head.contains("transfer-encoding: chunked");
    if head_only {
        return Some(buf.drain(..end).collect());
    }
    loop {
        let complete = if chunked {
            buf[end..].windows(5).any(|w| w == b"0\r\n\r\n")
        } else {
            buf.len() >= end + length
        };
        if complete {
            let total = if chunked {
                end + buf[end..].windows(5).position(|w| w == b"0\r\n\r\n")? + 5
            } else {
                end + length
            };
            return Some(buf.drain(..total).collect());
        }
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn client<B>() -> Client<B>
where
    B: http_body::Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Client::new(
        Duration::from_secs(2),
        crate::client(Duration::from_secs(2)),
    )
}

fn get(path: &str) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::default());
    *r.uri_mut() = path.parse().expect("uri");
    r
}

fn post(path: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::new(Bytes::from_static(body)));
    *r.method_mut() = Method::POST;
    *r.uri_mut() = path.parse().expect("uri");
    r.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    r
}

/// Sends and reads the whole body: (status, body) or the error's message.
async fn fetch<B>(c: &Client<B>, t: &Target, r: Request<B>) -> Result<(StatusCode, Vec<u8>), String>
where
    B: http_body::Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let response = c
        .send(t, r, None, Instant::now())
        .await
        .map_err(|e| e.error.to_string())?
        .into_response();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn a_keep_alive_connection_is_reused() {
    let server = Script::start(vec![vec![Step::Answer(OK); 3]]).await;
    let (c, t) = (client(), server.target());
    for _ in 0..3 {
        assert_eq!(
            fetch(&c, &t, get("/a")).await,
            Ok((StatusCode::OK, b"ok".to_vec()))
        );
        assert_eq!(t.idle.len(), 1);
    }
    assert_eq!(server.accepted(), 1);
    let seen = server.seen.lock().expect("lock");
    let first = String::from_utf8_lossy(&seen[0]);
    assert!(first.starts_with("GET /a HTTP/1.1\r\n"), "{first}");
    assert!(
        first.contains(&format!("host: {}\r\n", server.addr)),
        "{first}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced() {
    // The first connection answers once, then takes the next request and closes
    // without a word (the race with an idle timeout on the server).
    let server = Script::start(vec![
        vec![Step::Answer(OK), Step::ReadAndClose],
        vec![Step::Answer(OK), Step::Answer(OK)],
    ])
    .await;
    let (c, t) = (client(), server.target());
    assert!(fetch(&c, &t, get("/1")).await.is_ok());
    assert_eq!(
        fetch(&c, &t, get("/2")).await,
        Ok((StatusCode::OK, b"ok".to_vec())),
        "a bodiless request is sent again on a fresh connection"
    );
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.seen.lock().expect("lock").len(), 3);

    // A request with a body is not replayed: its body went with the first try.
    let server = Script::start(vec![vec![Step::Answer(OK), Step::ReadAndClose]]).await;
    let t = server.target();
    assert!(fetch(&c, &t, get("/1")).await.is_ok());
    let e = fetch(&c, &t, post("/2", b"data"))
        .await
        .expect_err("not replayed");
    assert_eq!(e, "the connection closed before any response");
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_server_is_not_used() {
    let server = Script::start(vec![
        vec![Step::AnswerThenClose(OK)],
        vec![Step::Answer(OK)],
    ])
    .await;
    let (c, t) = (client(), server.target());
    assert!(fetch(&c, &t, get("/1")).await.is_ok());
    assert_eq!(t.idle.len(), 1, "kept: the answer allowed reuse");
    // Let the reactor see the close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        t.idle.take(Instant::now()).is_none(),
        "a closed connection is not handed out"
    );
    assert_eq!(t.idle.len(), 0);
    assert_eq!(
        fetch(&c, &t, get("/2")).await,
        Ok((StatusCode::OK, b"ok".to_vec()))
    );
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_not_pooled() {
    let server = Script::start(vec![
        vec![Step::Answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        )],
        vec![Step::Answer(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )],
        vec![Step::Answer(OK)],
    ])
    .await;
    let (c, t) = (client(), server.target());
    assert!(fetch(&c, &t, get("/1")).await.is_ok());
    assert_eq!(t.idle.len(), 0);
    assert!(fetch(&c, &t, get("/2")).await.is_ok());
    assert_eq!(t.idle.len(), 0);
    assert!(fetch(&c, &t, get("/3")).await.is_ok());
    assert_eq!(t.idle.len(), 1);
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn bodies_end_by_length_chunks_or_close() {
    let server = Script::start(vec![
        vec![
            Step::Answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"),
            Step::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Step::Answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
        ],
    ])
    .await;
    let (c, t) = (client(), server.target());
    // Chunked, trailers included: the trailers come as their own frame.
    let response = c
        .send(&t, get("/chunked"), None, Instant::now())
        .await
        .map_err(|e| e.error)
        .expect("response");
    let collected = response.body.collect().await.expect("body");
    assert_eq!(
        collected.trailers().map(|t| t["x-t"].clone()),
        Some("1".parse().expect("v"))
    );
    assert_eq!(collected.to_bytes(), "hello world");
    assert_eq!(t.idle.len(), 1, "a whole chunked body frees the connection");
    assert_eq!(
        fetch(&c, &t, get("/none")).await,
        Ok((StatusCode::NO_CONTENT, vec![]))
    );
    assert_eq!(
        fetch(&c, &t, get("/interim")).await,
        Ok((StatusCode::OK, b"abc".to_vec()))
    );
    assert_eq!(server.accepted(), 1);
    // Until close: the body ends when the server closes.
    let closing = Script::start(vec![vec![Step::AnswerHeadOnly(
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    )]])
    .await;
    let ct = closing.target();
    assert_eq!(
        fetch(&c, &ct, get("/eof")).await,
        Ok((StatusCode::OK, b"until the end".to_vec()))
    );
    assert_eq!(ct.idle.len(), 0);
}

#[tokio::test]
async fn bad_responses_are_clear_errors() {
    let cases: [(&'static [u8], &str); 5] = [
        (b"garbage\r\n\r\n", "malformed response head"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            "closed after 5 of 10 body bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Le",
            "closed in the middle of the response head",
        ),
    ];
    let c = client();
    for (wire, want) in cases {
        let server = Script::start(vec![vec![Step::AnswerHeadOnly(wire)]]).await;
        let e = fetch(&c, &server.target(), get("/")).await.expect_err(want);
        assert!(e.contains(want), "{want}: {e}");
    }
    // Bytes past a Content-Length body: the answer is served, the connection is not kept.
    let server = Script::start(vec![vec![Step::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
    )]])
    .await;
    let t = server.target();
    assert_eq!(
        fetch(&c, &t, get("/")).await,
        Ok((StatusCode::OK, b"ok".to_vec()))
    );
    assert_eq!(t.idle.len(), 0);
}

#[tokio::test]
async fn an_unreachable_upstream_gives_the_request_back() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let t = Target::new(&format!("http://127.0.0.1:{port}").parse().expect("url"));
    let Err(e) = client()
        .send(&t, post("/x", b"body"), None, Instant::now())
        .await
    else {
        panic!("a closed port answered");
    };
    assert!(e.error.is_connect());
    assert!(e.error.to_string().contains("refused"), "{}", e.error);
    let back = e.unsent.expect("the request comes back");
    assert_eq!(back.uri(), "/x");
    assert_eq!(
        back.into_body().collect().await.expect("body").to_bytes(),
        "body"
    );
}

/// A request body fed through a channel, as a slow client sends it.
#[derive(Default)]
struct Streamed(Option<mpsc::Receiver<Bytes>>);

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }
}

#[tokio::test]
async fn streamed_bodies_go_chunked_and_an_early_answer_stops_them() {
    let server = Script::start(vec![vec![Step::Answer(OK)]]).await;
    let (c, t) = (client::<Streamed>(), server.target());
    let (tx, rx) = mpsc::channel(4);
    let mut r = Request::new(Streamed(Some(rx)));
    *r.method_mut() = Method::POST;
    *r.uri_mut() = "/up".parse().expect("uri");
    let feeder = tokio::spawn(async move {
        for piece in ["hello", " ", "world"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(Bytes::from(piece)).await.expect("send");
        }
    });
    assert_eq!(fetch(&c, &t, r).await, Ok((StatusCode::OK, b"ok".to_vec())));
    feeder.await.expect("feeder");
    let seen = server.seen.lock().expect("lock")[0].clone();
    let text = String::from_utf8(seen).expect("utf8");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"),
        "{text}"
    );
    assert_eq!(t.idle.len(), 1);

    // A server that refuses the body answers before reading it: the answer comes
    // through, the body stops, and the connection is not kept.
    let server = Script::start(vec![vec![Step::AnswerHeadOnly(
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )]])
    .await;
    let t = server.target();
    let (tx, rx) = mpsc::channel(1);
    let mut r = Request::new(Streamed(Some(rx)));
    *r.method_mut() = Method::PUT;
    *r.uri_mut() = "/big".parse().expect("uri");
    let feeder = tokio::spawn(async move {
        let piece = Bytes::from(vec![b'x'; 1 << 20]);
        // Far more than the socket buffers hold: without the early answer this would wait for ever.
        for _ in 0..256 {
            if tx.send(piece.clone()).await.is_err() {
                return;
            }
        }
    });
    let got = tokio::time::timeout(Duration::from_secs(10), fetch(&c, &t, r))
        .await
        .expect("no hang");
    assert_eq!(got, Ok((StatusCode::PAYLOAD_TOO_LARGE, vec![])));
    assert_eq!(t.idle.len(), 0);
    feeder.abort();
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_an_error() {
    let server = Script::start(vec![vec![Step::Answer(OK)]]).await;
    let (c, t) = (client(), server.target());
    let mut r = post("/x", b"abc");
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(10));
    let e = fetch(&c, &t, r).await.expect_err("short");
    assert_eq!(
        e,
        "the request body had 3 bytes where Content-Length said 10"
    );
}

fn batch(paths: &[&str]) -> Batch {
    let mut b = Batch::default();
    for p in paths {
        b.push(&Method::GET, p, &HeaderMap::new(), "shadow:80", b"");
    }
    b
}

async fn run_batch(t: &Target, b: &Batch, timeout: Duration) -> Vec<Result<Answer, String>> {
    let c = client::<Full<Bytes>>();
    let mut out: Vec<Option<Result<Answer, String>>> = vec![None; b.len()];
    let deadline = tokio::time::Instant::now() + timeout;
    c.pipeline(t, b, deadline, timeout, |i, r| {
        assert!(out[i].is_none(), "request {i} reported twice");
        out[i] = Some(r.map_err(|e| e.to_string()));
    })
    .await;
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("request {i} never reported")))
        .collect()
}

#[tokio::test]
async fn a_batch_goes_in_one_write_and_its_answers_come_in_order() {
    let server = Script::start(vec![vec![
        Step::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        Step::Answer(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nbb\r\n0\r\n\r\n",
        ),
        Step::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]])
    .await;
    let t = server.target();
    let got = run_batch(&t, &batch(&["/1", "/2", "/3"]), Duration::from_secs(5)).await;
    let statuses: Vec<_> = got
        .iter()
        .map(|r| r.as_ref().map(|a| (a.status, a.body_bytes)))
        .collect();
    assert_eq!(statuses, [Ok((200, 1)), Ok((404, 2)), Ok((204, 0))]);
    assert_eq!(server.accepted(), 1);
    assert_eq!(t.idle.len(), 1, "the connection is kept");
    let seen = server.seen.lock().expect("lock");
    let paths: Vec<_> = seen
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        paths,
        ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /3 HTTP/1.1"]
    );
}

#[tokio::test]
async fn what_a_closing_server_did_not_read_goes_again_on_a_new_connection() {
    let server = Script::start(vec![
        vec![
            Step::Answer(OK),
            Step::AnswerThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            ),
        ],
        vec![Step::Answer(OK), Step::Answer(OK)],
    ])
    .await;
    let t = server.target();
    let got = run_batch(
        &t,
        &batch(&["/1", "/2", "/3", "/4"]),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        got.iter().all(|r| matches!(r, Ok(a) if a.status == 200)),
        "{got:?}"
    );
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn a_batch_that_outlives_its_deadline_times_out_whole() {
    let server = Script::start(vec![vec![Step::Answer(OK)]]).await;
    let t = server.target();
    // The first is answered; the script then holds the connection open in silence.
    let got = run_batch(&t, &batch(&["/1", "/2", "/3"]), Duration::from_millis(300)).await;
    assert!(matches!(got[0], Ok(a) if a.status == 200), "{got:?}");
    for r in &got[1..] {
        assert_eq!(r.as_ref().expect_err("timed out"), "no answer within 300ms");
    }
    assert_eq!(t.idle.len(), 0);

    // A server that is not there fails every request of the batch.
    let dead = Target::new(&"http://127.0.0.1:1".parse().expect("url"));
    let got = run_batch(&dead, &batch(&["/1", "/2"]), Duration::from_secs(2)).await;
    assert!(got.iter().all(|r| r.is_err()), "{got:?}");
}
