//! Requests from the load generator carry a valid W3C `traceparent`: a new,
//! sampled trace per request (checked with umbra-trace's parser, which
//! follows the W3C rules), and none with `traceparent: false`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use umbra_core::ProfileSet;
use umbra_load::{HttpOptions, Model, RunConfig, StopSignal, Target};

type Seen = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

/// A server that keeps every request's `traceparent` (or its absence).
async fn recording_server() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tp = req
                        .headers()
                        .get("traceparent")
                        .map(|v| v.as_bytes().to_vec());
                    keep.lock().unwrap().push(tp);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen, task)
}

fn config(target: &str, traceparent: bool) -> RunConfig {
    RunConfig {
        target: target.parse::<Target>().unwrap(),
        model: Model::Closed { connections: 2 },
        duration: None,
        requests: Some(200),
        seed: 7,
        mix: vec![0.5, 0.5],
        http: HttpOptions {
            http2: false,
            insecure: false,
            timeout: Duration::from_secs(10),
            connections: 2,
        },
        stress: 1.0,
        thresholds: Vec::new(),
        traceparent,
    }
}

fn run(traceparent: bool) -> Vec<Option<Vec<u8>>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (url, seen, server) = recording_server().await;
        let set =
            ProfileSet::from_json("profiles.json", include_str!("data/profiles.json")).unwrap();
        let report = umbra_load::run(
            &set,
            config(&url, traceparent),
            StopSignal::default(),
            |_| {},
        )
        .await
        .unwrap();
        server.abort();
        assert_eq!(report.totals.requests, 200);
        seen.lock().unwrap().clone()
    })
}

#[test]
fn every_request_starts_a_new_sampled_w3c_trace() {
    let first = run(true);
    let second = run(true);
    assert_eq!(first.len(), 200);
    let mut traces = HashSet::new();
    for tp in first.iter().chain(&second) {
        let tp = tp.as_ref().expect("a request without traceparent");
        let (trace, _span, flags) = umbra_trace::parse_traceparent(tp)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(tp)));
        assert!(flags.sampled(), "{}", String::from_utf8_lossy(tp));
        assert_eq!(&tp[..3], b"00-");
        // A new trace per request, and two runs with one seed share none.
        assert!(traces.insert(trace), "trace {trace} sent twice");
    }
    assert_eq!(traces.len(), 400);
}

#[test]
fn no_traceparent_when_turned_off() {
    let seen = run(false);
    assert_eq!(seen.len(), 200);
    assert!(seen.iter().all(Option::is_none));
}
