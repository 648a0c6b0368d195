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
    fn print(&self, section: Section, role: Role) -> String {
        let mut out = String::new();
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
        out
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
        if let Some((_, v)) = flags
            .values
            .iter()
            .find(|(f, _)| f.section == k.section && f.name == k.name)
        {
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
        effective(
            "master",
            file,
            &[self.master.print(Section::Master, Role::Master)],
        )
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
        effective(
            "worker",
            file,
            &[
                self.client.print(Section::Client, Role::Worker),
                self.worker.print(Section::Worker, Role::Worker),
            ],
        )
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
        effective(
            "dev",
            file,
            &[
                self.dev.print(Section::Dev, Role::Dev),
                self.master.print(Section::Master, Role::Dev),
                self.worker.print(Section::Worker, Role::Dev),
            ],
        )
    }
}

/// `--print-config`: a header, then the role's sections.
fn effective(role: &str, file: Option<&Path>, sections: &[String]) -> String {
    let file = file.map_or_else(|| "none".to_string(), |p| p.display().to_string());
    format!(
        "# berth {role}: effective configuration\n\
         # layers: flags > BERTH_* environment > config file ({file}) > defaults\n\
         # each value is followed by where it came from\n\n{}",
        sections.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, DevArgs, MasterArgs, WorkerArgs};
    use berth_core::units::{GIB, MIB};
    use clap::Parser;
    use std::time::Duration;

    fn sources(file: Option<&str>, env: &[(&str, &str)]) -> anyhow::Result<Sources> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sources::from_parts(file.map(|t| (Path::new("berth.toml"), t)), env)
    }

    fn cli(role: &str, flags: &[&str]) -> Cli {
        Cli::try_parse_from(["berth", role].iter().chain(flags)).unwrap()
    }

    fn master_args(flags: &[&str]) -> MasterArgs {
        match cli("master", flags).command {
            Command::Master(a) => a,
            _ => unreachable!(),
        }
    }

    fn dev_args(flags: &[&str]) -> DevArgs {
        match cli("dev", flags).command {
            Command::Dev(a) => a,
            _ => unreachable!(),
        }
    }

    fn worker(src: &Sources, flags: &[&str]) -> anyhow::Result<WorkerSettings> {
        let c = cli("worker", flags);
        let Command::Worker(a) = &c.command else {
            unreachable!()
        };
        src.worker(a, &c.client)
    }

    fn worker_args(flags: &[&str]) -> (WorkerArgs, SettingFlags<flags::ClientFlags>) {
        let c = cli("worker", flags);
        match c.command {
            Command::Worker(a) => (a, c.client),
            _ => unreachable!(),
        }
    }

    fn from_file() -> Origin {
        Origin::File(PathBuf::from("berth.toml"))
    }

    #[test]
    fn every_key_has_a_default_an_env_var_a_flag_and_a_doc_row() {
        let doc = include_str!("../../../../docs/CONFIGURATION.md");
        for k in KEYS {
            assert!(k.env.starts_with("BERTH_"), "{}", k.id());
            assert!(k.flag.starts_with("--"), "{}", k.id());
            assert!(!k.roles.is_empty(), "{}", k.id());
            assert!(!k.default_text().is_empty(), "{}: no default", k.id());
            assert!(
                doc.contains(&format!("| `{}` | `{}` | `{}` |", k.id(), k.env, k.flag)),
                "{}: no row in docs/CONFIGURATION.md",
                k.id()
            );
        }
    }

    #[test]
    fn every_field_has_a_key_and_every_key_a_field() {
        // Options set, so that every field is written out.
        let worker = WorkerSection {
            config: WorkerConfig {
                cpu_millis: Some(1000),
                memory_bytes: Some(GIB),
                storage_bytes: Some(GIB),
                gpus: Some(1),
                ..WorkerConfig::default()
            },
            ..WorkerSection::default()
        };
        let fields = |t: toml::Table| t.keys().cloned().collect::<Vec<_>>();
        for (section, mut names) in [
            (Section::Master, fields(Section::Master.defaults())),
            (
                Section::Worker,
                fields(toml::Table::try_from(worker).unwrap()),
            ),
            (Section::Dev, fields(Section::Dev.defaults())),
            (Section::Client, fields(Section::Client.defaults())),
        ] {
            let mut keys: Vec<String> = KEYS
                .iter()
                .filter(|k| k.section == section)
                .map(|k| k.name.to_string())
                .collect();
            names.sort();
            keys.sort();
            assert_eq!(names, keys, "[{}]", section.name());
        }
    }

    #[test]
    fn flags_of_a_role_are_unique() {
        for role in [Role::Master, Role::Worker, Role::Dev] {
            let mut flags: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.used_by(role))
                .map(|k| k.flag)
                .collect();
            let n = flags.len();
            flags.sort();
            flags.dedup();
            assert_eq!(flags.len(), n, "{role}");
        }
    }

    #[test]
    fn documentation_lists_every_key() {
        let doc = include_str!("../../../../docs/CONFIGURATION.md");
        let table = keys::keys_table();
        assert!(
            doc.contains(&table),
            "docs/CONFIGURATION.md must contain the key table exactly as \
             config::keys::keys_table() prints it:\n{table}"
        );
    }

    #[test]
    fn defaults_without_any_layer() {
        let s = sources(None, &[])
            .unwrap()
            .master(&master_args(&[]))
            .unwrap();
        let c = s.node().master;
        let d = MasterConfig::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(s.master.origin("listen"), Origin::Default);
        assert_eq!(c.http, d.http);
        assert!(c.data_dir.is_absolute());
        assert!(c.data_dir.ends_with("berth-data"));
        assert_eq!(c.heartbeat_ttl, Duration::from_secs(5));
        assert!(s.master.origins.is_empty());
    }

    #[test]
    fn origins_are_recorded_per_layer() {
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
        let c = s.node().master;
        assert_eq!(c.heartbeat_ttl, Duration::from_secs(9));
        assert_eq!(
            s.master.origin("heartbeat_ttl"),
            Origin::Flag("--heartbeat-ttl")
        );
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(
            s.master.origin("heartbeat_interval"),
            Origin::Env("BERTH_MASTER_HEARTBEAT_INTERVAL")
        );
        assert_eq!(c.reconcile_interval, Duration::from_secs(30));
        assert_eq!(s.master.origin("reconcile_interval"), from_file());
        assert_eq!(s.master.origin("listen"), Origin::Default);
        let printed = s.to_toml(Some(Path::new("berth.toml")));
        assert!(
            printed
                .lines()
                .any(|l| l.starts_with("heartbeat_ttl = \"9s\"")
                    && l.ends_with(" # --heartbeat-ttl")),
            "{printed}"
        );
        assert!(
            printed.contains("# config file\n"),
            "the file's values say so: {printed}"
        );
    }

    #[test]
    fn log_format_is_layered_for_each_role() {
        let file = "[master]\nlog_format = \"json\"\n[worker]\nlog_format = \"text\"\n";
        let src = sources(Some(file), &[]).unwrap();
        let m = src.master(&master_args(&[])).unwrap();
        assert_eq!(m.node().log_format, LogFormat::Json);
        assert_eq!(m.master.origin("log_format"), from_file());
        assert!(m.to_toml(None).contains("log_format = \"json\""));
        let w = worker(&src, &[]).unwrap();
        assert_eq!(w.log_format(), LogFormat::Text);
        let src = sources(Some(file), &[("BERTH_LOG_FORMAT", "text")]).unwrap();
        let m = src.master(&master_args(&[])).unwrap();
        assert_eq!(m.node().log_format, LogFormat::Text);
        assert_eq!(
            m.master.origin("log_format"),
            Origin::Env("BERTH_LOG_FORMAT")
        );
        let m = src.master(&master_args(&["--log-format", "json"])).unwrap();
        assert_eq!(m.node().log_format, LogFormat::Json);
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
    fn unknown_keys_and_sections_are_refused_by_name() {
        let e = sources(Some("[master]\nlistn = \"0.0.0.0:1\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown key 'listn' in [master] of berth.toml; did you mean 'listen'? (keys: listen, \
             http, data_dir, store, heartbeat_interval, heartbeat_ttl, reconcile_interval, \
             strategy, starvation_wait, require_registration, log_format)"
        );
        let e = sources(Some("[mastr]\nlisten = \"0.0.0.0:1\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown section [mastr] in berth.toml; did you mean [master]? (sections: [master], \
             [worker], [dev], [client])"
        );
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
        assert!(e.ends_with("(in [master] of berth.toml)"), "{e}");

        let src = sources(Some("[master]\nlisten = 7700\n"), &[]).unwrap();
        let e = src.master(&master_args(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "listen: expected an address string like \"127.0.0.1:7700\", found an integer \
             (in [master] of berth.toml)"
        );

        let src = sources(None, &[("BERTH_WORKER_GPUS", "1.5")]).unwrap();
        let e = worker(&src, &[]).unwrap_err().to_string();
        assert!(e.starts_with("gpus: 1.5 is fractional"), "{e}");
        assert!(e.ends_with("(from BERTH_WORKER_GPUS)"), "{e}");

        let src = sources(None, &[("BERTH_WORKER_DRAIN_ON_EXIT", "maybe")]).unwrap();
        let e = worker(&src, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "drain_on_exit: 'maybe' is not true or false (from BERTH_WORKER_DRAIN_ON_EXIT)"
        );

        // A bad flag is the argument parser's error, naming the flag.
        let e = Cli::try_parse_from(["berth", "worker", "--label", "nolabel"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'--label <label>'"), "{e}");
        assert!(e.contains("is not key=value"), "{e}");
    }

    #[test]
    fn ttl_must_exceed_the_interval() {
        let src = sources(Some("[master]\nheartbeat_ttl = \"1s\"\n"), &[]).unwrap();
        let e = src.master(&master_args(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "heartbeat_ttl: must be longer than heartbeat_interval (1s ≤ 1s)"
        );
        let e = src.dev(&dev_args(&[])).unwrap_err().to_string();
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
        let w = worker(&src, &["--gpus", "2"]).unwrap();
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
        let w = worker(&src, &["--master", "http://other:2", "--token", "u"]).unwrap();
        assert_eq!(w.config().master, "http://other:2");
        assert_eq!(w.client.origin("token"), Origin::Flag("--token"));
        let (a, client) = worker_args(&["--token", "u"]);
        assert_eq!(src.worker(&a, &client).unwrap().config().token, "u");
    }

    #[test]
    fn scheduling_keys_layer_like_the_others() {
        let src = sources(
            Some("[master]\nstrategy = \"spread\"\nstarvation_wait = 30\n"),
            &[("BERTH_MASTER_REQUIRE_REGISTRATION", "yes")],
        )
        .unwrap();
        let s = src.master(&master_args(&[])).unwrap();
        let c = s.node().master;
        assert_eq!(c.strategy, berth_core::Strategy::Spread);
        assert_eq!(c.starvation_wait, Duration::from_secs(30));
        assert!(c.require_registration);
        assert_eq!(
            s.master.origin("require_registration"),
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
        assert_eq!(s.node().master.strategy, berth_core::Strategy::Binpack);
        assert_eq!(s.master.origin("strategy"), Origin::Flag("--strategy"));
        assert_eq!(s.node().master.starvation_wait, Duration::from_secs(5));
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
        let w = worker(&src, &[]).unwrap();
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
            worker(&again, &[]).unwrap().config().labels,
            w.config().labels
        );

        let src = sources(None, &[("BERTH_WORKER_LABELS", "gpu=h100, rack=7")]).unwrap();
        let w = worker(&src, &[]).unwrap();
        assert_eq!(
            w.config().labels,
            vec![("gpu".into(), "h100".into()), ("rack".into(), "7".into())]
        );
        let w = worker(&src, &["--label", "ssd=yes"]).unwrap();
        assert_eq!(w.config().labels, vec![("ssd".into(), "yes".into())]);
        assert_eq!(w.worker.origin("labels"), Origin::Flag("--label"));

        let e = worker(
            &sources(None, &[("BERTH_WORKER_LABELS", "a b=c")]).unwrap(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("labels: 'a b' is not a valid key"), "{e}");
        assert!(e.ends_with("(from BERTH_WORKER_LABELS)"), "{e}");
        let e = worker(
            &sources(Some("[worker]\nlabels = [1]\n"), &[]).unwrap(),
            &[],
        )
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
        assert_eq!(again.node(), s.node());
        assert!(printed.contains("http = \"off\""), "{printed}");
        assert!(
            printed.contains("heartbeat_interval = \"250ms\""),
            "{printed}"
        );
    }

    #[test]
    fn the_store_is_printed_without_its_password() {
        let src = sources(None, &[("BERTH_STORE", "postgres://berth:pw@db:5432/b")]).unwrap();
        let s = src.master(&master_args(&[])).unwrap();
        let printed = s.to_toml(None);
        assert!(
            printed.contains("store = \"postgres://berth:***@db:5432/b\""),
            "{printed}"
        );
        assert!(!printed.contains("pw"), "{printed}");
        // The config keeps it: the master connects with it.
        assert_ne!(s.node().master.store, StoreConfig::Sqlite);
    }

    #[test]
    fn dev_and_master_build_the_same_master_config_from_the_same_inputs() {
        let file = "[master]\nlisten = \"127.0.0.1:7800\"\nhttp = \"off\"\ndata_dir = \"/tmp/b\"\n\
                    heartbeat_ttl = \"7s\"\nstrategy = \"spread\"\n\
                    [dev]\nlisten = \"127.0.0.1:7800\"\nhttp = \"off\"\ndata_dir = \"/tmp/b\"\n";
        let env = [
            ("BERTH_MASTER_RECONCILE_INTERVAL", "30s"),
            ("BERTH_MASTER_REQUIRE_REGISTRATION", "1"),
            ("BERTH_LOG_FORMAT", "json"),
        ];
        let src = sources(Some(file), &env).unwrap();
        let flags = ["--heartbeat-interval", "2s", "--starvation-wait", "5s"];
        let master = src.master(&master_args(&flags)).unwrap().node();
        let dev = src.dev(&dev_args(&flags)).unwrap().node();
        assert_eq!(dev.master, master.master);
        assert_eq!(dev.log_format, master.log_format);
        assert_eq!(master.local_worker, None);
        let worker = dev.local_worker.unwrap();
        assert_eq!(worker.data_dir, Path::new("/tmp/b/worker"));
        // Dev always keeps its records in SQLite.
        let src = sources(None, &[("BERTH_STORE", "postgres://u:p@h/d")]).unwrap();
        assert_eq!(
            src.dev(&dev_args(&[])).unwrap().node().master.store,
            StoreConfig::Sqlite
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
