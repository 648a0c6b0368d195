//! The core cluster, end to end with real `berth master` / `berth worker`
//! processes on loopback and real gRPC.

mod common;

use berth_proto::v1;
use common::*;
use std::time::Duration;

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_task_allocates_then_gives_everything_back() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let out = c.berth_ok(&[
        "task",
        "submit",
        "--cpu",
        "5",
        "--mem",
        "0.5G",
        "--",
        "sh",
        "-c",
        "echo hello from berth; echo to stderr >&2; sleep 3",
    ]);
    let id: u64 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("task id, got {out:?}"));

    // While it runs, `berth workers` shows exactly its request.
    let running = wait_for(Duration::from_secs(10), || {
        let w = c.berth_ok(&["workers"]);
        w.contains("Running Tasks: 1").then_some(w)
    })
    .expect("task never showed as running");
    assert!(running.contains("Worker: Tessa"), "{running}");
    assert!(
        running.contains("  CPU:     20.0 total, 5.0 allocated, 15.0 available"),
        "{running}"
    );
    assert!(
        running.contains("  Memory:  8.0 GB total, 0.5 GB allocated, 7.5 GB available"),
        "{running}"
    );

    let mut client = c.client().await;
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].worker_name, "Tessa");

    let after = c.berth_ok(&["workers"]);
    assert!(
        after.contains("  CPU:     20.0 total, 0.0 allocated, 20.0 available"),
        "{after}"
    );
    assert!(
        after.contains("  Memory:  8.0 GB total, 0.0 GB allocated, 8.0 GB available"),
        "{after}"
    );
    assert!(after.contains("  Running Tasks: 0"), "{after}");

    let show = c.berth_ok(&["task", "show", &id.to_string()]);
    assert!(show.contains("succeeded"), "{show}");
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(
        logs.contains("hello from berth") && logs.contains("to stderr"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_tasks_on_twenty_cores_four_run_and_the_fifth_waits_its_turn() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&mut client, process_spec(5_000, GIB / 4, &["sleep", "2"])).await);
    }
    // Four are placed at once and the fifth queues with a reason.
    let states = wait_for_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        let ids = ids.clone();
        async move {
            let mut st = Vec::new();
            for id in ids {
                st.push(task(&mut client, id).await);
            }
            (st.iter().filter(|t| t.state == "running").count() == 4).then_some(st)
        }
    })
    .await
    .expect("four tasks running");
    let queued: Vec<_> = states.iter().filter(|t| t.state == "queued").collect();
    assert_eq!(queued.len(), 1, "{states:?}");
    assert!(
        queued[0].wait_reason.contains("waiting for capacity"),
        "{:?}",
        queued[0]
    );
    let w = &workers(&mut client).await[0];
    assert_eq!(w.allocated.unwrap().cpu_millis, 20_000);
    let queue = c.berth_ok(&["queue"]);
    assert!(
        queue.contains(&queued[0].id.to_string()) && queue.contains("waiting for capacity"),
        "{queue}"
    );

    // It starts when one ends, and all five succeed.
    for id in &ids {
        let t = wait_terminal(&mut client, *id, Duration::from_secs(30)).await;
        assert_eq!(t.state, "succeeded", "{t:?}");
    }
    let last = task(&mut client, queued[0].id).await;
    let first_end = states
        .iter()
        .filter(|t| t.state == "running")
        .map(|t| t.id)
        .collect::<Vec<_>>();
    let mut ends = Vec::new();
    for id in first_end {
        ends.push(task(&mut client, id).await.attempts[0].ended_ms);
    }
    assert!(
        last.attempts[0].started_ms >= *ends.iter().min().unwrap(),
        "the fifth started before any of the first four ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_submissions_never_overcommit() {
    let mut c = Cluster::start();
    c.start_worker("Tessa", &["--cpus", "20", "--memory", "8G"]);
    c.wait_workers_ready(1).await;
    let client = c.client().await;

    // Sample the allocation throughout, from a separate connection.
    let sampler_client = c.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sampler = tokio::spawn(async move {
        let mut client = sampler_client;
        let (mut samples, mut max_seen) = (0u32, 0u64);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for w in workers(&mut client).await {
                let a = w.allocated.unwrap();
                let t = w.total.unwrap();
                assert!(a.cpu_millis <= t.cpu_millis, "overcommitted: {w:?}");
                assert!(a.memory_bytes <= t.memory_bytes, "overcommitted: {w:?}");
                max_seen = max_seen.max(a.cpu_millis);
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (samples, max_seen)
    });

    let mut handles = Vec::new();
    for i in 0..200u64 {
        let mut client = client.clone();
        handles.push(tokio::spawn(async move {
            let cpu = 1_000 + (i % 7) * 1_000;
            submit(&mut client, process_spec(cpu, GIB / 8, &["sleep", "0.2"])).await
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every submission got its own id");
    let mut client = client.clone();
    for id in &ids {
        let t = wait_terminal(&mut client, *id, Duration::from_secs(120)).await;
        assert_eq!(t.state, "succeeded", "{t:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, max_seen) = sampler.await.unwrap();
    assert!(samples > 10, "sampled only {samples} times");
    assert!(
        max_seen > 5_000,
        "the worker was never busy (max {max_seen} millicores)"
    );
    let w = &workers(&mut client).await[0];
    assert_eq!(w.allocated.unwrap().cpu_millis, 0);
    assert_eq!(w.running_attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_loses_no_acknowledged_task() {
    let mut c = Cluster::start();
    let mut client = c.client().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let mut spec = process_spec(1_000, 0, &["echo", "queued"]);
        spec.name = format!("job-{i}");
        ids.push(submit(&mut client, spec).await);
    }
    // Acknowledged; now the master dies without any chance to flush.
    c.master.as_mut().unwrap().kill9();
    c.start_master(&[]);
    let mut client = c.client().await;
    let tasks = client
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let got: Vec<u64> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(got, ids);
    assert!(tasks.iter().all(|t| t.state == "queued"));
    assert_eq!(tasks[49].spec.as_ref().unwrap().name, "job-49");

    // And the queue still runs once a worker turns up.
    c.start_worker("late", &["--cpus", "4", "--memory", "1G"]);
    for id in ids.iter().take(3) {
        let t = wait_terminal(&mut client, *id, Duration::from_secs(30)).await;
        assert_eq!(t.state, "succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_and_records_nothing() {
    let mut c = Cluster::start();
    // No docker driver: the container task below must be refused.
    c.start_worker_env("Tessa", &["--cpus", "20", "--memory", "8G"], NO_DOCKER);
    c.wait_workers_ready(1).await;
    let cases: &[(&[&str], &str)] = &[
        (&["task", "submit", "--cpu", "-1", "--", "true"], "cpu"),
        (&["task", "submit", "--cpu", "NaN", "--", "true"], "cpu"),
        (&["task", "submit", "--cpu", "1e12", "--", "true"], "4096"),
        (
            &["task", "submit", "--mem", "1e9G", "--", "true"],
            "65536.0 GB",
        ),
        (
            &["task", "submit", "--storage", "-5G", "--", "true"],
            "storage",
        ),
        (&["task", "submit", "--gpus", "0.5", "--", "true"], "whole"),
        (&["task", "submit", "--env", "1X=2", "--", "true"], "env"),
        (&["task", "submit"], "command"),
        (&["task", "submit", "--bogus", "--", "true"], "--bogus"),
        (&["task", "submit", "--cpu", "64", "--", "true"], "Tessa"),
        (
            &["task", "submit", "--cpu", "4", "--mem", "16G", "--", "true"],
            "8.0 GB",
        ),
        (
            &["task", "submit", "busybox:latest", "--", "true"],
            "docker",
        ),
    ];
    for (args, needle) in cases {
        let out = c.berth(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "berth {args:?} should fail");
        assert!(
            err.contains(needle),
            "berth {args:?}: stderr {err:?} should mention {needle:?}"
        );
    }
    // The oversized request names the largest worker's capacity.
    let out = c.berth(&["task", "submit", "--cpu", "64", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("20.0 CPU") && err.contains("8.0 GB"), "{err}");

    // A wrong or missing token is refused too.
    let out = std::process::Command::new(BERTH)
        .args(["task", "submit", "--", "true"])
        .env("BERTH_MASTER", &c.url)
        .env("BERTH_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong cluster token"));
    let out = std::process::Command::new(BERTH)
        .args(["task", "list"])
        .env("BERTH_MASTER", &c.url)
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing cluster token"));

    // Nothing was recorded.
    let mut client = c.client().await;
    let tasks = client
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "{tasks:?}");

    // --queue-anyway queues the oversized one, and `queue` says why it waits.
    let id = c.berth_ok(&[
        "task",
        "submit",
        "--cpu",
        "64",
        "--queue-anyway",
        "--",
        "true",
    ]);
    let q = c.berth_ok(&["queue"]);
    assert!(
        q.contains(id.trim()) && q.contains("larger than every registered worker"),
        "{q}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_wrong_token_is_refused_and_changes_nothing() {
    let c = Cluster::start();
    let out = std::process::Command::new(BERTH)
        .args([
            "worker",
            "--master",
            &c.url,
            "--name",
            "intruder",
            "--cpus",
            "2",
            "--data-dir",
        ])
        .arg(c.dir.path().join("intruder"))
        .env("BERTH_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong cluster token"),
        "{out:?}"
    );
    let mut client = c.client().await;
    assert!(workers(&mut client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_speaks_the_predecessors_commands() {
    let mut c = Cluster::start();
    // No docker driver: the container task below must be refused.
    c.start_worker_env("Tessa", &["--cpus", "20", "--memory", "8G"], NO_DOCKER);
    c.wait_workers_ready(1).await;
    let out = c.shell(
        "run -cpu_cores 2.5 -mem 1 -name hello -- echo hi\n\
         run -cpu_cores -3 -- echo no\n\
         task busybox -cpu_cores 1\n\
         workers\n\
         list-tasks\n\
         fix-resources\n\
         frobnicate\n\
         exit\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");
    assert!(all.contains("Worker: Tessa"), "{all}");
    assert!(all.contains("  CPU:     20.0 total,"), "{all}");
    assert!(all.contains("hello"), "{all}");
    assert!(
        all.contains("cpu"),
        "negative cores must be refused naming the field: {all}"
    );
    assert!(
        all.contains("docker"),
        "a container task needs a docker worker: {all}"
    );
    assert!(
        all.contains("✓ Resource reconciliation complete: fixed 0 workers"),
        "{all}"
    );
    assert!(all.contains("frobnicate"), "{all}");
    let mut client = c.client().await;
    let tasks = client
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1, "only the valid task is recorded: {tasks:?}");
    assert_eq!(
        tasks[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .unwrap()
            .cpu_millis,
        2_500
    );
}
