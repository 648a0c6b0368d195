//! A deterministic simulation of one master (the real `State`, over a
//! `MemStore` standing in for its file) and several simulated workers over a
//! faulty simulated network. Everything is driven by one seed: the same
//! seed replays the same run, step for step.
//!
//! Faults injected during the fault phase: worker agent crash and restart
//! (tasks keep running), machine crash (tasks die), master crash and restart
//! from its store, dropped / duplicated / delayed (so reordered) messages,
//! and partitions of single workers. Then faults stop, everything is healed
//! and time passes, and the end state is checked.

pub mod net;
pub mod rng;
pub mod worker;

use berth_core::{Millis, Resources, TaskId, TaskSpec, WorkerId, WorkerState};
use berth_master::state::{Effects, Outbound, State, StateConfig, WorkerHello};
use berth_store::{MemStore, Store};
use net::{Faults, Msg, Net, ToMaster, ToWorker, sim_command, worker_id, worker_total};
use rng::Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use worker::SimWorker;

const STEP_MS: Millis = 20;
const TICK_MS: Millis = 250;
const FAULT_PHASE_MS: Millis = 60_000;
const QUIET_PHASE_MS: Millis = 90_000;

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u64,
    pub submitted: usize,
    pub messages: u64,
    pub dropped: u64,
    pub master_crashes: u32,
    pub agent_crashes: u32,
    pub machine_crashes: u32,
    pub partitions: u32,
    pub audits: u64,
}

pub struct World {
    seed: u64,
    rng: Rng,
    now: Millis,
    net: Net,
    state: Option<State>,
    store: MemStore,
    sessions: HashMap<usize, u64>,
    master_back_at: Millis,
    workers: Vec<SimWorker>,
    agent_back_at: Vec<Millis>,
    partition_ends: Vec<Millis>,
    acked: BTreeSet<TaskId>,
    next_tick: Millis,
    config: StateConfig,
    trace: VecDeque<String>,
    pub stats: Stats,
}

fn index_of(w: &WorkerId) -> usize {
    w.0.trim_start_matches("node-")
        .parse()
        .expect("sim worker id")
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let n = rng.range(2, 5) as usize;
        let config = StateConfig {
            heartbeat_ttl_ms: 5_000,
            down_grace_ms: 1_000,
            start_resend_ms: 2_000,
            // Some seeds spread, some binpack; blocked tasks get reserved
            // capacity after a few seconds.
            placement: berth_scheduler::PlaceConfig {
                strategy: if seed.is_multiple_of(2) {
                    berth_core::Strategy::Binpack
                } else {
                    berth_core::Strategy::Spread
                },
                starvation_ms: 5_000,
            },
            require_registration: false,
        };
        World {
            seed,
            rng,
            now: 0,
            net: Net::default(),
            state: Some(State::new(config)),
            store: MemStore::new(),
            sessions: HashMap::new(),
            master_back_at: 0,
            workers: (0..n).map(SimWorker::new).collect(),
            agent_back_at: vec![0; n],
            partition_ends: vec![0; n],
            acked: BTreeSet::new(),
            next_tick: 0,
            config,
            trace: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn note(&mut self, s: String) {
        if self.trace.len() == 200 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={} {s}", self.now));
    }

    fn fail(&self, what: String) -> String {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        format!(
            "simulation seed {} failed at t={}ms: {what}\nreplay: BERTH_SIM_SEED={} cargo test -p berth-master --test simulation -- --nocapture\nlast events:\n  {}",
            self.seed,
            self.now,
            self.seed,
            trace.join("\n  ")
        )
    }

    /// Commit the effects durably, then send the messages.
    fn commit_and_route(&mut self, fx: Effects) {
        self.store.commit(&fx.writes).expect("mem store commit");
        for o in fx.outbound {
            let (w, m) = match o {
                Outbound::Start {
                    worker,
                    attempt,
                    task,
                    spec,
                    ..
                } => (
                    index_of(&worker),
                    ToWorker::Start {
                        attempt,
                        task,
                        spec,
                    },
                ),
                Outbound::Stop {
                    worker, attempt, ..
                } => (index_of(&worker), ToWorker::Stop { attempt }),
                Outbound::Ack { worker, seq } => (index_of(&worker), ToWorker::Ack { seq }),
            };
            if let Some(&s) = self.sessions.get(&w) {
                self.net
                    .send(&mut self.rng, self.now, Msg::ToWorker(w, s, m));
            }
        }
    }

    fn master_receive(&mut self, m: ToMaster) {
        let now = self.now;
        if std::env::var("BERTH_SIM_VERBOSE").is_ok() {
            eprintln!("t={now} master <- {m:?}");
        }
        let Some(st) = self.state.as_mut() else {
            return;
        };
        let mut fx = Effects::default();
        let mut first: Vec<Msg> = Vec::new();
        match m {
            ToMaster::Hello {
                worker,
                session,
                held,
            } => {
                let h = WorkerHello {
                    id: worker_id(worker),
                    name: format!("w{worker}"),
                    total: worker_total(worker),
                    drivers: vec!["process".into()],
                    gpus: vec![],
                    held,
                    draining: false,
                    labels: vec![],
                    max_attempt_id: 0,
                    stop_grace_ms: 0,
                };
                match st.hello(h, now, &mut fx) {
                    Ok(()) => {
                        self.sessions.insert(worker, session);
                        first.push(Msg::ToWorker(worker, session, ToWorker::Welcome));
                    }
                    Err(e) => {
                        first.push(Msg::ToWorker(worker, session, ToWorker::Closed));
                        self.trace.push_back(format!("hello refused: {e}"));
                    }
                }
            }
            ToMaster::Heartbeat {
                worker,
                session,
                held,
            } => {
                if self.sessions.get(&worker) != Some(&session) {
                    first.push(Msg::ToWorker(worker, session, ToWorker::Closed));
                } else if st
                    .heartbeat(&worker_id(worker), &held, false, now, &mut fx)
                    .is_err()
                {
                    self.sessions.remove(&worker);
                    first.push(Msg::ToWorker(worker, session, ToWorker::Closed));
                }
            }
            ToMaster::Report {
                worker,
                seq,
                report,
            } => {
                st.report(&worker_id(worker), seq, &report, now, &mut fx);
            }
        }
        self.store.commit(&fx.writes).expect("mem store commit");
        for m in first {
            self.net.send(&mut self.rng, now, m);
        }
        self.commit_and_route(Effects {
            writes: vec![],
            outbound: fx.outbound,
        });
    }

    fn master_tick(&mut self) -> Result<(), String> {
        let now = self.now;
        let Some(st) = self.state.as_mut() else {
            return Ok(());
        };
        let mut fx = Effects::default();
        let down = st.tick(now, &mut fx);
        st.schedule(now, &mut fx);
        for w in down {
            let i = index_of(&w);
            self.note(format!("master declared w{i} down"));
            if let Some(s) = self.sessions.remove(&i) {
                self.net
                    .send(&mut self.rng, now, Msg::ToWorker(i, s, ToWorker::Closed));
            }
        }
        self.commit_and_route(fx);
        // The periodic audit: the records must equal the state, always.
        if now % 5_000 < TICK_MS {
            let records = self.store.live_attempts().expect("records");
            let mut fx = Effects::default();
            let report = self
                .state
                .as_mut()
                .unwrap()
                .reconcile(false, &records, now, &mut fx);
            if !report.fixes.is_empty() {
                return Err(self.fail(format!("reconcile found drift: {report:?}")));
            }
        }
        self.check_nothing_left_unplaced()
    }

    /// Right after a scheduling round no queued task fits on a worker that
    /// takes work: a round that was skipped (or missed a task) is a bug.
    fn check_nothing_left_unplaced(&self) -> Result<(), String> {
        let Some(st) = &self.state else { return Ok(()) };
        for id in st.queue() {
            let reason = st.wait_reason_at(id, self.now);
            if reason == "about to be placed" {
                return Err(self.fail(format!(
                    "task {id} fits a worker but was left queued by a scheduling round"
                )));
            }
        }
        Ok(())
    }

    fn client(&mut self, submit_per_mille: u64) {
        let now = self.now;
        if self.state.is_none() {
            return;
        }
        if self.rng.chance(submit_per_mille) {
            // Mostly short tasks; some outlive the whole run, so a stale copy
            // that nobody stops is still there when the end state is checked.
            let run_ms = if self.rng.chance(100) {
                self.rng.range(30_000, 300_000)
            } else {
                self.rng.range(50, 4_000)
            };
            let exit = if self.rng.chance(800) {
                0
            } else {
                self.rng.range(1, 3) as i32
            };
            let spec = TaskSpec::process(
                sim_command(run_ms, exit),
                Resources {
                    cpu_millis: self.rng.range(250, 4_000),
                    memory_bytes: self.rng.range(0, 2_048) << 20,
                    storage_bytes: 0,
                    gpus: 0,
                },
            );
            let mut fx = Effects::default();
            let st = self.state.as_mut().unwrap();
            if let Ok(id) = st.submit(spec, false, now, &mut fx) {
                self.commit_and_route(fx);
                self.acked.insert(id);
                self.stats.submitted += 1;
            }
        }
        if self.rng.chance(3) && !self.acked.is_empty() {
            let ids: Vec<TaskId> = self.acked.iter().copied().collect();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            let mut fx = Effects::default();
            if self
                .state
                .as_mut()
                .unwrap()
                .cancel(id, now, &mut fx)
                .is_ok()
            {
                self.note(format!("cancel task {id}"));
                self.commit_and_route(fx);
            }
        }
    }

    fn inject_faults(&mut self) {
        let now = self.now;
        let n = self.workers.len();
        // Master crash.
        if self.state.is_some() && self.rng.chance(1) {
            self.note("MASTER CRASH".into());
            self.state = None;
            self.sessions.clear();
            self.net.drop_to_master();
            for w in 0..n {
                self.net.drop_to_worker(w);
                self.workers[w].lose_session();
            }
            self.master_back_at = now + self.rng.range(200, 5_000) as Millis;
            self.stats.master_crashes += 1;
        }
        let w = self.rng.below(n as u64) as usize;
        if self.workers[w].agent_up && self.rng.chance(2) {
            if self.rng.chance(100) {
                self.note(format!("MACHINE CRASH w{w}, attempt folders lost"));
                self.workers[w].crash_machine_losing_disk();
                self.stats.machine_crashes += 1;
            } else if self.rng.chance(300) {
                self.note(format!("MACHINE CRASH w{w}"));
                self.workers[w].crash_machine(now);
                self.stats.machine_crashes += 1;
            } else {
                self.note(format!("AGENT CRASH w{w}"));
                self.workers[w].crash_agent();
                self.stats.agent_crashes += 1;
            }
            self.net.drop_to_worker(w);
            // Back within the TTL sometimes, after being declared down other times.
            self.agent_back_at[w] = now + self.rng.range(200, 12_000) as Millis;
        }
        if !self.net.partitioned.contains(&w) && self.rng.chance(1) {
            self.note(format!("PARTITION w{w}"));
            self.net.partitioned.insert(w);
            self.workers[w].lose_session();
            self.partition_ends[w] = now + self.rng.range(500, 12_000) as Millis;
            self.stats.partitions += 1;
        }
    }

    fn heal(&mut self, force: bool) {
        let now = self.now;
        if self.state.is_none() && (force || now >= self.master_back_at) {
            let snap = self.store.load().expect("load");
            self.state = Some(State::from_snapshot(snap, self.config, now));
            self.note("master restarted from its store".into());
        }
        for w in 0..self.workers.len() {
            if !self.workers[w].agent_up && (force || now >= self.agent_back_at[w]) {
                self.workers[w].agent_up = true;
                self.note(format!("agent w{w} restarted"));
            }
            if self.net.partitioned.contains(&w) && (force || now >= self.partition_ends[w]) {
                self.net.partitioned.remove(&w);
                self.note(format!("partition of w{w} healed"));
            }
        }
    }

    fn step(&mut self, faults: bool) -> Result<(), String> {
        self.stats.steps += 1;
        for m in self.net.due(self.now) {
            match m {
                Msg::ToMaster(m) => self.master_receive(m),
                Msg::ToWorker(w, s, m) => {
                    if std::env::var("BERTH_SIM_VERBOSE").is_ok() {
                        eprintln!("t={} w{w}/{s} <- {m:?}", self.now);
                    }
                    let mut out = Vec::new();
                    self.workers[w].receive(s, m, self.now, &mut out);
                    for (m, _) in out {
                        self.net.send(&mut self.rng, self.now, m);
                    }
                }
            }
        }
        if self.now >= self.next_tick {
            self.next_tick = self.now + TICK_MS;
            self.master_tick()?;
        }
        for w in 0..self.workers.len() {
            let mut out = Vec::new();
            self.workers[w].step(self.now, &mut self.rng, &mut out);
            for (m, _) in out {
                self.net.send(&mut self.rng, self.now, m);
            }
        }
        if faults {
            self.client(40);
            self.inject_faults();
        }
        self.heal(false);
        self.check_step()?;
        self.now += STEP_MS;
        Ok(())
    }

    /// Invariants after every step.
    fn check_step(&self) -> Result<(), String> {
        let Some(st) = &self.state else { return Ok(()) };
        st.check_invariants().map_err(|e| self.fail(e))?;
        for id in &self.acked {
            if st.task(*id).is_none() {
                return Err(self.fail(format!("acknowledged task {id} is gone")));
            }
        }
        Ok(())
    }

    /// After faults stop and time passes: everything acknowledged is done or
    /// running on an up worker, nothing live sits on a down worker, and no
    /// worker runs an attempt the master does not consider live.
    fn check_settled(&self) -> Result<(), String> {
        let st = self.state.as_ref().expect("master up");
        for id in &self.acked {
            let t = st.task(*id).unwrap();
            if t.state.is_terminal() {
                continue;
            }
            let Some(a) = st.live_attempt(*id) else {
                // Still queued: only acceptable if it cannot be placed now
                // (no room on an up worker, retry backoff, or the room is
                // kept for an older task).
                let why = st.wait_reason_at(*id, self.now);
                if why == "about to be placed" || t.state != berth_core::TaskState::Queued {
                    let attempts: Vec<_> = st.attempts_of(*id).collect();
                    return Err(self.fail(format!(
                        "task {id} is {} after the quiet phase although it fits ({why}); attempts {attempts:?}",
                        t.state
                    )));
                }
                continue;
            };
            if !st.worker(&a.worker_id).is_some_and(|w| w.state.is_up()) {
                return Err(self.fail(format!("task {id} is live on a worker that is not up")));
            }
        }
        for a in st.attempts().filter(|a| a.state.holds_resources()) {
            if st.worker(&a.worker_id).map(|w| w.state) == Some(WorkerState::Down) {
                return Err(self.fail(format!(
                    "attempt {} is live on down worker {}",
                    a.id, a.worker_id
                )));
            }
            // The phantom allocation: the master counts an attempt its
            // worker does not hold (a result in flight is still held).
            let w = &self.workers[index_of(&a.worker_id)];
            let start_in_flight =
                a.state == berth_core::AttemptState::Assigned && self.now - a.created_ms < 1_000;
            if !start_in_flight && !w.attempts.contains_key(&a.id) {
                return Err(self.fail(format!(
                    "phantom allocation: attempt {} is {} on w{} at the master, but that worker does not hold it",
                    a.id, a.state, w.index
                )));
            }
        }
        for w in &self.workers {
            for (aid, _) in w.running() {
                let live = st.attempt(*aid).is_some_and(|a| {
                    a.state.holds_resources() && a.worker_id == worker_id(w.index)
                });
                if !live {
                    return Err(self.fail(format!(
                        "w{} still runs attempt {aid}, which the master does not consider live",
                        w.index
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn run(mut self) -> Result<Stats, String> {
        // Faults vary per seed: some runs are calm, some are stormy.
        self.net.faults = Faults {
            drop_per_mille: self.rng.range(0, 60),
            dup_per_mille: self.rng.range(0, 40),
            long_delay_per_mille: self.rng.range(0, 50),
        };
        while self.now < FAULT_PHASE_MS {
            self.step(true)?;
        }
        self.net.faults = Faults::default();
        self.heal(true);
        let end = self.now + QUIET_PHASE_MS;
        while self.now < end {
            self.step(false)?;
        }
        // Judge the end state right after a scheduling round.
        self.master_tick()?;
        self.check_settled()?;
        self.stats.audits = self.state.as_ref().unwrap().counters().reconcile_runs;
        self.stats.messages = self.net.sent;
        self.stats.dropped = self.net.dropped;
        Ok(self.stats)
    }
}
