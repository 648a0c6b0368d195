//! An in-memory store for simulations and unit tiers. Same contract as the
//! SQLite store (it passes the same conformance suite), no disk.

use crate::{Snapshot, Store, StoreError, StoreFault, Write};
use berth_core::{AttemptId, AttemptRecord, TaskId, TaskRecord, WorkerId, WorkerRecord};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    tasks: BTreeMap<TaskId, TaskRecord>,
    attempts: BTreeMap<AttemptId, AttemptRecord>,
    workers: BTreeMap<WorkerId, WorkerRecord>,
    registrations: std::collections::BTreeSet<String>,
    /// Number of batches committed (simulations read it).
    pub commits: u64,
    /// While set, every commit and probe fails with this fault and changes
    /// nothing (a full disk, a busy or failing one).
    pub failing: Option<StoreFault>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding exactly `snapshot`'s records.
    pub fn from_snapshot(snapshot: &Snapshot) -> MemStore {
        MemStore {
            tasks: snapshot.tasks.iter().map(|t| (t.id, t.clone())).collect(),
            attempts: snapshot
                .attempts
                .iter()
                .map(|a| (a.id, a.clone()))
                .collect(),
            workers: snapshot
                .workers
                .iter()
                .map(|w| (w.id.clone(), w.clone()))
                .collect(),
            registrations: snapshot.registrations.iter().cloned().collect(),
            ..MemStore::default()
        }
    }

    pub(crate) fn task(&self, id: TaskId) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    pub(crate) fn attempt(&self, id: AttemptId) -> Option<&AttemptRecord> {
        self.attempts.get(&id)
    }

    pub(crate) fn worker(&self, id: &WorkerId) -> Option<&WorkerRecord> {
        self.workers.get(id)
    }

    pub(crate) fn is_registered(&self, name: &str) -> bool {
        self.registrations.contains(name)
    }

    /// Make writes fail with `fault` (or work again with `None`).
    pub fn fail_writes(&mut self, fault: Option<StoreFault>) {
        self.failing = fault;
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        match self.failing {
            Some(fault) => Err(StoreError::Injected {
                fault,
                detail: "injected fault".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Store for MemStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            tasks: self.tasks.values().cloned().collect(),
            attempts: self.attempts.values().cloned().collect(),
            workers: self.workers.values().cloned().collect(),
            registrations: self.registrations.iter().cloned().collect(),
        })
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        self.check_writable()?;
        for w in writes {
            match w {
                Write::Task(t) => {
                    self.tasks.insert(t.id, t.clone());
                }
                Write::Attempt(a) => {
                    self.attempts.insert(a.id, a.clone());
                }
                Write::Worker(w) => {
                    self.workers.insert(w.id.clone(), w.clone());
                }
                Write::RemoveWorker(id) => {
                    self.workers.remove(id);
                }
                Write::Register(n) => {
                    self.registrations.insert(n.clone());
                }
                Write::Unregister(n) => {
                    self.registrations.remove(n);
                }
            }
        }
        self.commits += 1;
        Ok(())
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        self.check_writable()
    }

    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        Ok(self
            .attempts
            .values()
            .filter(|a| a.state.holds_resources())
            .cloned()
            .collect())
    }
}
