//! A deterministic simulation of one master (the real `State`, over a
//! `MemStore` standing in for its file) and several worker machines, each
//! running the real agent core (`berth_worker::agent::core`), over a faulty
//! simulated network. Only the network, the clocks, the disks, the machines
//! and the driver's processes are simulated (`worker.rs`). Everything is
//! driven by one seed: the same seed replays the same run, step for step.
//!
//! Faults injected during the fault phase: worker agent crash and restart
//! (tasks keep running), machine crash (tasks die; the disk may go too),
//! master crash and restart from its store, dropped / duplicated / delayed
//! (so reordered) messages, and partitions of single workers. Then faults
//! stop, everything is healed and time passes, and the end state is checked.
//!
//! Checked after every step: the master's own invariants; on every machine,
//! the processes running never use more than its total, the agent knows
//! exactly the processes that run, and every process runs an attempt the
//! master placed there; no task has two attempts whose processes run at
//! once unless the master had declared the older one's worker down; no
//! worker ever refuses an attempt for lack of room; and whenever nothing is
//! in flight between the master and a connected worker, the two agree on
//! what that worker runs.

pub mod net;
pub mod rng;
pub mod worker;

use berth_core::{AttemptId, Millis, Resources, TaskId, TaskSpec, WorkerId, WorkerState};
use berth_master::state::{Effects, Outbound, State, StateConfig, WorkerHello};
use berth_store::{MemStore, Store, StoreFault};
use net::{Faults, Msg, Net, ToMaster, ToWorker, sim_command, worker_id, worker_total};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use worker::Machine;

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
    /// Attempts the agents reported cancelled before they started.
    pub stopped_before_start: u64,
    /// Steps at which a worker and the master were checked to agree.
    pub agreement_checks: u64,
    /// Batches the store refused (disk full, busy, I/O error); each undone
    /// by the product's own rebuild (`State::rebuilt_after_failed_commit`).
    pub commit_failures: u64,
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
    /// While the store refuses writes: when it takes them again.
    store_back_at: Millis,
    workers: Vec<Machine>,
    /// Attempts that were live on a worker when the master declared it
    /// down: the only ones whose task may run twice at once.
    orphaned: BTreeSet<AttemptId>,
    agent_back_at: Vec<Millis>,
    partition_ends: Vec<Millis>,
    acked: BTreeSet<TaskId>,
    /// Per worker: the session and the attempts its last hello or
    /// heartbeat processed by the master said it runs.
    last_held: HashMap<usize, (u64, Vec<AttemptId>)>,
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
        let workers = (0..n).map(|i| Machine::new(i, 0, &mut rng)).collect();
        World {
            seed,
            rng,
            now: 0,
            net: Net::default(),
            state: Some(State::new(config)),
            store: MemStore::new(),
            sessions: HashMap::new(),
            master_back_at: 0,
            store_back_at: 0,
            workers,
            orphaned: BTreeSet::new(),
            agent_back_at: vec![0; n],
            partition_ends: vec![0; n],
            acked: BTreeSet::new(),
            last_held: HashMap::new(),
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

    /// Commit a batch's writes. When the store refuses them, the batch is
    /// undone as the engine undoes it: the state rebuilt from the records
    /// with what only the process knows carried over. Returns whether it
    /// was committed.
    fn try_commit(&mut self, writes: &[berth_store::Write]) -> bool {
        if writes.is_empty() {
            return true;
        }
        match self.store.commit(writes) {
            Ok(()) => true,
            Err(e) => {
                let snap = self.store.load().expect("records can be read");
                let before = self.state.take().expect("a master commits");
                self.state = Some(State::rebuilt_after_failed_commit(snap, &before, self.now));
                self.stats.commit_failures += 1;
                self.note(format!("commit failed ({e}); batch undone"));
                false
            }
        }
    }

    /// Commit the effects durably, then send the messages (none of them
    /// when the commit failed).
    fn commit_and_route(&mut self, fx: Effects) -> bool {
        if !self.try_commit(&fx.writes) {
            return false;
        }
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
                    worker,
                    attempt,
                    reason,
                } => (index_of(&worker), ToWorker::Stop { attempt, reason }),
                Outbound::Ack { worker, seq } => (index_of(&worker), ToWorker::Ack { seq }),
            };
            if let Some(&s) = self.sessions.get(&w) {
                self.net
                    .send(&mut self.rng, self.now, Msg::ToWorker(w, s, m));
            }
        }
        true
    }

    fn master_receive(&mut self, m: ToMaster) {
        let now = self.now;
        if std::env::var("BERTH_SIM_VERBOSE").is_ok() {
            eprintln!("t={now} master <- {m:?}");
        }
        let Some(st) = self.state.as_mut() else {
            // Nobody listens: a hello's connection is refused.
            if let ToMaster::Hello {
                worker, session, ..
            } = m
            {
                self.net.notify_closed(worker, session, now + 1);
            }
            return;
        };
        let mut fx = Effects::default();
        let mut first: Vec<Msg> = Vec::new();
        let running = |held: &[berth_proto::HeldReport]| -> Vec<AttemptId> {
            held.iter()
                .filter(|h| h.state.holds_resources())
                .map(|h| h.attempt_id)
                .collect()
        };
        match m {
            ToMaster::Hello {
                worker,
                session,
                held,
            } => {
                let h = WorkerHello {
                    held,
                    ..WorkerHello::process_only(
                        &worker_id(worker).0,
                        &format!("w{worker}"),
                        worker_total(worker),
                    )
                };
                let reported = running(&h.held);
                // The engine's rule, from the product: a hello under a node
                // id whose session is open and alive is refused.
                let connected = self.sessions.contains_key(&worker);
                let holder = st.live_holder(&h.id, connected, now, worker::HEARTBEAT_MS);
                let r = match holder {
                    Some(name) => Err(berth_master::state::ReportError::NodeIdInUse(
                        h.id.clone(),
                        name,
                    )),
                    None => st.hello(h, now, &mut fx),
                };
                match r {
                    Ok(()) => {
                        self.sessions.insert(worker, session);
                        self.last_held.insert(worker, (session, reported));
                        first.push(Msg::ToWorker(worker, session, ToWorker::Welcome));
                    }
                    Err(e) => {
                        first.push(Msg::ToWorker(
                            worker,
                            session,
                            ToWorker::Refused(e.to_string()),
                        ));
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
                } else {
                    self.last_held.insert(worker, (session, running(&held)));
                }
            }
            ToMaster::Report {
                worker,
                seq,
                report,
                ..
            } => {
                st.report(&worker_id(worker), seq, &report, now, &mut fx);
            }
        }
        if !self.try_commit(&fx.writes) {
            // Nothing of the batch happened: a welcome becomes a refusal
            // (the engine answers the hello with the cause), acks are not
            // sent, the worker resends.
            for m in first {
                let m = match m {
                    Msg::ToWorker(w, s, ToWorker::Welcome) => {
                        if self.sessions.get(&w) == Some(&s) {
                            self.sessions.remove(&w);
                        }
                        Msg::ToWorker(w, s, ToWorker::Closed)
                    }
                    m => m,
                };
                self.net.send(&mut self.rng, now, m);
            }
            return;
        }
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
        let live_before: BTreeMap<WorkerId, Vec<AttemptId>> = st
            .workers()
            .map(|w| (w.id.clone(), st.ledger().attempts_on(&w.id).collect()))
            .collect();
        let down = st.tick(now, &mut fx);
        st.schedule(now, &mut fx);
        for w in down {
            let i = index_of(&w);
            self.note(format!("master declared w{i} down"));
            if let Some(live) = live_before.get(&w) {
                self.orphaned.extend(live.iter().copied());
            }
            if let Some(s) = self.sessions.remove(&i) {
                self.net
                    .send(&mut self.rng, now, Msg::ToWorker(i, s, ToWorker::Closed));
            }
        }
        if !self.commit_and_route(fx) {
            return Ok(());
        }
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
            let mut spec = TaskSpec::process(
                sim_command(run_ms, exit),
                Resources {
                    cpu_millis: self.rng.range(250, 4_000),
                    memory_bytes: self.rng.range(0, 2_048) << 20,
                    storage_bytes: 0,
                    gpus: 0,
                },
            );
            // Some have a time limit, which the agent enforces.
            if self.rng.chance(50) {
                spec.timeout_ms = Some(self.rng.range(200, 5_000));
            }
            // Some are at most once: never two attempts at the same time.
            if self.rng.chance(150) {
                spec.stop_after_disconnect_ms = Some(self.rng.range(1_000, 6_000));
            }
            let mut fx = Effects::default();
            let st = self.state.as_mut().unwrap();
            if let Ok(id) = st.submit(spec, false, now, &mut fx)
                && self.commit_and_route(fx)
            {
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
                self.workers[w].lose_session(now, "the master went away", &mut self.rng);
            }
            self.master_back_at = now + self.rng.range(200, 5_000) as Millis;
            self.stats.master_crashes += 1;
        }
        // The master's disk fills up (or fails) for a while.
        if self.state.is_some() && self.store.failing.is_none() && self.rng.chance(1) {
            let fault =
                [StoreFault::Full, StoreFault::Busy, StoreFault::Io][self.rng.below(3) as usize];
            self.note(format!("STORE REFUSES WRITES ({})", fault.as_str()));
            self.store.fail_writes(Some(fault));
            self.store_back_at = now + self.rng.range(100, 3_000) as Millis;
        }
        let w = self.rng.below(n as u64) as usize;
        if self.workers[w].agent_up() && self.rng.chance(2) {
            if self.rng.chance(100) {
                self.note(format!("MACHINE CRASH w{w}, attempt folders lost"));
                self.workers[w].crash_machine_losing_disk();
                self.stats.machine_crashes += 1;
            } else if self.rng.chance(300) {
                self.note(format!("MACHINE CRASH w{w}"));
                self.workers[w].crash_machine();
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
            self.workers[w].lose_session(now, "partitioned", &mut self.rng);
            self.partition_ends[w] = now + self.rng.range(500, 12_000) as Millis;
            self.stats.partitions += 1;
        }
    }

    fn heal(&mut self, force: bool) {
        let now = self.now;
        if self.store.failing.is_some() && (force || now >= self.store_back_at) {
            self.store.fail_writes(None);
            self.note("the store takes writes again".into());
        }
        if self.state.is_none() && (force || now >= self.master_back_at) {
            let snap = self.store.load().expect("load");
            self.state = Some(State::from_snapshot(snap, self.config, now));
            self.note("master restarted from its store".into());
        }
        for w in 0..self.workers.len() {
            if !self.workers[w].agent_up() && (force || now >= self.agent_back_at[w]) {
                self.workers[w].start_agent(now, &mut self.rng);
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
                    self.workers[w].receive(s, m, self.now, &mut self.rng, &mut out);
                    for m in out {
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
            for m in out {
                self.net.send(&mut self.rng, self.now, m);
            }
        }
        if faults {
            self.client(40);
            self.inject_faults();
        }
        self.heal(false);
        self.check_step()?;
        self.check_machines()?;
        self.now += STEP_MS;
        Ok(())
    }

    /// The worker side, after every step.
    fn check_machines(&mut self) -> Result<(), String> {
        if let Some(m) = self.workers.iter().find(|m| !m.violations.is_empty()) {
            // What the worker runs, and what the master makes of each.
            let views: Vec<String> = m
                .procs
                .keys()
                .map(
                    |aid| match self.state.as_ref().and_then(|st| st.attempt(*aid)) {
                        Some(a) => format!("{aid}: {} ({})", a.state, a.reason),
                        None => format!("{aid}: not in the master's memory"),
                    },
                )
                .collect();
            return Err(self.fail(format!(
                "{}; w{} runs [{}]",
                m.violations[0],
                m.index,
                views.join(", ")
            )));
        }
        let mut runs: Vec<(TaskId, AttemptId, usize)> = Vec::new();
        for m in &self.workers {
            let used: Resources = m.procs.values().map(|p| p.resources).sum();
            if !used.le(&m.total) {
                return Err(self.fail(format!(
                    "w{} runs processes using {used:?}, more than its total {:?}",
                    m.index, m.total
                )));
            }
            if !m.agent_knows_its_processes() {
                let procs: Vec<&AttemptId> = m.procs.keys().collect();
                return Err(self.fail(format!(
                    "the agent of w{} believes {:?} run, but the processes are {procs:?}",
                    m.index,
                    m.core_running()
                )));
            }
            for (aid, p) in &m.procs {
                runs.push((p.task, *aid, m.index));
                // Records of finished attempts may stay in the store only.
                if let Some(st) = &self.state
                    && let Some(a) = st.attempt(*aid)
                    && (a.worker_id != worker_id(m.index) || a.task_id != p.task)
                {
                    return Err(self.fail(format!(
                        "w{} runs attempt {aid} of task {}, which the master placed on {} for task {}",
                        m.index, p.task, a.worker_id, a.task_id
                    )));
                }
            }
        }
        runs.sort_unstable();
        for same in runs.chunk_by(|a, b| a.0 == b.0) {
            let task = same[0].0;
            let r: Vec<(AttemptId, usize)> = same.iter().map(|(_, a, w)| (*a, *w)).collect();
            let older = &r[..r.len() - 1];
            // Two attempts may run at once only while the older one is
            // `unknown` at the master: its worker was declared down and has
            // not yet come back to have it stopped. (While the master itself
            // is down, its last word counts.)
            // An at-most-once task never runs twice at the same time.
            let at_most_once = self.state.as_ref().is_some_and(|st| {
                st.task(task)
                    .is_some_and(|t| t.spec.stop_after_disconnect_ms.is_some())
            });
            let excused = |a: &AttemptId| {
                !at_most_once
                    && match &self.state {
                        Some(st) => st
                            .attempt(*a)
                            .is_some_and(|r| r.state == berth_core::AttemptState::Unknown),
                        None => self.orphaned.contains(a),
                    }
            };
            if let Some((aid, w)) = older.iter().find(|(a, _)| !excused(a)) {
                return Err(self.fail(format!(
                    "task {task} runs attempts {r:?} at once, though {}",
                    if at_most_once {
                        "it is at most once (--stop-after-disconnect)".to_string()
                    } else {
                        format!("the master does not show w{w}'s {aid} as unknown")
                    }
                )));
            }
        }
        self.check_agreement()
    }

    /// Master and worker agree wherever that is well defined: the worker
    /// has a welcomed session the master knows, and nothing is in flight
    /// between them (a message on its way, or one lost for good, leaves
    /// them apart until the next heartbeat).
    ///
    /// * No phantom allocation: every attempt the master counts on the
    ///   worker, once past `assigned`, is held by it (running, or its
    ///   result not yet acknowledged).
    /// * Nothing runs unknown: whatever the worker's last heartbeat (or
    ///   hello) said it runs, and still runs, is live at the master on that
    ///   worker, or the master knows the worker runs attempts to stop.
    fn check_agreement(&mut self) -> Result<(), String> {
        let Some(st) = &self.state else { return Ok(()) };
        let mut checked = 0;
        for m in &self.workers {
            let i = m.index;
            let Some(session) = m.welcomed_session() else {
                continue;
            };
            let wid = worker_id(i);
            if self.sessions.get(&i) != Some(&session)
                || self.net.partitioned.contains(&i)
                || self.net.in_flight_for(i)
                || !st.worker(&wid).is_some_and(|w| w.state.is_up())
            {
                continue;
            }
            checked += 1;
            for aid in st.ledger().attempts_on(&wid) {
                let a = st.attempt(aid).expect("ledger attempt exists");
                if a.state != berth_core::AttemptState::Assigned && !m.holds(aid) {
                    return Err(self.fail(format!(
                        "phantom allocation: attempt {aid} is {} on w{i} at the master, but w{i} does not hold it",
                        a.state
                    )));
                }
            }
            let Some((s, reported)) = self.last_held.get(&i) else {
                continue;
            };
            if *s != session {
                continue;
            }
            for aid in reported.iter().filter(|a| m.core_runs(**a)) {
                let live = st
                    .attempt(*aid)
                    .is_some_and(|a| a.state.holds_resources() && a.worker_id == wid);
                if !live && st.stale_on(&wid) == 0 {
                    return Err(self.fail(format!(
                        "w{i} runs attempt {aid} and said so, but the master neither counts it nor asks for it to stop"
                    )));
                }
            }
        }
        self.stats.agreement_checks += checked;
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
            if !start_in_flight && !w.holds(a.id) {
                return Err(self.fail(format!(
                    "phantom allocation: attempt {} is {} on w{} at the master, but that worker does not hold it",
                    a.id, a.state, w.index
                )));
            }
        }
        for w in &self.workers {
            for aid in w.procs.keys() {
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
        self.stats.stopped_before_start = self.workers.iter().map(|w| w.stopped_before_start).sum();
        self.stats.messages = self.net.sent;
        self.stats.dropped = self.net.dropped;
        Ok(self.stats)
    }
}
