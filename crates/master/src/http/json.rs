//! API objects as JSON: the wire messages of `berth.proto` (built by
//! `crate::views`, as for gRPC) written out with the proto's field names,
//! the same vocabulary as the CLI's `--json`. Absent values (no exit code,
//! no end time) are `null`, not zero.

pub use berth_proto::json::{attempt, resources, task, watch_event, worker};
use berth_proto::{resources_or_zero, v1};
use serde_json::{Value, json};

/// A reconciliation report, with the lines the CLI prints for it.
pub fn reconcile(r: &v1::ReconcileResponse) -> Value {
    json!({
        "dry_run": r.dry_run,
        "workers_checked": r.workers_checked,
        "fixes": r.fixes.iter().map(|f| json!({
            "worker_id": f.worker_id,
            "worker_name": f.worker_name,
            "kind": f.kind,
            "before": resources(&resources_or_zero(f.before)),
            "after": resources(&resources_or_zero(f.after)),
            "tasks": f.tasks,
        })).collect::<Vec<_>>(),
        "lines": berth_proto::report::lines(r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FixKind, ReconcileReport, WorkerFix};
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
        let lines =
            |r: &ReconcileReport| reconcile(&crate::views::reconcile(r.clone()))["lines"].clone();
        assert_eq!(
            lines(&r),
            json!([
                "✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0",
                "✓ Resource reconciliation complete: fixed 1 workers",
            ])
        );
        r.dry_run = true;
        assert!(
            lines(&r)[0]
                .as_str()
                .unwrap()
                .starts_with("Would fix Tessa")
        );
    }
}
