//! The simulated network: messages with delivery times, and the faults
//! (drop, duplicate, delay, partition) applied when they are sent.
//!
//! A session is one gRPC stream in each direction over one connection, and
//! a stream delivers in order: a message may be delayed (holding up those
//! behind it) or duplicated, but never overtakes one sent before it on the
//! same session. A dropped message is a connection that died: nothing sent
//! after it on that session arrives, and the worker notices a while later
//! (its keepalive), as a `Closed`. Messages of different sessions (an old
//! one still draining, a new one) and of different workers are reordered
//! freely.

use super::rng::Rng;
use berth_core::{AttemptId, Millis, Resources, TaskId, TaskSpec, WorkerId};
use berth_master::state::WorkerHello;
use berth_proto::HeldReport;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub enum ToMaster {
    Hello {
        worker: usize,
        session: u64,
        hello: Box<WorkerHello>,
    },
    Heartbeat {
        worker: usize,
        session: u64,
        held: Vec<HeldReport>,
        draining: bool,
    },
    Report {
        worker: usize,
        session: u64,
        seq: u64,
        report: HeldReport,
    },
    /// The master's side of the session's connection notices it died (a
    /// dead connection is not always noticed there: half-open).
    Closed { worker: usize, session: u64 },
}

// Test messages: a boxed spec would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ToWorker {
    Welcome,
    Start {
        attempt: AttemptId,
        task: TaskId,
        spec: Result<TaskSpec, String>,
        gpu_ids: Vec<u32>,
    },
    Stop {
        attempt: AttemptId,
        reason: String,
    },
    Ack {
        seq: u64,
    },
    /// The master closed this session's stream.
    Closed,
    /// The master refused the hello for good, with its reason.
    Refused(String),
    /// The hello was not accepted for now (name or node id held, the
    /// engine could not record it): the agent tries again.
    Unavailable(String),
}

// Test messages: a boxed spec would only add noise.
#[allow(clippy::large_enum_variant)]
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
    /// Per stream (worker, session, towards the master): when its last
    /// message is delivered.
    streams: std::collections::HashMap<(usize, u64, bool), Millis>,
    /// Messages in flight per worker.
    in_flight: std::collections::HashMap<usize, usize>,
    /// Sessions whose connection died, as (worker, session).
    broken: BTreeSet<(usize, u64)>,
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
            | Msg::ToMaster(ToMaster::Report { worker, .. })
            | Msg::ToMaster(ToMaster::Closed { worker, .. }) => *worker,
            Msg::ToWorker(w, _, _) => *w,
        }
    }

    fn stream_of(m: &Msg) -> (usize, u64, bool) {
        match m {
            Msg::ToMaster(ToMaster::Hello {
                worker, session, ..
            })
            | Msg::ToMaster(ToMaster::Heartbeat {
                worker, session, ..
            })
            | Msg::ToMaster(ToMaster::Report {
                worker, session, ..
            })
            | Msg::ToMaster(ToMaster::Closed { worker, session }) => (*worker, *session, true),
            Msg::ToWorker(w, s, _) => (*w, *s, false),
        }
    }

    pub fn send(&mut self, rng: &mut Rng, now: Millis, m: Msg) {
        self.sent += 1;
        let (w, session, _) = Self::stream_of(&m);
        if self.partitioned.contains(&w) || self.broken.contains(&(w, session)) {
            self.dropped += 1;
            return;
        }
        if rng.chance(self.faults.drop_per_mille) {
            self.dropped += 1;
            self.broken.insert((w, session));
            self.notify_closed(w, session, now + rng.range(200, 3_000) as Millis);
            // The master's side notices too, or never (half-open: only the
            // worker's new hello and liveness sort it out).
            if rng.chance(500) {
                self.next += 1;
                *self.in_flight.entry(w).or_default() += 1;
                let at = now + rng.range(200, 5_000) as Millis;
                self.queue.insert(
                    (at, self.next),
                    Msg::ToMaster(ToMaster::Closed { worker: w, session }),
                );
            }
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
            let last = self.streams.entry(Self::stream_of(&m)).or_insert(now);
            let at = (now + delay).max(*last);
            *last = at;
            self.next += 1;
            *self.in_flight.entry(w).or_default() += 1;
            self.queue.insert((at, self.next), m.clone());
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
            self.left(&m);
            if self.partitioned.contains(&Self::worker_of(&m)) {
                self.dropped += 1;
                continue;
            }
            out.push(m);
        }
        out
    }

    /// Tell worker `w` at `at` that the master side of `session` is gone.
    pub fn notify_closed(&mut self, w: usize, session: u64, at: Millis) {
        self.next += 1;
        *self.in_flight.entry(w).or_default() += 1;
        self.queue
            .insert((at, self.next), Msg::ToWorker(w, session, ToWorker::Closed));
    }

    /// Is anything in flight to or from worker `w`?
    pub fn in_flight_for(&self, w: usize) -> bool {
        self.in_flight.get(&w).is_some_and(|n| *n > 0)
    }

    /// A message left the network.
    fn left(&mut self, m: &Msg) {
        if let Some(n) = self.in_flight.get_mut(&Self::worker_of(m)) {
            *n -= 1;
        }
    }

    fn drop_where(&mut self, gone: impl Fn(&Msg) -> bool) {
        let mut left = Vec::new();
        self.queue.retain(|_, m| {
            let g = gone(m);
            if g {
                left.push(Self::worker_of(m));
            }
            !g
        });
        for w in left {
            if let Some(n) = self.in_flight.get_mut(&w) {
                *n -= 1;
            }
        }
    }

    /// Lose everything in flight to the master (it crashed).
    pub fn drop_to_master(&mut self) {
        self.drop_where(|m| matches!(m, Msg::ToMaster(_)));
    }

    /// Lose everything in flight to a worker (its agent crashed).
    pub fn drop_to_worker(&mut self, w: usize) {
        self.drop_where(|m| matches!(m, Msg::ToWorker(x, _, _) if *x == w));
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
        // Odd machines have two GPUs.
        gpus: 2 * (i as u32 % 2),
    }
}
