//! `--json` output: the proto messages written out by hand, field names as
//! in `berth.proto`, so scripts see the API's own vocabulary. Absent
//! values (no exit code, no end time) are `null` rather than a zero.

use berth_core::Resources;
use berth_proto::{resources_or_zero, v1};
use serde_json::{Value, json};

pub fn resources(r: &Resources) -> Value {
    json!({
        "cpu_millis": r.cpu_millis,
        "memory_bytes": r.memory_bytes,
        "storage_bytes": r.storage_bytes,
        "gpus": r.gpus,
    })
}

fn opt_ms(ms: i64) -> Value {
    if ms > 0 { json!(ms) } else { Value::Null }
}

fn exit_code(has: bool, code: i32) -> Value {
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
        "priority": s.priority,
        "constraints": labels(&s.constraints),
        "strategy": s.strategy,
        "pinned_worker": s.pinned_worker,
    })
}

/// `key=value` pairs as `[{"key":…,"value":…}]`, as `berth.proto` has them.
fn labels(list: &[v1::Label]) -> Value {
    list.iter()
        .map(|l| json!({"key": l.key, "value": l.value}))
        .collect::<Vec<_>>()
        .into()
}

/// After `drain`, `unregister` or `register`: the master's answer.
pub fn worker_action(action: &str, name: &str, message: &str) -> Value {
    json!({ "action": action, "worker": name, "message": message })
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
    json!({
        "id": w.id,
        "name": w.name,
        "state": w.state,
        "total": resources(&total),
        "allocated": resources(&allocated),
        "available": resources(&total.saturating_sub(&allocated)),
        "running_attempts": w.running_attempts,
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

/// `ReconcileResponse`.
pub fn reconcile(r: &v1::ReconcileResponse) -> Value {
    json!({
        "dry_run": r.dry_run,
        "workers_checked": r.workers_checked,
        "fixes": r.fixes.iter().map(|f| json!({
            "worker_id": f.worker_id,
            "worker_name": f.worker_name,
            "before": resources(&resources_or_zero(f.before)),
            "after": resources(&resources_or_zero(f.after)),
            "tasks": f.tasks,
        })).collect::<Vec<_>>(),
    })
}

/// `CancelTaskResponse`.
pub fn cancelled(t: &v1::Task) -> Value {
    json!({ "task": task(t) })
}

/// `SubmitTaskResponse`.
pub fn submitted(task_id: u64) -> Value {
    json!({ "task_id": task_id })
}

fn output_file(f: &v1::OutputFile) -> Value {
    json!({ "path": f.path, "size": f.size })
}

/// `ListTaskFilesResponse`.
pub fn task_files(task_id: u64, files: &[v1::OutputFile]) -> Value {
    json!({
        "task_id": task_id,
        "files": files.iter().map(output_file).collect::<Vec<_>>(),
    })
}

/// `ListOutputsResponse`.
pub fn outputs(list: &[v1::TaskOutputs]) -> Value {
    json!({
        "tasks": list.iter().map(|t| json!({
            "task_id": t.task_id,
            "name": t.name,
            "state": t.state,
            "files": t.files,
            "bytes": t.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// After `task download`: where the files went.
pub fn downloaded(task_id: u64, dir: &std::path::Path, files: &[v1::OutputFile]) -> Value {
    json!({
        "task_id": task_id,
        "dir": dir.display().to_string(),
        "files": files.iter().map(output_file).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_is_task_id_only() {
        assert_eq!(submitted(4).to_string(), r#"{"task_id":4}"#);
    }

    #[test]
    fn absent_values_are_null() {
        let t = v1::Task {
            id: 1,
            state: "queued".into(),
            ..Default::default()
        };
        let v = task(&t);
        assert_eq!(v["exit_code"], Value::Null);
        assert_eq!(v["ended_ms"], Value::Null);
        assert_eq!(v["spec"]["resources"]["cpu_millis"], 0);
        let w = worker(&v1::Worker {
            total: Some(v1::Resources {
                cpu_millis: 2000,
                ..Default::default()
            }),
            allocated: Some(v1::Resources {
                cpu_millis: 500,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(w["available"]["cpu_millis"], 1500);
    }
}
