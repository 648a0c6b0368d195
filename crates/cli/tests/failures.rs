//! Failures with real processes: `kill -9` of a worker agent (with and
//! without a restart), `kill -9` of the master, a frozen master (SIGSTOP),
//! and cancellation. Each test checks the ledger afterwards: no phantom
//! allocation, no task run twice, no result lost.

mod common;

use berth_proto::v1;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// The block of `berth workers` output about worker `name`, if listed.
fn worker_block(workers_out: &str, name: &str) -> Option<String> {
    let head = format!("Worker: {name} (");
    let start = workers_out.find(&head)?;
    let rest = &workers_out[start..];
    let end = rest.find("\n\n").map(|i| i + 1).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Run the CLI against a master given by url and token (usable from a
/// thread that does not own the `Cluster`).
fn berth_at(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BERTH)
        .args(args)
        .env("BERTH_MASTER", url)
        .env("BERTH_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run berth")
}

fn parse_id(out: &str) -> u64 {
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a task id, got {out:?}"))
}

/// Wait until task `id` is running; returns it.
async fn wait_running(c: &mut Client, id: u64, within: Duration) -> v1::Task {
    let t0 = Instant::now();
    loop {
        let t = task(c, id).await;
        if t.state == "running" {
            return t;
        }
        assert!(
            t0.elapsed() < within,
            "task {id} not running within {within:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn resources_of(t: &v1::Task) -> v1::Resources {
    t.spec.as_ref().unwrap().resources.unwrap()
}

fn zero() -> v1::Resources {
    v1::Resources::default()
}

/// One allocation sample: the worker's state, allocation and running count.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    state: String,
    allocated: v1::Resources,
    running: u32,
}

/// Samples worker `name` over gRPC every `every` until stopped.
fn spawn_sampler(
    client: Client,
    name: &str,
    every: Duration,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<Sample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let name = name.to_string();
    let handle = tokio::spawn(async move {
        let mut client = client;
        let mut samples = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(resp) = client.list_workers(v1::ListWorkersRequest {}).await {
                let ws = resp.into_inner().workers;
                let mine: Vec<_> = ws.iter().filter(|w| w.name == name).collect();
                assert_eq!(mine.len(), 1, "exactly one worker named {name}: {ws:?}");
                samples.push(Sample {
                    state: mine[0].state.clone(),
                    allocated: mine[0].allocated.unwrap_or_default(),
                    running: mine[0].running_attempts,
                });
            }
            tokio::time::sleep(every).await;
        }
        samples
    });
    (stop, handle)
}

/// Checks a run of allocation samples: every value is either `req` (with
/// one running attempt) or zero (with none), and once zero it stays zero —
/// the allocation is released exactly once and never comes back.
fn assert_held_then_released(samples: &[Sample], req: v1::Resources) {
    let mut released = false;
    for (i, s) in samples.iter().enumerate() {
        if s.allocated == req {
            assert_eq!(s.running, 1, "sample {i}: {s:?}");
            assert!(
                !released,
                "sample {i}: allocation came back after it was released: {samples:?}"
            );
        } else if s.allocated == zero() {
            assert_eq!(s.running, 0, "sample {i}: {s:?}");
            released = true;
        } else {
            panic!("sample {i}: allocation {s:?} is neither the request {req:?} nor zero");
        }
    }
}

fn markers(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// 1. A worker agent dies (`kill -9`) while its task runs on a two-worker
/// cluster: it is declared down within TTL + grace + 1 s with nothing
/// allocated, the attempt is `lost`, and the task runs again on the other
/// worker and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_down_within_ttl_and_its_task_runs_elsewhere() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let a = c.start_worker("Alder", &["--cpus", "8", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task", "submit", "--cpu", "5", "--mem", "0.5G", "--", "sh", "-c", "sleep 6",
    ]));
    let t = wait_running(&mut client, id, Duration::from_secs(10)).await;
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].worker_name, "Alder", "{t:?}");

    c.start_worker("Birch", &["--cpus", "8", "--memory", "8G"]);
    c.wait_workers_ready(2).await;
    let before = c.berth_ok(&["workers"]);
    let alder = worker_block(&before, "Alder").expect("Alder listed");
    assert!(alder.contains("Worker: Alder (ready)"), "{alder}");
    assert!(
        alder.contains("  CPU:     8.0 total, 5.0 allocated, 3.0 available"),
        "{alder}"
    );

    // The agent dies; its supervisor (and the task) live on, unseen.
    let t0 = Instant::now();
    c.workers[a].kill9();
    let seen = wait_for(Duration::from_secs(15), || {
        let out = c.berth_ok(&["workers"]);
        let block = worker_block(&out, "Alder")?;
        (block.contains("Worker: Alder (down)")
            && block.contains("  CPU:     8.0 total, 0.0 allocated, 3.0 available"))
        .then(|| (t0.elapsed(), block))
    });
    let (detected, block) = seen.unwrap_or_else(|| {
        panic!(
            "Alder never showed down with its attempt unknown:\n{}",
            c.berth_ok(&["workers"])
        )
    });
    println!(
        "failure detection: kill -9 -> `berth workers` shows Alder (down), its attempt unknown in {:.2} s",
        detected.as_secs_f64()
    );
    // Silence is not a fact: the attempt may still run (it does: only
    // the agent died), so it keeps its resources, on a line of its own.
    assert!(
        block.contains("  Unknown: 1 tasks (CPU 5.0, Memory 0.5 GB)\n  Running Tasks: 0"),
        "{block}"
    );
    assert!(
        block.contains("  Memory:  8.0 GB total, 0.0 GB allocated, 7.5 GB available"),
        "{block}"
    );
    assert!(
        detected <= Duration::from_secs(7),
        "worker declared down after {detected:?}, more than TTL 5 s + grace 1 s + 1 s"
    );

    // The first attempt is unknown; the task runs again on Birch and
    // succeeds.
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
    assert_eq!(t.attempts.len(), 2, "{t:?}");
    assert_eq!(t.attempts[0].worker_name, "Alder", "{t:?}");
    assert_eq!(t.attempts[0].state, "unknown", "{t:?}");
    assert_eq!(t.attempts[1].worker_name, "Birch", "{t:?}");
    assert_eq!(t.attempts[1].state, "succeeded", "{t:?}");
    assert_ne!(t.attempts[0].id, t.attempts[1].id);

    let after = c.berth_ok(&["workers"]);
    for name in ["Alder", "Birch"] {
        let b = worker_block(&after, name).unwrap_or_else(|| panic!("{name}: {after}"));
        assert!(b.contains(" 0.0 allocated"), "{b}");
        assert!(b.contains("  Running Tasks: 0"), "{b}");
    }
    assert!(after.contains("Worker: Birch (ready)"), "{after}");

    // The agent comes back: the first attempt's fate is known (it ran to
    // its end meanwhile) and recorded; nothing is held any more.
    c.start_worker("Alder", &["--cpus", "8", "--memory", "8G"]);
    let settled = wait_for_async(Duration::from_secs(20), || {
        let mut cl = client.clone();
        async move {
            let t = task(&mut cl, id).await;
            (t.attempts[0].state != "unknown").then_some(t)
        }
    })
    .await
    .expect("the unknown attempt is settled once Alder is back");
    assert_eq!(settled.state, "succeeded", "{settled:?}");
    assert_eq!(settled.attempts.len(), 2, "{settled:?}");
    let out = c.berth_ok(&["workers"]);
    let b = worker_block(&out, "Alder").unwrap();
    assert!(
        b.contains("  CPU:     8.0 total, 0.0 allocated, 8.0 available"),
        "{b}"
    );
    assert!(!b.contains("Unknown"), "{b}");
}

/// 2. The agent is killed while its task runs and restarted within 2 s: it
/// re-attaches, the task keeps its one attempt, finishes `succeeded` once,
/// and the allocation is only ever the request or zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reattaches_and_the_task_is_recorded_once() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let flags = ["--cpus", "20", "--memory", "8G"];
    let w = c.start_worker("Tessa", &flags);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task",
        "submit",
        "--cpu",
        "5",
        "--mem",
        "0.5G",
        "--",
        "sh",
        "-c",
        "echo start; sleep 4; echo end",
    ]));
    let t = wait_running(&mut client, id, Duration::from_secs(10)).await;
    let req = resources_of(&t);
    let first_attempt = t.attempts[0].id;

    // Sample over gRPC and through `berth workers`, every ~100 ms.
    let (stop, sampler) = spawn_sampler(c.client().await, "Tessa", Duration::from_millis(100));
    let cli_stop = Arc::new(AtomicBool::new(false));
    let cli_sampler = {
        let (url, token, stop) = (c.url.clone(), c.token.clone(), cli_stop.clone());
        std::thread::spawn(move || {
            let mut blocks = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = berth_at(&url, &token, &["workers"]);
                if out.status.success() {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    blocks.push(worker_block(&text, "Tessa").unwrap_or(text));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            blocks
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    c.workers[w].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_worker("Tessa", &flags);

    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    // Keep sampling a little after the end: the allocation must stay zero.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    cli_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let blocks = cli_sampler.join().unwrap();

    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
    assert_eq!(t.attempts.len(), 1, "recorded once, never lost: {t:?}");
    assert_eq!(t.attempts[0].id, first_attempt, "{t:?}");
    assert_eq!(t.attempts[0].state, "succeeded", "{t:?}");
    assert_eq!(t.attempts[0].worker_name, "Tessa", "{t:?}");

    assert!(samples.len() > 20, "only {} samples", samples.len());
    assert!(
        samples.iter().all(|s| s.state == "ready"),
        "Tessa was never to be declared down: {samples:?}"
    );
    assert_eq!(samples[0].allocated, req, "{samples:?}");
    assert_eq!(samples.last().unwrap().allocated, zero(), "{samples:?}");
    assert_held_then_released(&samples, req);

    assert!(blocks.len() > 10, "only {} CLI samples", blocks.len());
    let mut released = false;
    for b in &blocks {
        assert!(b.contains("Worker: Tessa (ready)"), "{b}");
        if b.contains("  CPU:     20.0 total, 5.0 allocated, 15.0 available") {
            assert!(!released, "allocation came back after release: {b}");
            assert!(b.contains("0.5 GB allocated"), "{b}");
            assert!(b.contains("  Running Tasks: 1"), "{b}");
        } else if b.contains("  CPU:     20.0 total, 0.0 allocated, 20.0 available") {
            assert!(b.contains("0.0 GB allocated"), "{b}");
            assert!(b.contains("  Running Tasks: 0"), "{b}");
            released = true;
        } else {
            panic!("allocation neither the request nor zero: {b}");
        }
    }
    assert!(released, "the CLI never saw the allocation released");

    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(logs.contains("start"), "{logs:?}");
    assert!(logs.contains("end"), "{logs:?}");
    assert_eq!(logs.matches("start").count(), 1, "ran once: {logs:?}");
}

/// 3. The master is killed while two tasks run and four wait; it stays down
/// ~4 s (the running ones finish meanwhile) and comes back: every task
/// succeeds exactly once and the ledger is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_mid_run_runs_every_task_exactly_once() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let marks = c.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let script = format!(
        "echo run >> '{}/task-'$BERTH_TASK_ID; sleep 2",
        marks.display()
    );
    let mut client = c.client().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            submit(
                &mut client,
                process_spec(2_000, GIB / 8, &["sh", "-c", &script]),
            )
            .await,
        );
    }
    let states = wait_for_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        let ids = ids.clone();
        async move {
            let mut st = Vec::new();
            for id in ids {
                st.push(task(&mut client, id).await);
            }
            (st.iter().filter(|t| t.state == "running").count() == 2).then_some(st)
        }
    })
    .await
    .expect("two tasks running");
    assert_eq!(
        states.iter().filter(|t| t.state == "queued").count(),
        4,
        "{states:?}"
    );

    c.master.as_mut().unwrap().kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.start_master(&[]);
    let mut client = c.client().await;

    for id in &ids {
        let t = wait_terminal(&mut client, *id, Duration::from_secs(60)).await;
        assert_eq!(t.state, "succeeded", "{t:?}");
        assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
        assert_eq!(t.attempts.len(), 1, "no attempt lost or repeated: {t:?}");
        assert_eq!(t.attempts[0].state, "succeeded", "{t:?}");
    }

    let got = markers(&marks);
    let mut want: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("task-{id}"), "run\n".to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want, "each task ran exactly once");

    let ws = workers(&mut client).await;
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0].state, "ready", "{ws:?}");
    assert_eq!(ws[0].allocated.unwrap_or_default(), zero(), "{ws:?}");
    assert_eq!(ws[0].running_attempts, 0, "{ws:?}");
    let out = c.berth_ok(&["workers"]);
    assert!(
        out.contains("  CPU:     4.0 total, 0.0 allocated, 4.0 available"),
        "{out}"
    );
    let rec = c.berth_ok(&["reconcile"]);
    assert!(
        rec.contains("✓ Resource reconciliation complete: fixed 0 workers"),
        "{rec}"
    );
    assert!(!rec.contains("Fixed Tessa"), "{rec}");
}

/// 4. The master is frozen (SIGSTOP) for ~3 s, less than the TTL, while a
/// short task finishes: after SIGCONT the result arrives, the task succeeds
/// with one attempt and the allocation is released once, to exactly zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_gets_the_result_and_releases_once() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task",
        "submit",
        "--cpu",
        "5",
        "--mem",
        "0.5G",
        "--",
        "sh",
        "-c",
        "echo hi; sleep 1",
    ]));
    let t = wait_running(&mut client, id, Duration::from_secs(10)).await;
    let req = resources_of(&t);

    let master = c.master.as_ref().unwrap();
    master.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    master.signal(libc::SIGCONT);

    let (stop, sampler) = spawn_sampler(c.client().await, "Tessa", Duration::from_millis(100));
    let t = wait_terminal(&mut client, id, Duration::from_secs(15)).await;
    // Watch a few more heartbeats: nothing may change after the release.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();

    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].state, "succeeded", "{t:?}");
    assert!(samples.len() > 10, "only {} samples", samples.len());
    assert!(
        samples.iter().all(|s| s.state == "ready"),
        "Tessa must not be declared down by a 3 s freeze: {samples:?}"
    );
    assert_held_then_released(&samples, req);
    assert_eq!(samples.last().unwrap().allocated, zero(), "{samples:?}");

    let out = c.berth_ok(&["workers"]);
    let b = worker_block(&out, "Tessa").expect("Tessa listed");
    assert!(b.contains("Worker: Tessa (ready)"), "{b}");
    assert!(
        b.contains("  CPU:     20.0 total, 0.0 allocated, 20.0 available"),
        "{b}"
    );
    assert!(
        b.contains("  Memory:  8.0 GB total, 0.0 GB allocated, 8.0 GB available"),
        "{b}"
    );
    assert!(b.contains("  Running Tasks: 0"), "{b}");
    let rec = c.berth_ok(&["reconcile"]);
    assert!(
        rec.contains("✓ Resource reconciliation complete: fixed 0 workers"),
        "{rec}"
    );
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(logs.contains("hi"), "{logs:?}");
}

/// 5. Cancelling a queued task ends it at once, cancelling a running one
/// stops it within seconds and frees its resources, and cancelling either
/// again is refused with "already ended".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_and_a_queued_task() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;

    let running = parse_id(&c.berth_ok(&["task", "submit", "--cpu", "4", "--", "sleep", "30"]));
    wait_running(&mut client, running, Duration::from_secs(10)).await;
    let queued = parse_id(&c.berth_ok(&["task", "submit", "--cpu", "4", "--", "true"]));
    let q = task(&mut client, queued).await;
    assert_eq!(q.state, "queued", "{q:?}");

    // The queued one: cancelled at once, never placed.
    let out = c.berth_ok(&["task", "cancel", &queued.to_string()]);
    assert!(out.contains("cancelled"), "{out}");
    let q = task(&mut client, queued).await;
    assert_eq!(q.state, "cancelled", "{q:?}");
    assert!(q.attempts.is_empty(), "{q:?}");
    let w = &workers(&mut client).await[0];
    assert_eq!(w.allocated.unwrap().cpu_millis, 4_000, "{w:?}");

    // The running one: stopped within a few seconds, resources freed.
    let t0 = Instant::now();
    let out = c.berth_ok(&["task", "cancel", &running.to_string()]);
    assert!(
        out.contains("cancel requested") || out.contains("cancelled"),
        "{out}"
    );
    let t = wait_terminal(&mut client, running, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    println!("cancel of a running task took {:.2} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
    assert_eq!(t.state, "cancelled", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].state, "cancelled", "{t:?}");
    let out = c.berth_ok(&["workers"]);
    let b = worker_block(&out, "Tessa").expect("Tessa listed");
    assert!(
        b.contains("  CPU:     4.0 total, 0.0 allocated, 4.0 available"),
        "{b}"
    );
    assert!(b.contains("  Running Tasks: 0"), "{b}");

    // The cancelled queued task never runs, even with room now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let q = task(&mut client, queued).await;
    assert_eq!(q.state, "cancelled", "{q:?}");
    assert!(q.attempts.is_empty(), "{q:?}");

    // Cancelling again is refused and says why.
    for id in [queued, running] {
        let out = c.berth(&["task", "cancel", &id.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second cancel of {id} should fail");
        assert!(err.contains("already ended"), "{err}");
    }
}
