//! The `WorkerLink` service: one bidirectional stream per worker session.
//! The first message must be a hello; after that, heartbeats, attempt
//! updates, log chunks and output files flow in, and starts, stops and
//! acks flow out.

use crate::engine::{Command, EngineHandle};
use crate::logs::LogStore;
use crate::outputs::{OutputError, OutputStore, Progress, Receiver};
use crate::state::{ReportError, WorkerHello};
use berth_core::{AttemptId, GpuInfo, TaskId, WorkerId};
use berth_proto::v1::worker_link_server::WorkerLink;
use berth_proto::v1::worker_message::Body;
use berth_proto::{HeldReport, check_bearer, resources_or_zero, v1};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// How often stream traffic other than heartbeats refreshes a worker's
/// last sign of life.
const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub struct WorkerLinkService {
    engine: EngineHandle,
    logs: LogStore,
    outputs: OutputStore,
    token: Arc<str>,
    heartbeat_interval: Duration,
    next_session: AtomicU64,
}

impl WorkerLinkService {
    pub fn new(
        engine: EngineHandle,
        logs: LogStore,
        outputs: OutputStore,
        token: Arc<str>,
        heartbeat_interval: Duration,
    ) -> Self {
        WorkerLinkService {
            engine,
            logs,
            outputs,
            token,
            heartbeat_interval,
            next_session: AtomicU64::new(1),
        }
    }
}

fn held(list: Vec<v1::HeldAttempt>) -> Result<Vec<HeldReport>, Status> {
    list.into_iter()
        .map(|h| HeldReport::try_from(h).map_err(|e| Status::invalid_argument(e.to_string())))
        .collect()
}

type Outbound = Pin<Box<dyn Stream<Item = Result<v1::MasterMessage, Status>> + Send>>;

/// The task whose files `attempt` may replace: its own, when it ran on
/// `worker` and is still the task's latest attempt (an attempt lost
/// and replaced does not overwrite its successor's files).
async fn output_owner(
    engine: &EngineHandle,
    worker: &WorkerId,
    attempt: AttemptId,
) -> Option<TaskId> {
    let worker = worker.clone();
    engine
        .query(move |s| {
            let a = s.attempt(attempt).filter(|a| a.worker_id == worker)?;
            let latest = s.attempts_of(a.task_id).map(|x| x.id).max()?;
            (latest == attempt).then_some(a.task_id)
        })
        .await
        .ok()
        .flatten()
}

/// After a manifest or a chunk: store a complete upload (if its attempt
/// is still its task's latest), or report what went wrong.
async fn settle_upload(
    engine: &EngineHandle,
    worker: &WorkerId,
    uploads: &mut Receiver,
    attempt: AttemptId,
    progress: Result<Progress, OutputError>,
) {
    match progress {
        Ok(Progress::Pending) => {}
        Ok(Progress::Complete(task)) => {
            if output_owner(engine, worker, attempt).await != Some(task) {
                uploads.discard(attempt);
                return;
            }
            match uploads.commit(attempt) {
                Ok(files) => {
                    tracing::info!(worker = %worker, attempt = %attempt, task = %task, files, "output files stored")
                }
                Err(e) => {
                    tracing::warn!(worker = %worker, attempt = %attempt, error = %e, "storing output files failed")
                }
            }
        }
        Err(e) => {
            uploads.discard(attempt);
            tracing::warn!(worker = %worker, attempt = %attempt, error = %e, "output files refused");
        }
    }
}

#[tonic::async_trait]
impl WorkerLink for WorkerLinkService {
    type SessionStream = Outbound;

    async fn session(
        &self,
        req: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        check_bearer(&req, &self.token)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("session closed before hello"))?;
        let Some(Body::Hello(h)) = first.body else {
            return Err(Status::invalid_argument(
                "the first message of a session must be a hello",
            ));
        };
        if h.node_id.is_empty() {
            return Err(Status::invalid_argument("hello.node_id: empty"));
        }
        let worker = WorkerId(h.node_id.clone());
        let hello = WorkerHello {
            id: worker.clone(),
            name: h.name,
            total: resources_or_zero(h.total),
            drivers: h.drivers,
            gpus: h.gpus.into_iter().map(GpuInfo::from).collect(),
            held: held(h.held)?,
            draining: h.draining,
            labels: berth_proto::labels_from_wire(h.labels),
            max_attempt_id: h.max_attempt_id,
            stop_grace_ms: h.stop_grace_ms,
        };
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let heartbeat_interval_ms = self.heartbeat_interval.as_millis() as u64;
        self.engine
            .call(|reply| Command::Hello {
                hello,
                session,
                tx,
                heartbeat_interval_ms,
                reply,
            })
            .await?
            .map_err(|e: ReportError| {
                // Held for now by a live agent (or a name whose old holder
                // has not yet timed out): worth retrying, the agent does.
                if e.is_retryable() {
                    Status::aborted(e.to_string())
                } else {
                    Status::failed_precondition(e.to_string())
                }
            })?;

        let engine = self.engine.clone();
        let logs = self.logs.clone();
        let mut uploads = Receiver::new(self.outputs.clone());
        tokio::spawn(async move {
            let mut last_alive = std::time::Instant::now();
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(worker = %worker, error = %e, "worker stream ended");
                        break;
                    }
                };
                // Any message is a sign of life: a worker sending a large
                // log or output has its heartbeats queued behind the bytes.
                if last_alive.elapsed() >= ALIVE_EVERY {
                    last_alive = std::time::Instant::now();
                    if engine
                        .send(Command::Alive {
                            worker: worker.clone(),
                            session,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                let cmd = match msg.body {
                    Some(Body::Heartbeat(hb)) => match held(hb.held) {
                        Ok(held) => Command::Heartbeat {
                            worker: worker.clone(),
                            session,
                            held,
                            draining: hb.draining,
                        },
                        Err(e) => {
                            tracing::warn!(worker = %worker, error = %e, "bad heartbeat");
                            continue;
                        }
                    },
                    Some(Body::Update(u)) => {
                        let Some(h) = u.attempt else { continue };
                        match HeldReport::try_from(h) {
                            Ok(held) => Command::Report {
                                worker: worker.clone(),
                                seq: u.seq,
                                held,
                            },
                            Err(e) => {
                                tracing::warn!(worker = %worker, error = %e, "bad update");
                                continue;
                            }
                        }
                    }
                    Some(Body::Log(chunk)) => {
                        // Written before any later update on this stream is
                        // forwarded, so a task's log is complete by the time
                        // its result is applied.
                        if let Err(e) =
                            logs.write(AttemptId(chunk.attempt_id), chunk.offset, &chunk.data)
                        {
                            tracing::warn!(worker = %worker, attempt = chunk.attempt_id, error = %e, "log write failed");
                        }
                        continue;
                    }
                    // Output files, like logs, are stored before any later
                    // update on this stream is forwarded.
                    Some(Body::Outputs(m)) => {
                        let attempt = AttemptId(m.attempt_id);
                        let owner = output_owner(&engine, &worker, attempt).await;
                        let files = m.files.into_iter().map(|f| (f.path, f.size)).collect();
                        let progress = uploads.manifest(attempt, owner, files);
                        settle_upload(&engine, &worker, &mut uploads, attempt, progress).await;
                        continue;
                    }
                    Some(Body::Output(c)) => {
                        let attempt = AttemptId(c.attempt_id);
                        let progress = uploads.chunk(attempt, &c.path, c.offset, &c.data);
                        settle_upload(&engine, &worker, &mut uploads, attempt, progress).await;
                        continue;
                    }
                    Some(Body::Hello(_)) | None => {
                        tracing::warn!(worker = %worker, "unexpected message mid-session");
                        continue;
                    }
                };
                if engine.send(cmd).is_err() {
                    break;
                }
            }
            let _ = engine.send(Command::Disconnected { worker, session });
        });
        let out = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}
