//! The simulated network: messages with delivery times, and the faults
//! (drop, duplicate, delay/reorder, partition) applied when they are sent.

use super::rng::Rng;
use berth_core::{AttemptId, Millis, Resources, TaskId, TaskSpec, WorkerId};
use berth_proto::HeldReport;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub enum ToMaster {
    Hello {
        worker: usize,
        session: u64,
        held: Vec<HeldReport>,
    },
    Heartbeat {
        worker: usize,
        session: u64,
        held: Vec<HeldReport>,
    },
    Report {
        worker: usize,
        seq: u64,
        report: HeldReport,
    },
}

// Test messages: a boxed spec would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ToWorker {
    Welcome,
    Start {
        attempt: AttemptId,
        task: TaskId,
        spec: TaskSpec,
    },
    Stop {
        attempt: AttemptId,
    },
    Ack {
        seq: u64,
    },
    /// The master closed this session's stream.
    Closed,
}

#[derive(Debug, Clone)]
pub enum Msg {
    ToMaster(ToMaster),
    /// For one session of one worker.
    ToWorker(usize, u64, ToWorker),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub drop_per_mille: u64,
    pub dup_per_mille: u64,
    pub long_delay_per_mille: u64,
}

#[derive(Debug, Default)]
pub struct Net {
    /// (deliver at, sequence for a stable order) → message.
    queue: std::collections::BTreeMap<(Millis, u64), Msg>,
    next: u64,
    pub faults: Faults,
    /// Workers cut off from the master (both directions).
    pub partitioned: BTreeSet<usize>,
    pub sent: u64,
    pub dropped: u64,
}

impl Net {
    fn worker_of(m: &Msg) -> usize {
        match m {
            Msg::ToMaster(ToMaster::Hello { worker, .. })
            | Msg::ToMaster(ToMaster::Heartbeat { worker, .. })
            | Msg::ToMaster(ToMaster::Report { worker, .. }) => *worker,
            Msg::ToWorker(w, _, _) => *w,
        }
    }

    pub fn send(&mut self, rng: &mut Rng, now: Millis, m: Msg) {
        self.sent += 1;
        if self.partitioned.contains(&Self::worker_of(&m)) || rng.chance(self.faults.drop_per_mille)
        {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(self.faults.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if rng.chance(self.faults.long_delay_per_mille) {
                rng.range(100, 3_000)
            } else {
                rng.range(1, 20)
            } as Millis;
            self.next += 1;
            self.queue.insert((now + delay, self.next), m.clone());
        }
    }

    /// Messages due at or before `now`, in delivery order. A message to or
    /// from a worker partitioned while it was in flight is lost.
    pub fn due(&mut self, now: Millis) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            if self.partitioned.contains(&Self::worker_of(&m)) {
                self.dropped += 1;
                continue;
            }
            out.push(m);
        }
        out
    }

    /// Lose everything in flight to the master (it crashed).
    pub fn drop_to_master(&mut self) {
        self.queue.retain(|_, m| !matches!(m, Msg::ToMaster(_)));
    }

    /// Lose everything in flight to a worker (its agent crashed).
    pub fn drop_to_worker(&mut self, w: usize) {
        self.queue
            .retain(|_, m| !matches!(m, Msg::ToWorker(x, _, _) if *x == w));
    }
}

/// Parameters of a task the simulated workers "run": encoded in its command
/// as `["sim", RUN_MS, EXIT_CODE]`.
pub fn sim_command(run_ms: u64, exit: i32) -> Vec<String> {
    vec!["sim".into(), run_ms.to_string(), exit.to_string()]
}

pub fn parse_sim_command(c: &[String]) -> (Millis, i32) {
    (c[1].parse().unwrap(), c[2].parse().unwrap())
}

pub fn worker_id(i: usize) -> WorkerId {
    WorkerId(format!("node-{i}"))
}

pub fn worker_total(i: usize) -> Resources {
    Resources {
        cpu_millis: 4_000 + 2_000 * (i as u64 % 3),
        memory_bytes: 8 << 30,
        storage_bytes: 0,
        gpus: 0,
    }
}
