//! Tab completion for the interactive shell: command names (from the same
//! [`COMMANDS`] list `help` prints), the flags of `task` and `run`,
//! `--dry-run`, task states, and — asked of the master when Tab is
//! pressed — the ids of live tasks and the names of workers.
//!
//! [`complete`] is pure: it takes the line up to the cursor and a source
//! of ids and names. [`ShellHelper`] plugs it into rustyline and fetches
//! those from the master with a short timeout, so a slow master costs a
//! moment, never a hung prompt.

use super::parse::COMMANDS;
use super::tokenize::tokenize;
use crate::client::Client;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use std::time::Duration;

/// Flags of `task` and `run`, in the shell's spelling.
pub const SPEC_FLAGS: &[&str] = &[
    "-cpu_cores",
    "-mem",
    "-storage",
    "-gpu_cores",
    "-name",
    "-env",
    "-retries",
    "-timeout",
    "-stop_after_disconnect",
    "-priority",
    "-constraint",
    "-strategy",
    "-queue_anyway",
];

/// Commands whose one argument is an existing worker's name.
const WORKER_COMMANDS: &[&str] = &["stats", "drain", "undrain", "unregister"];

/// Aliases that complete as well as the names `help` lists.
const ALIASES: &[&str] = &["reconcile", "quit", "tasks"];

/// Commands whose one argument is a task id.
const TASK_ID_COMMANDS: &[&str] = &[
    "show",
    "logs",
    "monitor",
    "cancel",
    "files",
    "task-files",
    "download",
];

/// What a completion may need from the master.
pub trait Lookup {
    /// Ids of tasks that are still live (queued, assigned, running).
    fn task_ids(&self) -> Vec<u64>;
    /// Worker names.
    fn worker_names(&self) -> Vec<String>;
}

/// Completions for `line` (the text before the cursor): where the word
/// being completed starts, and the candidates, sorted.
pub fn complete(line: &str, lookup: &dyn Lookup) -> (usize, Vec<String>) {
    let start = line.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
    let word = &line[start..];
    // Words before the one being completed; an unfinished quote means we
    // are inside an argument and offer nothing.
    let Ok(before) = tokenize(&line[..start]) else {
        return (start, Vec::new());
    };
    let mut candidates: Vec<String> = match before.split_first() {
        None => COMMANDS
            .iter()
            .map(|c| c.name)
            .chain(ALIASES.iter().copied())
            .map(str::to_string)
            .collect(),
        Some((cmd, args)) => match cmd.as_str() {
            "dispatch" if args.is_empty() => lookup.worker_names(),
            "task" | "run" | "dispatch" => {
                if args.iter().any(|a| a == "--") {
                    Vec::new()
                } else if word.starts_with('-') {
                    SPEC_FLAGS.iter().map(|f| f.to_string()).collect()
                } else if args.last().is_some_and(|a| a == "-strategy") {
                    vec!["binpack".to_string(), "spread".to_string()]
                } else {
                    Vec::new()
                }
            }
            "help" | "?" if args.is_empty() => {
                COMMANDS.iter().map(|c| c.name.to_string()).collect()
            }
            "fix-resources" | "reconcile" => vec!["--dry-run".to_string()],
            "list-tasks" | "tasks" if args.is_empty() => berth_core::TaskState::ALL
                .iter()
                .map(|s| s.as_str())
                .chain(["all"])
                .map(str::to_string)
                .collect(),
            c if WORKER_COMMANDS.contains(&c) && args.is_empty() => lookup.worker_names(),
            c if TASK_ID_COMMANDS.contains(&c) && args.is_empty() => {
                lookup.task_ids().iter().map(u64::to_string).collect()
            }
            _ => Vec::new(),
        },
    };
    candidates.retain(|c| c.starts_with(word));
    candidates.sort();
    candidates.dedup();
    (start, candidates)
}

/// How long Tab waits for the master.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(700);

/// Asks the master, on the shell's runtime.
pub struct MasterLookup {
    pub rt: tokio::runtime::Handle,
    pub client: Client,
}

impl Lookup for MasterLookup {
    fn task_ids(&self) -> Vec<u64> {
        let c = &self.client;
        let fetch = async {
            tokio::try_join!(
                c.list_tasks(berth_core::TaskState::Queued.as_str()),
                c.list_tasks("assigned"),
                c.list_tasks(berth_core::TaskState::Running.as_str())
            )
        };
        // The timer is made inside the runtime (block_on's future), not here.
        match self
            .rt
            .block_on(async { tokio::time::timeout(LOOKUP_TIMEOUT, fetch).await })
        {
            Ok(Ok((q, a, r))) => q.iter().chain(&a).chain(&r).map(|t| t.id).collect(),
            _ => Vec::new(),
        }
    }

    fn worker_names(&self) -> Vec<String> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(LOOKUP_TIMEOUT, self.client.workers()).await })
        {
            Ok(Ok(ws)) => ws
                .into_iter()
                .map(|w| if w.name.is_empty() { w.id } else { w.name })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The rustyline helper: completion only (no hints, colours or
/// multi-line validation).
pub struct ShellHelper {
    pub lookup: Box<dyn Lookup>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = complete(&line[..pos], self.lookup.as_ref());
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: format!("{w} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::parse::{ShellCommand, parse_line};

    struct Fake;

    /// No master: nothing dynamic completes.
    struct NoLookup;

    impl Lookup for NoLookup {
        fn task_ids(&self) -> Vec<u64> {
            Vec::new()
        }
        fn worker_names(&self) -> Vec<String> {
            Vec::new()
        }
    }

    impl Lookup for Fake {
        fn task_ids(&self) -> Vec<u64> {
            vec![12, 7, 120]
        }
        fn worker_names(&self) -> Vec<String> {
            vec!["Tessa".into(), "Uma".into()]
        }
    }

    fn words(line: &str) -> Vec<String> {
        complete(line, &Fake).1
    }

    #[test]
    fn first_word_completes_commands() {
        assert_eq!(words("wor"), ["workers"]);
        assert_eq!(words("st"), ["stats", "status"]);
        assert_eq!(words("rec"), ["reconcile"]);
        let all = words("");
        for c in COMMANDS {
            assert!(all.iter().any(|w| w == c.name), "{}", c.name);
        }
        assert_eq!(complete("  mon", &Fake), (2, vec!["monitor".to_string()]));
    }

    #[test]
    fn task_and_run_complete_their_flags_until_double_dash() {
        assert_eq!(words("task ubuntu -cpu"), ["-cpu_cores"]);
        assert_eq!(words("run -g"), ["-gpu_cores"]);
        assert_eq!(words("run -"), {
            let mut f: Vec<String> = SPEC_FLAGS.iter().map(|s| s.to_string()).collect();
            f.sort();
            f
        });
        assert!(words("run -- python -").is_empty());
        assert!(words("task ubuntu ").is_empty());
    }

    #[test]
    fn arguments_complete_from_the_master() {
        assert_eq!(words("show 1"), ["12", "120"]);
        assert_eq!(words("cancel "), ["12", "120", "7"]);
        assert!(words("cancel 12 ").is_empty());
        assert_eq!(words("stats T"), ["Tessa"]);
        assert_eq!(words("drain "), ["Tessa", "Uma"]);
        assert_eq!(words("undrain U"), ["Uma"]);
        assert_eq!(words("unregister U"), ["Uma"]);
        assert!(words("register ").is_empty());
        assert_eq!(words("dispatch T"), ["Tessa"]);
        assert_eq!(words("dispatch Tessa img -pri"), ["-priority"]);
        assert_eq!(words("run -strategy s"), ["spread"]);
        assert_eq!(words("task img -con"), ["-constraint"]);
        assert_eq!(words("list-tasks ru"), ["running"]);
        assert_eq!(words("fix-resources --d"), ["--dry-run"]);
        assert_eq!(words("help wo"), ["workers"]);
        assert!(words("run -- echo 'unfinished ").is_empty());
        assert!(complete("show ", &NoLookup).1.is_empty());
    }

    /// `help` must list every command the parser accepts: each word the
    /// parser's `match cmd` arms name is a command or an alias of one.
    #[test]
    fn help_lists_every_command_the_shell_accepts() {
        let source = include_str!("parse.rs");
        let body = source
            .split("let request = match cmd {")
            .nth(1)
            .expect("parse_words matches on cmd");
        let body = body.split("\n        other =>").next().unwrap();
        let mut names = Vec::new();
        for line in body.lines() {
            let t = line.trim_start();
            // Arms sit at a fixed depth: `"name" => …` or `"a" | "b" => …`.
            if !line.starts_with("        \"") || !t.contains("=>") {
                continue;
            }
            let pattern = t.split("=>").next().unwrap();
            for alt in pattern.split('|') {
                let alt = alt.trim().trim_matches('"');
                if !alt.is_empty() {
                    names.push(alt.to_string());
                }
            }
        }
        assert!(names.len() >= 10, "found only {names:?}");
        for name in names {
            let help = parse_line(&format!("help {name}"));
            assert!(
                matches!(help, Ok(ShellCommand::Help(Some(_)))),
                "the shell accepts '{name}' but help does not list it: add it to COMMANDS"
            );
        }
    }
}
