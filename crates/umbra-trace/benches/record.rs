//! What `Tracer::record` costs the proxy's recorder thread, with no tracer
//! and with a tracer whose collector is down (the worst case: the queue is
//! full, every span is dropped and counted).
//!
//!     cargo bench -p umbra-trace --bench record
//!
//! Each iteration clones a span of the proxy's shape (nine attributes), as
//! the recorder would build one, so the figures include that cost and the
//! differences between cases are what tracing adds.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use umbra_trace::{
    SpanKind, SpanRecord, SpanStatus, TraceConfig, TraceContext, TraceFileConfig, Tracer, keys,
};

fn span(sampled: bool) -> SpanRecord {
    let ctx = TraceContext::root(sampled).child();
    let route: Arc<str> = Arc::from("/api/orders/{id}");
    let mut s = SpanRecord::new(
        &ctx,
        "live GET /api/orders/{id}",
        SpanKind::Client,
        SystemTime::now(),
    );
    s.duration = Duration::from_millis(3);
    s.http_status = Some(200);
    s.status = SpanStatus::Ok;
    s.profile = Some(Arc::<str>::from("p-1c9308fd").into());
    s.role = Some("live".into());
    s.set(keys::HTTP_ROUTE, &route)
        .set(keys::HTTP_METHOD, "GET")
        .set(keys::UPSTREAM, Arc::<str>::from("10.0.0.7:8080"))
        .set(keys::RESPONSE_BODY_SIZE, 5120u64)
        .set(keys::REQUEST_BODY_SIZE, 0u64)
        .set(keys::QUEUE_WAIT_US, 0u64);
    s
}

fn dead_collector() -> Tracer {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vars = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "2048".to_string()),
    ];
    let cfg = TraceConfig::from_lookup(
        |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
        Some(&TraceFileConfig::default()),
    )
    .unwrap();
    Tracer::new(&cfg).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let sampled = span(true);
    let unsampled = span(false);

    let none = Tracer::disabled();
    g.bench_function("no tracer", |b| {
        b.iter(|| none.record(black_box(sampled.clone())))
    });

    let dead = dead_collector();
    g.bench_function("dead collector, sampled", |b| {
        b.iter(|| dead.record(black_box(sampled.clone())))
    });
    g.bench_function("dead collector, not sampled, fast", |b| {
        b.iter(|| dead.record(black_box(unsampled.clone())))
    });
    g.bench_function("start + inject", |b| {
        let parent = TraceContext::root(true);
        let mut h = http::HeaderMap::new();
        b.iter(|| {
            if let Some(ctx) = dead.start(Some(black_box(&parent))) {
                ctx.inject(&mut h);
            }
        })
    });
    g.finish();
    let s = dead.stats();
    eprintln!(
        "dead collector: {} recorded, {} queued, {} dropped (queue full), {} failed in export",
        s.recorded, s.queued, s.dropped_queue_full, s.failed
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
