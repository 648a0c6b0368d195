//! `GET /metrics`: Prometheus text exposition (format 0.0.4), rendered from
//! one read of the state. Gauges are read from the records and the ledger
//! as they are at the scrape; counters come from [`State::counters`] and
//! restart from zero with the master, as Prometheus counters may.
//!
//! Units are those of the name: CPU in cores, memory and storage in bytes,
//! times in seconds (written from exact integers, never accumulated as
//! floats).
//!
//! Besides the cluster: `berth_build_info{version}` (always 1) and the
//! process's own figures (`process_*`, from `/proc/self`; absent where
//! there is none).

use super::HttpState;
use super::error::HttpError;
use crate::state::{Counters, LATENCY_BUCKETS_MS, State};
use axum::extract::State as Extract;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use berth_core::{Millis, Resources, TaskState, WorkerState};
use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const WORKER_STATES: [WorkerState; 3] =
    [WorkerState::Ready, WorkerState::Draining, WorkerState::Down];

/// One worker as the metrics see it.
struct WorkerRow {
    id: String,
    name: String,
    total: Resources,
    allocated: Resources,
    running: usize,
    unknown: usize,
    overcommitted: bool,
    last_seen_ms: Millis,
}

/// What a scrape reads from the state, on the engine thread.
struct Sample {
    now: Millis,
    tasks: Vec<(TaskState, u64)>,
    workers_by_state: Vec<(WorkerState, u64)>,
    workers: Vec<WorkerRow>,
    counters: Counters,
    /// Batches whose commit failed since start, and whether writes are
    /// accepted now (read from the engine's health, not its state).
    commit_failures: u64,
    writable: bool,
    /// gRPC `Control` calls served since start.
    control_requests: u64,
    /// Read at the scrape, off the engine thread.
    process: Option<super::process::Process>,
}

fn sample(s: &State) -> Sample {
    let mut tasks: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|t| (*t, 0)).collect();
    for t in s.tasks() {
        if let Some(slot) = tasks.iter_mut().find(|(st, _)| *st == t.state) {
            slot.1 += 1;
        }
    }
    let mut workers_by_state: Vec<(WorkerState, u64)> =
        WORKER_STATES.iter().map(|w| (*w, 0)).collect();
    let mut workers = Vec::new();
    for w in s.workers() {
        if let Some(slot) = workers_by_state.iter_mut().find(|(st, _)| *st == w.state) {
            slot.1 += 1;
        }
        workers.push(WorkerRow {
            id: w.id.0.clone(),
            name: w.name.clone(),
            total: w.total,
            allocated: s.ledger().live_allocated(&w.id),
            running: s.ledger().count_on(&w.id),
            unknown: s.ledger().unknown(&w.id).0,
            overcommitted: s.is_overcommitted(&w.id),
            last_seen_ms: w.last_seen_ms,
        });
    }
    Sample {
        now: crate::engine::now_ms(),
        tasks,
        workers_by_state,
        workers,
        counters: s.counters(),
        commit_failures: 0,
        control_requests: 0,
        writable: true,
        process: None,
    }
}

#[utoipa::path(get, path = "/metrics", tag = "master", operation_id = "metrics",
    summary = "Prometheus text exposition (format 0.0.4).",
    responses((status = 200, description = "The metrics.", content_type = "text/plain", body = String)),
    security(("bearerAuth" = [])))]
pub async fn scrape(Extract(st): Extract<HttpState>) -> Result<Response, HttpError> {
    let mut s = st.engine.query(sample).await?;
    let health = st.engine.health();
    s.commit_failures = health.commit_failures();
    s.writable = health.check().is_ok();
    s.control_requests = st.api.requests();
    s.process = super::process::read();
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&s)).into_response())
}

/// `1500` thousandths → `"1.5"`: exact, no float.
fn thousandths(v: u64) -> String {
    if v.is_multiple_of(1000) {
        return (v / 1000).to_string();
    }
    let s = format!("{}.{:03}", v / 1000, v % 1000);
    s.trim_end_matches('0').to_string()
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render(s: &Sample) -> String {
    let mut out = String::new();
    family(&mut out, "berth_tasks", "gauge", "Tasks by state.");
    for (state, n) in &s.tasks {
        let _ = writeln!(out, "berth_tasks{{state=\"{}\"}} {n}", state.as_str());
    }
    family(&mut out, "berth_workers", "gauge", "Workers by state.");
    for (state, n) in &s.workers_by_state {
        let _ = writeln!(out, "berth_workers{{state=\"{}\"}} {n}", state.as_str());
    }

    type Get = fn(&Resources) -> String;
    let dims: [(&str, &str, Get); 4] = [
        ("cpu_cores", "CPU cores", |r| thousandths(r.cpu_millis)),
        ("memory_bytes", "memory in bytes", |r| {
            r.memory_bytes.to_string()
        }),
        ("storage_bytes", "storage in bytes", |r| {
            r.storage_bytes.to_string()
        }),
        ("gpus", "GPUs", |r| r.gpus.to_string()),
    ];
    type Of = fn(&WorkerRow) -> Resources;
    let sides: [(&str, &str, Of); 2] = [
        ("allocatable", "Capacity of a worker", |w| w.total),
        ("allocated", "Held by the worker's live attempts", |w| {
            w.allocated
        }),
    ];
    for (what, of, get) in sides {
        for (dim, unit, value) in dims {
            let name = format!("berth_worker_{what}_{dim}");
            family(&mut out, &name, "gauge", &format!("{of}: {unit}."));
            for w in &s.workers {
                let _ = writeln!(
                    out,
                    "{name}{{worker=\"{}\",worker_id=\"{}\"}} {}",
                    label(&w.name),
                    label(&w.id),
                    value(&get(w))
                );
            }
        }
    }
    family(
        &mut out,
        "berth_worker_running_attempts",
        "gauge",
        "Attempts holding resources on a worker.",
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "berth_worker_running_attempts{{worker=\"{}\",worker_id=\"{}\"}} {}",
            label(&w.name),
            label(&w.id),
            w.running
        );
    }
    family(
        &mut out,
        "berth_worker_heartbeat_lag_seconds",
        "gauge",
        "Time since the master last heard from a worker.",
    );
    for w in &s.workers {
        let lag = (s.now - w.last_seen_ms).max(0) as u64;
        let _ = writeln!(
            out,
            "berth_worker_heartbeat_lag_seconds{{worker=\"{}\",worker_id=\"{}\"}} {}",
            label(&w.name),
            label(&w.id),
            thousandths(lag)
        );
    }

    let c = &s.counters;
    family(
        &mut out,
        "berth_placements_total",
        "counter",
        "Attempts placed on workers.",
    );
    let _ = writeln!(out, "berth_placements_total {}", c.placements);
    family(
        &mut out,
        "berth_scheduling_latency_seconds",
        "histogram",
        "Time a task waited in the queue before it was placed (since submission, or since its previous attempt ended).",
    );
    let h = &c.scheduling_latency;
    let cumulative = h.cumulative();
    for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(cumulative.iter()) {
        let _ = writeln!(
            out,
            "berth_scheduling_latency_seconds_bucket{{le=\"{}\"}} {n}",
            thousandths(*bound)
        );
    }
    let _ = writeln!(
        out,
        "berth_scheduling_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "berth_scheduling_latency_seconds_sum {}",
        thousandths(h.sum_ms)
    );
    let _ = writeln!(out, "berth_scheduling_latency_seconds_count {}", h.count);

    family(
        &mut out,
        "berth_reconcile_runs_total",
        "counter",
        "Reconciliations run (at start, periodic and on demand).",
    );
    let _ = writeln!(out, "berth_reconcile_runs_total {}", c.reconcile_runs);
    family(
        &mut out,
        "berth_reconcile_fixes_total",
        "counter",
        "Workers whose allocation the reconciler fixed, by kind (index: the in-memory index; records: the stored records).",
    );
    let _ = writeln!(
        out,
        "berth_reconcile_fixes_total{{kind=\"index\"}} {}",
        c.index_fixes
    );
    let _ = writeln!(
        out,
        "berth_reconcile_fixes_total{{kind=\"records\"}} {}",
        c.record_fixes
    );
    family(
        &mut out,
        "berth_workers_declared_down_total",
        "counter",
        "Workers declared down after missing heartbeats.",
    );
    let _ = writeln!(
        out,
        "berth_workers_declared_down_total {}",
        c.workers_declared_down
    );
    family(
        &mut out,
        "berth_attempts_lost_total",
        "counter",
        "Attempts lost (their worker died or no longer had them).",
    );
    let _ = writeln!(out, "berth_attempts_lost_total {}", c.attempts_lost);
    family(
        &mut out,
        "berth_attempts_unknown_total",
        "counter",
        "Live attempts whose worker was declared down (their fate unknown until it returns or is confirmed dead).",
    );
    let _ = writeln!(out, "berth_attempts_unknown_total {}", c.attempts_unknown);
    family(
        &mut out,
        "berth_worker_unknown_attempts",
        "gauge",
        "Attempts on the worker whose fate is unknown; they keep their resources until it is known.",
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "berth_worker_unknown_attempts{{worker=\"{}\",worker_id=\"{}\"}} {}",
            label(&w.name),
            label(&w.id),
            w.unknown
        );
    }
    family(
        &mut out,
        "berth_worker_overcommitted",
        "gauge",
        "1 while the worker's attempts hold more than its totals (it came back with less); it takes no new work.",
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "berth_worker_overcommitted{{worker=\"{}\",worker_id=\"{}\"}} {}",
            label(&w.name),
            label(&w.id),
            u8::from(w.overcommitted)
        );
    }
    family(
        &mut out,
        "berth_control_requests_total",
        "counter",
        "Client calls served over gRPC (Control), since start.",
    );
    let _ = writeln!(out, "berth_control_requests_total {}", s.control_requests);
    family(
        &mut out,
        "berth_store_commit_failures_total",
        "counter",
        "Batches the store refused to commit (disk full, busy, I/O error); each was undone.",
    );
    let _ = writeln!(
        out,
        "berth_store_commit_failures_total {}",
        s.commit_failures
    );
    family(
        &mut out,
        "berth_store_writable",
        "gauge",
        "1 while the store accepts writes, 0 while the master refuses them.",
    );
    let _ = writeln!(out, "berth_store_writable {}", u8::from(s.writable));
    family(
        &mut out,
        "berth_build_info",
        "gauge",
        "Always 1; the labels say which berth this master is.",
    );
    let _ = writeln!(
        out,
        "berth_build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    if let Some(p) = &s.process {
        render_process(&mut out, p);
    }
    out
}

/// The standard process families of Prometheus client libraries.
fn render_process(out: &mut String, p: &super::process::Process) {
    family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", p.cpu_seconds);
    family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", p.resident_bytes);
    family(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
    );
    let _ = writeln!(out, "process_open_fds {}", p.open_fds);
    family(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {}", p.start_time_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;

    #[test]
    fn exact_decimal_values() {
        assert_eq!(thousandths(0), "0");
        assert_eq!(thousandths(1500), "1.5");
        assert_eq!(thousandths(2000), "2");
        assert_eq!(thousandths(1), "0.001");
        assert_eq!(thousandths(300_000), "300");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_empty_master_still_lists_every_family() {
        let s = sample(&State::new(StateConfig::default()));
        let text = render(&s);
        for name in [
            "berth_tasks{state=\"queued\"} 0",
            "berth_workers{state=\"down\"} 0",
            "# TYPE berth_worker_allocated_cpu_cores gauge",
            "berth_placements_total 0",
            "berth_scheduling_latency_seconds_bucket{le=\"+Inf\"} 0",
            "berth_reconcile_fixes_total{kind=\"records\"} 0",
            "berth_workers_declared_down_total 0",
            "berth_attempts_lost_total 0",
            "berth_store_commit_failures_total 0",
            "berth_store_writable 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        let build = format!(
            "berth_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} missing from:\n{text}");
        assert!(!text.contains("process_"), "no reading, no family:\n{text}");
    }

    #[test]
    fn process_figures_are_rendered_when_read() {
        let mut s = sample(&State::new(StateConfig::default()));
        s.process = Some(crate::http::process::Process {
            resident_bytes: 4096,
            cpu_seconds: 1.25,
            open_fds: 9,
            start_time_seconds: 1_700_000_000.5,
        });
        let text = render(&s);
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.25",
            "process_resident_memory_bytes 4096",
            "process_open_fds 9",
            "process_start_time_seconds 1700000000.5",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
