//! Pass/fail thresholds, k6 style: `p99<300ms`, `errors<1%`, `rps>=900`,
//! `search:p95<=1s` (a profile's id or name before the last colon).

use std::str::FromStr;

use crate::error::Error;
use crate::report::{Report, Stats, ThresholdResult};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// Latency in ms: min, mean, max, or a quantile.
    Latency(LatencyField),
    /// Transport errors and 5xx, percent of requests.
    Errors,
    /// Dropped arrivals, percent of arrivals.
    Dropped,
    /// Achieved requests per second.
    Rps,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LatencyField {
    Min,
    Mean,
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub expr: String,
    pub profile: Option<String>,
    metric: Metric,
    op: Op,
    /// In the metric's dimension (ms, percent, rps).
    limit: f64,
}

const HELP: &str = "write it like p99<300ms, p95<=1s, errors<1%, dropped<0.1%, rps>=900, or PROFILE:p99<200ms; \
metrics: min mean p50 p90 p95 p99 p999 max errors dropped rps";

impl FromStr for Threshold {
    type Err = Error;
    fn from_str(s: &str) -> Result<Threshold, Error> {
        let expr = s.trim().to_string();
        let bad = |reason: String| Error::invalid("threshold", s, format!("{reason}; {HELP}"));
        let (profile, rest) = match expr.rsplit_once(':') {
            Some((p, r)) if !p.trim().is_empty() => (Some(p.trim().to_string()), r.trim()),
            Some(_) => return Err(bad("empty profile before ':'".into())),
            None => (None, expr.as_str()),
        };
        let at = rest
            .find(['<', '>'])
            .ok_or_else(|| bad("no comparison (<, <=, >, >=)".into()))?;
        let (name, tail) = rest.split_at(at);
        let (op, value) = if let Some(v) = tail.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = tail.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = tail.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = tail.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(bad("no comparison".into()));
        };
        let metric = match name.trim().to_ascii_lowercase().as_str() {
            "min" => Metric::Latency(LatencyField::Min),
            "mean" | "avg" => Metric::Latency(LatencyField::Mean),
            "p50" | "med" | "median" => Metric::Latency(LatencyField::P50),
            "p90" => Metric::Latency(LatencyField::P90),
            "p95" => Metric::Latency(LatencyField::P95),
            "p99" => Metric::Latency(LatencyField::P99),
            "p999" | "p99.9" => Metric::Latency(LatencyField::P999),
            "max" => Metric::Latency(LatencyField::Max),
            "errors" | "error_rate" => Metric::Errors,
            "dropped" => Metric::Dropped,
            "rps" => Metric::Rps,
            other => return Err(bad(format!("unknown metric {other:?}"))),
        };
        let value = value.trim();
        let split = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(value.len());
        let (num, unit) = value.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| bad(format!("{value:?} does not start with a number")))?;
        let limit = match (metric, unit.trim()) {
            (Metric::Latency(_), "ms" | "") => n,
            (Metric::Latency(_), "s") => n * 1000.0,
            (Metric::Latency(_), "us" | "µs") => n / 1000.0,
            (Metric::Latency(_), u) => {
                return Err(bad(format!("unit {u:?} is not a time unit (us, ms, s)")));
            }
            (Metric::Errors | Metric::Dropped, "%") => n,
            // A bare fraction, as k6 writes rates: errors<0.01 is 1%.
            (Metric::Errors | Metric::Dropped, "") => n * 100.0,
            (Metric::Rps, "" | "/s" | "rps") => n,
            (_, u) => return Err(bad(format!("unit {u:?} does not fit this metric"))),
        };
        Ok(Threshold {
            expr,
            profile,
            metric,
            op,
            limit,
        })
    }
}

impl Threshold {
    /// Checks that the threshold's profile exists in `ids_and_names`.
    pub fn check_profile<'a>(
        &self,
        mut ids_and_names: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), Error> {
        match &self.profile {
            Some(p) if !ids_and_names.any(|(id, name)| id == p || name == p) => {
                Err(Error::invalid(
                    "threshold",
                    &self.expr,
                    format!("no profile has the id or name {p:?}"),
                ))
            }
            _ => Ok(()),
        }
    }

    fn observe(&self, s: &Stats) -> f64 {
        match self.metric {
            Metric::Latency(f) => {
                let l = &s.latency_ms;
                match f {
                    LatencyField::Min => l.min,
                    LatencyField::Mean => l.mean,
                    LatencyField::P50 => l.p50,
                    LatencyField::P90 => l.p90,
                    LatencyField::P95 => l.p95,
                    LatencyField::P99 => l.p99,
                    LatencyField::P999 => l.p999,
                    LatencyField::Max => l.max,
                }
            }
            Metric::Errors => s.error_percent(),
            Metric::Dropped => s.dropped_percent(),
            Metric::Rps => s.achieved_rps,
        }
    }

    /// Evaluates against a report.
    pub fn evaluate(&self, report: &Report) -> Result<ThresholdResult, Error> {
        let stats = match &self.profile {
            None => &report.totals,
            Some(p) => {
                &report
                    .profile(p)
                    .ok_or_else(|| {
                        Error::invalid(
                            "threshold",
                            &self.expr,
                            format!("the report has no profile {p:?}"),
                        )
                    })?
                    .stats
            }
        };
        let observed = self.observe(stats);
        let passed = match self.op {
            Op::Lt => observed < self.limit,
            Op::Le => observed <= self.limit,
            Op::Gt => observed > self.limit,
            Op::Ge => observed >= self.limit,
        };
        Ok(ThresholdResult {
            expr: self.expr.clone(),
            profile: self.profile.clone(),
            observed,
            passed,
        })
    }
}

/// Evaluates every threshold and stores the results and the verdict in the report.
pub fn apply(report: &mut Report, thresholds: &[Threshold]) -> Result<(), Error> {
    let results = thresholds
        .iter()
        .map(|t| t.evaluate(report))
        .collect::<Result<Vec<_>, _>>()?;
    report.passed = results.iter().all(|r| r.passed);
    report.thresholds = results;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_k6_style_expressions() {
        let t: Threshold = "p99<300ms".parse().unwrap();
        assert_eq!((t.op, t.limit, t.profile.clone()), (Op::Lt, 300.0, None));
        let t: Threshold = "p95<=1s".parse().unwrap();
        assert_eq!((t.op, t.limit), (Op::Le, 1000.0));
        let t: Threshold = "errors<1%".parse().unwrap();
        assert_eq!((t.metric, t.limit), (Metric::Errors, 1.0));
        let t: Threshold = "errors<0.01".parse().unwrap();
        assert_eq!(t.limit, 1.0);
        let t: Threshold = "rps>=900".parse().unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Rps, Op::Ge, 900.0));
        let t: Threshold = "search:p99<200ms".parse().unwrap();
        assert_eq!(t.profile.as_deref(), Some("search"));
        let t: Threshold = "GET /a/{id} · browser:p50<5".parse().unwrap();
        assert_eq!(t.profile.as_deref(), Some("GET /a/{id} · browser"));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (bad, why) in [
            ("p99", "no comparison"),
            ("p98<1ms", "unknown metric"),
            ("p99<fast", "number"),
            ("p99<3kg", "unit"),
            ("errors<1ms", "unit"),
            (":p99<1", "empty profile"),
        ] {
            let e = bad.parse::<Threshold>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
