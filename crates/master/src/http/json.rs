//! API objects as JSON: the wire messages of `berth.proto` (built by
//! `crate::views`, as for gRPC) written out with the proto's field names,
//! the same vocabulary as the CLI's `--json`. Absent values (no exit code,
//! no end time) are `null`, not zero.

use crate::state::ReconcileReport;
use berth_core::Resources;
use berth_core::units::{format_cores, format_gb};
use berth_proto::{resources_or_zero, v1};
use serde_json::{Value, json};
use std::fmt::Write as _;

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
        "retries": s.retries,
        "timeout_ms": s.timeout_ms,
    })
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
    })
}

/// A reconciliation report, with the lines the CLI prints for it.
pub fn reconcile(r: &ReconcileReport) -> Value {
    json!({
        "dry_run": r.dry_run,
        "workers_checked": r.workers_checked,
        "fixes": r.fixes.iter().map(|f| json!({
            "worker_id": f.worker.0,
            "worker_name": f.name,
            "kind": f.kind.as_str(),
            "before": resources(&f.before),
            "after": resources(&f.after),
            "tasks": f.tasks,
        })).collect::<Vec<_>>(),
        "lines": report_lines(r),
    })
}

/// The report in the words of `berth fix-resources`:
/// `✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0`, then a summary.
pub fn report_lines(r: &ReconcileReport) -> Vec<String> {
    let mut lines = Vec::new();
    for f in &r.fixes {
        let (b, a) = (&f.before, &f.after);
        let mut changes = format!(
            "CPU {}→{}, Memory {}→{}",
            format_cores(b.cpu_millis),
            format_cores(a.cpu_millis),
            format_gb(b.memory_bytes),
            format_gb(a.memory_bytes),
        );
        if b.storage_bytes != a.storage_bytes {
            let _ = write!(
                changes,
                ", Storage {}→{}",
                format_gb(b.storage_bytes),
                format_gb(a.storage_bytes)
            );
        }
        if b.gpus != a.gpus {
            let _ = write!(changes, ", GPU {}→{}", b.gpus, a.gpus);
        }
        let verb = if r.dry_run { "Would fix" } else { "✓ Fixed" };
        let name = if f.name.is_empty() {
            &f.worker.0
        } else {
            &f.name
        };
        lines.push(format!("{verb} {name}: {changes}, Tasks: {}", f.tasks));
    }
    let n = r.fixes.len();
    lines.push(if r.dry_run {
        format!("(dry run) would fix {n} workers")
    } else {
        format!("✓ Resource reconciliation complete: fixed {n} workers")
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FixKind, WorkerFix};
    use berth_core::WorkerId;
    use berth_core::units::GIB;

    #[test]
    fn report_lines_speak_like_fix_resources() {
        let mut r = ReconcileReport {
            dry_run: false,
            workers_checked: 1,
            fixes: vec![WorkerFix {
                worker: WorkerId("w1".into()),
                name: "Tessa".into(),
                kind: FixKind::Records,
                before: Resources {
                    cpu_millis: 5000,
                    memory_bytes: GIB / 2,
                    ..Resources::ZERO
                },
                after: Resources::ZERO,
                tasks: 0,
            }],
        };
        assert_eq!(
            report_lines(&r),
            vec![
                "✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0".to_string(),
                "✓ Resource reconciliation complete: fixed 1 workers".to_string(),
            ]
        );
        r.dry_run = true;
        assert!(report_lines(&r)[0].starts_with("Would fix Tessa"));
    }
}
