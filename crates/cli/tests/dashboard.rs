//! The web dashboard end to end, in headless Chromium (Debian's `chromium`
//! package; `.ci/run` installs it). The browser is driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: fd 3 in, fd 4 out,
//! NUL-separated JSON), so no WebSocket client is needed. The test fails,
//! rather than skips, when Chromium is missing.
//!
//! It logs in with the token, submits a task from the form, watches it run
//! (live logs, the worker's bars rising) and finish (the bars back at
//! zero), queues and cancels a task that cannot fit, runs a reconciliation,
//! and saves screenshots under the test's temp dir and in `target/`
//! (`dashboard-running.png`, `dashboard-task.png`, `dashboard.png`).

mod common;

use common::*;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Chromium binary: `BERTH_CHROMIUM`, or the first of the usual names
/// on `PATH`.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in path.split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "Chromium is not installed: the dashboard test needs it \
         (`apt-get install -y chromium`, as .ci/run does, or set BERTH_CHROMIUM)"
    );
}

/// A headless Chromium we started, and one page in it.
struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// Uncaught exceptions and console errors of the page.
    page_errors: Vec<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // Chromium reads commands from fd 3 and writes answers to fd 4.
        let (cmd_r, cmd_w) = pipe();
        let (out_r, out_w) = pipe();
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork
        // and exec. The pipe ends are first moved above 9 so that placing
        // them on 3 and 4 cannot overwrite one another; dup2 clears
        // close-on-exec on the copies, the originals close at exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(cmd_r, libc::F_DUPFD, 10);
                let w = libc::fcntl(out_w, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(r);
                libc::close(w);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // SAFETY: these descriptors are ours, each wrapped exactly once.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(out_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(out_r))
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: String::new(),
            page_errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Send a DevTools command (to the page once attached) and wait for
    /// its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            match m["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.page_errors.push(
                    m["params"]["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or("exception")
                        .to_string(),
                ),
                Some("Runtime.consoleAPICalled") if m["params"]["type"] == "error" => {
                    self.page_errors.push(m["params"]["args"].to_string())
                }
                _ => {}
            }
            if m["id"].as_u64() == Some(id) {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
        }
    }

    /// Evaluate JavaScript in the page (awaiting a promise) and return the
    /// value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js}\nthrew: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Wait until `js` evaluates to something truthy; returns it.
    fn wait(&mut self, what: &str, js: &str, within: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.eval(&format!(
                "(() => {{ try {{ return {js}; }} catch (e) {{ return null; }} }})()"
            ));
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if t0.elapsed() > within {
                let body = self.eval("document.body.innerText");
                panic!("timed out waiting for {what} ({js}); the page says:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait(
            "the page to load",
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        );
    }

    /// A PNG of the whole page.
    fn screenshot(&mut self, path: &Path, width: u32) {
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 4000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').collect();
        let mut n = 0u32;
        for (i, c) in data.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..data.len().saturating_sub(1)]);
    }
    out
}

/// `target/` of this build, where the screenshots are copied for people.
fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/berth → target/
    Path::new(BERTH)
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The `data-allocated` of one of the worker's bars.
fn bar_js(worker: &str, resource: &str) -> String {
    format!(
        "Number(document.querySelector('.worker[data-worker=\"{worker}\"] .bar[data-resource=\"{resource}\"]').dataset.allocated)"
    )
}

fn set_field(b: &mut Browser, name: &str, value: &str) {
    b.eval(&format!(
        "document.getElementById('submit-{name}').value = {}",
        json!(value)
    ));
}

#[test]
fn base64_round_trip() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_end_to_end_in_headless_chromium() {
    let mut c = Cluster::start();
    c.start_worker(
        "tessa",
        &["--cpus", "4", "--memory", "4G", "--storage", "20G"],
    );
    c.wait_workers_ready(1).await;
    let shots = c.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let long = Duration::from_secs(30);
    const W: u32 = 1400;

    let mut b = Browser::start(W, 1000);
    b.navigate(&format!("{}/", c.http_url()));

    // Log in: a wrong token is refused, the cluster token is taken.
    b.wait(
        "the login form",
        "!!document.getElementById('login-token')",
        long,
    );
    b.eval("document.getElementById('login-token').value = 'not-the-token'");
    b.eval("document.getElementById('login-button').click()");
    b.wait(
        "the refusal",
        "document.getElementById('login-error').textContent.includes('refused')",
        long,
    );
    b.eval(&format!(
        "document.getElementById('login-token').value = {}",
        json!(c.token)
    ));
    b.eval("document.getElementById('login-button').click()");
    b.wait(
        "the worker card",
        "!!document.querySelector('.worker[data-worker=\"tessa\"]')",
        long,
    );
    for (res, total) in [
        ("cpu", 4000u64),
        ("memory", 4 << 30),
        ("storage", 20 << 30),
        ("gpu", 0),
    ] {
        let js = format!(
            "Number(document.querySelector('.worker[data-worker=\"tessa\"] .bar[data-resource=\"{res}\"]').dataset.total)"
        );
        assert_eq!(b.eval(&js).as_u64(), Some(total), "{res} total");
        assert_eq!(b.eval(&bar_js("tessa", res)).as_u64(), Some(0), "{res}");
    }
    assert_eq!(
        b.eval("sessionStorage.getItem('berth.token')").as_str(),
        Some(c.token.as_str())
    );

    // A bad value is refused, naming the field.
    set_field(&mut b, "command", "echo never");
    set_field(&mut b, "cpu", "abc");
    b.eval("document.getElementById('submit-button').click()");
    b.wait(
        "the cpu error",
        "document.getElementById('submit-error').textContent.includes('cpu')",
        long,
    );
    assert_eq!(
        b.eval("document.getElementById('submit-cpu').classList.contains('invalid')"),
        json!(true)
    );

    // Submit a task from the form; the page moves to the task.
    // The task runs until the test opens its gate, so a slow machine
    // cannot make it end before the running state has been looked at.
    let gate = c.dir.path().join("gate");
    set_field(
        &mut b,
        "command",
        &format!(
            "echo dashboard says hi; while [ ! -e '{}' ]; do sleep 0.05; done; echo all done",
            gate.display()
        ),
    );
    set_field(&mut b, "name", "from-the-dashboard");
    set_field(&mut b, "cpu", "2");
    set_field(&mut b, "memory", "1G");
    set_field(&mut b, "storage", "5G");
    b.eval("document.getElementById('submit-button').click()");
    let id = b
        .wait(
            "the task page",
            "(location.hash.match(/^#\\/task\\/(\\d+)/) || [])[1]",
            long,
        )
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    b.wait(
        "the task to run",
        "document.getElementById('task-state').dataset.state === 'running'",
        long,
    );
    b.wait(
        "live logs",
        "document.getElementById('task-logs').textContent.includes('dashboard says hi')",
        long,
    );

    // While it runs, the worker's bars show what it holds.
    b.eval("location.hash = '#/'");
    b.wait(
        "the cpu bar to rise",
        &format!("{} === 2000", bar_js("tessa", "cpu")),
        long,
    );
    assert_eq!(b.eval(&bar_js("tessa", "memory")).as_u64(), Some(1 << 30));
    assert_eq!(b.eval(&bar_js("tessa", "storage")).as_u64(), Some(5 << 30));
    b.wait(
        "the running row",
        &format!("!!document.querySelector('#tasks-table tr[data-task=\"{id}\"][data-state=\"running\"]')"),
        long,
    );
    b.screenshot(&shots.join("dashboard-running.png"), W);
    std::fs::write(&gate, "").unwrap();

    // Back on the task page, it finishes with all of its output.
    b.eval(&format!("location.hash = '#/task/{id}'"));
    b.wait(
        "the task to succeed",
        "document.getElementById('task-state').dataset.state === 'succeeded'",
        long,
    );
    b.wait(
        "the whole log",
        "document.getElementById('task-logs').dataset.complete === 'true'",
        long,
    );
    let logs = b.eval("document.getElementById('task-logs').textContent");
    assert_eq!(logs.as_str(), Some("dashboard says hi\nall done\n"));
    assert_eq!(
        b.eval("document.querySelectorAll('#attempts-table tr[data-attempt]').length"),
        json!(1)
    );
    assert_eq!(
        b.eval("document.getElementById('task-exit').textContent"),
        json!("exit 0")
    );
    b.screenshot(&shots.join("dashboard-task.png"), W);

    // The bars return to zero.
    b.eval("location.hash = '#/'");
    for res in ["cpu", "memory", "storage", "gpu"] {
        b.wait(
            &format!("the {res} bar to return to zero"),
            &format!("{} === 0", bar_js("tessa", res)),
            long,
        );
    }

    // A task no worker can fit waits in the queue, saying why; it is
    // cancelled from its page.
    set_field(&mut b, "command", "echo too big");
    set_field(&mut b, "cpu", "64");
    set_field(&mut b, "name", "");
    set_field(&mut b, "memory", "0.5G");
    set_field(&mut b, "storage", "0");
    b.eval("document.getElementById('submit-button').click()");
    b.wait(
        "the 422",
        "document.getElementById('submit-error').textContent.includes('tessa')",
        long,
    );
    b.eval("document.getElementById('submit-queue_anyway').checked = true");
    b.eval("document.getElementById('submit-button').click()");
    let big = b
        .wait(
            "the queued task's page",
            &format!("(location.hash.match(/^#\\/task\\/(\\d+)/) || [])[1] !== '{id}' && (location.hash.match(/^#\\/task\\/(\\d+)/) || [])[1]"),
            long,
        )
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    b.wait(
        "queued",
        "document.getElementById('task-state').dataset.state === 'queued'",
        long,
    );
    b.wait(
        "its wait reason",
        "document.querySelector('#task-view .wait-reason').textContent.includes('tessa')",
        long,
    );
    b.eval("location.hash = '#/'");
    let reason = b.wait(
        "the queue row",
        &format!("document.querySelector('#queue-table tr[data-task=\"{big}\"] .wait-reason').textContent"),
        long,
    );
    assert!(reason.as_str().unwrap().contains("cpu"), "{reason}");
    b.eval(&format!("location.hash = '#/task/{big}'"));
    b.wait(
        "the cancel button",
        "!!document.getElementById('cancel-button')",
        long,
    );
    b.eval("document.getElementById('cancel-button').click()");
    b.wait(
        "cancelled",
        "document.getElementById('task-state').dataset.state === 'cancelled'",
        long,
    );

    // The task list filters by state.
    b.eval("location.hash = '#/'");
    b.wait(
        "the task table",
        "!!document.getElementById('tasks-table')",
        long,
    );
    b.eval("{ const f = document.getElementById('state-filter'); f.value = 'cancelled'; f.dispatchEvent(new Event('change')); }");
    b.wait(
        "only cancelled tasks",
        &format!(
            "document.querySelectorAll('#tasks-table tr[data-task]').length === 1 && !!document.querySelector('#tasks-table tr[data-task=\"{big}\"]')"
        ),
        long,
    );
    b.eval("{ const f = document.getElementById('state-filter'); f.value = ''; f.dispatchEvent(new Event('change')); }");
    b.wait(
        "both tasks",
        "document.querySelectorAll('#tasks-table tr[data-task]').length === 2",
        long,
    );
    b.wait(
        "the empty queue",
        "!!document.getElementById('queue-empty')",
        long,
    );

    // Reconcile: the report in fix-resources' words.
    b.eval("document.getElementById('reconcile-button').click()");
    let report = b.wait(
        "the reconcile report",
        "document.getElementById('reconcile-report').textContent.includes('complete') && document.getElementById('reconcile-report').textContent",
        long,
    );
    assert!(
        report
            .as_str()
            .unwrap()
            .contains("✓ Resource reconciliation complete: fixed 0 workers"),
        "{report}"
    );

    let final_shot = shots.join("dashboard.png");
    b.screenshot(&final_shot, W);
    let target = target_dir();
    for name in [
        "dashboard.png",
        "dashboard-running.png",
        "dashboard-task.png",
    ] {
        std::fs::copy(shots.join(name), target.join(name)).unwrap();
    }
    assert!(std::fs::metadata(&final_shot).unwrap().len() > 10_000);
    assert!(b.page_errors.is_empty(), "page errors: {:?}", b.page_errors);

    // Logging out forgets the token.
    b.eval("document.getElementById('logout-button').click()");
    b.wait(
        "the login form again",
        "!!document.getElementById('login-token')",
        long,
    );
    assert_eq!(b.eval("sessionStorage.getItem('berth.token')"), Value::Null);
}
