use super::*;
use berth_core::Strategy;
use proptest::prelude::*;

fn entry(name: &str, cpu: u64, alloc: u64) -> WorkerEntry {
    WorkerEntry {
        name: name.to_string(),
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
        labels: vec![],
        schedulable: true,
    }
}

fn index(ws: &[(u64, u64)]) -> ClusterIndex {
    let mut ix = ClusterIndex::default();
    for (i, &(t, a)) in ws.iter().enumerate() {
        ix.upsert(i as Slot, entry(&format!("w{i}"), t, a));
    }
    ix
}

fn task(id: u64, cpu: u64) -> PendingTask<'static> {
    PendingTask {
        id: TaskId(id),
        request: Resources {
            cpu_millis: cpu,
            ..Resources::ZERO
        },
        driver: DriverKind::Process,
        constraints: &[],
        strategy: None,
        pinned: None,
        queued_since: 0,
    }
}

const NEVER: PlaceConfig = PlaceConfig {
    strategy: Strategy::Binpack,
    starvation_ms: Millis::MAX,
};

fn slots(p: &[Placement]) -> Vec<(u64, Slot)> {
    p.iter().map(|p| (p.task.0, p.slot)).collect()
}

#[test]
fn binpack_fills_the_fullest_worker_that_fits() {
    let mut ix = index(&[(10_000, 8_000), (10_000, 1_000), (10_000, 9_500)]);
    assert_eq!(
        slots(&place(&mut ix, &[task(1, 1_000)], &NEVER, 0).placements),
        vec![(1, 0)]
    );
}

#[test]
fn spread_takes_the_emptiest_worker() {
    let mut ix = index(&[(10_000, 8_000), (10_000, 1_000)]);
    let mut t = task(1, 1_000);
    t.strategy = Some(Strategy::Spread);
    assert_eq!(
        slots(&place(&mut ix, &[t], &NEVER, 0).placements),
        vec![(1, 1)]
    );
    let cfg = PlaceConfig {
        strategy: Strategy::Spread,
        ..NEVER
    };
    assert_eq!(
        slots(&place(&mut ix, &[task(2, 1_000)], &cfg, 0).placements),
        vec![(2, 1)]
    );
}

#[test]
fn four_of_five_fit_on_twenty_cores() {
    let mut ix = index(&[(20_000, 0)]);
    let pending: Vec<_> = (1..=5).map(|i| task(i, 5_000)).collect();
    let placed = place(&mut ix, &pending, &NEVER, 0).placements;
    assert_eq!(placed.len(), 4);
    assert_eq!(ix.get(0).unwrap().allocated.cpu_millis, 20_000);
}

#[test]
fn big_task_does_not_block_small_ones() {
    let mut ix = index(&[(4_000, 0)]);
    assert_eq!(
        slots(&place(&mut ix, &[task(1, 8_000), task(2, 1_000)], &NEVER, 0).placements),
        vec![(2, 0)]
    );
}

#[test]
fn a_starving_task_gets_a_reserved_worker() {
    // Worker 0 half busy, worker 1 busier; the big task needs a whole worker.
    let mut ix = index(&[(8_000, 4_000), (8_000, 6_000)]);
    let cfg = PlaceConfig {
        strategy: Strategy::Binpack,
        starvation_ms: 1_000,
    };
    let pending = [task(1, 8_000), task(2, 1_000), task(3, 1_000)];
    // Not waiting long enough yet: the small ones go anywhere (binpack: w1).
    let mut early = ix.clone();
    assert_eq!(
        slots(&place(&mut early, &pending, &cfg, 500).placements),
        vec![(2, 1), (3, 1)]
    );
    // After the wait, the emptiest big-enough worker (w0) is kept for it.
    ix.bind(
        1,
        &Resources {
            cpu_millis: 2_000,
            ..Resources::ZERO
        },
    );
    let round = place(&mut ix, &pending, &cfg, 5_000);
    assert!(round.placements.iter().all(|p| p.slot != 0), "{round:?}");
    assert_eq!(round.reserved, Some((0, TaskId(1))));
    // A small task that would fit only on the kept worker says why it waits.
    let mut only0 = task(9, 1_000);
    only0.pinned = Some(0);
    let why = wait_reason(&ix, &only0, round.reserved);
    assert!(why.contains("kept free for task 1"), "{why}");
}

#[test]
fn constraints_drivers_and_pins_are_respected() {
    let mut ix = index(&[(4_000, 0), (4_000, 0), (4_000, 0)]);
    let mut gpu = entry("gpu-box", 4_000, 0);
    gpu.labels = vec![("gpu".into(), "a100".into())];
    ix.upsert(1, gpu);
    let mut docker = entry("docker-box", 4_000, 0);
    docker.drivers = vec![DriverKind::Docker];
    ix.upsert(2, docker);
    let c = [("gpu".to_string(), "a100".to_string())];
    let mut t = task(1, 1_000);
    t.constraints = &c;
    assert_eq!(
        slots(&place(&mut ix, &[t], &NEVER, 0).placements),
        vec![(1, 1)]
    );
    let mut d = task(2, 1_000);
    d.driver = DriverKind::Docker;
    assert_eq!(
        slots(&place(&mut ix, &[d], &NEVER, 0).placements),
        vec![(2, 2)]
    );
    let mut p = task(3, 1_000);
    p.pinned = Some(0);
    assert_eq!(
        slots(&place(&mut ix, &[p], &NEVER, 0).placements),
        vec![(3, 0)]
    );
}

#[test]
fn explains_oversized_requests_and_missing_labels() {
    let ix = index(&[(20_000, 0), (8_000, 0)]);
    let e = could_ever_fit(&ix, &task(1, 64_000)).unwrap_err();
    assert!(e.contains("w0") && e.contains("20.0 CPU"), "{e}");
    let mut d = task(1, 1_000);
    d.driver = DriverKind::Docker;
    assert!(could_ever_fit(&ix, &d).unwrap_err().contains("docker"));
    let c = [("zone".to_string(), "b".to_string())];
    let mut t = task(1, 1_000);
    t.constraints = &c;
    assert!(could_ever_fit(&ix, &t).unwrap_err().contains("zone=b"));
}

#[test]
fn explains_waiting_for_capacity() {
    let ix = index(&[(20_000, 20_000)]);
    let r = wait_reason(&ix, &task(1, 5_000), None);
    assert!(
        r.starts_with("waiting for capacity: cpu needs 5.0, 0.0 available"),
        "{r}"
    );
}

#[test]
fn the_index_orders_by_free_cpu_and_drops_unschedulable_workers() {
    let mut ix = index(&[(8_000, 1_000), (8_000, 6_000), (8_000, 0)]);
    assert_eq!(ix.with_free_cpu(0).collect::<Vec<_>>(), vec![1, 0, 2]);
    ix.set_schedulable(2, false);
    assert_eq!(ix.max_free_cpu(), 7_000);
    ix.release(
        1,
        &Resources {
            cpu_millis: 6_000,
            ..Resources::ZERO
        },
    );
    assert_eq!(ix.with_free_cpu(7_500).collect::<Vec<_>>(), vec![1]);
}

proptest! {
    /// Whatever the input, placements never overcommit a worker, place a
    /// task at most once, and a task left unplaced fits nowhere (so no task
    /// that fit was passed over for a later one).
    #[test]
    fn never_overcommits_and_never_skips_a_task_that_fits(
        totals in prop::collection::vec((1u64..50_000, 0u64..50_000), 1..12),
        reqs in prop::collection::vec(1u64..20_000, 0..60),
        spread in any::<bool>(),
    ) {
        let ws: Vec<_> = totals.iter().map(|&(t, a)| (t, a.min(t))).collect();
        let mut ix = index(&ws);
        let pending: Vec<_> = reqs.iter().enumerate().map(|(i, &c)| task(i as u64, c)).collect();
        let cfg = PlaceConfig { strategy: if spread { Strategy::Spread } else { Strategy::Binpack }, ..NEVER };
        let placed = place(&mut ix, &pending, &cfg, 0).placements;
        let mut used: Vec<u64> = ws.iter().map(|w| w.1).collect();
        let mut seen = std::collections::HashSet::new();
        for p in &placed {
            prop_assert!(seen.insert(p.task));
            used[p.slot as usize] += reqs[p.task.0 as usize];
        }
        for (i, (u, w)) in used.iter().zip(&ws).enumerate() {
            prop_assert!(*u <= w.0);
            prop_assert_eq!(ix.get(i as Slot).unwrap().allocated.cpu_millis, *u);
        }
        for t in pending.iter().filter(|t| !seen.contains(&t.id)) {
            for (i, w) in ws.iter().enumerate() {
                prop_assert!(used[i] + t.request.cpu_millis > w.0, "task {} fit on w{} but was skipped", t.id, i);
            }
        }
    }

    /// Higher priority first: the caller's order is respected, so with two
    /// tasks competing for one slot, the first in queue order wins.
    #[test]
    fn queue_order_wins_a_contested_slot(cpu in 1_000u64..8_000) {
        let mut ix = index(&[(cpu, 0)]);
        let placed = place(&mut ix, &[task(7, cpu), task(3, cpu)], &NEVER, 0).placements;
        prop_assert_eq!(slots(&placed), vec![(7, 0)]);
    }

    /// Every feasible task is eventually placed: a big task behind a steady
    /// stream of small ones runs once it has waited long enough.
    #[test]
    fn a_big_task_is_not_starved_by_a_stream_of_small_ones(
        workers in 1usize..4,
        small in 500u64..2_000,
        seed in any::<u64>(),
    ) {
        let mut ix = index(&vec![(8_000, 0); workers]);
        let cfg = PlaceConfig { strategy: Strategy::Binpack, starvation_ms: 3 };
        let mut running: Vec<(Slot, u64, u32)> = Vec::new(); // slot, cpu, rounds left
        // Every worker starts busy, with tasks ending at different times.
        for w in 0..workers as Slot {
            for k in 0..3u32 {
                ix.bind(w, &Resources { cpu_millis: 2_000, ..Resources::ZERO });
                running.push((w, 2_000, 1 + k));
            }
        }
        let mut next_id = 100u64;
        let mut rng = seed;
        let mut big_placed_at = None;
        for round in 0..200u32 {
            // Small tasks keep arriving.
            let mut pending = vec![PendingTask { queued_since: 0, ..task(1, 8_000) }];
            for _ in 0..6 {
                pending.push(PendingTask { queued_since: round as i64, ..task(next_id, small) });
                next_id += 1;
            }
            let placed = place(&mut ix, &pending, &cfg, round as i64).placements;
            for p in &placed {
                if p.task.0 == 1 {
                    big_placed_at = Some(round);
                }
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let cpu = if p.task.0 == 1 { 8_000 } else { small };
                running.push((p.slot, cpu, 2 + (rng >> 61) as u32));
            }
            if big_placed_at.is_some() {
                break;
            }
            for r in running.iter_mut() {
                r.2 -= 1;
                if r.2 == 0 {
                    ix.release(r.0, &Resources { cpu_millis: r.1, ..Resources::ZERO });
                }
            }
            running.retain(|r| r.2 > 0);
        }
        prop_assert!(big_placed_at.is_some(), "the big task starved");
    }
}
