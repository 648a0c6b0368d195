//! A task request as a user typed it, and the one function that turns it
//! into a [`TaskSpec`]. Every face builds a [`SpecInput`] and calls
//! [`build_spec`]: the shell (`task … -cpu_cores 5.0`), the command line
//! (`berth task submit --cpu 5`) and REST (`POST /api/v1/tasks`, whose JSON
//! body deserialises into it). Defaults are applied here and nowhere else;
//! units are converted by [`crate::units`]; every error names the field
//! and the limit ([`InputError`]).
//!
//! Raw values keep the shape they came in: the shell and the command line
//! give text, JSON may give numbers, arrays and objects. One rule differs
//! by shape, as it always has: a size given as a whole *number* is bytes,
//! as *text* a bare number is GB (`"2"` = 2 GiB, as at the shell).

use crate::resources::Resources;
use crate::task::{DEFAULT_RETRIES, DriverKind, Strategy, TaskSpec};
use crate::units::{
    GIB, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES, parse_cores, parse_count, parse_duration_ms,
    parse_gpus, parse_size,
};
use crate::validate::{InputError, parse_label, validate_spec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// CPU cores when none are asked for.
pub const DEFAULT_CPU: &str = "1";
/// Memory when none is asked for.
pub const DEFAULT_MEMORY: &str = "0.5G";
/// Storage when none is asked for.
pub const DEFAULT_STORAGE: &str = "0";
/// GPUs when none are asked for.
pub const DEFAULT_GPUS: &str = "0";

/// One raw value, in the shape it arrived (JSON's shapes; the shell and
/// the command line use `Text` and `List` of `Text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Raw {
    Bool(bool),
    Whole(u64),
    Signed(i64),
    Real(f64),
    Text(String),
    List(Vec<Raw>),
    Map(BTreeMap<String, Raw>),
}

impl Raw {
    /// Typed text, if any (`None` stays absent).
    pub fn text(value: Option<String>) -> Option<Raw> {
        value.map(Raw::Text)
    }

    /// Repeated text values (`--env A=1 --env B=2`); none given is absent.
    pub fn words(values: Vec<String>) -> Option<Raw> {
        (!values.is_empty()).then(|| Raw::List(values.into_iter().map(Raw::Text).collect()))
    }

    /// A number or text as the text the unit parsers read.
    fn number_text(&self, field: &'static str) -> Result<String, InputError> {
        match self {
            Raw::Text(s) => Ok(s.clone()),
            Raw::Whole(n) => Ok(n.to_string()),
            Raw::Signed(n) => Ok(n.to_string()),
            Raw::Real(n) => Ok(n.to_string()),
            _ => Err(InputError::new(field, "must be a number or a string")),
        }
    }

    fn string(&self, field: &'static str, want: &str) -> Result<String, InputError> {
        match self {
            Raw::Text(s) => Ok(s.clone()),
            _ => Err(InputError::new(field, format!("must be {want}"))),
        }
    }
}

/// Every user-settable task field, raw. JSON field names are REST's; the
/// shell's and the command line's flags map onto them one to one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpecInput {
    /// Present (and not empty): a container task. Absent: a process task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Raw>,
    /// The program and its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Raw>,
    /// Cores, fractional allowed [default: 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Raw>,
    /// A size [default: 0.5G].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Raw>,
    /// A size [default: 0].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Raw>,
    /// Whole devices [default: 0].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Raw>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Raw>,
    /// `KEY=VALUE` strings, or an object of strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Raw>,
    /// [default: 3]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Raw>,
    /// A duration (a bare number is seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Raw>,
    /// A duration (a bare number is seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after_disconnect: Option<Raw>,
    /// A whole number, higher first [default: 0].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Raw>,
    /// `key=value` strings, or an object of strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Raw>,
    /// `binpack` or `spread`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Raw>,
    /// Only this worker (by name) may run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<Raw>,
}

impl SpecInput {
    /// The field names, as JSON spells them.
    pub const FIELDS: [&'static str; 15] = [
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
    ];
}

/// Convert and validate a task request: defaults, units, then every limit
/// of [`validate_spec`]. The only way user input becomes a [`TaskSpec`].
pub fn build_spec(input: &SpecInput) -> Result<TaskSpec, InputError> {
    let text_or = |v: &Option<Raw>, field: &'static str, default: &str| match v {
        Some(raw) => raw.number_text(field),
        None => Ok(default.to_string()),
    };
    let resources = Resources {
        cpu_millis: parse_cores("cpu", &text_or(&input.cpu, "cpu", DEFAULT_CPU)?)?,
        memory_bytes: size(&input.memory, "memory", DEFAULT_MEMORY, MAX_MEMORY_BYTES)?,
        storage_bytes: size(
            &input.storage,
            "storage",
            DEFAULT_STORAGE,
            MAX_STORAGE_BYTES,
        )?,
        gpus: parse_gpus("gpus", &text_or(&input.gpus, "gpus", DEFAULT_GPUS)?)?,
    };
    let image = match &input.image {
        None => None,
        Some(raw) => Some(raw.string("image", "a string such as \"ubuntu:latest\"")?)
            .filter(|s| !s.is_empty()),
    };
    let command = match &input.command {
        None => Vec::new(),
        Some(Raw::List(items)) => items
            .iter()
            .map(|a| match a {
                Raw::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| InputError::new("command", "must be an array of strings"))?,
        Some(_) => {
            return Err(InputError::new(
                "command",
                "must be an array of strings, e.g. [\"sh\", \"-c\", \"echo hi\"]",
            ));
        }
    };
    let duration = |v: &Option<Raw>, field: &'static str| {
        v.as_ref()
            .map(|raw| parse_duration_ms(field, &raw.number_text(field)?))
            .transpose()
    };
    let spec = TaskSpec {
        name: match &input.name {
            Some(raw) => raw.string("name", "a string")?,
            None => String::new(),
        },
        driver: if image.is_some() {
            DriverKind::Docker
        } else {
            DriverKind::Process
        },
        image,
        command,
        env: pairs(&input.env, "env", "KEY=VALUE", |kv| {
            match kv.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(InputError::new("env", format!("'{kv}' is not KEY=VALUE"))),
            }
        })?,
        resources,
        retries: match &input.retries {
            Some(raw) => parse_count("retries", &raw.number_text("retries")?)?,
            None => DEFAULT_RETRIES,
        },
        timeout_ms: duration(&input.timeout, "timeout")?,
        stop_after_disconnect_ms: duration(&input.stop_after_disconnect, "stop_after_disconnect")?,
        priority: match &input.priority {
            None => 0,
            Some(raw) => priority(raw)?,
        },
        constraints: pairs(&input.constraints, "constraints", "key=value", |c| {
            parse_label("constraint", c)
        })?,
        strategy: match &input.strategy {
            None => None,
            Some(raw) => {
                let s = raw.string("strategy", "\"binpack\" or \"spread\"")?;
                Some(s.trim().parse::<Strategy>().map_err(|_| {
                    InputError::new(
                        "strategy",
                        format!("'{s}' is not a strategy; use binpack or spread"),
                    )
                })?)
            }
        },
        pinned_worker: match &input.worker {
            Some(raw) => Some(raw.string("worker", "a worker name")?),
            None => None,
        },
    };
    validate_spec(&spec)?;
    Ok(spec)
}

/// Memory or storage: a whole number of bytes, or text with a unit (a bare
/// number in text is GB).
fn size(v: &Option<Raw>, field: &'static str, default: &str, max: u64) -> Result<u64, InputError> {
    let text = match v {
        None => default.to_string(),
        Some(Raw::Text(s)) => s.clone(),
        Some(Raw::Whole(bytes)) => format!("{bytes}B"),
        Some(Raw::Signed(n)) => return Err(not_bytes(field, &n.to_string())),
        Some(Raw::Real(n)) => return Err(not_bytes(field, &n.to_string())),
        Some(_) => {
            return Err(InputError::new(
                field,
                "must be a number of bytes or a string such as \"512M\"",
            ));
        }
    };
    parse_size(field, &text, GIB, max)
}

fn not_bytes(field: &'static str, n: &str) -> InputError {
    InputError::new(
        field,
        format!(
            "{n} is not a whole number of bytes ≥ 0; give bytes, or a string such as \"512M\" or \"2G\""
        ),
    )
}

fn priority(raw: &Raw) -> Result<i32, InputError> {
    let whole =
        match raw {
            Raw::Whole(n) => i64::try_from(*n).ok(),
            Raw::Signed(n) => Some(*n),
            Raw::Text(s) => Some(s.trim().parse::<i64>().map_err(|_| {
                InputError::new("priority", format!("'{s}' is not a whole number"))
            })?),
            _ => None,
        };
    let p = whole.ok_or_else(|| InputError::new("priority", "must be a whole number"))?;
    i32::try_from(p).map_err(|_| {
        InputError::new(
            "priority",
            format!(
                "{p} is outside -{max}..{max}",
                max = crate::validate::MAX_PRIORITY
            ),
        )
    })
}

/// `KEY=VALUE` texts (the shell, the command line) or an object of
/// strings (JSON, in key order) → pairs.
fn pairs(
    v: &Option<Raw>,
    field: &'static str,
    form: &str,
    split: impl Fn(&str) -> Result<(String, String), InputError>,
) -> Result<Vec<(String, String)>, InputError> {
    let shape = || {
        InputError::new(
            field,
            format!("must be {form} strings or an object of strings, e.g. {{\"gpu\": \"a100\"}}"),
        )
    };
    match v {
        None => Ok(Vec::new()),
        Some(Raw::List(items)) => items
            .iter()
            .map(|item| match item {
                Raw::Text(s) => split(s),
                _ => Err(shape()),
            })
            .collect(),
        Some(Raw::Map(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Raw::Text(s) => Ok((k.clone(), s.clone())),
                _ => Err(InputError::new(
                    field,
                    format!("the value of {k} must be a string"),
                )),
            })
            .collect(),
        Some(_) => Err(shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    fn text(v: &str) -> Option<Raw> {
        Some(Raw::Text(v.into()))
    }

    fn run(cmd: &[&str]) -> SpecInput {
        SpecInput {
            command: Raw::words(cmd.iter().map(|s| s.to_string()).collect()),
            ..SpecInput::default()
        }
    }

    fn json(body: &str) -> Result<TaskSpec, InputError> {
        let input: SpecInput = serde_json::from_str(body).expect(body);
        build_spec(&input)
    }

    #[test]
    fn defaults_are_applied_here() {
        let s = build_spec(&run(&["true"])).unwrap();
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(s.resources.cpu_millis, 1000);
        assert_eq!(s.resources.memory_bytes, 512 * MIB);
        assert_eq!(s.resources.storage_bytes, 0);
        assert_eq!(s.resources.gpus, 0);
        assert_eq!(s.retries, DEFAULT_RETRIES);
        assert_eq!((s.priority, s.timeout_ms, s.strategy), (0, None, None));
    }

    #[test]
    fn text_and_json_shapes_give_the_same_spec() {
        let typed = SpecInput {
            image: text("ubuntu:latest"),
            cpu: text("0.5"),
            memory: text("1G"),
            env: Raw::words(vec!["B=2".into(), "A=x=y".into()]),
            timeout: text("90"),
            priority: text("-5"),
            constraints: Raw::words(vec!["gpu = a100".into()]),
            strategy: text("spread"),
            worker: text("Tessa"),
            ..SpecInput::default()
        };
        let from_json = json(
            r#"{"image": "ubuntu:latest", "cpu": 0.5, "memory": 1073741824,
                "env": ["B=2", "A=x=y"], "timeout": 90, "priority": -5,
                "constraints": {"gpu": "a100"}, "strategy": "spread", "worker": "Tessa"}"#,
        )
        .unwrap();
        assert_eq!(build_spec(&typed).unwrap(), from_json);
        assert_eq!(from_json.timeout_ms, Some(90_000));
        assert_eq!(
            from_json.env,
            vec![("B".into(), "2".into()), ("A".into(), "x=y".into())]
        );
        let map = json(r#"{"command": ["env"], "env": {"B": "2", "A": "1"}}"#).unwrap();
        assert_eq!(
            map.env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn a_whole_number_size_is_bytes_text_is_gb() {
        let s = json(r#"{"command": ["true"], "memory": 1073741824, "storage": "2"}"#).unwrap();
        assert_eq!(s.resources.memory_bytes, GIB);
        assert_eq!(s.resources.storage_bytes, 2 * GIB);
        let e = json(r#"{"command": ["true"], "memory": 1.5}"#).unwrap_err();
        assert_eq!(e.field, "memory");
        assert!(e.message.contains("whole number of bytes"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_the_limit() {
        type Edit = fn(&mut SpecInput);
        let cases: [(Edit, &str); 4] = [
            (
                |i| i.cpu = text("0"),
                "cpu: 0 is below the minimum of 0.001 cores",
            ),
            (
                |i| i.cpu = text("5000"),
                "cpu: 5000 cores exceeds the limit of 4096 cores",
            ),
            (
                |i| i.retries = text("101"),
                "retries: 101 exceeds the limit of 100",
            ),
            (
                |i| i.priority = text("5000"),
                "priority: 5000 is outside -1000..1000",
            ),
        ];
        for (edit, want) in cases {
            let mut input = run(&["true"]);
            edit(&mut input);
            assert_eq!(build_spec(&input).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        for (body, field) in [
            (r#"{"cpu": true}"#, "cpu"),
            (r#"{"cpu": "abc"}"#, "cpu"),
            (r#"{"memory": "lots"}"#, "memory"),
            (r#"{"storage": -3}"#, "storage"),
            (r#"{"gpus": 0.5}"#, "gpus"),
            (r#"{"command": "echo hi"}"#, "command"),
            (r#"{"command": ["echo", 1]}"#, "command"),
            (r#"{"env": "A=1"}"#, "env"),
            (r#"{"env": {"A": 1}}"#, "env"),
            (r#"{"env": ["NOEQUALS"]}"#, "env"),
            (r#"{"retries": "many"}"#, "retries"),
            (r#"{"timeout": "soon"}"#, "timeout"),
            (
                r#"{"stop_after_disconnect": "0.5s", "command": ["true"]}"#,
                "stop_after_disconnect",
            ),
            (r#"{"command": ["true"], "priority": 1.5}"#, "priority"),
            (r#"{"command": ["true"], "priority": "high"}"#, "priority"),
            (r#"{"command": ["true"], "constraints": 5}"#, "constraints"),
            (
                r#"{"command": ["true"], "constraints": ["gpu"]}"#,
                "constraint",
            ),
            (r#"{"command": ["true"], "strategy": "random"}"#, "strategy"),
            (r#"{"command": ["true"], "worker": 7}"#, "worker"),
            (r#"{"name": 5}"#, "name"),
            (r#"{"image": 5}"#, "image"),
            (r#"{"image": "two words"}"#, "image"),
        ] {
            assert_eq!(json(body).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_empty_image_is_a_process() {
        assert!(serde_json::from_str::<SpecInput>(r#"{"memroy": "1G"}"#).is_err());
        let s = json(r#"{"image": "", "command": ["true"]}"#).unwrap();
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(
            SpecInput::FIELDS.len(),
            serde_json::to_value(SpecInput {
                image: text("i"),
                command: text("c"),
                cpu: text("c"),
                memory: text("m"),
                storage: text("s"),
                gpus: text("g"),
                name: text("n"),
                env: text("e"),
                retries: text("r"),
                timeout: text("t"),
                stop_after_disconnect: text("s"),
                priority: text("p"),
                constraints: text("c"),
                strategy: text("s"),
                worker: text("w"),
            })
            .unwrap()
            .as_object()
            .unwrap()
            .len()
        );
    }

    #[test]
    fn a_spec_serialises_back_to_input_that_builds_it_again() {
        let input = SpecInput {
            cpu: text("2.5"),
            memory: text("1536M"),
            timeout: text("1h30m"),
            ..run(&["sh", "-c", "echo hi"])
        };
        let back: SpecInput =
            serde_json::from_str(&serde_json::to_string(&input).unwrap()).unwrap();
        assert_eq!(back, input);
        let s = build_spec(&back).unwrap();
        assert_eq!(s.timeout_ms, Some(5_400_000));
        assert_eq!(s.resources.cpu_millis, 2500);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::units::{MIB, format_cores_exact, format_duration_ms, format_size};
    use proptest::prelude::*;

    proptest! {
        /// What a face types (the exact formats of each value) builds the
        /// spec with those values, and JSON numbers build the same spec.
        #[test]
        fn typed_values_build_back(
            millis in 1u64..=4_096_000,
            mib in 0u64..(64 << 20),
            timeout_ms in 1u64..(365 * 24 * 3_600_000),
            priority in -1000i32..=1000,
            retries in 0u32..=100,
        ) {
            let typed = SpecInput {
                command: Raw::words(vec!["true".into()]),
                cpu: Raw::text(Some(format_cores_exact(millis))),
                memory: Raw::text(Some(format_size(mib * MIB))),
                timeout: Raw::text(Some(format_duration_ms(timeout_ms))),
                priority: Raw::text(Some(priority.to_string())),
                retries: Raw::text(Some(retries.to_string())),
                ..SpecInput::default()
            };
            let s = build_spec(&typed).unwrap();
            prop_assert_eq!(s.resources.cpu_millis, millis);
            prop_assert_eq!(s.resources.memory_bytes, mib * MIB);
            prop_assert_eq!(s.timeout_ms, Some(timeout_ms));
            prop_assert_eq!((s.priority, s.retries), (priority, retries));
            let json = SpecInput {
                memory: Some(Raw::Whole(mib * MIB)),
                priority: Some(if priority < 0 {
                    Raw::Signed(priority.into())
                } else {
                    Raw::Whole(priority as u64)
                }),
                retries: Some(Raw::Whole(retries.into())),
                ..typed
            };
            prop_assert_eq!(build_spec(&json).unwrap(), s);
        }
    }
}
