//! User input to requests, shared by the scriptable subcommands and the
//! shell: a task's flags become a core `SpecInput`, built into a validated
//! `TaskSpec` by `berth_core::build_spec` (the one parser every face uses);
//! an error is shown with the flag the user typed for its field. Task ids
//! and task states are checked here too.
//!
//! Pure: no I/O.

use berth_core::validate::InputError;
use berth_core::{SpecInput, TaskSpec, TaskState};
use std::fmt;

/// The flag names one surface (CLI or shell) uses for each spec field, so
/// that an error can name both the field and what the user typed.
#[derive(Debug, Clone, Copy)]
pub struct FlagNames {
    pub cpu: &'static str,
    pub memory: &'static str,
    pub storage: &'static str,
    pub gpus: &'static str,
    pub name: &'static str,
    pub env: &'static str,
    pub retries: &'static str,
    pub timeout: &'static str,
    pub priority: &'static str,
    pub constraint: &'static str,
    pub strategy: &'static str,
    pub worker: &'static str,
    pub stop_after_disconnect: &'static str,
}

/// `berth task submit` flags.
pub const CLI_FLAGS: FlagNames = FlagNames {
    cpu: "--cpu",
    memory: "--mem",
    storage: "--storage",
    gpus: "--gpus",
    name: "--name",
    env: "--env",
    retries: "--retries",
    timeout: "--timeout",
    priority: "--priority",
    constraint: "--constraint",
    strategy: "--strategy",
    worker: "--worker",
    stop_after_disconnect: "--stop-after-disconnect",
};

/// Shell `task` / `run` flags (the predecessor's names).
pub const SHELL_FLAGS: FlagNames = FlagNames {
    cpu: "-cpu_cores",
    memory: "-mem",
    storage: "-storage",
    gpus: "-gpu_cores",
    name: "-name",
    env: "-env",
    retries: "-retries",
    timeout: "-timeout",
    priority: "-priority",
    constraint: "-constraint",
    strategy: "-strategy",
    worker: "dispatch <worker>",
    stop_after_disconnect: "-stop_after_disconnect",
};

impl FlagNames {
    fn for_field(&self, field: &str) -> Option<&'static str> {
        Some(match field {
            "cpu" => self.cpu,
            "memory" => self.memory,
            "storage" => self.storage,
            "gpus" => self.gpus,
            "name" => self.name,
            "env" => self.env,
            "retries" => self.retries,
            "timeout" => self.timeout,
            "priority" => self.priority,
            "constraint" | "constraints" => self.constraint,
            "strategy" => self.strategy,
            "worker" => self.worker,
            "stop_after_disconnect" => self.stop_after_disconnect,
            _ => return None,
        })
    }
}

/// A refused task request: the field, the flag it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub flag: Option<&'static str>,
    pub message: String,
}

impl SpecError {
    fn new(e: InputError, flags: &FlagNames) -> SpecError {
        SpecError {
            field: e.field,
            flag: flags.for_field(e.field),
            message: e.message,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.flag {
            Some(flag) => write!(f, "{} ({flag}): {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// Convert and validate a task request with core's one parser, naming
/// the flag of the field at fault.
pub fn build_spec(input: &SpecInput, flags: &FlagNames) -> Result<TaskSpec, SpecError> {
    berth_core::build_spec(input).map_err(|e| SpecError::new(e, flags))
}

/// A task id as typed (`12`, or `#12`).
pub fn parse_task_id(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.strip_prefix('#').unwrap_or(t);
    match digits.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("'{text}' is not a task id (a positive number)")),
    }
}

/// A task state filter; `all` (or nothing) means every state.
pub fn parse_state_filter(text: Option<&str>) -> Result<Option<TaskState>, String> {
    match text.map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => s
            .to_ascii_lowercase()
            .parse::<TaskState>()
            .map(Some)
            .map_err(|_| {
                let states: Vec<&str> = TaskState::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "'{s}' is not a task state; states: {}, all",
                    states.join(", ")
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::Raw;

    fn process(cmd: &[&str]) -> SpecInput {
        SpecInput {
            command: Raw::words(cmd.iter().map(|s| s.to_string()).collect()),
            ..SpecInput::default()
        }
    }

    fn text(v: &str) -> Option<Raw> {
        Some(Raw::Text(v.into()))
    }

    #[test]
    fn errors_name_field_and_flag() {
        let input = SpecInput {
            cpu: text("-1"),
            ..process(&["true"])
        };
        let e = build_spec(&input, &SHELL_FLAGS).unwrap_err();
        assert_eq!(e.field, "cpu");
        assert!(e.to_string().starts_with("cpu (-cpu_cores): "), "{e}");

        let input = SpecInput {
            memory: text("lots"),
            ..process(&["true"])
        };
        let e = build_spec(&input, &CLI_FLAGS).unwrap_err();
        assert!(e.to_string().starts_with("memory (--mem): "), "{e}");

        let input = SpecInput {
            env: Raw::words(vec!["1X=2".into()]),
            ..process(&["true"])
        };
        let e = build_spec(&input, &CLI_FLAGS).unwrap_err();
        assert!(e.to_string().starts_with("env (--env): "), "{e}");
    }

    #[test]
    fn process_task_needs_a_command() {
        let e = build_spec(&process(&[]), &CLI_FLAGS).unwrap_err();
        assert_eq!(e.field, "command");
        assert_eq!(
            e.to_string(),
            "command: is empty; give the program to run after `--`"
        );
    }

    #[test]
    fn task_ids() {
        assert_eq!(parse_task_id("12"), Ok(12));
        assert_eq!(parse_task_id("#7"), Ok(7));
        assert!(parse_task_id("0").is_err());
        assert!(parse_task_id("-3").is_err());
        assert!(parse_task_id("abc").is_err());
    }

    #[test]
    fn placement_fields_name_their_flag() {
        type Edit = fn(&mut SpecInput);
        let cases: [(Edit, &str); 6] = [
            (|i| i.priority = text("high"), "priority (--priority): "),
            (|i| i.priority = text("5000"), "priority (--priority): "),
            (
                |i| i.constraints = Raw::words(vec!["gpu".into()]),
                "constraint (--constraint): ",
            ),
            (|i| i.strategy = text("random"), "strategy (--strategy): "),
            (|i| i.worker = text(" "), "worker (--worker): "),
            (
                |i| i.stop_after_disconnect = text("0.5s"),
                "stop_after_disconnect (--stop-after-disconnect): ",
            ),
        ];
        for (edit, want) in cases {
            let mut input = process(&["true"]);
            edit(&mut input);
            let e = build_spec(&input, &CLI_FLAGS).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let input = SpecInput {
            priority: text("x"),
            ..process(&["true"])
        };
        let e = build_spec(&input, &SHELL_FLAGS).unwrap_err().to_string();
        assert!(e.starts_with("priority (-priority): "), "{e}");
    }

    #[test]
    fn state_filters() {
        assert_eq!(parse_state_filter(None), Ok(None));
        assert_eq!(parse_state_filter(Some("all")), Ok(None));
        assert_eq!(
            parse_state_filter(Some("Running")),
            Ok(Some(TaskState::Running))
        );
        let e = parse_state_filter(Some("done")).unwrap_err();
        assert!(e.contains("queued, assigned"), "{e}");
    }
}
