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
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// Most commands applied in one batch.
const MAX_BATCH: usize = 4096;

pub type SessionTx = tmpsc::UnboundedSender<v1::MasterMessage>;
type Reply = Box<dyn FnOnce() + Send>;
/// A read-only view, run against the state after the batch is durable.
pub type Query = Box<dyn FnOnce(&State) + Send>;

pub enum Command {
    Submit {
        spec: TaskSpec,
        queue_anyway: bool,
        reply: oneshot::Sender<Result<TaskId, SubmitError>>,
    },
    Cancel {
        task: TaskId,
        reply: oneshot::Sender<Result<TaskState, CancelError>>,
    },
    Hello {
        hello: WorkerHello,
        session: u64,
        tx: SessionTx,
        heartbeat_interval_ms: u64,
        reply: oneshot::Sender<Result<(), ReportError>>,
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
        reply: oneshot::Sender<Result<ReconcileReport, String>>,
    },
    Query(Query),
    Admin {
        op: AdminOp,
        name: String,
        reply: oneshot::Sender<Result<String, AdminError>>,
    },
}

/// An operator action on a worker (by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Drain,
    Unregister,
    Register,
}

/// The handle the services use to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the master's state engine has stopped")]
pub struct EngineStopped;

impl EngineHandle {
    pub fn send(&self, cmd: Command) -> Result<(), EngineStopped> {
        self.tx.send(cmd).map_err(|_| EngineStopped)
    }

    /// Run a read-only view of the state and return its result.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, EngineStopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Query(Box::new(move |s| {
            let _ = tx.send(f(s));
        })))?;
        rx.await.map_err(|_| EngineStopped)
    }

    /// Send a command carrying a reply channel and wait for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineStopped> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| EngineStopped)
    }
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
    tick_every: Duration,
    reconcile_every: Duration,
    next_reconcile: std::time::Instant,
}

type ReconcileReply = oneshot::Sender<Result<ReconcileReport, String>>;

/// Start the engine thread. It stops when every handle is dropped, or on a
/// store failure (after which nothing more is acknowledged).
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
    let engine = Engine {
        state,
        store,
        sessions: HashMap::new(),
        tick_every,
        reconcile_every,
        // The first reconciliation runs at start.
        next_reconcile: std::time::Instant::now(),
    };
    let join = std::thread::Builder::new()
        .name("berth-engine".into())
        .spawn(move || engine.run(rx))
        .expect("spawn engine thread");
    (EngineHandle { tx }, join)
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

    fn step(&mut self, batch: &mut Vec<Command>) -> Result<(), berth_store::StoreError> {
        let now = now_ms();
        let mut fx = Effects::default();
        let mut replies: Vec<Reply> = Vec::new();
        let mut queries: Vec<Query> = Vec::new();
        let mut reconciles: Vec<(bool, Option<ReconcileReply>)> = Vec::new();
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
            self.sessions.remove(&down);
        }
        self.state.schedule(now, &mut fx);
        fx.writes = berth_store::coalesce(std::mem::take(&mut fx.writes));
        if !fx.writes.is_empty()
            && let Err(e) = self.store.commit(&fx.writes)
        {
            tracing::error!(error = %e, "store commit failed; the master stops acknowledging");
            return Err(e);
        }
        for r in replies {
            r();
        }
        // Reconciliation compares the store with the state, so it runs
        // after the batch is committed, and commits its own fixes.
        for (dry_run, reply) in reconciles {
            let result = self.reconcile(dry_run, now);
            if let Some(reply) = reply {
                let _ = reply.send(result.map_err(|e| e.to_string()));
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
                replies.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Command::Cancel { task, reply } => {
                let r = self.state.cancel(task, now, fx);
                replies.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
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
                let r = self.state.hello(hello, now, fx);
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
                    self.sessions.insert(id, Session { id: session, tx });
                }
                replies.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
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
                    self.sessions.remove(&worker);
                }
            }
            Command::Report { worker, seq, held } => {
                self.state.report(&worker, seq, &held, now, fx);
            }
            Command::CloseSessions => self.sessions.clear(),
            Command::Alive { worker, session } => {
                if self.sessions.get(&worker).map(|s| s.id) == Some(session) {
                    self.state.touch(&worker, now);
                }
            }
            Command::Disconnected { worker, session } => {
                if self.sessions.get(&worker).map(|s| s.id) == Some(session) {
                    self.sessions.remove(&worker);
                }
            }
            Command::Reconcile { .. } => unreachable!("handled after the commit"),
            Command::Query(q) => queries.push(q),
            Command::Admin { op, name, reply } => {
                let r = match op {
                    AdminOp::Drain => self.state.drain(&name, fx).map(|_| {
                        format!("Worker {name} drained: it takes no new tasks; running ones finish")
                    }),
                    AdminOp::Unregister => match self.state.worker_named(&name) {
                        Ok(id) if self.sessions.contains_key(&id) => {
                            Err(AdminError::StillConnected(name.clone()))
                        }
                        _ => self
                            .state
                            .unregister(&name, fx)
                            .map(|_| format!("Worker {name} unregistered")),
                    },
                    AdminOp::Register => self
                        .state
                        .register(&name, fx)
                        .map(|_| format!("Worker name {name} registered: it may join")),
                };
                if let Ok(msg) = &r {
                    tracing::info!(target: "berth::audit", worker = %name, "{msg}");
                }
                replies.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
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
