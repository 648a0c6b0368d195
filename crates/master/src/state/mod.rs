//! The master's state: every task, attempt and worker record, the queue and
//! the allocation index. Pure and synchronous: methods take `now` and
//! return their effects (store writes, messages for workers) in an
//! [`Effects`] instead of doing I/O. The engine (`crate::engine`) is its one
//! writer; simulations and property tests drive it directly.
//!
//! Submodules own one concern each: `ledger` (the allocation index),
//! `tasks` (submit, cancel), `placement` (scheduling rounds), `reports`
//! (attempt reports and the reality check), `liveness` (worker sessions and
//! timeouts), `reconcile` (the ledger audit).

mod admin;
mod cluster;
mod latency;
mod ledger;
mod liveness;
mod placement;
mod queue;
mod reconcile;
mod reports;
mod tasks;
#[cfg(test)]
mod tests;

pub use admin::AdminError;
pub use latency::{LATENCY_BUCKETS_MS, LatencyHistogram};
pub use ledger::Ledger;
pub use reconcile::{FixKind, ReconcileReport, WorkerFix};
pub use reports::{ReportError, WorkerHello};
pub use tasks::{CancelError, SubmitError};

use berth_core::{
    AttemptId, AttemptRecord, AttemptState, Millis, TaskId, TaskRecord, TaskSpec, TaskState,
    WorkerId, WorkerRecord,
};
use berth_store::{Snapshot, Write};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A worker's stop grace when it has not said (the agent's default).
pub const DEFAULT_STOP_GRACE_MS: Millis = 10_000;
/// Added to a disconnect lease for what the clocks cannot see: the last
/// heartbeat ack's trip to the worker, its tick, scheduling delays.
pub const LEASE_MARGIN_MS: Millis = 3_000;

/// How long after a worker's last sign of life an attempt with
/// `--stop-after-disconnect limit_ms` has surely been stopped by it.
pub fn lease_length(limit_ms: u64, stop_grace_ms: Option<Millis>) -> Millis {
    limit_ms as Millis + stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS) + LEASE_MARGIN_MS
}

/// Timing rules the state applies (all in milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct StateConfig {
    /// A worker silent for longer than `ttl + grace` is declared down.
    pub heartbeat_ttl_ms: Millis,
    pub down_grace_ms: Millis,
    /// An attempt still `assigned` and not held by its worker this long
    /// after placement has its start resent (the worker ignores duplicates).
    pub start_resend_ms: Millis,
    /// Placement strategy and starvation rule.
    pub placement: berth_scheduler::PlaceConfig,
    /// Only worker names registered with `register` may join.
    pub require_registration: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            heartbeat_ttl_ms: 5_000,
            down_grace_ms: 1_000,
            start_resend_ms: 2_000,
            placement: berth_scheduler::PlaceConfig::default(),
            require_registration: false,
        }
    }
}

/// A message for one worker, sent after the batch that produced it is durable.
// `Start` carries the whole spec; these live only until the batch is sent,
// so boxing it would add an allocation per placement for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Start {
        worker: WorkerId,
        attempt: AttemptId,
        task: TaskId,
        spec: TaskSpec,
        gpu_ids: Vec<u32>,
    },
    Stop {
        worker: WorkerId,
        attempt: AttemptId,
        reason: String,
    },
    Ack {
        worker: WorkerId,
        seq: u64,
    },
}

/// What a state change asks the outside world to do.
#[derive(Debug, Default)]
pub struct Effects {
    pub writes: Vec<Write>,
    pub outbound: Vec<Outbound>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.outbound.is_empty()
    }
}

#[derive(Debug)]
pub struct State {
    pub(crate) config: StateConfig,
    pub(crate) tasks: BTreeMap<TaskId, TaskRecord>,
    pub(crate) attempts: BTreeMap<AttemptId, AttemptRecord>,
    /// Every attempt of a task, oldest first.
    pub(crate) task_attempts: BTreeSet<(TaskId, AttemptId)>,
    /// The one live (resource-holding) attempt of a task, if any.
    pub(crate) live: HashMap<TaskId, AttemptId>,
    pub(crate) workers: BTreeMap<WorkerId, WorkerRecord>,
    /// Queued tasks in FIFO (id) order.
    pub(crate) queue: queue::TaskQueue,
    /// The scheduler's view of the workers, kept in step with the ledger.
    pub(crate) index: berth_scheduler::ClusterIndex,
    pub(crate) slots: HashMap<WorkerId, berth_scheduler::Slot>,
    pub(crate) slot_workers: Vec<WorkerId>,
    /// Names allowed to join when registration is required.
    pub(crate) registered: BTreeSet<String>,
    /// The last round's reservation for a task that waited too long.
    pub(crate) reserved: Option<(berth_scheduler::Slot, TaskId)>,
    pub(crate) ledger: Ledger,
    /// Per worker: attempts it reported holding (running) that the master
    /// does not consider live. Nothing new is placed on a worker until it
    /// has stopped them.
    pub(crate) stale: HashMap<WorkerId, BTreeSet<AttemptId>>,
    /// Workers that came back with totals below what their attempts hold
    /// (restarted with a lower `--cpus`, say): shown as such, and given no
    /// new work until what they hold fits again.
    pub(crate) overcommitted: BTreeSet<WorkerId>,
    /// Workers that said hello to this master (since its start). Those
    /// known only from the records get no work until they do: what they
    /// still run (and must stop first) is known only from their hello.
    pub(crate) greeted: BTreeSet<WorkerId>,
    /// Each worker's stop grace, from its hello (for disconnect leases).
    pub(crate) stop_grace: HashMap<WorkerId, Millis>,
    /// Unknown attempts of `--stop-after-disconnect` tasks: when their
    /// worker has surely stopped them (its last sign of life + the task's
    /// limit + the stop grace + a margin). Their tasks are not placed again
    /// before; at that time the attempt is recorded `disconnected`.
    pub(crate) leases: BTreeMap<AttemptId, Millis>,
    next_task: u64,
    next_attempt: u64,
    /// Something changed that may allow a placement.
    pub(crate) dirty: bool,
    /// When the earliest task in retry backoff becomes eligible again.
    pub(crate) backoff_wake: Option<Millis>,
    /// Tasks in retry backoff: (attempts gone, until when), on the clock of
    /// the workers' last signs of life (moved by `shift_liveness`), so a
    /// step of the wall clock neither stretches nor skips a backoff.
    pub(crate) backoff_until: HashMap<TaskId, (u32, Millis)>,
    pub(crate) counters: Counters,
}

/// Running totals, for audit logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub reconcile_runs: u64,
    /// Workers whose in-memory index disagreed with the attempt records.
    pub index_fixes: u64,
    /// Workers whose stored records disagreed with the master's state.
    pub record_fixes: u64,
    pub workers_declared_down: u64,
    pub attempts_lost: u64,
    /// Attempts whose worker was declared down while they were live.
    pub attempts_unknown: u64,
    /// Placements committed, and how long each task waited in the queue
    /// for it (since submission, or since its previous attempt ended).
    pub placements: u64,
    pub scheduling_latency: LatencyHistogram,
}

impl State {
    /// Rebuild the state from the store's records. The allocation index is
    /// derived here from the attempts; nothing about it is read from disk.
    /// Every worker gets a fresh `last_seen` of `now`: the failover grace
    /// to reconnect before anything on it is declared lost.
    pub fn from_snapshot(snap: Snapshot, config: StateConfig, now: Millis) -> State {
        let mut s = State {
            config,
            tasks: BTreeMap::new(),
            attempts: BTreeMap::new(),
            task_attempts: BTreeSet::new(),
            live: HashMap::new(),
            workers: BTreeMap::new(),
            queue: queue::TaskQueue::default(),
            index: berth_scheduler::ClusterIndex::default(),
            slots: HashMap::new(),
            slot_workers: Vec::new(),
            registered: snap.registrations.iter().cloned().collect(),
            reserved: None,
            ledger: Ledger::default(),
            stale: HashMap::new(),
            overcommitted: BTreeSet::new(),
            greeted: BTreeSet::new(),
            stop_grace: HashMap::new(),
            leases: BTreeMap::new(),
            next_task: 1,
            next_attempt: 1,
            dirty: true,
            backoff_wake: None,
            backoff_until: HashMap::new(),
            counters: Counters::default(),
        };
        for mut w in snap.workers {
            w.last_seen_ms = now;
            s.workers.insert(w.id.clone(), w);
        }
        // Records arrive in id order, so the maps are built in bulk.
        for t in &snap.tasks {
            s.next_task = s.next_task.max(t.id.0 + 1);
            if t.state == TaskState::Queued {
                s.queue.insert(t.id, t.spec.priority);
            }
        }
        s.tasks = snap.tasks.into_iter().map(|t| (t.id, t)).collect();
        let mut by_task: Vec<(TaskId, AttemptId)> = Vec::with_capacity(snap.attempts.len());
        for a in &snap.attempts {
            s.next_attempt = s.next_attempt.max(a.id.0 + 1);
            by_task.push((a.task_id, a.id));
            if a.state.is_live() {
                s.live.insert(a.task_id, a.id);
            }
            if a.state.holds_resources() {
                s.ledger.bind(a);
            }
        }
        by_task.sort_unstable();
        s.task_attempts = by_task.into_iter().collect();
        // Unknown attempts of at-most-once tasks: their workers' last signs
        // of life are not known any more, so the lease starts now.
        for a in snap
            .attempts
            .iter()
            .filter(|a| a.state == AttemptState::Unknown)
        {
            if let Some(limit) = s
                .tasks
                .get(&a.task_id)
                .and_then(|t| t.spec.stop_after_disconnect_ms)
            {
                s.leases.insert(a.id, now + lease_length(limit, None));
            }
        }
        s.attempts = snap.attempts.into_iter().map(|a| (a.id, a)).collect();
        let ids: Vec<WorkerId> = s.workers.keys().cloned().collect();
        for id in ids {
            // A worker whose recorded total is below what its attempts
            // hold (it came back smaller) is overcommitted again.
            s.check_capacity(&id);
            s.refresh_worker(&id);
        }
        s
    }

    pub fn new(config: StateConfig) -> State {
        State::from_snapshot(Snapshot::default(), config, 0)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The state as the records say, after a batch could not be committed:
    /// everything the batch did is gone. What the records never hold and
    /// the batch did not create is carried over from `before`: the process's
    /// counters, which workers have said hello (and their stop grace), the
    /// attempts they must still stop, disconnect leases still running.
    pub fn rebuilt_after_failed_commit(snap: Snapshot, before: &State, now: Millis) -> State {
        let mut s = State::from_snapshot(snap, before.config, now);
        s.counters = before.counters;
        s.greeted = before.greeted.clone();
        s.stop_grace = before.stop_grace.clone();
        s.stale = before.stale.clone();
        for (aid, until) in &before.leases {
            if let Some(mine) = s.leases.get_mut(aid) {
                *mine = *until;
            }
        }
        let ids: Vec<WorkerId> = s.workers.keys().cloned().collect();
        for id in ids {
            s.check_capacity(&id);
            s.refresh_worker(&id);
        }
        s
    }

    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    pub fn task(&self, id: TaskId) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    pub fn attempt(&self, id: AttemptId) -> Option<&AttemptRecord> {
        self.attempts.get(&id)
    }

    pub fn attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts.values()
    }

    /// Attempts of a task, oldest first.
    pub fn attempts_of(&self, task: TaskId) -> impl Iterator<Item = &AttemptRecord> {
        self.task_attempts
            .range((task, AttemptId(0))..=(task, AttemptId(u64::MAX)))
            .filter_map(|(_, a)| self.attempts.get(a))
    }

    pub fn live_attempt(&self, task: TaskId) -> Option<&AttemptRecord> {
        self.live.get(&task).and_then(|a| self.attempts.get(a))
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&WorkerRecord> {
        self.workers.get(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = &WorkerRecord> {
        self.workers.values()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Does the worker hold more than its (lowered) totals?
    pub fn is_overcommitted(&self, worker: &WorkerId) -> bool {
        self.overcommitted.contains(worker)
    }

    /// Attempts `worker` still runs that the master has told it to stop.
    pub fn stale_on(&self, worker: &WorkerId) -> usize {
        self.stale.get(worker).map_or(0, |s| s.len())
    }

    pub fn queue(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.queue.iter().copied()
    }

    pub(crate) fn next_task_id(&mut self) -> TaskId {
        let id = TaskId(self.next_task);
        self.next_task += 1;
        id
    }

    /// Hand out attempt ids above `seen` from now on.
    pub(crate) fn bump_attempt_ids(&mut self, seen: u64) {
        self.next_attempt = self.next_attempt.max(seen.saturating_add(1));
    }

    pub(crate) fn next_attempt_id(&mut self) -> AttemptId {
        let id = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        id
    }

    pub(crate) fn write_task(&self, id: TaskId, fx: &mut Effects) {
        fx.writes.push(Write::Task(self.tasks[&id].clone()));
    }

    pub(crate) fn write_attempt(&self, id: AttemptId, fx: &mut Effects) {
        fx.writes.push(Write::Attempt(self.attempts[&id].clone()));
    }

    pub(crate) fn write_worker(&self, id: &WorkerId, fx: &mut Effects) {
        fx.writes.push(Write::Worker(self.workers[id].clone()));
    }

    /// Check the invariants that must hold after every step. Used by the
    /// property tests and the simulation; cheap enough for debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let derived = Ledger::derive(self.attempts.values());
        for w in self.workers.values() {
            let cached = self.ledger.allocated(&w.id);
            let truth = derived.allocated(&w.id);
            if cached != truth {
                return Err(format!(
                    "worker {}: index says {cached:?}, attempts sum to {truth:?}",
                    w.name
                ));
            }
            if !truth.le(&w.total) && !self.overcommitted.contains(&w.id) {
                return Err(format!(
                    "worker {} overcommitted: {truth:?} > {:?}",
                    w.name, w.total
                ));
            }
        }
        for w in self.workers.values() {
            let slot = self
                .slots
                .get(&w.id)
                .ok_or(format!("worker {} has no slot", w.name))?;
            let e = self
                .index
                .get(*slot)
                .ok_or(format!("worker {} not in the index", w.name))?;
            if e.allocated != self.ledger.allocated(&w.id) {
                return Err(format!(
                    "worker {}: scheduler index {:?} != ledger {:?}",
                    w.name,
                    e.allocated,
                    self.ledger.allocated(&w.id)
                ));
            }
            if e.schedulable != self.takes_work(&w.id) {
                return Err(format!(
                    "worker {}: index schedulable={} but takes_work={}",
                    w.name,
                    e.schedulable,
                    self.takes_work(&w.id)
                ));
            }
        }
        let mut live_per_task: HashMap<TaskId, usize> = HashMap::new();
        for a in self.attempts.values().filter(|a| a.state.is_live()) {
            *live_per_task.entry(a.task_id).or_default() += 1;
            if self.live.get(&a.task_id) != Some(&a.id) {
                return Err(format!(
                    "attempt {} holds resources but is not its task's live attempt",
                    a.id
                ));
            }
        }
        if let Some((t, n)) = live_per_task.iter().find(|(_, n)| **n > 1) {
            return Err(format!("task {t} has {n} live attempts"));
        }
        for (t, a) in &self.live {
            if !self.attempts[a].state.is_live() {
                return Err(format!("task {t}: live attempt {a} is not live"));
            }
        }
        for t in self.tasks.values() {
            let queued = self.queue.contains(&t.id);
            if queued != (t.state == TaskState::Queued) {
                return Err(format!("task {} is {} but queued={queued}", t.id, t.state));
            }
            let has_live = self.live.contains_key(&t.id);
            let should = matches!(t.state, TaskState::Assigned | TaskState::Running);
            // A task ended by an earlier attempt's late success while its
            // replacement is being stopped.
            let ending = t.state.is_terminal()
                && self
                    .live_attempt(t.id)
                    .is_some_and(|a| a.state == berth_core::AttemptState::Stopping);
            if has_live != should && !ending {
                return Err(format!(
                    "task {} is {} but has_live={has_live}",
                    t.id, t.state
                ));
            }
        }
        Ok(())
    }
}
