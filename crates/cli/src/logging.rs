//! Where the process's own log goes and how it looks: `text` (for people;
//! ANSI colours only when stderr is a terminal, never into journald or a
//! file) or `json` (one object per line: `timestamp`, `level`, `target`,
//! `fields` holding `message` and the event's fields, and the open spans).
//! `RUST_LOG` sets the levels.

use anyhow::Context;
use std::io::IsTerminal;
use std::path::Path;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The one parser of a log format (flags, environment and config file).
pub fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("'{s}' is not a log format (text or json)")),
    }
}

/// Log to stderr, or to `file` when a shell owns the terminal, in
/// `format`. `RUST_LOG` overrides `default_level`.
pub fn init(file: Option<&Path>, default_level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let file = match file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            eprintln!("Logs go to {}", path.display());
            Some(std::sync::Mutex::new(f))
        }
        None => None,
    };
    // A second initialisation (tests, `berth dev` paths) keeps the first.
    let _ = match (format, file) {
        (LogFormat::Json, Some(f)) => builder.json().with_writer(f).try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, Some(f)) => builder.with_ansi(false).with_writer(f).try_init(),
        (LogFormat::Text, None) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_only() {
        assert_eq!(parse_log_format("json"), Ok(LogFormat::Json));
        assert_eq!(parse_log_format(" Text "), Ok(LogFormat::Text));
        assert_eq!(
            parse_log_format("yaml").unwrap_err(),
            "'yaml' is not a log format (text or json)"
        );
        assert_eq!(LogFormat::default().as_str(), "text");
    }
}
