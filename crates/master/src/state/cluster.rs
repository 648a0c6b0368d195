//! Keeps the scheduler's `ClusterIndex` in step with the worker records and
//! the ledger: every worker has a slot; its entry is rebuilt from its record
//! whenever the record, its stale attempts or its drain flag change, and
//! binds / releases mirror the ledger's.

use super::State;
use berth_core::{AttemptRecord, DriverKind, TaskSpec, WorkerId, WorkerState};
use berth_scheduler::{PendingTask, Slot, WorkerEntry};

impl State {
    /// The slot of a worker, assigning one on first sight.
    pub(crate) fn slot_of(&mut self, id: &WorkerId) -> Slot {
        if let Some(&s) = self.slots.get(id) {
            return s;
        }
        let s = self.slot_workers.len() as Slot;
        self.slot_workers.push(id.clone());
        self.slots.insert(id.clone(), s);
        s
    }

    /// Does the worker take new work?
    pub fn takes_work(&self, id: &WorkerId) -> bool {
        self.workers.get(id).is_some_and(|w| {
            w.state == WorkerState::Ready
                && !w.drained
                && self.stale_on(id) == 0
                && !self.overcommitted.contains(id)
                && self.greeted.contains(id)
        })
    }

    /// Rebuild a worker's index entry from its record and the ledger.
    pub(crate) fn refresh_worker(&mut self, id: &WorkerId) {
        let slot = self.slot_of(id);
        let Some(w) = self.workers.get(id) else {
            self.index.remove(slot);
            return;
        };
        let mut labels = w.labels.clone();
        labels.sort();
        let entry = WorkerEntry {
            name: w.name.clone(),
            total: w.total,
            allocated: self.ledger.allocated(id),
            drivers: w
                .drivers
                .iter()
                .filter_map(|d| DriverKind::parse(d))
                .collect(),
            labels,
            schedulable: self.takes_work(id),
        };
        self.index.upsert(slot, entry);
    }

    pub(crate) fn release(&mut self, a: &AttemptRecord) {
        self.ledger.release(a);
        let slot = self.slot_of(&a.worker_id);
        self.index.release(slot, &a.resources);
        if self.overcommitted.contains(&a.worker_id) {
            self.check_capacity(&a.worker_id);
        }
    }

    /// Flag (or clear) a worker whose attempts hold more than its totals.
    pub(crate) fn check_capacity(&mut self, id: &WorkerId) {
        let Some(w) = self.workers.get(id) else {
            return;
        };
        let over = !self.ledger.allocated(id).le(&w.total);
        let changed = if over {
            self.overcommitted.insert(id.clone())
        } else {
            self.overcommitted.remove(id)
        };
        if changed {
            self.refresh_worker(id);
            self.dirty = true;
        }
    }

    /// A task as the scheduler sees it. `None` when it is pinned to a
    /// worker that is not registered.
    pub(crate) fn pending<'a>(
        &self,
        id: berth_core::TaskId,
        spec: &'a TaskSpec,
        queued_since: i64,
    ) -> Option<PendingTask<'a>> {
        let pinned = match &spec.pinned_worker {
            Some(name) => Some(self.slot_named(name)?),
            None => None,
        };
        Some(PendingTask {
            id,
            request: spec.resources,
            driver: spec.driver,
            constraints: &spec.constraints,
            strategy: spec.strategy,
            pinned,
            queued_since,
        })
    }

    /// The slot of the registered worker called `name`.
    pub fn slot_named(&self, name: &str) -> Option<Slot> {
        self.workers
            .values()
            .find(|w| w.name == name)
            .and_then(|w| self.slots.get(&w.id).copied())
    }

    pub fn index(&self) -> &berth_scheduler::ClusterIndex {
        &self.index
    }
}
