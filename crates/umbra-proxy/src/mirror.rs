//! Which requests are copied, and to which shadows.
//!
//! Rules are tried in order and the first that matches decides; otherwise the
//! global share applies. Sampling is either "random" or consistent on a key:
//!
//! - random uses a Weyl sequence (a shared counter times the golden ratio,
//!   modulo 2^64) instead of a random draw, so the copied share is exact to
//!   within a request or two over any stretch of traffic, yet not periodic in
//!   any pattern a client could fall into;
//! - consistent hashes the key's value (FNV-1a, then a splitmix64 finaliser, both
//!   fixed, so every proxy process and version decides alike) and copies when the
//!   hash falls under the share: all of a user's requests, or none.
//!
//! A rate cap (GCRA, one atomic) bounds copies per second over all targets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use http::{HeaderMap, Method, Uri};

use crate::config::{self, SampleKey};

pub struct MirrorPlan {
    global: Sampler,
    rules: Vec<Rule>,
    rate: Option<RateCap>,
    pub max_body: u64,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip,
    /// Copy to these shadows (indices into the generation's targets).
    Copy(Arc<[usize]>),
    /// Sampled, but over the rate cap.
    RateLimited,
}

struct Sampler {
    /// The share as a fraction of 2^64 (u64::MAX and above means all).
    threshold: u128,
    key: SampleKey,
    counter: AtomicU64,
    targets: Arc<[usize]>,
}

struct Rule {
    path_prefix: Option<String>,
    path_regex: Option<regex::Regex>,
    methods: Option<Vec<Method>>,
    header: Option<config::HeaderMatch>,
    sampler: Sampler,
}

impl MirrorPlan {
    /// `shadow_names` are the generation's targets, in order.
    pub fn new(mirror: &config::Mirror, shadow_names: &[String]) -> MirrorPlan {
        let resolve = |names: &Option<Vec<String>>| -> Arc<[usize]> {
            match names {
                None => (0..shadow_names.len()).collect(),
                Some(list) => list
                    .iter()
                    .filter_map(|n| shadow_names.iter().position(|s| s == n))
                    .collect(),
            }
        };
        let global_targets = resolve(&mirror.targets);
        let rules = mirror
            .rules
            .iter()
            .map(|r| Rule {
                path_prefix: r.path_prefix.clone(),
                path_regex: r.path_regex.as_ref().map(|p| p.0.clone()),
                methods: r.methods.as_ref().map(|m| {
                    m.iter()
                        .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
                        .collect()
                }),
                header: r.header.clone(),
                sampler: Sampler::new(
                    r.percent,
                    r.key.clone().unwrap_or_else(|| mirror.key.clone()),
                    if r.targets.is_some() {
                        resolve(&r.targets)
                    } else {
                        global_targets.clone()
                    },
                ),
            })
            .collect();
        MirrorPlan {
            global: Sampler::new(mirror.percent, mirror.key.clone(), global_targets),
            rules,
            rate: (mirror.rate_limit > 0.0).then(|| RateCap::new(mirror.rate_limit)),
            max_body: mirror.max_body.0,
        }
    }

    /// Whether any request can ever be copied (lets the live path skip all of this).
    pub fn copies_anything(&self) -> bool {
        self.global.threshold > 0 || self.rules.iter().any(|r| r.sampler.threshold > 0)
    }

    pub fn decide(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Decision {
        let sampler = self
            .rules
            .iter()
            .find(|r| r.matches(method, uri, headers))
            .map(|r| &r.sampler)
            .unwrap_or(&self.global);
        if sampler.targets.is_empty() || !sampler.sample(headers) {
            return Decision::Skip;
        }
        if let Some(rate) = &self.rate
            && !rate.admit()
        {
            return Decision::RateLimited;
        }
        Decision::Copy(sampler.targets.clone())
    }
}

impl Rule {
    fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        if let Some(methods) = &self.methods
            && !methods.contains(method)
        {
            return false;
        }
        let path = uri.path();
        if let Some(prefix) = &self.path_prefix
            && !path.starts_with(prefix.as_str())
        {
            return false;
        }
        if let Some(re) = &self.path_regex
            && !re.is_match(path)
        {
            return false;
        }
        if let Some(h) = &self.header {
            let mut values = headers.get_all(&h.name.0).iter().peekable();
            if values.peek().is_none() {
                return false;
            }
            if h.value.is_some() || h.regex.is_some() {
                let ok = values.any(|v| {
                    let Ok(v) = v.to_str() else { return false };
                    h.value.as_deref().is_none_or(|want| want == v)
                        && h.regex.as_ref().is_none_or(|re| re.0.is_match(v))
                });
                if !ok {
                    return false;
                }
            }
        }
        true
    }
}

impl Sampler {
    fn new(percent: config::Percent, key: SampleKey, targets: Arc<[usize]>) -> Sampler {
        let threshold = (percent.fraction().clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u128;
        Sampler {
            threshold,
            key,
            counter: AtomicU64::new(0),
            targets,
        }
    }

    fn sample(&self, headers: &HeaderMap) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if self.threshold > u64::MAX as u128 {
            return true;
        }
        let point = match key_value(&self.key, headers) {
            Some(value) => consistent_hash(value),
            // No key on this request (or random sampling): the Weyl sequence.
            None => self
                .counter
                .fetch_add(1, Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        (point as u128) < self.threshold
    }
}

/// The value a consistent sampler hashes: a header's, or one cookie's.
pub fn key_value<'a>(key: &SampleKey, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    match key {
        SampleKey::Random => None,
        SampleKey::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty()),
        SampleKey::Cookie(name) => cookie(headers, name).map(str::as_bytes),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// FNV-1a 64 then splitmix64's finaliser: fixed constants, so the same key maps
/// to the same point in every process (unlike std's or ahash's seeded hashers).
pub fn consistent_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: every input bit moves every output bit.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Generic cell rate algorithm: a copy is admitted when the theoretical arrival
/// time is no more than one second of burst ahead of now.
struct RateCap {
    epoch: Instant,
    interval_ns: u64,
    burst_ns: u64,
    tat: AtomicU64,
}

impl RateCap {
    fn new(per_second: f64) -> RateCap {
        let interval_ns = (1e9 / per_second).max(1.0) as u64;
        RateCap {
            epoch: Instant::now(),
            interval_ns,
            burst_ns: 1_000_000_000u64.max(interval_ns),
            tat: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Relaxed);
        loop {
            let start = tat.max(now);
            let next = start + self.interval_ns;
            if next.saturating_sub(now) > self.burst_ns {
                return false;
            }
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml_text: &str) -> MirrorPlan {
        let mirror: config::Mirror = toml::from_str(toml_text).expect("mirror section");
        MirrorPlan::new(&mirror, &["a".into(), "b".into()])
    }

    fn get(path: &str) -> (Method, Uri) {
        (Method::GET, path.parse().expect("uri"))
    }

    #[test]
    fn random_sampling_holds_the_share_exactly() {
        let p = plan("percent = \"10%\"");
        let (m, u) = get("/x");
        let copied = (0..10_000)
            .filter(|_| matches!(p.decide(&m, &u, &HeaderMap::new()), Decision::Copy(_)))
            .count();
        assert!((995..=1005).contains(&copied), "{copied}");
    }

    #[test]
    fn consistent_sampling_copies_all_or_none_of_a_key() {
        let p = plan("percent = \"30%\"\nkey = \"header:x-user\"");
        let (m, u) = get("/x");
        let mut users_copied = 0;
        for user in 0..1000 {
            let mut h = HeaderMap::new();
            h.insert("x-user", format!("user-{user}").parse().expect("value"));
            let first = p.decide(&m, &u, &h);
            for _ in 0..5 {
                assert_eq!(p.decide(&m, &u, &h), first);
            }
            users_copied += matches!(first, Decision::Copy(_)) as usize;
        }
        assert!((250..350).contains(&users_copied), "{users_copied}");
    }

    #[test]
    fn cookie_keys_are_found_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; session=abc ; b=2".parse().expect("value"));
        assert_eq!(cookie(&h, "session"), Some("abc"));
        assert_eq!(cookie(&h, "sess"), None);
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = plan(
            r#"
percent = "0%"
[[rules]]
path_prefix = "/api/"
methods = ["POST"]
percent = "100%"
targets = ["b"]
[[rules]]
header = { name = "x-debug", value = "1" }
percent = 100
"#,
        );
        let uri: Uri = "/api/orders".parse().expect("uri");
        assert_eq!(
            p.decide(&Method::POST, &uri, &HeaderMap::new()),
            Decision::Copy(Arc::from([1usize]))
        );
        assert_eq!(
            p.decide(&Method::GET, &uri, &HeaderMap::new()),
            Decision::Skip
        );
        let mut h = HeaderMap::new();
        h.insert("x-debug", "1".parse().expect("value"));
        assert_eq!(
            p.decide(&Method::GET, &uri, &h),
            Decision::Copy(Arc::from([0usize, 1]))
        );
        h.insert("x-debug", "2".parse().expect("value"));
        assert_eq!(p.decide(&Method::GET, &uri, &h), Decision::Skip);
    }

    #[test]
    fn the_rate_cap_admits_a_burst_then_the_rate() {
        let cap = RateCap::new(100.0);
        let admitted = (0..1000).filter(|_| cap.admit()).count();
        // One second of burst at 100/s, all in the same instant.
        assert!((99..=102).contains(&admitted), "{admitted}");
    }

    #[test]
    fn the_hash_is_fixed() {
        // Changing these constants would re-shuffle which users every deployed proxy mirrors.
        assert_eq!(consistent_hash(b"user-1"), consistent_hash(b"user-1"));
        assert_ne!(consistent_hash(b"user-1"), consistent_hash(b"user-2"));
        assert_eq!(consistent_hash(b"user-1"), 14_166_554_182_431_137_624);
    }
}
