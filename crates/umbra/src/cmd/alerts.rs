//! `umbra alerts`: the regression alerts the proxy's analysis raised, from the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use umbra_analysis::alert::Alert;
use umbra_store::{AlertQuery, Store};

use crate::analysis::Sections;

/// List the regression alerts raised by `umbra proxy`'s analysis.
///
/// Reads the embedded store the proxy writes (`--store FILE`, or the `[store]
/// path` of `--config FILE`); it can run beside the proxy. Firing alerts come
/// first, then resolved ones, newest first. A running proxy serves the same list
/// at `GET /api/alerts` on its admin port.
///
/// Exit code 0; with `--fail-if-firing`, 3 when any listed alert is firing, so a
/// deploy pipeline can stop on a regression.
///
/// Examples:
///
///   umbra alerts --config umbra.toml
///
///   umbra alerts --store umbra.db --state firing --json
#[derive(Args)]
pub struct AlertsArgs {
    /// The store file.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    store: Option<PathBuf>,
    /// The proxy's configuration file; its `[store] path` is read.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which alerts.
    #[arg(long, default_value = "all", value_parser = ["firing", "resolved", "all"])]
    state: String,
    /// Only the alerts of this profile (its id).
    #[arg(long, value_name = "ID")]
    profile: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON (one array of alerts) instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with code 3 when any listed alert is firing.
    #[arg(long)]
    fail_if_firing: bool,
}

pub fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let path = match (&args.store, &args.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => match Sections::load(c)?.store {
            Some(s) => s.path,
            None => bail!(
                "{}: has no [store] section, so alerts live only in the running proxy (GET /api/alerts on its admin port)",
                c.display()
            ),
        },
        (None, None) => bail!("give --store FILE or --config FILE"),
    };
    if !path.exists() {
        bail!(
            "store {}: no such file (it is created when `umbra proxy` starts with it)",
            path.display()
        );
    }
    let store = Store::open_read_only(&path)?;
    let rows = store.alerts(&AlertQuery {
        state: (args.state != "all").then(|| args.state.clone()),
        profile: args.profile.clone(),
        limit: None,
    })?;
    let mut alerts = Vec::with_capacity(rows.len());
    for row in rows {
        let fingerprint = row.fingerprint.clone();
        let a: Alert = serde_json::from_value(row.body).with_context(|| {
            format!(
                "store {}: alert {fingerprint} cannot be read",
                path.display()
            )
        })?;
        alerts.push(a);
    }
    // Firing first (oldest first, like the proxy's list), then resolved, newest first.
    alerts.sort_by(|a, b| {
        let firing = |x: &Alert| x.resolved_ms.is_none();
        firing(b).cmp(&firing(a)).then_with(|| {
            if firing(a) {
                a.started_ms.cmp(&b.started_ms)
            } else {
                b.resolved_ms.cmp(&a.resolved_ms)
            }
        })
    });
    if let Some(n) = args.limit {
        alerts.truncate(n);
    }
    let any_firing = alerts.iter().any(|a| a.resolved_ms.is_none());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&alerts)?);
    } else if alerts.is_empty() {
        println!("no alerts in {}", path.display());
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header([
            "state", "profile", "role", "metric", "started", "for", "what",
        ]);
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        for a in &alerts {
            let end = a.resolved_ms.unwrap_or(now);
            t.add_row([
                if a.resolved_ms.is_none() {
                    "FIRING".to_string()
                } else {
                    "resolved".to_string()
                },
                a.profile.clone(),
                a.role.to_string(),
                a.metric.to_string(),
                fmt_time(a.started_ms),
                humantime::format_duration(std::time::Duration::from_secs(
                    end.saturating_sub(a.started_ms) / 1000,
                ))
                .to_string(),
                a.summary(),
            ]);
        }
        println!("{t}");
    }
    Ok(if args.fail_if_firing && any_firing {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn fmt_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}
