//! Faults of the master's own machine, with real processes: a master paused
//! for longer than the workers' TTL (SIGSTOP), a master whose wall clock
//! steps (libfaketime, monotonic clock left alone), and a master whose disk
//! fills up and is freed again (a small tmpfs). None of them may declare a
//! live worker down, lose an attempt, or stop the master for good.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// Wait until task `id` has the wanted state; returns it.
async fn wait_state(
    c: &mut Client,
    id: u64,
    state: &str,
    within: Duration,
) -> berth_proto::v1::Task {
    wait_for_async(within, || {
        let mut c = c.clone();
        async move {
            let t = task(&mut c, id).await;
            (t.state == state).then_some(t)
        }
    })
    .await
    .unwrap_or_else(|| panic!("task {id} never became {state}"))
}

async fn worker_states(c: &mut Client) -> Vec<(String, String)> {
    workers(c)
        .await
        .into_iter()
        .map(|w| (w.name, w.state))
        .collect()
}

/// 1. The master is stopped for 10 s — longer than TTL + grace (6 s) —
/// while a task runs. After SIGCONT the worker is still ready, the attempt
/// was never declared lost, the task ends with exactly one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_paused_past_the_ttl_declares_nobody_down() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = submit(
        &mut client,
        process_spec(1_000, GIB / 2, &["sh", "-c", "sleep 14; echo done"]),
    )
    .await;
    wait_state(&mut client, id, "running", Duration::from_secs(10)).await;

    let master = c.master.as_ref().unwrap();
    master.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    master.signal(libc::SIGCONT);

    // Right after waking up, and for a few heartbeats more.
    for _ in 0..6 {
        let t = task(&mut client, id).await;
        assert_eq!(t.attempts.len(), 1, "no second attempt: {t:?}");
        assert!(
            matches!(t.attempts[0].state.as_str(), "running" | "succeeded"),
            "{t:?}"
        );
        assert_eq!(
            worker_states(&mut client).await,
            vec![("Tessa".to_string(), "ready".to_string())]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert!(
        !c.log("master").contains("declared down"),
        "{}",
        c.log("master")
    );
}

fn libfaketime() -> PathBuf {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| PathBuf::from(format!("/usr/lib/{a}/faketime/libfaketime.so.1")))
        .find(|p| p.exists())
        .expect("libfaketime is installed (scripts/test installs Debian's faketime)")
}

/// 2. The master's wall clock jumps an hour ahead, then two hours back
/// (libfaketime reads the offset from a file; the monotonic clock is left
/// alone). A live worker stays ready and its task runs once; after the
/// backward step a worker that really dies is still declared down in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_of_the_master_change_nothing() {
    let mut c = Cluster::empty();
    let _logs = LogsOnPanic::of(&c);
    let offset = c.dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let lib = libfaketime();
    c.start_master_env(
        &[],
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.start_worker("Kai", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(2).await;
    let mut client = c.client().await;
    let id = submit(
        &mut client,
        process_spec(4_000, GIB / 2, &["sh", "-c", "sleep 10; echo done"]),
    )
    .await;
    let t = wait_state(&mut client, id, "running", Duration::from_secs(10)).await;
    let first_worker = t.attempts[0].worker_id.clone();

    std::fs::write(&offset, "+1h\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(&offset, "-1h\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut states = worker_states(&mut client).await;
    states.sort();
    assert_eq!(
        states,
        vec![
            ("Kai".to_string(), "ready".to_string()),
            ("Tessa".to_string(), "ready".to_string())
        ]
    );
    let t = task(&mut client, id).await;
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert_eq!(t.attempts[0].state, "running", "{t:?}");
    assert_eq!(t.attempts[0].worker_id, first_worker);

    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");

    // A backward step must not keep a dead worker "ready" for an hour.
    let kai = c.workers.iter().position(|w| w.name == "Kai").unwrap();
    c.workers[kai].kill9();
    let down = wait_for_async(Duration::from_secs(15), || {
        let mut cl = client.clone();
        async move {
            worker_states(&mut cl)
                .await
                .into_iter()
                .any(|(n, s)| n == "Kai" && s == "down")
                .then_some(())
        }
    })
    .await;
    assert!(down.is_some(), "Kai declared down within TTL + grace");
}

/// A tmpfs mounted for one test, unmounted (lazily) whatever happens.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

/// 3. The master's disk fills up: submissions are refused with a message
/// naming the full disk, reads go on, `/healthz` says why; once space is
/// freed, writes resume without a restart, and after a restart every
/// acknowledged task is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers() {
    let mut c = Cluster::empty();
    let _logs = LogsOnPanic::of(&c);
    let _mount = Tmpfs::mount(&c.master_dir(), "16m");
    c.start_master(&[]);
    let submit_cli = |c: &Cluster| {
        c.berth(&[
            "task",
            "submit",
            "--queue-anyway",
            "--cpu",
            "1",
            "--",
            "true",
        ])
    };
    let mut acked = Vec::new();
    for _ in 0..3 {
        let out = submit_cli(&c);
        assert!(out.status.success(), "{out:?}");
        acked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(c.http("GET", "/healthz", None).status, 200);

    let filler = fill(&c.master_dir());
    // Submissions are refused, clearly, and nothing is recorded.
    let mut refused = None;
    for _ in 0..50 {
        let out = submit_cli(&c);
        if out.status.success() {
            acked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            continue;
        }
        refused = Some(String::from_utf8_lossy(&out.stderr).to_string());
        break;
    }
    let refused = refused.expect("a submission is refused once the disk is full");
    assert!(refused.contains("disk is full"), "{refused}");
    // Reads are served.
    for id in &acked {
        c.berth_ok(&["task", "show", id]);
    }
    c.berth_ok(&["task", "list"]);
    let health = c.http("GET", "/healthz", None);
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("disk is full"), "{}", health.text());
    let metrics = c.http("GET", "/metrics", None);
    assert!(
        metrics.text().contains("berth_store_writable 0"),
        "{}",
        metrics.text()
    );
    // The process is still there and serving.
    assert!(
        c.master
            .as_mut()
            .unwrap()
            .wait_exit(Duration::ZERO)
            .is_none()
    );

    std::fs::remove_file(&filler).unwrap();
    let ok = wait_for(Duration::from_secs(10), || {
        (c.http("GET", "/healthz", None).status == 200).then_some(())
    });
    assert!(ok.is_some(), "healthz recovers once space is freed");
    let out = submit_cli(&c);
    assert!(out.status.success(), "writes resume: {out:?}");
    acked.push(String::from_utf8_lossy(&out.stdout).trim().to_string());

    // Nothing acknowledged is lost across a restart.
    c.master.as_mut().unwrap().kill9();
    c.start_master(&[]);
    for id in &acked {
        c.berth_ok(&["task", "show", id]);
    }
    let ids = acked.len();
    let list = c.berth_ok(&["task", "list", "--json"]);
    assert_eq!(list.matches("\"id\"").count(), ids, "{list}");
}
