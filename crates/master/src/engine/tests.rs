//! The engine thread end to end: failed commits, unsent placements,
//! node ids in use, and the liveness shift.

use super::*;
use crate::state::{ReportError, State, StateConfig, SubmitError, WorkerHello};
use berth_core::{Resources, TaskSpec};
use berth_core::{TaskId, WorkerId};
use berth_proto::v1;
use berth_store::{MemStore, Store, StoreFault};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc as tmpsc;

fn spec() -> TaskSpec {
    TaskSpec::process(
        vec!["true".into()],
        Resources {
            cpu_millis: 1_000,
            memory_bytes: 1 << 20,
            ..Resources::ZERO
        },
    )
}

async fn submit(e: &EngineHandle) -> Result<Result<TaskId, SubmitError>, Unavailable> {
    e.call(|reply| Command::Submit {
        spec: spec(),
        queue_anyway: true,
        reply,
    })
    .await
}

fn start(store: &Arc<Mutex<MemStore>>) -> EngineHandle {
    let st = State::new(StateConfig::default());
    let (e, _join) = spawn(
        st,
        store.clone(),
        Duration::from_millis(20),
        Duration::from_secs(3600),
    );
    e
}

#[test]
fn silence_is_measured_on_the_monotonic_clock() {
    let cap = Duration::from_secs(1);
    let ms = Duration::from_millis;
    // A normal step: nothing to forgive.
    assert_eq!(liveness_shift(250, ms(250), cap), 0);
    // The master stopped for 10 s: all but the cap is its own stall.
    assert_eq!(liveness_shift(10_000, ms(10_000), cap), 9_000);
    // The wall clock jumped an hour ahead in a 250 ms step.
    assert_eq!(liveness_shift(3_600_250, ms(250), cap), 3_600_000);
    // ... or back: silence must not shrink by an hour.
    assert_eq!(liveness_shift(-3_599_750, ms(250), cap), -3_600_000);
}

#[tokio::test]
async fn a_failed_commit_changes_nothing_and_writes_resume_by_themselves() {
    let store = Arc::new(Mutex::new(MemStore::new()));
    let e = start(&store);
    assert_eq!(submit(&e).await.unwrap().unwrap(), TaskId(1));
    assert!(e.health().check().is_ok());

    store.lock().unwrap().fail_writes(Some(StoreFault::Full));
    let refused = submit(&e).await.unwrap_err();
    let Unavailable::Storage(cause) = &refused else {
        panic!("expected a storage fault, got {refused:?}");
    };
    assert!(
        cause.starts_with("the master's disk is full"),
        "cause names the disk: {cause}"
    );
    // Nothing of the refused batch is in the state; reads are served.
    let ids: Vec<TaskId> = e
        .query(|s| s.tasks().map(|t| t.id).collect())
        .await
        .unwrap();
    assert_eq!(ids, vec![TaskId(1)]);
    assert!(e.health().check().unwrap_err().contains("disk is full"));
    assert_eq!(e.health().commit_failures(), 1);

    // Space is back: the idle engine's probe notices, and the next
    // write succeeds without any restart.
    store.lock().unwrap().fail_writes(None);
    let mut healthy = false;
    for _ in 0..200 {
        if e.health().check().is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "health recovers once the store takes writes");
    assert_eq!(submit(&e).await.unwrap().unwrap(), TaskId(2));
    let stored = store.lock().unwrap().load().unwrap();
    assert_eq!(stored.tasks.len(), 2);
}

#[tokio::test]
async fn a_placement_that_cannot_be_recorded_is_never_sent() {
    let store = Arc::new(Mutex::new(MemStore::new()));
    let e = start(&store);
    let (tx, mut rx) = tmpsc::unbounded_channel();
    let total = Resources {
        cpu_millis: 4_000,
        memory_bytes: 1 << 30,
        ..Resources::ZERO
    };
    let hello = WorkerHello::process_only("w1", "w1", total);
    e.call(|reply| Command::Hello {
        hello,
        session: 1,
        tx,
        heartbeat_interval_ms: 1_000,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(
        rx.recv().await.unwrap().body,
        Some(v1::master_message::Body::Welcome(_))
    ));
    store.lock().unwrap().fail_writes(Some(StoreFault::Io));
    assert!(matches!(submit(&e).await, Err(Unavailable::Storage(_))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rx.try_recv().is_err(),
        "no start for an unrecorded placement"
    );
    let held = e
        .query(|s| s.ledger().allocated(&WorkerId("w1".into())))
        .await;
    assert_eq!(held.unwrap(), Resources::ZERO);

    store.lock().unwrap().fail_writes(None);
    let id = submit(&e).await.unwrap().unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(v1::master_message::Body::Start(s)) = msg.body else {
        panic!("expected a start, got {msg:?}");
    };
    assert_eq!(s.task_id, id.0);
}

#[tokio::test]
async fn a_second_agent_with_a_live_node_id_is_refused() {
    let store = Arc::new(Mutex::new(MemStore::new()));
    let e = start(&store);
    let total = Resources {
        cpu_millis: 1_000,
        memory_bytes: 1 << 30,
        ..Resources::ZERO
    };
    let hello = |name: &str| WorkerHello::process_only("node-1", name, total);
    let (tx1, _rx1) = tmpsc::unbounded_channel();
    let first = hello("w1");
    e.call(|reply| Command::Hello {
        hello: first,
        session: 1,
        tx: tx1,
        heartbeat_interval_ms: 1_000,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    let (tx2, _rx2) = tmpsc::unbounded_channel();
    let second = hello("w2");
    let r = e
        .call(|reply| Command::Hello {
            hello: second,
            session: 2,
            tx: tx2,
            heartbeat_interval_ms: 1_000,
            reply,
        })
        .await
        .unwrap();
    assert!(
        matches!(&r, Err(ReportError::NodeIdInUse(id, name)) if id.0 == "node-1" && name == "w1"),
        "{r:?}"
    );
    let names: Vec<String> = e
        .query(|s| s.workers().map(|w| w.name.clone()).collect())
        .await
        .unwrap();
    assert_eq!(names, vec!["w1".to_string()], "the first keeps its place");
}
