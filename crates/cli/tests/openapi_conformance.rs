//! Real answers against the generated OpenAPI document: a real master and
//! worker, every JSON route called (successes and errors), and each body
//! validated against its response schema in the live `/openapi.json`
//! (JSON Schema 2020-12, `#/components/schemas/…` resolved in the
//! document itself). The data of each server-sent event is validated
//! against `WatchEvent`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The live document, and what was checked against it.
struct Document {
    doc: Value,
    checked: std::collections::BTreeSet<(String, String, u16)>,
}

impl Document {
    fn fetch(c: &Cluster) -> Document {
        let r = http_request(&c.http_url(), "GET", "/openapi.json", None, None);
        assert_eq!(r.status, 200);
        Document {
            doc: r.json(),
            checked: Default::default(),
        }
    }

    /// What is wrong with `instance` against `schema`, whose `$ref`s point
    /// into the document's components.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{schema}: the schema does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect()
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its schema:\n{}\n{instance:#}",
            errors.join("\n")
        );
    }

    /// Check one answer of `method template` (the document's path) against
    /// the schema the document gives for its status.
    fn check(&mut self, method: &str, template: &str, r: &HttpResponse) -> Value {
        let what = format!("{method} {template} → {}", r.status);
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{what}: not in the document");
        let content = &op["responses"][r.status.to_string()]["content"];
        assert!(
            content.is_object(),
            "{what}: status not documented: {}",
            r.text()
        );
        let schema = content["application/json"]["schema"].clone();
        assert!(schema.is_object(), "{what}: no JSON schema: {content}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {:?}",
            r.headers
        );
        let body = r.json();
        self.validate(&schema, &body, &what);
        self.checked
            .insert((method.to_string(), template.to_string(), r.status));
        body
    }

    /// Call and check.
    fn call(
        &mut self,
        c: &Cluster,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&str>,
    ) -> Value {
        let r = c.http(method, path, body);
        self.check(method, template, &r)
    }
}

fn wait_task(c: &Cluster, id: u64, states: &[&str]) -> Value {
    let t0 = Instant::now();
    loop {
        let t = c.http("GET", &format!("/api/v1/tasks/{id}"), None).json();
        if states.contains(&t["state"].as_str().unwrap_or("")) {
            return t;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "task {id}: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_json_answer_matches_the_generated_schema() {
    let mut c = Cluster::start();
    c.start_worker("tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut d = Document::fetch(&c);
    // The validation is not vacuous: references resolve, and a wrong shape
    // (a missing field, a wrong type, an unknown state, a zero for null)
    // is caught.
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(
        d.errors(&error, &json!({"error": "x", "field": null}))
            .is_empty()
    );
    for wrong in [
        json!({"error": "x"}),
        json!({"error": 5, "field": null}),
        json!({"error": "x", "field": 5}),
    ] {
        assert!(!d.errors(&error, &wrong).is_empty(), "{wrong} passed");
    }
    let attempt = json!({"$ref": "#/components/schemas/Attempt"});
    let mut a = json!({
        "id": 1, "task_id": 1, "worker_id": "w", "worker_name": "n", "state": "running",
        "created_ms": 5, "started_ms": null, "ended_ms": null, "has_exit_code": false,
        "exit_code": null, "reason": "", "gpu_ids": [],
        "resources": {"cpu_millis": 1, "memory_bytes": 1, "storage_bytes": 0, "gpus": 0},
    });
    assert_eq!(d.errors(&attempt, &a), Vec::<String>::new());
    a["state"] = json!("sleeping");
    assert!(!d.errors(&attempt, &a).is_empty());
    let tasks = "/api/v1/tasks";
    let one = "/api/v1/tasks/{id}";

    // The feed's position before anything happens.
    let (status, start) = http_stream_start(&c.http_url(), "/api/v1/events", &c.token, "\n\n");
    assert_eq!(status, 200, "{start}");
    let cursor = start
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("a start event with an id")
        .to_string();

    // A task that leaves a file and succeeds; one that runs until cancelled.
    let done = d.call(
        &c,
        "POST",
        tasks,
        tasks,
        Some(
            r#"{"command": ["sh", "-c", "echo hi > $BERTH_OUTPUT_DIR/a.txt; echo out"],
                "name": "writer", "env": ["A=1"], "timeout": "1m", "retries": 0,
                "constraints": {}, "priority": 5}"#,
        ),
    );
    let done_id = done["task_id"].as_u64().unwrap();
    let sleeper = d.call(
        &c,
        "POST",
        tasks,
        tasks,
        Some(r#"{"command": ["sleep", "30"], "cpu": "0.5", "memory": 268435456}"#),
    );
    let sleeper_id = sleeper["task_id"].as_u64().unwrap();
    wait_task(&c, done_id, &["succeeded"]);
    wait_task(&c, sleeper_id, &["running"]);

    // Reads: a finished task (exit code, end time), a running one, pages.
    let t = d.call(&c, "GET", one, &format!("{tasks}/{done_id}"), None);
    assert_eq!(t["exit_code"], 0);
    let t = d.call(&c, "GET", one, &format!("{tasks}/{sleeper_id}"), None);
    assert_eq!(t["exit_code"], Value::Null);
    for q in [
        "",
        "?state=running",
        "?limit=1",
        "?name=writer&worker=tessa",
    ] {
        d.call(&c, "GET", tasks, &format!("{tasks}{q}"), None);
    }
    let page = d.call(&c, "GET", tasks, &format!("{tasks}?limit=1"), None);
    let next = page["next_cursor"].as_str().expect("a second page");
    d.call(
        &c,
        "GET",
        tasks,
        &format!("{tasks}?limit=1&cursor={next}"),
        None,
    );
    d.call(
        &c,
        "GET",
        "/api/v1/tasks/{id}/files",
        &format!("{tasks}/{done_id}/files"),
        None,
    );
    d.call(&c, "GET", "/api/v1/outputs", "/api/v1/outputs", None);
    d.call(&c, "GET", "/api/v1/workers", "/api/v1/workers", None);
    let w = d.call(
        &c,
        "GET",
        "/api/v1/workers/{id}",
        "/api/v1/workers/tessa",
        None,
    );
    assert_eq!(w["attempts"][0]["task_id"], sleeper_id, "{w}");

    // Operator actions and the reconciler.
    for (action, body) in [("drain", None), ("undrain", Some("{}")), ("register", None)] {
        d.call(
            &c,
            "POST",
            &format!("/api/v1/workers/{{id}}/{action}"),
            &format!("/api/v1/workers/tessa/{action}"),
            body,
        );
    }
    d.call(
        &c,
        "POST",
        "/api/v1/workers/{id}/unregister",
        "/api/v1/workers/tessa/unregister",
        Some(r#"{"confirm_dead": false}"#),
    );
    for body in [None, Some(r#"{"dry_run": true}"#)] {
        d.call(&c, "POST", "/api/v1/reconcile", "/api/v1/reconcile", body);
    }

    // Cancel, then the errors: each in the one error shape.
    let cancel = "/api/v1/tasks/{id}/cancel";
    d.call(
        &c,
        "POST",
        cancel,
        &format!("{tasks}/{sleeper_id}/cancel"),
        None,
    );
    wait_task(&c, sleeper_id, &["cancelled"]);
    d.call(
        &c,
        "POST",
        cancel,
        &format!("{tasks}/{sleeper_id}/cancel"),
        None,
    );
    d.call(&c, "GET", one, &format!("{tasks}/999"), None);
    d.call(&c, "GET", one, &format!("{tasks}/abc"), None);
    d.call(&c, "GET", tasks, &format!("{tasks}?state=sleeping"), None);
    d.call(&c, "POST", tasks, tasks, Some(r#"{"cpu": "abc"}"#));
    d.call(
        &c,
        "POST",
        tasks,
        tasks,
        Some(r#"{"command": ["true"], "cpu": 64}"#),
    );
    d.call(
        &c,
        "GET",
        "/api/v1/workers/{id}",
        "/api/v1/workers/nobody",
        None,
    );
    d.call(
        &c,
        "POST",
        "/api/v1/reconcile",
        "/api/v1/reconcile",
        Some(r#"{"dry_run": null}"#),
    );
    d.call(
        &c,
        "GET",
        "/api/v1/tasks/{id}/logs",
        &format!("{tasks}/{done_id}/logs?follow=maybe"),
        None,
    );
    d.call(
        &c,
        "GET",
        "/api/v1/tasks/{id}/file",
        &format!("{tasks}/{done_id}/file?path=../x"),
        None,
    );
    let r = http_request(&c.http_url(), "GET", tasks, None, None);
    d.check("GET", tasks, &r);
    // A cursor of another incarnation of the master: 410.
    let r = c.http("GET", "/api/v1/events?cursor=1.2", None);
    d.check("GET", "/api/v1/events", &r);

    // The non-JSON answers have the media types the document names.
    let logs = c.http("GET", &format!("{tasks}/{done_id}/logs"), None);
    assert!(
        logs.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        d.doc["paths"]["/api/v1/tasks/{id}/logs"]["get"]["responses"]["200"]["content"]
            ["text/plain"]
            .is_object()
    );

    // Every change since the start, as server-sent events: each one's data
    // is a WatchEvent.
    let (status, text) = http_stream_start(
        &c.http_url(),
        &format!("/api/v1/events?cursor={cursor}"),
        &c.token,
        "event: worker\n",
    );
    assert_eq!(status, 200, "{text}");
    let schema = json!({"$ref": "#/components/schemas/WatchEvent"});
    let mut kinds = std::collections::BTreeSet::new();
    // Whole events only: the read may stop inside the last one.
    let whole = &text[..text.rfind("\n\n").expect("a whole event")];
    for data in whole.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let event: Value = serde_json::from_str(data).expect("event data is JSON");
        d.validate(&schema, &event, "a watch event");
        kinds.insert(event["kind"].as_str().unwrap().to_string());
    }
    for kind in ["start", "task", "attempt", "worker"] {
        assert!(kinds.contains(kind), "no {kind} event in {text}");
    }

    // Every JSON route of the router was checked with at least one answer.
    let checked: std::collections::BTreeSet<_> = d
        .checked
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    for r in berth_master::http::ROUTES {
        let json_route = r.path.starts_with("/api/v1/");
        if json_route {
            assert!(
                checked.contains(&(r.method.to_string(), r.path.to_string())),
                "{} {} was not checked against the document",
                r.method,
                r.path
            );
        }
    }
    let statuses: std::collections::BTreeSet<u16> = d.checked.iter().map(|c| c.2).collect();
    for s in [200, 201, 400, 401, 404, 409, 410, 422] {
        assert!(statuses.contains(&s), "no {s} answer was checked");
    }
}
