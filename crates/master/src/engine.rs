//! The engine: the one writer of the master's [`State`].
//!
//! Runs on its own OS thread. Commands arrive on a channel; the engine takes
//! every command waiting (up to a batch limit), applies them in order, runs
//! liveness and a scheduling round, commits all resulting writes in **one**
//! store transaction (group commit), and only then answers the callers and
//! sends messages to workers. So nothing is acknowledged before it is
//! durable, and throughput is not one fsync per task.

use crate::state::{
    AdminError, CancelError, Effects, Outbound, ReconcileReport, ReportError, State, SubmitError,
    WorkerHello,
};
use berth_core::{Millis, TaskId, TaskSpec, TaskState, WorkerId};
use berth_proto::{HeldReport, v1};
use berth_store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// Most commands applied in one batch.
const MAX_BATCH: usize = 4096;
/// While writes fail, how often an idle engine checks whether they work again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub type SessionTx = tmpsc::UnboundedSender<v1::MasterMessage>;
/// Answers one caller once the batch is settled: `None` when it was
/// committed, else why it was not.
type Reply = Box<dyn FnOnce(Option<&Unavailable>) + Send>;

/// Wrap a caller's channel as a [`Reply`] carrying `r` if the batch commits.
fn reply_with<T: Send + 'static>(tx: ReplyTo<T>, r: T) -> Reply {
    Box::new(move |failed| {
        let _ = tx.send(match failed {
            None => Ok(r),
            Some(e) => Err(e.clone()),
        });
    })
}
/// A read-only view, run against the state after the batch is durable.
pub type Query = Box<dyn FnOnce(&State) + Send>;

/// Where the engine sends one caller's answer: the answer, or why the
/// engine could not give one (stopped, or its batch could not be recorded).
pub type ReplyTo<T> = oneshot::Sender<Result<T, Unavailable>>;

pub enum Command {
    Submit {
        spec: TaskSpec,
        queue_anyway: bool,
        reply: ReplyTo<Result<TaskId, SubmitError>>,
    },
    Cancel {
        task: TaskId,
        reply: ReplyTo<Result<TaskState, CancelError>>,
    },
    Hello {
        hello: WorkerHello,
        session: u64,
        tx: SessionTx,
        heartbeat_interval_ms: u64,
        reply: ReplyTo<Result<(), ReportError>>,
    },
    Heartbeat {
        worker: WorkerId,
        session: u64,
        held: Vec<HeldReport>,
        draining: bool,
    },
    Report {
        worker: WorkerId,
        seq: u64,
        held: HeldReport,
    },
    Disconnected {
        worker: WorkerId,
        session: u64,
    },
    /// The master is stopping: end every worker session.
    CloseSessions,
    /// Traffic on a session: the worker is alive.
    Alive {
        worker: WorkerId,
        session: u64,
    },
    Reconcile {
        dry_run: bool,
        reply: ReplyTo<Result<ReconcileReport, String>>,
    },
    Query(Query),
    Admin {
        op: AdminOp,
        name: String,
        reply: ReplyTo<Result<String, AdminError>>,
    },
}

/// An operator action on a worker (by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Drain,
    Unregister,
    /// Unregister a worker whose machine is gone: its unknown attempts are
    /// recorded lost first (`unregister --confirm-dead`).
    UnregisterDead,
    Register,
}

/// The handle the services use to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    health: Arc<Health>,
}

/// Why the engine could not answer. Both are worth retrying: the
/// services answer `UNAVAILABLE` (gRPC) / 503 (HTTP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the master's state engine has stopped")]
    Stopped,
    /// The batch holding this request could not be committed; nothing of
    /// it was recorded or acted upon.
    #[error("{0}; nothing was recorded, try again later")]
    Storage(String),
}

impl EngineHandle {
    pub fn send(&self, cmd: Command) -> Result<(), Unavailable> {
        self.tx.send(cmd).map_err(|_| Unavailable::Stopped)
    }

    /// Run a read-only view of the state and return its result. Reads are
    /// served also while writes fail.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Query(Box::new(move |s| {
            let _ = tx.send(f(s));
        })))?;
        rx.await.map_err(|_| Unavailable::Stopped)
    }

    /// Send a command carrying a reply channel and wait for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(ReplyTo<T>) -> Command,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| Unavailable::Stopped)?
    }

    /// Whether the engine runs and its store takes writes.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// What the engine tells the outside about itself: read by `/healthz` and
/// `/metrics` without a trip through the engine thread.
#[derive(Debug, Default)]
pub struct Health {
    /// The engine thread has ended (it never restarts).
    stopped: AtomicBool,
    /// Batches whose commit failed, since start.
    commit_failures: AtomicU64,
    /// While writes fail: the cause, as callers see it.
    storage_fault: Mutex<Option<String>>,
}

impl Health {
    /// `Ok` while the engine runs and writes are accepted; otherwise why not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(Unavailable::Stopped.to_string());
        }
        match &*self.storage_fault.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(cause) => Err(format!("writes are refused: {cause}")),
            None => Ok(()),
        }
    }

    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    fn set_fault(&self, cause: Option<String>) {
        *self.storage_fault.lock().unwrap_or_else(|e| e.into_inner()) = cause;
    }

    fn faulty(&self) -> bool {
        self.storage_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
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

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

struct Session {
    id: u64,
    tx: SessionTx,
}

struct Engine<S: Store> {
    state: State,
    store: S,
    sessions: HashMap<WorkerId, Session>,
    /// Session changes of the batch under way, with what each replaced:
    /// undone when the batch cannot be committed.
    session_undo: Vec<(WorkerId, Option<Session>)>,
    health: Arc<Health>,
    tick_every: Duration,
    reconcile_every: Duration,
    next_reconcile: std::time::Instant,
    /// While writes fail: when to probe the store again.
    next_probe: std::time::Instant,
    /// The clocks at the previous step, to tell a stall or a wall-clock
    /// step from the workers' silence.
    last_step: (Millis, std::time::Instant),
}

type ReconcileReply = ReplyTo<Result<ReconcileReport, String>>;

/// Start the engine thread. It stops when every handle is dropped (`Ok`),
/// or on a store fault it cannot serve through (a corrupt database, or
/// records it cannot read back): then it returns the error and the process
/// should exit so that it is restarted from its records. A failed commit
/// (disk full, busy, I/O error) does not stop it: see [`Engine::step`].
pub fn spawn<S: Store>(
    state: State,
    store: S,
    tick_every: Duration,
    reconcile_every: Duration,
) -> (
    EngineHandle,
    std::thread::JoinHandle<Result<(), berth_store::StoreError>>,
) {
    let (tx, rx) = mpsc::channel();
    let health = Arc::new(Health::default());
    let now = std::time::Instant::now();
    let engine = Engine {
        state,
        store,
        sessions: HashMap::new(),
        session_undo: Vec::new(),
        health: health.clone(),
        tick_every,
        reconcile_every,
        // The first reconciliation runs at start.
        next_reconcile: now,
        next_probe: now,
        last_step: (now_ms(), now),
    };
    let join = std::thread::Builder::new()
        .name("berth-engine".into())
        .spawn(move || {
            let health = engine.health.clone();
            let r = engine.run(rx);
            health.stopped.store(true, Ordering::Relaxed);
            if let Err(e) = &r {
                tracing::error!(error = %e, "the store cannot be used; the master stops");
            }
            r
        })
        .expect("spawn engine thread");
    (EngineHandle { tx, health }, join)
}

impl<S: Store> Engine<S> {
    fn run(mut self, rx: mpsc::Receiver<Command>) -> Result<(), berth_store::StoreError> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            match rx.recv_timeout(self.tick_every) {
                Ok(cmd) => batch.push(cmd),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.step(&mut batch)?;
        }
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
    fn step(&mut self, batch: &mut Vec<Command>) -> Result<(), berth_store::StoreError> {
        let now = now_ms();
        let mono = std::time::Instant::now();
        let (last_wall, last_mono) = self.last_step;
        self.last_step = (now, mono);
        let shift = liveness_shift(now - last_wall, mono - last_mono, STALL_CAP);
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
        if std::time::Instant::now() >= self.next_reconcile {
            self.next_reconcile = std::time::Instant::now() + self.reconcile_every;
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
        self.next_probe = std::time::Instant::now() + PROBE_EVERY;
        Unavailable::Storage(cause)
    }

    /// While writes fail and nothing else writes, find out (at most every
    /// [`PROBE_EVERY`]) whether they work again, so `/healthz` recovers.
    fn probe_if_faulty(&mut self) {
        if !self.health.faulty() || std::time::Instant::now() < self.next_probe {
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
                self.next_probe = std::time::Instant::now() + PROBE_EVERY;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;
    use berth_core::{Resources, TaskSpec};
    use berth_store::{MemStore, StoreFault};
    use std::sync::{Arc, Mutex};

    fn spec() -> TaskSpec {
        TaskSpec::process(
            vec!["true".into()],
            Resources {
                cpu_millis: 1_000,
                memory_bytes: 1 << 20,
                ..Resources::ZERO
            },
        )
    }

    async fn submit(e: &EngineHandle) -> Result<Result<TaskId, SubmitError>, Unavailable> {
        e.call(|reply| Command::Submit {
            spec: spec(),
            queue_anyway: true,
            reply,
        })
        .await
    }

    fn start(store: &Arc<Mutex<MemStore>>) -> EngineHandle {
        let st = State::new(StateConfig::default());
        let (e, _join) = spawn(
            st,
            store.clone(),
            Duration::from_millis(20),
            Duration::from_secs(3600),
        );
        e
    }

    #[test]
    fn silence_is_measured_on_the_monotonic_clock() {
        let cap = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // A normal step: nothing to forgive.
        assert_eq!(liveness_shift(250, ms(250), cap), 0);
        // The master stopped for 10 s: all but the cap is its own stall.
        assert_eq!(liveness_shift(10_000, ms(10_000), cap), 9_000);
        // The wall clock jumped an hour ahead in a 250 ms step.
        assert_eq!(liveness_shift(3_600_250, ms(250), cap), 3_600_000);
        // ... or back: silence must not shrink by an hour.
        assert_eq!(liveness_shift(-3_599_750, ms(250), cap), -3_600_000);
    }

    #[tokio::test]
    async fn a_failed_commit_changes_nothing_and_writes_resume_by_themselves() {
        let store = Arc::new(Mutex::new(MemStore::new()));
        let e = start(&store);
        assert_eq!(submit(&e).await.unwrap().unwrap(), TaskId(1));
        assert!(e.health().check().is_ok());

        store.lock().unwrap().fail_writes(Some(StoreFault::Full));
        let refused = submit(&e).await.unwrap_err();
        let Unavailable::Storage(cause) = &refused else {
            panic!("expected a storage fault, got {refused:?}");
        };
        assert!(
            cause.starts_with("the master's disk is full"),
            "cause names the disk: {cause}"
        );
        // Nothing of the refused batch is in the state; reads are served.
        let ids: Vec<TaskId> = e
            .query(|s| s.tasks().map(|t| t.id).collect())
            .await
            .unwrap();
        assert_eq!(ids, vec![TaskId(1)]);
        assert!(e.health().check().unwrap_err().contains("disk is full"));
        assert_eq!(e.health().commit_failures(), 1);

        // Space is back: the idle engine's probe notices, and the next
        // write succeeds without any restart.
        store.lock().unwrap().fail_writes(None);
        let mut healthy = false;
        for _ in 0..200 {
            if e.health().check().is_ok() {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(healthy, "health recovers once the store takes writes");
        assert_eq!(submit(&e).await.unwrap().unwrap(), TaskId(2));
        let stored = store.lock().unwrap().load().unwrap();
        assert_eq!(stored.tasks.len(), 2);
    }

    #[tokio::test]
    async fn a_placement_that_cannot_be_recorded_is_never_sent() {
        let store = Arc::new(Mutex::new(MemStore::new()));
        let e = start(&store);
        let (tx, mut rx) = tmpsc::unbounded_channel();
        let total = Resources {
            cpu_millis: 4_000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        let hello = WorkerHello::process_only("w1", "w1", total);
        e.call(|reply| Command::Hello {
            hello,
            session: 1,
            tx,
            heartbeat_interval_ms: 1_000,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
        assert!(matches!(
            rx.recv().await.unwrap().body,
            Some(v1::master_message::Body::Welcome(_))
        ));
        store.lock().unwrap().fail_writes(Some(StoreFault::Io));
        assert!(matches!(submit(&e).await, Err(Unavailable::Storage(_))));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.try_recv().is_err(),
            "no start for an unrecorded placement"
        );
        let held = e
            .query(|s| s.ledger().allocated(&WorkerId("w1".into())))
            .await;
        assert_eq!(held.unwrap(), Resources::ZERO);

        store.lock().unwrap().fail_writes(None);
        let id = submit(&e).await.unwrap().unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let Some(v1::master_message::Body::Start(s)) = msg.body else {
            panic!("expected a start, got {msg:?}");
        };
        assert_eq!(s.task_id, id.0);
    }

    #[tokio::test]
    async fn a_second_agent_with_a_live_node_id_is_refused() {
        let store = Arc::new(Mutex::new(MemStore::new()));
        let e = start(&store);
        let total = Resources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        let hello = |name: &str| WorkerHello::process_only("node-1", name, total);
        let (tx1, _rx1) = tmpsc::unbounded_channel();
        let first = hello("w1");
        e.call(|reply| Command::Hello {
            hello: first,
            session: 1,
            tx: tx1,
            heartbeat_interval_ms: 1_000,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
        let (tx2, _rx2) = tmpsc::unbounded_channel();
        let second = hello("w2");
        let r = e
            .call(|reply| Command::Hello {
                hello: second,
                session: 2,
                tx: tx2,
                heartbeat_interval_ms: 1_000,
                reply,
            })
            .await
            .unwrap();
        assert!(
            matches!(&r, Err(ReportError::NodeIdInUse(id, name)) if id.0 == "node-1" && name == "w1"),
            "{r:?}"
        );
        let names: Vec<String> = e
            .query(|s| s.workers().map(|w| w.name.clone()).collect())
            .await
            .unwrap();
        assert_eq!(names, vec!["w1".to_string()], "the first keeps its place");
    }
}
