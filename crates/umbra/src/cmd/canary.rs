//! `umbra canary`: the canary's stage, and an operator's overrides, through the
//! running proxy's admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Show or steer the canary of a running proxy.
///
/// The proxy moves its `[canary]` through its stages by itself: a shadow stage
/// (copies only), then shares of live traffic (1%, 5%, 25%, 50% by default),
/// judging it against production per profile at each stage, and rolling it
/// back at once when it fails. These commands read its state and override it
/// through the admin API (`/api/canary`); the state is kept in the store, so
/// a restarted proxy resumes the same stage.
///
/// Exit codes: 0 done; 1 error (proxy unreachable, bad answer); 2 the action
/// is not allowed in the canary's state (promoting a rolled-back canary); 3
/// (`status` only, with `--fail-if-rolled-back`) the canary was rolled back.
///
/// Examples:
///
///   umbra canary status --config umbra.toml
///
///   umbra canary rollback --admin 127.0.0.1:9090 --reason "checkout errors in the logs"
#[derive(Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    action: CanaryAction,
}

#[derive(Subcommand)]
enum CanaryAction {
    /// The stage, the share of traffic, the judgement so far per profile, and the latest decisions.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the admin API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Exit with 3 when the canary was rolled back (for CI).
        #[arg(long)]
        fail_if_rolled_back: bool,
    },
    /// Move the canary one stage forward now (from the last stage: to 100%).
    Promote(ActionArgs),
    /// Take all traffic off the canary now.
    Rollback(ActionArgs),
    /// Stop stage changes (a confirmed failure still rolls back).
    Pause(ActionArgs),
    /// Let the judge move the canary again.
    Resume(ActionArgs),
}

#[derive(Args)]
struct ActionArgs {
    #[command(flatten)]
    target: Target,
    /// Why, kept in the canary's history and the store's event log.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the admin API's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Which proxy: its admin address, or the config file that names it.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// The proxy's admin address (`[admin] address`).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The proxy's configuration file; its `[admin] address` is used.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Target {
    fn address(&self) -> anyhow::Result<SocketAddr> {
        if let Some(a) = self.admin {
            return Ok(a);
        }
        let Some(path) = &self.config else {
            bail!("give --admin ADDR or --config FILE");
        };
        let config = umbra_proxy::config::Config::load(path)?;
        match config.admin {
            Some(a) => Ok(a.address),
            None => bail!(
                "{}: no [admin] section, so the proxy has no admin API to ask; give --admin ADDR",
                path.display()
            ),
        }
    }
}

pub fn run(args: CanaryArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        CanaryAction::Status {
            target,
            json,
            fail_if_rolled_back,
        } => {
            let admin = target.address()?;
            let (status, body) = request(admin, "GET", "/api/canary", None)?;
            if status != 200 {
                bail!("{}", error_of(admin, status, &body));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", summary(&body));
            }
            if fail_if_rolled_back && body["phase"]["name"] == "rolled_back" {
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        CanaryAction::Promote(a) => act("promote", a),
        CanaryAction::Rollback(a) => act("rollback", a),
        CanaryAction::Pause(a) => act("pause", a),
        CanaryAction::Resume(a) => act("resume", a),
    }
}

fn act(action: &str, args: ActionArgs) -> anyhow::Result<ExitCode> {
    let admin = args.target.address()?;
    let body = json!({ "reason": args.reason });
    let (status, answer) = request(admin, "POST", &format!("/api/canary/{action}"), Some(body))?;
    match status {
        200 => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", answer["decision"].as_str().unwrap_or("done"));
            }
            Ok(ExitCode::SUCCESS)
        }
        409 => {
            eprintln!("error: {}", error_of(admin, status, &answer));
            Ok(ExitCode::from(2))
        }
        _ => bail!("{}", error_of(admin, status, &answer)),
    }
}

fn error_of(admin: SocketAddr, status: u16, body: &Value) -> String {
    format!(
        "the proxy at {admin} answered {status}: {}",
        body["error"].as_str().unwrap_or("(no reason given)")
    )
}

/// The state for people: stage, share, judgement per profile, last decisions.
fn summary(b: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "canary {}: {}{}",
        b["name"].as_str().unwrap_or("?"),
        b["stage"].as_str().unwrap_or("?"),
        if b["paused"] == true { " (paused)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  traffic: {}% of live requests{}",
        b["percent"].as_f64().unwrap_or(0.0),
        if b["mirror"] == true {
            ", and copies of requests (shadow stage)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  this stage: {}s of {}s, judged {} (score {}), {} holds",
        b["elapsed_s"],
        b["interval_s"],
        b["outcome"].as_str().unwrap_or("?"),
        b["score"]
            .as_f64()
            .map_or("-".to_string(), |s| format!("{s:.0}")),
        b["holds"]
    );
    for p in b["profiles"].as_array().into_iter().flatten() {
        let metrics: Vec<String> = p["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} {}{}",
                    m["metric"].as_str().unwrap_or("?"),
                    m["result"].as_str().unwrap_or("?"),
                    m["change"]
                        .as_f64()
                        .map_or(String::new(), |c| format!(" ({:+.1}%)", c * 100.0))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}: {} ({} canary / {} production requests): {}",
            p["profile"].as_str().unwrap_or("?"),
            p["result"].as_str().unwrap_or("?"),
            p["canary_requests"],
            p["production_requests"],
            metrics.join(", ")
        );
    }
    let history = b["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        let _ = writeln!(out, "  decisions, newest first:");
        for d in history.iter().take(10) {
            let at = d["at_ms"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {at}  {}: {}",
                d["outcome"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("")
            );
        }
    }
    out
}

/// One request to the admin API; the answer's status and JSON body.
fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"));
        let bytes = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes))?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .with_context(|| format!("the proxy's admin API at {admin} did not answer in 10s"))?
            .with_context(|| format!("cannot reach the proxy's admin API at {admin}"))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer of {admin}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({"error": String::from_utf8_lossy(&bytes).trim().to_string()}),
        );
        Ok((status, value))
    })
}
