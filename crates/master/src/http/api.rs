//! The REST/JSON API handlers under `/api/v1`: each maps one request onto
//! the engine exactly as the gRPC `Control` service does (same commands,
//! same views, same errors), and answers in JSON (`super::json`), or in
//! plain text for logs.

use super::HttpState;
use super::error::ApiError;
use super::{json, submit};
use crate::engine::{Command, EngineHandle};
use crate::logs::LogStore;
use crate::state::{CancelError, SubmitError};
use crate::views;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{AttemptId, TaskId, TaskRecord, TaskState};
use berth_proto::attempt_to_wire;
use serde_json::{Value, json};
use std::time::Duration;

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const LOG_READ: usize = 256 * 1024;

/// `?a=1&b=x` → pairs, percent-decoded; names not in `allowed` are refused.
fn params(raw: Option<String>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.as_deref().unwrap_or("").split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (decode(k), decode(v));
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_field(
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

fn flag(field: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_field(
            field,
            format!("{field}: '{v}' is not true or false"),
        )),
    }
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.trim_start_matches('#')
        .parse::<u64>()
        .map(TaskId)
        .map_err(|_| ApiError::bad_field("id", format!("id: '{raw}' is not a task id")))
}

async fn task_json(engine: &EngineHandle, id: TaskId) -> Result<Value, ApiError> {
    engine
        .query(move |s| s.task(id).map(|t| json::task(&views::task(s, t))))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))
}

/// `GET /api/v1/tasks?state=running&limit=100`: tasks in id order; with
/// `limit`, the newest that many of those matching.
pub async fn list_tasks(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut filter: Option<TaskState> = None;
    let mut limit: Option<usize> = None;
    for (k, v) in params(q, &["state", "limit"])? {
        match k.as_str() {
            "state" if v.is_empty() => {}
            "state" => {
                filter = Some(TaskState::parse(&v).ok_or_else(|| {
                    let all: Vec<_> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::bad_field(
                        "state",
                        format!(
                            "state: '{v}' is not a task state; use one of {}",
                            all.join(", ")
                        ),
                    )
                })?)
            }
            _ => {
                limit = Some(v.parse().map_err(|_| {
                    ApiError::bad_field("limit", format!("limit: '{v}' is not a whole number"))
                })?)
            }
        }
    }
    let body = st
        .engine
        .query(move |s| {
            let matching: Vec<&TaskRecord> = s
                .tasks()
                .filter(|t| filter.is_none_or(|f| t.state == f))
                .collect();
            let total = matching.len();
            let skip = limit.map_or(0, |l| total.saturating_sub(l));
            let tasks: Vec<Value> = views::task_list(s, matching[skip..].iter().copied())
                .iter()
                .map(json::task)
                .collect();
            json!({ "tasks": tasks, "total": total })
        })
        .await?;
    Ok(Json(body))
}

/// `POST /api/v1/tasks`: 201 with the new task, once it is durable.
pub async fn submit_task(State(st): State<HttpState>, body: Bytes) -> Result<Response, ApiError> {
    let (spec, queue_anyway) = submit::parse(&body)?;
    let r = st
        .engine
        .call(|reply| Command::Submit {
            spec,
            queue_anyway,
            reply,
        })
        .await?;
    let id = match r {
        Ok(id) => id,
        Err(SubmitError::Invalid(e)) => {
            return Err(ApiError::bad_field(e.field, format!("invalid task: {e}")));
        }
        Err(SubmitError::NeverFits(why)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{why} (set \"queue_anyway\": true to queue it regardless)"),
            ));
        }
    };
    let task = task_json(&st.engine, id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/tasks/{id}"))],
        Json(json!({ "task_id": id.0, "task": task })),
    )
        .into_response())
}

/// `GET /api/v1/tasks/{id}`: the task with all its attempts.
pub async fn get_task(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(task_json(&st.engine, task_id(&id)?).await?))
}

fn output_error(e: crate::outputs::OutputError) -> ApiError {
    use crate::outputs::OutputError as E;
    match e {
        E::BadPath { .. } => ApiError::bad_field("path", e.to_string()),
        E::NoSuchFile { .. } => ApiError::not_found(e.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `GET /api/v1/tasks/{id}/files`: the files the task's latest attempt
/// left in its output folder (`[{path, size}]`).
pub async fn task_files(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = task_id(&id)?;
    task_json(&st.engine, task).await?; // 404 for an unknown task
    let files = st.outputs.files(task).map_err(output_error)?;
    let files: Vec<Value> = files
        .into_iter()
        .map(|f| json!({ "path": f.path, "size": f.size }))
        .collect();
    Ok(Json(json!({ "task_id": task.0, "files": files })))
}

/// `GET /api/v1/tasks/{id}/file?path=sub/a.txt`: one output file's bytes.
pub async fn task_file(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let task = task_id(&id)?;
    let path = params(q, &["path"])?
        .into_iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::bad_field("path", "path: missing; give ?path=FILE"))?;
    let (mut file, size) = st.outputs.open_file(task, &path).map_err(output_error)?;
    let bytes = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {path}: {e}"),
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response())
}

/// `POST /api/v1/tasks/{id}/cancel`.
pub async fn cancel_task(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = task_id(&id)?;
    match st
        .engine
        .call(|reply| Command::Cancel { task, reply })
        .await?
    {
        Ok(_) => Ok(Json(json!({ "task": task_json(&st.engine, task).await? }))),
        Err(e @ CancelError::NoSuchTask(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ CancelError::AlreadyEnded(..)) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
    }
}

/// `GET /api/v1/tasks/{id}/logs[?follow=true]`: every attempt's output in
/// order, as plain text; with `follow`, streamed (chunked) until the task
/// has ended and all of its output has been sent.
pub async fn task_logs(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let mut follow = false;
    for (k, v) in params(q, &["follow"])? {
        follow = flag(&k, &v)?;
    }
    let exists = st.engine.query(move |s| s.task(id).is_some()).await?;
    if !exists {
        return Err(ApiError::not_found(format!("task {id} does not exist")));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(stream_logs(
        st.engine.clone(),
        st.logs.clone(),
        id,
        follow,
        st.stopping.clone(),
        tx,
    ));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

/// Send every attempt's log in order; when following, poll until the task
/// has ended (its final result is applied only after the worker has sent
/// all of the log, so one more pass after that is complete). Stops when
/// the client goes away.
async fn stream_logs(
    engine: EngineHandle,
    logs: LogStore,
    id: TaskId,
    follow: bool,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut offsets: Vec<(AttemptId, u64)> = Vec::new();
    loop {
        let Ok((attempts, ended)) = engine
            .query(move |s| {
                let ids: Vec<AttemptId> = s.attempts_of(id).map(|a| a.id).collect();
                (ids, s.task(id).is_none_or(|t| t.state.is_terminal()))
            })
            .await
        else {
            return;
        };
        for a in attempts {
            if !offsets.iter().any(|(x, _)| *x == a) {
                offsets.push((a, 0));
            }
        }
        for (a, off) in offsets.iter_mut() {
            loop {
                let data = match logs.read(*a, *off, LOG_READ) {
                    Ok(d) if d.is_empty() => break,
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(attempt = %a, error = %e, "reading a task log");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                *off += data.len() as u64;
                if tx.send(Ok(Bytes::from(data))).await.is_err() {
                    return;
                }
            }
        }
        if !follow || ended || tx.is_closed() || *stopping.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// `GET /api/v1/workers`: every worker, by name.
pub async fn list_workers(State(st): State<HttpState>) -> Result<Json<Value>, ApiError> {
    let workers = st.engine.query(views::workers).await?;
    let list: Vec<Value> = workers.iter().map(json::worker).collect();
    Ok(Json(json!({ "workers": list })))
}

/// `GET /api/v1/workers/{id}`: one worker, by id or by (unique) name, with
/// the attempts it holds resources for.
pub async fn get_worker(
    State(st): State<HttpState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let k = key.clone();
    let found = st
        .engine
        .query(move |s| {
            let by_id = s.workers().find(|w| w.id.0 == k);
            let matches: Vec<_> = match by_id {
                Some(w) => vec![w],
                None => s.workers().filter(|w| w.name == k).collect(),
            };
            match matches.as_slice() {
                [w] => {
                    let mut v = json::worker(&views::worker(s, w));
                    let held: Vec<Value> = s
                        .ledger()
                        .attempts_on(&w.id)
                        .filter_map(|a| s.attempt(a))
                        .map(|a| json::attempt(&attempt_to_wire(a, &w.name)))
                        .collect();
                    v["attempts"] = Value::Array(held);
                    Ok(Some(v))
                }
                [] => Ok(None),
                many => Err(many.iter().map(|w| w.id.0.clone()).collect::<Vec<_>>()),
            }
        })
        .await?;
    match found {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::not_found(format!(
            "no worker has the id or name '{key}'"
        ))),
        Err(ids) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} workers are named '{key}'; ask by id: {}",
                ids.len(),
                ids.join(", ")
            ),
        )),
    }
}

/// `POST /api/v1/reconcile` with `{"dry_run": bool}` (an empty body is a
/// real run): the audit behind `fix-resources`, and its report.
pub async fn reconcile(State(st): State<HttpState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let dry_run = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object, e.g. {\"dry_run\": true}",
            ));
        };
        if let Some(k) = obj.keys().find(|k| k.as_str() != "dry_run") {
            return Err(ApiError::bad_field(
                k.as_str(),
                format!("{k}: unknown field; the only field is dry_run"),
            ));
        }
        match obj.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "dry_run",
                    "dry_run: must be true or false",
                ));
            }
        }
    };
    let report = st
        .engine
        .call(|reply| Command::Reconcile { dry_run, reply })
        .await?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reconciling: {e}"),
            )
        })?;
    Ok(Json(json::reconcile(&views::reconcile(report))))
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
        assert!(!flag("follow", "0").unwrap());
        assert!(flag("follow", "maybe").is_err());
    }

    #[test]
    fn task_ids() {
        assert_eq!(task_id("12").unwrap(), TaskId(12));
        assert_eq!(task_id("#12").unwrap(), TaskId(12));
        assert_eq!(task_id("x").unwrap_err().field.as_deref(), Some("id"));
    }
}
