//! The open model: requests start when the schedule says, whatever the target does.
//!
//! The scheduler never waits for a response. Each request's latency is measured
//! from its intended start, so a stalled target shows its stall in full (the
//! coordinated-omission correction wrk2 made). When `max_in_flight` requests are
//! outstanding, a due arrival is dropped and counted, never silently skipped.
//!
//! The schedule runs on its own OS thread rather than as a task: tokio's timer
//! wheel has a 1 ms tick, and since latency counts from the due time, every
//! request would carry up to a millisecond of the generator's own lateness. A
//! thread sleeping with `std::thread::sleep` wakes within tens of microseconds.
//!
//! Waking once per arrival costs two context switches plus a worker wake-up, and
//! at 20k rps on two cores that overhead alone made us miss the rate. So the
//! thread releases arrivals in small batches: it wakes `BATCH` before the next
//! arrival is due and releases every arrival due by then. A request may thus
//! start up to `BATCH` early, and its latency is counted from the earlier of its
//! due time and its actual start: never shorter than the real service time, and
//! including any lateness of ours.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Ctx;
use crate::plan::{Schedule, Shard};
use crate::synth::arrival_rng;

/// Longest single sleep, so a stop request is noticed during long gaps.
const MAX_NAP: Duration = Duration::from_millis(20);
/// How early an arrival may be released (see the module comment).
const BATCH: Duration = Duration::from_micros(250);

pub(super) async fn run(
    ctx: Arc<Ctx>,
    schedule: Schedule,
    shard: Option<Shard>,
    max_in_flight: usize,
    start: Instant,
) {
    let max = max_in_flight.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let handle = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread = {
        let ctx = ctx.clone();
        let permits = permits.clone();
        std::thread::Builder::new()
            .name("umbra-schedule".into())
            .spawn(move || {
                schedule_loop(&ctx, schedule, shard, &permits, &handle, start);
                let _ = done_tx.send(());
            })
    };
    if thread.is_err() {
        ctx.stop.stop("could not start the scheduler thread");
        return;
    }
    let _ = done_rx.await;
    // Every outstanding request ends within the timeout; wait for them all.
    let _ = permits.acquire_many(max as u32).await;
}

fn schedule_loop(
    ctx: &Arc<Ctx>,
    mut schedule: Schedule,
    shard: Option<Shard>,
    permits: &Arc<Semaphore>,
    handle: &tokio::runtime::Handle,
    start: Instant,
) {
    let start = start.into_std();
    while let Some((k, t)) = schedule.next_arrival() {
        if shard.is_some_and(|s| !s.owns(k)) {
            continue;
        }
        let due = start + Duration::from_secs_f64(t);
        let release = due.checked_sub(BATCH).unwrap_or(due);
        loop {
            if ctx.stop.is_stopped() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= release {
                break;
            }
            std::thread::sleep((release - now).min(MAX_NAP));
        }
        let rng = arrival_rng(ctx.seed, k);
        let profile = ctx.synth.profile_of(ctx.seed, k);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let due = Instant::from_std(due);
                handle.spawn(async move {
                    ctx.pooled_request(profile, rng, due).await;
                    drop(permit);
                });
            }
            Err(_) => ctx.recorder.dropped(profile),
        }
    }
}
