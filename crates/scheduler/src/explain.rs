//! Why a task waits, and whether it could ever run: the words a user sees in
//! `queue` and in a refused submission. Pure functions of the snapshot.

use crate::WorkerView;
use berth_core::units::{format_cores, format_gb_unit};
use berth_core::{DriverKind, Resources};

fn describe(r: &Resources) -> String {
    format!(
        "{} CPU, {} memory, {} storage, {} GPU",
        format_cores(r.cpu_millis),
        format_gb_unit(r.memory_bytes),
        format_gb_unit(r.storage_bytes),
        r.gpus
    )
}

/// Can some worker in `workers` (ready or not) ever hold this request?
/// `Err` carries the message for the user, naming the largest worker.
pub fn could_ever_fit(
    workers: &[WorkerView],
    request: &Resources,
    driver: DriverKind,
) -> Result<(), String> {
    let with_driver: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.drivers.contains(&driver))
        .collect();
    if with_driver.is_empty() {
        return Err(match driver {
            DriverKind::Docker => "no registered worker has the docker driver, so a container task cannot run; use `run -- COMMAND` for a process task, or start a worker with Docker available".to_string(),
            DriverKind::Process => "no registered worker has the process driver".to_string(),
        });
    }
    if with_driver
        .iter()
        .any(|w| request.fits_within(&Resources::ZERO, &w.total).is_ok())
    {
        return Ok(());
    }
    // Name the worker closest to fitting: the one that fails on the fewest
    // dimensions, then the biggest by CPU.
    let largest = with_driver
        .iter()
        .max_by_key(|w| (w.total.cpu_millis, w.total.memory_bytes, w.total.gpus))
        .expect("non-empty");
    let short = request
        .fits_within(&Resources::ZERO, &largest.total)
        .expect_err("checked above");
    Err(format!(
        "request is larger than every registered worker ({short}); the largest worker, {}, has {}",
        largest.name,
        describe(&largest.total)
    ))
}

/// Why a pending task is not placed right now.
pub fn wait_reason(workers: &[WorkerView], request: &Resources, driver: DriverKind) -> String {
    if let Err(e) = could_ever_fit(workers, request, driver) {
        return if workers.is_empty() {
            "no workers registered".to_string()
        } else {
            e
        };
    }
    let ready: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.schedulable && w.drivers.contains(&driver))
        .collect();
    if ready.is_empty() {
        return format!("no ready worker with the {} driver", driver.as_str());
    }
    if ready
        .iter()
        .any(|w| request.fits_within(&w.allocated, &w.total).is_ok())
    {
        return "about to be placed".to_string();
    }
    let short = ready
        .iter()
        .filter_map(|w| request.fits_within(&w.allocated, &w.total).err())
        .max_by_key(|s| s.available)
        .expect("ready is non-empty and nothing fits");
    format!("waiting for capacity: {short} on the best worker")
}
