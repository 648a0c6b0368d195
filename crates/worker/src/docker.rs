//! The docker driver: each attempt is one container, run through the Docker
//! Engine API (bollard, over the local socket).
//!
//! A container is created with the berth labels (`berth.task`,
//! `berth.attempt`, `berth.worker` = this worker's node id), a
//! deterministic name (`berth-ATTEMPT-NODE`), CPU and memory limits
//! (`NanoCpus` = millicores × 10⁶, `Memory` = bytes, no extra swap), not
//! privileged, the attempt's `output/` folder mounted at `/output`, and the
//! attempt's GPUs as a device request (driver `nvidia`, the device ids the
//! master handed out).
//!
//! One watcher task per attempt does everything slow: find or pull the
//! image, create and start the container, copy its output into the
//! attempt's `log` (from the container's start, at offset 0, so a watcher
//! started again after an agent restart rewrites the same bytes), record
//! the exit code in `exit`, remove the container, and tell the agent.
//! A start that cannot happen (no image, the engine refuses) is recorded in
//! `failed` with a reason naming what failed.
//!
//! A restarted agent re-attaches by label; a container that ended while the
//! agent was away is collected the same way. The reaper (every
//! `reap_interval`) stops and removes containers labelled for this node
//! that no running attempt of this agent owns and that are older than
//! `reap_grace`; containers of other workers (another node id) and
//! containers without berth's labels are never touched.

use crate::attempt_dir::AttemptDir;
use crate::driver::{Driver, Launch, Signal};
use berth_core::AttemptId;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_ATTEMPT: &str = "berth.attempt";
pub const LABEL_WORKER: &str = "berth.worker";
/// The worker's name and data dir: unlike the node id they survive a wiped
/// data dir, so the containers of a worker's previous life can be reaped.
pub const LABEL_WORKER_NAME: &str = "berth.worker.name";
pub const LABEL_WORKER_DIR: &str = "berth.worker.dir";

/// Where a task finds its output folder inside the container.
pub const OUTPUT_MOUNT: &str = "/output";

/// How long connecting to the engine (and each of its first answers) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest pause between two tries to reach an engine that did not answer.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// How long a new attempt waits for an engine that does not answer before
/// it fails.
const START_ENGINE_WAIT: Duration = Duration::from_secs(30);

/// How long a watched container may go without a definite answer from the
/// engine (errors other than "no such container") before its attempt is
/// given up as failed.
const ENGINE_OUTAGE_LIMIT: Duration = Duration::from_secs(300);

/// Longest pause between two tries of a request that failed transiently.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(10);

/// Who this worker is, as its containers' labels say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Changes when the data dir is wiped.
    pub node_id: String,
    pub name: String,
    /// The absolute data dir.
    pub data_dir: String,
}

/// The container name of an attempt on a node: unique per engine even when
/// several workers share it.
pub fn container_name(node_id: &str, attempt: AttemptId) -> String {
    let node: String = node_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("berth-{}-{node}", attempt.0)
}

/// Split an image reference into the `fromImage` and `tag` a pull takes:
/// `busybox` → (`busybox`, `latest`), `host:5000/a/b:1.2` → (`host:5000/a/b`,
/// `1.2`), `a@sha256:…` → (`a`, `sha256:…`).
pub fn split_image(reference: &str) -> (String, String) {
    if let Some((name, digest)) = reference.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last..].rfind(':') {
        Some(i) => (
            reference[..last + i].to_string(),
            reference[last + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// The container an attempt runs in. Pure, so the limits, labels and
/// device requests are unit-tested.
pub fn container_config(l: &Launch, me: &Identity) -> ContainerCreateBody {
    let spec = &l.spec;
    let r = spec.resources;
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(l.env.iter().map(|(k, v)| format!("{k}={v}")));
    env.push(format!("BERTH_OUTPUT_DIR={OUTPUT_MOUNT}"));
    if !l.gpu_ids.is_empty() {
        let ids: Vec<String> = l.gpu_ids.iter().map(u32::to_string).collect();
        // Inside the container the devices are renumbered from 0; this
        // says which of the machine's GPUs they are.
        env.push(format!("BERTH_GPU_IDS={}", ids.join(",")));
    }
    let labels = HashMap::from([
        (LABEL_TASK.to_string(), l.task.0.to_string()),
        (LABEL_ATTEMPT.to_string(), l.dir.id.0.to_string()),
        (LABEL_WORKER.to_string(), me.node_id.clone()),
        (LABEL_WORKER_NAME.to_string(), me.name.clone()),
        (LABEL_WORKER_DIR.to_string(), me.data_dir.clone()),
    ]);
    let device_requests = (!l.gpu_ids.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_string()),
            device_ids: Some(l.gpu_ids.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".to_string()]]),
            ..Default::default()
        }]
    });
    let memory = (r.memory_bytes > 0).then_some(r.memory_bytes as i64);
    ContainerCreateBody {
        image: spec.image.clone(),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            nano_cpus: (r.cpu_millis > 0).then_some(r.cpu_millis as i64 * 1_000_000),
            memory,
            // The same as Memory: no swap beyond the limit.
            memory_swap: memory,
            privileged: Some(false),
            binds: Some(vec![format!("{}:{OUTPUT_MOUNT}", l.dir.output().display())]),
            device_requests,
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Does the engine answer on its local socket? A blocking `GET /_ping`,
/// for detection (which runs before the async runtime may be up). With a
/// `DOCKER_HOST` that is not a unix socket the answer is left to
/// [`connect`].
pub fn engine_answers() -> bool {
    use std::io::{Read, Write};
    let path = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => p.to_string(),
            None => return true,
        },
        _ => "/var/run/docker.sock".to_string(),
    };
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 64 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200")
}

/// Connect to the engine (`DOCKER_HOST` or the local socket), agree on the
/// API version and check it answers.
pub async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| "the Docker engine did not answer in time".to_string())?
        .map_err(|e| format!("agreeing on the API version: {e}"))?;
    tokio::time::timeout(CONNECT_TIMEOUT, docker.ping())
        .await
        .map_err(|_| "the Docker engine did not answer in time".to_string())?
        .map_err(|e| format!("ping: {e}"))?;
    Ok(docker)
}

/// The marker a worker leaves in its data dir once it has run containers.
const DOCKER_MARKER: &str = "docker";

/// Has this worker run containers before (the marker, or a docker attempt
/// in its data dir)? Then an engine that does not answer at start is
/// waited for instead of dropping the driver and failing those attempts.
pub fn used_before(data_dir: &Path) -> bool {
    if data_dir.join(DOCKER_MARKER).exists() {
        return true;
    }
    let root = data_dir.join("attempts");
    AttemptDir::scan(&root).is_ok_and(|dirs| {
        dirs.iter().any(|d| {
            d.meta()
                .is_ok_and(|m| m.driver == berth_core::DriverKind::Docker)
        })
    })
}

/// Note in the data dir that this worker runs containers.
pub fn remember(data_dir: &Path) {
    let path = data_dir.join(DOCKER_MARKER);
    if !path.exists()
        && let Err(e) = std::fs::write(&path, b"")
    {
        tracing::warn!(path = %path.display(), error = %e, "could not note that this worker runs containers");
    }
}

/// The engine, once it answers: watchers, signals and the reaper wait for
/// it (an agent started while the engine was down keeps its containers'
/// attempts and picks them up when it comes back).
#[derive(Clone)]
pub struct Engine(watch::Receiver<Option<Docker>>);

impl Engine {
    /// An engine that answered.
    pub fn connected(docker: Docker) -> Engine {
        Engine(watch::channel(Some(docker)).1)
    }

    /// An engine that does not answer yet: tried again and again (with
    /// backoff up to 30 s) until it does. Needs a runtime.
    pub fn connecting() -> Engine {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let mut tries = 0u32;
            loop {
                match connect().await {
                    Ok(docker) => {
                        tracing::info!(
                            tries,
                            "the Docker engine answers; re-attaching to containers"
                        );
                        let _ = tx.send(Some(docker));
                        return;
                    }
                    Err(e) => {
                        tries += 1;
                        if tries == 1 || tries.is_power_of_two() {
                            tracing::warn!(error = %e, tries, "the Docker engine does not answer; trying again");
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
            }
        });
        Engine(rx)
    }

    /// The engine if it answers now.
    pub fn now(&self) -> Option<Docker> {
        self.0.borrow().clone()
    }

    /// Wait until the engine answers.
    pub async fn wait(&self) -> Option<Docker> {
        let mut rx = self.0.clone();
        let d = rx.wait_for(Option::is_some).await.ok()?;
        d.clone()
    }
}

/// How the reaper runs.
#[derive(Debug, Clone, Copy)]
pub struct ReapPolicy {
    pub interval: Duration,
    /// Containers younger than this are never reaped.
    pub grace: Duration,
}

pub struct DockerDriver {
    engine: Engine,
    me: Identity,
    exits: mpsc::UnboundedSender<AttemptId>,
    watchers: HashMap<AttemptId, JoinHandle<()>>,
    stop_grace: Duration,
    reap: ReapPolicy,
    next_reap: Instant,
    reaping: Option<JoinHandle<()>>,
}

impl DockerDriver {
    pub fn new(
        engine: Engine,
        me: Identity,
        exits: mpsc::UnboundedSender<AttemptId>,
        stop_grace: Duration,
        reap: ReapPolicy,
    ) -> DockerDriver {
        DockerDriver {
            engine,
            me,
            exits,
            watchers: HashMap::new(),
            stop_grace,
            reap,
            next_reap: Instant::now() + reap.interval,
            reaping: None,
        }
    }

    fn watch(&mut self, dir: AttemptDir, create: Option<Create>) {
        let w = Watcher {
            engine: self.engine.clone(),
            name: container_name(&self.me.node_id, dir.id),
            node_id: self.me.node_id.clone(),
            dir,
        };
        let exits = self.exits.clone();
        let id = w.dir.id;
        let handle = tokio::spawn(async move {
            if let Err(reason) = w.run(create).await {
                tracing::warn!(attempt = %w.dir.id, %reason, "container attempt failed");
                if let Err(e) = w.dir.set_failed(&reason) {
                    tracing::warn!(attempt = %w.dir.id, error = %e, "could not record the failure");
                }
            }
            let _ = exits.send(w.dir.id);
        });
        self.watchers.insert(id, handle);
    }
}

/// What a fresh start needs beyond the folder.
struct Create {
    image: String,
    config: ContainerCreateBody,
}

impl Driver for DockerDriver {
    fn start(&mut self, l: Launch) -> Result<(), String> {
        let Some(image) = l.spec.image.clone() else {
            return Err("a container task needs an image".into());
        };
        let config = container_config(&l, &self.me);
        tracing::info!(attempt = %l.dir.id, task = l.task.0, %image, "attempt starting (docker)");
        self.watch(l.dir, Some(Create { image, config }));
        Ok(())
    }

    fn running(&self, dir: &AttemptDir) -> bool {
        self.watchers.get(&dir.id).is_some_and(|h| !h.is_finished())
    }

    fn reattach(&mut self, dir: &AttemptDir) -> bool {
        if dir.lost().is_some() {
            return false; // known never to have run; nothing to follow
        }
        tracing::info!(attempt = %dir.id, "re-attaching to its container");
        self.watch(dir.clone(), None);
        true
    }

    fn signal(&mut self, dir: &AttemptDir, signal: Signal) {
        let engine = self.engine.clone();
        let name = container_name(&self.me.node_id, dir.id);
        let sig = match signal {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        };
        tokio::spawn(async move {
            // An engine that is away gets the signal when it is back (the
            // `stopped` mark also keeps a container from being started).
            let Some(docker) = engine.wait().await else {
                return;
            };
            let opts = KillContainerOptionsBuilder::default().signal(sig).build();
            // Not running (yet, or any more) is fine: the watcher checks
            // `stopped` before it starts the container.
            if let Err(e) = docker.kill_container(&name, Some(opts)).await {
                tracing::debug!(container = %name, error = %e, "signal not delivered");
            }
        });
    }

    fn housekeeping(&mut self, running: &BTreeSet<AttemptId>) {
        self.watchers.retain(|_, h| !h.is_finished());
        let now = Instant::now();
        if now < self.next_reap || self.reaping.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Some(docker) = self.engine.now() else {
            return; // nothing to reap with; the engine is tried elsewhere
        };
        self.next_reap = now + self.reap.interval;
        // Everything being started or watched is ours, whatever the agent
        // thinks of it.
        let mut keep = running.clone();
        keep.extend(self.watchers.keys().copied());
        let me = self.me.clone();
        let grace = self.reap.grace;
        let stop_grace = self.stop_grace;
        self.reaping = Some(tokio::spawn(async move {
            if let Err(e) = reap(&docker, &me, &keep, grace, stop_grace).await {
                tracing::warn!(error = %e, "reaping dangling containers failed");
            }
        }));
    }
}

/// Why the reaper may remove a container, from its labels; `None`: not
/// ours to touch. Pure, so the rules are unit-tested.
pub fn reapable(
    labels: &HashMap<String, String>,
    me: &Identity,
    keep: &BTreeSet<AttemptId>,
) -> Option<&'static str> {
    let attempt = labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse::<u64>().ok())
        .map(AttemptId);
    if attempt.is_some_and(|a| keep.contains(&a)) {
        return None;
    }
    let label = |k: &str| labels.get(k).map(String::as_str);
    // Another data dir under the same node id: a copy of this worker's
    // data dir runs beside it (the master refuses one of them); neither
    // touches the other's containers.
    if label(LABEL_WORKER_DIR).is_some_and(|d| d != me.data_dir.as_str()) {
        return None;
    }
    if label(LABEL_WORKER) == Some(me.node_id.as_str()) {
        return Some("labelled for this worker, but no attempt of it runs here");
    }
    // Another node id with this worker's name and data dir: this worker
    // before its data dir was wiped (the name alone is not enough: several
    // clusters may share an engine and name workers alike).
    if label(LABEL_WORKER).is_some()
        && label(LABEL_WORKER_NAME) == Some(me.name.as_str())
        && label(LABEL_WORKER_DIR) == Some(me.data_dir.as_str())
    {
        return Some("left by this worker before its data dir was wiped (another node id)");
    }
    None
}

/// Stop and remove this worker's containers that no running attempt owns:
/// those labelled with its node id, and those of its previous life (same
/// name and data dir, another node id). Returns how many were removed.
pub async fn reap(
    docker: &Docker,
    me: &Identity,
    keep: &BTreeSet<AttemptId>,
    grace: Duration,
    stop_grace: Duration,
) -> Result<usize, bollard::errors::Error> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for filter in [
        format!("{LABEL_WORKER}={}", me.node_id),
        format!("{LABEL_WORKER_NAME}={}", me.name),
    ] {
        let filters = HashMap::from([("label", vec![filter])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in docker.list_containers(Some(opts)).await? {
            if c.id.as_ref().is_some_and(|id| seen.insert(id.clone())) {
                found.push(c);
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut removed = 0;
    for c in found {
        let labels = c.labels.unwrap_or_default();
        // The engine filtered by label already; never trust a filter with
        // someone else's container.
        let Some(why) = reapable(&labels, me, keep) else {
            continue;
        };
        if now - c.created.unwrap_or(now) < grace.as_secs() as i64 {
            continue;
        }
        let Some(id) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| id.clone());
        tracing::warn!(
            container = %name,
            attempt = ?labels.get(LABEL_ATTEMPT),
            node = ?labels.get(LABEL_WORKER),
            "removing a dangling container: {why}"
        );
        let running = c
            .state
            .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
        if running {
            let t = stop_grace.as_secs().clamp(1, i32::MAX as u64) as i32;
            let opts = StopContainerOptionsBuilder::default().t(t).build();
            let _ = docker.stop_container(&id, Some(opts)).await;
        }
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(&id, Some(opts)).await {
            Ok(()) => removed += 1,
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => tracing::warn!(container = %name, error = %e, "could not remove container"),
        }
    }
    Ok(removed)
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message for an error, without bollard's wrapping.
fn message_of(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// One attempt's container, from image to removal.
struct Watcher {
    engine: Engine,
    name: String,
    node_id: String,
    dir: AttemptDir,
}

/// How a followed container ended.
enum Ended {
    Exited(i32),
    /// Created but never started (an agent died between the two).
    NeverStarted,
}

/// Retries a request that failed without a definite answer, with backoff,
/// for at most [`ENGINE_OUTAGE_LIMIT`] in a row.
struct Retry {
    failing_since: Option<Instant>,
    delay: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            failing_since: None,
            delay: Duration::from_millis(250),
        }
    }

    fn ok(&mut self) {
        self.failing_since = None;
        self.delay = Duration::from_millis(250);
    }

    /// Wait before the next try; `Err` once the engine has been failing
    /// for too long.
    async fn failed(
        &mut self,
        what: &str,
        attempt: AttemptId,
        e: &bollard::errors::Error,
    ) -> Result<(), String> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= ENGINE_OUTAGE_LIMIT {
            return Err(format!(
                "{what}: the Docker engine gave no answer for {} s: {}",
                ENGINE_OUTAGE_LIMIT.as_secs(),
                message_of(e)
            ));
        }
        tracing::warn!(attempt = %attempt, error = %message_of(e), "{what} failed; trying again");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_RETRY_BACKOFF);
        Ok(())
    }
}

impl Watcher {
    async fn run(&self, create: Option<Create>) -> Result<(), String> {
        let docker = match &create {
            // A new attempt waits a while for an engine that is away...
            Some(_) => tokio::time::timeout(START_ENGINE_WAIT, self.engine.wait())
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "the Docker engine did not answer within {} s",
                        START_ENGINE_WAIT.as_secs()
                    )
                })?,
            // ...one found at agent start is held until it is back.
            None => self
                .engine
                .wait()
                .await
                .ok_or("the Docker engine is gone")?,
        };
        let id = match create {
            Some(c) => match self.create_and_start(&docker, c).await? {
                Some(id) => id,
                None => return Ok(()), // stopped before it started
            },
            None => match self.find(&docker).await? {
                Some(id) => id,
                None => {
                    return Err("no container of this attempt was found after the agent \
                         restarted (never created, or removed while the agent was away); \
                         its exit code is unknown"
                        .to_string());
                }
            },
        };
        let code = match self.follow(&docker, &id).await? {
            Ended::Exited(code) => code,
            Ended::NeverStarted => {
                let reason = "the agent stopped after creating this attempt's container and \
                              before starting it; it never ran";
                if let Err(e) = self.dir.set_lost(reason) {
                    return Err(format!("recording that the container never started: {e}"));
                }
                tracing::warn!(attempt = %self.dir.id, "{reason}; reported lost");
                self.remove(&docker, &id).await;
                return Ok(());
            }
        };
        if let Err(e) = self.dir.set_exit_status(code) {
            // Keep the container: the exit code exists only there.
            return Err(format!("recording the exit code {code}: {e}"));
        }
        self.remove(&docker, &id).await;
        Ok(())
    }

    /// Asked to stop, or past its time limit: do not start it.
    fn ending(&self) -> bool {
        self.dir.is_stopped() || self.dir.is_timed_out()
    }

    /// Image, container, start. `None` when a stop came first.
    async fn create_and_start(&self, docker: &Docker, c: Create) -> Result<Option<String>, String> {
        self.ensure_image(docker, &c.image).await?;
        if self.ending() {
            return Ok(None);
        }
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.name)
            .build();
        let id = match docker.create_container(Some(opts), c.config.clone()).await {
            Ok(r) => r.id,
            // Created by an earlier agent that died before recording it.
            Err(e) if status_of(&e) == Some(409) => match self.find(docker).await? {
                Some(id) => id,
                None => return Err(format!("creating the container: {}", message_of(&e))),
            },
            Err(e) => {
                return Err(format!(
                    "creating a container of image `{}`: {}",
                    c.image,
                    message_of(&e)
                ));
            }
        };
        if let Err(e) = self.dir.set_container(&id) {
            tracing::warn!(attempt = %self.dir.id, error = %e, "could not record the container id");
        }
        if self.ending() {
            self.remove(docker, &id).await;
            return Ok(None);
        }
        if let Err(e) = docker.start_container(&id, None).await {
            self.remove(docker, &id).await;
            return Err(format!(
                "starting the container of image `{}`: {}",
                c.image,
                message_of(&e)
            ));
        }
        tracing::info!(attempt = %self.dir.id, container = %self.name, "container started");
        if self.ending() {
            // The stop raced the start: deliver it now.
            let opts = KillContainerOptionsBuilder::default()
                .signal("SIGTERM")
                .build();
            let _ = docker.kill_container(&id, Some(opts)).await;
        }
        Ok(Some(id))
    }

    /// Use the image if the engine has it, pull it otherwise.
    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), String> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(format!("looking up image `{image}`: {}", message_of(&e))),
        }
        tracing::info!(attempt = %self.dir.id, %image, "pulling image");
        let (from, tag) = split_image(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&from)
            .tag(&tag)
            .build();
        let mut pull = docker.create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            let err = match step {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(e) => Some(message_of(&e)),
            };
            if let Some(msg) = err {
                return Err(format!(
                    "image `{image}` is not on this worker and could not be pulled: {msg}"
                ));
            }
        }
        // A pull that "succeeded" without the image would fail at create.
        match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "image `{image}` is not on this worker and could not be pulled: {}",
                message_of(&e)
            )),
        }
    }

    /// The container of this attempt on this node, by label (transient
    /// errors are tried again).
    async fn find(&self, docker: &Docker) -> Result<Option<String>, String> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_WORKER}={}", self.node_id),
                format!("{LABEL_ATTEMPT}={}", self.dir.id.0),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut retry = Retry::new();
        loop {
            match docker.list_containers(Some(opts.clone())).await {
                Ok(list) => return Ok(list.into_iter().find_map(|c| c.id)),
                Err(e) => {
                    retry
                        .failed("looking for the attempt's container", self.dir.id, &e)
                        .await?
                }
            }
        }
    }

    /// Copy the container's output into `log` until it ends; return how it
    /// ended. Only a definite answer ends the watch: the container exited,
    /// was never started, or is gone (404); other errors (the engine
    /// restarting, a timeout) are tried again with backoff.
    async fn follow(&self, docker: &Docker, id: &str) -> Result<Ended, String> {
        use bollard::models::ContainerStateStatusEnum as Status;
        let mut broken = 0;
        let mut retry = Retry::new();
        loop {
            let complete = self.copy_logs(docker, id).await;
            let info = match docker.inspect_container(id, None).await {
                Ok(info) => {
                    retry.ok();
                    info
                }
                Err(e) if status_of(&e) == Some(404) => {
                    return Err("the attempt's container was removed while it ran (not by \
                                berth); its exit code is unknown"
                        .to_string());
                }
                Err(e) => {
                    retry
                        .failed("inspecting the container", self.dir.id, &e)
                        .await?;
                    continue;
                }
            };
            let state = info.state.unwrap_or_default();
            if state.status == Some(Status::CREATED) {
                return Ok(Ended::NeverStarted);
            }
            if state.running == Some(true) || state.restarting == Some(true) {
                // The log stream broke while it still runs: follow again.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if !complete && broken < 3 {
                // It ended, but its output was cut short: read it again.
                broken += 1;
                continue;
            }
            if state.oom_killed == Some(true) {
                tracing::warn!(attempt = %self.dir.id, "the container was killed for exceeding its memory limit");
            }
            let code = state.exit_code.unwrap_or(-1);
            return Ok(Ended::Exited(i32::try_from(code).unwrap_or(-1)));
        }
    }

    /// Write the container's whole output (stdout and stderr, in order)
    /// into `log` from offset 0, following it until the container stops.
    /// Returns whether the stream ended cleanly (all of it was copied).
    async fn copy_logs(&self, docker: &Docker, id: &str) -> bool {
        use std::os::unix::fs::FileExt;
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.log())
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(attempt = %self.dir.id, error = %e, "cannot open the log");
                return false;
            }
        };
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(id, Some(opts));
        let mut offset = 0u64;
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(out) => {
                    let bytes = out.into_bytes();
                    if let Err(e) = file.write_all_at(&bytes, offset) {
                        tracing::warn!(attempt = %self.dir.id, error = %e, "cannot write the log");
                        return false;
                    }
                    offset += bytes.len() as u64;
                }
                Err(e) => {
                    tracing::debug!(attempt = %self.dir.id, error = %e, "log stream broke");
                    return false;
                }
            }
        }
        true
    }

    async fn remove(&self, docker: &Docker, id: &str) {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => {
                tracing::warn!(attempt = %self.dir.id, error = %e, "could not remove the container; the reaper will")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt_dir::AttemptDir;
    use berth_core::{DriverKind, Resources, TaskId, TaskSpec};
    use std::path::Path;

    fn launch(gpu_ids: Vec<u32>) -> Launch {
        let mut spec = TaskSpec::process(
            vec!["sh".into(), "-c".into(), "echo hi".into()],
            Resources {
                cpu_millis: 2000,
                memory_bytes: 256 << 20,
                storage_bytes: 0,
                gpus: gpu_ids.len() as u32,
            },
        );
        spec.driver = DriverKind::Docker;
        spec.image = Some("berth-test/busybox:latest".into());
        spec.env = vec![("A".into(), "1".into())];
        Launch {
            dir: AttemptDir::new(Path::new("/data/attempts"), AttemptId(7)),
            task: TaskId(3),
            spec,
            gpu_ids,
            env: vec![("BERTH_TASK_ID".into(), "3".into())],
        }
    }

    fn me() -> Identity {
        Identity {
            node_id: "node-1".into(),
            name: "Dock".into(),
            data_dir: "/data".into(),
        }
    }

    #[test]
    fn limits_labels_and_mounts() {
        let c = container_config(&launch(vec![]), &me());
        let h = c.host_config.unwrap();
        assert_eq!(h.nano_cpus, Some(2_000_000_000));
        assert_eq!(h.memory, Some(268_435_456));
        assert_eq!(h.memory_swap, Some(268_435_456));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.device_requests, None);
        assert_eq!(
            h.binds.unwrap(),
            vec!["/data/attempts/7/output:/output".to_string()]
        );
        let labels = c.labels.unwrap();
        assert_eq!(labels[LABEL_TASK], "3");
        assert_eq!(labels[LABEL_ATTEMPT], "7");
        assert_eq!(labels[LABEL_WORKER], "node-1");
        assert_eq!(labels[LABEL_WORKER_NAME], "Dock");
        assert_eq!(labels[LABEL_WORKER_DIR], "/data");
        let env = c.env.unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"BERTH_TASK_ID=3".to_string()));
        assert!(env.contains(&"BERTH_OUTPUT_DIR=/output".to_string()));
        assert_eq!(c.image.as_deref(), Some("berth-test/busybox:latest"));
        assert_eq!(c.cmd.unwrap().len(), 3);
    }

    #[test]
    fn gpus_become_an_nvidia_device_request() {
        let c = container_config(&launch(vec![1, 3]), &me());
        let reqs = c.host_config.unwrap().device_requests.unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            reqs[0].device_ids.as_deref(),
            Some(&["1".to_string(), "3".to_string()][..])
        );
        assert_eq!(reqs[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert!(c.env.unwrap().contains(&"BERTH_GPU_IDS=1,3".to_string()));
    }

    #[test]
    fn image_references_split_into_name_and_tag() {
        let s = |r: &str| {
            let (a, b) = split_image(r);
            (a, b)
        };
        assert_eq!(s("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(s("a/b:1.2"), ("a/b".into(), "1.2".into()));
        assert_eq!(
            s("127.0.0.1:9/x/y"),
            ("127.0.0.1:9/x/y".into(), "latest".into())
        );
        assert_eq!(s("127.0.0.1:9/x:v"), ("127.0.0.1:9/x".into(), "v".into()));
        assert_eq!(s("a@sha256:abc"), ("a".into(), "sha256:abc".into()));
    }

    #[test]
    fn the_reaper_takes_this_workers_containers_only() {
        let labels = |node: &str, name: Option<&str>, dir: Option<&str>, attempt: &str| {
            let mut l = HashMap::from([
                (LABEL_WORKER.to_string(), node.to_string()),
                (LABEL_ATTEMPT.to_string(), attempt.to_string()),
            ]);
            if let Some(n) = name {
                l.insert(LABEL_WORKER_NAME.to_string(), n.to_string());
            }
            if let Some(d) = dir {
                l.insert(LABEL_WORKER_DIR.to_string(), d.to_string());
            }
            l
        };
        let keep = BTreeSet::from([AttemptId(5)]);
        let me = me();
        // This node's, not held: reaped; held: kept.
        assert!(reapable(&labels("node-1", None, None, "4"), &me, &keep).is_some());
        assert!(reapable(&labels("node-1", None, None, "5"), &me, &keep).is_none());
        // This worker before its data dir was wiped.
        let old = labels("node-0", Some("Dock"), Some("/data"), "3");
        assert!(reapable(&old, &me, &keep).unwrap().contains("wiped"));
        assert!(
            reapable(
                &labels("node-0", Some("Dock"), Some("/data"), "5"),
                &me,
                &keep
            )
            .is_none()
        );
        // Same name, another data dir (another cluster's worker on this
        // engine), or another name: never.
        assert!(
            reapable(
                &labels("node-9", Some("Dock"), Some("/other"), "3"),
                &me,
                &keep
            )
            .is_none()
        );
        assert!(reapable(&labels("node-9", Some("Dock"), None, "3"), &me, &keep).is_none());
        assert!(
            reapable(
                &labels("node-9", Some("Tessa"), Some("/data"), "3"),
                &me,
                &keep
            )
            .is_none()
        );
        assert!(reapable(&HashMap::new(), &me, &keep).is_none());
        // This node id from another data dir: a copy of this worker's
        // data dir; neither touches the other's containers.
        assert!(
            reapable(
                &labels("node-1", Some("Copy"), Some("/copy"), "4"),
                &me,
                &keep
            )
            .is_none()
        );
    }

    #[test]
    fn container_names_are_per_node() {
        assert_eq!(
            container_name("0a1b2c3d-4e5f-6789-abcd-ef0123456789", AttemptId(42)),
            "berth-42-0a1b2c3d4e5f"
        );
    }
}
