//! Read-only views of the state as wire messages, for `crate::api` (which
//! both the gRPC and the JSON API answer from). They run on the engine
//! thread, after the batch they observe is durable.

use crate::state::State;
use berth_core::{TaskRecord, TaskState, WorkerRecord};
use berth_proto::{attempt_to_wire, task_to_wire, v1};

fn worker_name(s: &State, id: &berth_core::WorkerId) -> String {
    s.worker(id).map(|w| w.name.clone()).unwrap_or_default()
}

/// Queued tasks a list explains the wait of. Explaining one costs a pass
/// over the workers, and lists run on the engine thread, so past this many
/// a list points at `task show` instead of stalling the master.
pub const EXPLAINED_PER_LIST: usize = 1_000;

fn task_with_reason(s: &State, t: &TaskRecord, wait_reason: String) -> v1::Task {
    let attempts = s
        .attempts_of(t.id)
        .map(|a| attempt_to_wire(a, &worker_name(s, &a.worker_id)))
        .collect();
    task_to_wire(t, attempts, wait_reason)
}

pub fn task(s: &State, t: &TaskRecord) -> v1::Task {
    task_with_reason(s, t, s.wait_reason_at(t.id, crate::engine::now_ms()))
}

/// Tasks for a list, explaining the waits of the first
/// [`EXPLAINED_PER_LIST`] queued ones.
pub fn task_list<'a>(s: &State, tasks: impl Iterator<Item = &'a TaskRecord>) -> Vec<v1::Task> {
    let now = crate::engine::now_ms();
    let mut explained = 0;
    tasks
        .map(|t| {
            let reason = if t.state != TaskState::Queued {
                String::new()
            } else if explained < EXPLAINED_PER_LIST {
                explained += 1;
                s.wait_reason_at(t.id, now)
            } else {
                format!(
                    "not explained in lists past {EXPLAINED_PER_LIST} queued tasks; `berth task show {}` says why it waits",
                    t.id
                )
            };
            task_with_reason(s, t, reason)
        })
        .collect()
}

/// A reconciliation report as its wire message.
pub fn reconcile(report: crate::state::ReconcileReport) -> v1::ReconcileResponse {
    v1::ReconcileResponse {
        dry_run: report.dry_run,
        workers_checked: report.workers_checked as u32,
        fixes: report
            .fixes
            .into_iter()
            .map(|f| v1::WorkerFix {
                worker_id: f.worker.0,
                worker_name: f.name,
                before: Some(f.before.into()),
                after: Some(f.after.into()),
                tasks: f.tasks as u32,
                kind: f.kind.as_str().to_string(),
            })
            .collect(),
    }
}

pub fn worker(s: &State, w: &WorkerRecord) -> v1::Worker {
    v1::Worker {
        id: w.id.0.clone(),
        name: w.name.clone(),
        state: w.state.as_str().to_string(),
        total: Some(w.total.into()),
        allocated: Some(s.ledger().live_allocated(&w.id).into()),
        running_attempts: s.ledger().count_on(&w.id) as u32,
        unknown: Some(s.ledger().unknown(&w.id).1.into()),
        unknown_attempts: s.ledger().unknown(&w.id).0 as u32,
        overcommitted: s.is_overcommitted(&w.id),
        drivers: w.drivers.clone(),
        gpus: w.gpus.iter().cloned().map(Into::into).collect(),
        last_seen_ms: w.last_seen_ms,
        labels: berth_proto::labels_to_wire(w.labels.clone()),
        drained: w.drained,
        gpu_holders: gpu_holders(s, w),
    }
}

/// Which live attempt holds each of the worker's GPUs, by index.
fn gpu_holders(s: &State, w: &WorkerRecord) -> Vec<v1::GpuHolder> {
    let mut out: Vec<v1::GpuHolder> = s
        .ledger()
        .attempts_on(&w.id)
        .filter_map(|id| s.attempt(id))
        .flat_map(|a| {
            a.gpu_ids.iter().map(|&index| v1::GpuHolder {
                index,
                task_id: a.task_id.0,
                attempt_id: a.id.0,
            })
        })
        .collect();
    out.sort_by_key(|g| g.index);
    out
}

pub fn workers(s: &State) -> Vec<v1::Worker> {
    let mut out: Vec<_> = s.workers().map(|w| worker(s, w)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Effects, StateConfig, WorkerHello};
    use berth_core::{Resources, TaskSpec};

    #[test]
    fn a_list_explains_the_first_queued_tasks_and_points_at_show_for_the_rest() {
        let mut s = State::new(StateConfig::default());
        let mut fx = Effects::default();
        let total = Resources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        };
        s.hello(WorkerHello::process_only("w", "w", total), 0, &mut fx)
            .unwrap();
        let n = EXPLAINED_PER_LIST + 5;
        for _ in 0..=n {
            s.submit(
                TaskSpec::process(vec!["true".into()], total),
                false,
                0,
                &mut fx,
            )
            .unwrap();
        }
        s.schedule(0, &mut fx); // the first fills the worker; the rest wait
        let list = task_list(&s, s.tasks().filter(|t| t.state == TaskState::Queued));
        assert_eq!(list.len(), n);
        assert!(
            list[..EXPLAINED_PER_LIST]
                .iter()
                .all(|t| t.wait_reason.starts_with("waiting for capacity"))
        );
        assert!(
            list[EXPLAINED_PER_LIST..]
                .iter()
                .all(|t| t.wait_reason.contains("task show"))
        );
        // One task on its own is always explained.
        let last = s.task(berth_core::TaskId(n as u64 + 1)).unwrap();
        assert!(
            task(&s, last)
                .wait_reason
                .starts_with("waiting for capacity")
        );
    }
}
