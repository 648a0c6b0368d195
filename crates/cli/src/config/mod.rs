//! Settings for `berth master`, `berth worker`, `berth dev` and the client
//! commands, layered: **flags > `BERTH_*` environment > config file >
//! defaults**. The config file is TOML (`--config FILE`, or the
//! `BERTH_CONFIG` variable; none by default) with the sections `[master]`,
//! `[worker]`, `[dev]` and `[client]`.
//!
//! Each section is a serde struct (`keys`: `MasterConfig`, `WorkerConfig`
//! with the log format, `DevConfig`, `ClientConfig`) whose `Default` holds
//! the defaults; every key is one row of [`keys::KEYS`]. One merge,
//! [`Sources::section`], fills a section for a role: for each key the role
//! reads, the value of the highest layer (flag, variable, file) is checked
//! alone with the key's codec (an error names the key and where the value
//! came from), then the struct is read from them, the rest defaulted, and
//! where each value came from is kept ([`Resolved`]). `--print-config` and
//! the documentation's table are written from the same structs and rows;
//! the rules across keys are the structs' own `validate`.
//!
//! No I/O besides reading the config file and the environment once, in
//! [`Sources::load`].

pub mod flags;
pub mod keys;

use anyhow::{Context, anyhow, bail};
use berth_master::MasterConfig;
use berth_store::StoreConfig;
use berth_worker::WorkerConfig;
use flags::SettingFlags;
use keys::{ClientConfig, DevConfig, KEYS, Key, MasterSection, Role, Section, WorkerSection};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::logging::LogFormat;

/// The variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "BERTH_CONFIG";

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This variable.
    Env(&'static str),
    /// This flag.
    Flag(&'static str),
}

impl Origin {
    /// An error about `k`'s value from here: names the key and the layer.
    fn blame(&self, k: &Key, message: &str) -> anyhow::Error {
        match self {
            Origin::Default => anyhow!("{}: {message}", k.name),
            Origin::File(path) => anyhow!(
                "{}: {message} (in [{}] of {})",
                k.name,
                k.section.name(),
                path.display()
            ),
            Origin::Env(var) => anyhow!("{}: {message} (from {var})", k.name),
            Origin::Flag(flag) => anyhow!("{flag}: {message}"),
        }
    }
}

/// As `--print-config` shows it.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(_) => write!(f, "config file"),
            Origin::Env(v) => write!(f, "{v}"),
            Origin::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// A section's effective values and where each came from (a key not in
/// `origins` has its default).
#[derive(Debug, Clone)]
pub struct Resolved<T> {
    pub value: T,
    pub origins: BTreeMap<&'static str, Origin>,
}

impl<T> Resolved<T> {
    pub fn origin(&self, name: &str) -> Origin {
        self.origins.get(name).cloned().unwrap_or(Origin::Default)
    }
}

impl<T: Serialize> Resolved<T> {
    /// `[section]` and the keys `role` reads, each with its origin; a
    /// secret is never printed.
    fn print(&self, section: Section, role: Role, out: &mut String) {
        let values = toml::Table::try_from(&self.value).expect("settings serialise");
        let _ = writeln!(out, "[{}]", section.name());
        for k in keys::used(section, role) {
            let origin = self.origin(k.name);
            let value = values.get(k.name);
            if k.secret {
                match value {
                    Some(toml::Value::String(s)) if !s.is_empty() => {
                        let _ = writeln!(out, "# {}: set, hidden  # {origin}", k.name);
                    }
                    _ => {
                        let _ = writeln!(out, "# {}: not set", k.name);
                    }
                }
                continue;
            }
            match value {
                Some(v) => {
                    let assignment = format!("{} = {v}", k.name);
                    let _ = writeln!(out, "{assignment:<44} # {origin}");
                }
                None => {
                    let _ = writeln!(out, "# {}: detected at start", k.name);
                }
            }
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

    /// `k`'s value from the highest layer that has one.
    fn given<F>(&self, k: &'static Key, flags: &SettingFlags<F>) -> Option<(toml::Value, Origin)> {
        if let Some((_, v)) = flags.values.iter().find(|(f, _)| f.section == k.section && f.name == k.name) {
            return Some((v.clone(), Origin::Flag(k.flag)));
        }
        if let Some(text) = self.env.get(k.env) {
            return Some((toml::Value::String(text.clone()), Origin::Env(k.env)));
        }
        let (path, table) = self.file.as_ref()?;
        let v = table.get(k.section.name())?.as_table()?.get(k.name)?;
        Some((v.clone(), Origin::File(path.clone())))
    }

    /// The one merge: `section` as `role` reads it.
    pub fn section<T: DeserializeOwned, F>(
        &self,
        section: Section,
        role: Role,
        flags: &SettingFlags<F>,
    ) -> anyhow::Result<Resolved<T>> {
        let mut table = toml::Table::new();
        let mut origins = BTreeMap::new();
        for k in keys::used(section, role) {
            let Some((value, origin)) = self.given(k, flags) else {
                continue;
            };
            section
                .check(k.name, &value)
                .map_err(|m| origin.blame(k, &m))?;
            table.insert(k.name.to_string(), value);
            origins.insert(k.name, origin);
        }
        let value = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("[{}]: {}", section.name(), e.message()))?;
        Ok(Resolved { value, origins })
    }

    /// The client settings: which master to call, with which token.
    pub fn client(
        &self,
        flags: &SettingFlags<flags::ClientFlags>,
    ) -> anyhow::Result<Resolved<ClientConfig>> {
        self.section(Section::Client, Role::Client, flags)
    }

    /// `berth master`'s settings.
    pub fn master(&self, a: &crate::args::MasterArgs) -> anyhow::Result<MasterSettings> {
        let mut master: Resolved<MasterSection> =
            self.section(Section::Master, Role::Master, &a.settings)?;
        absolute(&mut master.value.config.data_dir)?;
        let s = MasterSettings { master };
        s.node().master.validate().map_err(anyhow::Error::msg)?;
        Ok(s)
    }

    /// `berth worker`'s settings (its master and token included).
    pub fn worker(
        &self,
        a: &crate::args::WorkerArgs,
        client: &SettingFlags<flags::ClientFlags>,
    ) -> anyhow::Result<WorkerSettings> {
        let client = self.section(Section::Client, Role::Worker, client)?;
        let mut worker: Resolved<WorkerSection> =
            self.section(Section::Worker, Role::Worker, &a.settings)?;
        absolute(&mut worker.value.config.data_dir)?;
        let s = WorkerSettings { client, worker };
        s.config().validate().map_err(anyhow::Error::msg)?;
        Ok(s)
    }

    /// `berth dev`'s settings: `[dev]`, and what it reads of `[master]`
    /// and `[worker]`.
    pub fn dev(&self, a: &crate::args::DevArgs) -> anyhow::Result<DevSettings> {
        let mut dev: Resolved<DevConfig> = self.section(Section::Dev, Role::Dev, &a.settings)?;
        absolute(&mut dev.value.data_dir)?;
        let s = DevSettings {
            dev,
            master: self.section(Section::Master, Role::Dev, &a.settings)?,
            worker: self.section(Section::Worker, Role::Dev, &a.settings)?,
        };
        s.node().master.validate().map_err(anyhow::Error::msg)?;
        Ok(s)
    }
}

/// Data directories are made absolute once, here: the master and worker
/// hand them to child processes that may run elsewhere.
fn absolute(path: &mut PathBuf) -> anyhow::Result<()> {
    *path = std::path::absolute(&*path)
        .map_err(|e| anyhow!("data_dir: cannot resolve {} ({e})", path.display()))?;
    Ok(())
}

/// Parse a config file and refuse unknown sections and keys, naming them.
fn parse_file(path: &Path, text: &str) -> anyhow::Result<toml::Table> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("the config file {} is not valid TOML: {e}", path.display()))?;
    for (section, body) in &table {
        let Some(known_section) = Section::ALL.into_iter().find(|s| s.name() == section) else {
            let hint = suggest(section, Section::ALL.iter().map(|s| s.name()))
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
        };
        let Some(body) = body.as_table() else {
            bail!(
                "'{section}' in {} must be a section ([{section}]), not a value",
                path.display()
            );
        };
        let known: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.section == known_section)
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


// ---- the effective settings of each role ----

/// What `serve::node` starts: a master, and for `berth dev` a worker
/// beside it (its master and token are filled in once the master runs).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub master: MasterConfig,
    pub log_format: LogFormat,
    pub local_worker: Option<WorkerConfig>,
}

#[derive(Debug, Clone)]
pub struct MasterSettings {
    pub master: Resolved<MasterSection>,
}

impl MasterSettings {
    pub fn node(&self) -> Node {
        Node {
            master: self.master.value.config.clone(),
            log_format: self.master.value.log_format,
            local_worker: None,
        }
    }

    /// `berth master --print-config`.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("master", file);
        self.master.print(Section::Master, Role::Master, &mut out);
        out
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub client: Resolved<ClientConfig>,
    pub worker: Resolved<WorkerSection>,
}

impl WorkerSettings {
    pub fn config(&self) -> WorkerConfig {
        let client = &self.client.value;
        WorkerConfig {
            master: client.master.clone(),
            token: client.token.clone(),
            ..self.worker.value.config.clone()
        }
    }

    pub fn log_format(&self) -> LogFormat {
        self.worker.value.log_format
    }

    /// `berth worker --print-config`. The token is never printed.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("worker", file);
        self.client.print(Section::Client, Role::Worker, &mut out);
        out.push('\n');
        self.worker.print(Section::Worker, Role::Worker, &mut out);
        out
    }
}

/// `berth dev`: a master whose `[master]` settings are the master's, on
/// the addresses and data directory of `[dev]` (always on SQLite), and a
/// worker beside it.
#[derive(Debug, Clone)]
pub struct DevSettings {
    pub dev: Resolved<DevConfig>,
    pub master: Resolved<MasterSection>,
    pub worker: Resolved<WorkerSection>,
}

impl DevSettings {
    pub fn node(&self) -> Node {
        let dev = &self.dev.value;
        Node {
            master: MasterConfig {
                listen: dev.listen,
                http: dev.http,
                data_dir: dev.data_dir.clone(),
                store: StoreConfig::Sqlite,
                ..self.master.value.config.clone()
            },
            log_format: dev.log_format,
            local_worker: Some(WorkerConfig {
                data_dir: dev.data_dir.join("worker"),
                ..self.worker.value.config.clone()
            }),
        }
    }

    /// `berth dev --print-config`.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = header("dev", file);
        self.dev.print(Section::Dev, Role::Dev, &mut out);
        out.push('\n');
        self.master.print(Section::Master, Role::Dev, &mut out);
        out.push('\n');
        self.worker.print(Section::Worker, Role::Dev, &mut out);
        out
    }
}

fn header(role: &str, file: Option<&Path>) -> String {
    let file = file.map_or_else(|| "none".to_string(), |p| p.display().to_string());
    format!(
        "# berth {role}: effective configuration\n\
         # layers: flags > BERTH_* environment > config file ({file}) > defaults\n\
         # each value is followed by where it came from\n\n"
    )
}
