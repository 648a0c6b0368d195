//! A throwaway PostgreSQL server for tests (feature `testing`).
//!
//! [`PgServer::start`] runs `initdb` and `pg_ctl` (from
//! `/usr/lib/postgresql/*/bin`, else `PATH`) in a temporary folder, on a
//! free port of 127.0.0.1 with password authentication (so tests see that
//! no password leaks), as the `postgres` user when the tests run as root.
//! [`PgServer::fresh_database`] gives each test its own database, so tests
//! share one server ([`PgServer::shared`]) and still run in parallel. A
//! server is stopped when dropped; a small watchdog process also stops it
//! (and removes its folder) once the test process is gone, which is how
//! the shared one ends.
//!
//! Needs PostgreSQL installed (`apt-get install postgresql`; `scripts/test`
//! installs it). Without it the tests fail, naming the package.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The superuser every test server has.
pub const USER: &str = "berth";
/// Its password (tests check it is never shown).
pub const PASSWORD: &str = "pw-3xq9-secret";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the tools as `postgres` (we are root, which PostgreSQL refuses).
    as_postgres: bool,
    watchdog: Option<std::process::Child>,
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`.
fn find_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        // Newest major version first.
        let v = p
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok());
        std::cmp::Reverse(v)
    });
    if let Some(b) = found.into_iter().next() {
        return b;
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(dir) = p.parent() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "PostgreSQL is not installed (no pg_ctl in /usr/lib/postgresql/*/bin or PATH): apt-get install postgresql (scripts/test installs it)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; it is
    // read at once, before any other call could reuse it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, but there is no `postgres` user to run PostgreSQL as (apt-get install postgresql creates it)"
    );
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

impl PgServer {
    /// Start a server of this test's own (slower than [`Self::shared`]:
    /// about a second for `initdb`). For tests that stop or restart it.
    pub fn start() -> PgServer {
        let bin = find_bin();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .expect("temp dir");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write password file");
        if as_postgres {
            let (uid, gid) = postgres_ids();
            for p in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown to postgres");
            }
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_postgres,
            watchdog: None,
        };
        let data = server.data();
        let out = server.tool(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                USER,
                &format!("--pwfile={}", pwfile.display()),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        check(&out, "initdb");
        // A port can be taken between our check and the server's bind: try
        // a few.
        for attempt in 0.. {
            server.port = free_port();
            let out = server.pg_ctl_start();
            if out.status.success() {
                break;
            }
            if attempt == 4 {
                check(&out, "pg_ctl start");
            }
        }
        server.watchdog = Some(server.spawn_watchdog());
        server
    }

    /// One server for the whole test process; stopped by its watchdog
    /// when the process ends.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server, password included.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Create a database no other test uses; its URL.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "berth_t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Run one statement on database `db` (from a thread of its own: the
    /// blocking client must not run inside a test's async runtime).
    pub fn sql(&self, db: &str, statement: &str) {
        let url = self.url(db);
        let statement = statement.to_string();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
            c.batch_execute(&statement)
                .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
        })
        .join()
        .expect("test SQL");
    }

    /// Stop the server (fast shutdown: connections are closed).
    pub fn stop(&self) {
        let out = self.tool(
            "pg_ctl",
            &["-D", path_str(&self.data()), "-m", "fast", "-w", "stop"],
        );
        check(&out, "pg_ctl stop");
    }

    /// Start it again, on the same port, with the same data.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        check(&out, "pg_ctl start");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> Output {
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.tool(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-l",
                path_str(&self.dir.path().join("log")),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn tool(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// `sh` that waits for this process to end, then stops the server and
    /// removes its folder.
    fn spawn_watchdog(&self) -> std::process::Child {
        let stop = self.command("pg_ctl");
        let mut stop_line: Vec<String> = vec![stop.get_program().to_string_lossy().into_owned()];
        stop_line.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        stop_line.extend([
            "-D".into(),
            self.data().display().to_string(),
            "-m".into(),
            "immediate".into(),
            "stop".into(),
        ]);
        let quoted: Vec<String> = stop_line
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = quoted.join(" "),
            dir = self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test server's watchdog")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.tool(
            "pg_ctl",
            &["-D", path_str(&self.data()), "-m", "immediate", "stop"],
        );
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
