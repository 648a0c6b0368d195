//! Wire messages as JSON, written out by hand with the field names of
//! `berth.proto`: one vocabulary for the REST API and the CLI's `--json`.
//! Absent values (no exit code, no end time) are `null`, not zero.

use crate::{resources_or_zero, v1};
use berth_core::Resources;
use serde_json::{Value, json};

pub fn resources(r: &Resources) -> Value {
    json!({
        "cpu_millis": r.cpu_millis,
        "memory_bytes": r.memory_bytes,
        "storage_bytes": r.storage_bytes,
        "gpus": r.gpus,
    })
}

pub fn opt_ms(ms: i64) -> Value {
    if ms > 0 { json!(ms) } else { Value::Null }
}

pub fn exit_code(has: bool, code: i32) -> Value {
    if has { json!(code) } else { Value::Null }
}

pub fn spec(s: &v1::TaskSpec) -> Value {
    json!({
        "name": s.name,
        "driver": s.driver,
        "image": s.image,
        "command": s.command,
        "env": s.env.iter().map(|e| json!({"key": e.key, "value": e.value})).collect::<Vec<_>>(),
        "resources": resources(&resources_or_zero(s.resources)),
        "retries": s.retries,
        "timeout_ms": s.timeout_ms,
        "priority": s.priority,
        "constraints": labels(&s.constraints),
        "strategy": s.strategy,
        "pinned_worker": s.pinned_worker,
        "stop_after_disconnect_ms": s.stop_after_disconnect_ms,
    })
}

/// `key=value` pairs as `[{"key":…,"value":…}]`, as `berth.proto` has them.
pub fn labels(list: &[v1::Label]) -> Value {
    list.iter()
        .map(|l| json!({"key": l.key, "value": l.value}))
        .collect::<Vec<_>>()
        .into()
}

pub fn attempt(a: &v1::Attempt) -> Value {
    json!({
        "id": a.id,
        "task_id": a.task_id,
        "worker_id": a.worker_id,
        "worker_name": a.worker_name,
        "state": a.state,
        "created_ms": opt_ms(a.created_ms),
        "started_ms": opt_ms(a.started_ms),
        "ended_ms": opt_ms(a.ended_ms),
        "has_exit_code": a.has_exit_code,
        "exit_code": exit_code(a.has_exit_code, a.exit_code),
        "reason": a.reason,
        "gpu_ids": a.gpu_ids,
        "resources": resources(&resources_or_zero(a.resources)),
    })
}

pub fn task(t: &v1::Task) -> Value {
    json!({
        "id": t.id,
        "spec": spec(&t.spec.clone().unwrap_or_default()),
        "state": t.state,
        "submitted_ms": opt_ms(t.submitted_ms),
        "ended_ms": opt_ms(t.ended_ms),
        "has_exit_code": t.has_exit_code,
        "exit_code": exit_code(t.has_exit_code, t.exit_code),
        "reason": t.reason,
        "wait_reason": t.wait_reason,
        "cancel_requested": t.cancel_requested,
        "attempts": t.attempts.iter().map(attempt).collect::<Vec<_>>(),
    })
}

/// `ListTasksResponse`.
pub fn tasks(list: &[v1::Task]) -> Value {
    json!({ "tasks": list.iter().map(task).collect::<Vec<_>>() })
}

pub fn worker(w: &v1::Worker) -> Value {
    let total = resources_or_zero(w.total);
    let allocated = resources_or_zero(w.allocated);
    let unknown = resources_or_zero(w.unknown);
    json!({
        "id": w.id,
        "name": w.name,
        "state": w.state,
        "total": resources(&total),
        "allocated": resources(&allocated),
        "unknown": resources(&unknown),
        "available": resources(&total.saturating_sub(&allocated).saturating_sub(&unknown)),
        "running_attempts": w.running_attempts,
        "unknown_attempts": w.unknown_attempts,
        "overcommitted": w.overcommitted,
        "drivers": w.drivers,
        "gpus": w.gpus.iter().map(|g| json!({
            "index": g.index,
            "model": g.model,
            "memory_bytes": g.memory_bytes,
            "uuid": g.uuid,
        })).collect::<Vec<_>>(),
        "last_seen_ms": opt_ms(w.last_seen_ms),
        "labels": labels(&w.labels),
        "drained": w.drained,
        "gpu_holders": w.gpu_holders.iter().map(|g| json!({
            "index": g.index,
            "task_id": g.task_id,
            "attempt_id": g.attempt_id,
        })).collect::<Vec<_>>(),
    })
}

/// `ListWorkersResponse`.
pub fn workers(list: &[v1::Worker]) -> Value {
    json!({ "workers": list.iter().map(worker).collect::<Vec<_>>() })
}

/// A watch event (`GET /api/v1/events`), fields that do not apply left out.
pub fn watch_event(e: &v1::WatchEvent) -> Value {
    let mut v = json!({ "kind": e.kind, "cursor": e.cursor });
    if e.id != 0 {
        v["id"] = json!(e.id);
    }
    if e.task_id != 0 {
        v["task_id"] = json!(e.task_id);
    }
    for (k, s) in [
        ("worker_id", &e.worker_id),
        ("worker_name", &e.worker_name),
        ("state", &e.state),
    ] {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    }
    v
}
