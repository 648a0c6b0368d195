//! Task output files with real processes: what a task writes to
//! `$BERTH_OUTPUT_DIR` reaches the master and comes back byte for byte
//! (`task files`, `task download`, the shell's `files` / `task-files` /
//! `download`); an output over the worker's `--max-output` fails the task
//! naming the limit; links out of the output folder are not sent, and a
//! worker sending an escaping path gets nothing stored; `kill -9` of the
//! agent around the end of its tasks still delivers each file once,
//! before the result.

mod common;

use berth_proto::v1;
use berth_proto::v1::worker_link_client::WorkerLinkClient;
use berth_proto::v1::worker_message::Body as Out;
use berth_proto::{BearerToken, final_seq, running_seq};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn parse_id(out: &str) -> u64 {
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a task id, got {out:?}"))
}

/// `n` bytes that do not compress or repeat in any short period.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `PATH SIZE` rows of `berth task files`, header skipped.
fn file_rows(out: &str) -> Vec<(String, u64)> {
    let mut lines = out.lines();
    assert_eq!(
        lines
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["PATH", "SIZE"]),
        "{out}"
    );
    lines
        .map(|l| {
            let (path, size) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (path.trim_end().to_string(), size.parse().unwrap())
        })
        .collect()
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A shell script writing `hello.txt` and `sub/data.bin` (a copy of
/// `$SRC`) to the output folder, then touching `$MARK`.
const WRITE_TWO_FILES: &str = r#"mkdir -p "$BERTH_OUTPUT_DIR/sub" &&
printf 'hello\n' > "$BERTH_OUTPUT_DIR/hello.txt" &&
cp "$SRC" "$BERTH_OUTPUT_DIR/sub/data.bin" &&
touch "$MARK""#;

/// Submit a process task through the CLI; returns its id.
fn submit(c: &Cluster, env: &[(&str, &Path)], script: &str) -> u64 {
    let mut args: Vec<String> = ["task", "submit", "--cpu", "0.1", "--mem", "64M"]
        .map(String::from)
        .to_vec();
    for (k, v) in env {
        args.push("--env".into());
        args.push(format!("{k}={}", v.display()));
    }
    args.extend(["--", "sh", "-c", script].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    parse_id(&c.berth_ok(&args))
}

/// The two files are listed with their exact sizes and downloaded byte
/// for byte, by the subcommands and by the shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_listed_and_downloaded_byte_for_byte() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let scratch = c.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let data = random_bytes(300 * 1024 + 7, 42);
    let src = scratch.join("src.bin");
    std::fs::write(&src, &data).unwrap();

    let id = submit(
        &c,
        &[("SRC", &src), ("MARK", &scratch.join("mark"))],
        WRITE_TWO_FILES,
    );
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");

    // Listed the moment the task has ended.
    let rows = file_rows(&c.berth_ok(&["task", "files", &id.to_string()]));
    assert_eq!(
        rows,
        [
            ("hello.txt".to_string(), 6),
            ("sub/data.bin".to_string(), data.len() as u64)
        ]
    );
    let j: serde_json::Value =
        serde_json::from_str(&c.berth_ok(&["--json", "task", "files", &id.to_string()])).unwrap();
    assert_eq!(j["task_id"], id);
    assert_eq!(j["files"][1]["path"], "sub/data.bin");
    assert_eq!(j["files"][1]["size"], data.len() as u64);
    // Stored on the master under DATA_DIR/outputs/TASK_ID.
    assert_eq!(
        tree(&c.master_dir().join("outputs").join(id.to_string())),
        ["hello.txt", "sub/data.bin"]
    );

    // Into a named folder.
    let dl = scratch.join("dl");
    let out = c.berth_ok(&["task", "download", &id.to_string(), dl.to_str().unwrap()]);
    assert!(out.contains("Downloaded 2 files"), "{out}");
    assert_eq!(std::fs::read(dl.join("hello.txt")).unwrap(), b"hello\n");
    assert_eq!(std::fs::read(dl.join("sub/data.bin")).unwrap(), data);
    assert_eq!(
        tree(&dl),
        ["hello.txt", "sub/data.bin"],
        "no temporary files left"
    );

    // Into ./task-ID by default.
    let cwd = scratch.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = Command::new(BERTH)
        .args(["task", "download", &id.to_string()])
        .current_dir(&cwd)
        .env("BERTH_MASTER", &c.url)
        .env("BERTH_TOKEN", &c.token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let default = cwd.join(format!("task-{id}"));
    assert_eq!(std::fs::read(default.join("sub/data.bin")).unwrap(), data);

    // The shell's spelling.
    let shell_dl = scratch.join("shell dl");
    let script = format!(
        "files\ntask-files {id}\ndownload {id} '{}'\n",
        shell_dl.display()
    );
    let out = c.shell(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("TASK  NAME  STATE      FILES  SIZE"),
        "{text}"
    );
    assert!(text.contains("succeeded  2      300.0 KiB"), "{text}");
    assert!(
        text.contains(&format!("sub/data.bin  {}", data.len())),
        "{text}"
    );
    assert!(text.contains("✓ Downloaded 2 files (300.0 KiB)"), "{text}");
    assert_eq!(std::fs::read(shell_dl.join("sub/data.bin")).unwrap(), data);

    // Errors a user can act on.
    let out = c.berth(&["task", "files", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("task 999 does not exist"));
}

/// A worker started with `--max-output 1M` and a task writing 2 MiB: the
/// task fails with a reason naming the limit and the size, and nothing
/// of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_limit_fails_the_task_naming_the_limit() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker(
        "Tessa",
        &["--cpus", "4", "--memory", "4G", "--max-output", "1M"],
    );
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let id = submit(
        &c,
        &[],
        r#"head -c 2097152 /dev/zero > "$BERTH_OUTPUT_DIR/big" && echo wrote"#,
    );
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "failed", "{t:?}");
    assert!(
        t.reason.contains("its output of 2.0 MiB (2097152 bytes)")
            && t.reason
                .contains("over this worker's limit of 1.0 MiB (1048576 bytes)")
            && t.reason.contains("--max-output"),
        "{}",
        t.reason
    );
    let show = c.berth_ok(&["task", "show", &id.to_string()]);
    assert!(show.contains("limit of 1.0 MiB"), "{show}");
    let files = c.berth_ok(&["task", "files", &id.to_string()]);
    assert_eq!(files, format!("Task {id} has no output files.\n"));
    assert!(!c.master_dir().join("outputs").join(id.to_string()).exists());
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(logs.starts_with("wrote\n"), "{logs}");
    assert!(logs.contains("berth: its output of 2.0 MiB"), "{logs}");
}

/// Links out of the output folder are not followed: the files they point
/// at are not sent, the task's log says why, and nothing lands outside
/// the task's folder on the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_output_folder_are_not_sent() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    c.start_worker("Tessa", &["--cpus", "4", "--memory", "4G"]);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let secret = c.dir.path().join("secret.txt");
    std::fs::write(&secret, b"TOP-SECRET-CONTENT").unwrap();
    let id = submit(
        &c,
        &[("SECRET", &secret)],
        r#"cd "$BERTH_OUTPUT_DIR" && printf ok > ok.txt &&
ln -s "$SECRET" leak && ln -s ../../../.. up && ln -s ok.txt alias"#,
    );
    let t = wait_terminal(&mut client, id, Duration::from_secs(30)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    let rows = file_rows(&c.berth_ok(&["task", "files", &id.to_string()]));
    assert_eq!(
        rows,
        [("alias".to_string(), 2), ("ok.txt".to_string(), 2)],
        "a link to a file inside is sent as that file"
    );
    let logs = c.berth_ok(&["task", "logs", &id.to_string()]);
    assert!(
        logs.contains(&format!(
            "berth: output leak is a symbolic link to {}, outside the output folder; left out",
            secret.display()
        )),
        "{logs}"
    );
    assert!(
        logs.contains("berth: output up is a symbolic link to ../../../.."),
        "{logs}"
    );
    let outputs = c.master_dir().join("outputs");
    assert_eq!(
        tree(&outputs),
        [format!("{id}/alias"), format!("{id}/ok.txt")],
        "only the task's own files, under its folder"
    );
}

/// A worker that sends escaping paths (absolute, `..`) gets nothing
/// stored for them; its next, valid upload is stored; nothing is written
/// outside the master's outputs folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sending_an_escaping_path_gets_nothing_stored() {
    let c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let ch = tonic::transport::Channel::from_shared(c.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut link = WorkerLinkClient::with_interceptor(ch, BearerToken::new(&c.token).unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let send = |body| tx.send(v1::WorkerMessage { body: Some(body) }).unwrap();
    send(Out::Hello(v1::Hello {
        node_id: "node-mallory".into(),
        name: "Mallory".into(),
        total: Some(v1::Resources {
            cpu_millis: 4000,
            memory_bytes: 4 << 30,
            storage_bytes: 0,
            gpus: 0,
        }),
        drivers: vec!["process".into()],
        ..Default::default()
    }));
    let mut inbound = link
        .session(tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut client = c.client().await;
    let id = common::submit(&mut client, process_spec(100, 64 << 20, &["true"])).await;
    let start = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), inbound.message())
            .await
            .expect("a start within 20 s")
            .unwrap()
            .unwrap();
        if let Some(v1::master_message::Body::Start(s)) = m.body {
            break s;
        }
    };
    assert_eq!(start.task_id, id);
    let attempt = start.attempt_id;
    let update = |state: &str, seq: u64| {
        Out::Update(v1::AttemptUpdate {
            seq,
            attempt: Some(v1::HeldAttempt {
                attempt_id: attempt,
                state: state.into(),
                has_exit_code: state != "running",
                exit_code: 0,
                reason: String::new(),
            }),
        })
    };
    send(update(
        "running",
        running_seq(berth_core::AttemptId(attempt)),
    ));
    let outside = c.dir.path().join("escaped.txt");
    for bad in [
        "../../../escaped.txt".to_string(),
        outside.display().to_string(),
        "ok/../../../../escaped.txt".to_string(),
    ] {
        send(Out::Outputs(v1::OutputManifest {
            attempt_id: attempt,
            files: vec![v1::OutputFile {
                path: bad.clone(),
                size: 3,
            }],
        }));
        send(Out::Output(v1::OutputChunk {
            attempt_id: attempt,
            path: bad,
            offset: 0,
            data: b"bad".to_vec(),
        }));
    }
    // A valid upload after them is stored.
    send(Out::Outputs(v1::OutputManifest {
        attempt_id: attempt,
        files: vec![v1::OutputFile {
            path: "good.txt".into(),
            size: 4,
        }],
    }));
    send(Out::Output(v1::OutputChunk {
        attempt_id: attempt,
        path: "good.txt".into(),
        offset: 0,
        data: b"good".to_vec(),
    }));
    send(update(
        "succeeded",
        final_seq(berth_core::AttemptId(attempt)),
    ));
    let t = wait_terminal(&mut client, id, Duration::from_secs(20)).await;
    assert_eq!(t.state, "succeeded", "{t:?}");
    let rows = file_rows(&c.berth_ok(&["task", "files", &id.to_string()]));
    assert_eq!(rows, [("good.txt".to_string(), 4)]);
    assert!(!outside.exists());
    let everything = tree(c.dir.path());
    assert!(
        !everything.iter().any(|p| p.contains("escaped")),
        "{everything:?}"
    );
    assert_eq!(
        tree(&c.master_dir().join("outputs")),
        [format!("{id}/good.txt")]
    );
    let log = c.log("master");
    assert!(log.contains("output files refused"), "{log}");
    // Nor can a download ask for a path outside the task's folder.
    let Err(err) = client
        .download_file(v1::DownloadFileRequest {
            task_id: id,
            path: "../../token".into(),
        })
        .await
    else {
        panic!("a download of ../../token was not refused");
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

/// `kill -9` of the agent after two tasks wrote their files: one ends
/// while the agent is away, the other after it is back (re-attached).
/// Each task's files are listed the moment it has ended, intact, and
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_survive_a_kill_9_of_the_agent() {
    let mut c = Cluster::start();
    let _logs = LogsOnPanic::of(&c);
    let flags = ["--cpus", "4", "--memory", "4G"];
    let w = c.start_worker("Tessa", &flags);
    c.wait_workers_ready(1).await;
    let mut client = c.client().await;
    let scratch = c.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut tasks = Vec::new();
    for (name, sleep) in [("away", 1), ("back", 6)] {
        let data = random_bytes(300 * 1024 + sleep, sleep as u64);
        let src = scratch.join(format!("{name}.bin"));
        std::fs::write(&src, &data).unwrap();
        let mark = scratch.join(format!("{name}.written"));
        let done = scratch.join(format!("{name}.done"));
        let script = format!("{WRITE_TWO_FILES} && sleep {sleep} && touch \"$DONE\"");
        let id = submit(
            &c,
            &[("SRC", &src), ("MARK", &mark), ("DONE", &done)],
            &script,
        );
        tasks.push((id, data, mark, done));
    }
    for (_, _, mark, _) in &tasks {
        wait_for(Duration::from_secs(20), || mark.exists().then_some(()))
            .expect("the task wrote its files");
    }
    c.workers[w].kill9();
    let away_done = &tasks[0].3;
    wait_for(Duration::from_secs(10), || away_done.exists().then_some(()))
        .expect("the first task ended while the agent was away");
    std::thread::sleep(Duration::from_millis(300)); // its supervisor records the exit
    assert!(!tasks[1].3.exists(), "the second task is still running");
    c.start_worker("Tessa", &flags);

    for (id, data, _, _) in &tasks {
        let t = wait_terminal(&mut client, *id, Duration::from_secs(30)).await;
        assert_eq!(t.state, "succeeded", "{t:?}");
        assert_eq!(t.attempts.len(), 1, "run once: {t:?}");
        let rows = file_rows(&c.berth_ok(&["task", "files", &id.to_string()]));
        assert_eq!(
            rows,
            [
                ("hello.txt".to_string(), 6),
                ("sub/data.bin".to_string(), data.len() as u64)
            ],
            "task {id}: listed as soon as it ended"
        );
        let dl = scratch.join(format!("dl-{id}"));
        c.berth_ok(&["task", "download", &id.to_string(), dl.to_str().unwrap()]);
        assert_eq!(&std::fs::read(dl.join("sub/data.bin")).unwrap(), data);
        assert_eq!(std::fs::read(dl.join("hello.txt")).unwrap(), b"hello\n");
    }
    let log = c.log("master");
    let stored = log
        .lines()
        .filter(|l| l.contains("output files stored"))
        .count();
    assert_eq!(stored, 2, "each upload stored once:\n{log}");
}
