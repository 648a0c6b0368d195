//! The agent's I/O shell: keeps one session with the master, performs what
//! the pure [`core::AgentCore`] decides with the real drivers and attempt
//! folders, and feeds it what happens (messages, driver exits, ticks of a
//! monotonic clock). Every rule about attempts lives in the core; this file
//! only decodes, encodes, reads and writes.
//!
//! One task owns all local state (no locks). The attempt folders are the
//! durable outbox (`attempt_dir`): a result is forgotten only after the
//! master's ack. How an attempt runs is its driver's business (`driver`);
//! every driver records the outcome in the attempt folder, which the shell
//! reads back for the core.

pub mod core;

use self::core::{
    Action, AgentCore, CoreConfig, Ended, Event, Exit, Found, Hello, Limit, Message, Reattach,
    StartOrder,
};
use crate::attempt_dir::{AttemptDir, Spares, Tombstones};
use crate::driver::{Drivers, Launch};
use crate::{Detected, WorkerConfig, WorkerError};
use berth_core::{AttemptId, DriverKind, TaskSpec};
use berth_proto::v1::master_message::Body as In;
use berth_proto::v1::worker_link_client::WorkerLinkClient;
use berth_proto::v1::worker_message::Body as Out;
use berth_proto::{BearerToken, HeldReport, final_seq as seq_final, v1};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const TICK: Duration = Duration::from_millis(100);
const LOG_CHUNK: usize = 256 * 1024;
/// At most this much of one running attempt's log is shipped per tick.
const LOG_PER_TICK: u64 = 1 << 20;

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A random seed for the core's jitter.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(epoch_ms());
    h.finish()
}

pub(crate) struct Agent {
    core: AgentCore,
    cfg: WorkerConfig,
    det: Detected,
    root: PathBuf,
    done: Tombstones,
    spares: Spares,
    drivers: Drivers,
    /// The session's stream to the master; `None` between sessions.
    out: Option<mpsc::UnboundedSender<v1::WorkerMessage>>,
    /// Log bytes of each attempt sent on this session.
    shipped: BTreeMap<AttemptId, u64>,
    /// The core's clock starts here.
    origin: Instant,
    /// The core asked to dial with this hello.
    dial: Option<Hello>,
    /// The core asked to end.
    exit: Option<Exit>,
    /// When `DATA_DIR/contact` was last touched.
    contact_noted: Option<Instant>,
}

impl Agent {
    /// Load local state: every attempt folder is handed to the core, which
    /// has the drivers re-attach what may still run. Runs inside the tokio
    /// runtime (drivers may start watchers).
    pub(crate) fn new(
        cfg: WorkerConfig,
        det: Detected,
        drivers: Drivers,
    ) -> Result<Agent, WorkerError> {
        let root = cfg.data_dir.join("attempts");
        let io = |source| WorkerError::DataDir {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(io)?;
        let done = Tombstones::open(cfg.data_dir.join("tombstones")).map_err(io)?;
        let spares = Spares::open(cfg.data_dir.join("spare")).map_err(io)?;
        let dirs = AttemptDir::scan(&root).map_err(io)?;
        let mut kinds = vec![DriverKind::Process];
        if drivers.docker.is_some() {
            kinds.push(DriverKind::Docker);
        }
        let core = AgentCore::new(CoreConfig {
            name: cfg.name.clone(),
            total: det.total,
            drivers: kinds,
            stop_grace_ms: cfg.stop_grace.as_millis() as u64,
            drain_on_exit: cfg.drain_on_exit,
            seed: random_seed(),
        });
        let mut agent = Agent {
            core,
            cfg,
            det,
            root,
            done,
            spares,
            drivers,
            out: None,
            shipped: BTreeMap::new(),
            origin: Instant::now(),
            dial: None,
            exit: None,
            contact_noted: None,
        };
        let ago = Self::heard_ago(&agent.cfg.data_dir);
        agent.core.heard_ago(ago);
        let found = dirs.iter().map(|d| agent.found(d)).collect();
        agent.feed(Event::Recovered(found));
        Ok(agent)
    }

    /// The core's clock: monotonic milliseconds since the agent started.
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn dir(&self, id: AttemptId) -> AttemptDir {
        AttemptDir::new(&self.root, id)
    }

    /// What an attempt folder says, for the core.
    fn found(&self, dir: &AttemptDir) -> Found {
        // The deadline is kept as wall-clock time (it must survive a
        // restart); the core counts on its monotonic clock.
        let (now, wall) = (self.now(), epoch_ms());
        Found {
            attempt: dir.id,
            meta: dir.meta().ok(),
            ended: Self::ended(dir),
            stopped: dir.is_stopped(),
            timed_out: dir.is_timed_out(),
            cancelled: dir.is_cancelled(),
            limit: dir.limit().map(|(deadline, limit_ms)| Limit {
                deadline: now + (deadline - wall).max(0) as u64,
                limit_ms,
            }),
            disconnect_ms: dir.disconnect_limit(),
            disconnected: dir.is_disconnected(),
        }
    }

    fn ended(dir: &AttemptDir) -> Ended {
        Ended {
            exit: dir.exit_status(),
            failed: dir.failed(),
            lost: dir.lost(),
        }
    }

    /// Hand one event to the core and perform what it decides, including
    /// the answers some actions produce (a launch's result, …).
    fn feed(&mut self, event: Event) {
        let mut events = VecDeque::from([event]);
        let mut actions = Vec::new();
        while let Some(e) = events.pop_front() {
            self.core.step(self.now(), e, &mut actions);
            for a in actions.drain(..) {
                if let Some(answer) = self.perform(a) {
                    events.push_back(answer);
                }
            }
        }
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Connect(hello) => self.dial = Some(hello),
            Action::Send(m) => self.send(match m {
                Message::Heartbeat { held, draining } => Out::Heartbeat(v1::Heartbeat {
                    held: held.iter().map(Into::into).collect(),
                    draining,
                }),
                Message::Update { seq, report } => Out::Update(v1::AttemptUpdate {
                    seq,
                    attempt: Some((&report).into()),
                }),
            }),
            Action::Launch {
                attempt,
                meta,
                spec,
                gpu_ids,
                limit_ms,
            } => {
                let result = self.launch(attempt, meta, *spec, gpu_ids, limit_ms);
                return Some(Event::Launched { attempt, result });
            }
            Action::Prepare { attempt, meta } => {
                let dir = self.dir(attempt);
                self.spares.take_for(&dir);
                if let Err(e) = dir.create(meta) {
                    tracing::warn!(%attempt, error = %e, "could not create the attempt folder");
                }
            }
            Action::Reattach { attempt, driver } => {
                let dir = self.dir(attempt);
                let outcome = match self.drivers.get(driver).map(|d| d.reattach(&dir)) {
                    Some(true) => Reattach::Running,
                    Some(false) => Reattach::Ended(Self::ended(&dir)),
                    None => Reattach::NoDriver,
                };
                return Some(Event::Reattached { attempt, outcome });
            }
            Action::Discard { attempt } => {
                let _ = self.dir(attempt).remove();
            }
            Action::Signal {
                attempt,
                driver,
                signal,
            } => {
                let dir = self.dir(attempt);
                if let Some(d) = self.drivers.get(driver) {
                    d.signal(&dir, signal);
                }
            }
            Action::MarkStopped { attempt } => {
                let _ = self.dir(attempt).mark_stopped();
            }
            Action::MarkDisconnected { attempt } => {
                let _ = self.dir(attempt).mark_disconnected();
            }
            Action::MarkTimedOut { attempt } => {
                let _ = self.dir(attempt).mark_timed_out();
            }
            Action::RecordFailed { attempt, reason } => {
                let _ = self.dir(attempt).set_failed(&reason);
            }
            Action::RecordExit { attempt, code } => {
                let _ = self.dir(attempt).set_exit_status(code);
            }
            Action::RecordCancelled { attempt } => {
                let dir = self.dir(attempt);
                self.spares.take_for(&dir);
                let meta = crate::attempt_dir::Meta {
                    task: berth_core::TaskId(0),
                    resources: berth_core::Resources::ZERO,
                    driver: DriverKind::Process,
                };
                if let Err(e) = dir
                    .create(meta)
                    .and_then(|()| dir.mark_stopped())
                    .and_then(|()| dir.mark_cancelled())
                {
                    tracing::warn!(%attempt, error = %e, "could not record the cancelled attempt");
                }
            }
            Action::ShipLog { attempt, whole } => self.ship_logs(attempt, whole),
            Action::Deliver { attempt, report } => {
                // What the master must have before the final report goes
                // first: the output files (an output over the limit fails
                // the report), the whole log.
                let dir = self.dir(attempt);
                let mut r = report.clone();
                crate::outputs::finish(&dir, &mut r, self.cfg.max_output, self.out.as_ref());
                self.ship_logs(attempt, true);
                self.send_update(seq_final(attempt), &r);
                if r != report {
                    return Some(Event::Amended { attempt, report: r });
                }
            }
            Action::Forget { attempt } => {
                let dir = self.dir(attempt);
                if let Err(e) = self.done.add(attempt) {
                    tracing::warn!(%attempt, error = %e, "could not record tombstone");
                }
                // Kept as a spare for the next attempt (or removed).
                if let Err(e) = self.spares.put(&dir).or_else(|_| dir.remove()) {
                    tracing::warn!(%attempt, error = %e, "could not remove attempt folder");
                }
                self.shipped.remove(&attempt);
            }
            Action::Exit(e) => self.exit = Some(e),
        }
        None
    }

    /// Create the folder and start the attempt with its driver.
    fn launch(
        &mut self,
        id: AttemptId,
        meta: crate::attempt_dir::Meta,
        spec: TaskSpec,
        gpu_ids: Vec<u32>,
        limit_ms: Option<u64>,
    ) -> Result<(), String> {
        let dir = self.dir(id);
        self.spares.take_for(&dir);
        dir.create(meta)
            .map_err(|e| format!("creating the attempt folder: {e}"))?;
        if let Some(limit) = limit_ms {
            dir.set_limit(epoch_ms() + limit as i64, limit)
                .map_err(|e| format!("recording the time limit: {e}"))?;
        }
        if let Some(limit) = spec.stop_after_disconnect_ms {
            dir.set_disconnect_limit(limit)
                .map_err(|e| format!("recording --stop-after-disconnect: {e}"))?;
        }
        self.shipped.insert(id, 0);
        let launch = Launch {
            dir,
            task: meta.task,
            spec,
            gpu_ids,
            env: vec![
                ("BERTH_TASK_ID".into(), meta.task.0.to_string()),
                ("BERTH_ATTEMPT_ID".into(), id.0.to_string()),
            ],
        };
        match self.drivers.get(meta.driver) {
            Some(d) => d.start(launch),
            None => Err(format!(
                "worker {} has no {} driver",
                self.cfg.name,
                meta.driver.as_str()
            )),
        }
    }

    fn send(&self, body: Out) {
        if let Some(out) = &self.out {
            let _ = out.send(v1::WorkerMessage { body: Some(body) });
        }
    }

    fn send_update(&self, seq: u64, r: &HeldReport) {
        self.send(Out::Update(v1::AttemptUpdate {
            seq,
            attempt: Some(r.into()),
        }));
    }

    /// Ship new log bytes of one attempt (all of them when `all`).
    fn ship_logs(&mut self, id: AttemptId, all: bool) {
        let Some(out) = &self.out else {
            return;
        };
        let Ok(f) = std::fs::File::open(self.dir(id).log()) else {
            return;
        };
        let shipped = self.shipped.entry(id).or_default();
        let mut budget = if all { u64::MAX } else { LOG_PER_TICK };
        let mut buf = vec![0u8; LOG_CHUNK];
        while budget > 0 {
            use std::os::unix::fs::FileExt;
            let n = match f.read_at(&mut buf, *shipped) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = out.send(v1::WorkerMessage {
                body: Some(Out::Log(v1::LogChunk {
                    attempt_id: id.0,
                    offset: *shipped,
                    data: buf[..n].to_vec(),
                })),
            });
            *shipped += n as u64;
            budget = budget.saturating_sub(n as u64);
        }
    }

    #[cfg(test)]
    fn allocated(&self) -> berth_core::Resources {
        self.core.allocated()
    }

    /// Tests: a session is open on `tx` (no heartbeats come due).
    #[cfg(test)]
    fn open_for_test(&mut self, tx: mpsc::UnboundedSender<v1::WorkerMessage>) {
        self.out = Some(tx);
        self.feed(Event::Tick);
        self.dial = None;
        self.feed(Event::Welcomed {
            heartbeat_ms: 3_600_000,
        });
    }

    fn on_start(&mut self, s: v1::StartAttempt) {
        let attempt = AttemptId(s.attempt_id);
        let spec = match s.spec.map(TaskSpec::try_from) {
            Some(Ok(spec)) => Ok(spec),
            Some(Err(e)) => Err(format!("invalid task spec: {e}")),
            None => Err("start message without a task spec".to_string()),
        };
        let tombstoned = self.done.contains(attempt);
        self.feed(Event::Start {
            order: StartOrder {
                attempt,
                task: berth_core::TaskId(s.task_id),
                spec,
                gpu_ids: s.gpu_ids,
            },
            tombstoned,
        });
    }

    fn on_stop(&mut self, s: v1::StopAttempt) {
        let attempt = AttemptId(s.attempt_id);
        let tombstoned = self.done.contains(attempt);
        self.feed(Event::Stop {
            attempt,
            reason: s.reason,
            tombstoned,
        });
    }

    fn on_ack(&mut self, seq: u64) {
        self.heard();
        self.feed(Event::Ack { seq });
    }

    /// The master proved it hears us: note the time in `DATA_DIR/contact`
    /// (its modification time; at most once a second, not fsynced — an
    /// older time only makes a restarted agent stop its
    /// `--stop-after-disconnect` tasks sooner).
    fn heard(&mut self) {
        let now = Instant::now();
        if self
            .contact_noted
            .is_some_and(|t| now - t < Duration::from_secs(1))
        {
            return;
        }
        self.contact_noted = Some(now);
        let path = self.cfg.data_dir.join("contact");
        let r = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not note the master's contact");
        }
    }

    /// How long ago the master was last heard from, by `DATA_DIR/contact`
    /// (0 when never: nothing of a previous run can be running).
    fn heard_ago(data_dir: &std::path::Path) -> u64 {
        std::fs::metadata(data_dir.join("contact"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The driver says an attempt's supervisor ended (or vanished).
    fn on_exit(&mut self, id: AttemptId) {
        if self.core.running().any(|(a, _)| a == id) {
            let ended = Self::ended(&self.dir(id));
            self.feed(Event::Ended { attempt: id, ended });
        }
    }

    /// Every tick: notice attempts that ended without a word from their
    /// driver (re-attached ones), let the drivers keep house, and let the
    /// core's clock move (stop grace, time limits, logs, heartbeats).
    fn poll(&mut self) {
        let running: Vec<(AttemptId, DriverKind)> = self.core.running().collect();
        for (id, kind) in &running {
            let dir = self.dir(*id);
            let alive = self.drivers.get_ref(*kind).is_some_and(|d| d.running(&dir));
            if !alive {
                self.on_exit(*id);
            }
        }
        let running: BTreeSet<AttemptId> = self.core.running().map(|(id, _)| id).collect();
        self.drivers.housekeeping(&running);
        if let Err(e) = self.done.sync() {
            tracing::warn!(error = %e, "could not make the tombstones durable");
        }
        self.feed(Event::Tick);
    }

    fn lost(&mut self, why: String, refusal: Option<String>) {
        self.feed(Event::SessionLost { why, refusal });
    }

    /// One session with the master, until it breaks or the core ends the
    /// agent.
    async fn session(
        &mut self,
        hello: Hello,
        exits: &mut mpsc::UnboundedReceiver<AttemptId>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), WorkerError> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.cfg.master.clone())
            .map_err(|e| WorkerError::BadMaster(format!("{}: {e}", self.cfg.master)))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                self.lost(format!("connecting to {}: {e}", self.cfg.master), None);
                return Ok(());
            }
        };
        let token = BearerToken::new(&self.cfg.token).map_err(WorkerError::Refused)?;
        let mut client = WorkerLinkClient::with_interceptor(channel, token);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(v1::WorkerMessage {
            body: Some(Out::Hello(v1::Hello {
                node_id: self.det.node_id.clone(),
                name: self.cfg.name.clone(),
                total: Some(self.det.total.into()),
                drivers: self.det.drivers.clone(),
                gpus: self.det.gpus.iter().cloned().map(Into::into).collect(),
                held: hello.held.iter().map(Into::into).collect(),
                draining: hello.draining,
                labels: berth_proto::labels_to_wire(self.cfg.labels.clone()),
                max_attempt_id: hello
                    .held
                    .iter()
                    .map(|h| h.attempt_id.0)
                    .max()
                    .unwrap_or(0)
                    .max(self.done.max_id()),
                stop_grace_ms: self.cfg.stop_grace.as_millis() as u64,
            })),
        });
        let mut inbound = match client
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::InvalidArgument
                ) =>
            {
                let why = s.message().to_string();
                self.lost(why.clone(), Some(why));
                return Ok(());
            }
            Err(s) => {
                self.lost(format!("opening session: {}", s.message()), None);
                return Ok(());
            }
        };
        let heartbeat_ms = match inbound.message().await {
            Ok(Some(v1::MasterMessage {
                body: Some(In::Welcome(w)),
            })) => w.heartbeat_interval_ms,
            Ok(_) => {
                self.lost("the master did not welcome us".into(), None);
                return Ok(());
            }
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    || s.code() == tonic::Code::Unauthenticated =>
            {
                let why = s.message().to_string();
                self.lost(why.clone(), Some(why));
                return Ok(());
            }
            Err(s) => {
                self.lost(s.message().to_string(), None);
                return Ok(());
            }
        };
        tracing::info!(master = %self.cfg.master, "welcomed by the master");
        self.out = Some(tx);
        // Nothing has been shipped on this stream yet.
        self.shipped.clear();
        self.heard();
        self.feed(Event::Welcomed { heartbeat_ms });
        let mut tick = tokio::time::interval(TICK);
        let lost = loop {
            if self.exit.is_some() {
                break None;
            }
            tokio::select! {
                _ = shutdown.as_mut(), if !self.core.draining() => self.feed(Event::Shutdown),
                m = inbound.message() => match m {
                    Ok(Some(v1::MasterMessage { body: Some(body) })) => match body {
                        In::Start(s) => self.on_start(s),
                        In::Stop(s) => self.on_stop(s),
                        In::Ack(a) => self.on_ack(a.seq),
                        In::Welcome(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => break Some("the master closed the session".to_string()),
                    Err(s) => break Some(s.message().to_string()),
                },
                Some(id) = exits.recv() => self.on_exit(id),
                _ = tick.tick() => self.poll(),
            }
        };
        self.out = None;
        if let Some(why) = lost {
            self.lost(why, None);
        }
        Ok(())
    }

    /// Between sessions: keep noticing exits and ticking, until the core
    /// asks to dial (its hello) or to end (`None`).
    async fn idle(
        &mut self,
        exits: &mut mpsc::UnboundedReceiver<AttemptId>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Hello> {
        let mut tick = tokio::time::interval(TICK);
        loop {
            if self.exit.is_some() {
                return None;
            }
            if let Some(hello) = self.dial.take() {
                return Some(hello);
            }
            tokio::select! {
                _ = shutdown.as_mut(), if !self.core.draining() => self.feed(Event::Shutdown),
                Some(id) = exits.recv() => self.on_exit(id),
                _ = tick.tick() => self.poll(),
            }
        }
    }
}

/// Run the agent until `shutdown` resolves. Running tasks are left running
/// (a restarted agent re-attaches to them).
pub(crate) async fn run(
    cfg: WorkerConfig,
    det: Detected,
    drivers: Drivers,
    mut exits: mpsc::UnboundedReceiver<AttemptId>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let mut agent = Agent::new(cfg, det, drivers)?;
    tokio::pin!(shutdown);
    loop {
        if let Some(hello) = agent.idle(&mut exits, &mut shutdown).await {
            agent.session(hello, &mut exits, &mut shutdown).await?;
        }
        match agent.exit.take() {
            None => {}
            Some(Exit::Done) => return Ok(()),
            Some(Exit::Refused(why)) => return Err(WorkerError::Refused(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The agent against the scriptable mock driver: no master, no
    //! processes; the messages it would send are read from its channel.
    use super::*;
    use crate::driver::Signal;
    use crate::driver::mock::{MockDriver, MockLog};
    use berth_core::{AttemptState, Resources};

    struct Rig {
        agent: Agent,
        sent: mpsc::UnboundedReceiver<v1::WorkerMessage>,
        mock: MockLog,
        _dir: tempfile::TempDir,
    }

    fn rig_in(dir: tempfile::TempDir) -> Rig {
        let (exits, _rx) = mpsc::unbounded_channel();
        let (driver, mock) = MockDriver::new(exits);
        let mut cfg = WorkerConfig::new(
            "http://127.0.0.1:1".into(),
            String::new(),
            "Tessa".into(),
            dir.path().to_path_buf(),
        );
        cfg.stop_grace = Duration::from_millis(50);
        let det = Detected {
            total: Resources {
                cpu_millis: 4000,
                memory_bytes: 4 << 30,
                storage_bytes: 0,
                gpus: 0,
            },
            gpus: vec![],
            drivers: vec!["process".into()],
            node_id: "node-1".into(),
        };
        let drivers = Drivers {
            process: Box::new(driver),
            docker: None,
        };
        let mut agent = Agent::new(cfg, det, drivers).unwrap();
        let (tx, sent) = mpsc::unbounded_channel();
        agent.open_for_test(tx);
        Rig {
            agent,
            sent,
            mock,
            _dir: dir,
        }
    }

    fn rig() -> Rig {
        rig_in(tempfile::tempdir().unwrap())
    }

    fn start(id: u64, script: &[&str]) -> v1::StartAttempt {
        let spec = TaskSpec::process(
            script.iter().map(|s| s.to_string()).collect(),
            Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 20,
                storage_bytes: 0,
                gpus: 0,
            },
        );
        v1::StartAttempt {
            attempt_id: id,
            task_id: id * 10,
            spec: Some(spec.into()),
            gpu_ids: vec![],
        }
    }

    /// Every attempt update sent so far, as (seq, state, reason).
    fn updates(r: &mut Rig) -> Vec<(u64, String, String)> {
        let mut out = Vec::new();
        while let Ok(m) = r.sent.try_recv() {
            if let Some(Out::Update(u)) = m.body {
                let a = u.attempt.unwrap();
                out.push((u.seq, a.state, a.reason));
            }
        }
        out
    }

    /// Poll until attempt `id` has finished (at most 5 s).
    async fn finish(r: &mut Rig, id: u64) -> HeldReport {
        for _ in 0..500 {
            r.agent.poll();
            if let Some(rep) = r.agent.core.report(AttemptId(id)) {
                return rep.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("attempt {id} did not finish");
    }

    #[tokio::test]
    async fn runs_reports_and_forgets_after_the_ack() {
        let mut r = rig();
        r.agent
            .on_start(start(1, &["run_for=20", "exit_code=3", "log=hello"]));
        assert_eq!(r.agent.allocated().cpu_millis, 1000);
        let rep = finish(&mut r, 1).await;
        assert_eq!(rep.state, AttemptState::Failed);
        assert_eq!(rep.reason, "exited with code 3");
        assert_eq!(rep.exit_code, Some(3));
        assert_eq!(r.agent.allocated(), Resources::ZERO);
        // In order: running, the log, then the final result.
        let mut order = Vec::new();
        while let Ok(m) = r.sent.try_recv() {
            match m.body {
                Some(Out::Update(u)) => order.push(u.attempt.unwrap().state),
                Some(Out::Log(c)) if !c.data.is_empty() => {
                    order.push(String::from_utf8(c.data).unwrap())
                }
                _ => {}
            }
        }
        assert_eq!(order, vec!["running", "hello", "failed"]);
        let dir = r.agent.dir(AttemptId(1));
        assert!(dir.exists());
        r.agent.on_ack(seq_final(AttemptId(1)));
        assert!(!dir.exists());
        assert!(r.agent.core.is_empty());
        // A late duplicate start does not run it again.
        r.agent.on_start(start(1, &["run_for=20"]));
        assert!(r.agent.core.is_empty());
        assert_eq!(r.mock.started(), vec![AttemptId(1)]);
    }

    #[tokio::test]
    async fn a_start_error_fails_at_once_and_survives_a_restart() {
        let mut r = rig();
        r.agent
            .on_start(start(2, &["start_error=image `nope` not found"]));
        let u = updates(&mut r);
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u[0].1, "failed");
        assert_eq!(u[0].2, "image `nope` not found");
        assert_eq!(r.agent.allocated(), Resources::ZERO);
        // The folder keeps the reason: a restarted agent reports the same.
        let Rig { agent, _dir, .. } = r;
        drop(agent);
        let r2 = rig_in(_dir);
        let rep = r2
            .agent
            .core
            .report(AttemptId(2))
            .expect("must be finished");
        assert_eq!(rep.state, AttemptState::Failed);
        assert_eq!(rep.reason, "image `nope` not found");
    }

    #[tokio::test]
    async fn a_stop_terms_then_kills_after_the_grace() {
        let mut r = rig();
        r.agent
            .on_start(start(3, &["run_for=60000", "ignore_term"]));
        r.agent.on_stop(v1::StopAttempt {
            attempt_id: 3,
            reason: "cancel".into(),
        });
        let rep = finish(&mut r, 3).await;
        assert_eq!(rep.state, AttemptState::Cancelled);
        let sigs: Vec<Signal> = r.mock.signals().into_iter().map(|(_, s)| s).collect();
        assert_eq!(sigs, vec![Signal::Term, Signal::Kill]);
    }

    #[tokio::test]
    async fn a_time_limit_stops_the_attempt_as_timed_out() {
        let mut r = rig();
        let mut s = start(4, &["run_for=60000"]);
        s.spec.as_mut().unwrap().timeout_ms = Some(30);
        r.agent.on_start(s);
        let rep = finish(&mut r, 4).await;
        assert_eq!(rep.state, AttemptState::TimedOut);
        assert_eq!(r.mock.signals(), vec![(AttemptId(4), Signal::Term)]);
    }

    #[tokio::test]
    async fn a_task_for_a_missing_driver_fails_naming_it() {
        let mut r = rig();
        let mut s = start(5, &["run_for=10"]);
        let spec = s.spec.as_mut().unwrap();
        spec.driver = DriverKind::Docker.as_str().into();
        spec.image = "berth-test/busybox:latest".into();
        r.agent.on_start(s);
        let u = updates(&mut r);
        assert_eq!(u.last().unwrap().1, "failed");
        assert_eq!(u.last().unwrap().2, "worker Tessa has no docker driver");
        assert!(r.mock.started().is_empty());
    }

    #[tokio::test]
    async fn a_stop_that_overtook_its_start_cancels_the_attempt_for_good() {
        let mut r = rig();
        r.agent.on_stop(v1::StopAttempt {
            attempt_id: 6,
            reason: "cancelled by user".into(),
        });
        // The master gets a terminal fact and can release the resources.
        let u = updates(&mut r);
        assert_eq!(
            u,
            vec![(
                seq_final(AttemptId(6)),
                "cancelled".to_string(),
                "stopped before it started".to_string()
            )]
        );
        // The delayed start never runs it, before or after a restart.
        r.agent.on_start(start(6, &["run_for=10"]));
        assert!(r.mock.started().is_empty());
        let Rig { agent, _dir, .. } = r;
        drop(agent);
        let mut r = rig_in(_dir);
        r.agent.on_start(start(6, &["run_for=10"]));
        assert!(r.mock.started().is_empty());
        assert_eq!(r.agent.allocated(), Resources::ZERO);
        // Forgotten after the ack, and still never started.
        r.agent.on_ack(seq_final(AttemptId(6)));
        r.agent.on_start(start(6, &["run_for=10"]));
        assert!(r.mock.started().is_empty());
    }

    /// A master that refuses the first `refuse` sessions with `code` and
    /// `message`, then welcomes the worker (and says so on `welcomed`).
    struct FakeMaster {
        sessions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        refuse: usize,
        code: tonic::Code,
        message: String,
        welcomed: mpsc::UnboundedSender<()>,
    }

    type MasterStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::MasterMessage, tonic::Status>> + Send>>;

    #[tonic::async_trait]
    impl v1::worker_link_server::WorkerLink for FakeMaster {
        type SessionStream = MasterStream;

        async fn session(
            &self,
            _req: tonic::Request<tonic::Streaming<v1::WorkerMessage>>,
        ) -> Result<tonic::Response<MasterStream>, tonic::Status> {
            use std::sync::atomic::Ordering;
            use tokio_stream::StreamExt;
            if self.sessions.fetch_add(1, Ordering::SeqCst) < self.refuse {
                return Err(tonic::Status::new(self.code, self.message.clone()));
            }
            let _ = self.welcomed.send(());
            let welcome = v1::MasterMessage {
                body: Some(In::Welcome(v1::Welcome {
                    worker_id: "node-1".into(),
                    heartbeat_interval_ms: 1000,
                })),
            };
            let s = tokio_stream::iter(vec![Ok(welcome)]).chain(tokio_stream::pending());
            Ok(tonic::Response::new(Box::pin(s)))
        }
    }

    /// Run a whole agent against a [`FakeMaster`] until it is welcomed
    /// (or gives up); returns how it ended and how many sessions it tried.
    async fn run_against(
        refuse: usize,
        code: tonic::Code,
        message: &str,
    ) -> (Result<(), WorkerError>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sessions = std::sync::Arc::new(AtomicUsize::new(0));
        let (welcomed, mut welcome_seen) = mpsc::unbounded_channel();
        let master = FakeMaster {
            sessions: sessions.clone(),
            refuse,
            code,
            message: message.into(),
            welcomed,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(v1::worker_link_server::WorkerLinkServer::new(master))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let dir = tempfile::tempdir().unwrap();
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let (driver, _mock) = MockDriver::new(exits_tx);
        let cfg = WorkerConfig::new(url, String::new(), "Tessa".into(), dir.path().into());
        let det = Detected {
            total: Resources {
                cpu_millis: 4000,
                memory_bytes: 4 << 30,
                storage_bytes: 0,
                gpus: 0,
            },
            gpus: vec![],
            drivers: vec!["process".into()],
            node_id: "node-1".into(),
        };
        let drivers = Drivers {
            process: Box::new(driver),
            docker: None,
        };
        let shutdown = async move {
            welcome_seen.recv().await;
        };
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            run(cfg, det, drivers, exits, shutdown),
        )
        .await
        .expect("the agent ends in time");
        (ended, sessions.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_name_still_held_by_a_live_worker_is_retried_until_it_is_free() {
        let (ended, sessions) = run_against(
            2,
            tonic::Code::FailedPrecondition,
            "worker name 'Tessa' is already used by ready worker node-0; pick another --name",
        )
        .await;
        assert!(ended.is_ok(), "{ended:?}");
        assert_eq!(sessions, 3);
    }

    #[tokio::test]
    async fn any_other_refusal_ends_the_agent() {
        let (ended, sessions) =
            run_against(usize::MAX, tonic::Code::Unauthenticated, "bad token").await;
        match ended {
            Err(WorkerError::Refused(m)) => assert!(m.contains("bad token"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(sessions, 1);
    }
}
