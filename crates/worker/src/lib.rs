//! berth-worker: the agent. (being written) Entry points: [`detect`], [`run`].

use berth_core::{GpuInfo, Resources};
use std::future::Future;
use std::path::PathBuf;

/// How a worker runs. Built by the CLI from flags; tests build it directly.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Master gRPC URL, e.g. `http://127.0.0.1:7700`.
    pub master: String,
    pub token: String,
    pub name: String,
    pub data_dir: PathBuf,
    /// Overrides that replace detection.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    pub gpus: Option<u32>,
}

/// What the worker found on this machine (after overrides).
#[derive(Debug, Clone)]
pub struct Detected {
    pub total: Resources,
    pub gpus: Vec<GpuInfo>,
    pub drivers: Vec<String>,
    pub node_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Todo(String),
}

/// Detect totals and load (or create) the node id.
pub fn detect(_config: &WorkerConfig) -> Result<Detected, WorkerError> {
    todo!()
}

/// Run the agent until `shutdown` resolves.
pub async fn run(
    _config: WorkerConfig,
    _shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    todo!()
}
