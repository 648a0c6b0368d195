//! The live views users of the system berth replaces know from its shell:
//! `status` (the cluster at a glance), `stats <worker>` (one worker in
//! detail) and `internal-state` (every worker in one table). Also the
//! subcommands `berth status`, `berth stats`, `berth internal-state`.
//!
//! All three are built from the Control API (`ListWorkers`, `ListTasks`).
//! In the shell on a terminal, `status` and `stats` redraw every second
//! until a key is pressed (or Ctrl-C); anywhere else they print once. The
//! text and JSON renderers are pure and take `now` as an argument.

use crate::client::Client;
use crate::commands::{Mode, Request, emit, emit_json};
use crate::render::{self, format_time, table};
use anyhow::anyhow;
use berth_core::units::{format_cores, format_gb_unit};
use berth_core::{Resources, TaskState, WorkerState};
use berth_proto::{resources_or_zero, v1};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

/// How often a live view redraws.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What the views read from the master, fetched together.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub workers: Vec<v1::Worker>,
    /// Tasks placed but not yet started.
    pub assigned: Vec<v1::Task>,
    pub running: Vec<v1::Task>,
    pub queued: Vec<v1::Task>,
    /// This machine's clock when the snapshot was taken.
    pub now_ms: i64,
}

impl Snapshot {
    /// Workers, and (with `tasks`) the queued, assigned and running tasks.
    pub async fn fetch(client: &Client, tasks: bool) -> anyhow::Result<Snapshot> {
        if !tasks {
            let workers = client.workers().await?;
            return Ok(Snapshot {
                workers,
                now_ms: now_ms(),
                ..Snapshot::default()
            });
        }
        let (workers, assigned, running, queued) = tokio::try_join!(
            client.workers(),
            client.list_tasks("assigned"),
            client.list_tasks(TaskState::Running.as_str()),
            client.list_tasks(TaskState::Queued.as_str()),
        )?;
        Ok(Snapshot {
            workers,
            assigned,
            running,
            queued,
            now_ms: now_ms(),
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Run `status`, `stats` or `internal-state` and print the answer.
pub async fn execute(client: &Client, req: &Request, mode: Mode) -> anyhow::Result<()> {
    let live =
        mode == Mode::Shell && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    match req {
        Request::Status => {
            let frame = move || async move {
                let snap = Snapshot::fetch(client, true).await?;
                Ok(status_text(&snap))
            };
            if live {
                return live_view(frame).await;
            }
            let snap = Snapshot::fetch(client, true).await?;
            if mode == Mode::Json {
                emit_json(&status_json(&snap));
            } else {
                emit(&status_text(&snap));
            }
        }
        Request::Stats { worker } => {
            let frame = move || async move {
                let snap = Snapshot::fetch(client, true).await?;
                let w = find_worker(&snap.workers, worker).map_err(anyhow::Error::msg)?;
                Ok(stats_text(w, &snap))
            };
            if live {
                return live_view(frame).await;
            }
            let snap = Snapshot::fetch(client, true).await?;
            let w = find_worker(&snap.workers, worker).map_err(anyhow::Error::msg)?;
            if mode == Mode::Json {
                emit_json(&stats_json(w, &snap));
            } else {
                emit(&stats_text(w, &snap));
            }
        }
        Request::InternalState => {
            let snap = Snapshot::fetch(client, false).await?;
            if mode == Mode::Json {
                emit_json(&crate::json::workers(&snap.workers));
            } else {
                emit(&internal_state_text(&snap.workers, snap.now_ms));
            }
        }
        other => return Err(anyhow!("not a view: {other:?}")),
    }
    Ok(())
}

/// Redraw `frame` every [`REFRESH`] until a key is pressed. The previous
/// frame is overwritten in place (cursor up, clear to the end).
async fn live_view<F, Fut>(mut frame: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let keys = keys::Watch::start();
    let mut previous_lines = 0usize;
    loop {
        let mut text = frame().await?;
        text.push_str("(refreshing every second; press any key to stop)\n");
        let mut out = String::new();
        if previous_lines > 0 {
            let _ = write!(out, "\x1b[{previous_lines}F\x1b[J");
        }
        out.push_str(&text);
        previous_lines = text.lines().count();
        emit(&out);
        if keys.pressed_within(REFRESH).await {
            return Ok(());
        }
    }
}

/// Find a worker by name, id, or a unique id prefix.
pub fn find_worker<'a>(workers: &'a [v1::Worker], query: &str) -> Result<&'a v1::Worker, String> {
    if let Some(w) = workers.iter().find(|w| w.name == query) {
        return Ok(w);
    }
    if let Some(w) = workers.iter().find(|w| w.id == query) {
        return Ok(w);
    }
    let by_prefix: Vec<&v1::Worker> = workers
        .iter()
        .filter(|w| !query.is_empty() && w.id.starts_with(query))
        .collect();
    match by_prefix.as_slice() {
        [w] => Ok(w),
        [] => {
            let names: Vec<&str> = workers.iter().map(display_name).collect();
            if names.is_empty() {
                Err(format!("no worker named '{query}': no workers registered"))
            } else {
                Err(format!(
                    "no worker named '{query}'; workers: {}",
                    names.join(", ")
                ))
            }
        }
        _ => Err(format!(
            "'{query}' matches {} worker ids; give more of the id",
            by_prefix.len()
        )),
    }
}

fn display_name(w: &v1::Worker) -> &str {
    if w.name.is_empty() { &w.id } else { &w.name }
}

/// Counts behind `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    pub workers: usize,
    /// Not down: ready or draining.
    pub active: usize,
    pub draining: usize,
    pub down: usize,
    pub running: usize,
    pub starting: usize,
    pub queued: usize,
}

pub fn status_counts(s: &Snapshot) -> StatusCounts {
    let state = |want: WorkerState| {
        s.workers
            .iter()
            .filter(|w| w.worker_state() == Ok(want))
            .count()
    };
    let down = state(WorkerState::Down);
    StatusCounts {
        workers: s.workers.len(),
        active: s.workers.len() - down,
        draining: state(WorkerState::Draining),
        down,
        running: s.running.len(),
        starting: s.assigned.len(),
        queued: s.queued.len(),
    }
}

/// Allocated and total over the workers that are not down.
fn cluster_resources(workers: &[v1::Worker]) -> (Resources, Resources) {
    let mut total = Resources::default();
    let mut allocated = Resources::default();
    for w in workers
        .iter()
        .filter(|w| w.worker_state() != Ok(WorkerState::Down))
    {
        let t = resources_or_zero(w.total);
        let a = resources_or_zero(w.allocated);
        total.cpu_millis += t.cpu_millis;
        total.memory_bytes += t.memory_bytes;
        total.storage_bytes += t.storage_bytes;
        total.gpus += t.gpus;
        allocated.cpu_millis += a.cpu_millis;
        allocated.memory_bytes += a.memory_bytes;
        allocated.storage_bytes += a.storage_bytes;
        allocated.gpus += a.gpus;
    }
    (allocated, total)
}

/// The `status` text.
pub fn status_text(s: &Snapshot) -> String {
    let c = status_counts(s);
    let (allocated, total) = cluster_resources(&s.workers);
    let mut out = String::new();
    let _ = writeln!(out, "Cluster status at {}", format_time(s.now_ms));
    let draining = if c.draining > 0 {
        format!(" ({} draining)", c.draining)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  Workers:        {} registered, {} active{draining}, {} down",
        c.workers, c.active, c.down
    );
    let _ = writeln!(out, "  Running tasks:  {}", c.running);
    let _ = writeln!(out, "  Starting tasks: {}", c.starting);
    let mut queued = c.queued.to_string();
    if let Some(oldest) = s.queued.iter().min_by_key(|t| (t.submitted_ms, t.id)) {
        let _ = write!(
            queued,
            " (oldest: task {}, waiting {}",
            oldest.id,
            age(s.now_ms - oldest.submitted_ms)
        );
        if !oldest.wait_reason.is_empty() {
            let _ = write!(queued, " for {}", oldest.wait_reason);
        }
        queued.push(')');
    }
    let _ = writeln!(out, "  Queued tasks:   {queued}");
    let _ = writeln!(
        out,
        "  Allocated:      CPU {} of {}, Memory {} of {}, Storage {} of {}, GPU {} of {}",
        format_cores(allocated.cpu_millis),
        format_cores(total.cpu_millis),
        format_gb_unit(allocated.memory_bytes),
        format_gb_unit(total.memory_bytes),
        format_gb_unit(allocated.storage_bytes),
        format_gb_unit(total.storage_bytes),
        allocated.gpus,
        total.gpus
    );
    out
}

pub fn status_json(s: &Snapshot) -> Value {
    let c = status_counts(s);
    let (allocated, total) = cluster_resources(&s.workers);
    json!({
        "workers": c.workers,
        "active_workers": c.active,
        "draining_workers": c.draining,
        "down_workers": c.down,
        "running_tasks": c.running,
        "starting_tasks": c.starting,
        "queued_tasks": c.queued,
        "allocated": crate::json::resources(&allocated),
        "total": crate::json::resources(&total),
    })
}

/// One live attempt on a worker, with its task.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningAttempt {
    pub attempt: v1::Attempt,
    pub task_id: u64,
    pub task_name: String,
}

/// The worker's attempts that hold resources (assigned, running, stopping),
/// oldest first.
pub fn running_on(worker_id: &str, s: &Snapshot) -> Vec<RunningAttempt> {
    let mut out: Vec<RunningAttempt> = s
        .assigned
        .iter()
        .chain(&s.running)
        .flat_map(|t| {
            let name = t
                .spec
                .as_ref()
                .map(|sp| sp.name.clone())
                .unwrap_or_default();
            t.attempts
                .iter()
                .filter(|a| {
                    a.worker_id == worker_id && a.attempt_state().is_ok_and(|s| s.is_live())
                })
                .map(move |a| RunningAttempt {
                    attempt: a.clone(),
                    task_id: t.id,
                    task_name: name.clone(),
                })
        })
        .collect();
    out.sort_by_key(|r| r.attempt.id);
    out.dedup_by_key(|r| r.attempt.id);
    out
}

/// What `stats` says about live usage. Workers report their totals and
/// what they hold, not their measured CPU or memory use.
pub const LIVE_USAGE: &str = "not reported (berth workers do not report measured CPU/memory use yet; above is what tasks requested)";

/// The `stats <worker>` text: the `workers` block, then the rest.
pub fn stats_text(w: &v1::Worker, s: &Snapshot) -> String {
    let mut out = render::workers(std::slice::from_ref(w));
    let _ = writeln!(out, "  ID:             {}", w.id);
    let _ = writeln!(
        out,
        "  Last heartbeat: {}",
        heartbeat_age(w.last_seen_ms, s.now_ms)
    );
    let drivers = if w.drivers.is_empty() {
        "none".to_string()
    } else {
        w.drivers.join(", ")
    };
    let _ = writeln!(out, "  Drivers:        {drivers}");
    for g in &w.gpus {
        let mut line = format!("    GPU [{}] {}", g.index, g.model);
        if g.memory_bytes > 0 {
            let _ = write!(line, ", {}", format_gb_unit(g.memory_bytes));
        }
        if !g.uuid.is_empty() {
            let _ = write!(line, ", {}", g.uuid);
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "  Live usage:     {LIVE_USAGE}");
    let attempts = running_on(&w.id, s);
    if attempts.is_empty() {
        let _ = writeln!(out, "  Running attempts: none");
        return out;
    }
    let _ = writeln!(out, "  Running attempts: {}", attempts.len());
    let rows = attempts
        .iter()
        .map(|r| {
            let res = resources_or_zero(r.attempt.resources);
            let gpus = if r.attempt.gpu_ids.is_empty() {
                "-".to_string()
            } else {
                r.attempt
                    .gpu_ids
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let since = if r.attempt.started_ms > 0 {
                r.attempt.started_ms
            } else {
                r.attempt.created_ms
            };
            vec![
                r.attempt.id.to_string(),
                r.task_id.to_string(),
                if r.task_name.is_empty() {
                    "-".to_string()
                } else {
                    r.task_name.clone()
                },
                r.attempt.state.clone(),
                format_cores(res.cpu_millis),
                format_gb_unit(res.memory_bytes),
                gpus,
                if since > 0 {
                    age(s.now_ms - since)
                } else {
                    "-".to_string()
                },
            ]
        })
        .collect();
    let t = table(
        &[
            "ATTEMPT", "TASK", "NAME", "STATE", "CPU", "MEM", "GPUS", "FOR",
        ],
        rows,
    );
    for line in t.lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

pub fn stats_json(w: &v1::Worker, s: &Snapshot) -> Value {
    let mut v = crate::json::worker(w);
    v["last_heartbeat_age_ms"] = if w.last_seen_ms > 0 {
        json!((s.now_ms - w.last_seen_ms).max(0))
    } else {
        Value::Null
    };
    v["live_usage"] = Value::Null;
    v["running"] = running_on(&w.id, s)
        .iter()
        .map(|r| {
            json!({
                "task_id": r.task_id,
                "task_name": r.task_name,
                "attempt": crate::json::attempt(&r.attempt),
            })
        })
        .collect();
    v
}

/// The `internal-state` table: every worker, one line each.
pub fn internal_state_text(workers: &[v1::Worker], now_ms: i64) -> String {
    if workers.is_empty() {
        return "No workers registered.\n".to_string();
    }
    let rows = workers
        .iter()
        .map(|w| {
            let t = resources_or_zero(w.total);
            let a = resources_or_zero(w.allocated);
            vec![
                display_name(w).to_string(),
                w.id.clone(),
                w.state.clone(),
                format!(
                    "{}/{}",
                    format_cores(a.cpu_millis),
                    format_cores(t.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    berth_core::units::format_gb(a.memory_bytes),
                    berth_core::units::format_gb(t.memory_bytes)
                ),
                format!(
                    "{}/{}",
                    berth_core::units::format_gb(a.storage_bytes),
                    berth_core::units::format_gb(t.storage_bytes)
                ),
                format!("{}/{}", a.gpus, t.gpus),
                w.running_attempts.to_string(),
                heartbeat_age(w.last_seen_ms, now_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "STATE",
            "CPU",
            "MEM GB",
            "STORAGE GB",
            "GPU",
            "RUNNING",
            "LAST SEEN",
        ],
        rows,
    )
}

/// `0.4s ago`, `12s ago`, `3m20s ago`; `never` without a heartbeat.
pub fn heartbeat_age(last_seen_ms: i64, now_ms: i64) -> String {
    if last_seen_ms <= 0 {
        return "never".to_string();
    }
    format!("{} ago", age(now_ms - last_seen_ms))
}

/// A non-negative span: `0.4s`, `12s`, `3m20s`, `2h05m`, `3d04h`.
pub fn age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Key presses on the terminal while a live view runs: the terminal is
/// put in non-canonical, no-echo mode (so one key is enough, without
/// Enter) and restored when the watch is dropped, however the view ends.
mod keys {
    use std::time::Duration;

    pub struct Watch {
        saved: Option<libc::termios>,
    }

    impl Watch {
        pub fn start() -> Watch {
            // SAFETY: termios is plain data; tcgetattr fills it or fails,
            // and we change and keep it only on success.
            let saved = unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) != 0 {
                    None
                } else {
                    let mut raw = t;
                    raw.c_lflag &= !(libc::ICANON | libc::ECHO);
                    raw.c_cc[libc::VMIN] = 0;
                    raw.c_cc[libc::VTIME] = 0;
                    libc::tcsetattr(0, libc::TCSANOW, &raw);
                    Some(t)
                }
            };
            Watch { saved }
        }

        /// Whether a key was pressed within `wait` (the key is consumed).
        pub async fn pressed_within(&self, wait: Duration) -> bool {
            let ms = wait.as_millis().min(i32::MAX as u128) as i32;
            // poll(2) blocks, so it runs off the async threads. It only
            // looks; the byte is read here, after it answered, so a view
            // abandoned with Ctrl-C never eats a key meant for the prompt.
            let ready = tokio::task::spawn_blocking(move || {
                let mut fd = libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut fd, 1, ms) > 0 && fd.revents & libc::POLLIN != 0 }
            })
            .await
            .unwrap_or(false);
            if ready {
                // SAFETY: discarding pending input on our own terminal.
                unsafe {
                    libc::tcflush(0, libc::TCIFLUSH);
                }
            }
            ready
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            if let Some(t) = &self.saved {
                // SAFETY: `t` came from tcgetattr on the same descriptor.
                unsafe {
                    libc::tcsetattr(0, libc::TCSANOW, t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::units::GIB;

    fn res(cpu_millis: u64, memory_bytes: u64, gpus: u32) -> Option<v1::Resources> {
        Some(v1::Resources {
            cpu_millis,
            memory_bytes,
            storage_bytes: 0,
            gpus,
        })
    }

    fn worker(id: &str, name: &str, state: &str) -> v1::Worker {
        v1::Worker {
            id: id.into(),
            name: name.into(),
            state: state.into(),
            total: res(20_000, 8 * GIB, 2),
            allocated: res(5000, GIB / 2, 1),
            running_attempts: 1,
            drivers: vec!["process".into()],
            last_seen_ms: 1_000_000,
            ..Default::default()
        }
    }

    fn task(id: u64, state: &str, worker_id: &str) -> v1::Task {
        v1::Task {
            id,
            state: state.into(),
            spec: Some(v1::TaskSpec {
                name: "train".into(),
                ..Default::default()
            }),
            submitted_ms: 990_000,
            attempts: vec![v1::Attempt {
                id: id * 10,
                task_id: id,
                worker_id: worker_id.into(),
                state: state.into(),
                started_ms: 995_000,
                resources: res(5000, GIB / 2, 1),
                gpu_ids: vec![0],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        let mut queued = task(3, "queued", "");
        queued.attempts.clear();
        queued.wait_reason = "no worker has 30.0 CPU free".into();
        Snapshot {
            workers: vec![
                worker("w-1", "Tessa", "ready"),
                worker("w-2", "Uma", "draining"),
                worker("w-3", "Vic", "down"),
            ],
            assigned: vec![],
            running: vec![task(1, "running", "w-1"), task(2, "running", "w-2")],
            queued: vec![queued],
            now_ms: 1_000_400,
        }
    }

    #[test]
    fn status_counts_workers_and_tasks() {
        let text = status_text(&snapshot());
        assert!(
            text.contains("  Workers:        3 registered, 2 active (1 draining), 1 down\n"),
            "{text}"
        );
        assert!(text.contains("  Running tasks:  2\n"), "{text}");
        assert!(text.contains("  Starting tasks: 0\n"), "{text}");
        assert!(
            text.contains(
                "  Queued tasks:   1 (oldest: task 3, waiting 10s for no worker has 30.0 CPU free)\n"
            ),
            "{text}"
        );
        // Down workers' capacity is not counted.
        assert!(
            text.contains(
                "CPU 10.0 of 40.0, Memory 1.0 GB of 16.0 GB, Storage 0.0 GB of 0.0 GB, GPU 2 of 4"
            ),
            "{text}"
        );
        let v = status_json(&snapshot());
        assert_eq!(v["active_workers"], 2);
        assert_eq!(v["queued_tasks"], 1);
        assert_eq!(v["allocated"]["cpu_millis"], 10_000);
    }

    #[test]
    fn stats_shows_the_block_attempts_and_heartbeat() {
        let s = snapshot();
        let w = find_worker(&s.workers, "Tessa").unwrap();
        let text = stats_text(w, &s);
        assert!(
            text.starts_with(
                "Worker: Tessa (ready)\n  CPU:     20.0 total, 5.0 allocated, 15.0 available\n"
            ),
            "{text}"
        );
        assert!(text.contains("  Last heartbeat: 0.4s ago\n"), "{text}");
        assert!(
            text.contains(&format!("  Live usage:     {LIVE_USAGE}\n")),
            "{text}"
        );
        assert!(text.contains("  Running attempts: 1\n"), "{text}");
        assert!(
            text.contains("    ATTEMPT  TASK  NAME   STATE    CPU  MEM     GPUS  FOR\n"),
            "{text}"
        );
        assert!(
            text.contains("    10       1     train  running  5.0  0.5 GB  0     5.4s\n"),
            "{text}"
        );
        assert!(
            !text.contains("    20 "),
            "another worker's attempt: {text}"
        );
        let v = stats_json(w, &s);
        assert_eq!(v["last_heartbeat_age_ms"], 400);
        assert_eq!(v["live_usage"], Value::Null);
        assert_eq!(v["running"][0]["task_id"], 1);
    }

    #[test]
    fn workers_are_found_by_name_id_or_prefix() {
        let s = snapshot();
        assert_eq!(find_worker(&s.workers, "Uma").unwrap().id, "w-2");
        assert_eq!(find_worker(&s.workers, "w-3").unwrap().name, "Vic");
        let e = find_worker(&s.workers, "w-").unwrap_err();
        assert!(e.contains("matches 3 worker ids"), "{e}");
        let e = find_worker(&s.workers, "Zed").unwrap_err();
        assert_eq!(e, "no worker named 'Zed'; workers: Tessa, Uma, Vic");
        assert!(
            find_worker(&[], "x")
                .unwrap_err()
                .contains("no workers registered")
        );
    }

    #[test]
    fn internal_state_is_one_row_per_worker() {
        let s = snapshot();
        let text = internal_state_text(&s.workers, s.now_ms);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "NAME   ID   STATE     CPU       MEM GB   STORAGE GB  GPU  RUNNING  LAST SEEN"
        );
        assert_eq!(
            lines[1],
            "Tessa  w-1  ready     5.0/20.0  0.5/8.0  0.0/0.0     1/2  1        0.4s ago"
        );
        assert_eq!(internal_state_text(&[], 0), "No workers registered.\n");
    }

    #[test]
    fn ages() {
        assert_eq!(age(-5), "0.0s");
        assert_eq!(age(400), "0.4s");
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(200_000), "3m20s");
        assert_eq!(age(7_500_000), "2h05m");
        assert_eq!(age(90_000_000), "1d01h");
        assert_eq!(heartbeat_age(0, 5), "never");
    }
}
