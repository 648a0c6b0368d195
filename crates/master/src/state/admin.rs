//! Operator actions on workers: `drain` (no new placements; running tasks
//! finish), `undrain` (take work again), `unregister` (remove a drained
//! worker from the records) and
//! `register` (allow a name to join a cluster started with
//! `--require-registration`).

use super::{Effects, State};
use berth_core::{AttemptId, AttemptState, Millis, WorkerId, WorkerState};
use berth_store::Write;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no registered worker is named '{0}'")]
    NoSuchWorker(String),
    #[error("worker '{0}' is {1}; drain it first (`drain {0}`), then unregister it")]
    NotDrained(String, WorkerState),
    #[error("worker '{0}' still runs {1} task(s); unregister it once they have finished")]
    StillRunning(String, usize),
    #[error("worker name: {0}")]
    BadName(String),
    #[error(
        "worker '{0}' is still connected; stop its agent first (a connected agent would register again at once), then unregister it"
    )]
    StillConnected(String),
    #[error(
        "worker '{0}' has {1} attempt(s) whose fate is unknown (it went silent while they ran; they may still run). If the machine is gone for good, `unregister --confirm-dead {0}` records them lost and releases their resources; if it comes back, they are settled by themselves"
    )]
    UnknownFate(String, usize),
    #[error("worker '{0}' is {1}, not down; --confirm-dead is only for a worker declared down")]
    NotDown(String, WorkerState),
}

impl State {
    /// The id of the registered worker called `name`.
    pub fn worker_named(&self, name: &str) -> Result<WorkerId, AdminError> {
        self.workers
            .values()
            .find(|w| w.name == name)
            .map(|w| w.id.clone())
            .ok_or_else(|| AdminError::NoSuchWorker(name.to_string()))
    }

    /// Stop placing new work on a worker; what runs there finishes.
    pub fn drain(&mut self, name: &str, fx: &mut Effects) -> Result<WorkerId, AdminError> {
        let id = self.worker_named(name)?;
        let w = self.workers.get_mut(&id).expect("found");
        if !w.drained {
            w.drained = true;
            self.write_worker(&id, fx);
            self.refresh_worker(&id);
        }
        Ok(id)
    }

    /// Take new work again after a `drain`: the operator's flag is cleared
    /// and recorded. A worker that drains itself (its agent is stopping
    /// with `--drain-on-exit`) stays draining: that is its own report.
    pub fn undrain(&mut self, name: &str, fx: &mut Effects) -> Result<WorkerId, AdminError> {
        let id = self.worker_named(name)?;
        let w = self.workers.get_mut(&id).expect("found");
        if w.drained {
            w.drained = false;
            self.write_worker(&id, fx);
            self.refresh_worker(&id);
            // What waited for capacity may fit here now.
            self.dirty = true;
        }
        Ok(id)
    }

    /// Remove a drained (or down) worker that runs nothing from the records.
    /// Attempts whose fate is unknown (the worker went silent while they
    /// ran) keep it on the books, unless `confirm_dead`: the operator says
    /// the machine is gone, so they are recorded lost and released. Returns
    /// how many were.
    pub fn unregister(
        &mut self,
        name: &str,
        confirm_dead: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<usize, AdminError> {
        let id = self.worker_named(name)?;
        let w = &self.workers[&id];
        if !w.drained && w.state != WorkerState::Down {
            return Err(AdminError::NotDrained(name.to_string(), w.state));
        }
        let unknown: Vec<AttemptId> = self
            .ledger
            .attempts_on(&id)
            .filter(|a| self.attempts[a].state == AttemptState::Unknown)
            .collect();
        if !unknown.is_empty() && !confirm_dead {
            return Err(AdminError::UnknownFate(name.to_string(), unknown.len()));
        }
        if confirm_dead && w.state != WorkerState::Down {
            return Err(AdminError::NotDown(name.to_string(), w.state));
        }
        let running = self.ledger.count_on(&id);
        if running > 0 {
            return Err(AdminError::StillRunning(name.to_string(), running));
        }
        for aid in &unknown {
            self.finish_attempt(
                *aid,
                AttemptState::Lost,
                None,
                format!("worker {name} confirmed dead by an operator"),
                now,
                fx,
            );
        }
        self.workers.remove(&id);
        self.stale.remove(&id);
        self.refresh_worker(&id); // drops it from the scheduler's index
        fx.writes.push(Write::RemoveWorker(id.clone()));
        if self.registered.remove(name) {
            fx.writes.push(Write::Unregister(name.to_string()));
        }
        Ok(unknown.len())
    }

    /// Allow a worker name to join when registration is required.
    pub fn register(&mut self, name: &str, fx: &mut Effects) -> Result<(), AdminError> {
        let trimmed = name.trim();
        if trimmed.is_empty() || trimmed.len() > 128 || trimmed.chars().any(char::is_control) {
            return Err(AdminError::BadName(format!(
                "'{name}' is not a valid worker name"
            )));
        }
        if self.registered.insert(trimmed.to_string()) {
            fx.writes.push(Write::Register(trimmed.to_string()));
        }
        Ok(())
    }

    /// Names allowed to join.
    pub fn registrations(&self) -> impl Iterator<Item = &String> {
        self.registered.iter()
    }
}
