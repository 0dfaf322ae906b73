//! Keeping a mirrored request's spans together.
//!
//! A live request and its shadow copies share a twin id, and each copy's span
//! links to the live span. Head sampling treats them alike (a copy's context
//! carries its live span's decision), but the tail rules (slow, failed) judge
//! each leg alone: a shadow can be slow while its live twin was fast. Exported
//! alone, the slow shadow's span would link to a live span nobody exported,
//! and the comparison the trace is for would have one side. So, as
//! [`umbra_trace::Tracer::record_linked`] says, all legs go out if any one is
//! kept.
//!
//! Legs finish in any order (the live one first when the shadow is slower, the
//! copy first when production is). A leg that nothing keeps waits here; when a
//! leg of its group is kept by a tail rule, the waiting ones go out with it
//! (`record_linked`), and the group remembers why it was kept, so legs that
//! finish later follow it (`record_for_twin`). Head-sampled legs never wait:
//! their whole group is sampled.
//!
//! Memory is bounded: at most `max` groups, and when a new group needs room
//! the oldest goes (the smallest twin id: ids are handed out in arrival
//! order), which under heavy traffic shortens the wait rather than refusing
//! new groups; the recorder also forgets groups older than its twin TTL. A
//! waiting leg is compact (no request headers: see `Leg` in `record.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use umbra_trace::Kept;

/// What to do with a leg's span now.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan<T> {
    /// Nothing yet: the leg waits for a twin a tail rule keeps.
    Wait,
    /// Export it alone ([`umbra_trace::Tracer::record`]).
    Alone(T),
    /// Export it with the twins that were waiting for it, the leg first
    /// ([`umbra_trace::Tracer::record_linked`]).
    Together(Vec<T>),
    /// Export it because a twin was kept earlier, for that reason
    /// ([`umbra_trace::Tracer::record_for_twin`]).
    ForTwin(T, Kept),
}

struct Group<T> {
    created: Instant,
    /// The strongest reason a leg of the group was kept for, once one was.
    kept: Option<Kept>,
    /// Legs nothing kept, waiting for a twin that is.
    waiting: Vec<T>,
}

/// The groups of mirrored requests whose spans may still have to go out
/// together.
pub(crate) struct Linker<T> {
    groups: BTreeMap<u64, Group<T>>,
    max: usize,
    /// Groups forgotten to make room for newer ones.
    pub(crate) evicted: u64,
}

impl<T> Linker<T> {
    pub(crate) fn new(max: usize) -> Linker<T> {
        Linker {
            groups: BTreeMap::new(),
            max: max.max(1),
            evicted: 0,
        }
    }

    /// A finished leg of mirrored request `twin`, with the reason it would be
    /// exported on its own (`None`: it would not be).
    pub(crate) fn leg(&mut self, twin: u64, own: Option<Kept>, leg: T, now: Instant) -> Plan<T> {
        match own {
            // Head-sampled: every leg of the request is, and goes out anyway.
            Some(Kept::Sampled) => Plan::Alone(leg),
            Some(reason) => {
                let group = self.group(twin, now);
                group.kept = group.kept.max(Some(reason));
                if group.waiting.is_empty() {
                    Plan::Alone(leg)
                } else {
                    let mut all = Vec::with_capacity(1 + group.waiting.len());
                    all.push(leg);
                    all.append(&mut std::mem::take(&mut group.waiting));
                    Plan::Together(all)
                }
            }
            None => {
                if let Some(reason) = self.groups.get(&twin).and_then(|g| g.kept) {
                    return Plan::ForTwin(leg, reason);
                }
                self.group(twin, now).waiting.push(leg);
                Plan::Wait
            }
        }
    }

    fn group(&mut self, twin: u64, now: Instant) -> &mut Group<T> {
        if self.groups.len() >= self.max && !self.groups.contains_key(&twin) {
            self.groups.pop_first();
            self.evicted += 1;
        }
        self.groups.entry(twin).or_insert_with(|| Group {
            created: now,
            kept: None,
            waiting: Vec::new(),
        })
    }

    /// Forgets groups older than `ttl`: their twins will not come.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) {
        self.groups
            .retain(|_, g| now.saturating_duration_since(g.created) < ttl);
    }

    /// Legs waiting, over all groups.
    pub(crate) fn waiting(&self) -> usize {
        self.groups.values().map(|g| g.waiting.len()).sum()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn linker() -> (Linker<&'static str>, Instant) {
        (Linker::new(4), Instant::now())
    }

    #[test]
    fn a_slow_copy_brings_its_waiting_live_twin() {
        let (mut l, now) = linker();
        assert_eq!(l.leg(7, None, "live", now), Plan::Wait);
        assert_eq!(
            l.leg(7, Some(Kept::Slow), "copy", now),
            Plan::Together(vec!["copy", "live"])
        );
        // A second copy, fast, follows the group; one that fails keeps its own reason.
        assert_eq!(
            l.leg(7, None, "copy 2", now),
            Plan::ForTwin("copy 2", Kept::Slow)
        );
        assert_eq!(
            l.leg(7, Some(Kept::Error), "copy 3", now),
            Plan::Alone("copy 3")
        );
        assert_eq!(l.waiting(), 0);
    }

    #[test]
    fn a_slow_live_leg_brings_copies_before_and_after_it() {
        let (mut l, now) = linker();
        assert_eq!(l.leg(3, None, "early copy", now), Plan::Wait);
        assert_eq!(
            l.leg(3, Some(Kept::Slow), "live", now),
            Plan::Together(vec!["live", "early copy"])
        );
        assert_eq!(
            l.leg(3, None, "late copy", now),
            Plan::ForTwin("late copy", Kept::Slow)
        );
    }

    #[test]
    fn nothing_kept_nothing_exported_and_groups_stay_apart() {
        let (mut l, now) = linker();
        assert_eq!(l.leg(1, None, "live 1", now), Plan::Wait);
        assert_eq!(l.leg(1, None, "copy 1", now), Plan::Wait);
        // A slow copy of another request brings only its own twin.
        assert_eq!(l.leg(2, None, "live 2", now), Plan::Wait);
        assert_eq!(
            l.leg(2, Some(Kept::Error), "copy 2", now),
            Plan::Together(vec!["copy 2", "live 2"])
        );
        assert_eq!(l.waiting(), 2);
        // Sampled legs never wait and never touch a group.
        assert_eq!(
            l.leg(9, Some(Kept::Sampled), "sampled", now),
            Plan::Alone("sampled")
        );
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn memory_is_bounded_oldest_first_and_by_age() {
        let (mut l, now) = linker();
        for twin in 1..=10u64 {
            assert_eq!(l.leg(twin, None, "live", now), Plan::Wait);
        }
        assert_eq!((l.len(), l.evicted), (4, 6));
        // The oldest were forgotten: a slow copy of request 1 comes alone.
        assert_eq!(
            l.leg(1, Some(Kept::Slow), "copy 1", now),
            Plan::Alone("copy 1")
        );
        // The newest still wait (request 1's group took the oldest's place).
        assert_eq!(
            l.leg(10, Some(Kept::Slow), "copy 10", now),
            Plan::Together(vec!["copy 10", "live"])
        );
        l.expire(now + Duration::from_secs(121), Duration::from_secs(120));
        assert_eq!(l.len(), 0);
    }
}
