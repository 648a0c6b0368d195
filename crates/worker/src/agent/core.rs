//! The agent's decisions, without I/O: the attempt table and every rule
//! about it — admission, stops and their grace, time limits, results and
//! the durable outbox, heartbeats, when to (re)connect. Like the master's
//! `State` (and raft-rs's `RawNode`), it takes [`Event`]s with the time and
//! returns [`Action`]s; it owns no socket, file, process or clock. The shell
//! (`agent::Agent`) performs the actions with the real drivers and attempt
//! folders; the deterministic simulation (`master/tests/sim`) performs them
//! with a simulated network, disk and driver. Time is the shell's monotonic
//! clock in milliseconds.
//!
//! An attempt's phases in the table:
//!
//! ```text
//!  Start ──▶ Launching ──Launched ok──▶ Running ──Ended──▶ Finished ──Ack──▶ forgotten
//!    │           └──Launched err──────────────────────────▶   ▲              (tombstone)
//!    └── refused (bad spec, no driver, no room) ─────────────▶│
//!  Recovered ──▶ Reattaching ──Reattached──▶ Running | Finished
//!  Stop for an attempt not held ─▶ Finished (cancelled: stopped before it started)
//!
//!  Running: Stop or time limit ─▶ Term, then Kill once the stop grace is over
//! ```
//!
//! The outbox rule: a finished attempt's result stays in the table (and in
//! its folder) until the master acknowledges it; it is delivered after the
//! attempt's output files and whole log, again on every new session. A
//! hello lists every held attempt as running, so that a result is never
//! applied ahead of its log and files.

use crate::attempt_dir::Meta;
use crate::driver::Signal;
use berth_core::{AttemptId, AttemptState, DriverKind, Resources, TaskId, TaskSpec};
use berth_proto::{HeldReport, attempt_of_final_seq, final_seq, running_seq};
use std::collections::BTreeMap;

/// Milliseconds on the shell's monotonic clock.
pub type Millis = u64;

/// First wait before dialing again after a failed or lost session.
pub const DIAL_BACKOFF_MIN_MS: Millis = 100;
/// Longest wait between dials.
pub const DIAL_BACKOFF_MAX_MS: Millis = 2_000;
/// First wait after the master refused the name (held by a live worker
/// until its entry expires, after the heartbeat TTL).
pub const NAME_BACKOFF_MIN_MS: Millis = 500;
/// Longest wait after such a refusal.
pub const NAME_BACKOFF_MAX_MS: Millis = 10_000;
/// The master's words when the name is still held by a live worker.
pub const NAME_IN_USE: &str = "is already used by ready worker";
/// The reason of an attempt stopped before its start arrived.
pub const STOPPED_BEFORE_START: &str = "stopped before it started";

/// What the core needs to know about this worker.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The worker's name (in messages users read).
    pub name: String,
    /// What the machine offers: admission never goes beyond it.
    pub total: Resources,
    /// The drivers this agent has.
    pub drivers: Vec<DriverKind>,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace_ms: Millis,
    /// On shutdown, wait until everything held has finished and been
    /// acknowledged.
    pub drain_on_exit: bool,
    /// Seeds the jitter of reconnect delays.
    pub seed: u64,
}

/// A start order from the master.
#[derive(Debug, Clone)]
pub struct StartOrder {
    pub attempt: AttemptId,
    pub task: TaskId,
    /// The task, or why it could not be read (the attempt fails with it).
    pub spec: Result<TaskSpec, String>,
    pub gpu_ids: Vec<u32>,
}

/// What the driver recorded when an attempt ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// The exit status, if one was recorded.
    pub exit: Option<i32>,
    /// Why it could not start, if it could not.
    pub failed: Option<String>,
    /// Why it never ran although it was started (a container found never
    /// started after an agent crash): reported `lost`, so it is retried.
    pub lost: Option<String>,
}

/// A time limit: when it is reached (on the core's clock) and how long it
/// was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub deadline: Millis,
    pub limit_ms: u64,
}

/// One attempt folder found when the agent starts, as it reads.
#[derive(Debug, Clone)]
pub struct Found {
    pub attempt: AttemptId,
    /// `None`: no valid meta (the agent died while creating the folder,
    /// before anything ran in it).
    pub meta: Option<Meta>,
    pub ended: Ended,
    /// A stop was requested.
    pub stopped: bool,
    /// It was stopped for running past its limit.
    pub timed_out: bool,
    /// It was stopped before it started (it never ran).
    pub cancelled: bool,
    pub limit: Option<Limit>,
    /// The task's `--stop-after-disconnect`, in milliseconds.
    pub disconnect_ms: Option<u64>,
    /// It was stopped for want of the master.
    pub disconnected: bool,
}

/// What the driver says about an attempt it was asked to re-attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reattach {
    /// It runs; the driver watches it again.
    Running,
    /// It is gone; what its folder says.
    Ended(Ended),
    /// This agent has no driver of the attempt's kind.
    NoDriver,
}

/// What happens to the agent. An event lives for one step, so the size of
/// a start order's spec is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    /// The attempt folders found at start (first, once).
    Recovered(Vec<Found>),
    /// The answer to [`Action::Reattach`].
    Reattached {
        attempt: AttemptId,
        outcome: Reattach,
    },
    /// The master welcomed the hello: a session is open.
    Welcomed { heartbeat_ms: Millis },
    /// The session broke, or could not be opened. `refusal` is the
    /// master's reason when it refused the hello.
    SessionLost {
        why: String,
        refusal: Option<String>,
    },
    /// Start an attempt. `tombstoned`: this worker finished it long ago
    /// (the shell's tombstone file knows).
    Start { order: StartOrder, tombstoned: bool },
    /// Stop an attempt.
    Stop {
        attempt: AttemptId,
        reason: String,
        tombstoned: bool,
    },
    /// The master acknowledged the update with this sequence number.
    Ack { seq: u64 },
    /// The answer to [`Action::Launch`]: started, or why not.
    Launched {
        attempt: AttemptId,
        result: Result<(), String>,
    },
    /// The driver says the attempt is no longer running.
    Ended { attempt: AttemptId, ended: Ended },
    /// Delivering the result changed it (its output files could not be
    /// sent, or were over the limit): this is the result now.
    Amended {
        attempt: AttemptId,
        report: HeldReport,
    },
    /// Time passes (the shell ticks every 100 ms or so).
    Tick,
    /// Shutdown was asked for.
    Shutdown,
}

/// The hello that opens a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Every attempt held, each as running (a result follows its log and
    /// files on the new session, never ahead of them).
    pub held: Vec<HeldReport>,
    pub draining: bool,
}

/// A message for the master on the open session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Heartbeat {
        held: Vec<HeldReport>,
        draining: bool,
    },
    Update {
        seq: u64,
        report: HeldReport,
    },
}

/// How the agent ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shut down (and drained, if asked to).
    Done,
    /// The master refused this worker for good (a bad token, …).
    Refused(String),
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Dial the master and say this hello; answer with
    /// [`Event::Welcomed`] or [`Event::SessionLost`].
    Connect(Hello),
    /// Send on the open session.
    Send(Message),
    /// Create the attempt's folder (meta; the time limit), and start it
    /// with the driver; answer with [`Event::Launched`].
    Launch {
        attempt: AttemptId,
        meta: Meta,
        spec: Box<TaskSpec>,
        gpu_ids: Vec<u32>,
        limit_ms: Option<u64>,
    },
    /// Create the folder of an attempt that will not run (its failure is
    /// recorded next).
    Prepare { attempt: AttemptId, meta: Meta },
    /// Ask the driver to watch an attempt found at start; answer with
    /// [`Event::Reattached`].
    Reattach {
        attempt: AttemptId,
        driver: DriverKind,
    },
    /// Remove a folder that cannot be read.
    Discard { attempt: AttemptId },
    Signal {
        attempt: AttemptId,
        driver: DriverKind,
        signal: Signal,
    },
    /// Record in the folder that a stop was requested.
    MarkStopped { attempt: AttemptId },
    /// Record in the folder that the time limit stopped it.
    MarkTimedOut { attempt: AttemptId },
    /// Record in the folder that it was stopped because the master had not
    /// been heard from for its `--stop-after-disconnect`.
    MarkDisconnected { attempt: AttemptId },
    /// Record in the folder why it could not start.
    RecordFailed { attempt: AttemptId, reason: String },
    /// Record an exit status the driver could not.
    RecordExit { attempt: AttemptId, code: i32 },
    /// Create the folder of an attempt stopped before its start arrived,
    /// marked so (a later start is then ignored).
    RecordCancelled { attempt: AttemptId },
    /// Ship the attempt's log bytes not yet sent on this session (all of
    /// them when `whole`, else a tick's share).
    ShipLog { attempt: AttemptId, whole: bool },
    /// Deliver a result: seal and send the output files, the whole log,
    /// then `report` as the final update (sealing the files may fail the
    /// result: answer with [`Event::Amended`]). Without a session only the
    /// sealing happens.
    Deliver {
        attempt: AttemptId,
        report: HeldReport,
    },
    /// The master has the result: leave a tombstone and remove the folder.
    Forget { attempt: AttemptId },
    /// End the agent.
    Exit(Exit),
}

/// Where a stop of a running attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    /// SIGTERM sent; SIGKILL at `kill_at`.
    Term {
        kill_at: Millis,
    },
    Killed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Asked of the driver; its answer is next. Holds resources.
    Launching,
    /// Found at start; the driver's answer is next. Holds resources.
    Reattaching,
    Running(Stopping),
    /// Ended; the result waits for the master's ack.
    Finished(HeldReport),
}

#[derive(Debug, Clone)]
struct Entry {
    meta: Meta,
    phase: Phase,
    stopped: bool,
    timed_out: bool,
    cancelled: bool,
    limit: Option<Limit>,
    /// Stop it once the master has not been heard from for this long.
    disconnect_ms: Option<Millis>,
    disconnected: bool,
}

impl Entry {
    fn holds_resources(&self) -> bool {
        !matches!(self.phase, Phase::Finished(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No session; dial at `dial_at` (never, once the agent exits).
    Idle {
        dial_at: Millis,
    },
    Dialing,
    Open {
        next_heartbeat: Millis,
        every: Millis,
    },
}

/// The agent's attempt table and its rules. See the module doc.
#[derive(Debug)]
pub struct AgentCore {
    cfg: CoreConfig,
    table: BTreeMap<AttemptId, Entry>,
    link: Link,
    /// The next wait after a failed dial or a lost session.
    backoff: Millis,
    /// The next wait after the name was refused.
    name_backoff: Millis,
    draining: bool,
    exited: bool,
    rng: u64,
    now: Millis,
    /// When the master last proved it hears this worker (a welcome, or any
    /// ack): silence for `--stop-after-disconnect` counts from here. May be
    /// before the core's clock began (the agent restarted).
    heard_at: i64,
}

impl AgentCore {
    pub fn new(cfg: CoreConfig) -> AgentCore {
        let rng = cfg.seed ^ 0x9E37_79B9_7F4A_7C15;
        AgentCore {
            cfg,
            table: BTreeMap::new(),
            link: Link::Idle { dial_at: 0 },
            backoff: DIAL_BACKOFF_MIN_MS,
            name_backoff: NAME_BACKOFF_MIN_MS,
            draining: false,
            exited: false,
            rng,
            now: 0,
            heard_at: 0,
        }
    }

    /// The master was last heard from `ms` before now (known to the shell
    /// from before the agent started), so that a restart of the agent does
    /// not reset the silence of `--stop-after-disconnect` tasks.
    pub fn heard_ago(&mut self, ms: Millis) {
        self.heard_at = self.now as i64 - ms.min(i64::MAX as u64) as i64;
    }

    /// How long the master has not been heard from.
    pub fn silence(&self) -> Millis {
        (self.now as i64 - self.heard_at).max(0) as Millis
    }

    /// Apply one event at `now`, appending what to do to `out`.
    pub fn step(&mut self, now: Millis, event: Event, out: &mut Vec<Action>) {
        self.now = self.now.max(now);
        match event {
            Event::Recovered(found) => found.into_iter().for_each(|f| self.recovered(f, out)),
            Event::Reattached { attempt, outcome } => self.reattached(attempt, outcome, out),
            Event::Welcomed { heartbeat_ms } => self.welcomed(heartbeat_ms, out),
            Event::SessionLost { why, refusal } => self.session_lost(why, refusal, out),
            Event::Start { order, tombstoned } => self.start(order, tombstoned, out),
            Event::Stop {
                attempt,
                reason,
                tombstoned,
            } => self.stop(attempt, &reason, tombstoned, out),
            Event::Ack { seq } => {
                // Any ack proves the master hears us (heartbeats are acked
                // for exactly that).
                self.heard_at = now as i64;
                self.ack(seq, out)
            }
            Event::Launched { attempt, result } => self.launched(attempt, result, out),
            Event::Ended { attempt, ended } => self.ended(attempt, ended, out),
            Event::Amended { attempt, report } => {
                if let Some(Entry {
                    phase: Phase::Finished(r),
                    ..
                }) = self.table.get_mut(&attempt)
                {
                    *r = report;
                }
            }
            Event::Tick => self.tick(out),
            Event::Shutdown => self.shutdown(out),
        }
    }

    /// [`AgentCore::step`], returning the actions.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.step(now, event, &mut out);
        out
    }

    // ---- queries ------------------------------------------------------

    /// What the attempts that have not finished hold.
    pub fn allocated(&self) -> Resources {
        self.table
            .values()
            .filter(|e| e.holds_resources())
            .map(|e| e.meta.resources)
            .sum()
    }

    /// The attempts running (or starting), with their driver.
    pub fn running(&self) -> impl Iterator<Item = (AttemptId, DriverKind)> + '_ {
        self.table
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Running(_)))
            .map(|(id, e)| (*id, e.meta.driver))
    }

    /// Is the attempt in the table (running, or its result unacknowledged)?
    pub fn holds(&self, attempt: AttemptId) -> bool {
        self.table.contains_key(&attempt)
    }

    /// Every attempt held.
    pub fn held_ids(&self) -> impl Iterator<Item = AttemptId> + '_ {
        self.table.keys().copied()
    }

    /// The result of a finished attempt not yet acknowledged.
    pub fn report(&self, attempt: AttemptId) -> Option<&HeldReport> {
        match self.table.get(&attempt) {
            Some(Entry {
                phase: Phase::Finished(r),
                ..
            }) => Some(r),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Is a session open (welcomed and not lost)?
    pub fn is_open(&self) -> bool {
        matches!(self.link, Link::Open { .. })
    }

    /// The hello for a new session.
    pub fn hello(&self) -> Hello {
        Hello {
            held: self.table.keys().map(|id| running_report(*id)).collect(),
            draining: self.draining,
        }
    }

    /// Every attempt held, as the heartbeat reports it.
    pub fn held(&self) -> Vec<HeldReport> {
        self.table
            .iter()
            .map(|(id, e)| match &e.phase {
                Phase::Finished(r) => r.clone(),
                _ => running_report(*id),
            })
            .collect()
    }

    // ---- events -------------------------------------------------------

    fn send(&self, m: Message, out: &mut Vec<Action>) {
        if self.is_open() {
            out.push(Action::Send(m));
        }
    }

    fn send_final(&self, r: &HeldReport, out: &mut Vec<Action>) {
        self.send(
            Message::Update {
                seq: final_seq(r.attempt_id),
                report: r.clone(),
            },
            out,
        );
    }

    fn recovered(&mut self, f: Found, out: &mut Vec<Action>) {
        let Some(meta) = f.meta else {
            tracing::warn!(attempt = %f.attempt, "attempt folder without valid meta; removing it");
            out.push(Action::Discard { attempt: f.attempt });
            return;
        };
        let mut e = Entry {
            meta,
            phase: Phase::Reattaching,
            stopped: f.stopped,
            timed_out: f.timed_out,
            cancelled: f.cancelled,
            limit: f.limit,
            disconnect_ms: f.disconnect_ms,
            disconnected: f.disconnected,
        };
        if f.ended.exit.is_some() || f.ended.failed.is_some() || f.cancelled {
            e.phase = Phase::Finished(final_report(f.attempt, &e, &f.ended));
        } else {
            out.push(Action::Reattach {
                attempt: f.attempt,
                driver: meta.driver,
            });
        }
        self.table.insert(f.attempt, e);
    }

    fn reattached(&mut self, id: AttemptId, outcome: Reattach, out: &mut Vec<Action>) {
        let Some(e) = self.table.get_mut(&id) else {
            return;
        };
        if e.phase != Phase::Reattaching {
            return;
        }
        match outcome {
            Reattach::Running => e.phase = Phase::Running(Stopping::No),
            Reattach::Ended(ended) => {
                e.phase = Phase::Running(Stopping::No);
                self.ended(id, ended, out);
            }
            Reattach::NoDriver => {
                let meta = e.meta;
                let reason = format!(
                    "the agent restarted without its {} driver and could not re-attach",
                    meta.driver.as_str()
                );
                self.fail(id, meta, reason, out);
            }
        }
    }

    fn welcomed(&mut self, heartbeat_ms: Millis, out: &mut Vec<Action>) {
        self.heard_at = self.now as i64;
        let every = heartbeat_ms.max(50);
        self.link = Link::Open {
            next_heartbeat: self.now + every,
            every,
        };
        self.name_backoff = NAME_BACKOFF_MIN_MS;
        tracing::info!(held = self.table.len(), "session established");
        // Resynchronise: every log from its start, and every unacked
        // result after its attempt's files and log.
        for (id, e) in &self.table {
            match &e.phase {
                Phase::Finished(r) => out.push(Action::Deliver {
                    attempt: *id,
                    report: r.clone(),
                }),
                _ => out.push(Action::ShipLog {
                    attempt: *id,
                    whole: true,
                }),
            }
        }
    }

    fn session_lost(&mut self, why: String, refusal: Option<String>, out: &mut Vec<Action>) {
        if self.exited {
            return;
        }
        let was_open = self.is_open();
        match refusal {
            Some(reason) if reason.contains(NAME_IN_USE) => {
                // The name's old entry expires after the heartbeat TTL.
                let b = self.name_backoff;
                let wait = b / 2 + self.next_random() % (b / 2 + 1);
                self.name_backoff = (b * 2).min(NAME_BACKOFF_MAX_MS);
                tracing::warn!(%reason, retry_in_ms = wait, "the master refused this worker's name for now; retrying");
                self.link = Link::Idle {
                    dial_at: self.now + wait,
                };
            }
            Some(reason) => {
                self.exited = true;
                self.link = Link::Idle {
                    dial_at: Millis::MAX,
                };
                out.push(Action::Exit(Exit::Refused(reason)));
            }
            None => {
                if was_open {
                    self.backoff = DIAL_BACKOFF_MIN_MS;
                }
                tracing::warn!(reason = %why, "no session with the master; retrying");
                self.link = Link::Idle {
                    dial_at: self.now + self.backoff,
                };
                self.backoff = (self.backoff * 2).min(DIAL_BACKOFF_MAX_MS);
            }
        }
    }

    fn start(&mut self, s: StartOrder, tombstoned: bool, out: &mut Vec<Action>) {
        let id = s.attempt;
        if tombstoned || self.table.contains_key(&id) {
            return; // a resend; we have (or had) it
        }
        let (resources, driver) = match &s.spec {
            Ok(spec) => (spec.resources, spec.driver),
            Err(_) => (Resources::ZERO, DriverKind::Process),
        };
        let meta = Meta {
            task: s.task,
            resources,
            driver,
        };
        let spec = match s.spec {
            Ok(spec) => spec,
            Err(reason) => return self.refuse(id, meta, reason, out),
        };
        if !self.cfg.drivers.contains(&driver) {
            let reason = format!("worker {} has no {} driver", self.cfg.name, driver.as_str());
            return self.refuse(id, meta, reason, out);
        }
        if let Err(short) = resources.fits_within(&self.allocated(), &self.cfg.total) {
            return self.refuse(id, meta, format!("worker admission refused: {short}"), out);
        }
        let limit_ms = spec.timeout_ms;
        self.table.insert(
            id,
            Entry {
                meta,
                phase: Phase::Launching,
                stopped: false,
                timed_out: false,
                cancelled: false,
                limit: limit_ms.map(|l| Limit {
                    deadline: self.now.saturating_add(l),
                    limit_ms: l,
                }),
                disconnect_ms: spec.stop_after_disconnect_ms,
                disconnected: false,
            },
        );
        out.push(Action::Launch {
            attempt: id,
            meta,
            spec: Box::new(spec),
            gpu_ids: s.gpu_ids,
            limit_ms,
        });
    }

    /// A start that will not run: its folder, then its failure.
    fn refuse(&mut self, id: AttemptId, meta: Meta, reason: String, out: &mut Vec<Action>) {
        out.push(Action::Prepare { attempt: id, meta });
        self.fail(id, meta, reason, out);
    }

    /// The attempt failed to start: record it (kept in the folder, so a
    /// restarted agent reports the same) and report it.
    fn fail(&mut self, id: AttemptId, meta: Meta, reason: String, out: &mut Vec<Action>) {
        tracing::warn!(attempt = %id, %reason, "attempt failed to start");
        out.push(Action::RecordFailed {
            attempt: id,
            reason: reason.clone(),
        });
        let report = HeldReport {
            attempt_id: id,
            state: AttemptState::Failed,
            exit_code: None,
            reason,
        };
        self.send_final(&report, out);
        let e = self.table.entry(id).or_insert(Entry {
            meta,
            phase: Phase::Launching,
            stopped: false,
            timed_out: false,
            cancelled: false,
            limit: None,
            disconnect_ms: None,
            disconnected: false,
        });
        e.phase = Phase::Finished(report);
    }

    fn launched(&mut self, id: AttemptId, result: Result<(), String>, out: &mut Vec<Action>) {
        let Some(e) = self.table.get_mut(&id) else {
            return;
        };
        if e.phase != Phase::Launching {
            return;
        }
        match result {
            Ok(()) => {
                e.phase = Phase::Running(Stopping::No);
                self.send(
                    Message::Update {
                        seq: running_seq(id),
                        report: running_report(id),
                    },
                    out,
                );
            }
            Err(reason) => {
                let meta = e.meta;
                self.fail(id, meta, reason, out);
            }
        }
    }

    fn stop(&mut self, id: AttemptId, reason: &str, tombstoned: bool, out: &mut Vec<Action>) {
        let grace = self.cfg.stop_grace_ms;
        let now = self.now;
        match self.table.get_mut(&id) {
            Some(e) => match &e.phase {
                Phase::Running(Stopping::No) => {
                    tracing::info!(attempt = %id, %reason, "stopping attempt");
                    e.stopped = true;
                    e.phase = Phase::Running(Stopping::Term {
                        kill_at: now.saturating_add(grace),
                    });
                    out.push(Action::MarkStopped { attempt: id });
                    out.push(Action::Signal {
                        attempt: id,
                        driver: e.meta.driver,
                        signal: Signal::Term,
                    });
                }
                // Already stopping: the SIGKILL deadline stands.
                Phase::Running(_) | Phase::Launching | Phase::Reattaching => {}
                Phase::Finished(r) => {
                    let r = r.clone();
                    self.send_final(&r, out);
                }
            },
            None if tombstoned => {}
            None => {
                // The stop overtook (or replaced) a start still on its
                // way: the attempt never runs here, and the master gets a
                // terminal fact so it can release what it holds.
                tracing::info!(attempt = %id, %reason, "stopped before it started");
                let report = HeldReport {
                    attempt_id: id,
                    state: AttemptState::Cancelled,
                    exit_code: None,
                    reason: STOPPED_BEFORE_START.into(),
                };
                out.push(Action::RecordCancelled { attempt: id });
                self.send_final(&report, out);
                self.table.insert(
                    id,
                    Entry {
                        meta: Meta {
                            task: TaskId(0),
                            resources: Resources::ZERO,
                            driver: DriverKind::Process,
                        },
                        phase: Phase::Finished(report),
                        stopped: true,
                        timed_out: false,
                        cancelled: true,
                        limit: None,
                        disconnect_ms: None,
                        disconnected: false,
                    },
                );
            }
        }
    }

    fn ack(&mut self, seq: u64, out: &mut Vec<Action>) {
        let Some(id) = attempt_of_final_seq(seq) else {
            return;
        };
        if let Some(Entry {
            phase: Phase::Finished(_),
            ..
        }) = self.table.get(&id)
        {
            self.table.remove(&id);
            out.push(Action::Forget { attempt: id });
        }
    }

    /// A running attempt ended: record and deliver its result.
    fn ended(&mut self, id: AttemptId, ended: Ended, out: &mut Vec<Action>) {
        let Some(e) = self.table.get_mut(&id) else {
            return;
        };
        if !matches!(e.phase, Phase::Running(_)) {
            return;
        }
        let report = final_report(id, e, &ended);
        if ended.exit.is_none() {
            // Keep the outcome across a restart of the agent.
            out.push(Action::RecordExit {
                attempt: id,
                code: -1,
            });
        }
        tracing::info!(attempt = %id, state = %report.state, exit = ?ended.exit, "attempt ended");
        e.phase = Phase::Finished(report.clone());
        out.push(Action::Deliver {
            attempt: id,
            report,
        });
    }

    fn tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let grace = self.cfg.stop_grace_ms;
        let silence = self.silence();
        for (id, e) in &mut self.table {
            let Phase::Running(stopping) = e.phase else {
                continue;
            };
            match stopping {
                Stopping::No if e.disconnect_ms.is_some_and(|l| silence > l) => {
                    tracing::warn!(
                        attempt = %id,
                        silence_ms = silence,
                        "no word from the master for longer than the task's --stop-after-disconnect; stopping it"
                    );
                    e.disconnected = true;
                    let mark = Action::MarkDisconnected { attempt: *id };
                    begin_stop(*id, e, now.saturating_add(grace), mark, out);
                }
                Stopping::No if e.limit.is_some_and(|l| now >= l.deadline) => {
                    tracing::info!(attempt = %id, "time limit reached; stopping attempt");
                    e.timed_out = true;
                    let mark = Action::MarkTimedOut { attempt: *id };
                    begin_stop(*id, e, now.saturating_add(grace), mark, out);
                }
                Stopping::Term { kill_at } if now >= kill_at => {
                    tracing::warn!(attempt = %id, "grace period over; forcing it to stop");
                    e.phase = Phase::Running(Stopping::Killed);
                    out.push(Action::Signal {
                        attempt: *id,
                        driver: e.meta.driver,
                        signal: Signal::Kill,
                    });
                }
                _ => {}
            }
        }
        if self.is_open() {
            for (id, e) in &self.table {
                if matches!(e.phase, Phase::Running(_)) {
                    out.push(Action::ShipLog {
                        attempt: *id,
                        whole: false,
                    });
                }
            }
        }
        if self.draining && self.table.is_empty() && !self.exited {
            tracing::info!("drained: every attempt finished and acknowledged");
            self.exited = true;
            out.push(Action::Exit(Exit::Done));
            return;
        }
        match self.link {
            Link::Idle { dial_at } if now >= dial_at && !self.exited => {
                self.link = Link::Dialing;
                out.push(Action::Connect(self.hello()));
            }
            Link::Open {
                next_heartbeat,
                every,
            } if now >= next_heartbeat => {
                self.link = Link::Open {
                    next_heartbeat: now + every,
                    every,
                };
                out.push(Action::Send(Message::Heartbeat {
                    held: self.held(),
                    draining: self.draining,
                }));
            }
            _ => {}
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        if self.draining || self.exited {
            return;
        }
        if !self.cfg.drain_on_exit || self.table.is_empty() {
            let held = self.table.len();
            if held > 0 {
                tracing::info!(
                    held,
                    "agent stopping; its tasks keep running and are re-attached at the next start"
                );
            }
            self.exited = true;
            out.push(Action::Exit(Exit::Done));
            return;
        }
        tracing::info!(
            held = self.table.len(),
            "draining: no new work; exiting once every attempt has finished"
        );
        self.draining = true;
        self.send(
            Message::Heartbeat {
                held: self.held(),
                draining: true,
            },
            out,
        );
    }

    /// splitmix64: the jitter's only source of chance.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Stop a running attempt on the agent's own decision: record why in its
/// folder (`mark`), SIGTERM it, SIGKILL at `kill_at`.
fn begin_stop(id: AttemptId, e: &mut Entry, kill_at: Millis, mark: Action, out: &mut Vec<Action>) {
    e.phase = Phase::Running(Stopping::Term { kill_at });
    out.push(mark);
    out.push(Action::Signal {
        attempt: id,
        driver: e.meta.driver,
        signal: Signal::Term,
    });
}

fn running_report(id: AttemptId) -> HeldReport {
    HeldReport {
        attempt_id: id,
        state: AttemptState::Running,
        exit_code: None,
        reason: String::new(),
    }
}

/// The result of an attempt from what its driver recorded and what the
/// agent did to it.
fn final_report(id: AttemptId, e: &Entry, ended: &Ended) -> HeldReport {
    let exit = ended.exit;
    if let Some(reason) = &ended.failed {
        return HeldReport {
            attempt_id: id,
            state: AttemptState::Failed,
            exit_code: None,
            reason: reason.clone(),
        };
    }
    if let Some(reason) = &ended.lost {
        return HeldReport {
            attempt_id: id,
            state: AttemptState::Lost,
            exit_code: None,
            reason: reason.clone(),
        };
    }
    if e.cancelled {
        return HeldReport {
            attempt_id: id,
            state: AttemptState::Cancelled,
            exit_code: None,
            reason: STOPPED_BEFORE_START.into(),
        };
    }
    if e.disconnected {
        let limit = e.disconnect_ms.unwrap_or(0);
        return HeldReport {
            attempt_id: id,
            state: AttemptState::Disconnected,
            exit_code: exit,
            reason: format!(
                "stopped by its worker after {:.0}s without hearing from the master (--stop-after-disconnect)",
                limit as f64 / 1000.0
            ),
        };
    }
    if e.timed_out {
        let limit = e.limit.map_or(0, |l| l.limit_ms);
        return HeldReport {
            attempt_id: id,
            state: AttemptState::TimedOut,
            exit_code: exit,
            reason: format!("exceeded its time limit of {:.1}s", limit as f64 / 1000.0),
        };
    }
    let (state, reason) = match (exit, e.stopped) {
        (e, true) => (
            AttemptState::Cancelled,
            format!(
                "stopped on request{}",
                e.map(|c| format!(" (exit status {c})")).unwrap_or_default()
            ),
        ),
        (Some(0), false) => (AttemptState::Succeeded, String::new()),
        (Some(c), false) if c > 128 => (
            AttemptState::Failed,
            format!("killed by signal {}", c - 128),
        ),
        (Some(c), false) => (AttemptState::Failed, format!("exited with code {c}")),
        (None, false) => (
            AttemptState::Failed,
            "the task's supervisor ended without recording an exit status".to_string(),
        ),
    };
    HeldReport {
        attempt_id: id,
        state,
        exit_code: exit,
        reason,
    }
}

#[cfg(test)]
mod tests;
