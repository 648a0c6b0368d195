//! The REST/JSON API handlers under `/api/v1`: a thin adapter from HTTP
//! to [`crate::api`]. Each handler reads its path, query and body, calls
//! one operation, and writes the answer as one of the typed shapes of
//! `berth_proto::json`, or as plain text for logs and bytes for a file.
//! Errors map once, in `super::error`. Each handler's `#[utoipa::path]`
//! describes it in the generated OpenAPI document (`super::openapi`); the
//! 401 and 503 answers every `/api/v1` route may give are added there.

use super::HttpState;
use super::error::{ErrorBody, HttpError};
use super::submit;
use crate::api::{LogQuery, TaskFilter, TaskQuery, WatchQuery};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::TaskId;
use berth_proto::json::{
    self, Cancelled, EmptyRequest, Outputs, ReconcileReport, ReconcileRequest, SubmitRequest,
    Submitted, Task, TaskFiles, TaskPage, TaskState, UnregisterRequest, WorkerAction, WorkerDetail,
    WorkerList,
};
use berth_proto::v1;
use serde_json::{Map, Value};
use tokio_stream::StreamExt;

/// The `{id}` of a route's path, as text; a path that cannot be decoded is
/// a 400 naming `id` (an error in the API's own shape, not axum's text).
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|e| HttpError::bad_field("id", format!("id: {e}")))
    }
}

/// On a route that takes no query parameters: any is refused (`?x=1`), as
/// the routes that take some refuse those they do not know.
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        params(parts.uri.query().map(str::to_string), &[])?;
        Ok(NoQuery)
    }
}

/// `?a=1&b=x` → pairs, percent-decoded; names not in `allowed` are refused.
fn params(raw: Option<String>, allowed: &[&str]) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for part in raw.as_deref().unwrap_or("").split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (decode(k), decode(v));
        if !allowed.contains(&k.as_str()) {
            return Err(HttpError::bad_field(
                k.clone(),
                format!(
                    "{k}: unknown query parameter; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A boolean query parameter: `true` or `false`, nothing else.
fn flag(field: &str, v: &str) -> Result<bool, HttpError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(HttpError::bad_field(
            field,
            format!("{field}: '{v}' is not true or false"),
        )),
    }
}

fn task_id(raw: &str) -> Result<TaskId, HttpError> {
    raw.trim_start_matches('#')
        .parse::<u64>()
        .map(TaskId)
        .map_err(|_| HttpError::bad_field("id", format!("id: '{raw}' is not a task id")))
}

fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, HttpError> {
    v.parse()
        .map_err(|_| HttpError::bad_field(field, format!("{field}: '{v}' is not a whole number")))
}

/// A JSON object body with only the `allowed` fields; no body at all is
/// `{}` (a body of blanks is not JSON, and refused as such).
fn object_body(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, HttpError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = v else {
        let example = match allowed.first() {
            Some(f) => format!("a JSON object, example {{\"{f}\": true}}"),
            None => "empty or {}".to_string(),
        };
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be {example}"),
        ));
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(HttpError::bad_field(
            k.as_str(),
            format!(
                "{k}: unknown field; this route takes {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(obj)
}

/// A boolean field of a body: absent is false; `null` is refused like any
/// other value that is not `true` or `false`.
fn body_flag(obj: &Map<String, Value>, field: &str) -> Result<bool, HttpError> {
    match obj.get(field) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(HttpError::bad_field(
            field,
            format!("{field}: must be true or false (leave it out for false)"),
        )),
    }
}

/// `GET /api/v1/tasks?state=&name=&worker=&limit=&cursor=`: one page of
/// tasks, active ones oldest first, then finished ones newest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", operation_id = "listTasks",
    summary = "One page of tasks: the active ones oldest first, then the finished ones newest first.",
    params(
        ("state" = Option<TaskState>, Query, description = "Only tasks in this state."),
        ("name" = Option<String>, Query, description = "Only tasks with exactly this name."),
        ("worker" = Option<String>, Query, description = "Only tasks with an attempt on this worker (name or node id)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Tasks per page (100)."),
        ("cursor" = Option<String>, Query, description = "A previous page's next_cursor."),
    ),
    responses(
        (status = 200, description = "One page.", body = TaskPage),
        (status = 400, description = "A bad parameter; field names it.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn list_tasks(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<TaskPage>, HttpError> {
    let mut query = TaskQuery::default();
    for (k, v) in params(q, &["state", "name", "worker", "limit", "cursor"])? {
        match k.as_str() {
            "state" if v.is_empty() => {
                return Err(HttpError::bad_field(
                    "state",
                    "state: empty; leave it out to list every state",
                ));
            }
            "state" => query.filter.state = TaskFilter::parse_state("state", &v)?,
            "name" => query.filter.name = Some(v).filter(|v| !v.is_empty()),
            "worker" => query.filter.worker = Some(v).filter(|v| !v.is_empty()),
            "limit" => query.limit = Some(number("limit", &v)?),
            _ => query.cursor = Some(v).filter(|v| !v.is_empty()),
        }
    }
    let page = st.api.list_tasks(query).await?;
    Ok(Json(TaskPage {
        tasks: page.tasks.iter().map(json::task).collect(),
        next_cursor: page.next_cursor,
        total: page.total,
        remaining: page.remaining,
    }))
}

/// `POST /api/v1/tasks`: 201 with the new task, once it is durable.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", operation_id = "submitTask",
    summary = "Submit a task; answered once it is durable.",
    request_body(content = SubmitRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Submitted; Location names the task.", body = Submitted,
            headers(("Location" = String, description = "/api/v1/tasks/ID"))),
        (status = 400, description = "Malformed JSON, a field of the wrong type or unit, an invalid task; field names it.", body = ErrorBody),
        (status = 422, description = "No registered worker could ever fit it (set queue_anyway to queue it regardless).", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn submit_task(
    State(st): State<HttpState>,
    _: NoQuery,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (spec, queue_anyway) = submit::parse(&body)?;
    let id = st.api.submit(spec, queue_anyway).await?;
    let task = json::task(&st.api.show(id).await?);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/tasks/{id}"))],
        Json(Submitted {
            task_id: id.0,
            task: Some(task),
        }),
    )
        .into_response())
}

/// `GET /api/v1/tasks/{id}`: the task with all its attempts.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", operation_id = "getTask",
    summary = "One task with all of its attempts.",
    params(("id" = u64, Path, description = "Task id.")),
    responses(
        (status = 200, description = "The task.", body = Task),
        (status = 400, description = "Not a task id.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn get_task(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(id): Id,
) -> Result<Json<Task>, HttpError> {
    Ok(Json(json::task(&st.api.show(task_id(&id)?).await?)))
}

/// `GET /api/v1/tasks/{id}/files`: the files the task's latest attempt
/// left in its output folder (`[{path, size}]`).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/files", tag = "tasks", operation_id = "taskFiles",
    summary = "The files the task's latest attempt left in its output folder.",
    params(("id" = u64, Path, description = "Task id.")),
    responses(
        (status = 200, description = "The files.", body = TaskFiles),
        (status = 400, description = "Not a task id.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 500, description = "The master could not read its files.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn task_files(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(id): Id,
) -> Result<Json<TaskFiles>, HttpError> {
    let task = task_id(&id)?;
    let files = st.api.task_files(task).await?;
    Ok(Json(json::task_files(task.0, &files)))
}

/// `GET /api/v1/tasks/{id}/file?path=sub/a.txt`: one output file's bytes,
/// streamed.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/file", tag = "tasks", operation_id = "taskFile",
    summary = "One output file of the task, as bytes.",
    params(
        ("id" = u64, Path, description = "Task id."),
        ("path" = String, Query, description = "The file, relative to the task's output folder."),
    ),
    responses(
        (status = 200, description = "The file's bytes.", content_type = "application/octet-stream", body = String),
        (status = 400, description = "Not a task id, or a path that is absolute or escapes the task's folder.", body = ErrorBody),
        (status = 404, description = "No such task or file.", body = ErrorBody),
        (status = 500, description = "The master could not read the file.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn task_file(
    State(st): State<HttpState>,
    Id(id): Id,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let task = task_id(&id)?;
    let path = params(q, &["path"])?
        .into_iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .ok_or_else(|| HttpError::bad_field("path", "path: missing; give ?path=FILE"))?;
    let (size, chunks) = st.api.task_file(task, &path).await?;
    let body = chunks.map(|c| {
        c.map(|c| Bytes::from(c.data))
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /api/v1/outputs`: every task that has output files.
#[utoipa::path(get, path = "/api/v1/outputs", tag = "tasks", operation_id = "listOutputs",
    summary = "Every task that has output files.",
    responses(
        (status = 200, description = "The tasks, by id.", body = Outputs),
        (status = 500, description = "The master could not read its files.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn outputs(State(st): State<HttpState>, _: NoQuery) -> Result<Json<Outputs>, HttpError> {
    Ok(Json(json::outputs(&st.api.outputs().await?)))
}

/// `POST /api/v1/tasks/{id}/cancel`.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", operation_id = "cancelTask",
    summary = "Cancel a task: a queued one ends at once, a placed one is asked to stop.",
    params(("id" = u64, Path, description = "Task id.")),
    responses(
        (status = 200, description = "The task as it is now.", body = Cancelled),
        (status = 400, description = "Not a task id.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "The task had already ended.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn cancel_task(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(id): Id,
) -> Result<Json<Cancelled>, HttpError> {
    let task = st.api.cancel(task_id(&id)?).await?;
    Ok(Json(Cancelled {
        task: json::task(&task),
    }))
}

/// `GET /api/v1/tasks/{id}/logs[?follow=true][&offset=N][&tail=N]`: every
/// attempt's output in order, as plain text; with `follow`, streamed
/// (chunked) until the task has ended and all of its output has been sent.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks", operation_id = "taskLogs",
    summary = "The output of every attempt, in order; with follow=true streamed until the task has ended.",
    params(
        ("id" = u64, Path, description = "Task id."),
        ("follow" = Option<bool>, Query, description = "Keep sending what is written until the task has ended (false)."),
        ("offset" = Option<u64>, Query, description = "Skip this many bytes from the start (0)."),
        ("tail" = Option<u64>, Query, description = "Only the last this many bytes written so far."),
    ),
    responses(
        (status = 200, description = "Log text.", content_type = "text/plain", body = String),
        (status = 400, description = "Not a task id or a bad parameter; field names it.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 500, description = "The master could not read the log.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn task_logs(
    State(st): State<HttpState>,
    Id(id): Id,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let id = task_id(&id)?;
    let mut query = LogQuery::default();
    for (k, v) in params(q, &["follow", "offset", "tail"])? {
        match k.as_str() {
            "follow" => query.follow = flag(&k, &v)?,
            "offset" => query.offset = number("offset", &v)?,
            _ => query.tail = Some(number("tail", &v)?),
        }
    }
    let chunks = st.api.logs(id, query).await?;
    let body = chunks.map(|c| {
        c.map(|c| Bytes::from(c.data))
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /api/v1/events[?cursor=C][&task=ID]`: the committed changes as
/// server-sent events (`event:` the kind, `id:` the cursor, `data:` the
/// change as JSON), starting with a `start` event; a browser's
/// `EventSource` resumes by itself with `Last-Event-ID`. 410 when the
/// master cannot resume from the cursor: take a fresh snapshot.
#[utoipa::path(get, path = "/api/v1/events", tag = "watch", operation_id = "watchEvents",
    summary = "The committed changes as server-sent events, starting with `start`; `tick` every 15 s while quiet. Each event's data is a WatchEvent.",
    params(
        ("cursor" = Option<String>, Query, description = "Resume after this cursor (or send Last-Event-ID)."),
        ("task" = Option<u64>, Query, description = "Only this task's changes."),
        ("Last-Event-ID" = Option<String>, Header, description = "The cursor to resume after, as EventSource sends it."),
    ),
    responses(
        (status = 200, description = "A stream of server-sent events; data is a WatchEvent as JSON.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed cursor or task; field names it.", body = ErrorBody),
        (status = 410, description = "The master cannot resume from this cursor: take a fresh snapshot and watch from now.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn events(
    State(st): State<HttpState>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let mut query = WatchQuery {
        cursor: headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        task: None,
    };
    for (k, v) in params(q, &["cursor", "task"])? {
        match k.as_str() {
            "cursor" => query.cursor = Some(v),
            _ => {
                query.task = Some(task_id(&v).map_err(|_| {
                    HttpError::bad_field("task", format!("task: '{v}' is not a task id"))
                })?)
            }
        }
    }
    let items = st.api.watch(query).await?;
    let events = items.map(|i| {
        i.map(|i| {
            let e = v1::WatchEvent::from(&i);
            let data = serde_json::to_string(&json::watch_event(&e))
                .expect("a watch event serialises to JSON");
            axum::response::sse::Event::default()
                .event(e.kind.clone())
                .id(e.cursor.clone())
                .data(data)
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Ok(axum::response::sse::Sse::new(events).into_response())
}

/// `GET /api/v1/workers`: every worker, by name.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", operation_id = "listWorkers",
    summary = "Every worker, by name.",
    responses((status = 200, description = "The workers.", body = WorkerList)),
    security(("bearerAuth" = [])))]
pub async fn list_workers(
    State(st): State<HttpState>,
    _: NoQuery,
) -> Result<Json<WorkerList>, HttpError> {
    Ok(Json(json::workers(&st.api.workers().await?)))
}

/// `GET /api/v1/workers/{id}`: one worker, by id or by (unique) name, with
/// the attempts it holds resources for.
#[utoipa::path(get, path = "/api/v1/workers/{id}", tag = "workers", operation_id = "getWorker",
    summary = "One worker, by node id or name, with the attempts that hold its resources.",
    params(("id" = String, Path, description = "Node id or worker name.")),
    responses(
        (status = 200, description = "The worker.", body = WorkerDetail),
        (status = 404, description = "No such worker.", body = ErrorBody),
        (status = 409, description = "Several workers share this name: ask by id.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn get_worker(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(key): Id,
) -> Result<Json<WorkerDetail>, HttpError> {
    let d = st.api.worker(&key).await?;
    Ok(Json(json::worker_detail(&d.worker, &d.attempts)))
}

/// The answer to an operator action on a worker.
fn worker_action(action: &str, name: &str, message: String) -> Json<WorkerAction> {
    Json(json::worker_action(action, name, &message))
}

/// `POST /api/v1/workers/{id}/drain` (by name): no new placements there.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", operation_id = "drainWorker",
    summary = "No new placements on this worker; what runs there finishes.",
    params(("id" = String, Path, description = "Worker name.")),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Empty, or {}."),
    responses(
        (status = 200, description = "Done; message says what changed.", body = WorkerAction),
        (status = 400, description = "A body with fields, or a bad name; field names it.", body = ErrorBody),
        (status = 404, description = "No registered worker has this name.", body = ErrorBody),
        (status = 409, description = "The worker's state does not allow it; the message says why.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn drain_worker(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(name): Id,
    body: Bytes,
) -> Result<Json<WorkerAction>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.drain(&name).await?;
    Ok(worker_action("drain", &name, message))
}

/// `POST /api/v1/workers/{id}/undrain` (by name): it takes new work again.
#[utoipa::path(post, path = "/api/v1/workers/{id}/undrain", tag = "workers", operation_id = "undrainWorker",
    summary = "Undo a drain: the worker takes new tasks again.",
    params(("id" = String, Path, description = "Worker name.")),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Empty, or {}."),
    responses(
        (status = 200, description = "Done; message says what changed.", body = WorkerAction),
        (status = 400, description = "A body with fields, or a bad name; field names it.", body = ErrorBody),
        (status = 404, description = "No registered worker has this name.", body = ErrorBody),
        (status = 409, description = "The worker's state does not allow it; the message says why.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn undrain_worker(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(name): Id,
    body: Bytes,
) -> Result<Json<WorkerAction>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.undrain(&name).await?;
    Ok(worker_action("undrain", &name, message))
}

/// `POST /api/v1/workers/{id}/register` (by name): allow it to join.
#[utoipa::path(post, path = "/api/v1/workers/{id}/register", tag = "workers", operation_id = "registerWorker",
    summary = "Allow this name to join a master started with --require-registration.",
    params(("id" = String, Path, description = "Worker name.")),
    request_body(content = Option<EmptyRequest>, content_type = "application/json", description = "Empty, or {}."),
    responses(
        (status = 200, description = "Done; message says what changed.", body = WorkerAction),
        (status = 400, description = "A body with fields, or a bad name; field names it.", body = ErrorBody),
        (status = 409, description = "The worker's state does not allow it; the message says why.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn register_worker(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(name): Id,
    body: Bytes,
) -> Result<Json<WorkerAction>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.register(&name).await?;
    Ok(worker_action("register", &name, message))
}

/// `POST /api/v1/workers/{id}/unregister` (by name) with
/// `{"confirm_dead": bool}` (an empty body is a plain unregister).
#[utoipa::path(post, path = "/api/v1/workers/{id}/unregister", tag = "workers", operation_id = "unregisterWorker",
    summary = "Remove a drained (or down) worker that runs nothing.",
    params(("id" = String, Path, description = "Worker name.")),
    request_body(content = Option<UnregisterRequest>, content_type = "application/json", description = "Empty is {\"confirm_dead\": false}."),
    responses(
        (status = 200, description = "Removed.", body = WorkerAction),
        (status = 400, description = "A bad body; field names it.", body = ErrorBody),
        (status = 404, description = "No registered worker has this name.", body = ErrorBody),
        (status = 409, description = "Still connected, running tasks, neither drained nor down, or holding attempts whose fate is unknown.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn unregister_worker(
    State(st): State<HttpState>,
    _: NoQuery,
    Id(name): Id,
    body: Bytes,
) -> Result<Json<WorkerAction>, HttpError> {
    let obj = object_body(&body, &["confirm_dead"])?;
    let request = UnregisterRequest {
        confirm_dead: body_flag(&obj, "confirm_dead")?,
    };
    let message = st.api.unregister(&name, request.confirm_dead).await?;
    Ok(worker_action("unregister", &name, message))
}

/// `POST /api/v1/reconcile` with `{"dry_run": bool}` (an empty body is a
/// real run): the audit behind `fix-resources`, and its report.
#[utoipa::path(post, path = "/api/v1/reconcile", tag = "workers", operation_id = "reconcile",
    summary = "The audit behind fix-resources: compare and fix each worker's allocation (not in a dry run).",
    request_body(content = Option<ReconcileRequest>, content_type = "application/json", description = "Empty is a real run."),
    responses(
        (status = 200, description = "The report.", body = ReconcileReport),
        (status = 400, description = "A bad body; field names it.", body = ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn reconcile(
    State(st): State<HttpState>,
    _: NoQuery,
    body: Bytes,
) -> Result<Json<ReconcileReport>, HttpError> {
    let obj = object_body(&body, &["dry_run"])?;
    let request = ReconcileRequest {
        dry_run: body_flag(&obj, "dry_run")?,
    };
    Ok(Json(json::reconcile(
        &st.api.reconcile(request.dry_run).await?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let p = params(Some("state=running&limit=5".into()), &["state", "limit"]).unwrap();
        assert_eq!(
            p,
            vec![
                ("state".to_string(), "running".to_string()),
                ("limit".to_string(), "5".to_string())
            ]
        );
        assert_eq!(decode("a%20b+c%2"), "a b c%2");
        assert_eq!(decode("%41%zz"), "A%zz");
        let e = params(Some("stat=x".into()), &["state"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("stat"));
        assert!(flag("follow", "true").unwrap());
        assert!(!flag("follow", "false").unwrap());
        for bad in ["maybe", "", "1", "0", "yes", "True"] {
            assert_eq!(
                flag("follow", bad).unwrap_err().field.as_deref(),
                Some("follow")
            );
        }
    }

    #[test]
    fn bodies_take_only_their_fields() {
        assert!(object_body(b"", &["dry_run"]).unwrap().is_empty());
        assert!(object_body(b"  ", &["dry_run"]).is_err());
        assert!(object_body(b" {} ", &["dry_run"]).unwrap().is_empty());
        let obj = object_body(br#"{"confirm_dead": true}"#, &["confirm_dead"]).unwrap();
        assert!(body_flag(&obj, "confirm_dead").unwrap());
        let e = object_body(br#"{"confirm": true}"#, &["confirm_dead"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("confirm"));
        let obj = object_body(br#"{"dry_run": "yes"}"#, &["dry_run"]).unwrap();
        assert_eq!(
            body_flag(&obj, "dry_run").unwrap_err().field.as_deref(),
            Some("dry_run")
        );
        let obj = object_body(br#"{"dry_run": null}"#, &["dry_run"]).unwrap();
        assert_eq!(
            body_flag(&obj, "dry_run").unwrap_err().field.as_deref(),
            Some("dry_run")
        );
        assert_eq!(object_body(b"[1]", &[]).unwrap_err().field, None);
        assert_eq!(
            number::<u32>("limit", "x").unwrap_err().field.as_deref(),
            Some("limit")
        );
    }

    #[test]
    fn report_lines_speak_like_fix_resources() {
        use crate::state::{FixKind, ReconcileReport, WorkerFix};
        use berth_core::units::GIB;
        use berth_core::{Resources, WorkerId};
        let mut r = ReconcileReport {
            dry_run: false,
            workers_checked: 1,
            fixes: vec![WorkerFix {
                worker: WorkerId("w1".into()),
                name: "Tessa".into(),
                kind: FixKind::Records,
                before: Resources {
                    cpu_millis: 5000,
                    memory_bytes: GIB / 2,
                    ..Resources::ZERO
                },
                after: Resources::ZERO,
                tasks: 0,
            }],
        };
        let lines =
            |r: &ReconcileReport| json::reconcile(&crate::views::reconcile(r.clone())).lines;
        assert_eq!(
            lines(&r),
            [
                "✓ Fixed Tessa: CPU 5.0→0.0, Memory 0.5→0.0, Tasks: 0",
                "✓ Resource reconciliation complete: fixed 1 workers",
            ]
        );
        r.dry_run = true;
        assert!(lines(&r)[0].starts_with("Would fix Tessa"));
    }

    #[test]
    fn task_ids() {
        assert_eq!(task_id("12").unwrap(), TaskId(12));
        assert_eq!(task_id("#12").unwrap(), TaskId(12));
        assert_eq!(task_id("x").unwrap_err().field.as_deref(), Some("id"));
    }
}
