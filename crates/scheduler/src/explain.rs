//! Why a task waits, and whether it could ever run: the words a user sees in
//! `queue` and in a refused submission. Pure functions of the index.

use crate::{ClusterIndex, PendingTask, could_fit_empty, feasible};
use berth_core::DriverKind;
use berth_core::units::{format_cores, format_gb_unit};

fn describe(r: &berth_core::Resources) -> String {
    format!(
        "{} CPU, {} memory, {} storage, {} GPU",
        format_cores(r.cpu_millis),
        format_gb_unit(r.memory_bytes),
        format_gb_unit(r.storage_bytes),
        r.gpus
    )
}

fn constraints_text(c: &[(String, String)]) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Can some registered worker (up or not) ever hold this task? `Err`
/// carries the message for the user, naming the largest worker.
pub fn could_ever_fit(index: &ClusterIndex, task: &PendingTask<'_>) -> Result<(), String> {
    // Fast path: the biggest workers first, stop at the first that fits.
    if task.pinned.is_none()
        && index
            .with_total_cpu(task.request.cpu_millis)
            .rev()
            .any(|s| index.get(s).is_some_and(|e| could_fit_empty(e, task)))
    {
        return Ok(());
    }
    let candidates: Vec<_> = match task.pinned {
        Some(slot) => index.get(slot).into_iter().collect(),
        None => index.entries().map(|(_, e)| e).collect(),
    };
    let with_driver: Vec<_> = candidates
        .into_iter()
        .filter(|e| e.drivers.contains(&task.driver))
        .collect();
    if with_driver.is_empty() {
        return Err(match (task.driver, task.pinned) {
            (DriverKind::Docker, _) => "no registered worker has the docker driver, so a container task cannot run; use `run -- COMMAND` for a process task, or start a worker with Docker available".to_string(),
            (d, Some(_)) => format!("the chosen worker has no {} driver", d.as_str()),
            (d, None) => format!("no registered worker has the {} driver", d.as_str()),
        });
    }
    let labelled: Vec<_> = with_driver
        .into_iter()
        .filter(|e| e.matches(task.constraints))
        .collect();
    if labelled.is_empty() {
        return Err(format!(
            "no registered worker has the labels {}",
            constraints_text(task.constraints)
        ));
    }
    if labelled.iter().any(|e| could_fit_empty(e, task)) {
        return Ok(());
    }
    let largest = labelled
        .iter()
        .max_by_key(|e| (e.total.cpu_millis, e.total.memory_bytes, e.total.gpus))
        .expect("non-empty");
    let short = task
        .request
        .fits_within(&berth_core::Resources::ZERO, &largest.total)
        .expect_err("checked above");
    Err(format!(
        "request is larger than every {} ({short}); the largest, {}, has {}",
        if task.pinned.is_some() {
            "chosen worker"
        } else {
            "registered worker"
        },
        largest.name,
        describe(&largest.total)
    ))
}

/// Why a pending task is not placed right now. `reserved` is the last
/// round's reservation (a worker kept for a task that waited too long).
pub fn wait_reason(
    index: &ClusterIndex,
    task: &PendingTask<'_>,
    reserved: Option<(crate::Slot, berth_core::TaskId)>,
) -> String {
    if index.is_empty() {
        return "no workers registered".to_string();
    }
    if let Err(e) = could_ever_fit(index, task) {
        return e;
    }
    let able: Vec<_> = match task.pinned {
        Some(slot) => index.get(slot).into_iter().collect(),
        None => index.entries().map(|(_, e)| e).collect(),
    };
    let able: Vec<_> = able
        .into_iter()
        .filter(|e| could_fit_empty(e, task))
        .collect();
    if !able.iter().any(|e| e.schedulable) {
        return "no worker that could run it is taking work (down, draining, or stopping stale tasks)".to_string();
    }
    let fits: Vec<crate::Slot> = match task.pinned {
        Some(slot) => vec![slot],
        None => index.entries().map(|(s, _)| s).collect(),
    }
    .into_iter()
    .filter(|s| index.get(*s).is_some_and(|e| feasible(e, task)))
    .collect();
    if let Some((slot, holder)) = reserved
        && holder != task.id
        && !fits.is_empty()
        && fits.iter().all(|s| *s == slot)
    {
        let name = index.get(slot).map_or("?", |e| e.name.as_str());
        return format!(
            "waiting: worker {name} is kept free for task {holder}, which has waited longer"
        );
    }
    if !fits.is_empty() {
        return "about to be placed".to_string();
    }
    able.iter()
        .filter(|e| e.schedulable)
        .filter_map(|e| task.request.fits_within(&e.allocated, &e.total).err())
        .max_by_key(|s| s.available)
        .map(|s| format!("waiting for capacity: {s} on the best worker"))
        .unwrap_or_else(|| "waiting for capacity".to_string())
}
