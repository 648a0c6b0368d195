use super::*;
use proptest::prelude::*;

fn worker(cpu: u64, alloc: u64) -> WorkerView {
    WorkerView {
        name: format!("w{cpu}"),
        total: Resources {
            cpu_millis: cpu,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        },
        allocated: Resources {
            cpu_millis: alloc,
            ..Resources::ZERO
        },
        drivers: vec![DriverKind::Process],
        schedulable: true,
    }
}

fn task(id: u64, cpu: u64) -> PendingTask {
    PendingTask {
        id: TaskId(id),
        request: Resources {
            cpu_millis: cpu,
            ..Resources::ZERO
        },
        driver: DriverKind::Process,
    }
}

#[test]
fn picks_least_utilised_worker() {
    let ws = [worker(10_000, 8_000), worker(10_000, 1_000)];
    assert_eq!(
        place(&ws, &[task(1, 1_000)]),
        vec![Placement {
            task: TaskId(1),
            worker: 1
        }]
    );
}

#[test]
fn four_of_five_fit_on_twenty_cores() {
    let ws = [worker(20_000, 0)];
    let pending: Vec<_> = (1..=5).map(|i| task(i, 5_000)).collect();
    let placed = place(&ws, &pending);
    assert_eq!(
        placed.iter().map(|p| p.task.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn big_task_does_not_block_small_ones() {
    let ws = [worker(4_000, 0)];
    let placed = place(&ws, &[task(1, 8_000), task(2, 1_000)]);
    assert_eq!(
        placed,
        vec![Placement {
            task: TaskId(2),
            worker: 0
        }]
    );
}

#[test]
fn skips_unschedulable_and_wrong_driver() {
    let mut a = worker(4_000, 0);
    a.schedulable = false;
    let mut b = worker(4_000, 0);
    b.drivers = vec![DriverKind::Docker];
    assert!(place(&[a, b], &[task(1, 1_000)]).is_empty());
}

#[test]
fn explains_oversized_request_with_largest_worker() {
    let ws = [worker(20_000, 0), worker(8_000, 0)];
    let e = could_ever_fit(&ws, &task(1, 64_000).request, DriverKind::Process).unwrap_err();
    assert!(e.contains("w20000") && e.contains("20.0 CPU"), "{e}");
    let e = could_ever_fit(&ws, &task(1, 1_000).request, DriverKind::Docker).unwrap_err();
    assert!(e.contains("docker"), "{e}");
}

#[test]
fn explains_waiting_for_capacity() {
    let ws = [worker(20_000, 20_000)];
    let r = wait_reason(&ws, &task(1, 5_000).request, DriverKind::Process);
    assert!(
        r.starts_with("waiting for capacity: cpu needs 5.0, 0.0 available"),
        "{r}"
    );
}

proptest! {
    /// Whatever the input, the placements never overcommit a worker and
    /// only ever place a task once.
    #[test]
    fn never_overcommits(
        totals in prop::collection::vec((1u64..50_000, 0u64..50_000), 1..8),
        reqs in prop::collection::vec(1u64..20_000, 0..40),
    ) {
        let ws: Vec<_> = totals.iter().map(|&(t, a)| worker(t, a.min(t))).collect();
        let pending: Vec<_> = reqs.iter().enumerate().map(|(i, &c)| task(i as u64, c)).collect();
        let placed = place(&ws, &pending);
        let mut used: Vec<u64> = ws.iter().map(|w| w.allocated.cpu_millis).collect();
        let mut seen = std::collections::HashSet::new();
        for p in &placed {
            prop_assert!(seen.insert(p.task));
            used[p.worker] += reqs[p.task.0 as usize];
        }
        for (u, w) in used.iter().zip(&ws) {
            prop_assert!(*u <= w.total.cpu_millis);
        }
        // Anything left unplaced really fits nowhere.
        let placed_ids: std::collections::HashSet<_> = placed.iter().map(|p| p.task).collect();
        let last_unplaced = pending.iter().rfind(|t| !placed_ids.contains(&t.id));
        if let Some(t) = last_unplaced {
            for (i, w) in ws.iter().enumerate() {
                prop_assert!(used[i] + t.request.cpu_millis > w.total.cpu_millis);
            }
        }
    }
}
