//! Shell lines to commands: the predecessor's commands and flags
//! (`task ubuntu:latest -cpu_cores 5.0`, `workers`, `fix-resources`, …)
//! parsed into validated [`Request`]s. Pure; nothing is sent from here, so
//! a line with any mistake sends nothing.
//!
//! Flags are Go-style, as the predecessor's were: `-flag value`,
//! `-flag=value`, and the same with `--`. Everything after `--` is the
//! task's command, untouched.

use super::tokenize::tokenize;
use crate::commands::{Request, WorkerAction};
use crate::input::{SHELL_FLAGS, build_spec, parse_state_filter, parse_task_id};
use berth_core::{Raw, SpecInput};

/// What a shell line asks for. Lives for one line only, so the size of a
/// submission's spec in `Request` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ShellCommand {
    /// A blank line or a comment.
    Empty,
    Request(Request),
    /// `help`, or `help <command>` / `<command> -help`.
    Help(Option<String>),
    Exit,
}

/// One shell command's usage line, example and summary (for `help`).
pub struct CommandHelp {
    pub name: &'static str,
    pub usage: &'static str,
    pub example: &'static str,
    pub summary: &'static str,
}

/// Every shell command, in the order `help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "task",
        usage: "task <image> [-cpu_cores N] [-mem GB] [-storage GB] [-gpu_cores N] [-name NAME] [-env K=V]... [-retries N] [-timeout DURATION] [-stop_after_disconnect DURATION] [-priority N] [-constraint K=V]... [-strategy binpack|spread] [-queue_anyway] [-- command args...]",
        example: "task ubuntu:latest -cpu_cores 5.0 -mem 2 -- sleep 60",
        summary: "run a container task (docker driver)",
    },
    CommandHelp {
        name: "run",
        usage: "run [same flags as task] -- command args...",
        example: "run -cpu_cores 0.5 -mem 512M -- python3 train.py --epochs 3",
        summary: "run a process task (process driver)",
    },
    CommandHelp {
        name: "dispatch",
        usage: "dispatch <worker> [<image>] [same flags as task] [-- command args...]   (with an image a container task, without one a process task whose command follows --)",
        example: "dispatch Tessa ubuntu:latest -cpu_cores 2 -- sleep 60",
        summary: "run a task on that worker only: it waits for capacity there, and is refused if the worker could never fit it",
    },
    CommandHelp {
        name: "workers",
        usage: "workers",
        example: "workers",
        summary: "show every worker's resources: total, allocated, available",
    },
    CommandHelp {
        name: "status",
        usage: "status",
        example: "status",
        summary: "the cluster at a glance: workers (active, draining, down), running and queued tasks; refreshes every second until a key is pressed",
    },
    CommandHelp {
        name: "stats",
        usage: "stats <worker>",
        example: "stats Tessa",
        summary: "one worker live: totals, allocated, available, its running attempts and last heartbeat",
    },
    CommandHelp {
        name: "internal-state",
        usage: "internal-state",
        example: "internal-state",
        summary: "every worker in one table: id, state, allocated/total per resource, running, last seen",
    },
    CommandHelp {
        name: "list-tasks",
        usage: "list-tasks [state]",
        example: "list-tasks running",
        summary: "list tasks, optionally in one state (queued, assigned, running, succeeded, failed, cancelled)",
    },
    CommandHelp {
        name: "queue",
        usage: "queue",
        example: "queue",
        summary: "list queued tasks and why each is still waiting",
    },
    CommandHelp {
        name: "show",
        usage: "show <task>",
        example: "show 12",
        summary: "show one task: state, exit code, reason and every attempt",
    },
    CommandHelp {
        name: "logs",
        usage: "logs <task>",
        example: "logs 12",
        summary: "print a task's output so far",
    },
    CommandHelp {
        name: "monitor",
        usage: "monitor <task>",
        example: "monitor 12",
        summary: "follow a task's output until it ends (Ctrl-C returns to the prompt)",
    },
    CommandHelp {
        name: "files",
        usage: "files",
        example: "files",
        summary: "list every task that has output files: how many and their size",
    },
    CommandHelp {
        name: "task-files",
        usage: "task-files <task>",
        example: "task-files 12",
        summary: "list a task's output files (what it wrote to $BERTH_OUTPUT_DIR or /output) with their sizes in bytes",
    },
    CommandHelp {
        name: "download",
        usage: "download <task> [dir]",
        example: "download 12 results/run-12",
        summary: "write every output file of a task under dir (default ./task-<task>), keeping their paths",
    },
    CommandHelp {
        name: "cancel",
        usage: "cancel <task>",
        example: "cancel 12",
        summary: "cancel a task (queued tasks end at once; running ones are stopped)",
    },
    CommandHelp {
        name: "fix-resources",
        usage: "fix-resources [--dry-run]   (alias: reconcile)",
        example: "fix-resources --dry-run",
        summary: "audit every worker's allocation against its live tasks and fix any difference",
    },
    CommandHelp {
        name: "drain",
        usage: "drain <worker>",
        example: "drain Tessa",
        summary: "place no new tasks on a worker; the ones it runs finish (workers shows it as drained)",
    },
    CommandHelp {
        name: "undrain",
        usage: "undrain <worker>",
        example: "undrain Tessa",
        summary: "undo a drain: the worker takes new tasks again",
    },
    CommandHelp {
        name: "unregister",
        usage: "unregister <worker>",
        example: "unregister Tessa",
        summary: "remove a drained (or down) worker that runs nothing from the records",
    },
    CommandHelp {
        name: "register",
        usage: "register <worker>",
        example: "register gpu-box-7",
        summary: "allow a worker name to join a master started with --require-registration",
    },
    CommandHelp {
        name: "help",
        usage: "help [command]",
        example: "help task",
        summary: "show this help, or one command's",
    },
    CommandHelp {
        name: "exit",
        usage: "exit   (alias: quit, Ctrl-D)",
        example: "exit",
        summary: "leave the shell",
    },
];

/// Flags `task` and `run` take, as listed in errors.
const SPEC_FLAGS: &str = "-cpu_cores -mem -storage -gpu_cores -name -env -retries -timeout \
     -stop_after_disconnect -priority -constraint -strategy -queue_anyway";

/// Parse one line.
pub fn parse_line(line: &str) -> Result<ShellCommand, String> {
    let words = tokenize(line).map_err(|e| e.to_string())?;
    parse_words(&words)
}

/// Parse a line already split into words.
pub fn parse_words(words: &[String]) -> Result<ShellCommand, String> {
    let Some((cmd, args)) = words.split_first() else {
        return Ok(ShellCommand::Empty);
    };
    let cmd = cmd.as_str();
    if args.first().is_some_and(|a| is_help_flag(a)) && is_command(canonical(cmd)) {
        return Ok(ShellCommand::Help(Some(canonical(cmd).to_string())));
    }
    let request = match cmd {
        "task" => spec_command("task", args, SpecKind::Task, None)?,
        "run" => spec_command("run", args, SpecKind::Run, None)?,
        "dispatch" => match args.split_first() {
            Some((worker, rest)) if worker != "--" && flag_name(worker).is_none() => {
                spec_command("dispatch", rest, SpecKind::Dispatch, Some(worker.clone()))?
            }
            _ => {
                return Err(
                    "dispatch needs a worker first: dispatch <worker> [<image>] \
                            [flags] [-- command args...]"
                        .into(),
                );
            }
        },
        "workers" => {
            no_args("workers", args)?;
            Request::Workers
        }
        "status" => {
            no_args("status", args)?;
            Request::Status
        }
        "stats" => match args {
            [w] if !w.starts_with('-') => Request::Stats { worker: w.clone() },
            [] => return Err("stats needs a worker: stats <worker>".into()),
            [a] => return Err(format!("unknown flag {a} for stats; it takes no flags")),
            _ => return Err("stats takes one worker: stats <worker>".into()),
        },
        "internal-state" => {
            no_args("internal-state", args)?;
            Request::InternalState
        }
        "list-tasks" | "tasks" => {
            let state = match args {
                [] => None,
                [s] => parse_state_filter(Some(s))?,
                _ => return Err("list-tasks takes at most one state: list-tasks [state]".into()),
            };
            Request::ListTasks { state }
        }
        "queue" => {
            no_args("queue", args)?;
            Request::Queue
        }
        "show" => Request::Show {
            task_id: one_task_id("show", args)?,
        },
        "logs" => Request::Logs {
            task_id: one_task_id("logs", args)?,
            follow: false,
        },
        "monitor" => Request::Logs {
            task_id: one_task_id("monitor", args)?,
            follow: true,
        },
        "cancel" => Request::Cancel {
            task_id: one_task_id("cancel", args)?,
        },
        "files" => {
            no_args("files", args)?;
            Request::Outputs
        }
        "task-files" => Request::Files {
            task_id: one_task_id("task-files", args)?,
        },
        "download" => match args {
            [id, rest @ ..] if rest.len() <= 1 => Request::Download {
                task_id: parse_task_id(id).map_err(|e| format!("download: {e}"))?,
                dir: rest.first().map(std::path::PathBuf::from),
            },
            [] => return Err("download needs a task id: download <task> [dir]".into()),
            _ => return Err("download takes a task id and a folder: download <task> [dir]".into()),
        },
        "drain" => worker_command("drain", WorkerAction::Drain, args)?,
        "undrain" => worker_command("undrain", WorkerAction::Undrain, args)?,
        "unregister" => worker_command("unregister", WorkerAction::Unregister, args)?,
        "register" => worker_command("register", WorkerAction::Register, args)?,
        "fix-resources" | "reconcile" => {
            let mut dry_run = false;
            for a in args {
                match flag_name(a) {
                    Some((name, None)) if name == "dry_run" => dry_run = true,
                    Some(_) => {
                        return Err(format!("unknown flag {a} for {cmd}; flags: --dry-run"));
                    }
                    None => return Err(format!("{cmd} takes no arguments; flags: --dry-run")),
                }
            }
            Request::Reconcile { dry_run }
        }
        "help" | "?" => {
            return match args {
                [] => Ok(ShellCommand::Help(None)),
                [topic] if is_command(canonical(topic)) => {
                    Ok(ShellCommand::Help(Some(canonical(topic).to_string())))
                }
                [topic] => Err(format!("unknown command '{topic}'; type help for the list")),
                _ => Err("help takes at most one command: help [command]".into()),
            };
        }
        "exit" | "quit" => {
            no_args(cmd, args)?;
            return Ok(ShellCommand::Exit);
        }
        other => {
            return Err(format!("unknown command '{other}'; type help for the list"));
        }
    };
    Ok(ShellCommand::Request(request))
}

/// The name `help` files a command (or alias) under.
fn canonical(cmd: &str) -> &str {
    match cmd {
        "reconcile" => "fix-resources",
        "quit" => "exit",
        "tasks" => "list-tasks",
        "?" => "help",
        other => other,
    }
}

fn is_command(name: &str) -> bool {
    COMMANDS.iter().any(|c| c.name == name)
}

fn is_help_flag(a: &str) -> bool {
    matches!(a, "-h" | "-help" | "--help")
}

fn no_args(cmd: &str, args: &[String]) -> Result<(), String> {
    match args.first() {
        None => Ok(()),
        Some(a) if a.starts_with('-') => {
            Err(format!("unknown flag {a} for {cmd}; it takes no flags"))
        }
        Some(_) => Err(format!("{cmd} takes no arguments")),
    }
}

fn one_task_id(cmd: &str, args: &[String]) -> Result<u64, String> {
    match args {
        [id] => parse_task_id(id).map_err(|e| format!("{cmd}: {e}")),
        [] => Err(format!("{cmd} needs a task id: {cmd} <task>")),
        _ => Err(format!("{cmd} takes one task id: {cmd} <task>")),
    }
}

/// `-name`, `--name`, `-name=value`: the name (dashes inside it read as
/// `_`) and the inline value. `None` for words that are not flags (`-`,
/// `-1`, `-.5`, plain words).
fn flag_name(word: &str) -> Option<(String, Option<String>)> {
    let body = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
    if !body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (body, None),
    };
    Some((name.replace('-', "_"), value))
}

/// `drain`, `undrain`, `unregister`, `register`: one worker name.
fn worker_command(cmd: &str, action: WorkerAction, args: &[String]) -> Result<Request, String> {
    let dead = |f: &String| f == "--confirm-dead" || f == "-confirm_dead";
    if action == WorkerAction::Unregister
        && let [a, b] = args
        && let Some(w) = [(a, b), (b, a)]
            .into_iter()
            .find_map(|(w, f)| (dead(f) && !w.starts_with('-')).then_some(w))
    {
        return Ok(Request::Worker {
            action: WorkerAction::UnregisterDead,
            name: w.clone(),
        });
    }
    match args {
        [w] if !w.starts_with('-') => Ok(Request::Worker {
            action,
            name: w.clone(),
        }),
        [] => Err(format!("{cmd} needs a worker: {cmd} <worker>")),
        [a] => Err(format!("unknown flag {a} for {cmd}; it takes no flags")),
        _ => Err(format!("{cmd} takes one worker: {cmd} <worker>")),
    }
}

/// Which task command a line is: what its first plain word means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecKind {
    /// `task <image>`: a container.
    Task,
    /// `run cmd…`: a process; the first plain word starts the command.
    Run,
    /// `dispatch <worker> [<image>]`: a container with an image, else a
    /// process whose command follows `--`.
    Dispatch,
}

/// `task` (container), `run` (process) and `dispatch` (either, pinned):
/// flags to a validated spec.
fn spec_command(
    cmd: &str,
    args: &[String],
    kind: SpecKind,
    pinned: Option<String>,
) -> Result<Request, String> {
    let container = kind == SpecKind::Task;
    let mut input = SpecInput {
        worker: Raw::text(pinned),
        ..SpecInput::default()
    };
    let mut command: Vec<String> = Vec::new();
    let mut env: Vec<String> = Vec::new();
    let mut constraints: Vec<String> = Vec::new();
    let mut queue_anyway = false;
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        i += 1;
        if word == "--" {
            command = args[i..].to_vec();
            break;
        }
        let Some((name, inline)) = flag_name(word) else {
            // A positional word: the image for `task` and `dispatch`; for
            // `run`, the start of the command (which runs to the end of
            // the line).
            if kind != SpecKind::Run {
                if input.image.is_some() {
                    return Err(format!(
                        "unexpected argument '{word}' for {cmd}; put the command after --"
                    ));
                }
                input.image = Raw::text(Some(word.clone()));
            } else {
                command = args[i - 1..].to_vec();
                break;
            }
            continue;
        };
        if name == "queue_anyway" {
            queue_anyway = match inline.as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(v) => {
                    return Err(format!(
                        "-queue_anyway takes no value (or true/false), not '{v}'"
                    ));
                }
            };
            continue;
        }
        let slot = match name.as_str() {
            "cpu_cores" => &mut input.cpu,
            "mem" => &mut input.memory,
            "storage" => &mut input.storage,
            "gpu_cores" => &mut input.gpus,
            "name" => &mut input.name,
            "retries" => &mut input.retries,
            "timeout" => &mut input.timeout,
            "stop_after_disconnect" => &mut input.stop_after_disconnect,
            "priority" => &mut input.priority,
            "strategy" => &mut input.strategy,
            "env" => {
                let value = flag_value(word, inline, args, &mut i)?;
                env.push(value);
                continue;
            }
            "constraint" => {
                let value = flag_value(word, inline, args, &mut i)?;
                constraints.push(value);
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown flag {word} for {cmd}; flags: {SPEC_FLAGS}"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("flag -{name} is given twice"));
        }
        *slot = Raw::text(Some(flag_value(word, inline, args, &mut i)?));
    }
    if container && input.image.is_none() {
        return Err(
            "task needs an image: task <image> [flags] [-- command args...]; \
                    use run for a plain command"
                .into(),
        );
    }
    if kind == SpecKind::Run && command.is_empty() {
        return Err("run needs a command: run [flags] -- command args...".into());
    }
    if kind == SpecKind::Dispatch && input.image.is_none() && command.is_empty() {
        return Err(
            "dispatch needs an image or a command: dispatch <worker> <image> [flags] \
             [-- command args...], or dispatch <worker> [flags] -- command args... \
             for a process"
                .into(),
        );
    }
    input.command = Raw::words(command);
    input.env = Raw::words(env);
    input.constraints = Raw::words(constraints);
    let spec = build_spec(&input, &SHELL_FLAGS).map_err(|e| e.to_string())?;
    Ok(Request::Submit { spec, queue_anyway })
}

/// The value of a flag: inline (`-mem=2`) or the next word. The next word
/// is refused when it is `--` or another flag, so a forgotten value is
/// reported as such rather than swallowing the next flag.
fn flag_value(
    word: &str,
    inline: Option<String>,
    args: &[String],
    i: &mut usize,
) -> Result<String, String> {
    if let Some(v) = inline {
        return Ok(v);
    }
    match args.get(*i) {
        Some(next) if next != "--" && flag_name(next).is_none() => {
            *i += 1;
            Ok(next.clone())
        }
        _ => Err(format!("flag {word} needs a value")),
    }
}

/// The text `help` prints: every command, or one.
pub fn help_text(topic: Option<&str>) -> Result<String, String> {
    match topic {
        None => {
            let mut out = String::from("Commands:\n");
            for c in COMMANDS {
                out.push_str(&format!("  {:<15}{}\n", c.name, c.summary));
                out.push_str(&format!("  {:<15}  e.g. {}\n", "", c.example));
            }
            out.push_str(
                "\nSizes (-mem, -storage) take K/M/G/T suffixes; a bare number is GB.\n\
                 Type help <command> for its flags. Quotes and \\ work as in a shell.\n",
            );
            Ok(out)
        }
        Some(name) => COMMANDS
            .iter()
            .find(|c| c.name == name)
            .map(|c| format!("{}\n  {}\n  e.g. {}\n", c.usage, c.summary, c.example))
            .ok_or_else(|| format!("unknown command '{name}'; type help for the list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::units::{GIB, MIB};
    use berth_core::{DriverKind, TaskState};

    fn submit(line: &str) -> (berth_core::TaskSpec, bool) {
        match parse_line(line) {
            Ok(ShellCommand::Request(Request::Submit { spec, queue_anyway })) => {
                (spec, queue_anyway)
            }
            other => panic!("{line}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse_line(line) {
            Err(e) => e,
            Ok(c) => panic!("{line} parsed as {c:?}"),
        }
    }

    #[test]
    fn task_with_the_predecessors_flags() {
        let (s, q) = submit("task ubuntu:latest -cpu_cores 5.0");
        assert_eq!(s.driver, DriverKind::Docker);
        assert_eq!(s.image.as_deref(), Some("ubuntu:latest"));
        assert_eq!(s.resources.cpu_millis, 5000);
        assert_eq!(s.resources.memory_bytes, GIB / 2);
        assert!(s.command.is_empty());
        assert!(!q);

        let (s, q) = submit(
            "task nvidia/cuda -cpu_cores=2 -mem 16 -storage 10G -gpu_cores 2 -name 'big job' \
             -env A=1 -env B=two -queue_anyway -- python -u train.py --lr 0.1",
        );
        assert_eq!(s.resources.memory_bytes, 16 * GIB);
        assert_eq!(s.resources.storage_bytes, 10 * GIB);
        assert_eq!(s.resources.gpus, 2);
        assert_eq!(s.name, "big job");
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.command, ["python", "-u", "train.py", "--lr", "0.1"]);
        assert!(q);
    }

    #[test]
    fn stop_after_disconnect_is_a_duration_of_at_least_a_second() {
        let (s, _) = submit("run -stop_after_disconnect 30s -- sleep 100");
        assert_eq!(s.stop_after_disconnect_ms, Some(30_000));
        let (s, _) = submit("run -- true");
        assert_eq!(s.stop_after_disconnect_ms, None);
        let e = err("run -stop_after_disconnect 0.5s -- true");
        assert!(
            e.starts_with("stop_after_disconnect (-stop_after_disconnect): must be at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn run_makes_a_process_task() {
        let (s, _) = submit("run -mem 512M -- sh -c 'echo hi'");
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(s.image, None);
        assert_eq!(s.resources.memory_bytes, 512 * MIB);
        assert_eq!(s.command, ["sh", "-c", "echo hi"]);
        // The first plain word starts the command; its flags stay its own.
        let (s, _) = submit("run --cpu_cores 2 python3 -u x.py");
        assert_eq!(s.resources.cpu_millis, 2000);
        assert_eq!(s.command, ["python3", "-u", "x.py"]);
    }

    #[test]
    fn bad_numbers_are_refused_naming_the_flag() {
        for (line, field) in [
            ("task img -cpu_cores -1", "cpu (-cpu_cores)"),
            ("task img -cpu_cores NaN", "cpu (-cpu_cores)"),
            ("task img -cpu_cores 1e9", "cpu (-cpu_cores)"),
            ("task img -cpu_cores 0", "cpu (-cpu_cores)"),
            ("task img -mem -2", "memory (-mem)"),
            ("task img -mem 1e15", "memory (-mem)"),
            ("task img -storage lots", "storage (-storage)"),
            ("task img -gpu_cores 0.5", "gpus (-gpu_cores)"),
            ("task img -gpu_cores 1000", "gpus (-gpu_cores)"),
            ("task img -env NOVALUE", "env (-env)"),
            ("task img -env 9X=1", "env (-env)"),
        ] {
            let e = err(line);
            assert!(e.starts_with(field), "{line}: {e}");
        }
        assert!(err("task img -gpu_cores 0.5").contains("whole"));
    }

    #[test]
    fn unknown_flags_list_the_known_ones() {
        let e = err("task img -foo 1");
        assert_eq!(
            e,
            format!("unknown flag -foo for task; flags: {SPEC_FLAGS}")
        );
        assert!(err("run -cpus 2 -- true").starts_with("unknown flag -cpus for run"));
        assert_eq!(
            err("fix-resources --force"),
            "unknown flag --force for fix-resources; flags: --dry-run"
        );
        assert!(err("workers -all").starts_with("unknown flag -all for workers"));
    }

    #[test]
    fn missing_values_and_commands() {
        assert_eq!(err("task img -cpu_cores"), "flag -cpu_cores needs a value");
        assert_eq!(
            err("task img -cpu_cores -mem 2"),
            "flag -cpu_cores needs a value"
        );
        assert_eq!(err("run -mem -- true"), "flag -mem needs a value");
        assert!(err("run").starts_with("run needs a command"));
        assert!(err("run -cpu_cores 1 --").starts_with("run needs a command"));
        assert!(err("task").starts_with("task needs an image"));
        assert!(err("task -cpu_cores 2").starts_with("task needs an image"));
        assert!(err("task img extra").contains("put the command after --"));
        assert_eq!(err("task img -mem 1 -mem 2"), "flag -mem is given twice");
        assert!(err("run -- ''").starts_with("command:"));
    }

    #[test]
    fn tokenizer_errors_surface() {
        assert!(err("run -- echo 'oops").contains("unclosed ' quote"));
    }

    #[test]
    fn simple_commands() {
        let req = |line: &str| match parse_line(line).unwrap() {
            ShellCommand::Request(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(req("workers"), Request::Workers);
        assert_eq!(req("list-tasks"), Request::ListTasks { state: None });
        assert_eq!(
            req("list-tasks running"),
            Request::ListTasks {
                state: Some(TaskState::Running)
            }
        );
        assert_eq!(req("queue"), Request::Queue);
        assert_eq!(req("cancel 3"), Request::Cancel { task_id: 3 });
        assert_eq!(req("show #4"), Request::Show { task_id: 4 });
        assert_eq!(
            req("monitor 5"),
            Request::Logs {
                task_id: 5,
                follow: true
            }
        );
        assert_eq!(
            req("logs 5"),
            Request::Logs {
                task_id: 5,
                follow: false
            }
        );
        assert_eq!(req("fix-resources"), Request::Reconcile { dry_run: false });
        assert_eq!(
            req("reconcile --dry-run"),
            Request::Reconcile { dry_run: true }
        );
        assert_eq!(
            req("reconcile -dry_run"),
            Request::Reconcile { dry_run: true }
        );
        assert_eq!(parse_line("").unwrap(), ShellCommand::Empty);
        assert_eq!(parse_line("# note").unwrap(), ShellCommand::Empty);
        assert_eq!(parse_line("quit").unwrap(), ShellCommand::Exit);
        assert_eq!(parse_line("exit").unwrap(), ShellCommand::Exit);
        assert_eq!(parse_line("help").unwrap(), ShellCommand::Help(None));
        assert_eq!(
            parse_line("task -help").unwrap(),
            ShellCommand::Help(Some("task".into()))
        );
        assert_eq!(
            parse_line("help reconcile").unwrap(),
            ShellCommand::Help(Some("fix-resources".into()))
        );
    }

    #[test]
    fn bad_simple_commands() {
        assert_eq!(
            err("frobnicate"),
            "unknown command 'frobnicate'; type help for the list"
        );
        assert!(err("cancel").contains("needs a task id"));
        assert!(err("cancel x").contains("not a task id"));
        assert!(err("cancel 1 2").contains("one task id"));
        assert!(err("list-tasks done").contains("not a task state"));
        assert!(err("help nothing").contains("unknown command"));
    }

    #[test]
    fn help_covers_every_command_with_an_example() {
        let text = help_text(None).unwrap();
        for c in COMMANDS {
            assert!(text.contains(c.example), "{}", c.name);
            assert!(help_text(Some(c.name)).is_ok(), "{}", c.name);
        }
        for name in [
            "task",
            "run",
            "workers",
            "status",
            "stats",
            "internal-state",
            "list-tasks",
            "queue",
            "cancel",
            "monitor",
            "fix-resources",
            "help",
            "exit",
        ] {
            assert!(COMMANDS.iter().any(|c| c.name == name), "{name}");
        }
    }
}

#[cfg(test)]
mod scheduling_tests {
    use super::*;
    use berth_core::{DriverKind, Strategy};

    fn spec(line: &str) -> berth_core::TaskSpec {
        match parse_line(line) {
            Ok(ShellCommand::Request(Request::Submit { spec, .. })) => spec,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn task_and_run_take_placement_flags() {
        let s = spec(
            "task img -priority 10 -constraint gpu=a100 -constraint=zone=b -strategy spread -- x",
        );
        assert_eq!(s.priority, 10);
        assert_eq!(
            s.constraints,
            vec![("gpu".into(), "a100".into()), ("zone".into(), "b".into())]
        );
        assert_eq!(s.strategy, Some(Strategy::Spread));
        assert_eq!(s.pinned_worker, None);
        let s = spec("run -priority -3 -strategy binpack -- true");
        assert_eq!(s.priority, -3);
        assert_eq!(s.strategy, Some(Strategy::Binpack));
        for (line, why) in [
            ("run -priority high -- true", "priority (-priority): "),
            ("run -strategy random -- true", "strategy (-strategy): "),
            ("run -constraint gpu -- true", "constraint (-constraint): "),
            (
                "run -priority 1 -priority 2 -- true",
                "flag -priority is given twice",
            ),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.starts_with(why), "{line}: {e}");
        }
    }

    #[test]
    fn dispatch_pins_a_container_or_a_process() {
        let s = spec("dispatch Tessa ubuntu:latest -cpu_cores 2 -- sleep 60");
        assert_eq!(s.pinned_worker.as_deref(), Some("Tessa"));
        assert_eq!(s.driver, DriverKind::Docker);
        assert_eq!(s.image.as_deref(), Some("ubuntu:latest"));
        assert_eq!(s.command, ["sleep", "60"]);
        assert_eq!(s.resources.cpu_millis, 2000);
        let s = spec("dispatch Tessa -priority 4 -- sh -c 'echo hi'");
        assert_eq!(s.pinned_worker.as_deref(), Some("Tessa"));
        assert_eq!(s.driver, DriverKind::Process);
        assert_eq!(s.command, ["sh", "-c", "echo hi"]);
        assert_eq!(s.priority, 4);
        for (line, why) in [
            ("dispatch", "dispatch needs a worker first"),
            (
                "dispatch -cpu_cores 2 -- true",
                "dispatch needs a worker first",
            ),
            ("dispatch -- true", "dispatch needs a worker first"),
            ("dispatch Tessa", "dispatch needs an image or a command"),
            (
                "dispatch Tessa -cpu_cores 1",
                "dispatch needs an image or a command",
            ),
            (
                "dispatch Tessa img extra",
                "unexpected argument 'extra' for dispatch",
            ),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.starts_with(why), "{line}: {e}");
        }
    }

    #[test]
    fn worker_commands_take_one_name() {
        let req = |line: &str| match parse_line(line) {
            Ok(ShellCommand::Request(r)) => r,
            other => panic!("{line}: {other:?}"),
        };
        for (line, action) in [
            ("drain Tessa", WorkerAction::Drain),
            ("undrain Tessa", WorkerAction::Undrain),
            ("unregister Tessa", WorkerAction::Unregister),
            (
                "unregister Tessa --confirm-dead",
                WorkerAction::UnregisterDead,
            ),
            (
                "unregister -confirm_dead Tessa",
                WorkerAction::UnregisterDead,
            ),
            ("register Tessa", WorkerAction::Register),
        ] {
            assert_eq!(
                req(line),
                Request::Worker {
                    action,
                    name: "Tessa".into()
                }
            );
        }
        for (line, why) in [
            ("drain", "drain needs a worker: drain <worker>"),
            ("unregister -f", "unknown flag -f for unregister"),
            ("register a b", "register takes one worker"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.starts_with(why), "{line}: {e}");
        }
        let help = help_text(None).unwrap();
        for name in ["dispatch", "drain", "undrain", "unregister", "register"] {
            assert!(help.contains(&format!("  {name} ")), "{help}");
        }
    }
}

#[cfg(test)]
mod output_file_tests {
    use super::*;
    use std::path::PathBuf;

    fn req(line: &str) -> Request {
        match parse_line(line) {
            Ok(ShellCommand::Request(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn file_commands() {
        assert_eq!(req("files"), Request::Outputs);
        assert_eq!(req("task-files 4"), Request::Files { task_id: 4 });
        assert_eq!(
            req("download 4"),
            Request::Download {
                task_id: 4,
                dir: None
            }
        );
        assert_eq!(
            req("download #4 'my results'"),
            Request::Download {
                task_id: 4,
                dir: Some(PathBuf::from("my results"))
            }
        );
        for (line, why) in [
            ("files 3", "files takes no arguments"),
            ("task-files", "task-files needs a task id"),
            ("download", "download needs a task id"),
            ("download x", "download: "),
            ("download 1 a b", "download takes a task id and a folder"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.starts_with(why), "{line}: {e}");
        }
        let help = help_text(None).unwrap();
        for name in ["files", "task-files", "download"] {
            assert!(COMMANDS.iter().any(|c| c.name == name), "{name}");
            assert!(help.contains(&format!("  {name} ")), "{help}");
        }
    }
}
