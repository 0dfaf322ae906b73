//! The admin listener: `/metrics`, `/api/stats`, `/healthz`, `/readyz`,
//! `/api/weights` to read or set production weights at run time (with the
//! weights loop's latest weights, probes and exporters in `/api/stats`), the
//! analysis: `/api/alerts` and `/api/analysis`, the replica advice:
//! `/api/capacity`, the canary: `/api/canary`; the dashboard at `/` (see
//! `dashboard.rs`). It has its own port so that
//! scrapes and operators never queue behind client traffic.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use umbra_analysis::alert::AlertState;
use umbra_control::canary::Action;
use umbra_proxy::ProxyHandle;

use crate::analysis::AnalysisHandle;
use crate::canary::CanaryControl;
use crate::control::ControlHandle;
use crate::dashboard;
use crate::scaling::ScalingHandle;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub proxy: ProxyHandle,
    /// `None` when `[analysis] enabled = false`.
    pub analysis: Option<AnalysisHandle>,
    /// `None` without a `[canary]`.
    pub canary: Option<Arc<CanaryControl>>,
    /// `None` without `[control.replicas]`.
    pub scaling: Option<ScalingHandle>,
    /// The weights loop (`[control.weights]`): probes, exporters, latest weights.
    pub control: Option<ControlHandle>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/stats", get(stats))
        .route("/api/weights", get(weights).put(set_weights))
        .route("/api/alerts", get(alerts))
        .route("/api/analysis", get(analysis))
        .route("/api/canary", get(canary_status))
        .route("/api/canary/{action}", post(canary_action))
        .route("/api/capacity", get(capacity))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(dashboard::page))
        .route("/dashboard", get(dashboard::page))
        .route(dashboard::SCRIPT_PATH, get(dashboard::script))
        .route(dashboard::STYLE_PATH, get(dashboard::style))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    let app = router(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}

/// Prometheus text 0.0.4, or OpenMetrics 1.0 (with exemplars) when the scraper
/// asks for it, as Prometheus does by default.
async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut text = if openmetrics {
        s.proxy.openmetrics()
    } else {
        s.proxy.metrics()
    };
    if let Some(a) = &s.analysis {
        text.push_str(&a.metrics(openmetrics));
    }
    if let Some(r) = &s.scaling {
        text.push_str(&r.metrics(openmetrics));
    }
    if let Some(c) = &s.control {
        text.push_str(&c.metrics(openmetrics));
    }
    let content_type = if openmetrics {
        text.push_str("# EOF\n");
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// The proxy's stats, with the weights loop's `weights`, `probes` and
/// `exporters` when `[control.weights]` is on.
async fn stats(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let mut stats = s.proxy.stats();
    if let (Some(c), Some(map)) = (&s.control, stats.as_object_mut())
        && let serde_json::Value::Object(control) = c.json()
    {
        map.extend(control);
    }
    Json(stats)
}

#[derive(serde::Deserialize)]
struct AlertsQuery {
    /// `firing`, `resolved` or `all` (the default).
    state: Option<String>,
}

/// `GET /api/alerts[?state=firing|resolved|all]`: firing alerts first, then resolved ones, newest first.
async fn alerts(State(s): State<AdminState>, Query(q): Query<AlertsQuery>) -> Response {
    let Some(a) = &s.analysis else {
        return disabled();
    };
    let state = match q.state.as_deref().map(str::trim) {
        None | Some("" | "all") => None,
        Some("firing") => Some(AlertState::Firing),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("state `{other}`: expected firing, resolved or all")}),
                ),
            )
                .into_response();
        }
    };
    // Each alert with links to its example traces when a viewer is configured.
    let alerts: Vec<serde_json::Value> = a
        .alerts(state)
        .into_iter()
        .map(|alert| {
            let links: Vec<String> = alert
                .verdict
                .trace_ids
                .iter()
                .filter_map(|t| s.proxy.trace_url(&t.to_string()))
                .collect();
            let mut v = serde_json::to_value(&alert).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("links".into(), json!(links));
            }
            v
        })
        .collect();
    Json(json!({ "alerts": alerts })).into_response()
}

/// `GET /api/analysis`: the latest windows per profile and role, and the sinks' counters.
async fn analysis(State(s): State<AdminState>) -> Response {
    match &s.analysis {
        Some(a) => Json(a.summary()).into_response(),
        None => disabled(),
    }
}

/// `GET /api/canary`: the stage, the share, the judgement so far and the latest decisions.
async fn canary_status(State(s): State<AdminState>) -> Response {
    match &s.canary {
        Some(c) => Json(c.status()).into_response(),
        None => no_canary(),
    }
}

#[derive(serde::Deserialize, Default)]
struct ActionBody {
    reason: Option<String>,
}

/// `POST /api/canary/{promote|rollback|pause|resume}`, optionally with
/// `{"reason": "..."}`: an operator's override. 409 when the canary's state
/// does not allow it (promoting a rolled-back canary).
async fn canary_action(
    State(s): State<AdminState>,
    Path(action): Path<String>,
    body: Option<Json<ActionBody>>,
) -> Response {
    let Some(c) = &s.canary else {
        return no_canary();
    };
    let action = match action.as_str() {
        "promote" => Action::Promote,
        "rollback" => Action::Rollback,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        other => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("canary action `{other}`: expected promote, rollback, pause or resume")})),
            )
                .into_response();
        }
    };
    let reason = body.and_then(|Json(b)| b.reason);
    let c = c.clone();
    // The decision writes to the store: off the async workers.
    let done = tokio::task::spawn_blocking(move || {
        c.act(action, reason.as_deref())
            .map(|d| (crate::canary::describe(c.name(), &d), c.status()))
    })
    .await;
    match done {
        Ok(Ok((decision, status))) => {
            eprintln!("umbra: {decision}");
            Json(json!({"decision": decision, "canary": status})).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("{e:#}")})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /api/capacity`: the demand forecast and the recommended replicas.
async fn capacity(State(s): State<AdminState>) -> Response {
    match &s.scaling {
        Some(r) => Json(r.api()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no forecast: umbra.toml has no [control.replicas] table"})),
        )
            .into_response(),
    }
}

fn no_canary() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no canary is configured (add a [canary] section)"})),
    )
        .into_response()
}

fn disabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "the analysis is off ([analysis] enabled = false)"})),
    )
        .into_response()
}

async fn ready(State(s): State<AdminState>) -> Response {
    let h = &s.proxy;
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

async fn weights(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(s.proxy.stats()["production"].clone())
}

/// `PUT /api/weights` with `{"127.0.0.1:9000": 80, ...}`.
async fn set_weights(
    State(s): State<AdminState>,
    Json(body): Json<BTreeMap<String, u32>>,
) -> Response {
    let h = &s.proxy;
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
