//! Merging the reports of a sharded run (`umbra load merge`).
//!
//! Counts add up and histograms are deserialised and added, so totals and
//! per-profile percentiles are exact: the same as one generator sending the
//! whole schedule. Per-second series are summed by second; a file keeps only
//! each second's p50 and p99, not its histogram, so a merged second's
//! percentiles are the highest of the shards' (an upper bound, not exact).

use std::path::PathBuf;

use crate::error::Error;
use crate::record::{Counts, new_histogram};
use crate::report::{ProfileStats, Report, SeriesPoint, Stats, decode_histogram};
use crate::threshold::{self, Threshold};

/// Merges reports; `thresholds` (if empty, the first report's expressions) are
/// evaluated again on the merged data.
pub fn merge(reports: &[(PathBuf, Report)], thresholds: &[Threshold]) -> Result<Report, Error> {
    let Some((first_path, first)) = reports.first() else {
        return Err(Error::invalid("merge", "", "no reports to merge"));
    };
    let duration_secs = reports
        .iter()
        .map(|(_, r)| r.duration_secs)
        .fold(0.0, f64::max);
    let hist_of = |path: &PathBuf, what: &str, s: &Stats| {
        decode_histogram(&s.histogram).map_err(|m| Error::File {
            path: path.clone(),
            message: format!("{what}: {m}"),
        })
    };
    let mut profiles = Vec::with_capacity(first.profiles.len());
    let (mut all_counts, mut all_hist) = (Counts::default(), new_histogram());
    for p in &first.profiles {
        let (mut counts, mut hist) = (Counts::default(), new_histogram());
        for (path, r) in reports {
            let Some(q) = r.profiles.iter().find(|q| q.id == p.id) else {
                return Err(Error::File {
                    path: path.clone(),
                    message: format!(
                        "has no profile {:?}, which {} has: the reports come from different profile sets",
                        p.id,
                        first_path.display()
                    ),
                });
            };
            counts.add(&q.stats.counts());
            let h = hist_of(path, &format!("profile {}", p.id), &q.stats)?;
            let _ = hist.add(&h);
        }
        all_counts.add(&counts);
        let _ = all_hist.add(&hist);
        profiles.push(ProfileStats {
            id: p.id.clone(),
            name: p.name.clone(),
            planned_share: p.planned_share,
            stats: Stats::new(&counts, &hist, duration_secs),
        });
    }
    for (path, r) in reports {
        if r.profiles.len() != first.profiles.len() {
            return Err(Error::File {
                path: path.clone(),
                message: format!(
                    "has {} profiles, {} has {}: the reports come from different profile sets",
                    r.profiles.len(),
                    first_path.display(),
                    first.profiles.len()
                ),
            });
        }
    }
    let mut series: Vec<SeriesPoint> = Vec::new();
    for (_, r) in reports {
        for p in &r.series {
            let i = p.t as usize;
            while series.len() <= i {
                let t = series.len() as u64;
                series.push(SeriesPoint {
                    t,
                    requests: 0,
                    errors: 0,
                    dropped: 0,
                    rate: 0.0,
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                });
            }
            let s = &mut series[i];
            s.requests += p.requests;
            s.errors += p.errors;
            s.dropped += p.dropped;
            s.rate += p.rate;
            s.p50_ms = s.p50_ms.max(p.p50_ms);
            s.p99_ms = s.p99_ms.max(p.p99_ms);
        }
    }
    let stopped: Vec<String> = reports
        .iter()
        .filter_map(|(path, r)| {
            r.stopped
                .as_ref()
                .map(|s| format!("{}: {s}", path.display()))
        })
        .collect();
    let mut out = Report {
        format: first.format.clone(),
        version: first.version,
        target: first.target.clone(),
        model: first.model.clone(),
        arrivals: first.arrivals,
        rate: first.rate,
        stress: first.stress,
        connections: reports.iter().map(|(_, r)| r.connections).sum(),
        shard: None,
        seed: first.seed,
        started_at: reports
            .iter()
            .map(|(_, r)| r.started_at.as_str())
            .min()
            .unwrap_or_default()
            .to_string(),
        duration_secs,
        totals: Stats::new(&all_counts, &all_hist, duration_secs),
        profiles,
        series,
        thresholds: Vec::new(),
        passed: true,
        stopped: (!stopped.is_empty()).then(|| stopped.join("; ")),
    };
    // The merged run sends the rate of all shards; report it as one run would.
    let parsed: Vec<Threshold>;
    let use_thresholds = if thresholds.is_empty() {
        parsed = first
            .thresholds
            .iter()
            .map(|t| t.expr.parse())
            .collect::<Result<_, _>>()?;
        &parsed
    } else {
        thresholds
    };
    threshold::apply(&mut out, use_thresholds)?;
    Ok(out)
}
