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
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_ATTEMPT: &str = "berth.attempt";
pub const LABEL_WORKER: &str = "berth.worker";

/// Where a task finds its output folder inside the container.
pub const OUTPUT_MOUNT: &str = "/output";

/// How long connecting to the engine (and each of its first answers) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
pub fn container_config(l: &Launch, node_id: &str) -> ContainerCreateBody {
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
        (LABEL_WORKER.to_string(), node_id.to_string()),
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

/// How the reaper runs.
#[derive(Debug, Clone, Copy)]
pub struct ReapPolicy {
    pub interval: Duration,
    /// Containers younger than this are never reaped.
    pub grace: Duration,
}

pub struct DockerDriver {
    docker: Docker,
    node_id: String,
    exits: mpsc::UnboundedSender<AttemptId>,
    watchers: HashMap<AttemptId, JoinHandle<()>>,
    stop_grace: Duration,
    reap: ReapPolicy,
    next_reap: Instant,
    reaping: Option<JoinHandle<()>>,
}

impl DockerDriver {
    pub fn new(
        docker: Docker,
        node_id: String,
        exits: mpsc::UnboundedSender<AttemptId>,
        stop_grace: Duration,
        reap: ReapPolicy,
    ) -> DockerDriver {
        DockerDriver {
            docker,
            node_id,
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
            docker: self.docker.clone(),
            name: container_name(&self.node_id, dir.id),
            node_id: self.node_id.clone(),
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
        let config = container_config(&l, &self.node_id);
        tracing::info!(attempt = %l.dir.id, task = l.task.0, %image, "attempt starting (docker)");
        self.watch(l.dir, Some(Create { image, config }));
        Ok(())
    }

    fn running(&self, dir: &AttemptDir) -> bool {
        self.watchers.get(&dir.id).is_some_and(|h| !h.is_finished())
    }

    fn reattach(&mut self, dir: &AttemptDir) -> bool {
        tracing::info!(attempt = %dir.id, "re-attaching to its container");
        self.watch(dir.clone(), None);
        true
    }

    fn signal(&mut self, dir: &AttemptDir, signal: Signal) {
        let docker = self.docker.clone();
        let name = container_name(&self.node_id, dir.id);
        let sig = match signal {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        };
        tokio::spawn(async move {
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
        self.next_reap = now + self.reap.interval;
        // Everything being started or watched is ours, whatever the agent
        // thinks of it.
        let mut keep = running.clone();
        keep.extend(self.watchers.keys().copied());
        let docker = self.docker.clone();
        let node_id = self.node_id.clone();
        let grace = self.reap.grace;
        let stop_grace = self.stop_grace;
        self.reaping = Some(tokio::spawn(async move {
            if let Err(e) = reap(&docker, &node_id, &keep, grace, stop_grace).await {
                tracing::warn!(error = %e, "reaping dangling containers failed");
            }
        }));
    }
}

/// Stop and remove this node's containers that no running attempt owns.
/// Returns how many were removed.
pub async fn reap(
    docker: &Docker,
    node_id: &str,
    keep: &BTreeSet<AttemptId>,
    grace: Duration,
    stop_grace: Duration,
) -> Result<usize, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_WORKER}={node_id}")])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut removed = 0;
    for c in docker.list_containers(Some(opts)).await? {
        let labels = c.labels.unwrap_or_default();
        // The engine filtered by label already; never trust a filter with
        // someone else's container.
        if labels.get(LABEL_WORKER).map(String::as_str) != Some(node_id) {
            continue;
        }
        let attempt = labels
            .get(LABEL_ATTEMPT)
            .and_then(|a| a.parse::<u64>().ok())
            .map(AttemptId);
        if attempt.is_some_and(|a| keep.contains(&a)) {
            continue;
        }
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
            attempt = ?attempt.map(|a| a.0),
            "removing a dangling container: labelled for this worker, but no attempt of it runs here"
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
    docker: Docker,
    name: String,
    node_id: String,
    dir: AttemptDir,
}

impl Watcher {
    async fn run(&self, create: Option<Create>) -> Result<(), String> {
        let id = match create {
            Some(c) => match self.create_and_start(c).await? {
                Some(id) => id,
                None => return Ok(()), // stopped before it started
            },
            None => match self.find().await? {
                Some(id) => id,
                None => {
                    return Err("no container of this attempt was found after the agent \
                         restarted (never created, or removed while the agent was away); \
                         its exit code is unknown"
                        .to_string());
                }
            },
        };
        let code = self.follow(&id).await?;
        if let Err(e) = self.dir.set_exit_status(code) {
            // Keep the container: the exit code exists only there.
            return Err(format!("recording the exit code {code}: {e}"));
        }
        self.remove(&id).await;
        Ok(())
    }

    /// Asked to stop, or past its time limit: do not start it.
    fn ending(&self) -> bool {
        self.dir.is_stopped() || self.dir.is_timed_out()
    }

    /// Image, container, start. `None` when a stop came first.
    async fn create_and_start(&self, c: Create) -> Result<Option<String>, String> {
        self.ensure_image(&c.image).await?;
        if self.ending() {
            return Ok(None);
        }
        let opts = CreateContainerOptionsBuilder::default()
            .name(&self.name)
            .build();
        let id = match self
            .docker
            .create_container(Some(opts), c.config.clone())
            .await
        {
            Ok(r) => r.id,
            // Created by an earlier agent that died before recording it.
            Err(e) if status_of(&e) == Some(409) => match self.find().await? {
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
            self.remove(&id).await;
            return Ok(None);
        }
        if let Err(e) = self.docker.start_container(&id, None).await {
            self.remove(&id).await;
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
            let _ = self.docker.kill_container(&id, Some(opts)).await;
        }
        Ok(Some(id))
    }

    /// Use the image if the engine has it, pull it otherwise.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        match self.docker.inspect_image(image).await {
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
        let mut pull = self.docker.create_image(Some(opts), None, None);
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
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "image `{image}` is not on this worker and could not be pulled: {}",
                message_of(&e)
            )),
        }
    }

    /// The container of this attempt on this node, by label.
    async fn find(&self) -> Result<Option<String>, String> {
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
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| format!("looking for the attempt's container: {}", message_of(&e)))?;
        Ok(list.into_iter().find_map(|c| c.id))
    }

    /// Copy the container's output into `log` until it ends; return its
    /// exit code.
    async fn follow(&self, id: &str) -> Result<i32, String> {
        let mut broken = 0;
        loop {
            let complete = self.copy_logs(id).await;
            let info = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| format!("inspecting the container: {}", message_of(&e)))?;
            let state = info.state.unwrap_or_default();
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
            return Ok(i32::try_from(code).unwrap_or(-1));
        }
    }

    /// Write the container's whole output (stdout and stderr, in order)
    /// into `log` from offset 0, following it until the container stops.
    /// Returns whether the stream ended cleanly (all of it was copied).
    async fn copy_logs(&self, id: &str) -> bool {
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
        let mut logs = self.docker.logs(id, Some(opts));
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

    async fn remove(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
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

    #[test]
    fn limits_labels_and_mounts() {
        let c = container_config(&launch(vec![]), "node-1");
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
        let env = c.env.unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"BERTH_TASK_ID=3".to_string()));
        assert!(env.contains(&"BERTH_OUTPUT_DIR=/output".to_string()));
        assert_eq!(c.image.as_deref(), Some("berth-test/busybox:latest"));
        assert_eq!(c.cmd.unwrap().len(), 3);
    }

    #[test]
    fn gpus_become_an_nvidia_device_request() {
        let c = container_config(&launch(vec![1, 3]), "node-1");
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
    fn container_names_are_per_node() {
        assert_eq!(
            container_name("0a1b2c3d-4e5f-6789-abcd-ef0123456789", AttemptId(42)),
            "berth-42-0a1b2c3d4e5f"
        );
    }
}
