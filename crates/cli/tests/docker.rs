//! The docker driver against the real Docker engine: limits, labels, logs,
//! clean-up, re-attach after `kill -9` of the agent, the reaper, missing
//! images; and GPU hand-out (a fake `nvidia-smi` reporting two GPUs).
//!
//! Needs a running Docker engine and the images `scripts/images` builds
//! (run here once per test binary; it takes well under a second when they
//! exist). No registry is contacted: the missing image names a registry on
//! a closed loopback port. Every container and process these tests start
//! is removed by them, by id or name. Run with `--test-threads=1` on a
//! small machine.

mod common;

use berth_proto::v1;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the test images (once per test binary).
fn images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let out = Command::new(repo_root().join("scripts/images"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/images");
        assert!(
            out.status.success(),
            "scripts/images failed (these tests need a running Docker engine):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Containers a test started by hand; removed (by name) when it ends.
struct OwnContainers(Vec<String>);

impl Drop for OwnContainers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker(&["rm", "-f", name]);
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn node_id(c: &Cluster, worker: &str) -> String {
    let path = c.dir.path().join(format!("worker-{worker}/node_id"));
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .expect("worker node id")
    .trim()
    .to_string()
}

/// Ids of the containers (running or not) of task `task` on node `node`.
fn containers_of(node: &str, task: u64) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=berth.worker={node}"),
        "--filter",
        &format!("label=berth.task={task}"),
    ]);
    out.lines().map(str::to_string).collect()
}

fn inspect(id: &str) -> serde_json::Value {
    let text = docker_ok(&["inspect", id]);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[0].take()
}

fn exists(name: &str) -> bool {
    docker(&["inspect", "--type", "container", name])
        .status
        .success()
}

/// Run shell lines through `berth shell`; returns stdout and stderr together.
fn shell(c: &Cluster, lines: &[&str]) -> String {
    let out = c.shell(&format!("{}\nexit\n", lines.join("\n")));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The id in the shell's `✓ Task N submitted (…)` line.
fn submitted(out: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("✓ Task ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no task submitted: {out}"))
}

fn container_spec(image: &str, cpu_millis: u64, mem: u64, cmd: &[&str]) -> v1::TaskSpec {
    v1::TaskSpec {
        driver: "docker".into(),
        image: image.into(),
        ..process_spec(cpu_millis, mem, cmd)
    }
}

async fn wait_state(c: &mut Client, id: u64, state: &str, within: Duration) -> v1::Task {
    let t0 = Instant::now();
    loop {
        let t = task(c, id).await;
        if t.state == state {
            return t;
        }
        assert!(t0.elapsed() < within, "task {id} not {state}: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_of(c: &mut Client, id: u64) -> String {
    let mut s = c
        .task_logs(v1::TaskLogsRequest {
            task_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend_from_slice(&chunk.data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_task_runs_with_its_limits_and_leaves_nothing_behind() {
    images();
    let mut c = Cluster::start();
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let ws = workers(&mut client).await;
    assert!(
        ws[0].drivers.iter().any(|d| d == "docker"),
        "the engine answers, so the worker has the docker driver: {ws:?}"
    );
    let node = node_id(&c, "Dock");

    let out = shell(
        &c,
        &[&format!(
            "task {IMAGE} -cpu_cores 2 -mem 0.25 -- sh -c 'echo hello from a container; sleep 3; echo bye'"
        )],
    );
    let id = submitted(&out);
    let cid = wait_for(Duration::from_secs(20), || {
        containers_of(&node, id).into_iter().next()
    })
    .unwrap_or_else(|| panic!("no container for task {id}; worker log:\n{}", c.log("Dock")));
    let info = inspect(&cid);
    let host = &info["HostConfig"];
    assert_eq!(host["NanoCpus"], 2_000_000_000i64, "{host}");
    assert_eq!(host["Memory"], 268_435_456i64, "{host}");
    assert_eq!(host["Privileged"], false, "{host}");
    let t = wait_state(&mut client, id, "running", Duration::from_secs(20)).await;
    let labels = &info["Config"]["Labels"];
    assert_eq!(labels["berth.task"], id.to_string(), "{labels}");
    assert_eq!(labels["berth.attempt"], t.attempts[0].id.to_string());
    assert_eq!(labels["berth.worker"], node.as_str());
    assert!(
        c.berth_ok(&["workers"])
            .contains("  CPU:     4.0 total, 2.0 allocated, 2.0 available\n"),
        "{}",
        c.berth_ok(&["workers"])
    );

    // `monitor` follows its output to the end.
    let mon = shell(&c, &[&format!("monitor {id}")]);
    assert!(mon.contains("hello from a container\nbye\n"), "{mon}");
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 0, "{t:?}");
    assert_eq!(t.attempts.len(), 1);

    assert!(
        containers_of(&node, id).is_empty(),
        "the container is removed once its exit code is recorded"
    );
    let w = c.berth_ok(&["workers"]);
    assert!(
        w.contains("  CPU:     4.0 total, 0.0 allocated, 4.0 available\n")
            && w.contains("  Memory:  2.0 GB total, 0.0 GB allocated, 2.0 GB available\n")
            && w.contains("  Running Tasks: 0\n"),
        "{w}"
    );
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert_eq!(logs, "hello from a container\nbye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_reattaches_to_its_containers_by_label() {
    images();
    let mut c = Cluster::start();
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let node = node_id(&c, "Dock");
    // One outlives the agent's absence; one ends while it is away.
    let long = submit(
        &mut client,
        container_spec(
            IMAGE,
            1000,
            64 << 20,
            &["sh", "-c", "echo start; sleep 6; echo end"],
        ),
    )
    .await;
    let short = submit(
        &mut client,
        container_spec(
            IMAGE,
            1000,
            64 << 20,
            &["sh", "-c", "echo short; sleep 1; exit 3"],
        ),
    )
    .await;
    wait_state(&mut client, long, "running", Duration::from_secs(20)).await;
    wait_state(&mut client, short, "running", Duration::from_secs(20)).await;
    let long_c = wait_for(Duration::from_secs(10), || {
        containers_of(&node, long).into_iter().next()
    })
    .expect("container of the long task");
    wait_for(Duration::from_secs(10), || {
        containers_of(&node, short).into_iter().next()
    })
    .expect("container of the short task");

    c.workers[0].kill9();
    // The container does not depend on the agent.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(inspect(&long_c)["State"]["Running"], true);
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);

    let t = wait_terminal(&mut client, long, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}\n{}", c.log("Dock"));
    assert_eq!(t.attempts.len(), 1, "recorded once: {t:?}");
    assert_eq!(log_of(&mut client, long).await, "start\nend\n");
    let t = wait_terminal(&mut client, short, Duration::from_secs(30)).await;
    assert_eq!(t.state, "failed", "{t:?}");
    assert!(t.has_exit_code && t.exit_code == 3, "{t:?}");
    assert_eq!(t.attempts.len(), 1, "recorded once: {t:?}");
    assert_eq!(log_of(&mut client, short).await, "short\n");
    assert!(containers_of(&node, long).is_empty());
    assert!(containers_of(&node, short).is_empty());
    let ws = workers(&mut client).await;
    assert_eq!(ws[0].running_attempts, 0);
    assert_eq!(
        berth_proto::resources_or_zero(ws[0].allocated),
        berth_core::Resources::ZERO
    );
}

/// What a container writes to `/output` reaches the master: listed with
/// sizes, downloaded byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_output_files_are_listed_and_downloaded() {
    images();
    let mut c = Cluster::start();
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let script = "test -z \"$(ls -A /output)\" || exit 9; \
                  echo hello > $BERTH_OUTPUT_DIR/hello.txt; \
                  mkdir /output/sub && seq 1 20000 > /output/sub/numbers.txt";
    let id = submit(
        &mut client,
        container_spec(IMAGE, 1000, 64 << 20, &["sh", "-c", script]),
    )
    .await;
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(
        t.state, "succeeded",
        "an empty /output to start with: {t:?}"
    );
    let numbers: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    let files: serde_json::Value =
        serde_json::from_str(&c.berth_ok(&["--json", "task", "files", &id.to_string()])).unwrap();
    assert_eq!(files["files"][0]["path"], "hello.txt", "{files}");
    assert_eq!(files["files"][0]["size"], 6);
    assert_eq!(files["files"][1]["path"], "sub/numbers.txt");
    assert_eq!(files["files"][1]["size"], numbers.len() as u64);
    let dl = c.dir.path().join("dl");
    c.berth_ok(&["task", "download", &id.to_string(), dl.to_str().unwrap()]);
    assert_eq!(std::fs::read(dl.join("hello.txt")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read_to_string(dl.join("sub/numbers.txt")).unwrap(),
        numbers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_time_limits_stop_containers_within_the_grace() {
    images();
    let mut c = Cluster::start();
    c.start_worker(
        "Dock",
        &["--cpus", "4", "--memory", "2G", "--stop-grace", "1s"],
    );
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let node = node_id(&c, "Dock");
    // `sh` as PID 1 ignores SIGTERM, so each needs the SIGKILL after the
    // grace: the stop must not hang on a task that will not stop.
    let cancelled = submit(
        &mut client,
        container_spec(IMAGE, 1000, 64 << 20, &["sh", "-c", "echo up; sleep 60"]),
    )
    .await;
    let mut spec = container_spec(IMAGE, 1000, 64 << 20, &["sleep", "60"]);
    spec.timeout_ms = Some(1500);
    let timed = submit(&mut client, spec).await;
    wait_state(&mut client, cancelled, "running", Duration::from_secs(20)).await;
    wait_for(Duration::from_secs(10), || {
        containers_of(&node, cancelled).into_iter().next()
    })
    .expect("container of the cancelled task");
    let t0 = Instant::now();
    c.berth_ok(&["task", "cancel", &cancelled.to_string()]);
    let t = wait_terminal(&mut client, cancelled, Duration::from_secs(15)).await;
    assert_eq!(t.state, "cancelled", "{t:?}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(t.attempts[0].state, "cancelled");
    let t = wait_terminal(&mut client, timed, Duration::from_secs(15)).await;
    assert_eq!(t.state, "failed", "{t:?}");
    assert_eq!(t.attempts[0].state, "timed_out", "{t:?}");
    assert!(containers_of(&node, cancelled).is_empty());
    assert!(containers_of(&node, timed).is_empty());
    let ws = workers(&mut client).await;
    assert_eq!(
        berth_proto::resources_or_zero(ws[0].allocated),
        berth_core::Resources::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_removes_only_this_workers_dangling_containers() {
    images();
    let mut c = Cluster::start();
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let node = node_id(&c, "Dock");
    let ours = unique("berth-test-dangling");
    let theirs = unique("berth-test-other-worker");
    let plain = unique("berth-test-unlabelled");
    let _guard = OwnContainers(vec![ours.clone(), theirs.clone(), plain.clone()]);
    let run = |name: &str, labels: &[String]| {
        let mut args = vec!["run", "-d", "--name", name];
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        args.extend([IMAGE, "sleep", "600"]);
        docker_ok(&args);
    };
    run(
        &ours,
        &[
            format!("berth.worker={node}"),
            "berth.attempt=999999".into(),
            "berth.task=999999".into(),
        ],
    );
    run(
        &theirs,
        &[
            "berth.worker=another-worker-node-id".into(),
            "berth.attempt=999998".into(),
            "berth.task=999998".into(),
        ],
    );
    run(&plain, &[]);

    // Grace 10 s and a round every 10 s: gone within about 20 s.
    let t0 = Instant::now();
    let gone = wait_for(Duration::from_secs(40), || (!exists(&ours)).then_some(()));
    assert!(
        gone.is_some(),
        "the dangling container was not reaped; worker log:\n{}",
        c.log("Dock")
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "a young container must be spared for its grace period"
    );
    assert!(c.log("Dock").contains("removing a dangling container"));
    assert_eq!(inspect(&theirs)["State"]["Running"], true);
    assert_eq!(inspect(&plain)["State"]["Running"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_within_seconds_naming_it() {
    images();
    let mut c = Cluster::start();
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    // Not on this engine; its registry is a closed port on loopback, so
    // the pull fails at once without leaving the machine.
    let image = "127.0.0.1:9/berth-test/no-such-image:1.0";
    let t0 = Instant::now();
    let id = submit(
        &mut client,
        container_spec(image, 1000, 64 << 20, &["true"]),
    )
    .await;
    let t = wait_terminal(&mut client, id, Duration::from_secs(10)).await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(t.state, "failed", "{t:?}");
    assert!(
        t.reason.contains(image),
        "the reason names the image: {t:?}"
    );
    assert!(!t.has_exit_code, "{t:?}");
    let show = c.berth_ok(&["task", "show", &id.to_string()]);
    assert!(show.contains(image), "{show}");
    let ws = workers(&mut client).await;
    assert_eq!(
        berth_proto::resources_or_zero(ws[0].allocated),
        berth_core::Resources::ZERO,
        "a failed start releases its resources"
    );
}

/// A `nvidia-smi` that reports two GPUs, first on a `PATH` for the worker.
fn fake_nvidia_smi(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '0, Fake GPU A100, 40960, GPU-aaaa\\n1, Fake GPU A100, 40960, GPU-bbbb\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_handed_out_exclusively_and_listed_by_task() {
    images();
    let mut c = Cluster::start();
    let path = fake_nvidia_smi(c.dir.path());
    c.start_worker_env(
        "Gpu",
        &["--cpus", "8", "--memory", "4G"],
        &[("PATH", &path)],
    );
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let ws = workers(&mut client).await;
    assert_eq!(ws[0].gpus.len(), 2, "{ws:?}");
    assert_eq!(ws[0].gpus[1].model, "Fake GPU A100");

    let gpu_task = |secs: &str| {
        let mut s = process_spec(
            500,
            16 << 20,
            &[
                "sh",
                "-c",
                &format!(
                    "echo CUDA=$CUDA_VISIBLE_DEVICES NV=$NVIDIA_VISIBLE_DEVICES; sleep {secs}"
                ),
            ],
        );
        s.resources.as_mut().unwrap().gpus = 1;
        s
    };
    let a = submit(&mut client, gpu_task("4")).await;
    let b = submit(&mut client, gpu_task("8")).await;
    wait_state(&mut client, a, "running", Duration::from_secs(20)).await;
    wait_state(&mut client, b, "running", Duration::from_secs(20)).await;
    let third = submit(&mut client, gpu_task("0")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t3 = task(&mut client, third).await;
    assert_eq!(t3.state, "queued", "both GPUs are taken: {t3:?}");
    assert!(t3.wait_reason.to_lowercase().contains("gpu"), "{t3:?}");

    // `workers` says which task holds which GPU.
    let w = c.berth_ok(&["workers"]);
    let ta = task(&mut client, a).await;
    let tb = task(&mut client, b).await;
    let (ga, gb) = (
        ta.attempts[0].gpu_ids.clone(),
        tb.attempts[0].gpu_ids.clone(),
    );
    assert_eq!(ga.len(), 1);
    assert_eq!(gb.len(), 1);
    assert_ne!(ga, gb, "exclusive device ids");
    assert!(
        w.contains("  GPU:     2 total, 2 allocated, 0 available\n"),
        "{w}"
    );
    assert!(w.contains(&format!("  GPU {}: task {a}\n", ga[0])), "{w}");
    assert!(w.contains(&format!("  GPU {}: task {b}\n", gb[0])), "{w}");
    let j: serde_json::Value = serde_json::from_str(&c.berth_ok(&["workers", "--json"])).unwrap();
    let mut holders: Vec<(u64, u64)> = j["workers"][0]["gpu_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["index"].as_u64().unwrap(), h["task_id"].as_u64().unwrap()))
        .collect();
    holders.sort();
    let mut want = vec![(ga[0] as u64, a), (gb[0] as u64, b)];
    want.sort();
    assert_eq!(holders, want, "{j}");
    let la = wait_for_async(Duration::from_secs(10), || {
        let mut cl = client.clone();
        async move {
            let l = log_of(&mut cl, a).await;
            (!l.is_empty()).then_some(l)
        }
    })
    .await
    .unwrap();
    assert_eq!(la, format!("CUDA={0} NV={0}\n", ga[0]));
    let lb = log_of(&mut client, b).await;
    assert_eq!(lb, format!("CUDA={0} NV={0}\n", gb[0]));

    // The third runs once the first ends, on the GPU it freed.
    let ta = wait_terminal(&mut client, a, Duration::from_secs(20)).await;
    assert_eq!(ta.state, "succeeded");
    let t3 = wait_terminal(&mut client, third, Duration::from_secs(20)).await;
    assert_eq!(t3.state, "succeeded", "{t3:?}");
    assert_eq!(t3.attempts[0].gpu_ids, ga);
    let tb = task(&mut client, b).await;
    assert_eq!(tb.state, "running", "the third did not wait for the second");
    assert!(t3.attempts[0].started_ms >= ta.ended_ms, "{t3:?} {ta:?}");
    wait_terminal(&mut client, b, Duration::from_secs(20)).await;

    // A container asking for a GPU: the device request goes to the engine.
    // Without the NVIDIA runtime (this machine) the engine refuses it and
    // the attempt fails saying so; with it, the task sees its GPU ids.
    let mut spec = container_spec(
        IMAGE,
        500,
        16 << 20,
        &["sh", "-c", "echo ids=$BERTH_GPU_IDS"],
    );
    spec.resources.as_mut().unwrap().gpus = 1;
    let g = submit(&mut client, spec).await;
    let t = wait_terminal(&mut client, g, Duration::from_secs(20)).await;
    let gpu = t.attempts[0].gpu_ids.clone();
    assert_eq!(gpu.len(), 1);
    if t.state == "succeeded" {
        assert_eq!(log_of(&mut client, g).await, format!("ids={}\n", gpu[0]));
    } else {
        assert_eq!(t.state, "failed", "{t:?}");
        assert!(t.reason.contains("nvidia"), "{t:?}");
    }
    let ws = workers(&mut client).await;
    assert!(ws[0].gpu_holders.is_empty(), "{ws:?}");
    assert_eq!(berth_proto::resources_or_zero(ws[0].allocated).gpus, 0);
}

/// The container of task `task` on `node`, once it has started (the task
/// is reported running before its container is even created).
fn started_container(node: &str, task: u64) -> String {
    wait_for(Duration::from_secs(20), || {
        containers_of(node, task)
            .into_iter()
            .find(|id| inspect(id)["State"]["Running"] == true)
    })
    .expect("a started container of the task")
}

/// The name and labels of a container, from `docker inspect`.
fn name_and_labels(id: &str) -> (String, Vec<(String, String)>) {
    let info = inspect(id);
    let name = info["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let labels = info["Config"]["Labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    (name, labels)
}

/// An agent that died between creating an attempt's container and starting
/// it: the restarted agent finds it `created`, reports the attempt lost
/// (never succeeded: it never ran), removes the container, and the master
/// runs the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_never_started_is_reported_lost_and_run_again() {
    images();
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let node = node_id(&c, "Dock");
    let id = submit(
        &mut client,
        container_spec(IMAGE, 1000, 64 << 20, &["sh", "-c", "echo ran; sleep 3"]),
    )
    .await;
    wait_state(&mut client, id, "running", Duration::from_secs(20)).await;
    let started = started_container(&node, id);
    let (name, labels) = name_and_labels(&started);
    let mut guard = OwnContainers(vec![name.clone()]);

    c.workers[0].kill9();
    // Put the state the crash would have left in its place: the same name
    // and labels, created, never started.
    docker_ok(&["rm", "-f", &started]);
    let mut args = vec!["create".to_string(), "--name".into(), name.clone()];
    for (k, v) in &labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        IMAGE.into(),
        "sh".into(),
        "-c".into(),
        "echo must not run".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let created = docker_ok(&args);
    guard.0.push(created.clone());
    assert_eq!(inspect(&created)["State"]["Status"], "created");

    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    let t = wait_terminal(&mut client, id, Duration::from_secs(60)).await;
    assert_eq!(t.attempts.len(), 2, "lost, then run again: {t:?}");
    assert_eq!(t.attempts[0].state, "lost", "{t:?}");
    assert!(t.attempts[0].reason.contains("never ran"), "{t:?}");
    assert_eq!(t.attempts[1].state, "succeeded", "{t:?}");
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert!(!exists(&created), "the never-started container is removed");
    assert!(containers_of(&node, id).is_empty());
}

/// A worker whose data dir was wiped comes back with a new node id: its
/// reaper still removes the containers of its previous life (same name and
/// data dir, another node id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_wiped_data_dir_reaps_its_old_containers() {
    images();
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let old_node = node_id(&c, "Dock");
    let id = submit(
        &mut client,
        container_spec(IMAGE, 1000, 64 << 20, &["sleep", "600"]),
    )
    .await;
    wait_state(&mut client, id, "running", Duration::from_secs(20)).await;
    let old = started_container(&old_node, id);
    let _guard = OwnContainers(vec![old.clone()]);

    c.workers[0].kill9();
    std::fs::remove_dir_all(c.dir.path().join("worker-Dock")).unwrap();
    // Its name is free again once the master has judged it down; the task
    // is not to run again.
    let down = wait_for_async(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let ws = workers(&mut client).await;
            ws.iter()
                .any(|w| w.name == "Dock" && w.state == "down")
                .then_some(())
        }
    })
    .await;
    assert!(down.is_some(), "the killed worker is never judged down");
    c.berth_ok(&["task", "cancel", &id.to_string()]);

    c.start_worker("Dock", &["--cpus", "4", "--memory", "2G"]);
    c.wait_workers_ready(1).await;
    assert_ne!(
        node_id(&c, "Dock"),
        old_node,
        "a wiped data dir, a new node id"
    );
    assert_eq!(inspect(&old)["State"]["Running"], true);
    // A round every 10 s; the container is older than the 10 s grace.
    let gone = wait_for(Duration::from_secs(40), || (!exists(&old)).then_some(()));
    assert!(
        gone.is_some(),
        "the container of the worker's previous life was not reaped; worker log:\n{}",
        c.log("Dock")
    );
    assert!(c.log("Dock").contains("before its data dir was wiped"));
}

/// The engine does not answer when a restarted agent comes up: the agent
/// keeps the docker driver, holds the attempt as running (not failed),
/// tries the engine again, and re-attaches when it answers. The engine's
/// absence is played by a `DOCKER_HOST` socket path that is a link to the
/// real socket, removed and put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_away_at_agent_start_is_waited_for_and_its_containers_picked_up() {
    images();
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let sock_dir = c.dir.path().join("engine");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join("docker.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &sock).unwrap();
    let host = format!("unix://{}", sock.display());
    let env = [("DOCKER_HOST", host.as_str())];
    c.start_worker_env("Dock", &["--cpus", "4", "--memory", "2G"], &env);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let node = node_id(&c, "Dock");
    let id = submit(
        &mut client,
        container_spec(
            IMAGE,
            1000,
            64 << 20,
            &["sh", "-c", "echo start; sleep 10; echo end"],
        ),
    )
    .await;
    wait_state(&mut client, id, "running", Duration::from_secs(20)).await;
    let cid = started_container(&node, id);
    let _guard = OwnContainers(vec![cid.clone()]);

    c.workers[0].kill9();
    std::fs::remove_file(&sock).unwrap();
    c.start_worker_env("Dock", &["--cpus", "4", "--memory", "2G"], &env);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = task(&mut client, id).await;
    assert_eq!(t.state, "running", "held while the engine is away: {t:?}");
    assert_eq!(t.attempts.len(), 1, "{t:?}");
    assert!(
        c.log("Dock").contains("the Docker engine does not answer"),
        "{}",
        c.log("Dock")
    );

    std::os::unix::fs::symlink("/var/run/docker.sock", &sock).unwrap();
    let t = wait_terminal(&mut client, id, Duration::from_secs(60)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    assert_eq!(t.attempts.len(), 1, "recorded once: {t:?}");
    assert_eq!(log_of(&mut client, id).await, "start\nend\n");
    assert!(containers_of(&node, id).is_empty());
}
