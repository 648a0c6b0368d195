//! The ledger audit behind `reconcile` / `fix-resources`: recompute every
//! worker's allocation from the attempt records and compare it with the
//! index. In a correct build it finds nothing; what it finds it fixes (unless
//! a dry run) and reports, one entry per worker.

use super::{Ledger, State};
use berth_core::{Resources, WorkerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFix {
    pub worker: WorkerId,
    pub name: String,
    pub before: Resources,
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
    pub fn reconcile(&mut self, dry_run: bool) -> ReconcileReport {
        let truth = Ledger::derive(self.attempts.values());
        let mut report = ReconcileReport {
            dry_run,
            workers_checked: self.workers.len(),
            fixes: Vec::new(),
        };
        for w in self.workers.values() {
            let before = self.ledger.allocated(&w.id);
            let after = truth.allocated(&w.id);
            let cached: Vec<_> = self.ledger.attempts_on(&w.id).collect();
            let real: Vec<_> = truth.attempts_on(&w.id).collect();
            if before != after || cached != real {
                report.fixes.push(WorkerFix {
                    worker: w.id.clone(),
                    name: w.name.clone(),
                    before,
                    after,
                    tasks: real.len(),
                });
            }
        }
        if !dry_run {
            for f in &report.fixes {
                self.ledger.overwrite_from(&f.worker, &truth);
            }
            if !report.fixes.is_empty() {
                self.dirty = true;
            }
        }
        report
    }

    /// Corrupt the index on purpose (tests of the audit only).
    #[cfg(test)]
    pub(crate) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}
