//! Active health checks of production servers: a GET of the configured path on
//! every server each interval; `fall` failures in a row take a server out,
//! `rise` successes bring it back (HAProxy's model). A check passes on any 2xx
//! or 3xx answered within the check timeout.

use std::sync::Arc;

use http::{Request, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

use crate::config::HealthCheck;
use crate::forward::{HttpClient, upstream_uri};
use crate::log;
use crate::pool::Pool;

/// Checks `pool` until `stop` is dropped (its generation was replaced).
pub async fn run(
    pool: Arc<Pool>,
    check: HealthCheck,
    client: HttpClient,
    mut stop: watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut probes = tokio::task::JoinSet::new();
        for e in &pool.endpoints {
            let (client, check, e) = (client.clone(), check.clone(), e.clone());
            probes.spawn(async move {
                let ok = probe(&client, &e, &check).await;
                let was = e.healthy();
                Pool::check_result(&e, ok, check.fall, check.rise);
                if was != e.healthy() {
                    let state = if e.healthy() {
                        "healthy again"
                    } else {
                        "unhealthy, taken out"
                    };
                    log::warn(format_args!(
                        "production {}: {state} (health check {})",
                        e.name, check.path
                    ));
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

async fn probe(client: &HttpClient, e: &crate::pool::Endpoint, check: &HealthCheck) -> bool {
    let Ok(path) = check.path.parse::<http::Uri>() else {
        return false;
    };
    let Ok(uri) = upstream_uri(&e.url, &path) else {
        return false;
    };
    let mut request = Request::new(Full::default());
    *request.uri_mut() = uri;
    if let Ok(v) = http::HeaderValue::from_str(e.url.authority()) {
        request.headers_mut().insert(header::HOST, v);
    }
    request.headers_mut().insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("umbra-health-check"),
    );
    let outcome = tokio::time::timeout(check.timeout, async {
        let response = client.request(request).await.ok()?;
        let status = response.status();
        // Read the body so the connection can be reused.
        response.into_body().collect().await.ok()?;
        Some(status.is_success() || status.is_redirection())
    })
    .await;
    matches!(outcome, Ok(Some(true)))
}
