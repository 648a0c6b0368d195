//! The settings' flags, built from the key table: `berth master`, `berth
//! worker` and `berth dev` get one flag per key their role reads, and
//! every command gets `--master` and `--token`. Each flag's value is
//! checked by the key's own codec (a bad one is a command-line error,
//! exit 2, naming the flag) and handed to the merge as given: clap only
//! maps flags onto the same structs the file and environment fill.

use super::keys::{KEYS, Key, Role, Section};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use std::fmt;
use std::marker::PhantomData;

/// Which keys a command's flags set.
pub trait FlagSet {
    const ROLE: Role;
    /// `--master` and `--token`: global, on every command.
    const GLOBAL: bool = false;
}

#[derive(Debug)]
pub struct MasterFlags;
#[derive(Debug)]
pub struct WorkerFlags;
#[derive(Debug)]
pub struct DevFlags;
#[derive(Debug)]
pub struct ClientFlags;

impl FlagSet for MasterFlags {
    const ROLE: Role = Role::Master;
}
impl FlagSet for WorkerFlags {
    const ROLE: Role = Role::Worker;
}
impl FlagSet for DevFlags {
    const ROLE: Role = Role::Dev;
}
impl FlagSet for ClientFlags {
    const ROLE: Role = Role::Client;
    const GLOBAL: bool = true;
}

/// The flags given, in key order, each as the TOML value it stands for
/// (a string; `true` for a switch; an array for a repeated flag).
pub struct SettingFlags<F> {
    pub values: Vec<(&'static Key, toml::Value)>,
    set: PhantomData<F>,
}

impl<F> SettingFlags<F> {
    pub fn new(values: Vec<(&'static Key, toml::Value)>) -> SettingFlags<F> {
        SettingFlags {
            values,
            set: PhantomData,
        }
    }
}

#[cfg(test)]
impl<F> SettingFlags<F> {
    /// The keys' names and values given.
    pub fn given(&self) -> Vec<(&'static str, toml::Value)> {
        self.values
            .iter()
            .map(|(k, v)| (k.name, v.clone()))
            .collect()
    }
}

impl<F> fmt::Debug for SettingFlags<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given: Vec<(String, &toml::Value)> =
            self.values.iter().map(|(k, v)| (k.id(), v)).collect();
        f.debug_struct("SettingFlags")
            .field("values", &given)
            .finish()
    }
}

/// How a key's flag is given, from its default's type.
enum FlagKind {
    /// `--require-registration`
    Switch,
    /// `--label a=b --label c=d`
    Repeated,
    /// `--listen ADDR`
    Value,
}

fn kind(k: &Key) -> FlagKind {
    match k.section.defaults().get(k.name) {
        Some(toml::Value::Boolean(_)) => FlagKind::Switch,
        Some(toml::Value::Array(_)) => FlagKind::Repeated,
        _ => FlagKind::Value,
    }
}

/// The client keys are global; a role's own keys are not.
fn keys<F: FlagSet>() -> impl Iterator<Item = &'static Key> {
    KEYS.iter()
        .filter(|k| k.used_by(F::ROLE) && ((k.section == Section::Client) == F::GLOBAL))
}

fn id(k: &Key) -> &'static str {
    k.flag.trim_start_matches('-')
}

fn arg(k: &'static Key, global: bool) -> Arg {
    let help = format!(
        "{} [env: {}] [default: {}]",
        k.meaning,
        k.env,
        k.default_text()
    );
    let arg = Arg::new(id(k)).long(id(k)).help(help).global(global);
    match kind(k) {
        FlagKind::Switch => arg.action(ArgAction::SetTrue),
        FlagKind::Repeated => arg.action(ArgAction::Append).value_parser(checked(k)),
        FlagKind::Value => arg
            .action(ArgAction::Set)
            .allow_hyphen_values(true)
            .value_parser(checked(k)),
    }
}

/// The key's codec as the flag's value parser; the value is kept as text.
fn checked(k: &'static Key) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync {
    move |s: &str| {
        let value = match kind(k) {
            FlagKind::Repeated => toml::Value::Array(vec![toml::Value::String(s.to_string())]),
            _ => toml::Value::String(s.to_string()),
        };
        k.section.check(k.name, &value).map(|()| s.to_string())
    }
}

impl<F: FlagSet> FromArgMatches for SettingFlags<F> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = Vec::new();
        for k in keys::<F>() {
            let given = match kind(k) {
                FlagKind::Switch => m.get_flag(id(k)).then_some(toml::Value::Boolean(true)),
                FlagKind::Repeated => m.get_many::<String>(id(k)).map(|vs| {
                    toml::Value::Array(vs.map(|v| toml::Value::String(v.clone())).collect())
                }),
                FlagKind::Value => m
                    .get_one::<String>(id(k))
                    .map(|v| toml::Value::String(v.clone())),
            };
            if let Some(v) = given {
                values.push((k, v));
            }
        }
        Ok(SettingFlags::new(values))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = SettingFlags::from_arg_matches(m)?;
        Ok(())
    }
}

impl<F: FlagSet> Args for SettingFlags<F> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        keys::<F>().fold(cmd, |cmd, k| cmd.arg(arg(k, F::GLOBAL)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SettingFlags::<F>::augment_args(cmd)
    }
}
