//! berth-bench: the benchmark harness behind `berth bench <scenario>`.
//!
//! Each scenario runs the real code (the master's state engine, the SQLite
//! store on disk, real processes and gRPC where it says so) and prints one
//! JSON line of figures with the keys `scenario`, `workers`, `tasks`,
//! `placements_per_s`, `tasks_per_s`, `p50_ms`, `p99_ms`, `seconds`,
//! `bytes_per_task` where they apply. Build in release: timings of a debug
//! build mean little. Figures are reported, never asserted: these machines
//! are shared and noisy. See `docs/BENCHMARKS.md`.

mod e2e;
mod place;
mod recover;
mod stats;

use std::path::PathBuf;

/// Scenario parameters (defaults are the documented sizes).
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: Option<usize>,
    pub tasks: Option<usize>,
    /// Where to put data dirs (default: a fresh temporary folder).
    pub dir: Option<PathBuf>,
    /// The `berth` binary, for scenarios that start worker processes.
    pub berth_binary: PathBuf,
}

pub const SCENARIOS: &[&str] = &["place", "e2e", "recover", "memory", "scale"];

/// Run one scenario; prints its JSON line(s) to stdout.
pub fn run(scenario: &str, opts: &Options) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in(opts.dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let lines = match scenario {
        "place" => vec![rt.block_on(place::run(
            tmp.path(),
            opts.workers.unwrap_or(10_000),
            opts.tasks.unwrap_or(200_000),
        ))?],
        "scale" => {
            let tasks = opts.tasks.unwrap_or(100_000);
            let mut out = Vec::new();
            for workers in [100, 1_000, 10_000] {
                let mut line = rt.block_on(place::run(
                    &tmp.path().join(workers.to_string()),
                    workers,
                    tasks,
                ))?;
                line["scenario"] = "scale".into();
                out.push(line);
            }
            out
        }
        "e2e" => vec![rt.block_on(e2e::run(
            tmp.path(),
            &opts.berth_binary,
            opts.tasks.unwrap_or(10_000),
        ))?],
        "recover" => vec![rt.block_on(recover::recover(
            tmp.path(),
            opts.tasks.unwrap_or(1_000_000),
        ))?],
        "memory" => vec![recover::memory(
            tmp.path(),
            opts.tasks.unwrap_or(1_000_000),
        )?],
        other => {
            return Err(format!(
                "unknown scenario '{other}'; choose one of {}",
                SCENARIOS.join(", ")
            ));
        }
    };
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Fill a data dir with `tasks` records (for profiling recovery by hand).
pub fn build_recovery_store(dir: &std::path::Path, tasks: usize) -> Result<(), String> {
    recover::build_store(dir, tasks)
}
