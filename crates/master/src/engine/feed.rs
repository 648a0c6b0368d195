//! The change feed: every committed batch's task, attempt and worker
//! changes, numbered, for watchers (`berth task submit --wait`, the
//! dashboard, `GET /api/v1/events`, gRPC `Watch`).
//!
//! The engine publishes a batch's changes only after the batch is durable,
//! so a watcher never sees what could still be undone. The last
//! [`KEEP`] changes stay in memory: a watcher that lost its connection
//! resumes from its cursor without a gap or a repeat. A cursor older than
//! that, or from before the master's restart (the cursor names the
//! master's incarnation), is refused as gone: the watcher takes a fresh
//! snapshot (a list, a `show`) and watches from the cursor it is given.
//! While nobody has watched for five minutes, changes are only counted
//! (the place benchmark showed keeping them cost a fifth of its
//! placements/s).

use berth_core::{AttemptState, TaskId, TaskState, WorkerId, WorkerState};
use berth_store::Write;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Changes kept for watchers that resume.
pub const KEEP: usize = 20_000;
/// With nobody watching for this long, changes are only counted, not
/// kept: a watcher that comes back later starts from a fresh snapshot.
pub const KEEP_WHILE_UNWATCHED: std::time::Duration = std::time::Duration::from_secs(300);

/// One change, as a watcher sees it: what changed and its new state (the
/// watcher asks for the whole record if it needs more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Task {
        id: TaskId,
        state: TaskState,
    },
    Attempt {
        id: berth_core::AttemptId,
        task: TaskId,
        worker: WorkerId,
        state: AttemptState,
    },
    Worker {
        id: WorkerId,
        name: String,
        state: WorkerState,
    },
    WorkerRemoved {
        id: WorkerId,
    },
}

impl Change {
    /// The task this change is about, if any.
    pub fn task(&self) -> Option<TaskId> {
        match self {
            Change::Task { id, .. } => Some(*id),
            Change::Attempt { task, .. } => Some(*task),
            _ => None,
        }
    }
}

/// A change with its place in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub change: Change,
}

/// Where a watcher stands: after change `seq` of the master incarnation
/// `incarnation`. Written as `INCARNATION.SEQ` (hex, decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub incarnation: u64,
    pub seq: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{}", self.incarnation, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Cursor, String> {
        let bad = || format!("'{s}' is not a cursor (one is given with every event)");
        let (inc, seq) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            incarnation: u64::from_str_radix(inc, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Why a watch cannot resume from a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    #[error(
        "the cursor is from before the master restarted; take a fresh snapshot and watch from now"
    )]
    Restarted,
    #[error(
        "the cursor is older than the {KEEP} changes the master keeps; take a fresh snapshot and watch from now"
    )]
    TooOld,
}

struct Inner {
    /// The seq of the last change published.
    last: u64,
    recent: VecDeque<Arc<Event>>,
    /// When a watch last started (none: never).
    watched_at: Option<std::time::Instant>,
}

/// A watch as it starts: the cursor it starts after, the changes already
/// published since, and the receiver of those to come (take only events
/// with a seq above the last one handled).
pub struct Watch {
    pub from: Cursor,
    pub missed: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

/// The feed, shared by the engine (which publishes) and the API (which
/// lets clients watch).
pub struct Feed {
    incarnation: u64,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Feed {
    pub fn new(incarnation: u64) -> Feed {
        let (tx, _) = broadcast::channel(4_096);
        Feed {
            incarnation,
            inner: Mutex::new(Inner {
                last: 0,
                recent: VecDeque::new(),
                watched_at: None,
            }),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish the changes of a committed batch (its coalesced writes).
    pub fn publish(&self, writes: &[Write]) {
        let mut inner = self.lock();
        let unwatched = self.tx.receiver_count() == 0
            && inner
                .watched_at
                .is_none_or(|t| t.elapsed() > KEEP_WHILE_UNWATCHED);
        if unwatched {
            // Nobody to resume: count the changes (cursors stay ordered)
            // and keep none, so an old cursor is refused, never given a
            // gap.
            let n = writes
                .iter()
                .filter(|w| !matches!(w, Write::Register(_) | Write::Unregister(_)))
                .count();
            inner.last += n as u64;
            inner.recent.clear();
            return;
        }
        for w in writes {
            let change = match w {
                Write::Task(t) => Change::Task {
                    id: t.id,
                    state: t.state,
                },
                Write::Attempt(a) => Change::Attempt {
                    id: a.id,
                    task: a.task_id,
                    worker: a.worker_id.clone(),
                    state: a.state,
                },
                Write::Worker(w) => Change::Worker {
                    id: w.id.clone(),
                    name: w.name.clone(),
                    state: w.state,
                },
                Write::RemoveWorker(id) => Change::WorkerRemoved { id: id.clone() },
                Write::Register(_) | Write::Unregister(_) => continue,
            };
            inner.last += 1;
            let event = Arc::new(Event {
                seq: inner.last,
                change,
            });
            if inner.recent.len() == KEEP {
                inner.recent.pop_front();
            }
            inner.recent.push_back(event.clone());
            // Nobody listening is fine.
            let _ = self.tx.send(event);
        }
    }

    /// Start watching after `from` (or from now).
    pub fn watch(&self, from: Option<Cursor>) -> Result<Watch, Gone> {
        let mut inner = self.lock();
        inner.watched_at = Some(std::time::Instant::now());
        // Subscribed under the lock: nothing published falls in between.
        let rx = self.tx.subscribe();
        let now = Cursor {
            incarnation: self.incarnation,
            seq: inner.last,
        };
        let Some(from) = from else {
            return Ok(Watch {
                from: now,
                missed: Vec::new(),
                rx,
            });
        };
        if from.incarnation != self.incarnation || from.seq > inner.last {
            return Err(Gone::Restarted);
        }
        let oldest = inner.recent.front().map_or(inner.last + 1, |e| e.seq);
        if from.seq + 1 < oldest {
            return Err(Gone::TooOld);
        }
        let missed = inner
            .recent
            .iter()
            .filter(|e| e.seq > from.seq)
            .cloned()
            .collect();
        Ok(Watch { from, missed, rx })
    }

    /// The cursor of an event of this feed.
    pub fn cursor_of(&self, e: &Event) -> Cursor {
        Cursor {
            incarnation: self.incarnation,
            seq: e.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{Resources, TaskRecord, TaskSpec};

    fn task(id: u64, state: TaskState) -> Write {
        Write::Task(TaskRecord {
            id: TaskId(id),
            spec: TaskSpec::process(vec!["true".into()], Resources::ZERO),
            state,
            submitted_ms: 0,
            ended_ms: None,
            exit_code: None,
            reason: String::new(),
            cancel_requested: false,
        })
    }

    #[test]
    fn unwatched_changes_are_counted_not_kept() {
        let feed = Feed::new(7);
        feed.publish(&[task(1, TaskState::Queued), task(2, TaskState::Queued)]);
        assert_eq!(
            feed.watch(Some("7.0".parse().unwrap())).err(),
            Some(Gone::TooOld),
            "not kept: an old cursor is refused, never given a gap"
        );
        // Counted: a watch from now starts after both. Once watched, kept.
        let w = feed.watch(None).unwrap();
        assert_eq!(w.from.seq, 2, "counted");
        drop(w);
        feed.publish(&[task(1, TaskState::Assigned)]);
        let missed = feed.watch(Some("7.2".parse().unwrap())).unwrap().missed;
        assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_watcher_resumes_without_gap_or_repeat_and_an_old_cursor_is_gone() {
        let feed = Feed::new(7);
        let _watching = feed.watch(None).unwrap();
        feed.publish(&[task(1, TaskState::Queued)]);
        let Watch {
            from: start,
            missed,
            mut rx,
        } = feed.watch(None).unwrap();
        assert_eq!(start.to_string(), "7.1");
        assert!(missed.is_empty());
        feed.publish(&[task(1, TaskState::Assigned), task(2, TaskState::Queued)]);
        let got: Vec<u64> = (0..2).map(|_| rx.try_recv().unwrap().seq).collect();
        assert_eq!(got, [2, 3]);
        // Resume after the first of them.
        let c: Cursor = "7.2".parse().unwrap();
        let missed = feed.watch(Some(c)).unwrap().missed;
        assert_eq!(missed.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(
            missed[0].change,
            Change::Task {
                id: TaskId(2),
                state: TaskState::Queued
            }
        );
        // Another incarnation, or a cursor from the future: restarted.
        assert_eq!(
            feed.watch(Some("8.2".parse().unwrap())).err(),
            Some(Gone::Restarted)
        );
        assert_eq!(
            feed.watch(Some("7.9".parse().unwrap())).err(),
            Some(Gone::Restarted)
        );
        // Older than what is kept.
        for i in 0..KEEP as u64 {
            feed.publish(&[task(10 + i, TaskState::Queued)]);
        }
        assert_eq!(feed.watch(Some(c)).err(), Some(Gone::TooOld));
        assert!("nonsense".parse::<Cursor>().is_err());
    }
}
