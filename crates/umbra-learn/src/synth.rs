//! Synthetic access logs with known behavioural groups.
//!
//! For tests (does clustering recover the groups?), benchmarks (a million lines
//! in a few seconds) and trying Umbra without production logs. Each line is
//! nginx's combined format with `$request_time` appended, drawn from one of a
//! fixed set of groups that differ the way real traffic does: in path, method,
//! client kind, sizes, status and latency. Noise: sizes and latencies are
//! log-normal, a share of requests get an error status, and ids, slugs and
//! queries vary per request.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A behavioural group: how to draw one request of it.
struct Group {
    name: &'static str,
    weight: f64,
    method: &'static str,
    /// Path with `{id}`, `{slug}`, `{size}`, `{file}` filled per request.
    paths: &'static [&'static str],
    query: Option<&'static str>,
    agents: &'static [&'static str],
    /// Median response bytes and log-normal sigma.
    bytes: (f64, f64),
    /// Median latency (ms).
    latency_ms: f64,
    ok: u16,
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
];
const MOBILES: &[&str] = &[
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
];
const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
];
const APIS: &[&str] = &[
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];
const PROBES: &[&str] = &["kube-probe/1.29", "Prometheus/2.48.0", "Go-http-client/1.1"];

const GROUPS: &[Group] = &[
    Group {
        name: "product pages",
        weight: 0.22,
        method: "GET",
        paths: &["/product/{id}/{slug}"],
        query: None,
        agents: BROWSERS,
        bytes: (48_000.0, 0.25),
        latency_ms: 80.0,
        ok: 200,
    },
    Group {
        name: "mobile images",
        weight: 0.20,
        method: "GET",
        paths: &["/image/{id}/thumb/{size}"],
        query: None,
        agents: MOBILES,
        bytes: (6_000.0, 0.3),
        latency_ms: 8.0,
        ok: 200,
    },
    Group {
        name: "crawlers",
        weight: 0.12,
        method: "GET",
        paths: &["/product/{id}/{slug}", "/category/{slug}"],
        query: None,
        agents: BOTS,
        bytes: (40_000.0, 0.35),
        latency_ms: 90.0,
        ok: 200,
    },
    Group {
        name: "search",
        weight: 0.14,
        method: "GET",
        paths: &["/search"],
        query: Some("q={slug}&page={small}"),
        agents: BROWSERS,
        bytes: (25_000.0, 0.3),
        latency_ms: 150.0,
        ok: 200,
    },
    Group {
        name: "api orders",
        weight: 0.10,
        method: "POST",
        paths: &["/api/v1/orders"],
        query: None,
        agents: APIS,
        bytes: (400.0, 0.3),
        latency_ms: 120.0,
        ok: 201,
    },
    Group {
        name: "static assets",
        weight: 0.12,
        method: "GET",
        paths: &["/static/{file}.js", "/static/{file}.css"],
        query: None,
        agents: BROWSERS,
        bytes: (180_000.0, 0.4),
        latency_ms: 3.0,
        ok: 200,
    },
    Group {
        name: "health checks",
        weight: 0.05,
        method: "GET",
        paths: &["/healthz"],
        query: None,
        agents: PROBES,
        bytes: (2.0, 0.0),
        latency_ms: 0.5,
        ok: 200,
    },
    Group {
        name: "login",
        weight: 0.05,
        method: "POST",
        paths: &["/account/login"],
        query: None,
        agents: BROWSERS,
        bytes: (150.0, 0.2),
        latency_ms: 200.0,
        ok: 302,
    },
];

/// The names of the groups, indexed by the labels [`SynthLog::next_line`] returns.
pub fn group_names() -> Vec<&'static str> {
    GROUPS.iter().map(|g| g.name).collect()
}

/// An endless, reproducible stream of log lines with their group labels.
pub struct SynthLog {
    rng: StdRng,
    /// Milliseconds since the epoch of the next line.
    now_ms: i64,
    /// Mean gap between lines.
    gap_ms: f64,
    /// Share of requests answered with an error status.
    error_rate: f64,
    cumulative: Vec<f64>,
    only: Option<Vec<usize>>,
}

impl SynthLog {
    /// Starts at `start_ms` with `rate` requests per second on average.
    pub fn new(seed: u64, start_ms: i64, rate: f64) -> SynthLog {
        let total: f64 = GROUPS.iter().map(|g| g.weight).sum();
        let mut acc = 0.0;
        let cumulative = GROUPS
            .iter()
            .map(|g| {
                acc += g.weight / total;
                acc
            })
            .collect();
        SynthLog {
            rng: StdRng::seed_from_u64(seed),
            now_ms: start_ms,
            gap_ms: 1000.0 / rate.max(1e-6),
            error_rate: 0.02,
            cumulative,
            only: None,
        }
    }

    /// Draws only from the given groups (indices into [`group_names`]), each with
    /// its own weight renormalised: for tests of shifting traffic.
    pub fn only_groups(mut self, groups: &[usize]) -> SynthLog {
        self.only = Some(groups.to_vec());
        self
    }

    pub fn with_error_rate(mut self, rate: f64) -> SynthLog {
        self.error_rate = rate;
        self
    }

    /// The next line (without newline) and its group label.
    pub fn next_line(&mut self) -> (String, usize) {
        let g = self.pick_group();
        let group = &GROUPS[g];
        let rng = &mut self.rng;
        let path_tpl = group.paths[rng.random_range(0..group.paths.len())];
        let mut target = fill(rng, path_tpl);
        if let Some(q) = group.query {
            target.push('?');
            target.push_str(&fill(rng, q));
        }
        let agent = group.agents[rng.random_range(0..group.agents.len())];
        let status = if rng.random::<f64>() < self.error_rate {
            [404u16, 500, 503][rng.random_range(0..3)]
        } else {
            group.ok
        };
        let bytes = lognormal(rng, group.bytes.0, group.bytes.1).round() as u64;
        let latency = lognormal(rng, group.latency_ms, 0.4) / 1000.0;
        let client = format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..255)
        );
        let time = format_time(self.now_ms);
        // Exponential gaps: a Poisson arrival process.
        let u: f64 = rng.random::<f64>().max(1e-12);
        self.now_ms += (-u.ln() * self.gap_ms).round() as i64;
        let line = format!(
            "{client} - - [{time}] \"{} {target} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\" {latency:.3}",
            group.method
        );
        (line, g)
    }

    fn pick_group(&mut self) -> usize {
        match &self.only {
            Some(only) => {
                let total: f64 = only.iter().map(|&g| GROUPS[g].weight).sum();
                let mut u = self.rng.random::<f64>() * total;
                for &g in only {
                    u -= GROUPS[g].weight;
                    if u <= 0.0 {
                        return g;
                    }
                }
                *only.last().unwrap_or(&0)
            }
            None => {
                let u: f64 = self.rng.random();
                self.cumulative
                    .iter()
                    .position(|c| u <= *c)
                    .unwrap_or(GROUPS.len() - 1)
            }
        }
    }
}

fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    // Box-Muller for a standard normal.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

const WORDS: &[&str] = &[
    "red", "blue", "phone", "case", "shoe", "lamp", "desk", "chair", "sofa", "black", "pro",
    "mini", "max", "wood", "steel", "smart", "watch", "kettle", "bag", "coat",
];

fn fill(rng: &mut StdRng, tpl: &str) -> String {
    let mut out = String::with_capacity(tpl.len() + 16);
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        match &rest[open + 1..close] {
            "id" => out.push_str(&rng.random_range(1000..99_999).to_string()),
            "small" => out.push_str(&rng.random_range(1..20).to_string()),
            "size" => out.push_str(["100x100", "200x200", "400x400"][rng.random_range(0..3)]),
            "file" => {
                out.push_str(["app", "vendor", "main", "chunk"][rng.random_range(0..4)]);
                out.push('-');
                out.push_str(&format!("{:08x}", rng.random::<u32>()));
            }
            _ => {
                let n = rng.random_range(2..5);
                for i in 0..n {
                    if i > 0 {
                        out.push('-');
                    }
                    out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                }
            }
        }
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// nginx's `$time_local` in UTC: `22/Jan/2019:03:56:14 +0000`.
fn format_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        None => "01/Jan/1970:00:00:00 +0000".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_labelled() {
        let mut a = SynthLog::new(7, 1_700_000_000_000, 100.0);
        let mut b = SynthLog::new(7, 1_700_000_000_000, 100.0);
        for _ in 0..100 {
            assert_eq!(a.next_line(), b.next_line());
        }
        let (line, g) = a.next_line();
        assert!(g < group_names().len());
        assert!(line.contains("HTTP/1.1\""), "{line}");
        let mut only = SynthLog::new(1, 0, 10.0).only_groups(&[4]);
        for _ in 0..20 {
            assert_eq!(only.next_line().1, 4);
        }
    }
}
