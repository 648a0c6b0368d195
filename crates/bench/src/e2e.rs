//! `e2e`: an in-process master and one real `berth worker` process over
//! gRPC on loopback, running trivial process tasks (`true`).
//!
//! Two phases. **Throughput**: all tasks submitted as fast as 32 clients
//! can, `tasks_per_s` from the first submission to the last result.
//! **Latency**: then 500 more tasks, one at a time with 20 ms between
//! submissions (a load the worker sustains, so the figures are the path's
//! latency, not queueing): submit→running (`p50_ms`, `p99_ms`) and
//! submit→done (`done_p50_ms`, `done_p99_ms`), from the master's records
//! (millisecond timestamps on one clock). CPU seconds used by the master
//! (this process) and by the worker with its task processes are reported
//! too, to show where the time goes.

use crate::stats::r3;
use berth_proto::control_client::ControlClient;
use berth_proto::{BearerToken, v1};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;
const LATENCY_TASKS: usize = 500;

fn pct(v: &mut [i64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
    v[rank.min(v.len() - 1)] as f64
}

pub async fn run(dir: &Path, berth: &Path, tasks: usize) -> Result<serde_json::Value, String> {
    let config = berth_master::MasterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: None,
        data_dir: dir.join("master"),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let master = berth_master::start(config, async {
        let _ = stop_rx.await;
    })
    .await
    .map_err(|e| e.to_string())?;
    let url = format!("http://{}", master.grpc_addr);
    let mut worker = std::process::Command::new(berth)
        .args([
            "worker",
            "--master",
            &url,
            "--name",
            "bench",
            "--cpus",
            "16",
            "--memory",
            "64G",
            "--data-dir",
        ])
        .arg(dir.join("worker"))
        .env("BERTH_TOKEN", &master.token)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", berth.display()))?;
    let mut result = drive(&url, &master.token, tasks).await;
    if let Ok(v) = &mut result {
        v["worker_cpu_s"] = r3(worker_cpu_seconds(worker.id())).into();
        v["master_cpu_s"] = r3(own_cpu_seconds()).into();
    }
    // SAFETY: kill(2) on the worker process this run started.
    unsafe {
        libc::kill(worker.id() as i32, libc::SIGTERM);
    }
    let _ = worker.wait();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), master.wait()).await;
    result
}

/// CPU time of a process and its reaped children, in seconds.
fn worker_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After ")": state is field 3, so utime..cstime (14..17) are 11..14 here.
    let ticks: f64 = (11..15)
        .filter_map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn drive(url: &str, token: &str, tasks: usize) -> Result<serde_json::Value, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let client = ControlClient::with_interceptor(channel, BearerToken::new(token)?);
    // Wait for the worker.
    let t0 = Instant::now();
    loop {
        let ws = client
            .clone()
            .list_workers(v1::ListWorkersRequest {})
            .await
            .map_err(|e| e.to_string())?;
        if ws.into_inner().workers.iter().any(|w| w.state == "ready") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err("the worker did not register".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec = v1::TaskSpec {
        driver: "process".into(),
        command: vec!["true".into()],
        resources: Some(v1::Resources {
            cpu_millis: 100,
            memory_bytes: 16 << 20,
            storage_bytes: 0,
            gpus: 0,
        }),
        ..Default::default()
    };
    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CONCURRENCY {
        let mut client = client.clone();
        let spec = spec.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = c;
            while i < tasks {
                let r = client
                    .submit_task(v1::SubmitTaskRequest {
                        spec: Some(spec.clone()),
                        queue_anyway: false,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                ids.push(r.into_inner().task_id);
                i += CONCURRENCY;
            }
            Ok::<_, String>(ids)
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.map_err(|e| e.to_string())??);
    }
    // Wait for all to finish.
    let deadline = Instant::now() + Duration::from_secs(600);
    let all = loop {
        let mut ts = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = client
                .clone()
                .list_tasks(v1::ListTasksRequest {
                    limit: 1000,
                    cursor,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            ts.extend(page.tasks);
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        if ts
            .iter()
            .all(|t| matches!(t.state.as_str(), "succeeded" | "failed" | "cancelled"))
        {
            break ts;
        }
        if Instant::now() > deadline {
            return Err("tasks did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = start.elapsed().as_secs_f64();
    let failed = all.iter().filter(|t| t.state != "succeeded").count();
    if failed > 0 {
        return Err(format!("{failed} tasks did not succeed"));
    }
    let first_submit = all.iter().map(|t| t.submitted_ms).min().unwrap_or(0);
    let last_end = all.iter().map(|t| t.ended_ms).max().unwrap_or(0);
    let seconds = (last_end - first_submit) as f64 / 1000.0;

    // Latency at a sustainable rate.
    let mut lat_ids = Vec::new();
    let mut c = client.clone();
    for _ in 0..LATENCY_TASKS {
        let r = c
            .submit_task(v1::SubmitTaskRequest {
                spec: Some(spec.clone()),
                queue_anyway: false,
            })
            .await
            .map_err(|e| e.to_string())?;
        lat_ids.push(r.into_inner().task_id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut done = Vec::new();
    for id in lat_ids {
        loop {
            let t = c
                .get_task(v1::GetTaskRequest { task_id: id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if t.state == "succeeded" {
                done.push(t);
                break;
            }
            if matches!(t.state.as_str(), "failed" | "cancelled") {
                return Err(format!("latency task {id} ended {}", t.state));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut to_running: Vec<i64> = done
        .iter()
        .map(|t| t.attempts[0].started_ms - t.submitted_ms)
        .collect();
    let mut to_done: Vec<i64> = done.iter().map(|t| t.ended_ms - t.submitted_ms).collect();
    Ok(json!({
        "scenario": "e2e",
        "workers": 1,
        "tasks": tasks,
        "tasks_per_s": (tasks as f64 / seconds.max(0.001)).round(),
        "p50_ms": pct(&mut to_running, 50.0),
        "p99_ms": pct(&mut to_running, 99.0),
        "done_p50_ms": pct(&mut to_done, 50.0),
        "done_p99_ms": pct(&mut to_done, 99.0),
        "seconds": r3(seconds),
        "wall_seconds": r3(wall),
    }))
}
