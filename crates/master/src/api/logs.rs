//! A task's log as a stream of chunks: every attempt's log, oldest attempt
//! first, from an offset or only the tail, and, when following, what is
//! written until the task has ended. The polling constants live here only.

use super::{Api, ApiError};
use crate::engine::EngineHandle;
use crate::logs::LogStore;
use berth_core::{AttemptId, TaskId};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Most bytes in one chunk.
const LOG_READ: usize = 256 * 1024;

pub use berth_proto::v1::LogChunk;

/// The chunks of a task's log, in order; ends when everything asked for
/// was sent (or the master stops).
pub type LogChunks = Pin<Box<dyn Stream<Item = Result<LogChunk, ApiError>> + Send>>;

/// Which part of a task's log to send. `offset` and `tail` count bytes of
/// the attempts' logs one after the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Skip this many bytes from the start.
    pub offset: u64,
    /// Only the last this many bytes written so far (after `offset`).
    pub tail: Option<u64>,
    /// Keep sending what is written until the task has ended.
    pub follow: bool,
}

impl Api {
    /// Open a task's log. An unknown task is an error now, not mid-stream.
    pub async fn logs(&self, task: TaskId, query: LogQuery) -> Result<LogChunks, ApiError> {
        self.must_exist(task).await?;
        let (tx, rx) = mpsc::channel(16);
        let (engine, logs, stopping) = (
            self.engine.clone(),
            self.logs.clone(),
            self.stopping.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = send_logs(engine, logs, task, query, stopping, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Where to start reading each attempt's log so that the bytes sent begin
/// at `offset`, or at the last `tail` bytes, of the whole (`sizes` in
/// attempt order).
fn start_offsets(sizes: &[u64], query: &LogQuery) -> Vec<u64> {
    let total: u64 = sizes.iter().sum();
    let mut skip = query.offset.min(total);
    if let Some(tail) = query.tail {
        skip = skip.max(total.saturating_sub(tail));
    }
    sizes
        .iter()
        .map(|&size| {
            let here = skip.min(size);
            skip -= here;
            here
        })
        .collect()
}

/// Send every attempt's log in order; when following, poll until the task
/// has ended (its final result is applied only after the worker has sent
/// all of the log, so one more pass after that is complete). Stops when
/// the client goes away or the master stops.
async fn send_logs(
    engine: EngineHandle,
    logs: LogStore,
    id: TaskId,
    query: LogQuery,
    mut stopping: watch::Receiver<bool>,
    tx: &mpsc::Sender<Result<LogChunk, ApiError>>,
) -> Result<(), ApiError> {
    let read_err = |a: AttemptId, e: std::io::Error| {
        tracing::warn!(attempt = %a, error = %e, "reading a task log");
        ApiError::Internal(format!("reading the log of attempt {a}: {e}"))
    };
    let mut offsets: Vec<(AttemptId, u64)> = Vec::new();
    let mut first = true;
    loop {
        let (attempts, ended) = engine
            .query(move |s| {
                let ids: Vec<AttemptId> = s.attempts_of(id).map(|a| a.id).collect();
                (ids, s.task(id).is_none_or(|t| t.state.is_terminal()))
            })
            .await?;
        if first {
            first = false;
            let sizes = attempts
                .iter()
                .map(|&a| logs.size(a).map_err(|e| read_err(a, e)))
                .collect::<Result<Vec<u64>, _>>()?;
            let starts = start_offsets(&sizes, &query);
            offsets = attempts.iter().copied().zip(starts).collect();
        }
        for a in attempts {
            if !offsets.iter().any(|(x, _)| *x == a) {
                offsets.push((a, 0));
            }
        }
        for (a, off) in offsets.iter_mut() {
            loop {
                let data = logs.read(*a, *off, LOG_READ).map_err(|e| read_err(*a, e))?;
                if data.is_empty() {
                    break;
                }
                let n = data.len() as u64;
                let chunk = LogChunk {
                    attempt_id: a.0,
                    offset: *off,
                    data,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(()); // the client went away
                }
                *off += n;
            }
        }
        if !query.follow || ended || tx.is_closed() || *stopping.borrow() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = stopping.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_tail_count_bytes_of_the_whole_log() {
        let q = |offset, tail| LogQuery {
            offset,
            tail,
            follow: false,
        };
        assert_eq!(start_offsets(&[10, 5], &q(0, None)), vec![0, 0]);
        assert_eq!(start_offsets(&[10, 5], &q(12, None)), vec![10, 2]);
        assert_eq!(start_offsets(&[10, 5], &q(99, None)), vec![10, 5]);
        assert_eq!(start_offsets(&[10, 5], &q(0, Some(7))), vec![8, 0]);
        assert_eq!(start_offsets(&[10, 5], &q(0, Some(3))), vec![10, 2]);
        assert_eq!(start_offsets(&[10, 5], &q(0, Some(99))), vec![0, 0]);
        // Whichever starts later wins.
        assert_eq!(start_offsets(&[10, 5], &q(12, Some(7))), vec![10, 2]);
        assert_eq!(start_offsets(&[], &q(3, Some(3))), Vec::<u64>::new());
    }
}
