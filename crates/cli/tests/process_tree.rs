//! A process task's whole process tree ends with it, with real `berth
//! master` and `berth worker` processes: when the command exits, when it
//! is cancelled, when it runs past its time limit, while the agent is
//! down, and (where the worker runs tasks in cgroups) when a process
//! escapes the task's process group with `setsid`.
//!
//! Each task leaves a `sleep N` behind with a number no other test uses;
//! after the task ends no process with exactly that command line may be
//! left (`/proc/*/cmdline`).

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Pids of live processes whose argv is exactly `argv`.
fn running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want) {
            out.push(pid);
        }
    }
    out
}

/// Kills what a failed test left behind (only our own markers).
struct Leftovers(&'static [&'static str]);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in running(self.0) {
            // SAFETY: kill(2) of a process with this test's unique argv.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Nothing with `argv` may be running (allowing a moment for a killed
/// process to be reaped).
fn assert_none_left(argv: &[&str], what: &str) {
    let t0 = Instant::now();
    loop {
        let left = running(argv);
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: {argv:?} still runs (pids {left:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parse_id(out: &str) -> u64 {
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a task id, got {out:?}"))
}

async fn cluster() -> (Cluster, LogsOnPanic) {
    let mut c = Cluster::start();
    let logs = LogsOnPanic::of(&c);
    c.start_worker_env(
        "Tessa",
        &["--cpus", "4", "--memory", "4G", "--stop-grace", "2s"],
        NO_DOCKER,
    );
    c.wait_workers_ready(1).await;
    (c, logs)
}

/// Whether the worker said it runs tasks in cgroups.
fn uses_cgroups(c: &Cluster) -> bool {
    let log = c.log("Tessa");
    let line = log
        .lines()
        .find(|l| l.contains("process tasks end with their whole process tree"))
        .unwrap_or_else(|| panic!("the worker does not say how it contains tasks:\n{log}"));
    println!("{line}");
    line.contains("mechanism=cgroup")
}

async fn wait_running(c: &mut Client, id: u64) {
    let t0 = Instant::now();
    while task(c, id).await.state != "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "task {id} not running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The command exits while a child it put in the background still runs:
/// the task succeeds, and the child is gone when it is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_child_ends_with_its_task() {
    const LEFT: &[&str] = &["sleep", "3101"];
    let _left = Leftovers(LEFT);
    let (c, _logs) = cluster().await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&["task", "submit", "--", "sh", "-c", "sleep 3101 & sleep 1"]));
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_none_left(LEFT, "after the task succeeded");
}

/// A cancelled task whose child ignores SIGTERM: the child is killed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_leaves_nothing_running() {
    const LEFT: &[&str] = &["sleep", "3102"];
    let _left = Leftovers(LEFT);
    let (c, _logs) = cluster().await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task",
        "submit",
        "--",
        "sh",
        "-c",
        "(trap '' TERM; exec sleep 3102) & sleep 300",
    ]));
    wait_running(&mut client, id).await;
    // The child is up before the cancel.
    wait_for(Duration::from_secs(5), || {
        (!running(LEFT).is_empty()).then_some(())
    })
    .expect("the task's child started");
    c.berth_ok(&["task", "cancel", &id.to_string()]);
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "cancelled", "{t:?}");
    assert_none_left(LEFT, "after the task was cancelled");
}

/// A task past its time limit, with a child that ignores SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_task_leaves_nothing_running() {
    const LEFT: &[&str] = &["sleep", "3103"];
    let _left = Leftovers(LEFT);
    let (c, _logs) = cluster().await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task",
        "submit",
        "--timeout",
        "2s",
        "--",
        "sh",
        "-c",
        "(trap '' TERM; exec sleep 3103) & sleep 300",
    ]));
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "failed", "{t:?}");
    assert_eq!(t.attempts[0].state, "timed_out", "{t:?}");
    assert_none_left(LEFT, "after the task timed out");
}

/// A daemon that leaves the task's process group (`setsid`): only a cgroup
/// still holds it. Asserted where the worker uses cgroups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_leaves_the_group_ends_with_its_task_in_a_cgroup() {
    const LEFT: &[&str] = &["sleep", "3104"];
    let _left = Leftovers(LEFT);
    let (c, _logs) = cluster().await;
    let cgroups = uses_cgroups(&c);
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&[
        "task",
        "submit",
        "--",
        "sh",
        "-c",
        "setsid sleep 3104 & sleep 1",
    ]));
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    if cgroups {
        assert_none_left(LEFT, "after the task succeeded (cgroup)");
    } else {
        println!("no cgroup on this host: a setsid daemon is out of reach; not asserted");
    }
}

/// The command ends while the agent is down (`kill -9`): the supervisor
/// kills the rest of the tree on its own, and the restarted agent reports
/// the task's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_ends_with_the_task_while_the_agent_is_down() {
    const LEFT: &[&str] = &["sleep", "3105"];
    let _left = Leftovers(LEFT);
    let (mut c, _logs) = cluster().await;
    let mut client = c.client().await;
    let id = parse_id(&c.berth_ok(&["task", "submit", "--", "sh", "-c", "sleep 3105 & sleep 2"]));
    wait_running(&mut client, id).await;
    c.workers[0].kill9();
    // The command ends (2 s) while no agent runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_none_left(LEFT, "with the agent down");
    c.start_worker_env(
        "Tessa",
        &["--cpus", "4", "--memory", "4G", "--stop-grace", "2s"],
        NO_DOCKER,
    );
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "ran once: {t:?}");
}
