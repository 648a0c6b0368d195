//! berth-master: the control plane.
//!
//! (being written) Public entry point: [`start`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a master runs. Built by the CLI from flags; tests build it directly.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// HTTP listen address for health and (later) the JSON API; `None` = off.
    pub http: Option<SocketAddr>,
    /// Holds `berth.db`, `token`, `master.addr` and task logs.
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub heartbeat_ttl: Duration,
}

/// A running master.
pub struct MasterHandle {
    /// The bound gRPC address (also written to `DATA_DIR/master.addr`).
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// The cluster token (from `DATA_DIR/token`).
    pub token: String,
    /// True when this start generated the token (first start).
    pub token_created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    Todo(String),
}

/// Open the store, bind the listeners and start serving. Returns once the
/// master is serving; it stops when `shutdown` resolves.
pub async fn start(
    _config: MasterConfig,
    _shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MasterHandle, MasterError> {
    todo!()
}

impl MasterHandle {
    /// Wait until the master has stopped.
    pub async fn wait(self) -> Result<(), MasterError> {
        todo!()
    }
}
