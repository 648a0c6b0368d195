//! Reconciliation against hand-edited records, time limits, and clean agent
//! stops — with real `berth` processes, a real SQLite file and real gRPC.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn db(c: &Cluster) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(c.master_dir().join("berth.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn attempt_state(c: &Cluster, task: u64) -> String {
    db(c)
        .query_row(
            "SELECT state FROM attempts WHERE task_id = ?1 ORDER BY id DESC LIMIT 1",
            [task as i64],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_record_is_shown_by_a_dry_run_fixed_once_then_clean() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = submit(&mut client, process_spec(5_000, 1 << 29, &["true"])).await;
    assert_eq!(
        wait_terminal(&mut client, id, Duration::from_secs(20))
            .await
            .state,
        "succeeded"
    );

    // Mark the finished task as running on Tessa, behind the master's back.
    let conn = db(&c);
    conn.execute(
        "UPDATE attempts SET state = 'running', ended_ms = NULL WHERE task_id = ?1",
        [id as i64],
    )
    .unwrap();
    conn.execute(
        "UPDATE tasks SET state = 'running' WHERE id = ?1",
        [id as i64],
    )
    .unwrap();
    drop(conn);

    let dry = c.berth_ok(&["reconcile", "--dry-run"]);
    assert!(
        dry.contains("Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0"),
        "{dry}"
    );
    assert!(dry.contains("would fix 1 workers"), "{dry}");
    assert_eq!(
        attempt_state(&c, id),
        "running",
        "a dry run changes nothing"
    );

    let fixed = c.berth_ok(&["reconcile"]);
    assert!(
        fixed.contains("✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0"),
        "{fixed}"
    );
    assert!(
        fixed.contains("✓ Resource reconciliation complete: fixed 1 workers"),
        "{fixed}"
    );
    assert_eq!(attempt_state(&c, id), "succeeded");
    let task_state: String = db(&c)
        .query_row("SELECT state FROM tasks WHERE id = ?1", [id as i64], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(task_state, "succeeded");

    let again = c.berth_ok(&["reconcile"]);
    assert!(
        again.contains("✓ Resource reconciliation complete: fixed 0 workers"),
        "{again}"
    );
    // The fix is in the audit log.
    assert!(
        c.log("master").contains("discrepancy in allocation fixed"),
        "{}",
        c.log("master")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_time_limit_is_stopped_and_recorded_as_timed_out() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let t0 = Instant::now();
    let id = c.berth_ok(&[
        "task",
        "submit",
        "--cpu",
        "1",
        "--timeout",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    let id: u64 = id.trim().parse().unwrap();
    let mut client = c.client().await;
    let t = wait_terminal(&mut client, id, Duration::from_secs(15)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(t.state, "failed", "{t:?}");
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].state, "timed_out");
    assert!(t.attempts[0].reason.contains("time limit of 1.0s"), "{t:?}");
    let w = &workers(&mut client).await[0];
    assert_eq!(w.allocated.unwrap().cpu_millis, 0);
    // Bad limits are refused naming the field.
    let out = c.berth(&["task", "submit", "--timeout", "0s", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
    let out = c.berth(&["task", "submit", "--retries", "-1", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retries"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_but_not_its_task_which_is_reattached() {
    let mut c = Cluster::start();
    let w = c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let marker = c.dir.path().join("ran");
    let script = format!(
        "echo start; sleep 3; echo once >> {}; echo end",
        marker.display()
    );
    let mut client = c.client().await;
    let id = submit(&mut client, process_spec(1_000, 0, &["sh", "-c", &script])).await;
    wait_for_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { (task(&mut client, id).await.state == "running").then_some(()) }
    })
    .await
    .expect("running");
    c.workers[w].signal(libc::SIGTERM);
    let status = c.workers[w]
        .wait_exit(Duration::from_secs(3))
        .expect("agent exits promptly on SIGTERM");
    assert!(status.success(), "{status:?}");
    // Its task is still running without it.
    assert_eq!(task(&mut client, id).await.state, "running");
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "re-attached, not re-run: {t:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "once\n");
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(logs.contains("start") && logs.contains("end"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_on_exit_finishes_running_tasks_and_takes_no_new_work() {
    let mut c = Cluster::start();
    let w = c.start_worker(
        "Tessa",
        &["--cpus", "4", "--memory", "4G", "--drain-on-exit"],
    );
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let first = submit(&mut client, process_spec(1_000, 0, &["sleep", "3"])).await;
    wait_for_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { (task(&mut client, first).await.state == "running").then_some(()) }
    })
    .await
    .expect("running");
    c.workers[w].signal(libc::SIGTERM);
    let shown = wait_for(Duration::from_secs(5), || {
        let out = c.berth_ok(&["workers"]);
        out.contains("Worker: Tessa (draining)").then_some(out)
    });
    assert!(shown.is_some(), "{}", c.berth_ok(&["workers"]));
    let second = submit(&mut client, process_spec(1_000, 0, &["true"])).await;
    let t = wait_terminal(&mut client, first, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded");
    let status = c.workers[w]
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits once drained");
    assert!(status.success());
    let s = task(&mut client, second).await;
    assert_eq!(
        s.state, "queued",
        "a draining worker takes no new work: {s:?}"
    );
    assert!(s.attempts.is_empty());
}
