//! `umbra detect`: anomaly scores for an exported time series.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use umbra_analysis::detect::DetectorSpec;
use umbra_analysis::series::{
    self, Region, RowPosition, ScoreOptions, Scored, Series, SeriesFormat,
};
use umbra_learn::read::BadBound;

/// Score a time series for anomalies, row by row.
///
/// Reads `timestamp,value` CSV rows (a header line is recognised; blank lines
/// and `#` comments are skipped) or Prometheus range-query JSON (the body of
/// /api/v1/query_range; every result is a series of its own). Timestamps are
/// Unix seconds, Unix milliseconds (numbers from 1e11 up) or RFC 3339.
///
/// Writes one CSV line for every input row: `timestamp,value,score,flag`, the
/// timestamp and value as they were written, the detector's anomaly score in
/// [0, 1] and 1 when the score reaches --threshold (with a leading `series`
/// column when the JSON held several series). A score of 0.5 is the
/// detector's own limit.
///
/// Rows are scored in timestamp order. Rows sharing a timestamp are scored
/// once, on their mean, and each gets that score. The interval is the median
/// step between timestamps; a longer step is a gap, which the detector is told
/// about (Holt-Winters keeps its season in phase) but which is not filled in.
///
/// Rows that cannot be read are reported with their line number (the first
/// few, then a count) and skipped; more than --max-bad of them fails the
/// command. Exit codes: 0 written, 1 error, 2 bad arguments.
#[derive(Args)]
pub struct DetectArgs {
    /// The series: a CSV file, a Prometheus JSON file, or `-` for standard input.
    #[arg(value_name = "SERIES")]
    input: String,
    /// moving-average, ewma, cusum, shewhart, holt-winters, or ensemble (a
    /// majority vote of the other five). Each uses its documented defaults.
    #[arg(short, long, default_value = "ensemble", value_parser = parse_detector)]
    detector: DetectorSpec,
    /// Write the scores here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Score at which a row is flagged, above 0 and at most 1.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Print the flagged regions: start, end, rows, peak score and what the
    /// detector saw there (on standard error when the scores go to standard
    /// output, on standard output otherwise).
    #[arg(long)]
    explain: bool,
    /// Points in one season, for holt-winters (alone or in the ensemble); 0 for none.
    #[arg(long, default_value_t = 0)]
    season: usize,
    /// Input format: auto (JSON if it starts with `{`), csv or prometheus.
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: FormatArg,
    /// Fail when more than this share (`5%`) or number (`100`) of rows are bad.
    #[arg(long, default_value = "5%", value_parser = parse_bad_bound)]
    max_bad: BadBound,
}

fn parse_detector(s: &str) -> Result<DetectorSpec, String> {
    s.parse()
}

/// `auto` (None) or a format.
#[derive(Clone, Copy)]
struct FormatArg(Option<SeriesFormat>);

fn parse_format(s: &str) -> Result<FormatArg, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        Ok(FormatArg(None))
    } else {
        s.parse().map(|f| FormatArg(Some(f)))
    }
}

fn parse_bad_bound(s: &str) -> Result<BadBound, String> {
    s.parse()
}

pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    if !(args.threshold > 0.0 && args.threshold <= 1.0) {
        bail!(
            "--threshold {}: expected a score above 0 and at most 1",
            args.threshold
        );
    }
    let spec = args.detector.clone().with_season(args.season);
    spec.validate().context("invalid detector settings")?;
    let (name, data) = read_input(&args.input)?;
    let (all, report) = series::read_series(&name, &data, args.format.0)
        .with_context(|| format!("cannot read a series from {name}"))?;
    drop(data);
    let header = report
        .header
        .as_ref()
        .map(|h| format!(", header `{h}`"))
        .unwrap_or_default();
    eprintln!(
        "{name}: {}{header}, {} row{}, {} bad",
        report.format,
        report.rows,
        plural(report.rows),
        report.bad
    );
    for b in &report.first_bad {
        eprintln!("  {b}");
    }
    if report.bad > report.first_bad.len() as u64 {
        eprintln!(
            "  ... and {} more",
            report.bad - report.first_bad.len() as u64
        );
    }
    if args.max_bad.exceeded(report.rows, report.bad) {
        bail!(
            "{name}: {} of {} rows are bad, more than --max-bad {}",
            report.bad,
            report.rows + report.bad,
            args.max_bad
        );
    }
    if report.rows == 0 {
        bail!("{name}: no rows to score");
    }
    let options = ScoreOptions {
        detector: spec,
        threshold: args.threshold,
        explain: args.explain,
    };
    let mut scored = Vec::with_capacity(all.len());
    for s in &all {
        scored.push(series::score_series(s, &options).context("scoring the series")?);
    }
    let to_stdout = args.output.is_none();
    write_scores(&args, &all, &scored)?;
    for (s, r) in all.iter().zip(&scored) {
        let label = s
            .name
            .as_deref()
            .map(|n| format!("{n}: "))
            .unwrap_or_default();
        eprintln!("{label}{}", describe(s, r, options.detector.name()));
    }
    if args.explain {
        let text = explain(&all, &scored, &options);
        if to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn read_input(input: &str) -> anyhow::Result<(String, Vec<u8>)> {
    if input == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        Ok(("<stdin>".to_string(), data))
    } else {
        let data = std::fs::read(input).with_context(|| format!("cannot read {input}"))?;
        Ok((input.to_string(), data))
    }
}

fn write_scores(args: &DetectArgs, all: &[Series], scored: &[Scored]) -> anyhow::Result<()> {
    let (out, what): (Box<dyn Write>, String) = match &args.output {
        Some(p) => (
            Box::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            ),
            p.display().to_string(),
        ),
        None => (
            Box::new(std::io::stdout().lock()),
            "standard output".to_string(),
        ),
    };
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let labelled = all.len() > 1;
    let fail = || format!("cannot write the scores to {what}");
    if labelled {
        writeln!(out, "series,timestamp,value,score,flag").with_context(fail)?;
    } else {
        writeln!(out, "timestamp,value,score,flag").with_context(fail)?;
    }
    let mut line = Vec::with_capacity(128);
    for (s, r) in all.iter().zip(scored) {
        let label = s.name.as_deref().map(csv_quote).unwrap_or_default();
        for (i, score) in r.scores.iter().enumerate() {
            line.clear();
            if labelled {
                line.extend_from_slice(label.as_bytes());
                line.push(b',');
            }
            line.extend_from_slice(s.row_text(i).as_bytes());
            line.push(b',');
            push_score(&mut line, *score);
            line.extend_from_slice(if *score >= args.threshold {
                b",1\n"
            } else {
                b",0\n"
            });
            out.write_all(&line).with_context(fail)?;
        }
    }
    out.flush().with_context(fail)?;
    Ok(())
}

/// A score in [0, 1] with four decimals, without going through float formatting
/// (a million of them are written in a few milliseconds).
fn push_score(out: &mut Vec<u8>, score: f64) {
    let v = (score.clamp(0.0, 1.0) * 10_000.0).round() as u32;
    out.push(b'0' + (v / 10_000) as u8);
    out.push(b'.');
    let frac = v % 10_000;
    for d in [1000, 100, 10, 1] {
        out.push(b'0' + ((frac / d) % 10) as u8);
    }
}

fn csv_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            let fmt = if ms % 1000 == 0 {
                chrono::SecondsFormat::Secs
            } else {
                chrono::SecondsFormat::Millis
            };
            t.to_rfc3339_opts(fmt, true)
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn fmt_interval(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// The one-line summary of a scored series.
fn describe(s: &Series, r: &Scored, detector: &str) -> String {
    let mut parts = Vec::new();
    if r.duplicates > 0 {
        parts.push(format!(
            "{} duplicate timestamp{} (scored on their mean)",
            r.duplicates,
            plural(r.duplicates)
        ));
    }
    if r.out_of_order > 0 {
        parts.push(format!(
            "{} row{} out of order (scored in time order)",
            r.out_of_order,
            plural(r.out_of_order)
        ));
    }
    if let Some(iv) = r.interval_ms {
        if r.gaps > 0 {
            parts.push(format!(
                "{} gap{} ({} missing point{}) at a {} interval",
                r.gaps,
                plural(r.gaps),
                r.missing,
                plural(r.missing),
                fmt_interval(iv)
            ));
        } else {
            parts.push(format!("no gaps at a {} interval", fmt_interval(iv)));
        }
    }
    let regions = r.regions.len() as u64;
    parts.push(format!(
        "{detector} flagged {} of {} row{} in {} region{}",
        r.flagged,
        s.len(),
        plural(s.len() as u64),
        regions,
        plural(regions)
    ));
    parts.join(", ")
}

fn span(first: RowPosition, last: RowPosition) -> String {
    match (first, last) {
        (RowPosition::Line(a), RowPosition::Line(b)) if a == b => format!("line {a}"),
        (RowPosition::Line(a), RowPosition::Line(b)) => format!("lines {a}-{b}"),
        (a, b) if a == b => a.to_string(),
        (a, b) => format!("{a} to {b}"),
    }
}

fn explain(all: &[Series], scored: &[Scored], options: &ScoreOptions) -> String {
    let mut out = String::new();
    for (s, r) in all.iter().zip(scored) {
        let label = s
            .name
            .as_deref()
            .map(|n| format!(" in {n}"))
            .unwrap_or_default();
        if r.regions.is_empty() {
            out.push_str(&format!(
                "no flagged regions{label} ({}, threshold {})\n",
                options.detector.name(),
                options.threshold
            ));
            continue;
        }
        out.push_str(&format!(
            "{} flagged region{}{label} ({}, threshold {}):\n",
            r.regions.len(),
            plural(r.regions.len() as u64),
            options.detector.name(),
            options.threshold
        ));
        for g in &r.regions {
            out.push_str(&region_line(g));
        }
    }
    out
}

fn region_line(g: &Region) -> String {
    format!(
        "  {} to {}  {}  {} point{}  peak {:.3} at {}\n    {}\n",
        fmt_time(g.start_ms),
        fmt_time(g.end_ms),
        span(g.first, g.last),
        g.points,
        plural(g.points as u64),
        g.peak_score,
        fmt_time(g.peak_ms),
        g.detector
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_print_with_four_decimals() {
        for (v, s) in [
            (0.0, "0.0000"),
            (1.0, "1.0000"),
            (0.5, "0.5000"),
            (0.123456, "0.1235"),
            (0.99999, "1.0000"),
        ] {
            let mut b = Vec::new();
            push_score(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap_or_default(), s);
        }
    }
}
