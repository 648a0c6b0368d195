//! Submitting and cancelling tasks.

use super::{Effects, Outbound, State};
use berth_core::validate::{InputError, validate_spec};
use berth_core::{AttemptState, DriverKind, Millis, TaskId, TaskRecord, TaskSpec, TaskState};
use berth_scheduler::could_ever_fit;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid task: {0}")]
    Invalid(#[from] InputError),
    #[error("{0} (submit with --queue-anyway to queue it regardless)")]
    NeverFits(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("task {0} does not exist")]
    NoSuchTask(TaskId),
    #[error("task {0} already ended ({1})")]
    AlreadyEnded(TaskId, TaskState),
}

impl State {
    /// Record a new task. Validated first; refused (recording nothing) when
    /// no registered worker could ever run it, unless `queue_anyway`.
    pub fn submit(
        &mut self,
        spec: TaskSpec,
        queue_anyway: bool,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<TaskId, SubmitError> {
        validate_spec(&spec)?;
        if let Some(name) = &spec.pinned_worker
            && self.slot_named(name).is_none()
        {
            return Err(SubmitError::NeverFits(format!(
                "no registered worker is named '{name}'"
            )));
        }
        if !queue_anyway && !self.workers.is_empty() {
            let p = self
                .pending(TaskId(0), &spec, now)
                .expect("pinned worker checked above");
            could_ever_fit(&self.index, &p).map_err(SubmitError::NeverFits)?;
        }
        let id = self.next_task_id();
        self.tasks.insert(
            id,
            TaskRecord {
                id,
                spec,
                state: TaskState::Queued,
                submitted_ms: now,
                ended_ms: None,
                exit_code: None,
                reason: String::new(),
                cancel_requested: false,
            },
        );
        self.queue.insert(id, self.tasks[&id].spec.priority);
        self.dirty = true;
        self.write_task(id, fx);
        Ok(id)
    }

    /// Cancel a task. A queued task ends at once; a placed one is asked to
    /// stop and ends (and releases its resources) when its worker confirms
    /// or is declared lost.
    pub fn cancel(
        &mut self,
        id: TaskId,
        now: Millis,
        fx: &mut Effects,
    ) -> Result<TaskState, CancelError> {
        let task = self.tasks.get_mut(&id).ok_or(CancelError::NoSuchTask(id))?;
        if task.state.is_terminal() {
            return Err(CancelError::AlreadyEnded(id, task.state));
        }
        task.cancel_requested = true;
        if task.state == TaskState::Queued {
            task.state = TaskState::Cancelled;
            task.ended_ms = Some(now);
            task.reason = "cancelled while queued".into();
            self.queue.remove(&id);
            self.write_task(id, fx);
            return Ok(TaskState::Cancelled);
        }
        let state = task.state;
        self.write_task(id, fx);
        if let Some(&aid) = self.live.get(&id) {
            let a = self.attempts.get_mut(&aid).expect("live attempt exists");
            if a.state != AttemptState::Stopping {
                a.state = a
                    .state
                    .on(AttemptState::Stopping)
                    .expect("live attempt can stop");
                a.reason = "cancel requested".into();
                let worker = a.worker_id.clone();
                self.write_attempt(aid, fx);
                fx.outbound.push(Outbound::Stop {
                    worker,
                    attempt: aid,
                    reason: "cancelled by user".into(),
                });
            }
        }
        Ok(state)
    }

    /// Is any registered worker able to run `driver` tasks?
    pub fn has_driver(&self, driver: DriverKind) -> bool {
        self.workers.values().any(|w| w.has_driver(driver.as_str()))
    }
}
