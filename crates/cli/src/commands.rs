//! The client requests both surfaces send — `berth task …`, `berth workers`,
//! `berth queue`, `berth reconcile` and their shell spellings — already
//! parsed and validated into a [`Request`], and how each one's answer is
//! printed (human, `--json`, or the shell's wording).

use crate::client::Client;
use crate::contact::Contact;
use crate::{json, render};
use berth_core::{TaskSpec, TaskState};
use berth_proto::v1;
use std::io::Write;

/// One validated client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Submit {
        spec: TaskSpec,
        queue_anyway: bool,
    },
    /// The first page of tasks, and how many more there are.
    ListTasks {
        state: Option<TaskState>,
    },
    /// Every task, page after page (`task list --all`).
    ListAllTasks {
        state: Option<TaskState>,
    },
    Queue,
    Show {
        task_id: u64,
    },
    Logs {
        task_id: u64,
        follow: bool,
    },
    Cancel {
        task_id: u64,
    },
    Workers,
    Reconcile {
        dry_run: bool,
    },
    /// The cluster at a glance (`status`).
    Status,
    /// One worker in detail (`stats <worker>`), by name or id.
    Stats {
        worker: String,
    },
    /// Every worker in one table (`internal-state`).
    InternalState,
    /// A task's output files (`task files ID`, `task-files <task>`).
    Files {
        task_id: u64,
    },
    /// Every task that has output files (`files`, `task files`).
    Outputs,
    /// Fetch a task's output files into `dir` (default `./task-ID`).
    Download {
        task_id: u64,
        dir: Option<std::path::PathBuf>,
    },
    /// An operator action on one worker, by name (`drain`, `undrain`,
    /// `unregister`, `register`).
    Worker {
        action: WorkerAction,
        name: String,
    },
}

/// What an operator can do to a worker by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerAction {
    /// No new placements; running tasks finish.
    Drain,
    /// Take new tasks again after a drain.
    Undrain,
    /// Remove a drained (or down) worker that runs nothing.
    Unregister,
    /// Unregister a down worker whose machine is gone: its attempts whose
    /// fate is unknown are recorded lost (`--confirm-dead`).
    UnregisterDead,
    /// Allow the name to join (with `--require-registration`).
    Register,
}

impl WorkerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerAction::Drain => "drain",
            WorkerAction::Undrain => "undrain",
            WorkerAction::Unregister | WorkerAction::UnregisterDead => "unregister",
            WorkerAction::Register => "register",
        }
    }
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Scriptable subcommands, human text.
    Plain,
    /// Scriptable subcommands with `--json`.
    Json,
    /// The interactive shell: friendlier wording, `monitor` semantics for
    /// followed logs.
    Shell,
}

/// Send one request and print its answer to stdout.
pub async fn execute(client: &Client, req: &Request, mode: Mode) -> anyhow::Result<()> {
    let as_json = mode == Mode::Json;
    match req {
        Request::Submit { spec, queue_anyway } => {
            let id = client.submit(spec.clone().into(), *queue_anyway).await?;
            match mode {
                Mode::Json => emit_json(&json::submitted(id)),
                Mode::Plain => emit(&format!("{id}\n")),
                Mode::Shell => {
                    let what = match &spec.image {
                        Some(image) => format!("docker {image}"),
                        None => format!("process {}", render::quote_command(&spec.command)),
                    };
                    let pinned = match &spec.pinned_worker {
                        Some(w) => format!("; on worker {w} only"),
                        None => String::new(),
                    };
                    emit(&format!(
                        "✓ Task {id} submitted ({what}; {}{pinned})\n",
                        render::resources_line(&spec.resources)
                    ));
                }
            }
        }
        Request::ListTasks { state } => {
            let filter = state.map(|s| s.as_str()).unwrap_or("");
            let page = client.list_page(filter, 0, "").await?;
            if as_json {
                emit_json(&json::tasks(&page.tasks));
            } else {
                emit(&render::task_table(&page.tasks));
            }
            if page.remaining > 0 {
                let more = render::more_tasks(page.remaining, *state);
                if as_json {
                    eprint!("{more}"); // stdout stays one JSON document
                } else {
                    emit(&more);
                }
            }
        }
        Request::ListAllTasks { state } => {
            let filter = state.map(|s| s.as_str()).unwrap_or("");
            let tasks = client.list_tasks(filter).await?;
            if as_json {
                emit_json(&json::tasks(&tasks));
            } else {
                emit(&render::task_table(&tasks));
            }
        }
        Request::Queue => {
            let tasks = client.list_tasks(TaskState::Queued.as_str()).await?;
            if as_json {
                emit_json(&json::tasks(&tasks));
            } else {
                emit(&render::queue(&tasks));
            }
        }
        Request::Show { task_id } => {
            let task = client.get_task(*task_id).await?;
            if as_json {
                emit_json(&json::task(&task));
            } else {
                emit(&render::task_detail(&task));
            }
        }
        Request::Logs { task_id, follow } => {
            if mode == Mode::Shell && *follow {
                monitor(client, *task_id).await?;
            } else if as_json {
                json_logs(client, *task_id, *follow).await?;
            } else {
                copy_logs(client, *task_id, *follow).await?;
            }
        }
        Request::Cancel { task_id } => {
            let resp = client.cancel(*task_id).await?;
            let task = resp.task.unwrap_or_default();
            if as_json {
                emit_json(&json::cancelled(&task));
            } else {
                emit(&render::cancelled(&task));
            }
        }
        Request::Workers => {
            let workers = client.workers().await?;
            if as_json {
                emit_json(&json::workers(&workers));
            } else {
                emit(&render::workers(&workers));
            }
        }
        Request::Reconcile { dry_run } => {
            if !as_json {
                emit(&format!("{}\n", render::RECONCILE_START));
            }
            let resp = client.reconcile(*dry_run).await?;
            if as_json {
                emit_json(&json::reconcile(&resp));
            } else {
                emit(&render::reconcile(&resp));
            }
        }
        Request::Status | Request::Stats { .. } | Request::InternalState => {
            crate::shell::views::execute(client, req, mode).await?;
        }
        Request::Files { task_id } => {
            let files = client.task_files(*task_id).await?;
            if as_json {
                emit_json(&json::task_files(*task_id, &files));
            } else {
                emit(&render::task_files(*task_id, &files));
            }
        }
        Request::Outputs => {
            let list = client.outputs().await?;
            if as_json {
                emit_json(&json::outputs(&list));
            } else {
                emit(&render::outputs(&list));
            }
        }
        Request::Download { task_id, dir } => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| crate::download::default_dir(*task_id));
            let files = crate::download::download(client, *task_id, &dir).await?;
            if as_json {
                emit_json(&json::downloaded(*task_id, &dir, &files));
            } else {
                emit(&render::downloaded(
                    *task_id,
                    &dir,
                    &files,
                    mode == Mode::Shell,
                ));
            }
        }
        Request::Worker { action, name } => {
            let message = match action {
                WorkerAction::Drain => client.drain_worker(name).await?,
                WorkerAction::Undrain => client.undrain_worker(name).await?,
                WorkerAction::Unregister => client.unregister_worker(name, false).await?,
                WorkerAction::UnregisterDead => client.unregister_worker(name, true).await?,
                WorkerAction::Register => client.register_worker(name).await?,
            };
            match mode {
                Mode::Json => emit_json(&json::worker_action(action.as_str(), name, &message)),
                Mode::Plain => emit(&format!("{message}\n")),
                Mode::Shell => emit(&format!("✓ {message}\n")),
            }
        }
    }
    Ok(())
}

/// `task logs --json`: one JSON object per chunk, as it comes
/// (`{"attempt_id":…,"offset":…,"data":"…"}`; bytes that are not UTF-8
/// are replaced by U+FFFD).
async fn json_logs(client: &Client, task_id: u64, follow: bool) -> anyhow::Result<()> {
    read_logs(client, task_id, follow, |chunk| {
        emit_json(&serde_json::json!({
            "attempt_id": chunk.attempt_id,
            "offset": chunk.offset,
            "data": String::from_utf8_lossy(&chunk.data),
        }));
    })
    .await
}

/// Stream a task's log bytes to stdout as they come. Returns whether the
/// output ended at the start of a line (true when there was none).
async fn copy_logs(client: &Client, task_id: u64, follow: bool) -> anyhow::Result<bool> {
    let mut at_line_start = true;
    read_logs(client, task_id, follow, |chunk| {
        if let Some(&last) = chunk.data.last() {
            at_line_start = last == b'\n';
        }
        emit_bytes(&chunk.data);
    })
    .await?;
    Ok(at_line_start)
}

/// Read a task's log from the start, handing each chunk to `sink`. When
/// following, a stream that drops or ends before the task has (the master
/// restarted) is opened again where it stopped, so nothing is lost or
/// repeated; only a master out of reach for two minutes ends it.
async fn read_logs(
    client: &Client,
    task_id: u64,
    follow: bool,
    mut sink: impl FnMut(&v1::LogChunk),
) -> anyhow::Result<()> {
    let mut received = 0u64;
    let mut contact = Contact::default();
    let mut opened = false;
    loop {
        let r = async {
            let mut stream = client.logs_from(task_id, follow, received).await?;
            opened = true;
            contact.heard();
            while let Some(chunk) = stream.next().await? {
                contact.heard();
                received += chunk.data.len() as u64;
                sink(&chunk);
            }
            if !follow || client.get_task(task_id).await?.has_ended() {
                return anyhow::Ok(true);
            }
            Ok(false)
        }
        .await;
        match r {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // Refused before anything was read (no such task, bad token):
            // say so now.
            Err(e) if !follow || !opened => return Err(e),
            Err(e) => contact.retry(&e).await?,
        }
    }
}

/// The shell's `monitor`: follow the logs until the task ends, then say how
/// it ended.
async fn monitor(client: &Client, task_id: u64) -> anyhow::Result<()> {
    let task = client.get_task(task_id).await?;
    if task.task_state() == Ok(TaskState::Queued) && !task.wait_reason.is_empty() {
        emit(&format!(
            "Task {task_id} is queued: {} (waiting; Ctrl-C to stop monitoring)\n",
            task.wait_reason
        ));
    } else {
        emit(&format!(
            "Monitoring task {task_id} ({}); Ctrl-C to stop\n",
            task.state
        ));
    }
    let at_line_start = copy_logs(client, task_id, true).await?;
    let task = client.get_task(task_id).await?;
    let sep = if at_line_start { "" } else { "\n" };
    emit(&format!(
        "{sep}Task {task_id} {}\n",
        render::task_outcome(&task)
    ));
    Ok(())
}

/// Print text to stdout. A closed pipe (`berth task list | head`) ends the
/// process quietly, as it would for any Unix tool.
pub fn emit(text: &str) {
    emit_bytes(text.as_bytes());
}

pub fn emit_json(v: &serde_json::Value) {
    emit(&format!("{v}\n"));
}

fn emit_bytes(data: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(data).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
