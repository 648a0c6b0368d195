//! The `Control` service: a thin adapter from gRPC to [`crate::api`]. Each
//! method checks the token, turns the wire request into an `api` call and
//! the answer back into its wire message; errors map once, in
//! [`super::status`].

use super::status;
use crate::api::{Api, LogQuery, TaskFilter, TaskQuery, WatchQuery};
use berth_core::{TaskId, TaskSpec};
use berth_proto::v1::control_server::Control;
use berth_proto::{check_bearer, v1};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct ControlService {
    api: Api,
    token: Arc<str>,
}

impl ControlService {
    pub fn new(api: Api, token: Arc<str>) -> Self {
        ControlService { api, token }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, Status>> + Send>>;
type WatchEvents = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;
type FileStream = Pin<Box<dyn Stream<Item = Result<v1::FileChunk, Status>> + Send>>;

/// An optional text field: empty on the wire means absent.
fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl ControlService {
    /// Every call: count it, then check its token.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.api.note_request();
        check_bearer(req, &self.token)
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn submit_task(
        &self,
        req: Request<v1::SubmitTaskRequest>,
    ) -> Result<Response<v1::SubmitTaskResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = TaskSpec::try_from(spec)
            .map_err(|e| Status::invalid_argument(format!("invalid task: {e}")))?;
        let id = self
            .api
            .submit(spec, req.queue_anyway)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::SubmitTaskResponse { task_id: id.0 }))
    }

    async fn list_tasks(
        &self,
        req: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let query = TaskQuery {
            filter: TaskFilter {
                state: TaskFilter::parse_state("state", &req.state).map_err(status)?,
                name: given(req.name),
                worker: given(req.worker),
            },
            limit: (req.limit != 0).then_some(req.limit),
            cursor: given(req.cursor),
        };
        let page = self.api.list_tasks(query).await.map_err(status)?;
        Ok(Response::new(v1::ListTasksResponse {
            tasks: page.tasks,
            next_cursor: page.next_cursor.unwrap_or_default(),
            total: page.total,
            remaining: page.remaining,
        }))
    }

    async fn get_task(
        &self,
        req: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        self.admit(&req)?;
        let id = TaskId(req.into_inner().task_id);
        Ok(Response::new(self.api.show(id).await.map_err(status)?))
    }

    async fn cancel_task(
        &self,
        req: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::CancelTaskResponse>, Status> {
        self.admit(&req)?;
        let id = TaskId(req.into_inner().task_id);
        let task = self.api.cancel(id).await.map_err(status)?;
        Ok(Response::new(v1::CancelTaskResponse { task: Some(task) }))
    }

    async fn list_workers(
        &self,
        req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        self.admit(&req)?;
        let workers = self.api.workers().await.map_err(status)?;
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn reconcile(
        &self,
        req: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileResponse>, Status> {
        self.admit(&req)?;
        let dry_run = req.into_inner().dry_run;
        Ok(Response::new(
            self.api.reconcile(dry_run).await.map_err(status)?,
        ))
    }

    async fn drain_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        self.admit(&req)?;
        let message = self
            .api
            .drain(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AdminResponse { message }))
    }

    async fn undrain_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let message = self
            .api
            .undrain(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AdminResponse { message }))
    }

    async fn unregister_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let message = self
            .api
            .unregister(&req.name, req.confirm_dead)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AdminResponse { message }))
    }

    async fn register_worker(
        &self,
        req: Request<v1::WorkerNameRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        self.admit(&req)?;
        let message = self
            .api
            .register(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AdminResponse { message }))
    }

    async fn list_task_files(
        &self,
        req: Request<v1::ListTaskFilesRequest>,
    ) -> Result<Response<v1::ListTaskFilesResponse>, Status> {
        self.admit(&req)?;
        let id = TaskId(req.into_inner().task_id);
        let files = self.api.task_files(id).await.map_err(status)?;
        Ok(Response::new(v1::ListTaskFilesResponse {
            task_id: id.0,
            files,
        }))
    }

    async fn list_outputs(
        &self,
        req: Request<v1::ListOutputsRequest>,
    ) -> Result<Response<v1::ListOutputsResponse>, Status> {
        self.admit(&req)?;
        let tasks = self.api.outputs().await.map_err(status)?;
        Ok(Response::new(v1::ListOutputsResponse { tasks }))
    }

    type DownloadFileStream = FileStream;

    async fn download_file(
        &self,
        req: Request<v1::DownloadFileRequest>,
    ) -> Result<Response<FileStream>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let (_, chunks) = self
            .api
            .task_file(TaskId(req.task_id), &req.path)
            .await
            .map_err(status)?;
        Ok(Response::new(Box::pin(chunks.map(|c| c.map_err(status)))))
    }

    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        req: Request<v1::TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let query = LogQuery {
            offset: req.offset,
            tail: req.tail,
            follow: req.follow,
        };
        let chunks = self
            .api
            .logs(TaskId(req.task_id), query)
            .await
            .map_err(status)?;
        Ok(Response::new(Box::pin(chunks.map(|c| c.map_err(status)))))
    }

    type WatchStream = WatchEvents;

    async fn watch(&self, req: Request<v1::WatchRequest>) -> Result<Response<WatchEvents>, Status> {
        self.admit(&req)?;
        let req = req.into_inner();
        let query = WatchQuery {
            cursor: Some(req.cursor),
            task: (req.task_id != 0).then_some(TaskId(req.task_id)),
        };
        let items = self.api.watch(query).await.map_err(status)?;
        Ok(Response::new(Box::pin(items.map(|i| {
            i.map(|i| v1::WatchEvent::from(&i)).map_err(status)
        }))))
    }
}
