//! berth-scheduler: pure placement decisions.
//!
//! [`place`] maps a snapshot of the ready workers and the pending tasks (in
//! queue order) to placements. It does no I/O, reads no clock and is
//! deterministic: the same input gives the same output. The master re-checks
//! every placement with the same `Resources::fits_within` when it commits
//! (habit: decide purely, commit once).
//!
//! Policy (v1): tasks are taken in FIFO order; each goes to the feasible
//! worker with the lowest utilisation after placement (ties broken by the
//! worker's position in the snapshot, which the master sorts by id). A task
//! that fits nowhere right now is skipped, so it does not block smaller
//! tasks behind it.

mod explain;

pub use explain::{could_ever_fit, wait_reason};

use berth_core::{DriverKind, Resources, TaskId};

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub name: String,
    pub total: Resources,
    pub allocated: Resources,
    pub drivers: Vec<DriverKind>,
    /// Whether the worker takes new work (ready and not draining).
    pub schedulable: bool,
}

/// A task waiting for a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    pub id: TaskId,
    pub request: Resources,
    pub driver: DriverKind,
}

/// Put `task` on `workers[worker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    pub worker: usize,
}

/// Decide placements for `pending` (in queue order) on `workers`.
pub fn place(workers: &[WorkerView], pending: &[PendingTask]) -> Vec<Placement> {
    let mut allocated: Vec<Resources> = workers.iter().map(|w| w.allocated).collect();
    let mut out = Vec::new();
    for task in pending {
        let mut best: Option<(u64, usize)> = None;
        for (i, w) in workers.iter().enumerate() {
            if !w.schedulable || !w.drivers.contains(&task.driver) {
                continue;
            }
            if task.request.fits_within(&allocated[i], &w.total).is_err() {
                continue;
            }
            let after = allocated[i]
                .checked_add(&task.request)
                .expect("fits implies no overflow");
            let score = Resources::utilisation_ppm(&after, &w.total);
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, i));
            }
        }
        if let Some((_, i)) = best {
            allocated[i] = allocated[i]
                .checked_add(&task.request)
                .expect("fits implies no overflow");
            out.push(Placement {
                task: task.id,
                worker: i,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
