//! The body of `POST /api/v1/tasks` → a [`TaskSpec`]. Units are converted
//! here, once, by `berth_core::units`, with the same defaults and rules as
//! the CLI; every error names the JSON field at fault.
//!
//! ```json
//! {"command": ["sh", "-c", "echo hi"], "cpu": 0.5, "memory": "512M",
//!  "storage": 0, "gpus": 0, "name": "hello", "env": {"K": "V"},
//!  "retries": 3, "timeout": "10m", "queue_anyway": false}
//! ```
//!
//! With `image` the task runs as a container, without as a process. Sizes
//! given as JSON numbers are bytes; as strings they take a unit suffix
//! (`"512M"`, `"2G"`) and a bare number is GB, as at the shell. Full
//! validation (limits, empty command …) is the engine's, at submit.

use super::error::ApiError;
use berth_core::units::{
    GIB, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES, parse_cores, parse_count, parse_duration_ms,
    parse_gpus, parse_size,
};
use berth_core::validate::InputError;
use berth_core::{DriverKind, Resources, TaskSpec};
use serde_json::{Map, Value};

/// Fields a submission may have.
pub const FIELDS: [&str; 16] = [
    "image",
    "command",
    "cpu",
    "memory",
    "storage",
    "gpus",
    "name",
    "env",
    "retries",
    "timeout",
    "stop_after_disconnect",
    "priority",
    "constraints",
    "strategy",
    "worker",
    "queue_anyway",
];

/// Defaults, as the CLI's.
const DEFAULT_CPU: &str = "1";
const DEFAULT_MEMORY: &str = "0.5G";

fn field_err(e: InputError) -> ApiError {
    ApiError::bad_field(e.field, e.to_string())
}

fn wrong_type(field: &str, want: &str) -> ApiError {
    ApiError::bad_field(field, format!("{field}: must be {want}"))
}

/// Parse a submission. Returns the spec and `queue_anyway`.
pub fn parse(body: &[u8]) -> Result<(TaskSpec, bool), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| malformed(body, &e))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "the body must be a JSON object, e.g. {\"command\": [\"echo\", \"hi\"]}",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_field(
            k.as_str(),
            format!("{k}: unknown field; the fields are {}", FIELDS.join(", ")),
        ));
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());

    let resources = Resources {
        cpu_millis: number_or_text(get("cpu"), "cpu", DEFAULT_CPU, |t| parse_cores("cpu", t))?,
        memory_bytes: size(get("memory"), "memory", DEFAULT_MEMORY, MAX_MEMORY_BYTES)?,
        storage_bytes: size(get("storage"), "storage", "0", MAX_STORAGE_BYTES)?,
        gpus: number_or_text(get("gpus"), "gpus", "0", |t| parse_gpus("gpus", t))?,
    };
    let image = match get("image") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(wrong_type("image", "a string such as \"ubuntu:latest\"")),
    };
    let command = match get("command") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| wrong_type("command", "an array of strings"))?,
        Some(_) => {
            return Err(wrong_type(
                "command",
                "an array of strings, e.g. [\"sh\", \"-c\", \"echo hi\"]",
            ));
        }
    };
    let mut spec = TaskSpec {
        driver: if image.is_some() {
            DriverKind::Docker
        } else {
            DriverKind::Process
        },
        image,
        ..TaskSpec::process(command, resources)
    };
    match get("name") {
        None => {}
        Some(Value::String(s)) => spec.name = s.clone(),
        Some(_) => return Err(wrong_type("name", "a string")),
    }
    if let Some(env) = get("env") {
        spec.env = env_vars(env)?;
    }
    if let Some(r) = get("retries") {
        spec.retries = number_or_text(Some(r), "retries", "", |t| parse_count("retries", t))?;
    }
    if let Some(t) = get("timeout") {
        // A bare number is seconds, as at the shell.
        spec.timeout_ms = Some(number_or_text(Some(t), "timeout", "", |t| {
            parse_duration_ms("timeout", t)
        })?);
    }
    if let Some(t) = get("stop_after_disconnect") {
        spec.stop_after_disconnect_ms =
            Some(number_or_text(Some(t), "stop_after_disconnect", "", |t| {
                parse_duration_ms("stop_after_disconnect", t)
            })?);
    }
    match get("priority") {
        None => {}
        Some(Value::Number(n)) => {
            spec.priority = n
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| wrong_type("priority", "a whole number"))?;
        }
        Some(_) => return Err(wrong_type("priority", "a whole number")),
    }
    match get("constraints") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| {
                    wrong_type(
                        "constraints",
                        "an object of strings, e.g. {\"gpu\": \"a100\"}",
                    )
                })?;
                spec.constraints.push((k.clone(), v.to_string()));
            }
        }
        Some(_) => {
            return Err(wrong_type(
                "constraints",
                "an object of strings, e.g. {\"gpu\": \"a100\"}",
            ));
        }
    }
    match get("strategy") {
        None => {}
        Some(Value::String(s)) => {
            spec.strategy = Some(berth_core::Strategy::parse(s).ok_or_else(|| {
                ApiError::bad_field(
                    "strategy",
                    format!("strategy: '{s}' is not a strategy; use binpack or spread"),
                )
            })?);
        }
        Some(_) => return Err(wrong_type("strategy", "\"binpack\" or \"spread\"")),
    }
    match get("worker") {
        None => {}
        Some(Value::String(s)) => spec.pinned_worker = Some(s.clone()),
        Some(_) => return Err(wrong_type("worker", "a worker name")),
    }
    let queue_anyway = match get("queue_anyway") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong_type("queue_anyway", "true or false")),
    };
    Ok((spec, queue_anyway))
}

/// A syntax error, naming the top-level field whose value it is in when
/// there is one (`{"cpu": abc}` → field `cpu`).
fn malformed(body: &[u8], e: &serde_json::Error) -> ApiError {
    let at = offset_of(body, e.line(), e.column());
    match field_at(&body[..at.min(body.len())]) {
        Some(field) => ApiError::bad_field(
            field.clone(),
            format!("malformed JSON in the value of {field}: {e}"),
        ),
        None => ApiError::new(
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

/// A value given either as a JSON number or as a string, parsed by the
/// same unit parser as the CLI.
fn number_or_text<T>(
    v: Option<&Value>,
    field: &str,
    default: &str,
    parse: impl Fn(&str) -> Result<T, InputError>,
) -> Result<T, ApiError> {
    match v {
        None => parse(default).map_err(field_err),
        Some(Value::Number(n)) => parse(&n.to_string()).map_err(field_err),
        Some(Value::String(s)) => parse(s).map_err(field_err),
        Some(_) => Err(wrong_type(field, "a number or a string")),
    }
}

/// Memory or storage: a number of bytes, or a string with a unit.
fn size(v: Option<&Value>, field: &'static str, default: &str, max: u64) -> Result<u64, ApiError> {
    let text = match v {
        None => default.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(bytes) => format!("{bytes}B"),
            None => {
                return Err(ApiError::bad_field(
                    field,
                    format!(
                        "{field}: {n} is not a whole number of bytes ≥ 0; give bytes, or a string such as \"512M\" or \"2G\""
                    ),
                ));
            }
        },
        Some(_) => {
            return Err(wrong_type(
                field,
                "a number of bytes or a string such as \"512M\"",
            ));
        }
    };
    parse_size(field, &text, GIB, max).map_err(field_err)
}

/// `{"KEY": "value", …}` → pairs in key order.
fn env_vars(v: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Value::Object(map) = v else {
        return Err(wrong_type(
            "env",
            "an object of strings, e.g. {\"KEY\": \"value\"}",
        ));
    };
    let map: &Map<String, Value> = map;
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(ApiError::bad_field(
                "env",
                format!("env: the value of {k} must be a string"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::units::MIB;

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
            (r#"{"env": ["A=1"]}"#, "env"),
            (r#"{"env": {"A": 1}}"#, "env"),
            (r#"{"retries": "many"}"#, "retries"),
            (r#"{"timeout": "soon"}"#, "timeout"),
            (r#"{"queue_anyway": "yes"}"#, "queue_anyway"),
            (r#"{"command": ["true"], "priority": 1.5}"#, "priority"),
            (
                r#"{"command": ["true"], "constraints": ["gpu=a100"]}"#,
                "constraints",
            ),
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
