//! `umbra capacity`: step synthetic load up until the SLO breaks, and find the knee.
//!
//! The search itself (which rate next, when to stop) is `umbra_control::capacity`;
//! each step is an ordinary open-model run of `umbra_load`, judged by the SLO as
//! `umbra load --threshold` judges a run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use umbra_control::capacity::{Capacity, CapacityPoint, CapacitySearch, SearchConfig, StepResult};
use umbra_core::ProfileSet;
use umbra_load::plan::{parse_mix, resolve_mix};
use umbra_load::{
    Arrivals, HttpOptions, Model, RateCurve, Report, RunConfig, StopSignal, Target, Threshold,
};

/// Exit code when no rate tried kept the SLO.
const NO_CAPACITY: u8 = 3;

/// Find the highest request rate a target serves within its SLO.
///
/// Sends synthetic traffic shaped like production (a profile set from
/// `umbra learn`, as `umbra load` does) in steps of rising rate: the start rate
/// times each of --steps (1, 1.5, 2, 3, 4, 6, 8, 12, 16, then doubling), each
/// step for --step-duration, with --cooldown between steps so a queue left by an
/// overloaded step drains before the next. Steps use the open model with
/// constant arrivals, so latency counts from when each request was due.
///
/// A step is GOOD when every SLO objective holds and the target served about
/// what it was offered (achieved ≥ --efficiency × offered). Once a step fails,
/// the search bisects between the last good and the first bad rate until they
/// are within --precision of each other. The capacity is the highest good rate:
/// the knee of the curve. If the start rate already fails, the search halves it
/// until a rate holds.
///
/// THE SLO is a comma-separated list of objectives, each as `umbra load
/// --threshold` takes it: `p99<300ms,errors<1%`, `p95<=1s,dropped<0.1%`,
/// `search:p99<200ms` for one profile (id or name). Metrics: min mean p50 p90
/// p95 p99 p999 max errors dropped rps.
///
/// OUTPUT: a line per step on standard error as it ends, then the curve as a
/// table (sorted by rate, the knee marked) and a one-line verdict on standard
/// output. --json writes `capacity_rps`, the capacity per instance, and the
/// curve (every step with its rates, p50, p99, errors, drops and why it failed).
/// `capacity_per_instance_rps` is what the forecaster's replica advice needs
/// (`capacity_per_instance` in `[control.replicas]`; with --store the proxy
/// reads it from the store when that key is not set).
///
/// EXIT CODES: 0 a capacity was found (or the SLO held up to --max-rate),
/// 1 error, 2 bad arguments, 3 the SLO failed at every rate tried.
///
/// Examples:
///
///   umbra capacity -p profiles.json -t http://staging:8080 --slo 'p99<300ms,errors<1%'
///
///   umbra capacity -p p.json -t http://10.0.0.7 --slo 'p95<200ms' --start 500 --max-rate 20000 --json cap.json
#[derive(Args)]
pub struct CapacityArgs {
    /// The profile set (written by `umbra learn`): the shape of every step's traffic.
    #[arg(short, long, value_name = "FILE")]
    profiles: PathBuf,
    /// Base URL of the target: http:// or https://, host, port, optional path prefix.
    #[arg(short, long, value_name = "URL", value_parser = |s: &str| s.parse::<Target>().map_err(|e| e.to_string()))]
    target: Target,
    /// The objectives, comma-separated, like 'p99<300ms,errors<1%'.
    #[arg(long, value_name = "OBJECTIVES", value_parser = parse_slo)]
    slo: Slo,
    /// Rate of the first step, requests per second. Default: the set's
    /// baseline_rps × stress.
    #[arg(long, value_name = "RPS")]
    start: Option<f64>,
    /// Multipliers on the start rate for the ramp, increasing; after the last,
    /// each step doubles.
    #[arg(long, value_name = "LIST", default_value = "1,1.5,2,3,4,6,8,12,16", value_parser = parse_steps)]
    steps: Steps,
    /// Never offer more than this rate; if the SLO still holds there, the
    /// capacity is reported as at least this.
    #[arg(long, value_name = "RPS")]
    max_rate: Option<f64>,
    /// How long each step sends.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    step_duration: Duration,
    /// Pause between steps, so the target drains what an overloaded step queued.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::duration::parse)]
    cooldown: Duration,
    /// Bisection stops when the first bad rate is within this of the last good
    /// one: `5%` or `0.05`.
    #[arg(long, value_name = "SHARE", default_value = "5%", value_parser = parse_share)]
    precision: f64,
    /// A step is good only if the target served at least this share of the
    /// offered rate: `95%` or `0.95`.
    #[arg(long, value_name = "SHARE", default_value = "95%", value_parser = parse_share)]
    efficiency: f64,
    /// Most steps in all; the search reports what it has when they run out.
    #[arg(long, value_name = "N", default_value_t = 30)]
    max_steps: usize,
    /// Instances behind the target: the per-instance capacity is the capacity
    /// divided by this.
    #[arg(long, value_name = "N", default_value_t = 1)]
    instances: u32,
    /// Per-profile fractions, as `umbra load --mix`.
    #[arg(long, value_name = "MIX")]
    mix: Option<String>,
    /// At most this many keep-alive connections (a due request that finds them
    /// all busy waits, its latency counting from when it was due).
    #[arg(short, long, value_name = "N", default_value_t = 64)]
    connections: usize,
    /// At most this many requests outstanding; arrivals beyond are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    max_in_flight: usize,
    /// Per-request timeout: connect, send and the whole response.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    timeout: Duration,
    /// HTTP/2 (prior knowledge on http://, ALPN on https://).
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate (self-signed test targets).
    #[arg(long)]
    insecure: bool,
    /// Random seed for the requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the generator. Default: the number of cores.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Write the result and the curve as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also save the result in this store (the proxy's `[store] path`):
    /// `umbra report` shows the curve, and `[control.replicas]` takes its
    /// capacity per instance from the newest one when its key is not set.
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    /// No line per step on standard error.
    #[arg(short, long)]
    quiet: bool,
}

/// The parsed --slo: the text and its objectives.
#[derive(Debug, Clone)]
struct Slo {
    objectives: Vec<Threshold>,
}

/// Splits the SLO on commas and parses each objective; an error names the
/// objective's number and column in the whole text.
fn parse_slo(text: &str) -> Result<Slo, String> {
    let mut objectives = Vec::new();
    let mut column = 1;
    for (i, item) in text.split(',').enumerate() {
        let at = format!("objective {} (column {column}) of {text:?}", i + 1);
        column += item.chars().count() + 1;
        if item.trim().is_empty() {
            return Err(format!(
                "{at} is empty; write objectives like 'p99<300ms,errors<1%'"
            ));
        }
        let t = item
            .parse::<Threshold>()
            .map_err(|e| format!("{at}: {e}"))?;
        objectives.push(t);
    }
    Ok(Slo { objectives })
}

/// The ramp's multipliers (a newtype: clap reads a bare `Vec` as a repeated option).
#[derive(Debug, Clone)]
struct Steps(Vec<f64>);

fn parse_steps(text: &str) -> Result<Steps, String> {
    let mut out: Vec<f64> = Vec::new();
    for (i, item) in text.split(',').enumerate() {
        let x: f64 = item
            .trim()
            .parse()
            .map_err(|_| format!("step {} of {text:?}: {item:?} is not a number", i + 1))?;
        if !(x.is_finite() && x > 0.0) || out.last().is_some_and(|p| x <= *p) {
            return Err(format!(
                "step {} of {text:?}: {item:?}: steps must be numbers above 0, each above the last (like 1,1.5,2,3)",
                i + 1
            ));
        }
        out.push(x);
    }
    Ok(Steps(out))
}

/// `5%` or `0.05`, in (0, 1].
fn parse_share(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let x = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{text:?} is not a share; write it like 5% or 0.05"))?;
    if !(x > 0.0 && x <= 1.0) {
        return Err(format!(
            "{text:?}: expected a share above 0 and at most 100%"
        ));
    }
    Ok(x)
}

/// What `--json` writes.
#[derive(Serialize)]
struct CapacityReport<'a> {
    format: &'static str,
    version: u32,
    target: &'a str,
    profiles: String,
    slo: Vec<&'a str>,
    step_duration_secs: f64,
    precision: f64,
    efficiency: f64,
    /// The highest good rate; null when none was good.
    capacity_rps: Option<f64>,
    instances: u32,
    capacity_per_instance_rps: Option<f64>,
    first_bad_rps: Option<f64>,
    converged: bool,
    summary: &'a str,
    /// Steps sorted by offered rate; `step` is the order they ran in.
    curve: Vec<CurvePoint<'a>>,
}

#[derive(Serialize)]
struct CurvePoint<'a> {
    step: usize,
    #[serde(flatten)]
    point: &'a CapacityPoint,
}

pub fn run(a: CapacityArgs) -> anyhow::Result<ExitCode> {
    let set = ProfileSet::load(&a.profiles)?;
    let start = match a.start {
        Some(r) if r.is_finite() && r > 0.0 => r,
        Some(r) => bail!("--start {r}: expected a rate above 0 requests per second"),
        None => {
            let r = set.baseline_rps * set.stress;
            if !(r.is_finite() && r > 0.0) {
                bail!(
                    "{}: the set's baseline rate × stress is {r} requests per second; give --start",
                    a.profiles.display()
                );
            }
            r
        }
    };
    let overrides = match &a.mix {
        Some(m) => parse_mix(m)?,
        None => Vec::new(),
    };
    let mix = resolve_mix(&set, &overrides)?;
    if let Some(m) = a.max_rate
        && !(m.is_finite() && m >= start)
    {
        bail!("--max-rate {m}: expected a rate at or above the start rate ({start:.1} req/s)");
    }
    if a.max_steps < 2 {
        bail!("--max-steps {}: expected at least 2", a.max_steps);
    }
    let config = SearchConfig {
        start_rps: start,
        multipliers: a.steps.0.clone(),
        max_rps: a.max_rate,
        precision: a.precision,
        efficiency: a.efficiency,
        max_steps: a.max_steps,
    };
    let mut search = CapacitySearch::new(config).context("the capacity search")?;
    if a.instances == 0 {
        bail!("--instances 0: expected at least 1");
    }
    for t in &a.slo.objectives {
        t.check_profile(
            set.profiles
                .iter()
                .map(|p| (p.id.as_str(), p.name.as_str())),
        )?;
    }

    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Ctrl-C stops the running step and the search; what ran is reported.
    let current: Arc<Mutex<Option<StopSignal>>> = Arc::default();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (current, interrupted) = (current.clone(), interrupted.clone());
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Ok(c) = current.lock()
                    && let Some(s) = c.as_ref()
                {
                    s.stop("interrupted");
                }
            }
        });
    }
    let show = !a.quiet;
    let mut step = 0;
    while let Some(rate) = search.next_rate() {
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if step > 0 {
            std::thread::sleep(a.cooldown);
        }
        let stop = StopSignal::default();
        if let Ok(mut c) = current.lock() {
            *c = Some(stop.clone());
        }
        let cfg = RunConfig {
            target: a.target.clone(),
            model: Model::Open {
                curve: RateCurve::flat(rate, Some(a.step_duration)),
                arrivals: Arrivals::Constant,
                shard: None,
                max_in_flight: a.max_in_flight,
                rate,
            },
            duration: Some(a.step_duration),
            requests: None,
            seed: a.seed,
            mix: mix.clone(),
            http: HttpOptions {
                http2: a.http2,
                insecure: a.insecure,
                timeout: a.timeout,
                connections: a.connections.max(1),
            },
            stress: 1.0,
            thresholds: a.slo.objectives.clone(),
            traceparent: true,
        };
        let report = runtime
            .block_on(umbra_load::run(&set, cfg, stop, |_| {}))
            .with_context(|| format!("the step at {rate:.1} req/s"))?;
        if let Some(why) = &report.stopped {
            if why.contains("unreachable") {
                bail!("{}: {why}", report.target);
            }
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("interrupted: the step at {rate:.1} req/s is left out");
                break;
            }
        }
        step += 1;
        let point = search.record(step_result(rate, &report))?;
        if show {
            eprintln!("{}", step_line(step, point));
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(100));

    let result = search.result();
    print!("{}", render(&result, &a));
    if let Some(path) = &a.json {
        let text =
            serde_json::to_string_pretty(&report(&result, &a)).context("encoding the result")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
        eprintln!("result written to {}", path.display());
    }
    if let Some(path) = &a.store {
        let store = umbra_store::Store::open(path)?;
        let body = serde_json::to_value(report(&result, &a)).context("encoding the result")?;
        store.add_capacity(&umbra_store::CapacityRow {
            target: a.target.url.clone(),
            measured_ms: chrono::Utc::now().timestamp_millis().max(0) as u64,
            // Per instance: what the replica advice divides by.
            capacity_rps: result.capacity_rps.map(|c| c / a.instances as f64),
            body,
        })?;
        eprintln!("result saved in {} for {}", path.display(), a.target.url);
    }
    Ok(if result.capacity_rps.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NO_CAPACITY)
    })
}

fn step_result(rate: f64, r: &Report) -> StepResult {
    let t = &r.totals;
    StepResult {
        offered_rps: rate,
        achieved_rps: t.achieved_rps,
        p50_ms: t.latency_ms.p50,
        p99_ms: t.latency_ms.p99,
        error_percent: t.error_percent(),
        dropped_percent: t.dropped_percent(),
        slo_passed: r.passed,
        slo_failures: r
            .thresholds
            .iter()
            .filter(|t| !t.passed)
            .map(|t| format!("{} (observed {:.2})", t.expr, t.observed))
            .collect(),
    }
}

fn step_line(n: usize, p: &CapacityPoint) -> String {
    let s = &p.step;
    format!(
        "step {n}: {:.1} req/s offered, {:.1} served, p50 {:.1} ms, p99 {:.1} ms, errors {:.2}% · {}",
        s.offered_rps,
        s.achieved_rps,
        s.p50_ms,
        s.p99_ms,
        s.error_percent,
        if p.ok {
            "ok".to_string()
        } else {
            format!("FAIL: {}", p.why)
        }
    )
}

/// Steps sorted by rate, each with the number it ran as.
fn sorted(result: &Capacity) -> Vec<(usize, &CapacityPoint)> {
    let mut v: Vec<(usize, &CapacityPoint)> = result
        .curve
        .iter()
        .enumerate()
        .map(|(i, p)| (i + 1, p))
        .collect();
    v.sort_by(|a, b| a.1.step.offered_rps.total_cmp(&b.1.step.offered_rps));
    v
}

fn render(result: &Capacity, a: &CapacityArgs) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "step",
        "offered req/s",
        "served req/s",
        "served",
        "p50",
        "p99",
        "errors",
        "dropped",
        "",
    ]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    for (n, p) in sorted(result) {
        let s = &p.step;
        let verdict = if result.capacity_rps == Some(s.offered_rps) {
            "knee".to_string()
        } else if p.ok {
            "ok".to_string()
        } else {
            format!("FAIL {}", p.why)
        };
        t.add_row(vec![
            right(n.to_string()),
            right(format!("{:.1}", s.offered_rps)),
            right(format!("{:.1}", s.achieved_rps)),
            right(format!("{:.0}%", s.achieved_rps / s.offered_rps * 100.0)),
            right(format!("{:.1} ms", s.p50_ms)),
            right(format!("{:.1} ms", s.p99_ms)),
            right(format!("{:.2}%", s.error_percent)),
            right(format!("{:.2}%", s.dropped_percent)),
            Cell::new(verdict),
        ]);
    }
    let slo: Vec<&str> = a.slo.objectives.iter().map(|t| t.expr.as_str()).collect();
    let mut out = format!(
        "{} · SLO {} · steps of {} · precision {:.0}%\n{t}\n{}\n",
        a.target.url,
        slo.join(", "),
        humantime::format_duration(a.step_duration),
        a.precision * 100.0,
        result.summary
    );
    if let Some(c) = result.capacity_rps
        && a.instances > 1
    {
        out.push_str(&format!(
            "per instance: {:.1} req/s ({} instances)\n",
            c / a.instances as f64,
            a.instances
        ));
    }
    out
}

fn report<'a>(result: &'a Capacity, a: &'a CapacityArgs) -> CapacityReport<'a> {
    CapacityReport {
        format: "umbra-capacity",
        version: 1,
        target: &a.target.url,
        profiles: a.profiles.display().to_string(),
        slo: a.slo.objectives.iter().map(|t| t.expr.as_str()).collect(),
        step_duration_secs: a.step_duration.as_secs_f64(),
        precision: a.precision,
        efficiency: a.efficiency,
        capacity_rps: result.capacity_rps,
        instances: a.instances,
        capacity_per_instance_rps: result.capacity_rps.map(|c| c / a.instances as f64),
        first_bad_rps: result.first_bad_rps,
        converged: result.converged,
        summary: &result.summary,
        curve: sorted(result)
            .into_iter()
            .map(|(step, point)| CurvePoint { step, point })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slo_errors_name_the_objective_and_column() {
        let s = parse_slo("p99<300ms, errors<1%").unwrap();
        assert_eq!(s.objectives.len(), 2);
        let e = parse_slo("p99<300ms,errros<1%").unwrap_err();
        assert!(
            e.starts_with("objective 2 (column 11) of \"p99<300ms,errros<1%\""),
            "{e}"
        );
        assert!(e.contains("unknown metric \"errros\""), "{e}");
        let e = parse_slo("p99<300ms,,errors<1%").unwrap_err();
        assert!(
            e.contains("objective 2 (column 11)") && e.contains("is empty"),
            "{e}"
        );
    }

    #[test]
    fn shares_and_steps() {
        assert_eq!(parse_share("5%").unwrap(), 0.05);
        assert_eq!(parse_share("0.95").unwrap(), 0.95);
        assert!(parse_share("150%").is_err());
        assert_eq!(parse_steps("1, 2,4").unwrap().0, vec![1.0, 2.0, 4.0]);
        let e = parse_steps("1,3,2").unwrap_err();
        assert!(e.starts_with("step 3 of \"1,3,2\""), "{e}");
    }
}
