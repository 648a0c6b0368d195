//! Watching instead of polling: the feed of committed changes
//! (`crate::engine::feed`) as a stream, from a cursor or from now, for one
//! task or for everything. The stream starts with a `Start` item carrying
//! the cursor it starts after (take a snapshot after receiving it, then
//! apply the changes), and sends a `Tick` now and then so that a client
//! can tell a quiet master from a dead connection.

use super::{Api, ApiError};
use crate::engine::feed::{Change, Cursor, Event, Watch};
use berth_core::TaskId;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;

/// How often a quiet stream says it is alive.
pub const TICK_EVERY: Duration = Duration::from_secs(15);

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchQuery {
    /// Resume after this cursor (as given with an earlier item); none:
    /// from now.
    pub cursor: Option<String>,
    /// Only the changes of this task (and its attempts).
    pub task: Option<TaskId>,
}

/// One item of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// The stream starts after this cursor.
    Start(Cursor),
    Change(Cursor, Change),
    /// Nothing happened for a while; the cursor is where the stream is.
    Tick(Cursor),
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, ApiError>> + Send>>;

impl Api {
    /// Watch the committed changes. A cursor the master cannot resume
    /// from is [`ApiError::Gone`] now, not mid-stream.
    pub async fn watch(&self, q: WatchQuery) -> Result<WatchStream, ApiError> {
        let from = match &q.cursor {
            Some(c) if !c.is_empty() => Some(
                c.parse::<Cursor>()
                    .map_err(|why| ApiError::invalid("cursor", why))?,
            ),
            _ => None,
        };
        if let Some(task) = q.task {
            self.must_exist(task).await?;
        }
        let feed = self.engine.feed().clone();
        let w = feed.watch(from)?;
        let (tx, out) = mpsc::channel(64);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _ = forward(&feed, w, q.task, stopping, &tx).await;
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
    }
}

/// Send the start, what was missed, then what comes, until the client goes
/// away or the master stops. A watcher that falls too far behind gets
/// [`ApiError::Gone`] and resumes from its last cursor.
async fn forward(
    feed: &crate::engine::Feed,
    w: Watch,
    task: Option<TaskId>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    tx: &mpsc::Sender<Result<WatchItem, ApiError>>,
) -> Result<(), ()> {
    let send = |item| async move { tx.send(item).await.map_err(|_| ()) };
    let Watch {
        from: start,
        missed: mut backlog,
        mut rx,
    } = w;
    send(Ok(WatchItem::Start(start))).await?;
    let mut at = start;
    let wanted = |e: &Event| task.is_none() || e.change.task() == task;
    loop {
        for e in backlog.drain(..) {
            if e.seq <= at.seq {
                continue;
            }
            at = feed.cursor_of(&e);
            if wanted(&e) {
                send(Ok(WatchItem::Change(at, e.change.clone()))).await?;
            }
        }
        let next = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep(TICK_EVERY) => {
                send(Ok(WatchItem::Tick(at))).await?;
                continue;
            }
            _ = stopping.changed() => return Ok(()),
        };
        match next {
            Ok(e) => backlog.push(e),
            // Fell behind the live channel: catch up from what the feed
            // keeps (or tell the client to take a fresh snapshot).
            Err(broadcast::error::RecvError::Lagged(_)) => match feed.watch(Some(at)) {
                Ok(fresh) => {
                    backlog = fresh.missed;
                    rx = fresh.rx;
                }
                Err(gone) => return send(Err(ApiError::Gone(gone))).await,
            },
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// The one wire shape of a watch item (gRPC sends it, REST serialises it).
impl From<&WatchItem> for berth_proto::v1::WatchEvent {
    fn from(item: &WatchItem) -> Self {
        use berth_proto::v1::WatchEvent as E;
        match item {
            WatchItem::Start(c) => E {
                kind: "start".into(),
                cursor: c.to_string(),
                ..E::default()
            },
            WatchItem::Tick(c) => E {
                kind: "tick".into(),
                cursor: c.to_string(),
                ..E::default()
            },
            WatchItem::Change(c, change) => {
                let cursor = c.to_string();
                match change {
                    Change::Task { id, state } => E {
                        kind: "task".into(),
                        cursor,
                        id: id.0,
                        task_id: id.0,
                        state: state.to_string(),
                        ..E::default()
                    },
                    Change::Attempt {
                        id,
                        task,
                        worker,
                        state,
                    } => E {
                        kind: "attempt".into(),
                        cursor,
                        id: id.0,
                        task_id: task.0,
                        worker_id: worker.0.clone(),
                        state: state.to_string(),
                        ..E::default()
                    },
                    Change::Worker { id, name, state } => E {
                        kind: "worker".into(),
                        cursor,
                        worker_id: id.0.clone(),
                        worker_name: name.clone(),
                        state: state.to_string(),
                        ..E::default()
                    },
                    Change::WorkerRemoved { id } => E {
                        kind: "worker_removed".into(),
                        cursor,
                        worker_id: id.0.clone(),
                        ..E::default()
                    },
                }
            }
        }
    }
}
