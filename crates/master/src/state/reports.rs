//! What workers tell the master: registration (hello), heartbeats and
//! attempt updates, each carrying the attempts the worker holds. This module
//! owns the two-way reality check and the idempotent application of
//! results (DESIGN.md "Reconciliation, level-triggered").

use super::{Effects, Outbound, State};
use berth_core::validate::validate_resources;
use berth_core::{
    AttemptId, AttemptState, GpuInfo, Millis, Resources, TaskEvent, TaskId, TaskState, WorkerId,
    WorkerRecord, WorkerState,
};
use berth_proto::HeldReport;
use std::collections::BTreeSet;

/// A worker's registration.
#[derive(Debug, Clone)]
pub struct WorkerHello {
    pub id: WorkerId,
    pub name: String,
    pub total: Resources,
    pub drivers: Vec<String>,
    pub gpus: Vec<GpuInfo>,
    pub held: Vec<HeldReport>,
    pub draining: bool,
    pub labels: Vec<(String, String)>,
    /// The highest attempt id the worker has ever been given (0: none, or
    /// an agent too old to say).
    pub max_attempt_id: u64,
    /// The agent's stop grace (SIGTERM → SIGKILL); 0 when not said.
    pub stop_grace_ms: u64,
}

impl WorkerHello {
    /// A hello from an agent with the process driver only, holding nothing
    /// (simulated workers in benchmarks and tests).
    pub fn process_only(id: &str, name: &str, total: Resources) -> WorkerHello {
        WorkerHello {
            id: WorkerId(id.into()),
            name: name.into(),
            total,
            drivers: vec!["process".into()],
            gpus: vec![],
            held: vec![],
            draining: false,
            labels: vec![],
            max_attempt_id: 0,
            stop_grace_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("worker name '{0}' is already used by ready worker {1}; pick another --name")]
    NameInUse(String, WorkerId),
    #[error("worker name is empty; pass --name")]
    EmptyName,
    #[error("worker {0} has a zero CPU total; a worker must offer at least one millicore")]
    NoCpu(String),
    #[error("worker totals refused: {0}")]
    Totals(String),
    #[error(
        "worker name '{0}' is not registered; this cluster requires registration (`register {0}` on the master)"
    )]
    NotAllowed(String),
    #[error("worker {0} is not registered (or was declared down); it must say hello again")]
    NotRegistered(WorkerId),
    #[error(
        "node id {0} is already used by ready worker '{1}', whose agent is connected and alive; a copy of a worker's data dir cannot join beside it: give each worker its own --data-dir (a new one gets a new node id)"
    )]
    NodeIdInUse(WorkerId, String),
}

/// A disconnect lease disproven by the worker: the attempt runs until the
/// worker reports it ended.
pub(crate) const UNTIL_IT_ENDS: Millis = Millis::MAX;

impl ReportError {
    /// Worth trying again later: the name or node id is held by a session
    /// that may yet go away (the agent retries with jitter). Anything else
    /// ends the agent with the reason.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ReportError::NameInUse(..) | ReportError::NodeIdInUse(..)
        )
    }
}

impl State {
    /// Register (or re-register) a worker and reconcile what it holds.
    pub fn hello(
        &mut self,
        h: WorkerHello,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), ReportError> {
        if h.name.trim().is_empty() {
            return Err(ReportError::EmptyName);
        }
        if let Some(other) = self
            .workers
            .values()
            .find(|w| w.name == h.name && w.id != h.id && w.state.is_up())
        {
            return Err(ReportError::NameInUse(h.name, other.id.clone()));
        }
        if h.total.cpu_millis == 0 {
            return Err(ReportError::NoCpu(h.name));
        }
        // Totals obey the same absolute limits as requests.
        validate_resources(&h.total).map_err(|e| ReportError::Totals(e.to_string()))?;
        berth_core::validate::validate_labels("label", &h.labels)
            .map_err(|e| ReportError::Totals(e.to_string()))?;
        if self.config.require_registration && !self.registered.contains(&h.name) {
            return Err(ReportError::NotAllowed(h.name));
        }
        let drained = self.workers.get(&h.id).is_some_and(|w| w.drained);
        let record = WorkerRecord {
            id: h.id.clone(),
            name: h.name,
            total: h.total,
            drivers: h.drivers,
            gpus: h.gpus,
            state: if h.draining {
                WorkerState::Draining
            } else {
                WorkerState::Ready
            },
            last_seen_ms: now,
            labels: h.labels,
            drained,
        };
        self.workers.insert(h.id.clone(), record);
        self.greeted.insert(h.id.clone());
        if h.stop_grace_ms > 0 {
            self.stop_grace
                .insert(h.id.clone(), h.stop_grace_ms as Millis);
        }
        self.write_worker(&h.id, fx);
        self.attempt_ids_seen(&h.id, h.max_attempt_id, &h.held, now, fx);
        self.reality_check(&h.id, &h.held, true, now, fx);
        self.withdraw_starts_beyond_capacity(&h.id, &h.held, now, fx);
        self.check_capacity(&h.id);
        self.refresh_worker(&h.id);
        self.dirty = true;
        Ok(())
    }

    /// A worker back with less capacity than was placed on it: the starts
    /// it does not hold yet (assigned, not in its hello) are withdrawn,
    /// newest first, until what it holds fits its new total, so it is never
    /// sent a start its admission must refuse; their tasks are placed again.
    /// What it runs stays (and the worker is flagged overcommitted).
    fn withdraw_starts_beyond_capacity(
        &mut self,
        worker: &WorkerId,
        held: &[HeldReport],
        now: Millis,
        fx: &mut Effects,
    ) {
        let Some(total) = self.workers.get(worker).map(|w| w.total) else {
            return;
        };
        if self.ledger.allocated(worker).le(&total) {
            return;
        }
        let mut unstarted: Vec<AttemptId> = self
            .ledger
            .attempts_on(worker)
            .filter(|a| self.attempts[a].state == AttemptState::Assigned)
            .filter(|a| !held.iter().any(|h| h.attempt_id == *a))
            .collect();
        unstarted.sort_unstable();
        let mut withdrawn = BTreeSet::new();
        while !self.ledger.allocated(worker).le(&total) {
            let Some(aid) = unstarted.pop() else { break };
            self.finish_attempt(
                aid,
                AttemptState::Lost,
                None,
                "its worker came back with less capacity than was placed on it; the start was withdrawn and the task placed again".into(),
                now,
                fx,
            );
            withdrawn.insert(aid);
        }
        fx.outbound.retain(
            |o| !matches!(o, Outbound::Start { attempt, .. } if withdrawn.contains(attempt)),
        );
    }

    /// Never reuse an attempt id a worker has seen: after the master's
    /// records were restored from an older copy, ids it hands out again
    /// would be matched to the worker's tombstones or old attempts. Ids
    /// continue past the worker's highest, and an attempt placed here
    /// (while it was away) under an id it has already seen is withdrawn and
    /// its task placed again under a new one — unless the worker holds it:
    /// then its start arrived and only the word that it runs was lost.
    fn attempt_ids_seen(
        &mut self,
        worker: &WorkerId,
        max_seen: u64,
        held: &[HeldReport],
        now: Millis,
        fx: &mut Effects,
    ) {
        if max_seen == 0 {
            return;
        }
        self.bump_attempt_ids(max_seen);
        let clashing: Vec<AttemptId> = self
            .ledger
            .attempts_on(worker)
            .filter(|a| a.0 <= max_seen && self.attempts[a].state == AttemptState::Assigned)
            .filter(|a| self.attempts[a].started_ms.is_none())
            .filter(|a| !held.iter().any(|h| h.attempt_id == *a))
            .collect();
        for aid in clashing {
            // Its start may have been taken for a duplicate: it never ran.
            self.finish_attempt(
                aid,
                AttemptState::Lost,
                None,
                format!(
                    "attempt id {aid} was already used on this worker (the master's records were restored from an older copy); placed again under a new id"
                ),
                now,
                fx,
            );
        }
    }

    /// A heartbeat: the worker is alive and holds exactly `held`.
    pub fn heartbeat(
        &mut self,
        worker: &WorkerId,
        held: &[HeldReport],
        draining: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<(), ReportError> {
        let w = self
            .workers
            .get_mut(worker)
            .filter(|w| w.state.is_up())
            .ok_or_else(|| ReportError::NotRegistered(worker.clone()))?;
        w.last_seen_ms = now;
        let state = if draining {
            WorkerState::Draining
        } else {
            WorkerState::Ready
        };
        if w.state != state {
            w.state = state;
            self.dirty = true;
            self.write_worker(worker, fx);
        }
        self.reality_check(worker, held, false, now, fx);
        self.refresh_worker(worker);
        // Proof for the worker that the master hears it.
        fx.outbound.push(Outbound::Ack {
            worker: worker.clone(),
            seq: berth_proto::HEARTBEAT_SEQ,
        });
        Ok(())
    }

    /// One attempt update from the worker's outbox. Always acknowledged,
    /// also when stale: the worker may then forget it.
    pub fn report(
        &mut self,
        worker: &WorkerId,
        seq: u64,
        h: &HeldReport,
        now: Millis,
        fx: &mut Effects,
    ) {
        if let Some(w) = self.workers.get_mut(worker)
            && w.state.is_up()
        {
            w.last_seen_ms = now;
        }
        if self.observe(worker, h, now, fx) {
            self.stale
                .entry(worker.clone())
                .or_default()
                .insert(h.attempt_id);
        } else if h.state.is_terminal()
            && let Some(s) = self.stale.get_mut(worker)
        {
            s.remove(&h.attempt_id);
            if s.is_empty() {
                self.stale.remove(worker);
                self.dirty = true;
            }
        }
        if self.slots.contains_key(worker) {
            self.refresh_worker(worker);
        }
        fx.outbound.push(Outbound::Ack {
            worker: worker.clone(),
            seq,
        });
    }

    /// The two-way reality check. `fresh_session` is true on hello: the
    /// worker's previous session (and anything sent on it) is gone.
    fn reality_check(
        &mut self,
        worker: &WorkerId,
        held: &[HeldReport],
        fresh_session: bool,
        now: Millis,
        fx: &mut Effects,
    ) {
        let mut stale = BTreeSet::new();
        for h in held {
            if self.observe(worker, h, now, fx) {
                stale.insert(h.attempt_id);
            }
            if h.state.is_terminal() {
                // Recorded now (or long ago): the worker may forget it, even
                // if the ack of its own update went missing.
                fx.outbound.push(Outbound::Ack {
                    worker: worker.clone(),
                    seq: berth_proto::final_seq(h.attempt_id),
                });
            }
        }
        if stale.is_empty() {
            if self.stale.remove(worker).is_some() {
                self.dirty = true;
            }
        } else {
            self.stale.insert(worker.clone(), stale);
        }
        let held_ids: BTreeSet<AttemptId> = held.iter().map(|h| h.attempt_id).collect();
        let live_here: Vec<AttemptId> = self.ledger.attempts_on(worker).collect();
        for aid in live_here {
            let a = &self.attempts[&aid];
            let held_here = held_ids.contains(&aid);
            match (a.state, held_here) {
                // A start in flight; resend it on a new session, or when it
                // has been in flight for too long (the worker ignores
                // duplicates).
                (AttemptState::Assigned, false)
                    if fresh_session || now - a.created_ms > self.config.start_resend_ms =>
                {
                    let task = &self.tasks[&a.task_id];
                    fx.outbound.push(Outbound::Start {
                        worker: worker.clone(),
                        attempt: aid,
                        task: a.task_id,
                        spec: task.spec.clone(),
                        gpu_ids: a.gpu_ids.clone(),
                    });
                }
                // Placed moments ago: its start is still on its way.
                (AttemptState::Assigned, false) => {}
                // Cancelled before the worker confirmed its start: this
                // report may predate the start's arrival, so it proves
                // nothing. The stop follows the start on the same stream;
                // the worker answers it with a final report (also when the
                // stop arrives first). Only a new session proves it absent.
                (AttemptState::Stopping, false)
                    if !fresh_session
                        && a.started_ms.is_none()
                        && now - a.created_ms > self.config.start_resend_ms =>
                {
                    fx.outbound.push(Outbound::Stop {
                        worker: worker.clone(),
                        attempt: aid,
                        reason: "cancelled by user".into(),
                    });
                }
                (AttemptState::Stopping, false) if !fresh_session && a.started_ms.is_none() => {}
                // Its worker came back without it: it is not running.
                (AttemptState::Unknown, false) => {
                    self.finish_attempt(
                        aid,
                        AttemptState::Lost,
                        None,
                        "its worker came back without it".into(),
                        now,
                        fx,
                    );
                }
                (_, false) => {
                    self.finish_attempt(
                        aid,
                        AttemptState::Lost,
                        None,
                        "the worker no longer has this attempt".into(),
                        now,
                        fx,
                    );
                }
                // Still running although asked to stop: ask again (the
                // stop may have been lost, or overtaken its start).
                (AttemptState::Stopping, true) => {
                    fx.outbound.push(Outbound::Stop {
                        worker: worker.clone(),
                        attempt: aid,
                        reason: "cancelled by user".into(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Apply one observation of an attempt by `worker`. Idempotent: a
    /// report about an attempt that is no longer live (or not this
    /// worker's) changes nothing, and a running one is told to stop.
    /// Returns true when the worker runs an attempt the master does not
    /// consider live (a stale attempt).
    fn observe(
        &mut self,
        worker: &WorkerId,
        h: &HeldReport,
        now: Millis,
        fx: &mut Effects,
    ) -> bool {
        let mine = self
            .attempts
            .get(&h.attempt_id)
            .filter(|a| &a.worker_id == worker && a.state.holds_resources());
        let Some(a) = mine else {
            if h.state.holds_resources() {
                fx.outbound.push(Outbound::Stop {
                    worker: worker.clone(),
                    attempt: h.attempt_id,
                    reason: "the master does not consider this attempt live".into(),
                });
                return true;
            }
            return false;
        };
        match (a.state, h.state) {
            // Its worker was silent and came back: the attempt's fate is
            // known now. Still running → it was replaced, stop it (it holds
            // its resources until it has stopped); ended → record how.
            (AttemptState::Unknown, s) if s.is_terminal() => {
                let reason = h.reason.clone();
                self.finish_attempt(h.attempt_id, s, h.exit_code, reason, now, fx);
            }
            (AttemptState::Unknown, _) => {
                // Still running: whatever the lease of an at-most-once
                // attempt assumed (that its worker stopped it), it did not
                // (its agent was down, not cut off). It ends when the
                // worker says so, never by the clock, and its task waits.
                if let Some(until) = self.leases.get_mut(&h.attempt_id) {
                    *until = UNTIL_IT_ENDS;
                }
                fx.outbound.push(Outbound::Stop {
                    worker: worker.clone(),
                    attempt: h.attempt_id,
                    reason: "replaced while its worker was unreachable".into(),
                });
                return true;
            }
            (AttemptState::Assigned, AttemptState::Running) => {
                let aid = a.id;
                let task_id = a.task_id;
                let a = self.attempts.get_mut(&aid).expect("exists");
                a.state = AttemptState::Running;
                a.started_ms = Some(now);
                let t = self.tasks.get_mut(&task_id).expect("task of attempt");
                t.state = t
                    .state
                    .on(TaskEvent::Attempt(AttemptState::Running))
                    .expect("assigned task can run");
                self.write_attempt(aid, fx);
                self.write_task(task_id, fx);
            }
            (AttemptState::Stopping, AttemptState::Running) if a.started_ms.is_none() => {
                // Cancelled before its start was confirmed; it runs now and
                // the stop that followed the start will end it.
                let aid = a.id;
                self.attempts.get_mut(&aid).expect("exists").started_ms = Some(now);
                self.write_attempt(aid, fx);
            }
            (_, s) if s.is_terminal() => {
                let reason = h.reason.clone();
                self.finish_attempt(h.attempt_id, s, h.exit_code, reason, now, fx);
            }
            _ => {}
        }
        false
    }

    /// End a resource-holding attempt (live or unknown) on a terminal fact:
    /// release its resources, move its task on, record both. The one place
    /// resources are released.
    pub(crate) fn finish_attempt(
        &mut self,
        aid: AttemptId,
        outcome: AttemptState,
        exit_code: Option<i32>,
        reason: String,
        now: Millis,
        fx: &mut Effects,
    ) {
        if outcome == AttemptState::Lost {
            self.counters.attempts_lost += 1;
        }
        let a = self.attempts.get_mut(&aid).expect("attempt exists");
        let was_live = a.state.is_live();
        a.state = a.state.on(outcome).expect("holding attempt can end");
        a.ended_ms = Some(now);
        a.exit_code = exit_code;
        a.reason = reason.clone();
        let a = a.clone();
        self.release(&a);
        self.leases.remove(&aid);
        if was_live {
            self.live.remove(&a.task_id);
            // A task already ended (by an earlier attempt's late success)
            // has nothing more to decide.
            if !self.tasks[&a.task_id].state.is_terminal() {
                self.task_attempt_ended(a.task_id, outcome, exit_code, reason, now);
            }
        } else if outcome == AttemptState::Succeeded {
            self.late_success(a.task_id, exit_code, now, fx);
        }
        self.dirty = true;
        self.write_attempt(aid, fx);
        self.write_task(a.task_id, fx);
    }

    /// A live attempt's worker was declared down: the attempt becomes
    /// `unknown` (still holding its resources, shown apart) and its task
    /// moves on as after a lost attempt — replaced per its retry policy.
    pub(crate) fn attempt_unknown(
        &mut self,
        aid: AttemptId,
        reason: String,
        now: Millis,
        fx: &mut Effects,
    ) {
        self.counters.attempts_unknown += 1;
        let a = self.attempts.get_mut(&aid).expect("attempt exists");
        a.state = a.state.on(AttemptState::Unknown).expect("live attempt");
        a.reason = reason.clone();
        let a = a.clone();
        self.ledger.mark_unknown(&a);
        self.live.remove(&a.task_id);
        if !self.tasks[&a.task_id].state.is_terminal() {
            self.task_attempt_ended(a.task_id, AttemptState::Unknown, None, reason, now);
        }
        self.dirty = true;
        self.write_attempt(aid, fx);
        self.write_task(a.task_id, fx);
    }

    /// Move a placed task on after its live attempt ended (`outcome`):
    /// back to the queue after a lost or unknown attempt while retries are
    /// left, else to its end.
    fn task_attempt_ended(
        &mut self,
        task: TaskId,
        outcome: AttemptState,
        exit_code: Option<i32>,
        reason: String,
        now: Millis,
    ) {
        let lost_so_far = self.attempts_of(task).filter(|x| x.state.is_gone()).count();
        let t = self.tasks.get_mut(&task).expect("task of attempt");
        let gone = outcome.is_gone();
        let event = match outcome {
            _ if gone && t.cancel_requested => AttemptState::Cancelled,
            _ if gone && lost_so_far > t.spec.retries as usize => AttemptState::Failed,
            o => o,
        };
        t.state = t
            .state
            .on(TaskEvent::Attempt(event))
            .expect("placed task can end");
        if t.state == TaskState::Queued {
            self.queue.insert(t.id, t.spec.priority);
        } else {
            t.ended_ms = Some(now);
            t.exit_code = exit_code;
            t.reason = match (gone, event) {
                (true, AttemptState::Failed) => {
                    format!(
                        "lost {lost_so_far} times, more than its {} retries; last: {reason}",
                        t.spec.retries
                    )
                }
                _ => reason,
            };
        }
    }

    /// An unknown attempt came back with a success. If its task has not
    /// ended, the first success wins: the task succeeds, a queued
    /// replacement leaves the queue and a running one is stopped.
    fn late_success(
        &mut self,
        task: TaskId,
        exit_code: Option<i32>,
        now: Millis,
        fx: &mut Effects,
    ) {
        let t = self.tasks.get_mut(&task).expect("task of attempt");
        if t.state.is_terminal() {
            return;
        }
        let from = t.state;
        t.state = TaskState::Succeeded;
        t.ended_ms = Some(now);
        t.exit_code = exit_code;
        t.reason = "an attempt whose worker had gone silent succeeded after all".into();
        if from == TaskState::Queued {
            self.queue.remove(&task);
        }
        if let Some(&rid) = self.live.get(&task) {
            let r = self.attempts.get_mut(&rid).expect("live attempt exists");
            if r.state != AttemptState::Stopping {
                r.state = r.state.on(AttemptState::Stopping).expect("live can stop");
                r.reason = "another attempt of this task succeeded first".into();
                let worker = r.worker_id.clone();
                self.write_attempt(rid, fx);
                fx.outbound.push(Outbound::Stop {
                    worker,
                    attempt: rid,
                    reason: "another attempt of this task succeeded first".into(),
                });
            }
        }
    }
}
