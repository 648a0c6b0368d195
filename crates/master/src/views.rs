//! Read-only views of the state as wire messages, for the Control service
//! (and later the JSON API). They run on the engine thread, after the batch
//! they observe is durable.

use crate::state::State;
use berth_core::{TaskRecord, TaskState, WorkerRecord};
use berth_proto::{attempt_to_wire, task_to_wire, v1};

fn worker_name(s: &State, id: &berth_core::WorkerId) -> String {
    s.worker(id).map(|w| w.name.clone()).unwrap_or_default()
}

pub fn task(s: &State, t: &TaskRecord) -> v1::Task {
    let attempts = s
        .attempts_of(t.id)
        .map(|a| attempt_to_wire(a, &worker_name(s, &a.worker_id)))
        .collect();
    task_to_wire(t, attempts, s.wait_reason_at(t.id, crate::engine::now_ms()))
}

pub fn tasks(s: &State, filter: Option<TaskState>) -> Vec<v1::Task> {
    s.tasks()
        .filter(|t| filter.is_none_or(|f| t.state == f))
        .map(|t| task(s, t))
        .collect()
}

pub fn worker(s: &State, w: &WorkerRecord) -> v1::Worker {
    v1::Worker {
        id: w.id.0.clone(),
        name: w.name.clone(),
        state: w.state.as_str().to_string(),
        total: Some(w.total.into()),
        allocated: Some(s.ledger().allocated(&w.id).into()),
        running_attempts: s.ledger().count_on(&w.id) as u32,
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
