//! The one way this binary talks to a master: connect to its `Control`
//! service with the cluster token, and turn transport and gRPC failures into
//! messages a user can act on (which URL, what to check).
//!
//! Every error leaves here as an `anyhow::Error` whose text is what `main`
//! and the shell print after `error: `.

use anyhow::anyhow;
use berth_proto::control_client::ControlClient;
use berth_proto::{BearerToken, v1};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Task lists come in pages (at most 1,000 tasks each), so messages stay
/// small; this leaves room for a page of large tasks.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Tasks per page when every task is wanted: the master's maximum.
const ALL_PAGE: u32 = 1000;

type Inner = ControlClient<InterceptedService<Channel, BearerToken>>;

/// A connected `Control` client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
    url: String,
}

/// `host:port` → `http://host:port`; URLs with a scheme are kept as given.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

impl Client {
    /// Connect to the master at `url`, sending `token` on every call.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Client> {
        let url = normalize_url(url);
        let credential = BearerToken::new(token).map_err(|e| anyhow!("--token: {e}"))?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| anyhow!("'{url}' is not a valid master URL (expected http://HOST:PORT)"))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_error(&url, &e))?;
        let inner = ControlClient::with_interceptor(channel, credential)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { inner, url })
    }

    /// The master URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn status(&self, s: Status) -> anyhow::Error {
        status_error(&self.url, &s)
    }

    pub async fn submit(&self, spec: v1::TaskSpec, queue_anyway: bool) -> anyhow::Result<u64> {
        let req = v1::SubmitTaskRequest {
            spec: Some(spec),
            queue_anyway,
        };
        let resp = self.inner.clone().submit_task(req).await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().task_id)
    }

    /// One page of tasks: `state` (`""` for all), at most `limit` (0 for
    /// the master's default), after `cursor` (`""` for the first page).
    pub async fn list_page(
        &self,
        state: &str,
        limit: u32,
        cursor: &str,
    ) -> anyhow::Result<v1::ListTasksResponse> {
        let req = v1::ListTasksRequest {
            state: state.to_string(),
            limit,
            cursor: cursor.to_string(),
            ..Default::default()
        };
        let resp = self.inner.clone().list_tasks(req).await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner())
    }

    /// Every task, optionally in one state (`""` for all), page by page:
    /// active ones oldest first, then finished ones newest first.
    pub async fn list_tasks(&self, state: &str) -> anyhow::Result<Vec<v1::Task>> {
        let mut tasks = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self.list_page(state, ALL_PAGE, &cursor).await?;
            tasks.extend(page.tasks);
            if page.next_cursor.is_empty() {
                return Ok(tasks);
            }
            cursor = page.next_cursor;
        }
    }

    pub async fn get_task(&self, task_id: u64) -> anyhow::Result<v1::Task> {
        let resp = self
            .inner
            .clone()
            .get_task(v1::GetTaskRequest { task_id })
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner())
    }

    pub async fn cancel(&self, task_id: u64) -> anyhow::Result<v1::CancelTaskResponse> {
        let resp = self
            .inner
            .clone()
            .cancel_task(v1::CancelTaskRequest { task_id })
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner())
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<v1::Worker>> {
        let resp = self
            .inner
            .clone()
            .list_workers(v1::ListWorkersRequest {})
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().workers)
    }

    pub async fn reconcile(&self, dry_run: bool) -> anyhow::Result<v1::ReconcileResponse> {
        let resp = self
            .inner
            .clone()
            .reconcile(v1::ReconcileRequest { dry_run })
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner())
    }

    /// Open a task's log stream (read it with [`LogStream::next`]) from
    /// `offset` (bytes of its attempts' logs
    /// one after the other: where a dropped stream left off).
    pub async fn logs_from(
        &self,
        task_id: u64,
        follow: bool,
        offset: u64,
    ) -> anyhow::Result<LogStream> {
        let resp = self
            .inner
            .clone()
            .task_logs(v1::TaskLogsRequest {
                task_id,
                follow,
                offset,
                ..Default::default()
            })
            .await;
        Ok(LogStream {
            inner: resp.map_err(|s| self.status(s))?.into_inner(),
            url: self.url.clone(),
        })
    }
}

impl Client {
    /// Watch the committed changes of one task (0: of everything) after
    /// `cursor` (none: from now). The gRPC status is kept as it is, so that
    /// a caller can tell a cursor the master cannot resume from
    /// (`OUT_OF_RANGE`) from a connection that broke.
    pub async fn watch(
        &self,
        task_id: u64,
        cursor: Option<String>,
    ) -> Result<Streaming<v1::WatchEvent>, Status> {
        let resp = self
            .inner
            .clone()
            .watch(v1::WatchRequest {
                task_id,
                cursor: cursor.unwrap_or_default(),
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// A task's output files, sorted by path.
    pub async fn task_files(&self, task_id: u64) -> anyhow::Result<Vec<v1::OutputFile>> {
        let resp = self
            .inner
            .clone()
            .list_task_files(v1::ListTaskFilesRequest { task_id })
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().files)
    }

    /// Every task that has output files.
    pub async fn outputs(&self) -> anyhow::Result<Vec<v1::TaskOutputs>> {
        let resp = self
            .inner
            .clone()
            .list_outputs(v1::ListOutputsRequest {})
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().tasks)
    }

    /// Open one output file's stream; read it with [`FileStream::next`].
    pub async fn download(&self, task_id: u64, path: &str) -> anyhow::Result<FileStream> {
        let resp = self
            .inner
            .clone()
            .download_file(v1::DownloadFileRequest {
                task_id,
                path: path.to_string(),
            })
            .await;
        Ok(FileStream {
            inner: resp.map_err(|s| self.status(s))?.into_inner(),
            url: self.url.clone(),
        })
    }
}

/// Operator actions on one worker, by name; each returns the master's
/// one-line answer.
impl Client {
    pub async fn drain_worker(&self, name: &str) -> anyhow::Result<String> {
        let resp = self.inner.clone().drain_worker(name_request(name)).await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().message)
    }

    pub async fn undrain_worker(&self, name: &str) -> anyhow::Result<String> {
        let resp = self.inner.clone().undrain_worker(name_request(name)).await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().message)
    }

    pub async fn unregister_worker(
        &self,
        name: &str,
        confirm_dead: bool,
    ) -> anyhow::Result<String> {
        let resp = self
            .inner
            .clone()
            .unregister_worker(v1::WorkerNameRequest {
                confirm_dead,
                ..name_request(name)
            })
            .await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().message)
    }

    pub async fn register_worker(&self, name: &str) -> anyhow::Result<String> {
        let resp = self.inner.clone().register_worker(name_request(name)).await;
        Ok(resp.map_err(|s| self.status(s))?.into_inner().message)
    }
}

fn name_request(name: &str) -> v1::WorkerNameRequest {
    v1::WorkerNameRequest {
        name: name.to_string(),
        confirm_dead: false,
    }
}

/// One output file's chunks, in order.
pub struct FileStream {
    inner: Streaming<v1::FileChunk>,
    url: String,
}

impl FileStream {
    /// The next chunk, or `None` when the file is complete.
    pub async fn next(&mut self) -> anyhow::Result<Option<v1::FileChunk>> {
        self.inner
            .message()
            .await
            .map_err(|s| status_error(&self.url, &s))
    }
}

/// A task's log chunks, in order.
pub struct LogStream {
    inner: Streaming<v1::LogChunk>,
    url: String,
}

impl LogStream {
    /// The next chunk, or `None` when the stream has ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<v1::LogChunk>> {
        self.inner
            .message()
            .await
            .map_err(|s| status_error(&self.url, &s))
    }
}

/// A gRPC status as the user should read it: the master's own message,
/// with the URL added where the problem is reaching it.
pub fn status_error(url: &str, s: &Status) -> anyhow::Error {
    let message = if s.message().is_empty() {
        s.code().description().to_string()
    } else {
        s.message().to_string()
    };
    match s.code() {
        Code::Unavailable => anyhow!("cannot reach the master at {url}: {message}"),
        Code::DeadlineExceeded => anyhow!("the master at {url} did not answer in time: {message}"),
        _ => anyhow!(message),
    }
}

/// Why a connection could not be opened, naming the URL.
fn connect_error(url: &str, e: &tonic::transport::Error) -> anyhow::Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut detail = String::new();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return anyhow!(
                        "cannot connect to the master at {url}: connection refused \
                         (is `berth master` running there? set --master or BERTH_MASTER)"
                    );
                }
                std::io::ErrorKind::TimedOut => {
                    return anyhow!("cannot connect to the master at {url}: timed out");
                }
                _ => {}
            }
        }
        let text = err.to_string();
        if !text.is_empty() && !detail.contains(&text) {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&text);
        }
        source = err.source();
    }
    anyhow!("cannot connect to the master at {url}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(normalize_url("https://m:1"), "https://m:1");
    }

    #[test]
    fn status_messages_are_the_masters() {
        let e = status_error(
            "http://x:1",
            &Status::unauthenticated("wrong cluster token"),
        );
        assert_eq!(e.to_string(), "wrong cluster token");
        let e = status_error("http://x:1", &Status::unavailable("gone"));
        assert_eq!(e.to_string(), "cannot reach the master at http://x:1: gone");
        let e = status_error("http://x:1", &Status::not_found(""));
        assert!(!e.to_string().is_empty());
    }

    #[tokio::test]
    async fn refused_connection_names_the_url() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let e = Client::connect(&url, "t").await.err().unwrap();
        let text = e.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
