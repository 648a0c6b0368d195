//! Every configuration key, declared once. A key is a field of its
//! section's struct (type, codec, and its default in the struct's
//! `Default`) plus one row of [`KEYS`] (environment variable, flag, the
//! roles that read it, meaning). Everything else is derived from the two:
//! the flags (`flags`), the file and environment lookup and the
//! `--print-config` output (`super`), and the table in
//! `docs/CONFIGURATION.md` ([`keys_table`]). Tests fail when a field has
//! no row or a row no field.

use crate::logging::LogFormat;
use berth_core::settings::{self, Value};
use berth_master::MasterConfig;
use berth_master::config::{addr, http};
use berth_worker::WorkerConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A TOML section of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Master,
    Worker,
    Dev,
    Client,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Master,
        Section::Worker,
        Section::Dev,
        Section::Client,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Master => "master",
            Section::Worker => "worker",
            Section::Dev => "dev",
            Section::Client => "client",
        }
    }

    /// The section's struct with its defaults, as TOML (a key left out
    /// has no default value: it is detected, or not set).
    pub fn defaults(self) -> toml::Table {
        let table = match self {
            Section::Master => toml::Table::try_from(MasterSection::default()),
            Section::Worker => toml::Table::try_from(WorkerSection::default()),
            Section::Dev => toml::Table::try_from(DevConfig::default()),
            Section::Client => toml::Table::try_from(ClientConfig::default()),
        };
        table.expect("the defaults serialise")
    }

    /// Parse `name = value` alone into the section's struct: the error of
    /// that one value (a message without the key).
    pub fn check(self, name: &str, value: &toml::Value) -> Result<(), String> {
        let one = toml::Value::Table(toml::Table::from_iter([(name.to_string(), value.clone())]));
        let result = match self {
            Section::Master => one.try_into::<MasterSection>().map(drop),
            Section::Worker => one.try_into::<WorkerSection>().map(drop),
            Section::Dev => one.try_into::<DevConfig>().map(drop),
            Section::Client => one.try_into::<ClientConfig>().map(drop),
        };
        result.map_err(|e| e.message().to_string())
    }
}

/// A command that reads settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Worker,
    Dev,
    /// The shell and every client command.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Dev => "dev",
            Role::Client => "shell, every client command",
        })
    }
}

/// One configuration key's row.
#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    pub section: Section,
    /// The field's name in the section (its serde name).
    pub name: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    /// The commands that read it.
    pub roles: &'static [Role],
    /// How the documentation names a default that is not a value
    /// (`detected`, `host name`, `none`); else the struct's default is
    /// shown.
    pub default_word: Option<&'static str>,
    /// Never printed.
    pub secret: bool,
    pub meaning: &'static str,
}

impl Key {
    const fn new(
        section: Section,
        name: &'static str,
        env: &'static str,
        flag: &'static str,
        roles: &'static [Role],
        meaning: &'static str,
    ) -> Key {
        Key {
            section,
            name,
            env,
            flag,
            roles,
            default_word: None,
            secret: false,
            meaning,
        }
    }

    const fn default_word(mut self, word: &'static str) -> Key {
        self.default_word = Some(word);
        self
    }

    const fn secret(mut self) -> Key {
        self.secret = true;
        self
    }

    pub fn used_by(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `section.name`, as in the documentation's table.
    pub fn id(&self) -> String {
        format!("{}.{}", self.section.name(), self.name)
    }

    /// The default as documented: a word, or the struct's default.
    pub fn default_text(&self) -> String {
        if let Some(word) = self.default_word {
            return word.to_string();
        }
        match self.section.defaults().get(self.name) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => panic!("{}: no default and no word for it", self.id()),
        }
    }
}

use Role::{Client as C, Dev as D, Master as M, Worker as W};
use Section::{Client, Dev, Master, Worker};

const LOG_FORMAT: &str = "how the log on stderr looks: `text` (coloured only when stderr is a terminal) or `json` (one object per line: `timestamp`, `level`, `target`, `fields`)";

/// Every key, in the order `docs/CONFIGURATION.md` and `--print-config`
/// list them.
pub static KEYS: &[Key] = &[
    Key::new(
        Master,
        "listen",
        "BERTH_MASTER_LISTEN",
        "--listen",
        &[M],
        "gRPC listen address, `HOST:PORT` (port 0 picks a free port)",
    ),
    Key::new(
        Master,
        "http",
        "BERTH_MASTER_HTTP",
        "--http",
        &[M],
        "HTTP listen address (health, API, dashboard), or `off`",
    ),
    Key::new(
        Master,
        "data_dir",
        "BERTH_MASTER_DATA_DIR",
        "--data-dir",
        &[M],
        "the database, the cluster token and task logs",
    ),
    Key::new(
        Master,
        "store",
        "BERTH_STORE",
        "--store",
        &[M],
        "where the records live: `sqlite` (the file `DATA_DIR/berth.db`) or a PostgreSQL URL `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (plain connections: TLS is not supported yet; the password is never printed)",
    ),
    Key::new(
        Master,
        "heartbeat_interval",
        "BERTH_MASTER_HEARTBEAT_INTERVAL",
        "--heartbeat-interval",
        &[M, D],
        "how often workers send heartbeats",
    ),
    Key::new(
        Master,
        "heartbeat_ttl",
        "BERTH_MASTER_HEARTBEAT_TTL",
        "--heartbeat-ttl",
        &[M, D],
        "silence after which a worker is down (must be longer than `heartbeat_interval`)",
    ),
    Key::new(
        Master,
        "reconcile_interval",
        "BERTH_MASTER_RECONCILE_INTERVAL",
        "--reconcile-interval",
        &[M, D],
        "how often allocations are audited against the records",
    ),
    Key::new(
        Master,
        "strategy",
        "BERTH_MASTER_STRATEGY",
        "--strategy",
        &[M, D],
        "where tasks that do not choose go: `binpack` (the fitting worker with the least free CPU) or `spread` (the most); `--strategy` on submit overrides it",
    ),
    Key::new(
        Master,
        "starvation_wait",
        "BERTH_MASTER_STARVATION_WAIT",
        "--starvation-wait",
        &[M, D],
        "how long the first task that fits nowhere waits before a worker is kept free for it",
    ),
    Key::new(
        Master,
        "require_registration",
        "BERTH_MASTER_REQUIRE_REGISTRATION",
        "--require-registration",
        &[M, D],
        "only worker names allowed with `berth register NAME` may join",
    ),
    Key::new(
        Master,
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        &[M],
        LOG_FORMAT,
    ),
    Key::new(
        Worker,
        "name",
        "BERTH_WORKER_NAME",
        "--name",
        &[W, D],
        "the worker's name in lists",
    )
    .default_word("host name"),
    Key::new(
        Worker,
        "data_dir",
        "BERTH_WORKER_DATA_DIR",
        "--data-dir",
        &[W],
        "node id, attempt folders (the outbox) and task output",
    ),
    Key::new(
        Worker,
        "cpus",
        "BERTH_WORKER_CPUS",
        "--cpus",
        &[W, D],
        "CPU cores to offer (e.g. `4`, `2.5`)",
    )
    .default_word("detected"),
    Key::new(
        Worker,
        "memory",
        "BERTH_WORKER_MEMORY",
        "--memory",
        &[W, D],
        "memory to offer (e.g. `8G`, `512M`; a bare number is GB)",
    )
    .default_word("detected"),
    Key::new(
        Worker,
        "storage",
        "BERTH_WORKER_STORAGE",
        "--storage",
        &[W, D],
        "storage to offer (e.g. `100G`; a bare number is GB)",
    )
    .default_word("detected"),
    Key::new(
        Worker,
        "gpus",
        "BERTH_WORKER_GPUS",
        "--gpus",
        &[W, D],
        "whole GPUs to offer",
    )
    .default_word("detected"),
    Key::new(
        Worker,
        "stop_grace",
        "BERTH_WORKER_STOP_GRACE",
        "--stop-grace",
        &[W, D],
        "time between SIGTERM and SIGKILL when a task is stopped",
    ),
    Key::new(
        Worker,
        "max_output",
        "BERTH_WORKER_MAX_OUTPUT",
        "--max-output",
        &[W, D],
        "most bytes of output files one attempt may send to the master; a larger output fails it (a bare number is GB)",
    ),
    Key::new(
        Worker,
        "labels",
        "BERTH_WORKER_LABELS",
        "--label",
        &[W, D],
        "`key=value` labels tasks can require with `--constraint`: a TOML array (`[\"gpu=a100\", \"zone=b\"]`); in the environment comma-separated; the flag is repeated",
    ),
    Key::new(
        Worker,
        "drain_on_exit",
        "BERTH_WORKER_DRAIN_ON_EXIT",
        "--drain-on-exit",
        &[W],
        "on SIGTERM/SIGINT, take no new work and wait for running tasks before exiting",
    ),
    Key::new(
        Worker,
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        &[W],
        LOG_FORMAT,
    ),
    Key::new(
        Dev,
        "data_dir",
        "BERTH_DEV_DATA_DIR",
        "--data-dir",
        &[D],
        "the dev master's data; its worker's is `DATA_DIR/worker`",
    ),
    Key::new(
        Dev,
        "listen",
        "BERTH_DEV_LISTEN",
        "--listen",
        &[D],
        "gRPC listen address of the dev master",
    ),
    Key::new(
        Dev,
        "http",
        "BERTH_DEV_HTTP",
        "--http",
        &[D],
        "HTTP listen address of the dev master, or `off`",
    ),
    Key::new(
        Dev,
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        &[D],
        LOG_FORMAT,
    ),
    Key::new(
        Client,
        "master",
        "BERTH_MASTER",
        "--master",
        &[W, C],
        "the master's gRPC URL",
    ),
    Key::new(
        Client,
        "token",
        "BERTH_TOKEN",
        "--token",
        &[W, C],
        "the cluster token (the master keeps it in `DATA_DIR/token`)",
    )
    .default_word("none")
    .secret(),
];

/// The keys of `section` that `role` reads, in table order.
pub fn used(section: Section, role: Role) -> impl Iterator<Item = &'static Key> {
    KEYS.iter()
        .filter(move |k| k.section == section && k.used_by(role))
}

/// The documentation table (`docs/CONFIGURATION.md`); a test checks the
/// file contains exactly this.
#[cfg(test)]
pub fn keys_table() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| key | environment | flag | default | used by | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let default = match k.default_word {
            Some(word) => word.to_string(),
            None => format!("`{}`", k.default_text()),
        };
        let roles: Vec<String> = k.roles.iter().map(Role::to_string).collect();
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {default} | {} | {} |",
            k.id(),
            k.env,
            k.flag,
            roles.join(", "),
            k.meaning
        );
    }
    out
}

// ---- the sections ----

/// `[master]`: the master's own config and its log format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterSection {
    #[serde(flatten)]
    pub config: MasterConfig,
    #[serde(with = "log_format")]
    pub log_format: LogFormat,
}

/// `[worker]`: the worker's own config and its log format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerSection {
    #[serde(flatten)]
    pub config: WorkerConfig,
    #[serde(with = "log_format")]
    pub log_format: LogFormat,
}

/// `[dev]`: where `berth dev`'s master listens and keeps its data; the
/// rest of it is `[master]` and `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DevConfig {
    #[serde(with = "settings::path")]
    pub data_dir: PathBuf,
    #[serde(with = "addr")]
    pub listen: SocketAddr,
    #[serde(with = "http")]
    pub http: Option<SocketAddr>,
    #[serde(with = "log_format")]
    pub log_format: LogFormat,
}

impl Default for DevConfig {
    fn default() -> Self {
        let master = MasterConfig::default();
        DevConfig {
            data_dir: PathBuf::from(".berth-dev"),
            listen: master.listen,
            http: master.http,
            log_format: LogFormat::default(),
        }
    }
}

/// `[client]`: which master the worker and the client commands call,
/// with which token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    #[serde(with = "url")]
    pub master: String,
    #[serde(with = "token")]
    pub token: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            master: format!("http://{}", MasterConfig::default().listen),
            token: String::new(),
        }
    }
}

mod log_format {
    use super::*;

    pub fn serialize<S: serde::Serializer>(f: &LogFormat, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.as_str())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        Value::deserialize(d)?
            .string()
            .and_then(|s| crate::logging::parse_log_format(&s))
            .map_err(serde::de::Error::custom)
    }
}

/// The master's URL; `HOST:PORT` gets `http://`.
mod url {
    use super::*;

    pub fn serialize<S: serde::Serializer>(u: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let s = Value::deserialize(d)?
            .string()
            .map_err(serde::de::Error::custom)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom(
                "must not be empty (e.g. http://127.0.0.1:7700)",
            ));
        }
        Ok(crate::client::normalize_url(&s))
    }
}

mod token {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Value::deserialize(d)?
            .string()
            .map_err(serde::de::Error::custom)
    }
}
