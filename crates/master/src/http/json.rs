//! API objects as JSON: the wire messages of `berth.proto` (built by
//! `crate::views`, as for gRPC) written out with the proto's field names,
//! the same vocabulary as the CLI's `--json`. Absent values (no exit code,
//! no end time) are `null`, not zero.

use crate::state::ReconcileReport;
use berth_core::units::{format_cores, format_gb};
pub use berth_proto::json::{attempt, resources, task, worker};
use serde_json::{Value, json};
use std::fmt::Write as _;

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
    use berth_core::units::GIB;
    use berth_core::{Resources, WorkerId};

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
