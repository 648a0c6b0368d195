//! Setting values: how a configuration struct's fields are read from a
//! config file, a `BERTH_*` variable or a flag, and written back for
//! `--print-config`. Each codec is a serde `with` module (`duration`,
//! `cores`, `memory`, …) over [`Value`], the raw value as given (a
//! variable or a flag is always a string). Errors are the message only;
//! the caller adds the key and where the value came from. No I/O.

use crate::units::{GIB, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES};
use crate::units::{format_cores_exact, format_duration_ms, format_size};
use crate::units::{parse_cores, parse_duration_ms, parse_gpus, parse_size};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::fmt;
use std::time::Duration;

/// A setting's value as given, before it is parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Array(Vec<Value>),
    /// Anything else (a table, a date); named in errors.
    Other(&'static str),
}

impl Value {
    /// "a string", "an integer": for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Other(k) => k,
        }
    }

    pub fn string(&self) -> Result<String, String> {
        match self {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", other.kind())),
        }
    }

    /// Numbers and strings both, as text for the unit parsers.
    pub fn number_text(&self) -> Result<String, String> {
        match self {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(n) => Ok(n.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            other => Err(format!(
                "expected a number or a string, found {}",
                other.kind()
            )),
        }
    }
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a setting value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Integer(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
                i64::try_from(n)
                    .map(Value::Integer)
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
                Ok(Value::Float(f))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Boolean(b))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                // A TOML date arrives as a one-entry map; a table as a map.
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Value::Other("a table"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A codec module for serde's `with`: `parse` reads a [`Value`], `show`
/// writes what `parse` reads back.
macro_rules! codec {
    ($(#[$doc:meta])* $name:ident: $ty:ty, parse = $parse:expr, show = $show:expr) => {
        $(#[$doc])*
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;

            pub fn parse(v: &Value) -> Result<$ty, String> {
                ($parse)(v)
            }

            pub fn serialize<S: serde::Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&($show)(v), s)
            }

            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let v: Value = serde::Deserialize::deserialize(d)?;
                parse(&v).map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    };
}

/// The same codec for an optional field (`None` = detected, left out).
macro_rules! optional {
    ($(#[$doc:meta])* $name:ident: $ty:ty, $inner:ident) => {
        $(#[$doc])*
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;

            pub fn serialize<S: serde::Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                match v {
                    Some(v) => super::$inner::serialize(v, s),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Option<$ty>, D::Error> {
                super::$inner::deserialize(d).map(Some)
            }
        }
    };
}

/// A setting's duration, in core's one grammar (`500ms`, `1s`, `1.5s`,
/// `2m`, `1h30m`; a bare number is seconds): at least 1ms, at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let ms = parse_duration_ms("duration", s).map_err(|e| e.message)?;
    if ms < 1 {
        return Err(format!("'{s}' must be at least 1ms"));
    }
    if ms > 86_400_000 {
        return Err(format!("'{s}' is longer than a day"));
    }
    Ok(Duration::from_millis(ms))
}

/// `1s`, `1500ms`: what [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    format_duration_ms(d.as_millis() as u64)
}

codec!(
    /// `"5s"`, `"500ms"` or a whole number of seconds.
    duration: Duration,
    parse = |v: &Value| match v {
        Value::String(s) => parse_duration(s),
        Value::Integer(n) => parse_duration(&n.to_string()),
        other => Err(format!(
            "expected a duration like \"5s\" or \"500ms\", found {}",
            other.kind()
        )),
    },
    show = |d: &Duration| format_duration(*d)
);

codec!(
    /// `true`/`false`; as text also `1`/`0`, `yes`/`no`, `on`/`off`.
    switch: bool,
    parse = |v: &Value| match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(format!("'{s}' is not true or false")),
        },
        other => Err(format!("expected true or false, found {}", other.kind())),
    },
    show = |b: &bool| *b
);

codec!(
    /// A non-empty string (a name).
    name: String,
    parse = |v: &Value| {
        let s = v.string()?;
        if s.trim().is_empty() {
            return Err("must not be empty".to_string());
        }
        Ok(s)
    },
    show = |s: &String| s.clone()
);

codec!(
    /// A path, as given (made absolute by the caller).
    path: std::path::PathBuf,
    parse = |v: &Value| {
        let s = v.string()?;
        if s.is_empty() {
            return Err("must not be empty".to_string());
        }
        Ok(std::path::PathBuf::from(s))
    },
    show = |p: &std::path::PathBuf| p.display().to_string()
);

codec!(
    /// `binpack` or `spread`.
    strategy: crate::Strategy,
    parse = |v: &Value| {
        let s = v.string()?;
        s.trim()
            .parse::<crate::Strategy>()
            .map_err(|_| format!("'{s}' is not a strategy; use binpack or spread"))
    },
    show = |s: &crate::Strategy| s.as_str()
);

codec!(
    /// CPU cores (`2.5`, `"0.5"`), kept in millicores.
    cores_exact: u64,
    parse = |v: &Value| parse_cores("cpus", &v.number_text()?).map_err(|e| e.message),
    show = |m: &u64| format_cores_exact(*m)
);

/// A size in bytes (`"8G"`, `"512M"`, a bare number of GB) up to `max`.
fn size(field: &'static str, max: u64) -> impl Fn(&Value) -> Result<u64, String> {
    move |v| parse_size(field, &v.number_text()?, GIB, max).map_err(|e| e.message)
}

codec!(
    /// Memory (`"8G"`, `"512M"`, a bare number of GB).
    memory_size: u64,
    parse = size("memory", MAX_MEMORY_BYTES),
    show = |b: &u64| format_size(*b)
);

codec!(
    /// Storage (`"100G"`, a bare number of GB).
    storage_size: u64,
    parse = size("storage", MAX_STORAGE_BYTES),
    show = |b: &u64| format_size(*b)
);

codec!(
    /// Output bytes one attempt may send (`"1G"`, a bare number of GB).
    output_size: u64,
    parse = size("max_output", MAX_STORAGE_BYTES),
    show = |b: &u64| format_size(*b)
);

codec!(
    /// Whole GPUs.
    gpu_count: u32,
    parse = |v: &Value| parse_gpus("gpus", &v.number_text()?).map_err(|e| e.message),
    show = |n: &u32| *n
);

optional!(cores: u64, cores_exact);
optional!(memory: u64, memory_size);
optional!(storage: u64, storage_size);
optional!(gpus: u32, gpu_count);

/// One `key=value` label, checked as worker labels are.
fn label(text: &str) -> Result<(String, String), String> {
    let l = crate::validate::parse_label("label", text).map_err(|e| e.message)?;
    crate::validate::validate_labels("label", std::slice::from_ref(&l)).map_err(|e| e.message)?;
    Ok(l)
}

codec!(
    /// `key=value` labels: an array of strings, or one comma-separated
    /// string (how a variable gives them).
    labels: Vec<(String, String)>,
    parse = |v: &Value| {
        let list: Vec<(String, String)> = match v {
            Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(label)
                .collect::<Result<_, _>>()?,
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(t) => label(t),
                    other => Err(format!(
                        "expected strings like \"gpu=a100\", found {}",
                        other.kind()
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "expected an array of \"key=value\" strings, found {}",
                    other.kind()
                ));
            }
        };
        crate::validate::validate_labels("label", &list).map_err(|e| e.message)?;
        Ok(list)
    },
    show = |l: &Vec<(String, String)>| l
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        for ms in [1, 250, 1000, 1500, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert!(duration::parse(&Value::Boolean(true)).is_err());
        assert_eq!(
            duration::parse(&Value::Integer(30)),
            Ok(Duration::from_secs(30))
        );
    }

    #[test]
    fn switches_take_words() {
        assert_eq!(switch::parse(&Value::String("yes".into())), Ok(true));
        assert_eq!(
            switch::parse(&Value::String("maybe".into())),
            Err("'maybe' is not true or false".into())
        );
    }

    #[test]
    fn labels_from_a_string_or_an_array() {
        let want = vec![("gpu".to_string(), "a100".to_string())];
        assert_eq!(
            labels::parse(&Value::String("gpu=a100".into())),
            Ok(want.clone())
        );
        assert_eq!(
            labels::parse(&Value::Array(vec![Value::String("gpu=a100".into())])),
            Ok(want)
        );
        assert!(labels::parse(&Value::Array(vec![Value::Integer(1)])).is_err());
    }
}
