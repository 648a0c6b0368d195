//! A deterministic simulation of one master (the product's engine step,
//! `berth_master::engine::Engine`, over a `MemStore` standing in for its
//! file) and several worker machines, each running the product's agent
//! core (`berth_worker::agent::core`), over a faulty simulated network.
//! Only the network, the clocks, the disks, the machines and the driver's
//! processes are simulated (`net.rs`, `master.rs`, `worker.rs`).
//! Everything is driven by one seed: the same seed replays the same run,
//! step for step.
//!
//! Faults injected during the fault phase: worker agent crash and restart
//! (tasks keep running), sometimes with a lower capacity than its tasks
//! hold; machine crash (tasks die; the disk may go too); master crash and
//! restart from its store; master stalls (a pause, a slow fsync) and steps
//! of its wall clock; store commits refused (disk full, busy, I/O error);
//! dropped (the connection dies, noticed by the master or left half-open),
//! duplicated and delayed (so reordered) messages; partitions of single
//! workers; cancels; tasks that ignore SIGTERM, have time limits, are at
//! most once, pinned to a worker, or need a GPU; drains. Then faults stop, everything is
//! healed and time passes, and the end state is checked.
//!
//! Checked after every step: the master's own invariants, and that its
//! periodic reconciliation never finds drift; on every machine, the
//! processes running never use more than its total (unless its capacity
//! was lowered under them, and then the master flags it overcommitted),
//! the agent knows exactly the processes that run, and every process runs
//! an attempt the master placed there; no task has two attempts whose
//! processes run at once unless the older one is `unknown` at the master
//! (never for an at-most-once task); no worker ever refuses an attempt for
//! lack of room; and whenever nothing is in flight between the master and
//! a connected worker, the two agree on what that worker runs.

pub mod master;
pub mod net;
pub mod rng;
pub mod worker;

use berth_core::{AttemptId, Millis, Resources, TaskId, TaskSpec, WorkerId, WorkerState};
use berth_master::state::{State, StateConfig};
use berth_store::{MemStore, Store, StoreFault};
use master::{Master, SharedStore};
use net::{Faults, Msg, Net, ToMaster, sim_command, worker_id};
use rng::Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use worker::Machine;

const STEP_MS: Millis = 20;
const AUDIT_EVERY_MS: Millis = 5_000;
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
    /// by the engine.
    pub commit_failures: u64,
    /// Engine steps (batches).
    pub batches: u64,
    /// Master stalls (pauses and slow fsyncs) and wall-clock steps.
    pub master_stalls: u32,
    pub clock_steps: u32,
    /// Agents restarted with less capacity than they held.
    pub capacity_lowered: u32,
}

pub struct World {
    seed: u64,
    rng: Rng,
    now: Millis,
    net: Net,
    master: Option<Master>,
    store: SharedStore,
    master_back_at: Millis,
    /// The master's wall clock offset, kept across its restarts.
    master_wall_offset: i64,
    /// While the store refuses writes: when it takes them again.
    store_back_at: Millis,
    workers: Vec<Machine>,
    /// While the master is down: the attempts it last showed `unknown`
    /// (its last word on which attempts may run twice).
    orphaned: BTreeSet<AttemptId>,
    /// While the master is down: its at-most-once tasks.
    at_most_once: BTreeSet<TaskId>,
    agent_back_at: Vec<Millis>,
    partition_ends: Vec<Millis>,
    acked: BTreeSet<TaskId>,
    /// Per worker: the session and the attempts its last hello or
    /// heartbeat processed by the master said it runs.
    last_held: HashMap<usize, (u64, Vec<AttemptId>)>,
    next_audit: Millis,
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
        let store: SharedStore = Arc::new(Mutex::new(MemStore::new()));
        World {
            seed,
            rng,
            now: 0,
            net: Net::default(),
            master: Some(Master::new(State::new(config), store.clone(), 0, 0)),
            store,
            master_back_at: 0,
            master_wall_offset: 0,
            store_back_at: 0,
            workers,
            orphaned: BTreeSet::new(),
            at_most_once: BTreeSet::new(),
            agent_back_at: vec![0; n],
            partition_ends: vec![0; n],
            acked: BTreeSet::new(),
            last_held: HashMap::new(),
            next_audit: AUDIT_EVERY_MS,
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

    /// The master's wall clock (what its records and views use).
    fn master_wall(&self) -> Millis {
        self.now + self.master_wall_offset
    }

    fn state(&self) -> Option<&State> {
        self.master.as_ref().map(Master::state)
    }

    fn master_receive(&mut self, m: ToMaster) {
        let now = self.now;
        if std::env::var("BERTH_SIM_VERBOSE").is_ok() {
            eprintln!("t={now} master <- {m:?}");
        }
        match &mut self.master {
            Some(master) => master.receive(m, now),
            // Nobody listens: a hello's connection is refused.
            None => {
                if let ToMaster::Hello {
                    worker, session, ..
                } = m
                {
                    self.net.notify_closed(worker, session, now + 1);
                }
            }
        }
    }

    /// One step of the master's engine thread, if due; then what it sent
    /// goes on the network, and what it answered is noted.
    fn master_step(&mut self) -> Result<(), String> {
        let now = self.now;
        let Some(master) = &mut self.master else {
            return Ok(());
        };
        if now >= self.next_audit {
            self.next_audit = now + AUDIT_EVERY_MS;
            master.audit();
        }
        let out = master.step(now)?;
        for m in out.sent {
            self.net.send(&mut self.rng, now, m);
        }
        if !out.stepped {
            return Ok(());
        }
        self.stats.batches += 1;
        if std::env::var("BERTH_SIM_VERBOSE").is_ok() {
            let st = self.master.as_ref().expect("master up").state();
            let live: Vec<String> = st
                .attempts()
                .filter(|a| {
                    !a.state.is_gone()
                        || Some(a.id.0)
                            == std::env::var("BERTH_SIM_WATCH")
                                .ok()
                                .and_then(|v| v.parse().ok())
                })
                .map(|a| format!("{}:{}@{} ({})", a.id, a.state, a.worker_id, a.reason))
                .collect();
            eprintln!(
                "t={now} master stepped: live attempts [{}]",
                live.join(", ")
            );
        }
        if out.commit_failures > 0 {
            self.stats.commit_failures += out.commit_failures;
            self.note("a commit failed; the engine undid its batch".into());
        }
        for id in out.acked {
            self.acked.insert(id);
            self.stats.submitted += 1;
        }
        for (w, s, held) in out.held {
            self.last_held.insert(w, (s, held));
        }
        for report in out.audits {
            if !report.fixes.is_empty() {
                return Err(self.fail(format!("reconcile found drift: {report:?}")));
            }
        }
        let st = self.master.as_ref().expect("master up").state();
        let c = st.counters();
        if c.index_fixes + c.record_fixes > 0 {
            return Err(self.fail(format!(
                "the engine's periodic reconciliation fixed drift ({} index, {} records)",
                c.index_fixes, c.record_fixes
            )));
        }
        // After a failed commit the batch's placements were undone with
        // it: the next batch places them again.
        if out.commit_failures > 0 {
            return Ok(());
        }
        self.check_nothing_left_unplaced()
    }

    /// Right after a scheduling round no queued task fits on a worker that
    /// takes work: a round that was skipped (or missed a task) is a bug.
    fn check_nothing_left_unplaced(&self) -> Result<(), String> {
        let Some(st) = self.state() else {
            return Ok(());
        };
        for id in st.queue() {
            let reason = st.wait_reason_at(id, self.master_wall());
            if reason == "about to be placed" {
                return Err(self.fail(format!(
                    "task {id} fits a worker but was left queued by a scheduling round"
                )));
            }
        }
        Ok(())
    }

    fn client(&mut self, submit_per_mille: u64) {
        if self.master.is_none() {
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
                    // Some need a GPU (odd machines have two).
                    gpus: u32::from(self.rng.chance(100)),
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
            // Some must run on one named worker.
            if self.rng.chance(50) {
                let w = self.rng.below(self.workers.len() as u64);
                spec.pinned_worker = Some(format!("w{w}"));
            }
            self.master.as_mut().unwrap().submit(spec);
        }
        // Now and then an operator drains a worker (for good: its running
        // tasks finish, nothing new goes there; pinned tasks wait).
        if self.rng.chance(1) && self.rng.chance(100) {
            let w = self.rng.below(self.workers.len() as u64);
            self.note(format!("DRAIN w{w}"));
            self.master.as_mut().unwrap().drain(format!("w{w}"));
        }
        // Cancels, often enough to meet starts in flight.
        if self.rng.chance(8) && !self.acked.is_empty() {
            let ids: Vec<TaskId> = self.acked.iter().copied().collect();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            self.note(format!("cancel task {id}"));
            self.master.as_mut().unwrap().cancel(id);
        }
    }

    fn inject_faults(&mut self) {
        let now = self.now;
        let n = self.workers.len();
        // Master crash.
        if self.master.is_some() && self.rng.chance(1) {
            self.note("MASTER CRASH".into());
            let gone = self.master.take().expect("master up");
            self.orphaned = gone
                .state()
                .attempts()
                .filter(|a| a.state == berth_core::AttemptState::Unknown)
                .map(|a| a.id)
                .collect();
            self.at_most_once = gone
                .state()
                .tasks()
                .filter(|t| t.spec.stop_after_disconnect_ms.is_some())
                .map(|t| t.id)
                .collect();
            self.net.drop_to_master();
            for w in 0..n {
                self.net.drop_to_worker(w);
                self.workers[w].lose_session(now, "the master went away", &mut self.rng);
            }
            self.master_back_at = now + self.rng.range(200, 5_000) as Millis;
            self.stats.master_crashes += 1;
        }
        let mut notes = Vec::new();
        if let Some(master) = &mut self.master {
            // The master stalls (a VM pause, SIGSTOP) or one of its commits
            // takes seconds (a slow fsync): what it was about to send waits.
            if now >= master.paused_until && self.rng.chance(1) {
                let slow_fsync = self.rng.chance(500);
                master.paused_until = now + self.rng.range(500, 12_000) as Millis;
                master.holding_output = slow_fsync;
                self.stats.master_stalls += 1;
                notes.push(format!(
                    "MASTER {} until t={}",
                    if slow_fsync {
                        "IN A SLOW FSYNC"
                    } else {
                        "PAUSED"
                    },
                    master.paused_until
                ));
            }
            // Its wall clock steps (NTP, an operator), by seconds to hours,
            // either way; its monotonic clock does not.
            if self.rng.chance(1) {
                let by = self.rng.range(2_000, 7_200_000) as i64;
                let by = if self.rng.chance(500) { by } else { -by };
                master.wall_offset += by;
                self.master_wall_offset = master.wall_offset;
                self.stats.clock_steps += 1;
                notes.push(format!("MASTER WALL CLOCK STEPS {by} ms"));
            }
        }
        for n in notes {
            self.note(n);
        }
        // The master's disk fills up (or fails) for a while.
        let failing = self.store.lock().unwrap().failing.is_some();
        if self.master.is_some() && !failing && self.rng.chance(1) {
            let fault =
                [StoreFault::Full, StoreFault::Busy, StoreFault::Io][self.rng.below(3) as usize];
            self.note(format!("STORE REFUSES WRITES ({})", fault.as_str()));
            self.store.lock().unwrap().fail_writes(Some(fault));
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
                // Restarted with less capacity than its tasks hold.
                if self.rng.chance(150) {
                    let cut = self.rng.range(300, 900);
                    self.workers[w].lower_capacity(cut);
                    self.stats.capacity_lowered += 1;
                    self.note(format!("w{w} comes back with {cut}‰ of its CPU"));
                }
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
        let failing = self.store.lock().unwrap().failing.is_some();
        if failing && (force || now >= self.store_back_at) {
            self.store.lock().unwrap().fail_writes(None);
            self.note("the store takes writes again".into());
        }
        if let Some(m) = &mut self.master
            && force
        {
            m.paused_until = now;
        }
        if self.master.is_none() && (force || now >= self.master_back_at) {
            let snap = self.store.lock().unwrap().load().expect("load");
            let wall = self.master_wall();
            let st = State::from_snapshot(snap, self.config, wall);
            self.master = Some(Master::new(
                st,
                self.store.clone(),
                now,
                self.master_wall_offset,
            ));
            self.orphaned.clear();
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
        self.master_step()?;
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
        for m in &mut self.workers {
            let used: Resources = m.procs.values().map(|p| p.resources).sum();
            if used.le(&m.total) {
                m.lowered = false;
            }
        }
        if let Some(m) = self.workers.iter().find(|m| !m.violations.is_empty()) {
            // What the worker runs, and what the master makes of each.
            let views: Vec<String> = m
                .procs
                .keys()
                .map(|aid| match self.state().and_then(|st| st.attempt(*aid)) {
                    Some(a) => format!("{aid}: {} ({})", a.state, a.reason),
                    None => format!("{aid}: not in the master's memory"),
                })
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
            // Over its total only with processes from before its capacity
            // was lowered (the master's own invariants check that it flags
            // the worker overcommitted once it knows).
            if !used.le(&m.total) && !m.lowered {
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
            // Each GPU is given to one running process at a time, and
            // only GPUs the machine has.
            let mut gpus_in_use = BTreeSet::new();
            for (aid, p) in &m.procs {
                if p.gpu_ids.len() != p.resources.gpus as usize {
                    return Err(self.fail(format!(
                        "w{} runs attempt {aid} asking for {} GPU(s) with ids {:?}",
                        m.index, p.resources.gpus, p.gpu_ids
                    )));
                }
                for g in &p.gpu_ids {
                    if *g >= m.total.gpus || !gpus_in_use.insert(*g) {
                        return Err(self.fail(format!(
                            "w{} gives GPU {g} to attempt {aid} while it is taken or absent ({} GPUs)",
                            m.index, m.total.gpus
                        )));
                    }
                }
            }
            for (aid, p) in &m.procs {
                runs.push((p.task, *aid, m.index));
                // Records of finished attempts may stay in the store only.
                if let Some(st) = self.state()
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
            let at_most_once = match self.state() {
                Some(st) => st
                    .task(task)
                    .is_some_and(|t| t.spec.stop_after_disconnect_ms.is_some()),
                None => self.at_most_once.contains(&task),
            };
            // ... except when the older one's agent was dead meanwhile
            // (not cut off): only a live agent stops such a task on time,
            // and a restarted one stops it at once.
            let lapsed = |w: usize| self.now < self.workers[w].lapsed_until;
            let excused = |a: &AttemptId, w: usize| {
                (at_most_once && lapsed(w))
                    || !at_most_once
                        && match self.state() {
                            Some(st) => st
                                .attempt(*a)
                                .is_some_and(|r| r.state == berth_core::AttemptState::Unknown),
                            None => self.orphaned.contains(a),
                        }
            };
            if let Some((aid, w)) = older.iter().find(|(a, w)| !excused(a, *w)) {
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
        let Some(st) = self.state() else {
            return Ok(());
        };
        let mut checked = 0;
        for m in &self.workers {
            let i = m.index;
            let Some(session) = m.welcomed_session() else {
                continue;
            };
            let wid = worker_id(i);
            if self.master.as_ref().and_then(|m| m.session_of(i)) != Some(session)
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
        let Some(st) = self.state() else {
            return Ok(());
        };
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
        let st = self.state().expect("master up");
        for id in &self.acked {
            let t = st.task(*id).unwrap();
            if t.state.is_terminal() {
                continue;
            }
            let Some(a) = st.live_attempt(*id) else {
                // Still queued: only acceptable if it cannot be placed now
                // (no room on an up worker, retry backoff, or the room is
                // kept for an older task).
                let why = st.wait_reason_at(*id, self.master_wall());
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
            let start_in_flight = a.state == berth_core::AttemptState::Assigned
                && self.master_wall() - a.created_ms < 1_000;
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
        self.master.as_mut().expect("master up").tick_now();
        self.master_step()?;
        self.check_settled()?;
        self.stats.audits = self.state().expect("master up").counters().reconcile_runs;
        self.stats.stopped_before_start = self.workers.iter().map(|w| w.stopped_before_start).sum();
        self.stats.messages = self.net.sent;
        self.stats.dropped = self.net.dropped;
        Ok(self.stats)
    }
}
