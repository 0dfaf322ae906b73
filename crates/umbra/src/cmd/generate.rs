//! `umbra generate-log`: a synthetic access log with known groups.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use umbra_learn::synth::SynthLog;

/// Write a synthetic access log (nginx combined format plus $request_time).
///
/// Lines are drawn from eight behavioural groups (product pages, mobile images,
/// crawlers, search, API orders, static assets, health checks, logins) with
/// log-normal sizes and latencies and a share of errors. Useful for trying
/// `umbra learn` without production logs, and for benchmarks.
#[derive(Args)]
pub struct GenerateArgs {
    /// Number of lines to write.
    #[arg(long, default_value_t = 10_000)]
    lines: u64,
    /// Random seed: the same seed writes the same log.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Average requests per second, which spaces the timestamps.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Write here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also write the group label of each line, one per line, to this file.
    #[arg(long)]
    labels: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut labels = match &args.labels {
        Some(p) => Some(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let start_ms = 1_700_000_000_000;
    let mut log = SynthLog::new(args.seed, start_ms, args.rate);
    for _ in 0..args.lines {
        let (line, group) = log.next_line();
        writeln!(out, "{line}").context("writing the log")?;
        if let Some(l) = labels.as_mut() {
            writeln!(l, "{group}").context("writing the labels")?;
        }
    }
    out.flush().context("writing the log")?;
    if let Some(mut l) = labels {
        l.flush().context("writing the labels")?;
    }
    Ok(ExitCode::SUCCESS)
}
