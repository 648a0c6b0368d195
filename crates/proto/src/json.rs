//! The JSON shapes of berth's API, as typed structs: one vocabulary for the
//! REST API, the CLI's `--json` and the dashboard. Field names are those of
//! `berth.proto`; absent values (no exit code, no end time) are `null`, not
//! zero. Each shape derives `Serialize`, `Deserialize` and
//! [`utoipa::ToSchema`], so the OpenAPI document the master serves is
//! generated from the very types it writes (`berth_master::http::openapi`).
//!
//! The builders (`task`, `worker`, …) turn wire messages into these shapes;
//! the request shapes ([`SubmitRequest`], [`ReconcileRequest`],
//! [`UnregisterRequest`], [`EmptyRequest`]) describe what REST reads.

use crate::{resources_or_zero, v1};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Resources as exact integers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl From<&berth_core::Resources> for Resources {
    fn from(r: &berth_core::Resources) -> Self {
        Resources {
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            storage_bytes: r.storage_bytes,
            gpus: r.gpus,
        }
    }
}

/// Resources of a wire message, absent ones as zero.
fn res(r: Option<v1::Resources>) -> Resources {
    Resources::from(&resources_or_zero(r))
}

/// A `key=value` pair: an environment variable, a label, a constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// The state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// The state of one attempt to run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Assigned,
    Running,
    Stopping,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Lost,
    Unknown,
    Disconnected,
}

/// The state of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Ready,
    Draining,
    Down,
}

/// A task as submitted, after defaults and units were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskSpec {
    pub name: String,
    /// `process` or `docker`.
    pub driver: String,
    /// Container image; empty for a process task.
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<KeyValue>,
    pub resources: Resources,
    #[schema(required = true)]
    pub retries: Option<u32>,
    #[schema(required = true)]
    pub timeout_ms: Option<u64>,
    pub priority: i32,
    pub constraints: Vec<KeyValue>,
    /// `binpack`, `spread`, or empty for the cluster's.
    pub strategy: String,
    /// The only worker (by name) that may run it; empty for any.
    pub pinned_worker: String,
    #[schema(required = true)]
    pub stop_after_disconnect_ms: Option<u64>,
}

/// One attempt to run a task on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub id: u64,
    pub task_id: u64,
    pub worker_id: String,
    pub worker_name: String,
    #[schema(value_type = AttemptState)]
    pub state: String,
    /// Milliseconds since the Unix epoch.
    #[schema(required = true)]
    pub created_ms: Option<i64>,
    #[schema(required = true)]
    pub started_ms: Option<i64>,
    #[schema(required = true)]
    pub ended_ms: Option<i64>,
    pub has_exit_code: bool,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    pub reason: String,
    pub gpu_ids: Vec<u32>,
    pub resources: Resources,
}

/// A task and every attempt to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: u64,
    pub spec: TaskSpec,
    #[schema(value_type = TaskState)]
    pub state: String,
    /// Milliseconds since the Unix epoch.
    #[schema(required = true)]
    pub submitted_ms: Option<i64>,
    #[schema(required = true)]
    pub ended_ms: Option<i64>,
    pub has_exit_code: bool,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    pub reason: String,
    /// Why a queued task waits.
    pub wait_reason: String,
    pub cancel_requested: bool,
    pub attempts: Vec<Attempt>,
}

/// One page of `GET /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Where the next page starts; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Tasks matching the filter, on every page.
    pub total: u64,
    /// Matching tasks after this page.
    pub remaining: u64,
}

/// A list of tasks (`berth task list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// The answer to a submission: the new task's id, and over REST the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub task_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
}

/// The answer to a cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    pub task: Task,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Gpu {
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    pub uuid: String,
}

/// Which attempt holds a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GpuHolder {
    pub index: u32,
    pub task_id: u64,
    pub attempt_id: u64,
}

/// A worker, its capacity and what its attempts hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub id: String,
    pub name: String,
    #[schema(value_type = WorkerState)]
    pub state: String,
    pub total: Resources,
    /// The sum of the requests of its live attempts.
    pub allocated: Resources,
    /// What attempts whose fate is unknown hold.
    pub unknown: Resources,
    /// What is left after `allocated` and `unknown`.
    pub available: Resources,
    pub running_attempts: u32,
    pub unknown_attempts: u32,
    /// Its totals are below what it holds; it takes no new work.
    pub overcommitted: bool,
    pub drivers: Vec<String>,
    pub gpus: Vec<Gpu>,
    /// Milliseconds since the Unix epoch.
    #[schema(required = true)]
    pub last_seen_ms: Option<i64>,
    pub labels: Vec<KeyValue>,
    pub drained: bool,
    pub gpu_holders: Vec<GpuHolder>,
}

/// A worker with the attempts that hold its resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerDetail {
    #[serde(flatten)]
    pub worker: Worker,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

/// An operator action on a worker and the master's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerAction {
    /// `drain`, `undrain`, `register` or `unregister`.
    pub action: String,
    pub worker: String,
    pub message: String,
}

/// One worker the reconciler fixed (or would fix, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerFix {
    pub worker_id: String,
    pub worker_name: String,
    /// `index` or `records`.
    pub kind: String,
    pub before: Resources,
    pub after: Resources,
    pub tasks: u32,
}

/// A reconciliation report, with the lines `fix-resources` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub workers_checked: u32,
    pub fixes: Vec<WorkerFix>,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputFile {
    /// Relative to the task's output folder.
    pub path: String,
    pub size: u64,
}

/// The files a task's latest attempt left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskFiles {
    pub task_id: u64,
    pub files: Vec<OutputFile>,
}

/// One task that has output files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskOutputs {
    pub task_id: u64,
    pub name: String,
    /// Empty for a task the master no longer knows.
    pub state: String,
    pub files: u32,
    pub bytes: u64,
}

/// Every task that has output files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Outputs {
    pub tasks: Vec<TaskOutputs>,
}

/// After `task download`: where the files went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Downloaded {
    pub task_id: u64,
    pub dir: String,
    pub files: Vec<OutputFile>,
}

/// One committed change (`GET /api/v1/events`); fields that do not apply
/// to its kind are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    /// `start`, `tick`, `task`, `attempt`, `worker` or `worker_removed`.
    pub kind: String,
    /// Resume from here (`INCARNATION.SEQ`).
    pub cursor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Every error answer: what went wrong and what to do, and the request
/// field at fault (`null` when none is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: String,
    #[schema(required = true)]
    pub field: Option<String>,
}

// ------------------------------------------------------------- requests

/// `POST /api/v1/reconcile`; an empty body is a real run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileRequest {
    /// Report what differs without fixing it.
    pub dry_run: bool,
}

/// `POST /api/v1/workers/{name}/unregister`; an empty body is `false`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UnregisterRequest {
    /// Only for a worker declared down: record its unknown attempts lost
    /// and release their resources.
    pub confirm_dead: bool,
}

/// A body that takes no fields: empty, or `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// A number, or text with a unit (`0.5`, `"2"`, `"90s"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(f64),
    Text(String),
}

/// A whole number, or text (`512`, `"512M"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WholeOrText {
    Whole(i64),
    Text(String),
}

/// An object of strings, or an array of `"KEY=value"` strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Pairs {
    Object(BTreeMap<String, String>),
    List(Vec<String>),
}

/// `POST /api/v1/tasks`: core's `SpecInput` plus `queue_anyway`. The master
/// reads it with `berth_core::build_spec`, the parser the shell and the CLI
/// use; this type only describes it. A `null` field is the same as an
/// absent one, except `queue_anyway`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitRequest {
    /// Container image: present = a container task, absent = a process task.
    pub image: Option<String>,
    /// The program and its arguments; required for a process task.
    pub command: Option<Vec<String>>,
    /// Cores, `0.5`, `"2"` (1).
    pub cpu: Option<NumberOrText>,
    /// A number is bytes; a string takes `K`/`M`/`G`/`T`, a bare number in
    /// a string is GB (0.5G).
    pub memory: Option<WholeOrText>,
    /// As `memory` (0).
    pub storage: Option<WholeOrText>,
    /// Whole GPUs (0).
    pub gpus: Option<WholeOrText>,
    pub name: Option<String>,
    /// `{"KEY": "value"}` or `["KEY=value"]`.
    pub env: Option<Pairs>,
    /// Placements allowed after lost attempts (3).
    pub retries: Option<WholeOrText>,
    /// Time limit of one attempt: `"90s"`, `"1h30m"`; a number is seconds.
    pub timeout: Option<NumberOrText>,
    /// Stop the task after this long without the master; at least 1 s.
    pub stop_after_disconnect: Option<NumberOrText>,
    /// Higher runs first, -1000 to 1000 (0).
    pub priority: Option<WholeOrText>,
    /// Worker labels required: `{"gpu": "a100"}` or `["gpu=a100"]`.
    pub constraints: Option<Pairs>,
    /// `binpack` or `spread` (the cluster's).
    pub strategy: Option<String>,
    /// Only this worker (by name) may run it.
    pub worker: Option<String>,
    /// Queue even when no registered worker could ever fit it (false).
    pub queue_anyway: bool,
}

// ------------------------------------------------------------- builders

fn opt_ms(ms: i64) -> Option<i64> {
    (ms > 0).then_some(ms)
}

fn pairs<'a>(list: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<KeyValue> {
    list.into_iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

pub fn resources(r: &berth_core::Resources) -> Resources {
    Resources::from(r)
}

pub fn spec(s: &v1::TaskSpec) -> TaskSpec {
    TaskSpec {
        name: s.name.clone(),
        driver: s.driver.clone(),
        image: s.image.clone(),
        command: s.command.clone(),
        env: pairs(s.env.iter().map(|e| (&e.key, &e.value))),
        resources: res(s.resources),
        retries: s.retries,
        timeout_ms: s.timeout_ms,
        priority: s.priority,
        constraints: labels(&s.constraints),
        strategy: s.strategy.clone(),
        pinned_worker: s.pinned_worker.clone(),
        stop_after_disconnect_ms: s.stop_after_disconnect_ms,
    }
}

pub fn labels(list: &[v1::Label]) -> Vec<KeyValue> {
    pairs(list.iter().map(|l| (&l.key, &l.value)))
}

pub fn attempt(a: &v1::Attempt) -> Attempt {
    Attempt {
        id: a.id,
        task_id: a.task_id,
        worker_id: a.worker_id.clone(),
        worker_name: a.worker_name.clone(),
        state: a.state.clone(),
        created_ms: opt_ms(a.created_ms),
        started_ms: opt_ms(a.started_ms),
        ended_ms: opt_ms(a.ended_ms),
        has_exit_code: a.has_exit_code,
        exit_code: a.has_exit_code.then_some(a.exit_code),
        reason: a.reason.clone(),
        gpu_ids: a.gpu_ids.clone(),
        resources: res(a.resources),
    }
}

pub fn task(t: &v1::Task) -> Task {
    Task {
        id: t.id,
        spec: spec(&t.spec.clone().unwrap_or_default()),
        state: t.state.clone(),
        submitted_ms: opt_ms(t.submitted_ms),
        ended_ms: opt_ms(t.ended_ms),
        has_exit_code: t.has_exit_code,
        exit_code: t.has_exit_code.then_some(t.exit_code),
        reason: t.reason.clone(),
        wait_reason: t.wait_reason.clone(),
        cancel_requested: t.cancel_requested,
        attempts: t.attempts.iter().map(attempt).collect(),
    }
}

/// `ListTasksResponse` without its paging.
pub fn tasks(list: &[v1::Task]) -> TaskList {
    TaskList {
        tasks: list.iter().map(task).collect(),
    }
}

pub fn worker(w: &v1::Worker) -> Worker {
    let total = resources_or_zero(w.total);
    let allocated = resources_or_zero(w.allocated);
    let unknown = resources_or_zero(w.unknown);
    Worker {
        id: w.id.clone(),
        name: w.name.clone(),
        state: w.state.clone(),
        total: resources(&total),
        allocated: resources(&allocated),
        unknown: resources(&unknown),
        available: resources(&total.saturating_sub(&allocated).saturating_sub(&unknown)),
        running_attempts: w.running_attempts,
        unknown_attempts: w.unknown_attempts,
        overcommitted: w.overcommitted,
        drivers: w.drivers.clone(),
        gpus: w
            .gpus
            .iter()
            .map(|g| Gpu {
                index: g.index,
                model: g.model.clone(),
                memory_bytes: g.memory_bytes,
                uuid: g.uuid.clone(),
            })
            .collect(),
        last_seen_ms: opt_ms(w.last_seen_ms),
        labels: labels(&w.labels),
        drained: w.drained,
        gpu_holders: w
            .gpu_holders
            .iter()
            .map(|g| GpuHolder {
                index: g.index,
                task_id: g.task_id,
                attempt_id: g.attempt_id,
            })
            .collect(),
    }
}

/// `ListWorkersResponse`.
pub fn workers(list: &[v1::Worker]) -> WorkerList {
    WorkerList {
        workers: list.iter().map(worker).collect(),
    }
}

pub fn worker_detail(w: &v1::Worker, attempts: &[v1::Attempt]) -> WorkerDetail {
    WorkerDetail {
        worker: worker(w),
        attempts: attempts.iter().map(attempt).collect(),
    }
}

pub fn worker_action(action: &str, name: &str, message: &str) -> WorkerAction {
    WorkerAction {
        action: action.to_string(),
        worker: name.to_string(),
        message: message.to_string(),
    }
}

/// `ReconcileResponse`, with the lines `fix-resources` prints.
pub fn reconcile(r: &v1::ReconcileResponse) -> ReconcileReport {
    ReconcileReport {
        dry_run: r.dry_run,
        workers_checked: r.workers_checked,
        fixes: r
            .fixes
            .iter()
            .map(|f| WorkerFix {
                worker_id: f.worker_id.clone(),
                worker_name: f.worker_name.clone(),
                kind: f.kind.clone(),
                before: res(f.before),
                after: res(f.after),
                tasks: f.tasks,
            })
            .collect(),
        lines: crate::report::lines(r),
    }
}

pub fn output_files(files: &[v1::OutputFile]) -> Vec<OutputFile> {
    files
        .iter()
        .map(|f| OutputFile {
            path: f.path.clone(),
            size: f.size,
        })
        .collect()
}

pub fn task_files(task_id: u64, files: &[v1::OutputFile]) -> TaskFiles {
    TaskFiles {
        task_id,
        files: output_files(files),
    }
}

/// `ListOutputsResponse`.
pub fn outputs(list: &[v1::TaskOutputs]) -> Outputs {
    Outputs {
        tasks: list
            .iter()
            .map(|t| TaskOutputs {
                task_id: t.task_id,
                name: t.name.clone(),
                state: t.state.clone(),
                files: t.files,
                bytes: t.bytes,
            })
            .collect(),
    }
}

/// A watch event, fields that do not apply left out.
pub fn watch_event(e: &v1::WatchEvent) -> WatchEvent {
    let text = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
    WatchEvent {
        kind: e.kind.clone(),
        cursor: e.cursor.clone(),
        id: Some(e.id).filter(|id| *id != 0),
        task_id: Some(e.task_id).filter(|id| *id != 0),
        worker_id: text(&e.worker_id),
        worker_name: text(&e.worker_name),
        state: text(&e.state),
    }
}

/// A shape as a JSON value (keys in sorted order, as `--json` prints them).
pub fn value<T: Serialize>(shape: &T) -> serde_json::Value {
    serde_json::to_value(shape).expect("API shapes serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_values_are_null_and_present_ones_keep_their_names() {
        let t = v1::Task {
            id: 1,
            state: "queued".into(),
            ..Default::default()
        };
        assert_eq!(
            value(&task(&t)).to_string(),
            r#"{"attempts":[],"cancel_requested":false,"ended_ms":null,"exit_code":null,"has_exit_code":false,"id":1,"reason":"","spec":{"command":[],"constraints":[],"driver":"","env":[],"image":"","name":"","pinned_worker":"","priority":0,"resources":{"cpu_millis":0,"gpus":0,"memory_bytes":0,"storage_bytes":0},"retries":null,"stop_after_disconnect_ms":null,"strategy":"","timeout_ms":null},"state":"queued","submitted_ms":null,"wait_reason":""}"#
        );
        let w = value(&worker_detail(
            &v1::Worker {
                total: Some(v1::Resources {
                    cpu_millis: 2000,
                    ..Default::default()
                }),
                allocated: Some(v1::Resources {
                    cpu_millis: 500,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[],
        ));
        assert_eq!(w["available"]["cpu_millis"], 1500);
        assert_eq!(w["attempts"], json!([]));
        assert_eq!(w["last_seen_ms"], serde_json::Value::Null);
        let e = value(&watch_event(&v1::WatchEvent {
            kind: "start".into(),
            cursor: "a.1".into(),
            ..Default::default()
        }));
        assert_eq!(e.to_string(), r#"{"cursor":"a.1","kind":"start"}"#);
        let s = value(&Submitted {
            task_id: 4,
            task: None,
        });
        assert_eq!(s.to_string(), r#"{"task_id":4}"#);
    }

    #[test]
    fn the_submit_shape_names_exactly_the_parsers_fields() {
        let schema = serde_json::to_value(<SubmitRequest as utoipa::PartialSchema>::schema())
            .expect("a schema");
        let described: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut parsed: Vec<&str> = berth_core::SpecInput::FIELDS.to_vec();
        parsed.push("queue_anyway");
        parsed.sort();
        assert_eq!(described, parsed);
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
