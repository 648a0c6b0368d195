//! berth-scheduler: pure placement decisions.
//!
//! [`place`] maps the cluster index and the pending tasks (in queue order:
//! priority, then FIFO) to placements. No I/O, no clock (time comes in as
//! `now`), no randomness: the same input gives the same output. The master
//! re-checks every placement with the same `Resources::fits_within` when it
//! commits (habit: decide purely, commit once).
//!
//! Policy:
//! * **Order** — higher priority first, FIFO within a priority (the caller
//!   passes tasks in that order).
//! * **No head-of-line blocking** — a task that fits nowhere now is skipped;
//!   smaller tasks behind it are still placed.
//! * **No starvation** — once the first task in queue order that fits
//!   nowhere has waited `starvation_ms`, the worker it could fit on soonest
//!   (the one with the most free CPU among those big enough) is *reserved*
//!   for it: nothing else is placed there until it runs.
//! * **Strategy** — `binpack` (default): the fitting worker with the least
//!   free CPU; `spread`: the one with the most. Per cluster, overridable per
//!   task.
//! * **Feasibility** — resources (all dimensions), driver, GPU count,
//!   `key=value` constraints against worker labels, and a pinned worker
//!   (`dispatch`).
//! * **Scale** — workers are indexed by free CPU, so a task only looks at
//!   workers with enough CPU, in order, and stops at the first that fits.

mod explain;
mod index;

pub use explain::{could_ever_fit, wait_reason};
pub use index::{ClusterIndex, Slot, WorkerEntry};

use berth_core::{DriverKind, Millis, Resources, Strategy, TaskId};

/// A task waiting for a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask<'a> {
    pub id: TaskId,
    pub request: Resources,
    pub driver: DriverKind,
    pub constraints: &'a [(String, String)],
    pub strategy: Option<Strategy>,
    /// Only this worker may run it.
    pub pinned: Option<Slot>,
    /// Since when it has been waiting.
    pub queued_since: Millis,
}

/// Cluster-wide placement settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceConfig {
    pub strategy: Strategy,
    /// How long the oldest blocked task waits before capacity is reserved
    /// for it.
    pub starvation_ms: Millis,
}

impl Default for PlaceConfig {
    fn default() -> Self {
        PlaceConfig {
            strategy: Strategy::Binpack,
            starvation_ms: 60_000,
        }
    }
}

/// Put `task` on the worker in `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    pub slot: Slot,
}

/// Does `task` fit on `e` right now (every rule except the pin)?
pub fn feasible(e: &WorkerEntry, task: &PendingTask<'_>) -> bool {
    e.schedulable
        && e.drivers.contains(&task.driver)
        && task.request.fits_within(&e.allocated, &e.total).is_ok()
        && e.matches(task.constraints)
}

/// Could `task` ever run on `e` (were it empty)?
pub fn could_fit_empty(e: &WorkerEntry, task: &PendingTask<'_>) -> bool {
    e.drivers.contains(&task.driver)
        && task.request.fits_within(&Resources::ZERO, &e.total).is_ok()
        && e.matches(task.constraints)
}

fn choose(
    index: &ClusterIndex,
    task: &PendingTask<'_>,
    cfg: &PlaceConfig,
    reserved: Option<Slot>,
) -> Option<Slot> {
    let ok =
        |slot: Slot| Some(slot) != reserved && index.get(slot).is_some_and(|e| feasible(e, task));
    if let Some(slot) = task.pinned {
        return ok(slot).then_some(slot);
    }
    let mut candidates = index.with_free_cpu(task.request.cpu_millis);
    match task.strategy.unwrap_or(cfg.strategy) {
        Strategy::Binpack => candidates.find(|&s| ok(s)),
        Strategy::Spread => candidates.rev().find(|&s| ok(s)),
    }
}

/// What one scheduling round decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    pub placements: Vec<Placement>,
    /// A worker kept free for a task that has waited too long.
    pub reserved: Option<(Slot, TaskId)>,
}

/// Decide placements for `pending` (in queue order). The index is updated
/// with every placement decided, exactly as the master will commit them.
pub fn place(
    index: &mut ClusterIndex,
    pending: &[PendingTask<'_>],
    cfg: &PlaceConfig,
    now: Millis,
) -> Round {
    let mut out = Vec::new();
    let mut reserved_for = None;
    let mut reserved: Option<Slot> = None;
    let mut starving_seen = false;
    for task in pending {
        // Cheap early out: nothing has enough CPU.
        let slot = if task.request.cpu_millis > index.max_free_cpu() {
            None
        } else {
            choose(index, task, cfg, reserved)
        };
        match slot {
            Some(slot) => {
                index.bind(slot, &task.request);
                out.push(Placement {
                    task: task.id,
                    slot,
                });
            }
            None if !starving_seen && reserved.is_none() => {
                // The first blocked task in queue order: reserve for it once
                // it has waited long enough.
                starving_seen = true;
                if now.saturating_sub(task.queued_since) >= cfg.starvation_ms {
                    reserved = reservation_for(index, task);
                    reserved_for = reserved.map(|s| (s, task.id));
                }
            }
            None => {}
        }
    }
    Round {
        placements: out,
        reserved: reserved_for,
    }
}

/// The worker a blocked task could fit on soonest: among schedulable
/// workers big enough for it, the one with the most free CPU.
fn reservation_for(index: &ClusterIndex, task: &PendingTask<'_>) -> Option<Slot> {
    if let Some(slot) = task.pinned {
        return index
            .get(slot)
            .filter(|e| e.schedulable && could_fit_empty(e, task))
            .map(|_| slot);
    }
    index
        .with_free_cpu(0)
        .rev()
        .find(|&s| index.get(s).is_some_and(|e| could_fit_empty(e, task)))
}

#[cfg(test)]
mod tests;
