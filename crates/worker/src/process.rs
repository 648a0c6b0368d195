//! The process driver. Each attempt runs under a tiny `sh` supervisor in its
//! own process group: the supervisor starts the command with its output
//! going to the attempt's `log`, forwards SIGTERM/SIGINT to it, and writes
//! the exit status to `exit` when it ends. The supervisor does not depend on
//! the agent, so killing or restarting the agent leaves tasks running; a
//! restarted agent re-attaches by the pid in the attempt folder.

use crate::attempt_dir::AttemptDir;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `$0` is the attempt folder; `"$@"` the command.
const SUPERVISOR: &str = r#"d=$0
"$@" >>"$d/log" 2>&1 </dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM
trap 'kill -INT $pid 2>/dev/null' INT
while :; do
  wait $pid
  rc=$?
  kill -0 $pid 2>/dev/null || break
done
echo $rc >"$d/exit"
"#;

/// Find `program` the way `execvp` would, so a missing program fails the
/// attempt with a clear reason instead of an exit code 127.
pub fn resolve(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = path_var
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| runnable(p))
}

/// Start the supervised command. Returns the supervisor child (its pid is
/// also the process group id).
pub fn spawn(
    dir: &AttemptDir,
    command: &[String],
    env: &[(String, String)],
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SUPERVISOR)
        .arg(&dir.path)
        .args(command)
        .current_dir(dir.work())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// Signal the whole process group of a supervisor.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain kill(2) on a process group we created.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Is the supervisor of `dir` still running? Checks the pid is alive *and*
/// is our supervisor (its command line names the attempt folder), so a
/// reused pid is not mistaken for it.
pub fn supervisor_alive(dir: &AttemptDir) -> bool {
    let Some(pid) = dir.pid() else { return false };
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name: state, then the parent's pid.
    let mut after = stat.rsplit(')').next().unwrap_or("").split_whitespace();
    let state = after.next().unwrap_or("");
    let ppid: u32 = after.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    // A zombie (exited, not yet reaped) is not running.
    if state.starts_with('Z') {
        return false;
    }
    // A child of this agent is ours by construction: its pid cannot have
    // been reused before we reap it. (Right after fork its command line is
    // not yet the supervisor's, so the check below would be wrong.)
    if ppid == std::process::id() {
        return true;
    }
    // Re-attached after an agent restart: make sure the pid is still our
    // supervisor, not a reused one.
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.path.as_os_str().as_encoded_bytes();
    cmdline.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt_dir::Meta;
    use berth_core::{AttemptId, Resources, TaskId};

    #[test]
    fn resolves_programs_on_path() {
        assert!(resolve("sh", None).is_some());
        assert!(resolve("/bin/sh", None).is_some());
        assert!(resolve("no-such-program-berth", None).is_none());
        assert!(resolve("sh", Some("/nonexistent")).is_none());
    }

    #[tokio::test]
    async fn supervisor_records_output_and_exit_status() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(1));
        dir.create(Meta {
            task: TaskId(1),
            resources: Resources::ZERO,
            driver: berth_core::DriverKind::Process,
        })
        .unwrap();
        let cmd: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut child = spawn(&dir, &cmd, &[]).unwrap();
        child.wait().await.unwrap();
        assert_eq!(dir.exit_status(), Some(3));
        let log = std::fs::read_to_string(dir.log()).unwrap();
        assert!(log.contains("out") && log.contains("err"), "{log}");
    }

    #[tokio::test]
    async fn sigterm_reaches_the_task_and_is_recorded() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(2));
        dir.create(Meta {
            task: TaskId(1),
            resources: Resources::ZERO,
            driver: berth_core::DriverKind::Process,
        })
        .unwrap();
        let cmd: Vec<String> = ["sleep", "30"].iter().map(|s| s.to_string()).collect();
        let mut child = spawn(&dir, &cmd, &[]).unwrap();
        let pid = child.id().unwrap();
        dir.set_pid(pid).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(supervisor_alive(&dir));
        signal_group(pid as i32, libc::SIGTERM);
        child.wait().await.unwrap();
        assert_eq!(dir.exit_status(), Some(128 + libc::SIGTERM));
        assert!(!supervisor_alive(&dir));
    }
}
