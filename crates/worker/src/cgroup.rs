//! How the process driver keeps a task's whole process tree together, so
//! that everything an attempt started ends with it ([`Containment`]).
//!
//! Where the host allows it each attempt gets a cgroup of its own,
//! `CGROUP/berth/NODE/ATTEMPT`, created under the agent's own cgroup: in
//! the cgroup v2 hierarchy when one is mounted (pure or hybrid), else in a
//! v1 hierarchy that sets no limits (`pids`, then `freezer`). A process
//! cannot leave its cgroup on its own (`setsid`, double forks and daemons
//! stay in it), so killing every member until none is left ends the whole
//! tree. Where no cgroup is writable (an unprivileged agent, a read-only
//! `/sys/fs/cgroup`) the attempt's process group is all there is: it
//! catches children and grandchildren, but not a process that calls
//! `setsid` or `setpgid`.
//!
//! The choice is made once at agent start by a real probe (a throwaway
//! cgroup and a short-lived `sh` moved into it) and logged; nothing here
//! ever fails a task: an attempt whose cgroup cannot be made falls back to
//! its process group.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which cgroup hierarchy holds the attempts' cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V2,
    /// A v1 hierarchy; the name is its controller.
    V1(&'static str),
}

/// How the process driver keeps an attempt's processes together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    /// One cgroup per attempt under `base` (`…/berth/NODE`).
    Cgroup {
        version: CgroupVersion,
        base: PathBuf,
    },
    /// The supervisor's process group only.
    ProcessGroup,
}

/// v1 controllers that may hold attempts: neither sets a limit unless
/// asked to, so moving a task into one changes nothing but its membership.
const V1_CONTROLLERS: [&str; 2] = ["pids", "freezer"];

impl Containment {
    /// Find the best mechanism this host allows for node `node_id`, trying
    /// each candidate for real. Never fails: the process group is always
    /// there.
    pub fn detect(agent_key: &str) -> Containment {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for (version, own_dir) in candidates(&own, &mounts) {
            let base = own_dir.join("berth").join(safe_name(agent_key));
            match probe(&base) {
                Ok(()) => return Containment::Cgroup { version, base },
                Err(e) => tracing::debug!(
                    cgroup = %base.display(), error = %e,
                    "cannot place tasks in this cgroup hierarchy"
                ),
            }
        }
        Containment::ProcessGroup
    }

    /// Every cgroup mechanism this host allows (for tests that try each).
    #[cfg(test)]
    pub(crate) fn all_usable(node_id: &str) -> Vec<Containment> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        candidates(&own, &mounts)
            .into_iter()
            .map(|(version, d)| (version, d.join("berth").join(safe_name(node_id))))
            .filter(|(_, base)| probe(base).is_ok())
            .map(|(version, base)| Containment::Cgroup { version, base })
            .collect()
    }

    /// Words for the log: which mechanism, and where.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup {
                version: CgroupVersion::V2,
                base,
            } => format!("cgroup v2 ({})", base.display()),
            Containment::Cgroup {
                version: CgroupVersion::V1(c),
                base,
            } => format!("cgroup v1 {c} ({})", base.display()),
            Containment::ProcessGroup => "process group (no writable cgroup)".to_string(),
        }
    }

    /// Make the cgroup of one attempt; `None` in process-group mode or
    /// when it cannot be made (the attempt then relies on its group).
    pub fn create(&self, attempt: u64) -> Option<PathBuf> {
        let Containment::Cgroup { base, .. } = self else {
            return None;
        };
        let path = base.join(attempt.to_string());
        match std::fs::create_dir_all(&path) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(cgroup = %path.display(), error = %e,
                    "cannot create the attempt's cgroup; its process group keeps it together");
                None
            }
        }
    }

    /// The folder holding the attempts' cgroups, if any.
    pub fn base(&self) -> Option<&Path> {
        match self {
            Containment::Cgroup { base, .. } => Some(base),
            Containment::ProcessGroup => None,
        }
    }
}

/// Candidate folders (the agent's own cgroup in each usable hierarchy), in
/// order of preference: v2 first, then the v1 controllers. Pure, from the
/// text of `/proc/self/cgroup` and `/proc/self/mounts`.
pub fn candidates(proc_self_cgroup: &str, mounts: &str) -> Vec<(CgroupVersion, PathBuf)> {
    // hierarchy-id:controllers:path
    let own = |want: Option<&str>| {
        proc_self_cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            let hit = match want {
                None => ctl.is_empty(),
                Some(c) => ctl.split(',').any(|x| x == c),
            };
            hit.then(|| path.to_string())
        })
    };
    // device mount-point type options ...
    let mount = |v2: bool, ctl: &str| {
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[1].contains('\\') {
                return None;
            }
            let ok = if v2 {
                f[2] == "cgroup2"
            } else {
                f[2] == "cgroup" && f[3].split(',').any(|o| o == ctl)
            };
            ok.then(|| PathBuf::from(f[1]))
        })
    };
    let mut out = Vec::new();
    if let (Some(m), Some(p)) = (mount(true, ""), own(None)) {
        out.push((CgroupVersion::V2, m.join(p.trim_start_matches('/'))));
    }
    for c in V1_CONTROLLERS {
        if let (Some(m), Some(p)) = (mount(false, c), own(Some(c))) {
            out.push((CgroupVersion::V1(c), m.join(p.trim_start_matches('/'))));
        }
    }
    out
}

/// The name of this agent's folder of attempt cgroups: its node id and a
/// short hash of its data dir. A copy of the data dir (same node id, other
/// path) thus never touches the original's cgroups, whatever its copied
/// `meta` files say (see `AttemptDir::cgroup`).
pub fn agent_key(node_id: &str, data_dir: &Path) -> String {
    format!("{}-{}", safe_name(node_id), dir_hash(data_dir))
}

/// FNV-1a of the path's bytes, as 8 hex digits.
pub fn dir_hash(data_dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

fn safe_name(s: &str) -> String {
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if n.is_empty() { "node".into() } else { n }
}

/// Can a process be moved into a cgroup under `base`? Tried with a
/// throwaway cgroup and a short-lived `sh` that moves itself in.
fn probe(base: &Path) -> io::Result<()> {
    std::fs::create_dir_all(base)?;
    let probe = base.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&probe)?;
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"echo $$ >"$0/cgroup.procs""#)
        .arg(&probe)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let removed = remove(&probe);
    match status {
        Ok(s) if s.success() => removed,
        Ok(s) => Err(io::Error::other(format!(
            "moving a process into {} failed ({s})",
            probe.display()
        ))),
        Err(e) => Err(e),
    }
}

/// Move process `pid` (and its threads) into the cgroup at `path`.
pub fn join(path: &Path, pid: u32) -> io::Result<()> {
    std::fs::write(path.join("cgroup.procs"), format!("{pid}\n"))
}

/// The processes in the cgroup at `path` (none if it is gone).
pub fn members(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Send `sig` to every process in the cgroup but `except`.
pub fn signal_members(path: &Path, sig: i32, except: Option<i32>) {
    for pid in members(path) {
        if Some(pid) != except && pid > 1 {
            // SAFETY: kill(2); a cgroup member is a live process of the
            // attempt (a dead one leaves the cgroup).
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// SIGKILL every process in the cgroup but `except`, again and again
/// until none is left (a process may fork while the list is read; the
/// killed ones cannot). Returns whether it is empty (but for `except`);
/// gives up after about ten seconds (a process stuck in the kernel).
pub fn kill_all(path: &Path, except: Option<i32>) -> bool {
    for round in 0..400u32 {
        let left: Vec<i32> = members(path)
            .into_iter()
            .filter(|p| Some(*p) != except)
            .collect();
        if left.is_empty() {
            return true;
        }
        signal_members(path, libc::SIGKILL, except);
        if round >= 20 {
            std::thread::sleep(Duration::from_millis(25));
        } else {
            std::thread::yield_now();
        }
    }
    false
}

/// Remove an (empty) attempt cgroup; gone already is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/a\n\
        4:memory:/process_api/f35\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn candidates_prefer_v2_then_limitless_v1_controllers() {
        let c = candidates(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(
            c,
            vec![
                (CgroupVersion::V2, PathBuf::from("/sys/fs/cgroup/unified/")),
                (
                    CgroupVersion::V1("pids"),
                    PathBuf::from("/sys/fs/cgroup/pids/")
                ),
                (
                    CgroupVersion::V1("freezer"),
                    PathBuf::from("/sys/fs/cgroup/freezer/a")
                ),
            ]
        );
        // Pure v2 under a service's cgroup.
        let c = candidates(
            "0::/system.slice/berth.service\n",
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
        );
        assert_eq!(
            c,
            vec![(
                CgroupVersion::V2,
                PathBuf::from("/sys/fs/cgroup/system.slice/berth.service")
            )]
        );
        // Nothing mounted: nothing to try.
        assert!(candidates(HYBRID_CGROUP, "").is_empty());
    }

    #[test]
    fn node_ids_make_safe_folder_names() {
        assert_eq!(safe_name("0a1b-2c/../x"), "0a1b-2cx");
        assert_eq!(safe_name("../"), "node");
    }
}
