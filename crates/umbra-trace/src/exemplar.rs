//! Exemplars: per (profile, role), the trace ids of the most recent slow
//! requests, for alerts ("p99 of checkout on shadow: see these traces") and
//! for OpenMetrics exemplars on latency histograms.
//!
//! Written only for slow requests (rare by definition) and read by scrapes
//! and alerts, so one mutex is enough; the ring per key and the number of
//! keys are both bounded.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::{SpanId, TraceId};

/// Keys beyond this many are not tracked (counted in [`Exemplars::refused`]):
/// profiles come from learned sets and roles are few, so this is only a
/// guard against a caller putting something unbounded in the key.
pub const MAX_KEYS: usize = 4096;

/// One slow request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub latency: Duration,
    pub at: SystemTime,
}

impl Exemplar {
    /// The OpenMetrics exemplar that follows a histogram bucket's value:
    /// ` # {trace_id="…",span_id="…"} 0.532 1700000000.123` (latency in
    /// seconds, timestamp in seconds since the epoch).
    pub fn openmetrics(&self) -> String {
        let mut s = String::with_capacity(96);
        let ts = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = write!(
            s,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
            self.trace_id,
            self.span_id,
            self.latency.as_secs_f64(),
            ts.as_secs(),
            ts.subsec_millis()
        );
        s
    }
}

/// The recent slow requests of one (profile, role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemplarSeries {
    pub profile: String,
    pub role: String,
    /// Newest first.
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug, Default)]
struct Rings {
    map: HashMap<String, HashMap<String, VecDeque<Exemplar>>>,
    keys: usize,
}

#[derive(Debug)]
pub struct Exemplars {
    per_key: usize,
    /// profile → role → ring: nested so a lookup borrows `&str`s.
    rings: Mutex<Rings>,
    refused: AtomicU64,
}

impl Exemplars {
    /// Keeps the `per_key` most recent exemplars of each (profile, role).
    pub fn new(per_key: usize) -> Exemplars {
        Exemplars {
            per_key: per_key.max(1),
            rings: Mutex::new(Rings::default()),
            refused: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, profile: &str, role: &str, e: Exemplar) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        // Look up by borrowed parts first: the common case allocates nothing.
        if let Some(ring) = rings.map.get_mut(profile).and_then(|m| m.get_mut(role)) {
            if ring.len() == self.per_key {
                ring.pop_back();
            }
            ring.push_front(e);
            return;
        }
        if rings.keys >= MAX_KEYS {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        rings.keys += 1;
        let mut ring = VecDeque::with_capacity(self.per_key);
        ring.push_front(e);
        rings
            .map
            .entry(profile.to_string())
            .or_default()
            .insert(role.to_string(), ring);
    }

    /// Newest first.
    pub fn recent(&self, profile: &str, role: &str) -> Vec<Exemplar> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .map
            .get(profile)
            .and_then(|m| m.get(role))
            .map(|ring| ring.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn latest(&self, profile: &str, role: &str) -> Option<Exemplar> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .map
            .get(profile)
            .and_then(|m| m.get(role))
            .and_then(|ring| ring.front().copied())
    }

    /// Every key, sorted by profile then role.
    pub fn snapshot(&self) -> Vec<ExemplarSeries> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ExemplarSeries> = rings
            .map
            .iter()
            .flat_map(|(p, roles)| {
                roles.iter().map(move |(r, ring)| ExemplarSeries {
                    profile: p.clone(),
                    role: r.clone(),
                    exemplars: ring.iter().copied().collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.profile, &a.role).cmp(&(&b.profile, &b.role)));
        out
    }

    /// Observations refused because [`MAX_KEYS`] keys were already tracked.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ex(n: u64) -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_u128(n as u128).unwrap(),
            span_id: SpanId::from_u64(n).unwrap(),
            latency: Duration::from_millis(n),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn keeps_the_most_recent_per_key() {
        let e = Exemplars::new(3);
        for n in 1..=5 {
            e.observe("checkout", "shadow", ex(n));
        }
        e.observe("checkout", "live", ex(9));
        let recent: Vec<u64> = e
            .recent("checkout", "shadow")
            .iter()
            .map(|x| x.span_id.to_u64())
            .collect();
        assert_eq!(recent, vec![5, 4, 3]);
        assert_eq!(e.latest("checkout", "live").unwrap().span_id.to_u64(), 9);
        assert!(e.recent("search", "live").is_empty());
        let snap = e.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].role, "live");
    }

    #[test]
    fn keys_are_bounded() {
        let e = Exemplars::new(1);
        for k in 0..MAX_KEYS + 10 {
            e.observe(&format!("p{k}"), "live", ex(1));
        }
        assert_eq!(e.snapshot().len(), MAX_KEYS);
        assert_eq!(e.refused(), 10);
    }

    #[test]
    fn openmetrics_form() {
        assert_eq!(
            ex(250).openmetrics(),
            " # {trace_id=\"000000000000000000000000000000fa\",span_id=\"00000000000000fa\"} 0.25 1700000000.123"
        );
    }
}
