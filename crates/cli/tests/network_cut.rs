//! A real network cut between a worker and the master: the worker runs in
//! its own network namespace (`ip netns`, a veth pair), and the cut is the
//! host end of the pair going down — no packet in either direction, no
//! RST, exactly like a cable pulled out. Needs root and iproute2
//! (scripts/test installs it).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A network namespace joined to the host by a veth pair, removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        let n = std::process::id() % 200 + 20;
        let name = format!("berth-cut-{n}");
        let host_if = format!("bch{n}");
        let ns_if = format!("bcn{n}");
        let host_ip = format!("10.231.{n}.1");
        let ns_ip = format!("10.231.{n}.2");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            host_if,
            host_ip,
        }
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// `(event, attempt, nanoseconds)` lines the task wrote.
fn markers(path: &Path) -> Vec<(String, u64, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// With `--stop-after-disconnect 4s`, a worker cut off from the master
/// stops its task itself, and the master places the replacement only after
/// that: the start and end markers of the two attempts never overlap.
/// During the cut, `task show` lists the first attempt as `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_worker_stops_an_at_most_once_task_before_it_is_replaced() {
    let net = Netns::create();
    let mut c = Cluster::empty();
    let _logs = LogsOnPanic::of(&c);
    // The master listens on the host end of the pair: reachable from the
    // namespace, and from the host.
    c.url = format!("http://{}:0", net.host_ip);
    c.start_master(&[]);
    let wrapper = ["ip", "netns", "exec", net.name.as_str()];
    c.start_worker_via(
        &wrapper,
        "Inside",
        &["--cpus", "2", "--memory", "2G", "--stop-grace", "2s"],
        &[],
    );
    c.wait_workers_ready(1).await;
    let marks = c.dir.path().join("marks");
    let script = format!(
        "trap 'echo end $BERTH_ATTEMPT_ID $(date +%s%N) >> {m}; exit 143' TERM; \
         echo start $BERTH_ATTEMPT_ID $(date +%s%N) >> {m}; \
         i=0; while [ $i -lt 40 ]; do sleep 0.5; i=$((i+1)); done; \
         echo end $BERTH_ATTEMPT_ID $(date +%s%N) >> {m}",
        m = marks.display()
    );
    let id = c
        .berth_ok(&[
            "task",
            "submit",
            "--cpu",
            "1",
            "--stop-after-disconnect",
            "4s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .trim()
        .parse::<u64>()
        .unwrap();
    let mut client = c.client().await;
    wait_for_async(Duration::from_secs(15), || {
        let mut cl = client.clone();
        async move { (task(&mut cl, id).await.state == "running").then_some(()) }
    })
    .await
    .expect("the task runs inside the namespace");
    c.start_worker("Outside", &["--cpus", "2", "--memory", "2G"]);
    c.wait_workers_ready(2).await;

    let t0 = Instant::now();
    net.cut();
    // Declared down after TTL + grace: the first attempt is unknown, not
    // lost, and nothing runs the task elsewhere yet.
    let during = wait_for_async(Duration::from_secs(15), || {
        let mut cl = client.clone();
        async move {
            let t = task(&mut cl, id).await;
            (t.attempts.first().is_some_and(|a| a.state == "unknown")).then_some(t)
        }
    })
    .await
    .expect("the first attempt becomes unknown during the cut");
    assert_eq!(during.attempts.len(), 1, "{during:?}");
    let show = c.berth_ok(&["task", "show", &id.to_string()]);
    assert!(show.contains("unknown"), "{show}");
    eprintln!("unknown after {:?}", t0.elapsed());

    // The replacement runs on the other worker and succeeds.
    let done = wait_terminal(&mut client, id, Duration::from_secs(90)).await;
    net.heal();
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(done.attempts.len(), 2, "{done:?}");
    assert_eq!(done.attempts[0].state, "disconnected", "{done:?}");
    assert_eq!(done.attempts[1].worker_name, "Outside", "{done:?}");

    let m = markers(&marks);
    let first = done.attempts[0].id;
    let second = done.attempts[1].id;
    let at = |ev: &str, a: u64| {
        m.iter()
            .find(|(e, id, _)| e == ev && *id == a)
            .map(|(_, _, t)| *t)
            .unwrap_or_else(|| panic!("no {ev} marker of attempt {a}: {m:?}"))
    };
    let first_end = at("end", first);
    let second_start = at("start", second);
    assert!(
        first_end < second_start,
        "the attempts overlapped: first ended at {first_end}, second started at {second_start}: {m:?}"
    );
    eprintln!(
        "gap between the two attempts: {:.1} s",
        (second_start - first_end) as f64 / 1e9
    );
}
