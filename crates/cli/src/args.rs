//! The command line, as clap types: global flags, one variant per
//! subcommand, and the value parsers for addresses, durations and task
//! ids. Resource amounts stay strings here; `input` and `serve` convert
//! them with core's unit parsers so every surface reports errors alike.

use crate::input::parse_task_id;
use clap::{Args, Parser, Subcommand};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_MASTER: &str = "http://127.0.0.1:7700";

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: run tasks on a pool of worker machines",
    after_help = "Start a cluster with `berth master` and `berth worker`, or both at once with `berth dev`."
)]
pub struct Cli {
    /// The master's gRPC URL.
    #[arg(
        long,
        global = true,
        env = "BERTH_MASTER",
        default_value = DEFAULT_MASTER,
        value_name = "URL"
    )]
    pub master: String,

    /// The cluster token (printed by the master at first start, kept in its
    /// DATA_DIR/token).
    #[arg(
        long,
        global = true,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

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
}

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// How often workers send heartbeats (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,
    /// How long without a heartbeat before a worker is considered down.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_ttl: Duration,
    /// How often the master audits allocations against its records (it
    /// also does at start and on `reconcile`).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_interval: Duration,
}

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7700", value_parser = parse_addr, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// HTTP listen address, or `off`.
    #[arg(long, default_value = "127.0.0.1:7701", value_parser = parse_http, value_name = "ADDR")]
    pub http: HttpAddr,
    /// Database, token, logs.
    #[arg(long, default_value = "./berth-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
}

/// Worker sizes that replace detection. Sizes take K/M/G/T suffixes; a
/// bare number is GB.
#[derive(Debug, Args)]
pub struct ResourceArgs {
    /// CPU cores to offer (e.g. 4, 2.5).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpus: Option<String>,
    /// Memory to offer (e.g. 8G, 512M; bare number = GB).
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Storage to offer (e.g. 100G; bare number = GB).
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub storage: Option<String>,
    /// GPUs to offer (whole devices).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub gpus: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// This worker's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Node id, attempt state and logs.
    #[arg(long, default_value = "./berth-worker", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when a task is stopped [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub stop_grace: Option<Duration>,
    /// On SIGTERM/SIGINT, take no new work and wait for running tasks to
    /// finish before exiting (default: exit at once; tasks keep running and
    /// are re-attached at the next start).
    #[arg(long)]
    pub drain_on_exit: bool,
    #[command(flatten)]
    pub resources: ResourceArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Master data; the worker's is DATA_DIR/worker.
    #[arg(long, default_value = ".berth-dev", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7700", value_parser = parse_addr, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// HTTP listen address, or `off`.
    #[arg(long, default_value = "127.0.0.1:7701", value_parser = parse_http, value_name = "ADDR")]
    pub http: HttpAddr,
    /// The local worker's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    /// Time between SIGTERM and SIGKILL when a task is stopped [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub stop_grace: Option<Duration>,
    #[command(flatten)]
    pub resources: ResourceArgs,
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
    /// Queue even when no registered worker could ever fit the task.
    #[arg(long)]
    pub queue_anyway: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// An HTTP listen address, or none (`off`).
#[derive(Debug, Clone, Copy)]
pub struct HttpAddr(pub Option<SocketAddr>);

fn task_id(s: &str) -> Result<u64, String> {
    parse_task_id(s)
}

/// `HOST:PORT`; a host name is resolved (first address).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

fn parse_http(s: &str) -> Result<HttpAddr, String> {
    match s {
        "off" | "none" | "" => Ok(HttpAddr(None)),
        _ => parse_addr(s).map(|a| HttpAddr(Some(a))),
    }
}

/// `500ms`, `1s`, `1.5s`, `2m`, `1h`; a bare number is seconds. Must be
/// positive and at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1000.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 1s, 2m)"))?;
    let ms = v * unit_ms;
    if !ms.is_finite() || ms < 1.0 {
        return Err(format!("'{s}' must be at least 1ms"));
    }
    if ms > 86_400_000.0 {
        return Err(format!("'{s}' is longer than a day"));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["0s", "-1s", "abc", "NaNs", "2d", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_addr("localhost:7700").is_ok());
        assert!(parse_addr("nonsense").is_err());
        assert!(parse_http("off").unwrap().0.is_none());
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
        assert_eq!(cli.master, "http://m:1");
        assert_eq!(cli.token.as_deref(), Some("t"));
        let cli = parse(&["fix-resources", "--dry-run"]);
        assert!(matches!(cli.command, Command::Reconcile { dry_run: true }));
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
