//! `--json` output: the typed shapes of `berth_proto::json`, the very ones
//! the REST API answers with and `/openapi.json` describes, as JSON values
//! (keys in sorted order). Absent values (no exit code, no end time) are
//! `null` rather than a zero.

use berth_proto::json as shape;
use berth_proto::json::value;
use berth_proto::v1;
use serde_json::Value;

pub fn resources(r: &berth_core::Resources) -> Value {
    value(&shape::resources(r))
}

pub fn attempt(a: &v1::Attempt) -> Value {
    value(&shape::attempt(a))
}

pub fn task(t: &v1::Task) -> Value {
    value(&shape::task(t))
}

/// `ListTasksResponse`'s tasks.
pub fn tasks(list: &[v1::Task]) -> Value {
    value(&shape::tasks(list))
}

pub fn worker(w: &v1::Worker) -> Value {
    value(&shape::worker(w))
}

/// `ListWorkersResponse`.
pub fn workers(list: &[v1::Worker]) -> Value {
    value(&shape::workers(list))
}

/// After `drain`, `unregister` or `register`: the master's answer.
pub fn worker_action(action: &str, name: &str, message: &str) -> Value {
    value(&shape::worker_action(action, name, message))
}

/// `ReconcileResponse`, with the lines `fix-resources` prints.
pub fn reconcile(r: &v1::ReconcileResponse) -> Value {
    value(&shape::reconcile(r))
}

/// `CancelTaskResponse`.
pub fn cancelled(t: &v1::Task) -> Value {
    value(&shape::Cancelled {
        task: shape::task(t),
    })
}

/// `SubmitTaskResponse`.
pub fn submitted(task_id: u64) -> Value {
    value(&shape::Submitted {
        task_id,
        task: None,
    })
}

/// `ListTaskFilesResponse`.
pub fn task_files(task_id: u64, files: &[v1::OutputFile]) -> Value {
    value(&shape::task_files(task_id, files))
}

/// `ListOutputsResponse`.
pub fn outputs(list: &[v1::TaskOutputs]) -> Value {
    value(&shape::outputs(list))
}

/// After `task download`: where the files went.
pub fn downloaded(task_id: u64, dir: &std::path::Path, files: &[v1::OutputFile]) -> Value {
    value(&shape::Downloaded {
        task_id,
        dir: dir.display().to_string(),
        files: shape::output_files(files),
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
