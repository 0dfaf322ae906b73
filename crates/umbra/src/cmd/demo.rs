//! `umbra demo`: Umbra's main job on embedded defaults, with no input and no
//! network beyond 127.0.0.1.
//!
//! In one process: profiles learned from the bundled sample log (1,000 lines of
//! a real shop's nginx log); a sample production service that answers every
//! learned endpoint with a realistic latency and size; a shadow of it (the "new
//! version") that is slower on one endpoint; the proxy in front, mirroring every
//! request to the shadow with the default masking; synthetic load shaped by the
//! profiles, at a baseline rate and then under stress; and the live analysis,
//! which must find the regression on the profile of the slowed endpoint. The
//! exit code says whether it did.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use clap::Args;
use umbra_analysis::alert::{Alert, AlertState};
use umbra_core::ProfileSet;
use umbra_learn::profiles::{self, LearnOptions};
use umbra_learn::read::{self, Format};
use umbra_learn::template::Templater;
use umbra_load::plan::{Stage, resolve_mix};
use umbra_load::{Arrivals, HttpOptions, Model, RateCurve, RunConfig, StopSignal};
use umbra_proxy::Proxy;
use umbra_proxy::config::Config;

use crate::admin;
use crate::analysis::{AlertsSection, Analysis, AnalysisSection, Sections, StoreSection};
use crate::canary::CanaryControl;
use crate::cmd::learn::write_set;
use crate::cmd::profiles::render_table;
use crate::control::ControlSection;
use umbra_control::canary::{CanaryConfig, Cause, Outcome, Phase};
use umbra_control::weights::WeightConfig;

const SAMPLE_LOG: &[u8] = include_bytes!("../../assets/shop-access-1k.log");

/// How much slower the shadow is on the regressed endpoint.
const SLOWDOWN: f64 = 2.5;
/// How much slower the second production server is than the first, everywhere.
const SECOND_SERVER: f64 = 1.5;
/// The canary's name, and the shares it is given.
const CANARY: &str = "next-canary";
const CANARY_STAGES: &str = "5%, 25%, 50%, then 100%";

/// Run Umbra end to end on built-in data, on 127.0.0.1 only.
///
/// Learns profiles from a bundled real access log, starts a sample production
/// service on two servers (the second 50% slower) and a shadow "new version" that is
/// 150% slower on one endpoint, puts
/// the proxy in front (every request mirrored to the shadow, masked), sends
/// synthetic load shaped by the profiles (baseline, then twice the rate), and
/// lets the analysis compare shadow with production per profile while the
/// weights follow the servers' performance. Writes a report at the end. Prints what
/// happens as it happens, with the admin address (`/api/analysis`,
/// `/api/alerts`, `/metrics`).
///
/// Exit code 0 when the regression was found on the profile of the slowed
/// endpoint and nowhere else, 1 otherwise.
///
/// Examples:
///
///   umbra demo
///
///   umbra demo --duration 30s
///
///   umbra demo --serve      # keep everything running afterwards, until Ctrl-C
#[derive(Args)]
pub struct DemoArgs {
    /// Keep the learned profile set here (by default it goes to a temporary folder).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// How long the load runs: the first half at the baseline rate, the second
    /// under stress (twice the rate).
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    duration: Duration,
    /// Baseline rate of the synthetic load, in requests per second.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Keep the services, the proxy and the admin listener running after the
    /// load ends, until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.duration < Duration::from_secs(10) {
        anyhow::bail!(
            "--duration {}: the analysis needs at least 10s (windows of 2s, 2 of 3 agreeing)",
            humantime::format_duration(args.duration)
        );
    }
    if !(args.rate.is_finite() && args.rate >= 50.0) {
        anyhow::bail!(
            "--rate {}: at least 50 requests per second, so that each profile fills its windows",
            args.rate
        );
    }
    let dir = std::env::temp_dir().join(format!("umbra-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("shop-access-1k.log");
    std::fs::write(&log, SAMPLE_LOG).with_context(|| format!("cannot write {}", log.display()))?;

    println!("== 1. learn: profiles from a real shop's access log (1,000 requests, bundled)");
    let mut records = Vec::new();
    let report = read::read_source(&log.to_string_lossy(), &Format::Auto, &mut |r| {
        records.push(r)
    })?;
    println!(
        "read {} requests as {} ({} bad lines)",
        report.records,
        report.format.describe(),
        report.bad
    );
    let learned = profiles::learn(&records, vec![report.summary()], &LearnOptions::default())?;
    let set = learned.set;
    println!("k: {}", set.clustering.reason);
    print!("{}", render_table(&set));
    let profiles_path = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join("profiles.json"));
    write_set(&profiles_path, &set)?;
    println!("profile set written to {}", profiles_path.display());

    let regression = Regression::pick(&set)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let found = runtime.block_on(live(&args, set, profiles_path, regression))?;
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The endpoint the shadow slows down, and the profiles it belongs to.
struct Regression {
    template: String,
    method: String,
    /// Profiles with this template among theirs: where an alert is right.
    profiles: BTreeSet<String>,
}

impl Regression {
    /// The heaviest profile's main templated endpoint: enough traffic to judge
    /// in a few seconds, and a concrete route to name.
    fn pick(set: &ProfileSet) -> anyhow::Result<Regression> {
        let mut mix = set.mix();
        mix.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (profile, _) = mix
            .iter()
            .find(|(p, _)| p.templates.iter().any(|t| t.path.contains('{')))
            .context("the sample profiles have no templated endpoint")?;
        let t = profile
            .templates
            .iter()
            .filter(|t| t.path.contains('{'))
            .max_by(|a, b| a.weight.total_cmp(&b.weight))
            .context("no templated endpoint")?;
        let profiles = set
            .profiles
            .iter()
            .filter(|p| {
                p.templates
                    .iter()
                    .any(|r| r.path == t.path && r.method == t.method)
            })
            .map(|p| p.id.clone())
            .collect();
        Ok(Regression {
            template: t.path.clone(),
            method: t.method.clone(),
            profiles,
        })
    }
}

/// The sample service: every learned endpoint answers with its typical size and
/// status after a latency that depends on the kind of page; the shadow adds the
/// regression.
struct Service {
    templates: Templater,
    /// Per template index: status and response size.
    answers: Vec<(u16, usize)>,
    slow: Option<Templater>,
    /// Every latency multiplied by this (a slower server).
    speed: f64,
}

impl Service {
    fn new(set: &ProfileSet, slow: Option<&str>, speed: f64) -> Service {
        let mut seen = Vec::new();
        let mut answers = Vec::new();
        for t in set.profiles.iter().flat_map(|p| &p.templates) {
            if seen.contains(&t.path) {
                continue;
            }
            let status = t
                .status
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .and_then(|(s, _)| s.parse().ok())
                .unwrap_or(200);
            seen.push(t.path.clone());
            answers.push((status, t.response_bytes.p50.max(0.0) as usize));
        }
        let templates = Templater::from_templates(seen.iter().map(String::as_str));
        // from_templates numbers templates in its own order: map answers to it.
        let answers = templates
            .templates()
            .iter()
            .map(|t| {
                seen.iter()
                    .position(|s| s == t)
                    .map(|i| answers[i])
                    .unwrap_or((200, 512))
            })
            .collect();
        Service {
            templates,
            answers,
            slow: slow.map(|t| Templater::from_templates([t])),
            speed,
        }
    }

    /// Typical latencies of a shop: images and static files are quick, search
    /// pages (filters) slow, product pages in between.
    fn latency(path: &str) -> Duration {
        let base_ms = match path.split('/').nth(1).unwrap_or("") {
            "image" => 6.0,
            "static" => 3.0,
            "filter" => 35.0,
            "product" => 25.0,
            "m" => 20.0,
            "settings" => 8.0,
            _ => 12.0,
        };
        // ±20% spread, different for every request.
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        Duration::from_secs_f64(base_ms * jitter / 1000.0)
    }

    async fn answer(self: Arc<Service>, path: String) -> Response {
        let (status, size) = self
            .templates
            .template_of(&path)
            .and_then(|m| self.answers.get(m.template as usize).copied())
            .unwrap_or((404, 64));
        let mut latency = Service::latency(&path).mul_f64(self.speed);
        if let Some(slow) = &self.slow
            && slow.template_of(&path).is_some()
        {
            latency = latency.mul_f64(SLOWDOWN);
        }
        tokio::time::sleep(latency).await;
        let mut r = Response::new(Body::from(vec![b'.'; size]));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        r
    }

    async fn start(self) -> anyhow::Result<SocketAddr> {
        let svc = Arc::new(self);
        let app = axum::Router::new()
            .fallback(|State(svc): State<Arc<Service>>, req: Request| async move {
                svc.answer(req.uri().path().to_string()).await
            })
            .with_state(svc);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(address)
    }
}

async fn live(
    args: &DemoArgs,
    set: ProfileSet,
    profiles_path: PathBuf,
    regression: Regression,
) -> anyhow::Result<bool> {
    let store_path = std::env::temp_dir()
        .join(format!("umbra-demo-{}", std::process::id()))
        .join("umbra.db");
    let names: std::collections::BTreeMap<String, String> = set
        .profiles
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());

    println!("\n== 2. services: a sample production service and its next version");
    let production = Service::new(&set, None, 1.0).start().await?;
    let production_b = Service::new(&set, None, SECOND_SERVER).start().await?;
    let shadow = Service::new(&set, Some(&regression.template), 1.0)
        .start()
        .await?;
    let canary = Service::new(&set, Some(&regression.template), 1.0)
        .start()
        .await?;
    println!("production on http://{production}: every learned endpoint, shop-like latencies");
    println!(
        "production on http://{production_b}: the same, {:.0}% slower (the weights should move away from it)",
        (SECOND_SERVER - 1.0) * 100.0
    );
    println!(
        "shadow on http://{shadow}: the same, but {} {} is {:.0}% slower (the regression to find)",
        regression.method,
        regression.template,
        (SLOWDOWN - 1.0) * 100.0
    );
    println!(
        "canary on http://{canary}: the same next version, as a canary that is to get {} of live traffic",
        CANARY_STAGES
    );

    println!("\n== 3. proxy: live traffic to production, masked copies of all of it to the shadow");
    let config = Config::parse(
        "demo",
        &format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n\
             [production]\nservers = [{{ url = \"http://{production}\" }}, {{ url = \"http://{production_b}\" }}]\n\
             [[shadow]]\nname = \"next\"\nurl = \"http://{shadow}\"\n\
             [mirror]\npercent = \"100%\"\n\
             [canary]\nname = \"{CANARY}\"\nservers = [{{ url = \"http://{canary}\" }}]\n\
             [profiles]\nfile = {:?}\n",
            profiles_path.display().to_string()
        ),
    )?;
    let sections = Sections {
        analysis: AnalysisSection {
            window: Duration::from_secs(2),
            lateness: Duration::from_millis(500),
            ..AnalysisSection::default()
        },
        // The demo prints alerts itself, with the profiles' names.
        alerts: AlertsSection {
            sinks: Vec::new(),
            ..AlertsSection::default()
        },
        store: Some(StoreSection::at(store_path.clone())),
        control: ControlSection {
            weights: Some(WeightConfig {
                interval: Duration::from_secs(3),
                ..WeightConfig::default()
            }),
            // Straight to live shares (the shadow above already gets copies),
            // short stages so the demo sees them, and fewer requests to judge on.
            canary: Some(CanaryConfig {
                shadow: false,
                stages: vec![5.0, 25.0, 50.0, 100.0],
                interval: Duration::from_secs(10),
                min_requests: 30,
                ..CanaryConfig::default()
            }),
            replicas: None,
        },
        trace_link_template: None,
    };
    let analysis = Analysis::start(&sections)?.context("the analysis is on")?;
    let proxy = Proxy::start_observed(config, Some(analysis.feed(Some(CANARY)))).await?;
    let started = Instant::now();
    let canary_control = CanaryControl::start(
        sections.control.canary.clone().unwrap_or_default(),
        CANARY,
        proxy.handle(),
        analysis.store(),
        Box::new(move |name, d| {
            println!(
                "[{:5.1}s] {}",
                started.elapsed().as_secs_f64(),
                crate::canary::describe(name, d)
            )
        }),
    )?;
    analysis.handle().set_canary(canary_control.clone());
    let control = crate::control::Control::start(
        sections.control.weights.clone().unwrap_or_default(),
        proxy.handle(),
    )?;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin_address = admin_listener.local_addr()?;
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::AdminState {
            canary: Some(canary_control.clone()),
            proxy: proxy.handle(),
            analysis: Some(analysis.handle()),
            scaling: None,
            control: Some(control.handle()),
        },
        admin_stopped,
    ));
    println!("proxy on http://{}", proxy.address);
    println!(
        "admin on http://{admin_address}: /api/analysis (windows per profile), /api/alerts, /api/stats, /metrics"
    );
    println!(
        "analysis: 2s windows; a regression needs p99 up 20% and a significant rank test in 2 of 3 windows"
    );
    println!(
        "weights: every 3s from each server's latency at the profile mix (floor 5%, at most 10 points a step)"
    );
    println!(
        "canary: {CANARY} gets {CANARY_STAGES} of live requests, 10s a stage, judged per profile against production"
    );
    let (weights_stop, weights_stopped) = tokio::sync::watch::channel(false);
    let weights_task = {
        tokio::spawn(control.run(
            analysis.store(),
            weights_stopped,
            move |c: &crate::control::Change| {
                let w: Vec<String> = c.weights.iter().map(|(s, w)| format!("{s} {w}")).collect();
                println!(
                    "[{:5.1}s] weights: {}",
                    started.elapsed().as_secs_f64(),
                    w.join(", ")
                );
            },
        ))
    };

    let half = args.duration / 2;
    println!(
        "\n== 4. load: {:.0} req/s shaped by the profiles for {}, then stress: {:.0} req/s for {}",
        args.rate,
        humantime::format_duration(half),
        args.rate * 2.0,
        humantime::format_duration(args.duration - half)
    );
    let curve = RateCurve::stages(
        &[
            Stage {
                duration: Duration::from_secs(1),
                target: args.rate,
            },
            Stage {
                duration: half.saturating_sub(Duration::from_secs(1)),
                target: args.rate,
            },
            Stage {
                duration: Duration::from_secs(1),
                target: args.rate * 2.0,
            },
            Stage {
                duration: (args.duration - half).saturating_sub(Duration::from_secs(1)),
                target: args.rate * 2.0,
            },
        ],
        1.0,
    );
    let mix = resolve_mix(&set, &[])?;
    let cfg = RunConfig {
        target: format!("http://{}", proxy.address).parse()?,
        model: Model::Open {
            curve,
            arrivals: Arrivals::Poisson,
            shard: None,
            max_in_flight: 2_000,
            rate: args.rate * 2.0,
        },
        duration: Some(args.duration),
        requests: None,
        seed: 7,
        mix,
        http: HttpOptions {
            http2: false,
            insecure: false,
            timeout: Duration::from_secs(10),
            connections: 64,
        },
        stress: 1.0,
        thresholds: Vec::new(),
        traceparent: true,
    };
    let stop = StopSignal::default();
    let (progress_tx, mut progress_rx) =
        tokio::sync::watch::channel(umbra_load::Progress::default());
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            umbra_load::run(&set, cfg, stop, move |p: &umbra_load::Progress| {
                let _ = progress_tx.send(*p);
            })
            .await
        })
    };

    // Watch: a status line every few seconds, every alert as it fires or resolves.
    let mut reported: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut next_status = Duration::from_secs(4);
    let handle = analysis.handle();
    let mut load = Some(load);
    let mut load_report = None;
    // The load's end, plus two windows and the lateness for the last verdicts.
    let settle = Duration::from_millis(4_500);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = started.elapsed();
        for a in handle.alerts(None) {
            let kind = match a.state {
                AlertState::Firing => "firing",
                AlertState::Resolved => "resolved",
            };
            if reported.insert((a.fingerprint.clone(), kind)) {
                println!(
                    "[{:5.1}s] ALERT {kind}: {} ({})",
                    t.as_secs_f64(),
                    a.summary(),
                    name(&a.profile)
                );
            }
        }
        if t >= next_status {
            next_status += Duration::from_secs(4);
            let p = *progress_rx.borrow_and_update();
            let stats = proxy.handle().stats();
            let sent: u64 = stats["shadows"]
                .as_array()
                .map(|s| s.iter().filter_map(|x| x["sent"].as_u64()).sum())
                .unwrap_or(0);
            println!(
                "[{:5.1}s] load {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} requests ({} errors); copies sent to the shadow: {sent}",
                t.as_secs_f64(),
                p.rate,
                p.p50_ms,
                p.p99_ms,
                p.requests,
                p.errors
            );
        }
        if let Some(l) = &load
            && l.is_finished()
            && let Some(l) = load.take()
        {
            load_report = Some(l.await.context("the load task")??);
        }
        if load.is_none() && t >= args.duration + settle {
            break;
        }
    }
    if let Some(r) = &load_report {
        let e = &r.totals.errors;
        println!(
            "load done: {} requests at {:.0} req/s achieved, p99 {:.1} ms through the proxy, {} failed",
            r.totals.requests,
            r.totals.achieved_rps,
            r.totals.latency_ms.p99,
            e.connect + e.timeout + e.reset + e.other
        );
    }

    let alerts: Vec<Alert> = handle.alerts(None);
    let right: Vec<&Alert> = alerts
        .iter()
        .filter(|a| regression.profiles.contains(&a.profile))
        .collect();
    let wrong: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !regression.profiles.contains(&a.profile))
        .collect();
    println!("\n== 5. result");
    let expected: Vec<String> = regression
        .profiles
        .iter()
        .map(|p| format!("{p} ({})", name(p)))
        .collect();
    println!(
        "the slowed endpoint {} {} belongs to: {}",
        regression.method,
        regression.template,
        expected.join(", ")
    );
    for a in &right {
        println!(
            "regression found on profile {} ({}): {}",
            a.profile,
            name(&a.profile),
            a.summary()
        );
    }
    for a in &wrong {
        println!(
            "alert on another profile {} ({}): {}",
            a.profile,
            name(&a.profile),
            a.summary()
        );
    }
    let found = !right.is_empty() && wrong.is_empty();
    if found {
        println!("OK: the regression was found on the right profile, and only there");
    } else if right.is_empty() {
        println!("NOT FOUND: no alert on the slowed endpoint's profile");
    } else {
        println!("FOUND, with false alarms on other profiles");
    }
    // The canary must have been rolled back by the judge, on the slowed endpoint's profile.
    let history = canary_control.history();
    let rollback = history
        .iter()
        .find(|d| d.to == Phase::RolledBack && d.cause == Cause::Judged);
    let canary_ok = match rollback {
        Some(d) => {
            let failed: Vec<&str> = d
                .profiles
                .iter()
                .filter(|p| p.result == Outcome::Fail)
                .map(|p| p.profile.as_str())
                .collect();
            let on_right =
                !failed.is_empty() && failed.iter().all(|p| regression.profiles.contains(*p));
            let failed: Vec<String> = failed
                .iter()
                .map(|p| format!("{p} ({})", name(p)))
                .collect();
            println!(
                "canary {CANARY} rolled back at {} by the judge, failing on {}{}",
                d.from,
                failed.join(", "),
                if on_right {
                    ""
                } else {
                    ": NOT the slowed endpoint's profile"
                }
            );
            on_right
        }
        None => {
            println!(
                "canary {CANARY} was NOT rolled back (now at {})",
                canary_control.status()["stage"]
            );
            false
        }
    };
    let found = found && canary_ok;

    if let Some(store) = analysis.store() {
        let to = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let from =
            to.saturating_sub((started.elapsed() + Duration::from_secs(5)).as_millis() as u64);
        let data = crate::cmd::report::gather(&store, from, to, names.clone(), None)?;
        let report = profiles_path.with_file_name("umbra-report.html");
        std::fs::write(&report, crate::cmd::report::html(&data))
            .with_context(|| format!("writing {}", report.display()))?;
        println!(
            "report: {} ({} regressions, {} profiles, {} weight changes, {} canary decisions)",
            report.display(),
            data.alerts.len(),
            data.costs.len(),
            data.weights.len(),
            data.canary.len()
        );
    }

    if args.serve {
        println!(
            "\nserving until Ctrl-C: proxy http://{}, admin http://{admin_address}",
            proxy.address
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.stop("demo over");
    let _ = weights_stop.send(true);
    let _ = weights_task.await;
    let _ = admin_stop.send(true);
    proxy.shutdown().await;
    let _ = admin_task.await;
    tokio::task::spawn_blocking(move || analysis.shutdown())
        .await
        .ok();
    Ok(found)
}
