//! The canary: a new version that answers a share of live traffic.
//!
//! The proxy does only the routing; what share the canary gets, and when it
//! changes, is decided elsewhere (the binary's canary controller, which judges
//! the canary against production) and set through [`CanarySplit::set`]. The
//! split lives as long as the proxy, across reloads, so a SIGHUP never moves a
//! canary back to an earlier stage.
//!
//! Two modes:
//! - **shadow stage**: the canary receives masked copies (its own sampler,
//!   `[canary] mirror`), through a shadow target of its own; no user sees it;
//! - **live stages**: a share of requests is answered by the canary pool.
//!   With `[canary] key` the choice is consistent per user (a hash of the
//!   header or cookie under the share), so a user stays on the canary from one
//!   stage to the next (a larger share keeps every user the smaller one had).
//!   Without a key, requests are split by the same Weyl sequence as mirroring:
//!   the share is exact to within a request.
//!
//! Routing costs two atomic loads, plus a hash when a key is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use http::HeaderMap;

use crate::config::{HostPolicy, SampleKey};
use crate::mirror::{MirrorPlan, consistent_hash, key_value, mix};
use crate::pool::Pool;
use crate::shadow::ShadowTarget;

const OFF: u8 = 0;
const SHADOW: u8 = 1;
const LIVE: u8 = 2;

/// Mixed into the user's hash so the canary's users are independent of the
/// users whose requests are mirrored (both hash the same key).
const SALT: u64 = 0x6a09_e667_f3bc_c909;

/// What the canary gets now; shared by every generation.
#[derive(Default)]
pub struct CanarySplit {
    mode: AtomicU8,
    /// The live share as a fraction of 2^64; `u64::MAX` is everything.
    threshold: AtomicU64,
    counter: AtomicU64,
}

/// The canary's share as set and as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryShare {
    /// Copies go to the canary (the shadow stage).
    pub mirror: bool,
    /// Percent of live requests the canary answers.
    pub percent: f64,
}

impl CanarySplit {
    pub fn set(&self, share: CanaryShare) {
        let p = if share.percent.is_finite() {
            share.percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let threshold = if p >= 100.0 {
            u64::MAX
        } else {
            (p / 100.0 * 18_446_744_073_709_551_616.0) as u64
        };
        // The threshold first: a request that sees the new mode sees its share.
        self.threshold.store(threshold, Relaxed);
        let mode = if p > 0.0 {
            LIVE
        } else if share.mirror {
            SHADOW
        } else {
            OFF
        };
        self.mode.store(mode, Relaxed);
    }

    pub fn get(&self) -> CanaryShare {
        let t = self.threshold.load(Relaxed);
        let mode = self.mode.load(Relaxed);
        CanaryShare {
            mirror: mode == SHADOW,
            percent: if mode == LIVE {
                if t == u64::MAX {
                    100.0
                } else {
                    t as f64 / 18_446_744_073_709_551_616.0 * 100.0
                }
            } else {
                0.0
            },
        }
    }

    /// Whether shadow-stage copies go out.
    pub fn mirrors(&self) -> bool {
        self.mode.load(Relaxed) == SHADOW
    }

    /// Whether this request is answered by the canary.
    pub fn routes(&self, key: &SampleKey, headers: &HeaderMap) -> bool {
        if self.mode.load(Relaxed) != LIVE {
            return false;
        }
        let threshold = self.threshold.load(Relaxed);
        if threshold == u64::MAX {
            return true;
        }
        let point = match key_value(key, headers) {
            Some(value) => mix(consistent_hash(value) ^ SALT),
            None => self
                .counter
                .fetch_add(1, Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        point < threshold
    }
}

/// The canary of one generation: its pool, its copies' target and sampler.
pub struct CanaryRoute {
    pub name: Arc<str>,
    pub pool: Arc<Pool>,
    pub key: SampleKey,
    pub host: HostPolicy,
    /// Where shadow-stage copies go (the first canary server).
    pub copies: Arc<ShadowTarget>,
    /// Which requests are copied in the shadow stage.
    pub mirror: MirrorPlan,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(user: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-user", user.parse().expect("value"));
        h
    }

    #[test]
    fn the_share_is_exact_without_a_key() {
        let s = CanarySplit::default();
        s.set(CanaryShare {
            mirror: false,
            percent: 5.0,
        });
        let n = (0..10_000)
            .filter(|_| s.routes(&SampleKey::Random, &HeaderMap::new()))
            .count();
        assert!((495..=505).contains(&n), "{n} of 10000 at 5%");
        assert!((s.get().percent - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_user_on_the_canary_stays_there_as_the_share_grows() {
        let key: SampleKey = "header:x-user".parse().expect("key");
        let s = CanarySplit::default();
        let users: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
        let mut before: Vec<bool> = vec![false; users.len()];
        for percent in [1.0, 5.0, 25.0, 50.0] {
            s.set(CanaryShare {
                mirror: false,
                percent,
            });
            let now: Vec<bool> = users.iter().map(|u| s.routes(&key, &headers(u))).collect();
            // The same answer every time for one user.
            for (u, on) in users.iter().zip(&now) {
                assert_eq!(s.routes(&key, &headers(u)), *on);
            }
            for (b, n) in before.iter().zip(&now) {
                assert!(
                    !b || *n,
                    "a user left the canary when it grew to {percent}%"
                );
            }
            let share = now.iter().filter(|x| **x).count() as f64 / users.len() as f64;
            assert!(
                (share * 100.0 - percent).abs() < percent.max(2.0) * 0.35,
                "{share} at {percent}%"
            );
            before = now;
        }
    }

    #[test]
    fn off_shadow_and_all() {
        let s = CanarySplit::default();
        assert!(!s.routes(&SampleKey::Random, &HeaderMap::new()));
        assert!(!s.mirrors());
        s.set(CanaryShare {
            mirror: true,
            percent: 0.0,
        });
        assert!(s.mirrors());
        assert!(!s.routes(&SampleKey::Random, &HeaderMap::new()));
        s.set(CanaryShare {
            mirror: false,
            percent: 100.0,
        });
        assert!(!s.mirrors());
        assert!((0..1000).all(|_| s.routes(&SampleKey::Random, &HeaderMap::new())));
        assert_eq!(s.get().percent, 100.0);
    }
}
