//! The measured series, and their rendering as Prometheus text and as JSON.
//!
//! Series are keyed by (role, upstream, profile) and hold an HDR histogram of
//! latency (fixed memory, mergeable), counts by status class and bytes. The
//! Prometheus histogram buckets are read off the HDR histogram when scraped, so
//! recording stays one histogram increment.
//!
//! We write the classic text exposition format (0.0.4) ourselves rather than
//! use prometheus-client: that crate speaks only OpenMetrics, which
//! `promtool check metrics` does not parse, and our metrics are aggregated off
//! the hot path already, so a registry would add nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use umbra_trace::Exemplar;

use crate::record::{Exchange, Role};

/// Bucket bounds of `umbra_request_duration_seconds`.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub role: Role,
    pub upstream: Arc<str>,
    pub profile: Arc<str>,
}

pub struct Series {
    /// Microseconds, 1 µs to 1 hour, 2 significant digits (1% resolution).
    pub latency: Histogram<u64>,
    pub latency_sum_us: u64,
    /// 1xx..5xx, then "no response".
    pub by_class: [u64; 6],
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("valid histogram bounds"),
            latency_sum_us: 0,
            by_class: [0; 6],
            request_bytes: 0,
            response_bytes: 0,
        }
    }
}

pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl Series {
    pub fn add(&mut self, e: &Exchange) {
        let us = (e.duration.as_micros() as u64).clamp(1, 3_600_000_000);
        self.latency.saturating_record(us);
        self.latency_sum_us += us;
        self.by_class[class_index(e.status)] += 1;
        self.request_bytes += e.request_bytes;
        self.response_bytes += e.response_bytes;
    }

    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Server errors and failed exchanges.
    pub fn errors(&self) -> u64 {
        self.by_class[4] + self.by_class[5]
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

#[derive(Default)]
pub struct Comparison {
    pub compared: u64,
    pub mismatched: u64,
}

#[derive(Default)]
pub struct StatsTable {
    pub series: BTreeMap<SeriesKey, Series>,
    /// Shadow against live status, per profile.
    pub comparisons: BTreeMap<Arc<str>, Comparison>,
    pub profile_names: HashMap<String, String>,
    pub profiles_loaded: Option<String>,
    pub profile_errors: u64,
    pub access_log_errors: u64,
    /// Spans of mirrored requests waiting for a twin a tail rule keeps.
    pub linked_waiting: u64,
    /// Mirrored requests whose waiting spans were forgotten to make room.
    pub linked_evicted: u64,
}

impl StatsTable {
    pub fn compare(&mut self, profile: &Arc<str>, live: u16, shadow: u16) {
        let c = self.comparisons.entry(profile.clone()).or_default();
        c.compared += 1;
        if live != shadow {
            c.mismatched += 1;
        }
    }

    /// Writes every series; `exemplar` gives the latest slow request's
    /// exemplar of a (profile, role), put on the latency bucket it falls in.
    pub fn render(&self, out: &mut Exposition, exemplar: &dyn Fn(&str, &str) -> Option<Exemplar>) {
        let labels = |k: &SeriesKey| {
            vec![
                ("role", k.role.as_str().to_string()),
                ("upstream", k.upstream.to_string()),
                ("profile", k.profile.to_string()),
            ]
        };
        out.family(
            "umbra_requests_total",
            "counter",
            "Exchanges finished, by role, upstream, profile and status class.",
        );
        for (k, s) in &self.series {
            for (i, class) in CLASSES.iter().enumerate() {
                if s.by_class[i] > 0 {
                    let mut l = labels(k);
                    l.push(("class", class.to_string()));
                    out.sample("umbra_requests_total", &l, s.by_class[i] as f64);
                }
            }
        }
        out.family(
            "umbra_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to the end of the response body.",
        );
        for (k, s) in &self.series {
            let base = labels(k);
            let ex = if out.openmetrics {
                exemplar(&k.profile, k.role.as_str())
            } else {
                None
            };
            let ex_text = ex.map(|e| e.openmetrics());
            // The bucket an exemplar belongs to: the first whose bound holds it.
            let ex_bucket = ex.map(|e| {
                let secs = e.latency.as_secs_f64();
                BUCKETS
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(BUCKETS.len())
            });
            for (i, bound) in BUCKETS.iter().enumerate() {
                let us = (bound * 1e6) as u64;
                let count = if s.latency.is_empty() {
                    0
                } else {
                    s.latency.count_between(0, us)
                };
                let mut l = base.clone();
                l.push(("le", format_float(*bound)));
                out.sample_with(
                    "umbra_request_duration_seconds_bucket",
                    &l,
                    count as f64,
                    ex_text.as_deref().filter(|_| ex_bucket == Some(i)),
                );
            }
            let mut l = base.clone();
            l.push(("le", "+Inf".into()));
            out.sample_with(
                "umbra_request_duration_seconds_bucket",
                &l,
                s.latency.len() as f64,
                ex_text
                    .as_deref()
                    .filter(|_| ex_bucket == Some(BUCKETS.len())),
            );
            out.sample(
                "umbra_request_duration_seconds_sum",
                &base,
                s.latency_sum_us as f64 / 1e6,
            );
            out.sample(
                "umbra_request_duration_seconds_count",
                &base,
                s.latency.len() as f64,
            );
        }
        out.family(
            "umbra_request_bytes_total",
            "counter",
            "Request body bytes, by role, upstream and profile.",
        );
        for (k, s) in &self.series {
            out.sample(
                "umbra_request_bytes_total",
                &labels(k),
                s.request_bytes as f64,
            );
        }
        out.family(
            "umbra_response_bytes_total",
            "counter",
            "Response body bytes, by role, upstream and profile.",
        );
        for (k, s) in &self.series {
            out.sample(
                "umbra_response_bytes_total",
                &labels(k),
                s.response_bytes as f64,
            );
        }
        out.family(
            "umbra_shadow_compared_total",
            "counter",
            "Shadow responses paired with their live twin, by profile.",
        );
        for (p, c) in &self.comparisons {
            out.sample(
                "umbra_shadow_compared_total",
                &[("profile", p.to_string())],
                c.compared as f64,
            );
        }
        out.family(
            "umbra_shadow_status_mismatch_total",
            "counter",
            "Shadow responses whose status differs from their live twin's, by profile.",
        );
        for (p, c) in &self.comparisons {
            out.sample(
                "umbra_shadow_status_mismatch_total",
                &[("profile", p.to_string())],
                c.mismatched as f64,
            );
        }
        out.family(
            "umbra_profile_reload_errors_total",
            "counter",
            "Profile files that could not be loaded.",
        );
        out.sample(
            "umbra_profile_reload_errors_total",
            &[],
            self.profile_errors as f64,
        );
        out.family(
            "umbra_access_log_errors_total",
            "counter",
            "Access log lines that could not be written.",
        );
        out.sample(
            "umbra_access_log_errors_total",
            &[],
            self.access_log_errors as f64,
        );
    }

    /// `/api/stats`'s `series` part.
    pub fn to_json(&self) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|(k, s)| {
                let requests = s.requests();
                json!({
                    "role": k.role.as_str(),
                    "upstream": &*k.upstream,
                    "profile": &*k.profile,
                    "profile_name": self.profile_names.get(&*k.profile),
                    "requests": requests,
                    "errors": s.errors(),
                    "error_rate": if requests > 0 { s.errors() as f64 / requests as f64 } else { 0.0 },
                    "status_classes": CLASSES.iter().zip(s.by_class).filter(|(_, n)| *n > 0)
                        .map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                    "latency_ms": {
                        "p50": s.quantile_ms(0.5), "p90": s.quantile_ms(0.9),
                        "p99": s.quantile_ms(0.99), "max": if s.latency.is_empty() { 0.0 } else { s.latency.max() as f64 / 1000.0 },
                        "mean": if s.latency.is_empty() { 0.0 } else { s.latency.mean() / 1000.0 },
                    },
                    "request_bytes": s.request_bytes,
                    "response_bytes": s.response_bytes,
                })
            })
            .collect();
        let comparisons: Vec<Value> = self
            .comparisons
            .iter()
            .map(|(p, c)| json!({"profile": &**p, "compared": c.compared, "status_mismatches": c.mismatched}))
            .collect();
        json!({
            "profiles_file": self.profiles_loaded,
            "series": series,
            "shadow_comparisons": comparisons,
        })
    }
}

/// A Prometheus text-format (0.0.4) writer.
#[derive(Default)]
pub struct Exposition {
    pub text: String,
    /// OpenMetrics 1.0 rather than Prometheus text 0.0.4: counter families are
    /// named without `_total`, histogram buckets may carry exemplars, and the
    /// caller ends the page with `# EOF`.
    pub openmetrics: bool,
}

impl Exposition {
    pub fn openmetrics() -> Exposition {
        Exposition {
            text: String::new(),
            openmetrics: true,
        }
    }

    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let name = if self.openmetrics && kind == "counter" {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let _ = writeln!(
            self.text,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        self.sample_with(name, labels, value, None);
    }

    /// A sample with an OpenMetrics exemplar (` # {trace_id="…"} value ts`),
    /// dropped in the 0.0.4 format, which has no place for it.
    pub fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, String)],
        value: f64,
        exemplar: Option<&str>,
    ) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_float(value));
        if self.openmetrics
            && let Some(e) = exemplar
        {
            self.text.push_str(e);
        }
        self.text.push('\n');
    }
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "An example.");
        e.sample("x_total", &[("path", "a\"b\\c\nd".into())], 3.0);
        e.sample("x_total", &[], 0.25);
        assert_eq!(
            e.text,
            "# HELP x_total An example.\n# TYPE x_total counter\nx_total{path=\"a\\\"b\\\\c\\nd\"} 3\nx_total 0.25\n"
        );
    }
}
