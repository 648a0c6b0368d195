//! `berth task submit --wait`: submit, follow the task's state until it
//! ends, and exit with a code that says how it ended.
//!
//! stdout gets what `task submit` always prints (the id; with `--json`,
//! the finished task as JSON instead); the state changes go to stderr: on
//! a terminal one line redrawn in place with a spinner and the trail of
//! states, otherwise one plain line per change.
//!
//! Exit codes ([`exit_code`]):
//!
//! | the task | exit code |
//! |---|---|
//! | succeeded | 0 |
//! | failed with an exit code N | N (1 when N is 0 or outside 1–255) |
//! | failed: its last attempt timed out | 124 (as `timeout(1)`) |
//! | cancelled | 130 |
//! | failed without an exit code (lost too often, could not start) | 1 |
//! | not known: contact with the master was lost for 2 minutes | 75 |
//!
//! Ctrl-C stops waiting (exit 130); the task keeps running.
//!
//! Nothing is polled: the task's changes come on a watch stream (gRPC
//! `Watch`), and the task is read once per change. A dropped stream is
//! resumed from its cursor, with backoff and jitter ([`crate::contact`]);
//! only when the master stays out of reach does `--wait` give up, with its
//! own exit code, never one that could be the task's.

use crate::client::Client;
use crate::commands::{emit, emit_json};
use crate::contact::{Contact, LostContact};
use crate::render;
use berth_core::{AttemptState, TaskSpec, TaskState};
use berth_proto::v1;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Exit code when contact with the master was lost (EX_TEMPFAIL).
pub const LOST_CONTACT: u8 = 75;
/// A watch stream quiet for this long (the master ticks every 15 s) is
/// taken for a dead connection.
const QUIET: Duration = Duration::from_secs(40);
/// How often the spinner moves.
const SPIN: Duration = Duration::from_millis(80);
const FRAMES: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// States kept in the terminal's trail.
const TRAIL: usize = 5;

/// Submit `spec`, wait for the task to end, return the exit code.
pub async fn submit_and_wait(
    client: &Client,
    spec: TaskSpec,
    queue_anyway: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let id = client.submit(spec.into(), queue_anyway).await?;
    if !json {
        emit(&format!("{id}\n"));
    }
    let terminal = std::io::stderr().is_terminal();
    let mut progress = Progress::new(id, terminal);
    let started = Instant::now();
    let waited = follow_until_ended(client, id, &mut progress, started);
    let task = tokio::select! {
        t = waited => match t {
            Ok(t) => t,
            Err(lost) => {
                progress.lost(&lost);
                return Ok(LOST_CONTACT);
            }
        },
        _ = tokio::signal::ctrl_c() => {
            abandon(id, terminal);
            return Ok(130);
        }
    };
    progress.finish(&task, started.elapsed());
    if json {
        emit_json(&crate::json::task(&task));
    }
    Ok(exit_code(&task))
}

/// Follow task `id` on the watch stream until it has ended: read the task
/// when the stream starts (its snapshot) and after each of its changes.
async fn follow_until_ended(
    client: &Client,
    id: u64,
    progress: &mut Progress,
    started: Instant,
) -> Result<v1::Task, LostContact> {
    let mut contact = Contact::default();
    let mut cursor: Option<String> = None;
    loop {
        match watch_once(client, id, &mut cursor, progress, started, &mut contact).await {
            Ok(task) => return Ok(task),
            Err(e) => contact.retry(&e).await?,
        }
    }
}

/// One watch stream, until the task has ended (`Ok`) or the stream broke.
async fn watch_once(
    client: &Client,
    id: u64,
    cursor: &mut Option<String>,
    progress: &mut Progress,
    started: Instant,
    contact: &mut Contact,
) -> anyhow::Result<v1::Task> {
    let mut stream = match client.watch(id, cursor.clone()).await {
        Ok(s) => s,
        Err(s) if s.code() == tonic::Code::OutOfRange => {
            // The master restarted (or we were away too long): watch from
            // now, reading the task afresh.
            *cursor = None;
            return Err(anyhow::anyhow!("{}", s.message()));
        }
        Err(s) => return Err(crate::client::status_error(client.url(), &s)),
    };
    let mut read_task = true;
    loop {
        if read_task {
            let task = client.get_task(id).await?;
            contact.heard();
            progress.observe(&task);
            if task.has_ended() {
                return Ok(task);
            }
        }
        let deadline = Instant::now() + QUIET;
        let event = loop {
            let spin = tokio::time::sleep(SPIN);
            tokio::select! {
                m = stream.message() => break m,
                _ = spin => {
                    progress.spin(started.elapsed());
                    if Instant::now() >= deadline {
                        anyhow::bail!("the watch stream went quiet");
                    }
                }
            }
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => anyhow::bail!("the master ended the watch stream"),
            Err(s) => {
                if s.code() == tonic::Code::OutOfRange {
                    *cursor = None;
                }
                return Err(crate::client::status_error(client.url(), &s));
            }
        };
        contact.heard();
        *cursor = Some(event.cursor.clone());
        // The start (the task may have changed before we watched) and every
        // change of this task: read it. Ticks only say the master is there.
        read_task = event.kind != "tick";
    }
}

/// How the process exits for a finished task (see the module docs).
pub fn exit_code(t: &v1::Task) -> u8 {
    match t.task_state() {
        Ok(TaskState::Succeeded) => 0,
        Ok(TaskState::Cancelled) => 130,
        _ => {
            let last = t.attempts.iter().max_by_key(|a| a.id);
            if last.is_some_and(|a| a.attempt_state() == Ok(AttemptState::TimedOut)) {
                124
            } else if t.has_exit_code && (1..=255).contains(&t.exit_code) {
                t.exit_code as u8
            } else {
                1
            }
        }
    }
}

/// One state as shown: `queued`, `running on Tessa`, `succeeded (exit 0)`.
pub fn describe(t: &v1::Task) -> String {
    if t.has_ended() {
        return render::task_outcome(t);
    }
    let mut s = t.state.clone();
    if matches!(t.task_state(), Ok(TaskState::Assigned | TaskState::Running))
        && let Some(a) = t.attempts.iter().max_by_key(|a| a.id)
    {
        let worker = if a.worker_name.is_empty() {
            &a.worker_id
        } else {
            &a.worker_name
        };
        if !worker.is_empty() {
            s.push_str(" on ");
            s.push_str(worker);
        }
    }
    if t.cancel_requested {
        s.push_str(", cancel requested");
    }
    s
}

/// The state changes as they are shown on stderr.
struct Progress {
    id: u64,
    terminal: bool,
    trail: Vec<String>,
    /// For plain output: the queued reason last printed.
    last_reason: String,
    frame: usize,
}

impl Progress {
    fn new(id: u64, terminal: bool) -> Progress {
        Progress {
            id,
            terminal,
            trail: Vec::new(),
            last_reason: String::new(),
            frame: 0,
        }
    }

    /// Record the task's state; print it when it changed.
    fn observe(&mut self, t: &v1::Task) {
        let now = describe(t);
        let changed = self.trail.last() != Some(&now);
        if changed && !t.has_ended() {
            self.trail.push(now.clone());
        }
        if self.terminal {
            return;
        }
        let reason_changed =
            t.task_state() == Ok(TaskState::Queued) && t.wait_reason != self.last_reason;
        if (changed && !t.has_ended()) || reason_changed {
            let mut line = format!("task {}: {now}", self.id);
            if t.task_state() == Ok(TaskState::Queued) && !t.wait_reason.is_empty() {
                line.push_str(&format!(" (waiting for {})", t.wait_reason));
            }
            self.last_reason = t.wait_reason.clone();
            eprint_line(&format!("{line}\n"));
        }
    }

    /// Redraw the terminal line.
    fn spin(&mut self, elapsed: Duration) {
        if !self.terminal {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let skip = self.trail.len().saturating_sub(TRAIL);
        let mut trail = self.trail[skip..].join(" → ");
        if skip > 0 {
            trail = format!("… → {trail}");
        }
        eprint_line(&format!(
            "\r\x1b[K{} Task {}: {trail} ({:.1}s)",
            FRAMES[self.frame],
            self.id,
            elapsed.as_secs_f64()
        ));
    }

    /// Contact with the master is lost: say so, and that the task may run on.
    fn lost(&mut self, lost: &LostContact) {
        let clear = if self.terminal { "\r\x1b[K" } else { "" };
        eprint_line(&format!(
            "{clear}{lost}; task {} may still be running (berth task show {})\n",
            self.id, self.id
        ));
    }

    fn finish(&mut self, t: &v1::Task, elapsed: Duration) {
        let mark = if t.task_state() == Ok(TaskState::Succeeded) {
            '✓'
        } else {
            '✗'
        };
        let clear = if self.terminal { "\r\x1b[K" } else { "" };
        eprint_line(&format!(
            "{clear}{mark} Task {} {} after {:.1}s\n",
            self.id,
            render::task_outcome(t),
            elapsed.as_secs_f64()
        ));
    }
}

/// Ctrl-C: say the task goes on without us.
fn abandon(id: u64, terminal: bool) {
    let clear = if terminal { "\r\x1b[K" } else { "\n" };
    eprint_line(&format!(
        "{clear}stopped waiting; task {id} keeps running (berth task show {id})\n"
    ));
}

fn eprint_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str) -> v1::Task {
        v1::Task {
            id: 4,
            state: state.into(),
            ..Default::default()
        }
    }

    fn attempt(id: u64, state: &str) -> v1::Attempt {
        v1::Attempt {
            id,
            state: state.into(),
            worker_name: "Tessa".into(),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_follow_the_documented_mapping() {
        assert_eq!(exit_code(&task("succeeded")), 0);
        assert_eq!(exit_code(&task("cancelled")), 130);
        let mut t = task("failed");
        assert_eq!(exit_code(&t), 1, "failed without a code");
        t.has_exit_code = true;
        t.exit_code = 3;
        assert_eq!(exit_code(&t), 3);
        t.exit_code = 0;
        assert_eq!(exit_code(&t), 1, "failed is never 0");
        t.exit_code = 300;
        assert_eq!(exit_code(&t), 1);
        t.exit_code = 143;
        t.attempts = vec![attempt(1, "lost"), attempt(2, "timed_out")];
        assert_eq!(exit_code(&t), 124, "timed out beats the signal's code");
        let mut c = task("cancelled");
        c.has_exit_code = true;
        c.exit_code = 143;
        assert_eq!(exit_code(&c), 130);
    }

    #[test]
    fn states_are_described_with_their_worker() {
        assert_eq!(describe(&task("queued")), "queued");
        let mut t = task("running");
        t.attempts = vec![attempt(1, "lost"), attempt(2, "running")];
        t.attempts[1].worker_name = "Uma".into();
        assert_eq!(describe(&t), "running on Uma");
        t.cancel_requested = true;
        assert_eq!(describe(&t), "running on Uma, cancel requested");
        let mut f = task("failed");
        f.has_exit_code = true;
        f.exit_code = 2;
        assert_eq!(describe(&f), "failed (exit 2)");
    }

    #[test]
    fn the_trail_keeps_each_change_once() {
        let mut p = Progress::new(4, true);
        p.observe(&task("queued"));
        p.observe(&task("queued"));
        p.observe(&task("assigned"));
        p.observe(&task("running"));
        p.observe(&task("succeeded"));
        assert_eq!(p.trail, ["queued", "assigned", "running"]);
    }
}
