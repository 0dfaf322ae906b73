//! Coordinated omission: against a server that stalls for 1 s once every 10 s, the
//! open model's p99 shows the stall while the closed model's hides it.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use umbra_core::ProfileSet;
use umbra_load::{Arrivals, HttpOptions, Model, RateCurve, Report, RunConfig, StopSignal, Target};

/// A server that holds every request arriving in [2 s, 3 s) of each 10 s period
/// (counted from its start) until the period's stall ends.
async fn stalling_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t0 = Arc::new(Instant::now());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let t0 = t0.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let t0 = t0.clone();
                    async move {
                        let in_period = t0.elapsed().as_secs_f64() % 10.0;
                        if (2.0..3.0).contains(&in_period) {
                            tokio::time::sleep(Duration::from_secs_f64(3.0 - in_period)).await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), task)
}

fn config(target: &str, model: Model, connections: usize) -> RunConfig {
    RunConfig {
        target: target.parse::<Target>().unwrap(),
        model,
        duration: Some(Duration::from_secs(6)),
        requests: None,
        seed: 1,
        mix: vec![0.5, 0.5],
        http: HttpOptions {
            http2: false,
            insecure: false,
            timeout: Duration::from_secs(10),
            connections,
        },
        stress: 1.0,
        thresholds: Vec::new(),
        traceparent: true,
    }
}

fn set() -> ProfileSet {
    ProfileSet::from_json("profiles.json", include_str!("data/profiles.json")).unwrap()
}

#[test]
fn open_model_shows_a_stall_that_closed_model_hides() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (open, closed): (Report, Report) = rt.block_on(async {
        let (url, server) = stalling_server().await;
        let set = set();
        let open = config(
            &url,
            Model::Open {
                curve: RateCurve::flat(200.0, None),
                arrivals: Arrivals::Constant,
                shard: None,
                max_in_flight: 10_000,
                rate: 200.0,
            },
            64,
        );
        let closed = config(&url, Model::Closed { connections: 4 }, 4);
        let (a, b) = tokio::join!(
            umbra_load::run(&set, open, StopSignal::default(), |_| {}),
            umbra_load::run(&set, closed, StopSignal::default(), |_| {}),
        );
        server.abort();
        (a.unwrap(), b.unwrap())
    });
    let (o, c) = (&open.totals, &closed.totals);
    eprintln!(
        "open: {} requests, p50 {} p99 {} max {}; closed: {} requests, p50 {} p99 {} max {}",
        o.requests,
        o.latency_ms.p50,
        o.latency_ms.p99,
        o.latency_ms.max,
        c.requests,
        c.latency_ms.p50,
        c.latency_ms.p99,
        c.latency_ms.max
    );
    // Both saw the stall...
    assert!(o.latency_ms.max >= 900.0, "open max {}", o.latency_ms.max);
    assert!(c.latency_ms.max >= 900.0, "closed max {}", c.latency_ms.max);
    // ...but only the open model's percentiles report it: 1/6 of its requests were
    // due during the stall, waiting up to 1 s; the closed workers sent 4 requests then.
    assert!(o.latency_ms.p99 >= 800.0, "open p99 {}", o.latency_ms.p99);
    assert!(c.latency_ms.p99 < 100.0, "closed p99 {}", c.latency_ms.p99);
    assert_eq!(o.requests, 1200);
    assert_eq!(o.dropped, 0);
    assert_eq!(o.errors.connect + o.errors.reset + o.errors.timeout, 0);
    assert_eq!(open.model, "open");
    assert_eq!(closed.model, "closed");
    // The series shows when it happened: a second around t = 2 has a p99 near 1 s.
    assert!(
        open.series.iter().any(|p| p.p99_ms >= 500.0),
        "{:?}",
        open.series
    );
}
