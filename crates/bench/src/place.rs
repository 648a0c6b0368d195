//! `place` and `scale`: the real master state engine over the real SQLite
//! store on disk, with simulated workers (registered through the engine like
//! real ones, but running nothing) and a stream of submissions kept at a
//! fixed concurrency. A submission is acknowledged after the batch holding
//! it is durable, and the scheduling round of that batch runs before the
//! commit, so submit→ack is the submit→placed latency of a task placed at
//! once (the harness checks every task was placed).

use crate::stats::{percentile_ms, r3};
use berth_core::{Resources, TaskSpec, TaskState};
use berth_master::engine::{self, Command};
use berth_master::state::{State, StateConfig, WorkerHello};
use berth_store::SqliteStore;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Submissions in flight at once.
const CONCURRENCY: usize = 256;

fn request(i: usize) -> Resources {
    Resources {
        cpu_millis: 100 + (i as u64 * 7919) % 900,
        memory_bytes: 64 << 20,
        storage_bytes: 0,
        gpus: 0,
    }
}

pub async fn run(dir: &Path, workers: usize, tasks: usize) -> Result<serde_json::Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let store = SqliteStore::open(&dir.join("berth.db")).map_err(|e| e.to_string())?;
    let config = StateConfig {
        // Simulated workers send no heartbeats; keep them up.
        heartbeat_ttl_ms: 24 * 3_600_000,
        ..StateConfig::default()
    };
    let (handle, join) = engine::spawn(
        State::new(config),
        store,
        Duration::from_millis(100),
        Duration::from_secs(24 * 3600),
    );
    // Room for every task twice over, whatever the worker count.
    let per_worker_cpu = ((tasks as u64 * 1_100 / workers.max(1) as u64) + 1_000).max(32_000);
    let mut pending = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx); // nothing runs; the engine drops this session's messages
        let name = format!("sim-{i:05}");
        let total = Resources {
            cpu_millis: per_worker_cpu,
            memory_bytes: (per_worker_cpu / 100) << 30,
            storage_bytes: 0,
            gpus: 0,
        };
        let hello = WorkerHello::process_only(&name, &name, total);
        let h = handle.clone();
        pending.push(tokio::spawn(async move {
            h.call(|reply| Command::Hello {
                hello,
                session: i as u64,
                tx,
                heartbeat_interval_ms: 1_000,
                reply,
            })
            .await
        }));
    }
    for p in pending {
        p.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }

    let t0 = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CONCURRENCY {
        let h = handle.clone();
        clients.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < tasks {
                let spec = TaskSpec::process(vec!["true".into()], request(i));
                let s = Instant::now();
                h.call(|reply| Command::Submit {
                    spec,
                    queue_anyway: false,
                    reply,
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                lat.push(s.elapsed());
                i += CONCURRENCY;
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(tasks);
    for c in clients {
        lat.extend(c.await.map_err(|e| e.to_string())??);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let placed = handle
        .query(|s| s.tasks().filter(|t| t.state == TaskState::Assigned).count())
        .await
        .map_err(|e| e.to_string())?;
    drop(handle);
    join.join()
        .map_err(|_| "engine panicked".to_string())?
        .map_err(|e| e.to_string())?;
    if placed != tasks {
        return Err(format!("only {placed} of {tasks} tasks were placed"));
    }
    Ok(json!({
        "scenario": "place",
        "workers": workers,
        "tasks": tasks,
        "placements_per_s": (tasks as f64 / seconds).round(),
        "p50_ms": r3(percentile_ms(&mut lat, 50.0)),
        "p99_ms": r3(percentile_ms(&mut lat, 99.0)),
        "seconds": r3(seconds),
    }))
}
