//! User input to requests, shared by the scriptable subcommands and the
//! shell: a task's flags (as the raw strings the user typed) become a
//! validated `TaskSpec`, and task ids and task states are checked here.
//!
//! Pure: no I/O. Units are converted once, by `berth_core::units`; every
//! error names the field (and the flag the user typed for it).

use berth_core::units::{GIB, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES};
use berth_core::units::{parse_cores, parse_count, parse_duration_ms, parse_gpus, parse_size};
use berth_core::validate::{InputError, validate_spec};
use berth_core::{DriverKind, Resources, TaskSpec, TaskState};
use std::fmt;

/// Defaults when a flag is not given.
pub const DEFAULT_CPU: &str = "1";
pub const DEFAULT_MEM: &str = "0.5G";
pub const DEFAULT_STORAGE: &str = "0";
pub const DEFAULT_GPUS: &str = "0";

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
            "constraint" => self.constraint,
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

/// A task request as typed: raw strings, not yet converted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecInput {
    /// Present: a container task (docker driver). Absent: a process task.
    pub image: Option<String>,
    pub cpu: Option<String>,
    pub mem: Option<String>,
    pub storage: Option<String>,
    pub gpus: Option<String>,
    pub name: Option<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    pub retries: Option<String>,
    pub timeout: Option<String>,
    /// Higher runs first (an integer).
    pub priority: Option<String>,
    /// `key=value` worker labels the task requires.
    pub constraints: Vec<String>,
    /// `binpack` or `spread`.
    pub strategy: Option<String>,
    /// Only this worker may run it (`dispatch`).
    pub worker: Option<String>,
    /// A duration: stop the task after this long without the master.
    pub stop_after_disconnect: Option<String>,
    pub command: Vec<String>,
}

/// Convert and validate a task request. Bare numbers for memory and storage
/// are GB (2^30 bytes), as they were in the system berth replaces.
pub fn build_spec(input: &SpecInput, flags: &FlagNames) -> Result<TaskSpec, SpecError> {
    let err = |e: InputError| SpecError::new(e, flags);
    let cpu = input.cpu.as_deref().unwrap_or(DEFAULT_CPU);
    let mem = input.mem.as_deref().unwrap_or(DEFAULT_MEM);
    let storage = input.storage.as_deref().unwrap_or(DEFAULT_STORAGE);
    let gpus = input.gpus.as_deref().unwrap_or(DEFAULT_GPUS);
    let resources = Resources {
        cpu_millis: parse_cores("cpu", cpu).map_err(err)?,
        memory_bytes: parse_size("memory", mem, GIB, MAX_MEMORY_BYTES).map_err(err)?,
        storage_bytes: parse_size("storage", storage, GIB, MAX_STORAGE_BYTES).map_err(err)?,
        gpus: parse_gpus("gpus", gpus).map_err(err)?,
    };
    let env = input
        .env
        .iter()
        .map(|kv| parse_env(kv).map_err(err))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = TaskSpec {
        name: input.name.clone().unwrap_or_default(),
        driver: if input.image.is_some() {
            DriverKind::Docker
        } else {
            DriverKind::Process
        },
        image: input.image.clone(),
        command: input.command.clone(),
        env,
        resources,
        retries: match &input.retries {
            Some(r) => parse_count("retries", r).map_err(err)?,
            None => berth_core::task::DEFAULT_RETRIES,
        },
        timeout_ms: input
            .timeout
            .as_deref()
            .map(|t| parse_duration_ms("timeout", t))
            .transpose()
            .map_err(err)?,
        stop_after_disconnect_ms: input
            .stop_after_disconnect
            .as_deref()
            .map(|t| parse_duration_ms("stop_after_disconnect", t))
            .transpose()
            .map_err(err)?,
        priority: match &input.priority {
            Some(p) => p.trim().parse::<i32>().map_err(|_| {
                err(InputError::new(
                    "priority",
                    format!("'{p}' is not a whole number"),
                ))
            })?,
            None => 0,
        },
        constraints: input
            .constraints
            .iter()
            .map(|c| berth_core::validate::parse_label("constraint", c).map_err(err))
            .collect::<Result<Vec<_>, _>>()?,
        strategy: match input.strategy.as_deref() {
            Some(s) => Some(berth_core::Strategy::parse(s).ok_or_else(|| {
                err(InputError::new(
                    "strategy",
                    format!("'{s}' is not a strategy; use binpack or spread"),
                ))
            })?),
            None => None,
        },
        pinned_worker: input.worker.clone(),
    };
    validate_spec(&spec).map_err(err)?;
    Ok(spec)
}

/// `KEY=VALUE` → (key, value); the value may contain `=`.
fn parse_env(kv: &str) -> Result<(String, String), InputError> {
    match kv.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(InputError::new("env", format!("'{kv}' is not KEY=VALUE"))),
    }
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
        Some(s) => TaskState::parse(&s.to_ascii_lowercase())
            .map(Some)
            .ok_or_else(|| {
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
    use berth_core::units::MIB;

    fn process(cmd: &[&str]) -> SpecInput {
        SpecInput {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..SpecInput::default()
        }
    }

    #[test]
    fn defaults_are_one_core_half_a_gb() {
        let s = build_spec(&process(&["true"]), &CLI_FLAGS).unwrap();
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(s.resources.cpu_millis, 1000);
        assert_eq!(s.resources.memory_bytes, 512 * MIB);
        assert_eq!(s.resources.storage_bytes, 0);
        assert_eq!(s.resources.gpus, 0);
    }

    #[test]
    fn image_makes_a_container_task() {
        let input = SpecInput {
            image: Some("ubuntu:latest".into()),
            cpu: Some("5.0".into()),
            mem: Some("2".into()),
            ..SpecInput::default()
        };
        let s = build_spec(&input, &SHELL_FLAGS).unwrap();
        assert_eq!(s.driver, DriverKind::Docker);
        assert_eq!(s.image.as_deref(), Some("ubuntu:latest"));
        assert_eq!(s.resources.cpu_millis, 5000);
        assert_eq!(s.resources.memory_bytes, 2 * GIB);
    }

    #[test]
    fn env_splits_at_the_first_equals() {
        let mut input = process(&["env"]);
        input.env = vec!["A=1".into(), "B=x=y".into(), "C=".into()];
        let s = build_spec(&input, &CLI_FLAGS).unwrap();
        assert_eq!(
            s.env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), String::new())
            ]
        );
    }

    #[test]
    fn errors_name_field_and_flag() {
        let mut input = process(&["true"]);
        input.cpu = Some("-1".into());
        let e = build_spec(&input, &SHELL_FLAGS).unwrap_err();
        assert_eq!(e.field, "cpu");
        assert!(e.to_string().starts_with("cpu (-cpu_cores): "), "{e}");

        let mut input = process(&["true"]);
        input.mem = Some("lots".into());
        let e = build_spec(&input, &CLI_FLAGS).unwrap_err();
        assert!(e.to_string().starts_with("memory (--mem): "), "{e}");

        let mut input = process(&["true"]);
        input.env = vec!["NOEQUALS".into()];
        assert_eq!(build_spec(&input, &CLI_FLAGS).unwrap_err().field, "env");

        let mut input = process(&["true"]);
        input.env = vec!["1X=2".into()];
        assert_eq!(build_spec(&input, &CLI_FLAGS).unwrap_err().field, "env");
    }

    #[test]
    fn bad_resources_are_refused() {
        type Edit = fn(&mut SpecInput);
        let cases: [(&str, Edit); 7] = [
            ("cpu", |i| i.cpu = Some("NaN".into())),
            ("cpu", |i| i.cpu = Some("0".into())),
            ("cpu", |i| i.cpu = Some("1e12".into())),
            ("memory", |i| i.mem = Some("-0.5".into())),
            ("storage", |i| i.storage = Some("1e12T".into())),
            ("gpus", |i| i.gpus = Some("0.5".into())),
            ("gpus", |i| i.gpus = Some("1000".into())),
        ];
        for (field, edit) in cases {
            let mut input = process(&["true"]);
            edit(&mut input);
            let e = build_spec(&input, &CLI_FLAGS).unwrap_err();
            assert_eq!(e.field, field, "{input:?}: {e}");
        }
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
    fn placement_fields_are_converted_and_name_their_flag() {
        let mut input = process(&["true"]);
        input.priority = Some("-5".into());
        input.constraints = vec!["gpu=a100".into(), "zone = b".into()];
        input.strategy = Some("spread".into());
        input.worker = Some("Tessa".into());
        let s = build_spec(&input, &CLI_FLAGS).unwrap();
        assert_eq!(s.priority, -5);
        assert_eq!(
            s.constraints,
            vec![("gpu".into(), "a100".into()), ("zone".into(), "b".into())]
        );
        assert_eq!(s.strategy, Some(berth_core::Strategy::Spread));
        assert_eq!(s.pinned_worker.as_deref(), Some("Tessa"));

        for (edit, text) in [
            (
                (|i: &mut SpecInput| i.priority = Some("high".into())) as fn(&mut SpecInput),
                "priority (--priority): ",
            ),
            (
                |i| i.priority = Some("5000".into()),
                "priority (--priority): ",
            ),
            (
                |i| i.constraints = vec!["gpu".into()],
                "constraint (--constraint): ",
            ),
            (
                |i| i.strategy = Some("random".into()),
                "strategy (--strategy): ",
            ),
            (|i| i.worker = Some(" ".into()), "worker (--worker): "),
        ] {
            let mut input = process(&["true"]);
            edit(&mut input);
            let e = build_spec(&input, &CLI_FLAGS).unwrap_err().to_string();
            assert!(e.starts_with(text), "{e}");
        }
        let mut input = process(&["true"]);
        input.priority = Some("x".into());
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
