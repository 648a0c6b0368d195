//! The agent loop: keeps one session with the master, runs what it is told
//! to run, reports what it holds, and survives both its own restarts and
//! the master's.
//!
//! One task owns all local state (no locks). Each session starts with a
//! hello listing every attempt held (running or finished but not yet
//! acknowledged), then all logs are re-shipped from the start (the master
//! writes them at their offsets, so this is idempotent) and every
//! unacknowledged final result is resent. The attempt folders are the
//! durable outbox: a result is forgotten only after the master's ack.
//!
//! How an attempt runs is its driver's business (`driver`): the agent
//! picks the driver by the task's kind, and every driver records the
//! outcome in the attempt folder, from which [`final_report`] reads it.

use crate::attempt_dir::{AttemptDir, Meta, Spares, Tombstones};
use crate::driver::{Drivers, Launch, Signal};
use crate::{Detected, WorkerConfig, WorkerError};
use berth_core::{AttemptId, AttemptState, Resources, TaskId, TaskSpec};
use berth_proto::v1::master_message::Body as In;
use berth_proto::v1::worker_link_client::WorkerLinkClient;
use berth_proto::v1::worker_message::Body as Out;
use berth_proto::{
    BearerToken, HeldReport, attempt_of_final_seq, final_seq as seq_final,
    running_seq as seq_running, v1,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const TICK: Duration = Duration::from_millis(100);
const LOG_CHUNK: usize = 256 * 1024;
/// At most this much of one running attempt's log is shipped per tick.
const LOG_PER_TICK: u64 = 1 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

enum Phase {
    /// Started (or starting) and not yet ended; `kill_at` is set while a
    /// stop is under way: when to force it.
    Running {
        kill_at: Option<Instant>,
    },
    Finished(HeldReport),
}

struct Local {
    dir: AttemptDir,
    meta: Meta,
    phase: Phase,
    shipped: u64,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The result of an attempt from what its folder says.
fn final_report(dir: &AttemptDir, exit: Option<i32>) -> HeldReport {
    let id = dir.id;
    if let Some(reason) = dir.failed() {
        return HeldReport {
            attempt_id: id,
            state: AttemptState::Failed,
            exit_code: None,
            reason,
        };
    }
    if dir.is_timed_out() {
        let limit = dir.limit().map_or(0, |(_, l)| l);
        return HeldReport {
            attempt_id: id,
            state: AttemptState::TimedOut,
            exit_code: exit,
            reason: format!("exceeded its time limit of {:.1}s", limit as f64 / 1000.0),
        };
    }
    let (state, reason) = match (exit, dir.is_stopped()) {
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

pub struct Agent {
    cfg: WorkerConfig,
    det: Detected,
    root: PathBuf,
    done: Tombstones,
    spares: Spares,
    attempts: BTreeMap<AttemptId, Local>,
    out: Option<mpsc::UnboundedSender<v1::WorkerMessage>>,
    drivers: Drivers,
    stop_grace: Duration,
    /// Shutdown was asked for with drain-on-exit: no new work, exit once
    /// everything held has finished and been acknowledged.
    draining: bool,
}

impl Agent {
    /// Load local state: every attempt folder is re-attached (running) or
    /// queued for reporting (finished while the agent was away). Runs
    /// inside the tokio runtime (drivers may start watchers).
    pub fn new(
        cfg: WorkerConfig,
        det: Detected,
        mut drivers: Drivers,
    ) -> Result<Agent, WorkerError> {
        let root = cfg.data_dir.join("attempts");
        let io = |source| WorkerError::DataDir {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(io)?;
        let done = Tombstones::open(cfg.data_dir.join("tombstones")).map_err(io)?;
        let spares = Spares::open(cfg.data_dir.join("spare")).map_err(io)?;
        let mut attempts = BTreeMap::new();
        for dir in AttemptDir::scan(&root).map_err(io)? {
            let Ok(meta) = dir.meta() else {
                tracing::warn!(attempt = %dir.id, "attempt folder without valid meta; removing it");
                let _ = dir.remove();
                continue;
            };
            let exit = dir.exit_status();
            let phase = if exit.is_some() || dir.failed().is_some() {
                Phase::Finished(final_report(&dir, exit))
            } else {
                match drivers.get(meta.driver).map(|d| d.reattach(&dir)) {
                    Some(true) => Phase::Running { kill_at: None },
                    Some(false) => Phase::Finished(final_report(&dir, dir.exit_status())),
                    None => {
                        let reason = format!(
                            "the agent restarted without its {} driver and could not re-attach",
                            meta.driver.as_str()
                        );
                        let _ = dir.set_failed(&reason);
                        Phase::Finished(final_report(&dir, None))
                    }
                }
            };
            attempts.insert(
                dir.id,
                Local {
                    dir,
                    meta,
                    phase,
                    shipped: 0,
                },
            );
        }
        let stop_grace = cfg.stop_grace;
        Ok(Agent {
            cfg,
            det,
            root,
            done,
            spares,
            attempts,
            out: None,
            drivers,
            stop_grace,
            draining: false,
        })
    }

    fn held(&self) -> Vec<v1::HeldAttempt> {
        self.attempts
            .iter()
            .map(|(id, l)| match &l.phase {
                Phase::Running { .. } => (&HeldReport {
                    attempt_id: *id,
                    state: AttemptState::Running,
                    exit_code: None,
                    reason: String::new(),
                })
                    .into(),
                Phase::Finished(r) => r.into(),
            })
            .collect()
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
        if self.out.is_none() {
            return;
        }
        let Some(l) = self.attempts.get_mut(&id) else {
            return;
        };
        let Ok(f) = std::fs::File::open(l.dir.log()) else {
            return;
        };
        let mut budget = if all { u64::MAX } else { LOG_PER_TICK };
        let mut buf = vec![0u8; LOG_CHUNK];
        while budget > 0 {
            use std::os::unix::fs::FileExt;
            let n = match f.read_at(&mut buf, l.shipped) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(out) = &self.out {
                let _ = out.send(v1::WorkerMessage {
                    body: Some(Out::Log(v1::LogChunk {
                        attempt_id: id.0,
                        offset: l.shipped,
                        data: buf[..n].to_vec(),
                    })),
                });
            }
            l.shipped += n as u64;
            budget = budget.saturating_sub(n as u64);
        }
    }

    fn allocated(&self) -> Resources {
        self.attempts
            .values()
            .filter(|l| matches!(l.phase, Phase::Running { .. }))
            .map(|l| l.meta.resources)
            .sum()
    }

    fn fail_now(&mut self, dir: AttemptDir, meta: Meta, reason: String) {
        tracing::warn!(attempt = %dir.id, %reason, "attempt failed to start");
        // Kept in the folder, so a restarted agent reports the same.
        let _ = dir.set_failed(&reason);
        let report = HeldReport {
            attempt_id: dir.id,
            state: AttemptState::Failed,
            exit_code: None,
            reason,
        };
        self.send_update(seq_final(dir.id), &report);
        self.attempts.insert(
            dir.id,
            Local {
                dir,
                meta,
                phase: Phase::Finished(report),
                shipped: 0,
            },
        );
    }

    fn on_start(&mut self, s: v1::StartAttempt) {
        let id = AttemptId(s.attempt_id);
        if self.attempts.contains_key(&id) || self.done.contains(id) {
            return; // a resend; we have (or had) it
        }
        let dir = AttemptDir::new(&self.root, id);
        let spec = s.spec.map(TaskSpec::try_from);
        let (resources, driver) = match &spec {
            Some(Ok(spec)) => (spec.resources, spec.driver),
            _ => (Resources::ZERO, berth_core::DriverKind::Process),
        };
        let meta = Meta {
            task: TaskId(s.task_id),
            resources,
            driver,
        };
        self.spares.take_for(&dir);
        if let Err(e) = dir.create(meta) {
            return self.fail_now(dir, meta, format!("creating the attempt folder: {e}"));
        }
        let spec = match spec {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => return self.fail_now(dir, meta, format!("invalid task spec: {e}")),
            None => return self.fail_now(dir, meta, "start message without a task spec".into()),
        };
        if self.drivers.get_ref(spec.driver).is_none() {
            let reason = format!(
                "worker {} has no {} driver",
                self.cfg.name,
                spec.driver.as_str()
            );
            return self.fail_now(dir, meta, reason);
        }
        if let Err(short) = resources.fits_within(&self.allocated(), &self.det.total) {
            return self.fail_now(dir, meta, format!("worker admission refused: {short}"));
        }
        if let Some(limit) = spec.timeout_ms
            && let Err(e) = dir.set_limit(epoch_ms() + limit as i64, limit)
        {
            return self.fail_now(dir, meta, format!("recording the time limit: {e}"));
        }
        let launch = Launch {
            dir: dir.clone(),
            task: TaskId(s.task_id),
            spec,
            gpu_ids: s.gpu_ids,
            env: vec![
                ("BERTH_TASK_ID".into(), s.task_id.to_string()),
                ("BERTH_ATTEMPT_ID".into(), id.0.to_string()),
            ],
        };
        let started = match self.drivers.get(driver) {
            Some(d) => d.start(launch),
            None => Err(format!(
                "worker {} has no {} driver",
                self.cfg.name,
                driver.as_str()
            )),
        };
        if let Err(reason) = started {
            return self.fail_now(dir, meta, reason);
        }
        self.send_update(
            seq_running(id),
            &HeldReport {
                attempt_id: id,
                state: AttemptState::Running,
                exit_code: None,
                reason: String::new(),
            },
        );
        self.attempts.insert(
            id,
            Local {
                dir,
                meta,
                phase: Phase::Running { kill_at: None },
                shipped: 0,
            },
        );
    }

    fn on_stop(&mut self, s: v1::StopAttempt) {
        let id = AttemptId(s.attempt_id);
        let grace = self.stop_grace;
        match self.attempts.get_mut(&id) {
            Some(Local {
                dir,
                meta,
                phase: Phase::Running { kill_at },
                ..
            }) if kill_at.is_none() => {
                tracing::info!(attempt = %id, reason = %s.reason, "stopping attempt");
                let _ = dir.mark_stopped();
                if let Some(d) = self.drivers.get(meta.driver) {
                    d.signal(dir, Signal::Term);
                }
                *kill_at = Some(Instant::now() + grace);
            }
            // Already stopping: the SIGKILL deadline stands.
            Some(Local {
                phase: Phase::Running { .. },
                ..
            }) => {}
            Some(Local {
                phase: Phase::Finished(r),
                ..
            }) => {
                let r = r.clone();
                self.send_update(seq_final(id), &r);
            }
            None => {}
        }
    }

    fn on_ack(&mut self, seq: u64) {
        let Some(id) = attempt_of_final_seq(seq) else {
            return;
        };
        if let Some(Local {
            phase: Phase::Finished(_),
            dir,
            ..
        }) = self.attempts.get(&id)
        {
            if let Err(e) = self.done.add(id) {
                tracing::warn!(attempt = %id, error = %e, "could not record tombstone");
            }
            // Kept as a spare for the next attempt (or removed).
            if let Err(e) = self.spares.put(dir).or_else(|_| dir.remove()) {
                tracing::warn!(attempt = %id, error = %e, "could not remove attempt folder");
            }
            self.attempts.remove(&id);
        }
    }

    /// An attempt's supervisor ended (or vanished): record and report it.
    fn on_exit(&mut self, id: AttemptId) {
        let Some(l) = self.attempts.get_mut(&id) else {
            return;
        };
        if !matches!(l.phase, Phase::Running { .. }) {
            return;
        }
        let exit = l.dir.exit_status();
        let mut report = final_report(&l.dir, exit);
        if exit.is_none() {
            // Keep the outcome across a restart of the agent.
            let _ = l.dir.set_exit_status(-1);
        }
        // The attempt has ended and its outcome is on disk. What the
        // master must have before the final report goes first: the output
        // files (an output over the limit fails the report), the whole log.
        crate::outputs::finish(&l.dir, &mut report, self.cfg.max_output, self.out.as_ref());
        tracing::info!(attempt = %id, state = %report.state, exit = ?exit, "attempt ended");
        l.phase = Phase::Finished(report.clone());
        self.ship_logs(id, true);
        self.send_update(seq_final(id), &report);
    }

    /// Periodic work: notice re-attached attempts that ended, escalate
    /// stops past their grace, ship new log bytes.
    fn poll(&mut self) {
        let now = Instant::now();
        let wall = epoch_ms();
        let grace = self.stop_grace;
        let mut ended = Vec::new();
        for (id, l) in &mut self.attempts {
            if let Phase::Running { kill_at } = &mut l.phase {
                let Some(driver) = self.drivers.get(l.meta.driver) else {
                    ended.push(*id);
                    continue;
                };
                if !driver.running(&l.dir) {
                    ended.push(*id);
                } else if kill_at.is_none()
                    && l.dir.limit().is_some_and(|(deadline, _)| wall >= deadline)
                {
                    tracing::info!(attempt = %id, "time limit reached; stopping attempt");
                    let _ = l.dir.mark_timed_out();
                    driver.signal(&l.dir, Signal::Term);
                    *kill_at = Some(now + grace);
                } else if kill_at.is_some_and(|t| now >= t) {
                    tracing::warn!(attempt = %id, "grace period over; forcing it to stop");
                    driver.signal(&l.dir, Signal::Kill);
                    *kill_at = None;
                }
            }
        }
        for id in ended {
            self.on_exit(id);
        }
        let running: BTreeSet<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, l)| matches!(l.phase, Phase::Running { .. }))
            .map(|(id, _)| *id)
            .collect();
        self.drivers.housekeeping(&running);
        for id in running {
            self.ship_logs(id, false);
        }
    }

    fn heartbeat(&self) {
        self.send(Out::Heartbeat(v1::Heartbeat {
            held: self.held(),
            draining: self.draining,
        }));
    }

    /// Shutdown was asked for. Returns true to exit now; false to drain
    /// first (with `drain_on_exit`).
    fn begin_shutdown(&mut self) -> bool {
        if !self.cfg.drain_on_exit || self.attempts.is_empty() {
            let running = self.attempts.len();
            if running > 0 {
                tracing::info!(
                    running,
                    "agent stopping; its tasks keep running and are re-attached at the next start"
                );
            }
            return true;
        }
        tracing::info!(
            held = self.attempts.len(),
            "draining: no new work; exiting once every attempt has finished"
        );
        self.draining = true;
        false
    }

    /// One session with the master, until it breaks or we are told to stop.
    async fn session(
        &mut self,
        exits: &mut mpsc::UnboundedReceiver<AttemptId>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        connected: &mut bool,
    ) -> Result<SessionEnd, WorkerError> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.cfg.master.clone())
            .map_err(|e| WorkerError::BadMaster(format!("{}: {e}", self.cfg.master)))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                return Ok(SessionEnd::Lost(format!(
                    "connecting to {}: {e}",
                    self.cfg.master
                )));
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
                // A finished attempt is announced as running: its result
                // follows its output files and log on this stream (below)
                // and must not be applied before they have arrived.
                held: self
                    .held()
                    .into_iter()
                    .map(|h| v1::HeldAttempt {
                        state: AttemptState::Running.as_str().to_string(),
                        has_exit_code: false,
                        exit_code: 0,
                        reason: String::new(),
                        ..h
                    })
                    .collect(),
                draining: self.draining,
                labels: berth_proto::labels_to_wire(self.cfg.labels.clone()),
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
                return Err(WorkerError::Refused(s.message().to_string()));
            }
            Err(s) => {
                return Ok(SessionEnd::Lost(format!(
                    "opening session: {}",
                    s.message()
                )));
            }
        };
        let hb = match inbound.message().await {
            Ok(Some(v1::MasterMessage {
                body: Some(In::Welcome(w)),
            })) => Duration::from_millis(w.heartbeat_interval_ms.max(50)),
            Ok(_) => return Ok(SessionEnd::Lost("the master did not welcome us".into())),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    || s.code() == tonic::Code::Unauthenticated =>
            {
                return Err(WorkerError::Refused(s.message().to_string()));
            }
            Err(s) => return Ok(SessionEnd::Lost(s.message().to_string())),
        };
        tracing::info!(master = %self.cfg.master, held = self.attempts.len(), "session established");
        *connected = true;
        self.out = Some(tx);
        // Resynchronise: all logs from the start, then every unacked result
        // after the output files of its attempt.
        let ids: Vec<AttemptId> = self.attempts.keys().copied().collect();
        for id in ids {
            if let Some(l) = self.attempts.get_mut(&id) {
                l.shipped = 0;
                if let Phase::Finished(r) = &mut l.phase {
                    crate::outputs::finish(&l.dir, r, self.cfg.max_output, self.out.as_ref());
                }
            }
            self.ship_logs(id, true);
            if let Some(Local {
                phase: Phase::Finished(r),
                ..
            }) = self.attempts.get(&id)
            {
                let r = r.clone();
                self.send_update(seq_final(id), &r);
            }
        }
        let mut tick = tokio::time::interval(TICK);
        let mut next_hb = Instant::now() + hb;
        let end = loop {
            tokio::select! {
                _ = shutdown.as_mut(), if !self.draining => {
                    if self.begin_shutdown() {
                        break SessionEnd::Shutdown;
                    }
                    self.heartbeat();
                }
                m = inbound.message() => match m {
                    Ok(Some(v1::MasterMessage { body: Some(body) })) => match body {
                        In::Start(s) => self.on_start(s),
                        In::Stop(s) => self.on_stop(s),
                        In::Ack(a) => self.on_ack(a.seq),
                        In::Welcome(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => break SessionEnd::Lost("the master closed the session".into()),
                    Err(s) => break SessionEnd::Lost(s.message().to_string()),
                },
                Some(id) = exits.recv() => self.on_exit(id),
                _ = tick.tick() => {
                    self.poll();
                    if self.draining && self.attempts.is_empty() {
                        tracing::info!("drained: every attempt finished and acknowledged");
                        break SessionEnd::Shutdown;
                    }
                    if Instant::now() >= next_hb {
                        self.heartbeat();
                        next_hb = Instant::now() + hb;
                    }
                }
            }
        };
        self.out = None;
        Ok(end)
    }

    /// Between sessions: keep noticing exits, for `wait`. Returns true on
    /// shutdown.
    async fn idle(
        &mut self,
        wait: Duration,
        exits: &mut mpsc::UnboundedReceiver<AttemptId>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let until = tokio::time::sleep(wait);
        tokio::pin!(until);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.as_mut(), if !self.draining => {
                    if self.begin_shutdown() {
                        return true;
                    }
                }
                _ = &mut until => return false,
                Some(id) = exits.recv() => self.on_exit(id),
                _ = tick.tick() => {
                    self.poll();
                    if self.draining && self.attempts.is_empty() {
                        return true;
                    }
                }
            }
        }
    }
}

/// Run the agent until `shutdown` resolves. Running tasks are left running
/// (a restarted agent re-attaches to them).
pub async fn run(
    cfg: WorkerConfig,
    det: Detected,
    drivers: Drivers,
    mut exits: mpsc::UnboundedReceiver<AttemptId>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let mut agent = Agent::new(cfg, det, drivers)?;
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut connected = false;
        match agent
            .session(&mut exits, &mut shutdown, &mut connected)
            .await?
        {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost(why) => {
                tracing::warn!(reason = %why, "no session with the master; retrying")
            }
        }
        if connected {
            backoff = Duration::from_millis(100);
        }
        if agent.idle(backoff, &mut exits, &mut shutdown).await {
            return Ok(());
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    //! The agent against the scriptable mock driver: no master, no
    //! processes; the messages it would send are read from its channel.
    use super::*;
    use crate::driver::mock::{MockDriver, MockLog};
    use berth_core::DriverKind;

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
        agent.out = Some(tx);
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
            if let Some(Local {
                phase: Phase::Finished(rep),
                ..
            }) = r.agent.attempts.get(&AttemptId(id))
            {
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
        let dir = r.agent.attempts[&AttemptId(1)].dir.clone();
        r.agent.on_ack(seq_final(AttemptId(1)));
        assert!(!dir.exists());
        assert!(r.agent.attempts.is_empty());
        // A late duplicate start does not run it again.
        r.agent.on_start(start(1, &["run_for=20"]));
        assert!(r.agent.attempts.is_empty());
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
        match &r2.agent.attempts[&AttemptId(2)].phase {
            Phase::Finished(rep) => {
                assert_eq!(rep.state, AttemptState::Failed);
                assert_eq!(rep.reason, "image `nope` not found");
            }
            Phase::Running { .. } => panic!("must be finished"),
        }
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
}
