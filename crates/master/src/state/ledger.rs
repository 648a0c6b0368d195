//! The allocation index: for each worker, the sum of the requests of its
//! resource-holding attempts, and which attempts those are — live ones and
//! unknown ones (their worker went silent) counted apart, so that views can
//! show them apart while placement sees their sum.
//!
//! This is a cache of a sum over records (DESIGN.md invariant 1), never a
//! stored counter. It changes only through [`Ledger::bind`],
//! [`Ledger::mark_unknown`] and [`Ledger::release`], which take the attempt
//! itself, so an attempt can neither be counted twice nor released twice;
//! [`Ledger::derive`] recomputes it from scratch for the reconciler and the
//! invariant checks.

use berth_core::{AttemptId, AttemptRecord, AttemptState, Resources, WorkerId};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    per_worker: HashMap<WorkerId, Entry>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    /// Every resource-holding attempt, live or unknown.
    attempts: BTreeSet<AttemptId>,
    /// The sum of all of them.
    allocated: Resources,
    /// The unknown ones among them, and their sum.
    unknown: BTreeSet<AttemptId>,
    unknown_sum: Resources,
}

impl Ledger {
    /// Recompute the index from attempt records.
    pub fn derive<'a>(attempts: impl Iterator<Item = &'a AttemptRecord>) -> Ledger {
        let mut l = Ledger::default();
        for a in attempts.filter(|a| a.state.holds_resources()) {
            l.bind(a);
        }
        l
    }

    /// Count a resource-holding attempt (as unknown if it is). Binding the
    /// same attempt twice is a bug and panics in every build.
    pub fn bind(&mut self, a: &AttemptRecord) {
        let e = self.per_worker.entry(a.worker_id.clone()).or_default();
        assert!(e.attempts.insert(a.id), "attempt {} bound twice", a.id);
        e.allocated = e
            .allocated
            .checked_add(&a.resources)
            .expect("allocation overflow");
        if a.state == AttemptState::Unknown {
            e.unknown.insert(a.id);
            e.unknown_sum = e.unknown_sum.checked_add(&a.resources).expect("overflow");
        }
    }

    /// A bound live attempt became unknown: still counted, now apart.
    pub fn mark_unknown(&mut self, a: &AttemptRecord) {
        let e = self
            .per_worker
            .get_mut(&a.worker_id)
            .unwrap_or_else(|| panic!("attempt {} is not bound", a.id));
        assert!(e.attempts.contains(&a.id), "attempt {} is not bound", a.id);
        assert!(e.unknown.insert(a.id), "attempt {} already unknown", a.id);
        e.unknown_sum = e.unknown_sum.checked_add(&a.resources).expect("overflow");
    }

    /// Stop counting an attempt. Releasing one that is not bound is a bug
    /// and panics in every build.
    pub fn release(&mut self, a: &AttemptRecord) {
        let e = self
            .per_worker
            .get_mut(&a.worker_id)
            .unwrap_or_else(|| panic!("release of attempt {} on unknown worker", a.id));
        assert!(e.attempts.remove(&a.id), "attempt {} released twice", a.id);
        e.allocated = e
            .allocated
            .checked_sub(&a.resources)
            .expect("allocation went negative");
        if e.unknown.remove(&a.id) {
            e.unknown_sum = e
                .unknown_sum
                .checked_sub(&a.resources)
                .expect("unknown allocation went negative");
        }
    }

    /// Everything held on a worker, live and unknown: what placement and
    /// admission must leave room for.
    pub fn allocated(&self, w: &WorkerId) -> Resources {
        self.per_worker
            .get(w)
            .map(|e| e.allocated)
            .unwrap_or(Resources::ZERO)
    }

    /// What the worker's live attempts hold (the `allocated` users see).
    pub fn live_allocated(&self, w: &WorkerId) -> Resources {
        self.per_worker.get(w).map_or(Resources::ZERO, |e| {
            e.allocated
                .checked_sub(&e.unknown_sum)
                .expect("unknown is part of allocated")
        })
    }

    /// What the worker's unknown attempts hold, and how many there are.
    pub fn unknown(&self, w: &WorkerId) -> (usize, Resources) {
        self.per_worker
            .get(w)
            .map_or((0, Resources::ZERO), |e| (e.unknown.len(), e.unknown_sum))
    }

    /// The resource-holding attempts on a worker (live and unknown), in id
    /// order.
    pub fn attempts_on(&self, w: &WorkerId) -> impl Iterator<Item = AttemptId> + '_ {
        self.per_worker
            .get(w)
            .into_iter()
            .flat_map(|e| e.attempts.iter().copied())
    }

    /// How many live attempts a worker has (unknown ones not counted).
    pub fn count_on(&self, w: &WorkerId) -> usize {
        self.per_worker
            .get(w)
            .map_or(0, |e| e.attempts.len() - e.unknown.len())
    }

    /// Replace one worker's entry with the one from `truth` (the fix the
    /// reconciler applies).
    pub fn overwrite_from(&mut self, w: &WorkerId, truth: &Ledger) {
        match truth.per_worker.get(w) {
            Some(e) => {
                self.per_worker.insert(w.clone(), e.clone());
            }
            None => {
                self.per_worker.remove(w);
            }
        }
    }
}
