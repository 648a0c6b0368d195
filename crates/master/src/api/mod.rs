//! The master's one client API: every operation a client can ask for,
//! each implemented exactly once, whatever the transport.
//!
//! gRPC (`crate::grpc::control`) and HTTP (`crate::http::api`) are thin
//! adapters: they turn their wire requests into these calls and the
//! answers (and [`ApiError`]) back into their wire shapes. Nothing above
//! this module talks to the engine for a client, so where the records are
//! read from (today the engine's in-memory `State`, through
//! [`EngineHandle::query`]) can change without either adapter noticing.
//!
//! | file | owns |
//! |---|---|
//! | `error` | [`ApiError`], the one error type |
//! | `tasks` | submit, show, cancel |
//! | `list` | the paged task list and its cursor |
//! | `logs` | a task's log as a stream of chunks (offset, tail, follow) |
//! | `outputs` | output files: one task's list, one file, every task's |
//! | `workers` | the worker list, one worker, drain / register / unregister |
//! | `reconcile` | the allocation audit on demand |
//! | `watch` | the feed of committed changes as a stream (instead of polling) |

mod error;
mod list;
mod logs;
mod outputs;
mod reconcile;
mod tasks;
mod watch;
mod workers;

pub use error::ApiError;
pub use list::{DEFAULT_LIMIT, MAX_LIMIT, TaskFilter, TaskPage, TaskQuery};
pub use logs::{LogChunk, LogChunks, LogQuery};
pub use outputs::{FILE_CHUNK, FileChunks, OutputFile, TaskOutputs};
pub use watch::{TICK_EVERY, WatchItem, WatchQuery, WatchStream};
pub use workers::WorkerDetail;

use crate::engine::EngineHandle;
use crate::logs::LogStore;
use crate::outputs::OutputStore;

/// What every operation needs. Cheap to clone: both adapters hold one.
#[derive(Clone)]
pub struct Api {
    engine: EngineHandle,
    logs: LogStore,
    outputs: OutputStore,
    /// Turns `true` when the master stops: followed logs end then.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Client calls served over gRPC `Control` (`berth_control_requests_total`).
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Api {
    pub fn new(
        engine: EngineHandle,
        logs: LogStore,
        outputs: OutputStore,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Api {
        Api {
            engine,
            logs,
            outputs,
            stopping,
            requests: Default::default(),
        }
    }

    /// Count one client call (the gRPC adapter counts each it serves).
    pub fn note_request(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Client calls served over gRPC since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The engine, for what is not a client operation (health, metrics).
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }
}
