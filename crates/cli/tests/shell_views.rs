//! The shell's live views (`status`, `stats`, `internal-state`), `--json`
//! on every read command, `task submit --wait` and its exit codes, and
//! `berth completions`, against a real master and worker.

mod common;

use common::{BERTH, Cluster};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn shell(c: &Cluster, lines: &[&str]) -> (String, String) {
    let mut script = lines.join("\n");
    script.push('\n');
    let out = c.shell(&script);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = c.berth_ok(&all);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("berth {args:?}: {e}: {text}"))
}

async fn wait_running(c: &Cluster, id: u64) {
    let mut client = c.client().await;
    common::wait_for_async(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let t = common::task(&mut client, id).await;
            (t.state == "running").then_some(())
        }
    })
    .await
    .expect("task running");
    let _ = &mut client;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_views_print_once_without_a_terminal_and_every_read_command_speaks_json() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let id: u64 = c
        .berth_ok(&[
            "task", "submit", "--cpu", "5", "--name", "sleeper", "--", "sleep", "60",
        ])
        .trim()
        .parse()
        .unwrap();
    wait_running(&c, id).await;

    let (out, err) = shell(
        &c,
        &[
            "status",
            "stats Tessa",
            "internal-state",
            "stats nobody",
            "help",
        ],
    );
    assert!(
        out.contains("  Workers:        1 registered, 1 active, 0 down\n"),
        "{out}"
    );
    assert!(out.contains("  Running tasks:  1\n"), "{out}");
    assert!(out.contains("  Queued tasks:   0\n"), "{out}");
    assert!(
        out.contains("CPU 5.0 of 20.0, Memory 0.5 GB of 8.0 GB"),
        "{out}"
    );
    assert!(
        !out.contains("refreshing"),
        "without a terminal a view prints once: {out}"
    );
    assert!(
        out.contains(
            "Worker: Tessa (ready)\n  CPU:     20.0 total, 5.0 allocated, 15.0 available\n"
        ),
        "{out}"
    );
    assert!(out.contains("  Last heartbeat: "), "{out}");
    assert!(out.contains("  Live usage:     not reported"), "{out}");
    assert!(out.contains("  Running attempts: 1\n"), "{out}");
    assert!(
        out.lines().any(
            |l| l.trim_start().starts_with(|ch: char| ch.is_ascii_digit())
                && l.contains(&format!(" {id} "))
                && l.contains("sleeper")
                && l.contains("running")
        ),
        "the attempt row names its task: {out}"
    );
    assert!(out.contains("NAME   ID"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Tessa ") && l.contains("5.0/20.0") && l.contains("ago")),
        "{out}"
    );
    assert!(
        err.contains("no worker named 'nobody'; workers: Tessa"),
        "{err}"
    );
    for cmd in ["status", "stats", "internal-state"] {
        assert!(
            out.contains(&format!("  {cmd} ")),
            "help lists {cmd}: {out}"
        );
    }

    // The same views as subcommands, and --json on every read command.
    let status = json(&c, &["status"]);
    assert_eq!(status["workers"], 1);
    assert_eq!(status["active_workers"], 1);
    assert_eq!(status["running_tasks"], 1);
    assert_eq!(status["allocated"]["cpu_millis"], 5000);
    let workers = json(&c, &["workers"]);
    assert_eq!(
        workers["workers"][0]["allocated"]["cpu_millis"],
        status["allocated"]["cpu_millis"]
    );
    let stats = json(&c, &["stats", "Tessa"]);
    assert_eq!(stats["name"], "Tessa");
    assert_eq!(stats["running"][0]["task_id"], id);
    assert_eq!(stats["live_usage"], Value::Null);
    assert!(stats["last_heartbeat_age_ms"].as_i64().unwrap() < 10_000);
    let internal = json(&c, &["internal-state"]);
    assert_eq!(internal["workers"][0]["name"], "Tessa");
    assert!(c.berth_ok(&["internal-state"]).starts_with("NAME "));
    assert!(c.berth_ok(&["status"]).contains("Running tasks:  1"));
    assert_eq!(json(&c, &["task", "list"])["tasks"][0]["id"], id);
    assert_eq!(
        json(&c, &["task", "show", &id.to_string()])["state"],
        "running"
    );
    assert!(json(&c, &["queue"])["tasks"].as_array().unwrap().is_empty());
    assert_eq!(json(&c, &["reconcile", "--dry-run"])["dry_run"], true);

    let echo: u64 = c
        .berth_ok(&["task", "submit", "--", "sh", "-c", "echo hello; echo world"])
        .trim()
        .parse()
        .unwrap();
    let logs = c.berth_ok(&["task", "logs", &echo.to_string(), "--follow", "--json"]);
    let data: String = logs
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["attempt_id"].as_u64().unwrap() > 0);
            v["data"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(data, "hello\nworld\n");
    c.berth_ok(&["task", "cancel", &id.to_string()]);
}

fn wait_cmd(c: &Cluster, args: &[&str]) -> Output {
    let mut all = vec!["task", "submit", "--wait"];
    all.extend_from_slice(args);
    c.berth(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_follows_the_task_and_exits_with_its_code() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;

    let out = wait_cmd(&c, &["--", "sh", "-c", "sleep 1; exit 3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let id: u64 = stdout.trim().parse().expect("stdout is the task id");
    assert!(
        stderr.contains(&format!("task {id}: running on Tessa\n")),
        "one plain line per state change: {stderr}"
    );
    assert!(
        stderr.contains(&format!("✗ Task {id} failed (exit 3)")),
        "{stderr}"
    );

    let out = wait_cmd(&c, &["--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("succeeded"));

    let out = wait_cmd(&c, &["--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = wait_cmd(&c, &["--json", "--", "sh", "-c", "exit 0"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["exit_code"], 0);

    // Cancelled while waiting: 130.
    let mut child = Command::new(BERTH)
        .args(["task", "submit", "--wait", "--", "sleep", "60"])
        .env("BERTH_MASTER", &c.url)
        .env("BERTH_TOKEN", &c.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.as_mut().unwrap());
        r.read_line(&mut first).unwrap();
    }
    let id: u64 = first.trim().parse().unwrap();
    wait_running(&c, id).await;
    c.berth_ok(&["task", "cancel", &id.to_string()]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BERTH)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("berth"), "{shell}: {text}");
        for word in ["internal-state", "submit", "print-config"] {
            assert!(text.contains(word), "{shell} completes {word}");
        }
    }
    let out = Command::new(BERTH)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
