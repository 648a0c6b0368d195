//! `berth task download ID [DIR]` and the shell's `download`: fetch every
//! output file of a task into a local folder, keeping their relative
//! paths.
//!
//! Nothing is written outside that folder: every path the master lists is
//! checked before anything is written (relative, plain components), no
//! symbolic link already under the folder is followed, and each file is
//! written under a temporary name and renamed into place only once all of
//! its bytes have arrived and match the listed size.

use crate::client::Client;
use anyhow::{Context, anyhow, bail};
use berth_proto::v1;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// Where a task's files go when no folder is given: `./task-ID`.
pub fn default_dir(task_id: u64) -> PathBuf {
    PathBuf::from(format!("task-{task_id}"))
}

/// Download every output file of `task_id` under `dir` (created if
/// missing); returns the files written, as listed by the master.
pub async fn download(
    client: &Client,
    task_id: u64,
    dir: &Path,
) -> anyhow::Result<Vec<v1::OutputFile>> {
    let files = client.task_files(task_id).await?;
    let checked: Vec<PathBuf> = files
        .iter()
        .map(|f| relative(&f.path))
        .collect::<anyhow::Result<_>>()?;
    if files.is_empty() {
        return Ok(files);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (f, rel) in files.iter().zip(&checked) {
        let target = prepare(dir, rel)?;
        fetch(client, task_id, f, &target)
            .await
            .with_context(|| format!("downloading {} of task {task_id}", f.path))?;
    }
    Ok(files)
}

/// A listed path as a relative local path: plain components only.
fn relative(path: &str) -> anyhow::Result<PathBuf> {
    let refuse = |why: &str| anyhow!("refusing to write {path:?}: {why}");
    if path.is_empty() || path.contains('\0') {
        return Err(refuse("not a file name"));
    }
    let rel = PathBuf::from(path);
    for c in rel.components() {
        match c {
            Component::Normal(_) => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("it is absolute"));
            }
            Component::ParentDir | Component::CurDir => {
                return Err(refuse("it leads out of the download folder"));
            }
        }
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(refuse("it has an empty, `.` or `..` component"));
    }
    Ok(rel)
}

/// Make the folders on the way to `dir/rel`, refusing to go through a
/// symbolic link or to replace one; returns the file's path.
fn prepare(dir: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    let Some((last, folders)) = parts.split_last() else {
        bail!("refusing to write {}: no file name", rel.display());
    };
    for part in folders {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => bail!(
                "refusing to write {}: {} is a symbolic link",
                rel.display(),
                at.display()
            ),
            Ok(_) => bail!(
                "refusing to write {}: {} is not a folder",
                rel.display(),
                at.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", at.display())),
        }
    }
    at.push(last);
    match fs::symlink_metadata(&at) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("refusing to write {}: it is a symbolic link", at.display())
        }
        Ok(m) if m.is_dir() => bail!("refusing to write {}: it is a folder", at.display()),
        _ => Ok(at),
    }
}

/// Stream one file into `target` through a temporary file beside it.
async fn fetch(
    client: &Client,
    task_id: u64,
    f: &v1::OutputFile,
    target: &Path,
) -> anyhow::Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.berth-part"));
    let _ = fs::remove_file(&tmp); // a leftover of an interrupted download
    let result = async {
        // create_new (O_EXCL) never follows a link at the temporary name.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut stream = client.download(task_id, &f.path).await?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await? {
            if chunk.offset != written {
                bail!(
                    "the master sent bytes at offset {}, expected {written}",
                    chunk.offset
                );
            }
            out.write_all(&chunk.data)
                .with_context(|| format!("writing {}", tmp.display()))?;
            written += chunk.data.len() as u64;
        }
        if written != f.size {
            bail!("received {written} bytes of the {} listed", f.size);
        }
        out.flush()?;
        fs::rename(&tmp, target).with_context(|| format!("writing {}", target.display()))
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_written() {
        assert_eq!(relative("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert!(relative(".hidden").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\0",
        ] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_under_the_folder_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dl");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("f"), dir.join("f")).unwrap();
        let e = prepare(&dir, Path::new("sub/x")).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = prepare(&dir, Path::new("f")).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(
            prepare(&dir, Path::new("new/deep/x")).unwrap(),
            dir.join("new/deep/x")
        );
        assert!(dir.join("new/deep").is_dir());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
