//! Settings for `berth master`, `berth worker`, `berth dev` and the client
//! commands, layered: **flags > `BERTH_*` environment > config file >
//! defaults**. The config file is TOML (`--config FILE`, or the
//! `BERTH_CONFIG` variable; none by default) with the sections `[master]`,
//! `[worker]`, `[dev]` and `[client]`.
//!
//! Every key is listed once, in [`KEYS`] (its env var, flag, default and
//! meaning); `docs/CONFIGURATION.md` is the same table and a test keeps the
//! two equal. Values from the file and the environment are parsed here
//! with errors that name the key and where the value came from; flags are
//! parsed by clap (`args`). The result is the libraries' own typed configs
//! (`MasterConfig`, `WorkerConfig`) plus, for `--print-config`, where each
//! value came from.
//!
//! No I/O besides reading the config file and the environment once, in
//! [`Sources::load`].

use crate::args::{DevArgs, MasterArgs, ResourceArgs, SchedulingArgs, WorkerArgs};
use crate::args::{parse_addr, parse_duration};
use crate::logging::LogFormat;
use anyhow::{Context, anyhow, bail};
use berth_core::units::{GIB, MAX_MEMORY_BYTES, MAX_STORAGE_BYTES};
use berth_core::units::{format_cores_exact, format_size, parse_cores, parse_gpus, parse_size};
use berth_master::MasterConfig;
use berth_worker::WorkerConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "BERTH_CONFIG";

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// `master`, `worker`, `dev` or `client`: the TOML section.
    pub section: &'static str,
    pub name: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    /// As documented (`detected`, `host name` and `none` are words, not
    /// values).
    pub default: &'static str,
    /// The commands that read it.
    pub used_by: &'static str,
    pub meaning: &'static str,
}

#[cfg(test)]
impl Key {
    /// `section.name`, as in the documentation's table.
    pub fn id(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

macro_rules! key {
    ($section:literal, $name:literal, $env:literal, $flag:literal, $default:literal, $used:literal, $meaning:literal) => {
        Key {
            section: $section,
            name: $name,
            env: $env,
            flag: $flag,
            default: $default,
            used_by: $used,
            meaning: $meaning,
        }
    };
}

/// Every key, in the order `docs/CONFIGURATION.md` lists them.
pub const KEYS: &[Key] = &[
    key!(
        "master",
        "listen",
        "BERTH_MASTER_LISTEN",
        "--listen",
        "127.0.0.1:7700",
        "master",
        "gRPC listen address, `HOST:PORT` (port 0 picks a free port)"
    ),
    key!(
        "master",
        "http",
        "BERTH_MASTER_HTTP",
        "--http",
        "127.0.0.1:7701",
        "master",
        "HTTP listen address (health, API, dashboard), or `off`"
    ),
    key!(
        "master",
        "data_dir",
        "BERTH_MASTER_DATA_DIR",
        "--data-dir",
        "./berth-data",
        "master",
        "the database, the cluster token and task logs"
    ),
    key!(
        "master",
        "store",
        "BERTH_STORE",
        "--store",
        "sqlite",
        "master",
        "where the records live: `sqlite` (the file `DATA_DIR/berth.db`) or a PostgreSQL URL `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (plain connections: TLS is not supported yet; the password is never printed)"
    ),
    key!(
        "master",
        "heartbeat_interval",
        "BERTH_MASTER_HEARTBEAT_INTERVAL",
        "--heartbeat-interval",
        "1s",
        "master, dev",
        "how often workers send heartbeats"
    ),
    key!(
        "master",
        "heartbeat_ttl",
        "BERTH_MASTER_HEARTBEAT_TTL",
        "--heartbeat-ttl",
        "5s",
        "master, dev",
        "silence after which a worker is down (must be longer than `heartbeat_interval`)"
    ),
    key!(
        "master",
        "reconcile_interval",
        "BERTH_MASTER_RECONCILE_INTERVAL",
        "--reconcile-interval",
        "60s",
        "master, dev",
        "how often allocations are audited against the records"
    ),
    key!(
        "master",
        "strategy",
        "BERTH_MASTER_STRATEGY",
        "--strategy",
        "binpack",
        "master, dev",
        "where tasks that do not choose go: `binpack` (the fitting worker with the least free CPU) or `spread` (the most); `--strategy` on submit overrides it"
    ),
    key!(
        "master",
        "starvation_wait",
        "BERTH_MASTER_STARVATION_WAIT",
        "--starvation-wait",
        "60s",
        "master, dev",
        "how long the first task that fits nowhere waits before a worker is kept free for it"
    ),
    key!(
        "master",
        "require_registration",
        "BERTH_MASTER_REQUIRE_REGISTRATION",
        "--require-registration",
        "false",
        "master, dev",
        "only worker names allowed with `berth register NAME` may join"
    ),
    key!(
        "master",
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        "text",
        "master",
        "how the log on stderr looks: `text` (coloured only when stderr is a terminal) or `json` (one object per line: `timestamp`, `level`, `target`, `fields`)"
    ),
    key!(
        "worker",
        "name",
        "BERTH_WORKER_NAME",
        "--name",
        "host name",
        "worker, dev",
        "the worker's name in lists"
    ),
    key!(
        "worker",
        "data_dir",
        "BERTH_WORKER_DATA_DIR",
        "--data-dir",
        "./berth-worker",
        "worker",
        "node id, attempt folders (the outbox) and task output"
    ),
    key!(
        "worker",
        "cpus",
        "BERTH_WORKER_CPUS",
        "--cpus",
        "detected",
        "worker, dev",
        "CPU cores to offer (e.g. `4`, `2.5`)"
    ),
    key!(
        "worker",
        "memory",
        "BERTH_WORKER_MEMORY",
        "--memory",
        "detected",
        "worker, dev",
        "memory to offer (e.g. `8G`, `512M`; a bare number is GB)"
    ),
    key!(
        "worker",
        "storage",
        "BERTH_WORKER_STORAGE",
        "--storage",
        "detected",
        "worker, dev",
        "storage to offer (e.g. `100G`; a bare number is GB)"
    ),
    key!(
        "worker",
        "gpus",
        "BERTH_WORKER_GPUS",
        "--gpus",
        "detected",
        "worker, dev",
        "whole GPUs to offer"
    ),
    key!(
        "worker",
        "stop_grace",
        "BERTH_WORKER_STOP_GRACE",
        "--stop-grace",
        "10s",
        "worker, dev",
        "time between SIGTERM and SIGKILL when a task is stopped"
    ),
    key!(
        "worker",
        "max_output",
        "BERTH_WORKER_MAX_OUTPUT",
        "--max-output",
        "1G",
        "worker, dev",
        "most bytes of output files one attempt may send to the master; a larger output fails it (a bare number is GB)"
    ),
    key!(
        "worker",
        "labels",
        "BERTH_WORKER_LABELS",
        "--label",
        "[]",
        "worker, dev",
        "`key=value` labels tasks can require with `--constraint`: a TOML array (`[\"gpu=a100\", \"zone=b\"]`); in the environment comma-separated; the flag is repeated"
    ),
    key!(
        "worker",
        "drain_on_exit",
        "BERTH_WORKER_DRAIN_ON_EXIT",
        "--drain-on-exit",
        "false",
        "worker",
        "on SIGTERM/SIGINT, take no new work and wait for running tasks before exiting"
    ),
    key!(
        "worker",
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        "text",
        "worker",
        "how the log on stderr looks: `text` (coloured only when stderr is a terminal) or `json` (one object per line: `timestamp`, `level`, `target`, `fields`)"
    ),
    key!(
        "dev",
        "data_dir",
        "BERTH_DEV_DATA_DIR",
        "--data-dir",
        ".berth-dev",
        "dev",
        "the dev master's data; its worker's is `DATA_DIR/worker`"
    ),
    key!(
        "dev",
        "listen",
        "BERTH_DEV_LISTEN",
        "--listen",
        "127.0.0.1:7700",
        "dev",
        "gRPC listen address of the dev master"
    ),
    key!(
        "dev",
        "http",
        "BERTH_DEV_HTTP",
        "--http",
        "127.0.0.1:7701",
        "dev",
        "HTTP listen address of the dev master, or `off`"
    ),
    key!(
        "dev",
        "log_format",
        "BERTH_LOG_FORMAT",
        "--log-format",
        "text",
        "dev",
        "how the log on stderr looks: `text` (coloured only when stderr is a terminal) or `json` (one object per line: `timestamp`, `level`, `target`, `fields`)"
    ),
    key!(
        "client",
        "master",
        "BERTH_MASTER",
        "--master",
        "http://127.0.0.1:7700",
        "worker, shell, every client command",
        "the master's gRPC URL"
    ),
    key!(
        "client",
        "token",
        "BERTH_TOKEN",
        "--token",
        "none",
        "worker, shell, every client command",
        "the cluster token (the master keeps it in `DATA_DIR/token`)"
    ),
];

const SECTIONS: &[&str] = &["master", "worker", "dev", "client"];

/// The key `section.name`; panics on a name not in [`KEYS`] (a bug).
fn key(section: &str, name: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.section == section && k.name == name)
        .unwrap_or_else(|| panic!("no config key {section}.{name}"))
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File => write!(f, "config file"),
            Origin::Env(v) => write!(f, "{v}"),
            Origin::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn default(value: T) -> Setting<T> {
        Setting {
            value,
            origin: Origin::Default,
        }
    }
}

/// The file and environment layers, read once.
#[derive(Debug, Default)]
pub struct Sources {
    /// The config file's path and its sections (keys already checked).
    file: Option<(PathBuf, toml::Table)>,
    /// `BERTH_*` variables.
    env: BTreeMap<String, String>,
}

impl Sources {
    /// Read the environment and the config file (`--config`, else
    /// `BERTH_CONFIG`, else none).
    pub fn load(config_flag: Option<&Path>) -> anyhow::Result<Sources> {
        let mut env = BTreeMap::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if !k.starts_with("BERTH_") {
                continue;
            }
            let v = v
                .into_string()
                .map_err(|_| anyhow!("{k}: the value is not valid UTF-8"))?;
            env.insert(k.to_string(), v);
        }
        let path = match config_flag {
            Some(p) => Some(p.to_path_buf()),
            None => env
                .get(CONFIG_ENV)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        };
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                Some((path, text))
            }
            None => None,
        };
        Sources::from_parts(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), env)
    }

    /// Layers from a config file's text and a set of variables (tests).
    pub fn from_parts(
        file: Option<(&Path, &str)>,
        env: BTreeMap<String, String>,
    ) -> anyhow::Result<Sources> {
        let file = match file {
            Some((path, text)) => Some((path.to_path_buf(), parse_file(path, text)?)),
            None => None,
        };
        Ok(Sources { file, env })
    }

    /// The config file in use, if any.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// The value of `k` from the highest layer that has one (flags are
    /// given typed, already parsed by clap).
    fn lookup<T>(
        &self,
        k: &'static Key,
        flag: Option<T>,
        parse: impl Fn(&toml::Value) -> Result<T, String>,
    ) -> anyhow::Result<Option<Setting<T>>> {
        if let Some(value) = flag {
            return Ok(Some(Setting {
                value,
                origin: Origin::Flag(k.flag),
            }));
        }
        if let Some(text) = self.env.get(k.env) {
            let value = parse(&toml::Value::String(text.clone()))
                .map_err(|m| anyhow!("{}: {m} (from {})", k.name, k.env))?;
            return Ok(Some(Setting {
                value,
                origin: Origin::Env(k.env),
            }));
        }
        if let Some((path, table)) = &self.file
            && let Some(v) = table
                .get(k.section)
                .and_then(|s| s.as_table())
                .and_then(|s| s.get(k.name))
        {
            let value = parse(v).map_err(|m| {
                anyhow!("{}: {m} (in [{}] of {})", k.name, k.section, path.display())
            })?;
            return Ok(Some(Setting {
                value,
                origin: Origin::File,
            }));
        }
        Ok(None)
    }

    fn get<T>(
        &self,
        k: &'static Key,
        flag: Option<T>,
        parse: impl Fn(&toml::Value) -> Result<T, String>,
        default: impl FnOnce() -> T,
    ) -> anyhow::Result<Setting<T>> {
        Ok(self
            .lookup(k, flag, parse)?
            .unwrap_or_else(|| Setting::default(default())))
    }

    /// The client settings: which master to call, with which token.
    pub fn client(
        &self,
        master_flag: Option<&str>,
        token_flag: Option<&str>,
    ) -> anyhow::Result<ClientSettings> {
        let mut master = self.get(
            key("client", "master"),
            master_flag.map(str::to_string),
            url_value,
            || crate::args::DEFAULT_MASTER.to_string(),
        )?;
        master.value = crate::client::normalize_url(&master.value);
        let token = self.get(
            key("client", "token"),
            token_flag.map(str::to_string),
            string_value,
            String::new,
        )?;
        Ok(ClientSettings { master, token })
    }

    /// `berth master`'s settings.
    pub fn master(&self, a: &MasterArgs) -> anyhow::Result<MasterSettings> {
        let listen = self.get(key("master", "listen"), a.listen, addr_value, || {
            default_addr(7700)
        })?;
        let http = self.get(
            key("master", "http"),
            a.http.map(|h| h.0),
            http_value,
            || Some(default_addr(7701)),
        )?;
        let data_dir = self.get(
            key("master", "data_dir"),
            a.data_dir.clone(),
            path_value,
            || PathBuf::from("./berth-data"),
        )?;
        let store = self.get(
            key("master", "store"),
            a.store.clone(),
            store_value,
            berth_store::StoreConfig::default,
        )?;
        let tuning = self.tuning(&a.heartbeat)?;
        let scheduling = self.scheduling(&a.scheduling)?;
        let s = MasterSettings {
            listen,
            http,
            data_dir: absolute_setting(data_dir)?,
            store,
            tuning,
            scheduling,
            log_format: self.log_format("master", a.log_format)?,
        };
        s.validate()?;
        Ok(s)
    }

    /// `log_format` of the role's section.
    fn log_format(
        &self,
        section: &str,
        flag: Option<LogFormat>,
    ) -> anyhow::Result<Setting<LogFormat>> {
        self.get(
            key(section, "log_format"),
            flag,
            log_format_value,
            LogFormat::default,
        )
    }

    fn tuning(&self, hb: &crate::args::HeartbeatArgs) -> anyhow::Result<Tuning> {
        let t = Tuning {
            heartbeat_interval: self.get(
                key("master", "heartbeat_interval"),
                hb.heartbeat_interval,
                duration_value,
                || Duration::from_secs(1),
            )?,
            heartbeat_ttl: self.get(
                key("master", "heartbeat_ttl"),
                hb.heartbeat_ttl,
                duration_value,
                || Duration::from_secs(5),
            )?,
            reconcile_interval: self.get(
                key("master", "reconcile_interval"),
                hb.reconcile_interval,
                duration_value,
                || Duration::from_secs(60),
            )?,
        };
        t.validate()?;
        Ok(t)
    }

    /// Placement settings (master and dev).
    fn scheduling(&self, a: &SchedulingArgs) -> anyhow::Result<Scheduling> {
        Ok(Scheduling {
            strategy: self.get(
                key("master", "strategy"),
                a.strategy,
                strategy_value,
                berth_core::Strategy::default,
            )?,
            starvation_wait: self.get(
                key("master", "starvation_wait"),
                a.starvation_wait,
                duration_value,
                || Duration::from_secs(60),
            )?,
            require_registration: self.get(
                key("master", "require_registration"),
                a.require_registration.then_some(true),
                bool_value,
                || false,
            )?,
        })
    }

    /// The worker shape shared by `berth worker` and `berth dev`.
    fn shape(
        &self,
        name: Option<&String>,
        stop_grace: Option<Duration>,
        r: &ResourceArgs,
        max_output: Option<&String>,
        labels: &[String],
    ) -> anyhow::Result<Shape> {
        let flag = |flag: &str,
                    v: &Option<String>,
                    parse: fn(&toml::Value) -> Result<u64, String>| {
            v.as_ref()
                .map(|t| parse(&toml::Value::String(t.clone())).map_err(|m| anyhow!("{flag}: {m}")))
                .transpose()
        };
        let gpus_flag = r
            .gpus
            .as_ref()
            .map(|t| {
                gpus_value(&toml::Value::String(t.clone())).map_err(|m| anyhow!("--gpus: {m}"))
            })
            .transpose()?;
        Ok(Shape {
            name: self.get(
                key("worker", "name"),
                name.cloned(),
                name_value,
                crate::serve::hostname,
            )?,
            cpus: self.lookup(
                key("worker", "cpus"),
                flag("--cpus", &r.cpus, cores_value)?,
                cores_value,
            )?,
            memory: self.lookup(
                key("worker", "memory"),
                flag("--memory", &r.memory, memory_value)?,
                memory_value,
            )?,
            storage: self.lookup(
                key("worker", "storage"),
                flag("--storage", &r.storage, storage_value)?,
                storage_value,
            )?,
            gpus: self.lookup(key("worker", "gpus"), gpus_flag, gpus_value)?,
            stop_grace: self.get(
                key("worker", "stop_grace"),
                stop_grace,
                duration_value,
                || Duration::from_secs(10),
            )?,
            max_output: self.get(
                key("worker", "max_output"),
                flag("--max-output", &max_output.cloned(), output_size_value)?,
                output_size_value,
                || berth_worker::outputs::DEFAULT_MAX_OUTPUT,
            )?,
            labels: self.get(
                key("worker", "labels"),
                labels_flag(labels)?,
                labels_value,
                Vec::new,
            )?,
        })
    }

    /// `berth worker`'s settings (its master and token included).
    pub fn worker(
        &self,
        a: &WorkerArgs,
        master_flag: Option<&str>,
        token_flag: Option<&str>,
    ) -> anyhow::Result<WorkerSettings> {
        let client = self.client(master_flag, token_flag)?;
        let shape = self.shape(
            a.name.as_ref(),
            a.stop_grace,
            &a.resources,
            a.max_output.as_ref(),
            &a.labels,
        )?;
        let data_dir = self.get(
            key("worker", "data_dir"),
            a.data_dir.clone(),
            path_value,
            || PathBuf::from("./berth-worker"),
        )?;
        let drain_on_exit = self.get(
            key("worker", "drain_on_exit"),
            a.drain_on_exit.then_some(true),
            bool_value,
            || false,
        )?;
        let s = WorkerSettings {
            client,
            shape,
            data_dir: absolute_setting(data_dir)?,
            drain_on_exit,
            log_format: self.log_format("worker", a.log_format)?,
        };
        s.config().validate().map_err(|e| anyhow!("{e}"))?;
        Ok(s)
    }

    /// `berth dev`'s settings.
    pub fn dev(&self, a: &DevArgs) -> anyhow::Result<DevSettings> {
        let listen = self.get(key("dev", "listen"), a.listen, addr_value, || {
            default_addr(7700)
        })?;
        let http = self.get(key("dev", "http"), a.http.map(|h| h.0), http_value, || {
            Some(default_addr(7701))
        })?;
        let data_dir = self.get(
            key("dev", "data_dir"),
            a.data_dir.clone(),
            path_value,
            || PathBuf::from(".berth-dev"),
        )?;
        let s = DevSettings {
            listen,
            http,
            data_dir: absolute_setting(data_dir)?,
            tuning: self.tuning(&a.heartbeat)?,
            scheduling: self.scheduling(&a.scheduling)?,
            shape: self.shape(
                a.name.as_ref(),
                a.stop_grace,
                &a.resources,
                a.max_output.as_ref(),
                &a.labels,
            )?,
            log_format: self.log_format("dev", a.log_format)?,
        };
        s.master_config().validate()?;
        Ok(s)
    }
}

/// Parse a config file and refuse unknown sections and keys, naming them.
fn parse_file(path: &Path, text: &str) -> anyhow::Result<toml::Table> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("the config file {} is not valid TOML: {e}", path.display()))?;
    for (section, body) in &table {
        if !SECTIONS.contains(&section.as_str()) {
            let hint = suggest(section, SECTIONS.iter().copied())
                .map(|s| format!("; did you mean [{s}]?"))
                .unwrap_or_default();
            if body.is_table() {
                bail!(
                    "unknown section [{section}] in {}{hint} (sections: [master], [worker], [dev], [client])",
                    path.display()
                );
            }
            bail!(
                "unknown key '{section}' at the top of {}: keys go in a section ([master], [worker], [dev] or [client])",
                path.display()
            );
        }
        let Some(body) = body.as_table() else {
            bail!(
                "'{section}' in {} must be a section ([{section}]), not a value",
                path.display()
            );
        };
        let known: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.section == section)
            .map(|k| k.name)
            .collect();
        for name in body.keys() {
            if !known.contains(&name.as_str()) {
                let hint = suggest(name, known.iter().copied())
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_default();
                bail!(
                    "unknown key '{name}' in [{section}] of {}{hint} (keys: {})",
                    path.display(),
                    known.join(", ")
                );
            }
        }
    }
    Ok(table)
}

/// The known word closest to `word`, if it is a likely typo.
fn suggest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- value parsers: a TOML value (env values arrive as strings) ----

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn string_value(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", kind(other))),
    }
}

fn name_value(v: &toml::Value) -> Result<String, String> {
    let s = string_value(v)?;
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s)
}

fn url_value(v: &toml::Value) -> Result<String, String> {
    let s = string_value(v)?;
    if s.trim().is_empty() {
        return Err("must not be empty (e.g. http://127.0.0.1:7700)".into());
    }
    Ok(crate::client::normalize_url(&s))
}

fn store_value(v: &toml::Value) -> Result<berth_store::StoreConfig, String> {
    string_value(v)?.parse()
}

fn path_value(v: &toml::Value) -> Result<PathBuf, String> {
    let s = string_value(v)?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(s))
}

fn addr_value(v: &toml::Value) -> Result<SocketAddr, String> {
    match v {
        toml::Value::String(s) => parse_addr(s),
        other => Err(format!(
            "expected an address string like \"127.0.0.1:7700\", found {}",
            kind(other)
        )),
    }
}

fn http_value(v: &toml::Value) -> Result<Option<SocketAddr>, String> {
    match v {
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::String(s) if matches!(s.as_str(), "off" | "none" | "") => Ok(None),
        toml::Value::String(s) => parse_addr(s).map(Some),
        other => Err(format!(
            "expected an address string like \"127.0.0.1:7701\" or \"off\", found {}",
            kind(other)
        )),
    }
}

fn duration_value(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::String(s) => parse_duration(s),
        toml::Value::Integer(n) => parse_duration(&n.to_string()),
        other => Err(format!(
            "expected a duration like \"5s\" or \"500ms\", found {}",
            kind(other)
        )),
    }
}

fn bool_value(v: &toml::Value) -> Result<bool, String> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(format!("'{s}' is not true or false")),
        },
        other => Err(format!("expected true or false, found {}", kind(other))),
    }
}

/// Numbers and strings both, as text for core's unit parsers.
fn number_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a number or a string, found {}",
            kind(other)
        )),
    }
}

fn cores_value(v: &toml::Value) -> Result<u64, String> {
    parse_cores("cpus", &number_text(v)?).map_err(|e| e.message)
}

fn memory_value(v: &toml::Value) -> Result<u64, String> {
    parse_size("memory", &number_text(v)?, GIB, MAX_MEMORY_BYTES).map_err(|e| e.message)
}

fn storage_value(v: &toml::Value) -> Result<u64, String> {
    parse_size("storage", &number_text(v)?, GIB, MAX_STORAGE_BYTES).map_err(|e| e.message)
}

fn output_size_value(v: &toml::Value) -> Result<u64, String> {
    parse_size("max_output", &number_text(v)?, GIB, MAX_STORAGE_BYTES).map_err(|e| e.message)
}

fn log_format_value(v: &toml::Value) -> Result<LogFormat, String> {
    crate::logging::parse_log_format(&string_value(v)?)
}

fn strategy_value(v: &toml::Value) -> Result<berth_core::Strategy, String> {
    crate::args::parse_strategy(&string_value(v)?)
}

/// One `key=value` label, checked as core checks worker labels.
fn label(text: &str) -> Result<(String, String), String> {
    let l = berth_core::validate::parse_label("label", text).map_err(|e| e.message)?;
    berth_core::validate::validate_labels("label", std::slice::from_ref(&l))
        .map_err(|e| e.message)?;
    Ok(l)
}

/// Labels from the file (an array of `"k=v"` strings; one string is read
/// as a comma-separated list, which is how the environment gives them).
fn labels_value(v: &toml::Value) -> Result<Vec<(String, String)>, String> {
    let list: Vec<(String, String)> = match v {
        toml::Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(label)
            .collect::<Result<_, _>>()?,
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(t) => label(t),
                other => Err(format!(
                    "expected strings like \"gpu=a100\", found {}",
                    kind(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        other => Err(format!(
            "expected an array of \"key=value\" strings, found {}",
            kind(other)
        ))?,
    };
    berth_core::validate::validate_labels("label", &list).map_err(|e| e.message)?;
    Ok(list)
}

/// `--label` given any number of times: `None` when never.
fn labels_flag(flags: &[String]) -> anyhow::Result<Option<Vec<(String, String)>>> {
    if flags.is_empty() {
        return Ok(None);
    }
    let list = flags
        .iter()
        .map(|t| label(t).map_err(|m| anyhow!("--label: {m}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    berth_core::validate::validate_labels("label", &list)
        .map_err(|e| anyhow!("--label: {}", e.message))?;
    Ok(Some(list))
}

fn gpus_value(v: &toml::Value) -> Result<u32, String> {
    parse_gpus("gpus", &number_text(v)?).map_err(|e| e.message)
}

fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Data directories are made absolute once, here: the master and worker
/// hand them to child processes that may run elsewhere.
fn absolute_setting(s: Setting<PathBuf>) -> anyhow::Result<Setting<PathBuf>> {
    let value = std::path::absolute(&s.value)
        .map_err(|e| anyhow!("data_dir: cannot resolve {} ({e})", s.value.display()))?;
    Ok(Setting {
        value,
        origin: s.origin,
    })
}

// ---- the effective settings ----

/// Which master a client calls and its token.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub master: Setting<String>,
    pub token: Setting<String>,
}

/// Heartbeats and the reconciler (master and dev).
#[derive(Debug, Clone)]
pub struct Tuning {
    pub heartbeat_interval: Setting<Duration>,
    pub heartbeat_ttl: Setting<Duration>,
    pub reconcile_interval: Setting<Duration>,
}

impl Tuning {
    /// Checks across keys; errors name the key.
    fn validate(&self) -> anyhow::Result<()> {
        let (i, t) = (self.heartbeat_interval.value, self.heartbeat_ttl.value);
        if t <= i {
            bail!(
                "heartbeat_ttl: must be longer than heartbeat_interval ({} ≤ {})",
                format_duration(t),
                format_duration(i)
            );
        }
        Ok(())
    }

    fn apply(&self, c: &mut MasterConfig) {
        c.heartbeat_interval = self.heartbeat_interval.value;
        c.heartbeat_ttl = self.heartbeat_ttl.value;
        c.reconcile_interval = self.reconcile_interval.value;
    }

    fn print(&self, out: &mut String) {
        line(out, "heartbeat_interval", &dur(&self.heartbeat_interval));
        line(out, "heartbeat_ttl", &dur(&self.heartbeat_ttl));
        line(out, "reconcile_interval", &dur(&self.reconcile_interval));
    }
}

/// How the master places tasks (master and dev).
#[derive(Debug, Clone)]
pub struct Scheduling {
    pub strategy: Setting<berth_core::Strategy>,
    pub starvation_wait: Setting<Duration>,
    pub require_registration: Setting<bool>,
}

impl Scheduling {
    fn apply(&self, c: &mut MasterConfig) {
        c.strategy = self.strategy.value;
        c.starvation_wait = self.starvation_wait.value;
        c.require_registration = self.require_registration.value;
    }

    fn print(&self, out: &mut String) {
        line(
            out,
            "strategy",
            &(
                quoted(self.strategy.value.as_str()),
                self.strategy.origin.clone(),
            ),
        );
        line(out, "starvation_wait", &dur(&self.starvation_wait));
        line(
            out,
            "require_registration",
            &(
                self.require_registration.value.to_string(),
                self.require_registration.origin.clone(),
            ),
        );
    }
}

#[derive(Debug, Clone)]
pub struct MasterSettings {
    pub listen: Setting<SocketAddr>,
    pub http: Setting<Option<SocketAddr>>,
    pub data_dir: Setting<PathBuf>,
    pub store: Setting<berth_store::StoreConfig>,
    pub tuning: Tuning,
    pub scheduling: Scheduling,
    pub log_format: Setting<LogFormat>,
}

impl MasterSettings {
    fn validate(&self) -> anyhow::Result<()> {
        self.config().validate()?;
        Ok(())
    }

    pub fn config(&self) -> MasterConfig {
        let mut c = MasterConfig::new(self.listen.value, self.data_dir.value.clone());
        c.http = self.http.value;
        c.store = self.store.value.clone();
        self.tuning.apply(&mut c);
        self.scheduling.apply(&mut c);
        c
    }

    /// `berth master --print-config`.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("master", file);
        out.push_str("[master]\n");
        line(&mut out, "listen", &addr(&self.listen));
        line(&mut out, "http", &http(&self.http));
        line(&mut out, "data_dir", &path(&self.data_dir));
        // Shown without its password.
        line(
            &mut out,
            "store",
            &(
                quoted(&self.store.value.to_string()),
                self.store.origin.clone(),
            ),
        );
        self.tuning.print(&mut out);
        self.scheduling.print(&mut out);
        line(&mut out, "log_format", &log_format(&self.log_format));
        out
    }
}

/// A worker's name, resources and stop grace (worker and dev).
#[derive(Debug, Clone)]
pub struct Shape {
    pub name: Setting<String>,
    pub cpus: Option<Setting<u64>>,
    pub memory: Option<Setting<u64>>,
    pub storage: Option<Setting<u64>>,
    pub gpus: Option<Setting<u32>>,
    pub stop_grace: Setting<Duration>,
    pub max_output: Setting<u64>,
    pub labels: Setting<Vec<(String, String)>>,
}

impl Shape {
    fn apply(&self, c: &mut WorkerConfig) {
        c.name = self.name.value.clone();
        c.cpu_millis = self.cpus.as_ref().map(|s| s.value);
        c.memory_bytes = self.memory.as_ref().map(|s| s.value);
        c.storage_bytes = self.storage.as_ref().map(|s| s.value);
        c.gpus = self.gpus.as_ref().map(|s| s.value);
        c.stop_grace = self.stop_grace.value;
        c.max_output = self.max_output.value;
        c.labels = self.labels.value.clone();
    }

    fn print(&self, out: &mut String) {
        line(out, "name", &string(&self.name));
        opt_line(
            out,
            "cpus",
            self.cpus
                .as_ref()
                .map(|s| (format_cores_exact(s.value), &s.origin)),
        );
        opt_line(
            out,
            "memory",
            self.memory
                .as_ref()
                .map(|s| (format_size(s.value), &s.origin)),
        );
        opt_line(
            out,
            "storage",
            self.storage
                .as_ref()
                .map(|s| (format_size(s.value), &s.origin)),
        );
        match &self.gpus {
            Some(s) => line(out, "gpus", &(s.value.to_string(), s.origin.clone())),
            None => out.push_str("# gpus: detected at start\n"),
        }
        line(out, "stop_grace", &dur(&self.stop_grace));
        line(
            out,
            "max_output",
            &(
                quoted(&format_size(self.max_output.value)),
                self.max_output.origin.clone(),
            ),
        );
        let labels: Vec<toml::Value> = self
            .labels
            .value
            .iter()
            .map(|(k, v)| toml::Value::String(format!("{k}={v}")))
            .collect();
        line(
            out,
            "labels",
            &(
                toml::Value::Array(labels).to_string(),
                self.labels.origin.clone(),
            ),
        );
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub client: ClientSettings,
    pub shape: Shape,
    pub data_dir: Setting<PathBuf>,
    pub drain_on_exit: Setting<bool>,
    pub log_format: Setting<LogFormat>,
}

impl WorkerSettings {
    pub fn config(&self) -> WorkerConfig {
        let mut c = WorkerConfig::new(
            self.client.master.value.clone(),
            self.client.token.value.clone(),
            self.shape.name.value.clone(),
            self.data_dir.value.clone(),
        );
        self.shape.apply(&mut c);
        c.drain_on_exit = self.drain_on_exit.value;
        c
    }

    /// `berth worker --print-config`. The token is never printed.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("worker", file);
        out.push_str("[client]\n");
        line(&mut out, "master", &string(&self.client.master));
        let token = &self.client.token;
        if token.value.is_empty() {
            out.push_str("# token: not set\n");
        } else {
            let _ = writeln!(out, "# token: set, hidden  # {}", token.origin);
        }
        out.push_str("\n[worker]\n");
        line(&mut out, "data_dir", &path(&self.data_dir));
        self.shape.print(&mut out);
        line(
            &mut out,
            "drain_on_exit",
            &(
                self.drain_on_exit.value.to_string(),
                self.drain_on_exit.origin.clone(),
            ),
        );
        line(&mut out, "log_format", &log_format(&self.log_format));
        out
    }
}

#[derive(Debug, Clone)]
pub struct DevSettings {
    pub listen: Setting<SocketAddr>,
    pub http: Setting<Option<SocketAddr>>,
    pub data_dir: Setting<PathBuf>,
    pub tuning: Tuning,
    pub scheduling: Scheduling,
    pub shape: Shape,
    pub log_format: Setting<LogFormat>,
}

impl DevSettings {
    pub fn master_config(&self) -> MasterConfig {
        let mut c = MasterConfig::new(self.listen.value, self.data_dir.value.clone());
        c.http = self.http.value;
        self.tuning.apply(&mut c);
        self.scheduling.apply(&mut c);
        c
    }

    /// The local worker's config; its master and token are filled in once
    /// the master has started.
    pub fn worker_config(&self) -> WorkerConfig {
        let mut c = WorkerConfig::new(
            String::new(),
            String::new(),
            self.shape.name.value.clone(),
            self.data_dir.value.join("worker"),
        );
        self.shape.apply(&mut c);
        c
    }

    /// `berth dev --print-config`.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("dev", file);
        out.push_str("[dev]\n");
        line(&mut out, "listen", &addr(&self.listen));
        line(&mut out, "http", &http(&self.http));
        line(&mut out, "data_dir", &path(&self.data_dir));
        line(&mut out, "log_format", &log_format(&self.log_format));
        out.push_str("\n[master]\n");
        self.tuning.print(&mut out);
        self.scheduling.print(&mut out);
        out.push_str("\n[worker]\n");
        self.shape.print(&mut out);
        out
    }
}

// ---- printing ----

fn header(role: &str, file: Option<&Path>) -> String {
    let file = file.map_or_else(|| "none".to_string(), |p| p.display().to_string());
    format!(
        "# berth {role}: effective configuration\n\
         # layers: flags > BERTH_* environment > config file ({file}) > defaults\n\
         # each value is followed by where it came from\n\n"
    )
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn line(out: &mut String, key: &str, (value, origin): &(String, Origin)) {
    let assignment = format!("{key} = {value}");
    let _ = writeln!(out, "{assignment:<44} # {origin}");
}

fn opt_line(out: &mut String, key: &str, v: Option<(String, &Origin)>) {
    match v {
        Some((text, origin)) => line(out, key, &(quoted(&text), origin.clone())),
        None => {
            let _ = writeln!(out, "# {key}: detected at start");
        }
    }
}

fn string(s: &Setting<String>) -> (String, Origin) {
    (quoted(&s.value), s.origin.clone())
}

fn addr(s: &Setting<SocketAddr>) -> (String, Origin) {
    (quoted(&s.value.to_string()), s.origin.clone())
}

fn http(s: &Setting<Option<SocketAddr>>) -> (String, Origin) {
    let text = s.value.map_or_else(|| "off".to_string(), |a| a.to_string());
    (quoted(&text), s.origin.clone())
}

fn path(s: &Setting<PathBuf>) -> (String, Origin) {
    (quoted(&s.value.display().to_string()), s.origin.clone())
}

fn log_format(s: &Setting<LogFormat>) -> (String, Origin) {
    (quoted(s.value.as_str()), s.origin.clone())
}

fn dur(s: &Setting<Duration>) -> (String, Origin) {
    (quoted(&format_duration(s.value)), s.origin.clone())
}

/// `1s`, `1500ms`: what [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    berth_core::units::format_duration_ms(d.as_millis() as u64)
}

/// The documentation table (`docs/CONFIGURATION.md`) for [`KEYS`]; a test
/// checks the file contains exactly this.
#[cfg(test)]
fn keys_table() -> String {
    let mut out = String::from(
        "| key | environment | flag | default | used by | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {} | {} | {} |",
            k.id(),
            k.env,
            k.flag,
            if matches!(k.default, "detected" | "host name" | "none") {
                k.default.to_string()
            } else {
                format!("`{}`", k.default)
            },
            k.used_by,
            k.meaning
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use berth_core::units::MIB;
    use clap::Parser;

    fn sources(file: Option<&str>, env: &[(&str, &str)]) -> anyhow::Result<Sources> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sources::from_parts(file.map(|t| (Path::new("berth.toml"), t)), env)
    }

    fn master_args(flags: &[&str]) -> MasterArgs {
        let cli = Cli::try_parse_from(["berth", "master"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Master(a) => a,
            _ => unreachable!(),
        }
    }

    fn worker_args(flags: &[&str]) -> WorkerArgs {
        let cli = Cli::try_parse_from(["berth", "worker"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Worker(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_without_any_layer() {
        let s = sources(None, &[])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap();
        assert_eq!(s.listen.value, default_addr(7700));
        assert_eq!(s.listen.origin, Origin::Default);
        assert_eq!(s.http.value, Some(default_addr(7701)));
        assert!(s.data_dir.value.is_absolute());
        assert!(s.data_dir.value.ends_with("berth-data"));
        assert_eq!(s.tuning.heartbeat_ttl.value, Duration::from_secs(5));
    }

    #[test]
    fn log_format_is_layered_for_each_role() {
        let file = "[master]\nlog_format = \"json\"\n[worker]\nlog_format = \"text\"\n";
        let src = sources(Some(file), &[]).unwrap();
        let m = src.master(&master_args(&[])).unwrap();
        assert_eq!(
            (m.log_format.value, &m.log_format.origin),
            (LogFormat::Json, &Origin::File)
        );
        assert!(m.to_toml(None).contains("log_format = \"json\""));
        let w = src.worker(&worker_args(&[]), None, None).unwrap();
        assert_eq!(w.log_format.value, LogFormat::Text);
        let src = sources(Some(file), &[("BERTH_LOG_FORMAT", "text")]).unwrap();
        let m = src.master(&master_args(&[])).unwrap();
        assert_eq!(
            (m.log_format.value, &m.log_format.origin),
            (LogFormat::Text, &Origin::Env("BERTH_LOG_FORMAT"))
        );
        let m = src.master(&master_args(&["--log-format", "json"])).unwrap();
        assert_eq!(m.log_format.value, LogFormat::Json);
        let e = sources(None, &[("BERTH_LOG_FORMAT", "xml")])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "log_format: 'xml' is not a log format (text or json) (from BERTH_LOG_FORMAT)"
        );
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = "[master]\nheartbeat_ttl = \"7s\"\nheartbeat_interval = \"2s\"\nreconcile_interval = 30\n";
        let src = sources(
            Some(file),
            &[
                ("BERTH_MASTER_HEARTBEAT_TTL", "8s"),
                ("BERTH_MASTER_HEARTBEAT_INTERVAL", "3s"),
            ],
        )
        .unwrap();
        let s = src
            .master(&master_args(&["--heartbeat-ttl", "9s"]))
            .unwrap();
        assert_eq!(s.tuning.heartbeat_ttl.value, Duration::from_secs(9));
        assert_eq!(
            s.tuning.heartbeat_ttl.origin,
            Origin::Flag("--heartbeat-ttl")
        );
        assert_eq!(s.tuning.heartbeat_interval.value, Duration::from_secs(3));
        assert_eq!(
            s.tuning.heartbeat_interval.origin,
            Origin::Env("BERTH_MASTER_HEARTBEAT_INTERVAL")
        );
        assert_eq!(s.tuning.reconcile_interval.value, Duration::from_secs(30));
        assert_eq!(s.tuning.reconcile_interval.origin, Origin::File);
        assert_eq!(s.listen.origin, Origin::Default);
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_by_name() {
        let e = sources(Some("[master]\nlistn = \"0.0.0.0:1\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown key 'listn' in [master]"), "{e}");
        assert!(e.contains("did you mean 'listen'?"), "{e}");
        let e = sources(Some("[mastr]\nlisten = \"0.0.0.0:1\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown section [mastr]"), "{e}");
        assert!(e.contains("did you mean [master]?"), "{e}");
        let e = sources(Some("listen = \"0.0.0.0:1\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown key 'listen' at the top"), "{e}");
        let e = sources(Some("[master\n"), &[]).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key_and_the_layer() {
        let src = sources(Some("[master]\nheartbeat_ttl = \"soon\"\n"), &[]).unwrap();
        let e = src.master(&master_args(&[])).unwrap_err().to_string();
        assert!(
            e.starts_with("heartbeat_ttl: 'soon' is not a duration"),
            "{e}"
        );
        assert!(e.contains("in [master] of berth.toml"), "{e}");

        let src = sources(Some("[master]\nlisten = 7700\n"), &[]).unwrap();
        let e = src.master(&master_args(&[])).unwrap_err().to_string();
        assert!(e.starts_with("listen: expected an address string"), "{e}");

        let src = sources(None, &[("BERTH_WORKER_GPUS", "1.5")]).unwrap();
        let e = src
            .worker(&worker_args(&[]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gpus: "), "{e}");
        assert!(e.ends_with("(from BERTH_WORKER_GPUS)"), "{e}");

        let src = sources(None, &[("BERTH_WORKER_DRAIN_ON_EXIT", "maybe")]).unwrap();
        let e = src
            .worker(&worker_args(&[]), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("drain_on_exit: 'maybe' is not true or false"),
            "{e}"
        );
    }

    #[test]
    fn ttl_must_exceed_the_interval() {
        let src = sources(Some("[master]\nheartbeat_ttl = \"1s\"\n"), &[]).unwrap();
        let e = src.master(&master_args(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "heartbeat_ttl: must be longer than heartbeat_interval (1s ≤ 1s)"
        );
    }

    #[test]
    fn worker_layers_and_units() {
        let file = "[worker]\ncpus = 2.5\nmemory = 8\nstorage = \"1536M\"\ngpus = 1\n\
                    drain_on_exit = true\nname = \"Tessa\"\n[client]\nmaster = \"m:1\"\ntoken = \"t\"\n";
        let src = sources(Some(file), &[("BERTH_WORKER_CPUS", "3")]).unwrap();
        let w = src
            .worker(&worker_args(&["--gpus", "2"]), None, None)
            .unwrap();
        let c = w.config();
        assert_eq!(c.cpu_millis, Some(3000));
        assert_eq!(c.memory_bytes, Some(8 * GIB));
        assert_eq!(c.storage_bytes, Some(1536 * MIB));
        assert_eq!(c.gpus, Some(2));
        assert!(c.drain_on_exit);
        assert_eq!(c.name, "Tessa");
        assert_eq!(c.master, "http://m:1");
        assert_eq!(c.token, "t");
        let text = w.to_toml(Some(Path::new("berth.toml")));
        assert!(text.contains("cpus = \"3\""), "{text}");
        assert!(text.contains("storage = \"1536M\""), "{text}");
        assert!(text.contains("memory = \"8G\""), "{text}");
        assert!(
            !text.contains("= \"t\""),
            "the token is never printed: {text}"
        );
        assert!(
            text.contains("# token: set, hidden  # config file"),
            "{text}"
        );
        // A flag beats the file for the client keys too.
        let w = src
            .worker(&worker_args(&[]), Some("http://other:2"), Some("u"))
            .unwrap();
        assert_eq!(w.client.master.value, "http://other:2");
        assert_eq!(w.client.token.origin, Origin::Flag("--token"));
    }

    #[test]
    fn scheduling_keys_layer_like_the_others() {
        let src = sources(
            Some("[master]\nstrategy = \"spread\"\nstarvation_wait = 30\n"),
            &[("BERTH_MASTER_REQUIRE_REGISTRATION", "yes")],
        )
        .unwrap();
        let s = src.master(&master_args(&[])).unwrap();
        let c = s.config();
        assert_eq!(c.strategy, berth_core::Strategy::Spread);
        assert_eq!(c.starvation_wait, Duration::from_secs(30));
        assert!(c.require_registration);
        assert_eq!(
            s.scheduling.require_registration.origin,
            Origin::Env("BERTH_MASTER_REQUIRE_REGISTRATION")
        );
        let s = src
            .master(&master_args(&[
                "--strategy",
                "binpack",
                "--starvation-wait",
                "5s",
            ]))
            .unwrap();
        assert_eq!(s.config().strategy, berth_core::Strategy::Binpack);
        assert_eq!(s.scheduling.strategy.origin, Origin::Flag("--strategy"));
        assert_eq!(s.config().starvation_wait, Duration::from_secs(5));
        let printed = s.to_toml(None);
        assert!(printed.contains("strategy = \"binpack\""), "{printed}");
        assert!(printed.contains("require_registration = true"), "{printed}");

        let e = sources(Some("[master]\nstrategy = \"random\"\n"), &[])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("strategy: 'random' is not a strategy"), "{e}");
        assert!(e.ends_with("(in [master] of berth.toml)"), "{e}");
    }

    #[test]
    fn worker_labels_from_flags_env_and_file() {
        let src = sources(Some("[worker]\nlabels = [\"gpu=a100\", \"zone=b\"]\n"), &[]).unwrap();
        let w = src.worker(&worker_args(&[]), None, None).unwrap();
        assert_eq!(
            w.config().labels,
            vec![("gpu".into(), "a100".into()), ("zone".into(), "b".into())]
        );
        let printed = w.to_toml(None);
        assert!(
            printed.contains("labels = [\"gpu=a100\", \"zone=b\"]"),
            "{printed}"
        );
        let again = sources(Some(&printed), &[]).unwrap();
        assert_eq!(
            again
                .worker(&worker_args(&[]), None, None)
                .unwrap()
                .config()
                .labels,
            w.config().labels
        );

        let src = sources(None, &[("BERTH_WORKER_LABELS", "gpu=h100, rack=7")]).unwrap();
        let w = src.worker(&worker_args(&[]), None, None).unwrap();
        assert_eq!(
            w.config().labels,
            vec![("gpu".into(), "h100".into()), ("rack".into(), "7".into())]
        );
        let w = src
            .worker(&worker_args(&["--label", "ssd=yes"]), None, None)
            .unwrap();
        assert_eq!(w.config().labels, vec![("ssd".into(), "yes".into())]);
        assert_eq!(w.shape.labels.origin, Origin::Flag("--label"));

        let e = src
            .worker(&worker_args(&["--label", "nolabel"]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--label: 'nolabel' is not key=value"), "{e}");
        let e = sources(None, &[("BERTH_WORKER_LABELS", "a b=c")])
            .unwrap()
            .worker(&worker_args(&[]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("labels: 'a b' is not a valid key"), "{e}");
        assert!(e.ends_with("(from BERTH_WORKER_LABELS)"), "{e}");
        let e = sources(Some("[worker]\nlabels = [1]\n"), &[])
            .unwrap()
            .worker(&worker_args(&[]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("labels: expected strings"), "{e}");
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let file =
            "[master]\nlisten = \"127.0.0.1:9\"\nhttp = \"off\"\nheartbeat_interval = \"250ms\"\n";
        let s = sources(Some(file), &[])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap();
        let printed = s.to_toml(None);
        let again = sources(Some(&printed), &[])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap();
        assert_eq!(format!("{:?}", again.config()), format!("{:?}", s.config()));
        assert!(printed.contains("http = \"off\""), "{printed}");
        assert!(
            printed.contains("heartbeat_interval = \"250ms\""),
            "{printed}"
        );
    }

    #[test]
    fn formats_read_back() {
        for ms in [1, 250, 1000, 1500, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_cores_exact(2500), "2.5");
        assert_eq!(format_cores_exact(125), "0.125");
        assert_eq!(format_cores_exact(4000), "4");
        assert_eq!(format_size(8 * GIB), "8G");
        assert_eq!(format_size(512 * MIB), "512M");
    }

    #[test]
    fn documentation_lists_every_key() {
        let doc = include_str!("../../../docs/CONFIGURATION.md");
        let table = keys_table();
        assert!(
            doc.contains(&table),
            "docs/CONFIGURATION.md must contain the key table exactly as config::keys_table() \
             prints it:\n{table}"
        );
    }

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(
            suggest("listn", ["listen", "http"].into_iter()),
            Some("listen")
        );
        assert_eq!(suggest("zzz", ["listen", "http"].into_iter()), None);
    }
}
