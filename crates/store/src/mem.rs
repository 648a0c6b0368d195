//! An in-memory store for simulations and unit tiers. Same contract as the
//! SQLite store (it passes the same conformance suite), no disk.

use crate::{Snapshot, Store, StoreError, Write};
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
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
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

    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        Ok(self
            .attempts
            .values()
            .filter(|a| a.state.holds_resources())
            .cloned()
            .collect())
    }
}
