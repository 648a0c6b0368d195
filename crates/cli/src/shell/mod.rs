//! The interactive shell: the predecessor's commands (`task`, `workers`,
//! `fix-resources`, …) against one master, over the same client API the
//! subcommands use.
//!
//! On a terminal it uses rustyline (prompt, line editing, history kept in a
//! file; a history that cannot be opened is not fatal) and Ctrl-C stops the
//! running command, not the process. Without a terminal it reads lines from
//! stdin with no prompt, so scripts and tests can drive it
//! (`echo workers | berth shell`).
//!
//! On a terminal, Tab completes commands, flags, task ids and worker names
//! ([`complete`]), and `status` / `stats` redraw live ([`views`]).
//!
//! Parsing lives in [`parse`] (pure); this module only reads lines, runs
//! requests and prints.

pub mod complete;
pub mod parse;
pub mod tokenize;
pub mod views;

use crate::client::Client;
use crate::commands::{self, Mode, Request};
use parse::{ShellCommand, help_text, parse_line};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Where and how the shell runs.
pub struct ShellOptions {
    /// Shown on a terminal before each line.
    pub prompt: String,
    /// History file (terminal only).
    pub history: Option<PathBuf>,
}

/// Run the shell until `exit`, `quit` or end of input. Returns whether
/// every command succeeded (what a script reading stdin should exit with).
pub fn run(rt: &Runtime, client: &Client, opts: ShellOptions) -> anyhow::Result<bool> {
    if std::io::stdin().is_terminal() {
        run_terminal(rt, client, opts)
    } else {
        Ok(run_piped(rt, client))
    }
}

/// One line: parse, run, print. Returns false when the shell should stop,
/// and records a failure in `ok`.
fn handle_line(
    rt: &Runtime,
    client: &Client,
    line: &str,
    sigint: Option<&mut Signal>,
    ok: &mut bool,
) -> bool {
    let cmd = match parse_line(line) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("error: {e}");
            *ok = false;
            return true;
        }
    };
    match cmd {
        ShellCommand::Empty => {}
        ShellCommand::Exit => return false,
        ShellCommand::Help(topic) => match help_text(topic.as_deref()) {
            Ok(text) => commands::emit(&text),
            Err(e) => {
                eprintln!("error: {e}");
                *ok = false;
            }
        },
        ShellCommand::Request(req) => {
            if let Err(e) = run_request(rt, client, &req, sigint) {
                eprintln!("error: {e:#}");
                *ok = false;
            }
        }
    }
    true
}

/// Run one request; with `sigint`, Ctrl-C abandons it and returns to the
/// prompt (the master keeps whatever it already accepted).
fn run_request(
    rt: &Runtime,
    client: &Client,
    req: &Request,
    sigint: Option<&mut Signal>,
) -> anyhow::Result<()> {
    let Some(sigint) = sigint else {
        return rt.block_on(commands::execute(client, req, Mode::Shell));
    };
    rt.block_on(async {
        drain(sigint).await;
        tokio::select! {
            r = commands::execute(client, req, Mode::Shell) => r,
            _ = sigint.recv() => {
                match req {
                    Request::Logs { task_id, follow: true } => {
                        eprintln!("\nstopped monitoring task {task_id}; it keeps running");
                    }
                    _ => eprintln!("\ninterrupted"),
                }
                Ok(())
            }
        }
    })
}

/// Forget Ctrl-C presses that arrived between commands.
async fn drain(sigint: &mut Signal) {
    loop {
        tokio::select! {
            biased;
            Some(()) = sigint.recv() => continue,
            _ = std::future::ready(()) => break,
        }
    }
}

fn run_terminal(rt: &Runtime, client: &Client, opts: ShellOptions) -> anyhow::Result<bool> {
    let mut editor: Editor<complete::ShellHelper, DefaultHistory> = Editor::with_config(
        Config::builder()
            .completion_type(rustyline::CompletionType::List)
            .build(),
    )?;
    editor.set_helper(Some(complete::ShellHelper {
        lookup: Box::new(complete::MasterLookup {
            rt: rt.handle().clone(),
            client: client.clone(),
        }),
    }));
    if let Some(path) = &opts.history {
        // A missing or unreadable history only costs the user their history.
        let _ = editor.load_history(path);
    }
    let mut sigint = {
        let _guard = rt.enter();
        signal(SignalKind::interrupt())?
    };
    println!(
        "berth shell on {}. Type help for commands, exit (or Ctrl-D) to leave.",
        client.url()
    );
    let mut ok = true;
    let mut history_warned = false;
    loop {
        let line = match editor.readline(&opts.prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: reading input: {e}");
                break;
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &opts.history
                && let Err(e) = editor.save_history(path)
                && !history_warned
            {
                eprintln!("warning: cannot save history to {}: {e}", path.display());
                history_warned = true;
            }
        }
        if !handle_line(rt, client, &line, Some(&mut sigint), &mut ok) {
            break;
        }
    }
    Ok(ok)
}

fn run_piped(rt: &Runtime, client: &Client) -> bool {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut ok = true;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return false;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if !handle_line(rt, client, line, None, &mut ok) {
            break;
        }
    }
    ok
}
