//! The body of `POST /api/v1/tasks` → a [`TaskSpec`]. The body is core's
//! [`SpecInput`] (plus `queue_anyway`), built by `berth_core::build_spec`,
//! the one parser every face uses: the same defaults, units and limits as
//! the shell and the CLI, and every error names the JSON field at fault.
//!
//! ```json
//! {"command": ["sh", "-c", "echo hi"], "cpu": 0.5, "memory": "512M",
//!  "storage": 0, "gpus": 0, "name": "hello", "env": {"K": "V"},
//!  "retries": 3, "timeout": "10m", "queue_anyway": false}
//! ```
//!
//! With `image` the task runs as a container, without as a process. Sizes
//! given as JSON numbers are bytes; as strings they take a unit suffix
//! (`"512M"`, `"2G"`) and a bare number is GB, as at the shell.
//!
//! `berth_proto::json::SubmitRequest` describes this body in the OpenAPI
//! document; parsing is done here and by `build_spec`, not by that type.

use super::error::HttpError;
use berth_core::{SpecInput, TaskSpec, build_spec};
use serde_json::Value;

/// The submission option that is not part of the task.
const QUEUE_ANYWAY: &str = "queue_anyway";

/// Parse a submission. Returns the spec and `queue_anyway`.
pub fn parse(body: &[u8]) -> Result<(TaskSpec, bool), HttpError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| malformed(body, &e))?;
    let Value::Object(mut obj) = v else {
        return Err(HttpError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "the body must be a JSON object, e.g. {\"command\": [\"echo\", \"hi\"]}",
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| *k != QUEUE_ANYWAY && !SpecInput::FIELDS.contains(&k.as_str()))
    {
        return Err(HttpError::bad_field(
            k.as_str(),
            format!(
                "{k}: unknown field; the fields are {}, {QUEUE_ANYWAY}",
                SpecInput::FIELDS.join(", ")
            ),
        ));
    }
    let queue_anyway = match obj.remove(QUEUE_ANYWAY) {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(HttpError::bad_field(
                QUEUE_ANYWAY,
                format!("{QUEUE_ANYWAY}: must be true or false (leave it out for false)"),
            ));
        }
    };
    // Every known field takes any JSON shape, so this fails only on what
    // the checks above already refuse.
    let input: SpecInput = serde_json::from_value(Value::Object(obj))
        .map_err(|e| HttpError::new(axum::http::StatusCode::BAD_REQUEST, e.to_string()))?;
    let spec = build_spec(&input).map_err(|e| HttpError::bad_field(e.field, e.to_string()))?;
    Ok((spec, queue_anyway))
}

/// A syntax error, naming the top-level field whose value it is in when
/// there is one (`{"cpu": abc}` → field `cpu`).
fn malformed(body: &[u8], e: &serde_json::Error) -> HttpError {
    let at = offset_of(body, e.line(), e.column());
    match field_at(&body[..at.min(body.len())]) {
        Some(field) => HttpError::bad_field(
            field.clone(),
            format!("malformed JSON in the value of {field}: {e}"),
        ),
        None => HttpError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        ),
    }
}

/// Byte offset of a 1-based line and column.
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match body[start..].iter().position(|b| *b == b'\n') {
            Some(i) => start += i + 1,
            None => return body.len(),
        }
    }
    start + column
}

/// The last key of the outermost object seen in `prefix`, if the prefix
/// ends inside that key's value.
fn field_at(prefix: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut last_string: Option<(usize, usize)> = None;
    let mut key: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < prefix.len() {
        match prefix[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < prefix.len() && prefix[i] != b'"' {
                    i += if prefix[i] == b'\\' { 2 } else { 1 };
                }
                last_string = Some((start, i.min(prefix.len())));
            }
            b':' if depth == 1 => key = last_string,
            b',' if depth == 1 => key = None,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    let (a, b) = key?;
    Some(String::from_utf8_lossy(&prefix[a..b]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::DriverKind;
    use berth_core::units::{GIB, MIB};

    fn ok(body: &str) -> (TaskSpec, bool) {
        parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn field_of(body: &str) -> Option<String> {
        let e = parse(body.as_bytes()).expect_err(body);
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        e.field
    }

    #[test]
    fn defaults_match_the_cli() {
        let (s, q) = ok(r#"{"command": ["true"]}"#);
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(s.resources.cpu_millis, 1000);
        assert_eq!(s.resources.memory_bytes, GIB / 2);
        assert_eq!(s.resources.storage_bytes, 0);
        assert_eq!(s.retries, berth_core::task::DEFAULT_RETRIES);
        assert!(!q);
    }

    #[test]
    fn units_as_numbers_and_strings() {
        let (s, q) = ok(r#"{"command": ["true"], "cpu": 0.5, "memory": 1073741824,
            "storage": "2G", "gpus": "1", "env": {"B": "2", "A": "1"},
            "retries": 0, "timeout": "90s", "name": "n", "queue_anyway": true}"#);
        assert_eq!(s.resources.cpu_millis, 500);
        assert_eq!(s.resources.memory_bytes, GIB);
        assert_eq!(s.resources.storage_bytes, 2 * GIB);
        assert_eq!(s.resources.gpus, 1);
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(s.retries, 0);
        assert_eq!(s.timeout_ms, Some(90_000));
        assert_eq!(s.name, "n");
        assert!(q);
        let (s, _) = ok(
            r#"{"command": ["true"], "priority": -5, "constraints": {"gpu": "a100"},
            "strategy": "spread", "worker": "Tessa"}"#,
        );
        assert_eq!(s.priority, -5);
        assert_eq!(s.constraints, vec![("gpu".into(), "a100".into())]);
        assert_eq!(s.strategy, Some(berth_core::Strategy::Spread));
        assert_eq!(s.pinned_worker.as_deref(), Some("Tessa"));
        let (s, _) = ok(r#"{"command": ["true"], "cpu": "2.25", "memory": "512M", "timeout": 5}"#);
        assert_eq!(s.resources.cpu_millis, 2250);
        assert_eq!(s.resources.memory_bytes, 512 * MIB);
        assert_eq!(s.timeout_ms, Some(5_000));
    }

    #[test]
    fn an_image_makes_a_container_task() {
        let (s, _) = ok(r#"{"image": "ubuntu:latest", "cpu": 5.0}"#);
        assert_eq!(s.driver, DriverKind::Docker);
        assert_eq!(s.image.as_deref(), Some("ubuntu:latest"));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (r#"{"cpu": "abc"}"#, "cpu"),
            (r#"{"cpu": -1}"#, "cpu"),
            (r#"{"cpu": true}"#, "cpu"),
            (r#"{"memory": "lots"}"#, "memory"),
            (r#"{"memory": 1.5}"#, "memory"),
            (r#"{"storage": -3}"#, "storage"),
            (r#"{"gpus": 0.5}"#, "gpus"),
            (r#"{"command": "echo hi"}"#, "command"),
            (r#"{"command": ["echo", 1]}"#, "command"),
            (r#"{"env": "A=1"}"#, "env"),
            (r#"{"command": ["true"], "env": ["NOEQUALS"]}"#, "env"),
            (r#"{"env": {"A": 1}}"#, "env"),
            (r#"{"retries": "many"}"#, "retries"),
            (r#"{"timeout": "soon"}"#, "timeout"),
            (r#"{"queue_anyway": "yes"}"#, "queue_anyway"),
            (
                r#"{"command": ["true"], "queue_anyway": null}"#,
                "queue_anyway",
            ),
            (r#"{"command": ["true"], "priority": 1.5}"#, "priority"),
            (r#"{"command": ["true"], "constraints": 5}"#, "constraints"),
            (r#"{"command": ["true"], "cpu": 0}"#, "cpu"),
            (r#"{"command": ["true"], "retries": 101}"#, "retries"),
            (r#"{"command": ["true"], "strategy": "random"}"#, "strategy"),
            (r#"{"command": ["true"], "worker": 7}"#, "worker"),
            (r#"{"memroy": "1G"}"#, "memroy"),
            (r#"{"name": 5}"#, "name"),
            (r#"{"image": 5}"#, "image"),
        ] {
            assert_eq!(field_of(body).as_deref(), Some(field), "{body}");
        }
        let e = parse(br#"{"cpu": "abc"}"#).unwrap_err();
        assert!(e.error.starts_with("cpu: "), "{}", e.error);
    }

    #[test]
    fn malformed_json_is_a_400() {
        assert_eq!(field_of("{\"cpu\": abc}").as_deref(), Some("cpu"));
        assert_eq!(
            field_of("{\"name\": \"x\",\n \"memory\": 5G}").as_deref(),
            Some("memory")
        );
        assert_eq!(field_of("{\"env\": {\"A\": x}}").as_deref(), Some("env"));
        assert_eq!(field_of("{\"cpu\": 1,, }"), None);
        assert_eq!(field_of("[1, 2]"), None);
        let e = parse(b"{nope}").unwrap_err();
        assert!(e.error.contains("malformed JSON"), "{}", e.error);
    }
}
