//! Alert sinks against a real HTTP server on 127.0.0.1: what each sends, and
//! that failures are counted, not fatal.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use umbra_analysis::alert::sink::{Dispatcher, DispatcherConfig, Sink, SinkConfig, SinkError};
use umbra_analysis::alert::{AlertConfig, AlertEvent, AlertManager, EventKind};
use umbra_analysis::baseline::Metric;
use umbra_analysis::verdict::{Basis, Evaluation, Status, Threshold, Verdict};
use umbra_analysis::window::{Role, TraceId};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A server recording every request's path and JSON body, answering `status`
/// after `delay`.
async fn server(status: u16, delay: Duration) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        s.lock().unwrap().push((path, json));
                        tokio::time::sleep(delay).await;
                        let mut r =
                            Response::new(Full::new(Bytes::from_static(b"nope, not today")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

fn evaluation(window: u64, regressed: bool) -> Evaluation {
    let verdict = regressed.then(|| Verdict {
        profile: "GET /cart/{id}".into(),
        role: Role::Shadow,
        metric: Metric::P99,
        basis: Basis::Production,
        window_start_ms: window,
        window_end_ms: window + 10_000,
        baseline: 120_000.0,
        observed: 170_000.0,
        change: 0.4167,
        threshold: Threshold::RiseRatio(0.2),
        effect_size: 0.39,
        p_value: 3e-12,
        detector: "mann-whitney p = 3e-12".into(),
        agreeing: 2,
        of: 3,
        requests: 1000,
        trace_ids: vec![TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736)],
    });
    Evaluation {
        profile: "GET /cart/{id}".into(),
        role: Role::Shadow,
        metric: Metric::P99,
        basis: Basis::Production,
        window_start_ms: window,
        window_end_ms: window + 10_000,
        status: if regressed {
            Status::Regressed
        } else {
            Status::Normal
        },
        observed: Some(170_000.0),
        baseline: Some(120_000.0),
        crossed: regressed,
        flagged: regressed,
        score: 0.99,
        agreeing: 2,
        verdict,
    }
}

/// Firing at 1.7e12, a repeat a minute later, resolved after three quiet windows.
fn lifecycle() -> Vec<Vec<AlertEvent>> {
    let mut m = AlertManager::new(AlertConfig::default());
    let t0 = 1_700_000_000_000u64;
    let mut batches = Vec::new();
    for i in 0..12u64 {
        let ev = m.observe(
            &[evaluation(t0 + i * 10_000, i < 8)],
            t0 + i * 10_000 + 12_000,
        );
        if !ev.is_empty() {
            batches.push(ev);
        }
    }
    let kinds: Vec<Vec<EventKind>> = batches
        .iter()
        .map(|b| b.iter().map(|e| e.kind).collect())
        .collect();
    assert_eq!(
        kinds,
        vec![
            vec![EventKind::Firing],
            vec![EventKind::Repeat],
            vec![EventKind::Resolved]
        ]
    );
    batches
}

async fn wait_for(seen: &Seen, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} requests arrived",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_sends_its_format() {
    let (url, seen) = server(200, Duration::ZERO).await;
    let config = DispatcherConfig {
        sinks: vec![
            SinkConfig::Log,
            SinkConfig::Webhook {
                url: format!("{url}/hook"),
                headers: BTreeMap::from([("authorization".into(), "Bearer t".into())]),
            },
            SinkConfig::Slack {
                url: format!("{url}/slack"),
            },
            SinkConfig::Alertmanager {
                url: url.clone(),
                labels: BTreeMap::from([
                    ("severity".into(), "page".into()),
                    ("team".into(), "shop".into()),
                ]),
                generator_url: Some("http://umbra.local/api/alerts/{fingerprint}".into()),
            },
        ],
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::spawn(config).unwrap();
    for batch in lifecycle() {
        assert!(d.send(batch));
    }
    // webhook ×2, slack ×2 (repeats are not news), alertmanager ×3.
    wait_for(&seen, 7).await;
    d.close().await;
    let seen = seen.lock().unwrap().clone();
    let at = |p: &str| -> Vec<Value> {
        seen.iter()
            .filter(|(path, _)| path == p)
            .map(|(_, v)| v.clone())
            .collect()
    };

    let hooks = at("/hook");
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["source"], "umbra");
    assert_eq!(hooks[0]["events"][0]["kind"], "firing");
    assert_eq!(hooks[0]["events"][0]["alert"]["profile"], "GET /cart/{id}");
    assert_eq!(
        hooks[0]["events"][0]["alert"]["verdict"]["trace_ids"][0],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hooks[1]["events"][0]["kind"], "resolved");

    let slack = at("/slack");
    assert_eq!(slack.len(), 2);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(
        text.contains("shadow p99 of profile GET /cart/{id} is +41.7% against production"),
        "{text}"
    );
    assert!(slack[1]["text"].as_str().unwrap().contains("resolved"));

    let am = at("/api/v2/alerts");
    assert_eq!(am.len(), 3);
    let first = &am[0][0];
    assert_eq!(first["labels"]["alertname"], "UmbraRegression");
    assert_eq!(first["labels"]["profile"], "GET /cart/{id}");
    assert_eq!(first["labels"]["role"], "shadow");
    assert_eq!(first["labels"]["metric"], "p99");
    assert_eq!(first["labels"]["severity"], "page");
    assert_eq!(first["labels"]["team"], "shop");
    assert_eq!(first["startsAt"], "2023-11-14T22:13:20.000Z");
    // Firing: endsAt four minutes after the send.
    assert_eq!(first["endsAt"], "2023-11-14T22:17:32.000Z");
    assert!(
        first["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("+41.7%")
    );
    assert_eq!(
        first["annotations"]["trace_ids"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let fp = first["annotations"]["fingerprint"].as_str().unwrap();
    assert_eq!(
        first["generatorURL"],
        format!("http://umbra.local/api/alerts/{fp}")
    );
    // The repeat carries the same labels; the resolution ends now.
    assert_eq!(am[1][0]["labels"], first["labels"]);
    let resolved = &am[2][0];
    assert_eq!(resolved["labels"], first["labels"]);
    assert_eq!(resolved["endsAt"], "2023-11-14T22:15:12.000Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_not_fatal() {
    let (err_url, err_seen) = server(500, Duration::ZERO).await;
    let (slow_url, _) = server(200, Duration::from_secs(30)).await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let config = DispatcherConfig {
        sinks: vec![
            SinkConfig::Webhook {
                url: format!("{err_url}/hook"),
                headers: BTreeMap::new(),
            },
            SinkConfig::Slack {
                url: format!("{slow_url}/slack"),
            },
            SinkConfig::Alertmanager {
                url: closed,
                labels: BTreeMap::new(),
                generator_url: None,
            },
        ],
        timeout_ms: 300,
        log_failures: false,
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::spawn(config).unwrap();
    let batches = lifecycle();
    d.send(batches[0].clone());
    wait_for(&err_seen, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = d.stats();
        if stats.iter().all(|s| s.failed == 1) {
            assert!(
                stats[0]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("answered 500: nope, not today"),
                "{stats:?}"
            );
            assert!(
                stats[1]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("no answer within 300 ms"),
                "{stats:?}"
            );
            assert!(
                stats[2]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("request failed"),
                "{stats:?}"
            );
            assert!(stats.iter().all(|s| s.sent == 0));
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts() {
    let (slow_url, _) = server(200, Duration::from_secs(30)).await;
    let config = DispatcherConfig {
        sinks: vec![SinkConfig::Webhook {
            url: slow_url,
            headers: BTreeMap::new(),
        }],
        queue: 1,
        timeout_ms: 60_000,
        log_failures: false,
        trace_link_template: None,
    };
    let d = Dispatcher::spawn(config).unwrap();
    let batch = lifecycle().remove(0);
    let mut refused = 0;
    for _ in 0..10 {
        if !d.send(batch.clone()) {
            refused += 1;
        }
    }
    assert!(refused >= 8, "{refused}");
    assert_eq!(d.stats()[0].dropped, refused);
}

/// With the tracer's link template, every sink carries viewer links to the
/// alert's example traces: Alertmanager as string annotations (the first link,
/// and all of them), Slack as clickable links, the webhook as a `links` array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_link_their_example_traces() {
    let (url, seen) = server(200, Duration::ZERO).await;
    let sinks = vec![
        SinkConfig::Webhook {
            url: format!("{url}/hook"),
            headers: BTreeMap::new(),
        },
        SinkConfig::Slack {
            url: format!("{url}/slack"),
        },
        SinkConfig::Alertmanager {
            url: url.clone(),
            labels: BTreeMap::new(),
            generator_url: None,
        },
    ];
    let d = Dispatcher::spawn(DispatcherConfig {
        sinks,
        trace_link_template: Some(
            "http://jaeger:16686/trace/{trace_id}?uiFind={span_id}&x=<1>|".into(),
        ),
        ..DispatcherConfig::default()
    })
    .unwrap();
    let (a, b) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00000000000000000000000000000abc",
    );
    let mut batches = lifecycle();
    for batch in &mut batches {
        for e in batch {
            e.alert.verdict.trace_ids = vec![a.parse().unwrap(), b.parse().unwrap()];
        }
    }
    for batch in batches {
        assert!(d.send(batch));
    }
    wait_for(&seen, 7).await;
    d.close().await;
    let seen = seen.lock().unwrap().clone();
    let at = |p: &str| -> Vec<Value> {
        seen.iter()
            .filter(|(path, _)| path == p)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let link = |id: &str| format!("http://jaeger:16686/trace/{id}?uiFind=&x=<1>|");

    let am = at("/api/v2/alerts");
    assert_eq!(am.len(), 3, "firing, repeat, resolved");
    for sent in &am {
        let ann = &sent[0]["annotations"];
        assert_eq!(ann["trace_url"], link(a), "{ann:#}");
        assert_eq!(
            ann["trace_urls"],
            format!("{} {}", link(a), link(b)),
            "{ann:#}"
        );
        assert_eq!(ann["trace_ids"], format!("{a},{b}"), "{ann:#}");
    }

    let hooks = at("/hook");
    assert_eq!(hooks.len(), 2);
    for h in &hooks {
        let alert = &h["events"][0]["alert"];
        assert_eq!(
            alert["links"],
            serde_json::json!([link(a), link(b)]),
            "{h:#}"
        );
        assert_eq!(alert["verdict"]["trace_ids"][0], a, "{h:#}");
    }

    // Slack: `<url|label>`, with Slack's control characters as entities and a
    // `|` (which would end the URL) percent-encoded; a resolution has no links.
    let slack = at("/slack");
    assert_eq!(slack.len(), 2);
    let text = slack[0]["text"].as_str().unwrap();
    let slack_url = |id: &str| format!("http://jaeger:16686/trace/{id}?uiFind=&amp;x=&lt;1&gt;%7C");
    assert!(
        text.contains(&format!(
            "\ntraces: <{}|4bf92f35> · <{}|00000000>",
            slack_url(a),
            slack_url(b)
        )),
        "{text}"
    );
    let resolved = slack[1]["text"].as_str().unwrap();
    assert!(
        resolved.contains("resolved") && !resolved.contains("traces:"),
        "{resolved}"
    );
}

/// Without a template nothing changes but an empty `links` for the webhook;
/// a template that names no trace is refused.
#[test]
fn no_template_no_links_and_a_template_must_name_the_trace() {
    let events = lifecycle().remove(0);
    let am = Sink::new(&SinkConfig::Alertmanager {
        url: "http://127.0.0.1:9093".into(),
        labels: BTreeMap::new(),
        generator_url: None,
    })
    .unwrap();
    let v = am.payload(&events).unwrap();
    let ann = v[0]["annotations"].as_object().unwrap();
    assert!(
        !ann.contains_key("trace_url") && !ann.contains_key("trace_urls"),
        "{ann:?}"
    );
    assert_eq!(ann["trace_ids"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let hook = Sink::new(&SinkConfig::Webhook {
        url: "http://127.0.0.1:1/hook".into(),
        headers: BTreeMap::new(),
    })
    .unwrap();
    assert_eq!(
        hook.payload(&events).unwrap()["events"][0]["alert"]["links"],
        serde_json::json!([])
    );
    let slack = Sink::new(&SinkConfig::Slack {
        url: "http://127.0.0.1:1/slack".into(),
    })
    .unwrap();
    let text = slack.payload(&events).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains("traces:"), "{text}");

    // A firing alert with no example traces has no link annotations either.
    let am = am
        .with_trace_links("http://jaeger/trace/{trace_id}")
        .unwrap();
    let mut quiet = events.clone();
    quiet[0].alert.verdict.trace_ids.clear();
    let ann = am.payload(&quiet).unwrap()[0]["annotations"].clone();
    assert!(ann.get("trace_url").is_none(), "{ann:#}");
    assert_eq!(
        am.payload(&events).unwrap()[0]["annotations"]["trace_url"],
        "http://jaeger/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let e = Dispatcher::spawn(DispatcherConfig {
        trace_link_template: Some("http://jaeger/trace/".into()),
        ..DispatcherConfig::default()
    })
    .unwrap_err();
    assert!(matches!(e, SinkError::InvalidLinkTemplate { .. }), "{e}");
    assert!(e.to_string().contains("no {trace_id}"), "{e}");
}
