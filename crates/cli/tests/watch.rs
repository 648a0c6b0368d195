//! Watching instead of polling, against real `berth master` / `berth
//! worker` processes: the change feed over gRPC (a start, then the task's
//! changes in order), cursors refused as gone or invalid over HTTP,
//! `task submit --wait` making no request while its task runs and outliving
//! a master restart, and `task logs -f` resuming after a master restart
//! without losing or repeating a line.

mod common;

use berth_proto::v1;
use common::*;
use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

async fn cluster() -> Cluster {
    let mut c = Cluster::start();
    c.start_worker("tessa", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    c
}

/// `berth ARGS` in the background, stdout and stderr piped.
fn spawn_berth(c: &Cluster, args: &[&str]) -> Child {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_MASTER", &c.url)
        .env("BERTH_TOKEN", &c.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth")
}

/// The first line the child prints on stdout: the task id.
fn first_id(child: &mut Child) -> u64 {
    let mut first = String::new();
    let mut r = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    r.read_line(&mut first).unwrap();
    first.trim().parse().expect("the task id first")
}

/// `berth_control_requests_total` from `/metrics` (HTTP is not counted).
fn control_requests(c: &Cluster) -> u64 {
    let text = c.http("GET", "/metrics", None).text();
    text.lines()
        .find_map(|l| l.strip_prefix("berth_control_requests_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .unwrap()
}

fn task_state(c: &Cluster, id: u64) -> String {
    let v = c.http("GET", &format!("/api/v1/tasks/{id}"), None).json();
    v["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_sends_a_start_then_the_tasks_changes_in_order() {
    let c = cluster().await;
    let mut client = c.client().await;
    let id = submit(&mut client, process_spec(100, 1 << 20, &["sleep", "1"])).await;
    let mut stream = client
        .watch(v1::WatchRequest {
            cursor: String::new(),
            task_id: id,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events: Vec<v1::WatchEvent> = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = stream.message().await.unwrap() {
            let done = e.kind == "task" && e.state == "succeeded";
            events.push(e);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the task's end came on the feed: {events:?}");
    assert_eq!(events[0].kind, "start", "{events:?}");
    let kinds: Vec<(&str, &str)> = events[1..]
        .iter()
        .map(|e| (e.kind.as_str(), e.state.as_str()))
        .collect();
    assert!(kinds.contains(&("attempt", "running")), "{kinds:?}");
    assert!(
        events[1..].iter().all(|e| e.task_id == id),
        "only this task's changes: {events:?}"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.cursor.rsplit('.').next().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

    // Resuming from the start's cursor replays exactly what followed it.
    let mut again = client
        .watch(v1::WatchRequest {
            cursor: events[0].cursor.clone(),
            task_id: id,
        })
        .await
        .unwrap()
        .into_inner();
    let start = again.message().await.unwrap().unwrap();
    assert_eq!(start.kind, "start");
    for want in &events[1..] {
        let got = again.message().await.unwrap().unwrap();
        assert_eq!(&got, want, "the same changes, once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_the_master_cannot_resume_from_are_refused() {
    let c = cluster().await;
    // Another incarnation's cursor: gone (410), take a fresh snapshot.
    let r = c.http("GET", "/api/v1/events?cursor=1.5", None);
    assert_eq!(r.status, 410, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("snapshot"));
    // Not a cursor at all: 400 naming the field.
    let r = c.http("GET", "/api/v1/events?cursor=zzz", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["field"], "cursor");
    let r = c.http("GET", "/api/v1/events?task=x", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["field"], "task");
    let r = c.http("GET", "/api/v1/events?task=999", None);
    assert_eq!(r.status, 404, "{}", r.text());
    // gRPC: OUT_OF_RANGE.
    let mut client = c.client().await;
    let e = client
        .watch(v1::WatchRequest {
            cursor: "1.5".into(),
            task_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_makes_no_request_while_its_task_runs() {
    let c = cluster().await;
    let mut child = spawn_berth(&c, &["task", "submit", "--wait", "--", "sleep", "5"]);
    let id = first_id(&mut child);
    let running = wait_for(Duration::from_secs(20), || {
        (task_state(&c, id) == "running").then_some(())
    });
    assert!(running.is_some(), "task {id} runs");
    // Let the client settle on its stream, then count for three seconds.
    std::thread::sleep(Duration::from_millis(500));
    let before = control_requests(&c);
    std::thread::sleep(Duration::from_secs(3));
    let during = control_requests(&c) - before;
    assert_eq!(
        during, 0,
        "no request while the task runs and nothing changes"
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_outlives_a_master_restart() {
    let mut c = cluster().await;
    let mut child = spawn_berth(&c, &["task", "submit", "--wait", "--", "sleep", "6"]);
    let id = first_id(&mut child);
    let running = wait_for(Duration::from_secs(20), || {
        (task_state(&c, id) == "running").then_some(())
    });
    assert!(running.is_some(), "task {id} runs");
    c.master.as_mut().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(1));
    c.start_master(&[]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "--wait did not end after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child
        .stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "the task's own outcome: {err}");
    assert!(err.contains(&format!("Task {id} succeeded")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_resumes_after_a_master_restart_without_loss_or_repetition() {
    let mut c = cluster().await;
    let mut client = c.client().await;
    let script = "i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo line $i; sleep 0.1; done";
    let id = submit(
        &mut client,
        process_spec(100, 1 << 20, &["sh", "-c", script]),
    )
    .await;
    let child = spawn_berth(&c, &["task", "logs", "-f", &id.to_string()]);
    std::thread::sleep(Duration::from_millis(2_000));
    c.master.as_mut().unwrap().kill9();
    std::thread::sleep(Duration::from_millis(1_500));
    c.start_master(&[]);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, want, "every line once, in order");
}
