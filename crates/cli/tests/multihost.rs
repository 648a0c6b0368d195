//! berth as a real multi-host cluster: the master and three workers, each
//! in its own container of the berth image (`deploy/Dockerfile`, built FROM
//! the base `scripts/images` makes) on a private Docker network created for
//! the test and removed after it. The test drives the cluster with the
//! `berth` CLI inside the master's container (`docker exec`).
//!
//! A worker cut off the network (`docker network disconnect`) while it runs
//! a task is declared down and the task runs elsewhere; once reconnected,
//! the worker is told to stop its stale attempt, and the task is recorded
//! once: one lost attempt, one that succeeded.
//!
//! Needs a running Docker engine; no registry is contacted. Everything the
//! test creates (containers, network, image tag) is named after it and
//! removed by name.

mod common;

use common::{BERTH, docker, docker_ok, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/berth:latest";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The base image (scripts/images), then the berth image from
/// deploy/Dockerfile with the binary under test (once per test binary).
fn berth_image() {
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
        let t0 = Instant::now();
        let ctx = tempfile::tempdir().unwrap();
        let bin = ctx.path().join("berth");
        // Without its debug info the image is a seventh of the size and
        // builds in about a second; a plain copy where `strip` is missing.
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(&bin)
            .arg(BERTH)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(BERTH, &bin).unwrap();
        }
        let before = docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
        let before = String::from_utf8_lossy(&before.stdout).trim().to_string();
        let dockerfile = repo_root().join("deploy/Dockerfile");
        docker_ok(&[
            "build",
            "-q",
            "-f",
            dockerfile.to_str().unwrap(),
            "-t",
            IMAGE,
            ctx.path().to_str().unwrap(),
        ]);
        eprintln!("built {IMAGE} in {:?}", t0.elapsed());
        // The image of the previous binary is no longer tagged: remove it
        // (by id, so nothing else is touched) rather than leave it behind.
        let after = docker_ok(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
        if !before.is_empty() && before != after {
            let _ = docker(&["rmi", &before]);
        }
    });
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A private network and the containers on it; all removed on drop.
struct Net {
    name: String,
    containers: Vec<String>,
}

impl Net {
    fn new(prefix: &str) -> Net {
        let name = unique(prefix);
        docker_ok(&["network", "create", &name]);
        Net {
            name,
            containers: Vec::new(),
        }
    }

    /// Start a berth container called `NET-role` on the network.
    fn run(&mut self, role: &str, env: &[(&str, &str)], args: &[&str]) -> String {
        let name = format!("{}-{role}", self.name);
        let mut a: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            role.into(),
            "--network".into(),
            self.name.clone(),
            "--network-alias".into(),
            role.into(),
            "-e".into(),
            "RUST_LOG=info".into(),
        ];
        for (k, v) in env {
            a.push("-e".into());
            a.push(format!("{k}={v}"));
        }
        a.push(IMAGE.into());
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        self.containers.push(name.clone());
        docker_ok(&refs);
        name
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// `berth ARGS --json` inside the master's container.
fn berth_json(master: &str, token: &str, args: &[&str]) -> Value {
    let mut a = vec!["exec", "-e", "BERTH_MASTER=http://127.0.0.1:7700"];
    let tok = format!("BERTH_TOKEN={token}");
    a.extend(["-e", &tok, master, "berth"]);
    a.extend(args);
    a.push("--json");
    let text = docker_ok(&a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn worker_states(master: &str, token: &str) -> Vec<(String, String)> {
    berth_json(master, token, &["workers"])["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn task(master: &str, token: &str, id: u64) -> Value {
    berth_json(master, token, &["task", "show", &id.to_string()])
}

/// Is a process with `needle` in its command line running in `container`?
fn runs(container: &str, needle: &str) -> bool {
    let out = docker(&["exec", container, "ps", "-o", "args"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(needle) && !l.contains("ps -o"))
}

/// Log text without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn dump(net: &Net) -> String {
    let mut s = String::new();
    for c in &net.containers {
        let out = docker(&["logs", "--tail", "40", c]);
        s.push_str(&format!(
            "--- {c}\n{}{}\n",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    s
}

#[test]
fn the_berth_image_starts() {
    berth_image();
    let out = docker_ok(&["run", "--rm", IMAGE, "--help"]);
    assert!(out.contains("Usage: berth"), "{out}");
    assert!(out.contains("master") && out.contains("worker"), "{out}");
}

#[test]
fn a_partitioned_worker_loses_its_task_to_another_and_stops_it_on_return() {
    berth_image();
    let mut net = Net::new("berth-mh");
    let master = net.run(
        "master",
        &[],
        &[
            "master",
            "--listen",
            "0.0.0.0:7700",
            "--http",
            "off",
            "--data-dir",
            "/data",
        ],
    );
    let token = wait_for(Duration::from_secs(20), || {
        let out = docker(&["exec", &master, "cat", "/data/token"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|t| !t.is_empty())
    })
    .unwrap_or_else(|| panic!("the master did not start:\n{}", dump(&net)));
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        workers.push(net.run(
            name,
            &[("BERTH_TOKEN", &token)],
            &[
                "worker",
                "--master",
                "http://master:7700",
                "--name",
                name,
                "--data-dir",
                "/data",
                "--cpus",
                "1",
                "--memory",
                "1G",
                "--stop-grace",
                "2s",
            ],
        ));
    }
    let ready = wait_for(Duration::from_secs(30), || {
        let s = worker_states(&master, &token);
        (s.iter().filter(|(_, st)| st == "ready").count() == 3).then_some(())
    });
    assert!(ready.is_some(), "three workers not ready:\n{}", dump(&net));

    // A task that takes a while; find where it runs.
    let marker = "sleep 25";
    let submitted = berth_json(
        &master,
        &token,
        &[
            "task",
            "submit",
            "--cpu",
            "1",
            "--mem",
            "0.1",
            "--",
            "sh",
            "-c",
            &format!("echo started; {marker}; echo finished"),
        ],
    );
    let id = submitted
        .as_u64()
        .or_else(|| submitted["task_id"].as_u64())
        .unwrap_or_else(|| panic!("no task id in {submitted}"));
    let first = wait_for(Duration::from_secs(20), || {
        let t = task(&master, &token, id);
        (t["state"] == "running").then(|| t["attempts"][0].clone())
    })
    .unwrap_or_else(|| panic!("task {id} did not start:\n{}", dump(&net)));
    let victim_name = first["worker_name"].as_str().unwrap().to_string();
    let victim = format!("{}-{victim_name}", net.name);
    assert!(runs(&victim, marker), "the task runs in {victim}");
    let t0 = Instant::now();

    // Cut it off: down after the TTL, the task placed elsewhere.
    docker_ok(&["network", "disconnect", &net.name, &victim]);
    let second = wait_for(Duration::from_secs(30), || {
        let down = worker_states(&master, &token)
            .iter()
            .any(|(n, s)| *n == victim_name && s == "down");
        let t = task(&master, &token, id);
        let a = t["attempts"].as_array().unwrap();
        (down && a.len() == 2 && a[0]["state"] == "unknown" && a[1]["state"] == "running")
            .then(|| a[1].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no second attempt: {}\n{}",
            task(&master, &token, id),
            dump(&net)
        )
    });
    let other = second["worker_name"].as_str().unwrap().to_string();
    assert_ne!(other, victim_name);
    assert!(
        runs(&victim, marker),
        "partitioned, not dead: the stale attempt still runs"
    );
    eprintln!("re-placed on {other} after {:?}", t0.elapsed());

    // Back on the network: it reconnects and is told to stop the stale one.
    docker_ok(&["network", "connect", &net.name, &victim]);
    let stopped = wait_for(Duration::from_secs(30), || {
        (!runs(&victim, marker)).then_some(())
    });
    assert!(
        stopped.is_some(),
        "the stale attempt was not stopped:\n{}",
        dump(&net)
    );
    eprintln!("stale attempt stopped {:?} after the cut", t0.elapsed());
    let first_id = first["id"].as_u64().unwrap();
    let out = docker(&["logs", &victim]);
    let victim_log = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(
        victim_log
            .lines()
            .any(|l| l.contains("stopping attempt") && l.contains(&format!("attempt={first_id}"))),
        "the master told {victim_name} to stop attempt {first_id}:\n{victim_log}"
    );
    let back = wait_for(Duration::from_secs(30), || {
        worker_states(&master, &token)
            .iter()
            .any(|(n, s)| *n == victim_name && s == "ready")
            .then_some(())
    });
    assert!(back.is_some(), "{victim_name} did not come back");

    let done = wait_for(Duration::from_secs(60), || {
        let t = task(&master, &token, id);
        (t["state"] == "succeeded" || t["state"] == "failed").then_some(t)
    })
    .unwrap_or_else(|| panic!("task {id} did not end:\n{}", dump(&net)));
    assert_eq!(done["state"], "succeeded", "{done}");
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "recorded once: {done}");
    // Stopped on its worker's return: its fate known, recorded.
    assert_eq!(attempts[0]["state"], "cancelled", "{done}");
    assert_eq!(attempts[0]["worker_name"], victim_name.as_str());
    assert_eq!(attempts[1]["state"], "succeeded", "{done}");
    assert_eq!(attempts[1]["worker_name"], other.as_str());
    let logs = docker_ok(&[
        "exec",
        "-e",
        &format!("BERTH_TOKEN={token}"),
        "-e",
        "BERTH_MASTER=http://127.0.0.1:7700",
        &master,
        "berth",
        "task",
        "logs",
        &id.to_string(),
    ]);
    assert!(logs.ends_with("finished"), "{logs}");

    // Nothing held anywhere afterwards.
    let ws = berth_json(&master, &token, &["workers"]);
    for w in ws["workers"].as_array().unwrap() {
        assert_eq!(w["state"], "ready", "{ws}");
        assert_eq!(w["allocated"]["cpu_millis"], 0, "{ws}");
    }
}
