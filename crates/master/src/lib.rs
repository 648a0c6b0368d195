//! berth-master: the control plane.
//!
//! * `state` — the pure, synchronous master state (records, queue,
//!   allocation index, the reality check, liveness, the ledger audit).
//! * `engine` — its one writer: batches commands, group-commits to the
//!   store, then answers and messages workers.
//! * `api` — every client operation, once: submit, list, show, cancel,
//!   logs, output files, workers, drain / register / unregister,
//!   reconcile. The two transports below are adapters over it.
//! * `grpc` — the `Control` service (an `api` adapter) and `WorkerLink`.
//! * `http` — the REST/JSON API (an `api` adapter), Prometheus metrics and
//!   the web dashboard.
//! * `views` — state → wire messages.
//! * `outputs` — task output files (`DATA_DIR/outputs/TASK_ID/…`).
//! * `logs`, `token` — task log files, the cluster credential.
//! * `access` — the access log of both listeners (`berth::access`).
//! * `config` — [`MasterConfig`]: its defaults, its codecs, its rules.
//!
//! Entry point: [`start`].

pub mod access;
pub mod api;
pub mod config;
pub mod engine;
mod grpc;
pub mod http;
pub mod logs;
pub mod outputs;
pub mod state;
pub mod token;
pub mod views;

use berth_proto::v1::control_server::ControlServer;
use berth_proto::v1::worker_link_server::WorkerLinkServer;
use berth_store::{AnyStore, Store};
pub use config::MasterConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A running master.
pub struct MasterHandle {
    /// The bound gRPC address (also written to `DATA_DIR/master.addr`).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address (also written to `DATA_DIR/http.addr`).
    pub http_addr: Option<SocketAddr>,
    /// The cluster token (from `DATA_DIR/token`).
    pub token: String,
    /// True when this start generated the token (first start).
    pub token_created: bool,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    engine: std::thread::JoinHandle<Result<(), berth_store::StoreError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("preparing the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    #[error("binding {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the state engine stopped unexpectedly")]
    EngineCrashed,
}

/// Open the store, bind the listeners and start serving. Returns once the
/// master is serving; it stops when `shutdown` resolves.
pub async fn start(
    config: MasterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MasterHandle, MasterError> {
    config.validate().map_err(MasterError::Config)?;
    let dir = config.data_dir.clone();
    let io_err = |source| MasterError::DataDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    let (token, token_created) = token::load_or_create(&dir).map_err(io_err)?;
    let token: Arc<str> = Arc::from(token);
    let logs = logs::LogStore::open(dir.join("logs")).map_err(io_err)?;
    let outputs = outputs::OutputStore::open(dir.join("outputs")).map_err(io_err)?;

    let started = std::time::Instant::now();
    // The PostgreSQL client blocks (on a runtime of its own): open and
    // load off the async threads. The engine thread uses it from then on.
    let (store_config, db_path) = (config.store.clone(), dir.join("berth.db"));
    let (store, snapshot) = tokio::task::spawn_blocking(move || {
        let mut store = AnyStore::open(&store_config, &db_path)?;
        let snapshot = store.load()?;
        Ok::<_, berth_store::StoreError>((store, snapshot))
    })
    .await
    .map_err(|_| MasterError::EngineCrashed)??;
    let state_config = state::StateConfig {
        heartbeat_ttl_ms: config.heartbeat_ttl.as_millis() as i64,
        down_grace_ms: 1_000,
        start_resend_ms: (config.heartbeat_interval.as_millis() as i64 * 2).max(500),
        placement: berth_scheduler::PlaceConfig {
            strategy: config.strategy,
            starvation_ms: config.starvation_wait.as_millis() as i64,
        },
        require_registration: config.require_registration,
    };
    let st = state::State::from_snapshot(snapshot, state_config, engine::now_ms());
    tracing::info!(
        tasks = st.tasks().count(),
        workers = st.workers().count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        store = %config.store,
        "state loaded"
    );
    let tick = (config.heartbeat_interval / 4).max(Duration::from_millis(50));
    let (engine, engine_join) = engine::spawn(st, store, tick, config.reconcile_interval);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind {
            what: "gRPC",
            addr: config.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(io_err)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let closer = engine.clone();
    tokio::spawn(async move {
        shutdown.await;
        // End every worker session first: the gRPC server waits for open
        // streams before it stops, and workers simply reconnect later.
        let _ = closer.send(engine::Command::CloseSessions);
        let _ = stop_tx.send(true);
    });
    let api = api::Api::new(
        engine.clone(),
        logs.clone(),
        outputs.clone(),
        stop_rx.clone(),
    );
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let http_addr = match config.http {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| MasterError::Bind {
                    what: "HTTP",
                    addr,
                    source,
                })?;
            let bound = l.local_addr().map_err(io_err)?;
            let state = http::HttpState {
                api: api.clone(),
                engine: engine.clone(),
                token: token.clone(),
            };
            tokio::spawn(http::serve(l, state, wait_stop(stop_rx.clone())));
            std::fs::write(dir.join("http.addr"), format!("http://{bound}\n")).map_err(io_err)?;
            Some(bound)
        }
        None => {
            let _ = std::fs::remove_file(dir.join("http.addr"));
            None
        }
    };

    let control = grpc::ControlService::new(api, token.clone());
    let link = grpc::WorkerLinkService::new(
        engine,
        logs,
        outputs,
        token.clone(),
        config.heartbeat_interval,
    );
    // Small messages (starts, acks) must not wait for Nagle's algorithm.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .layer(access::AccessLogLayer::grpc())
            .add_service(ControlServer::new(control))
            .add_service(WorkerLinkServer::new(link))
            .serve_with_incoming_shutdown(incoming, wait_stop(stop_rx)),
    );
    std::fs::write(dir.join("master.addr"), format!("http://{grpc_addr}\n")).map_err(io_err)?;
    tracing::info!(%grpc_addr, ?http_addr, data_dir = %dir.display(), "master serving");
    Ok(MasterHandle {
        grpc_addr,
        http_addr,
        token: token.to_string(),
        token_created,
        grpc,
        engine: engine_join,
    })
}

impl MasterHandle {
    /// Wait until the master has stopped: after a shutdown, or as soon as
    /// the engine stops on a store it cannot use (a corrupt or unreadable
    /// database), so that the process exits non-zero and its supervisor
    /// restarts it. A failed commit alone never stops it.
    pub async fn wait(self) -> Result<(), MasterError> {
        let engine = self.engine;
        let mut engine = tokio::task::spawn_blocking(move || engine.join());
        let mut grpc = self.grpc;
        tokio::select! {
            r = &mut grpc => {
                r.map_err(|_| MasterError::EngineCrashed)??;
                // The services held the engine handles; once they are gone
                // the engine finishes its last batch and returns.
                engine
                    .await
                    .map_err(|_| MasterError::EngineCrashed)?
                    .map_err(|_| MasterError::EngineCrashed)??;
            }
            r = &mut engine => {
                grpc.abort();
                r.map_err(|_| MasterError::EngineCrashed)?
                    .map_err(|_| MasterError::EngineCrashed)??;
                // Ended without an error: every handle was dropped, which
                // only happens at shutdown.
            }
        }
        Ok(())
    }
}
