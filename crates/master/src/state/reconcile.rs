//! The audit behind `reconcile` / `fix-resources`, run at master start,
//! periodically and on demand. It recomputes every worker's allocation two
//! ways and compares:
//!
//! * **index** — the in-memory allocation index against the sum over the
//!   master's own attempt records;
//! * **records** — the stored attempt records (the SQLite file, which an
//!   operator can edit or a disk can corrupt) against the master's state,
//!   which the workers' reports keep true.
//!
//! In a healthy cluster it finds nothing. What it finds it fixes (unless a
//! dry run): the index is rebuilt, drifted records are rewritten from the
//! master's state. Each fix is reported per worker in the predecessor's
//! words (`✓ Fixed Tessa: CPU 5.0→0.0, …`) and counted.

use super::{Effects, Ledger, State};
use berth_core::{AttemptId, AttemptRecord, AttemptState, Millis, Resources, WorkerId};
use berth_store::Write;
use std::collections::{BTreeMap, BTreeSet};

/// Which comparison found the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixKind {
    Index,
    Records,
}

impl FixKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FixKind::Index => "index",
            FixKind::Records => "records",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFix {
    pub worker: WorkerId,
    pub name: String,
    pub kind: FixKind,
    /// What the index (or the records) said was allocated.
    pub before: Resources,
    /// The true allocation: the sum over the live attempts.
    pub after: Resources,
    /// Resource-holding attempts on the worker after the fix.
    pub tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub workers_checked: usize,
    pub fixes: Vec<WorkerFix>,
}

impl State {
    /// Audit the index and the stored `records` (the store's resource-
    /// holding attempts, read after the last commit) against the state.
    pub fn reconcile(
        &mut self,
        dry_run: bool,
        records: &[AttemptRecord],
        now: Millis,
        fx: &mut Effects,
    ) -> ReconcileReport {
        self.counters.reconcile_runs += 1;
        let truth = Ledger::derive(self.attempts.values());
        let mut report = ReconcileReport {
            dry_run,
            workers_checked: self.workers.len(),
            fixes: Vec::new(),
        };
        let name_of = |s: &State, w: &WorkerId| {
            s.workers
                .get(w)
                .map_or_else(|| w.0.clone(), |r| r.name.clone())
        };

        // 1. The index against the master's attempt records.
        for w in self.workers.keys() {
            let cached: Vec<_> = self.ledger.attempts_on(w).collect();
            let real: Vec<_> = truth.attempts_on(w).collect();
            if self.ledger.allocated(w) != truth.allocated(w) || cached != real {
                report.fixes.push(WorkerFix {
                    worker: w.clone(),
                    name: name_of(self, w),
                    kind: FixKind::Index,
                    before: self.ledger.allocated(w),
                    after: truth.allocated(w),
                    tasks: real.len(),
                });
            }
        }

        // 2. The stored records against the master's state.
        let stored: BTreeMap<AttemptId, &AttemptRecord> =
            records.iter().map(|a| (a.id, a)).collect();
        let mut drifted: BTreeSet<AttemptId> = BTreeSet::new();
        for (id, rec) in &stored {
            if self.attempts.get(id) != Some(*rec) {
                drifted.insert(*id);
            }
        }
        for a in self.attempts.values().filter(|a| a.state.holds_resources()) {
            if !stored.contains_key(&a.id) {
                drifted.insert(a.id);
            }
        }
        if !drifted.is_empty() {
            let recorded = Ledger::derive(records.iter());
            let mut workers: BTreeSet<WorkerId> = self.workers.keys().cloned().collect();
            workers.extend(records.iter().map(|a| a.worker_id.clone()));
            for w in workers {
                let rec: Vec<_> = recorded.attempts_on(&w).collect();
                let real: Vec<_> = truth.attempts_on(&w).collect();
                if recorded.allocated(&w) != truth.allocated(&w) || rec != real {
                    report.fixes.push(WorkerFix {
                        name: name_of(self, &w),
                        worker: w.clone(),
                        kind: FixKind::Records,
                        before: recorded.allocated(&w),
                        after: truth.allocated(&w),
                        tasks: real.len(),
                    });
                }
            }
        }

        if dry_run {
            return report;
        }
        for f in &report.fixes {
            match f.kind {
                FixKind::Index => {
                    self.ledger.overwrite_from(&f.worker, &truth);
                    self.counters.index_fixes += 1;
                }
                FixKind::Records => self.counters.record_fixes += 1,
            }
        }
        for id in drifted {
            match self.attempts.get(&id) {
                Some(a) => {
                    let task = a.task_id;
                    self.write_attempt(id, fx);
                    if self.tasks.contains_key(&task) {
                        self.write_task(task, fx);
                    }
                }
                None => {
                    // A record the master never made: close it.
                    let mut a = stored[&id].clone();
                    a.state = AttemptState::Lost;
                    a.ended_ms = Some(now);
                    a.reason = "not known to the master; closed by reconcile".into();
                    fx.writes.push(Write::Attempt(a));
                }
            }
        }
        if !report.fixes.is_empty() {
            // The scheduler's index follows the (now fixed) ledger.
            let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
            for id in ids {
                self.refresh_worker(&id);
            }
            self.dirty = true;
        }
        report
    }

    /// Corrupt the index on purpose (tests of the audit only).
    #[cfg(test)]
    pub(crate) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}
