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

use crate::attempt_dir::{AttemptDir, Meta, Tombstones};
use crate::process;
use crate::{Detected, WorkerConfig, WorkerError};
use berth_core::{AttemptId, AttemptState, DriverKind, Resources, TaskId, TaskSpec};
use berth_proto::v1::master_message::Body as In;
use berth_proto::v1::worker_link_client::WorkerLinkClient;
use berth_proto::v1::worker_message::Body as Out;
use berth_proto::{
    BearerToken, HeldReport, attempt_of_final_seq, final_seq as seq_final,
    running_seq as seq_running, v1,
};
use std::collections::BTreeMap;
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
    Running { pgid: i32, kill_at: Option<Instant> },
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
    attempts: BTreeMap<AttemptId, Local>,
    out: Option<mpsc::UnboundedSender<v1::WorkerMessage>>,
    exits_tx: mpsc::UnboundedSender<AttemptId>,
    stop_grace: Duration,
    /// Shutdown was asked for with drain-on-exit: no new work, exit once
    /// everything held has finished and been acknowledged.
    draining: bool,
}

impl Agent {
    /// Load local state: every attempt folder is re-attached (running) or
    /// queued for reporting (finished while the agent was away).
    pub fn new(
        cfg: WorkerConfig,
        det: Detected,
        exits_tx: mpsc::UnboundedSender<AttemptId>,
    ) -> Result<Agent, WorkerError> {
        let root = cfg.data_dir.join("attempts");
        let io = |source| WorkerError::DataDir {
            path: root.clone(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(io)?;
        let done = Tombstones::open(cfg.data_dir.join("done")).map_err(io)?;
        let mut attempts = BTreeMap::new();
        for dir in AttemptDir::scan(&root).map_err(io)? {
            let Ok(meta) = dir.meta() else {
                tracing::warn!(attempt = %dir.id, "attempt folder without valid meta; removing it");
                let _ = dir.remove();
                continue;
            };
            let phase = match (dir.exit_status(), dir.pid()) {
                (Some(code), _) => Phase::Finished(final_report(&dir, Some(code))),
                (None, Some(pid)) if process::supervisor_alive(&dir) => {
                    tracing::info!(attempt = %dir.id, pid, "re-attached to running attempt");
                    Phase::Running {
                        pgid: pid,
                        kill_at: None,
                    }
                }
                (None, _) => Phase::Finished(final_report(&dir, None)),
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
            attempts,
            out: None,
            exits_tx,
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
        let resources = match &spec {
            Some(Ok(spec)) => spec.resources,
            _ => Resources::ZERO,
        };
        let meta = Meta {
            task: TaskId(s.task_id),
            resources,
        };
        if let Err(e) = dir.create(meta) {
            return self.fail_now(dir, meta, format!("creating the attempt folder: {e}"));
        }
        let spec = match spec {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => return self.fail_now(dir, meta, format!("invalid task spec: {e}")),
            None => return self.fail_now(dir, meta, "start message without a task spec".into()),
        };
        if spec.driver != DriverKind::Process {
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
        let path_var = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        if process::resolve(&spec.command[0], path_var).is_none() {
            let reason = format!("starting `{}`: command not found on PATH", spec.command[0]);
            return self.fail_now(dir, meta, reason);
        }
        if let Some(limit) = spec.timeout_ms
            && let Err(e) = dir.set_limit(epoch_ms() + limit as i64, limit)
        {
            return self.fail_now(dir, meta, format!("recording the time limit: {e}"));
        }
        let mut env = spec.env.clone();
        env.push(("BERTH_TASK_ID".into(), s.task_id.to_string()));
        env.push(("BERTH_ATTEMPT_ID".into(), id.0.to_string()));
        env.push((
            "BERTH_OUTPUT_DIR".into(),
            dir.output().display().to_string(),
        ));
        if !s.gpu_ids.is_empty() {
            let ids: Vec<String> = s.gpu_ids.iter().map(u32::to_string).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), ids.join(",")));
            env.push(("NVIDIA_VISIBLE_DEVICES".into(), ids.join(",")));
        }
        let mut child = match process::spawn(&dir, &spec.command, &env) {
            Ok(c) => c,
            Err(e) => return self.fail_now(dir, meta, format!("starting the supervisor: {e}")),
        };
        let pid = child.id().unwrap_or(0);
        if let Err(e) = dir.set_pid(pid) {
            tracing::warn!(attempt = %id, error = %e, "could not record the supervisor pid");
        }
        let exits = self.exits_tx.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exits.send(id);
        });
        tracing::info!(attempt = %id, task = s.task_id, pid, "attempt started");
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
                phase: Phase::Running {
                    pgid: pid as i32,
                    kill_at: None,
                },
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
                phase: Phase::Running { pgid, kill_at },
                ..
            }) if kill_at.is_none() => {
                tracing::info!(attempt = %id, reason = %s.reason, "stopping attempt");
                let _ = dir.mark_stopped();
                process::signal_group(*pgid, libc::SIGTERM);
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
            if let Err(e) = dir.remove() {
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
        let report = final_report(&l.dir, exit);
        if exit.is_none() {
            // Keep the outcome across a restart of the agent.
            let _ = l.dir.set_exit_status(-1);
        }
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
            if let Phase::Running { pgid, kill_at } = &mut l.phase {
                if l.dir.exit_status().is_some() || !process::supervisor_alive(&l.dir) {
                    ended.push(*id);
                } else if kill_at.is_none()
                    && l.dir.limit().is_some_and(|(deadline, _)| wall >= deadline)
                {
                    tracing::info!(attempt = %id, "time limit reached; stopping attempt");
                    let _ = l.dir.mark_timed_out();
                    process::signal_group(*pgid, libc::SIGTERM);
                    *kill_at = Some(now + grace);
                } else if kill_at.is_some_and(|t| now >= t) {
                    tracing::warn!(attempt = %id, "grace period over; sending SIGKILL");
                    process::signal_group(*pgid, libc::SIGKILL);
                    *kill_at = None;
                }
            }
        }
        for id in ended {
            self.on_exit(id);
        }
        let running: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, l)| matches!(l.phase, Phase::Running { .. }))
            .map(|(id, _)| *id)
            .collect();
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
                held: self.held(),
                draining: self.draining,
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
        // Resynchronise: all logs from the start, then every unacked result.
        let ids: Vec<AttemptId> = self.attempts.keys().copied().collect();
        for id in ids {
            if let Some(l) = self.attempts.get_mut(&id) {
                l.shipped = 0;
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
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let mut agent = Agent::new(cfg, det, exits_tx)?;
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
