//! Validation of user input. Every error names the field and the limit it
//! broke, so the user can fix the request without reading code.

use crate::resources::Resources;
use crate::task::{DriverKind, TaskSpec};
use crate::units::{MAX_CORES, MAX_GPUS, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES, format_gb_unit};
use std::fmt;

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_COMMAND_ARGS: usize = 4096;
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;
pub const MAX_ENV_VARS: usize = 256;
pub const MAX_ENV_BYTES: usize = 64 * 1024;
pub const MAX_IMAGE_LEN: usize = 512;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_PRIORITY: i32 = 1000;
pub const MAX_CONSTRAINTS: usize = 32;
pub const MAX_LABEL_LEN: usize = 128;
/// Longest time limit: one year.
pub const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;

/// A refused input: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub field: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InputError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for InputError {}

/// Check a request's resource amounts against the absolute limits.
pub fn validate_resources(r: &Resources) -> Result<(), InputError> {
    if r.cpu_millis == 0 {
        return Err(InputError::new(
            "cpu",
            "0 is below the minimum of 0.001 cores",
        ));
    }
    if r.cpu_millis > MAX_CORES * 1000 {
        return Err(InputError::new(
            "cpu",
            format!("exceeds the limit of {MAX_CORES} cores"),
        ));
    }
    if r.memory_bytes > MAX_MEMORY_BYTES {
        return Err(InputError::new(
            "memory",
            format!("exceeds the limit of {}", format_gb_unit(MAX_MEMORY_BYTES)),
        ));
    }
    if r.storage_bytes > MAX_STORAGE_BYTES {
        return Err(InputError::new(
            "storage",
            format!("exceeds the limit of {}", format_gb_unit(MAX_STORAGE_BYTES)),
        ));
    }
    if r.gpus > MAX_GPUS {
        return Err(InputError::new(
            "gpus",
            format!("exceeds the limit of {MAX_GPUS} GPUs"),
        ));
    }
    Ok(())
}

/// Check `key=value` labels (worker labels, task constraints).
pub fn validate_labels(field: &'static str, labels: &[(String, String)]) -> Result<(), InputError> {
    if labels.len() > MAX_CONSTRAINTS {
        return Err(InputError::new(
            field,
            format!("{} given; the limit is {MAX_CONSTRAINTS}", labels.len()),
        ));
    }
    for (k, v) in labels {
        let ok_key = !k.is_empty()
            && k.len() <= MAX_LABEL_LEN
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !ok_key {
            return Err(InputError::new(
                field,
                format!(
                    "'{k}' is not a valid key (letters, digits, . _ - /; at most {MAX_LABEL_LEN})"
                ),
            ));
        }
        if v.len() > MAX_LABEL_LEN || v.chars().any(|c| c.is_control()) {
            return Err(InputError::new(
                field,
                format!("value of '{k}' is not valid"),
            ));
        }
    }
    Ok(())
}

/// Parse `key=value`.
pub fn parse_label(field: &'static str, text: &str) -> Result<(String, String), InputError> {
    match text.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
        None => Err(InputError::new(field, format!("'{text}' is not key=value"))),
    }
}

/// Is `key` a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Check a whole task spec. Called by the master before anything is
/// recorded; the CLI calls it too so errors show before a round trip.
pub fn validate_spec(spec: &TaskSpec) -> Result<(), InputError> {
    if spec.name.len() > MAX_NAME_LEN {
        return Err(InputError::new(
            "name",
            format!("is {} bytes; the limit is {MAX_NAME_LEN}", spec.name.len()),
        ));
    }
    if spec.name.chars().any(|c| c.is_control()) {
        return Err(InputError::new("name", "contains control characters"));
    }
    match spec.driver {
        DriverKind::Process => {
            if spec.image.is_some() {
                return Err(InputError::new("image", "a process task takes no image"));
            }
            if spec.command.is_empty() || spec.command[0].trim().is_empty() {
                return Err(InputError::new(
                    "command",
                    "is empty; give the program to run after `--`",
                ));
            }
        }
        DriverKind::Docker => match &spec.image {
            None => {
                return Err(InputError::new(
                    "image",
                    "is empty; a container task needs an image",
                ));
            }
            Some(i) if i.trim().is_empty() => {
                return Err(InputError::new(
                    "image",
                    "is empty; a container task needs an image",
                ));
            }
            Some(i) if i.len() > MAX_IMAGE_LEN || i.chars().any(char::is_whitespace) => {
                return Err(InputError::new(
                    "image",
                    format!("'{i}' is not a valid image reference"),
                ));
            }
            Some(_) => {}
        },
    }
    if spec.command.len() > MAX_COMMAND_ARGS {
        return Err(InputError::new(
            "command",
            format!(
                "has {} arguments; the limit is {MAX_COMMAND_ARGS}",
                spec.command.len()
            ),
        ));
    }
    let cmd_bytes: usize = spec.command.iter().map(|a| a.len()).sum();
    if cmd_bytes > MAX_COMMAND_BYTES {
        return Err(InputError::new(
            "command",
            format!("is {cmd_bytes} bytes; the limit is {MAX_COMMAND_BYTES}"),
        ));
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(InputError::new("command", "contains a NUL byte"));
    }
    if spec.env.len() > MAX_ENV_VARS {
        return Err(InputError::new(
            "env",
            format!(
                "has {} variables; the limit is {MAX_ENV_VARS}",
                spec.env.len()
            ),
        ));
    }
    let env_bytes: usize = spec.env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if env_bytes > MAX_ENV_BYTES {
        return Err(InputError::new(
            "env",
            format!("is {env_bytes} bytes; the limit is {MAX_ENV_BYTES}"),
        ));
    }
    for (k, v) in &spec.env {
        if !valid_env_key(k) {
            return Err(InputError::new(
                "env",
                format!(
                    "'{k}' is not a valid variable name (letters, digits, _; not starting with a digit)"
                ),
            ));
        }
        if v.contains('\0') {
            return Err(InputError::new(
                "env",
                format!("value of {k} contains a NUL byte"),
            ));
        }
    }
    if spec.priority.abs() > MAX_PRIORITY {
        return Err(InputError::new(
            "priority",
            format!(
                "{} is outside -{MAX_PRIORITY}..{MAX_PRIORITY}",
                spec.priority
            ),
        ));
    }
    validate_labels("constraint", &spec.constraints)?;
    if let Some(w) = &spec.pinned_worker
        && w.trim().is_empty()
    {
        return Err(InputError::new(
            "worker",
            "is empty; name the worker to dispatch to",
        ));
    }
    if spec.retries > MAX_RETRIES {
        return Err(InputError::new(
            "retries",
            format!("{} exceeds the limit of {MAX_RETRIES}", spec.retries),
        ));
    }
    match spec.stop_after_disconnect_ms {
        Some(ms) if ms < 1_000 => {
            return Err(InputError::new(
                "stop_after_disconnect",
                "must be at least 1s (a shorter one would stop tasks on a heartbeat's delay)",
            ));
        }
        Some(ms) if ms > 365 * 24 * 3_600_000 => {
            return Err(InputError::new(
                "stop_after_disconnect",
                "exceeds the limit of 365 days",
            ));
        }
        _ => {}
    }
    match spec.timeout_ms {
        Some(0) => return Err(InputError::new("timeout", "must be longer than 0s")),
        Some(t) if t > MAX_TIMEOUT_MS => {
            return Err(InputError::new("timeout", "exceeds the limit of 365 days"));
        }
        _ => {}
    }
    validate_resources(&spec.resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(cmd: &[&str]) -> TaskSpec {
        TaskSpec::process(
            cmd.iter().map(|s| s.to_string()).collect(),
            Resources {
                cpu_millis: 1000,
                ..Resources::ZERO
            },
        )
    }

    #[test]
    fn retries_and_timeout_have_limits() {
        let mut s = process(&["true"]);
        s.retries = 101;
        assert_eq!(validate_spec(&s).unwrap_err().field, "retries");
        s.retries = 0;
        s.timeout_ms = Some(0);
        assert_eq!(validate_spec(&s).unwrap_err().field, "timeout");
        s.timeout_ms = Some(1000);
        assert!(validate_spec(&s).is_ok());
    }

    #[test]
    fn empty_command_is_refused() {
        assert_eq!(validate_spec(&process(&[])).unwrap_err().field, "command");
        assert_eq!(
            validate_spec(&process(&[" "])).unwrap_err().field,
            "command"
        );
        assert!(validate_spec(&process(&["true"])).is_ok());
    }

    #[test]
    fn bad_env_key_is_refused() {
        let mut s = process(&["true"]);
        s.env.push(("1BAD".into(), "x".into()));
        assert_eq!(validate_spec(&s).unwrap_err().field, "env");
    }

    #[test]
    fn zero_cpu_is_refused() {
        let mut s = process(&["true"]);
        s.resources.cpu_millis = 0;
        assert_eq!(validate_spec(&s).unwrap_err().field, "cpu");
    }

    #[test]
    fn container_needs_image() {
        let mut s = process(&[]);
        s.driver = DriverKind::Docker;
        assert_eq!(validate_spec(&s).unwrap_err().field, "image");
        s.image = Some("ubuntu:latest".into());
        assert!(validate_spec(&s).is_ok());
    }
}
