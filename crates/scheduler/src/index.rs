//! The cluster as the scheduler sees it, indexed so a placement does not
//! scan every worker: schedulable workers are kept ordered by free CPU, so
//! binpack takes the first worker with enough CPU and spread the last, and
//! only workers with enough CPU are ever looked at.
//!
//! The master owns one `ClusterIndex` and keeps it in step with its ledger
//! (the same binds and releases); `place` updates it with the placements it
//! decides, and the master's invariant checks compare it with the ledger.

use berth_core::{DriverKind, Resources};
use std::collections::BTreeSet;

/// A worker's position in the index (assigned by the master, stable for the
/// worker's lifetime in the records).
pub type Slot = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEntry {
    pub name: String,
    pub total: Resources,
    pub allocated: Resources,
    pub drivers: Vec<DriverKind>,
    /// Sorted `key=value` labels.
    pub labels: Vec<(String, String)>,
    /// Takes new work (up, not draining, no stale attempts).
    pub schedulable: bool,
}

impl WorkerEntry {
    pub fn free_cpu(&self) -> u64 {
        self.total
            .cpu_millis
            .saturating_sub(self.allocated.cpu_millis)
    }

    /// Does the worker satisfy every `key=value` constraint?
    pub fn matches(&self, constraints: &[(String, String)]) -> bool {
        constraints
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterIndex {
    entries: Vec<Option<WorkerEntry>>,
    /// (free CPU, slot) of every schedulable worker.
    by_free_cpu: BTreeSet<(u64, Slot)>,
    /// (total CPU, slot) of every worker.
    by_total_cpu: BTreeSet<(u64, Slot)>,
}

impl ClusterIndex {
    fn unlink(&mut self, slot: Slot) {
        if let Some(Some(e)) = self.entries.get(slot as usize)
            && e.schedulable
        {
            self.by_free_cpu.remove(&(e.free_cpu(), slot));
        }
    }

    fn link(&mut self, slot: Slot) {
        if let Some(Some(e)) = self.entries.get(slot as usize)
            && e.schedulable
        {
            self.by_free_cpu.insert((e.free_cpu(), slot));
        }
    }

    /// Insert or replace a worker.
    pub fn upsert(&mut self, slot: Slot, entry: WorkerEntry) {
        self.unlink(slot);
        if let Some(old) = self.get(slot) {
            self.by_total_cpu.remove(&(old.total.cpu_millis, slot));
        }
        self.by_total_cpu.insert((entry.total.cpu_millis, slot));
        let i = slot as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        self.entries[i] = Some(entry);
        self.link(slot);
    }

    pub fn remove(&mut self, slot: Slot) {
        self.unlink(slot);
        if let Some(old) = self.get(slot) {
            self.by_total_cpu.remove(&(old.total.cpu_millis, slot));
        }
        if let Some(e) = self.entries.get_mut(slot as usize) {
            *e = None;
        }
    }

    pub fn get(&self, slot: Slot) -> Option<&WorkerEntry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    fn update(&mut self, slot: Slot, f: impl FnOnce(&mut WorkerEntry)) {
        self.unlink(slot);
        if let Some(Some(e)) = self.entries.get_mut(slot as usize) {
            f(e);
        }
        self.link(slot);
    }

    pub fn set_schedulable(&mut self, slot: Slot, schedulable: bool) {
        if self.get(slot).is_some_and(|e| e.schedulable != schedulable) {
            self.update(slot, |e| e.schedulable = schedulable);
        }
    }

    /// Count a placement's request on a worker.
    pub fn bind(&mut self, slot: Slot, r: &Resources) {
        self.update(slot, |e| {
            e.allocated = e
                .allocated
                .checked_add(r)
                .expect("index allocation overflow");
        });
    }

    /// Stop counting a request.
    pub fn release(&mut self, slot: Slot, r: &Resources) {
        self.update(slot, |e| {
            e.allocated = e
                .allocated
                .checked_sub(r)
                .expect("index allocation went negative");
        });
    }

    /// Every worker, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (Slot, &WorkerEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as Slot, e)))
    }

    /// Schedulable workers with at least `cpu` free, fewest free first.
    pub fn with_free_cpu(&self, cpu: u64) -> impl DoubleEndedIterator<Item = Slot> + '_ {
        self.by_free_cpu.range((cpu, 0)..).map(|&(_, s)| s)
    }

    /// Every worker (schedulable or not) with at least `cpu` in total,
    /// smallest first.
    pub fn with_total_cpu(&self, cpu: u64) -> impl DoubleEndedIterator<Item = Slot> + '_ {
        self.by_total_cpu.range((cpu, 0)..).map(|&(_, s)| s)
    }

    /// The most free CPU on any schedulable worker.
    pub fn max_free_cpu(&self) -> u64 {
        self.by_free_cpu.last().map_or(0, |&(f, _)| f)
    }

    pub fn len(&self) -> usize {
        self.by_total_cpu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_total_cpu.is_empty()
    }
}
