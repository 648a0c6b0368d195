//! An attempt's local state lives in its own folder, `DATA_DIR/attempts/ID/`,
//! so it survives an agent restart and doubles as the durable outbox:
//!
//! | file      | written by  | meaning                                        |
//! |-----------|-------------|------------------------------------------------|
//! | `meta`    | agent       | task id, resources, driver; then `pid N` and `cgroup PATH` (agent), `rc N` (supervisor) |
//! | `container` | docker driver | the container's id, once created           |
//! | `log`     | supervisor  | the task's stdout and stderr                   |
//! | `exit`    | driver      | the exit status once it ended and nothing of it runs (absent: not yet) |
//! | `failed`  | driver      | why it could not start (the outcome is failed) |
//! | `lost`    | docker driver | why it never ran (the outcome is lost: retried) |
//! | `stopped` | agent       | a stop was requested (the outcome is cancelled)|
//! | `limit`   | agent       | time limit: deadline (epoch ms) and the limit  |
//! | `timed_out` | agent     | stopped for running past its limit             |
//! | `disconnect` | agent    | the task's `--stop-after-disconnect` (ms)      |
//! | `disconnected` | agent  | stopped for want of the master (the outcome is disconnected: retried) |
//! | `cancelled` | agent     | stopped before its start arrived: never ran    |
//! | `work/`   | task        | the task's working directory                   |
//! | `output/` | task        | `$BERTH_OUTPUT_DIR`                            |
//!
//! Every file an outcome is read from (`exit`, `failed`, `lost`,
//! `stopped`, `limit`, `timed_out`, `disconnected`) is fsynced (with its
//! folder entry) before the agent acts on it, so what was reported to the
//! master is what a restart after a machine crash reads again. `meta` is
//! not (see [`AttemptDir::create`]); tombstones are fsynced once per agent
//! tick ([`Tombstones::sync`]).
//!
//! An attempt whose folder exists is held by this worker; once the master
//! has acknowledged its final result the folder is emptied and kept as a
//! spare for a later attempt (see [`Spares`]), leaving a
//! tombstone line in `DATA_DIR/tombstones` so a late duplicate start never runs the
//! attempt a second time. Tombstones are pruned after [`TOMBSTONE_TTL`].

use berth_core::{AttemptId, DriverKind, Resources, TaskId};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How long a finished attempt's tombstone is kept.
pub const TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Tombstones (`DATA_DIR/tombstones`) of attempts this worker finished and the master acknowledged:
/// one line `ATTEMPT_ID EPOCH_MS` per attempt in an append-only file (a file
/// per tombstone would cost an inode per task, which is what dominates a
/// worker's CPU at hundreds of tasks a second), mirrored in memory.
/// Entries older than [`TOMBSTONE_TTL`] are dropped when the file is
/// rewritten at start.
#[derive(Debug)]
pub struct Tombstones {
    path: PathBuf,
    file: fs::File,
    ids: std::collections::HashSet<AttemptId>,
    /// Lines written and not yet fsynced.
    unsynced: bool,
}

impl Tombstones {
    /// Open `DATA_DIR/done`, keeping the entries younger than the TTL.
    pub fn open(path: PathBuf) -> io::Result<Tombstones> {
        let now = epoch_ms();
        let ttl = TOMBSTONE_TTL.as_millis() as i64;
        let mut kept = String::new();
        let mut ids = std::collections::HashSet::new();
        if let Ok(text) = fs::read_to_string(&path) {
            for line in text.lines() {
                let mut f = line.split_whitespace();
                let (Some(Ok(id)), Some(Ok(at))) = (
                    f.next().map(str::parse::<u64>),
                    f.next().map(str::parse::<i64>),
                ) else {
                    continue;
                };
                if now - at <= ttl && ids.insert(AttemptId(id)) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        write_atomic(&path, &kept)?;
        let file = fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Tombstones {
            path,
            file,
            ids,
            unsynced: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, id: AttemptId) -> bool {
        self.ids.contains(&id)
    }

    /// The highest id recorded (0 when none).
    pub fn max_id(&self) -> u64 {
        self.ids.iter().map(|a| a.0).max().unwrap_or(0)
    }

    pub fn add(&mut self, id: AttemptId) -> io::Result<()> {
        use std::io::Write;
        if self.ids.contains(&id) {
            return Ok(());
        }
        // Written at once, made durable by [`Tombstones::sync`] once per
        // agent tick, so a burst of acks costs one fsync. Safe: a duplicate
        // start can only come from a message in flight, and none survives
        // the machine crash that would lose an unsynced line.
        writeln!(self.file, "{} {}", id.0, epoch_ms())?;
        self.ids.insert(id);
        self.unsynced = true;
        Ok(())
    }

    /// Make the tombstones written since the last call durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    #[test]
    fn a_spare_folder_is_emptied_reused_and_keeps_nothing_of_the_last_attempt() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("attempts");
        let mut spares = Spares::open(d.path().join("spare")).unwrap();
        let a = AttemptDir::new(&root, AttemptId(1));
        let meta = Meta {
            task: TaskId(1),
            resources: Resources::ZERO,
            driver: DriverKind::Process,
        };
        a.create(meta).unwrap();
        fs::write(a.log(), "old output").unwrap();
        fs::write(a.path.join("exit"), "3\n").unwrap();
        a.mark_stopped().unwrap();
        fs::create_dir_all(a.output().join("sub")).unwrap();
        fs::write(a.output().join("sub/f"), "x").unwrap();
        fs::write(a.work().join("scratch"), "x").unwrap();
        spares.put(&a).unwrap();
        assert!(!a.exists());

        let b = AttemptDir::new(&root, AttemptId(2));
        assert!(spares.take_for(&b));
        b.create(Meta {
            task: TaskId(2),
            ..meta
        })
        .unwrap();
        assert_eq!(b.meta().unwrap().task, TaskId(2));
        assert_eq!(fs::read_to_string(b.log()).unwrap(), "");
        assert_eq!(b.exit_status(), None);
        assert!(!b.is_stopped());
        assert_eq!(fs::read_dir(b.output()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(b.work()).unwrap().count(), 0);
        // None left: the next one is created afresh.
        assert!(!spares.take_for(&AttemptDir::new(&root, AttemptId(3))));
    }
}

#[cfg(test)]
mod tombstone_tests {
    use super::*;

    #[test]
    fn tombstones_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("done");
        let mut t = Tombstones::open(p.clone()).unwrap();
        t.add(AttemptId(7)).unwrap();
        t.add(AttemptId(7)).unwrap();
        drop(t);
        let t = Tombstones::open(p.clone()).unwrap();
        assert!(t.contains(AttemptId(7)) && !t.contains(AttemptId(8)));
        assert_eq!(fs::read_to_string(p).unwrap().lines().count(), 1);
    }
}

/// Spare attempt folders, `DATA_DIR/spare/N/`: an acknowledged attempt's
/// folder is emptied and kept for the next attempt instead of being
/// removed, so a busy worker does not create and free half a dozen inodes
/// per task (on ext4, allocation scans past recently freed inodes, and that
/// scan dominated a busy worker's CPU). At most [`MAX_SPARES`] are kept.
#[derive(Debug)]
pub struct Spares {
    root: PathBuf,
    free: Vec<PathBuf>,
    next: u64,
}

/// Spare folders kept at most.
pub const MAX_SPARES: usize = 256;

impl Spares {
    pub fn open(root: PathBuf) -> io::Result<Spares> {
        fs::create_dir_all(&root)?;
        let mut free = Vec::new();
        let mut next = 0;
        for e in fs::read_dir(&root)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                next = next.max(n + 1);
                free.push(e.path());
            }
        }
        Ok(Spares { root, free, next })
    }

    /// Give an acknowledged attempt's folder back: emptied (the task's
    /// files removed, `log`, `meta` and `exit` truncated, everything else
    /// removed) and moved to the spares, or removed when there are enough.
    pub fn put(&mut self, dir: &AttemptDir) -> io::Result<()> {
        if self.free.len() >= MAX_SPARES {
            return dir.remove();
        }
        for e in fs::read_dir(&dir.path)? {
            let e = e?;
            let name = e.file_name();
            let path = e.path();
            match name.to_str() {
                Some("work") | Some("output") if e.file_type()?.is_dir() => {
                    for inner in fs::read_dir(&path)? {
                        let inner = inner?;
                        if inner.file_type()?.is_dir() {
                            fs::remove_dir_all(inner.path())?;
                        } else {
                            fs::remove_file(inner.path())?;
                        }
                    }
                }
                Some("log") | Some("meta") | Some("exit") if e.file_type()?.is_file() => {
                    fs::OpenOptions::new().write(true).open(&path)?.set_len(0)?;
                }
                _ if e.file_type()?.is_dir() => fs::remove_dir_all(&path)?,
                _ => fs::remove_file(&path)?,
            }
        }
        let spare = self.root.join(self.next.to_string());
        self.next += 1;
        fs::rename(&dir.path, &spare)?;
        self.free.push(spare);
        Ok(())
    }

    /// A spare folder for `dir`, moved into place; false when none is left
    /// (then the caller creates the folder).
    pub fn take_for(&mut self, dir: &AttemptDir) -> bool {
        while let Some(spare) = self.free.pop() {
            if fs::rename(&spare, &dir.path).is_ok() {
                return true;
            }
        }
        false
    }
}

#[derive(Debug, Clone)]
pub struct AttemptDir {
    pub id: AttemptId,
    pub path: PathBuf,
}

/// What `meta` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub task: TaskId,
    pub resources: Resources,
    pub driver: DriverKind,
}

impl AttemptDir {
    pub fn new(root: &Path, id: AttemptId) -> AttemptDir {
        AttemptDir {
            id,
            path: root.join(id.0.to_string()),
        }
    }

    /// Every attempt folder under `root`, in id order.
    pub fn scan(root: &Path) -> io::Result<Vec<AttemptDir>> {
        let mut out = Vec::new();
        for e in fs::read_dir(root)? {
            let e = e?;
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push(AttemptDir::new(root, AttemptId(id)));
            }
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub fn log(&self) -> PathBuf {
        self.path.join("log")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn output(&self) -> PathBuf {
        self.path.join("output")
    }

    /// Create the folder and record what the attempt holds.
    pub fn create(&self, meta: Meta) -> io::Result<()> {
        fs::create_dir_all(self.work())?;
        fs::create_dir_all(self.output())?;
        let r = meta.resources;
        // Written in place (a spare folder's `meta` is reused; a crash
        // mid-write leaves a folder without valid meta, which is removed at
        // the next start before anything ran in it). Not fsynced, on
        // purpose: an agent crash keeps the page cache, so a restarted
        // agent finds it; a machine crash kills the task too, and a `meta`
        // lost with it makes the attempt absent from the hello — `lost`,
        // and retried — which is the truth, where a durable `meta` without
        // an exit would be reported failed. (Three fsyncs per start on the
        // agent's loop cost most of its throughput.)
        fs::write(
            self.path.join("meta"),
            format!(
                "{} {} {} {} {} {}\n",
                meta.task.0,
                r.cpu_millis,
                r.memory_bytes,
                r.storage_bytes,
                r.gpus,
                meta.driver.as_str()
            ),
        )?;
        fs::File::create(self.log())?;
        Ok(())
    }

    /// The recorded meta. Folders written before drivers were recorded
    /// (five fields) belong to the process driver.
    pub fn meta(&self) -> io::Result<Meta> {
        let text = fs::read_to_string(self.path.join("meta"))?;
        let first = text.lines().next().unwrap_or("");
        let mut fields: Vec<&str> = first.split_whitespace().collect();
        let driver = match fields.len() {
            6 => {
                let d = fields.pop().unwrap_or_default();
                DriverKind::parse(d).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("meta: driver {d:?}"))
                })?
            }
            _ => DriverKind::Process,
        };
        let n: Vec<u64> = fields
            .into_iter()
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("meta: {e}")))?;
        if n.len() != 5 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "meta: expected 5 fields",
            ));
        }
        Ok(Meta {
            task: TaskId(n[0]),
            resources: Resources {
                cpu_millis: n[1],
                memory_bytes: n[2],
                storage_bytes: n[3],
                gpus: n[4] as u32,
            },
            driver,
        })
    }

    /// Record the container that runs this attempt.
    pub fn set_container(&self, id: &str) -> io::Result<()> {
        write_atomic(&self.path.join("container"), &format!("{id}\n"))
    }

    pub fn container(&self) -> Option<String> {
        let id = fs::read_to_string(self.path.join("container")).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// Record why the attempt could not start; its outcome is `failed`
    /// with this reason, whatever else the folder says.
    pub fn set_failed(&self, reason: &str) -> io::Result<()> {
        write_atomic(&self.path.join("failed"), reason)
    }

    pub fn failed(&self) -> Option<String> {
        fs::read_to_string(self.path.join("failed")).ok()
    }

    /// Record that the attempt never ran and its fate is known (its
    /// container was found never started): its outcome is `lost`, which
    /// the master retries, with this reason.
    pub fn set_lost(&self, reason: &str) -> io::Result<()> {
        write_atomic(&self.path.join("lost"), reason)
    }

    pub fn lost(&self) -> Option<String> {
        fs::read_to_string(self.path.join("lost")).ok()
    }

    /// Record the supervisor: a `pid N` line appended to `meta` (not a file
    /// of its own: every inode a task costs shows in a busy worker's CPU
    /// time), and `cgroup PATH` when the attempt has a cgroup. Written
    /// before the supervisor may start the command, so an attempt that
    /// runs can always be found and stopped. Not fsynced: it only matters
    /// while the supervisor lives, and a machine crash ends both.
    pub fn set_supervisor(&self, pid: u32, cgroup: Option<&Path>) -> io::Result<()> {
        use std::io::Write;
        let mut line = format!("pid {pid}\n");
        if let Some(cg) = cgroup {
            line.push_str(&format!("cgroup {}\n", cg.display()));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(self.path.join("meta"))?
            .write_all(line.as_bytes())
    }

    /// The value of the last `KEY VALUE` line of `meta`.
    fn meta_line(&self, key: &str) -> Option<String> {
        let text = fs::read_to_string(self.path.join("meta")).ok()?;
        let prefix = format!("{key} ");
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim().to_string())
    }

    pub fn pid(&self) -> Option<i32> {
        self.meta_line("pid")?.parse().ok()
    }

    /// The attempt's cgroup, if it has one — and only if it is this data
    /// dir's (`berth/NODE-HASH/ID`, HASH from this folder's data dir): a
    /// copied folder never leads an agent to another agent's processes.
    pub fn cgroup(&self) -> Option<PathBuf> {
        let path = PathBuf::from(self.meta_line("cgroup")?);
        let data_dir = self.path.parent()?.parent()?;
        let suffix = format!("-{}", crate::cgroup::dir_hash(data_dir));
        let owner = path.parent()?.file_name()?.to_str()?;
        owner.ends_with(&suffix).then_some(path)
    }

    /// The status the supervisor noted (`rc N` in `meta`) once the
    /// command had ended and the rest of its process tree was killed; the
    /// process driver turns it into `exit`.
    pub fn supervisor_rc(&self) -> Option<i32> {
        self.meta_line("rc")?.parse().ok()
    }

    /// The exit status, once the attempt has ended and nothing of it runs.
    pub fn exit_status(&self) -> Option<i32> {
        fs::read_to_string(self.path.join("exit"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Record the final status (durably: the final report is read from it).
    pub fn set_exit_status(&self, code: i32) -> io::Result<()> {
        write_atomic(&self.path.join("exit"), &format!("{code}\n"))
    }

    /// Record the time limit: the deadline (epoch ms) and the limit itself.
    pub fn set_limit(&self, deadline_ms: i64, limit_ms: u64) -> io::Result<()> {
        write_atomic(
            &self.path.join("limit"),
            &format!("{deadline_ms} {limit_ms}\n"),
        )
    }

    pub fn limit(&self) -> Option<(i64, u64)> {
        let text = fs::read_to_string(self.path.join("limit")).ok()?;
        let mut it = text.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    pub fn set_disconnect_limit(&self, limit_ms: u64) -> io::Result<()> {
        write_atomic(&self.path.join("disconnect"), &format!("{limit_ms}\n"))
    }

    pub fn disconnect_limit(&self) -> Option<u64> {
        fs::read_to_string(self.path.join("disconnect"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn mark_disconnected(&self) -> io::Result<()> {
        write_durable(&self.path.join("disconnected"), "")
    }

    pub fn is_disconnected(&self) -> bool {
        self.path.join("disconnected").exists()
    }

    pub fn mark_timed_out(&self) -> io::Result<()> {
        write_durable(&self.path.join("timed_out"), "")
    }

    pub fn is_timed_out(&self) -> bool {
        self.path.join("timed_out").exists()
    }

    pub fn mark_stopped(&self) -> io::Result<()> {
        write_durable(&self.path.join("stopped"), "")
    }

    pub fn is_stopped(&self) -> bool {
        self.path.join("stopped").exists()
    }

    /// Record that the attempt was stopped before its start arrived (the
    /// folder then only carries that result; a later start is ignored).
    pub fn mark_cancelled(&self) -> io::Result<()> {
        fs::write(self.path.join("cancelled"), b"")
    }

    pub fn is_cancelled(&self) -> bool {
        self.path.join("cancelled").exists()
    }

    pub fn log_len(&self) -> u64 {
        fs::metadata(self.log()).map_or(0, |m| m.len())
    }

    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Replace `path` with `text`, durably: a reader sees the old file or the
/// new one, and once this returns the new one survives a machine crash
/// (the data fsynced before the rename, the folder after it).
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Write a small marker file in place and make it durable (file and
/// folder entry).
fn write_durable(path: &Path, text: &str) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    sync_parent(path)
}

/// fsync the folder holding `path`, so a new or renamed entry survives.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_records_the_driver_and_reads_older_folders_as_process() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(5));
        let meta = Meta {
            task: TaskId(2),
            resources: Resources {
                cpu_millis: 2000,
                memory_bytes: 256 << 20,
                storage_bytes: 0,
                gpus: 1,
            },
            driver: DriverKind::Docker,
        };
        dir.create(meta).unwrap();
        assert_eq!(dir.meta().unwrap(), meta);
        // A folder written before drivers were recorded.
        fs::write(dir.path.join("meta"), "2 2000 268435456 0 1\n").unwrap();
        assert_eq!(dir.meta().unwrap().driver, DriverKind::Process);
        fs::write(dir.path.join("meta"), "2 2000 268435456 0 1 vm\n").unwrap();
        assert!(dir.meta().is_err());
    }

    #[test]
    fn container_and_failure_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = AttemptDir::new(root.path(), AttemptId(6));
        dir.create(Meta {
            task: TaskId(1),
            resources: Resources::ZERO,
            driver: DriverKind::Docker,
        })
        .unwrap();
        assert_eq!(dir.container(), None);
        assert_eq!(dir.failed(), None);
        dir.set_container("abc123").unwrap();
        dir.set_failed("image `x` is not on this worker").unwrap();
        assert_eq!(dir.container().as_deref(), Some("abc123"));
        assert_eq!(
            dir.failed().as_deref(),
            Some("image `x` is not on this worker")
        );
    }
}
