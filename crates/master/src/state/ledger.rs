//! The allocation index: for each worker, the sum of the requests of its
//! resource-holding attempts, and which attempts those are.
//!
//! This is a cache of a sum over records (DESIGN.md invariant 1), never a
//! stored counter. It changes only through [`Ledger::bind`] and
//! [`Ledger::release`], which take the attempt itself, so an attempt can
//! neither be counted twice nor released twice; [`Ledger::derive`]
//! recomputes it from scratch for the reconciler and the invariant checks.

use berth_core::{AttemptId, AttemptRecord, Resources, WorkerId};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    per_worker: HashMap<WorkerId, Entry>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    attempts: BTreeSet<AttemptId>,
    allocated: Resources,
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

    /// Count a resource-holding attempt. Binding the same attempt twice is a
    /// bug and panics in every build.
    pub fn bind(&mut self, a: &AttemptRecord) {
        let e = self.per_worker.entry(a.worker_id.clone()).or_default();
        assert!(e.attempts.insert(a.id), "attempt {} bound twice", a.id);
        e.allocated = e
            .allocated
            .checked_add(&a.resources)
            .expect("allocation overflow");
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
    }

    pub fn allocated(&self, w: &WorkerId) -> Resources {
        self.per_worker
            .get(w)
            .map(|e| e.allocated)
            .unwrap_or(Resources::ZERO)
    }

    /// The resource-holding attempts on a worker, in id order.
    pub fn attempts_on(&self, w: &WorkerId) -> impl Iterator<Item = AttemptId> + '_ {
        self.per_worker
            .get(w)
            .into_iter()
            .flat_map(|e| e.attempts.iter().copied())
    }

    pub fn count_on(&self, w: &WorkerId) -> usize {
        self.per_worker.get(w).map_or(0, |e| e.attempts.len())
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
