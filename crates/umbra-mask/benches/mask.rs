//! Masking throughput on JSON bodies (1 KiB, 64 KiB, 1 MiB) with the default
//! rules, in bytes per second on one core.
//!
//! `records`: API-like records where about one field in four holds something
//! private (e-mail, phone, card, IP) and the rest is ids, timestamps and prose, so
//! both the scan and the rewrite are measured. `clean`: the same shape with no
//! private values, which is the scan alone (the common case for most traffic).
//! `reference_serde_json_value` parses the same bodies with serde_json, as a
//! yardstick for the machine the numbers come from.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use umbra_mask::{MaskConfig, MaskRequest, Masker};

fn record(i: usize, private: bool) -> String {
    let mut s = String::new();
    let (email, phone, card, ip) = if private {
        (
            format!("user{i}@example.com"),
            format!("+1 415 555 {:04}", i % 10_000),
            "4111 1111 1111 1111".to_string(),
            format!("10.{}.{}.{}", i % 256, (i / 7) % 256, (i / 13) % 256),
        )
    } else {
        (
            format!("user{i} at example"),
            format!("ext {}", i % 10_000),
            "card on file".to_string(),
            format!("zone-{}", i % 256),
        )
    };
    write!(
        s,
        r#"{{"id":{id},"uuid":"6f1c2d3e-4b5a-4c6d-8e7f-{i:012}","created":"2024-05-01T10:20:{sec:02}Z","name":"Customer {i}","contact":{{"email":"{email}","phone":"{phone}"}},"payment":{{"card":"{card}","amount":{amount}.{cents:02},"currency":"EUR"}},"client":{{"ip":"{ip}","agent":"Mozilla/5.0 (X11; Linux x86_64)"}},"tags":["alpha","beta","gamma"],"note":"Please deliver between nine and five, ring twice and leave the parcel with the neighbour if nobody answers.","active":true,"score":{score}}}"#,
        id = 100_000 + i,
        sec = i % 60,
        amount = i % 997,
        cents = i % 100,
        score = (i * 37) % 1000,
    )
    .expect("write to string");
    s
}

fn body(size: usize, private_every: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < size.saturating_sub(400) || i == 0 {
        if i > 0 {
            s.push(',');
        }
        let private = private_every > 0 && i % private_every == 0;
        s.push_str(&record(i, private));
        i += 1;
    }
    s.push_str("],\"next\":null}");
    s.into_bytes()
}

fn request(body: &[u8]) -> MaskRequest {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("content-length", HeaderValue::from(body.len()));
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer abcdef0123456789"),
    );
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    MaskRequest {
        method: Method::POST,
        uri: Uri::from_static("/v1/orders?page=2"),
        headers: h,
        body: Bytes::copy_from_slice(body),
    }
}

fn bench(c: &mut Criterion) {
    let m =
        Masker::with_secret(&MaskConfig::default(), b"benchmark secret").expect("defaults compile");
    for (group, private_every) in [("json_records", 4), ("json_clean", 0)] {
        let mut g = c.benchmark_group(group);
        g.measurement_time(Duration::from_secs(4));
        for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
            let b = body(size, private_every);
            let req = request(&b);
            g.throughput(Throughput::Bytes(b.len() as u64));
            g.bench_function(label, |bench| {
                bench.iter_batched(
                    || req.clone(),
                    |mut r| m.mask(&mut r).map(|rep| rep.total()),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
    // The yardstick, measured in the same run: parsing the same bodies into a
    // `serde_json::Value`, which every JSON-handling proxy would at least do.
    let mut g = c.benchmark_group("reference_serde_json_value");
    g.measurement_time(Duration::from_secs(4));
    for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let b = body(size, 4);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(label, |bench| {
            bench.iter(|| serde_json::from_slice::<serde_json::Value>(&b).map(|v| v.is_object()))
        });
    }
    g.finish();
}

/// A bodiless GET with the headers a browser sends: the per-request cost the
/// proxy pays on most copies.
fn bench_headers(c: &mut Criterion) {
    let m =
        Masker::with_secret(&MaskConfig::default(), b"benchmark secret").expect("defaults compile");
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "referer",
            "https://shop.example.com/search?q=red+shoes&page=2",
        ),
        (
            "cookie",
            "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; consent=1",
        ),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
        ),
        ("x-request-id", "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.2"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("cache-control", "no-cache"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    let req = MaskRequest {
        method: Method::GET,
        uri: Uri::from_static(
            "/v1/products/8812/reviews?sort=recent&page=3&email=al%40example.com",
        ),
        headers: h,
        body: Bytes::new(),
    };
    c.bench_function("request/headers_and_query", |bench| {
        bench.iter_batched(
            || req.clone(),
            |mut r| m.mask(&mut r).map(|rep| rep.total()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench, bench_headers);
criterion_main!(benches);
