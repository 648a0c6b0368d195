//! The `Control` service: submit, list, show, cancel, workers, reconcile,
//! logs, output files.

use crate::engine::{AdminOp, Command, EngineHandle};
use crate::logs::LogStore;
use crate::outputs::{OutputError, OutputStore};
use crate::state::{AdminError, CancelError, SubmitError};
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
/// Bytes per chunk of a downloaded output file.
const FILE_READ: usize = 256 * 1024;

pub struct ControlService {
    engine: EngineHandle,
    logs: LogStore,
    outputs: OutputStore,
    token: Arc<str>,
}

impl ControlService {
    pub fn new(
        engine: EngineHandle,
        logs: LogStore,
        outputs: OutputStore,
        token: Arc<str>,
    ) -> Self {
        ControlService {
            engine,
            logs,
            outputs,
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

impl ControlService {
    async fn admin(
        &self,
        op: AdminOp,
        name: String,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        let r = self
            .engine
            .call(|reply| Command::Admin { op, name, reply })
            .await?;
        match r {
            Ok(message) => Ok(Response::new(v1::AdminResponse { message })),
            Err(e @ AdminError::NoSuchWorker(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ AdminError::BadName(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, Status>> + Send>>;
type FileStream = Pin<Box<dyn Stream<Item = Result<v1::FileChunk, Status>> + Send>>;

fn output_status(e: OutputError) -> Status {
    match e {
        OutputError::BadPath { .. } => Status::invalid_argument(e.to_string()),
        OutputError::NoSuchFile { task, .. } => {
            Status::not_found(format!("{e}; `berth task files {task}` lists its files"))
        }
        OutputError::Upload { .. } | OutputError::Io { .. } => Status::internal(e.to_string()),
    }
}

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
        Ok(Response::new(views::reconcile(report)))
    }

    async fn drain_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        check_bearer(&req, &self.token)?;
        self.admin(AdminOp::Drain, req.into_inner().name).await
    }

    async fn unregister_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let req = req.into_inner();
        let op = if req.confirm_dead {
            AdminOp::UnregisterDead
        } else {
            AdminOp::Unregister
        };
        self.admin(op, req.name).await
    }

    async fn register_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        check_bearer(&req, &self.token)?;
        self.admin(AdminOp::Register, req.into_inner().name).await
    }

    async fn list_task_files(
        &self,
        req: Request<v1::ListTaskFilesRequest>,
    ) -> Result<Response<v1::ListTaskFilesResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let id = TaskId(req.into_inner().task_id);
        self.task_view(id).await?;
        let files = self.outputs.files(id).map_err(output_status)?;
        Ok(Response::new(v1::ListTaskFilesResponse {
            task_id: id.0,
            files: files
                .into_iter()
                .map(|f| v1::OutputFile {
                    path: f.path,
                    size: f.size,
                })
                .collect(),
        }))
    }

    async fn list_outputs(
        &self,
        req: Request<v1::ListOutputsRequest>,
    ) -> Result<Response<v1::ListOutputsResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let summaries = self.outputs.tasks().map_err(output_status)?;
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
        let tasks = summaries
            .into_iter()
            .zip(known)
            .map(|(s, (name, state))| v1::TaskOutputs {
                task_id: s.task.0,
                name,
                state,
                files: s.files,
                bytes: s.bytes,
            })
            .collect();
        Ok(Response::new(v1::ListOutputsResponse { tasks }))
    }

    type DownloadFileStream = FileStream;

    async fn download_file(
        &self,
        req: Request<v1::DownloadFileRequest>,
    ) -> Result<Response<FileStream>, Status> {
        check_bearer(&req, &self.token)?;
        let req = req.into_inner();
        let id = TaskId(req.task_id);
        self.task_view(id).await?;
        // Opened now: a missing file is an error now, and a later attempt
        // replacing the task's files does not change what this stream sends.
        let (file, size) = self
            .outputs
            .open_file(id, &req.path)
            .map_err(output_status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            while offset < size {
                let want = FILE_READ.min((size - offset) as usize);
                let mut data = vec![0u8; want];
                let read = {
                    use std::os::unix::fs::FileExt;
                    file.read_exact_at(&mut data, offset)
                };
                let chunk = match read {
                    Ok(()) => Ok(v1::FileChunk { offset, data, size }),
                    Err(e) => Err(Status::internal(format!(
                        "reading output file {:?} of task {id}: {e}",
                        req.path
                    ))),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return; // the client went away, or the read failed
                }
                offset += want as u64;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
