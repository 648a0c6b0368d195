//! Workers as the master records them, and the worker state machine.
//!
//! ```text
//!        hello               missed heartbeats (TTL + grace)
//!  ───────────▶ Ready ◀──────────────────────────────────────▶ Down
//!                ▲ │               hello (a new session)        ▲
//!   heartbeat    │ │ heartbeat says draining                    │
//!   not draining │ ▼                                            │
//!              Draining ─────────────────────────────────────────┘
//! ```
//!
//! A draining worker takes no new work; its running attempts finish.

use crate::Millis;
use crate::ids::WorkerId;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Connected and taking work.
    Ready,
    /// Connected, finishing what it runs, taking no new work.
    Draining,
    /// Not connected; holds no live attempts once declared down.
    Down,
}

impl WorkerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<WorkerState> {
        match s {
            "ready" => Some(WorkerState::Ready),
            "draining" => Some(WorkerState::Draining),
            "down" => Some(WorkerState::Down),
            _ => None,
        }
    }
}

impl WorkerState {
    /// Connected (ready or draining): heartbeats are expected.
    pub fn is_up(&self) -> bool {
        !matches!(self, WorkerState::Down)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One GPU as a worker detected it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    pub uuid: String,
}

/// A worker as the master records it. Note what is *not* here: no
/// allocation counter. A worker's allocation is derived from its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub name: String,
    pub total: Resources,
    pub drivers: Vec<String>,
    pub gpus: Vec<GpuInfo>,
    pub state: WorkerState,
    pub last_seen_ms: Millis,
    /// `key=value` labels the worker was started with (`--label`).
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// An operator drained it (`drain <worker>`): no new placements until
    /// it is undrained (`undrain <worker>`) or unregistered. Survives
    /// reconnects and master restarts.
    #[serde(default)]
    pub drained: bool,
}

impl WorkerRecord {
    pub fn has_driver(&self, driver: &str) -> bool {
        self.drivers.iter().any(|d| d == driver)
    }
}
