//! `berth`: the one binary. Parses the command line (`args`), then either
//! runs a long-lived role (`serve`: master, worker, dev), opens the shell
//! (`shell`), or sends one request to the master (`commands`).
//!
//! Exit codes: 0 on success; 1 when anything failed (the master refused a
//! request, it could not be reached, input was invalid, or a piped shell
//! script had a failing line); 2 for command-line syntax errors (clap).
//! Errors are printed to stderr as `error: <message>`.

mod args;
mod client;
mod commands;
mod config;
mod contact;
mod download;
mod input;
mod json;
mod logging;
mod man;
mod render;
mod serve;
mod shell;
mod wait;

use args::{BenchArgs, Cli, Command, TaskCommand};
use clap::{CommandFactory, Parser};
use client::Client;
use commands::{Mode, Request, WorkerAction};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.json && !accepts_json(&cli.command) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--json applies to the client commands (task …, workers, queue, reconcile, status, stats, internal-state)",
            )
            .exit();
    }
    if let Command::Bench(b) = &cli.command {
        // The harness builds its own runtime; nothing else runs here.
        return bench(b);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&rt, cli);
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn accepts_json(cmd: &Command) -> bool {
    match cmd {
        Command::Master(_) | Command::Worker(_) | Command::Dev(_) | Command::Shell => false,
        Command::Completions { .. } | Command::Man { .. } => false,
        Command::Task(_) | Command::Workers | Command::Queue | Command::Reconcile { .. } => true,
        Command::Status | Command::Stats { .. } | Command::InternalState => true,
        Command::Dispatch(_)
        | Command::Drain { .. }
        | Command::Undrain { .. }
        | Command::Unregister { .. }
        | Command::Register { .. } => true,
        // Its figures are JSON lines already.
        Command::Bench(_) => true,
    }
}

/// `berth bench SCENARIO`: run one scenario of the harness, which prints
/// its JSON line(s) to stdout.
fn bench(b: &BenchArgs) -> ExitCode {
    let berth_binary = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this berth binary (the e2e scenario starts it): {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = berth_bench::Options {
        workers: b.workers,
        tasks: b.tasks,
        dir: b.dir.clone(),
        berth_binary,
    };
    match berth_bench::run(&b.scenario, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: bench {}: {e}", b.scenario);
            ExitCode::FAILURE
        }
    }
}

/// `berth dispatch WORKER …` is `berth task submit --worker WORKER …`.
fn dispatch_as_submit(cmd: Command) -> anyhow::Result<Command> {
    let Command::Dispatch(d) = cmd else {
        return Ok(cmd);
    };
    let args::DispatchArgs { target, mut submit } = *d;
    if let Some(w) = &submit.worker {
        anyhow::bail!("dispatch names its worker ({target}) already; leave out --worker {w}");
    }
    submit.worker = Some(target);
    Ok(Command::Task(TaskCommand::Submit(Box::new(submit))))
}

/// 0 when it all worked, 1 when something in it failed.
fn code(ok: bool) -> u8 {
    if ok { 0 } else { 1 }
}

/// Run the command; returns the process exit code (0 success, 1 something
/// in it failed; `task submit --wait` returns the task's, see `wait`).
fn run(rt: &tokio::runtime::Runtime, cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completions { shell } = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "berth", &mut out);
        commands::emit(&String::from_utf8_lossy(&out));
        return Ok(0);
    }
    if let Command::Man { dir } = &cli.command {
        let n = man::write_pages(Cli::command(), dir)?;
        commands::emit(&format!("wrote {n} man pages to {}\n", dir.display()));
        return Ok(0);
    }
    let cli = Cli {
        command: dispatch_as_submit(cli.command)?,
        ..cli
    };
    let sources = config::Sources::load(cli.config.as_deref())?;
    let file = sources.file_path();
    match cli.command {
        Command::Master(a) => {
            let settings = sources.master(&a)?;
            if a.print_config {
                commands::emit(&settings.to_toml(file));
                return Ok(0);
            }
            serve::node(rt, settings.node()).map(code)
        }
        Command::Worker(a) => {
            let settings = sources.worker(&a, &cli.client)?;
            if a.print_config {
                commands::emit(&settings.to_toml(file));
                return Ok(0);
            }
            serve::worker(rt, settings.config(), settings.log_format()).map(code)
        }
        Command::Dev(a) => {
            let settings = sources.dev(&a)?;
            if a.print_config {
                commands::emit(&settings.to_toml(file));
                return Ok(0);
            }
            serve::node(rt, settings.node()).map(code)
        }
        Command::Shell => {
            logging::init(None, "warn", logging::LogFormat::Text)?;
            let c = sources.client(&cli.client)?.value;
            let client = rt.block_on(Client::connect(&c.master, &c.token))?;
            let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".berth_history"));
            let opts = shell::ShellOptions {
                prompt: "berth> ".to_string(),
                history,
            };
            shell::run(rt, &client, opts).map(code)
        }
        Command::Task(TaskCommand::Submit(s)) if s.wait => {
            logging::init(None, "warn", logging::LogFormat::Text)?;
            let c = sources.client(&cli.client)?.value;
            let Request::Submit { spec, queue_anyway } =
                request(Command::Task(TaskCommand::Submit(s)))?
            else {
                unreachable!("a submit is a submit")
            };
            rt.block_on(async {
                let client = Client::connect(&c.master, &c.token).await?;
                wait::submit_and_wait(&client, spec, queue_anyway, cli.json).await
            })
        }
        other => {
            logging::init(None, "warn", logging::LogFormat::Text)?;
            let c = sources.client(&cli.client)?.value;
            let request = request(other)?;
            let mode = if cli.json { Mode::Json } else { Mode::Plain };
            rt.block_on(async {
                let client = Client::connect(&c.master, &c.token).await?;
                commands::execute(&client, &request, mode).await
            })?;
            Ok(0)
        }
    }
}

/// A client subcommand as a validated request; nothing is sent yet.
fn request(cmd: Command) -> anyhow::Result<Request> {
    Ok(match cmd {
        Command::Task(TaskCommand::Submit(s)) => {
            use berth_core::Raw;
            let spec_input = berth_core::SpecInput {
                image: Raw::text(s.image),
                cpu: Raw::text(s.cpu),
                memory: Raw::text(s.mem),
                storage: Raw::text(s.storage),
                gpus: Raw::text(s.gpus),
                name: Raw::text(s.name),
                env: Raw::words(s.env),
                retries: Raw::text(s.retries),
                timeout: Raw::text(s.timeout),
                stop_after_disconnect: Raw::text(s.stop_after_disconnect),
                priority: Raw::text(s.priority),
                constraints: Raw::words(s.constraints),
                strategy: Raw::text(s.strategy),
                worker: Raw::text(s.worker),
                command: Raw::words(s.command),
            };
            let spec = input::build_spec(&spec_input, &input::CLI_FLAGS)?;
            Request::Submit {
                spec,
                queue_anyway: s.queue_anyway,
            }
        }
        Command::Task(TaskCommand::List { state, all }) => {
            let state = input::parse_state_filter(state.as_deref()).map_err(anyhow::Error::msg)?;
            if all {
                Request::ListAllTasks { state }
            } else {
                Request::ListTasks { state }
            }
        }
        Command::Task(TaskCommand::Show { id }) => Request::Show { task_id: id },
        Command::Task(TaskCommand::Logs { id, follow }) => Request::Logs {
            task_id: id,
            follow,
        },
        Command::Task(TaskCommand::Cancel { id }) => Request::Cancel { task_id: id },
        Command::Task(TaskCommand::Files { id: Some(id) }) => Request::Files { task_id: id },
        Command::Task(TaskCommand::Files { id: None }) => Request::Outputs,
        Command::Task(TaskCommand::Download { id, dir }) => Request::Download { task_id: id, dir },
        Command::Workers => Request::Workers,
        Command::Queue => Request::Queue,
        Command::Reconcile { dry_run } => Request::Reconcile { dry_run },
        Command::Status => Request::Status,
        Command::Stats { worker } => Request::Stats { worker },
        Command::InternalState => Request::InternalState,
        Command::Undrain { worker } => Request::Worker {
            action: WorkerAction::Undrain,
            name: worker,
        },
        Command::Drain { worker } => Request::Worker {
            action: WorkerAction::Drain,
            name: worker,
        },
        Command::Unregister {
            worker,
            confirm_dead,
        } => Request::Worker {
            action: if confirm_dead {
                WorkerAction::UnregisterDead
            } else {
                WorkerAction::Unregister
            },
            name: worker,
        },
        Command::Register { worker } => Request::Worker {
            action: WorkerAction::Register,
            name: worker,
        },
        Command::Master(_)
        | Command::Worker(_)
        | Command::Dev(_)
        | Command::Shell
        | Command::Dispatch(_)
        | Command::Bench(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled by run")
        }
    })
}
