//! Worker liveness: a worker silent for longer than TTL + grace is declared
//! down, and its live attempts become `unknown`: their tasks are replaced
//! per their retry policy, but the attempts keep their resources until
//! their fate is known (DESIGN.md invariant 3: silence is not a fact).
//! Driven by `tick(now)` from outside.

use super::{Effects, State};
use berth_core::{AttemptId, AttemptState, Millis, WorkerId, WorkerState};

impl State {
    /// Declare down every ready worker whose last sign of life is too old.
    /// Returns the workers declared down.
    pub fn tick(&mut self, now: Millis, fx: &mut Effects) -> Vec<WorkerId> {
        if self.backoff_wake.is_some_and(|w| w <= now) {
            self.dirty = true;
        }
        let limit = self.config.heartbeat_ttl_ms + self.config.down_grace_ms;
        let expired: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.state.is_up() && now - w.last_seen_ms > limit)
            .map(|w| w.id.clone())
            .collect();
        for id in &expired {
            self.declare_down(id, now, fx);
        }
        self.counters.workers_declared_down += expired.len() as u64;
        self.expire_leases(now, fx);
        expired
    }

    /// Unknown attempts of `--stop-after-disconnect` tasks whose lease has
    /// run out: their worker has surely stopped them. That is a fact.
    fn expire_leases(&mut self, now: Millis, fx: &mut Effects) {
        let due: Vec<AttemptId> = self
            .leases
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(a, _)| *a)
            .collect();
        for aid in due {
            self.leases.remove(&aid);
            let Some(a) = self.attempts.get(&aid) else {
                continue;
            };
            if a.state != AttemptState::Unknown {
                continue;
            }
            let limit = self.tasks[&a.task_id]
                .spec
                .stop_after_disconnect_ms
                .unwrap_or(0);
            self.finish_attempt(
                aid,
                AttemptState::Disconnected,
                None,
                format!(
                    "its worker stopped it after {:.0}s without hearing from the master (--stop-after-disconnect)",
                    limit as f64 / 1000.0
                ),
                now,
                fx,
            );
        }
    }

    /// Move every worker's last sign of life by `delta_ms`, so that time the
    /// master did not experience is not counted as the workers' silence: a
    /// stall of the master itself (paused, swapped out, a long fsync) or a
    /// step of the wall clock. The engine measures `delta_ms` with the
    /// monotonic clock ([`crate::engine::liveness_shift`]).
    pub fn shift_liveness(&mut self, delta_ms: Millis) {
        for w in self.workers.values_mut() {
            w.last_seen_ms += delta_ms;
        }
        for (_, until) in self.backoff_until.values_mut() {
            *until = until.saturating_add(delta_ms);
        }
        // A wake-up may be "never" (a lease only the worker can end).
        if let Some(w) = &mut self.backoff_wake
            && *w != super::reports::UNTIL_IT_ENDS
        {
            *w = w.saturating_add(delta_ms);
        }
        for until in self.leases.values_mut() {
            if *until != super::reports::UNTIL_IT_ENDS {
                *until += delta_ms;
            }
        }
    }

    /// Who holds node id `id` in a live session, if anyone: a worker that
    /// is up, `connected` (its session is open) and heard from within two
    /// heartbeat intervals. A hello under that id from another session — a
    /// copy of its data dir, or a hello that took longer to arrive than
    /// the session that followed it — is refused while it does; an agent
    /// reconnecting after its old session went quiet takes over.
    pub fn live_holder(
        &self,
        id: &WorkerId,
        connected: bool,
        now: Millis,
        heartbeat_interval_ms: u64,
    ) -> Option<String> {
        if !connected {
            return None;
        }
        let w = self.workers.get(id).filter(|w| w.state.is_up())?;
        let quiet = now - w.last_seen_ms;
        (quiet <= 2 * heartbeat_interval_ms as Millis + 500).then(|| w.name.clone())
    }

    /// A sign of life other than a heartbeat (stream traffic).
    pub fn touch(&mut self, worker: &WorkerId, now: Millis) {
        if let Some(w) = self.workers.get_mut(worker)
            && w.state.is_up()
        {
            w.last_seen_ms = now;
        }
    }

    fn declare_down(&mut self, id: &WorkerId, now: Millis, fx: &mut Effects) {
        let w = self.workers.get_mut(id).expect("worker exists");
        w.state = WorkerState::Down;
        let silent = now - w.last_seen_ms;
        let name = w.name.clone();
        self.write_worker(id, fx);
        self.refresh_worker(id);
        let live: Vec<AttemptId> = self
            .ledger
            .attempts_on(id)
            .filter(|a| self.attempts[a].state.is_live())
            .collect();
        let last_seen = now - silent;
        let grace = self.stop_grace.get(id).copied();
        for aid in live {
            let task = self.attempts[&aid].task_id;
            if let Some(limit) = self.tasks[&task].spec.stop_after_disconnect_ms {
                self.leases
                    .insert(aid, last_seen + super::lease_length(limit, grace));
            }
            self.attempt_unknown(
                aid,
                format!(
                    "worker {name} declared down (no heartbeat for {:.1}s); whether it still runs is unknown",
                    silent as f64 / 1000.0
                ),
                now,
                fx,
            );
        }
        self.dirty = true;
    }
}
