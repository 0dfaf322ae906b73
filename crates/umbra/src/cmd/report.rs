//! `umbra report`: what the store saw over a period, as HTML and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use umbra_analysis::alert::Alert;
use umbra_load::html::esc;
use umbra_store::{AlertQuery, CapacityRow, EventRow, Store};

use crate::analysis::Sections;

/// Write a report of a period from the store: regressions per profile with
/// their trace links, the profiles that cost the most latency (production and
/// shadow side by side), weight changes, canary decisions, changes of the
/// recommended replicas and capacity curves.
///
/// Reads the store `umbra proxy` writes (`--store FILE`, or the `[store] path`
/// of `--config FILE`); it can run beside the proxy. The HTML is one
/// self-contained file (no scripts, no network); `--markdown` writes the same
/// content for a pull request or a wiki.
///
/// Examples:
///
///   umbra report --config umbra.toml --since 24h -o report.html
///
///   umbra report --store umbra.db --profiles profiles.json --markdown report.md \
///     --trace-url 'http://jaeger:16686/trace/{trace_id}'
#[derive(Args)]
pub struct ReportArgs {
    /// The store file.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    store: Option<PathBuf>,
    /// The proxy's configuration file; its `[store] path` is read.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The period: from this long ago until now.
    #[arg(long, default_value = "24h", value_parser = crate::duration::parse)]
    since: Duration,
    /// Where the HTML report goes.
    #[arg(short, long, value_name = "FILE", default_value = "umbra-report.html")]
    output: PathBuf,
    /// Also write the report as Markdown here.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Name profiles from this profile set (ids alone otherwise).
    #[arg(long, value_name = "FILE")]
    profiles: Option<PathBuf>,
    /// Link trace ids with this URL; `{trace_id}` is replaced.
    #[arg(long, value_name = "URL")]
    trace_url: Option<String>,
}

/// What a report shows, gathered from the store.
pub struct ReportData {
    pub from_ms: u64,
    pub to_ms: u64,
    pub names: BTreeMap<String, String>,
    pub trace_url: Option<String>,
    pub alerts: Vec<Alert>,
    pub costs: Vec<ProfileCost>,
    pub weights: Vec<EventRow>,
    pub canary: Vec<EventRow>,
    /// Changes of the recommended replicas (`[control.replicas]`).
    pub replicas: Vec<EventRow>,
    pub capacity: Vec<CapacityRow>,
}

/// One profile's traffic and latency over the period, per role.
#[derive(Debug, Default, Clone)]
pub struct ProfileCost {
    pub profile: String,
    pub production: RoleCost,
    pub shadow: RoleCost,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RoleCost {
    pub requests: f64,
    /// Total time spent answering, in seconds (requests × mean latency, summed over windows).
    pub latency_s: f64,
    /// p99 of the windows, weighted by their requests.
    pub p99_ms: f64,
    /// Error rate, weighted by requests.
    pub error_rate: f64,
}

impl RoleCost {
    fn add(&mut self, w: &Value) {
        let n = w["requests"].as_f64().unwrap_or(0.0);
        if n <= 0.0 {
            return;
        }
        let total = self.requests + n;
        let blend = |old: f64, new: Option<f64>| match new {
            Some(v) => (old * self.requests + v * n) / total,
            None => old,
        };
        self.latency_s += n * w["mean_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        self.p99_ms = blend(self.p99_ms, w["p99_ms"].as_f64());
        self.error_rate = blend(self.error_rate, w["error_rate"].as_f64());
        self.requests = total;
    }

    fn mean_ms(&self) -> f64 {
        if self.requests > 0.0 {
            self.latency_s * 1000.0 / self.requests
        } else {
            0.0
        }
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let path = match (&args.store, &args.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => match Sections::load(c)?.store {
            Some(s) => s.path,
            None => bail!(
                "{}: has no [store] section, so there is nothing kept to report on",
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
    let names = match &args.profiles {
        Some(p) => umbra_core::ProfileSet::load(p)?
            .profiles
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect(),
        None => BTreeMap::new(),
    };
    let to_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let from_ms = to_ms.saturating_sub(args.since.as_millis() as u64);
    let data = gather(&store, from_ms, to_ms, names, args.trace_url.clone())?;
    std::fs::write(&args.output, html(&data))
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    if let Some(md) = &args.markdown {
        std::fs::write(md, markdown(&data)).with_context(|| format!("writing {}", md.display()))?;
        println!("wrote {}", md.display());
    }
    println!(
        "{} regressions, {} profiles, {} weight changes, {} canary decisions, {} replica changes, {} capacity runs",
        data.alerts.len(),
        data.costs.len(),
        data.weights.len(),
        data.canary.len(),
        data.replicas.len(),
        data.capacity.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads the period's alerts, windows, events and capacity runs.
pub fn gather(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
    names: BTreeMap<String, String>,
    trace_url: Option<String>,
) -> anyhow::Result<ReportData> {
    let mut alerts = Vec::new();
    for row in store.alerts(&AlertQuery::default())? {
        // An alert belongs to the period if it was firing at any time in it.
        let ended = row.resolved_ms.unwrap_or(u64::MAX);
        if row.started_ms < to_ms && ended >= from_ms {
            let fp = row.fingerprint.clone();
            alerts.push(
                serde_json::from_value::<Alert>(row.body)
                    .with_context(|| format!("store {}: alert {fp}", store.path()))?,
            );
        }
    }
    alerts.sort_by_key(|a| a.started_ms);
    let mut costs: BTreeMap<String, ProfileCost> = BTreeMap::new();
    for w in store.windows(from_ms, to_ms)? {
        let c = costs
            .entry(w.profile.clone())
            .or_insert_with(|| ProfileCost {
                profile: w.profile.clone(),
                ..ProfileCost::default()
            });
        match w.role.as_str() {
            "production" => c.production.add(&w.body),
            "shadow" => c.shadow.add(&w.body),
            _ => {}
        }
    }
    let mut costs: Vec<ProfileCost> = costs.into_values().collect();
    costs.sort_by(|a, b| b.production.latency_s.total_cmp(&a.production.latency_s));
    let capacity = store
        .capacities(None)?
        .into_iter()
        .filter(|c| c.measured_ms >= from_ms && c.measured_ms < to_ms)
        .collect();
    Ok(ReportData {
        from_ms,
        to_ms,
        names,
        trace_url,
        alerts,
        costs,
        weights: store.events(Some("weights"), from_ms, to_ms)?,
        canary: store.events(Some("canary"), from_ms, to_ms)?,
        replicas: store.events(Some("replicas"), from_ms, to_ms)?,
        capacity,
    })
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

impl ReportData {
    fn name(&self, id: &str) -> String {
        match self.names.get(id) {
            Some(n) => format!("{n} ({id})"),
            None => id.to_string(),
        }
    }

    fn trace_link(&self, id: &str) -> Option<String> {
        self.trace_url.as_ref().map(|t| t.replace("{trace_id}", id))
    }
}

/// Compact JSON of an event body for a table cell.
fn body_text(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub fn html(d: &ReportData) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Umbra report</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
         body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#1b1f24}}\
         table{{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}}th,td{{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}}h2{{margin-top:1.6em}}.bad{{color:#b42318}}.ok{{color:#067647}}\
         .muted{{color:#656d76}}code{{font-size:12px}}</style></head><body>\
         <h1>Umbra report</h1><p class=\"muted\">{} to {}</p>",
        esc(&time(d.from_ms)),
        esc(&time(d.to_ms))
    );

    h.push_str("<h2>Regressions</h2>");
    if d.alerts.is_empty() {
        h.push_str("<p class=\"ok\">No regression was declared in this period.</p>");
    } else {
        h.push_str("<table><tr><th>profile</th><th>role</th><th>metric</th><th>started</th><th>state</th><th>what</th><th>slow requests</th></tr>");
        for a in &d.alerts {
            let traces: Vec<String> = a
                .verdict
                .trace_ids
                .iter()
                .map(|t| {
                    let id = t.to_string();
                    match d.trace_link(&id) {
                        Some(url) => {
                            format!("<a href=\"{}\"><code>{}</code></a>", esc(&url), esc(&id))
                        }
                        None => format!("<code>{}</code>", esc(&id)),
                    }
                })
                .collect();
            let state = match a.resolved_ms {
                Some(r) => format!("resolved {}", esc(&time(r))),
                None => "<span class=\"bad\">firing</span>".to_string(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.name(&a.profile)),
                esc(a.role.as_str()),
                esc(a.metric.as_str()),
                esc(&time(a.started_ms)),
                esc(&a.summary()),
                if traces.is_empty() {
                    "<span class=\"muted\">none recorded</span>".to_string()
                } else {
                    traces.join("<br>")
                }
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Where the latency goes</h2><p class=\"muted\">Profiles by the time production spent answering them (requests × mean latency); the shadow beside it.</p>");
    if d.costs.is_empty() {
        h.push_str("<p class=\"muted\">No measured windows in this period.</p>");
    } else {
        h.push_str("<table><tr><th>profile</th><th>requests</th><th>production time</th><th>mean</th><th>p99</th><th>errors</th><th>shadow mean</th><th>shadow p99</th><th>shadow vs production</th></tr>");
        for c in &d.costs {
            let (p, s) = (&c.production, &c.shadow);
            let delta = if p.requests > 0.0 && s.requests > 0.0 && p.mean_ms() > 0.0 {
                let r = s.mean_ms() / p.mean_ms() - 1.0;
                let class = if r > 0.2 { "bad" } else { "ok" };
                format!("<span class=\"{class}\">{:+.1}%</span>", r * 100.0)
            } else {
                "<span class=\"muted\">-</span>".to_string()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.1} s</td><td class=\"n\">{:.1} ms</td><td class=\"n\">{:.1} ms</td><td class=\"n\">{:.2}%</td><td class=\"n\">{:.1} ms</td><td class=\"n\">{:.1} ms</td><td class=\"n\">{delta}</td></tr>",
                esc(&d.name(&c.profile)),
                p.requests,
                p.latency_s,
                p.mean_ms(),
                p.p99_ms,
                p.error_rate * 100.0,
                s.mean_ms(),
                s.p99_ms
            );
        }
        h.push_str("</table>");
    }

    for (title, events, empty) in [
        (
            "Weight changes",
            &d.weights,
            "No weight change was recorded.",
        ),
        (
            "Canary decisions",
            &d.canary,
            "No canary decision was recorded.",
        ),
    ] {
        let _ = write!(h, "<h2>{title}</h2>");
        if events.is_empty() {
            let _ = write!(h, "<p class=\"muted\">{empty}</p>");
            continue;
        }
        h.push_str("<table><tr><th>when</th><th>what</th></tr>");
        for e in events.iter() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&time(e.at_ms)),
                esc(&body_text(&e.body))
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Replica advice</h2>");
    if d.replicas.is_empty() {
        h.push_str("<p class=\"muted\">No change of the recommended replicas was recorded.</p>");
    } else {
        h.push_str(
            "<table><tr><th>when</th><th>replicas</th><th>peak</th><th>now</th><th>model</th></tr>",
        );
        for e in &d.replicas {
            let r = replica_change(&e.body);
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&time(e.at_ms)),
                esc(&r.replicas),
                esc(&r.peak),
                esc(&r.now),
                esc(&r.method)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Capacity</h2>");
    if d.capacity.is_empty() {
        h.push_str("<p class=\"muted\">No capacity run in this period (<code>umbra capacity</code> records one).</p>");
    }
    for c in &d.capacity {
        let _ = write!(
            h,
            "<h3>{} <span class=\"muted\">{}</span></h3><p>{}</p>{}",
            esc(&c.target),
            esc(&time(c.measured_ms)),
            match c.capacity_rps {
                Some(r) => format!("capacity <b>{r:.0} req/s</b> per instance for this mix"),
                None => "no rate met the objectives".to_string(),
            },
            capacity_svg(&c.body)
        );
    }
    h.push_str("<p class=\"muted\">Written by umbra report.</p></body></html>\n");
    h
}

/// One capacity step: offered and achieved req/s, p99 ms, and whether it was good.
type Step = (f64, f64, f64, bool);

/// Offered against achieved rate and p99, one point per step, as inline SVG.
fn capacity_svg(body: &Value) -> String {
    let points: Vec<Step> = body["curve"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|p| {
                    Some((
                        p["offered_rps"].as_f64()?,
                        p["achieved_rps"].as_f64()?,
                        p["p99_ms"].as_f64().unwrap_or(0.0),
                        p["ok"].as_bool().unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return String::new();
    }
    let max_x = points.iter().map(|p| p.0.max(p.1)).fold(1.0, f64::max);
    let max_p99 = points.iter().map(|p| p.2).fold(1.0, f64::max);
    let (w, hgt, pad) = (640.0, 220.0, 36.0);
    let x = |v: f64| pad + v / max_x * (w - 2.0 * pad);
    let y = |v: f64, max: f64| hgt - pad - v / max * (hgt - 2.0 * pad);
    let mut sorted = points.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line = |f: &dyn Fn(&Step) -> (f64, f64)| {
        sorted
            .iter()
            .map(|p| {
                let (a, b) = f(p);
                format!("{a:.1},{b:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" role=\"img\" aria-label=\"capacity curve\">\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"{r}\" y=\"{t}\" text-anchor=\"end\" font-size=\"11\">offered req/s (max {max_x:.0})</text>\
         <text x=\"{pad}\" y=\"14\" font-size=\"11\">achieved req/s (blue), p99 (orange, max {max_p99:.0} ms)</text>",
        b = hgt - pad,
        r = w - pad,
        t = hgt - 8.0,
    );
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#2f6feb\" stroke-width=\"2\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#e8590c\" stroke-width=\"2\" points=\"{}\"/>",
        line(&|p| (x(p.0), y(p.1, max_x))),
        line(&|p| (x(p.0), y(p.2, max_p99)))
    );
    for p in &sorted {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"/>",
            x(p.0),
            y(p.1, max_x),
            if p.3 { "#067647" } else { "#b42318" }
        );
    }
    s.push_str("</svg>");
    s
}

/// One change of the recommended replicas, as table cells.
struct ReplicaChange {
    replicas: String,
    peak: String,
    now: String,
    method: String,
}

fn replica_change(b: &Value) -> ReplicaChange {
    let num = |k: &str| b[k].as_f64();
    let count = |k: &str| b[k].as_u64().map_or("?".to_string(), |n| n.to_string());
    ReplicaChange {
        replicas: match b["previous_replicas"].as_u64() {
            Some(p) => format!("{p} → {}", count("recommended_replicas")),
            None => count("recommended_replicas"),
        },
        peak: match num("peak_rps") {
            Some(p) => format!(
                "{p:.1} req/s at {} (horizon {})",
                b["peak_at"].as_str().unwrap_or("?"),
                b["horizon"].as_str().unwrap_or("?")
            ),
            None => "?".to_string(),
        },
        now: match num("current_rps") {
            Some(c) => format!("{c:.1} req/s, needs {}", count("current_replicas")),
            None => "?".to_string(),
        },
        method: b["method"].as_str().unwrap_or("?").to_string(),
    }
}

/// Markdown cells cannot hold `|` or line breaks.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(d: &ReportData) -> String {
    let mut m = format!(
        "# Umbra report\n\n{} to {}\n\n## Regressions\n\n",
        time(d.from_ms),
        time(d.to_ms)
    );
    if d.alerts.is_empty() {
        m.push_str("No regression was declared in this period.\n");
    } else {
        m.push_str("| profile | role | metric | started | state | what | slow requests |\n|---|---|---|---|---|---|---|\n");
        for a in &d.alerts {
            let traces: Vec<String> = a
                .verdict
                .trace_ids
                .iter()
                .map(|t| {
                    let id = t.to_string();
                    match d.trace_link(&id) {
                        Some(url) => format!("[`{id}`]({url})"),
                        None => format!("`{id}`"),
                    }
                })
                .collect();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md(&d.name(&a.profile)),
                a.role,
                a.metric,
                time(a.started_ms),
                a.resolved_ms.map_or("**firing**".to_string(), |r| format!(
                    "resolved {}",
                    time(r)
                )),
                md(&a.summary()),
                if traces.is_empty() {
                    "none recorded".to_string()
                } else {
                    traces.join(" ")
                }
            );
        }
    }
    m.push_str("\n## Where the latency goes\n\n");
    if d.costs.is_empty() {
        m.push_str("No measured windows in this period.\n");
    } else {
        m.push_str("| profile | requests | production time | mean | p99 | errors | shadow mean | shadow p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for c in &d.costs {
            let (p, s) = (&c.production, &c.shadow);
            let _ = writeln!(
                m,
                "| {} | {:.0} | {:.1} s | {:.1} ms | {:.1} ms | {:.2}% | {:.1} ms | {:.1} ms |",
                md(&d.name(&c.profile)),
                p.requests,
                p.latency_s,
                p.mean_ms(),
                p.p99_ms,
                p.error_rate * 100.0,
                s.mean_ms(),
                s.p99_ms
            );
        }
    }
    for (title, events, empty) in [
        (
            "Weight changes",
            &d.weights,
            "No weight change was recorded.",
        ),
        (
            "Canary decisions",
            &d.canary,
            "No canary decision was recorded.",
        ),
    ] {
        let _ = write!(m, "\n## {title}\n\n");
        if events.is_empty() {
            let _ = writeln!(m, "{empty}");
            continue;
        }
        for e in events.iter() {
            let _ = writeln!(m, "- {}: {}", time(e.at_ms), md(&body_text(&e.body)));
        }
    }
    m.push_str("\n## Replica advice\n\n");
    if d.replicas.is_empty() {
        m.push_str("No change of the recommended replicas was recorded.\n");
    } else {
        m.push_str("| when | replicas | peak | now | model |\n|---|---:|---|---|---|\n");
        for e in &d.replicas {
            let r = replica_change(&e.body);
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                time(e.at_ms),
                md(&r.replicas),
                md(&r.peak),
                md(&r.now),
                md(&r.method)
            );
        }
    }
    m.push_str("\n## Capacity\n\n");
    if d.capacity.is_empty() {
        m.push_str("No capacity run in this period.\n");
    }
    for c in &d.capacity {
        let _ = writeln!(
            m,
            "- {} at {}: {}",
            c.target,
            time(c.measured_ms),
            c.capacity_rps
                .map_or("no rate met the objectives".to_string(), |r| format!(
                    "{r:.0} req/s per instance"
                ))
        );
    }
    m
}
