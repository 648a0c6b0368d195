//! `GET /openapi.json`: the OpenAPI 3.1 description of every route in
//! [`super::ROUTES`], generated from the code: each handler's
//! `#[utoipa::path]` (parameters, request body, answers) and the typed
//! shapes of `berth_proto::json` it writes (their schemas). Nothing is kept
//! by hand but what every route shares, added here once: the bearer-token
//! scheme, 401 on every route that needs the token, 503 on every
//! `/api/v1` route (the engine stopped, or the store refused the write),
//! and the links from a submission to the task's routes.
//!
//! The test below and `crates/cli/tests/rest_api.rs` check that the
//! document and the router list the same routes, with the same auth;
//! `crates/cli/tests/openapi_conformance.rs` validates real answers
//! against it, and `scripts/schemathesis` fuzzes a live master with it.

use super::error::ErrorBody;
use axum::http::header;
use axum::response::IntoResponse;
use berth_proto::json::{Downloaded, TaskList, WatchEvent};
use serde_json::{Value, json};
use std::sync::LazyLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth master HTTP API",
        version = "1",
        description = "The REST/JSON API, metrics and dashboard of a berth master. Routes \
            secured with bearerAuth need `Authorization: Bearer TOKEN` with the cluster token \
            (the master's DATA_DIR/token). Errors are `{\"error\": ..., \"field\": ...}`: what \
            went wrong and what to do, and the request field at fault or null. See docs/API.md."
    ),
    servers((url = "/")),
    paths(
        super::dashboard::page,
        super::healthz,
        document,
        super::metrics::scrape,
        super::api::list_tasks,
        super::api::submit_task,
        super::api::get_task,
        super::api::cancel_task,
        super::api::task_logs,
        super::api::task_files,
        super::api::task_file,
        super::api::outputs,
        super::api::list_workers,
        super::api::get_worker,
        super::api::drain_worker,
        super::api::undrain_worker,
        super::api::register_worker,
        super::api::unregister_worker,
        super::api::reconcile,
        super::api::events,
    ),
    // Shapes no route answers with directly: the data of each server-sent
    // event, and what the CLI's `--json` prints besides the API's answers.
    components(schemas(ErrorBody, WatchEvent, TaskList, Downloaded)),
    tags(
        (name = "tasks", description = "Submit, list, watch and cancel tasks; their logs and output files."),
        (name = "workers", description = "Workers, operator actions on them, and the reconciler."),
        (name = "watch", description = "The change feed."),
        (name = "master", description = "The master's own faces: dashboard, health, metrics, this document."),
    )
)]
struct Document;

/// The answer every route that needs the token may give.
const UNAUTHORIZED: &str = "Missing or wrong cluster token; nothing was changed.";
/// The answer every `/api/v1` route may give.
const UNAVAILABLE: &str = "The master's engine has stopped, or its store refused the write \
                           (nothing was recorded; try again later).";

fn build() -> Value {
    let mut doc = serde_json::to_value(Document::openapi()).expect("the document is JSON");
    doc["components"]["securitySchemes"] = json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "The cluster token, from the master's DATA_DIR/token."
        }
    });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        })
    };
    // Where a task's id comes from: clients (and schemathesis's stateful
    // phase) follow these links from a submission to the task's routes.
    let by_task_id =
        |op: &str| json!({"operationId": op, "parameters": {"id": "$response.body#/task_id"}});
    doc["paths"]["/api/v1/tasks"]["post"]["responses"]["201"]["links"] = json!({
        "GetTask": by_task_id("getTask"),
        "CancelTask": by_task_id("cancelTask"),
        "TaskFiles": by_task_id("taskFiles"),
        "TaskLogs": by_task_id("taskLogs"),
    });
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for op in item.as_object_mut().expect("a path item").values_mut() {
            optional_body_is_not_null(op);
            let secured = op.get("security").is_some();
            let responses = op["responses"].as_object_mut().expect("responses");
            if secured {
                responses.insert("401".into(), error(UNAUTHORIZED));
            }
            if path.starts_with("/api/v1/") {
                responses.insert("503".into(), error(UNAVAILABLE));
            }
        }
    }
    doc
}

/// `request_body(content = Option<T>)` means "the body may be left out";
/// utoipa also writes it as `T` or `null`, but a `null` body is refused
/// like any body that is not an object: keep `T`, not required.
fn optional_body_is_not_null(op: &mut Value) {
    let Some(body) = op.get_mut("requestBody") else {
        return;
    };
    if body["required"] == json!(true) {
        return;
    }
    body["required"] = json!(false);
    let schema = &mut body["content"]["application/json"]["schema"];
    if let Some(Value::Array(choices)) = schema.get("oneOf") {
        let not_null: Vec<&Value> = choices
            .iter()
            .filter(|c| **c != json!({"type": "null"}))
            .collect();
        if let [only] = not_null[..] {
            *schema = only.clone();
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| build().to_string());

/// The document, as served.
pub fn document_json() -> &'static str {
    &DOCUMENT
}

#[utoipa::path(get, path = "/openapi.json", tag = "master", operation_id = "openapi",
    summary = "This document.",
    responses((status = 200, description = "OpenAPI 3.1.", body = serde_json::Value)))]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ROUTES;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc: Value = serde_json::from_str(document_json()).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let secured = op.get("security").is_some();
                documented.insert((method.to_uppercase(), path.clone(), secured));
                // Every operation documents its success and its errors.
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}"
                );
                if secured {
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
            }
        }
        let served: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string(), r.auth))
            .collect();
        assert_eq!(documented, served);
        // Every schema referenced is defined.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in document_json().split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "schema {name} is not defined");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn streams_and_text_have_their_media_types() {
        let doc: Value = serde_json::from_str(document_json()).unwrap();
        let ok = |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"].clone();
        assert!(ok("/api/v1/events").get("text/event-stream").is_some());
        assert!(ok("/api/v1/tasks/{id}/logs").get("text/plain").is_some());
        assert!(
            ok("/api/v1/tasks/{id}/file")
                .get("application/octet-stream")
                .is_some()
        );
        // A submission links to the routes of the task it made, and each
        // link names a real operation.
        let links = doc["paths"]["/api/v1/tasks"]["post"]["responses"]["201"]["links"]
            .as_object()
            .unwrap();
        let operations: BTreeSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        for link in links.values() {
            assert!(operations.contains(link["operationId"].as_str().unwrap()));
        }
        // An optional body is an object when given, never `null`.
        let reconcile = &doc["paths"]["/api/v1/reconcile"]["post"]["requestBody"];
        assert_eq!(reconcile["required"], false);
        assert_eq!(
            reconcile["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ReconcileRequest"
        );
        assert_eq!(
            doc["paths"]["/api/v1/tasks"]["post"]["requestBody"]["required"],
            true
        );
        // The error shape: `field` is always there, a string or null.
        let error = &doc["components"]["schemas"]["Error"];
        let required: Vec<&str> = error["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["error", "field"]);
    }
}
