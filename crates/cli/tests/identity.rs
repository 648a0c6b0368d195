//! Worker identity with real processes: a copy of a running worker's data
//! dir (same node id) started as a second agent is refused while the first
//! is alive, and the first keeps its attempts.

mod common;

use common::*;
use std::time::Duration;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_data_dir_is_refused_and_the_original_keeps_its_task() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Wren", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = submit(
        &mut client,
        process_spec(1_000, 1 << 28, &["sh", "-c", "sleep 8; echo done"]),
    )
    .await;
    wait_for_async(Duration::from_secs(10), || {
        let mut cl = client.clone();
        async move { (task(&mut cl, id).await.state == "running").then_some(()) }
    })
    .await
    .expect("the task runs on Wren");

    // The clone: the same node id, another name.
    let original = c.dir.path().join("worker-Wren");
    let clone = c.dir.path().join("worker-Copy");
    copy_dir(&original, &clone);
    c.start_worker("Copy", &["--cpus", "4", "--memory", "4G"]);
    let refused = wait_for(Duration::from_secs(15), || {
        c.log("Copy")
            .contains("is already used by ready worker 'Wren'")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the clone is refused:\n{}",
        c.log("Copy")
    );
    // Several seconds of the clone retrying change nothing for Wren.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ws = workers(&mut client).await;
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(
        (ws[0].name.as_str(), ws[0].state.as_str()),
        ("Wren", "ready")
    );
    let t = task(&mut client, id).await;
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].state, "running", "{t:?}");
    assert!(
        !c.log("Wren").contains("the master closed the session"),
        "Wren's session never flaps:\n{}",
        c.log("Wren")
    );
    let done = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(done.attempts.len(), 1, "{done:?}");
}
