//! The task list, one page at a time.
//!
//! Order: the active tasks (queued, assigned, running) oldest first, then
//! the finished ones newest first — what `squeue` and then `sacct` would
//! show. A page holds at most `limit` tasks ([`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]); its `next_cursor` (opaque to clients: the position of
//! the page's last task) asks for the tasks after it. A task that changes
//! between active and finished while a client pages may be listed twice or
//! not at all, as with `squeue` run twice.

use super::{Api, ApiError};
use crate::state::State;
use crate::views;
use berth_core::{TaskId, TaskRecord, TaskState};
use berth_proto::v1;

/// Tasks per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most tasks one page may hold.
pub const MAX_LIMIT: u32 = 1000;

/// Which tasks to list; every part given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    /// The task's name, exactly.
    pub name: Option<String>,
    /// A worker (by name or node id) one of the task's attempts ran on.
    pub worker: Option<String>,
}

/// One list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    pub filter: TaskFilter,
    /// `None` = [`DEFAULT_LIMIT`].
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`; `None` = from the start.
    pub cursor: Option<String>,
}

/// One page of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    pub tasks: Vec<v1::Task>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Tasks matching the filter, on all pages together.
    pub total: u64,
    /// Matching tasks after this page.
    pub remaining: u64,
}

impl TaskFilter {
    /// A state filter as clients spell it: empty = any state.
    pub fn parse_state(field: &str, raw: &str) -> Result<Option<TaskState>, ApiError> {
        if raw.is_empty() {
            return Ok(None);
        }
        TaskState::parse(raw).map(Some).ok_or_else(|| {
            let all: Vec<_> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(
                field,
                format!("'{raw}' is not a task state; use one of {}", all.join(", ")),
            )
        })
    }

    fn matches(&self, s: &State, t: &TaskRecord) -> bool {
        self.state.is_none_or(|f| t.state == f)
            && self.name.as_ref().is_none_or(|n| t.spec.name == *n)
            && self.worker.as_ref().is_none_or(|w| {
                s.attempts_of(t.id).any(|a| {
                    a.worker_id.0 == *w || s.worker(&a.worker_id).is_some_and(|r| r.name == *w)
                })
            })
    }
}

/// A task's place in the list order: active ones by id, then finished
/// ones by id backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Active(TaskId),
    Finished(TaskId),
}

impl Position {
    fn of(t: &TaskRecord) -> Position {
        if t.state.is_terminal() {
            Position::Finished(t.id)
        } else {
            Position::Active(t.id)
        }
    }

    /// Does `self` come after `other` in the list?
    fn is_after(self, other: Position) -> bool {
        match (self, other) {
            (Position::Active(a), Position::Active(b)) => a > b,
            (Position::Finished(a), Position::Finished(b)) => a < b,
            (Position::Finished(_), Position::Active(_)) => true,
            (Position::Active(_), Position::Finished(_)) => false,
        }
    }

    fn cursor(self) -> String {
        match self {
            Position::Active(id) => format!("a{:x}", id.0),
            Position::Finished(id) => format!("f{:x}", id.0),
        }
    }

    fn from_cursor(raw: &str) -> Result<Position, ApiError> {
        let bad = || {
            ApiError::invalid(
                "cursor",
                format!(
                    "'{raw}' is not a cursor this master gave; use a page's next_cursor, or none to start again"
                ),
            )
        };
        let id = |hex: &str| u64::from_str_radix(hex, 16).map(TaskId).map_err(|_| bad());
        match raw.split_at_checked(1) {
            Some(("a", hex)) => Ok(Position::Active(id(hex)?)),
            Some(("f", hex)) => Ok(Position::Finished(id(hex)?)),
            _ => Err(bad()),
        }
    }
}

/// The page size asked for, checked.
fn page_size(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(ApiError::invalid(
            "limit",
            format!("{n} is out of range; give 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
        )),
    }
}

/// One page of `s`'s tasks: a pure read of the state.
fn page(s: &State, filter: &TaskFilter, limit: usize, after: Option<Position>) -> TaskPage {
    let mut active: Vec<&TaskRecord> = Vec::new();
    let mut finished: Vec<&TaskRecord> = Vec::new();
    let mut total = 0u64;
    for t in s.tasks().filter(|t| filter.matches(s, t)) {
        total += 1;
        if after.is_none_or(|c| Position::of(t).is_after(c)) {
            if t.state.is_terminal() {
                finished.push(t);
            } else {
                active.push(t);
            }
        }
    }
    active.sort_by_key(|t| t.id);
    finished.sort_by_key(|t| std::cmp::Reverse(t.id));
    let left = active.len() + finished.len();
    let chosen: Vec<&TaskRecord> = active.into_iter().chain(finished).take(limit).collect();
    let remaining = (left - chosen.len()) as u64;
    let next_cursor = match chosen.last() {
        Some(last) if remaining > 0 => Some(Position::of(last).cursor()),
        _ => None,
    };
    TaskPage {
        tasks: views::task_list(s, chosen.into_iter()),
        next_cursor,
        total,
        remaining,
    }
}

impl Api {
    /// One page of tasks matching the query's filter.
    pub async fn list_tasks(&self, query: TaskQuery) -> Result<TaskPage, ApiError> {
        let limit = page_size(query.limit)?;
        let after = query
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(Position::from_cursor)
            .transpose()?;
        let filter = query.filter;
        Ok(self
            .engine
            .query(move |s| page(s, &filter, limit, after))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Effects, StateConfig, WorkerHello};
    use berth_core::{Resources, TaskSpec};

    /// A state with one worker and `finished` cancelled tasks followed by
    /// `queued` tasks that wait for capacity.
    fn state(finished: usize, queued: usize) -> State {
        let mut s = State::new(StateConfig::default());
        let mut fx = Effects::default();
        let total = Resources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        s.hello(WorkerHello::process_only("w", "w", total), 0, &mut fx)
            .unwrap();
        let big = Resources {
            cpu_millis: 1_000,
            ..Resources::ZERO
        };
        for i in 0..finished + queued {
            let mut spec = TaskSpec::process(vec!["true".into()], big);
            spec.name = format!("t{}", i % 3);
            let id = s.submit(spec, false, 0, &mut fx).unwrap();
            if i < finished {
                s.cancel(id, 0, &mut fx).unwrap();
            }
        }
        s
    }

    fn all_pages(s: &State, filter: &TaskFilter, limit: usize) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let p = page(s, filter, limit, after);
            pages.push(p.tasks.iter().map(|t| t.id).collect());
            match p.next_cursor {
                Some(c) => after = Some(Position::from_cursor(&c).unwrap()),
                None => return pages,
            }
        }
    }

    #[test]
    fn active_first_oldest_first_then_finished_newest_first() {
        let s = state(5, 4); // 1..=5 cancelled, 6..=9 queued
        let p = page(&s, &TaskFilter::default(), 100, None);
        let ids: Vec<u64> = p.tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![6, 7, 8, 9, 5, 4, 3, 2, 1]);
        assert_eq!((p.total, p.remaining, p.next_cursor), (9, 0, None));
    }

    #[test]
    fn pages_hold_every_task_exactly_once_in_order() {
        let s = state(7, 6);
        let whole: Vec<u64> = page(&s, &TaskFilter::default(), 1000, None)
            .tasks
            .iter()
            .map(|t| t.id)
            .collect();
        for limit in [1, 2, 3, 4, 6, 13, 14] {
            let pages = all_pages(&s, &TaskFilter::default(), limit);
            assert!(pages.iter().all(|p| !p.is_empty() && p.len() <= limit));
            assert_eq!(pages.concat(), whole, "limit {limit}");
        }
        let first = page(&s, &TaskFilter::default(), 4, None);
        assert_eq!((first.total, first.remaining), (13, 9));
    }

    #[test]
    fn filters_by_state_and_name() {
        let s = state(4, 3); // names t0 t1 t2 t0 | t1 t2 t0
        let f = TaskFilter {
            state: Some(TaskState::Cancelled),
            ..TaskFilter::default()
        };
        let ids: Vec<u64> = page(&s, &f, 100, None).tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
        let f = TaskFilter {
            name: Some("t0".into()),
            ..TaskFilter::default()
        };
        assert_eq!(all_pages(&s, &f, 1).concat(), vec![7, 4, 1]);
        let f = TaskFilter {
            worker: Some("w".into()),
            ..TaskFilter::default()
        };
        assert_eq!(page(&s, &f, 100, None).total, 0, "nothing ever ran");
    }

    #[test]
    fn bad_limits_states_and_cursors_name_their_field() {
        assert_eq!(page_size(None).unwrap(), 100);
        assert_eq!(page_size(Some(1000)).unwrap(), 1000);
        for bad in [0, 1001] {
            let e = page_size(Some(bad)).unwrap_err();
            assert_eq!(e.field(), Some("limit"));
            assert!(e.to_string().contains("1000"), "{e}");
        }
        let e = TaskFilter::parse_state("state", "bogus").unwrap_err();
        assert_eq!(e.field(), Some("state"));
        assert!(e.to_string().contains("queued"), "{e}");
        assert_eq!(TaskFilter::parse_state("state", "").unwrap(), None);
        for bad in ["", "x1", "a", "azz", "f-1"] {
            let e = Position::from_cursor(bad).unwrap_err();
            assert_eq!(e.field(), Some("cursor"), "{bad}");
        }
        let p = Position::Finished(TaskId(255));
        assert_eq!(Position::from_cursor(&p.cursor()).unwrap(), p);
    }
}
