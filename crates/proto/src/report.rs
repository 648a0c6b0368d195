//! The reconciliation report in the words of the system berth replaces
//! (`fix-resources`), which its users know: one line per fixed worker,
//! `✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0` (storage and GPUs
//! only when they changed), then a summary. The shell, the CLI and the REST
//! API all print these lines.

use crate::{resources_or_zero, v1};
use berth_core::units::{format_cores, format_gb};
use std::fmt::Write as _;

/// One fixed worker (`Would fix …` on a dry run).
pub fn fix_line(fix: &v1::WorkerFix, dry_run: bool) -> String {
    let (b, a) = (resources_or_zero(fix.before), resources_or_zero(fix.after));
    let name = if fix.worker_name.is_empty() {
        &fix.worker_id
    } else {
        &fix.worker_name
    };
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
    let verb = if dry_run { "Would fix" } else { "✓ Fixed" };
    format!("{verb} {name}: {changes}, Tasks: {}", fix.tasks)
}

/// The closing line.
pub fn summary(r: &v1::ReconcileResponse) -> String {
    let n = r.fixes.len();
    if r.dry_run {
        format!("(dry run) would fix {n} workers")
    } else {
        format!("✓ Resource reconciliation complete: fixed {n} workers")
    }
}

/// Every line of the report.
pub fn lines(r: &v1::ReconcileResponse) -> Vec<String> {
    let mut out: Vec<String> = r.fixes.iter().map(|f| fix_line(f, r.dry_run)).collect();
    out.push(summary(r));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_like_fix_resources() {
        let mut r = v1::ReconcileResponse {
            dry_run: false,
            workers_checked: 1,
            fixes: vec![v1::WorkerFix {
                worker_id: "w1".into(),
                worker_name: "Tessa".into(),
                before: Some(v1::Resources {
                    cpu_millis: 5000,
                    memory_bytes: 1 << 29,
                    storage_bytes: 0,
                    gpus: 1,
                }),
                after: Some(v1::Resources::default()),
                tasks: 0,
                kind: "records".into(),
            }],
        };
        assert_eq!(
            lines(&r),
            vec![
                "✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, GPU 1→0, Tasks: 0".to_string(),
                "✓ Resource reconciliation complete: fixed 1 workers".to_string(),
            ]
        );
        r.dry_run = true;
        assert!(lines(&r)[0].starts_with("Would fix Tessa"));
        assert_eq!(lines(&r)[1], "(dry run) would fix 1 workers");
    }
}
