//! The master's REST/JSON API, `/openapi.json` and `/metrics`, against real
//! `berth master` / `berth worker` processes over real HTTP on loopback.

mod common;

use berth_master::http::ROUTES;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

/// A master with one worker of 4 CPUs and 4 GB.
async fn cluster() -> Cluster {
    let mut c = Cluster::start();
    c.start_worker("tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    c
}

fn task(c: &Cluster, id: u64) -> Value {
    let r = c.http("GET", &format!("/api/v1/tasks/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_state(c: &Cluster, id: u64, done: &[&str], within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let t = task(c, id);
        if done.contains(&t["state"].as_str().unwrap()) {
            return t;
        }
        assert!(t0.elapsed() < within, "task {id} not {done:?}: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn submit(c: &Cluster, body: &str) -> u64 {
    let r = c.http("POST", "/api/v1/tasks", Some(body));
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json()["task_id"].as_u64().unwrap()
}

fn task_count(c: &Cluster) -> u64 {
    c.http("GET", "/api/v1/tasks", None).json()["total"]
        .as_u64()
        .unwrap()
}

fn assert_error(r: &HttpResponse, status: u16, field: Option<&str>, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["field"].as_str(), field, "{v}");
    let msg = v["error"].as_str().expect("an error message");
    assert!(msg.contains(says), "{msg:?} does not say {says:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_flow_submit_list_watch_and_fetch_logs() {
    let c = cluster().await;
    let r = c.http(
        "POST",
        "/api/v1/tasks",
        Some(
            r#"{"command": ["sh", "-c", "echo hello from $GREETING; echo second line"],
                "cpu": 1.5, "memory": "512M", "name": "greeter", "env": {"GREETING": "rest"}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let id = v["task_id"].as_u64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/tasks/{id}").as_str())
    );
    assert_eq!(v["task"]["spec"]["name"], "greeter");
    assert_eq!(v["task"]["spec"]["resources"]["cpu_millis"], 1500);
    assert_eq!(v["task"]["spec"]["resources"]["memory_bytes"], 512u64 << 20);

    let list = c.http("GET", "/api/v1/tasks", None).json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["tasks"][0]["id"], id);

    let done = wait_state(&c, id, &["succeeded", "failed"], Duration::from_secs(20));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0);
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["worker_name"], "tessa");
    assert_eq!(attempts[0]["state"], "succeeded");

    let by_state = c.http("GET", "/api/v1/tasks?state=succeeded", None).json();
    assert_eq!(by_state["tasks"].as_array().unwrap().len(), 1);
    let none = c.http("GET", "/api/v1/tasks?state=running", None).json();
    assert_eq!(none["tasks"].as_array().unwrap().len(), 0);

    let logs = c.http("GET", &format!("/api/v1/tasks/{id}/logs"), None);
    assert_eq!(logs.status, 200);
    assert!(
        logs.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(logs.text(), "hello from rest\nsecond line\n");

    // The worker's allocation is back to zero.
    let w = c.http("GET", "/api/v1/workers/tessa", None).json();
    assert_eq!(w["allocated"]["cpu_millis"], 0, "{w}");
    assert_eq!(w["attempts"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn followed_logs_stream_while_the_task_runs() {
    let c = cluster().await;
    // The task ends only when the test opens its gate.
    let gate = c.dir.path().join("gate");
    let script = format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.05; done; echo last",
        gate.display()
    );
    let body = serde_json::json!({"command": ["sh", "-c", script], "cpu": "0.5"});
    let id = submit(&c, &body.to_string());
    wait_state(&c, id, &["running"], Duration::from_secs(20));
    let mut s = http_send(
        &c.http_url(),
        "GET",
        &format!("/api/v1/tasks/{id}/logs?follow=true"),
        Some(&c.token),
        None,
    );
    // The first line arrives while the task still runs.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while !String::from_utf8_lossy(&raw).contains("first\n") {
        let n = s.read(&mut buf).expect("read the stream");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(task(&c, id)["state"], "running");
    std::fs::write(&gate, "").unwrap();
    // The stream ends by itself when the task has ended, with everything.
    s.read_to_end(&mut raw).unwrap();
    let r = parse_response(&raw);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "first\nlast\n");
    assert_eq!(task(&c, id)["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_token_nothing_changes() {
    let c = cluster().await;
    let id = submit(&c, r#"{"command": ["sleep", "30"]}"#);
    wait_state(&c, id, &["running"], Duration::from_secs(20));
    let base = c.http_url();
    let runs_before = metric(&scrape(&c), "berth_reconcile_runs_total", &[]);
    for token in [None, Some("wrong-token"), Some("")] {
        for (method, path, body) in [
            (
                "POST",
                "/api/v1/tasks".to_string(),
                r#"{"command": ["true"]}"#,
            ),
            ("POST", format!("/api/v1/tasks/{id}/cancel"), ""),
            ("POST", "/api/v1/reconcile".to_string(), "{}"),
            ("GET", "/api/v1/tasks".to_string(), ""),
            ("GET", format!("/api/v1/tasks/{id}"), ""),
            ("GET", format!("/api/v1/tasks/{id}/logs"), ""),
            ("GET", "/api/v1/workers".to_string(), ""),
            ("GET", "/metrics".to_string(), ""),
        ] {
            let r = http_request(&base, method, &path, token, Some(body));
            let why = if token.is_none() { "missing" } else { "wrong" };
            assert_error(&r, 401, None, why);
            assert!(r.header("www-authenticate").is_some());
        }
    }
    assert_eq!(task_count(&c), 1);
    let t = task(&c, id);
    assert_eq!(t["state"], "running");
    assert_eq!(t["cancel_requested"], false);
    assert_eq!(
        metric(&scrape(&c), "berth_reconcile_runs_total", &[]),
        runs_before
    );
    // The public routes stay public.
    for path in ["/", "/healthz", "/openapi.json"] {
        assert_eq!(http_request(&base, "GET", path, None, None).status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_naming_the_field() {
    let c = cluster().await;
    for (body, field, says) in [
        (r#"{"command": ["true"], "cpu": "abc"}"#, Some("cpu"), "cpu"),
        (r#"{"command": ["true"], "cpu": abc}"#, Some("cpu"), "cpu"),
        (
            r#"{"command": ["true"], "memory": "lots"}"#,
            Some("memory"),
            "memory",
        ),
        (
            r#"{"command": ["true"], "memory": 1.5}"#,
            Some("memory"),
            "memory",
        ),
        (r#"{"command": "echo hi"}"#, Some("command"), "command"),
        (
            r#"{"command": ["true"], "gpus": 0.5}"#,
            Some("gpus"),
            "whole",
        ),
        (
            r#"{"command": ["true"], "env": {"1BAD": "x"}}"#,
            Some("env"),
            "1BAD",
        ),
        (
            r#"{"command": ["true"], "timeout": "soon"}"#,
            Some("timeout"),
            "duration",
        ),
        (
            r#"{"command": ["true"], "memroy": "1G"}"#,
            Some("memroy"),
            "unknown field",
        ),
        (
            r#"{"command": ["true"], "cpu": 0}"#,
            Some("cpu"),
            "below the minimum",
        ),
        (r#"{"command": []}"#, Some("command"), "empty"),
        (r#"{"command": ["true"],"#, None, "malformed JSON"),
        (r#"["true"]"#, None, "JSON object"),
        ("", None, "malformed JSON"),
    ] {
        let r = c.http("POST", "/api/v1/tasks", Some(body));
        assert_error(&r, 400, field, says);
    }
    assert_eq!(task_count(&c), 0, "a refused request recorded a task");

    let r = c.http("GET", "/api/v1/tasks?state=sleeping", None);
    assert_error(&r, 400, Some("state"), "queued");
    let r = c.http("GET", "/api/v1/tasks?colour=red", None);
    assert_error(&r, 400, Some("colour"), "unknown query parameter");
    let r = c.http("GET", "/api/v1/tasks/abc", None);
    assert_error(&r, 400, Some("id"), "abc");
    let r = c.http("POST", "/api/v1/reconcile", Some(r#"{"dry_run": "yes"}"#));
    assert_error(&r, 400, Some("dry_run"), "true or false");
}

/// Values the document forbids, which were once taken for a default, are
/// refused naming the field, and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn values_the_document_forbids_are_refused() {
    let c = cluster().await;
    let runs = || metric(&scrape(&c), "berth_reconcile_runs_total", &[]);
    let runs_before = runs();
    // `null` is not a boolean: it used to run a real reconciliation.
    let r = c.http("POST", "/api/v1/reconcile", Some(r#"{"dry_run": null}"#));
    assert_error(&r, 400, Some("dry_run"), "true or false");
    assert_eq!(runs(), runs_before, "a refused reconcile ran");
    let r = c.http(
        "POST",
        "/api/v1/tasks",
        Some(r#"{"command": ["true"], "queue_anyway": null}"#),
    );
    assert_error(&r, 400, Some("queue_anyway"), "true or false");
    assert_eq!(task_count(&c), 0, "a refused submission recorded a task");
    let r = c.http(
        "POST",
        "/api/v1/workers/tessa/unregister",
        Some(r#"{"confirm_dead": null}"#),
    );
    assert_error(&r, 400, Some("confirm_dead"), "true or false");
    let w = c.http("GET", "/api/v1/workers/tessa", None).json();
    assert_eq!(w["state"], "ready", "{w}");

    let id = submit(&c, r#"{"command": ["echo", "hi"]}"#);
    wait_state(&c, id, &["succeeded"], Duration::from_secs(20));
    // `follow` is `true` or `false`: `1`, `yes` or nothing were once taken.
    for bad in ["maybe", "1", "yes", "", "TRUE"] {
        let r = c.http(
            "GET",
            &format!("/api/v1/tasks/{id}/logs?follow={bad}"),
            None,
        );
        assert_error(&r, 400, Some("follow"), "true or false");
    }
    let r = c.http(
        "GET",
        &format!("/api/v1/tasks/{id}/logs?follow=false"),
        None,
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
    // An empty state filter is not a state.
    let r = c.http("GET", "/api/v1/tasks?state=", None);
    assert_error(&r, 400, Some("state"), "leave it out");
    // A body of blanks is not JSON (no body at all is `{}`).
    let r = c.http("POST", "/api/v1/workers/newcomer/register", Some(" "));
    assert_error(&r, 400, None, "malformed JSON");
    let r = c.http("POST", "/api/v1/reconcile", Some("\n"));
    assert_error(&r, 400, None, "malformed JSON");
    assert_eq!(runs(), runs_before, "a refused reconcile ran");
    // A route that takes no query parameters refuses them like the others.
    for (path, field) in [
        (format!("/api/v1/tasks/{id}?verbose=1"), "verbose"),
        ("/api/v1/workers?x".to_string(), "x"),
        ("/api/v1/outputs?all=true".to_string(), "all"),
    ] {
        let r = c.http("GET", &path, None);
        assert_error(&r, 400, Some(field), "unknown query parameter");
    }
    let r = c.http("POST", "/api/v1/reconcile?dry_run=true", None);
    assert_error(&r, 400, Some("dry_run"), "takes none");
    assert_eq!(runs(), runs_before, "a refused reconcile ran");
    // A path that does not decode is the API's own 400, not axum's text.
    let r = c.http("GET", "/api/v1/workers/%FF", None);
    assert_error(&r, 400, Some("id"), "id");
}

/// One parser: the same bad input is refused on the shell, the CLI and
/// REST naming the same field and the same limit, and nothing is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_bad_input_names_the_same_field_on_every_face() {
    let c = Cluster::start();
    // (field, shell flag, CLI flag, REST key, value, what the error says)
    for (field, shell_flag, cli_flag, key, value, says) in [
        (
            "cpu",
            "-cpu_cores",
            "--cpu",
            "cpu",
            "0",
            "0 is below the minimum of 0.001 cores",
        ),
        (
            "memory",
            "-mem",
            "--mem",
            "memory",
            "1e9G",
            "exceeds the limit of 65536.0 GB",
        ),
        (
            "retries",
            "-retries",
            "--retries",
            "retries",
            "101",
            "101 exceeds the limit of 100",
        ),
        (
            "timeout",
            "-timeout",
            "--timeout",
            "timeout",
            "soon",
            "'soon' is not a duration",
        ),
        (
            "stop_after_disconnect",
            "-stop_after_disconnect",
            "--stop-after-disconnect",
            "stop_after_disconnect",
            "0.5s",
            "must be at least 1s",
        ),
    ] {
        let out = c.shell(&format!("run {shell_flag} {value} -- true\n"));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let want = format!("{field} ({shell_flag}): ");
        assert!(
            text.contains(&want) && text.contains(says),
            "shell: {want}{says} not in {text:?}"
        );

        let out = c.berth(&["task", "submit", cli_flag, value, "--", "true"]);
        assert!(!out.status.success(), "CLI accepted {cli_flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{field} ({cli_flag}): ");
        assert!(
            err.contains(&want) && err.contains(says),
            "CLI: {want}{says} not in {err:?}"
        );

        let body = format!(r#"{{"command": ["true"], "{key}": "{value}"}}"#);
        let r = c.http("POST", "/api/v1/tasks", Some(&body));
        assert_error(&r, 400, Some(field), says);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: "))
        );
    }
    assert_eq!(task_count(&c), 0, "a refused request recorded a task");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_conflict_and_never_fits() {
    let c = cluster().await;
    assert_error(
        &c.http("GET", "/api/v1/tasks/999", None),
        404,
        None,
        "task 999",
    );
    assert_error(
        &c.http("POST", "/api/v1/tasks/999/cancel", None),
        404,
        None,
        "task 999",
    );
    assert_error(
        &c.http("GET", "/api/v1/tasks/999/logs", None),
        404,
        None,
        "task 999",
    );
    assert_error(
        &c.http("GET", "/api/v1/workers/nobody", None),
        404,
        None,
        "nobody",
    );
    assert_error(
        &c.http("GET", "/api/v2/nothing", None),
        404,
        None,
        "/api/v2/nothing",
    );

    // No worker could ever fit 64 cores: 422, naming the largest worker.
    let r = c.http(
        "POST",
        "/api/v1/tasks",
        Some(r#"{"command": ["true"], "cpu": 64}"#),
    );
    assert_error(&r, 422, None, "tessa");
    assert!(r.json()["error"].as_str().unwrap().contains("queue_anyway"));
    assert_eq!(task_count(&c), 0);

    // Queued anyway: it waits, and says why.
    let id = submit(
        &c,
        r#"{"command": ["true"], "cpu": 64, "queue_anyway": true}"#,
    );
    let t = task(&c, id);
    assert_eq!(t["state"], "queued");
    assert!(!t["wait_reason"].as_str().unwrap().is_empty(), "{t}");
    let q = c.http("GET", "/api/v1/tasks?state=queued", None).json();
    assert_eq!(q["tasks"][0]["id"], id);

    // Cancel it, then cancelling again conflicts.
    let r = c.http("POST", &format!("/api/v1/tasks/{id}/cancel"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["task"]["state"], "cancelled");
    let r = c.http("POST", &format!("/api/v1/tasks/{id}/cancel"), None);
    assert_error(&r, 409, None, "already ended");

    // Cancelling a running task stops it and frees the worker.
    let id = submit(&c, r#"{"command": ["sleep", "30"], "cpu": 2}"#);
    wait_state(&c, id, &["running"], Duration::from_secs(20));
    let r = c.http("POST", &format!("/api/v1/tasks/{id}/cancel"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["task"]["cancel_requested"], true);
    let t = wait_state(&c, id, &["cancelled"], Duration::from_secs(20));
    assert_eq!(t["attempts"][0]["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_and_reconcile() {
    let c = cluster().await;
    let list = c.http("GET", "/api/v1/workers", None).json();
    let ws = list["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 1);
    let w = &ws[0];
    assert_eq!(w["name"], "tessa");
    assert_eq!(w["state"], "ready");
    assert_eq!(w["total"]["cpu_millis"], 4000);
    assert_eq!(w["total"]["memory_bytes"], 4u64 << 30);
    assert_eq!(w["available"]["cpu_millis"], 4000);
    let wid = w["id"].as_str().unwrap().to_string();

    let id = submit(
        &c,
        r#"{"command": ["sleep", "30"], "cpu": 1.25, "memory": 1073741824}"#,
    );
    wait_state(&c, id, &["running"], Duration::from_secs(20));
    for key in [wid.as_str(), "tessa"] {
        let one = c.http("GET", &format!("/api/v1/workers/{key}"), None);
        assert_eq!(one.status, 200, "{}", one.text());
        let one = one.json();
        assert_eq!(one["id"], wid.as_str());
        assert_eq!(one["allocated"]["cpu_millis"], 1250);
        assert_eq!(one["allocated"]["memory_bytes"], 1u64 << 30);
        assert_eq!(one["available"]["cpu_millis"], 2750);
        assert_eq!(one["running_attempts"], 1);
        assert_eq!(one["attempts"][0]["task_id"], id);
    }

    let dry = c.http("POST", "/api/v1/reconcile", Some(r#"{"dry_run": true}"#));
    assert_eq!(dry.status, 200, "{}", dry.text());
    let dry = dry.json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["workers_checked"], 1);
    assert_eq!(dry["fixes"].as_array().unwrap().len(), 0, "{dry}");
    assert_eq!(dry["lines"][0], "(dry run) would fix 0 workers");
    let real = c.http("POST", "/api/v1/reconcile", None).json();
    assert_eq!(real["dry_run"], false);
    assert_eq!(
        real["lines"][0],
        "✓ Resource reconciliation complete: fixed 0 workers"
    );
    c.http("POST", &format!("/api/v1/tasks/{id}/cancel"), None);
}

/// Fill a route's `{id}` with something that exists.
fn concrete(path: &str, task: u64, worker: &str) -> String {
    if path.starts_with("/api/v1/workers/") {
        path.replace("{id}", worker)
    } else if path.ends_with("/file") {
        // The probe's task writes `a.txt` to its output folder.
        format!("{}?path=a.txt", path.replace("{id}", &task.to_string()))
    } else {
        path.replace("{id}", &task.to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_matches_the_router() {
    let c = cluster().await;
    let base = c.http_url();
    let r = http_request(&base, "GET", "/openapi.json", None, None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // The same routes, with the same auth, in both.
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let secured = op.get("security").is_some();
            documented.insert((method.to_uppercase(), path.clone(), secured));
        }
    }
    let served: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string(), r.auth))
        .collect();
    assert_eq!(documented, served);

    // Every documented route is served: with the token it is handled
    // (never 404/405), without it a secured route is refused.
    let id = submit(
        &c,
        r#"{"command": ["sh", "-c", "echo hi > $BERTH_OUTPUT_DIR/a.txt"]}"#,
    );
    wait_state(&c, id, &["succeeded"], Duration::from_secs(20));
    for (method, path, secured) in &documented {
        let url = concrete(path, id, "tessa");
        let body = if method == "POST" { Some("{}") } else { None };
        // The change feed streams for as long as the client listens: read
        // its start only.
        let with = if path == "/api/v1/events" {
            let (status, text) = http_stream_start(&base, &url, &c.token, "event: start");
            assert!(text.contains("event: start"), "{text}");
            HttpResponse {
                status,
                ..http_request(&base, "GET", "/healthz", None, None)
            }
        } else {
            http_request(&base, method, &url, Some(&c.token), body)
        };
        assert!(
            ![404, 405].contains(&with.status),
            "{method} {url}: {} {}",
            with.status,
            with.text()
        );
        if !(method == "POST" && path == "/api/v1/tasks") {
            assert!(
                with.status < 300 || (method == "POST" && with.status == 409),
                "{method} {url}: {} {}",
                with.status,
                with.text()
            );
        }
        let without = http_request(&base, method, &url, None, body);
        assert_eq!(
            without.status == 401,
            *secured,
            "{method} {url} without a token: {}",
            without.status
        );
        // Every documented answer of this route lists its status.
        let statuses = doc["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .unwrap();
        assert!(
            statuses.contains_key(&with.status.to_string()),
            "{method} {path} answered {} which the document does not list",
            with.status
        );
    }
    // And a method the document does not list for a path is not served.
    let r = http_request(&base, "DELETE", "/api/v1/tasks", Some(&c.token), None);
    assert_eq!(r.status, 405);
}

// ------------------------------------------------------------- metrics

/// One parsed sample: name, labels, value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parse the Prometheus text format strictly: HELP and TYPE lines, then
/// samples whose family was declared; label values unescaped; no series
/// twice. Returns every series with the family types.
fn parse_prometheus(text: &str) -> (Series, BTreeMap<String, String>) {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = Series::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("{at}"));
            assert!(valid_name(name), "{at}");
            match kind {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{at}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or_else(|| panic!("{at}"));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "{at}: family declared twice"
                    );
                }
                _ => panic!("{at}: unknown comment"),
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{at}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{at}"));
                (n, parse_labels(body, &at))
            }
        };
        assert!(valid_name(name), "{at}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{at}: no TYPE for {family}");
        assert!(
            series.insert((name.to_string(), labels), value).is_none(),
            "{at}: series twice"
        );
    }
    (series, types)
}

fn parse_labels(body: &str, at: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{at}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("{at}: bad escape {other:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("{at}: unterminated label value"),
            }
        }
        assert!(out.insert(key, value).is_none(), "{at}: label twice");
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => panic!("{at}: unexpected {c:?}"),
        }
    }
    out
}

fn scrape(c: &Cluster) -> Series {
    let r = c.http("GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse_prometheus(&r.text()).0
}

fn metric(s: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *s.get(&(name.to_string(), key))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

/// The allocated and allocatable gauges equal what `berth workers --json`
/// reports, for every worker and resource.
fn assert_gauges_match_cli(c: &Cluster, s: &Series) -> usize {
    let out = c.berth_ok(&["workers", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let workers = v["workers"].as_array().unwrap();
    for w in workers {
        let id = w["id"].as_str().unwrap();
        let name = w["name"].as_str().unwrap();
        let labels = [("worker", name), ("worker_id", id)];
        for (side, json_side) in [("allocated", "allocated"), ("allocatable", "total")] {
            let r = &w[json_side];
            let want = [
                ("cpu_cores", r["cpu_millis"].as_f64().unwrap() / 1000.0),
                ("memory_bytes", r["memory_bytes"].as_f64().unwrap()),
                ("storage_bytes", r["storage_bytes"].as_f64().unwrap()),
                ("gpus", r["gpus"].as_f64().unwrap()),
            ];
            for (dim, expected) in want {
                let name = format!("berth_worker_{side}_{dim}");
                assert_eq!(metric(s, &name, &labels), expected, "{name} of {id}");
            }
        }
        assert_eq!(
            metric(s, "berth_worker_running_attempts", &labels),
            w["running_attempts"].as_f64().unwrap()
        );
    }
    workers.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_match_the_workers() {
    let mut c = Cluster::start();
    c.start_worker("tessa", &["--cpus", "4", "--memory", "4G"]);
    c.start_worker("umar", &["--cpus", "2", "--memory", "2G"]);
    c.wait_workers_ready(2).await;

    let a = submit(
        &c,
        r#"{"command": ["sleep", "30"], "cpu": 1.5, "memory": "0.5G"}"#,
    );
    let b = submit(
        &c,
        r#"{"command": ["sleep", "30"], "cpu": 0.25, "memory": "768M"}"#,
    );
    let quick = submit(&c, r#"{"command": ["true"]}"#);
    wait_state(&c, a, &["running"], Duration::from_secs(20));
    wait_state(&c, b, &["running"], Duration::from_secs(20));
    wait_state(&c, quick, &["succeeded"], Duration::from_secs(20));

    let s = scrape(&c);
    assert_eq!(assert_gauges_match_cli(&c, &s), 2);
    let allocated_cpu: f64 = s
        .iter()
        .filter(|((n, _), _)| n == "berth_worker_allocated_cpu_cores")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(allocated_cpu, 1.75);
    assert_eq!(metric(&s, "berth_tasks", &[("state", "running")]), 2.0);
    assert_eq!(metric(&s, "berth_tasks", &[("state", "succeeded")]), 1.0);
    assert_eq!(metric(&s, "berth_tasks", &[("state", "queued")]), 0.0);
    assert_eq!(metric(&s, "berth_workers", &[("state", "ready")]), 2.0);
    assert_eq!(metric(&s, "berth_workers", &[("state", "down")]), 0.0);
    assert_eq!(metric(&s, "berth_placements_total", &[]), 3.0);
    assert!(metric(&s, "berth_reconcile_runs_total", &[]) >= 1.0);
    assert_eq!(
        metric(&s, "berth_reconcile_fixes_total", &[("kind", "index")]),
        0.0
    );
    assert_eq!(
        metric(&s, "berth_reconcile_fixes_total", &[("kind", "records")]),
        0.0
    );
    assert_eq!(metric(&s, "berth_workers_declared_down_total", &[]), 0.0);
    assert_eq!(metric(&s, "berth_attempts_lost_total", &[]), 0.0);
    for ((name, labels), v) in &s {
        if name == "berth_worker_heartbeat_lag_seconds" {
            assert!((0.0..6.0).contains(v), "{labels:?}: lag {v}");
        }
    }
    // The latency histogram: cumulative, +Inf = count = placements.
    let mut buckets: Vec<(f64, f64)> = s
        .iter()
        .filter(|((n, _), _)| n == "berth_scheduling_latency_seconds_bucket")
        .map(|((_, l), v)| {
            let le = &l["le"];
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (bound, *v)
        })
        .collect();
    buckets.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap());
    assert!(buckets.len() > 5);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let count = metric(&s, "berth_scheduling_latency_seconds_count", &[]);
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    assert_eq!(count, 3.0);
    assert!(metric(&s, "berth_scheduling_latency_seconds_sum", &[]) >= 0.0);

    // After the tasks end, every allocated gauge is zero again, and still
    // equals what the CLI says.
    for id in [a, b] {
        c.http("POST", &format!("/api/v1/tasks/{id}/cancel"), None);
        wait_state(&c, id, &["cancelled"], Duration::from_secs(20));
    }
    let s = scrape(&c);
    assert_gauges_match_cli(&c, &s);
    for ((name, _), v) in &s {
        if name.starts_with("berth_worker_allocated_") {
            assert_eq!(*v, 0.0, "{name}");
        }
    }
    assert_eq!(metric(&s, "berth_tasks", &[("state", "cancelled")]), 2.0);

    // A worker that dies shows up as down, declared and lost.
    c.workers[1].kill9();
    let t0 = Instant::now();
    loop {
        let s = scrape(&c);
        if metric(&s, "berth_workers", &[("state", "down")]) == 1.0 {
            assert_eq!(metric(&s, "berth_workers_declared_down_total", &[]), 1.0);
            assert!(
                metric(
                    &s,
                    "berth_worker_heartbeat_lag_seconds",
                    &[("worker", "umar"), ("worker_id", &worker_id(&c, "umar"))]
                ) > 5.0
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "umar never went down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn worker_id(c: &Cluster, name: &str) -> String {
    c.http("GET", &format!("/api/v1/workers/{name}"), None)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_test_parser_refuses_bad_exposition() {
    let ok = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\"} 1\n";
    let (s, _) = parse_prometheus(ok);
    assert_eq!(s.len(), 1);
    for bad in [
        "x 1\n",                            // no TYPE
        "# TYPE x gauge\nx{a=\"1} 1\n",     // unterminated
        "# TYPE x gauge\nx one\n",          // bad value
        "# TYPE x gauge\nx 1\nx 2\n",       // twice
        "# TYPE x gauge\n# TYPE x gauge\n", // declared twice
        "# TYPE 1x gauge\n",                // bad name
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_files_are_listed_and_fetched_byte_for_byte() {
    let c = cluster().await;
    let id = submit(
        &c,
        r#"{"command": ["sh", "-c", "mkdir -p $BERTH_OUTPUT_DIR/sub && printf 'hello\\n' > $BERTH_OUTPUT_DIR/a.txt && head -c 70000 /dev/urandom > $BERTH_OUTPUT_DIR/sub/b.bin"], "cpu": 0.5}"#,
    );
    let t = wait_state(&c, id, &["succeeded", "failed"], Duration::from_secs(30));
    assert_eq!(t["state"], "succeeded", "{t}");
    let r = c.http("GET", &format!("/api/v1/tasks/{id}/files"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let files = r.json()["files"].clone();
    let listed: Vec<(String, u64)> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("a.txt".into(), 6), ("sub/b.bin".into(), 70_000)]
    );
    let a = c.http("GET", &format!("/api/v1/tasks/{id}/file?path=a.txt"), None);
    assert_eq!((a.status, a.body.as_slice()), (200, b"hello\n".as_slice()));
    let b = c.http(
        "GET",
        &format!("/api/v1/tasks/{id}/file?path=sub/b.bin"),
        None,
    );
    assert_eq!(b.status, 200);
    // The worker's copy is gone once acknowledged: the size, and two
    // downloads agreeing byte for byte, stand for it.
    assert_eq!(b.body.len(), 70_000);
    let again = c.http(
        "GET",
        &format!("/api/v1/tasks/{id}/file?path=sub/b.bin"),
        None,
    );
    assert_eq!(again.body, b.body);
    assert_error(
        &c.http(
            "GET",
            &format!("/api/v1/tasks/{id}/file?path=../../token"),
            None,
        ),
        400,
        Some("path"),
        "path",
    );
    assert_error(
        &c.http(
            "GET",
            &format!("/api/v1/tasks/{id}/file?path=nope.txt"),
            None,
        ),
        404,
        None,
        "nope.txt",
    );
    assert_error(
        &c.http("GET", "/api/v1/tasks/999/files", None),
        404,
        None,
        "task 999",
    );
}
