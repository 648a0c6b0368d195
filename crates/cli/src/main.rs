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
mod input;
mod json;
mod render;
mod serve;
mod shell;

use args::{Cli, Command, HeartbeatArgs, ResourceArgs, TaskCommand};
use clap::{CommandFactory, Parser};
use client::Client;
use commands::{Mode, Request};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.json && !accepts_json(&cli.command) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--json applies to task submit/list/show/cancel, workers, queue and reconcile",
            )
            .exit();
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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn accepts_json(cmd: &Command) -> bool {
    match cmd {
        Command::Master(_) | Command::Worker(_) | Command::Dev(_) | Command::Shell => false,
        Command::Task(TaskCommand::Logs { .. }) => false,
        Command::Task(_) | Command::Workers | Command::Queue | Command::Reconcile { .. } => true,
    }
}

/// Run the command; `Ok(false)` means it ran but something in it failed.
fn run(rt: &tokio::runtime::Runtime, cli: Cli) -> anyhow::Result<bool> {
    let token = cli.token.unwrap_or_default();
    match cli.command {
        Command::Master(a) => {
            let config = master_config(a.listen, a.http.0, a.data_dir, &a.heartbeat)?;
            serve::master(rt, config)
        }
        Command::Worker(a) => {
            let mut config = berth_worker::WorkerConfig::new(
                client::normalize_url(&cli.master),
                token,
                a.name.unwrap_or_else(serve::hostname),
                absolute(&a.data_dir)?,
            );
            if let Some(grace) = a.stop_grace {
                config.stop_grace = grace;
            }
            config.drain_on_exit = a.drain_on_exit;
            overrides(&a.resources).apply(&mut config)?;
            serve::worker(rt, config)
        }
        Command::Dev(a) => {
            let config = master_config(a.listen, a.http.0, a.data_dir, &a.heartbeat)?;
            let name = a.name.unwrap_or_else(serve::hostname);
            serve::dev(rt, config, name, a.stop_grace, &overrides(&a.resources))
        }
        Command::Shell => {
            serve::init_logging(None, "warn")?;
            let client = rt.block_on(Client::connect(&cli.master, &token))?;
            let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".berth_history"));
            let opts = shell::ShellOptions {
                prompt: "berth> ".to_string(),
                history,
            };
            shell::run(rt, &client, opts)
        }
        other => {
            serve::init_logging(None, "warn")?;
            let request = request(other)?;
            let mode = if cli.json { Mode::Json } else { Mode::Plain };
            rt.block_on(async {
                let client = Client::connect(&cli.master, &token).await?;
                commands::execute(&client, &request, mode).await
            })?;
            Ok(true)
        }
    }
}

/// A client subcommand as a validated request; nothing is sent yet.
fn request(cmd: Command) -> anyhow::Result<Request> {
    Ok(match cmd {
        Command::Task(TaskCommand::Submit(s)) => {
            let spec_input = input::SpecInput {
                image: s.image,
                cpu: s.cpu,
                mem: s.mem,
                storage: s.storage,
                gpus: s.gpus,
                name: s.name,
                env: s.env,
                retries: s.retries,
                timeout: s.timeout,
                command: s.command,
            };
            let spec = input::build_spec(&spec_input, &input::CLI_FLAGS)?;
            Request::Submit {
                spec,
                queue_anyway: s.queue_anyway,
            }
        }
        Command::Task(TaskCommand::List { state }) => Request::ListTasks {
            state: input::parse_state_filter(state.as_deref()).map_err(anyhow::Error::msg)?,
        },
        Command::Task(TaskCommand::Show { id }) => Request::Show { task_id: id },
        Command::Task(TaskCommand::Logs { id, follow }) => Request::Logs {
            task_id: id,
            follow,
        },
        Command::Task(TaskCommand::Cancel { id }) => Request::Cancel { task_id: id },
        Command::Workers => Request::Workers,
        Command::Queue => Request::Queue,
        Command::Reconcile { dry_run } => Request::Reconcile { dry_run },
        Command::Master(_) | Command::Worker(_) | Command::Dev(_) | Command::Shell => {
            unreachable!("handled by run")
        }
    })
}

fn master_config(
    listen: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    data_dir: PathBuf,
    hb: &HeartbeatArgs,
) -> anyhow::Result<berth_master::MasterConfig> {
    let mut config = berth_master::MasterConfig::new(listen, absolute(&data_dir)?);
    config.http = http;
    config.heartbeat_interval = hb.heartbeat_interval;
    config.heartbeat_ttl = hb.heartbeat_ttl;
    config.reconcile_interval = hb.reconcile_interval;
    config.validate()?;
    Ok(config)
}

/// Data directories are made absolute once, here: the master and worker
/// hand them to child processes that may run elsewhere.
fn absolute(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir)
        .map_err(|e| anyhow::anyhow!("cannot resolve the data directory {}: {e}", dir.display()))
}

fn overrides(r: &ResourceArgs) -> serve::Overrides {
    serve::Overrides {
        cpus: r.cpus.clone(),
        memory: r.memory.clone(),
        storage: r.storage.clone(),
        gpus: r.gpus.clone(),
    }
}
