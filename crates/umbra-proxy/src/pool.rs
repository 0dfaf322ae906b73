//! The production pool: weighted power of two choices over a peak-EWMA load
//! estimate, with active health checks and passive ejection.
//!
//! The model is tower's `p2c` balancer with `PeakEwma` (and linkerd's
//! `pool/p2c`): pick two servers at random, in proportion to their weights, and
//! send to the one whose cost, `ewma_latency * (in_flight + 1) / weight`, is lower.
//! Peak-EWMA jumps up at once on a slow response and decays slowly, so a server
//! that turns slow is avoided within a request or two. Everything a request
//! touches is an atomic; weights change at run time through [`Pool::set_weight`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::{Ejection, Server, UpstreamUrl};
use crate::upstream::Target;

/// How fast the latency estimate forgets: the weight of an old observation
/// falls to 1/e after this long (linkerd and tower use 10 s).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The estimate a server starts with, before it has answered anything.
const DEFAULT_RTT: Duration = Duration::from_millis(5);

pub struct Endpoint {
    /// `host:port`, the label everywhere (metrics, logs, weights).
    pub name: Arc<str>,
    pub url: UpstreamUrl,
    /// Where requests connect, and the idle connections (kept across reloads with the endpoint).
    pub target: Target,
    pub metrics_url: Option<UpstreamUrl>,
    weight: AtomicU32,
    in_flight: AtomicU32,
    /// Peak-EWMA latency in nanoseconds (f64 bits) and when it was last updated.
    ewma_ns: AtomicU64,
    ewma_at: AtomicU64,
    /// Set by active health checks; true when checks are off.
    healthy: AtomicBool,
    check_streak: AtomicU32,
    /// Passive ejection: nanoseconds since the pool's epoch until which the server rests.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    consecutive_failures: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl Endpoint {
    fn new(server: &Server, epoch: Instant) -> Endpoint {
        Endpoint {
            name: server.url.authority().into(),
            url: server.url.clone(),
            target: Target::new(&server.url),
            metrics_url: server.metrics.clone(),
            weight: AtomicU32::new(server.weight),
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_at: AtomicU64::new(nanos_since(epoch)),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }
    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }
    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.ewma_ns.load(Relaxed)) as u64)
    }
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    fn cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Relaxed));
        let pending = self.in_flight.load(Relaxed) as f64 + 1.0;
        ewma * pending / self.weight.load(Relaxed).max(1) as f64
    }
}

pub struct Pool {
    pub endpoints: Vec<Arc<Endpoint>>,
    epoch: Instant,
    ejection: Ejection,
}

/// A request's claim on a server: counts it in flight until dropped.
pub struct Lease {
    pub endpoint: Arc<Endpoint>,
    epoch: Instant,
}

impl Pool {
    /// A pool for `servers`, keeping the state of servers that `previous` already knew
    /// (a reload keeps their latency estimates and health; weights come from the config).
    pub fn new(servers: &[Server], ejection: Ejection, previous: Option<&Pool>) -> Pool {
        let epoch = previous.map(|p| p.epoch).unwrap_or_else(Instant::now);
        let endpoints = servers
            .iter()
            .map(
                |s| match previous.and_then(|p| p.endpoints.iter().find(|e| e.url == s.url)) {
                    Some(e) => {
                        e.weight.store(s.weight, Relaxed);
                        e.clone()
                    }
                    None => Arc::new(Endpoint::new(s, epoch)),
                },
            )
            .collect();
        Pool {
            endpoints,
            epoch,
            ejection,
        }
    }

    /// Sets a server's weight (by name `host:port` or URL); false when there is no such server.
    pub fn set_weight(&self, server: &str, weight: u32) -> bool {
        let mut found = false;
        for e in &self.endpoints {
            if *e.name == *server
                || e.url.to_string().trim_end_matches('/') == server.trim_end_matches('/')
            {
                e.weight.store(weight, Relaxed);
                found = true;
            }
        }
        found
    }

    fn available(&self, e: &Endpoint, now: u64) -> bool {
        e.weight.load(Relaxed) > 0
            && e.healthy.load(Relaxed)
            && e.ejected_until.load(Relaxed) <= now
    }

    /// Picks a server for a request, avoiding `avoid` (a retry) when there is another.
    pub fn pick(&self, avoid: Option<&Endpoint>) -> Lease {
        if let [only] = &self.endpoints[..] {
            // One server: it gets every request whatever its state (as when all are
            // out), so there is nothing to weigh, draw or time.
            return self.lease(only.clone());
        }
        let now = nanos_since(self.epoch);
        let mut candidates: [usize; 2] = [usize::MAX; 2];
        // Two distinct servers, each drawn in proportion to weight (the second
        // from the rest); returns how many were found.
        let choose = |filter: &dyn Fn(&Endpoint) -> bool, out: &mut [usize; 2]| -> usize {
            let mut found = 0;
            while found < 2 {
                let eligible = |i: usize, e: &Endpoint| filter(e) && (found == 0 || i != out[0]);
                let total: u64 = self
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| eligible(*i, e))
                    .map(|(_, e)| e.weight.load(Relaxed).max(1) as u64)
                    .sum();
                if total == 0 {
                    break;
                }
                let mut r = fast_random() % total;
                for (i, e) in self.endpoints.iter().enumerate() {
                    if !eligible(i, e) {
                        continue;
                    }
                    let w = e.weight.load(Relaxed).max(1) as u64;
                    if r < w {
                        out[found] = i;
                        break;
                    }
                    r -= w;
                }
                found += 1;
            }
            found
        };
        let avoid_ptr = avoid.map(|a| a as *const Endpoint);
        let not_avoided = |e: &Endpoint| Some(e as *const Endpoint) != avoid_ptr;
        let mut found = choose(
            &|e| self.available(e, now) && not_avoided(e),
            &mut candidates,
        );
        if found == 0 {
            found = choose(&|e| self.available(e, now), &mut candidates);
        }
        if found == 0 {
            // Every server is out: send to all of them rather than fail everything
            // (Envoy's panic mode); one that recovers is found by the live traffic.
            found = choose(&|e| e.weight.load(Relaxed) > 0, &mut candidates);
        }
        if found == 0 {
            found = choose(&|_| true, &mut candidates);
        }
        let index = if found == 2 {
            let (a, b) = (
                &self.endpoints[candidates[0]],
                &self.endpoints[candidates[1]],
            );
            if b.cost() < a.cost() {
                candidates[1]
            } else {
                candidates[0]
            }
        } else {
            candidates[0]
        };
        self.lease(self.endpoints[index.min(self.endpoints.len() - 1)].clone())
    }

    fn lease(&self, endpoint: Arc<Endpoint>) -> Lease {
        endpoint.in_flight.fetch_add(1, Relaxed);
        endpoint.requests.fetch_add(1, Relaxed);
        Lease {
            endpoint,
            epoch: self.epoch,
        }
    }

    /// Records a live result for passive ejection.
    pub fn outcome(&self, e: &Endpoint, failed: bool) {
        if !failed {
            if e.consecutive_failures.load(Relaxed) != 0 {
                e.consecutive_failures.store(0, Relaxed);
            }
            return;
        }
        e.failures.fetch_add(1, Relaxed);
        let threshold = self.ejection.consecutive_failures;
        if threshold == 0 {
            return;
        }
        let n = e.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= threshold {
            e.consecutive_failures.store(0, Relaxed);
            let times = e.ejections.fetch_add(1, Relaxed);
            let rest = self
                .ejection
                .base_time
                .saturating_mul(1u32 << times.min(16))
                .min(self.ejection.max_time);
            let until = nanos_since(self.epoch) + rest.as_nanos() as u64;
            e.ejected_until.store(until, Relaxed);
        }
    }

    /// Whether a server is resting after passive ejection.
    pub fn is_ejected(&self, e: &Endpoint) -> bool {
        e.ejected_until.load(Relaxed) > nanos_since(self.epoch)
    }

    /// Records an active health check's result; `fall` bad or `rise` good in a row flip the state.
    pub fn check_result(e: &Endpoint, ok: bool, fall: u32, rise: u32) {
        let healthy = e.healthy.load(Relaxed);
        if ok == healthy {
            e.check_streak.store(0, Relaxed);
            return;
        }
        let streak = e.check_streak.fetch_add(1, Relaxed) + 1;
        let needed = if healthy { fall } else { rise };
        if streak >= needed.max(1) {
            e.healthy.store(ok, Relaxed);
            e.check_streak.store(0, Relaxed);
            if ok {
                // A server back from an outage starts with a clean slate.
                e.ejections.store(0, Relaxed);
            }
        }
    }
}

impl Lease {
    /// The response head arrived after `rtt`: fold it into the peak-EWMA.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now());
    }

    /// [`observe`](Self::observe) with the clock already read.
    pub fn observe_at(&self, rtt: Duration, now: Instant) {
        let e = &self.endpoint;
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let rtt = rtt.as_nanos() as f64;
        let prev = f64::from_bits(e.ewma_ns.load(Relaxed));
        let at = e.ewma_at.swap(now, Relaxed);
        let next = if rtt > prev {
            rtt
        } else {
            let elapsed = now.saturating_sub(at) as f64;
            let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            prev * w + rtt * (1.0 - w)
        };
        // Two requests may race here; either result is a fair estimate.
        e.ewma_ns.store(next.to_bits(), Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Relaxed);
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// A per-thread xorshift: picking servers must not contend on a shared generator.
pub(crate) fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Server {
                url: format!("http://127.0.0.1:{}", 9000 + i)
                    .parse()
                    .expect("url"),
                weight: *w,
                metrics: None,
                cpus: None,
            })
            .collect()
    }

    fn counts(pool: &Pool, n: usize) -> Vec<usize> {
        let mut c = vec![0; pool.endpoints.len()];
        for _ in 0..n {
            let lease = pool.pick(None);
            let i = pool
                .endpoints
                .iter()
                .position(|e| Arc::ptr_eq(e, &lease.endpoint))
                .expect("member");
            c[i] += 1;
        }
        c
    }

    #[test]
    fn equal_servers_share_evenly_and_weights_tilt_the_share() {
        let pool = Pool::new(&servers(&[100, 100, 100]), Ejection::default(), None);
        let c = counts(&pool, 30_000);
        assert!(c.iter().all(|&n| (8_500..11_500).contains(&n)), "{c:?}");
        assert!(pool.set_weight("127.0.0.1:9000", 400));
        let c = counts(&pool, 30_000);
        assert!(c[0] > c[1] * 2 && c[0] > c[2] * 2, "{c:?}");
    }

    #[test]
    fn a_slow_server_is_avoided() {
        let pool = Pool::new(&servers(&[100, 100]), Ejection::default(), None);
        let slow = pool.pick(None);
        let slow_ptr = Arc::as_ptr(&slow.endpoint);
        slow.observe(Duration::from_millis(500));
        drop(slow);
        let c = counts(&pool, 1000);
        let slow_i = pool
            .endpoints
            .iter()
            .position(|e| Arc::as_ptr(e) == slow_ptr)
            .expect("member");
        assert!(c[slow_i] < 50, "{c:?}");
    }

    #[test]
    fn failing_servers_are_ejected_and_the_pool_never_empties() {
        let ejection = Ejection {
            consecutive_failures: 3,
            base_time: Duration::from_secs(60),
            max_time: Duration::from_secs(60),
        };
        let pool = Pool::new(&servers(&[100, 100]), ejection, None);
        let bad = pool.endpoints[0].clone();
        for _ in 0..3 {
            pool.outcome(&bad, true);
        }
        assert!(pool.is_ejected(&bad));
        assert_eq!(counts(&pool, 200), vec![0, 200]);
        for _ in 0..3 {
            pool.outcome(&pool.endpoints[1].clone(), true);
        }
        // Both out: panic mode spreads over both rather than failing.
        let c = counts(&pool, 2000);
        assert!(c[0] > 500 && c[1] > 500, "{c:?}");
    }

    #[test]
    fn health_checks_need_fall_and_rise_in_a_row() {
        let pool = Pool::new(&servers(&[100]), Ejection::default(), None);
        let e = &pool.endpoints[0];
        Pool::check_result(e, false, 2, 2);
        assert!(e.healthy());
        Pool::check_result(e, true, 2, 2);
        Pool::check_result(e, false, 2, 2);
        assert!(e.healthy());
        Pool::check_result(e, false, 2, 2);
        assert!(!e.healthy());
        Pool::check_result(e, true, 2, 2);
        Pool::check_result(e, true, 2, 2);
        assert!(e.healthy());
    }

    #[test]
    fn a_reload_keeps_known_servers() {
        let first = Pool::new(&servers(&[100, 100]), Ejection::default(), None);
        first.pick(None).observe(Duration::from_millis(300));
        let second = Pool::new(&servers(&[50, 100, 100]), Ejection::default(), Some(&first));
        assert!(Arc::ptr_eq(&first.endpoints[0], &second.endpoints[0]));
        assert_eq!(second.endpoints[0].weight(), 50);
        assert_eq!(second.endpoints.len(), 3);
    }
}
