//! `umbra proxy` and `umbra check`: run the shadowing proxy, or validate its config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use umbra_proxy::config::Config;
use umbra_proxy::{ConfigSource, Flags, Proxy};

use crate::admin;
use crate::analysis::{Analysis, Sections, StoreSection};
use crate::canary::CanaryControl;

/// Run the shadowing reverse proxy: live requests to production, masked copies to shadow.
///
/// Every request goes to the production pool (weighted power of two choices
/// over a peak-EWMA latency estimate, with health checks and passive ejection)
/// and its response comes back as soon as production sends it. A configured
/// share is copied, masked (credentials and private data; see `umbra mask`),
/// and sent to each shadow with `x-umbra-shadow: 1` through a bounded queue, its
/// own connection pool, concurrency limit and timeout: a slow or dead shadow
/// never slows a live request, and its errors never reach a client. A full
/// queue drops the copy and counts it.
///
/// Every exchange is classified to its nearest profile (with `--profiles`, or
/// `[profiles]` in the config; the file is reloaded when it changes) and
/// measured by role, upstream and profile. The admin listener serves
/// `/metrics` (Prometheus), `/api/stats` (JSON), `/healthz` and `/readyz`, and
/// `PUT /api/weights` to set production weights at run time. With
/// `[control.replicas]` it forecasts demand from the live request rate and
/// publishes the recommended replicas (`umbra_recommended_replicas` on
/// /metrics, `/api/capacity`, and a webhook when the advice changes).
///
/// With `[control.weights]`, production weights follow each server's measured
/// latency at the profile mix and error rate, from live traffic and, with
/// `[control.weights.probes]`, from shadow probes (the same profile-shaped GET
/// and HEAD requests sent to every server at a low rate, marked
/// `x-umbra-probe: 1`); `[[control.weights.export]]` pushes them to HAProxy's
/// runtime API or an nginx upstream file.
///
/// SIGHUP reloads the config file without dropping connections; SIGTERM or
/// Ctrl-C stops accepting and drains requests in flight (up to
/// `listen.drain_timeout`).
///
/// Examples:
///
///   umbra proxy --config umbra.toml
///
///   umbra proxy --listen 127.0.0.1:8080 --production http://127.0.0.1:9000 \
///     --shadow http://127.0.0.1:9001 --mirror 10% --admin 127.0.0.1:9090
#[derive(Args)]
pub struct ProxyArgs {
    /// The configuration file (every key is documented in examples/umbra.toml).
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["listen", "production", "shadow", "mirror"])]
    config: Option<PathBuf>,
    /// Address for client traffic (one-liner form, without a config file).
    #[arg(long, value_name = "ADDR", requires = "production")]
    listen: Option<SocketAddr>,
    /// A production server URL; repeat for a pool.
    #[arg(long, value_name = "URL")]
    production: Vec<String>,
    /// A shadow URL; repeat for several shadows.
    #[arg(long, value_name = "URL")]
    shadow: Vec<String>,
    /// Share of requests copied to the shadows, like 10% (default: 100% when a shadow is given).
    #[arg(long, value_name = "PERCENT")]
    mirror: Option<String>,
    /// Address of the admin listener (/metrics, /api/stats, /healthz, /readyz).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Profile set to measure by (one-liner form).
    #[arg(long, value_name = "FILE")]
    profiles: Option<PathBuf>,
    /// Access log file, combined format with $request_time (one-liner form).
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
    /// Worker threads for live traffic (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The embedded store (SQLite) that keeps baselines and alerts across
    /// restarts; overrides `[store] path`.
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
}

/// Check a proxy configuration without starting anything.
///
/// Parses the file, checks every value and cross-reference, builds the masking
/// rules, loads the TLS certificate and the profile set if named, and prints a
/// summary. Errors name the file, the line and the key. Exit code 0 when the
/// config is usable, 1 when it is not.
#[derive(Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let source = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => {
            let Some(listen) = args.listen else {
                bail!("give --config FILE, or --listen ADDR with at least one --production URL");
            };
            ConfigSource::Flags(Flags {
                listen,
                production: args.production.clone(),
                shadow: args.shadow.clone(),
                mirror: args.mirror.clone(),
                admin: args.admin,
                profiles: args.profiles.clone(),
                access_log: args.access_log.clone(),
            })
        }
    };
    let mut config = source.load()?;
    let mut sections = match &args.config {
        Some(path) => Sections::load(path)?,
        None => Sections::default(),
    };
    if let Some(path) = &args.store {
        sections.store = Some(StoreSection::at(path.clone()));
    }
    // Probes need the proxy's profile set: refuse before anything starts.
    sections
        .control
        .check(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", source_name(&args)))?;
    // Alerts link their example traces the way the tracer's own links do.
    sections.trace_link_template = umbra_proxy::trace_link_template(&config)?;
    if args.config.is_some() {
        // Flags that make sense beside a file override it.
        if let Some(a) = args.admin {
            config.admin = Some(umbra_proxy::config::Admin { address: a });
        }
    }
    // One thread: a current-thread runtime, which skips the work-stealing
    // scheduler's bookkeeping (shadow work has its own runtime either way).
    let mut runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, sections, source))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, sections: Sections, source: ConfigSource) -> anyhow::Result<()> {
    let admin_address = config.admin.as_ref().map(|a| a.address);
    let analysis = Analysis::start(&sections)?;
    let canary_name = config.canary.as_ref().map(|c| c.name.clone());
    let proxy = Proxy::start_observed(
        config,
        analysis.as_ref().map(|a| a.feed(canary_name.as_deref())),
    )
    .await?;
    let handle = proxy.handle();
    if let Some(a) = &analysis {
        let h = handle.clone();
        a.handle()
            .set_resources(Box::new(move || resource_samples(&h)));
    }
    // The control loops record into the analysis's store; with the analysis
    // off they open the configured one themselves.
    let store = match (analysis.as_ref().and_then(Analysis::store), &sections.store) {
        (Some(s), _) => Some(s),
        (None, Some(s))
            if sections.control.weights.is_some() || sections.control.replicas.is_some() =>
        {
            Some(std::sync::Arc::new(umbra_store::Store::open(&s.path)?))
        }
        (None, _) => None,
    };
    let control = sections
        .control
        .weights
        .clone()
        .map(|w| crate::control::Control::start(w, handle.clone()))
        .transpose()?;
    let (control_stop, control_stopped) = tokio::sync::watch::channel(false);
    let scaling = sections.control.replicas.clone().map(|r| {
        eprintln!("umbra: {}", r.note());
        crate::scaling::ScalingHandle::new(r)
    });
    let scaling_task = scaling.clone().map(|h| {
        let run = crate::scaling::run(h, handle.clone(), store.clone(), control_stopped.clone());
        // Said when it happens: the proxy goes on serving without advice.
        tokio::spawn(async move {
            if let Err(e) = run.await {
                eprintln!("umbra: replicas: stopped: {e:#}");
            }
        })
    });
    let canary = match (&canary_name, &analysis) {
        (None, _) => None,
        (Some(name), Some(a)) => {
            let control = CanaryControl::start(
                sections.control.canary.clone().unwrap_or_default(),
                name,
                handle.clone(),
                a.store(),
                Box::new(|name, d| eprintln!("umbra: {}", crate::canary::describe(name, d))),
            )?;
            a.handle().set_canary(control.clone());
            Some(control)
        }
        (Some(_), None) => {
            bail!("[canary] needs the analysis to judge it: remove `[analysis] enabled = false`")
        }
    };
    let state = admin::AdminState {
        proxy: handle.clone(),
        analysis: analysis.as_ref().map(Analysis::handle),
        canary,
        scaling,
        control: control.as_ref().map(crate::control::Control::handle),
    };
    let weights_task = control.map(|c| {
        tokio::spawn(c.run(
            store.clone(),
            control_stopped,
            |c: &crate::control::Change| {
                let w: Vec<String> = c.weights.iter().map(|(s, w)| format!("{s}={w}")).collect();
                eprintln!("umbra: weights (interval {}) {}", c.interval, w.join(" "));
            },
        ))
    });
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = match admin_address {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("admin listener on {address}"))?;
            eprintln!(
                "umbra: admin on http://{} (/metrics, /api/stats, /api/alerts, /api/capacity)",
                listener.local_addr()?
            );
            Some(tokio::spawn(admin::serve(listener, state, admin_stopped)))
        }
        None => None,
    };
    eprintln!("umbra: proxy on {}", proxy.address);

    wait_for_signals(&handle, &source).await?;
    eprintln!("umbra: draining");
    let _ = control_stop.send(true);
    if let Some(t) = weights_task
        && let Ok(Err(e)) = t.await
    {
        eprintln!("umbra: weights: {e}");
    }
    if let Some(t) = scaling_task {
        let _ = t.await;
    }
    let _ = admin_stop.send(true);
    let cut = proxy.shutdown().await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if cut > 0 {
        eprintln!("umbra: {cut} connections were still open at the drain timeout");
    }
    if let Some(a) = analysis {
        // Off the runtime: the analysis thread joins its sinks' last sends.
        tokio::task::spawn_blocking(move || a.shutdown()).await.ok();
    }
    Ok(())
}

/// The proxy's latest CPU and memory readings, as the analysis takes them.
fn resource_samples(h: &umbra_proxy::ProxyHandle) -> Vec<umbra_analysis::window::ResourceSample> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    h.resource_usage()
        .into_iter()
        .filter_map(|(role, upstream, cpu, memory)| {
            Some(umbra_analysis::window::ResourceSample {
                timestamp_ms: now,
                role: role.parse().ok()?,
                upstream: upstream.into(),
                cpu_cores: cpu,
                memory_bytes: memory.map(|m| m.max(0.0) as u64),
            })
        })
        .collect()
}

#[cfg(unix)]
async fn wait_for_signals(
    handle: &umbra_proxy::ProxyHandle,
    source: &ConfigSource,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // A bad file is reported and the running config kept.
                match source.load() {
                    Ok(config) => { let _ = handle.reload(config); }
                    Err(e) => eprintln!("umbra: configuration not reloaded: {e}"),
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_: &umbra_proxy::ProxyHandle, _: &ConfigSource) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let mut notes = umbra_proxy::check(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let sections = Sections::load(&args.config)?;
    notes.extend(sections.notes());
    notes.extend(
        sections
            .control
            .check(&config)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", args.config.display()))?,
    );
    println!("{}: OK", args.config.display());
    for n in notes {
        println!("  {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The config file's name for messages, or "the command line".
fn source_name(args: &ProxyArgs) -> String {
    args.config.as_ref().map_or_else(
        || "the command line".to_string(),
        |p| p.display().to_string(),
    )
}
