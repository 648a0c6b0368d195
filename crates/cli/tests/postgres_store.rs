//! A master whose records live in PostgreSQL (`--store postgres://…`),
//! with real processes and a throwaway PostgreSQL server of each test's own
//! (`berth_store::testing::PgServer`): every acknowledged task survives
//! `kill -9` of the master; a server that stops makes the master refuse
//! writes (naming the cause) while it keeps serving reads, and writes come
//! back by themselves once the server does.

mod common;

use berth_store::testing::{PASSWORD, PgServer};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// Every task's state, by id, as the master lists it.
fn states(c: &Cluster) -> BTreeMap<u64, String> {
    let list = c.berth_ok(&["task", "list", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let tasks = v
        .as_array()
        .or_else(|| v["tasks"].as_array())
        .unwrap_or_else(|| panic!("a task list: {list}"));
    tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn submit_cli(c: &Cluster, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["task", "submit", "--queue-anyway", "--cpu", "1", "--"];
    args.extend_from_slice(cmd);
    c.berth(&args)
}

fn assert_no_password(c: &Cluster) {
    let log = c.log("master");
    assert!(
        !log.contains(PASSWORD),
        "the master's log shows the database password:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_postgres_keeps_every_acknowledged_task_across_kill_9() {
    let server = PgServer::start();
    let url = server.fresh_database();
    let mut c = Cluster::empty();
    let _logs = LogsOnPanic::of(&c);
    c.start_master(&["--store", &url]);
    c.start_worker_env("Tessa", &["--cpus", "2", "--memory", "2G"], NO_DOCKER);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;

    // Finished, failed, running and queued (too big for Tessa) tasks.
    let ok = submit(&mut client, process_spec(500, GIB / 4, &["true"])).await;
    let failed = submit(
        &mut client,
        process_spec(500, GIB / 4, &["sh", "-c", "exit 3"]),
    )
    .await;
    let running = submit(&mut client, process_spec(500, GIB / 4, &["sleep", "60"])).await;
    assert_eq!(
        wait_terminal(&mut client, ok, Duration::from_secs(20))
            .await
            .state,
        "succeeded"
    );
    assert_eq!(
        wait_terminal(&mut client, failed, Duration::from_secs(20))
            .await
            .state,
        "failed"
    );
    wait_for_async(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move { (task(&mut client, running).await.state == "running").then_some(()) }
    })
    .await
    .expect("the long task runs");
    let out = c.berth(&[
        "task",
        "submit",
        "--queue-anyway",
        "--cpu",
        "8",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{out:?}");
    let before = states(&c);
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(
        !c.master_dir().join("berth.db").exists(),
        "with --store postgres:// there is no SQLite file"
    );

    c.master.as_mut().unwrap().kill9();
    c.start_master(&["--store", &url]);
    assert_eq!(states(&c), before, "every acknowledged task, in its state");
    let shown = c.berth_ok(&["task", "show", &failed.to_string()]);
    assert!(shown.contains("failed"), "{shown}");
    // The worker comes back to the new master and the long task is still
    // its running attempt.
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    assert_eq!(task(&mut client, running).await.state, "running");
    assert!(c.log("master").contains("state loaded"));
    assert_no_password(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_refuses_writes_serves_reads_and_recovers() {
    let server = PgServer::start();
    let url = server.fresh_database();
    let mut c = Cluster::empty();
    let _logs = LogsOnPanic::of(&c);
    c.start_master(&["--store", &url]);
    let mut acked = Vec::new();
    for _ in 0..2 {
        let out = submit_cli(&c, &["true"]);
        assert!(out.status.success(), "{out:?}");
        acked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(c.http("GET", "/healthz", None).status, 200);

    server.stop();
    // gRPC: refused, UNAVAILABLE, naming the cause and not the password.
    let out = submit_cli(&c, &["true"]);
    assert!(!out.status.success(), "a write while the server is away");
    let refused = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        refused.contains("PostgreSQL") && refused.contains("nothing was recorded"),
        "{refused}"
    );
    assert!(!refused.contains(PASSWORD), "{refused}");
    // HTTP: 503 with the same cause.
    let r = c.http(
        "POST",
        "/api/v1/tasks",
        Some(r#"{"command": ["true"], "cpu": 1, "queue_anyway": true}"#),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("PostgreSQL"), "{}", r.text());
    assert!(!r.text().contains(PASSWORD), "{}", r.text());
    // Reads are served; the health check says why writes fail.
    for id in &acked {
        c.berth_ok(&["task", "show", id]);
    }
    assert_eq!(states(&c).len(), acked.len());
    let health = c.http("GET", "/healthz", None);
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("PostgreSQL"), "{}", health.text());
    assert!(!health.text().contains(PASSWORD), "{}", health.text());
    assert!(
        c.master
            .as_mut()
            .unwrap()
            .wait_exit(Duration::from_secs(2))
            .is_none(),
        "the master keeps running while its database is away"
    );

    // The server comes back: writes resume without restarting the master.
    server.start_again();
    let healthy = wait_for(Duration::from_secs(15), || {
        (c.http("GET", "/healthz", None).status == 200).then_some(())
    });
    assert!(
        healthy.is_some(),
        "healthz recovers once the server is back"
    );
    let out = submit_cli(&c, &["true"]);
    assert!(out.status.success(), "writes resume: {out:?}");
    acked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());

    // What was refused was never recorded; what was acknowledged is kept.
    c.master.as_mut().unwrap().kill9();
    c.start_master(&["--store", &url]);
    let after = states(&c);
    let ids: Vec<String> = after.keys().map(|id| id.to_string()).collect();
    assert_eq!(ids, acked, "{after:?}");
    assert_no_password(&c);
}
