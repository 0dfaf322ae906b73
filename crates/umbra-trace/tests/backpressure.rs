//! A collector that is down or slow never reaches the caller: `record`
//! returns at once whatever the collector does, spans beyond the queue are
//! dropped, and every span is accounted for. These tests assert the
//! accounting, not timings (timings are in `benches/record.rs`).

#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use support::{Receiver, config};
use umbra_trace::{SpanKind, SpanRecord, TraceContext, Tracer};

/// Far more spans than the queue holds, recorded as fast as the caller can.
const SPANS: u64 = 100_000;

fn flood(tracer: &Tracer) {
    let ctx = TraceContext::root(true);
    let mut span = SpanRecord::new(&ctx, "live GET /", SpanKind::Client, SystemTime::now());
    span.duration = Duration::from_millis(2);
    span.http_status = Some(200);
    span.set("umbra.upstream", "127.0.0.1:1");
    for _ in 0..SPANS {
        tracer.record(span.clone());
    }
}

#[test]
fn a_down_collector_drops_and_counts_without_touching_the_caller() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
        "interval = \"20ms\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();
    flood(&tracer);
    let s = tracer.stats();
    assert_eq!(s.recorded, SPANS);
    assert_eq!(s.queued + s.dropped_queue_full, SPANS, "{s:?}");
    assert!(
        s.dropped_queue_full > 0,
        "a queue of 16 cannot take {SPANS} spans at once: {s:?}"
    );

    assert!(tracer.flush(Duration::from_secs(30)));
    let s = tracer.stats();
    assert_eq!(s.exported, 0);
    assert_eq!(s.failed, s.queued, "{s:?}");
    assert_eq!(s.dropped(), SPANS);
    assert!(s.failed_requests > 0);
    let err = tracer.last_error().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn a_slow_collector_drops_and_counts_without_touching_the_caller() {
    // Answers each export only after a minute: every request times out.
    let rx = Receiver::start(&["--delay", "60"]);
    let cfg = config(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "32"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
        ],
        "interval = \"20ms\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();
    flood(&tracer);
    let s = tracer.stats();
    assert_eq!(s.recorded, SPANS);
    assert_eq!(s.queued + s.dropped_queue_full, SPANS, "{s:?}");
    assert!(s.dropped_queue_full > 0, "{s:?}");

    // A second flood while exports hang: still accepted or dropped, never waited on.
    flood(&tracer);
    let s = tracer.stats();
    assert_eq!(s.queued + s.dropped_queue_full, 2 * SPANS, "{s:?}");

    assert!(tracer.flush(Duration::from_secs(60)));
    let s = tracer.stats();
    assert_eq!(s.exported, 0);
    assert_eq!(s.failed, s.queued, "{s:?}");
    let err = tracer.last_error().unwrap();
    assert!(err.contains("no answer within 300ms"), "{err}");
}
