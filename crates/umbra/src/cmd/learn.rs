//! `umbra learn`: access logs and HAR files in, a profile set out.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use umbra_core::{ProfileSet, RequestRecord, SourceSummary};
use umbra_learn::profiles::{self, KSpec, LearnOptions};
use umbra_learn::read::{self, BadBound, Format};
use umbra_learn::update::{self, UpdateOptions};

use crate::cmd::profiles::render_table;
use crate::duration;

/// Learn request profiles from access logs or HAR files.
///
/// Reads nginx/Apache combined and common logs (with trailing fields such as
/// $request_time), any nginx log_format, JSON lines and HAR 1.2 files, plain or
/// gzip; `-` reads standard input. Requests are templated
/// (`/users/8812` → `/users/{id}`), turned into feature vectors and clustered with
/// k-means; each cluster becomes a profile with its share of traffic and the
/// request templates inside it. The profile set is written as JSON (see the
/// README, "The profile file").
///
/// Bad lines are counted and the first few reported with file and line; more
/// than --max-bad of them fails the command. Exit codes: 0 written, 1 error,
/// 2 bad arguments.
#[derive(Args)]
pub struct LearnArgs {
    /// Log files to read (plain or gzip); `-` for standard input.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<String>,
    /// Where to write the profile set.
    #[arg(short, long, default_value = "profiles.json")]
    output: PathBuf,
    /// Input format: auto, combined, common, jsonl[:field=path,...], har,
    /// or nginx:'<log_format string>' for custom nginx formats.
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: Format,
    /// Number of profiles: a number, `auto` (chosen by silhouette among 2..16) or `auto:N`.
    #[arg(long, default_value = "auto", value_parser = parse_k)]
    k: KSpec,
    /// Random seed for clustering; the same seed and input give the same profiles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// k-means restarts (the best is kept).
    #[arg(long, default_value_t = 4)]
    restarts: usize,
    /// Fail when more than this share (`5%`) or number (`100`) of lines of a file are bad.
    #[arg(long, default_value = "5%", value_parser = parse_bad_bound)]
    max_bad: BadBound,
    /// Fold the logs into this existing profile set instead of learning from scratch,
    /// with exponential decay by the records' timestamps.
    #[arg(long, value_name = "PROFILES")]
    update: Option<PathBuf>,
    /// Half-life of the decay: a request this much older than the newest counts half.
    /// Defaults to the set's own, or 6h.
    #[arg(long, value_parser = duration::parse)]
    half_life: Option<Duration>,
    /// Baseline request rate (per second) stored in the set; measured from the log's timestamps by default.
    #[arg(long)]
    baseline_rps: Option<f64>,
    /// Stress multiplier stored in the set (the load generator sends baseline × stress).
    #[arg(long, default_value_t = 1.0)]
    stress: f64,
    /// Share below which a profile retires on update.
    #[arg(long, default_value_t = 0.005)]
    retire_below: f64,
    /// Keep reading the (single) log as it grows and rewrite the set every --interval.
    #[arg(long)]
    follow: bool,
    /// With --follow: how often the set is rewritten.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    interval: Duration,
    /// With --follow: stop after this long (default: run until interrupted).
    #[arg(long = "for", value_parser = duration::parse, value_name = "DURATION")]
    run_for: Option<Duration>,
    /// Print a JSON summary on standard output instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the feature matrix as a NumPy .npy file (to compare clusterings with other tools).
    #[arg(long, value_name = "FILE.npy")]
    features_out: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_k(s: &str) -> Result<KSpec, String> {
    s.parse()
}

fn parse_bad_bound(s: &str) -> Result<BadBound, String> {
    s.parse()
}

pub fn run(args: LearnArgs) -> anyhow::Result<ExitCode> {
    if !(args.stress.is_finite() && args.stress >= 0.0) {
        bail!("--stress {}: expected a number >= 0", args.stress);
    }
    if let Some(r) = args.baseline_rps
        && !(r.is_finite() && r >= 0.0)
    {
        bail!("--baseline-rps {r}: expected a number >= 0");
    }
    if args.follow {
        return follow(args);
    }
    let started = Instant::now();
    let (records, sources) = read_all(&args.logs, &args.format, &args.max_bad)?;
    let read_secs = started.elapsed().as_secs_f64();
    let existing = match &args.update {
        Some(p) => Some(ProfileSet::load(p).with_context(|| "cannot update".to_string())?),
        None => None,
    };
    let (set, summary) = fold(existing.as_ref(), &records, sources, &args)?;
    write_set(&args.output, &set)?;
    let total_secs = started.elapsed().as_secs_f64();
    if args.json {
        let out = serde_json::json!({
            "output": args.output.display().to_string(),
            "records": records.len(),
            "profiles": set.profiles.len(),
            "k_choice": set.clustering.k_choice,
            "reason": set.clustering.reason,
            "inertia": set.clustering.inertia,
            "silhouette": set.clustering.silhouette,
            "sources": set.sources,
            "seconds": { "read": read_secs, "total": total_secs, "featurise": summary.featurise_secs, "cluster": summary.cluster_secs },
            "update": summary.update,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_table(&set));
        eprintln!(
            "wrote {} profile{} to {} ({} requests in {:.2} s)",
            set.profiles.len(),
            if set.profiles.len() == 1 { "" } else { "s" },
            args.output.display(),
            records.len(),
            total_secs
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `fold` did, for the summary.
struct FoldSummary {
    featurise_secs: Option<f64>,
    cluster_secs: Option<f64>,
    update: Option<serde_json::Value>,
}

/// Learns a new set, or updates `existing`, and reports what happened on stderr.
fn fold(
    existing: Option<&ProfileSet>,
    records: &[RequestRecord],
    sources: Vec<SourceSummary>,
    args: &LearnArgs,
) -> anyhow::Result<(ProfileSet, FoldSummary)> {
    let half_life = args.half_life.map(|d| d.as_secs_f64());
    match existing {
        Some(set) => {
            let opts = UpdateOptions {
                half_life_secs: half_life,
                seed: args.seed,
                restarts: args.restarts,
                ..UpdateOptions::default()
            };
            let (mut set, report) =
                update::update(set, records, sources, &opts).context("updating the profile set")?;
            if let Some(r) = args.baseline_rps {
                set.baseline_rps = r;
            }
            if args.stress != 1.0 {
                set.stress = args.stress;
            }
            eprintln!(
                "update: old traffic weighs {:.3} (half-life {}), {} requests joined existing profiles, {} were new behaviour",
                report.decay,
                humantime::format_duration(Duration::from_secs_f64(report.half_life_secs.round())),
                report.matched,
                report.novel
            );
            for n in &report.created {
                eprintln!("update: new profile {n}");
            }
            for n in &report.retired {
                eprintln!(
                    "update: retired {n} (share fell below {})",
                    set.retire_below
                );
            }
            if let Some(p) = &args.features_out {
                eprintln!(
                    "note: --features-out is written only when learning from scratch, not for {}",
                    p.display()
                );
            }
            let update = serde_json::json!({
                "decay": report.decay, "half_life_secs": report.half_life_secs,
                "matched": report.matched, "novel": report.novel,
                "created": report.created, "retired": report.retired,
            });
            Ok((
                set,
                FoldSummary {
                    featurise_secs: None,
                    cluster_secs: None,
                    update: Some(update),
                },
            ))
        }
        None => {
            let opts = LearnOptions {
                k: args.k,
                seed: args.seed,
                restarts: args.restarts,
                half_life_secs: half_life,
                baseline_rps: args.baseline_rps,
                stress: args.stress,
                retire_below: args.retire_below,
                ..LearnOptions::default()
            };
            let learned = profiles::learn(records, sources, &opts).context("learning profiles")?;
            eprintln!(
                "clustering: {} profiles ({}): {}",
                learned.set.profiles.len(),
                learned.set.clustering.k_choice,
                learned.set.clustering.reason
            );
            if let Some(p) = &args.features_out {
                learned
                    .features
                    .write_npy(p)
                    .with_context(|| format!("cannot write {}", p.display()))?;
                eprintln!(
                    "features: {} × {} written to {}",
                    learned.features.rows,
                    learned.features.dims,
                    p.display()
                );
            }
            let summary = FoldSummary {
                featurise_secs: Some(learned.timings.featurise_secs),
                cluster_secs: Some(learned.timings.cluster_secs),
                update: None,
            };
            Ok((learned.set, summary))
        }
    }
}

/// Reads every input, reporting per file on stderr, and fails past the bad-line bound.
fn read_all(
    logs: &[String],
    format: &Format,
    max_bad: &BadBound,
) -> anyhow::Result<(Vec<RequestRecord>, Vec<SourceSummary>)> {
    let mut records = Vec::new();
    let mut sources = Vec::new();
    for name in logs {
        // Reserve for the file's lines up front (about 200 bytes a line): growing a
        // vector of a million records by doubling costs more than parsing them.
        if let Ok(meta) = std::fs::metadata(name) {
            let estimate = (meta.len() / 200).min(50_000_000) as usize;
            records.reserve(estimate);
        }
        let report = read::read_source(name, format, &mut |r| records.push(r))
            .with_context(|| format!("cannot learn from {name}"))?;
        let how = if report.detected { " (detected)" } else { "" };
        eprintln!(
            "{}: {}{how}, {} requests, {} bad lines",
            report.name,
            report.format.describe(),
            report.records,
            report.bad
        );
        for b in &report.first_bad {
            eprintln!("  {b}");
        }
        if report.bad as usize > report.first_bad.len() {
            eprintln!(
                "  ... and {} more",
                report.bad as usize - report.first_bad.len()
            );
        }
        if max_bad.exceeded(report.records, report.bad) {
            bail!(
                "{name}: {} of {} lines are bad, more than --max-bad {max_bad}; is --format right? (it read as {})",
                report.bad,
                report.records + report.bad,
                report.format.describe()
            );
        }
        sources.push(report.summary());
    }
    Ok((records, sources))
}

/// Writes the set through a temporary file and a rename, so a reader (the proxy
/// hot-reloading it) never sees half a file.
pub fn write_set(path: &Path, set: &ProfileSet) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("profiles.json")
    ));
    std::fs::write(&tmp, set.to_json() + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `--follow`: tail one log and rewrite the set every interval.
fn follow(args: LearnArgs) -> anyhow::Result<ExitCode> {
    if args.logs.len() != 1 {
        bail!("--follow reads exactly one log, got {}", args.logs.len());
    }
    let name = args.logs[0].clone();
    let format = match &args.format {
        Format::Auto => detect_from_start(&name)?,
        f => f.clone(),
    };
    if matches!(format, Format::Har) {
        bail!("--follow reads line formats; {name} is a HAR file");
    }
    let mut parser = read::line_parser(&format).with_context(|| format!("cannot follow {name}"))?;
    eprintln!(
        "following {name} as {}; the set is rewritten every {}",
        format.describe(),
        humantime::format_duration(args.interval)
    );

    let pending: Arc<Mutex<(Vec<RequestRecord>, u64, u64)>> =
        Arc::new(Mutex::new((Vec::new(), 0, 0)));
    let shared = Arc::clone(&pending);
    let reader_name = name.clone();
    std::thread::spawn(move || {
        let on_line = |line: &[u8], line_no: u64| {
            let parsed = parser.parse(line);
            let mut guard = match shared.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            match parsed {
                Ok(Some(r)) => {
                    guard.0.push(r);
                    guard.1 += 1;
                }
                Ok(None) => {}
                Err(reason) => {
                    guard.2 += 1;
                    if guard.2 <= 5 {
                        eprintln!("{reader_name} line {line_no}: {reason}");
                    }
                }
            }
        };
        if let Err(e) = tail(&reader_name, on_line) {
            eprintln!("error: following {reader_name}: {e:#}");
        }
    });

    let started = Instant::now();
    let mut set: Option<ProfileSet> = match &args.update {
        Some(p) => Some(ProfileSet::load(p)?),
        None if args.output.exists() => None,
        None => None,
    };
    loop {
        let remaining = args.run_for.map(|d| d.saturating_sub(started.elapsed()));
        let nap = match remaining {
            Some(r) => r.min(args.interval),
            None => args.interval,
        };
        std::thread::sleep(nap);
        let (batch, seen, bad) = {
            let mut guard = match pending.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let batch = std::mem::take(&mut guard.0);
            (batch, guard.1, guard.2)
        };
        let done = remaining.is_some_and(|r| r <= nap);
        if !batch.is_empty() {
            if args.max_bad.exceeded(seen, bad) {
                bail!(
                    "{name}: {bad} of {} lines are bad, more than --max-bad {}",
                    seen + bad,
                    args.max_bad
                );
            }
            let source = SourceSummary {
                name: name.clone(),
                format: format.describe(),
                records: batch.len() as u64,
                bad,
                first_ms: batch.iter().filter_map(|r| r.timestamp_ms).min(),
                last_ms: batch.iter().filter_map(|r| r.timestamp_ms).max(),
            };
            let (next, _) = fold(set.as_ref(), &batch, vec![source], &args)?;
            write_set(&args.output, &next)?;
            eprintln!(
                "{}: {} profiles after {} requests ({} bad lines)",
                args.output.display(),
                next.profiles.len(),
                seen,
                bad
            );
            set = Some(next);
        }
        if done {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the first lines of a file to pick its format.
fn detect_from_start(name: &str) -> anyhow::Result<Format> {
    if name == "-" {
        bail!("--follow on standard input needs --format (it cannot look ahead to detect one)");
    }
    let f = std::fs::File::open(name).with_context(|| format!("cannot open {name}"))?;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut r = BufReader::new(f);
    for _ in 0..20 {
        let mut buf = Vec::new();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if !buf.iter().all(u8::is_ascii_whitespace) {
            lines.push(buf);
        }
    }
    if lines.is_empty() {
        bail!("{name} is empty: give --format so --follow knows what to expect");
    }
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    Ok(read::detect(name, &refs)?)
}

/// Calls `on_line` for every complete line of a growing file, following it
/// across truncation and rotation (a new file at the same path), like `tail -F`.
fn tail(name: &str, mut on_line: impl FnMut(&[u8], u64)) -> anyhow::Result<()> {
    if name == "-" {
        let stdin = std::io::stdin();
        let mut r = stdin.lock();
        let mut buf = Vec::new();
        let mut line_no = 0;
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            line_no += 1;
            on_line(&buf, line_no);
        }
    }
    let open = || std::fs::File::open(name).with_context(|| format!("cannot open {name}"));
    let mut file = open()?;
    let mut identity = file_identity(&file);
    let mut pos = 0u64;
    let mut line_no = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n > 0 {
            pos += n as u64;
            partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(i) = memchr_newline(&partial[start..]) {
                line_no += 1;
                on_line(&partial[start..start + i + 1], line_no);
                start += i + 1;
            }
            partial.drain(..start);
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated (new file at the path) or truncated: start over from the top.
        if let Ok(meta) = std::fs::metadata(name) {
            let rotated = file_identity_of(&meta) != identity;
            if rotated || meta.len() < pos {
                file = open()?;
                identity = file_identity(&file);
                if !rotated {
                    file.seek(SeekFrom::Start(0))?;
                }
                pos = 0;
                partial.clear();
                line_no = 0;
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

#[cfg(unix)]
fn file_identity_of(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_identity_of(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

fn file_identity(f: &std::fs::File) -> (u64, u64) {
    f.metadata().map(|m| file_identity_of(&m)).unwrap_or((0, 0))
}
