//! Running a load test: the executors (open and closed model), the once-a-second
//! collector beside them, and the report at the end.

mod closed;
mod open;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use umbra_core::ProfileSet;

use crate::client::{Client, HttpOptions, Target};
use crate::error::Error;
use crate::plan::{Arrivals, RateCurve, Shard};
use crate::record::{ErrorKind, Outcome, Recorder, new_histogram};
use crate::report::{ProfileStats, REPORT_FORMAT, REPORT_VERSION, Report, SeriesPoint, Stats};
use crate::synth::Synth;
use crate::threshold::{self, Threshold};

/// How requests are started.
#[derive(Debug, Clone)]
pub enum Model {
    /// On a schedule, whatever the target does.
    Open {
        curve: RateCurve,
        arrivals: Arrivals,
        /// Only this shard's arrivals (`k mod count == index`).
        shard: Option<Shard>,
        /// Arrivals beyond this many outstanding requests are dropped (and counted).
        max_in_flight: usize,
        /// For the report: the planned rate after stress (the peak, for stages).
        rate: f64,
    },
    /// `connections` workers, each sending its next request when the last one finished.
    Closed { connections: usize },
}

/// Everything a run needs besides the profile set.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub model: Model,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub seed: u64,
    /// One fraction per profile of the set, summing to 1.
    pub mix: Vec<f64>,
    pub http: HttpOptions,
    pub stress: f64,
    pub thresholds: Vec<Threshold>,
    /// Send a fresh, sampled W3C `traceparent` with every request, so
    /// synthetic requests can be found in the tracing system.
    pub traceparent: bool,
}

/// A once-a-second view of the run, for a progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub elapsed: Duration,
    /// The planned end, when the plan is bounded by time.
    pub planned: Option<Duration>,
    pub requests: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Requests finished in the last second.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Ends a run early (Ctrl-C); the report covers what was sent.
#[derive(Debug, Clone)]
pub struct StopSignal {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl StopSignal {
    /// Asks the run to stop; the first reason given is the one reported.
    pub fn stop(&self, reason: &str) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    pub fn is_stopped(&self) -> bool {
        self.tx.borrow().is_some()
    }

    fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Resolves once `stop` has been called.
    pub async fn stopped(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }
}

/// Shared by every task of a run.
pub(crate) struct Ctx {
    pub client: Client,
    pub synth: Synth,
    pub recorder: Recorder,
    pub seed: u64,
    pub timeout: Duration,
    pub stop: StopSignal,
}

impl Ctx {
    /// Sends one request of `profile` built from `rng`, records it against `since`.
    pub async fn pooled_request(
        &self,
        profile: usize,
        mut rng: rand::rngs::SmallRng,
        since: Instant,
    ) {
        // Released early in a batch: count from the actual start, so the latency is
        // never shorter than the real service time.
        let since = since.min(Instant::now());
        let req = self.synth.build(profile, &mut rng);
        let sent = req.wire_bytes;
        let res = tokio::time::timeout(self.timeout, self.client.send_pooled(&req)).await;
        self.finish(
            profile,
            since,
            sent,
            res.map_err(|_| ErrorKind::Timeout).and_then(|r| r),
        );
    }

    pub fn finish(
        &self,
        profile: usize,
        since: Instant,
        sent: u64,
        res: Result<crate::client::Response, ErrorKind>,
    ) {
        let latency = Instant::now().saturating_duration_since(since);
        match res {
            Ok(r) => self.recorder.record(
                profile,
                Some(latency),
                Outcome::Status(r.status),
                sent,
                r.bytes,
            ),
            // A timeout's duration is a true (lower-bound) latency; a refused or reset
            // connection's is not.
            Err(ErrorKind::Timeout) => self.recorder.record(
                profile,
                Some(latency),
                Outcome::Error(ErrorKind::Timeout),
                sent,
                0,
            ),
            Err(k) => self
                .recorder
                .record(profile, None, Outcome::Error(k), sent, 0),
        }
    }
}

/// Runs a load test to its end (plan done, bounds reached, stopped, or the target
/// unreachable) and returns the report with thresholds evaluated.
pub async fn run(
    set: &ProfileSet,
    cfg: RunConfig,
    stop: StopSignal,
    mut progress: impl FnMut(&Progress) + Send,
) -> Result<Report, Error> {
    for t in &cfg.thresholds {
        t.check_profile(
            set.profiles
                .iter()
                .map(|p| (p.id.as_str(), p.name.as_str())),
        )?;
    }
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let client = Client::new(cfg.target.clone(), &cfg.http)?;
    let mut synth = Synth::new(set, &cfg.mix, &cfg.target.prefix);
    synth.set_traceparent(cfg.traceparent);
    let ctx = Arc::new(Ctx {
        synth,
        client,
        recorder: Recorder::new(set.profiles.len(), workers + 1),
        seed: cfg.seed,
        timeout: cfg.http.timeout,
        stop: stop.clone(),
    });
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let start = Instant::now();
    let planned = match &cfg.model {
        Model::Open { curve, .. } => match (curve.end(), cfg.duration) {
            (Some(e), Some(d)) => Some(d.min(Duration::from_secs_f64(e))),
            (e, d) => d.or(e.map(Duration::from_secs_f64)),
        },
        Model::Closed { .. } => cfg.duration,
    };

    let exec = {
        let ctx = ctx.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            match cfg.model {
                Model::Open {
                    curve,
                    arrivals,
                    shard,
                    max_in_flight,
                    ..
                } => {
                    let schedule = crate::plan::Schedule::new(
                        curve,
                        arrivals,
                        cfg.seed,
                        cfg.duration,
                        cfg.requests,
                    );
                    open::run(ctx, schedule, shard, max_in_flight, start).await;
                }
                Model::Closed { connections } => {
                    closed::run(ctx, connections, cfg.duration, cfg.requests, start).await;
                }
            }
        })
    };

    // The collector: one series point per second, from recycled histograms.
    let mut series = Vec::new();
    let mut second = new_histogram();
    let mut totals = Progress {
        planned,
        ..Progress::default()
    };
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(exec);
    let mut t = 0u64;
    loop {
        tokio::select! {
            _ = &mut exec => break,
            _ = tick.tick() => {
                let point = collect(&ctx.recorder, &mut second, t, 1.0, &mut totals);
                series.push(point);
                t += 1;
                totals.elapsed = start.elapsed();
                progress(&totals);
                // Nothing ever answered and connections are refused: stop rather
                // than spend the whole plan counting the same failure.
                if t >= 2 && ctx.recorder.responses() == 0 && ctx.recorder.connect_errors() > 0 {
                    let why = ctx.client.first_connect_error().unwrap_or_default();
                    stop.stop(&format!(
                        "target unreachable: every request so far failed to connect ({why})"
                    ));
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let tail = elapsed.as_secs_f64() - t as f64;
    if tail > 0.0 {
        let point = collect(&ctx.recorder, &mut second, t, tail, &mut totals);
        if point.requests > 0 || point.dropped > 0 {
            series.push(point);
        }
    }
    totals.elapsed = elapsed;
    progress(&totals);

    let duration_secs = elapsed.as_secs_f64();
    let per_profile = ctx.recorder.totals();
    let mut all_counts = crate::record::Counts::default();
    let mut all_hist = new_histogram();
    let mut profiles = Vec::with_capacity(per_profile.len());
    for ((p, share), tot) in set.profiles.iter().zip(&cfg.mix).zip(&per_profile) {
        all_counts.add(&tot.counts);
        let _ = all_hist.add(&tot.histogram);
        profiles.push(ProfileStats {
            id: p.id.clone(),
            name: p.name.clone(),
            planned_share: *share,
            stats: Stats::new(&tot.counts, &tot.histogram, duration_secs),
        });
    }
    let (model, arrivals, rate, connections, shard) = match &cfg.model {
        Model::Open {
            arrivals,
            shard,
            rate,
            ..
        } => (
            "open",
            Some(*arrivals),
            Some(*rate),
            cfg.http.connections as u64,
            *shard,
        ),
        Model::Closed { connections } => ("closed", None, None, *connections as u64, None),
    };
    let mut report = Report {
        format: REPORT_FORMAT.to_string(),
        version: REPORT_VERSION,
        target: cfg.target.url.clone(),
        model: model.to_string(),
        arrivals,
        rate,
        stress: cfg.stress,
        connections,
        shard,
        seed: cfg.seed,
        started_at,
        duration_secs,
        totals: Stats::new(&all_counts, &all_hist, duration_secs),
        profiles,
        series,
        thresholds: Vec::new(),
        passed: true,
        stopped: stop.reason(),
    };
    threshold::apply(&mut report, &cfg.thresholds)?;
    Ok(report)
}

fn collect(
    rec: &Recorder,
    hist: &mut hdrhistogram::Histogram<u64>,
    t: u64,
    secs: f64,
    totals: &mut Progress,
) -> SeriesPoint {
    let c = rec.take_second(hist);
    let ms = |q: f64| {
        if hist.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let point = SeriesPoint {
        t,
        requests: c.requests,
        errors: c.errors,
        dropped: c.dropped,
        rate: c.requests as f64 / secs.max(1e-3),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    };
    totals.requests += c.requests;
    totals.errors += c.errors;
    totals.dropped += c.dropped;
    totals.rate = point.rate;
    totals.p50_ms = point.p50_ms;
    totals.p99_ms = point.p99_ms;
    point
}
