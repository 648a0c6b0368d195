//! The output-files protocol, once for both sides: its limits, the check
//! of an output path, and the checked manifest. The worker
//! (`worker::outputs`, the sender) seals only what [`Manifest::check`]
//! accepts and sends chunks of [`CHUNK_BYTES`]; the master
//! (`master::outputs`, the receiver) runs the same check on what arrives
//! and takes chunks up to [`MAX_CHUNK_BYTES`]. So nothing a worker sends
//! is refused by the master for a limit of its own.
//!
//! On the wire: one `OutputManifest` (paths and sizes), then each file's
//! bytes in order as `OutputChunk`s, each starting where the last ended.

use crate::v1;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

/// Most files one attempt may send.
pub const MAX_FILES: usize = 100_000;
/// Longest output path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest component of an output path, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Most bytes of paths in one manifest (it is one gRPC message, whose
/// limit is 4 MiB).
pub const MAX_MANIFEST_PATH_BYTES: usize = 2 << 20;
/// Bytes per chunk a worker sends.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Largest chunk the master accepts (room above [`CHUNK_BYTES`]).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// An output path refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub path: String,
    pub why: &'static str,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output path {:?} refused: {}", self.path, self.why)
    }
}

impl std::error::Error for PathError {}

/// Check an output path as a worker or a client sends it: relative, `/`
/// between non-empty components, none of them `.` or `..`, within
/// [`MAX_PATH_BYTES`] and [`MAX_COMPONENT_BYTES`]. Returns it as a
/// relative filesystem path.
pub fn check_path(path: &str) -> Result<PathBuf, PathError> {
    let bad = |why| {
        Err(PathError {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("it is longer than 4096 bytes");
    }
    if path.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.starts_with('/') {
        return bad("it is absolute; output paths are relative to the task's output folder");
    }
    let mut out = PathBuf::new();
    for c in path.split('/') {
        match c {
            "" => return bad("it has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return bad("it has a `.` or `..` component"),
            _ if c.len() > MAX_COMPONENT_BYTES => {
                return bad("a component is longer than 255 bytes");
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the output folder, `/` between components.
    pub path: String,
    pub size: u64,
}

/// A manifest refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    Path(PathError),
    TooManyFiles(usize),
    PathBytes(usize),
    Twice(String),
    FileAndFolder(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Path(e) => e.fmt(f),
            ManifestError::TooManyFiles(n) => {
                write!(f, "has {n} files; the limit is {MAX_FILES}")
            }
            ManifestError::PathBytes(n) => write!(
                f,
                "has {n} bytes of file names; the limit is {MAX_MANIFEST_PATH_BYTES}"
            ),
            ManifestError::Twice(p) => write!(f, "{p:?} is listed twice"),
            ManifestError::FileAndFolder(p) => write!(f, "{p:?} is listed as a file and a folder"),
        }
    }
}

impl std::error::Error for ManifestError {}

/// The files of one attempt's output, checked against every limit: sorted
/// by path, each path valid, none twice, none both a file and a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    files: Vec<ManifestFile>,
}

impl Manifest {
    pub fn check(mut files: Vec<ManifestFile>) -> Result<Manifest, ManifestError> {
        if files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(files.len()));
        }
        let path_bytes: usize = files.iter().map(|f| f.path.len()).sum();
        if path_bytes > MAX_MANIFEST_PATH_BYTES {
            return Err(ManifestError::PathBytes(path_bytes));
        }
        for f in &files {
            check_path(&f.path).map_err(ManifestError::Path)?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(ManifestError::Twice(w[0].path.clone()));
        }
        // A path may not be both a file and a folder ("a" and "a/b").
        let dirs: BTreeSet<&str> = files
            .iter()
            .flat_map(|f| f.path.match_indices('/').map(|(i, _)| &f.path[..i]))
            .collect();
        if let Some(both) = files.iter().find(|f| dirs.contains(f.path.as_str())) {
            return Err(ManifestError::FileAndFolder(both.path.clone()));
        }
        Ok(Manifest { files })
    }

    /// A manifest as it arrived.
    pub fn from_wire(m: v1::OutputManifest) -> Result<Manifest, ManifestError> {
        Manifest::check(
            m.files
                .into_iter()
                .map(|f| ManifestFile {
                    path: f.path,
                    size: f.size,
                })
                .collect(),
        )
    }

    pub fn to_wire(&self, attempt_id: u64) -> v1::OutputManifest {
        v1::OutputManifest {
            attempt_id,
            files: self
                .files
                .iter()
                .map(|f| v1::OutputFile {
                    path: f.path.clone(),
                    size: f.size,
                })
                .collect(),
        }
    }

    pub fn files(&self) -> &[ManifestFile] {
        &self.files
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size: 1,
        }
    }

    #[test]
    fn paths() {
        for ok in ["a", "a/b.txt", "dir/sub/file", ".hidden", "a..b"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "./a",
            "a/../b",
            "..",
            "a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"x".repeat(255)).is_ok());
        assert!(check_path(&"x".repeat(256)).is_err());
        assert!(check_path(&"x/".repeat(3000)).is_err());
    }

    #[test]
    fn manifests() {
        let m = Manifest::check(vec![file("b"), file("a/c")]).unwrap();
        let paths: Vec<&str> = m.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/c", "b"]);
        assert_eq!(
            Manifest::check(vec![file("a"), file("a")]),
            Err(ManifestError::Twice("a".into()))
        );
        assert_eq!(
            Manifest::check(vec![file("a"), file("a/b")]),
            Err(ManifestError::FileAndFolder("a".into()))
        );
        assert!(matches!(
            Manifest::check(vec![file("../x")]),
            Err(ManifestError::Path(_))
        ));
        let many: Vec<ManifestFile> = (0..=MAX_FILES).map(|i| file(&i.to_string())).collect();
        assert_eq!(
            Manifest::check(many),
            Err(ManifestError::TooManyFiles(MAX_FILES + 1))
        );
        let long: Vec<ManifestFile> = (0..600)
            .map(|i| file(&format!("{i}/{}", "x".repeat(4000))))
            .collect();
        assert!(matches!(
            Manifest::check(long),
            Err(ManifestError::PathBytes(_))
        ));
        let m = Manifest::check(vec![file("f")]).unwrap();
        assert_eq!(Manifest::from_wire(m.to_wire(7)), Ok(m));
    }

    #[test]
    fn chunks_a_worker_sends_fit_what_the_master_takes() {
        const { assert!(CHUNK_BYTES <= MAX_CHUNK_BYTES) };
        const { assert!(MAX_MANIFEST_PATH_BYTES < 4 << 20) };
    }
}
