//! One engine step, apart from threads and clocks: a batch of commands
//! applied to the [`State`], liveness and a scheduling round, one commit,
//! then the answers and the messages to workers. The engine thread
//! ([`super::spawn`]) feeds it real time; the deterministic simulation
//! (`master/tests/sim`) feeds it simulated time, so both run this code.

use super::command::{Command, Query, ReconcileReply, Reply, SessionTx, reply_with};
use super::{AdminOp, Feed, Health, Unavailable};
use crate::state::{AdminError, Effects, Outbound, ReconcileReport, ReportError, State};
use berth_core::{Millis, WorkerId};
use berth_proto::v1;
use berth_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// While writes fail, how often an idle engine checks whether they work again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The two clocks at one step: the wall clock (for records and display)
/// and a monotonic clock (for everything measured: stalls, the
/// reconciliation period, store probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: Millis,
    /// Time since the engine's own start; never goes back.
    pub mono: Duration,
}

/// The longest gap between two engine steps that counts as time the workers
/// could have been heard in. Steps come at least every tick (a quarter of
/// the heartbeat interval); a longer gap means the master itself stalled.
const STALL_CAP: Duration = Duration::from_secs(1);

/// How far to move every worker's last sign of life after a gap between
/// two steps: the wall clock moved `wall_ms` while the monotonic clock says
/// `mono` passed, of which at most `cap` counts (the rest was the master's
/// own stall). Positive after a stall or a forward step of the wall clock,
/// negative after a backward step; small differences are noise (0).
pub fn liveness_shift(wall_ms: Millis, mono: Duration, cap: Duration) -> Millis {
    let awake = mono.min(cap).as_millis() as Millis;
    let shift = wall_ms - awake;
    if shift.abs() < 50 { 0 } else { shift }
}

struct Session {
    id: u64,
    tx: SessionTx,
}

/// The master's state with its store and its worker sessions: what one
/// engine step works on. Owned by one thread; nothing else writes.
pub struct Engine<S: Store> {
    state: State,
    store: S,
    sessions: HashMap<WorkerId, Session>,
    /// Session changes of the batch under way, with what each replaced:
    /// undone when the batch cannot be committed.
    session_undo: Vec<(WorkerId, Option<Session>)>,
    health: Arc<Health>,
    /// Committed changes, for watchers.
    feed: Arc<Feed>,
    reconcile_every: Duration,
    /// On the monotonic clock of [`Now::mono`].
    next_reconcile: Duration,
    /// While writes fail: when to probe the store again.
    next_probe: Duration,
    /// The clocks at the previous step, to tell a stall or a wall-clock
    /// step from the workers' silence.
    last_step: Now,
}

impl<S: Store> Engine<S> {
    /// An engine over `state` (as loaded from `store`), starting at `now`.
    /// The first step runs a reconciliation; later ones every
    /// `reconcile_every`.
    pub fn new(state: State, store: S, reconcile_every: Duration, now: Now) -> Engine<S> {
        Engine {
            state,
            store,
            sessions: HashMap::new(),
            session_undo: Vec::new(),
            health: Arc::new(Health::default()),
            // The incarnation: the master's start time, so a cursor from
            // before a restart is told apart.
            feed: Arc::new(Feed::new(now.wall_ms as u64)),
            reconcile_every,
            next_reconcile: now.mono,
            next_probe: now.mono,
            last_step: now,
        }
    }

    /// The state as of the last step (read-only).
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// The session the engine holds open for `worker`, if any.
    pub fn session_of(&self, worker: &WorkerId) -> Option<u64> {
        self.sessions.get(worker).map(|s| s.id)
    }

    /// One batch: apply every command, run liveness and a scheduling round,
    /// commit all writes at once, then answer and send.
    ///
    /// When the commit fails the batch is undone as a whole: the state is
    /// rebuilt from the store (which holds exactly what was committed
    /// before), the batch's session changes are reverted, its messages are
    /// never sent and its callers get the cause. Reads go on being served;
    /// the next batch tries again, so writes resume by themselves once the
    /// store takes them. Only a fatal fault (corrupt, unreadable) returns.
    pub fn step(
        &mut self,
        batch: &mut Vec<Command>,
        clock: Now,
    ) -> Result<(), berth_store::StoreError> {
        let now = clock.wall_ms;
        let mono = clock.mono;
        let last = self.last_step;
        self.last_step = clock;
        let last_mono = last.mono.min(mono);
        let shift = liveness_shift(now - last.wall_ms, mono - last_mono, STALL_CAP);
        if shift != 0 {
            // Before anything is judged: what the master did not live
            // through is nobody's silence. Heartbeats that waited in this
            // batch are applied next, then liveness is ticked.
            tracing::warn!(
                shift_ms = shift,
                gap_ms = (mono - last_mono).as_millis() as u64,
                "the master stalled or its wall clock stepped; worker silence is measured on the monotonic clock"
            );
            self.state.shift_liveness(shift);
        }
        let mut fx = Effects::default();
        let mut replies: Vec<Reply> = Vec::new();
        let mut queries: Vec<Query> = Vec::new();
        let mut reconciles: Vec<(bool, Option<ReconcileReply>)> = Vec::new();
        self.session_undo.clear();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Reconcile { dry_run, reply } => reconciles.push((dry_run, Some(reply))),
                cmd => self.apply(cmd, now, &mut fx, &mut replies, &mut queries),
            }
        }
        if mono >= self.next_reconcile {
            self.next_reconcile = mono + self.reconcile_every;
            reconciles.push((false, None));
        }
        for down in self.state.tick(now, &mut fx) {
            let name = self
                .state
                .worker(&down)
                .map(|w| w.name.clone())
                .unwrap_or_default();
            tracing::warn!(worker = %name, id = %down, "worker declared down");
            // Close its stream: if it is still alive it must say hello again.
            self.drop_session(&down);
        }
        self.state.schedule(now, &mut fx);
        fx.writes = berth_store::coalesce(std::mem::take(&mut fx.writes));
        let committed = if fx.writes.is_empty() {
            self.probe_if_faulty();
            Ok(())
        } else {
            self.commit(&fx.writes)
        };
        if let Err(cause) = committed {
            self.undo(now)?;
            for r in replies {
                r(Some(&cause));
            }
            for (_, reply) in reconciles {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
            for q in queries {
                q(&self.state);
            }
            return Ok(());
        }
        self.feed.publish(&fx.writes);
        super::lifecycle::log_committed(&self.state, &fx.writes, now);
        for r in replies {
            r(None);
        }
        // Reconciliation compares the store with the state, so it runs
        // after the batch is committed, and commits its own fixes.
        for (dry_run, reply) in reconciles {
            let result = self.reconcile(dry_run, now);
            let result = match result {
                Ok(report) => Ok(Ok(report)),
                Err(e) if e.fault().is_fatal() => return Err(e),
                Err(e) => {
                    let cause = self.commit_failed(&e);
                    self.undo(now)?;
                    Err(cause)
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(result);
            } else if let Err(e) = result {
                tracing::error!(error = %e, "periodic reconciliation failed");
            }
        }
        for q in queries {
            q(&self.state);
        }
        for msg in fx.outbound {
            self.route(msg);
        }
        Ok(())
    }

    /// Commit one batch; on failure count it, mark the engine unhealthy and
    /// return the cause as callers see it. A fatal fault is returned as
    /// such by [`Engine::undo`] reloading (or failing to).
    fn commit(&mut self, writes: &[berth_store::Write]) -> Result<(), Unavailable> {
        match self.store.commit(writes) {
            Ok(()) => {
                if self.health.faulty() {
                    tracing::info!("the store takes writes again");
                    self.health.set_fault(None);
                }
                Ok(())
            }
            Err(e) => Err(self.commit_failed(&e)),
        }
    }

    fn commit_failed(&mut self, e: &berth_store::StoreError) -> Unavailable {
        let fault = e.fault();
        let cause = format!("{}: {e}", fault.describe());
        self.health.commit_failures.fetch_add(1, Ordering::Relaxed);
        if !self.health.faulty() {
            tracing::error!(fault = fault.as_str(), error = %e, "store commit failed; writes are refused until it succeeds");
        }
        self.health.set_fault(Some(cause.clone()));
        self.next_probe = self.last_step.mono + PROBE_EVERY;
        Unavailable::Storage(cause)
    }

    /// While writes fail and nothing else writes, find out (at most every
    /// [`PROBE_EVERY`]) whether they work again, so `/healthz` recovers.
    fn probe_if_faulty(&mut self) {
        if !self.health.faulty() || self.last_step.mono < self.next_probe {
            return;
        }
        match self.store.probe() {
            Ok(()) => {
                tracing::info!("the store takes writes again");
                self.health.set_fault(None);
            }
            Err(e) => {
                self.health
                    .set_fault(Some(format!("{}: {e}", e.fault().describe())));
                self.next_probe = self.last_step.mono + PROBE_EVERY;
            }
        }
    }

    /// Forget everything the failed batch did: the state as the store has
    /// it (what was last committed), the sessions as they were. Counters
    /// are kept. A store that cannot be read back is fatal.
    fn undo(&mut self, now: Millis) -> Result<(), berth_store::StoreError> {
        let snapshot = self.store.load()?;
        self.state = State::rebuilt_after_failed_commit(snapshot, &self.state, now);
        while let Some((worker, before)) = self.session_undo.pop() {
            match before {
                Some(s) => self.sessions.insert(worker, s),
                None => self.sessions.remove(&worker),
            };
        }
        Ok(())
    }

    /// The name of the worker whose agent holds a live session under node
    /// id `id`: connected, and heard from within two heartbeat intervals.
    /// A second agent with the same id (a copied data dir) is refused while
    /// the first is alive; an agent reconnecting after its old stream went
    /// quiet (a restart, a cut) takes the session over.
    fn live_session_of(&self, id: &WorkerId, now: Millis, interval_ms: u64) -> Option<String> {
        let connected = self.sessions.contains_key(id);
        self.state.live_holder(id, connected, now, interval_ms)
    }

    fn set_session(&mut self, worker: WorkerId, session: Session) {
        let before = self.sessions.insert(worker.clone(), session);
        self.session_undo.push((worker, before));
    }

    fn drop_session(&mut self, worker: &WorkerId) {
        if let Some(before) = self.sessions.remove(worker) {
            self.session_undo.push((worker.clone(), Some(before)));
        }
    }

    fn apply(
        &mut self,
        cmd: Command,
        now: Millis,
        fx: &mut Effects,
        replies: &mut Vec<Reply>,
        queries: &mut Vec<Query>,
    ) {
        match cmd {
            Command::Submit {
                spec,
                queue_anyway,
                reply,
            } => {
                let r = self.state.submit(spec, queue_anyway, now, fx);
                replies.push(reply_with(reply, r));
            }
            Command::Cancel { task, reply } => {
                let r = self.state.cancel(task, now, fx);
                replies.push(reply_with(reply, r));
            }
            Command::Hello {
                hello,
                session,
                tx,
                heartbeat_interval_ms,
                reply,
            } => {
                let id = hello.id.clone();
                let name = hello.name.clone();
                let r = match self.live_session_of(&id, now, heartbeat_interval_ms) {
                    Some(holder) => Err(ReportError::NodeIdInUse(id.clone(), holder)),
                    None => self.state.hello(hello, now, fx),
                };
                if let Err(e) = &r {
                    tracing::warn!(worker = %name, id = %id, error = %e, "worker refused");
                }
                if r.is_ok() {
                    tracing::info!(worker = %name, id = %id, "worker registered");
                    // The welcome goes first on the new session, before any
                    // start or stop the hello produced.
                    let _ = tx.send(v1::MasterMessage {
                        body: Some(v1::master_message::Body::Welcome(v1::Welcome {
                            worker_id: id.0.clone(),
                            heartbeat_interval_ms,
                        })),
                    });
                    self.set_session(id, Session { id: session, tx });
                }
                replies.push(reply_with(reply, r));
            }
            Command::Heartbeat {
                worker,
                session,
                held,
                draining,
            } => {
                if self.sessions.get(&worker).map(|s| s.id) != Some(session) {
                    return; // a stale session's heartbeat
                }
                if self
                    .state
                    .heartbeat(&worker, &held, draining, now, fx)
                    .is_err()
                {
                    self.drop_session(&worker);
                }
            }
            Command::Report { worker, seq, held } => {
                self.state.report(&worker, seq, &held, now, fx);
            }
            Command::CloseSessions => {
                let all: Vec<WorkerId> = self.sessions.keys().cloned().collect();
                for w in all {
                    self.drop_session(&w);
                }
            }
            Command::Alive { worker, session } => {
                if self.sessions.get(&worker).map(|s| s.id) == Some(session) {
                    self.state.touch(&worker, now);
                }
            }
            Command::Disconnected { worker, session } => {
                if self.sessions.get(&worker).map(|s| s.id) == Some(session) {
                    self.drop_session(&worker);
                }
            }
            Command::Reconcile { .. } => unreachable!("handled after the commit"),
            Command::Query(q) => queries.push(q),
            Command::Admin { op, name, reply } => {
                let r = match op {
                    AdminOp::Drain => self.state.drain(&name, fx).map(|_| {
                        format!("Worker {name} drained: it takes no new tasks; running ones finish")
                    }),
                    AdminOp::Undrain => self
                        .state
                        .undrain(&name, fx)
                        .map(|_| format!("Worker {name} undrained: it takes new tasks again")),
                    AdminOp::Unregister | AdminOp::UnregisterDead => {
                        match self.state.worker_named(&name) {
                            Ok(id) if self.sessions.contains_key(&id) => {
                                Err(AdminError::StillConnected(name.clone()))
                            }
                            _ => self
                                .state
                                .unregister(&name, op == AdminOp::UnregisterDead, now, fx)
                                .map(|lost| match lost {
                                    0 => format!("Worker {name} unregistered"),
                                    n => format!(
                                        "Worker {name} unregistered; {n} attempt(s) whose fate was unknown recorded lost and their resources released"
                                    ),
                                }),
                        }
                    }
                    AdminOp::Register => self
                        .state
                        .register(&name, fx)
                        .map(|_| format!("Worker name {name} registered: it may join")),
                };
                if let Ok(msg) = &r {
                    tracing::info!(target: "berth::audit", worker = %name, "{msg}");
                }
                replies.push(reply_with(reply, r));
            }
        }
    }

    /// One reconciliation: audit, commit the fixes, log each for audit.
    fn reconcile(
        &mut self,
        dry_run: bool,
        now: Millis,
    ) -> Result<ReconcileReport, berth_store::StoreError> {
        let records = self.store.live_attempts()?;
        let mut fx = Effects::default();
        let report = self.state.reconcile(dry_run, &records, now, &mut fx);
        if !fx.writes.is_empty() {
            self.store.commit(&fx.writes)?;
        }
        for f in &report.fixes {
            let large = f.before.cpu_millis.abs_diff(f.after.cpu_millis) >= 1_000
                || f.before.memory_bytes.abs_diff(f.after.memory_bytes) >= 1 << 30
                || f.before.gpus != f.after.gpus;
            tracing::warn!(
                target: "berth::audit",
                worker = %f.name,
                kind = f.kind.as_str(),
                dry_run,
                large,
                before = ?f.before,
                after = ?f.after,
                tasks = f.tasks,
                "{} allocation {}",
                if large { "LARGE discrepancy in" } else { "discrepancy in" },
                if dry_run { "found (dry run, nothing changed)" } else { "fixed" }
            );
        }
        for msg in fx.outbound {
            self.route(msg);
        }
        Ok(report)
    }

    fn route(&mut self, msg: Outbound) {
        use v1::master_message::Body;
        let (worker, body) = match msg {
            Outbound::Start {
                worker,
                attempt,
                task,
                spec,
                gpu_ids,
            } => (
                worker,
                Body::Start(v1::StartAttempt {
                    attempt_id: attempt.0,
                    task_id: task.0,
                    spec: Some(spec.into()),
                    gpu_ids,
                }),
            ),
            Outbound::Stop {
                worker,
                attempt,
                reason,
            } => (
                worker,
                Body::Stop(v1::StopAttempt {
                    attempt_id: attempt.0,
                    reason,
                }),
            ),
            Outbound::Ack { worker, seq } => (worker, Body::Ack(v1::Ack { seq })),
        };
        // No session: the message is dropped; the worker's next hello
        // resynchronises (starts are resent, stale attempts stopped).
        if let Some(s) = self.sessions.get(&worker)
            && s.tx.send(v1::MasterMessage { body: Some(body) }).is_err()
        {
            self.sessions.remove(&worker);
        }
    }
}
