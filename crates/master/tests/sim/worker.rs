//! A simulated worker machine running the product's own agent core
//! (`berth_worker::agent::core::AgentCore`): every decision about attempts
//! is the core's. Simulated here is only what lies outside the agent:
//!
//! * the disk: attempt folders and tombstones, in memory; they survive an
//!   agent crash and a machine crash, but not a machine crash that loses
//!   the disk;
//! * the processes (a simulated driver): each runs for the time its command
//!   says, some ignore SIGTERM until SIGKILL, and all die with the machine
//!   (without recording an exit status);
//! * the clocks: the agent's monotonic clock starts at its own start, the
//!   machine's wall clock has an offset of its own;
//! * the session: a hello over the simulated network, welcomed, refused,
//!   or given up when its connection dies; lost on a partition or a master
//!   crash.
//!
//! This file performs the core's actions and feeds it what happens, like
//! `worker/src/agent/mod.rs` does with real folders and drivers.

use super::net::{Msg, ToMaster, ToWorker, parse_sim_command, worker_id, worker_total};
use super::rng::Rng;
use berth_core::{AttemptId, Millis, Resources, TaskId};
use berth_master::state::WorkerHello;
use berth_proto::HeldReport;
use berth_worker::agent::core::{
    Action, AgentCore, CoreConfig, Ended, Event, Found, Limit, Message, Reattach, StartOrder,
};
use berth_worker::attempt_dir::Meta;
use berth_worker::driver::Signal;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The master's heartbeat interval, as its welcome says.
pub const HEARTBEAT_MS: u64 = 1_000;
/// A hello not welcomed within this is given up (the connection's
/// keepalive: 10 s, then 5 s for the answer). Longer than any delay on the
/// network, so a hello given up on never arrives after the next one.
const WELCOME_TIMEOUT_MS: Millis = 15_000;
/// The agent's tick.
const TICK_MS: Millis = 100;
const STOP_GRACE_MS: u64 = 500;

/// One attempt folder.
#[derive(Debug, Clone)]
pub struct Folder {
    pub meta: Meta,
    pub exit: Option<i32>,
    pub failed: Option<String>,
    pub stopped: bool,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Deadline on the machine's wall clock, and the limit.
    pub limit: Option<(i64, u64)>,
    /// The task's `--stop-after-disconnect`, and whether it fired.
    pub disconnect_ms: Option<u64>,
    pub disconnected: bool,
}

impl Folder {
    fn new(meta: Meta) -> Folder {
        Folder {
            meta,
            exit: None,
            failed: None,
            stopped: false,
            timed_out: false,
            cancelled: false,
            limit: None,
            disconnect_ms: None,
            disconnected: false,
        }
    }

    fn ended(&self) -> Ended {
        Ended {
            exit: self.exit,
            failed: self.failed.clone(),
            lost: None,
        }
    }
}

/// A task's process, under its supervisor.
#[derive(Debug, Clone)]
pub struct Proc {
    pub task: TaskId,
    pub resources: Resources,
    /// The GPUs the master gave it (`BERTH_GPU_IDS` for a real task).
    pub gpu_ids: Vec<u32>,
    pub ends_at: Millis,
    pub exit: i32,
    pub ignores_term: bool,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    session: u64,
    welcomed: bool,
    dialed_at: Millis,
}

#[derive(Debug)]
struct Agent {
    core: AgentCore,
    /// Where its monotonic clock starts.
    boot: Millis,
    link: Option<Link>,
    next_tick: Millis,
}

#[derive(Debug)]
pub struct Machine {
    pub index: usize,
    pub total: Resources,
    pub folders: BTreeMap<AttemptId, Folder>,
    pub tombstones: BTreeSet<AttemptId>,
    pub procs: BTreeMap<AttemptId, Proc>,
    agent: Option<Agent>,
    /// The wall clock is the simulation's time plus this.
    wall_offset: i64,
    /// What went wrong on this machine (the world fails the run).
    pub violations: Vec<String>,
    /// Attempts reported cancelled before they started.
    pub stopped_before_start: u64,
    /// Attempts whose refusal was seen (its result is resent until acked).
    refused: BTreeSet<AttemptId>,
    /// Its capacity was lowered under processes that still run: they may
    /// use more than its total until enough of them end.
    pub lowered: bool,
    /// Until then, its agent is dead (not just cut off) or just restarted
    /// after being dead: nobody was there to stop an at-most-once task on
    /// time, and a restarted agent stops it at once (within its grace).
    pub lapsed_until: Millis,
    /// When its agent last heard from the master (the `DATA_DIR/contact`
    /// file's time), read by an agent at start.
    contact_at: Option<Millis>,
}

impl Machine {
    pub fn new(index: usize, now: Millis, rng: &mut Rng) -> Machine {
        let mut m = Machine {
            index,
            total: worker_total(index),
            folders: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            procs: BTreeMap::new(),
            agent: None,
            wall_offset: rng.range(0, 1 << 40) as i64,
            violations: Vec::new(),
            stopped_before_start: 0,
            refused: BTreeSet::new(),
            lowered: false,
            lapsed_until: 0,
            contact_at: None,
        };
        m.start_agent(now, rng);
        m
    }

    pub fn agent_up(&self) -> bool {
        self.agent.is_some()
    }

    /// The agent's session, when it has been welcomed on one.
    pub fn welcomed_session(&self) -> Option<u64> {
        let l = self.agent.as_ref()?.link?;
        l.welcomed.then_some(l.session)
    }

    /// The agent holds this attempt (running, or its result unacknowledged).
    /// With the agent down: its folder is there.
    pub fn holds(&self, a: AttemptId) -> bool {
        match &self.agent {
            Some(ag) => ag.core.holds(a),
            None => self.folders.contains_key(&a),
        }
    }

    /// The attempts the agent has running.
    pub fn core_running(&self) -> BTreeSet<AttemptId> {
        self.agent
            .iter()
            .flat_map(|a| a.core.running().map(|(id, _)| id))
            .collect()
    }

    /// Does the agent (when up) believe exactly the processes that run do?
    pub fn agent_knows_its_processes(&self) -> bool {
        self.agent.as_ref().is_none_or(|a| {
            a.core
                .running()
                .map(|(id, _)| id)
                .eq(self.procs.keys().copied())
        })
    }

    /// Is the agent running `a`?
    pub fn core_runs(&self, a: AttemptId) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|ag| ag.core.running().any(|(id, _)| id == a))
    }

    /// The agent starts: it reads its folders and re-attaches.
    pub fn start_agent(&mut self, now: Millis, rng: &mut Rng) {
        let core = AgentCore::new(CoreConfig {
            name: format!("w{}", self.index),
            total: self.total,
            drivers: vec![berth_core::DriverKind::Process],
            stop_grace_ms: STOP_GRACE_MS,
            drain_on_exit: false,
            seed: rng.next_u64(),
        });
        let mut core = core;
        // As the shell does from `DATA_DIR/contact` (none: 0).
        core.heard_ago(self.contact_at.map_or(0, |t| (now - t) as u64));
        if self.lapsed_until == Millis::MAX {
            self.lapsed_until = now + STOP_GRACE_MS as Millis + 2 * TICK_MS;
        }
        self.agent = Some(Agent {
            core,
            boot: now,
            link: None,
            next_tick: now,
        });
        let wall = self.wall(now);
        let found = self
            .folders
            .iter()
            .map(|(id, f)| Found {
                attempt: *id,
                meta: Some(f.meta),
                ended: f.ended(),
                stopped: f.stopped,
                timed_out: f.timed_out,
                cancelled: f.cancelled,
                limit: f.limit.map(|(deadline, limit_ms)| Limit {
                    deadline: (deadline - wall).max(0) as u64,
                    limit_ms,
                }),
                disconnect_ms: f.disconnect_ms,
                disconnected: f.disconnected,
            })
            .collect();
        self.feed(now, Event::Recovered(found), rng, &mut Vec::new());
    }

    /// The machine loses part of its CPU (`per_mille` of it is left); the
    /// agent, started next, offers only that.
    pub fn lower_capacity(&mut self, per_mille: u64) {
        self.total.cpu_millis = (self.total.cpu_millis * per_mille / 1_000).max(1_000);
        self.lowered = true;
    }

    /// The agent process is killed; tasks keep running.
    pub fn crash_agent(&mut self) {
        self.agent = None;
        self.lapsed_until = Millis::MAX;
    }

    /// The machine restarts: every process dies without an exit status.
    pub fn crash_machine(&mut self) {
        self.crash_agent();
        self.procs.clear();
    }

    /// The machine restarts and its disk is gone too (a tmpfs).
    pub fn crash_machine_losing_disk(&mut self) {
        self.crash_machine();
        self.folders.clear();
        self.tombstones.clear();
    }

    /// The session broke (a partition, the master crashed).
    pub fn lose_session(&mut self, now: Millis, why: &str, rng: &mut Rng) {
        if let Some(a) = &mut self.agent
            && a.link.take().is_some()
        {
            self.feed(
                now,
                Event::SessionLost {
                    why: why.into(),
                    refusal: None,
                },
                rng,
                &mut Vec::new(),
            );
        }
    }

    fn wall(&self, now: Millis) -> i64 {
        now + self.wall_offset
    }

    /// Processes end; the agent ticks and gives up on unanswered hellos.
    pub fn step(&mut self, now: Millis, rng: &mut Rng, out: &mut Vec<Msg>) {
        let ended: Vec<AttemptId> = self
            .procs
            .iter()
            .filter(|(_, p)| p.ends_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let p = self.procs.remove(&id).expect("ended process");
            if let Some(f) = self.folders.get_mut(&id) {
                f.exit = Some(p.exit);
            }
            // The driver's exit channel.
            if self.agent.is_some() {
                let ended = self.folders.get(&id).map(Folder::ended).unwrap_or_default();
                self.feed(now, Event::Ended { attempt: id, ended }, rng, out);
            }
        }
        let Some(a) = &mut self.agent else { return };
        if let Some(l) = a.link
            && !l.welcomed
            && now - l.dialed_at > WELCOME_TIMEOUT_MS
        {
            a.link = None;
            let lost = Event::SessionLost {
                why: "no welcome".into(),
                refusal: None,
            };
            self.feed(now, lost, rng, out);
        }
        let Some(a) = &mut self.agent else { return };
        if now >= a.next_tick {
            a.next_tick = now + TICK_MS;
            // The shell's poll: attempts whose process is gone.
            let gone: Vec<AttemptId> = a
                .core
                .running()
                .map(|(id, _)| id)
                .filter(|id| !self.procs.contains_key(id))
                .collect();
            for id in gone {
                let ended = self.folders.get(&id).map(Folder::ended).unwrap_or_default();
                self.feed(now, Event::Ended { attempt: id, ended }, rng, out);
            }
            self.feed(now, Event::Tick, rng, out);
        }
    }

    /// A message from the master for `session`.
    pub fn receive(
        &mut self,
        session: u64,
        m: ToWorker,
        now: Millis,
        rng: &mut Rng,
        out: &mut Vec<Msg>,
    ) {
        let Some(a) = &mut self.agent else { return };
        let Some(link) = &mut a.link else { return };
        if link.session != session {
            return; // not for the current session
        }
        let event = match m {
            ToWorker::Welcome if !link.welcomed => {
                link.welcomed = true;
                Event::Welcomed {
                    heartbeat_ms: HEARTBEAT_MS,
                }
            }
            ToWorker::Welcome => return,
            ToWorker::Closed => {
                a.link = None;
                Event::SessionLost {
                    why: "the master closed the session".into(),
                    refusal: None,
                }
            }
            ToWorker::Refused(why) => {
                a.link = None;
                Event::SessionLost {
                    why: why.clone(),
                    refusal: Some(why),
                }
            }
            ToWorker::Unavailable(why) => {
                a.link = None;
                Event::SessionLost { why, refusal: None }
            }
            ToWorker::Start {
                attempt,
                task,
                spec,
                gpu_ids,
            } => Event::Start {
                order: StartOrder {
                    attempt,
                    task,
                    spec,
                    gpu_ids,
                },
                tombstoned: self.tombstones.contains(&attempt),
            },
            ToWorker::Stop { attempt, reason } => Event::Stop {
                attempt,
                reason,
                tombstoned: self.tombstones.contains(&attempt),
            },
            ToWorker::Ack { seq } => {
                self.contact_at = Some(now);
                Event::Ack { seq }
            }
        };
        self.feed(now, event, rng, out);
    }

    /// Hand one event to the core and perform what it decides (and the
    /// answers some actions produce).
    fn feed(&mut self, now: Millis, event: Event, rng: &mut Rng, out: &mut Vec<Msg>) {
        let mut events = VecDeque::from([event]);
        let mut actions = Vec::new();
        while let Some(e) = events.pop_front() {
            let Some(a) = &mut self.agent else { return };
            a.core.step((now - a.boot) as u64, e, &mut actions);
            for action in actions.drain(..) {
                if let Some(answer) = self.perform(now, action, rng, out) {
                    events.push_back(answer);
                }
            }
        }
    }

    fn send(&mut self, m: Message, out: &mut Vec<Msg>) {
        let Some(session) = self.welcomed_session() else {
            return;
        };
        let worker = self.index;
        out.push(Msg::ToMaster(match m {
            Message::Heartbeat { held, draining } => {
                self.check_reports(&held);
                ToMaster::Heartbeat {
                    worker,
                    session,
                    held,
                    draining,
                }
            }
            Message::Update { seq, report } => {
                self.check_reports(std::slice::from_ref(&report));
                ToMaster::Report {
                    worker,
                    session,
                    seq,
                    report,
                }
            }
        }));
    }

    /// A worker never refuses what the master placed on it: the master's
    /// ledger and the worker's admission use the same arithmetic.
    fn check_reports(&mut self, reports: &[HeldReport]) {
        for r in reports {
            if r.reason.contains("worker admission refused") && self.refused.insert(r.attempt_id) {
                self.violations.push(format!(
                    "w{} refused attempt {}: {}",
                    self.index, r.attempt_id, r.reason
                ));
            }
        }
    }

    fn perform(
        &mut self,
        now: Millis,
        action: Action,
        rng: &mut Rng,
        out: &mut Vec<Msg>,
    ) -> Option<Event> {
        match action {
            Action::Connect(hello) => {
                let session = rng.next_u64() >> 1;
                if let Some(a) = &mut self.agent {
                    a.link = Some(Link {
                        session,
                        welcomed: false,
                        dialed_at: now,
                    });
                }
                // As the agent's shell builds it (`worker/src/agent/mod.rs`).
                let max_attempt_id = hello
                    .held
                    .iter()
                    .map(|h| h.attempt_id.0)
                    .chain(self.tombstones.last().map(|a| a.0))
                    .max()
                    .unwrap_or(0);
                let i = self.index;
                out.push(Msg::ToMaster(ToMaster::Hello {
                    worker: i,
                    session,
                    hello: Box::new(WorkerHello {
                        held: hello.held,
                        draining: hello.draining,
                        max_attempt_id,
                        stop_grace_ms: STOP_GRACE_MS,
                        ..WorkerHello::process_only(&worker_id(i).0, &format!("w{i}"), self.total)
                    }),
                }));
            }
            Action::Send(m) => self.send(m, out),
            Action::Launch {
                attempt,
                meta,
                spec,
                limit_ms,
                gpu_ids,
            } => {
                let mut f = Folder::new(meta);
                f.limit = limit_ms.map(|l| (self.wall(now) + l as i64, l));
                f.disconnect_ms = spec.stop_after_disconnect_ms;
                self.folders.insert(attempt, f);
                if rng.chance(10) {
                    return Some(Event::Launched {
                        attempt,
                        result: Err("simulated: the driver could not start it".into()),
                    });
                }
                let (run_ms, exit) = parse_sim_command(&spec.command);
                self.procs.insert(
                    attempt,
                    Proc {
                        task: meta.task,
                        resources: meta.resources,
                        gpu_ids,
                        ends_at: now + run_ms,
                        exit,
                        ignores_term: rng.chance(200),
                    },
                );
                return Some(Event::Launched {
                    attempt,
                    result: Ok(()),
                });
            }
            Action::Prepare { attempt, meta } => {
                self.folders.insert(attempt, Folder::new(meta));
            }
            Action::Reattach { attempt, .. } => {
                let outcome = if self.procs.contains_key(&attempt) {
                    Reattach::Running
                } else {
                    Reattach::Ended(self.folders.get(&attempt).map(Folder::ended)?)
                };
                return Some(Event::Reattached { attempt, outcome });
            }
            Action::Discard { attempt } => {
                self.folders.remove(&attempt);
            }
            Action::Signal {
                attempt, signal, ..
            } => {
                if let Some(p) = self.procs.get_mut(&attempt) {
                    match signal {
                        Signal::Term if p.ignores_term => {}
                        Signal::Term => {
                            let at = now + rng.range(1, 300) as Millis;
                            if at < p.ends_at {
                                p.ends_at = at;
                                p.exit = 143;
                            }
                        }
                        Signal::Kill => {
                            p.ends_at = now;
                            p.exit = 137;
                        }
                    }
                }
            }
            Action::MarkStopped { attempt } => {
                if let Some(f) = self.folders.get_mut(&attempt) {
                    f.stopped = true;
                }
            }
            Action::MarkDisconnected { attempt } => {
                if let Some(f) = self.folders.get_mut(&attempt) {
                    f.disconnected = true;
                }
            }
            Action::MarkTimedOut { attempt } => {
                if let Some(f) = self.folders.get_mut(&attempt) {
                    f.timed_out = true;
                }
            }
            Action::RecordFailed { attempt, reason } => {
                if let Some(f) = self.folders.get_mut(&attempt) {
                    f.failed = Some(reason);
                }
            }
            Action::RecordExit { attempt, code } => {
                if let Some(f) = self.folders.get_mut(&attempt) {
                    f.exit = Some(code);
                }
            }
            Action::RecordCancelled { attempt } => {
                let mut f = Folder::new(Meta {
                    task: TaskId(0),
                    resources: Resources::ZERO,
                    driver: berth_core::DriverKind::Process,
                });
                f.stopped = true;
                f.cancelled = true;
                self.folders.insert(attempt, f);
                self.stopped_before_start += 1;
            }
            Action::ShipLog { .. } => {}
            Action::Deliver { attempt, report } => {
                let seq = berth_proto::final_seq(attempt);
                self.send(Message::Update { seq, report }, out);
            }
            Action::Forget { attempt } => {
                self.folders.remove(&attempt);
                self.tombstones.insert(attempt);
            }
            Action::Exit(e) => {
                self.violations
                    .push(format!("the agent of w{} ended: {e:?}", self.index));
                self.agent = None;
            }
        }
        None
    }
}
