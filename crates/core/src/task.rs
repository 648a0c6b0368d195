//! Tasks: what a user asked to run, and the task state machine.
//!
//! ```text
//!            place              started              attempt succeeded
//!  Queued ─────────▶ Assigned ─────────▶ Running ──────────────────────▶ Succeeded
//!    ▲  │               │ │                 │ │    attempt failed
//!    │  │ cancel        │ └─────────────────┼─┼──────────────────────────▶ Failed
//!    │  ▼               │   attempt lost /  │ │    attempt cancelled
//!    │ Cancelled ◀──────┼───────────────────┘ └──────────────────────────▶ Cancelled
//!    └──────────────────┘ (attempt lost, task requeued for another attempt)
//! ```
//!
//! The task's state is the master's *desired + summarised* view; the live
//! attempt (see `attempt`) carries what the worker observed.

use crate::ids::TaskId;
use crate::resources::Resources;
use crate::{AttemptState, Millis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A plain command line, run by the worker's process driver.
    Process,
    /// A container image, run by the worker's Docker driver.
    Docker,
}

impl DriverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DriverKind::Process => "process",
            DriverKind::Docker => "docker",
        }
    }

    pub fn parse(s: &str) -> Option<DriverKind> {
        match s {
            "process" => Some(DriverKind::Process),
            "docker" => Some(DriverKind::Docker),
            _ => None,
        }
    }
}

/// How many times a task is placed again after an attempt is lost, unless
/// the user says otherwise.
pub const DEFAULT_RETRIES: u32 = 3;

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// How the scheduler picks among workers that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The fitting worker with the least free CPU: fills workers up and
    /// keeps whole machines free for big tasks (the default).
    #[default]
    Binpack,
    /// The fitting worker with the most free CPU: spreads load out.
    Spread,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Binpack => "binpack",
            Strategy::Spread => "spread",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "binpack" => Some(Strategy::Binpack),
            "spread" => Some(Strategy::Spread),
            _ => None,
        }
    }
}

/// What the user asked for. Immutable once submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    #[serde(default)]
    pub name: String,
    pub driver: DriverKind,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub resources: Resources,
    /// Placements allowed after lost attempts (a worker died or no longer
    /// had it). A command that exits non-zero is not retried: its exit
    /// status is the answer.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// An attempt running longer than this is stopped and recorded as
    /// timed out.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Higher runs first; FIFO within a priority.
    #[serde(default)]
    pub priority: i32,
    /// Worker labels the task requires (`key=value`, all must match).
    #[serde(default)]
    pub constraints: Vec<(String, String)>,
    /// Overrides the cluster's placement strategy.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Only this worker (by name) may run it (`dispatch`).
    #[serde(default)]
    pub pinned_worker: Option<String>,
    /// At most once: the worker stops an attempt once it has heard nothing
    /// from the master for this long (recorded `disconnected`, retried like
    /// `lost`), and the master places a replacement only after that, plus
    /// the worker's stop grace and a margin, since its last sign of life —
    /// so two attempts never run at once. Absent: a disconnect never stops
    /// a running task.
    #[serde(default)]
    pub stop_after_disconnect_ms: Option<u64>,
}

impl TaskSpec {
    /// A process task with default name, environment, retries and no time
    /// limit.
    pub fn process(command: Vec<String>, resources: Resources) -> TaskSpec {
        TaskSpec {
            name: String::new(),
            driver: DriverKind::Process,
            image: None,
            command,
            env: Vec::new(),
            resources,
            retries: DEFAULT_RETRIES,
            timeout_ms: None,
            priority: 0,
            constraints: Vec::new(),
            strategy: None,
            pinned_worker: None,
            stop_after_disconnect_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Something that happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    Placed,
    Cancelled,
    /// Its live attempt moved to this state.
    Attempt(AttemptState),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionError {
    pub from: &'static str,
    pub event: String,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no transition from {} on {}", self.from, self.event)
    }
}

impl std::error::Error for TransitionError {}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The state machine. `Attempt(Lost)` sends a task back to the queue;
    /// the caller decides whether a retry is allowed and passes
    /// `Attempt(Failed)` instead when it is not.
    pub fn on(self, event: TaskEvent) -> Result<TaskState, TransitionError> {
        use AttemptState as A;
        use TaskState as T;
        let next = match (self, event) {
            (T::Queued, TaskEvent::Placed) => T::Assigned,
            (T::Queued, TaskEvent::Cancelled) => T::Cancelled,
            (T::Assigned, TaskEvent::Attempt(A::Running)) => T::Running,
            (T::Assigned | T::Running, TaskEvent::Attempt(A::Stopping)) => self,
            (T::Assigned | T::Running, TaskEvent::Attempt(A::Succeeded)) => T::Succeeded,
            (T::Assigned | T::Running, TaskEvent::Attempt(A::Failed | A::TimedOut)) => T::Failed,
            (T::Assigned | T::Running, TaskEvent::Attempt(A::Cancelled)) => T::Cancelled,
            (T::Assigned | T::Running, TaskEvent::Attempt(e)) if e.is_gone() => T::Queued,
            // An attempt whose worker went silent comes back with a success
            // while its replacement waits: the first success wins.
            (T::Queued, TaskEvent::Attempt(A::Succeeded)) => T::Succeeded,
            _ => {
                return Err(TransitionError {
                    from: self.as_str(),
                    event: format!("{event:?}"),
                });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as the master records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub state: TaskState,
    pub submitted_ms: Millis,
    pub ended_ms: Option<Millis>,
    pub exit_code: Option<i32>,
    /// Why it ended the way it did (empty for a plain success).
    pub reason: String,
    /// Desired state: the user asked for it to stop.
    pub cancel_requested: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path() {
        let s = TaskState::Queued.on(TaskEvent::Placed).unwrap();
        let s = s.on(TaskEvent::Attempt(AttemptState::Running)).unwrap();
        let s = s.on(TaskEvent::Attempt(AttemptState::Succeeded)).unwrap();
        assert_eq!(s, TaskState::Succeeded);
        assert!(s.is_terminal());
    }

    #[test]
    fn terminal_states_refuse_everything() {
        for t in [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert!(t.on(TaskEvent::Placed).is_err());
            assert!(t.on(TaskEvent::Cancelled).is_err());
            assert!(t.on(TaskEvent::Attempt(AttemptState::Running)).is_err());
        }
    }

    #[test]
    fn lost_attempt_requeues() {
        let s = TaskState::Running
            .on(TaskEvent::Attempt(AttemptState::Lost))
            .unwrap();
        assert_eq!(s, TaskState::Queued);
    }

    #[test]
    fn state_names_round_trip() {
        for t in TaskState::ALL {
            assert_eq!(TaskState::parse(t.as_str()), Some(t));
        }
    }
}
