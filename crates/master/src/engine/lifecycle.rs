//! The task lifecycle log: one `info` line under the `berth::task` target
//! when a task is submitted, placed on a worker, cancelled, and when it
//! finishes. Derived from the batch of store writes the engine has just
//! committed, so a line is written only for what is durable: a batch whose
//! commit failed is undone and logs nothing.
//!
//! Each write holds a record *after* the batch's change and nothing of
//! before; what happened is read from the record itself and from the
//! state after the batch, with no copy of the state before it:
//!
//! * **submitted**: a task written with `submitted_ms` = the step's time
//!   and no attempt older than this step (a task submitted and placed in
//!   one batch is written once, already `assigned`). A later change in
//!   another step within the same millisecond (or after the wall clock
//!   stepped back to it) would be logged as a submission again: a rare
//!   extra line, never a missing one;
//! * **placed**: an attempt written `assigned` and not yet started (an
//!   attempt is written `assigned` only when it is created);
//! * **cancelled**: a task written with the user's cancel and not yet
//!   ended (its attempt is being stopped); a task that ends cancelled is
//!   logged as finished;
//! * **finished**: a task written in a terminal state.
//!
//! Task commands and environment are never logged (they may hold secrets).

use crate::state::State;
use berth_core::units::{format_cores, format_size};
use berth_core::{AttemptRecord, AttemptState, Millis, TaskRecord};
use berth_store::Write;

/// The `tracing` target of the lifecycle lines.
pub const TARGET: &str = "berth::task";

/// One thing that happened to a task in a committed batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    Submitted(&'a TaskRecord),
    Placed(&'a AttemptRecord),
    Cancelled(&'a TaskRecord),
    Finished(&'a TaskRecord),
}

/// What the committed `writes` of a step at `now` did to tasks, in the
/// order of the writes. `state` is the state after the batch.
pub fn events<'a>(state: &State, writes: &'a [Write], now: Millis) -> Vec<Event<'a>> {
    let mut out = Vec::new();
    for w in writes {
        match w {
            Write::Task(t) => {
                if t.state.is_terminal() {
                    if is_new(state, t, now) {
                        out.push(Event::Submitted(t));
                    }
                    out.push(Event::Finished(t));
                } else if is_new(state, t, now) {
                    out.push(Event::Submitted(t));
                } else if t.cancel_requested {
                    out.push(Event::Cancelled(t));
                }
            }
            Write::Attempt(a) if a.state == AttemptState::Assigned && a.started_ms.is_none() => {
                out.push(Event::Placed(a));
            }
            _ => {}
        }
    }
    out
}

/// Submitted in this batch: its submission time is the step's and so is
/// the creation time of every attempt it has (a task sent back to the
/// queue has an older one). Costs the task's attempts, not the batch.
fn is_new(state: &State, t: &TaskRecord, now: Millis) -> bool {
    t.submitted_ms == now && state.attempts_of(t.id).all(|a| a.created_ms == now)
}

/// Log one line per lifecycle event of a batch just committed.
pub fn log_committed(state: &State, writes: &[Write], now: Millis) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    for e in events(state, writes, now) {
        match e {
            Event::Submitted(t) => tracing::info!(
                target: TARGET,
                task = t.id.0,
                name = %t.spec.name,
                driver = t.spec.driver.as_str(),
                image = t.spec.image.as_deref(),
                priority = t.spec.priority,
                cpu = %format_cores(t.spec.resources.cpu_millis),
                memory = %format_size(t.spec.resources.memory_bytes),
                gpus = t.spec.resources.gpus,
                pinned_worker = t.spec.pinned_worker.as_deref(),
                "task submitted"
            ),
            Event::Placed(a) => {
                let worker = state.worker(&a.worker_id).map_or("", |w| w.name.as_str());
                tracing::info!(
                    target: TARGET,
                    task = a.task_id.0,
                    attempt = a.id.0,
                    worker,
                    worker_id = %a.worker_id,
                    cpu = %format_cores(a.resources.cpu_millis),
                    memory = %format_size(a.resources.memory_bytes),
                    gpus = ?a.gpu_ids,
                    "task placed"
                );
            }
            Event::Cancelled(t) => tracing::info!(
                target: TARGET,
                task = t.id.0,
                state = t.state.as_str(),
                "task cancelled; its attempt is being stopped"
            ),
            Event::Finished(t) => tracing::info!(
                target: TARGET,
                task = t.id.0,
                state = t.state.as_str(),
                exit_code = t.exit_code,
                reason = %t.reason,
                attempts = state.attempts_of(t.id).count(),
                elapsed_ms = t.ended_ms.map(|e| e - t.submitted_ms),
                "task finished"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Effects, StateConfig, WorkerHello};
    use berth_core::{Resources, TaskSpec, TaskState};
    use berth_proto::HeldReport;

    fn spec() -> TaskSpec {
        TaskSpec::process(
            vec!["true".into()],
            Resources {
                cpu_millis: 1_000,
                ..Resources::ZERO
            },
        )
    }

    fn kinds(e: &[Event]) -> Vec<(&'static str, u64)> {
        e.iter()
            .map(|e| match e {
                Event::Submitted(t) => ("submitted", t.id.0),
                Event::Placed(a) => ("placed", a.task_id.0),
                Event::Cancelled(t) => ("cancelled", t.id.0),
                Event::Finished(t) => ("finished", t.id.0),
            })
            .collect()
    }

    /// Run one "step" at `now`: `f` changes the state, writes are
    /// coalesced as the engine does.
    fn step(s: &mut State, now: Millis, f: impl FnOnce(&mut State, &mut Effects)) -> Vec<Write> {
        let mut fx = Effects::default();
        f(s, &mut fx);
        s.schedule(now, &mut fx);
        berth_store::coalesce(fx.writes)
    }

    #[test]
    fn a_task_is_submitted_placed_cancelled_and_finished_once_each() {
        let mut s = State::new(StateConfig::default());
        let total = Resources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        let w = step(&mut s, 10, |s, fx| {
            s.hello(WorkerHello::process_only("n1", "tessa", total), 10, fx)
                .unwrap();
        });
        assert!(
            events(&s, &w, 10).is_empty(),
            "a worker's hello is no task event"
        );

        // Two tasks in one batch: the first is placed at once (one write,
        // already assigned), the second waits.
        let mut ids = Vec::new();
        let w = step(&mut s, 20, |s, fx| {
            ids.push(s.submit(spec(), false, 20, fx).unwrap());
            ids.push(s.submit(spec(), false, 20, fx).unwrap());
        });
        let (a, b) = (ids[0].0, ids[1].0);
        assert_eq!(
            kinds(&events(&s, &w, 20)),
            [("submitted", a), ("submitted", b), ("placed", a)]
        );
        let placed = s.live_attempt(ids[0]).unwrap().clone();
        assert_eq!(s.task(ids[0]).unwrap().state, TaskState::Assigned);

        // The same task records written again later are no submission.
        let w = step(&mut s, 30, |s, fx| {
            s.report(
                &placed.worker_id,
                1,
                &HeldReport {
                    attempt_id: placed.id,
                    state: AttemptState::Running,
                    exit_code: None,
                    reason: String::new(),
                },
                30,
                fx,
            );
        });
        assert!(kinds(&events(&s, &w, 30)).is_empty(), "{w:?}");

        // Cancel the running one: cancelled now, finished when it stops;
        // the queued one is placed in the batch that frees the worker.
        let w = step(&mut s, 40, |s, fx| {
            s.cancel(ids[0], 40, fx).unwrap();
        });
        assert_eq!(kinds(&events(&s, &w, 40)), [("cancelled", a)]);
        let w = step(&mut s, 50, |s, fx| {
            s.report(
                &placed.worker_id,
                1,
                &HeldReport {
                    attempt_id: placed.id,
                    state: AttemptState::Cancelled,
                    exit_code: None,
                    reason: "stopped".into(),
                },
                50,
                fx,
            );
        });
        let e = events(&s, &w, 50);
        assert_eq!(kinds(&e), [("finished", a), ("placed", b)]);
        let Event::Finished(t) = e[0] else {
            unreachable!()
        };
        assert_eq!(t.state, TaskState::Cancelled);
    }

    #[test]
    fn a_queued_task_cancelled_finishes_and_a_failed_one_keeps_its_exit_code() {
        let mut s = State::new(StateConfig::default());
        // No worker: the task is queued anyway and cancelled.
        let mut id = None;
        let w = step(&mut s, 5, |s, fx| {
            id = Some(s.submit(spec(), true, 5, fx).unwrap());
        });
        let id = id.unwrap();
        assert_eq!(kinds(&events(&s, &w, 5)), [("submitted", id.0)]);
        let w = step(&mut s, 6, |s, fx| {
            s.cancel(id, 6, fx).unwrap();
        });
        let e = events(&s, &w, 6);
        assert_eq!(kinds(&e), [("finished", id.0)]);
        assert!(matches!(e[0], Event::Finished(t) if t.state == TaskState::Cancelled));

        // A worker joins; a task placed there exits 3 (not retried).
        let total = Resources {
            cpu_millis: 1_000,
            ..Resources::ZERO
        };
        let mut id = None;
        let w = step(&mut s, 7, |s, fx| {
            s.hello(WorkerHello::process_only("n1", "tessa", total), 7, fx)
                .unwrap();
            id = Some(s.submit(spec(), false, 7, fx).unwrap());
        });
        let id = id.unwrap();
        assert_eq!(
            kinds(&events(&s, &w, 7)),
            [("submitted", id.0), ("placed", id.0)]
        );
        let a = s.live_attempt(id).unwrap().clone();
        let w = step(&mut s, 9, |s, fx| {
            s.report(
                &a.worker_id,
                1,
                &HeldReport {
                    attempt_id: a.id,
                    state: AttemptState::Failed,
                    exit_code: Some(3),
                    reason: "exit code 3".into(),
                },
                9,
                fx,
            );
        });
        let e = events(&s, &w, 9);
        assert_eq!(kinds(&e), [("finished", id.0)]);
        assert!(
            matches!(e[0], Event::Finished(t) if t.state == TaskState::Failed && t.exit_code == Some(3)),
            "{e:?}"
        );
    }
}
