//! `umbra load`: synthetic load from a profile set, and `umbra load merge`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use umbra_core::ProfileSet;
use umbra_load::plan::{parse_mix, parse_stages, resolve_mix};
use umbra_load::{
    Arrivals, HttpOptions, Model, PlanFile, Progress, RateCurve, Report, RunConfig, Shard, Stage,
    StopSignal, Target, Threshold,
};

/// Exit code when the run worked but a threshold failed.
const THRESHOLDS_FAILED: u8 = 3;

/// Send synthetic traffic shaped like production to a target, and measure it.
///
/// Requests are drawn from a profile set written by `umbra learn`: each profile
/// gets its share of the rate, and each request is built from one of its
/// templates (placeholders filled with values of the right shape, query keys,
/// headers, user agent, a body of a drawn size). Every request carries
/// `x-umbra-load: 1` and a fresh W3C `traceparent` (`--no-traceparent` to leave it out).
///
/// OPEN MODEL (the default). Requests start on a schedule, whatever the target
/// does: `--rate` requests per second (default: the set's baseline) times
/// `--stress` (default: the set's stress), evenly spaced or `--arrivals poisson`,
/// or ramped with `--stages`. Latency is measured from the moment a request was
/// due, not from when it was sent, so a target that stalls shows the stall in
/// its percentiles (the coordinated-omission correction of wrk2). Arrivals that
/// find `--max-in-flight` requests outstanding are dropped and counted.
///
/// CLOSED MODEL: `--connections N` without a rate or stages. N workers, each with
/// its own connection, send their next request as soon as the last one answers.
/// This finds peak throughput; its latencies hide stalls.
///
/// ERRORS. Transport errors are counted by class (connect, timeout, reset, other)
/// and never stop the run; "errors" in progress, series and thresholds means
/// transport errors plus 5xx responses. A target that refuses every connection
/// for two seconds ends the run with a summary (exit 1).
///
/// SCALE-OUT. `--shard I/N` sends every N-th arrival of the global schedule
/// (arrival k goes to shard k mod N). Run N shards with the same plan and seed,
/// then `umbra load merge` their `--json` reports into the report of one run.
///
/// EXIT CODES: 0 success (all thresholds passed), 1 error, 2 bad arguments,
/// 3 a threshold failed.
///
/// Examples:
///
///   umbra load -p profiles.json -t http://staging:8080 --rate 500 --duration 2m
///
///   umbra load -p p.json -t https://canary --stages 30s:100,5m:400,30s:0 --threshold 'p99<300ms'
///
///   umbra load -p profiles.json -t http://127.0.0.1:8080 --connections 64 --duration 30s
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    // Boxed: the run options are large next to the other commands' arguments.
    #[command(flatten)]
    run: Box<RunArgs>,
}

#[derive(Subcommand)]
enum LoadCommand {
    Merge(MergeArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The profile set (written by `umbra learn`).
    #[arg(short, long, required = true, value_name = "FILE")]
    profiles: Option<PathBuf>,
    /// Base URL of the target: http:// or https://, host, port, optional path prefix.
    #[arg(short, long, required = true, value_name = "URL", value_parser = parse_target)]
    target: Option<Target>,
    /// A TOML plan: rate, stress, arrivals, stages, duration, requests, connections,
    /// [mix] and thresholds. Command-line options override it.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Open model: requests per second before stress. Default: the set's baseline_rps.
    #[arg(long, value_name = "RPS")]
    rate: Option<f64>,
    /// Multiplier on the rate and on stage targets. Default: the set's stress.
    #[arg(long, value_name = "X")]
    stress: Option<f64>,
    /// How arrivals are spaced: constant (evenly) or poisson.
    #[arg(long, value_name = "KIND", value_parser = parse_arrivals)]
    arrivals: Option<Arrivals>,
    /// Ramps, k6 style: DURATION:RATE,... from 0 linearly to each target in turn,
    /// like `30s:100,2m:400,30s:0`. The run lasts as long as the stages.
    #[arg(long, value_name = "STAGES", value_parser = parse_stages_arg)]
    stages: Option<Vec<Stage>>,
    /// Stop after this long (default 30s when nothing else bounds the run).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    duration: Option<Duration>,
    /// Stop after this many requests (all shards together, for a sharded run).
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Closed model (without a rate): this many workers, one connection each.
    /// Open model: at most this many keep-alive connections (default 64); a due
    /// request that finds them all busy waits for one, its latency counting from
    /// when it was due. With --http2, up to 8 of them are shared.
    #[arg(short, long, value_name = "N")]
    connections: Option<u64>,
    /// Open model: at most this many requests outstanding; arrivals beyond are dropped and counted.
    /// Each costs about 8 KiB while it waits, so the default keeps a generator whose
    /// target has stopped answering under 64 MiB; 2048 in flight is 20,000 req/s at
    /// 100 ms. Raise it for slow targets at high rates (and expect the memory).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    max_in_flight: usize,
    /// Per-profile fractions by id or name, like `search=0.5,p-1a2b3c4d=0.2`;
    /// profiles not named share the rest in proportion to the set's mix.
    #[arg(long, value_name = "MIX")]
    mix: Option<String>,
    /// Run only shard I of N of the global schedule, like 0/4.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Random seed: the same seed, plan and set send the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// HTTP/2 (prior knowledge on http://, ALPN on https://).
    #[arg(long)]
    http2: bool,
    /// Accept any TLS certificate (self-signed test targets).
    #[arg(long)]
    insecure: bool,
    /// Per-request timeout: connect, send and the whole response.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    timeout: Duration,
    /// Pass/fail check, repeatable: p99<300ms, p95<=1s, errors<1%, dropped<0.1%,
    /// rps>=900; per profile: `search:p99<200ms`. Metrics: min mean p50 p90 p95 p99
    /// p999 max errors dropped rps. A failed threshold exits with code 3.
    #[arg(long = "threshold", value_name = "EXPR", value_parser = parse_threshold)]
    thresholds: Vec<Threshold>,
    /// Write the report as JSON (the input of `umbra load merge`).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (tables, latency-over-time,
    /// throughput and percentile charts; opens offline).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Worker threads of the generator. Default: the number of cores.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress line, even on a terminal.
    #[arg(short, long)]
    quiet: bool,
    /// Send no `traceparent`. By default every request starts a new, sampled
    /// W3C trace (ids unique to the run), so synthetic requests can be found
    /// in the tracing system the target reports to.
    #[arg(long)]
    no_traceparent: bool,
}

/// Merge the JSON reports of a sharded run into the report of one run.
///
/// Counts are summed and latency histograms (stored in each report) are added,
/// so totals and per-profile percentiles are exact. Per-second series are summed
/// by second; their p50 and p99 are the highest of the shards' for that second
/// (the reports keep no per-second histograms). Thresholds given here, or else
/// those of the first report, are evaluated on the merged data.
///
/// Exit codes: 0 success, 1 error, 2 bad arguments, 3 a threshold failed.
#[derive(Args)]
struct MergeArgs {
    /// Reports written by `umbra load --json`.
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Write the merged report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the merged report as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Pass/fail checks on the merged data (replacing the reports' own).
    #[arg(long = "threshold", value_name = "EXPR", value_parser = parse_threshold)]
    thresholds: Vec<Threshold>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse().map_err(|e: umbra_load::Error| e.to_string())
}
fn parse_arrivals(s: &str) -> Result<Arrivals, String> {
    s.parse()
}
fn parse_stages_arg(s: &str) -> Result<Vec<Stage>, String> {
    parse_stages(s).map_err(|e| e.to_string())
}
fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}
fn parse_threshold(s: &str) -> Result<Threshold, String> {
    s.parse().map_err(|e: umbra_load::Error| e.to_string())
}

pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(LoadCommand::Merge(m)) => merge(m),
        None => run_load(*args.run),
    }
}

fn run_load(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (Some(profiles), Some(target)) = (a.profiles.clone(), a.target.clone()) else {
        bail!("--profiles and --target are required");
    };
    let set = ProfileSet::load(&profiles)?;
    let plan = match &a.plan {
        Some(p) => PlanFile::load(p)?,
        None => PlanFile::default(),
    };
    let plan_name = a
        .plan
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();

    let stress = a.stress.or(plan.stress).unwrap_or(set.stress);
    if !(stress.is_finite() && stress >= 0.0) {
        bail!("--stress {stress}: expected a number >= 0");
    }
    let stages = match &a.stages {
        Some(s) => Some(s.clone()),
        None => plan
            .stages_list()
            .with_context(|| format!("plan {plan_name}"))?,
    };
    let rate = a.rate.or(plan.rate);
    if let Some(r) = rate
        && !(r.is_finite() && r >= 0.0)
    {
        bail!("--rate {r}: expected requests per second, a number >= 0");
    }
    let duration = match (a.duration, &plan.duration) {
        (Some(d), _) => Some(d),
        (None, Some(d)) => Some(
            umbra_load::plan::parse_duration(d)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("plan {plan_name}: duration"))?,
        ),
        (None, None) => None,
    };
    let requests = a.requests.or(plan.requests);
    let connections = a.connections.or(plan.connections);
    let closed = connections.is_some() && rate.is_none() && stages.is_none();
    // Something must end the run: stages, a duration or a request count; else 30 s.
    let duration = if duration.is_none() && requests.is_none() && (closed || stages.is_none()) {
        Some(Duration::from_secs(30))
    } else {
        duration
    };

    let model = if closed {
        if a.shard.is_some() {
            bail!(
                "--shard splits an arrival schedule, so it needs the open model (give --rate or --stages)"
            );
        }
        Model::Closed {
            connections: connections.unwrap_or(1).max(1) as usize,
        }
    } else {
        let (curve, peak) = match &stages {
            Some(st) => (
                RateCurve::stages(st, stress),
                st.iter().map(|s| s.target).fold(0.0, f64::max) * stress,
            ),
            None => {
                let r = rate.unwrap_or(set.baseline_rps) * stress;
                (RateCurve::flat(r, duration), r)
            }
        };
        if peak <= 0.0 {
            bail!(
                "the planned rate is 0 requests per second: nothing to send (give --rate, --stages, or set the profile set's baseline with `umbra profiles set --baseline-rps`)"
            );
        }
        Model::Open {
            curve,
            arrivals: a.arrivals.or(plan.arrivals).unwrap_or(Arrivals::Constant),
            shard: a.shard,
            max_in_flight: a.max_in_flight,
            rate: peak,
        }
    };

    let overrides = match &a.mix {
        Some(m) => parse_mix(m)?,
        None => plan.mix.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    };
    let mix = resolve_mix(&set, &overrides)?;

    let mut thresholds = Vec::new();
    for (i, t) in plan.thresholds.iter().enumerate() {
        thresholds.push(
            t.parse::<Threshold>()
                .with_context(|| format!("plan {plan_name}: thresholds[{i}]"))?,
        );
    }
    thresholds.extend(a.thresholds.iter().cloned());

    let cfg = RunConfig {
        target,
        model,
        duration,
        requests,
        seed: a.seed,
        mix,
        http: HttpOptions {
            http2: a.http2,
            insecure: a.insecure,
            timeout: a.timeout,
            connections: if closed {
                connections.unwrap_or(1) as usize
            } else {
                connections.unwrap_or(64) as usize
            },
        },
        stress,
        thresholds,
        traceparent: !a.no_traceparent,
    };

    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    // One thread: a current-thread runtime, as wrk's one event loop per thread;
    // the multi-thread scheduler's work-stealing costs about 5% there for nothing.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;

    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(progress_bar);
    let stop = StopSignal::default();
    let report = runtime.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                s.stop("interrupted");
            }
        });
        let bar = bar.clone();
        umbra_load::run(&set, cfg, stop.clone(), move |p: &Progress| {
            if let Some(b) = &bar {
                show_progress(b, p);
            }
        })
        .await
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    finish(&report, a.json.as_ref(), a.html.as_ref())
}

fn merge(m: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for p in &m.reports {
        reports.push((p.clone(), Report::load(p)?));
    }
    let merged = umbra_load::merge::merge(&reports, &m.thresholds)?;
    eprintln!("merged {} reports", reports.len());
    finish(&merged, m.json.as_ref(), m.html.as_ref())
}

/// Prints the summary, writes the JSON and HTML, and picks the exit code.
fn finish(
    report: &Report,
    json: Option<&PathBuf>,
    html: Option<&PathBuf>,
) -> anyhow::Result<ExitCode> {
    print!("{}", render_summary(report));
    if let Some(path) = json {
        report.save(path)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = html {
        umbra_load::html::write(report, path)?;
        eprintln!("HTML report written to {}", path.display());
    }
    if let Some(why) = &report.stopped
        && why.contains("unreachable")
    {
        bail!(
            "{}: {why} ({} connect errors)",
            report.target,
            report.totals.errors.connect
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(THRESHOLDS_FAILED)
    })
}

fn progress_bar() -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

fn show_progress(b: &indicatif::ProgressBar, p: &Progress) {
    let of = p
        .planned
        .map(|d| format!(" of {}s", d.as_secs()))
        .unwrap_or_default();
    b.set_message(format!(
        "{}s{of} · {:.0} req/s · p50 {:.1} ms · p99 {:.1} ms · {} requests · {} errors · {} dropped",
        p.elapsed.as_secs(),
        p.rate,
        p.p50_ms,
        p.p99_ms,
        p.requests,
        p.errors,
        p.dropped
    ));
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.2} ms")
    }
}

/// The per-profile table, totals, errors and thresholds.
pub fn render_summary(r: &Report) -> String {
    let mut out = String::new();
    let model = match (&r.model[..], r.rate, r.arrivals) {
        ("open", Some(rate), Some(arr)) => format!(
            "open model, {rate:.1} req/s planned ({}), ",
            match arr {
                Arrivals::Constant => "constant",
                Arrivals::Poisson => "poisson",
            }
        ),
        _ => format!("closed model, {} connections, ", r.connections),
    };
    let shard = r
        .shard
        .map(|s| format!(", shard {}/{}", s.index, s.count))
        .unwrap_or_default();
    out.push_str(&format!(
        "{} · {model}{:.1} s, seed {}{shard}\n",
        r.target, r.duration_secs, r.seed
    ));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "profile", "name", "plan", "requests", "req/s", "p50", "p90", "p99", "max", "errors",
        "dropped",
    ]);
    let row = |id: &str, name: &str, share: Option<f64>, s: &umbra_load::report::Stats| {
        let mut name = name.to_string();
        if name.chars().count() > 40 {
            name = name.chars().take(39).collect::<String>() + "…";
        }
        vec![
            Cell::new(id),
            Cell::new(name),
            Cell::new(share.map_or(String::new(), |f| format!("{:.1}%", f * 100.0)))
                .set_alignment(CellAlignment::Right),
            Cell::new(s.requests).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1}", s.achieved_rps)).set_alignment(CellAlignment::Right),
            Cell::new(ms(s.latency_ms.p50)).set_alignment(CellAlignment::Right),
            Cell::new(ms(s.latency_ms.p90)).set_alignment(CellAlignment::Right),
            Cell::new(ms(s.latency_ms.p99)).set_alignment(CellAlignment::Right),
            Cell::new(ms(s.latency_ms.max)).set_alignment(CellAlignment::Right),
            Cell::new(s.total_errors()).set_alignment(CellAlignment::Right),
            Cell::new(s.dropped).set_alignment(CellAlignment::Right),
        ]
    };
    for p in &r.profiles {
        t.add_row(row(&p.id, &p.name, Some(p.planned_share), &p.stats));
    }
    t.add_row(row("total", "", None, &r.totals));
    out.push_str(&t.to_string());
    out.push('\n');
    let s = &r.totals;
    out.push_str(&format!(
        "status: 2xx {} · 3xx {} · 4xx {} · 5xx {}   errors: connect {} · timeout {} · reset {} · other {}   sent {} B · received {} B\n",
        s.status.s2xx,
        s.status.s3xx,
        s.status.s4xx,
        s.status.s5xx,
        s.errors.connect,
        s.errors.timeout,
        s.errors.reset,
        s.errors.other,
        s.bytes_sent,
        s.bytes_received
    ));
    if let Some(why) = &r.stopped {
        out.push_str(&format!("stopped early: {why}\n"));
    }
    for th in &r.thresholds {
        out.push_str(&format!(
            "{} {}  (observed {:.3})\n",
            if th.passed { "pass" } else { "FAIL" },
            th.expr,
            th.observed
        ));
    }
    out
}
