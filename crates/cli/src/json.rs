//! `--json` output: the proto messages written out by hand, field names as
//! in `berth.proto`, so scripts see the API's own vocabulary. Absent
//! values (no exit code, no end time) are `null` rather than a zero.

pub use berth_proto::json::{attempt, resources, task, tasks, worker, workers};
use berth_proto::{resources_or_zero, v1};
use serde_json::{Value, json};

/// After `drain`, `unregister` or `register`: the master's answer.
pub fn worker_action(action: &str, name: &str, message: &str) -> Value {
    json!({ "action": action, "worker": name, "message": message })
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
