//! `umbra demo`: Umbra's main job on embedded defaults, with no input needed.
//!
//! Today the demo covers what is built: learning profiles from the bundled sample
//! log (1,000 lines of a real shop's nginx log) and showing how `--update` folds
//! shifted traffic in with decay. The proxy, load and analysis stages join it as
//! they are built (issue 9 describes the whole demo).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use umbra_core::RequestRecord;
use umbra_learn::profiles::{self, LearnOptions};
use umbra_learn::read::{self, Format};
use umbra_learn::synth::SynthLog;
use umbra_learn::update::{self, UpdateOptions};

use crate::cmd::learn::write_set;
use crate::cmd::profiles::render_table;

const SAMPLE_LOG: &[u8] = include_bytes!("../../assets/shop-access-1k.log");

/// Run Umbra on built-in data: learn profiles from a bundled real access log,
/// then fold in shifted synthetic traffic to show how profiles stay current.
#[derive(Args)]
pub struct DemoArgs {
    /// Keep the learned profile set here (by default it goes to a temporary folder).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
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
    println!("k: {}", learned.set.clustering.reason);
    print!("{}", render_table(&learned.set));

    println!("\n== 2. update: six hours later, traffic shifts to API orders and search");
    let start = learned.set.as_of_ms.unwrap_or(0) + 6 * 3600 * 1000;
    let mut synth = SynthLog::new(7, start, 5.0).only_groups(&[3, 4]);
    let mut text = String::new();
    for _ in 0..600 {
        text.push_str(&synth.next_line().0);
        text.push('\n');
    }
    let shifted = dir.join("shifted.log");
    std::fs::write(&shifted, text)?;
    let mut new_records: Vec<RequestRecord> = Vec::new();
    let shifted_report = read::read_source(&shifted.to_string_lossy(), &Format::Auto, &mut |r| {
        new_records.push(r)
    })?;
    let opts = UpdateOptions {
        half_life_secs: Some(6.0 * 3600.0),
        ..UpdateOptions::default()
    };
    let (updated, rep) = update::update(
        &learned.set,
        &new_records,
        vec![shifted_report.summary()],
        &opts,
    )?;
    println!(
        "half-life 6h: the old traffic now weighs {:.2}; {} new requests, {} new profiles",
        rep.decay,
        new_records.len(),
        rep.created.len()
    );
    print!("{}", render_table(&updated));

    let out = args.output.unwrap_or_else(|| dir.join("profiles.json"));
    write_set(&out, &updated)?;
    println!("\nprofile set written to {}", out.display());
    println!("try: umbra profiles show {}", out.display());
    Ok(ExitCode::SUCCESS)
}
