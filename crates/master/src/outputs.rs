//! Task output files on the master.
//!
//! `DATA_DIR/outputs/TASK_ID/…` holds the files of the task's latest attempt
//! that sent any, under the relative paths the task wrote them at. Nothing
//! else lives in a task's folder.
//!
//! A worker sends an ended attempt's files as a manifest (paths and sizes)
//! followed by their bytes in order ([`Receiver`], one per worker session).
//! They are written to a staging folder, `outputs/.staging/ATTEMPT-N/`, and
//! only once every byte of every listed file has arrived (each file
//! fsynced) does the staging folder replace the task's folder as a whole.
//! So a listing never shows a partial upload, and a resent upload (the
//! worker resends everything on each new session until its final result
//! is acknowledged) replaces the files with the same bytes. An empty
//! manifest leaves the task with no files.
//!
//! The protocol's limits, the path check and the manifest are
//! `berth_proto::outputs`, shared with the worker that sends. Paths are
//! checked twice: every path in a manifest must be relative with plain
//! components ([`check_path`]), and reads walk the task's folder
//! without following symbolic links, so nothing outside
//! `DATA_DIR/outputs/TASK_ID/` is ever written or served.
//!
//! Which attempt may replace a task's files is decided by the caller (the
//! worker link asks the engine); this module only stores, lists and reads.

use berth_core::{AttemptId, TaskId};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use berth_proto::outputs::{MAX_CHUNK_BYTES, MAX_FILES, MAX_PATH_BYTES};
use berth_proto::outputs::{Manifest, ManifestError, ManifestFile, PathError};

const STAGING: &str = ".staging";
const REPLACED: &str = ".replaced";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output path {path:?} refused: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("task {task} has no output file {path:?}")]
    NoSuchFile { task: TaskId, path: String },
    #[error("output upload of attempt {attempt} refused: {why}")]
    Upload { attempt: AttemptId, why: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OutputError + 'a {
    move |source| OutputError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl From<PathError> for OutputError {
    fn from(e: PathError) -> Self {
        OutputError::BadPath {
            path: e.path,
            why: e.why,
        }
    }
}

/// Check an output path as a worker or a client sends it (the protocol's
/// one check). Returns it as a relative filesystem path.
pub fn check_path(path: &str) -> Result<PathBuf, OutputError> {
    Ok(berth_proto::outputs::check_path(path)?)
}

/// One stored output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the task's folder, `/` between components.
    pub path: String,
    pub size: u64,
}

/// What one task's folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSummary {
    pub task: TaskId,
    pub files: u32,
    pub bytes: u64,
}

/// The output files of every task, under one root (`DATA_DIR/outputs`).
/// Cheap to clone; clones share the lock that serialises replacements.
#[derive(Debug, Clone)]
pub struct OutputStore {
    root: PathBuf,
    replace: Arc<Mutex<()>>,
    next_staging: Arc<AtomicU64>,
}

impl OutputStore {
    /// Open (creating) the root. Uploads a previous run left unfinished are
    /// removed: their workers resend them.
    pub fn open(root: PathBuf) -> io::Result<OutputStore> {
        fs::create_dir_all(&root)?;
        for leftover in [STAGING, REPLACED] {
            match fs::remove_dir_all(root.join(leftover)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(OutputStore {
            root,
            replace: Arc::new(Mutex::new(())),
            next_staging: Arc::new(AtomicU64::new(1)),
        })
    }

    fn task_dir(&self, task: TaskId) -> PathBuf {
        self.root.join(task.0.to_string())
    }

    /// A task's files, sorted by path; empty when it has none.
    pub fn files(&self, task: TaskId) -> Result<Vec<FileEntry>, OutputError> {
        let dir = self.task_dir(task);
        let mut out = Vec::new();
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => walk(&dir, "", &mut out)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &dir)(e)),
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every task that has output files, by task id.
    pub fn tasks(&self) -> Result<Vec<TaskSummary>, OutputError> {
        let mut ids: Vec<u64> = fs::read_dir(&self.root)
            .map_err(io_err("reading", &self.root))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids {
            let task = TaskId(id);
            let files = self.files(task)?;
            if !files.is_empty() {
                out.push(TaskSummary {
                    task,
                    files: files.len() as u32,
                    bytes: files.iter().map(|f| f.size).sum(),
                });
            }
        }
        Ok(out)
    }

    /// Open one of a task's files for reading; returns it and its size. No
    /// component of the path may be a symbolic link.
    pub fn open_file(&self, task: TaskId, path: &str) -> Result<(File, u64), OutputError> {
        let rel = check_path(path)?;
        let missing = || OutputError::NoSuchFile {
            task,
            path: path.to_string(),
        };
        let mut at = self.task_dir(task);
        let last = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            at.push(c);
            let meta = match fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(io_err("reading", &at)(e)),
            };
            let want_file = i + 1 == last;
            if (want_file && !meta.is_file()) || (!want_file && !meta.is_dir()) {
                return Err(missing());
            }
        }
        let f = File::open(&at).map_err(io_err("opening", &at))?;
        let size = f.metadata().map_err(io_err("reading", &at))?.len();
        Ok((f, size))
    }

    /// Start receiving `files` (path, size) from `attempt` of `task`.
    pub fn begin(
        &self,
        attempt: AttemptId,
        task: TaskId,
        files: Vec<(String, u64)>,
    ) -> Result<Upload, OutputError> {
        let manifest = Manifest::check(
            files
                .into_iter()
                .map(|(path, size)| ManifestFile { path, size })
                .collect(),
        )
        .map_err(|e| match e {
            ManifestError::Path(p) => OutputError::from(p),
            other => OutputError::Upload {
                attempt,
                why: other.to_string(),
            },
        })?;
        let pending: BTreeMap<String, Pending> = manifest
            .files()
            .iter()
            .map(|f| {
                let p = Pending {
                    size: f.size,
                    received: 0,
                };
                (f.path.clone(), p)
            })
            .collect();
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        let staging = self.root.join(STAGING).join(format!("{}-{n}", attempt.0));
        // Most tasks leave no files: then there is nothing to stage (and no
        // folder to create, sync and remove for every task).
        if !pending.is_empty() {
            fs::create_dir_all(&staging).map_err(io_err("creating", &staging))?;
        }
        let mut upload = Upload {
            attempt,
            task,
            staging,
            files: pending,
            incomplete: 0,
            store: self.clone(),
            done: false,
        };
        for (path, p) in &upload.files {
            let at = upload.staging.join(path);
            if let Some(parent) = at.parent() {
                fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            }
            File::create(&at).map_err(io_err("creating", &at))?;
            if p.size > 0 {
                upload.incomplete += 1;
            }
        }
        Ok(upload)
    }

    /// Make a complete upload the task's files, replacing what it had. An
    /// upload of no files leaves the task with no folder.
    fn replace(
        &self,
        staging: &Path,
        empty: bool,
        task: TaskId,
        attempt: AttemptId,
    ) -> Result<(), OutputError> {
        let _one_at_a_time = self.replace.lock().unwrap_or_else(|e| e.into_inner());
        let dest = self.task_dir(task);
        if empty && !dest.exists() {
            return Ok(()); // nothing before, nothing now
        }
        if !empty {
            sync_dirs(staging)?;
        }
        let replaced_root = self.root.join(REPLACED);
        let replaced = replaced_root.join(format!("{}-{}", task.0, attempt.0));
        fs::create_dir_all(&replaced_root).map_err(io_err("creating", &replaced_root))?;
        let _ = fs::remove_dir_all(&replaced);
        match fs::rename(&dest, &replaced) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("moving aside", &dest)(e));
            }
            _ => {}
        }
        if empty {
            let _ = fs::remove_dir_all(staging);
        } else {
            fs::rename(staging, &dest).map_err(io_err("storing", &dest))?;
        }
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &self.root))?;
        let _ = fs::remove_dir_all(&replaced);
        Ok(())
    }
}

/// Collect the regular files under `dir` (never following links).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<FileEntry>) -> Result<(), OutputError> {
    for e in fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let e = e.map_err(io_err("reading", dir))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue; // never written by berth
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(e.path()).map_err(io_err("reading", &e.path()))?;
        if meta.is_dir() {
            walk(&e.path(), &path, out)?;
        } else if meta.is_file() {
            out.push(FileEntry {
                path,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// fsync every folder under (and including) `dir`, so the names of the
/// files in it survive a crash.
fn sync_dirs(dir: &Path) -> Result<(), OutputError> {
    for e in fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let e = e.map_err(io_err("reading", dir))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            sync_dirs(&e.path())?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

#[derive(Debug)]
struct Pending {
    size: u64,
    received: u64,
}

/// One attempt's files on their way in. Dropped unfinished, its staging
/// folder is removed.
#[derive(Debug)]
pub struct Upload {
    attempt: AttemptId,
    task: TaskId,
    staging: PathBuf,
    files: BTreeMap<String, Pending>,
    /// Listed files not yet fully received.
    incomplete: usize,
    store: OutputStore,
    done: bool,
}

impl Upload {
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Every byte of every listed file has arrived.
    pub fn is_complete(&self) -> bool {
        self.incomplete == 0
    }

    /// Write the next chunk of one listed file. Chunks of a file must come
    /// in order, each starting where the previous one ended.
    pub fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), OutputError> {
        let attempt = self.attempt;
        let refuse = |why: String| OutputError::Upload { attempt, why };
        if data.len() > MAX_CHUNK_BYTES {
            return Err(refuse(format!(
                "a chunk of {} bytes exceeds {MAX_CHUNK_BYTES}",
                data.len()
            )));
        }
        let Some(p) = self.files.get_mut(path) else {
            return Err(refuse(format!("{path:?} is not in its manifest")));
        };
        if offset != p.received {
            return Err(refuse(format!(
                "{path:?}: a chunk at offset {offset}, expected {}",
                p.received
            )));
        }
        let end = offset + data.len() as u64;
        if end > p.size {
            return Err(refuse(format!(
                "{path:?}: {end} bytes sent for a file of {}",
                p.size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let at = self.staging.join(path);
        let f = OpenOptions::new()
            .write(true)
            .open(&at)
            .map_err(io_err("opening", &at))?;
        f.write_all_at(data, offset)
            .map_err(io_err("writing", &at))?;
        p.received = end;
        if end == p.size {
            f.sync_all().map_err(io_err("syncing", &at))?;
            self.incomplete -= 1;
        }
        Ok(())
    }

    /// Replace the task's files with this upload's. Only when complete.
    pub fn commit(mut self) -> Result<usize, OutputError> {
        if !self.is_complete() {
            return Err(OutputError::Upload {
                attempt: self.attempt,
                why: format!("{} files are incomplete", self.incomplete),
            });
        }
        self.store.replace(
            &self.staging,
            self.files.is_empty(),
            self.task,
            self.attempt,
        )?;
        self.done = true;
        Ok(self.files.len())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// What a chunk or a manifest did to its attempt's upload.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are due (or the attempt's upload is being ignored).
    Pending,
    /// Every byte has arrived: [`Receiver::commit`] (or
    /// [`Receiver::discard`]) it.
    Complete(TaskId),
}

/// The uploads of one worker session, by attempt.
#[derive(Debug)]
pub struct Receiver {
    store: OutputStore,
    /// `None`: this attempt's files are not to be stored (it is not its
    /// task's latest attempt, or its upload went wrong); its chunks are
    /// dropped.
    uploads: HashMap<AttemptId, Option<Upload>>,
}

impl Receiver {
    pub fn new(store: OutputStore) -> Receiver {
        Receiver {
            store,
            uploads: HashMap::new(),
        }
    }

    /// A manifest: start (or restart) the attempt's upload. `owner` is the
    /// task whose files it may replace; `None` ignores the upload.
    pub fn manifest(
        &mut self,
        attempt: AttemptId,
        owner: Option<TaskId>,
        files: Vec<(String, u64)>,
    ) -> Result<Progress, OutputError> {
        // A restart replaces (and so removes) an unfinished staging folder.
        self.uploads.insert(attempt, None);
        let Some(task) = owner else {
            return Ok(Progress::Pending);
        };
        let upload = self.store.begin(attempt, task, files)?;
        let progress = Self::progress(&upload);
        self.uploads.insert(attempt, Some(upload));
        Ok(progress)
    }

    /// A chunk of one file of the attempt's upload.
    pub fn chunk(
        &mut self,
        attempt: AttemptId,
        path: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Progress, OutputError> {
        match self.uploads.get_mut(&attempt) {
            Some(Some(upload)) => {
                if let Err(e) = upload.write(path, offset, data) {
                    self.discard(attempt);
                    return Err(e);
                }
                Ok(Self::progress(upload))
            }
            Some(None) => Ok(Progress::Pending),
            None => Err(OutputError::Upload {
                attempt,
                why: format!("a chunk of {path:?} before the manifest"),
            }),
        }
    }

    fn progress(upload: &Upload) -> Progress {
        if upload.is_complete() {
            Progress::Complete(upload.task())
        } else {
            Progress::Pending
        }
    }

    /// Store a complete upload as its task's files; returns how many.
    pub fn commit(&mut self, attempt: AttemptId) -> Result<usize, OutputError> {
        match self.uploads.remove(&attempt).flatten() {
            Some(upload) => upload.commit(),
            None => Err(OutputError::Upload {
                attempt,
                why: "no upload in progress".to_string(),
            }),
        }
    }

    /// Drop the attempt's upload; its later chunks are ignored.
    pub fn discard(&mut self, attempt: AttemptId) {
        self.uploads.insert(attempt, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, OutputStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = OutputStore::open(dir.path().join("outputs")).unwrap();
        (dir, s)
    }

    fn read_all(s: &OutputStore, task: TaskId, path: &str) -> Vec<u8> {
        let (f, size) = s.open_file(task, path).unwrap();
        let mut buf = vec![0; size as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn paths_must_stay_inside() {
        // The rules are the protocol's (`berth_proto::outputs`); here, that
        // a refusal is a `BadPath`, for reads and for manifests alike.
        assert!(check_path("a/b.txt").is_ok());
        assert!(matches!(
            check_path("a/../../x"),
            Err(OutputError::BadPath { .. })
        ));
        let (_d, s) = store();
        let e = s
            .begin(AttemptId(1), TaskId(1), vec![("/etc/passwd".into(), 1)])
            .unwrap_err();
        assert!(matches!(e, OutputError::BadPath { .. }), "{e}");
        let e = s
            .begin(
                AttemptId(1),
                TaskId(1),
                vec![("a".into(), 1), ("a/b".into(), 1)],
            )
            .unwrap_err();
        assert!(e.to_string().contains("a file and a folder"), "{e}");
    }

    #[test]
    fn an_upload_is_stored_only_when_complete() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        let a = AttemptId(7);
        let t = TaskId(3);
        let files = vec![("sub/b.bin".to_string(), 5), ("a.txt".to_string(), 3)];
        assert_eq!(r.manifest(a, Some(t), files).unwrap(), Progress::Pending);
        assert_eq!(r.chunk(a, "a.txt", 0, b"abc").unwrap(), Progress::Pending);
        assert_eq!(
            r.chunk(a, "sub/b.bin", 0, b"12").unwrap(),
            Progress::Pending
        );
        assert!(
            s.files(t).unwrap().is_empty(),
            "nothing shown before the end"
        );
        assert_eq!(
            r.chunk(a, "sub/b.bin", 2, b"345").unwrap(),
            Progress::Complete(t)
        );
        assert_eq!(r.commit(a).unwrap(), 2);
        assert_eq!(
            s.files(t).unwrap(),
            vec![
                FileEntry {
                    path: "a.txt".into(),
                    size: 3
                },
                FileEntry {
                    path: "sub/b.bin".into(),
                    size: 5
                },
            ]
        );
        assert_eq!(read_all(&s, t, "sub/b.bin"), b"12345");
        assert_eq!(
            s.tasks().unwrap(),
            vec![TaskSummary {
                task: t,
                files: 2,
                bytes: 8
            }]
        );
        // Nothing is left in staging.
        assert_eq!(
            fs::read_dir(s.root.join(STAGING)).unwrap().count(),
            0,
            "staging emptied"
        );
    }

    #[test]
    fn a_later_upload_replaces_the_files_and_an_empty_one_clears_them() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        let t = TaskId(1);
        r.manifest(AttemptId(1), Some(t), vec![("old".into(), 1)])
            .unwrap();
        r.chunk(AttemptId(1), "old", 0, b"x").unwrap();
        r.commit(AttemptId(1)).unwrap();
        let p = r
            .manifest(AttemptId(2), Some(t), vec![("new".into(), 0)])
            .unwrap();
        assert_eq!(p, Progress::Complete(t), "an empty file needs no chunk");
        r.commit(AttemptId(2)).unwrap();
        let names: Vec<String> = s.files(t).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(names, ["new"]);
        assert_eq!(
            r.manifest(AttemptId(3), Some(t), vec![]).unwrap(),
            Progress::Complete(t)
        );
        r.commit(AttemptId(3)).unwrap();
        assert!(s.files(t).unwrap().is_empty());
        assert!(!s.task_dir(t).exists(), "no folder for no files");
        assert!(s.tasks().unwrap().is_empty());
    }

    #[test]
    fn a_resent_upload_restarts_from_its_manifest() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        let (a, t) = (AttemptId(4), TaskId(2));
        r.manifest(a, Some(t), vec![("f".into(), 4)]).unwrap();
        r.chunk(a, "f", 0, b"ab").unwrap();
        // The session broke; the next one sends everything again.
        drop(r);
        let mut r = Receiver::new(s.clone());
        r.manifest(a, Some(t), vec![("f".into(), 4)]).unwrap();
        r.chunk(a, "f", 0, b"ab").unwrap();
        assert_eq!(r.chunk(a, "f", 2, b"cd").unwrap(), Progress::Complete(t));
        r.commit(a).unwrap();
        assert_eq!(read_all(&s, t, "f"), b"abcd");
    }

    #[test]
    fn bad_manifests_and_chunks_are_refused() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        let (a, t) = (AttemptId(1), TaskId(1));
        for files in [
            vec![("../escape".to_string(), 1)],
            vec![("/abs".to_string(), 1)],
            vec![("a".to_string(), 1), ("a".to_string(), 1)],
            vec![("a".to_string(), 1), ("a/b".to_string(), 1)],
        ] {
            assert!(r.manifest(a, Some(t), files.clone()).is_err(), "{files:?}");
        }
        assert!(
            r.chunk(AttemptId(9), "x", 0, b"1").is_err(),
            "chunk before manifest"
        );
        r.manifest(a, Some(t), vec![("f".into(), 2)]).unwrap();
        assert!(r.chunk(a, "other", 0, b"1").is_err(), "not listed");
        // After an error the upload is dropped and its chunks ignored.
        assert_eq!(r.chunk(a, "f", 0, b"12").unwrap(), Progress::Pending);
        r.manifest(a, Some(t), vec![("f".into(), 2)]).unwrap();
        assert!(r.chunk(a, "f", 1, b"2").is_err(), "out of order");
        r.manifest(a, Some(t), vec![("f".into(), 2)]).unwrap();
        assert!(r.chunk(a, "f", 0, b"123").is_err(), "longer than listed");
        assert!(s.files(t).unwrap().is_empty());
        // Nothing was written outside the outputs root.
        let parent = s.root.parent().unwrap();
        let names: Vec<_> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["outputs"]);
    }

    #[test]
    fn an_ignored_upload_stores_nothing() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        let a = AttemptId(5);
        assert_eq!(
            r.manifest(a, None, vec![("f".into(), 1)]).unwrap(),
            Progress::Pending
        );
        assert_eq!(r.chunk(a, "f", 0, b"x").unwrap(), Progress::Pending);
        assert!(s.tasks().unwrap().is_empty());
    }

    #[test]
    fn reads_refuse_links_and_missing_files() {
        let (d, s) = store();
        let t = TaskId(8);
        let dir = s.task_dir(t);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/real"), b"ok").unwrap();
        fs::write(d.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(d.path(), dir.join("dirlink")).unwrap();
        assert_eq!(read_all(&s, t, "sub/real"), b"ok");
        for path in ["link", "dirlink/secret", "sub", "nope", "sub/real/x"] {
            assert!(
                matches!(s.open_file(t, path), Err(OutputError::NoSuchFile { .. })),
                "{path}"
            );
        }
        assert!(matches!(
            s.open_file(t, "../8/sub/real"),
            Err(OutputError::BadPath { .. })
        ));
        let names: Vec<String> = s.files(t).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(names, ["sub/real"], "links are not listed");
    }

    #[test]
    fn open_clears_unfinished_uploads() {
        let (_d, s) = store();
        let mut r = Receiver::new(s.clone());
        r.manifest(AttemptId(1), Some(TaskId(1)), vec![("f".into(), 9)])
            .unwrap();
        std::mem::forget(r); // as if the master had crashed
        let s = OutputStore::open(s.root.clone()).unwrap();
        assert!(!s.root.join(STAGING).exists());
    }
}
