//! berth-worker: the agent that runs on each machine.
//!
//! * `detect` — what the machine offers (CPU, memory, disk, GPUs) and its
//!   stable node id.
//! * `attempt_dir` — an attempt's local folder: its state on disk, which
//!   survives agent restarts and is the durable outbox of results.
//! * `process` — the process driver: a small `sh` supervisor per attempt
//!   that outlives the agent and records the exit status.
//! * `agent` — the session with the master and the local attempt table.
//!
//! Entry points: [`detect`], [`run`].

mod agent;
pub mod attempt_dir;
pub mod detect;
pub mod process;

use berth_core::{GpuInfo, Resources};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    pub stop_grace: Duration,
    /// On shutdown, take no new work and wait for running attempts to
    /// finish (and be acknowledged) before exiting. Without it the agent
    /// exits at once and its tasks keep running, to be re-attached.
    pub drain_on_exit: bool,
}

impl WorkerConfig {
    pub fn new(master: String, token: String, name: String, data_dir: PathBuf) -> Self {
        WorkerConfig {
            master,
            token,
            name,
            data_dir,
            cpu_millis: None,
            memory_bytes: None,
            storage_bytes: None,
            gpus: None,
            stop_grace: Duration::from_secs(10),
            drain_on_exit: false,
        }
    }
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
    #[error("preparing the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid master URL {0}")]
    BadMaster(String),
    #[error("the master refused this worker: {0}")]
    Refused(String),
}

/// Detect totals and load (or create) the node id.
pub fn detect(config: &WorkerConfig) -> Result<Detected, WorkerError> {
    detect::detect(config)
}

/// Run the agent until `shutdown` resolves. Tasks keep running after it
/// returns; the next start re-attaches to them.
pub async fn run(
    mut config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    // Supervisors run in the task's working directory, so every path they
    // are given must be absolute.
    if config.data_dir.is_relative() {
        let cwd = std::env::current_dir().map_err(|source| WorkerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        config.data_dir = cwd.join(&config.data_dir);
    }
    let det = detect(&config)?;
    agent::run(config, det, shutdown).await
}
