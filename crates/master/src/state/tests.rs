//! Unit and property tests of the master state, driven without sockets or
//! disk (a `MemStore` stands in for the file where records must round-trip).

use super::*;
use berth_core::{AttemptState, Resources, TaskId, TaskSpec, WorkerId};
use berth_proto::HeldReport;
use berth_store::{MemStore, Store};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;

fn spec(cpu_millis: u64, mem: u64) -> TaskSpec {
    TaskSpec::process(
        vec!["true".into()],
        Resources {
            cpu_millis,
            memory_bytes: mem,
            ..Resources::ZERO
        },
    )
}

fn hello(id: &str, cpu_millis: u64) -> WorkerHello {
    let total = Resources {
        cpu_millis,
        memory_bytes: 8 * GIB,
        storage_bytes: 0,
        gpus: 0,
    };
    WorkerHello::process_only(id, id, total)
}

fn report(
    s: &mut State,
    a: berth_core::AttemptId,
    st: AttemptState,
    code: Option<i32>,
    now: i64,
    fx: &mut Effects,
) {
    let w = s.attempt(a).unwrap().worker_id.clone();
    s.report(
        &w,
        1,
        &HeldReport {
            attempt_id: a,
            state: st,
            exit_code: code,
            reason: String::new(),
        },
        now,
        fx,
    );
}

#[test]
fn five_tasks_on_twenty_cores_four_run_one_waits() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("tessa", 20_000), 0, &mut fx).unwrap();
    let ids: Vec<_> = (0..5)
        .map(|_| s.submit(spec(5_000, GIB / 2), false, 0, &mut fx).unwrap())
        .collect();
    assert_eq!(s.schedule(0, &mut fx), 4);
    assert_eq!(
        s.ledger().allocated(&WorkerId("tessa".into())).cpu_millis,
        20_000
    );
    assert_eq!(s.task(ids[4]).unwrap().state, TaskState::Queued);
    assert!(
        s.wait_reason(ids[4])
            .starts_with("waiting for capacity: cpu needs 5.0, 0.0 available")
    );
    let first = s.live_attempt(ids[0]).unwrap().id;
    report(&mut s, first, AttemptState::Succeeded, Some(0), 1, &mut fx);
    assert_eq!(s.schedule(1, &mut fx), 1);
    assert_eq!(s.task(ids[4]).unwrap().state, TaskState::Assigned);
    s.check_invariants().unwrap();
}

#[test]
fn oversized_request_is_refused_and_records_nothing() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("tessa", 20_000), 0, &mut fx).unwrap();
    let before = fx.writes.len();
    let e = s.submit(spec(64_000, GIB), false, 0, &mut fx).unwrap_err();
    assert!(
        e.to_string().contains("tessa") && e.to_string().contains("20.0 CPU"),
        "{e}"
    );
    assert_eq!(fx.writes.len(), before);
    assert_eq!(s.tasks().count(), 0);
    // ...unless the user asks to queue it anyway.
    let id = s.submit(spec(64_000, GIB), true, 0, &mut fx).unwrap();
    assert!(
        s.wait_reason(id)
            .contains("larger than every registered worker")
    );
}

#[test]
fn late_and_duplicate_reports_are_ignored() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().id;
    report(&mut s, a, AttemptState::Succeeded, Some(0), 1, &mut fx);
    report(&mut s, a, AttemptState::Failed, Some(3), 2, &mut fx);
    report(&mut s, a, AttemptState::Running, None, 3, &mut fx);
    let task = s.task(t).unwrap();
    assert_eq!(
        (task.state, task.exit_code),
        (TaskState::Succeeded, Some(0))
    );
    assert_eq!(s.ledger().allocated(&WorkerId("w".into())), Resources::ZERO);
    s.check_invariants().unwrap();
}

#[test]
fn silent_worker_goes_down_and_its_task_is_retried_elsewhere() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("a", 4_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    s.hello(hello("b", 4_000), 0, &mut fx).unwrap();
    let first = s.live_attempt(t).unwrap().clone();
    // b keeps heartbeating, a goes silent.
    s.heartbeat(&WorkerId("b".into()), &[], false, 6_500, &mut fx)
        .unwrap();
    let down = s.tick(6_500, &mut fx);
    assert_eq!(down, vec![first.worker_id.clone()]);
    // Silence is not a fact: the attempt is unknown and keeps its
    // resources, apart from the live ones; the task is replaced.
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Unknown);
    assert_eq!(s.ledger().allocated(&first.worker_id), first.resources);
    assert_eq!(s.ledger().live_allocated(&first.worker_id), Resources::ZERO);
    assert_eq!(s.ledger().unknown(&first.worker_id), (1, first.resources));
    s.schedule(6_500, &mut fx);
    let second = s.live_attempt(t).unwrap().clone();
    assert_ne!(second.worker_id, first.worker_id);
    s.check_invariants().unwrap();
    // a comes back without it: now its fate is known, and it is released.
    s.hello(hello("a", 4_000), 7_000, &mut fx).unwrap();
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Lost);
    assert_eq!(s.ledger().allocated(&first.worker_id), Resources::ZERO);
    assert_eq!(s.live_attempt(t).unwrap().id, second.id);
    s.check_invariants().unwrap();
}

/// Two workers, a task placed on `a`, `a` declared down and the task
/// replaced on `b`. Returns (task, first attempt, replacement).
fn replaced_after_silence(
    s: &mut State,
    fx: &mut Effects,
) -> (TaskId, berth_core::AttemptRecord, berth_core::AttemptRecord) {
    s.hello(hello("a", 4_000), 0, fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, fx).unwrap();
    s.schedule(0, fx);
    let first = s.live_attempt(t).unwrap().clone();
    report(s, first.id, AttemptState::Running, None, 10, fx);
    s.hello(hello("b", 4_000), 0, fx).unwrap();
    s.heartbeat(&WorkerId("b".into()), &[], false, 6_500, fx)
        .unwrap();
    s.tick(6_500, fx);
    s.schedule(6_500, fx);
    let second = s.live_attempt(t).unwrap().clone();
    assert_eq!(second.worker_id, WorkerId("b".into()));
    (t, first, second)
}

fn held(a: &berth_core::AttemptRecord, st: AttemptState, code: Option<i32>) -> HeldReport {
    HeldReport {
        attempt_id: a.id,
        state: st,
        exit_code: code,
        reason: String::new(),
    }
}

#[test]
fn an_unknown_attempt_that_still_runs_is_stopped_and_released_only_when_it_ends() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let (t, first, second) = replaced_after_silence(&mut s, &mut fx);
    let mut fx = Effects::default();
    let a = WorkerId("a".into());
    s.hello(
        WorkerHello {
            held: vec![held(&first, AttemptState::Running, None)],
            ..hello("a", 4_000)
        },
        7_000,
        &mut fx,
    )
    .unwrap();
    assert!(
        fx.outbound
            .iter()
            .any(|m| matches!(m, Outbound::Stop { attempt, .. } if *attempt == first.id)),
        "{:?}",
        fx.outbound
    );
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Unknown);
    assert_eq!(
        s.ledger().allocated(&a),
        first.resources,
        "held until it ends"
    );
    assert_eq!(s.stale_on(&a), 1, "no new work on a until it has stopped");
    let mut fx = Effects::default();
    s.report(
        &a,
        9,
        &held(&first, AttemptState::Cancelled, Some(143)),
        7_500,
        &mut fx,
    );
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Cancelled);
    assert_eq!(s.ledger().allocated(&a), Resources::ZERO);
    assert_eq!(s.stale_on(&a), 0);
    // The replacement is untouched.
    assert_eq!(s.live_attempt(t).unwrap().id, second.id);
    s.check_invariants().unwrap();
}

#[test]
fn the_first_success_wins_and_the_replacement_is_stopped() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let (t, first, second) = replaced_after_silence(&mut s, &mut fx);
    let mut fx = Effects::default();
    s.hello(
        WorkerHello {
            held: vec![held(&first, AttemptState::Running, None)],
            ..hello("a", 4_000)
        },
        7_000,
        &mut fx,
    )
    .unwrap();
    let mut fx = Effects::default();
    let a = WorkerId("a".into());
    s.report(
        &a,
        9,
        &held(&first, AttemptState::Succeeded, Some(0)),
        7_500,
        &mut fx,
    );
    let task = s.task(t).unwrap();
    assert_eq!(
        (task.state, task.exit_code),
        (TaskState::Succeeded, Some(0))
    );
    assert_eq!(s.attempt(second.id).unwrap().state, AttemptState::Stopping);
    assert!(
        fx.outbound
            .iter()
            .any(|m| matches!(m, Outbound::Stop { attempt, .. } if *attempt == second.id)),
        "{:?}",
        fx.outbound
    );
    s.check_invariants().unwrap();
    // The replacement's end is recorded; the task stays succeeded.
    let b = WorkerId("b".into());
    s.report(
        &b,
        3,
        &held(&second, AttemptState::Cancelled, Some(143)),
        8_000,
        &mut fx,
    );
    assert_eq!(s.task(t).unwrap().state, TaskState::Succeeded);
    assert_eq!(s.ledger().allocated(&b), Resources::ZERO);
    s.check_invariants().unwrap();
}

#[test]
fn confirm_dead_releases_unknown_attempts_and_plain_unregister_refuses() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let (_t, first, _second) = replaced_after_silence(&mut s, &mut fx);
    let e = s.unregister("a", false, 7_000, &mut fx).unwrap_err();
    assert!(
        matches!(e, AdminError::UnknownFate(ref n, 1) if n == "a"),
        "{e}"
    );
    assert!(e.to_string().contains("--confirm-dead"), "{e}");
    assert_eq!(s.unregister("a", true, 7_000, &mut fx).unwrap(), 1);
    let a = s.attempt(first.id).unwrap();
    assert_eq!(a.state, AttemptState::Lost);
    assert!(a.reason.contains("confirmed dead"), "{}", a.reason);
    assert_eq!(s.ledger().allocated(&first.worker_id), Resources::ZERO);
    s.check_invariants().unwrap();
}

#[test]
fn a_worker_back_with_less_than_it_holds_is_overcommitted_until_it_fits() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let w = WorkerId("w".into());
    s.hello(hello("w", 8_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(6_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().clone();
    report(&mut s, a.id, AttemptState::Running, None, 1, &mut fx);
    // The agent restarts with --cpus 4 and still runs the 6-core attempt.
    s.hello(
        WorkerHello {
            held: vec![HeldReport {
                attempt_id: a.id,
                state: AttemptState::Running,
                exit_code: None,
                reason: String::new(),
            }],
            ..hello("w", 4_000)
        },
        10,
        &mut fx,
    )
    .unwrap();
    assert!(s.is_overcommitted(&w));
    assert!(!s.takes_work(&w));
    s.check_invariants().unwrap();
    let small = s.submit(spec(500, 0), false, 20, &mut fx).unwrap();
    assert_eq!(
        s.schedule(20, &mut fx),
        0,
        "nothing placed while overcommitted"
    );
    report(&mut s, a.id, AttemptState::Succeeded, Some(0), 30, &mut fx);
    assert!(!s.is_overcommitted(&w));
    assert_eq!(s.schedule(40, &mut fx), 1);
    assert!(s.live_attempt(small).is_some());
    s.check_invariants().unwrap();
}

#[test]
fn attempt_ids_a_worker_has_seen_are_never_handed_out_again() {
    // The master's records were restored from an older copy: its highest
    // attempt id is 1, but worker w has already run attempts up to 7.
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("other", 4_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    assert_eq!(s.live_attempt(t).unwrap().id.0, 1);
    s.hello(
        WorkerHello {
            max_attempt_id: 7,
            stop_grace_ms: 0,
            ..hello("w", 4_000)
        },
        10,
        &mut fx,
    )
    .unwrap();
    let t2 = s.submit(spec(1_000, 0), false, 20, &mut fx).unwrap();
    s.schedule(20, &mut fx);
    assert_eq!(s.live_attempt(t2).unwrap().id.0, 8, "ids continue past 7");
    s.check_invariants().unwrap();
}

#[test]
fn an_at_most_once_task_is_replaced_only_after_its_worker_has_surely_stopped_it() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(
        WorkerHello {
            stop_grace_ms: 2_000,
            ..hello("a", 4_000)
        },
        0,
        &mut fx,
    )
    .unwrap();
    let mut sp = spec(1_000, 0);
    sp.stop_after_disconnect_ms = Some(10_000);
    let t = s.submit(sp, false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let first = s.live_attempt(t).unwrap().clone();
    report(&mut s, first.id, AttemptState::Running, None, 10, &mut fx);
    s.hello(hello("b", 4_000), 0, &mut fx).unwrap();
    let b = WorkerId("b".into());
    let beat = |s: &mut State, now: i64, fx: &mut Effects| {
        s.heartbeat(&b, &[], false, now, fx).unwrap();
        s.tick(now, fx);
        s.schedule(now, fx)
    };
    // a's last sign of life was at 10; down at 6_500.
    assert_eq!(beat(&mut s, 6_500, &mut fx), 0, "not replaced yet");
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Unknown);
    assert_eq!(s.task(t).unwrap().state, TaskState::Queued);
    // Lease: 10 + 10 s + 2 s grace + margin.
    let until = 10 + 10_000 + 2_000 + super::LEASE_MARGIN_MS;
    assert_eq!(
        beat(&mut s, until - 1, &mut fx),
        0,
        "not before the lease ends"
    );
    assert_eq!(s.ledger().allocated(&first.worker_id), first.resources);
    assert_eq!(beat(&mut s, until, &mut fx), 1, "replaced once it has");
    assert_eq!(
        s.attempt(first.id).unwrap().state,
        AttemptState::Disconnected
    );
    assert_eq!(s.ledger().allocated(&first.worker_id), Resources::ZERO);
    assert_eq!(s.live_attempt(t).unwrap().worker_id, b);
    s.check_invariants().unwrap();
}

/// Simulation seed 68: an at-most-once task whose worker's agent was dead
/// (not cut off) runs on past its lease; when the worker comes back still
/// running it, the lease is disproven and must not end the attempt.
#[test]
fn a_lease_disproven_by_the_returning_worker_never_replaces_a_running_attempt() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("a", 4_000), 0, &mut fx).unwrap();
    let mut sp = spec(1_000, 0);
    sp.stop_after_disconnect_ms = Some(2_000);
    let t = s.submit(sp, false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let first = s.live_attempt(t).unwrap().clone();
    report(&mut s, first.id, AttemptState::Running, None, 10, &mut fx);
    s.tick(6_500, &mut fx);
    assert_eq!(s.attempt(first.id).unwrap().state, AttemptState::Unknown);
    // Back before the lease ends, still running it.
    s.hello(
        WorkerHello {
            held: vec![held(&first, AttemptState::Running, None)],
            ..hello("a", 4_000)
        },
        7_000,
        &mut fx,
    )
    .unwrap();
    s.hello(hello("b", 4_000), 7_000, &mut fx).unwrap();
    for now in [20_000, 60_000] {
        let still = [held(&first, AttemptState::Running, None)];
        s.heartbeat(&WorkerId("a".into()), &still, false, now, &mut fx)
            .unwrap();
        s.heartbeat(&WorkerId("b".into()), &[], false, now, &mut fx)
            .unwrap();
        s.tick(now, &mut fx);
        s.schedule(now, &mut fx);
        assert_ne!(
            s.attempt(first.id).unwrap().state,
            AttemptState::Disconnected,
            "the clock never decides it stopped"
        );
        assert!(
            s.attempts_of(t)
                .all(|a| a.id == first.id || !a.state.holds_resources()),
            "no second attempt while the first may run"
        );
    }
    assert!(
        s.wait_reason_at(t, 60_000)
            .contains("earlier attempt to stop"),
        "{}",
        s.wait_reason_at(t, 60_000)
    );
    // It stops at last: the task is placed again.
    s.report(
        &WorkerId("a".into()),
        9,
        &held(&first, AttemptState::Cancelled, Some(143)),
        61_000,
        &mut fx,
    );
    s.heartbeat(&WorkerId("b".into()), &[], false, 61_000, &mut fx)
        .unwrap();
    assert_eq!(s.schedule(61_000, &mut fx), 1);
    assert!(s.live_attempt(t).is_some_and(|a| a.id != first.id));
    s.check_invariants().unwrap();
}

/// Simulation seed 1: a start arrived and ran, but the word that it runs
/// was lost; the worker's hello lists it (and so its id as seen). The
/// attempt is the worker's own, not a clash with an older id.
#[test]
fn an_attempt_the_hello_holds_is_not_taken_for_a_reused_id() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().clone();
    assert_eq!(a.state, AttemptState::Assigned);
    s.hello(
        WorkerHello {
            held: vec![held(&a, AttemptState::Running, None)],
            max_attempt_id: a.id.0,
            ..hello("w", 4_000)
        },
        100,
        &mut fx,
    )
    .unwrap();
    assert_eq!(s.attempt(a.id).unwrap().state, AttemptState::Running);
    assert_eq!(s.live_attempt(t).unwrap().id, a.id);
    s.check_invariants().unwrap();
}

/// Simulation seeds 12, 20 and 25: a worker restarted with fewer CPUs
/// than were placed on it must not be sent starts its admission refuses.
#[test]
fn starts_beyond_a_lowered_capacity_are_withdrawn_and_placed_again() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let w = WorkerId("w".into());
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    let tasks: Vec<TaskId> = (0..3)
        .map(|_| s.submit(spec(1_200, 0), false, 0, &mut fx).unwrap())
        .collect();
    assert_eq!(s.schedule(0, &mut fx), 3);
    let attempts: Vec<_> = tasks
        .iter()
        .map(|t| s.live_attempt(*t).unwrap().id)
        .collect();
    // None of the starts arrived; the agent comes back with 2.8 CPUs.
    let mut fx = Effects::default();
    s.hello(hello("w", 2_800), 100, &mut fx).unwrap();
    let started: Vec<_> = fx
        .outbound
        .iter()
        .filter_map(|m| match m {
            Outbound::Start { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(started, attempts[..2], "only what fits is sent again");
    assert_eq!(
        s.attempt(attempts[2]).unwrap().state,
        AttemptState::Lost,
        "the newest is withdrawn"
    );
    assert_eq!(s.task(tasks[2]).unwrap().state, TaskState::Queued);
    assert!(s.ledger().allocated(&w).le(&Resources {
        cpu_millis: 2_800,
        memory_bytes: 8 * GIB,
        ..Resources::ZERO
    }));
    assert!(!s.is_overcommitted(&w));
    s.check_invariants().unwrap();
}

/// Simulation seed 49: an overcommitted worker is still overcommitted
/// after the master restarts from its records.
#[test]
fn overcommitted_survives_a_restart_from_the_records() {
    let mut s = State::new(StateConfig::default());
    let mut store = MemStore::new();
    let mut fx = Effects::default();
    let w = WorkerId("w".into());
    s.hello(hello("w", 8_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(6_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().clone();
    report(&mut s, a.id, AttemptState::Running, None, 1, &mut fx);
    s.hello(
        WorkerHello {
            held: vec![held(&a, AttemptState::Running, None)],
            ..hello("w", 4_000)
        },
        10,
        &mut fx,
    )
    .unwrap();
    assert!(s.is_overcommitted(&w));
    store.commit(&fx.writes).unwrap();
    let back = State::from_snapshot(store.load().unwrap(), StateConfig::default(), 20);
    assert!(back.is_overcommitted(&w));
    back.check_invariants().unwrap();
}

#[test]
fn every_heartbeat_is_acknowledged() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    let mut fx = Effects::default();
    s.heartbeat(&WorkerId("w".into()), &[], false, 10, &mut fx)
        .unwrap();
    assert!(fx.outbound.contains(&Outbound::Ack {
        worker: WorkerId("w".into()),
        seq: berth_proto::HEARTBEAT_SEQ
    }));
}

#[test]
fn a_heartbeat_from_before_a_start_arrived_does_not_free_a_cancelled_attempt() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let w = WorkerId("w".into());
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().clone();
    s.cancel(t, 5, &mut fx).unwrap();
    // A heartbeat the worker sent before the start reached it.
    s.heartbeat(&w, &[], false, 10, &mut fx).unwrap();
    assert_eq!(s.attempt(a.id).unwrap().state, AttemptState::Stopping);
    assert_eq!(s.ledger().allocated(&w), a.resources, "still held");
    // The worker started it, then got the stop: its final report frees it.
    report(&mut s, a.id, AttemptState::Running, None, 20, &mut fx);
    report(
        &mut s,
        a.id,
        AttemptState::Cancelled,
        Some(143),
        30,
        &mut fx,
    );
    assert_eq!(s.ledger().allocated(&w), Resources::ZERO);
    assert_eq!(s.task(t).unwrap().state, TaskState::Cancelled);
    s.check_invariants().unwrap();
}

/// The master's wall clock steps an hour back while a task backs off: the
/// backoff ends one backoff later on the new clock, not an hour later (and
/// an hour forward does not skip it).
#[test]
fn a_wall_clock_step_neither_stretches_nor_skips_a_retry_backoff() {
    for step in [-3_600_000, 3_600_000] {
        let mut s = State::new(StateConfig::default());
        let mut fx = Effects::default();
        let t = s.submit(spec(1_000, 0), true, 0, &mut fx).unwrap();
        let lose = |s: &mut State, now: i64, fx: &mut Effects| {
            s.hello(hello("w", 4_000), now, fx).unwrap();
            assert_eq!(s.schedule(now, fx), 1, "placed at {now}");
            let a = s.live_attempt(t).unwrap().id;
            report(s, a, AttemptState::Running, None, now, fx);
            s.hello(hello("w", 4_000), now + 10, fx).unwrap();
        };
        lose(&mut s, 0, &mut fx);
        lose(&mut s, 10, &mut fx);
        // Backing off for 1 s from t=20.
        assert_eq!(s.schedule(100, &mut fx), 0);
        // The wall clock steps; the engine moves liveness by the step.
        s.shift_liveness(step);
        let now = 100 + step;
        assert_eq!(s.schedule(now + 500, &mut fx), 0, "not skipped ({step})");
        s.tick(now + 1_000, &mut fx);
        assert_eq!(
            s.schedule(now + 1_000, &mut fx),
            1,
            "placed one backoff later on the new clock ({step}): {}",
            s.wait_reason_at(t, now + 1_000)
        );
        s.check_invariants().unwrap();
    }
}

#[test]
fn lost_attempts_retry_with_backoff_then_fail() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    let mut sp = spec(1_000, 0);
    sp.retries = 2;
    let t = s.submit(sp, true, 0, &mut fx).unwrap();
    let w = WorkerId("w".into());
    let mut now = 0;
    let lose = |s: &mut State, now: i64, fx: &mut Effects| {
        s.hello(hello("w", 4_000), now, fx).unwrap();
        assert_eq!(s.schedule(now, fx), 1, "placed at {now}");
        let a = s.live_attempt(TaskId(1)).unwrap().id;
        report(s, a, AttemptState::Running, None, now, fx);
        // The worker comes back without it: lost.
        s.hello(hello("w", 4_000), now + 10, fx).unwrap();
    };
    lose(&mut s, now, &mut fx);
    // First retry is immediate.
    now += 10;
    assert_eq!(s.task(t).unwrap().state, TaskState::Queued);
    lose(&mut s, now, &mut fx);
    now += 10;
    // Second retry waits 1 s.
    assert_eq!(s.schedule(now + 500, &mut fx), 0);
    assert!(s.wait_reason_at(t, now + 500).contains("eligible again in"));
    s.tick(now + 1_000, &mut fx);
    lose(&mut s, now + 1_000, &mut fx);
    // Third loss exceeds retries=2: failed, resources released.
    let task = s.task(t).unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert!(task.reason.contains("lost 3 times"), "{}", task.reason);
    assert_eq!(s.ledger().allocated(&w), Resources::ZERO);
    assert_eq!(s.counters().attempts_lost, 3);
    s.check_invariants().unwrap();
}

#[test]
fn reconcile_finds_and_fixes_a_corrupted_index_once() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("tessa", 20_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(5_000, GIB / 2), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let phantom = s.live_attempt(t).unwrap().clone();
    report(
        &mut s,
        phantom.id,
        AttemptState::Succeeded,
        Some(0),
        1,
        &mut fx,
    );
    // Plant the predecessor's bug: the index still counts the finished attempt.
    s.ledger_mut().bind(&phantom);
    let dry = s.reconcile(true, &[], 2, &mut fx);
    assert_eq!(dry.fixes.len(), 1);
    assert_eq!(dry.fixes[0].before.cpu_millis, 5_000);
    assert_eq!(dry.fixes[0].after.cpu_millis, 0);
    assert!(s.check_invariants().is_err(), "dry run must change nothing");
    assert_eq!(s.reconcile(false, &[], 2, &mut fx).fixes.len(), 1);
    assert!(s.reconcile(false, &[], 2, &mut fx).fixes.is_empty());
    s.check_invariants().unwrap();
}

#[test]
fn reconcile_rewrites_a_hand_edited_record_and_then_finds_nothing() {
    let mut s = State::new(StateConfig::default());
    let mut store = MemStore::new();
    let mut fx = Effects::default();
    s.hello(hello("tessa", 20_000), 0, &mut fx).unwrap();
    let t = s.submit(spec(5_000, GIB / 2), false, 0, &mut fx).unwrap();
    s.schedule(0, &mut fx);
    let a = s.live_attempt(t).unwrap().id;
    report(&mut s, a, AttemptState::Succeeded, Some(0), 1, &mut fx);
    store.commit(&fx.writes).unwrap();
    // An operator marks the finished attempt running again in the file.
    let mut edited = s.attempt(a).unwrap().clone();
    edited.state = AttemptState::Running;
    edited.ended_ms = None;
    store
        .commit(&[berth_store::Write::Attempt(edited)])
        .unwrap();

    let mut fx = Effects::default();
    let dry = s.reconcile(true, &store.live_attempts().unwrap(), 5, &mut fx);
    assert_eq!(dry.fixes.len(), 1);
    let f = &dry.fixes[0];
    assert_eq!(
        (f.kind, f.before.cpu_millis, f.after.cpu_millis, f.tasks),
        (FixKind::Records, 5_000, 0, 0)
    );
    assert!(fx.writes.is_empty(), "a dry run writes nothing");
    assert_eq!(store.live_attempts().unwrap().len(), 1);

    let fixed = s.reconcile(false, &store.live_attempts().unwrap(), 5, &mut fx);
    assert_eq!(fixed.fixes.len(), 1);
    store.commit(&fx.writes).unwrap();
    assert!(store.live_attempts().unwrap().is_empty());
    let mut fx = Effects::default();
    assert!(
        s.reconcile(false, &store.live_attempts().unwrap(), 6, &mut fx)
            .fixes
            .is_empty()
    );
    assert_eq!(s.counters().record_fixes, 1);
    assert_eq!(s.counters().reconcile_runs, 3);
}

#[test]
fn an_undrained_worker_takes_work_again() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("w", 4_000), 0, &mut fx).unwrap();
    s.drain("w", &mut fx).unwrap();
    let t = s.submit(spec(1_000, 0), false, 0, &mut fx).unwrap();
    assert_eq!(s.schedule(0, &mut fx), 0, "a drained worker takes nothing");
    assert_eq!(s.task(t).unwrap().state, TaskState::Queued);

    let mut fx = Effects::default();
    assert_eq!(s.undrain("w", &mut fx).unwrap(), WorkerId("w".into()));
    // The cleared flag is recorded, so it survives a master restart.
    assert!(
        fx.writes
            .iter()
            .any(|w| matches!(w, Write::Worker(r) if r.name == "w" && !r.drained)),
        "{:?}",
        fx.writes
    );
    assert!(s.takes_work(&WorkerId("w".into())));
    assert_eq!(s.schedule(1, &mut fx), 1);
    assert_eq!(s.task(t).unwrap().state, TaskState::Assigned);
    // Undraining a worker that is not drained changes and writes nothing.
    let mut fx = Effects::default();
    s.undrain("w", &mut fx).unwrap();
    assert!(fx.writes.is_empty());
    assert!(matches!(
        s.undrain("nobody", &mut fx),
        Err(AdminError::NoSuchWorker(_))
    ));
    s.check_invariants().unwrap();
}

#[test]
fn priorities_pins_drain_unregister_and_registration() {
    let mut s = State::new(StateConfig::default());
    let mut fx = Effects::default();
    s.hello(hello("a", 4_000), 0, &mut fx).unwrap();
    s.hello(hello("b", 4_000), 0, &mut fx).unwrap();
    // Higher priority wins the last slot on a full cluster.
    let low = s.submit(spec(4_000, 0), false, 0, &mut fx).unwrap();
    let mut hi = spec(4_000, 0);
    hi.priority = 10;
    let high = s.submit(hi, false, 0, &mut fx).unwrap();
    let mut pinned = spec(4_000, 0);
    pinned.pinned_worker = Some("b".into());
    let pin = s.submit(pinned, false, 0, &mut fx).unwrap();
    assert_eq!(s.schedule(0, &mut fx), 2);
    assert_eq!(s.task(high).unwrap().state, TaskState::Assigned);
    assert_eq!(s.task(low).unwrap().state, TaskState::Assigned);
    assert_eq!(s.task(pin).unwrap().state, TaskState::Queued);
    let mut nobody = spec(1_000, 0);
    nobody.pinned_worker = Some("zed".into());
    assert!(
        s.submit(nobody, false, 0, &mut fx)
            .unwrap_err()
            .to_string()
            .contains("zed")
    );

    // Drain b: what runs there finishes, nothing new lands there.
    s.drain("b", &mut fx).unwrap();
    assert!(!s.takes_work(&WorkerId("b".into())));
    let on_b = [low, high]
        .into_iter()
        .find(|t| s.live_attempt(*t).unwrap().worker_id.0 == "b")
        .unwrap();
    let a = s.live_attempt(on_b).unwrap().id;
    assert!(
        s.unregister("b", false, 0, &mut fx)
            .unwrap_err()
            .to_string()
            .contains("still runs 1")
    );
    report(&mut s, a, AttemptState::Succeeded, Some(0), 1, &mut fx);
    assert_eq!(
        s.schedule(1, &mut fx),
        0,
        "the pinned task waits: b is drained"
    );
    assert!(
        s.wait_reason(pin).contains("taking work"),
        "{}",
        s.wait_reason(pin)
    );
    s.unregister("b", false, 0, &mut fx).unwrap();
    assert!(s.worker(&WorkerId("b".into())).is_none());
    assert!(
        s.unregister("a", false, 0, &mut fx)
            .unwrap_err()
            .to_string()
            .contains("drain it first")
    );
    s.check_invariants().unwrap();

    // Registration required: only registered names join.
    let cfg = StateConfig {
        require_registration: true,
        ..StateConfig::default()
    };
    let mut r = State::new(cfg);
    assert!(
        r.hello(hello("x", 1_000), 0, &mut fx)
            .unwrap_err()
            .to_string()
            .contains("register x")
    );
    r.register("x", &mut fx).unwrap();
    r.hello(hello("x", 1_000), 0, &mut fx).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Submit { cpu: u64, mem_mib: u64 },
    Schedule,
    Start(usize),
    Finish(usize, i32),
    Cancel(usize),
    WorkerHello(usize),
    TimePasses(i64),
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..12_000, 0u64..4096).prop_map(|(cpu, mem_mib)| Op::Submit { cpu, mem_mib }),
        3 => Just(Op::Schedule),
        3 => any::<usize>().prop_map(Op::Start),
        3 => (any::<usize>(), -1i32..3).prop_map(|(i, c)| Op::Finish(i, c)),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (0usize..3).prop_map(Op::WorkerHello),
        1 => (0i64..8_000).prop_map(Op::TimePasses),
        1 => Just(Op::Reconcile),
    ]
}

fn nth<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over random submit / place / start / finish / cancel / restart /
    /// silence sequences: the index always equals the sum over resource-
    /// holding attempts, never exceeds a worker's total, never goes
    /// negative (checked arithmetic panics), one live attempt per task, and
    /// the records rebuild the same state.
    #[test]
    fn ledger_always_equals_the_attempt_sum(ops in prop::collection::vec(op(), 1..120)) {
        let mut s = State::new(StateConfig::default());
        let mut store = MemStore::new();
        let mut now = 0i64;
        for i in 0..2 {
            let mut fx = Effects::default();
            s.hello(hello(&format!("w{i}"), 16_000), now, &mut fx).unwrap();
            store.commit(&fx.writes).unwrap();
        }
        for op in ops {
            let mut fx = Effects::default();
            let live: Vec<_> = s.attempts().filter(|a| a.state.holds_resources()).map(|a| a.id).collect();
            let open: Vec<_> = s.tasks().filter(|t| !t.state.is_terminal()).map(|t| t.id).collect();
            match op {
                Op::Submit { cpu, mem_mib } => {
                    let _ = s.submit(spec(cpu, mem_mib << 20), false, now, &mut fx);
                }
                Op::Schedule => { s.schedule(now, &mut fx); }
                Op::Start(i) => if let Some(a) = nth(&live, i) {
                    report(&mut s, a, AttemptState::Running, None, now, &mut fx);
                },
                Op::Finish(i, code) => if let Some(a) = nth(&live, i) {
                    let st = if code == 0 { AttemptState::Succeeded } else { AttemptState::Failed };
                    report(&mut s, a, st, Some(code), now, &mut fx);
                },
                Op::Cancel(i) => if let Some(t) = nth(&open, i) {
                    s.cancel(t, now, &mut fx).unwrap();
                },
                Op::WorkerHello(i) => {
                    let id = WorkerId(format!("w{i}"));
                    // Re-register holding what the master thinks it runs.
                    let held = s.ledger().attempts_on(&id)
                        .filter(|a| s.attempt(*a).unwrap().state != AttemptState::Assigned)
                        .map(|a| HeldReport { attempt_id: a, state: AttemptState::Running, exit_code: None, reason: String::new() })
                        .collect();
                    let mut h = hello(&id.0, 16_000);
                    h.held = held;
                    s.hello(h, now, &mut fx).unwrap();
                }
                Op::TimePasses(ms) => {
                    now += ms;
                    // w0 keeps heartbeating; others may go down.
                    let w0 = WorkerId("w0".into());
                    let held: Vec<_> = s.ledger().attempts_on(&w0)
                        .filter(|a| s.attempt(*a).unwrap().state != AttemptState::Assigned)
                        .map(|a| HeldReport { attempt_id: a, state: AttemptState::Running, exit_code: None, reason: String::new() })
                        .collect();
                    let _ = s.heartbeat(&w0, &held, false, now, &mut fx);
                    s.tick(now, &mut fx);
                }
                Op::Reconcile => {
                    store.commit(&fx.writes).unwrap();
                    fx.writes.clear();
                    let records = store.live_attempts().unwrap();
                    let r = s.reconcile(false, &records, now, &mut fx);
                    prop_assert!(r.fixes.is_empty(), "{:?}", r);
                }
            }
            store.commit(&fx.writes).unwrap();
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "{}", e);
            }
        }
        let rebuilt = State::from_snapshot(store.load().unwrap(), StateConfig::default(), now);
        for w in s.workers() {
            prop_assert_eq!(rebuilt.ledger().allocated(&w.id), s.ledger().allocated(&w.id));
        }
        prop_assert_eq!(rebuilt.queue().collect::<Vec<_>>(), s.queue().collect::<Vec<_>>());
        rebuilt.check_invariants().map_err(TestCaseError::fail)?;
    }
}
