//! Placement from the command line, with real `berth master` / `berth
//! worker` processes over real gRPC: priorities, `--constraint` against
//! `--label`, `binpack` / `spread`, `dispatch`, `drain`, `unregister`,
//! `register` with `--require-registration`, and a smoke run of `berth
//! bench`. Tasks are submitted with the CLI (and the shell), so the flags
//! are what is tested; the gRPC client only reads state back.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A master started with `extra` flags, on a fresh data dir.
fn cluster_with(extra: &[&str]) -> Cluster {
    let mut c = Cluster {
        dir: tempfile::tempdir().unwrap(),
        master: None,
        workers: Vec::new(),
        url: String::new(),
        token: String::new(),
    };
    c.start_master(extra);
    c
}

/// `berth task submit ARGS…`; returns the task id it prints.
fn submit_cli(c: &Cluster, args: &[&str]) -> u64 {
    let mut all = vec!["task", "submit"];
    all.extend_from_slice(args);
    parse_id(&c.berth_ok(&all))
}

/// `berth dispatch WORKER ARGS…`; returns the task id it prints.
fn dispatch_cli(c: &Cluster, worker: &str, args: &[&str]) -> u64 {
    let mut all = vec!["dispatch", worker];
    all.extend_from_slice(args);
    parse_id(&c.berth_ok(&all))
}

fn parse_id(out: &str) -> u64 {
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a task id: {out:?}"))
}

/// Run `berth ARGS…` expecting a refusal; returns its stderr.
fn berth_refused(c: &Cluster, args: &[&str]) -> String {
    let out = c.berth(args);
    assert!(
        !out.status.success(),
        "berth {args:?} should have been refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Feed `script` to `berth shell`; returns (succeeded, stdout, stderr).
fn shell(c: &Cluster, script: &str) -> (bool, String, String) {
    let out = c.shell(script);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process task's command that runs until `go` exists.
fn until(go: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.05; done", go.display())
}

fn release(go: &Path) {
    std::fs::write(go, b"").unwrap();
}

/// Wait until task `id` is in `state`.
async fn wait_state(c: &mut Client, id: u64, state: &str) -> berth_proto::v1::Task {
    let t0 = Instant::now();
    loop {
        let t = task(c, id).await;
        if t.state == state {
            return t;
        }
        assert!(
            t0.elapsed() < WAIT,
            "task {id} not {state} in {WAIT:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn succeeded(c: &mut Client, id: u64) -> berth_proto::v1::Task {
    let t = wait_terminal(c, id, WAIT).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    t
}

/// The worker the task's last attempt was placed on.
fn worker_of(t: &berth_proto::v1::Task) -> String {
    t.attempts
        .iter()
        .max_by_key(|a| a.id)
        .map(|a| a.worker_name.clone())
        .unwrap_or_default()
}

/// Wait until no worker holds any CPU (finished tasks released).
async fn wait_idle(c: &mut Client) {
    let t0 = Instant::now();
    loop {
        let ws = workers(c).await;
        if ws
            .iter()
            .all(|w| w.allocated.is_none_or(|r| r.cpu_millis == 0))
        {
            return;
        }
        assert!(t0.elapsed() < WAIT, "workers still allocated: {ws:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_task_queued_last_runs_first() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "1", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let go = c.dir.path().join("go");

    // Fill the worker's one core.
    let filler = submit_cli(&c, &["--cpu", "1", "--", "sh", "-c", &until(&go)]);
    wait_state(&mut client, filler, "running").await;
    let low = submit_cli(&c, &["--cpu", "1", "--priority", "-5", "--", "true"]);
    let high = submit_cli(&c, &["--cpu", "1", "--priority", "5", "--", "true"]);
    assert_eq!(task(&mut client, low).await.state, "queued");
    assert_eq!(task(&mut client, high).await.state, "queued");
    let shown = c.berth_ok(&["task", "show", &high.to_string()]);
    assert!(shown.contains("  Priority:  5\n"), "{shown}");

    release(&go);
    let high_t = succeeded(&mut client, high).await;
    let low_t = succeeded(&mut client, low).await;
    // One core: the first placed after the filler is the one that ran first.
    assert!(
        high_t.attempts[0].id < low_t.attempts[0].id,
        "the priority 5 task must be placed before the priority -5 one: {high_t:?} {low_t:?}"
    );
    assert!(
        low_t.attempts[0].created_ms >= high_t.attempts[0].created_ms,
        "{high_t:?} {low_t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_place_only_on_a_labelled_worker_and_unknown_labels_are_refused() {
    let mut c = Cluster::start();
    // Binpack (the default) would prefer `plain`: it has less free CPU.
    c.start_worker("plain", &["--cpus", "2", "--memory", "8G"]);
    c.start_worker(
        "gpu-box",
        &[
            "--cpus", "4", "--memory", "8G", "--label", "gpu=a100", "--label", "zone=b",
        ],
    );
    c.wait_workers_ready(2).await;
    let mut client = c.client().await;

    let free = submit_cli(&c, &["--", "true"]);
    let a = submit_cli(&c, &["--constraint", "gpu=a100", "--", "true"]);
    let b = submit_cli(
        &c,
        &[
            "--constraint",
            "gpu=a100",
            "--constraint",
            "zone=b",
            "--",
            "true",
        ],
    );
    assert_eq!(worker_of(&succeeded(&mut client, free).await), "plain");
    assert_eq!(worker_of(&succeeded(&mut client, a).await), "gpu-box");
    assert_eq!(worker_of(&succeeded(&mut client, b).await), "gpu-box");

    // A label no worker has: refused at submit, naming it.
    let before = c.berth_ok(&["task", "list"]);
    let e = berth_refused(
        &c,
        &["task", "submit", "--constraint", "gpu=h100", "--", "true"],
    );
    assert!(e.contains("gpu=h100"), "{e}");
    assert_eq!(c.berth_ok(&["task", "list"]), before, "nothing recorded");
    let e = berth_refused(&c, &["task", "submit", "--constraint", "gpu", "--", "true"]);
    assert!(e.contains("constraint (--constraint)"), "{e}");

    // `workers` keeps its block and adds the labels last.
    let text = c.berth_ok(&["workers"]);
    assert!(
        text.contains("Worker: gpu-box (ready)\n  CPU:     4.0 total"),
        "{text}"
    );
    assert!(
        text.contains("  Running Tasks: 0\n  Labels:  gpu=a100, zone=b\n"),
        "{text}"
    );
    assert_eq!(text.matches("Labels:").count(), 1, "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&c.berth_ok(&["--json", "workers"])).unwrap();
    let gpu = json["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "gpu-box")
        .unwrap();
    assert_eq!(gpu["labels"][0]["key"], "gpu");
    assert_eq!(gpu["labels"][0]["value"], "a100");
    assert_eq!(gpu["drained"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binpack_fills_one_worker_and_spread_uses_both() {
    // The cluster spreads by default; each task may choose.
    let mut c = cluster_with(&["--strategy", "spread"]);
    c.start_worker("w1", &["--cpus", "4", "--memory", "8G"]);
    c.start_worker("w2", &["--cpus", "4", "--memory", "8G"]);
    c.wait_workers_ready(2).await;
    let mut client = c.client().await;

    let mut placements = Vec::new();
    for (round, strategy) in [Some("binpack"), Some("spread"), None]
        .into_iter()
        .enumerate()
    {
        let go = c.dir.path().join(format!("go-{round}"));
        let cmd = until(&go);
        let mut args = vec!["--cpu", "1"];
        if let Some(s) = strategy {
            args.extend(["--strategy", s]);
        }
        args.extend(["--", "sh", "-c", &cmd]);
        let first = submit_cli(&c, &args);
        wait_state(&mut client, first, "running").await;
        let second = submit_cli(&c, &args);
        let t1 = wait_state(&mut client, first, "running").await;
        let t2 = wait_state(&mut client, second, "running").await;
        placements.push((strategy, worker_of(&t1), worker_of(&t2)));
        release(&go);
        succeeded(&mut client, first).await;
        succeeded(&mut client, second).await;
        wait_idle(&mut client).await;
    }
    let [binpack, spread, default] = placements.as_slice() else {
        unreachable!()
    };
    assert_eq!(binpack.1, binpack.2, "binpack: both on one worker");
    assert_ne!(spread.1, spread.2, "spread: one on each worker");
    assert_ne!(default.1, default.2, "the master's --strategy spread");
    let shown = c.berth_ok(&["task", "show", "1"]);
    assert!(shown.contains("  Strategy:  binpack\n"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_runs_on_the_named_worker_and_refuses_unknown_names() {
    let mut c = Cluster::start();
    // Binpack would pick A (less free CPU); dispatch must override that.
    c.start_worker("A", &["--cpus", "2", "--memory", "4G"]);
    c.start_worker("B", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(2).await;
    let mut client = c.client().await;

    let d = dispatch_cli(&c, "B", &["--", "true"]);
    let w = submit_cli(&c, &["--worker", "B", "--", "true"]);
    assert_eq!(worker_of(&succeeded(&mut client, d).await), "B");
    assert_eq!(worker_of(&succeeded(&mut client, w).await), "B");
    // Once those have ended (while they run, B's free CPU ties with A's).
    let free = submit_cli(&c, &["--", "true"]);
    assert_eq!(worker_of(&succeeded(&mut client, free).await), "A");
    let shown = c.berth_ok(&["task", "show", &d.to_string()]);
    assert!(
        shown.contains("  Worker:    B only (dispatch)\n"),
        "{shown}"
    );

    let e = berth_refused(&c, &["dispatch", "Nobody", "--", "true"]);
    assert!(e.contains("no registered worker is named 'Nobody'"), "{e}");
    let e = berth_refused(&c, &["dispatch", "A", "--cpu", "3", "--", "true"]);
    assert!(e.contains("A"), "{e}");
    assert!(e.contains("larger than"), "{e}");
    let e = berth_refused(&c, &["dispatch", "A", "--worker", "B", "--", "true"]);
    assert!(e.contains("leave out --worker"), "{e}");

    // The shell: a process task after `--`, pinned.
    let (ok, out, err) = shell(&c, "dispatch B -cpu_cores 0.5 -- true\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("; on worker B only)"), "{out}");
    let id: u64 = out
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(worker_of(&succeeded(&mut client, id).await), "B");
    let (ok, _, err) = shell(&c, "dispatch Nobody -- true\n");
    assert!(!ok);
    assert!(err.contains("'Nobody'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_finishes_its_task_and_takes_no_new_one() {
    let mut c = Cluster::start();
    c.start_worker("A", &["--cpus", "2", "--memory", "4G"]);
    c.start_worker("B", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(2).await;
    let mut client = c.client().await;
    let go = c.dir.path().join("go");

    let running = dispatch_cli(&c, "A", &["--", "sh", "-c", &until(&go)]);
    wait_state(&mut client, running, "running").await;
    let out = c.berth_ok(&["drain", "A"]);
    assert!(out.starts_with("Worker A drained"), "{out}");
    let text = c.berth_ok(&["workers"]);
    assert!(text.contains("Worker: A (ready, drained)\n"), "{text}");
    assert!(text.contains("Worker: B (ready)\n"), "{text}");

    // A still has a free core and binpack would prefer it; nothing goes there.
    let later: Vec<u64> = (0..3).map(|_| submit_cli(&c, &["--", "true"])).collect();
    for id in later {
        assert_eq!(worker_of(&succeeded(&mut client, id).await), "B");
    }
    // A task pinned to A waits, saying why.
    let pinned = dispatch_cli(&c, "A", &["--", "true"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = task(&mut client, pinned).await;
    assert_eq!(t.state, "queued", "{t:?}");
    assert!(!t.wait_reason.is_empty(), "{t:?}");
    c.berth_ok(&["task", "cancel", &pinned.to_string()]);

    // The task that was running finishes where it was.
    assert_eq!(task(&mut client, running).await.state, "running");
    release(&go);
    assert_eq!(worker_of(&succeeded(&mut client, running).await), "A");
    let json: serde_json::Value =
        serde_json::from_str(&c.berth_ok(&["--json", "workers"])).unwrap();
    let a = json["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "A")
        .unwrap();
    assert_eq!(a["drained"], true);

    let e = berth_refused(&c, &["drain", "Nobody"]);
    assert!(e.contains("'Nobody'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_needs_a_drained_idle_worker_then_removes_it() {
    let mut c = Cluster::start();
    let a = c.start_worker("A", &["--cpus", "2", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let go = c.dir.path().join("go");

    let id = submit_cli(&c, &["--", "sh", "-c", &until(&go)]);
    wait_state(&mut client, id, "running").await;
    // Connected agents are refused (they would register again at once);
    // the drained / idle rules are covered by the master's unit tests.
    let e = berth_refused(&c, &["unregister", "A"]);
    assert!(e.contains("still connected; stop its agent first"), "{e}");
    c.berth_ok(&["drain", "A"]);
    let e = berth_refused(&c, &["unregister", "A"]);
    assert!(e.contains("still connected"), "{e}");

    release(&go);
    succeeded(&mut client, id).await;
    // Decommission: stop the agent, then forget the worker (a running
    // agent would join again at once).
    c.workers[a].signal(libc::SIGTERM);
    assert!(
        c.workers[a].wait_exit(WAIT).is_some(),
        "the agent did not stop"
    );
    let (ok, out, err) = shell(&c, "unregister A\nworkers\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("✓ Worker A unregistered\n"), "{out}");
    assert!(out.contains("No workers registered."), "{out}");
    assert!(!c.berth_ok(&["workers"]).contains("Worker: A"));
    let e = berth_refused(&c, &["unregister", "A"]);
    assert!(e.contains("no registered worker is named 'A'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_registration_only_registered_names_join() {
    let mut c = cluster_with(&["--require-registration"]);
    let w = c.start_worker("Tessa", &["--cpus", "2", "--memory", "4G"]);
    let told = wait_for(WAIT, || {
        c.log("Tessa").contains("register Tessa").then_some(())
    });
    assert!(
        told.is_some(),
        "the refused worker should be told to `register Tessa`:\n{}",
        c.log("Tessa")
    );
    assert_eq!(c.berth_ok(&["workers"]), "No workers registered.\n");

    let out = c.berth_ok(&["register", "Tessa"]);
    assert!(out.contains("Tessa"), "{out}");
    // A refused agent exits; start it again (one still retrying joins by
    // itself).
    if c.workers[w].wait_exit(Duration::from_millis(100)).is_some() {
        c.start_worker("Tessa", &["--cpus", "2", "--memory", "4G"]);
    }
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = submit_cli(&c, &["--", "true"]);
    assert_eq!(worker_of(&succeeded(&mut client, id).await), "Tessa");

    // Another name is still refused; the shell registers too.
    c.start_worker("Uma", &["--cpus", "2", "--memory", "4G"]);
    let told = wait_for(WAIT, || c.log("Uma").contains("register Uma").then_some(()));
    assert!(told.is_some(), "{}", c.log("Uma"));
    let (ok, out, err) = shell(&c, "register Uma\n");
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("✓ "), "{out}");
}

fn bench(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BERTH)
        .arg("bench")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run berth bench")
}

#[test]
fn bench_place_prints_one_json_line_with_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["place", "--workers", "50", "--tasks", "2000"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["scenario"], "place");
    assert_eq!(v["workers"], 50);
    assert_eq!(v["tasks"], 2000);
    for key in ["placements_per_s", "p50_ms", "p99_ms", "seconds"] {
        assert!(v[key].is_number(), "{key} in {v}");
    }
    // Its scratch folder is gone afterwards.
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let out = bench(&["fastest"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for s in ["place", "e2e", "recover", "memory", "scale"] {
        assert!(err.contains(s), "{err}");
    }
}
