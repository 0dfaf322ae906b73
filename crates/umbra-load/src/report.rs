//! The run report: what `--json` writes, what `merge` reads, what the summary
//! table shows. Field names are a contract with the HTML report and with scripts.

use std::path::Path;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::plan::{Arrivals, Shard};
use crate::record::{Counts, new_histogram};

pub const REPORT_FORMAT: &str = "umbra-load-report";
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub version: u32,
    pub target: String,
    /// `"open"` or `"closed"`.
    pub model: String,
    pub arrivals: Option<Arrivals>,
    /// The open model's rate after stress (its peak, with stages); null when closed.
    pub rate: Option<f64>,
    pub stress: f64,
    pub connections: u64,
    pub shard: Option<Shard>,
    pub seed: u64,
    pub started_at: String,
    pub duration_secs: f64,
    pub totals: Stats,
    pub profiles: Vec<ProfileStats>,
    pub series: Vec<SeriesPoint>,
    pub thresholds: Vec<ThresholdResult>,
    pub passed: bool,
    /// Why the run ended before its plan did (unreachable target, interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileStats {
    pub id: String,
    pub name: String,
    pub planned_share: f64,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusCounts {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Requests that were sent and finished (with a response or an error); not dropped ones.
    pub requests: u64,
    /// Arrivals that could not be started because `--max-in-flight` requests were outstanding.
    pub dropped: u64,
    pub errors: ErrorCounts,
    pub status: StatusCounts,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub achieved_rps: f64,
    pub latency_ms: LatencyMs,
    /// HdrHistogram V2 (deflate) serialisation of latencies in µs, base64.
    pub histogram: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds from the start (the second this point covers starts here).
    pub t: u64,
    pub requests: u64,
    /// Transport errors and 5xx responses.
    pub errors: u64,
    #[serde(default)]
    pub dropped: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdResult {
    pub expr: String,
    pub profile: Option<String>,
    /// In the expression's dimension: ms for latency, percent for errors and
    /// dropped, requests per second for rps.
    pub observed: f64,
    pub passed: bool,
}

impl Stats {
    pub fn new(counts: &Counts, hist: &Histogram<u64>, duration_secs: f64) -> Stats {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(hist.value_at_quantile(p));
        let latency_ms = if hist.is_empty() {
            LatencyMs::default()
        } else {
            LatencyMs {
                min: ms(hist.min()),
                mean: hist.mean() / 1000.0,
                p50: q(0.5),
                p90: q(0.9),
                p95: q(0.95),
                p99: q(0.99),
                p999: q(0.999),
                max: ms(hist.max()),
            }
        };
        Stats {
            requests: counts.requests,
            dropped: counts.dropped,
            errors: ErrorCounts {
                connect: counts.errors[0],
                timeout: counts.errors[1],
                reset: counts.errors[2],
                other: counts.errors[3],
            },
            status: StatusCounts {
                s2xx: counts.status[0],
                s3xx: counts.status[1],
                s4xx: counts.status[2],
                s5xx: counts.status[3],
            },
            bytes_sent: counts.bytes_sent,
            bytes_received: counts.bytes_received,
            achieved_rps: if duration_secs > 0.0 {
                counts.requests as f64 / duration_secs
            } else {
                0.0
            },
            latency_ms,
            histogram: encode_histogram(hist),
        }
    }

    /// The counters back as `Counts` (for merging).
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            dropped: self.dropped,
            errors: [
                self.errors.connect,
                self.errors.timeout,
                self.errors.reset,
                self.errors.other,
            ],
            status: [
                self.status.s2xx,
                self.status.s3xx,
                self.status.s4xx,
                self.status.s5xx,
            ],
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
        }
    }

    /// Transport errors plus 5xx, as a percentage of requests (100 when nothing finished).
    pub fn error_percent(&self) -> f64 {
        let c = self.counts();
        if c.requests == 0 {
            return if c.dropped > 0 { 100.0 } else { 0.0 };
        }
        c.failed() as f64 * 100.0 / c.requests as f64
    }

    pub fn dropped_percent(&self) -> f64 {
        let all = self.requests + self.dropped;
        if all == 0 {
            0.0
        } else {
            self.dropped as f64 * 100.0 / all as f64
        }
    }

    pub fn total_errors(&self) -> u64 {
        self.counts().failed()
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Serialising into memory fails only on a histogram we built wrong; an empty string
    // then marks "no histogram" and merge reports it.
    if V2DeflateSerializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not an HdrHistogram V2 serialisation: {e:?}"))?;
    // Re-home into our fixed bounds so later adds cannot fail on a narrower histogram.
    let mut out = new_histogram();
    out.add(&h)
        .map_err(|e| format!("histogram does not fit the 1 h range: {e:?}"))?;
    Ok(out)
}

impl Report {
    /// Reads a report written by `--json`, checking its format and version.
    pub fn load(path: &Path) -> Result<Report, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file_err = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        #[derive(Deserialize)]
        struct Envelope {
            format: Option<String>,
            version: Option<u32>,
        }
        let env: Envelope = serde_json::from_str(&text).map_err(|e| {
            file_err(format!(
                "line {} column {}: not a load report: {e}",
                e.line(),
                e.column()
            ))
        })?;
        if env.format.as_deref() != Some(REPORT_FORMAT) {
            return Err(file_err(format!(
                "format is {:?}, expected {REPORT_FORMAT:?} (is this a file written by `umbra load --json`?)",
                env.format.unwrap_or_default()
            )));
        }
        if env.version != Some(REPORT_VERSION) {
            return Err(file_err(format!(
                "report version {:?} is not supported (this build reads version {REPORT_VERSION})",
                env.version
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| file_err(format!("line {} column {}: {e}", e.line(), e.column())))
    }

    /// Writes the report as pretty JSON (to a temporary file, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let write_err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, text + "\n").map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }

    /// Finds a profile's stats by id, or by name.
    pub fn profile(&self, key: &str) -> Option<&ProfileStats> {
        self.profiles
            .iter()
            .find(|p| p.id == key)
            .or_else(|| self.profiles.iter().find(|p| p.name == key))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histograms_round_trip_through_base64() {
        let mut h = new_histogram();
        for v in [100, 2_000, 30_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
        assert!(decode_histogram("!!").is_err());
    }
}
