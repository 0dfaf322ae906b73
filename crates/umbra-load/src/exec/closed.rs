//! The closed model: `connections` workers, each with its own connection, each
//! sending its next request as soon as the last one finished. This measures peak
//! throughput; its latencies hide stalls (a stalled worker sends nothing), which
//! is why the open model is the default.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Ctx;
use crate::client::Sender;
use crate::record::ErrorKind;
use crate::synth::arrival_rng;

/// Pause after a failed connect, so an unreachable target is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

pub(super) async fn run(
    ctx: Arc<Ctx>,
    connections: usize,
    duration: Option<Duration>,
    requests: Option<u64>,
    start: Instant,
) {
    let next = Arc::new(AtomicU64::new(0));
    let end = duration.map(|d| start + d);
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let ctx = ctx.clone();
            let next = next.clone();
            tokio::spawn(async move { worker(ctx, next, end, requests).await })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

async fn worker(ctx: Arc<Ctx>, next: Arc<AtomicU64>, end: Option<Instant>, requests: Option<u64>) {
    let mut sender: Option<Sender> = None;
    loop {
        if ctx.stop.is_stopped() || end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let k = next.fetch_add(1, Ordering::Relaxed);
        if requests.is_some_and(|r| k >= r) {
            break;
        }
        let mut rng = arrival_rng(ctx.seed, k);
        let profile = ctx.synth.profile_of(ctx.seed, k);
        let req = ctx.synth.build(profile, &mut rng);
        let sent = req.wire_bytes;
        let since = Instant::now();
        let res = tokio::time::timeout(ctx.timeout, ctx.client.send_on(&mut sender, &req))
            .await
            .map_err(|_| ErrorKind::Timeout)
            .and_then(|r| r);
        if res.is_err() {
            // The connection's state is unknown after an error (a timeout leaves a
            // request half done): start a fresh one.
            sender = None;
        }
        let connect_failed = matches!(res, Err(ErrorKind::Connect));
        ctx.finish(profile, since, sent, res);
        if connect_failed {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}
