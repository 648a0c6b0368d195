//! The `Control` service: submit, list, show, cancel, workers, reconcile,
//! logs.

use crate::engine::{Command, EngineHandle};
use crate::logs::LogStore;
use crate::state::{CancelError, SubmitError};
use crate::views;
use berth_core::{AttemptId, TaskId, TaskSpec, TaskState};
use berth_proto::v1::control_server::Control;
use berth_proto::{check_bearer, v1};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const LOG_READ: usize = 256 * 1024;

pub struct ControlService {
    engine: EngineHandle,
    logs: LogStore,
    token: Arc<str>,
}

impl ControlService {
    pub fn new(engine: EngineHandle, logs: LogStore, token: Arc<str>) -> Self {
        ControlService {
            engine,
            logs,
            token,
        }
    }

    async fn task_view(&self, id: TaskId) -> Result<v1::Task, Status> {
        self.engine
            .query(move |s| s.task(id).map(|t| views::task(s, t)))
            .await?
            .ok_or_else(|| Status::not_found(format!("task {id} does not exist")))
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn submit_task(
        &self,
        req: Request<v1::SubmitTaskRequest>,
    ) -> Result<Response<v1::SubmitTaskResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let req = req.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = TaskSpec::try_from(spec)
            .map_err(|e| Status::invalid_argument(format!("invalid task: {e}")))?;
        let queue_anyway = req.queue_anyway;
        let r = self
            .engine
            .call(|reply| Command::Submit {
                spec,
                queue_anyway,
                reply,
            })
            .await?;
        match r {
            Ok(id) => Ok(Response::new(v1::SubmitTaskResponse { task_id: id.0 })),
            Err(e @ SubmitError::Invalid(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ SubmitError::NeverFits(_)) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn list_tasks(
        &self,
        req: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let state = req.into_inner().state;
        let filter = if state.is_empty() {
            None
        } else {
            Some(TaskState::parse(&state).ok_or_else(|| {
                let all: Vec<_> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                Status::invalid_argument(format!(
                    "state: '{state}' is not a task state; use one of {}",
                    all.join(", ")
                ))
            })?)
        };
        let tasks = self.engine.query(move |s| views::tasks(s, filter)).await?;
        Ok(Response::new(v1::ListTasksResponse { tasks }))
    }

    async fn get_task(
        &self,
        req: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        check_bearer(&req, &self.token)?;
        let id = TaskId(req.into_inner().task_id);
        Ok(Response::new(self.task_view(id).await?))
    }

    async fn cancel_task(
        &self,
        req: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::CancelTaskResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let task = TaskId(req.into_inner().task_id);
        match self
            .engine
            .call(|reply| Command::Cancel { task, reply })
            .await?
        {
            Ok(_) => Ok(Response::new(v1::CancelTaskResponse {
                task: Some(self.task_view(task).await?),
            })),
            Err(e @ CancelError::NoSuchTask(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ CancelError::AlreadyEnded(..)) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn list_workers(
        &self,
        req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let workers = self.engine.query(views::workers).await?;
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn reconcile(
        &self,
        req: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let dry_run = req.into_inner().dry_run;
        let report = self
            .engine
            .call(|reply| Command::Reconcile { dry_run, reply })
            .await?
            .map_err(|e| Status::internal(format!("reconciling: {e}")))?;
        Ok(Response::new(v1::ReconcileResponse {
            dry_run: report.dry_run,
            workers_checked: report.workers_checked as u32,
            fixes: report
                .fixes
                .into_iter()
                .map(|f| v1::WorkerFix {
                    worker_id: f.worker.0,
                    worker_name: f.name,
                    before: Some(f.before.into()),
                    after: Some(f.after.into()),
                    tasks: f.tasks as u32,
                    kind: f.kind.as_str().to_string(),
                })
                .collect(),
        }))
    }

    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        req: Request<v1::TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        check_bearer(&req, &self.token)?;
        let req = req.into_inner();
        let id = TaskId(req.task_id);
        self.task_view(id).await?; // not found → error now, not mid-stream
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let engine = self.engine.clone();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            if let Err(e) = stream_logs(engine, logs, id, req.follow, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Send every attempt's log in order; when following, keep polling until
/// the task has ended and everything has been sent.
async fn stream_logs(
    engine: EngineHandle,
    logs: LogStore,
    id: TaskId,
    follow: bool,
    tx: &tokio::sync::mpsc::Sender<Result<v1::LogChunk, Status>>,
) -> Result<(), Status> {
    let mut offsets: Vec<(AttemptId, u64)> = Vec::new();
    loop {
        let (attempts, ended) = engine
            .query(move |s| {
                let ids: Vec<AttemptId> = s.attempts_of(id).map(|a| a.id).collect();
                let ended = s.task(id).is_none_or(|t| t.state.is_terminal());
                (ids, ended)
            })
            .await?;
        for a in attempts {
            if !offsets.iter().any(|(x, _)| *x == a) {
                offsets.push((a, 0));
            }
        }
        for (a, off) in offsets.iter_mut() {
            loop {
                let data = logs
                    .read(*a, *off, LOG_READ)
                    .map_err(|e| Status::internal(format!("reading log of attempt {a}: {e}")))?;
                if data.is_empty() {
                    break;
                }
                let n = data.len() as u64;
                let chunk = v1::LogChunk {
                    attempt_id: a.0,
                    offset: *off,
                    data,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(()); // the client went away
                }
                *off += n;
            }
        }
        // The final result is applied only after the worker has sent all
        // of the log, so once the task has ended one more pass is complete.
        if !follow || ended {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}
