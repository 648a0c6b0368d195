//! The core alone: events in, actions out, time as a number.

use super::*;

const GRACE: Millis = 50;

fn core() -> AgentCore {
    AgentCore::new(CoreConfig {
        name: "Tessa".into(),
        total: Resources {
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            storage_bytes: 0,
            gpus: 0,
        },
        drivers: vec![DriverKind::Process],
        stop_grace_ms: GRACE,
        drain_on_exit: false,
        seed: 7,
    })
}

/// A core with an open session (heartbeats every second).
fn open_core() -> AgentCore {
    let mut c = core();
    let a = c.handle(0, Event::Tick);
    assert!(matches!(a[..], [Action::Connect(_)]), "{a:?}");
    assert!(
        c.handle(0, Event::Welcomed { heartbeat_ms: 1000 })
            .is_empty()
    );
    c
}

fn order(id: u64, cpu: u64) -> StartOrder {
    StartOrder {
        attempt: AttemptId(id),
        task: TaskId(id * 10),
        spec: Ok(TaskSpec::process(
            vec!["true".into()],
            Resources {
                cpu_millis: cpu,
                memory_bytes: 1 << 20,
                storage_bytes: 0,
                gpus: 0,
            },
        )),
        gpu_ids: vec![],
    }
}

fn start(c: &mut AgentCore, now: Millis, id: u64, cpu: u64) -> Vec<Action> {
    let mut a = c.handle(
        now,
        Event::Start {
            order: order(id, cpu),
            tombstoned: false,
        },
    );
    if matches!(a.first(), Some(Action::Launch { .. })) {
        a.extend(c.handle(
            now,
            Event::Launched {
                attempt: AttemptId(id),
                result: Ok(()),
            },
        ));
    }
    a
}

/// The updates among `actions`, as (seq, state, reason).
fn updates(actions: &[Action]) -> Vec<(u64, AttemptState, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Message::Update { seq, report }) => {
                Some((*seq, report.state, report.reason.clone()))
            }
            Action::Deliver { report, .. } => Some((
                final_seq(report.attempt_id),
                report.state,
                report.reason.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn signals(actions: &[Action]) -> Vec<Signal> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

#[test]
fn an_attempt_runs_ends_and_is_forgotten_after_the_ack() {
    let mut c = open_core();
    let a = start(&mut c, 10, 1, 1000);
    assert!(matches!(a[0], Action::Launch { .. }));
    assert_eq!(
        updates(&a),
        vec![(
            running_seq(AttemptId(1)),
            AttemptState::Running,
            String::new()
        )]
    );
    assert_eq!(c.allocated().cpu_millis, 1000);
    let a = c.handle(
        20,
        Event::Ended {
            attempt: AttemptId(1),
            ended: Ended {
                exit: Some(3),
                failed: None,
                lost: None,
            },
        },
    );
    assert_eq!(
        updates(&a),
        vec![(
            final_seq(AttemptId(1)),
            AttemptState::Failed,
            "exited with code 3".into()
        )]
    );
    assert_eq!(c.allocated(), Resources::ZERO);
    // Until the ack it stays held, and heartbeats carry the result.
    assert_eq!(c.held()[0].state, AttemptState::Failed);
    // A running update's ack forgets nothing.
    assert!(
        c.handle(
            21,
            Event::Ack {
                seq: running_seq(AttemptId(1))
            }
        )
        .is_empty()
    );
    let a = c.handle(
        22,
        Event::Ack {
            seq: final_seq(AttemptId(1)),
        },
    );
    assert_eq!(
        a,
        vec![Action::Forget {
            attempt: AttemptId(1)
        }]
    );
    assert!(c.is_empty());
    // A late duplicate start (the shell knows the tombstone) does nothing.
    let a = c.handle(
        30,
        Event::Start {
            order: order(1, 1000),
            tombstoned: true,
        },
    );
    assert!(a.is_empty(), "{a:?}");
}

#[test]
fn admission_never_goes_beyond_the_total() {
    let mut c = open_core();
    start(&mut c, 0, 1, 3000);
    let a = start(&mut c, 0, 2, 2000);
    assert!(matches!(a[0], Action::Prepare { .. }), "{a:?}");
    let u = updates(&a);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].1, AttemptState::Failed);
    assert!(u[0].2.starts_with("worker admission refused"), "{u:?}");
    assert_eq!(c.allocated().cpu_millis, 3000);
}

#[test]
fn a_start_the_driver_refuses_fails_without_a_running_update() {
    let mut c = open_core();
    let mut a = c.handle(
        0,
        Event::Start {
            order: order(2, 1000),
            tombstoned: false,
        },
    );
    a.extend(c.handle(
        0,
        Event::Launched {
            attempt: AttemptId(2),
            result: Err("image `nope` not found".into()),
        },
    ));
    assert_eq!(
        updates(&a),
        vec![(
            final_seq(AttemptId(2)),
            AttemptState::Failed,
            "image `nope` not found".into()
        )]
    );
    assert!(a.contains(&Action::RecordFailed {
        attempt: AttemptId(2),
        reason: "image `nope` not found".into()
    }));
    assert_eq!(c.allocated(), Resources::ZERO);
}

#[test]
fn a_stop_terms_then_kills_once_the_grace_is_over() {
    let mut c = open_core();
    start(&mut c, 0, 3, 1000);
    let a = c.handle(
        100,
        Event::Stop {
            attempt: AttemptId(3),
            reason: "cancel".into(),
            tombstoned: false,
        },
    );
    assert_eq!(
        a[0],
        Action::MarkStopped {
            attempt: AttemptId(3)
        }
    );
    assert_eq!(signals(&a), vec![Signal::Term]);
    // A second stop does not move the deadline.
    assert!(
        signals(&c.handle(
            120,
            Event::Stop {
                attempt: AttemptId(3),
                reason: "cancel".into(),
                tombstoned: false,
            }
        ))
        .is_empty()
    );
    assert!(signals(&c.handle(100 + GRACE - 1, Event::Tick)).is_empty());
    assert_eq!(
        signals(&c.handle(100 + GRACE, Event::Tick)),
        vec![Signal::Kill]
    );
    assert!(signals(&c.handle(100 + 3 * GRACE, Event::Tick)).is_empty());
    let a = c.handle(
        400,
        Event::Ended {
            attempt: AttemptId(3),
            ended: Ended {
                exit: Some(137),
                failed: None,
                lost: None,
            },
        },
    );
    assert_eq!(
        updates(&a)[0].1,
        AttemptState::Cancelled,
        "a stopped attempt is cancelled, whatever its exit"
    );
}

#[test]
fn a_time_limit_stops_the_attempt_as_timed_out() {
    let mut c = open_core();
    let mut o = order(4, 1000);
    if let Ok(spec) = o.spec.as_mut() {
        spec.timeout_ms = Some(30);
    }
    let a = c.handle(
        1000,
        Event::Start {
            order: o,
            tombstoned: false,
        },
    );
    assert!(matches!(
        a[0],
        Action::Launch {
            limit_ms: Some(30),
            ..
        }
    ));
    c.handle(
        1000,
        Event::Launched {
            attempt: AttemptId(4),
            result: Ok(()),
        },
    );
    assert!(signals(&c.handle(1029, Event::Tick)).is_empty());
    let a = c.handle(1030, Event::Tick);
    assert!(a.contains(&Action::MarkTimedOut {
        attempt: AttemptId(4)
    }));
    assert_eq!(signals(&a), vec![Signal::Term]);
    let a = c.handle(
        1040,
        Event::Ended {
            attempt: AttemptId(4),
            ended: Ended {
                exit: Some(143),
                failed: None,
                lost: None,
            },
        },
    );
    let u = updates(&a);
    assert_eq!(u[0].1, AttemptState::TimedOut);
    assert_eq!(u[0].2, "exceeded its time limit of 0.0s");
}

#[test]
fn a_stop_that_overtook_its_start_cancels_the_attempt_for_good() {
    let mut c = open_core();
    let a = c.handle(
        0,
        Event::Stop {
            attempt: AttemptId(6),
            reason: "cancelled by user".into(),
            tombstoned: false,
        },
    );
    assert_eq!(
        a[0],
        Action::RecordCancelled {
            attempt: AttemptId(6)
        }
    );
    assert_eq!(
        updates(&a),
        vec![(
            final_seq(AttemptId(6)),
            AttemptState::Cancelled,
            STOPPED_BEFORE_START.into()
        )]
    );
    assert_eq!(c.allocated(), Resources::ZERO);
    // The start that arrives late is ignored.
    let a = c.handle(
        5,
        Event::Start {
            order: order(6, 1000),
            tombstoned: false,
        },
    );
    assert!(a.is_empty(), "{a:?}");
    // Like any result, it is in the outbox until acknowledged.
    assert!(c.hello().held.iter().any(|h| h.attempt_id == AttemptId(6)));
    assert_eq!(
        c.handle(
            6,
            Event::Ack {
                seq: final_seq(AttemptId(6))
            }
        ),
        vec![Action::Forget {
            attempt: AttemptId(6)
        }]
    );
    // A stop for an attempt long finished and acknowledged does nothing.
    assert!(
        c.handle(
            7,
            Event::Stop {
                attempt: AttemptId(6),
                reason: "again".into(),
                tombstoned: true,
            }
        )
        .is_empty()
    );
}

#[test]
fn a_hello_lists_results_as_running_and_the_session_delivers_them() {
    let mut c = open_core();
    start(&mut c, 0, 1, 1000);
    start(&mut c, 0, 2, 1000);
    c.handle(
        10,
        Event::Ended {
            attempt: AttemptId(2),
            ended: Ended {
                exit: Some(0),
                failed: None,
                lost: None,
            },
        },
    );
    let a = c.handle(
        11,
        Event::SessionLost {
            why: "reset".into(),
            refusal: None,
        },
    );
    assert!(a.is_empty());
    // While there is no session nothing is sent.
    assert!(
        c.handle(
            12,
            Event::Ack {
                seq: final_seq(AttemptId(9))
            }
        )
        .is_empty()
    );
    let a = c.handle(11 + DIAL_BACKOFF_MIN_MS, Event::Tick);
    let Some(Action::Connect(hello)) = a.last() else {
        panic!("{a:?}")
    };
    assert_eq!(hello.held.len(), 2);
    assert!(hello.held.iter().all(|h| h.state == AttemptState::Running));
    let a = c.handle(200, Event::Welcomed { heartbeat_ms: 1000 });
    assert_eq!(
        a,
        vec![
            Action::ShipLog {
                attempt: AttemptId(1),
                whole: true
            },
            Action::Deliver {
                attempt: AttemptId(2),
                report: HeldReport {
                    attempt_id: AttemptId(2),
                    state: AttemptState::Succeeded,
                    exit_code: Some(0),
                    reason: String::new()
                }
            }
        ]
    );
    // Delivering found the output too large: the result is amended.
    let mut failed = c.report(AttemptId(2)).unwrap().clone();
    failed.state = AttemptState::Failed;
    failed.reason = "output too large".into();
    c.handle(
        201,
        Event::Amended {
            attempt: AttemptId(2),
            report: failed.clone(),
        },
    );
    let hb = c.handle(1200, Event::Tick);
    assert!(
        hb.iter().any(
            |a| matches!(a, Action::Send(Message::Heartbeat { held, .. }) if held.contains(&failed))
        ),
        "{hb:?}"
    );
}

#[test]
fn heartbeats_go_out_every_interval_while_a_session_is_open() {
    let mut c = open_core();
    let beats = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::Send(Message::Heartbeat { .. })))
            .count()
    };
    assert_eq!(beats(&c.handle(999, Event::Tick)), 0);
    assert_eq!(beats(&c.handle(1000, Event::Tick)), 1);
    assert_eq!(beats(&c.handle(1500, Event::Tick)), 0);
    assert_eq!(beats(&c.handle(2000, Event::Tick)), 1);
    c.handle(
        2001,
        Event::SessionLost {
            why: "x".into(),
            refusal: None,
        },
    );
    assert_eq!(beats(&c.handle(3000, Event::Tick)), 0);
}

/// Fail the dial `rounds` times with `refusal`; the waits until the next
/// dial (ticks every 10 ms).
fn dial_waits(c: &mut AgentCore, rounds: usize, refusal: Option<&str>) -> Vec<Millis> {
    let mut now = 0;
    assert!(matches!(
        c.handle(now, Event::Tick)[..],
        [Action::Connect(_)]
    ));
    let mut waits = Vec::new();
    for _ in 0..rounds {
        let a = c.handle(
            now,
            Event::SessionLost {
                why: "refused".into(),
                refusal: refusal.map(String::from),
            },
        );
        assert!(a.is_empty(), "no exit: {a:?}");
        let start = now;
        loop {
            now += 10;
            let a = c.handle(now, Event::Tick);
            if !a.is_empty() {
                assert!(matches!(a[..], [Action::Connect(_)]), "{a:?}");
                break;
            }
        }
        waits.push(now - start);
    }
    waits
}

#[test]
fn a_name_held_by_a_live_worker_is_retried_with_growing_jittered_waits() {
    let waits = dial_waits(
        &mut core(),
        8,
        Some("worker name 'Tessa' is already used by ready worker node-0; pick another --name"),
    );
    let mut ceiling = NAME_BACKOFF_MIN_MS;
    for w in &waits {
        assert!(
            *w >= ceiling / 2 && *w <= ceiling + 10,
            "{w} not in {}..={ceiling}: {waits:?}",
            ceiling / 2
        );
        ceiling = (ceiling * 2).min(NAME_BACKOFF_MAX_MS);
    }
    // Jittered: not all the same fraction of their ceiling.
    assert!(waits.windows(2).any(|w| w[1] != 2 * w[0]), "{waits:?}");
}

#[test]
fn any_other_refusal_ends_the_agent() {
    let mut c = core();
    c.handle(0, Event::Tick);
    let a = c.handle(
        0,
        Event::SessionLost {
            why: "refused".into(),
            refusal: Some("invalid bearer token".into()),
        },
    );
    assert_eq!(
        a,
        vec![Action::Exit(Exit::Refused("invalid bearer token".into()))]
    );
    assert!(c.handle(60_000, Event::Tick).is_empty());
}

#[test]
fn dial_waits_double_up_to_the_cap_and_restart_after_a_session() {
    let mut c = core();
    let waits = dial_waits(&mut c, 7, None);
    assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    let now = 100_000;
    c.handle(now, Event::Welcomed { heartbeat_ms: 1000 });
    c.handle(
        now,
        Event::SessionLost {
            why: "reset".into(),
            refusal: None,
        },
    );
    assert!(c.handle(now + 99, Event::Tick).is_empty());
    assert!(matches!(
        c.handle(now + 100, Event::Tick)[..],
        [Action::Connect(_)]
    ));
}

#[test]
fn shutdown_exits_at_once_or_drains_first() {
    let mut c = open_core();
    start(&mut c, 0, 1, 1000);
    assert_eq!(c.handle(1, Event::Shutdown), vec![Action::Exit(Exit::Done)]);

    let mut c = AgentCore::new(CoreConfig {
        drain_on_exit: true,
        ..core().cfg
    });
    c.handle(0, Event::Tick);
    c.handle(0, Event::Welcomed { heartbeat_ms: 1000 });
    start(&mut c, 0, 1, 1000);
    let a = c.handle(1, Event::Shutdown);
    assert!(
        matches!(
            &a[..],
            [Action::Send(Message::Heartbeat { draining: true, .. })]
        ),
        "{a:?}"
    );
    assert!(c.draining());
    assert!(!c.handle(2, Event::Tick).contains(&Action::Exit(Exit::Done)));
    c.handle(
        3,
        Event::Ended {
            attempt: AttemptId(1),
            ended: Ended {
                exit: Some(0),
                failed: None,
                lost: None,
            },
        },
    );
    assert!(!c.handle(4, Event::Tick).contains(&Action::Exit(Exit::Done)));
    c.handle(
        5,
        Event::Ack {
            seq: final_seq(AttemptId(1)),
        },
    );
    assert!(c.handle(6, Event::Tick).contains(&Action::Exit(Exit::Done)));
}

#[test]
fn folders_found_at_start_are_reattached_reported_or_discarded() {
    let meta = Meta {
        task: TaskId(1),
        resources: Resources {
            cpu_millis: 500,
            ..Resources::ZERO
        },
        driver: DriverKind::Process,
    };
    let found = |id: u64, ended: Ended| Found {
        attempt: AttemptId(id),
        meta: Some(meta),
        ended,
        stopped: false,
        timed_out: false,
        cancelled: false,
        limit: None,
        disconnect_ms: None,
        disconnected: false,
    };
    let mut c = core();
    let a = c.handle(
        0,
        Event::Recovered(vec![
            Found {
                meta: None,
                ..found(1, Ended::default())
            },
            found(
                2,
                Ended {
                    exit: Some(0),
                    failed: None,
                    lost: None,
                },
            ),
            found(3, Ended::default()),
            found(4, Ended::default()),
            found(5, Ended::default()),
            Found {
                cancelled: true,
                ..found(6, Ended::default())
            },
        ]),
    );
    assert_eq!(
        a,
        vec![
            Action::Discard {
                attempt: AttemptId(1)
            },
            Action::Reattach {
                attempt: AttemptId(3),
                driver: DriverKind::Process
            },
            Action::Reattach {
                attempt: AttemptId(4),
                driver: DriverKind::Process
            },
            Action::Reattach {
                attempt: AttemptId(5),
                driver: DriverKind::Process
            },
        ]
    );
    assert_eq!(
        c.report(AttemptId(2)).unwrap().state,
        AttemptState::Succeeded
    );
    assert_eq!(c.report(AttemptId(6)).unwrap().reason, STOPPED_BEFORE_START);
    c.handle(
        0,
        Event::Reattached {
            attempt: AttemptId(3),
            outcome: Reattach::Running,
        },
    );
    let a = c.handle(
        0,
        Event::Reattached {
            attempt: AttemptId(4),
            outcome: Reattach::Ended(Ended::default()),
        },
    );
    assert!(a.contains(&Action::RecordExit {
        attempt: AttemptId(4),
        code: -1
    }));
    assert_eq!(
        c.report(AttemptId(4)).unwrap().reason,
        "the task's supervisor ended without recording an exit status"
    );
    c.handle(
        0,
        Event::Reattached {
            attempt: AttemptId(5),
            outcome: Reattach::NoDriver,
        },
    );
    assert_eq!(
        c.report(AttemptId(5)).unwrap().reason,
        "the agent restarted without its process driver and could not re-attach"
    );
    assert_eq!(c.allocated().cpu_millis, 500);
    assert_eq!(
        c.running().collect::<Vec<_>>(),
        vec![(AttemptId(3), DriverKind::Process)]
    );
}

#[test]
fn an_at_most_once_task_is_stopped_after_the_master_has_been_silent_too_long() {
    let mut c = open_core();
    let mut o = order(5, 1000);
    if let Ok(spec) = o.spec.as_mut() {
        spec.stop_after_disconnect_ms = Some(3_000);
    }
    c.handle(
        0,
        Event::Start {
            order: o,
            tombstoned: false,
        },
    );
    c.handle(
        0,
        Event::Launched {
            attempt: AttemptId(5),
            result: Ok(()),
        },
    );
    // Heartbeats acknowledged: the master hears us; silence restarts.
    c.handle(2_000, Event::Ack { seq: 0 });
    assert!(signals(&c.handle(4_900, Event::Tick)).is_empty());
    // A one-way cut: we may still receive, but no ack comes back.
    assert!(signals(&c.handle(5_000, Event::Tick)).is_empty());
    let a = c.handle(5_001, Event::Tick);
    assert!(a.contains(&Action::MarkDisconnected {
        attempt: AttemptId(5)
    }));
    assert_eq!(signals(&a), vec![Signal::Term]);
    let a = c.handle(
        5_020,
        Event::Ended {
            attempt: AttemptId(5),
            ended: Ended {
                exit: Some(143),
                ..Ended::default()
            },
        },
    );
    let u = updates(&a);
    assert_eq!(u[0].1, AttemptState::Disconnected);
    assert!(u[0].2.contains("--stop-after-disconnect"), "{}", u[0].2);
}

#[test]
fn a_restarted_agent_counts_the_silence_from_before_it_started() {
    let mut c = core();
    c.heard_ago(2_500);
    let a = c.handle(
        0,
        Event::Recovered(vec![Found {
            attempt: AttemptId(9),
            meta: Some(Meta {
                task: TaskId(90),
                resources: Resources::ZERO,
                driver: DriverKind::Process,
            }),
            ended: Ended::default(),
            stopped: false,
            timed_out: false,
            cancelled: false,
            limit: None,
            disconnect_ms: Some(3_000),
            disconnected: false,
        }]),
    );
    assert!(matches!(a[..], [Action::Reattach { .. }]), "{a:?}");
    c.handle(
        0,
        Event::Reattached {
            attempt: AttemptId(9),
            outcome: Reattach::Running,
        },
    );
    assert!(signals(&c.handle(400, Event::Tick)).is_empty());
    let a = c.handle(501, Event::Tick);
    assert!(a.contains(&Action::MarkDisconnected {
        attempt: AttemptId(9)
    }));
}

/// Without `--stop-after-disconnect`, no silence ever stops a task.
#[test]
fn a_plain_task_runs_through_any_silence() {
    let mut c = open_core();
    start(&mut c, 0, 6, 1000);
    assert!(signals(&c.handle(10_000_000, Event::Tick)).is_empty());
}
