//! Attempts: one placement of a task on one worker, and its state machine.
//!
//! ```text
//!             started            exit 0
//!  Assigned ─────────▶ Running ─────────▶ Succeeded
//!     │  │               │ │    exit ≠ 0 / start error
//!     │  │  stop asked   │ └────────────▶ Failed | TimedOut
//!     │  └─────────▶ Stopping ──────────▶ Cancelled (or the exit it reports)
//!     │                  │
//!     ├──────────────────┴──────────────▶ Lost (absent from the worker's report)
//!     │                  │
//!     └──────────────────┴──▶ Unknown ──▶ Succeeded | Failed | … (the worker came
//!        worker declared down     │         back with its result)
//!                                 └─────▶ Lost (the worker came back without it,
//!                                               or an admin confirmed it dead)
//! ```
//!
//! An attempt in `Assigned`, `Running` or `Stopping` is *live*: it is its
//! task's one current attempt. `Unknown` means its worker went silent: the
//! task has been replaced (per its retry policy), but nobody knows whether
//! the attempt still runs, so it still *holds resources* until its fate is
//! known (DESIGN.md invariant 3). A worker's allocation is exactly the sum
//! of the requests of its live and unknown attempts (invariant 1), shown
//! apart. Every other state is terminal.

use crate::Millis;
use crate::ids::{AttemptId, TaskId, WorkerId};
use crate::resources::Resources;
use crate::task::TransitionError;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Assigned,
    Running,
    Stopping,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Lost,
    /// Its worker was declared down while it was live; its fate is unknown.
    Unknown,
    /// Stopped by its worker after hearing nothing from the master for the
    /// task's `--stop-after-disconnect` (or known to have been, once that
    /// lease ran out). Retried like `Lost`.
    Disconnected,
}

impl AttemptState {
    pub const ALL: [AttemptState; 10] = [
        AttemptState::Assigned,
        AttemptState::Running,
        AttemptState::Stopping,
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::TimedOut,
        AttemptState::Cancelled,
        AttemptState::Lost,
        AttemptState::Unknown,
        AttemptState::Disconnected,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptState::Assigned => "assigned",
            AttemptState::Running => "running",
            AttemptState::Stopping => "stopping",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::TimedOut => "timed_out",
            AttemptState::Cancelled => "cancelled",
            AttemptState::Lost => "lost",
            AttemptState::Unknown => "unknown",
            AttemptState::Disconnected => "disconnected",
        }
    }

    pub fn parse(s: &str) -> Option<AttemptState> {
        AttemptState::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Is this its task's current attempt (placed, running or stopping)?
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            AttemptState::Assigned | AttemptState::Running | AttemptState::Stopping
        )
    }

    /// Does an attempt in this state count towards its worker's allocation?
    /// Live ones, and unknown ones (they may still run).
    pub fn holds_resources(&self) -> bool {
        self.is_live() || *self == AttemptState::Unknown
    }

    /// Did the attempt end without an answer from the task itself (its
    /// worker lost it, or stopped it for want of the master)? Such an end
    /// is retried per the task's `--retries`; so is `Unknown`.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            AttemptState::Lost | AttemptState::Unknown | AttemptState::Disconnected
        )
    }

    pub fn is_terminal(&self) -> bool {
        !self.holds_resources()
    }

    /// The state machine. Terminal states accept nothing; the same report
    /// twice is the caller's to drop (idempotence lives in the master).
    pub fn on(self, next: AttemptState) -> Result<AttemptState, TransitionError> {
        use AttemptState as A;
        let ok = match (self, next) {
            (A::Assigned, A::Running) => true,
            (A::Assigned | A::Running, A::Stopping) => true,
            (A::Assigned | A::Running | A::Stopping, n) if n.is_terminal() => true,
            (A::Assigned | A::Running | A::Stopping, A::Unknown) => true,
            (A::Unknown, n) if n.is_terminal() => true,
            (A::Stopping, A::Running) => false,
            _ => false,
        };
        if ok {
            Ok(next)
        } else {
            Err(TransitionError {
                from: self.as_str(),
                event: next.as_str().to_string(),
            })
        }
    }
}

impl fmt::Display for AttemptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt as the master records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub task_id: TaskId,
    pub worker_id: WorkerId,
    /// The request, copied from the task at placement: the ledger sums this.
    pub resources: Resources,
    pub gpu_ids: Vec<u32>,
    pub state: AttemptState,
    pub created_ms: Millis,
    pub started_ms: Option<Millis>,
    pub ended_ms: Option<Millis>,
    pub exit_code: Option<i32>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_states() {
        let holding: Vec<_> = AttemptState::ALL
            .into_iter()
            .filter(|s| s.holds_resources())
            .collect();
        assert_eq!(
            holding,
            vec![
                AttemptState::Assigned,
                AttemptState::Running,
                AttemptState::Stopping,
                AttemptState::Unknown
            ]
        );
        assert!(!AttemptState::Unknown.is_live());
    }

    #[test]
    fn an_unknown_attempt_ends_only_on_a_fact() {
        use AttemptState as A;
        assert!(A::Running.on(A::Unknown).is_ok());
        assert!(A::Unknown.on(A::Succeeded).is_ok());
        assert!(A::Unknown.on(A::Lost).is_ok());
        assert!(A::Unknown.on(A::Running).is_err());
        assert!(A::Unknown.on(A::Stopping).is_err());
        assert!(A::Succeeded.on(A::Unknown).is_err());
    }

    #[test]
    fn terminal_is_final() {
        for t in AttemptState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for n in AttemptState::ALL {
                assert!(t.on(n).is_err(), "{t} -> {n}");
            }
        }
    }

    #[test]
    fn stopping_cannot_go_back_to_running() {
        assert!(AttemptState::Stopping.on(AttemptState::Running).is_err());
        assert!(AttemptState::Running.on(AttemptState::Stopping).is_ok());
        assert!(AttemptState::Stopping.on(AttemptState::Cancelled).is_ok());
    }
}
