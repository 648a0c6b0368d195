//! The master's one API through both of its adapters: the paged task list
//! (every task once, in order; bad filters refused naming the field; the
//! same answer over gRPC and HTTP), the worker actions and the all-outputs
//! list over HTTP, and log ranges — against real `berth master` /
//! `berth worker` processes over real sockets on loopback.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// A master with one worker of 1 CPU.
async fn cluster() -> Cluster {
    let mut c = Cluster::start();
    c.start_worker("tessa", &["--cpus", "1", "--memory", "1G"]);
    c.wait_workers_ready(1).await;
    c
}

fn submit_http(c: &Cluster, body: &str) -> u64 {
    let r = c.http("POST", "/api/v1/tasks", Some(body));
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json()["task_id"].as_u64().unwrap()
}

fn assert_error(r: &HttpResponse, status: u16, field: Option<&str>, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["field"].as_str(), field, "{v}");
    let msg = v["error"].as_str().expect("an error message");
    assert!(msg.contains(says), "{msg:?} does not say {says:?}");
}

/// Tasks 1..=4 succeeded, 5 and 7 queued (they never fit), 6 cancelled.
async fn mixed_tasks(c: &Cluster) {
    let mut client = c.client().await;
    for i in 1..=4 {
        let id = submit_http(
            c,
            &format!(r#"{{"command": ["true"], "name": "quick-{i}"}}"#),
        );
        let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
        assert_eq!(t.state, "succeeded", "{t:?}");
    }
    for _ in 5..=7 {
        submit_http(
            c,
            r#"{"command": ["true"], "cpu": 64, "queue_anyway": true, "name": "big"}"#,
        );
    }
    let r = c.http("POST", "/api/v1/tasks/6/cancel", None);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Every page of `GET /api/v1/tasks?QUERY&limit=LIMIT`, following
/// `next_cursor`.
fn http_pages(c: &Cluster, query: &str, limit: u32) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/tasks?{query}&limit={limit}&cursor={cursor}");
        let r = c.http("GET", &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let page = r.json();
        let next = page["next_cursor"].as_str().map(str::to_string);
        pages.push(page);
        match next {
            Some(n) => cursor = n,
            None => return pages,
        }
    }
}

fn ids(page: &Value) -> Vec<u64> {
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_hold_every_task_once_in_order_and_grpc_agrees_with_http() {
    let c = cluster().await;
    mixed_tasks(&c).await;
    // Active tasks oldest first, then finished ones newest first.
    let order = vec![5, 7, 6, 4, 3, 2, 1];

    let pages = http_pages(&c, "", 3);
    let got: Vec<Vec<u64>> = pages.iter().map(ids).collect();
    assert_eq!(got, vec![vec![5, 7, 6], vec![4, 3, 2], vec![1]]);
    assert_eq!(got.concat(), order);
    let remaining: Vec<u64> = pages
        .iter()
        .map(|p| p["remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, vec![4, 1, 0]);
    assert!(pages.iter().all(|p| p["total"] == 7));

    // One big page holds the same, with no next page.
    let whole = c.http("GET", "/api/v1/tasks", None).json();
    assert_eq!(ids(&whole), order);
    assert!(whole["next_cursor"].is_null(), "{whole}");

    // The same query over gRPC: the same pages, cursors and tasks.
    let mut client = c.client().await;
    let mut cursor = String::new();
    for page in &pages {
        let g = client
            .list_tasks(berth_proto::v1::ListTasksRequest {
                limit: 3,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let tasks: Vec<Value> = g
            .tasks
            .iter()
            .map(|t| berth_proto::json::value(&berth_proto::json::task(t)))
            .collect();
        assert_eq!(Value::from(tasks), page["tasks"]);
        assert_eq!(g.total, 7);
        assert_eq!(g.remaining, page["remaining"].as_u64().unwrap());
        assert_eq!(g.next_cursor, page["next_cursor"].as_str().unwrap_or(""));
        cursor = g.next_cursor;
    }
    assert!(cursor.is_empty(), "gRPC has pages HTTP does not");

    // Filters: by state, by name, by the worker an attempt ran on.
    let done = http_pages(&c, "state=succeeded", 2);
    assert_eq!(
        done.iter().map(ids).collect::<Vec<_>>().concat(),
        vec![4, 3, 2, 1]
    );
    let big = http_pages(&c, "name=big", 100);
    assert_eq!(ids(&big[0]), vec![5, 7, 6]);
    let on_tessa = http_pages(&c, "worker=tessa", 100);
    assert_eq!(ids(&on_tessa[0]), vec![4, 3, 2, 1]);
    let g = client
        .list_tasks(berth_proto::v1::ListTasksRequest {
            state: "queued".into(),
            name: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![5, 7]);

    // The CLI prints the first page and says how many more there are.
    let out = c.berth_ok(&["task", "list"]);
    assert!(!out.contains("more task"), "{out}");
    let all = c.berth_ok(&["task", "list", "--all"]);
    assert_eq!(out, all);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_state_limit_or_cursor_is_refused_naming_the_field() {
    let c = cluster().await;
    for (query, field, says) in [
        ("state=bogus", "state", "queued, assigned"),
        ("limit=0", "limit", "1000"),
        ("limit=1001", "limit", "1000"),
        ("limit=many", "limit", "whole number"),
        ("cursor=zz", "cursor", "next_cursor"),
        ("owner=me", "owner", "unknown query parameter"),
    ] {
        let r = c.http("GET", &format!("/api/v1/tasks?{query}"), None);
        assert_error(&r, 400, Some(field), says);
    }

    let mut client = c.client().await;
    for (req, starts) in [
        (
            berth_proto::v1::ListTasksRequest {
                state: "bogus".into(),
                ..Default::default()
            },
            "state: 'bogus' is not a task state",
        ),
        (
            berth_proto::v1::ListTasksRequest {
                limit: 5000,
                ..Default::default()
            },
            "limit: 5000 is out of range; give 1 to 1000",
        ),
    ] {
        let e = client.list_tasks(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(starts), "{}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_actions_over_http() {
    let mut c = cluster().await;
    let unregister =
        |c: &Cluster, body: Option<&str>| c.http("POST", "/api/v1/workers/tessa/unregister", body);
    // A connected worker cannot be unregistered (its agent would come
    // straight back).
    assert_error(&unregister(&c, None), 409, None, "still connected");
    assert_error(
        &c.http("POST", "/api/v1/workers/nobody/drain", None),
        404,
        None,
        "'nobody'",
    );

    let r = c.http("POST", "/api/v1/workers/tessa/drain", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["action"].as_str(), v["worker"].as_str()),
        (Some("drain"), Some("tessa"))
    );
    assert!(v["message"].as_str().unwrap().contains("tessa"), "{v}");
    let w = c.http("GET", "/api/v1/workers/tessa", None).json();
    assert_eq!(w["drained"], true, "{w}");
    // The CLI, over gRPC, sees the same.
    let listed = c.berth_ok(&["workers", "--json"]);
    assert!(listed.contains("\"drained\":true"), "{listed}");

    assert_error(
        &unregister(&c, Some(r#"{"confirm_dead": "yes"}"#)),
        400,
        Some("confirm_dead"),
        "true or false",
    );
    assert_error(
        &unregister(&c, Some(r#"{"force": true}"#)),
        400,
        Some("force"),
        "unknown field",
    );
    assert_error(
        &c.http("POST", "/api/v1/workers/tessa/drain", Some("[1]")),
        400,
        None,
        "empty",
    );

    let r = c.http("POST", "/api/v1/workers/newbie/register", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["action"], "register");
    assert_error(
        &c.http("POST", "/api/v1/workers/%20/register", None),
        400,
        Some("name"),
        "not a valid worker name",
    );

    // A second worker vanishes while a task runs there: its attempt's fate
    // is unknown, so only an unregister confirming the machine dead goes.
    let rosa = c.start_worker("rosa", &["--cpus", "1", "--memory", "1G"]);
    c.wait_workers_ready(2).await;
    let id = submit_http(
        &c,
        r#"{"command": ["sleep", "20"], "worker": "rosa", "retries": 0}"#,
    );
    let running = wait_for(Duration::from_secs(20), || {
        let t = c.http("GET", &format!("/api/v1/tasks/{id}"), None).json();
        (t["state"] == "running").then_some(())
    });
    assert!(running.is_some(), "task {id} never ran on rosa");
    c.workers[rosa].kill9();
    c.workers[0].kill9();
    for name in ["tessa", "rosa"] {
        let down = wait_for(Duration::from_secs(30), || {
            let w = c
                .http("GET", &format!("/api/v1/workers/{name}"), None)
                .json();
            (w["state"] == "down").then_some(())
        });
        assert!(down.is_some(), "{name} was never declared down");
    }
    let r = unregister(&c, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(
        &c.http("GET", "/api/v1/workers/tessa", None),
        404,
        None,
        "tessa",
    );
    let rosa_unregister =
        |body: &str| c.http("POST", "/api/v1/workers/rosa/unregister", Some(body));
    assert_error(&rosa_unregister("{}"), 409, None, "--confirm-dead");
    let r = rosa_unregister(r#"{"confirm_dead": true}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("recorded lost"),
        "{}",
        r.text()
    );
    assert_error(
        &c.http("GET", "/api/v1/workers/rosa", None),
        404,
        None,
        "rosa",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_outputs_and_log_ranges_over_http_match_grpc() {
    let c = cluster().await;
    let mut client = c.client().await;
    let with_files = submit_http(
        &c,
        r#"{"command": ["sh", "-c", "printf 0123456789; printf abc > $BERTH_OUTPUT_DIR/a.txt; printf de > $BERTH_OUTPUT_DIR/b.txt"], "name": "writer"}"#,
    );
    let t = wait_terminal(&mut client, with_files, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    let without = submit_http(&c, r#"{"command": ["true"]}"#);
    wait_terminal(&mut client, without, Duration::from_secs(20)).await;

    let r = c.http("GET", "/api/v1/outputs", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["tasks"],
        serde_json::json!([{"task_id": with_files, "name": "writer", "state": "succeeded", "files": 2, "bytes": 5}])
    );
    let g = client
        .list_outputs(berth_proto::v1::ListOutputsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.tasks.len(), 1);
    assert_eq!((g.tasks[0].task_id, g.tasks[0].bytes), (with_files, 5));
    let r = http_request(&c.http_url(), "GET", "/api/v1/outputs", None, None);
    assert_eq!(r.status, 401);

    let logs = |q: &str| c.http("GET", &format!("/api/v1/tasks/{with_files}/logs?{q}"), None);
    assert_eq!(logs("").text(), "0123456789");
    assert_eq!(logs("offset=3").text(), "3456789");
    assert_eq!(logs("tail=4").text(), "6789");
    assert_eq!(logs("offset=8&tail=4").text(), "89");
    assert_error(&logs("offset=-1"), 400, Some("offset"), "whole number");
    assert_error(&logs("tail=x"), 400, Some("tail"), "whole number");

    let mut s = client
        .task_logs(berth_proto::v1::TaskLogsRequest {
            task_id: with_files,
            tail: Some(4),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        got.extend(chunk.data);
    }
    assert_eq!(got, b"6789");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_task_list_prints_the_first_page_and_how_many_more() {
    let c = cluster().await;
    for _ in 0..103 {
        submit_http(
            &c,
            r#"{"command": ["true"], "cpu": 64, "queue_anyway": true}"#,
        );
    }
    let out = c.berth_ok(&["task", "list"]);
    let last = out.lines().last().unwrap();
    assert_eq!(
        last,
        "… and 3 more tasks; `berth task list --all` lists every one"
    );
    assert!(out.lines().any(|l| l.starts_with("100 ")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("101 ")), "{out}");

    let all = c.berth_ok(&["task", "list", "--all"]);
    assert!(all.lines().any(|l| l.starts_with("103 ")), "{all}");
    assert!(!all.contains("more tasks"), "{all}");
    assert_eq!(all.lines().count(), out.lines().count() + 2);

    // --json keeps stdout one document: the first page.
    let json: Value = serde_json::from_str(&c.berth_ok(&["task", "list", "--json"])).unwrap();
    assert_eq!(json["tasks"].as_array().unwrap().len(), 100);
    let json: Value =
        serde_json::from_str(&c.berth_ok(&["task", "list", "--all", "--json"])).unwrap();
    assert_eq!(json["tasks"].as_array().unwrap().len(), 103);
}
