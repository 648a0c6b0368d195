//! The store conformance suite. Every backend runs these same checks (see
//! `tests/conformance.rs`); a new backend is done when it passes them.

use crate::{Store, Write};
use berth_core::{
    AttemptId, AttemptRecord, AttemptState, DriverKind, GpuInfo, Resources, TaskId, TaskRecord,
    TaskSpec, TaskState, WorkerId, WorkerRecord, WorkerState,
};

pub fn sample_task(id: u64) -> TaskRecord {
    TaskRecord {
        id: TaskId(id),
        spec: TaskSpec {
            name: format!("t{id}"),
            driver: DriverKind::Process,
            image: None,
            command: vec!["echo".into(), "hello world".into()],
            env: vec![("K".into(), "v=1".into())],
            resources: Resources {
                cpu_millis: 1500,
                memory_bytes: 512 << 20,
                storage_bytes: 0,
                gpus: 1,
            },
            retries: 2,
            timeout_ms: Some(60_000),
            priority: -3,
            constraints: vec![("zone".into(), "b".into())],
            strategy: Some(berth_core::Strategy::Spread),
            pinned_worker: Some("Tessa".into()),
            stop_after_disconnect_ms: Some(30_000),
        },
        state: TaskState::Queued,
        submitted_ms: 1_000 + id as i64,
        ended_ms: None,
        exit_code: None,
        reason: String::new(),
        cancel_requested: false,
    }
}

pub fn sample_worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: WorkerId(id.into()),
        name: format!("name-{id}"),
        total: Resources {
            cpu_millis: 20_000,
            memory_bytes: 8 << 30,
            storage_bytes: 100 << 30,
            gpus: 2,
        },
        drivers: vec!["process".into()],
        gpus: vec![GpuInfo {
            index: 0,
            model: "Fake".into(),
            memory_bytes: 1 << 34,
            uuid: "GPU-0".into(),
        }],
        state: WorkerState::Ready,
        last_seen_ms: 5,
        labels: vec![("gpu".into(), "a100".into())],
        drained: true,
    }
}

pub fn sample_attempt(id: u64, task: u64, worker: &str) -> AttemptRecord {
    AttemptRecord {
        id: AttemptId(id),
        task_id: TaskId(task),
        worker_id: WorkerId(worker.into()),
        resources: sample_task(task).spec.resources,
        gpu_ids: vec![1],
        state: AttemptState::Assigned,
        created_ms: 7,
        started_ms: None,
        ended_ms: None,
        exit_code: None,
        reason: String::new(),
    }
}

/// An empty store loads empty.
pub fn empty_loads_empty<S: Store>(mut s: S) {
    let snap = s.load().expect("load");
    assert!(snap.tasks.is_empty() && snap.attempts.is_empty() && snap.workers.is_empty());
}

/// What is committed is loaded back exactly, in id order.
pub fn round_trip<S: Store>(mut s: S) {
    let w = sample_worker("w1");
    let t2 = sample_task(2);
    let t1 = sample_task(1);
    let a = sample_attempt(1, 1, "w1");
    s.commit(&[
        Write::Worker(w.clone()),
        Write::Task(t2.clone()),
        Write::Task(t1.clone()),
        Write::Attempt(a.clone()),
    ])
    .expect("commit");
    let snap = s.load().expect("load");
    assert_eq!(snap.tasks, vec![t1, t2]);
    assert_eq!(snap.attempts, vec![a]);
    assert_eq!(snap.workers, vec![w]);
}

/// A later write of the same id replaces the earlier one.
pub fn writes_replace<S: Store>(mut s: S) {
    let mut t = sample_task(1);
    s.commit(&[Write::Task(t.clone())]).unwrap();
    t.state = TaskState::Succeeded;
    t.exit_code = Some(0);
    t.ended_ms = Some(99);
    let mut a = sample_attempt(1, 1, "w1");
    s.commit(&[Write::Task(t.clone()), Write::Attempt(a.clone())])
        .unwrap();
    a.state = AttemptState::Succeeded;
    a.exit_code = Some(-1);
    a.reason = "done".into();
    s.commit(&[Write::Attempt(a.clone())]).unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.tasks, vec![t]);
    assert_eq!(snap.attempts, vec![a]);
}

/// Workers can be removed.
pub fn remove_worker<S: Store>(mut s: S) {
    s.commit(&[
        Write::Worker(sample_worker("a")),
        Write::Worker(sample_worker("b")),
    ])
    .unwrap();
    s.commit(&[Write::RemoveWorker(WorkerId("a".into()))])
        .unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.workers, vec![sample_worker("b")]);
}

/// `live_attempts` returns exactly the resource-holding attempts (live and
/// unknown ones).
pub fn live_attempts_are_the_holding_ones<S: Store>(mut s: S) {
    let mut writes = vec![Write::Task(sample_task(1))];
    for (i, st) in AttemptState::ALL.iter().enumerate() {
        let mut a = sample_attempt(i as u64 + 1, 1, "w1");
        a.state = *st;
        writes.push(Write::Attempt(a));
    }
    s.commit(&writes).unwrap();
    let live: Vec<AttemptState> = s.live_attempts().unwrap().iter().map(|a| a.state).collect();
    assert_eq!(
        live,
        vec![
            AttemptState::Assigned,
            AttemptState::Running,
            AttemptState::Stopping,
            AttemptState::Unknown
        ]
    );
}

/// Registrations are kept, idempotent, and can be withdrawn.
pub fn registrations<S: Store>(mut s: S) {
    s.commit(&[
        Write::Register("b".into()),
        Write::Register("a".into()),
        Write::Register("a".into()),
    ])
    .unwrap();
    s.commit(&[Write::Unregister("b".into())]).unwrap();
    assert_eq!(s.load().unwrap().registrations, vec!["a".to_string()]);
}

/// A coalesced batch leaves the same records as the whole batch.
pub fn coalesced_batches_are_equivalent<S: Store>(mut a: S, mut b: S) {
    let mut t = sample_task(1);
    let mut writes = vec![Write::Task(t.clone()), Write::Worker(sample_worker("w"))];
    t.state = TaskState::Assigned;
    writes.push(Write::Task(t.clone()));
    writes.push(Write::Attempt(sample_attempt(1, 1, "w")));
    writes.push(Write::RemoveWorker(WorkerId("w".into())));
    t.state = TaskState::Running;
    writes.push(Write::Task(t));
    let short = crate::coalesce(writes.clone());
    assert_eq!(short.len(), 3);
    a.commit(&writes).unwrap();
    b.commit(&short).unwrap();
    assert_eq!(a.load().unwrap(), b.load().unwrap());
}

/// Run every check, each on a fresh store from `make`.
pub fn run_all<S: Store>(make: impl Fn() -> S) {
    empty_loads_empty(make());
    round_trip(make());
    writes_replace(make());
    remove_worker(make());
    live_attempts_are_the_holding_ones(make());
    registrations(make());
    coalesced_batches_are_equivalent(make(), make());
}
