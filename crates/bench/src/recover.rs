//! `recover` and `memory`: a store holding many task records, most of them
//! finished and some live, written straight into the SQLite file; then the
//! time from master start to serving a request, and the resident memory the
//! loaded records take.

use crate::stats::r3;
use berth_core::{
    AttemptId, AttemptRecord, AttemptState, Resources, TaskId, TaskRecord, TaskSpec, TaskState,
    WorkerId, WorkerRecord, WorkerState,
};
use berth_store::{SqliteStore, Store, Write};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const WORKERS: usize = 1_000;
const LIVE_EVERY: usize = 10; // one live task in ten

fn worker(i: usize) -> WorkerRecord {
    WorkerRecord {
        id: WorkerId(format!("node-{i:04}")),
        name: format!("node-{i:04}"),
        total: Resources {
            cpu_millis: 256_000,
            memory_bytes: 1 << 40,
            storage_bytes: 0,
            gpus: 0,
        },
        drivers: vec!["process".into()],
        gpus: vec![],
        state: WorkerState::Ready,
        last_seen_ms: 0,
        labels: vec![],
        drained: false,
    }
}

/// Fill `dir/berth.db` with `tasks` tasks (one attempt each; one in ten
/// still running) on 1,000 workers.
pub fn build_store(dir: &Path, tasks: usize) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut store = SqliteStore::open(&dir.join("berth.db")).map_err(|e| e.to_string())?;
    store
        .commit(
            &(0..WORKERS)
                .map(|i| Write::Worker(worker(i)))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| e.to_string())?;
    let mut batch = Vec::with_capacity(20_000);
    for i in 0..tasks {
        let id = i as u64 + 1;
        let live = i % LIVE_EVERY == 0;
        let resources = Resources {
            cpu_millis: 100,
            memory_bytes: 16 << 20,
            storage_bytes: 0,
            gpus: 0,
        };
        let mut spec = TaskSpec::process(
            vec!["python3".into(), "train.py".into(), format!("--shard={i}")],
            resources,
        );
        spec.name = format!("job-{i}");
        let (tstate, astate) = if live {
            (TaskState::Running, AttemptState::Running)
        } else {
            (TaskState::Succeeded, AttemptState::Succeeded)
        };
        batch.push(Write::Task(TaskRecord {
            id: TaskId(id),
            spec,
            state: tstate,
            submitted_ms: 1_700_000_000_000 + i as i64,
            ended_ms: (!live).then_some(1_700_000_001_000 + i as i64),
            exit_code: (!live).then_some(0),
            reason: String::new(),
            cancel_requested: false,
        }));
        batch.push(Write::Attempt(AttemptRecord {
            id: AttemptId(id),
            task_id: TaskId(id),
            worker_id: WorkerId(format!("node-{:04}", i % WORKERS)),
            resources,
            gpu_ids: vec![],
            state: astate,
            created_ms: 1_700_000_000_000 + i as i64,
            started_ms: Some(1_700_000_000_010 + i as i64),
            ended_ms: (!live).then_some(1_700_000_001_000 + i as i64),
            exit_code: (!live).then_some(0),
            reason: String::new(),
        }));
        if batch.len() >= 20_000 {
            store.commit(&batch).map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    store.commit(&batch).map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn recover(dir: &Path, tasks: usize) -> Result<serde_json::Value, String> {
    build_store(dir, tasks)?;
    let config = berth_master::MasterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: None,
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let master = berth_master::start(config, async {
        let _ = stop_rx.await;
    })
    .await
    .map_err(|e| e.to_string())?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", master.grpc_addr))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let token = berth_proto::BearerToken::new(&master.token)?;
    let mut client = berth_proto::control_client::ControlClient::with_interceptor(channel, token);
    let workers = client
        .list_workers(berth_proto::ListWorkersRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .workers;
    let seconds = t0.elapsed().as_secs_f64();
    if workers.len() != WORKERS {
        return Err(format!("expected {WORKERS} workers, got {}", workers.len()));
    }
    let allocated: u64 = workers
        .iter()
        .map(|w| w.allocated.unwrap_or_default().cpu_millis)
        .sum();
    let expected = tasks.div_ceil(LIVE_EVERY) as u64 * 100;
    if allocated != expected {
        return Err(format!(
            "allocation after recovery is {allocated} millicores, expected {expected}"
        ));
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), master.wait())
        .await
        .map_err(|_| "master did not stop".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "scenario": "recover",
        "tasks": tasks,
        "live": tasks.div_ceil(LIVE_EVERY),
        "workers": WORKERS,
        "seconds": r3(seconds),
    }))
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub fn memory(dir: &Path, tasks: usize) -> Result<serde_json::Value, String> {
    build_store(dir, tasks)?;
    let mut store = SqliteStore::open(&dir.join("berth.db")).map_err(|e| e.to_string())?;
    let before = rss_bytes();
    let snap = store.load().map_err(|e| e.to_string())?;
    drop(store);
    let state = berth_master::state::State::from_snapshot(
        snap,
        berth_master::state::StateConfig::default(),
        0,
    );
    // Give freed load buffers back so only what the state holds is counted.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    let after = rss_bytes();
    let held = state.tasks().count();
    std::hint::black_box(&state);
    Ok(json!({
        "scenario": "memory",
        "tasks": held,
        "workers": WORKERS,
        "bytes_per_task": ((after.saturating_sub(before)) as f64 / held as f64).round(),
        "rss_mib": r3(after as f64 / (1 << 20) as f64),
    }))
}
