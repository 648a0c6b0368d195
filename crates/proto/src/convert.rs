//! Conversions between wire messages and `berth-core` types. Incoming data
//! is untrusted: conversions from the wire return `InputError`s naming the
//! field.

use crate::v1;
use berth_core::validate::InputError;
use berth_core::{
    AttemptRecord, AttemptState, DriverKind, GpuInfo, Resources, TaskRecord, TaskSpec,
};

impl From<Resources> for v1::Resources {
    fn from(r: Resources) -> Self {
        v1::Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            storage_bytes: r.storage_bytes,
            gpus: r.gpus,
        }
    }
}

impl From<v1::Resources> for Resources {
    fn from(r: v1::Resources) -> Self {
        Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            storage_bytes: r.storage_bytes,
            gpus: r.gpus,
        }
    }
}

pub fn labels_to_wire(l: Vec<(String, String)>) -> Vec<v1::Label> {
    l.into_iter()
        .map(|(key, value)| v1::Label { key, value })
        .collect()
}

pub fn labels_from_wire(l: Vec<v1::Label>) -> Vec<(String, String)> {
    l.into_iter().map(|x| (x.key, x.value)).collect()
}

/// `Option<Resources>` from the wire: absent means zero.
pub fn resources_or_zero(r: Option<v1::Resources>) -> Resources {
    r.map(Resources::from).unwrap_or(Resources::ZERO)
}

impl From<TaskSpec> for v1::TaskSpec {
    fn from(s: TaskSpec) -> Self {
        v1::TaskSpec {
            name: s.name,
            driver: s.driver.as_str().to_string(),
            image: s.image.unwrap_or_default(),
            command: s.command,
            env: s
                .env
                .into_iter()
                .map(|(key, value)| v1::EnvVar { key, value })
                .collect(),
            resources: Some(s.resources.into()),
            retries: Some(s.retries),
            timeout_ms: s.timeout_ms,
            priority: s.priority,
            constraints: labels_to_wire(s.constraints),
            strategy: s
                .strategy
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            pinned_worker: s.pinned_worker.unwrap_or_default(),
            stop_after_disconnect_ms: s.stop_after_disconnect_ms,
        }
    }
}

impl TryFrom<v1::TaskSpec> for TaskSpec {
    type Error = InputError;
    fn try_from(s: v1::TaskSpec) -> Result<Self, InputError> {
        let driver = DriverKind::parse(&s.driver).ok_or_else(|| {
            InputError::new(
                "driver",
                format!("'{}' is not a driver; use process or docker", s.driver),
            )
        })?;
        Ok(TaskSpec {
            name: s.name,
            driver,
            image: (!s.image.is_empty()).then_some(s.image),
            command: s.command,
            env: s.env.into_iter().map(|e| (e.key, e.value)).collect(),
            resources: resources_or_zero(s.resources),
            retries: s.retries.unwrap_or(berth_core::task::DEFAULT_RETRIES),
            timeout_ms: s.timeout_ms,
            stop_after_disconnect_ms: s.stop_after_disconnect_ms,
            priority: s.priority,
            constraints: labels_from_wire(s.constraints),
            strategy: match s.strategy.as_str() {
                "" => None,
                x => Some(berth_core::Strategy::parse(x).ok_or_else(|| {
                    InputError::new(
                        "strategy",
                        format!("'{x}' is not a strategy; use binpack or spread"),
                    )
                })?),
            },
            pinned_worker: (!s.pinned_worker.is_empty()).then_some(s.pinned_worker),
        })
    }
}

impl From<GpuInfo> for v1::Gpu {
    fn from(g: GpuInfo) -> Self {
        v1::Gpu {
            index: g.index,
            model: g.model,
            memory_bytes: g.memory_bytes,
            uuid: g.uuid,
        }
    }
}

impl From<v1::Gpu> for GpuInfo {
    fn from(g: v1::Gpu) -> Self {
        GpuInfo {
            index: g.index,
            model: g.model,
            memory_bytes: g.memory_bytes,
            uuid: g.uuid,
        }
    }
}

/// An attempt for display, with its worker's name looked up by the caller.
pub fn attempt_to_wire(a: &AttemptRecord, worker_name: &str) -> v1::Attempt {
    v1::Attempt {
        id: a.id.0,
        task_id: a.task_id.0,
        worker_id: a.worker_id.0.clone(),
        worker_name: worker_name.to_string(),
        state: a.state.as_str().to_string(),
        created_ms: a.created_ms,
        started_ms: a.started_ms.unwrap_or(0),
        ended_ms: a.ended_ms.unwrap_or(0),
        has_exit_code: a.exit_code.is_some(),
        exit_code: a.exit_code.unwrap_or(0),
        reason: a.reason.clone(),
        gpu_ids: a.gpu_ids.clone(),
        resources: Some(a.resources.into()),
    }
}

/// A task for display, with its attempts and why it waits.
pub fn task_to_wire(t: &TaskRecord, attempts: Vec<v1::Attempt>, wait_reason: String) -> v1::Task {
    v1::Task {
        id: t.id.0,
        spec: Some(t.spec.clone().into()),
        state: t.state.as_str().to_string(),
        submitted_ms: t.submitted_ms,
        ended_ms: t.ended_ms.unwrap_or(0),
        has_exit_code: t.exit_code.is_some(),
        exit_code: t.exit_code.unwrap_or(0),
        reason: t.reason.clone(),
        wait_reason,
        cancel_requested: t.cancel_requested,
        attempts,
    }
}

/// What a worker reports about one attempt it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReport {
    pub attempt_id: berth_core::AttemptId,
    pub state: AttemptState,
    pub exit_code: Option<i32>,
    pub reason: String,
}

impl From<&HeldReport> for v1::HeldAttempt {
    fn from(h: &HeldReport) -> Self {
        v1::HeldAttempt {
            attempt_id: h.attempt_id.0,
            state: h.state.as_str().to_string(),
            has_exit_code: h.exit_code.is_some(),
            exit_code: h.exit_code.unwrap_or(0),
            reason: h.reason.clone(),
        }
    }
}

impl TryFrom<v1::HeldAttempt> for HeldReport {
    type Error = InputError;
    fn try_from(h: v1::HeldAttempt) -> Result<Self, InputError> {
        let state = AttemptState::parse(&h.state).ok_or_else(|| {
            InputError::new(
                "held.state",
                format!("'{}' is not an attempt state", h.state),
            )
        })?;
        Ok(HeldReport {
            attempt_id: berth_core::AttemptId(h.attempt_id),
            state,
            exit_code: h.has_exit_code.then_some(h.exit_code),
            reason: h.reason,
        })
    }
}

/// Sequence number of an attempt's "running" update. Derived from the
/// attempt id, so it is stable across restarts of either side.
/// The sequence number of an `Ack` that acknowledges a heartbeat: proof for
/// the worker that the master hears it (no attempt has id 0). A worker
/// counts silence for `--stop-after-disconnect` from the last one.
pub const HEARTBEAT_SEQ: u64 = 0;

pub fn running_seq(a: berth_core::AttemptId) -> u64 {
    a.0 * 2
}

/// Sequence number of an attempt's final update. The master acks it after
/// recording the result (or, for a finished attempt seen in a heartbeat,
/// after seeing it is already recorded); the worker then forgets it.
pub fn final_seq(a: berth_core::AttemptId) -> u64 {
    a.0 * 2 + 1
}

/// The attempt a final update's sequence number is about, if it is one.
pub fn attempt_of_final_seq(seq: u64) -> Option<berth_core::AttemptId> {
    (seq % 2 == 1).then_some(berth_core::AttemptId(seq / 2))
}
