//! The REST/JSON API handlers under `/api/v1`: a thin adapter from HTTP
//! to [`crate::api`]. Each handler reads its path, query and body, calls
//! one operation, and writes the answer as JSON (`super::json`), or as
//! plain text for logs and bytes for a file. Errors map once, in
//! `super::error`.

use super::HttpState;
use super::error::HttpError;
use super::{json, submit};
use crate::api::{LogQuery, TaskFilter, TaskQuery, WatchQuery};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::TaskId;
use berth_proto::v1;
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;

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

fn flag(field: &str, v: &str) -> Result<bool, HttpError> {
    match v {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
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

/// A JSON object body with only the `allowed` fields; an empty body is `{}`.
fn object_body(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
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

/// A boolean field of a body: absent or null is false.
fn body_flag(obj: &Map<String, Value>, field: &str) -> Result<bool, HttpError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(HttpError::bad_field(
            field,
            format!("{field}: must be true or false"),
        )),
    }
}

/// `GET /api/v1/tasks?state=&name=&worker=&limit=&cursor=`: one page of
/// tasks, active ones oldest first, then finished ones newest first.
pub async fn list_tasks(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let mut query = TaskQuery::default();
    for (k, v) in params(q, &["state", "name", "worker", "limit", "cursor"])? {
        match k.as_str() {
            "state" => query.filter.state = TaskFilter::parse_state("state", &v)?,
            "name" => query.filter.name = Some(v).filter(|v| !v.is_empty()),
            "worker" => query.filter.worker = Some(v).filter(|v| !v.is_empty()),
            "limit" => query.limit = Some(number("limit", &v)?),
            _ => query.cursor = Some(v).filter(|v| !v.is_empty()),
        }
    }
    let page = st.api.list_tasks(query).await?;
    Ok(Json(json!({
        "tasks": page.tasks.iter().map(json::task).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
        "total": page.total,
        "remaining": page.remaining,
    })))
}

/// `POST /api/v1/tasks`: 201 with the new task, once it is durable.
pub async fn submit_task(State(st): State<HttpState>, body: Bytes) -> Result<Response, HttpError> {
    let (spec, queue_anyway) = submit::parse(&body)?;
    let id = st.api.submit(spec, queue_anyway).await?;
    let task = json::task(&st.api.show(id).await?);
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
) -> Result<Json<Value>, HttpError> {
    Ok(Json(json::task(&st.api.show(task_id(&id)?).await?)))
}

/// `GET /api/v1/tasks/{id}/files`: the files the task's latest attempt
/// left in its output folder (`[{path, size}]`).
pub async fn task_files(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let task = task_id(&id)?;
    let files: Vec<Value> = st
        .api
        .task_files(task)
        .await?
        .into_iter()
        .map(|f| json!({ "path": f.path, "size": f.size }))
        .collect();
    Ok(Json(json!({ "task_id": task.0, "files": files })))
}

/// `GET /api/v1/tasks/{id}/file?path=sub/a.txt`: one output file's bytes,
/// streamed.
pub async fn task_file(
    State(st): State<HttpState>,
    Path(id): Path<String>,
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
pub async fn outputs(State(st): State<HttpState>) -> Result<Json<Value>, HttpError> {
    let tasks: Vec<Value> = st
        .api
        .outputs()
        .await?
        .iter()
        .map(|t| {
            json!({
                "task_id": t.task_id,
                "name": t.name,
                "state": t.state,
                "files": t.files,
                "bytes": t.bytes,
            })
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks })))
}

/// `POST /api/v1/tasks/{id}/cancel`.
pub async fn cancel_task(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let task = st.api.cancel(task_id(&id)?).await?;
    Ok(Json(json!({ "task": json::task(&task) })))
}

/// `GET /api/v1/tasks/{id}/logs[?follow=true][&offset=N][&tail=N]`: every
/// attempt's output in order, as plain text; with `follow`, streamed
/// (chunked) until the task has ended and all of its output has been sent.
pub async fn task_logs(
    State(st): State<HttpState>,
    Path(id): Path<String>,
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
            let data = json::watch_event(&e);
            axum::response::sse::Event::default()
                .event(e.kind.clone())
                .id(e.cursor.clone())
                .data(data.to_string())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Ok(axum::response::sse::Sse::new(events).into_response())
}

/// `GET /api/v1/workers`: every worker, by name.
pub async fn list_workers(State(st): State<HttpState>) -> Result<Json<Value>, HttpError> {
    let list: Vec<Value> = st.api.workers().await?.iter().map(json::worker).collect();
    Ok(Json(json!({ "workers": list })))
}

/// `GET /api/v1/workers/{id}`: one worker, by id or by (unique) name, with
/// the attempts it holds resources for.
pub async fn get_worker(
    State(st): State<HttpState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let d = st.api.worker(&key).await?;
    let mut v = json::worker(&d.worker);
    v["attempts"] = d.attempts.iter().map(json::attempt).collect();
    Ok(Json(v))
}

/// The answer to an operator action on a worker.
fn worker_action(action: &str, name: &str, message: String) -> Json<Value> {
    Json(json!({ "action": action, "worker": name, "message": message }))
}

/// `POST /api/v1/workers/{id}/drain` (by name): no new placements there.
pub async fn drain_worker(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.drain(&name).await?;
    Ok(worker_action("drain", &name, message))
}

/// `POST /api/v1/workers/{id}/undrain` (by name): it takes new work again.
pub async fn undrain_worker(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.undrain(&name).await?;
    Ok(worker_action("undrain", &name, message))
}

/// `POST /api/v1/workers/{id}/register` (by name): allow it to join.
pub async fn register_worker(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    object_body(&body, &[])?;
    let message = st.api.register(&name).await?;
    Ok(worker_action("register", &name, message))
}

/// `POST /api/v1/workers/{id}/unregister` (by name) with
/// `{"confirm_dead": bool}` (an empty body is a plain unregister).
pub async fn unregister_worker(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let obj = object_body(&body, &["confirm_dead"])?;
    let confirm_dead = body_flag(&obj, "confirm_dead")?;
    let message = st.api.unregister(&name, confirm_dead).await?;
    Ok(worker_action("unregister", &name, message))
}

/// `POST /api/v1/reconcile` with `{"dry_run": bool}` (an empty body is a
/// real run): the audit behind `fix-resources`, and its report.
pub async fn reconcile(State(st): State<HttpState>, body: Bytes) -> Result<Json<Value>, HttpError> {
    let obj = object_body(&body, &["dry_run"])?;
    let dry_run = body_flag(&obj, "dry_run")?;
    Ok(Json(json::reconcile(&st.api.reconcile(dry_run).await?)))
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
    fn bodies_take_only_their_fields() {
        assert!(object_body(b"  ", &["dry_run"]).unwrap().is_empty());
        let obj = object_body(br#"{"confirm_dead": true}"#, &["confirm_dead"]).unwrap();
        assert!(body_flag(&obj, "confirm_dead").unwrap());
        let e = object_body(br#"{"confirm": true}"#, &["confirm_dead"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("confirm"));
        let obj = object_body(br#"{"dry_run": "yes"}"#, &["dry_run"]).unwrap();
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
    fn task_ids() {
        assert_eq!(task_id("12").unwrap(), TaskId(12));
        assert_eq!(task_id("#12").unwrap(), TaskId(12));
        assert_eq!(task_id("x").unwrap_err().field.as_deref(), Some("id"));
    }
}
