//! The command line, as clap types: global flags, one variant per
//! subcommand, and the value parser for task ids. The settings' flags of
//! `master`, `worker` and `dev` and the global `--master` / `--token` are
//! not written here: `config::flags` builds them from the key table.
//! Resource amounts of a task stay strings here; `input` converts them
//! with core's unit parsers so every surface reports errors alike.

use crate::config::flags::{ClientFlags, DevFlags, MasterFlags, SettingFlags, WorkerFlags};
use crate::input::parse_task_id;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: run tasks on a pool of worker machines",
    after_help = "Start a cluster with `berth master` and `berth worker`, or both at once with `berth dev`."
)]
pub struct Cli {
    /// `--master` and `--token`, on every command.
    #[command(flatten)]
    pub client: SettingFlags<ClientFlags>,

    /// A TOML config file ([master], [worker], [dev], [client]; see
    /// docs/CONFIGURATION.md) [env: BERTH_CONFIG]. Flags beat BERTH_*
    /// variables, which beat the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print JSON instead of text (task submit/list/show/cancel, workers,
    /// queue, reconcile).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane. With a terminal, opens the shell; leaving
    /// the shell stops the master.
    Master(MasterArgs),
    /// Run the agent on this machine, connected to --master.
    Worker(WorkerArgs),
    /// A master and one local worker in one process, for trying berth out.
    Dev(DevArgs),
    /// The interactive shell against --master (reads stdin when it is not a
    /// terminal).
    Shell,
    /// Submit, list, inspect and cancel tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Every worker's resources: total, allocated, available.
    Workers,
    /// Queued tasks and why each is still waiting.
    Queue,
    /// Audit every worker's allocation against its live tasks and fix any
    /// difference.
    #[command(alias = "fix-resources")]
    Reconcile {
        /// Report what would be fixed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The cluster at a glance: workers (active, draining, down), running
    /// and queued tasks, resources allocated.
    Status,
    /// One worker: totals, allocated, available, its running attempts and
    /// its last heartbeat.
    Stats {
        /// The worker's name or id.
        #[arg(value_name = "WORKER")]
        worker: String,
    },
    /// A table of every worker: id, state, allocated/total per resource,
    /// running attempts, last seen.
    InternalState,
    /// Submit a task that only WORKER may run: `berth dispatch WORKER
    /// [IMAGE] [submit flags] [-- COMMAND]` (the same as `task submit
    /// --worker WORKER`). It waits for capacity there, and is refused if
    /// that worker could never fit it.
    Dispatch(Box<DispatchArgs>),
    /// Stop placing new tasks on a worker; the ones it runs finish. The
    /// drain is kept in the records (`workers` shows it).
    Drain {
        /// The worker's name.
        #[arg(value_name = "WORKER")]
        worker: String,
    },
    /// Undo a drain: the worker takes new tasks again.
    Undrain {
        /// The worker's name.
        #[arg(value_name = "WORKER")]
        worker: String,
    },
    /// Remove a drained (or down) worker that runs nothing from the
    /// records. Its agent must be stopped first (a connected worker is
    /// refused: it would join again at once); unregistering also takes the
    /// name off the registered list of --require-registration.
    Unregister {
        /// The worker's name.
        #[arg(value_name = "WORKER")]
        worker: String,
        /// The worker's machine is gone for good: its attempts whose fate is
        /// unknown (it went silent while they ran) are recorded lost and
        /// their resources released. Only for a worker declared down.
        #[arg(long)]
        confirm_dead: bool,
    },
    /// Allow a worker name to join a master started with
    /// --require-registration.
    Register {
        /// The worker's name, as its agent gives it with `--name`.
        #[arg(value_name = "WORKER")]
        worker: String,
    },
    /// Measure the scheduler and the whole path: prints one JSON line of
    /// figures (scenario, workers, tasks, placements_per_s, tasks_per_s,
    /// p50_ms, p99_ms, seconds, bytes_per_task, where they apply).
    #[command(after_help = "Scenarios:
  place    the master's state loop and the SQLite store on disk placing tasks on simulated
           workers (default 10000 workers, 200000 tasks): placements/s, submit→placed p50/p99
  e2e      a master and one real worker process over gRPC running `true` (default 10000
           tasks): tasks/s, submit→running and submit→done p50/p99
  recover  master start on a store of task records (default 1000000): time to serve
  memory   master resident memory per task record held
  scale    `place` at 100, 1000 and 10000 workers

Timings mean something only from a release build: `cargo build --release`, then
`target/release/berth bench place`. A debug build runs the same code many times slower.")]
    Bench(BenchArgs),
    /// Print a shell completion script (e.g. `berth completions bash >
    /// /etc/bash_completion.d/berth`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and each of its commands into DIR
    /// (`berth.1`, `berth-task-submit.1`, …; e.g. `berth man
    /// /usr/local/share/man/man1`).
    Man {
        /// Where to write them (created if missing).
        dir: std::path::PathBuf,
    },
}

/// `berth master`: its settings' flags come from the key table
/// (`config::keys`).
#[derive(Debug, Args)]
pub struct MasterArgs {
    #[command(flatten)]
    pub settings: SettingFlags<MasterFlags>,
    /// Print the effective configuration (flags, BERTH_*, config file and
    /// defaults merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub settings: SettingFlags<WorkerFlags>,
    /// Print the effective configuration (flags, BERTH_*, config file and
    /// defaults merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub settings: SettingFlags<DevFlags>,
    /// Print the effective configuration (flags, BERTH_*, config file and
    /// defaults merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task: with IMAGE a container (docker driver), without one a
    /// process; the command goes after `--`. Prints the task id.
    Submit(Box<SubmitArgs>),
    /// List tasks.
    List {
        /// Only tasks in this state (queued, assigned, running, succeeded,
        /// failed, cancelled, all).
        #[arg(long)]
        state: Option<String>,
        /// Every task, not only the first page (active tasks, then the
        /// most recent finished ones).
        #[arg(long)]
        all: bool,
    },
    /// A task's state, exit code, reason and attempts.
    Show {
        #[arg(value_parser = task_id, value_name = "ID")]
        id: u64,
    },
    /// Write a task's output to stdout.
    Logs {
        #[arg(value_parser = task_id, value_name = "ID")]
        id: u64,
        /// Keep streaming until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task.
    Cancel {
        #[arg(value_parser = task_id, value_name = "ID")]
        id: u64,
    },
    /// A task's output files (PATH and SIZE in bytes); without ID, every
    /// task that has any.
    Files {
        #[arg(value_parser = task_id, value_name = "ID")]
        id: Option<u64>,
    },
    /// Write every output file of a task under DIR (default ./task-ID),
    /// keeping their relative paths.
    Download {
        #[arg(value_parser = task_id, value_name = "ID")]
        id: u64,
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Container image; without it the task runs as a process.
    pub image: Option<String>,
    /// CPU cores [default: 1].
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpu: Option<String>,
    /// Memory, e.g. 512M, 2G; bare number = GB [default: 0.5G].
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Storage; bare number = GB [default: 0].
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub storage: Option<String>,
    /// Whole GPUs [default: 0].
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub gpus: Option<String>,
    /// A name to show in lists.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable for the task (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Placements allowed after lost attempts (worker died) [default: 3].
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub retries: Option<String>,
    /// Time limit of one attempt, e.g. 90s, 30m, 2h; it is stopped and
    /// recorded as timed out when it runs longer.
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// At most once: the worker stops the task once it has heard nothing
    /// from the master for this long (e.g. 30s), recording it
    /// `disconnected`, and a replacement is placed only after that; without
    /// it a network cut never stops a running task.
    #[arg(long, allow_hyphen_values = true, value_name = "DURATION")]
    pub stop_after_disconnect: Option<String>,
    /// Higher runs first; tasks of one priority run in submission order
    /// (-1000 to 1000) [default: 0].
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub priority: Option<String>,
    /// Run only on a worker with this label (`berth worker --label`);
    /// repeatable, all must match.
    #[arg(long = "constraint", value_name = "KEY=VALUE")]
    pub constraints: Vec<String>,
    /// `binpack` or `spread`, instead of the master's --strategy.
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<String>,
    /// Only this worker may run the task (as `berth dispatch`).
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// Queue even when no registered worker could ever fit the task.
    #[arg(long)]
    pub queue_anyway: bool,
    /// Wait for the task to end, showing its state changes, and exit with
    /// its exit code (0 succeeded; the task's own code when it failed with
    /// one; 124 timed out; 130 cancelled; 1 failed without a code).
    #[arg(long)]
    pub wait: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `berth dispatch WORKER [IMAGE] [flags] [-- COMMAND]`.
#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// The worker that must run the task (its name).
    #[arg(value_name = "WORKER")]
    pub target: String,
    #[command(flatten)]
    pub submit: SubmitArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_name = "SCENARIO", value_parser = clap::builder::PossibleValuesParser::new(berth_bench::SCENARIOS))]
    pub scenario: String,
    /// Simulated workers (`place`: default 10000).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Tasks (default: the scenario's documented size).
    #[arg(long, value_name = "N")]
    pub tasks: Option<usize>,
    /// Where to put the scratch data (default: the system's temporary
    /// folder); it is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn task_id(s: &str) -> Result<u64, String> {
    parse_task_id(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn submit_takes_the_command_after_double_dash() {
        let cli = parse(&[
            "task", "submit", "--cpu", "2", "--env", "A=1", "--env", "B=2", "--", "sh", "-c",
            "exit 3",
        ]);
        let Command::Task(TaskCommand::Submit(s)) = cli.command else {
            panic!()
        };
        assert_eq!(s.image, None);
        assert_eq!(s.cpu.as_deref(), Some("2"));
        assert_eq!(s.env, ["A=1", "B=2"]);
        assert_eq!(s.command, ["sh", "-c", "exit 3"]);

        let cli = parse(&["task", "submit", "ubuntu:latest", "--cpu", "-1", "--json"]);
        assert!(cli.json);
        let Command::Task(TaskCommand::Submit(s)) = cli.command else {
            panic!()
        };
        assert_eq!(s.image.as_deref(), Some("ubuntu:latest"));
        assert_eq!(s.cpu.as_deref(), Some("-1"));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&[
            "--json",
            "workers",
            "--master",
            "http://m:1",
            "--token",
            "t",
        ]);
        assert!(cli.json);
        let given = cli.client.given();
        assert_eq!(
            given,
            [
                ("master", toml::Value::String("http://m:1".into())),
                ("token", toml::Value::String("t".into()))
            ]
        );
        let cli = parse(&["fix-resources", "--dry-run"]);
        assert!(matches!(cli.command, Command::Reconcile { dry_run: true }));
    }

    #[test]
    fn dispatch_takes_the_worker_then_submit_flags() {
        let cli = parse(&[
            "dispatch",
            "Tessa",
            "ubuntu:latest",
            "--priority",
            "-2",
            "--constraint",
            "gpu=a100",
            "--constraint",
            "zone=b",
            "--strategy",
            "spread",
            "--",
            "sleep",
            "1",
        ]);
        let Command::Dispatch(d) = cli.command else {
            panic!()
        };
        assert_eq!(d.target, "Tessa");
        assert_eq!(d.submit.image.as_deref(), Some("ubuntu:latest"));
        assert_eq!(d.submit.priority.as_deref(), Some("-2"));
        assert_eq!(d.submit.constraints, ["gpu=a100", "zone=b"]);
        assert_eq!(d.submit.strategy.as_deref(), Some("spread"));
        assert_eq!(d.submit.command, ["sleep", "1"]);
        let cli = parse(&["dispatch", "Tessa", "--", "true"]);
        let Command::Dispatch(d) = cli.command else {
            panic!()
        };
        assert_eq!(d.submit.image, None);
        assert_eq!(d.submit.command, ["true"]);
        let cli = parse(&["task", "submit", "--worker", "Uma", "--", "true"]);
        let Command::Task(TaskCommand::Submit(s)) = cli.command else {
            panic!()
        };
        assert_eq!(s.worker.as_deref(), Some("Uma"));
    }

    #[test]
    fn operator_and_bench_commands() {
        assert!(
            matches!(parse(&["drain", "Tessa"]).command, Command::Drain { worker } if worker == "Tessa")
        );
        assert!(
            matches!(parse(&["undrain", "Tessa"]).command, Command::Undrain { worker } if worker == "Tessa")
        );
        assert!(matches!(
            parse(&["unregister", "Tessa"]).command,
            Command::Unregister { .. }
        ));
        assert!(matches!(
            parse(&["register", "Tessa"]).command,
            Command::Register { .. }
        ));
        let cli = parse(&["bench", "place", "--workers", "50", "--tasks", "2000"]);
        let Command::Bench(b) = cli.command else {
            panic!()
        };
        assert_eq!(
            (b.scenario.as_str(), b.workers, b.tasks),
            ("place", Some(50), Some(2000))
        );
        let e = Cli::try_parse_from(["berth", "bench", "fastest"])
            .unwrap_err()
            .to_string();
        for s in berth_bench::SCENARIOS {
            assert!(e.contains(s), "{e}");
        }
        let cli = parse(&[
            "master",
            "--strategy",
            "spread",
            "--starvation-wait",
            "2s",
            "--require-registration",
        ]);
        let Command::Master(m) = cli.command else {
            panic!()
        };
        let given = m.settings.given();
        assert_eq!(
            given,
            [
                ("strategy", toml::Value::String("spread".into())),
                ("starvation_wait", toml::Value::String("2s".into())),
                ("require_registration", toml::Value::Boolean(true))
            ]
        );
        assert!(Cli::try_parse_from(["berth", "master", "--strategy", "random"]).is_err());
    }

    #[test]
    fn task_ids_are_checked_by_clap() {
        assert!(Cli::try_parse_from(["berth", "task", "show", "abc"]).is_err());
        let cli = parse(&["task", "logs", "-f", "3"]);
        assert!(matches!(
            cli.command,
            Command::Task(TaskCommand::Logs {
                id: 3,
                follow: true
            })
        ));
    }
}
