//! What reaches the engine: one [`Command`] per request, worker message or
//! operator action, with the channel its answer goes back on.

use crate::state::{
    AdminError, CancelError, ReconcileReport, ReportError, State, SubmitError, WorkerHello,
};
use berth_core::{TaskId, TaskSpec, TaskState, WorkerId};
use berth_proto::{HeldReport, v1};
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::Unavailable;

pub type SessionTx = tmpsc::UnboundedSender<v1::MasterMessage>;
/// Answers one caller once the batch is settled: `None` when it was
/// committed, else why it was not.
pub(super) type Reply = Box<dyn FnOnce(Option<&Unavailable>) + Send>;

/// Wrap a caller's channel as a [`Reply`] carrying `r` if the batch commits.
pub(super) fn reply_with<T: Send + 'static>(tx: ReplyTo<T>, r: T) -> Reply {
    Box::new(move |failed| {
        let _ = tx.send(match failed {
            None => Ok(r),
            Some(e) => Err(e.clone()),
        });
    })
}
/// A read-only view, run against the state after the batch is durable.
pub type Query = Box<dyn FnOnce(&State) + Send>;

/// Where the engine sends one caller's answer: the answer, or why the
/// engine could not give one (stopped, or its batch could not be recorded).
pub type ReplyTo<T> = oneshot::Sender<Result<T, Unavailable>>;

pub enum Command {
    Submit {
        spec: TaskSpec,
        queue_anyway: bool,
        reply: ReplyTo<Result<TaskId, SubmitError>>,
    },
    Cancel {
        task: TaskId,
        reply: ReplyTo<Result<TaskState, CancelError>>,
    },
    Hello {
        hello: WorkerHello,
        session: u64,
        tx: SessionTx,
        heartbeat_interval_ms: u64,
        reply: ReplyTo<Result<(), ReportError>>,
    },
    Heartbeat {
        worker: WorkerId,
        session: u64,
        held: Vec<HeldReport>,
        draining: bool,
    },
    Report {
        worker: WorkerId,
        seq: u64,
        held: HeldReport,
    },
    Disconnected {
        worker: WorkerId,
        session: u64,
    },
    /// The master is stopping: end every worker session.
    CloseSessions,
    /// Traffic on a session: the worker is alive.
    Alive {
        worker: WorkerId,
        session: u64,
    },
    Reconcile {
        dry_run: bool,
        reply: ReplyTo<Result<ReconcileReport, String>>,
    },
    Query(Query),
    Admin {
        op: AdminOp,
        name: String,
        reply: ReplyTo<Result<String, AdminError>>,
    },
}

/// An operator action on a worker (by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Drain,
    /// Take work again after a drain.
    Undrain,
    Unregister,
    /// Unregister a worker whose machine is gone: its unknown attempts are
    /// recorded lost first (`unregister --confirm-dead`).
    UnregisterDead,
    Register,
}

pub(super) type ReconcileReply = ReplyTo<Result<ReconcileReport, String>>;
