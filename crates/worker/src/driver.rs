//! Drivers: how an attempt is run. The agent owns the attempt table, the
//! session and the outcome rules; a driver only starts, watches, signals
//! and cleans up what runs, and records what happened in the attempt
//! folder (`log`, `exit`, `failed`) — the folder stays the one source of
//! truth, so an agent restart loses nothing.
//!
//! The contract every driver keeps:
//! * [`Driver::start`] returns at once (no awaiting an image pull): slow
//!   work happens in a task of the driver's own, which writes its result
//!   to the folder and then sends the attempt's id on the `exits` channel
//!   it was built with.
//! * [`Driver::running`] is cheap and answers from memory or the folder; it
//!   is polled every tick.
//! * [`Driver::reattach`] is called once per running attempt found at agent
//!   start; the driver watches it again (or finds it ended and records so).
//! * [`Driver::signal`] asks the attempt to end (`Term`) or forces it
//!   (`Kill`); the agent keeps the stop grace between the two.
//!
//! Implementations: [`ProcessDriver`] (here), `docker::DockerDriver`, and a
//! scriptable `MockDriver` for the agent's unit tests.

use crate::attempt_dir::AttemptDir;
use crate::cgroup::{self, Containment};
use crate::process;
use berth_core::{AttemptId, DriverKind, TaskId, TaskSpec};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How an attempt is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Please stop (SIGTERM).
    Term,
    /// Stop now (SIGKILL).
    Kill,
}

/// Everything a driver needs to start one attempt.
#[derive(Debug, Clone)]
pub struct Launch {
    pub dir: AttemptDir,
    pub task: TaskId,
    pub spec: TaskSpec,
    /// The GPU device ids the master handed to this attempt.
    pub gpu_ids: Vec<u32>,
    /// `BERTH_*` variables for the task (the driver adds the user's own
    /// `spec.env` and anything driver-specific).
    pub env: Vec<(String, String)>,
}

pub trait Driver: Send {
    /// Start the attempt. `Err` is the reason it could not start at all
    /// (the attempt fails with it); anything that goes wrong later is
    /// recorded in the folder by the driver.
    fn start(&mut self, launch: Launch) -> Result<(), String>;

    /// Is the attempt still running (or still starting)? `false` once the
    /// driver has recorded its end, or when nothing runs it any more.
    fn running(&self, dir: &AttemptDir) -> bool;

    /// Watch an attempt again after an agent restart. Returns whether it
    /// may still be running; `false` means it is gone and the folder says
    /// all there is to say.
    fn reattach(&mut self, dir: &AttemptDir) -> bool;

    /// Ask the attempt to end, or force it.
    fn signal(&mut self, dir: &AttemptDir, signal: Signal);

    /// Periodic housekeeping (every tick), given the attempts the agent
    /// holds as running. The docker driver reaps dangling containers here.
    fn housekeeping(&mut self, _running: &BTreeSet<AttemptId>) {}
}

/// The drivers this agent has, by kind.
pub struct Drivers {
    pub process: Box<dyn Driver>,
    pub docker: Option<Box<dyn Driver>>,
}

impl Drivers {
    pub fn get(&mut self, kind: DriverKind) -> Option<&mut (dyn Driver + 'static)> {
        match kind {
            DriverKind::Process => Some(self.process.as_mut()),
            DriverKind::Docker => self.docker.as_deref_mut(),
        }
    }

    pub fn get_ref(&self, kind: DriverKind) -> Option<&(dyn Driver + 'static)> {
        match kind {
            DriverKind::Process => Some(self.process.as_ref()),
            DriverKind::Docker => self.docker.as_deref(),
        }
    }

    pub fn housekeeping(&mut self, running: &BTreeSet<AttemptId>) {
        self.process.housekeeping(running);
        if let Some(d) = self.docker.as_mut() {
            d.housekeeping(running);
        }
    }
}

/// The process driver: the command runs under the `sh` supervisor of
/// [`process`], which outlives the agent, in a cgroup of its own where the
/// host allows it ([`Containment`]).
pub struct ProcessDriver {
    exits: mpsc::UnboundedSender<AttemptId>,
    containment: Containment,
    /// Attempts whose supervisor is this agent's child and has not been
    /// finished yet (its wait task records the end, then removes it).
    children: Arc<Mutex<BTreeSet<AttemptId>>>,
    next_sweep: Instant,
}

/// How often cgroups that no attempt owns any more are looked for.
const CGROUP_SWEEP: Duration = Duration::from_secs(10);

impl ProcessDriver {
    pub fn new(exits: mpsc::UnboundedSender<AttemptId>, containment: Containment) -> ProcessDriver {
        ProcessDriver {
            exits,
            containment,
            children: Arc::default(),
            next_sweep: Instant::now() + CGROUP_SWEEP,
        }
    }

    /// Kill and remove attempt cgroups that no running attempt owns (left
    /// by an agent that died while finishing one).
    fn sweep_cgroups(&self, running: &BTreeSet<AttemptId>) {
        let Some(base) = self.containment.base() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        let children = self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for e in entries.flatten() {
            let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let id = AttemptId(id);
            if running.contains(&id) || children.contains(&id) {
                continue;
            }
            let path = e.path();
            if !cgroup::members(&path).is_empty() {
                tracing::warn!(attempt = %id, cgroup = %path.display(),
                    "killing processes of an attempt this worker no longer runs");
            }
            cgroup::kill_all(&path, None);
            let _ = cgroup::remove(&path);
        }
    }
}

impl Driver for ProcessDriver {
    fn start(&mut self, l: Launch) -> Result<(), String> {
        let spec = &l.spec;
        let path_var = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let program = spec.command.first().map(String::as_str).unwrap_or("");
        if process::resolve(program, path_var).is_none() {
            return Err(format!("starting `{program}`: command not found on PATH"));
        }
        let mut env = spec.env.clone();
        env.extend(l.env.iter().cloned());
        env.push((
            "BERTH_OUTPUT_DIR".into(),
            l.dir.output().display().to_string(),
        ));
        if !l.gpu_ids.is_empty() {
            let ids: Vec<String> = l.gpu_ids.iter().map(u32::to_string).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), ids.join(",")));
            env.push(("NVIDIA_VISIBLE_DEVICES".into(), ids.join(",")));
        }
        let id = l.dir.id;
        let child = process::start(&l.dir, &self.containment, &spec.command, &env)?;
        let pid = child.id().unwrap_or(0);
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        let exits = self.exits.clone();
        let children = self.children.clone();
        let dir = l.dir.clone();
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
            // Kill what is left, record `exit` durably, then tell the agent.
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || process::finish(&d)).await;
            children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&dir.id);
            let _ = exits.send(dir.id);
        });
        tracing::info!(attempt = %id, task = l.task.0, pid, "attempt started (process)");
        Ok(())
    }

    fn running(&self, dir: &AttemptDir) -> bool {
        if self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&dir.id)
        {
            return true;
        }
        if dir.exit_status().is_some() {
            return false;
        }
        if process::supervisor_alive(dir) {
            return true;
        }
        // Re-attached and ended while we were away (or since): nothing of
        // it may be left before its end is reported.
        process::finish(dir);
        false
    }

    fn reattach(&mut self, dir: &AttemptDir) -> bool {
        let alive = self.running(dir);
        if alive {
            tracing::info!(attempt = %dir.id, pid = dir.pid(), "re-attached to running attempt");
        }
        alive
    }

    fn signal(&mut self, dir: &AttemptDir, signal: Signal) {
        match signal {
            Signal::Term => process::terminate(dir),
            Signal::Kill => process::force(dir),
        }
    }

    fn housekeeping(&mut self, running: &BTreeSet<AttemptId>) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + CGROUP_SWEEP;
            self.sweep_cgroups(running);
        }
    }
}

/// A driver that tests script through the task's command:
/// `run_for=MS`, `exit_code=N`, `start_error=TEXT`, `ignore_term`,
/// `log=TEXT`. It records its results in the folder like a real driver.
#[cfg(test)]
pub mod mock {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Default)]
    struct Shared {
        running: BTreeMap<AttemptId, tokio::sync::mpsc::UnboundedSender<Signal>>,
        started: Vec<AttemptId>,
        signals: Vec<(AttemptId, Signal)>,
    }

    /// A cheap handle the test keeps to look at what the driver saw.
    #[derive(Clone, Default)]
    pub struct MockLog(Arc<Mutex<Shared>>);

    impl MockLog {
        pub fn started(&self) -> Vec<AttemptId> {
            self.0.lock().unwrap().started.clone()
        }
        pub fn signals(&self) -> Vec<(AttemptId, Signal)> {
            self.0.lock().unwrap().signals.clone()
        }
    }

    pub struct MockDriver {
        exits: mpsc::UnboundedSender<AttemptId>,
        log: MockLog,
    }

    impl MockDriver {
        pub fn new(exits: mpsc::UnboundedSender<AttemptId>) -> (MockDriver, MockLog) {
            let log = MockLog::default();
            (
                MockDriver {
                    exits,
                    log: log.clone(),
                },
                log,
            )
        }
    }

    fn arg<'a>(command: &'a [String], key: &str) -> Option<&'a str> {
        command.iter().find_map(|a| {
            a.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('=').or(rest.is_empty().then_some("")))
        })
    }

    impl Driver for MockDriver {
        fn start(&mut self, l: Launch) -> Result<(), String> {
            let cmd = &l.spec.command;
            if let Some(e) = arg(cmd, "start_error") {
                return Err(e.to_string());
            }
            let run_for = arg(cmd, "run_for")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let code: i32 = arg(cmd, "exit_code")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let ignore_term = arg(cmd, "ignore_term").is_some();
            let text = arg(cmd, "log").unwrap_or("").to_string();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            {
                let mut s = self.log.0.lock().unwrap();
                s.running.insert(l.dir.id, tx);
                s.started.push(l.dir.id);
            }
            let exits = self.exits.clone();
            let shared = self.log.0.clone();
            let dir = l.dir.clone();
            tokio::spawn(async move {
                let _ = std::fs::write(dir.log(), text);
                let sleep = tokio::time::sleep(Duration::from_millis(run_for));
                tokio::pin!(sleep);
                let status = loop {
                    tokio::select! {
                        _ = &mut sleep => break code,
                        Some(sig) = rx.recv() => match sig {
                            Signal::Term if ignore_term => {}
                            Signal::Term => break 128 + libc::SIGTERM,
                            Signal::Kill => break 128 + libc::SIGKILL,
                        },
                    }
                };
                let _ = dir.set_exit_status(status);
                shared.lock().unwrap().running.remove(&dir.id);
                let _ = exits.send(dir.id);
            });
            Ok(())
        }

        fn running(&self, dir: &AttemptDir) -> bool {
            self.log.0.lock().unwrap().running.contains_key(&dir.id)
        }

        fn reattach(&mut self, _dir: &AttemptDir) -> bool {
            false
        }

        fn signal(&mut self, dir: &AttemptDir, signal: Signal) {
            let mut s = self.log.0.lock().unwrap();
            s.signals.push((dir.id, signal));
            if let Some(tx) = s.running.get(&dir.id) {
                let _ = tx.send(signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt_dir::Meta;
    use berth_core::Resources;
    use std::time::Duration;

    #[tokio::test]
    async fn the_process_driver_gives_the_task_its_variables() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(9));
        dir.create(Meta {
            task: TaskId(4),
            resources: Resources::ZERO,
            driver: DriverKind::Process,
        })
        .unwrap();
        let (tx, mut exits) = mpsc::unbounded_channel();
        let mut d = ProcessDriver::new(tx, Containment::ProcessGroup);
        let cmd = "echo $BERTH_TASK_ID $BERTH_OUTPUT_DIR $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $X";
        let mut spec =
            TaskSpec::process(vec!["sh".into(), "-c".into(), cmd.into()], Resources::ZERO);
        spec.env = vec![("X".into(), "x".into())];
        d.start(Launch {
            dir: dir.clone(),
            task: TaskId(4),
            spec,
            gpu_ids: vec![1, 3],
            env: vec![("BERTH_TASK_ID".into(), "4".into())],
        })
        .unwrap();
        let id = tokio::time::timeout(Duration::from_secs(10), exits.recv())
            .await
            .unwrap();
        assert_eq!(id, Some(AttemptId(9)));
        assert!(!d.running(&dir));
        assert_eq!(dir.exit_status(), Some(0));
        let log = std::fs::read_to_string(dir.log()).unwrap();
        assert_eq!(log, format!("4 {} 1,3 1,3 x\n", dir.output().display()));
    }

    #[test]
    fn a_missing_program_is_refused_before_anything_runs() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(1));
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut d = ProcessDriver::new(tx, Containment::ProcessGroup);
        let e = d
            .start(Launch {
                dir,
                task: TaskId(1),
                spec: TaskSpec::process(vec!["no-such-program-berth".into()], Resources::ZERO),
                gpu_ids: vec![],
                env: vec![],
            })
            .unwrap_err();
        assert_eq!(
            e,
            "starting `no-such-program-berth`: command not found on PATH"
        );
    }
}
