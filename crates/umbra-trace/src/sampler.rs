//! Head sampling: OpenTelemetry's built-in samplers, as named by
//! `OTEL_TRACES_SAMPLER`.
//!
//! `TraceIdRatioBased` is deterministic on the trace id: it compares the
//! rightmost 56 bits (the randomness W3C Trace Context Level 2 guarantees)
//! with a rejection threshold `(1 - ratio) · 2^56`, as OpenTelemetry's
//! consistent probability sampling defines it (the `th` of the `ot`
//! tracestate). So every process that sees a trace decides the same way, and
//! a trace kept at ratio r is kept at every ratio above r.

use std::fmt;

use crate::context::TraceContext;
use crate::id::TraceId;

const TWO_56: u64 = 1 << 56;

/// The decision for traces without a usable parent decision.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    /// `threshold` is derived from `ratio` by [`Sampler::ratio`].
    TraceIdRatio {
        ratio: f64,
        threshold: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Sampler {
    pub root: RootSampler,
    /// Follow the parent's sampled flag when there is a parent with a
    /// decision (OpenTelemetry's `ParentBased` with its default delegates).
    pub parent_based: bool,
}

/// Why a sampler name or argument was refused (the configuration layer adds
/// which variable or key held it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "unknown sampler; expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Unknown,
    #[error(
        "this sampler needs a remote service Umbra does not talk to; use traceidratio or parentbased_traceidratio"
    )]
    Unsupported,
    #[error("the ratio must be a number from 0 to 1")]
    Ratio,
}

impl Sampler {
    /// OpenTelemetry's default: `parentbased_always_on`.
    pub const DEFAULT: Sampler = Sampler {
        root: RootSampler::AlwaysOn,
        parent_based: true,
    };

    /// A `TraceIdRatioBased` root sampler.
    pub fn ratio(ratio: f64) -> Result<RootSampler, SamplerError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(SamplerError::Ratio);
        }
        let threshold = ((1.0 - ratio) * TWO_56 as f64).round() as u64;
        Ok(RootSampler::TraceIdRatio {
            ratio,
            threshold: threshold.min(TWO_56),
        })
    }

    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` values. The
    /// argument only matters for the ratio samplers (default 1.0), as the
    /// specification says; the others ignore it.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Sampler, SamplerError> {
        let ratio = || match arg.map(str::trim).filter(|a| !a.is_empty()) {
            None => Sampler::ratio(1.0),
            Some(a) => a
                .parse::<f64>()
                .map_err(|_| SamplerError::Ratio)
                .and_then(Sampler::ratio),
        };
        let (root, parent_based) = match name.trim() {
            "always_on" => (RootSampler::AlwaysOn, false),
            "always_off" => (RootSampler::AlwaysOff, false),
            "traceidratio" => (ratio()?, false),
            "parentbased_always_on" => (RootSampler::AlwaysOn, true),
            "parentbased_always_off" => (RootSampler::AlwaysOff, true),
            "parentbased_traceidratio" => (ratio()?, true),
            "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => {
                return Err(SamplerError::Unsupported);
            }
            _ => return Err(SamplerError::Unknown),
        };
        Ok(Sampler { root, parent_based })
    }

    /// The head decision for a span in trace `trace_id` whose parent is
    /// `parent` (`None` for a root). A parent without a decision (B3 with no
    /// sampling state) counts as no parent.
    pub fn decide(&self, parent: Option<&TraceContext>, trace_id: TraceId) -> bool {
        if self.parent_based
            && let Some(p) = parent
            && !p.deferred
        {
            return p.is_sampled();
        }
        self.root.decide(trace_id)
    }
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::DEFAULT
    }
}

impl RootSampler {
    pub fn decide(&self, trace_id: TraceId) -> bool {
        match *self {
            RootSampler::AlwaysOn => true,
            RootSampler::AlwaysOff => false,
            RootSampler::TraceIdRatio { threshold, .. } => trace_id.randomness() >= threshold,
        }
    }
}

impl fmt::Display for RootSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSampler::AlwaysOn => f.write_str("AlwaysOnSampler"),
            RootSampler::AlwaysOff => f.write_str("AlwaysOffSampler"),
            RootSampler::TraceIdRatio { ratio, .. } => write!(f, "TraceIdRatioBased{{{ratio}}}"),
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent_based {
            write!(f, "ParentBased{{root={}}}", self.root)
        } else {
            self.root.fmt(f)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::context::TraceContext;

    fn ids(n: u64) -> impl Iterator<Item = TraceId> {
        // A fixed pseudo-random sequence (splitmix64), so the test is the same every run.
        let mut z = 0x1234_5678_9abc_def0u64;
        (0..n).map(move |_| {
            let mut next = || {
                z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut x = z;
                x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                x ^ (x >> 31)
            };
            let v = ((next() as u128) << 64) | next() as u128;
            TraceId::from_u128(v | 1).unwrap()
        })
    }

    #[test]
    fn ratio_is_deterministic_on_the_trace_id() {
        let s = Sampler::parse("traceidratio", Some("0.3")).unwrap();
        for id in ids(1000) {
            let first = s.decide(None, id);
            for _ in 0..3 {
                assert_eq!(s.decide(None, id), first);
            }
            // A second sampler with the same ratio agrees (no hidden state).
            let again = Sampler::parse("traceidratio", Some("0.30")).unwrap();
            assert_eq!(again.decide(None, id), first);
        }
    }

    #[test]
    fn ratio_is_accurate() {
        let n = 200_000u64;
        for ratio in [0.001, 0.01, 0.1, 0.25, 0.5, 0.9] {
            let s = Sampler::parse("traceidratio", Some(&ratio.to_string())).unwrap();
            let kept = ids(n).filter(|id| s.decide(None, *id)).count() as f64;
            let expected = ratio * n as f64;
            // Five standard deviations of a binomial count.
            let sd = (n as f64 * ratio * (1.0 - ratio)).sqrt();
            assert!(
                (kept - expected).abs() <= 5.0 * sd,
                "ratio {ratio}: kept {kept}, expected {expected} ± {}",
                5.0 * sd
            );
        }
    }

    #[test]
    fn a_higher_ratio_keeps_everything_a_lower_one_keeps() {
        let low = Sampler::parse("traceidratio", Some("0.1")).unwrap();
        let high = Sampler::parse("traceidratio", Some("0.4")).unwrap();
        let mut low_kept = 0;
        for id in ids(20_000) {
            if low.decide(None, id) {
                low_kept += 1;
                assert!(high.decide(None, id), "{id}");
            }
        }
        assert!(low_kept > 1000);
    }

    #[test]
    fn ratio_ends_are_exact() {
        let all = Sampler::parse("traceidratio", Some("1")).unwrap();
        let none = Sampler::parse("traceidratio", Some("0")).unwrap();
        let max = TraceId::from_u128(u128::MAX).unwrap();
        let min = TraceId::from_u128(1u128 << 56).unwrap(); // randomness 0
        assert!(all.decide(None, min) && all.decide(None, max));
        assert!(!none.decide(None, min) && !none.decide(None, max));
    }

    #[test]
    fn parent_based_follows_the_parent_and_ratio_alone_ignores_it() {
        let unsampled_parent = TraceContext::root(false);
        let sampled_parent = TraceContext::root(true);
        let pb = Sampler::parse("parentbased_always_off", None).unwrap();
        assert!(pb.decide(Some(&sampled_parent), sampled_parent.trace_id));
        assert!(!pb.decide(None, sampled_parent.trace_id));
        let on = Sampler::parse("parentbased_always_on", None).unwrap();
        assert!(!on.decide(Some(&unsampled_parent), unsampled_parent.trace_id));
        let mut deferred = unsampled_parent.clone();
        deferred.deferred = true;
        assert!(on.decide(Some(&deferred), deferred.trace_id));
        let plain = Sampler::parse("always_on", None).unwrap();
        assert!(plain.decide(Some(&unsampled_parent), unsampled_parent.trace_id));
    }

    #[test]
    fn names_and_arguments_are_checked() {
        assert_eq!(
            Sampler::parse("always_of", None),
            Err(SamplerError::Unknown)
        );
        assert_eq!(
            Sampler::parse("jaeger_remote", None),
            Err(SamplerError::Unsupported)
        );
        for bad in ["1.5", "-0.1", "abc", "NaN"] {
            assert_eq!(
                Sampler::parse("parentbased_traceidratio", Some(bad)),
                Err(SamplerError::Ratio),
                "{bad}"
            );
        }
        // The argument is ignored where it means nothing, as the spec says.
        assert!(Sampler::parse("always_on", Some("abc")).is_ok());
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some("0.25"))
                .unwrap()
                .to_string(),
            "ParentBased{root=TraceIdRatioBased{0.25}}"
        );
        assert_eq!(
            Sampler::parse("traceidratio", None).unwrap().root,
            Sampler::ratio(1.0).unwrap()
        );
    }
}
