//! The admin listener: `/metrics`, `/api/stats`, `/healthz`, `/readyz`, and
//! `/api/weights` to read or set production weights at run time. It has its
//! own port so that scrapes and operators never queue behind client traffic.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use umbra_proxy::ProxyHandle;

pub fn router(handle: ProxyHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/stats", get(stats))
        .route("/api/weights", get(weights).put(set_weights))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(handle)
}

pub async fn serve(listener: TcpListener, handle: ProxyHandle, mut stop: watch::Receiver<bool>) {
    let app = router(handle);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

async fn metrics(State(h): State<ProxyHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        h.metrics(),
    )
        .into_response()
}

async fn stats(State(h): State<ProxyHandle>) -> Json<serde_json::Value> {
    Json(h.stats())
}

async fn ready(State(h): State<ProxyHandle>) -> Response {
    if h.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy production server\n",
        )
            .into_response()
    }
}

async fn weights(State(h): State<ProxyHandle>) -> Json<serde_json::Value> {
    Json(h.stats()["production"].clone())
}

/// `PUT /api/weights` with `{"127.0.0.1:9000": 80, ...}`.
async fn set_weights(
    State(h): State<ProxyHandle>,
    Json(body): Json<BTreeMap<String, u32>>,
) -> Response {
    let unknown: Vec<&String> = body.keys().filter(|k| !h.set_weight(k, body[*k])).collect();
    if unknown.is_empty() {
        (StatusCode::OK, Json(json!({"applied": body}))).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no production server named {unknown:?}")})),
        )
            .into_response()
    }
}
