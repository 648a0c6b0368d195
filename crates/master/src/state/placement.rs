//! Scheduling rounds: ask the pure scheduler for placements, then commit
//! each one after re-checking it with the same `fits_within` (one writer, no
//! gap between check and commit).

use super::{Effects, Outbound, State};
use berth_core::{AttemptRecord, AttemptState, Millis, TaskEvent, TaskId};
use berth_scheduler::{PendingTask, place, wait_reason};

/// At most this many queued tasks are considered per round.
const ROUND_LIMIT: usize = 10_000;
/// Retry backoff after the second lost attempt: 1 s, doubling, at most 30 s.
/// (The first retry is immediate, so a worker's death costs only the
/// detection time.)
const BACKOFF_BASE_MS: Millis = 1_000;
const BACKOFF_MAX_MS: Millis = 30_000;

/// The backoff after `lost` attempts gone (from the second on).
fn backoff_after(lost: u32) -> Millis {
    (BACKOFF_BASE_MS << lost.saturating_sub(2).min(16)).min(BACKOFF_MAX_MS)
}

impl State {
    /// Where a queued task stands with retries: attempts gone, when its
    /// backoff ends (`Millis::MIN` if none) and when the lease of an unknown
    /// at-most-once attempt ends (`Millis::MIN` if none).
    fn retry_standing(&self, task: TaskId) -> (u32, Millis, Millis) {
        let mut lost = 0u32;
        let mut last_end = Millis::MIN;
        // An at-most-once task waits until its unknown attempt has surely
        // been stopped by its worker.
        let mut lease = Millis::MIN;
        let leases = !self.leases.is_empty();
        for a in self.attempts_of(task) {
            if a.state.is_gone() {
                lost += 1;
                let end = a.ended_ms.or(a.started_ms).unwrap_or(a.created_ms);
                last_end = last_end.max(end);
            }
            if leases && let Some(until) = self.leases.get(&a.id) {
                lease = lease.max(*until);
            }
        }
        if lost < 2 {
            return (lost, Millis::MIN, lease);
        }
        let backoff_at = match self.backoff_until.get(&task) {
            Some((l, until)) if *l == lost => *until,
            _ => last_end + backoff_after(lost),
        };
        (lost, backoff_at, lease)
    }

    /// When a queued task may be placed: now, or later while it backs off
    /// after lost attempts (or waits out a disconnect lease).
    pub fn eligible_at(&self, task: TaskId) -> Millis {
        let (_, backoff_at, lease) = self.retry_standing(task);
        backoff_at.max(lease)
    }

    /// Why a queued task is waiting (empty if it is not queued).
    pub fn wait_reason_at(&self, task: TaskId, now: Millis) -> String {
        match self.tasks.get(&task) {
            Some(t) if self.queue.contains(&task) => {
                let at = self.eligible_at(task);
                if at == super::reports::UNTIL_IT_ENDS {
                    return "waiting for its earlier attempt to stop: its worker was unreachable and still runs it (--stop-after-disconnect)".into();
                }
                if at > now {
                    return format!(
                        "retrying after lost attempts; eligible again in {:.1}s",
                        (at - now) as f64 / 1000.0
                    );
                }
                match self.pending(task, &t.spec, t.submitted_ms) {
                    Some(p) => wait_reason(&self.index, &p, self.reserved),
                    None => format!(
                        "dispatched to worker {}, which is not registered",
                        t.spec.pinned_worker.as_deref().unwrap_or_default()
                    ),
                }
            }
            _ => String::new(),
        }
    }

    /// Why a queued task is waiting, ignoring retry backoff (unit tests).
    #[cfg(test)]
    pub fn wait_reason(&self, task: TaskId) -> String {
        self.wait_reason_at(task, Millis::MAX)
    }

    /// Run one scheduling round if anything changed since the last one.
    /// Returns how many tasks were placed.
    pub fn schedule(&mut self, now: Millis, fx: &mut Effects) -> usize {
        if !self.dirty {
            return 0;
        }
        self.dirty = false;
        self.backoff_wake = None;
        let mut wake: Option<Millis> = None;
        let mut pending: Vec<PendingTask> = Vec::new();
        let mut backoffs: Vec<(TaskId, (u32, Millis))> = Vec::new();
        for id in self.queue.iter() {
            if pending.len() >= ROUND_LIMIT {
                break;
            }
            let (lost, mut backoff_at, lease) = self.retry_standing(*id);
            if lost >= 2 && self.backoff_until.get(id).is_none_or(|(l, _)| *l != lost) {
                // First seen in this backoff: it ends at most one backoff
                // from now (the wall clock may have stepped back since the
                // attempt ended), and from now on moves with the workers'
                // liveness clock, not with the wall clock's steps.
                backoff_at = backoff_at.min(now + backoff_after(lost));
                backoffs.push((*id, (lost, backoff_at)));
            }
            let at = backoff_at.max(lease);
            if at > now {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                continue;
            }
            let t = &self.tasks[id];
            if let Some(p) = self.pending(*id, &t.spec, t.submitted_ms) {
                pending.push(p);
            }
        }
        self.backoff_wake = wake;
        let queue = &self.queue;
        self.backoff_until.retain(|t, _| queue.contains(t));
        self.backoff_until.extend(backoffs);
        // `place` binds what it decides in the index; the commit below binds
        // the same in the ledger (or undoes the index's bind).
        let round = place(&mut self.index, &pending, &self.config.placement, now);
        drop(pending);
        self.reserved = round.reserved;
        let decided = round.placements;
        let mut placed = 0;
        for p in decided {
            let wid = self.slot_workers[p.slot as usize].clone();
            let worker = &self.workers[&wid];
            let request = self.tasks[&p.task].spec.resources;
            // The commit step: re-check against the latest ledger.
            if !self.takes_work(&wid)
                || request
                    .fits_within(&self.ledger.allocated(&wid), &worker.total)
                    .is_err()
            {
                self.index.release(p.slot, &request);
                self.dirty = true;
                continue;
            }
            let wid = &wid;
            let gpu_ids = self.free_gpu_ids(wid, request.gpus as usize);
            let queued_since = (self.attempts_of(p.task).last())
                .and_then(|a| a.ended_ms)
                .unwrap_or(self.tasks[&p.task].submitted_ms);
            self.counters.placements += 1;
            self.counters.scheduling_latency.observe(now - queued_since);
            let aid = self.next_attempt_id();
            let attempt = AttemptRecord {
                id: aid,
                task_id: p.task,
                worker_id: wid.clone(),
                resources: request,
                gpu_ids: gpu_ids.clone(),
                state: AttemptState::Assigned,
                created_ms: now,
                started_ms: None,
                ended_ms: None,
                exit_code: None,
                reason: String::new(),
            };
            self.ledger.bind(&attempt);
            self.attempts.insert(aid, attempt);
            self.task_attempts.insert((p.task, aid));
            self.live.insert(p.task, aid);
            self.queue.remove(&p.task);
            let task = self.tasks.get_mut(&p.task).expect("queued task exists");
            task.state = task
                .state
                .on(TaskEvent::Placed)
                .expect("queued task can be placed");
            let spec = task.spec.clone();
            self.write_attempt(aid, fx);
            self.write_task(p.task, fx);
            fx.outbound.push(Outbound::Start {
                worker: wid.clone(),
                attempt: aid,
                task: p.task,
                spec,
                gpu_ids,
            });
            placed += 1;
        }
        if self.queue.len() > ROUND_LIMIT && placed > 0 {
            self.dirty = true;
        }
        placed
    }

    /// The lowest GPU indices on `worker` not held by a live attempt.
    fn free_gpu_ids(&self, worker: &berth_core::WorkerId, n: usize) -> Vec<u32> {
        if n == 0 {
            return Vec::new();
        }
        let w = &self.workers[worker];
        let held: std::collections::BTreeSet<u32> = self
            .ledger
            .attempts_on(worker)
            .flat_map(|a| self.attempts[&a].gpu_ids.iter().copied())
            .collect();
        let all: Vec<u32> = if w.gpus.is_empty() {
            (0..w.total.gpus).collect()
        } else {
            w.gpus.iter().map(|g| g.index).collect()
        };
        all.into_iter()
            .filter(|i| !held.contains(i))
            .take(n)
            .collect()
    }
}
