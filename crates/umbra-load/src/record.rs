//! Latency and outcome recording.
//!
//! Recording sits on every request's path, so it must not become the bottleneck
//! of a 20k rps run: each worker thread records into its own shard (a mutex only
//! that thread takes, except once a second when the collector swaps the
//! per-second histogram out). Per-second histograms are reset after each second,
//! and only a summary of each second is kept, so memory does not grow with the
//! length of the run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds up to an hour, 3 significant digits.
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// A fresh histogram with the run's bounds (fixed size: auto-resize stays off).
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// DNS, TCP connect or TLS handshake failed.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection was reset or closed mid-request.
    Reset,
    /// Anything else (a malformed response, an HTTP/2 protocol error...).
    Other,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Error(ErrorKind),
}

impl Outcome {
    /// Transport errors and 5xx count as errors in series, progress and thresholds.
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Status(s) => s >= 500,
            Outcome::Error(_) => true,
        }
    }
}

/// Plain counters, summed across shards and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub dropped: u64,
    /// connect, timeout, reset, other.
    pub errors: [u64; 4],
    /// 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.dropped += o.dropped;
        for i in 0..4 {
            self.errors[i] += o.errors[i];
            self.status[i] += o.status[i];
        }
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
    }

    /// Transport errors plus 5xx responses.
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum::<u64>() + self.status[3]
    }
}

/// One profile's totals: counts and the latency histogram.
#[derive(Debug, Clone)]
pub struct ProfileTotals {
    pub counts: Counts,
    pub histogram: Histogram<u64>,
}

struct Shard {
    profiles: Vec<ProfileTotals>,
    second: Histogram<u64>,
    second_counts: Counts,
}

/// What the collector reads out of one second.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecondCounts {
    pub requests: u64,
    pub errors: u64,
    pub dropped: u64,
}

/// The run's recorder, shared by all workers.
pub struct Recorder {
    shards: Box<[Mutex<Shard>]>,
    /// Responses of any status so far (the unreachable-target check reads it).
    responses: AtomicU64,
    connect_errors: AtomicU64,
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
}

impl Recorder {
    /// `shards` should be about the number of threads that record.
    pub fn new(profiles: usize, shards: usize) -> Recorder {
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    profiles: (0..profiles)
                        .map(|_| ProfileTotals {
                            counts: Counts::default(),
                            histogram: new_histogram(),
                        })
                        .collect(),
                    second: new_histogram(),
                    second_counts: Counts::default(),
                })
            })
            .collect();
        Recorder {
            shards,
            responses: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
        }
    }

    fn shard(&self) -> MutexGuard<'_, Shard> {
        let i = SLOT.with(|s| *s) % self.shards.len();
        // A poisoned shard only means a recording thread panicked; its counts are still good.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one finished request. `latency` is `None` for errors whose timing
    /// says nothing about the target (connect failures, resets).
    pub fn record(
        &self,
        profile: usize,
        latency: Option<Duration>,
        outcome: Outcome,
        sent: u64,
        received: u64,
    ) {
        match outcome {
            Outcome::Status(_) => {
                self.responses.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error(ErrorKind::Connect) => {
                self.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error(_) => {}
        }
        let us = latency.map(|d| (d.as_micros() as u64).max(1));
        let mut s = self.shard();
        let sh = &mut *s;
        if let Some(p) = sh.profiles.get_mut(profile) {
            let c = &mut p.counts;
            c.requests += 1;
            c.bytes_sent += sent;
            c.bytes_received += received;
            match outcome {
                Outcome::Status(code) => {
                    if let Some(slot) = (code / 100)
                        .checked_sub(2)
                        .and_then(|i| c.status.get_mut(i as usize))
                    {
                        *slot += 1;
                    }
                }
                Outcome::Error(k) => c.errors[k as usize] += 1,
            }
            if let Some(us) = us {
                p.histogram.saturating_record(us);
            }
        }
        sh.second_counts.requests += 1;
        if outcome.is_error() {
            sh.second_counts.status[3] += 1;
        }
        if let Some(us) = us {
            sh.second.saturating_record(us);
        }
    }

    /// Counts an arrival that could not be started (the in-flight cap was reached).
    pub fn dropped(&self, profile: usize) {
        let mut s = self.shard();
        if let Some(p) = s.profiles.get_mut(profile) {
            p.counts.dropped += 1;
        }
        s.second_counts.dropped += 1;
    }

    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::Relaxed)
    }

    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    /// Moves the last second's latencies into `into` (which is reset first) and
    /// returns its counts; the shards start the next second empty.
    pub fn take_second(&self, into: &mut Histogram<u64>) -> SecondCounts {
        into.reset();
        let mut out = SecondCounts::default();
        for shard in self.shards.iter() {
            let mut s = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Same bounds everywhere, so adding cannot fail.
            let _ = into.add(&s.second);
            s.second.reset();
            out.requests += s.second_counts.requests;
            out.errors += s.second_counts.status[3];
            out.dropped += s.second_counts.dropped;
            s.second_counts = Counts::default();
        }
        out
    }

    /// The run's totals per profile, merged across shards.
    pub fn totals(&self) -> Vec<ProfileTotals> {
        let mut out: Vec<ProfileTotals> = Vec::new();
        for shard in self.shards.iter() {
            let s = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if out.is_empty() {
                out = s.profiles.clone();
                continue;
            }
            for (o, p) in out.iter_mut().zip(&s.profiles) {
                o.counts.add(&p.counts);
                let _ = o.histogram.add(&p.histogram);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_and_recycles_seconds() {
        let r = Recorder::new(2, 3);
        r.record(
            0,
            Some(Duration::from_millis(5)),
            Outcome::Status(200),
            10,
            20,
        );
        r.record(
            1,
            Some(Duration::from_millis(50)),
            Outcome::Status(503),
            10,
            20,
        );
        r.record(1, None, Outcome::Error(ErrorKind::Connect), 10, 0);
        r.dropped(0);
        let mut h = new_histogram();
        let s = r.take_second(&mut h);
        assert_eq!((s.requests, s.errors, s.dropped), (3, 2, 1));
        assert_eq!(h.len(), 2);
        let s = r.take_second(&mut h);
        assert_eq!(s.requests, 0);
        assert_eq!(h.len(), 0);
        let t = r.totals();
        assert_eq!(t[0].counts.requests, 1);
        assert_eq!(t[0].counts.dropped, 1);
        assert_eq!(t[1].counts.status, [0, 0, 0, 1]);
        assert_eq!(t[1].counts.errors, [1, 0, 0, 0]);
        assert_eq!(t[1].counts.failed(), 2);
        assert_eq!(r.connect_errors(), 1);
        assert_eq!(r.responses(), 2);
    }
}
