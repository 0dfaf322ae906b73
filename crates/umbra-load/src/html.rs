//! The HTML report (`--html`): one self-contained file built from a [`Report`], with
//! the charts drawn here as inline SVG. No script and nothing fetched, so it opens
//! offline, from a CI artifact or an email, and shows the same in every browser.
//!
//! Every string that comes from the report (target, profile names learned from user
//! logs, threshold expressions) goes through [`esc`]: the report must not be a way to
//! inject markup into whoever opens it.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::error::Error;
use crate::plan::Arrivals;
use crate::report::{Report, Stats, decode_histogram};

const CSS: &str = include_str!("html/report.css");

/// Okabe–Ito colours: told apart with the common colour-vision deficiencies, and dark
/// enough on white.
const PALETTE: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// Profiles drawn in the per-profile percentile chart; past this, lines stop being
/// told apart and the table carries the rest.
const MAX_PROFILE_LINES: usize = 6;

/// Writes the report as HTML (to a temporary file, then renamed, as `--json` does).
pub fn write(report: &Report, path: &Path) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, render(report)).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("umbra load · {}", r.target);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    header(&mut h, r);
    thresholds(&mut h, r);
    summary_table(&mut h, r);
    h.push_str("<div class=\"charts\">\n");
    latency_chart(&mut h, r);
    throughput_chart(&mut h, r);
    percentile_charts(&mut h, r);
    h.push_str("</div>\n");
    let _ = write!(
        h,
        "<footer>Written by umbra load from a report of format {} version {}. \
         Latencies in the open model count from when each request was due.</footer>\n\
         </main>\n</body>\n</html>\n",
        esc(&r.format),
        r.version
    );
    h
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn header(h: &mut String, r: &Report) {
    let verdict = if r.passed {
        "<span class=\"badge pass\">PASSED</span>"
    } else {
        "<span class=\"badge fail\">FAILED</span>"
    };
    let _ = write!(
        h,
        "<header>\n<h1>Load report {verdict}</h1>\n<p class=\"target\">{}</p>\n<dl class=\"facts\">\n",
        esc(&r.target)
    );
    let mut fact = |k: &str, v: String| {
        let _ = writeln!(h, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    if r.model == "open" {
        fact("model", "open (arrival schedule)".into());
        if let Some(rate) = r.rate {
            fact("planned rate", format!("{} req/s", num(rate)));
        }
        if let Some(a) = r.arrivals {
            let a = match a {
                Arrivals::Constant => "constant",
                Arrivals::Poisson => "poisson",
            };
            fact("arrivals", a.into());
        }
    } else {
        fact("model", esc(&r.model));
        fact("connections", r.connections.to_string());
    }
    fact("stress", format!("×{}", num(r.stress)));
    fact("duration", format!("{} s", num(r.duration_secs)));
    fact("started", esc(&r.started_at));
    fact("seed", r.seed.to_string());
    if let Some(s) = r.shard {
        fact("shard", format!("{}/{}", s.index, s.count));
    }
    let t = &r.totals;
    fact("requests", t.requests.to_string());
    fact("achieved", format!("{} req/s", num(t.achieved_rps)));
    fact(
        "errors",
        format!("{} ({}%)", t.total_errors(), num(t.error_percent())),
    );
    fact("dropped", t.dropped.to_string());
    h.push_str("</dl>\n");
    if let Some(why) = &r.stopped {
        let _ = writeln!(h, "<p class=\"stopped\">Stopped early: {}</p>", esc(why));
    }
    h.push_str("</header>\n");
}

fn thresholds(h: &mut String, r: &Report) {
    if r.thresholds.is_empty() {
        h.push_str("<section><h2>Thresholds</h2><p>None were set.</p></section>\n");
        return;
    }
    h.push_str(
        "<section><h2>Thresholds</h2>\n<table class=\"thresholds\"><thead><tr>\
         <th>result</th><th>threshold</th><th>profile</th><th class=\"num\">observed</th>\
         </tr></thead><tbody>\n",
    );
    for t in &r.thresholds {
        let (class, word) = if t.passed {
            ("pass", "pass")
        } else {
            ("fail", "FAIL")
        };
        let _ = writeln!(
            h,
            "<tr><td><span class=\"badge {class}\">{word}</span></td><td><code>{}</code></td>\
             <td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&t.expr),
            esc(t.profile.as_deref().unwrap_or("all")),
            num(t.observed)
        );
    }
    h.push_str(
        "</tbody></table>\n<p class=\"note\">Observed values are in the threshold's unit: \
         ms for latency, percent for errors and dropped, requests per second for rps.</p>\n\
         </section>\n",
    );
}

fn summary_table(h: &mut String, r: &Report) {
    h.push_str(
        "<section><h2>Per profile</h2>\n<div class=\"scroll\"><table class=\"summary\"><thead><tr>\
         <th>profile</th><th>name</th><th class=\"num\">plan</th><th class=\"num\">requests</th>\
         <th class=\"num\">req/s</th><th class=\"num\">p50 ms</th><th class=\"num\">p90 ms</th>\
         <th class=\"num\">p99 ms</th><th class=\"num\">max ms</th><th class=\"num\">errors</th>\
         <th class=\"num\">dropped</th><th class=\"num\">2xx</th><th class=\"num\">3xx</th>\
         <th class=\"num\">4xx</th><th class=\"num\">5xx</th></tr></thead><tbody>\n",
    );
    let row = |h: &mut String, id: &str, name: &str, plan: String, s: &Stats, class: &str| {
        let l = &s.latency_ms;
        let _ = writeln!(
            h,
            "<tr class=\"{class}\"><td><code>{}</code></td><td>{}</td><td class=\"num\">{plan}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(id),
            esc(name),
            s.requests,
            num(s.achieved_rps),
            num(l.p50),
            num(l.p90),
            num(l.p99),
            num(l.max),
            s.total_errors(),
            s.dropped,
            s.status.s2xx,
            s.status.s3xx,
            s.status.s4xx,
            s.status.s5xx,
        );
    };
    for p in &r.profiles {
        row(
            h,
            &p.id,
            &p.name,
            format!("{}%", num(p.planned_share * 100.0)),
            &p.stats,
            "",
        );
    }
    row(h, "total", "", String::new(), &r.totals, "total");
    let e = &r.totals.errors;
    let _ = write!(
        h,
        "</tbody></table></div>\n<p class=\"note\">Errors are transport errors plus 5xx \
         responses. Transport errors: connect {}, timeout {}, reset {}, other {}. \
         Sent {} bytes, received {} bytes.</p>\n</section>\n",
        e.connect, e.timeout, e.reset, e.other, r.totals.bytes_sent, r.totals.bytes_received
    );
}

fn latency_chart(h: &mut String, r: &Report) {
    let pts = |f: fn(&crate::report::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
        r.series
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| (p.t as f64, f(p)))
            .collect()
    };
    let chart = Chart {
        id: "latency-over-time",
        title: "Latency over time",
        x_label: "time since start (s)",
        y_label: "latency (ms)",
        x_axis: XAxis::Linear,
        series: vec![
            Series::new("p50", PALETTE[0], pts(|p| p.p50_ms)),
            Series::new("p99", PALETTE[1], pts(|p| p.p99_ms)),
        ],
    };
    chart.render(h);
}

fn throughput_chart(h: &mut String, r: &Report) {
    let pts = |f: fn(&crate::report::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
        r.series.iter().map(|p| (p.t as f64, f(p))).collect()
    };
    let mut series = vec![
        Series::new("requests/s", PALETTE[0], pts(|p| p.rate)),
        Series::new("errors/s", PALETTE[1], pts(|p| p.errors as f64)),
    ];
    // Dropped arrivals only exist in the open model; a flat zero line would be noise.
    if r.series.iter().any(|p| p.dropped > 0) {
        series.push(Series::new(
            "dropped/s",
            PALETTE[4],
            pts(|p| p.dropped as f64),
        ));
    }
    let chart = Chart {
        id: "throughput-over-time",
        title: "Throughput and errors over time",
        x_label: "time since start (s)",
        y_label: "per second",
        x_axis: XAxis::Linear,
        series,
    };
    chart.render(h);
}

/// Latency at percentiles 0 to 99.999, like HdrHistogram's plotter: x is 1/(1-q) on a
/// log scale so the tail gets as much room as the body.
fn percentile_charts(h: &mut String, r: &Report) {
    let mut problems = Vec::new();
    let mut series = Vec::new();
    match decode_histogram(&r.totals.histogram) {
        Ok(hist) if !hist.is_empty() => {
            series.push(Series::new("all", PALETTE[6], percentile_points(&hist)))
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("totals: {e}")),
    }
    for (i, p) in r.profiles.iter().take(MAX_PROFILE_LINES).enumerate() {
        match decode_histogram(&p.stats.histogram) {
            Ok(hist) if !hist.is_empty() => series.push(
                Series::new(&p.id, PALETTE[i % 6], percentile_points(&hist)).with_tooltip(&p.name),
            ),
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: {e}", p.id)),
        }
    }
    let chart = Chart {
        id: "latency-percentiles",
        title: "Latency by percentile",
        x_label: "percentile",
        y_label: "latency (ms)",
        x_axis: XAxis::Percentile,
        series,
    };
    chart.render(h);
    if r.profiles.len() > MAX_PROFILE_LINES {
        let _ = writeln!(
            h,
            "<p class=\"note\">The chart shows the first {MAX_PROFILE_LINES} of {} profiles; \
             the table has them all.</p>",
            r.profiles.len()
        );
    }
    for p in problems {
        let _ = writeln!(
            h,
            "<p class=\"stopped\">Histogram not drawn: {}</p>",
            esc(&p)
        );
    }
}

/// The highest percentile drawn: 99.999.
const MAX_NINES: f64 = 5.0;

fn percentile_points(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    const STEPS: usize = 200;
    (0..=STEPS)
        .map(|i| {
            // x = log10(1/(1-q)), evenly spaced from q = 0 to q = 0.99999.
            let x = MAX_NINES * i as f64 / STEPS as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, hist.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

enum XAxis {
    /// Plain numbers (seconds).
    Linear,
    /// x is log10(1/(1-q)); ticks at 0, 90, 99, 99.9 ... percent.
    Percentile,
}

struct Series {
    name: String,
    tooltip: Option<String>,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &str, colour: &'static str, points: Vec<(f64, f64)>) -> Series {
        let points = points
            .into_iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        Series {
            name: name.to_string(),
            tooltip: None,
            colour,
            points,
        }
    }

    fn with_tooltip(mut self, t: &str) -> Series {
        self.tooltip = Some(t.to_string());
        self
    }
}

struct Chart {
    id: &'static str,
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    x_axis: XAxis,
    series: Vec<Series>,
}

// Drawing area inside the SVG's viewBox (user units; the SVG scales to its column).
const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 48.0;

impl Chart {
    fn render(&self, h: &mut String) {
        let _ = write!(
            h,
            "<figure class=\"chart\" id=\"{}\">\n<figcaption>{}</figcaption>\n",
            self.id, self.title
        );
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            h.push_str("<p class=\"empty\">No data to draw.</p>\n</figure>\n");
            return;
        }
        if let XAxis::Percentile = self.x_axis {
            (x0, x1) = (0.0, MAX_NINES);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let (y_step, y_top) = nice_axis(y1);
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - y / y_top * ph;

        let _ = writeln!(
            h,
            "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}: {} against {}\" \
             xmlns=\"http://www.w3.org/2000/svg\">",
            self.title, self.y_label, self.x_label
        );
        // Horizontal grid and y ticks.
        h.push_str("<g class=\"grid\">");
        let mut y = 0.0;
        while y <= y_top * (1.0 + 1e-9) {
            let py = sy(y);
            let _ = write!(
                h,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
                 <text class=\"ytick\" x=\"{}\" y=\"{:.1}\">{}</text>",
                W - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                num(y)
            );
            y += y_step;
        }
        // Vertical ticks.
        let xticks: Vec<(f64, String)> = match self.x_axis {
            XAxis::Linear => {
                let (step, _) = nice_axis(x1 - x0);
                let mut v = Vec::new();
                let mut x = (x0 / step).ceil() * step;
                while x <= x1 + 1e-9 {
                    v.push((x, num(x)));
                    x += step;
                }
                v
            }
            XAxis::Percentile => ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, l.to_string()))
                .collect(),
        };
        for (x, label) in &xticks {
            let px = sx(*x);
            let _ = write!(
                h,
                "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{}\"/>\
                 <text class=\"xtick\" x=\"{px:.1}\" y=\"{}\">{label}</text>",
                TOP + ph,
                TOP + ph + 16.0
            );
        }
        h.push_str("</g>\n");
        // Axes and their labels.
        let _ = writeln!(
            h,
            "<g class=\"axes\"><line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{b}\"/>\
             <line x1=\"{LEFT}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\"/>\
             <text class=\"xlabel\" x=\"{cx}\" y=\"{}\">{}</text>\
             <text class=\"ylabel\" transform=\"translate(14 {cy}) rotate(-90)\">{}</text></g>",
            H - 6.0,
            self.x_label,
            self.y_label,
            b = TOP + ph,
            r = W - RIGHT,
            cx = LEFT + pw / 2.0,
            cy = TOP + ph / 2.0,
        );
        for s in &self.series {
            if s.points.is_empty() {
                continue;
            }
            let mut pts = String::with_capacity(s.points.len() * 14);
            for &(x, y) in &s.points {
                let _ = write!(pts, "{:.1},{:.1} ", sx(x), sy(y));
            }
            let tip = s.tooltip.as_deref().unwrap_or(&s.name);
            let _ = writeln!(
                h,
                "<polyline class=\"series\" data-series=\"{}\" data-points=\"{}\" \
                 fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\" \
                 points=\"{}\"><title>{}</title></polyline>",
                esc(&s.name),
                s.points.len(),
                s.colour,
                pts.trim_end(),
                esc(tip)
            );
            // A lone point draws no line; mark it.
            if let [(x, y)] = s.points[..] {
                let _ = writeln!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    sx(x),
                    sy(y),
                    s.colour
                );
            }
        }
        h.push_str("</svg>\n<ul class=\"legend\">");
        for s in self.series.iter().filter(|s| !s.points.is_empty()) {
            let _ = write!(
                h,
                "<li><span class=\"swatch\" style=\"background:{}\"></span>{}",
                s.colour,
                esc(&s.name)
            );
            if let Some(t) = &s.tooltip {
                let _ = write!(h, " <span class=\"muted\">{}</span>", esc(t));
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>\n</figure>\n");
    }
}

/// A tick step of 1, 2 or 5 × 10^k giving about five ticks, and the axis top (a
/// multiple of the step, at least `max`).
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 1.0);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil().max(1.0) * step)
}

/// A number for people: no more digits than it has meaning.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    let s = if a == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    // "5.00" reads as 5; keep integers short.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::{Counts, new_histogram};
    use crate::report::{ProfileStats, SeriesPoint, ThresholdResult};

    fn report(name: &str) -> Report {
        let mut hist = new_histogram();
        for v in 1..=1000u64 {
            hist.record(v * 100).unwrap();
        }
        let counts = Counts {
            requests: 1000,
            ..Counts::default()
        };
        let stats = Stats::new(&counts, &hist, 2.0);
        Report {
            format: "umbra-load-report".into(),
            version: 1,
            target: "http://127.0.0.1:1/<x>".into(),
            model: "open".into(),
            arrivals: Some(Arrivals::Constant),
            rate: Some(500.0),
            stress: 1.0,
            connections: 64,
            shard: None,
            seed: 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_secs: 2.0,
            totals: stats.clone(),
            profiles: vec![ProfileStats {
                id: "p-1".into(),
                name: name.into(),
                planned_share: 1.0,
                stats,
            }],
            series: (0..2)
                .map(|t| SeriesPoint {
                    t,
                    requests: 500,
                    errors: 0,
                    dropped: 0,
                    rate: 500.0,
                    p50_ms: 50.0,
                    p99_ms: 99.0,
                })
                .collect(),
            thresholds: vec![ThresholdResult {
                expr: "p99<\"300ms\"".into(),
                profile: None,
                observed: 99.0,
                passed: true,
            }],
            passed: true,
            stopped: None,
        }
    }

    #[test]
    fn report_strings_are_escaped() {
        let html = render(&report("<img src=x onerror=alert(1)> & 'q'"));
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &#39;q&#39;"));
        assert!(html.contains("http://127.0.0.1:1/&lt;x&gt;"));
        assert!(html.contains("p99&lt;&quot;300ms&quot;"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn charts_have_their_series() {
        let html = render(&report("GET /a"));
        for id in [
            "latency-over-time",
            "throughput-over-time",
            "latency-percentiles",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("data-series=\"p99\" data-points=\"2\""));
        assert!(html.contains("data-series=\"all\" data-points=\"201\""));
        assert!(html.contains("data-series=\"p-1\""));
    }

    #[test]
    fn a_bad_histogram_is_reported_not_fatal() {
        let mut r = report("x");
        r.totals.histogram = "!!".into();
        let html = render(&r);
        assert!(html.contains("Histogram not drawn: totals"));
    }

    #[test]
    fn nice_axes_and_numbers() {
        assert_eq!(nice_axis(97.0), (20.0, 100.0));
        assert_eq!(nice_axis(0.0), (1.0, 1.0));
        assert_eq!(num(5.0), "5");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.1234), "0.12");
    }
}
