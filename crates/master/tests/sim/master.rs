//! The simulated master: the product's own engine step
//! (`berth_master::engine::Engine`) over a `MemStore` standing in for its
//! file. Simulated here is only what lies around the engine, as
//! `master/src/grpc/worker_link.rs` and the engine thread do it for real:
//!
//! * the thread: commands wait in an inbox and are applied as one batch
//!   per step (every simulation step with something waiting, else every
//!   tick), so replies, placements and heartbeats share batches and
//!   commits as they do in the product;
//! * the clocks: a monotonic clock from the master's start and a wall
//!   clock with an offset that can step; a paused master (a stall, a slow
//!   fsync) simply does not step, and its next step sees the gap;
//! * the sessions: each hello gets its own outbound channel, exactly the
//!   engine's `SessionTx`; what the engine writes to it goes onto the
//!   simulated network, and a channel the engine drops is a stream the
//!   worker sees closed.

use super::net::{Msg, ToMaster, ToWorker, worker_id};
use berth_core::{AttemptId, Millis, TaskId, TaskSpec};
use berth_master::engine::{Command, Engine, Now, Unavailable};
use berth_master::state::{ReconcileReport, ReportError, State, SubmitError};
use berth_proto::v1;
use berth_store::MemStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

pub type SharedStore = Arc<Mutex<MemStore>>;

/// The engine's tick when nothing arrives (a quarter of the heartbeat
/// interval, as `berth master` sets it).
const TICK_MS: Millis = 250;
/// The periodic reconciliation of the engine.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How often stream traffic refreshes a worker's last sign of life
/// (`worker_link.rs`'s `ALIVE_EVERY`).
const ALIVE_EVERY_MS: Millis = 500;

type Answer<T> = oneshot::Receiver<Result<T, Unavailable>>;

/// One worker session as the gRPC layer holds it.
struct Link {
    rx: mpsc::UnboundedReceiver<v1::MasterMessage>,
    /// The hello's answer, until it comes: nothing goes out before it.
    hello: Option<Answer<Result<(), ReportError>>>,
    /// The attempts the hello said run (for the agreement check).
    held: Vec<AttemptId>,
    last_alive: Millis,
}

/// What one master step produced for the world.
#[derive(Default)]
pub struct StepOut {
    pub stepped: bool,
    pub sent: Vec<Msg>,
    /// Submissions acknowledged (committed) in this step.
    pub acked: Vec<TaskId>,
    /// Per worker: the session and the attempts its hello or heartbeat,
    /// applied and committed in this step, said it runs.
    pub held: Vec<(usize, u64, Vec<AttemptId>)>,
    /// Audits answered in this step.
    pub audits: Vec<ReconcileReport>,
    pub commit_failures: u64,
}

pub struct Master {
    engine: Engine<SharedStore>,
    /// Where its monotonic clock starts (simulation time).
    boot: Millis,
    /// Its wall clock is the simulation's time plus this.
    pub wall_offset: i64,
    inbox: Vec<Command>,
    links: BTreeMap<(usize, u64), Link>,
    submits: Vec<Answer<Result<TaskId, SubmitError>>>,
    audits: Vec<Answer<Result<ReconcileReport, String>>>,
    /// Heartbeats in the inbox: (worker, session, attempts said to run).
    heartbeats: Vec<(usize, u64, Vec<AttemptId>)>,
    /// Stalled (paused, or inside a slow fsync) until then.
    pub paused_until: Millis,
    /// A slow fsync: the last step's answers and messages go out only when
    /// the pause ends.
    pub holding_output: bool,
    next_tick: Millis,
}

fn running(held: &[berth_proto::HeldReport]) -> Vec<AttemptId> {
    held.iter()
        .filter(|h| h.state.holds_resources())
        .map(|h| h.attempt_id)
        .collect()
}

/// A message the engine wrote to a session, as the worker reads it.
fn to_worker(m: v1::MasterMessage) -> Option<ToWorker> {
    use v1::master_message::Body;
    Some(match m.body? {
        Body::Welcome(_) => ToWorker::Welcome,
        Body::Start(s) => ToWorker::Start {
            attempt: AttemptId(s.attempt_id),
            task: TaskId(s.task_id),
            // The agent's own conversion from the wire.
            spec: match s.spec.map(TaskSpec::try_from) {
                Some(Ok(spec)) => Ok(spec),
                Some(Err(e)) => Err(format!("invalid task spec: {e}")),
                None => Err("start message without a task spec".into()),
            },
            gpu_ids: s.gpu_ids,
        },
        Body::Stop(s) => ToWorker::Stop {
            attempt: AttemptId(s.attempt_id),
            reason: s.reason,
        },
        Body::Ack(a) => ToWorker::Ack { seq: a.seq },
    })
}

impl Master {
    pub fn new(state: State, store: SharedStore, now: Millis, wall_offset: i64) -> Master {
        let start = Now {
            wall_ms: now + wall_offset,
            mono: Duration::ZERO,
        };
        Master {
            engine: Engine::new(state, store, RECONCILE_EVERY, start),
            boot: now,
            wall_offset,
            inbox: Vec::new(),
            links: BTreeMap::new(),
            submits: Vec::new(),
            audits: Vec::new(),
            heartbeats: Vec::new(),
            paused_until: 0,
            holding_output: false,
            next_tick: now,
        }
    }

    pub fn wall(&self, now: Millis) -> Millis {
        now + self.wall_offset
    }

    fn clock(&self, now: Millis) -> Now {
        Now {
            wall_ms: self.wall(now),
            mono: Duration::from_millis((now - self.boot) as u64),
        }
    }

    pub fn state(&self) -> &State {
        self.engine.state()
    }

    pub fn session_of(&self, w: usize) -> Option<u64> {
        self.engine.session_of(&worker_id(w))
    }

    /// A message arrives on a session (as `worker_link.rs` turns it into
    /// a command).
    pub fn receive(&mut self, m: ToMaster, now: Millis) {
        match m {
            ToMaster::Hello {
                worker,
                session,
                hello,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let (reply, answer) = oneshot::channel();
                let held = running(&hello.held);
                self.inbox.push(Command::Hello {
                    hello: *hello,
                    session,
                    tx,
                    heartbeat_interval_ms: super::worker::HEARTBEAT_MS,
                    reply,
                });
                self.links.insert(
                    (worker, session),
                    Link {
                        rx,
                        hello: Some(answer),
                        held,
                        last_alive: now,
                    },
                );
            }
            ToMaster::Heartbeat {
                worker,
                session,
                held,
                draining,
            } => {
                if !self.links.contains_key(&(worker, session)) {
                    return; // the stream is gone on this side
                }
                self.heartbeats.push((worker, session, running(&held)));
                self.inbox.push(Command::Heartbeat {
                    worker: worker_id(worker),
                    session,
                    held,
                    draining,
                });
            }
            ToMaster::Report {
                worker,
                session,
                seq,
                report,
            } => {
                let Some(link) = self.links.get_mut(&(worker, session)) else {
                    return;
                };
                if now - link.last_alive >= ALIVE_EVERY_MS {
                    link.last_alive = now;
                    self.inbox.push(Command::Alive {
                        worker: worker_id(worker),
                        session,
                    });
                }
                self.inbox.push(Command::Report {
                    worker: worker_id(worker),
                    seq,
                    held: report,
                });
            }
            ToMaster::Closed { worker, session } => {
                if self.links.remove(&(worker, session)).is_some() {
                    self.inbox.push(Command::Disconnected {
                        worker: worker_id(worker),
                        session,
                    });
                }
            }
        }
    }

    pub fn submit(&mut self, spec: TaskSpec) {
        let (reply, answer) = oneshot::channel();
        self.inbox.push(Command::Submit {
            spec,
            queue_anyway: false,
            reply,
        });
        self.submits.push(answer);
    }

    pub fn cancel(&mut self, task: TaskId) {
        let (reply, _) = oneshot::channel();
        self.inbox.push(Command::Cancel { task, reply });
    }

    /// An operator drains a worker (by name): it takes no new work.
    pub fn drain(&mut self, name: String) {
        let (reply, _) = oneshot::channel();
        self.inbox.push(Command::Admin {
            op: berth_master::engine::AdminOp::Drain,
            name,
            reply,
        });
    }

    /// A dry-run reconciliation: the records must equal the state.
    pub fn audit(&mut self) {
        let (reply, answer) = oneshot::channel();
        self.inbox.push(Command::Reconcile {
            dry_run: true,
            reply,
        });
        self.audits.push(answer);
    }

    /// Make the next step run now (the world judges right after one).
    pub fn tick_now(&mut self) {
        self.next_tick = 0;
    }

    /// One step of the engine thread at `now`, if it is not stalled and
    /// has something to do or its tick is due.
    pub fn step(&mut self, now: Millis) -> Result<StepOut, String> {
        let mut out = StepOut::default();
        if now < self.paused_until {
            return Ok(out);
        }
        if self.holding_output {
            self.holding_output = false;
            self.flush(&mut out);
        }
        if self.inbox.is_empty() && now < self.next_tick {
            return Ok(out);
        }
        self.next_tick = now + TICK_MS;
        let failures_before = self.engine.health().commit_failures();
        let clock = self.clock(now);
        self.engine
            .step(&mut self.inbox, clock)
            .map_err(|e| format!("the engine stopped on a store fault: {e}"))?;
        out.stepped = true;
        out.commit_failures = self.engine.health().commit_failures() - failures_before;
        let committed = out.commit_failures == 0;
        for (w, s, held) in self.heartbeats.drain(..) {
            if committed && self.engine.session_of(&worker_id(w)) == Some(s) {
                out.held.push((w, s, held));
            }
        }
        for mut answer in self.submits.drain(..) {
            if let Ok(Ok(Ok(id))) = answer.try_recv() {
                out.acked.push(id);
            }
        }
        for mut answer in self.audits.drain(..) {
            if let Ok(Ok(Ok(report))) = answer.try_recv() {
                out.audits.push(report);
            }
        }
        if !self.holding_output {
            self.flush(&mut out);
        }
        Ok(out)
    }

    /// Answer settled hellos and put what the engine wrote to each session
    /// on the network, as the gRPC layer streams it.
    fn flush(&mut self, out: &mut StepOut) {
        let mut gone = Vec::new();
        for (&(w, s), link) in self.links.iter_mut() {
            if let Some(answer) = &mut link.hello {
                match answer.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => continue,
                    Ok(Ok(Ok(()))) => {
                        link.hello = None;
                        out.held.push((w, s, std::mem::take(&mut link.held)));
                    }
                    // Refused: the stream never opens (`worker_link.rs`:
                    // retryable refusals are ABORTED, the others end the
                    // agent; an unavailable engine is retried).
                    Ok(Ok(Err(e))) => {
                        let why = e.to_string();
                        out.sent.push(Msg::ToWorker(
                            w,
                            s,
                            if e.is_retryable() {
                                ToWorker::Unavailable(why)
                            } else {
                                ToWorker::Refused(why)
                            },
                        ));
                        gone.push((w, s));
                        continue;
                    }
                    Ok(Err(e)) => {
                        out.sent
                            .push(Msg::ToWorker(w, s, ToWorker::Unavailable(e.to_string())));
                        gone.push((w, s));
                        continue;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        out.sent.push(Msg::ToWorker(
                            w,
                            s,
                            ToWorker::Unavailable("the engine dropped the hello".into()),
                        ));
                        gone.push((w, s));
                        continue;
                    }
                }
            }
            loop {
                match link.rx.try_recv() {
                    Ok(m) => {
                        if let Some(m) = to_worker(m) {
                            out.sent.push(Msg::ToWorker(w, s, m));
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        out.sent.push(Msg::ToWorker(w, s, ToWorker::Closed));
                        gone.push((w, s));
                        break;
                    }
                }
            }
        }
        for k in gone {
            self.links.remove(&k);
        }
    }
}
