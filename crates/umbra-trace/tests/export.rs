//! Spans exported over OTLP/HTTP and decoded by the official protobuf
//! definitions (Python `opentelemetry-proto`, see `otlp_receiver.py`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use support::{Receiver, config, find};
use umbra_trace::{Kept, SpanKind, SpanRecord, SpanStatus, TraceContext, Tracer, keys};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[test]
fn live_and_shadow_spans_decode_with_parent_links_and_attributes() {
    let rx = Receiver::start(&[]);
    let cfg = config(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url()),
            ("OTEL_SERVICE_NAME", "umbra-proxy-test"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k%201"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
        "interval = \"50ms\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();

    // A request arrives with a W3C parent and a tracestate.
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(INCOMING));
    headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    let parent = TraceContext::from_headers(&headers).unwrap();
    let live = tracer.start(Some(&parent)).unwrap();
    assert!(
        live.is_sampled(),
        "parentbased_always_on follows the sampled parent"
    );
    live.inject(&mut headers);
    assert_eq!(
        headers["traceparent"].to_str().unwrap(),
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", live.span_id)
    );
    let shadow = live.linked_root();

    let mut l = SpanRecord::new(
        &live,
        "live GET /api/orders/{id}",
        SpanKind::Client,
        at(1_700_000_000_000),
    );
    l.duration = Duration::from_millis(12);
    l.http_status = Some(200);
    l.status = SpanStatus::Ok;
    l.profile = Some("p-1c9308fd".into());
    l.role = Some("live".into());
    l.set(keys::HTTP_ROUTE, "/api/orders/{id}")
        .set(keys::HTTP_METHOD, "GET")
        .set(keys::UPSTREAM, "127.0.0.1:8081")
        .set(keys::RESPONSE_BODY_SIZE, 5120u64);

    let mut s = SpanRecord::new(
        &shadow,
        "shadow GET /api/orders/{id}",
        SpanKind::Client,
        at(1_700_000_000_001),
    );
    s.duration = Duration::from_millis(40);
    s.http_status = Some(503);
    s.status = SpanStatus::Error("shadow answered 503".into());
    s.profile = Some("p-1c9308fd".into());
    s.role = Some("shadow".into());
    s.link_live(&live);
    s.set(keys::UPSTREAM, "127.0.0.1:9091")
        .set(keys::QUEUE_WAIT_US, 850u64);
    s.mask_counts([("email", 2), ("card", 1)]);

    tracer.record(l);
    tracer.record(s);
    assert!(tracer.flush(Duration::from_secs(10)));
    let stats = tracer.stats();
    assert_eq!(
        (stats.exported, stats.dropped()),
        (2, 0),
        "{stats:?} {:?}",
        tracer.last_error()
    );

    let spans = rx.spans();
    assert_eq!(spans.len(), 2);
    let ls = find(&spans, &live.span_id.to_string());
    assert_eq!(ls["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ls["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(ls["trace_state"], "congo=t61rcWkgMzE");
    assert_eq!(ls["name"], "live GET /api/orders/{id}");
    assert_eq!(ls["kind"], 3, "SPAN_KIND_CLIENT");
    // Sampled, and the parent is known to be remote (OTLP SpanFlags).
    assert_eq!(ls["flags"], 0x01 | 0x100 | 0x200);
    assert_eq!(ls["start_time_unix_nano"], 1_700_000_000_000_000_000u64);
    assert_eq!(ls["end_time_unix_nano"], 1_700_000_000_012_000_000u64);
    assert_eq!(ls["status"]["code"], 1, "STATUS_CODE_OK");
    let a = &ls["attributes"];
    assert_eq!(a["http.route"], "/api/orders/{id}");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["http.response.body.size"], 5120);
    assert_eq!(a["umbra.profile"], "p-1c9308fd");
    assert_eq!(a["umbra.role"], "live");
    assert_eq!(a["umbra.upstream"], "127.0.0.1:8081");
    assert_eq!(a["umbra.kept"], "sampled");
    assert!(ls["links"].as_array().unwrap().is_empty());
    assert_eq!(ls["resource"]["service.name"], "umbra-proxy-test");
    assert_eq!(ls["resource"]["deployment.environment"], "test");
    assert_eq!(ls["resource"]["telemetry.sdk.language"], "rust");
    assert_eq!(ls["scope"]["name"], "umbra");

    let ss = find(&spans, &shadow.span_id.to_string());
    assert_eq!(ss["trace_id"], shadow.trace_id.to_string());
    assert_ne!(
        ss["trace_id"], ls["trace_id"],
        "a shadow copy has a trace of its own"
    );
    assert_eq!(ss["parent_span_id"], "");
    assert_eq!(ss["status"]["code"], 2, "STATUS_CODE_ERROR");
    assert_eq!(ss["status"]["message"], "shadow answered 503");
    let links = ss["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(links[0]["span_id"], live.span_id.to_string());
    assert_eq!(links[0]["attributes"]["umbra.link"], "live");
    let a = &ss["attributes"];
    assert_eq!(a["umbra.role"], "shadow");
    assert_eq!(a["umbra.live.trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(a["http.response.status_code"], 503);
    assert_eq!(a["umbra.queue_wait_us"], 850);
    assert_eq!(a["umbra.mask.masked"], 3);
    assert_eq!(a["umbra.mask.rule.email"], 2);
    assert_eq!(a["umbra.mask.rule.card"], 1);
    assert_eq!(a["umbra.kept"], "error");

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "both spans in one batch");
    let h = &reqs[0]["headers"];
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-api-key"], "k 1");
    assert_eq!(reqs[0]["path"], "/v1/traces");
}

#[test]
fn tail_rules_keep_slow_and_failed_spans_of_unsampled_traces() {
    let rx = Receiver::start(&[]);
    let cfg = config(
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{}/v1/traces", rx.url()),
            ),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
        "slow = \"100ms\"\ninterval = \"50ms\"\nlink_template = \"http://jaeger:16686/trace/{trace_id}\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();
    let span = |name: &'static str, ms: u64, status: Option<u16>, error: bool| {
        let ctx = tracer.start(None).unwrap();
        assert!(!ctx.is_sampled());
        let mut s = SpanRecord::new(&ctx, name, SpanKind::Client, SystemTime::now());
        s.duration = Duration::from_millis(ms);
        s.http_status = status;
        s.profile = Some("checkout".into());
        s.role = Some("live".into());
        if error {
            s.status = SpanStatus::Error("connection reset".into());
        }
        assert_eq!(
            tracer.keeps(false, s.duration, status, error),
            name != "fast",
            "{name}"
        );
        s
    };
    let fast = span("fast", 5, Some(200), false);
    let slow = span("slow", 250, Some(200), false);
    let five_hundred = span("5xx", 5, Some(500), false);
    let reset = span("reset", 5, None, true);
    let slow_trace = slow.trace_id;
    for s in [fast, slow, five_hundred, reset] {
        tracer.record(s);
    }
    // A fast live span and its slow shadow travel together.
    let live_ctx = tracer.start(None).unwrap();
    let shadow_ctx = live_ctx.linked_root();
    let mut live = SpanRecord::new(&live_ctx, "pair-live", SpanKind::Client, SystemTime::now());
    live.duration = Duration::from_millis(3);
    let mut shadow = SpanRecord::new(
        &shadow_ctx,
        "pair-shadow",
        SpanKind::Client,
        SystemTime::now(),
    );
    shadow.duration = Duration::from_millis(400);
    shadow.link_live(&live_ctx);
    tracer.record_linked(vec![live, shadow]);
    // A fast copy that finishes after its live twin was kept as slow follows it.
    let late_ctx = tracer.start(None).unwrap();
    let mut late = SpanRecord::new(&late_ctx, "late-twin", SpanKind::Client, SystemTime::now());
    late.duration = Duration::from_millis(2);
    assert!(!tracer.keeps(false, late.duration, None, false));
    assert_eq!(
        tracer.keep_reason(false, Duration::from_millis(150), Some(503), false),
        Some(Kept::Error)
    );
    tracer.record_for_twin(late, Kept::Slow);
    assert!(tracer.flush(Duration::from_secs(10)));

    let spans = rx.spans();
    let mut kept: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["attributes"]["umbra.kept"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kept.sort();
    let want: Vec<(String, String)> = [
        ("5xx", "error"),
        ("late-twin", "slow"),
        ("pair-live", "slow"),
        ("pair-shadow", "slow"),
        ("reset", "error"),
        ("slow", "slow"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kept, want);
    for s in &spans {
        assert_eq!(
            s["flags"].as_u64().unwrap() & 1,
            0,
            "exported but not head-sampled"
        );
    }
    let stats = tracer.stats();
    assert_eq!((stats.recorded, stats.discarded, stats.exported), (7, 1, 6));

    // The slow request is its profile's newest exemplar, with a viewer link.
    let ex = tracer
        .exemplars()
        .unwrap()
        .latest("checkout", "live")
        .unwrap();
    assert_eq!(ex.trace_id, slow_trace);
    assert_eq!(ex.latency, Duration::from_millis(250));
    assert_eq!(
        tracer.trace_url(ex.trace_id, None).unwrap(),
        format!("http://jaeger:16686/trace/{slow_trace}")
    );
}

#[test]
fn gzip_bodies_and_partial_success_are_handled() {
    let rx = Receiver::start(&["--reject", "1"]);
    let cfg = config(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
        "interval = \"50ms\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();
    for _ in 0..3 {
        let ctx = tracer.start(None).unwrap();
        let mut s = SpanRecord::new(&ctx, "gz", SpanKind::Client, SystemTime::now());
        s.duration = Duration::from_millis(1);
        tracer.record(s);
    }
    assert!(tracer.flush(Duration::from_secs(10)));
    assert_eq!(rx.spans().len(), 3);
    let reqs = rx.requests();
    assert_eq!(reqs[0]["headers"]["content-encoding"], "gzip");
    let stats = tracer.stats();
    assert_eq!((stats.exported, stats.rejected), (2, 1), "{stats:?}");
}

#[test]
fn http_errors_from_the_collector_are_counted_as_failed() {
    let rx = Receiver::start(&["--status", "503"]);
    let cfg = config(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url())],
        "interval = \"50ms\"",
    );
    let tracer = Tracer::new(&cfg).unwrap();
    let ctx = tracer.start(None).unwrap();
    let mut s = SpanRecord::new(&ctx, "x", SpanKind::Client, SystemTime::now());
    s.duration = Duration::from_millis(1);
    tracer.record(s);
    assert!(tracer.flush(Duration::from_secs(10)));
    let stats = tracer.stats();
    assert_eq!(
        (stats.exported, stats.failed, stats.failed_requests),
        (0, 1, 1)
    );
    let err = tracer.last_error().unwrap();
    assert!(err.contains("HTTP 503"), "{err}");
}

#[test]
fn a_disabled_tracer_does_nothing() {
    let cfg = config(&[("OTEL_SDK_DISABLED", "true")], "");
    let tracer = Tracer::new(&cfg).unwrap();
    assert!(!tracer.is_enabled());
    assert!(tracer.start(None).is_none());
    let ctx = TraceContext::root(true);
    tracer.record(SpanRecord::new(
        &ctx,
        "x",
        SpanKind::Client,
        SystemTime::now(),
    ));
    assert_eq!(tracer.stats(), Default::default());
    assert!(!tracer.keeps(true, Duration::from_secs(5), Some(500), true));
    assert!(tracer.flush(Duration::from_millis(1)));
}
