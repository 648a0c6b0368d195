//! The engine: the one writer of the master's [`State`].
//!
//! Runs on its own OS thread. Commands arrive on a channel; the engine takes
//! every command waiting (up to a batch limit), applies them in order, runs
//! liveness and a scheduling round, commits all resulting writes in **one**
//! store transaction (group commit), and only then answers the callers and
//! sends messages to workers. So nothing is acknowledged before it is
//! durable, and throughput is not one fsync per task.
//!
//! The step itself ([`Engine::step`], in `step.rs`) takes its clocks as
//! arguments and does no I/O but the store's, so the deterministic
//! simulation runs the same code on simulated time.

mod command;
pub mod feed;
mod health;
mod lifecycle;
mod step;
#[cfg(test)]
mod tests;

pub use command::{AdminOp, Command, Query, ReplyTo, SessionTx};
pub use feed::Feed;
pub use health::Health;
pub use step::{Engine, Now, liveness_shift};

use crate::state::State;
use berth_core::Millis;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Most commands applied in one batch.
const MAX_BATCH: usize = 4096;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The handle the services use to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    health: Arc<Health>,
    feed: Arc<Feed>,
}

/// Why the engine could not answer. Both are worth retrying: the
/// services answer `UNAVAILABLE` (gRPC) / 503 (HTTP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the master's state engine has stopped")]
    Stopped,
    /// The batch holding this request could not be committed; nothing of
    /// it was recorded or acted upon.
    #[error("{0}; nothing was recorded, try again later")]
    Storage(String),
}

impl EngineHandle {
    pub fn send(&self, cmd: Command) -> Result<(), Unavailable> {
        self.tx.send(cmd).map_err(|_| Unavailable::Stopped)
    }

    /// Run a read-only view of the state and return its result. Reads are
    /// served also while writes fail.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Query(Box::new(move |s| {
            let _ = tx.send(f(s));
        })))?;
        rx.await.map_err(|_| Unavailable::Stopped)
    }

    /// Send a command carrying a reply channel and wait for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(ReplyTo<T>) -> Command,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| Unavailable::Stopped)?
    }

    /// The feed of committed changes.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// Whether the engine runs and its store takes writes.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

pub fn spawn<S: berth_store::Store>(
    state: State,
    store: S,
    tick_every: Duration,
    reconcile_every: Duration,
) -> (
    EngineHandle,
    std::thread::JoinHandle<Result<(), berth_store::StoreError>>,
) {
    let (tx, rx) = mpsc::channel();
    let epoch = Instant::now();
    let engine = Engine::new(
        state,
        store,
        reconcile_every,
        Now {
            wall_ms: now_ms(),
            mono: Duration::ZERO,
        },
    );
    let health = engine.health().clone();
    let feed = engine.feed().clone();
    let join = std::thread::Builder::new()
        .name("berth-engine".into())
        .spawn(move || {
            let health = engine.health().clone();
            let r = run(engine, rx, tick_every, epoch);
            health.stopped.store(true, Ordering::Relaxed);
            if let Err(e) = &r {
                tracing::error!(error = %e, "the store cannot be used; the master stops");
            }
            r
        })
        .expect("spawn engine thread");
    (EngineHandle { tx, health, feed }, join)
}

/// The engine thread's loop: wait for a command or the tick, take every
/// command waiting (up to [`MAX_BATCH`]), step on the real clocks.
fn run<S: berth_store::Store>(
    mut engine: Engine<S>,
    rx: mpsc::Receiver<Command>,
    tick_every: Duration,
    epoch: Instant,
) -> Result<(), berth_store::StoreError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        match rx.recv_timeout(tick_every) {
            Ok(cmd) => batch.push(cmd),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let now = Now {
            wall_ms: now_ms(),
            mono: epoch.elapsed(),
        };
        engine.step(&mut batch, now)?;
    }
}
