//! Task output files: one task's list, one file as a stream of chunks, and
//! every task that has files. Reads never follow links (`crate::outputs`).

use super::{Api, ApiError};
use berth_core::TaskId;
use berth_proto::v1;
use std::pin::Pin;
use tokio_stream::Stream;

/// Bytes per chunk of a fetched output file.
pub const FILE_CHUNK: usize = 256 * 1024;

pub use v1::{OutputFile, TaskOutputs};

/// The chunks of one output file, in order from offset 0.
pub type FileChunks = Pin<Box<dyn Stream<Item = Result<v1::FileChunk, ApiError>> + Send>>;

impl Api {
    /// The files the task's latest attempt left in its output folder,
    /// sorted by path (empty when it has none, yet).
    pub async fn task_files(&self, task: TaskId) -> Result<Vec<OutputFile>, ApiError> {
        self.must_exist(task).await?;
        Ok(self
            .outputs
            .files(task)?
            .into_iter()
            .map(|f| OutputFile {
                path: f.path,
                size: f.size,
            })
            .collect())
    }

    /// One output file: its size and its bytes in chunks of
    /// [`FILE_CHUNK`]. The file is opened now, so a missing one is an
    /// error now, and a later attempt replacing the task's files does not
    /// change what the stream sends.
    pub async fn task_file(&self, task: TaskId, path: &str) -> Result<(u64, FileChunks), ApiError> {
        self.must_exist(task).await?;
        let (file, size) = self.outputs.open_file(task, path)?;
        let path = path.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            while offset < size {
                let want = FILE_CHUNK.min((size - offset) as usize);
                let mut data = vec![0u8; want];
                let read = {
                    use std::os::unix::fs::FileExt;
                    file.read_exact_at(&mut data, offset)
                };
                let chunk = match read {
                    Ok(()) => Ok(v1::FileChunk { offset, data, size }),
                    Err(e) => Err(ApiError::Internal(format!(
                        "reading output file {path:?} of task {task}: {e}"
                    ))),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return; // the client went away, or the read failed
                }
                offset += want as u64;
            }
        });
        Ok((
            size,
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        ))
    }

    /// Every task that has output files, by task id, with its name and
    /// state (empty when the master no longer knows the task).
    pub async fn outputs(&self) -> Result<Vec<TaskOutputs>, ApiError> {
        let summaries = self.outputs.tasks()?;
        let ids: Vec<TaskId> = summaries.iter().map(|s| s.task).collect();
        let known = self
            .engine
            .query(move |s| {
                ids.into_iter()
                    .map(|id| {
                        s.task(id).map_or((String::new(), String::new()), |t| {
                            (t.spec.name.clone(), t.state.as_str().to_string())
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        Ok(summaries
            .into_iter()
            .zip(known)
            .map(|(s, (name, state))| TaskOutputs {
                task_id: s.task.0,
                name,
                state,
                files: s.files,
                bytes: s.bytes,
            })
            .collect())
    }
}
