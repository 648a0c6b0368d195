//! The operator's view of real `berth master` / `berth worker` processes:
//! `--log-format json` (parseable lines, the access log of both listeners,
//! the task lifecycle), no colour in a log that is not a terminal, the
//! process metrics, and `undrain` from the command line and REST.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Every JSON line of a log; panics on a line that looks like JSON and is
/// not (text the binaries print on stdout, like hints, is left out).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The first line of `target` whose fields match every `(name, value)`.
fn find<'a>(lines: &'a [Value], target: &str, fields: &[(&str, Value)]) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["target"] == target && fields.iter().all(|(k, v)| &l["fields"][*k] == v))
}

/// Wait until the master's log holds a matching line.
fn wait_line(c: &Cluster, target: &str, fields: &[(&str, Value)]) -> Value {
    let t0 = Instant::now();
    loop {
        let lines = json_lines(&c.log("master"));
        if let Some(l) = find(&lines, target, fields) {
            return l.clone();
        }
        assert!(
            t0.elapsed() < WAIT,
            "no {target} line with {fields:?} in the master's log:\n{}",
            c.log("master")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rest_task(c: &Cluster, id: u64) -> Value {
    let r = c.http("GET", &format!("/api/v1/tasks/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_rest_state(c: &Cluster, id: u64, state: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let t = rest_task(c, id);
        if t["state"] == state {
            return t;
        }
        assert!(t0.elapsed() < WAIT, "task {id} not {state}: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_the_access_log_and_the_task_lifecycle() {
    let mut c = Cluster::empty();
    c.start_master(&["--log-format", "json"]);
    let _logs = LogsOnPanic::of(&c);
    // The worker logs text into a file: no colour codes there.
    c.start_worker_env("A", &["--cpus", "2", "--memory", "2G"], NO_DOCKER);
    c.wait_workers_ready(1).await;

    let r = c.http(
        "POST",
        "/api/v1/tasks",
        Some(r#"{"command": ["sh", "-c", "exit 0"], "name": "json-log"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["task_id"].as_u64().unwrap();
    // A query string is never logged.
    let q = c.http("GET", "/api/v1/tasks?name=secret-in-query", None);
    assert_eq!(q.status, 200, "{}", q.text());
    let t = wait_rest_state(&c, id, "succeeded");
    assert_eq!(t["exit_code"], 0, "{t}");
    // A gRPC call too (the CLI speaks gRPC), and one that fails.
    c.berth_ok(&["task", "show", &id.to_string()]);
    assert!(!c.berth(&["task", "show", "999999"]).status.success());

    // REST: method, path (no query), status, latency.
    let post = wait_line(
        &c,
        "berth::access",
        &[("method", "POST".into()), ("path", "/api/v1/tasks".into())],
    );
    assert_eq!(post["level"], "INFO", "{post}");
    assert_eq!(post["fields"]["status"], 201, "{post}");
    assert!(post["fields"]["latency_ms"].is_number(), "{post}");
    assert!(
        post["fields"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{post}"
    );
    assert!(post["timestamp"].is_string(), "{post}");
    // gRPC: service, method, code.
    let show = wait_line(
        &c,
        "berth::access",
        &[
            ("service", "berth.v1.Control".into()),
            ("method", "GetTask".into()),
            ("code", "Ok".into()),
        ],
    );
    assert!(show["fields"]["latency_ms"].is_number(), "{show}");
    wait_line(
        &c,
        "berth::access",
        &[("method", "GetTask".into()), ("code", "NotFound".into())],
    );
    // The worker's session is logged once, when it opens.
    wait_line(
        &c,
        "berth::access",
        &[
            ("service", "berth.v1.WorkerLink".into()),
            ("method", "Session".into()),
        ],
    );

    // The task's lifecycle, in order.
    let task = serde_json::json!(id);
    let submitted = wait_line(
        &c,
        "berth::task",
        &[("message", "task submitted".into()), ("task", task.clone())],
    );
    assert_eq!(submitted["fields"]["name"], "json-log", "{submitted}");
    let placed = wait_line(
        &c,
        "berth::task",
        &[("message", "task placed".into()), ("task", task.clone())],
    );
    assert_eq!(placed["fields"]["worker"], "A", "{placed}");
    let finished = wait_line(
        &c,
        "berth::task",
        &[("message", "task finished".into()), ("task", task.clone())],
    );
    assert_eq!(finished["fields"]["state"], "succeeded", "{finished}");
    assert_eq!(finished["fields"]["exit_code"], 0, "{finished}");

    let log = c.log("master");
    let lines = json_lines(&log);
    let count = |msg: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == msg && l["fields"]["task"] == task)
            .count()
    };
    assert_eq!(
        (
            count("task submitted"),
            count("task placed"),
            count("task finished")
        ),
        (1, 1, 1),
        "{log}"
    );
    // Neither the token, nor the query string, nor the command is logged.
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains(&c.token), "the token leaked: {text}");
        assert!(!text.contains("secret-in-query"), "{text}");
        assert!(!text.contains("exit 0"), "{text}");
    }
    let worker_log = c.log("A");
    assert!(worker_log.contains("INFO"), "{worker_log}");
    assert!(
        !worker_log.contains('\u{1b}'),
        "colour in a file: {worker_log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_hold_build_info_and_process_figures() {
    let c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let text = c.http("GET", "/metrics", None).text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(
        text.contains(&format!(
            "berth_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
    assert!(value("process_open_fds") >= 3.0, "{text}");
    assert!(value("process_cpu_seconds_total") >= 0.0, "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_takes_work_again_after_undrain() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker_env("A", &["--cpus", "2", "--memory", "2G"], NO_DOCKER);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;

    let out = c.berth_ok(&["drain", "A"]);
    assert!(out.starts_with("Worker A drained"), "{out}");
    let id = submit(&mut client, process_spec(500, 0, &["true"])).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = task(&mut client, id).await;
    assert_eq!(t.state, "queued", "a drained worker takes nothing: {t:?}");

    let out = c.berth_ok(&["undrain", "A"]);
    assert_eq!(out, "Worker A undrained: it takes new tasks again\n");
    let t = wait_terminal(&mut client, id, WAIT).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.last().unwrap().worker_name, "A", "{t:?}");
    let text = c.berth_ok(&["workers"]);
    assert!(text.contains("Worker: A (ready)\n"), "{text}");

    // The same through REST, and an unknown name is refused.
    let r = c.http("POST", "/api/v1/workers/A/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.http("POST", "/api/v1/workers/A/undrain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["action"].as_str(), v["worker"].as_str()),
        (Some("undrain"), Some("A")),
        "{v}"
    );
    let w = c.http("GET", "/api/v1/workers/A", None).json();
    assert_eq!(w["drained"], false, "{w}");
    let r = c.http("POST", "/api/v1/workers/Nobody/undrain", None);
    assert_eq!(r.status, 404, "{}", r.text());
    let id = submit(&mut client, process_spec(500, 0, &["true"])).await;
    assert_eq!(
        wait_terminal(&mut client, id, WAIT).await.state,
        "succeeded"
    );
}
