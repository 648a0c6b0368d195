//! berth-store: durable records of tasks, attempts and workers.
//!
//! The store is deliberately narrow: the master loads a [`Snapshot`] once at
//! start and then commits batches of [`Write`]s, each batch atomically. It
//! holds *records only*; allocations are never stored (they are derived from
//! attempts by the master). Backends: [`SqliteStore`] (embedded, the
//! default), [`PostgresStore`] (a PostgreSQL server, chosen with
//! `--store postgres://…`) and [`MemStore`] (for simulations and unit
//! tiers). All three pass the same [`conformance`] suite. [`AnyStore`] is
//! the one the master opens from its [`StoreConfig`].

mod any;
pub mod conformance;
mod error;
mod mem;
mod postgres;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use self::postgres::{PostgresStore, PostgresUrl};
pub use any::{AnyStore, StoreConfig};
pub use error::{PgOp, StoreError, StoreFault};
pub use mem::MemStore;
pub use sqlite::SqliteStore;

use berth_core::{AttemptRecord, TaskRecord, WorkerId, WorkerRecord};

/// Everything the master needs to rebuild its state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub tasks: Vec<TaskRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub workers: Vec<WorkerRecord>,
    /// Worker names allowed to join a cluster that requires registration.
    pub registrations: Vec<String>,
}

/// One record change. A batch of them commits atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert or replace a task.
    Task(TaskRecord),
    /// Insert or replace an attempt.
    Attempt(AttemptRecord),
    /// Insert or replace a worker.
    Worker(WorkerRecord),
    /// Forget a worker.
    RemoveWorker(WorkerId),
    /// Allow a worker name to join (`register`).
    Register(String),
    /// Withdraw a name's registration.
    Unregister(String),
}

/// Keep only the last write of each record, at the place of its first
/// write: a batch that submits, places and starts a task writes its row
/// once, still before its attempt's (which references it). Applying the
/// result is the same as applying the whole batch.
pub fn coalesce(writes: Vec<Write>) -> Vec<Write> {
    #[derive(PartialEq, Eq, Hash)]
    enum Key {
        Task(u64),
        Attempt(u64),
        Worker(String),
        Registration(String),
    }
    fn key(w: &Write) -> Key {
        match w {
            Write::Task(t) => Key::Task(t.id.0),
            Write::Attempt(a) => Key::Attempt(a.id.0),
            Write::Worker(w) => Key::Worker(w.id.0.clone()),
            Write::RemoveWorker(id) => Key::Worker(id.0.clone()),
            Write::Register(n) | Write::Unregister(n) => Key::Registration(n.clone()),
        }
    }
    let mut slot: std::collections::HashMap<Key, usize> =
        std::collections::HashMap::with_capacity(writes.len());
    let mut out: Vec<Write> = Vec::with_capacity(writes.len());
    for w in writes {
        match slot.entry(key(&w)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = w,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(w);
            }
        }
    }
    out
}

/// A durable record store. `commit` returns only once the batch is durable.
pub trait Store: Send + 'static {
    /// Read every record (tasks and attempts in id order, workers by id).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Apply a batch atomically and durably.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    /// The attempts recorded in a resource-holding state, in id order (what
    /// the records say is allocated; the reconciler compares it with the
    /// master's state).
    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError>;
    /// Try a small durable write, to learn whether writes work again after
    /// a failed commit (the master probes while it refuses writes).
    fn probe(&mut self) -> Result<(), StoreError>;
}

/// A store shared with its owner's test: the engine commits to it while the
/// test reads it or makes it fail (`MemStore::fail_writes`).
impl<S: Store> Store for std::sync::Arc<std::sync::Mutex<S>> {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.lock().unwrap_or_else(|e| e.into_inner()).load()
    }
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .commit(writes)
    }
    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .live_attempts()
    }
    fn probe(&mut self) -> Result<(), StoreError> {
        self.lock().unwrap_or_else(|e| e.into_inner()).probe()
    }
}
