//! berth-worker: the agent that runs on each machine.
//!
//! * `detect` — what the machine offers (CPU, memory, disk, GPUs) and its
//!   stable node id.
//! * `attempt_dir` — an attempt's local folder: its state on disk, which
//!   survives agent restarts and is the durable outbox of results.
//! * `driver` — the small trait every driver implements, and the process
//!   driver behind it.
//! * `process` — the process driver's `sh` supervisor: one per attempt, it
//!   outlives the agent, and when the command ends kills the rest of the
//!   attempt's process tree before its status is recorded.
//! * `cgroup` — how an attempt's processes are kept together: a cgroup per
//!   attempt where the host allows it, else the process group.
//! * `docker` — the docker driver: one labelled container per attempt
//!   through the Docker Engine API, re-attached by label, dangling ones
//!   reaped.
//! * `outputs` — an ended attempt's output files, sealed and sent to the
//!   master before its final result.
//! * `agent` — the agent: `agent::core` decides (the attempt table, every
//!   rule about it; no I/O, so the master's simulation runs it), the rest
//!   keeps the session with the master and performs those decisions.
//!
//! Entry points: [`detect`], [`run`].

pub mod agent;
pub mod attempt_dir;
pub mod cgroup;
pub mod detect;
pub mod docker;
pub mod driver;
pub mod outputs;
pub mod process;

use berth_core::settings;
use berth_core::{GpuInfo, Resources};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// How a worker runs: the `[worker]` section of the config file (its
/// master and token come from `[client]`). Its `Default` is the only
/// source of the defaults; serde reads and writes it with
/// `berth_core::settings`'s codecs. Tests build it directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Master gRPC URL, e.g. `http://127.0.0.1:7700` (`[client]`).
    #[serde(skip)]
    pub master: String,
    /// The cluster token (`[client]`).
    #[serde(skip)]
    pub token: String,
    #[serde(with = "settings::name")]
    pub name: String,
    #[serde(with = "settings::path")]
    pub data_dir: PathBuf,
    /// Overrides that replace detection.
    #[serde(
        rename = "cpus",
        with = "settings::cores",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_millis: Option<u64>,
    #[serde(
        rename = "memory",
        with = "settings::memory",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_bytes: Option<u64>,
    #[serde(
        rename = "storage",
        with = "settings::storage",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_bytes: Option<u64>,
    #[serde(with = "settings::gpus", skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    #[serde(with = "settings::duration")]
    pub stop_grace: Duration,
    /// Most bytes of output files one attempt may send to the master; a
    /// larger output fails the attempt (`--max-output`).
    #[serde(with = "settings::output_size")]
    pub max_output: u64,
    /// `key=value` labels tasks can require (`--label`).
    #[serde(with = "settings::labels")]
    pub labels: Vec<(String, String)>,
    /// On shutdown, take no new work and wait for running attempts to
    /// finish (and be acknowledged) before exiting. Without it the agent
    /// exits at once and its tasks keep running, to be re-attached.
    #[serde(with = "settings::switch")]
    pub drain_on_exit: bool,
    /// How often the docker driver looks for dangling containers (labelled
    /// for this worker, run by no attempt it holds).
    #[serde(skip)]
    pub reap_interval: Duration,
    /// Containers younger than this are never reaped.
    #[serde(skip)]
    pub reap_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            master: String::new(),
            token: String::new(),
            name: hostname(),
            data_dir: PathBuf::from("./berth-worker"),
            cpu_millis: None,
            memory_bytes: None,
            storage_bytes: None,
            gpus: None,
            stop_grace: Duration::from_secs(10),
            max_output: outputs::DEFAULT_MAX_OUTPUT,
            labels: Vec::new(),
            drain_on_exit: false,
            reap_interval: Duration::from_secs(10),
            reap_grace: Duration::from_secs(10),
        }
    }
}

impl WorkerConfig {
    pub fn new(master: String, token: String, name: String, data_dir: PathBuf) -> Self {
        WorkerConfig {
            master,
            token,
            name,
            data_dir,
            ..WorkerConfig::default()
        }
    }

    /// Check the settings before anything starts; an error names the
    /// configuration key (`name`, `master`, `stop_grace`).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        if self.name.chars().any(char::is_control) {
            return Err(format!("name: {:?} contains control characters", self.name));
        }
        let rest = self
            .master
            .strip_prefix("http://")
            .or_else(|| self.master.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(format!(
                "master: '{}' is not a master URL (expected http://HOST:PORT)",
                self.master
            ));
        }
        if self.stop_grace > Duration::from_secs(3600) {
            return Err("stop_grace: must be at most 1h".into());
        }
        Ok(())
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

/// Whether this worker has the docker driver, and its engine. An engine
/// that answers gives the driver (and the data dir notes it); one that does
/// not is waited for (in the background) when this worker ran containers
/// before, so the attempts of those containers stay held and are picked up
/// again when it answers; otherwise there is no docker driver.
async fn docker_engine(config: &WorkerConfig, det: &mut Detected) -> Option<docker::Engine> {
    if !det.drivers.iter().any(|d| d == "docker") {
        return None;
    }
    let error = match docker::connect().await {
        Ok(client) => {
            docker::remember(&config.data_dir);
            return Some(docker::Engine::connected(client));
        }
        Err(e) => e,
    };
    if docker::used_before(&config.data_dir) {
        tracing::warn!(
            error = %error,
            "the Docker engine does not answer; this worker ran containers before, so it keeps \
             the docker driver, holds its container attempts and tries the engine again"
        );
        return Some(docker::Engine::connecting());
    }
    tracing::warn!(error = %error, "the Docker engine does not answer; no docker driver");
    det.drivers.retain(|d| d != "docker");
    None
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
    let mut det = detect(&config)?;
    let (exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let containment =
        cgroup::Containment::detect(&cgroup::agent_key(&det.node_id, &config.data_dir));
    tracing::info!(
        mechanism = %containment.describe(),
        "process tasks end with their whole process tree"
    );
    let process = driver::ProcessDriver::new(exits_tx.clone(), containment);
    let docker = docker_engine(&config, &mut det).await.map(|engine| {
        let me = docker::Identity {
            node_id: det.node_id.clone(),
            name: config.name.clone(),
            data_dir: config.data_dir.display().to_string(),
        };
        Box::new(docker::DockerDriver::new(
            engine,
            me,
            exits_tx,
            config.stop_grace,
            docker::ReapPolicy {
                interval: config.reap_interval,
                grace: config.reap_grace,
            },
        )) as Box<dyn driver::Driver>
    });
    let drivers = driver::Drivers {
        process: Box::new(process),
        docker,
    };
    agent::run(config, det, drivers, exits, shutdown).await
}

/// This machine's host name (`worker` if it cannot be read): the default
/// worker name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes
    // at most that many and we only read up to the first NUL within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "worker".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "worker".to_string()
    } else {
        name
    }
}
