//! Test harness for real-process tests: starts real `berth master` and
//! `berth worker` processes on loopback (port 0), talks to them over real
//! gRPC, and kills only the processes it started, by pid.

#![allow(dead_code)]

use berth_proto::BearerToken;
use berth_proto::v1;
use berth_proto::v1::control_client::ControlClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub type Client = ControlClient<InterceptedService<Channel, BearerToken>>;

/// A process we started; killed (SIGKILL) on drop if still running.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
    /// Wait for it to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// For a worker that must not have the docker driver even where the
/// engine runs: its socket is one that does not exist.
pub const NO_DOCKER: &[(&str, &str)] = &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")];

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: Option<Proc>,
    pub workers: Vec<Proc>,
    pub url: String,
    pub token: String,
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.out")))
        .unwrap()
}

impl Cluster {
    /// A fresh data dir and a running master.
    pub fn start() -> Cluster {
        let mut c = Cluster::empty();
        c.start_master(&[]);
        c
    }

    /// A fresh data dir, nothing started yet (to prepare the master's dir).
    pub fn empty() -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            master: None,
            workers: Vec::new(),
            url: String::new(),
            token: String::new(),
        }
    }

    pub fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    /// (Re)start the master on the same data dir. The first start binds a
    /// free port; restarts reuse it so workers find the master again.
    pub fn start_master(&mut self, extra: &[&str]) {
        self.start_master_env(extra, &[]);
    }

    /// `start_master` with extra environment variables (e.g. libfaketime's).
    pub fn start_master_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let mdir = self.master_dir();
        let _ = std::fs::remove_file(mdir.join("master.addr"));
        let listen = if self.url.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.url.trim_start_matches("http://").to_string()
        };
        let child = Command::new(BERTH)
            .args([
                "master",
                "--listen",
                &listen,
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&mdir)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), "master"))
            .stderr(log_file(self.dir.path(), "master"))
            .spawn()
            .expect("spawn master");
        self.master = Some(Proc {
            child,
            name: "master".into(),
        });
        let addr = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(mdir.join("master.addr")).ok()
        })
        .unwrap_or_else(|| panic!("master did not start; log:\n{}", self.log("master")));
        self.url = addr.trim().to_string();
        self.token = std::fs::read_to_string(mdir.join("token"))
            .unwrap()
            .trim()
            .to_string();
    }

    /// Start a worker with the given name and extra flags (e.g. `--cpus 20`).
    pub fn start_worker(&mut self, name: &str, extra: &[&str]) -> usize {
        self.start_worker_env(name, extra, &[])
    }

    /// `start_worker` with extra environment variables (e.g. [`NO_DOCKER`]).
    pub fn start_worker_env(&mut self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> usize {
        self.start_worker_via(&[], name, extra, env)
    }

    /// Start a worker through a wrapper command (e.g. `ip netns exec NS`,
    /// to run it in its own network namespace).
    pub fn start_worker_via(
        &mut self,
        wrapper: &[&str],
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let wdir = self.dir.path().join(format!("worker-{name}"));
        let mut cmd = match wrapper {
            [] => Command::new(BERTH),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(BERTH);
                c
            }
        };
        let child = cmd
            .args([
                "worker",
                "--master",
                &self.url,
                "--name",
                name,
                "--data-dir",
            ])
            .arg(&wdir)
            .args(extra)
            .env("BERTH_TOKEN", &self.token)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), name))
            .stderr(log_file(self.dir.path(), name))
            .spawn()
            .expect("spawn worker");
        self.workers.push(Proc {
            child,
            name: name.into(),
        });
        self.workers.len() - 1
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.out"))).unwrap_or_default()
    }

    /// Run the `berth` CLI against this cluster.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_MASTER", &self.url)
            .env("BERTH_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Run the CLI and insist it succeeds; returns stdout.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn client(&self) -> Client {
        let ch = Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect to master");
        ControlClient::with_interceptor(ch, BearerToken::new(&self.token).unwrap())
    }

    /// Wait until `n` workers are ready.
    pub async fn wait_workers_ready(&self, n: usize) {
        let mut c = self.client().await;
        let ok = wait_for_async(Duration::from_secs(20), || {
            let mut c = c.clone();
            async move {
                let ws = c
                    .list_workers(v1::ListWorkersRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .workers;
                (ws.iter().filter(|w| w.state == "ready").count() >= n).then_some(())
            }
        })
        .await;
        if ok.is_none() {
            let ws = c.list_workers(v1::ListWorkersRequest {}).await;
            panic!("workers not ready: {ws:?}");
        }
    }
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if t0.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn process_spec(cpu_millis: u64, mem: u64, cmd: &[&str]) -> v1::TaskSpec {
    v1::TaskSpec {
        name: String::new(),
        driver: "process".into(),
        image: String::new(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        resources: Some(v1::Resources {
            cpu_millis,
            memory_bytes: mem,
            storage_bytes: 0,
            gpus: 0,
        }),
        ..Default::default()
    }
}

pub async fn submit(c: &mut Client, spec: v1::TaskSpec) -> u64 {
    c.submit_task(v1::SubmitTaskRequest {
        spec: Some(spec),
        queue_anyway: false,
    })
    .await
    .expect("submit")
    .into_inner()
    .task_id
}

pub async fn task(c: &mut Client, id: u64) -> v1::Task {
    c.get_task(v1::GetTaskRequest { task_id: id })
        .await
        .expect("get task")
        .into_inner()
}

/// Wait until task `id` is in a terminal state; returns it.
pub async fn wait_terminal(c: &mut Client, id: u64, within: Duration) -> v1::Task {
    let t0 = Instant::now();
    loop {
        let t = task(c, id).await;
        if matches!(t.state.as_str(), "succeeded" | "failed" | "cancelled") {
            return t;
        }
        assert!(
            t0.elapsed() < within,
            "task {id} not done in {within:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn workers(c: &mut Client) -> Vec<v1::Worker> {
    c.list_workers(v1::ListWorkersRequest {})
        .await
        .expect("list workers")
        .into_inner()
        .workers
}

// ------------------------------------------------------------------ HTTP

impl Cluster {
    /// The master's HTTP base URL (`http://127.0.0.1:PORT`), from
    /// `DATA_DIR/http.addr`.
    pub fn http_url(&self) -> String {
        let f = self.master_dir().join("http.addr");
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(&f).ok())
            .unwrap_or_else(|| panic!("no {}; log:\n{}", f.display(), self.log("master")))
            .trim()
            .to_string()
    }

    /// An HTTP request to the master with the cluster token.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http_request(&self.http_url(), method, path, Some(&self.token), body)
    }
}

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A small HTTP/1.1 client over a plain socket (`Connection: close`):
/// enough for tests, with nothing between them and the bytes on the wire.
pub fn http_request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut s = http_send(base, method, path, token, body);
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).expect("read HTTP response");
    parse_response(&raw)
}

/// The status line and the start of a streamed answer (server-sent
/// events), read until `until` appears in what came.
pub fn http_stream_start(base: &str, path: &str, token: &str, until: &str) -> (u16, String) {
    let mut s = http_send(base, "GET", path, Some(token), None);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Send a request and return the socket, for reading a streamed answer.
pub fn http_send(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::net::TcpStream {
    use std::io::Write;
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).expect("connect to the master's HTTP");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send HTTP request");
    s
}

/// Parse a complete response (chunked bodies are decoded).
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

/// Prints every `*.out` log of the cluster when the test panics. Declare it
/// after the `Cluster` so it runs (and reads the logs) before the temporary
/// directory is removed.
pub struct LogsOnPanic(PathBuf);

impl LogsOnPanic {
    pub fn of(c: &Cluster) -> LogsOnPanic {
        LogsOnPanic(c.dir.path().to_path_buf())
    }
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "out"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            eprintln!("===== {} =====\n{text}", f.display());
        }
    }
}

/// Run the `docker` client.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// Run the `docker` client and insist it succeeds; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    /// Feed `script` to `berth shell` (stdin not a terminal) against this
    /// cluster and wait for it to end.
    pub fn shell(&self, script: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(BERTH)
            .arg("shell")
            .env("BERTH_MASTER", &self.url)
            .env("BERTH_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth shell");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .expect("write to the shell");
        child.wait_with_output().expect("berth shell ends")
    }
}
