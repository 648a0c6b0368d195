//! Task output files on the worker. When an attempt ends, what it left in
//! its output folder (`$BERTH_OUTPUT_DIR`; `/output` in a container) is
//! sealed into a list kept in the attempt folder (`outputs`), and sent to
//! the master before the attempt's final update: an `OutputManifest`
//! (paths and sizes), then every file's bytes in `OutputChunk`s. The agent
//! calls [`finish`] at the end of an attempt and again on every new
//! session until the master acknowledges the result; sealing happens once,
//! sending every time (the master stores the files only when all of their
//! bytes have arrived, so a resend replaces them with the same bytes).
//!
//! Nothing outside the output folder is ever sent:
//! * a symbolic link is sent as the file it points to only when that is a
//!   regular file inside the folder; any other link (pointing outside, to
//!   a folder, nowhere), a FIFO, socket or device, or a name that is not
//!   UTF-8 is left out, with a line in the task's log saying why;
//! * files are opened component by component with `O_NOFOLLOW`, so a link
//!   swapped in after sealing cannot lead outside either (the attempt then
//!   fails, and no files are stored).
//!
//! The protocol's limits (files, path lengths, chunk size), its path check
//! and its manifest are `berth_proto::outputs`, shared with the master: a
//! file whose path the master would refuse is left out (noted in the log),
//! and only a manifest the master's check accepts is sealed and sent.
//!
//! An output over the worker's limit (`--max-output`), or over the
//! protocol's limits, sends an empty manifest and fails the attempt, the
//! reason naming the limit and the size.

use crate::attempt_dir::AttemptDir;
use berth_core::AttemptState;
use berth_proto::HeldReport;
use berth_proto::outputs::{CHUNK_BYTES, Manifest, ManifestFile, check_path};
use berth_proto::v1;
use berth_proto::v1::worker_message::Body;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

/// The output limit when none is configured: 1 GiB.
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 30;
/// The sealed list, in the attempt folder.
const SEALED: &str = "outputs";

/// One file to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Under this name (relative, `/` between components).
    path: String,
    /// Read from here, relative to the output folder; no links in it.
    source: PathBuf,
    size: u64,
}

/// What an ended attempt sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sealed {
    files: Vec<Entry>,
    /// Why nothing is sent and the attempt fails.
    failure: Option<String>,
}

/// Seal (once) and send (every time) an ended attempt's output files,
/// before the caller sends its final update; `out` is the session's
/// stream, `None` between sessions. A failure (over the limit, unreadable)
/// is folded into `report`.
pub fn finish(
    dir: &AttemptDir,
    report: &mut HeldReport,
    max_output: u64,
    out: Option<&UnboundedSender<v1::WorkerMessage>>,
) {
    let mut sealed = seal(dir, max_output);
    if let Some(out) = out
        && let Err(why) = send(&dir.output(), &sealed, dir.id.0, out)
    {
        // Some of it may be on its way: an empty manifest restarts the
        // upload with nothing, so nothing partial is stored.
        let why = format!("its output files could not be sent: {why}");
        tracing::warn!(attempt = %dir.id, reason = %why, "output not sent");
        note(dir, &[format!("berth: {why}")]);
        sealed = Sealed {
            files: Vec::new(),
            failure: Some(why),
        };
        save(dir, &sealed);
        let _ = send(&dir.output(), &sealed, dir.id.0, out);
    }
    if let Some(why) = &sealed.failure {
        amend(report, why);
    }
}

/// Fail a report because of its output (once, however often called).
fn amend(report: &mut HeldReport, why: &str) {
    if report.reason.contains(why) {
        return;
    }
    if report.state == AttemptState::Succeeded {
        report.state = AttemptState::Failed;
        report.reason = why.to_string();
    } else if report.reason.is_empty() {
        report.reason = why.to_string();
    } else {
        report.reason = format!("{}; {why}", report.reason);
    }
}

/// The sealed list: read back, or made now from the output folder (noting
/// in the task's log what was left out).
fn seal(dir: &AttemptDir, max_output: u64) -> Sealed {
    if let Some(sealed) = fs::read_to_string(dir.path.join(SEALED))
        .ok()
        .and_then(|t| Sealed::parse(&t))
    {
        return sealed;
    }
    let (sealed, left_out) = scan(&dir.output(), max_output);
    let mut lines: Vec<String> = left_out
        .iter()
        .map(|n| format!("berth: output {n}"))
        .collect();
    if let Some(why) = &sealed.failure {
        tracing::warn!(attempt = %dir.id, reason = %why, "output refused");
        lines.push(format!("berth: {why}"));
    }
    note(dir, &lines);
    // Nothing to remember for an empty, clean output folder (the common
    // case): a rescan finds the same nothing, and the file would cost an
    // inode per task.
    if !sealed.files.is_empty() || sealed.failure.is_some() || !lines.is_empty() {
        save(dir, &sealed);
    }
    sealed
}

fn save(dir: &AttemptDir, sealed: &Sealed) {
    let path = dir.path.join(SEALED);
    let tmp = dir.path.join("outputs.tmp");
    let r = fs::write(&tmp, sealed.render()).and_then(|_| fs::rename(&tmp, &path));
    if let Err(e) = r {
        // Only costs a rescan if the agent restarts.
        tracing::warn!(attempt = %dir.id, error = %e, "could not record the output list");
    }
}

/// Append lines to the attempt's log (shipped with the rest of it).
fn note(dir: &AttemptDir, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let r = fs::OpenOptions::new()
        .append(true)
        .open(dir.log())
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = r {
        tracing::warn!(attempt = %dir.id, error = %e, "could not note left-out outputs in the log");
    }
}

/// List what the output folder holds. Returns the list and a line per
/// thing left out.
fn scan(root: &Path, max_output: u64) -> (Sealed, Vec<String>) {
    let mut left_out = Vec::new();
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            left_out.push("folder was replaced by something else; nothing sent".to_string());
            return (Sealed::default(), left_out);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Sealed::default(), left_out),
        Err(e) => {
            left_out.push(format!("folder cannot be read ({e}); nothing sent"));
            return (Sealed::default(), left_out);
        }
    }
    let canonical_root = match fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            left_out.push(format!("folder cannot be resolved ({e}); nothing sent"));
            return (Sealed::default(), left_out);
        }
    };
    let mut files = Vec::new();
    walk(root, &canonical_root, "", &mut files, &mut left_out);
    files.retain(|f| match check_path(&f.path) {
        Ok(_) => true,
        Err(e) => {
            left_out.push(format!("{:?} is not sent: {}; left out", f.path, e.why));
            false
        }
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total: u64 = files.iter().map(|f| f.size).sum();
    let failure = if total > max_output {
        Some(format!(
            "its output of {} is over this worker's limit of {} (--max-output); \
             no output files were sent",
            human(total),
            human(max_output)
        ))
    } else if let Err(e) = Manifest::check(manifest_files(&files)) {
        Some(format!("its output {e}; no output files were sent"))
    } else {
        None
    };
    if failure.is_some() {
        files.clear();
    }
    (Sealed { files, failure }, left_out)
}

fn walk(
    dir: &Path,
    canonical_root: &Path,
    prefix: &str,
    files: &mut Vec<Entry>,
    left_out: &mut Vec<String>,
) {
    let shown = |rel: &str| {
        if rel.is_empty() {
            "folder".to_string()
        } else {
            rel.to_string()
        }
    };
    let mut entries: Vec<fs::DirEntry> = match fs::read_dir(dir) {
        Ok(list) => list.flatten().collect(),
        Err(e) => {
            left_out.push(format!("{} cannot be read ({e}); left out", shown(prefix)));
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            left_out.push(format!(
                "{:?} has a name that is not UTF-8; left out",
                Path::new(prefix).join(&name)
            ));
            continue;
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = match fs::symlink_metadata(e.path()) {
            Ok(m) => m,
            Err(err) => {
                left_out.push(format!("{rel} cannot be read ({err}); left out"));
                continue;
            }
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(&e.path(), canonical_root, &rel, files, left_out);
        } else if kind.is_file() {
            files.push(Entry {
                source: PathBuf::from(&rel),
                path: rel,
                size: meta.len(),
            });
        } else if kind.is_symlink() {
            match link_target(&e.path(), canonical_root) {
                Ok((source, size)) => files.push(Entry {
                    path: rel,
                    source,
                    size,
                }),
                Err(why) => left_out.push(format!("{rel} is {why}; left out")),
            }
        } else {
            left_out.push(format!(
                "{rel} is not a regular file (a FIFO, socket or device); left out"
            ));
        }
    }
}

/// Where a link inside the output folder leads, when it is a regular file
/// inside it too: that file (relative to the folder) and its size.
fn link_target(link: &Path, canonical_root: &Path) -> Result<(PathBuf, u64), String> {
    let target = fs::read_link(link).map_or_else(|_| "?".into(), |t| t.display().to_string());
    let resolved = fs::canonicalize(link)
        .map_err(|_| format!("a symbolic link to {target}, which does not exist"))?;
    let Ok(inside) = resolved.strip_prefix(canonical_root) else {
        return Err(format!(
            "a symbolic link to {target}, outside the output folder"
        ));
    };
    match fs::metadata(&resolved) {
        Ok(m) if m.is_file() => Ok((inside.to_path_buf(), m.len())),
        _ => Err(format!(
            "a symbolic link to {target}, which is not a regular file"
        )),
    }
}

/// The manifest's view of the files to send.
fn manifest_files(files: &[Entry]) -> Vec<ManifestFile> {
    files
        .iter()
        .map(|e| ManifestFile {
            path: e.path.clone(),
            size: e.size,
        })
        .collect()
}

/// Send the manifest, then every file's bytes.
fn send(
    root: &Path,
    sealed: &Sealed,
    attempt_id: u64,
    out: &UnboundedSender<v1::WorkerMessage>,
) -> Result<(), String> {
    let send = |body| {
        // A closed stream is a lost session; the next one resends all.
        let _ = out.send(v1::WorkerMessage { body: Some(body) });
    };
    // Every file is opened before anything is sent.
    let mut opened = Vec::with_capacity(sealed.files.len());
    for e in &sealed.files {
        let f =
            open_beneath(root, &e.source).map_err(|err| format!("opening {}: {err}", e.path))?;
        opened.push((e, f));
    }
    // The protocol's own check, also for a list sealed by an older agent.
    let manifest = Manifest::check(manifest_files(&sealed.files)).map_err(|e| e.to_string())?;
    send(Body::Outputs(manifest.to_wire(attempt_id)));
    for (e, f) in opened {
        let mut offset = 0u64;
        while offset < e.size {
            let n = CHUNK_BYTES.min((e.size - offset) as usize);
            let mut data = vec![0u8; n];
            f.read_exact_at(&mut data, offset)
                .map_err(|err| format!("reading {}: {err}", e.path))?;
            send(Body::Output(v1::OutputChunk {
                attempt_id,
                path: e.path.clone(),
                offset,
                data,
            }));
            offset += n as u64;
        }
    }
    Ok(())
}

/// Open the regular file `rel` under `root` without following any
/// symbolic link on the way (the root itself included).
fn open_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| invalid("a NUL in the path"));
    const DIR: libc::c_int =
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // Not blocking on a FIFO swapped in; no effect on regular files.
    const FILE: libc::c_int =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let root_c = cstr(root.as_os_str())?;
    // SAFETY: a valid C string; the fd returned is owned below.
    let fd = unsafe { libc::open(root_c.as_ptr(), DIR) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut at = unsafe { OwnedFd::from_raw_fd(fd) };
    let parts: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(invalid("not a plain relative path")),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(invalid("an empty path"));
    };
    for part in dirs {
        let c = cstr(part)?;
        // SAFETY: `at` is an open directory fd; `c` a valid C string.
        let fd = unsafe { libc::openat(at.as_raw_fd(), c.as_ptr(), DIR) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        at = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let c = cstr(last)?;
    // SAFETY: as above.
    let fd = unsafe { libc::openat(at.as_raw_fd(), c.as_ptr(), FILE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if !f.metadata()?.is_file() {
        return Err(invalid("not a regular file"));
    }
    Ok(f)
}

/// `1.5 MiB (1572864 bytes)`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({bytes} bytes)", UNITS[unit])
}

impl Sealed {
    /// ```text
    /// berth-outputs 1
    /// failure <reason>
    /// file <size> <path> <source>
    /// ```
    /// with `%XX` escapes for anything but `[A-Za-z0-9._~/+-]`.
    fn render(&self) -> String {
        let mut s = String::from("berth-outputs 1\n");
        if let Some(why) = &self.failure {
            s.push_str(&format!("failure {}\n", escape(why.as_bytes())));
        }
        for e in &self.files {
            s.push_str(&format!(
                "file {} {} {}\n",
                e.size,
                escape(e.path.as_bytes()),
                escape(e.source.as_os_str().as_bytes())
            ));
        }
        s
    }

    fn parse(text: &str) -> Option<Sealed> {
        let mut lines = text.lines();
        if lines.next()? != "berth-outputs 1" {
            return None;
        }
        let mut sealed = Sealed::default();
        for line in lines {
            let mut w = line.split(' ');
            match (w.next()?, w.next(), w.next(), w.next(), w.next()) {
                ("failure", Some(why), None, None, None) => {
                    sealed.failure = Some(String::from_utf8(unescape(why)?).ok()?);
                }
                ("file", Some(size), Some(path), Some(source), None) => {
                    sealed.files.push(Entry {
                        size: size.parse().ok()?,
                        path: String::from_utf8(unescape(path)?).ok()?,
                        source: PathBuf::from(OsStr::from_bytes(&unescape(source)?)),
                    });
                }
                _ => return None,
            }
        }
        Some(sealed)
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"._~/+-".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::AttemptId;
    use std::os::unix::fs::symlink;
    use tokio::sync::mpsc;

    struct Fixture {
        _tmp: tempfile::TempDir,
        outside: PathBuf,
        dir: AttemptDir,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"not yours").unwrap();
        let dir = AttemptDir::new(&tmp.path().join("attempts"), AttemptId(9));
        fs::create_dir_all(dir.output()).unwrap();
        fs::write(dir.log(), b"task output\n").unwrap();
        Fixture {
            _tmp: tmp,
            outside,
            dir,
        }
    }

    fn succeeded() -> HeldReport {
        HeldReport {
            attempt_id: AttemptId(9),
            state: AttemptState::Succeeded,
            exit_code: Some(0),
            reason: String::new(),
        }
    }

    /// Each sent file's path and bytes.
    type Sent = Vec<(String, Vec<u8>)>;

    /// Run `finish` against a channel; returns the report, the manifest
    /// and each file's bytes as sent.
    fn run(dir: &AttemptDir, max: u64) -> (HeldReport, Vec<v1::OutputFile>, Sent) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut report = succeeded();
        finish(dir, &mut report, max, Some(&tx));
        let mut manifest = None;
        let mut files: Sent = Vec::new();
        while let Ok(m) = rx.try_recv() {
            match m.body.unwrap() {
                Body::Outputs(m) => {
                    assert_eq!(m.attempt_id, 9);
                    manifest = Some(m.files);
                    files.clear();
                }
                Body::Output(c) => match files.last_mut() {
                    Some((p, data)) if *p == c.path => {
                        assert_eq!(c.offset, data.len() as u64);
                        data.extend_from_slice(&c.data);
                    }
                    _ => {
                        assert_eq!(c.offset, 0);
                        files.push((c.path, c.data));
                    }
                },
                other => panic!("{other:?}"),
            }
        }
        (report, manifest.expect("a manifest"), files)
    }

    fn log(dir: &AttemptDir) -> String {
        fs::read_to_string(dir.log()).unwrap()
    }

    #[test]
    fn files_and_folders_are_sent_in_chunks() {
        let f = fixture();
        let out = f.dir.output();
        fs::create_dir_all(out.join("sub/deeper")).unwrap();
        fs::write(out.join("a.txt"), b"hello").unwrap();
        let big: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(out.join("sub/deeper/big.bin"), &big).unwrap();
        fs::write(out.join("sub/empty"), b"").unwrap();
        let (report, manifest, files) = run(&f.dir, DEFAULT_MAX_OUTPUT);
        assert_eq!(report, succeeded());
        let listed: Vec<(&str, u64)> = manifest.iter().map(|m| (m.path.as_str(), m.size)).collect();
        assert_eq!(
            listed,
            [
                ("a.txt", 5),
                ("sub/deeper/big.bin", big.len() as u64),
                ("sub/empty", 0)
            ]
        );
        assert_eq!(
            files,
            [
                ("a.txt".to_string(), b"hello".to_vec()),
                ("sub/deeper/big.bin".to_string(), big)
            ]
        );
        assert_eq!(log(&f.dir), "task output\n", "nothing to note");
    }

    #[test]
    fn links_are_followed_only_to_files_inside() {
        let f = fixture();
        let out = f.dir.output();
        fs::create_dir_all(out.join("d")).unwrap();
        fs::write(out.join("d/real"), b"inside").unwrap();
        symlink("d/real", out.join("alias")).unwrap();
        symlink(f.outside.join("secret"), out.join("escape")).unwrap();
        symlink("../../../outside/secret", out.join("relative-escape")).unwrap();
        symlink(&f.outside, out.join("dir-escape")).unwrap();
        symlink("d", out.join("dir-inside")).unwrap();
        symlink("nowhere", out.join("dangling")).unwrap();
        let (report, manifest, files) = run(&f.dir, DEFAULT_MAX_OUTPUT);
        assert_eq!(report, succeeded(), "left-out links do not fail the task");
        let listed: Vec<&str> = manifest.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(listed, ["alias", "d/real"]);
        assert_eq!(files[0], ("alias".to_string(), b"inside".to_vec()));
        let log = log(&f.dir);
        for name in [
            "escape",
            "relative-escape",
            "dir-escape",
            "dir-inside",
            "dangling",
        ] {
            assert!(
                log.contains(&format!("berth: output {name} is a symbolic link to")),
                "{name}: {log}"
            );
        }
        assert!(log.contains("outside the output folder; left out"), "{log}");
        assert!(!files.iter().any(|(_, d)| d == b"not yours"));
    }

    #[test]
    fn an_output_over_the_limit_sends_nothing_and_fails() {
        let f = fixture();
        fs::write(f.dir.output().join("big"), vec![7u8; 3000]).unwrap();
        let (report, manifest, files) = run(&f.dir, 2048);
        assert!(manifest.is_empty() && files.is_empty());
        assert_eq!(report.state, AttemptState::Failed);
        assert!(
            report.reason.contains("2.0 KiB (2048 bytes)")
                && report.reason.contains("2.9 KiB (3000 bytes)")
                && report.reason.contains("--max-output"),
            "{}",
            report.reason
        );
        assert!(log(&f.dir).contains("berth: its output of 2.9 KiB"));
        // Sent again on a new session: the same, and the reason not doubled.
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut again = report.clone();
        finish(&f.dir, &mut again, 2048, Some(&tx));
        assert_eq!(again, report);
        // A failure keeps the state it had, with the reason added.
        let mut nonzero = HeldReport {
            state: AttemptState::Failed,
            reason: "exited with code 3".into(),
            ..succeeded()
        };
        finish(&f.dir, &mut nonzero, 2048, None);
        assert!(
            nonzero
                .reason
                .starts_with("exited with code 3; its output of")
        );
    }

    #[test]
    fn the_list_is_sealed_once() {
        let f = fixture();
        fs::write(f.dir.output().join("first"), b"1").unwrap();
        let mut report = succeeded();
        finish(&f.dir, &mut report, DEFAULT_MAX_OUTPUT, None); // between sessions
        fs::write(f.dir.output().join("later"), b"2").unwrap();
        let (_, manifest, files) = run(&f.dir, DEFAULT_MAX_OUTPUT);
        let listed: Vec<&str> = manifest.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(listed, ["first"]);
        assert_eq!(files, [("first".to_string(), b"1".to_vec())]);
    }

    #[test]
    fn a_link_swapped_in_after_sealing_is_not_followed() {
        let f = fixture();
        let out = f.dir.output();
        fs::write(out.join("f"), b"mine").unwrap();
        let mut report = succeeded();
        finish(&f.dir, &mut report, DEFAULT_MAX_OUTPUT, None);
        fs::remove_file(out.join("f")).unwrap();
        symlink(f.outside.join("secret"), out.join("f")).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        finish(&f.dir, &mut report, DEFAULT_MAX_OUTPUT, Some(&tx));
        assert_eq!(report.state, AttemptState::Failed);
        assert!(
            report.reason.contains("could not be sent"),
            "{}",
            report.reason
        );
        let mut manifests = Vec::new();
        while let Ok(m) = rx.try_recv() {
            match m.body.unwrap() {
                Body::Outputs(m) => manifests.push(m.files),
                Body::Output(c) => panic!("sent {:?}", c.path),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(manifests, [vec![]], "an empty manifest, nothing else");
    }

    #[test]
    fn odd_entries_are_left_out_with_a_note() {
        let f = fixture();
        let out = f.dir.output();
        let fifo = CString::new(out.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        fs::write(out.join(OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
        fs::write(out.join("ok"), b"y").unwrap();
        let (report, manifest, _) = run(&f.dir, DEFAULT_MAX_OUTPUT);
        assert_eq!(report, succeeded());
        assert_eq!(manifest.len(), 1);
        let log = log(&f.dir);
        assert!(
            log.contains("berth: output pipe is not a regular file"),
            "{log}"
        );
        assert!(log.contains("not UTF-8"), "{log}");
    }

    #[test]
    fn no_output_folder_sends_an_empty_manifest() {
        let f = fixture();
        fs::remove_dir(f.dir.output()).unwrap();
        let (report, manifest, _) = run(&f.dir, DEFAULT_MAX_OUTPUT);
        assert_eq!(report, succeeded());
        assert!(manifest.is_empty());
    }

    #[test]
    fn the_sealed_list_round_trips() {
        let s = Sealed {
            files: vec![Entry {
                path: "a b/ü%\n".into(),
                source: PathBuf::from(OsStr::from_bytes(b"x/\xff y")),
                size: 42,
            }],
            failure: Some("too big; 3 files".into()),
        };
        assert_eq!(Sealed::parse(&s.render()), Some(s));
        assert_eq!(Sealed::parse("garbage"), None);
        assert_eq!(human(5), "5 bytes");
        assert_eq!(human(1 << 30), "1.0 GiB (1073741824 bytes)");
    }
}
