//! A simulated worker agent with the real agent's rules: attempts outlive
//! the agent (a supervisor runs them), finished results are kept until the
//! master acks them, tombstones stop duplicate starts, a new session starts
//! with a hello listing everything held and resends unacked results.

use super::net::{Msg, ToMaster, ToWorker, parse_sim_command, worker_total};
use super::rng::Rng;
use berth_core::{AttemptId, AttemptState, Millis, Resources, TaskId};
use berth_proto::{HeldReport, attempt_of_final_seq, final_seq, running_seq};
use std::collections::{BTreeMap, BTreeSet};

const HEARTBEAT_MS: Millis = 1_000;
const HELLO_RETRY_MS: Millis = 1_000;
const STOP_TAKES_MS: Millis = 100;

#[derive(Debug, Clone)]
pub struct Local {
    #[allow(dead_code)]
    pub task: TaskId,
    pub resources: Resources,
    pub ends_at: Millis,
    pub exit: i32,
    pub stopping: bool,
    pub finished: Option<HeldReport>,
}

#[derive(Debug)]
pub struct SimWorker {
    pub index: usize,
    /// The agent process is running.
    pub agent_up: bool,
    /// Session we said hello on, and whether it was welcomed.
    pub session: Option<(u64, bool)>,
    hello_sent_at: Millis,
    next_heartbeat: Millis,
    pub attempts: BTreeMap<AttemptId, Local>,
    pub tombstones: BTreeSet<AttemptId>,
    /// Every (task, attempt) this worker ever started running.
    pub started: Vec<(TaskId, AttemptId)>,
}

impl SimWorker {
    pub fn new(index: usize) -> SimWorker {
        SimWorker {
            index,
            agent_up: true,
            session: None,
            hello_sent_at: Millis::MIN / 2,
            next_heartbeat: 0,
            attempts: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            started: Vec::new(),
        }
    }

    fn held(&self) -> Vec<HeldReport> {
        self.attempts
            .iter()
            .map(|(id, l)| {
                l.finished.clone().unwrap_or(HeldReport {
                    attempt_id: *id,
                    state: AttemptState::Running,
                    exit_code: None,
                    reason: String::new(),
                })
            })
            .collect()
    }

    /// Running attempts (the ones a real machine is spending resources on).
    pub fn running(&self) -> impl Iterator<Item = (&AttemptId, &Local)> {
        self.attempts.iter().filter(|(_, l)| l.finished.is_none())
    }

    /// The agent is killed; its tasks keep running under their supervisors.
    pub fn crash_agent(&mut self) {
        self.agent_up = false;
        self.session = None;
    }

    /// The whole machine restarts: running tasks die without an exit status.
    pub fn crash_machine(&mut self, now: Millis) {
        self.crash_agent();
        for (id, l) in self.attempts.iter_mut() {
            if l.finished.is_none() {
                l.finished = Some(HeldReport {
                    attempt_id: *id,
                    state: AttemptState::Failed,
                    exit_code: None,
                    reason: format!("machine restarted at {now}"),
                });
            }
        }
    }

    /// The machine restarts and its attempt folders are gone too (say, on
    /// a tmpfs): the worker comes back holding nothing.
    pub fn crash_machine_losing_disk(&mut self) {
        self.crash_agent();
        self.attempts.clear();
    }

    /// The session broke (partition noticed, or stream closed).
    pub fn lose_session(&mut self) {
        self.session = None;
    }

    pub fn step(&mut self, now: Millis, rng: &mut Rng, out: &mut Vec<(Msg, bool)>) {
        // Supervisors run whether or not the agent is up.
        for (id, l) in self.attempts.iter_mut() {
            if l.finished.is_none() && now >= l.ends_at {
                let (state, reason) = if l.stopping {
                    (AttemptState::Cancelled, "stopped on request".to_string())
                } else if l.exit == 0 {
                    (AttemptState::Succeeded, String::new())
                } else {
                    (AttemptState::Failed, format!("exited with code {}", l.exit))
                };
                let report = HeldReport {
                    attempt_id: *id,
                    state,
                    exit_code: Some(l.exit),
                    reason,
                };
                l.finished = Some(report.clone());
                if self.agent_up && matches!(self.session, Some((_, true))) {
                    out.push((
                        Msg::ToMaster(ToMaster::Report {
                            worker: self.index,
                            seq: final_seq(*id),
                            report,
                        }),
                        false,
                    ));
                }
            }
        }
        if !self.agent_up {
            return;
        }
        match self.session {
            None => self.hello(now, rng, out),
            Some((_, false)) if now - self.hello_sent_at > HELLO_RETRY_MS => {
                self.hello(now, rng, out)
            }
            Some((s, true)) if now >= self.next_heartbeat => {
                self.next_heartbeat = now + HEARTBEAT_MS;
                out.push((
                    Msg::ToMaster(ToMaster::Heartbeat {
                        worker: self.index,
                        session: s,
                        held: self.held(),
                    }),
                    false,
                ));
            }
            _ => {}
        }
    }

    fn hello(&mut self, now: Millis, rng: &mut Rng, out: &mut Vec<(Msg, bool)>) {
        let session = rng.next_u64() >> 1;
        self.session = Some((session, false));
        self.hello_sent_at = now;
        out.push((
            Msg::ToMaster(ToMaster::Hello {
                worker: self.index,
                session,
                held: self.held(),
            }),
            false,
        ));
    }

    pub fn receive(&mut self, session: u64, m: ToWorker, now: Millis, out: &mut Vec<(Msg, bool)>) {
        if !self.agent_up || self.session.map(|(s, _)| s) != Some(session) {
            return; // not for the current session
        }
        match m {
            ToWorker::Welcome => {
                self.session = Some((session, true));
                self.next_heartbeat = now + HEARTBEAT_MS;
                for (id, l) in &self.attempts {
                    if let Some(r) = &l.finished {
                        out.push((
                            Msg::ToMaster(ToMaster::Report {
                                worker: self.index,
                                seq: final_seq(*id),
                                report: r.clone(),
                            }),
                            false,
                        ));
                    }
                }
            }
            ToWorker::Closed => self.session = None,
            ToWorker::Start {
                attempt,
                task,
                spec,
            } => {
                if self.attempts.contains_key(&attempt) || self.tombstones.contains(&attempt) {
                    return;
                }
                let allocated: Resources = self.running().map(|(_, l)| l.resources).sum();
                let (run_ms, exit) = parse_sim_command(&spec.command);
                let mut local = Local {
                    task,
                    resources: spec.resources,
                    ends_at: now + run_ms,
                    exit,
                    stopping: false,
                    finished: None,
                };
                let report = if let Err(short) = spec
                    .resources
                    .fits_within(&allocated, &worker_total(self.index))
                {
                    let r = HeldReport {
                        attempt_id: attempt,
                        state: AttemptState::Failed,
                        exit_code: None,
                        reason: format!("worker admission refused: {short}"),
                    };
                    local.finished = Some(r.clone());
                    (final_seq(attempt), r)
                } else {
                    self.started.push((task, attempt));
                    (
                        running_seq(attempt),
                        HeldReport {
                            attempt_id: attempt,
                            state: AttemptState::Running,
                            exit_code: None,
                            reason: String::new(),
                        },
                    )
                };
                self.attempts.insert(attempt, local);
                out.push((
                    Msg::ToMaster(ToMaster::Report {
                        worker: self.index,
                        seq: report.0,
                        report: report.1,
                    }),
                    false,
                ));
            }
            ToWorker::Stop { attempt } => {
                if let Some(l) = self.attempts.get_mut(&attempt)
                    && l.finished.is_none()
                    && !l.stopping
                {
                    l.stopping = true;
                    l.ends_at = l.ends_at.min(now + STOP_TAKES_MS);
                }
            }
            ToWorker::Ack { seq } => {
                if let Some(id) = attempt_of_final_seq(seq)
                    && self.attempts.get(&id).is_some_and(|l| l.finished.is_some())
                {
                    self.attempts.remove(&id);
                    self.tombstones.insert(id);
                }
            }
        }
    }
}
