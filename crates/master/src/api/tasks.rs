//! Submit, show and cancel one task.

use super::{Api, ApiError};
use crate::engine::Command;
use crate::views;
use berth_core::{TaskId, TaskSpec};
use berth_proto::v1;

impl Api {
    /// Record a new task (already built and checked for its fields by the
    /// adapter) and return its id, once it is durable. Refused when no
    /// registered worker could ever fit it, unless `queue_anyway`.
    pub async fn submit(&self, spec: TaskSpec, queue_anyway: bool) -> Result<TaskId, ApiError> {
        let id = self
            .engine
            .call(|reply| Command::Submit {
                spec,
                queue_anyway,
                reply,
            })
            .await??;
        Ok(id)
    }

    /// One task with all its attempts (and why it waits, if queued).
    pub async fn show(&self, id: TaskId) -> Result<v1::Task, ApiError> {
        self.engine
            .query(move |s| s.task(id).map(|t| views::task(s, t)))
            .await?
            .ok_or_else(|| ApiError::no_task(id))
    }

    /// Fail with `NotFound` unless the task exists.
    pub(crate) async fn must_exist(&self, id: TaskId) -> Result<(), ApiError> {
        if self.engine.query(move |s| s.task(id).is_some()).await? {
            Ok(())
        } else {
            Err(ApiError::no_task(id))
        }
    }

    /// Cancel a task: a queued one ends at once, a placed one is asked to
    /// stop. Returns the task as it is after the cancel was recorded.
    pub async fn cancel(&self, task: TaskId) -> Result<v1::Task, ApiError> {
        self.engine
            .call(|reply| Command::Cancel { task, reply })
            .await??;
        self.show(task).await
    }
}
