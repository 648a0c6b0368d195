//! The process driver's supervisor. Each attempt runs under a tiny `sh` in
//! its own process group (and its own cgroup where the host allows it,
//! see [`crate::cgroup`]): the supervisor waits for the agent's go (the
//! agent records the supervisor's pid, and joins it to the cgroup, first),
//! starts the command with its output going to the attempt's `log`,
//! forwards SIGTERM/SIGINT to it, and when it ends kills whatever else of
//! the attempt still runs — every other process of its cgroup, then its
//! whole process group, itself included — after noting the status as
//! `rc N` in `meta`. The agent then writes `exit`, durably, so an attempt
//! reported ended has nothing left running.
//!
//! The supervisor does not depend on the agent once started, so killing or
//! restarting the agent leaves tasks running; a restarted agent re-attaches
//! by the pid in the attempt folder. An agent that dies before the go
//! leaves a supervisor that exits without running anything.

use crate::attempt_dir::AttemptDir;
use crate::cgroup::{self, Containment};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `$0` is the attempt folder, `$1` its cgroup (empty: none); the rest is
/// the command. Its stdin is the go pipe: end of file there means the
/// agent died before recording the pid, so nothing is run.
const SUPERVISOR: &str = r#"d=$0 cg=$1
shift
IFS= read -r go || exit 0
"$@" >>"$d/log" 2>&1 </dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM
trap 'kill -INT $pid 2>/dev/null' INT
while :; do
  wait $pid
  rc=$?
  kill -0 $pid 2>/dev/null || break
done
if [ -n "$cg" ]; then
  n=0
  while :; do
    left=
    while read -r p; do
      [ "$p" = "$$" ] || { left=1; kill -9 "$p" 2>/dev/null; }
    done <"$cg/cgroup.procs"
    [ -z "$left" ] && break
    n=$((n+1))
    [ $n -ge 400 ] && break
    [ $n -ge 20 ] && sleep 0.025
  done
fi
echo "rc $rc" >>"$d/meta"
kill -9 0
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

/// A supervisor that waits for its go.
pub struct Spawned {
    pub child: tokio::process::Child,
    go: std::io::PipeWriter,
}

impl Spawned {
    /// Let the supervisor start the command. Call it only once its pid is
    /// recorded (and it has joined its cgroup).
    pub fn go(mut self) -> tokio::process::Child {
        // A fresh pipe takes three bytes without blocking; a supervisor
        // that already died is the wait task's business.
        let _ = self.go.write_all(b"go\n");
        self.child
    }

    /// Do not start the command: the supervisor exits at once.
    pub fn abandon(self) -> tokio::process::Child {
        drop(self.go);
        self.child
    }
}

/// Start the supervisor of a command. It runs nothing until
/// [`Spawned::go`]; its pid is also its process group id.
pub fn spawn(
    dir: &AttemptDir,
    cgroup: Option<&Path>,
    command: &[String],
    env: &[(String, String)],
) -> std::io::Result<Spawned> {
    // Both ends close on exec: no other child inherits the writer.
    let (reader, go) = std::io::pipe()?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SUPERVISOR)
        .arg(&dir.path)
        .arg(cgroup.map(Path::as_os_str).unwrap_or_default())
        .args(command)
        .current_dir(dir.work())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::from(reader))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn()?;
    Ok(Spawned { child, go })
}

/// Start an attempt's command under its supervisor: make its cgroup (if
/// any), start the supervisor, move it into the cgroup, record its pid and
/// cgroup in the folder, and only then let it start the command. `Err` is
/// the reason the attempt could not start (nothing of it runs then).
pub fn start(
    dir: &AttemptDir,
    containment: &Containment,
    command: &[String],
    env: &[(String, String)],
) -> Result<tokio::process::Child, String> {
    let mut cg = containment.create(dir.id.0);
    let spawned = match spawn(dir, cg.as_deref(), command, env) {
        Ok(s) => s,
        Err(e) => {
            if let Some(cg) = &cg {
                let _ = cgroup::remove(cg);
            }
            return Err(format!("starting the supervisor: {e}"));
        }
    };
    let pid = spawned.child.id().unwrap_or(0);
    if let Some(path) = &cg
        && let Err(e) = cgroup::join(path, pid)
    {
        tracing::warn!(attempt = %dir.id, cgroup = %path.display(), error = %e,
            "could not move the task into its cgroup; its process group keeps it together");
        let _ = cgroup::remove(path);
        cg = None;
    }
    // The command runs only once the pid (and cgroup) are on record: an
    // attempt that runs can always be found and stopped.
    match dir.set_supervisor(pid, cg.as_deref()) {
        Ok(()) => Ok(spawned.go()),
        Err(e) => {
            let mut child = spawned.abandon();
            let _ = child.start_kill();
            if let Some(path) = &cg {
                cgroup::kill_all(path, None);
                let _ = cgroup::remove(path);
            }
            Err(format!("recording the supervisor's pid: {e}"))
        }
    }
}

/// Send `sig` to a process or a process group (negative).
fn kill(pid: i32, sig: i32) {
    if !(-1..=1).contains(&pid) {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Signal the whole process group of a supervisor.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        kill(-pgid, sig);
    }
}

/// Ask the attempt to end: SIGTERM to the supervisor's group (the command
/// and its children; the supervisor forwards it too) and to every other
/// process of its cgroup (those that left the group).
pub fn terminate(dir: &AttemptDir) {
    let Some(pid) = dir.pid() else { return };
    signal_group(pid, libc::SIGTERM);
    if let Some(cg) = dir.cgroup() {
        cgroup::signal_members(&cg, libc::SIGTERM, Some(pid));
    }
}

/// Force the attempt to end: SIGKILL to every process of it but the
/// supervisor, which then notes the status (killed by signal 9), makes
/// sure nothing is left and ends itself.
pub fn force(dir: &AttemptDir) {
    let Some(pid) = dir.pid() else { return };
    if let Some(cg) = dir.cgroup() {
        cgroup::signal_members(&cg, libc::SIGKILL, Some(pid));
    }
    for p in group_members(pid, None) {
        if p != pid {
            kill(p, libc::SIGKILL);
        }
    }
}

/// The processes in process group `pgid`, from `/proc`; with `marker`,
/// only those whose environment holds that exact `KEY=VALUE` (used when the
/// group's leader is gone and its id might since name another group).
fn group_members(pgid: i32, marker: Option<&[u8]>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name: state, ppid, pgrp.
        let group = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<i32>().ok());
        if group != Some(pgid) {
            continue;
        }
        if let Some(m) = marker {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if !env.split(|b| *b == 0).any(|kv| kv == m) {
                continue;
            }
        }
        out.push(pid);
    }
    out
}

/// The supervisor of `dir` has ended: make sure nothing of the attempt is
/// left, remove its cgroup, and turn the status it noted into `exit`
/// (durably). Without a noted status (the supervisor was killed) the
/// leftovers are killed here and `exit` is left to the agent. Idempotent.
pub fn finish(dir: &AttemptDir) {
    if dir.exit_status().is_some() {
        return;
    }
    let rc = dir.supervisor_rc();
    let cgroup = dir.cgroup();
    if let Some(cg) = &cgroup
        && !cgroup::kill_all(cg, None)
    {
        tracing::warn!(attempt = %dir.id, cgroup = %cg.display(),
            "processes of the attempt would not die");
    }
    if rc.is_none()
        && let Some(pid) = dir.pid()
    {
        // The group may outlive its leader; its id is only trusted for
        // processes that carry this attempt's output folder.
        let marker = format!("BERTH_OUTPUT_DIR={}", dir.output().display());
        for _ in 0..100 {
            let left = group_members(pid, Some(marker.as_bytes()));
            if left.is_empty() {
                break;
            }
            for p in left {
                kill(p, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    if let Some(cg) = &cgroup
        && let Err(e) = cgroup::remove(cg)
    {
        tracing::warn!(attempt = %dir.id, cgroup = %cg.display(), error = %e,
            "could not remove the attempt's cgroup");
    }
    if let Some(rc) = rc
        && let Err(e) = dir.set_exit_status(rc)
    {
        tracing::warn!(attempt = %dir.id, error = %e, "could not record the exit status");
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
    use std::time::{Duration, Instant};

    #[test]
    fn resolves_programs_on_path() {
        assert!(resolve("sh", None).is_some());
        assert!(resolve("/bin/sh", None).is_some());
        assert!(resolve("no-such-program-berth", None).is_none());
        assert!(resolve("sh", Some("/nonexistent")).is_none());
    }

    fn attempt(root: &Path, id: u64) -> AttemptDir {
        let dir = AttemptDir::new(root, AttemptId(id));
        dir.create(Meta {
            task: TaskId(1),
            resources: Resources::ZERO,
            driver: berth_core::DriverKind::Process,
        })
        .unwrap();
        dir
    }

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// The environment the process driver gives every task (the marker
    /// that identifies the attempt's processes).
    fn env_of(dir: &AttemptDir) -> Vec<(String, String)> {
        vec![(
            "BERTH_OUTPUT_DIR".into(),
            dir.output().display().to_string(),
        )]
    }

    /// Run to the end as the process driver does: wait, then finish.
    async fn run(dir: &AttemptDir, c: &Containment, cmd: &[&str]) -> Option<i32> {
        let mut child = start(dir, c, &words(cmd), &env_of(dir)).unwrap();
        child.wait().await.unwrap();
        finish(dir);
        dir.exit_status()
    }

    /// Live processes whose command line contains `needle`.
    fn running_with(needle: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd: Vec<u8> = cmd
                .iter()
                .map(|b| if *b == 0 { b' ' } else { *b })
                .collect();
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
        out
    }

    /// Wait (at most 5 s) until nothing runs with `needle`; kills the
    /// leftovers and fails if something does.
    fn assert_none_left(needle: &str) {
        let t0 = Instant::now();
        loop {
            let left = running_with(needle);
            if left.is_empty() {
                return;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                for p in &left {
                    kill(*p, libc::SIGKILL);
                }
                panic!("processes of the attempt left running: {left:?} ({needle})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cgroup folder name of a test: its attempt folders live in
    /// temporary folders, whose parent stands for the data dir.
    fn test_key(name: &str) -> String {
        crate::cgroup::agent_key(
            &format!("test-{name}-{}", std::process::id()),
            &std::env::temp_dir(),
        )
    }

    /// A cgroup containment of our own for a test, if this host allows
    /// one; removed with the guard.
    struct TestCgroup(Containment);

    impl TestCgroup {
        fn new(name: &str) -> Option<TestCgroup> {
            match Containment::detect(&test_key(name)) {
                c @ Containment::Cgroup { .. } => Some(TestCgroup(c)),
                Containment::ProcessGroup => None,
            }
        }

        /// One for every cgroup hierarchy this host lets us use.
        fn each(name: &str) -> Vec<TestCgroup> {
            Containment::all_usable(&test_key(name))
                .into_iter()
                .map(TestCgroup)
                .collect()
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            if let Some(base) = self.0.base() {
                let _ = std::fs::remove_dir(base);
            }
        }
    }

    #[tokio::test]
    async fn supervisor_records_output_and_exit_status() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 1);
        let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        assert_eq!(run(&dir, &Containment::ProcessGroup, &cmd).await, Some(3));
        let log = std::fs::read_to_string(dir.log()).unwrap();
        assert!(log.contains("out") && log.contains("err"), "{log}");
        // The pid was on record before the command ran, then the status.
        assert!(dir.pid().is_some());
        assert_eq!(dir.supervisor_rc(), Some(3));
    }

    #[tokio::test]
    async fn sigterm_reaches_the_task_and_is_recorded() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 2);
        let mut child = start(
            &dir,
            &Containment::ProcessGroup,
            &words(&["sleep", "30"]),
            &[],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(supervisor_alive(&dir));
        terminate(&dir);
        child.wait().await.unwrap();
        finish(&dir);
        assert_eq!(dir.exit_status(), Some(128 + libc::SIGTERM));
        assert!(!supervisor_alive(&dir));
    }

    #[tokio::test]
    async fn background_children_end_with_the_command() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 3);
        let cmd = ["sh", "-c", "sleep 30071 & sleep 30071 & exit 4"];
        assert_eq!(run(&dir, &Containment::ProcessGroup, &cmd).await, Some(4));
        assert_none_left("sleep 30071");
    }

    #[tokio::test]
    async fn a_forced_stop_kills_the_tree_and_the_supervisor_records_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 4);
        // The command ignores SIGTERM; its child too.
        let cmd = [
            "sh",
            "-c",
            "trap '' TERM; sleep 30072 & while :; do sleep 1; done",
        ];
        let mut child = start(
            &dir,
            &Containment::ProcessGroup,
            &words(&cmd),
            &env_of(&dir),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        terminate(&dir);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(supervisor_alive(&dir), "SIGTERM is ignored");
        force(&dir);
        child.wait().await.unwrap();
        finish(&dir);
        assert_eq!(dir.exit_status(), Some(128 + libc::SIGKILL));
        assert_none_left("sleep 30072");
    }

    #[tokio::test]
    async fn a_supervisor_killed_from_outside_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 5);
        let cmd = ["sh", "-c", "sleep 30073"];
        let mut child = start(
            &dir,
            &Containment::ProcessGroup,
            &words(&cmd),
            &env_of(&dir),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill(dir.pid().unwrap(), libc::SIGKILL);
        child.wait().await.unwrap();
        assert!(
            !running_with("sleep 30073").is_empty(),
            "the task outlives its supervisor"
        );
        finish(&dir);
        // No status noted: the agent records the end as unknown.
        assert_eq!(dir.exit_status(), None);
        assert_none_left("sleep 30073");
    }

    #[tokio::test]
    async fn without_the_go_nothing_runs() {
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 6);
        let marker = root.path().join("ran");
        let cmd = words(&["touch", marker.to_str().unwrap()]);
        // The agent dies between starting the supervisor and recording
        // its pid: the go pipe closes unwritten.
        let spawned = spawn(&dir, None, &cmd, &[]).unwrap();
        let mut child = spawned.abandon();
        child.wait().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!marker.exists(), "the command ran without the go");
        assert_eq!(dir.supervisor_rc(), None);
    }

    #[tokio::test]
    async fn a_cgroup_catches_what_leaves_the_process_group() {
        let Some(cg) = TestCgroup::new("setsid") else {
            eprintln!("no writable cgroup on this host; skipped");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 7);
        let cmd = ["sh", "-c", "setsid sleep 30074 & sleep 30074 & sleep 0.2"];
        assert_eq!(run(&dir, &cg.0, &cmd).await, Some(0));
        assert_none_left("sleep 30074");
        let path = dir.cgroup().expect("the cgroup is on record");
        assert!(!path.exists(), "the attempt's cgroup is removed");
    }

    #[tokio::test]
    async fn every_usable_cgroup_hierarchy_catches_a_daemon() {
        let all = TestCgroup::each("each");
        eprintln!(
            "cgroup mechanisms here: {:?}",
            all.iter().map(|c| c.0.describe()).collect::<Vec<_>>()
        );
        for (i, cg) in all.iter().enumerate() {
            let root = tempfile::tempdir().unwrap();
            let dir = attempt(root.path(), 10 + i as u64);
            let cmd = ["sh", "-c", "setsid sh -c 'sleep 30076' & sleep 0.2"];
            assert_eq!(run(&dir, &cg.0, &cmd).await, Some(0), "{}", cg.0.describe());
            assert_none_left("sleep 30076");
            assert!(!dir.cgroup().unwrap().exists());
        }
    }

    #[tokio::test]
    async fn a_cgroup_is_swept_even_when_the_supervisor_was_killed() {
        let Some(cg) = TestCgroup::new("killed") else {
            eprintln!("no writable cgroup on this host; skipped");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let dir = attempt(root.path(), 8);
        // A daemon that also drops the attempt's marker from its
        // environment: only the cgroup still knows it.
        let cmd = ["sh", "-c", "setsid env -i sleep 30075 & sleep 30075"];
        let mut child = start(&dir, &cg.0, &words(&cmd), &env_of(&dir)).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill(-dir.pid().unwrap(), libc::SIGKILL);
        child.wait().await.unwrap();
        assert!(!running_with("sleep 30075").is_empty());
        finish(&dir);
        assert_none_left("sleep 30075");
        assert!(!dir.cgroup().unwrap().exists());
    }
}
