//! The PostgreSQL store: the same records and the same logical schema as
//! the SQLite file (tables `tasks`, `attempts`, `workers`,
//! `registrations`, `meta`; states as text, resources as integers, the task
//! spec as JSON text), on a server named by a `postgres://` URL.
//!
//! * **One transaction per batch.** `commit` applies a whole batch in one
//!   transaction (group commit stays one transaction per batch); it returns
//!   once the server has committed it (durable by the server's own
//!   `synchronous_commit`).
//! * **Migrations** (`MIGRATIONS`) are applied at open, in one transaction
//!   under an advisory lock (two masters opening at once do not race);
//!   `schema_version` holds how many are applied. A database migrated by a
//!   newer berth is refused. The versions count this backend's own
//!   migrations, not SQLite's `user_version`.
//! * **The server may go away.** Every call first connects again if the
//!   connection dropped. While the server cannot be reached writes fail
//!   with [`StoreFault::Io`] (not fatal: the master refuses writes, keeps
//!   serving reads, probes, and resumes by itself). `load` answers from a
//!   mirror of what this store last committed (or loaded), so the master
//!   can undo a failed batch while the server is away.
//! * **A commit cut off in flight** (COMMIT sent, no answer) may or may not
//!   have landed; the master has already told its callers that nothing was
//!   recorded. Every batch writes a fresh token into `meta`; on reconnect
//!   the store reads it back and, if that batch did land, writes the
//!   mirror's rows back over what it touched, so the answer stays true.
//! * **TLS is not supported yet**: connections are plain (`sslmode=disable`
//!   or the default `prefer`, which falls back to plain); a URL with
//!   `sslmode=require` is refused at start. Keep the server on a trusted
//!   network or a local socket until then.
//!
//! The blocking `postgres` client runs its own current-thread runtime, so
//! this store must be used from a plain OS thread (the master's engine
//! thread; `spawn_blocking` at start), never from inside async code.

use crate::error::PgOp;
use crate::{MemStore, Snapshot, Store, StoreError, StoreFault, Write};
use berth_core::{
    AttemptId, AttemptRecord, AttemptState, GpuInfo, Resources, TaskId, TaskRecord, TaskSpec,
    TaskState, WorkerId, WorkerRecord, WorkerState,
};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Statement, Transaction};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Schema migrations, applied in order; `schema_version` counts those
/// applied. Version 1 is the SQLite schema as of its version 4.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE tasks (
        id BIGINT PRIMARY KEY,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        submitted_ms BIGINT NOT NULL,
        ended_ms BIGINT,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
     );
     CREATE INDEX tasks_by_state ON tasks(state);
     CREATE TABLE attempts (
        id BIGINT PRIMARY KEY,
        task_id BIGINT NOT NULL REFERENCES tasks(id) DEFERRABLE INITIALLY DEFERRED,
        worker_id TEXT NOT NULL,
        state TEXT NOT NULL,
        cpu_millis BIGINT NOT NULL,
        memory_bytes BIGINT NOT NULL,
        storage_bytes BIGINT NOT NULL,
        gpus BIGINT NOT NULL,
        gpu_ids TEXT NOT NULL DEFAULT '[]',
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        ended_ms BIGINT,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX attempts_by_task ON attempts(task_id);
     CREATE INDEX attempts_by_state ON attempts(state);
     CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        cpu_millis BIGINT NOT NULL,
        memory_bytes BIGINT NOT NULL,
        storage_bytes BIGINT NOT NULL,
        gpus BIGINT NOT NULL,
        drivers TEXT NOT NULL DEFAULT '[]',
        gpu_info TEXT NOT NULL DEFAULT '[]',
        last_seen_ms BIGINT NOT NULL,
        labels TEXT NOT NULL DEFAULT '[]',
        drained BOOLEAN NOT NULL DEFAULT FALSE
     );
     CREATE TABLE registrations (name TEXT PRIMARY KEY);
     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

/// Serialises migrations of one database (any constant both sides agree on).
const MIGRATION_LOCK: i64 = 0x6265_7274_6801;

const TASK_COLUMNS: &str =
    "id, state, spec, submitted_ms, ended_ms, exit_code, reason, cancel_requested";
const ATTEMPT_COLUMNS: &str = "id, task_id, worker_id, state, cpu_millis, memory_bytes, storage_bytes, gpus, gpu_ids, created_ms, started_ms, ended_ms, exit_code, reason";
const WORKER_COLUMNS: &str = "id, name, state, cpu_millis, memory_bytes, storage_bytes, gpus, drivers, gpu_info, last_seen_ms, labels, drained";

const UPSERT_TASK: &str = "INSERT INTO tasks (id, state, spec, submitted_ms, ended_ms, exit_code, reason, cancel_requested)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, spec = EXCLUDED.spec,
        submitted_ms = EXCLUDED.submitted_ms, ended_ms = EXCLUDED.ended_ms,
        exit_code = EXCLUDED.exit_code, reason = EXCLUDED.reason,
        cancel_requested = EXCLUDED.cancel_requested";
const UPSERT_ATTEMPT: &str = "INSERT INTO attempts (id, task_id, worker_id, state, cpu_millis, memory_bytes, storage_bytes, gpus, gpu_ids, created_ms, started_ms, ended_ms, exit_code, reason)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
     ON CONFLICT (id) DO UPDATE SET task_id = EXCLUDED.task_id, worker_id = EXCLUDED.worker_id,
        state = EXCLUDED.state, cpu_millis = EXCLUDED.cpu_millis,
        memory_bytes = EXCLUDED.memory_bytes, storage_bytes = EXCLUDED.storage_bytes,
        gpus = EXCLUDED.gpus, gpu_ids = EXCLUDED.gpu_ids, created_ms = EXCLUDED.created_ms,
        started_ms = EXCLUDED.started_ms, ended_ms = EXCLUDED.ended_ms,
        exit_code = EXCLUDED.exit_code, reason = EXCLUDED.reason";
const UPSERT_WORKER: &str = "INSERT INTO workers (id, name, state, cpu_millis, memory_bytes, storage_bytes, gpus, drivers, gpu_info, last_seen_ms, labels, drained)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state,
        cpu_millis = EXCLUDED.cpu_millis, memory_bytes = EXCLUDED.memory_bytes,
        storage_bytes = EXCLUDED.storage_bytes, gpus = EXCLUDED.gpus,
        drivers = EXCLUDED.drivers, gpu_info = EXCLUDED.gpu_info,
        last_seen_ms = EXCLUDED.last_seen_ms, labels = EXCLUDED.labels,
        drained = EXCLUDED.drained";
const UPSERT_META: &str = "INSERT INTO meta (key, value) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// A PostgreSQL URL. Shown (`Display`, `Debug`) without its password, so
/// it can be logged and printed; the full text is used only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    shown: String,
}

impl PostgresUrl {
    /// The URL as typed, password included: only for connecting.
    pub fn secret(&self) -> &str {
        &self.url
    }

    fn config(&self) -> postgres::Config {
        let mut c = postgres::Config::from_str(&self.url).expect("checked when parsed");
        // A server that stops answering must not hang the engine thread
        // for the kernel's default (minutes to hours).
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(Duration::from_secs(5));
        }
        if c.get_tcp_user_timeout().is_none() {
            c.tcp_user_timeout(Duration::from_secs(30));
        }
        c.keepalives(true).keepalives_idle(Duration::from_secs(10));
        if c.get_application_name().is_none() {
            c.application_name("berth-master");
        }
        c
    }
}

impl FromStr for PostgresUrl {
    type Err = String;

    /// `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=disable` (or
    /// `postgresql://`). Errors never contain the password.
    fn from_str(s: &str) -> Result<Self, String> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let shown = redact(s);
        let config = postgres::Config::from_str(s).map_err(|e| {
            let why = std::error::Error::source(&e)
                .map(|c| format!("{e}: {c}"))
                .unwrap_or_else(|| e.to_string());
            format!("{shown} is not a valid PostgreSQL URL ({why})")
        })?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(format!(
                "{shown}: TLS connections to PostgreSQL are not supported yet; use sslmode=disable (plain connections, on a trusted network)"
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(format!("{shown}: the URL names no host"));
        }
        Ok(PostgresUrl {
            url: s.to_string(),
            shown,
        })
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

/// The URL with its password replaced by `***` (in the user part and in a
/// `password=` parameter).
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    // The user part ends at the last '@' before the path.
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// One error of the client as one line: the server's message and SQLSTATE,
/// or the client's (with its cause: "error connecting to server: Connection
/// refused").
pub(crate) fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// What kind of fault a PostgreSQL error is, by SQLSTATE; errors without
/// one come from the client and its socket: the server cannot be reached.
pub(crate) fn fault(e: &postgres::Error) -> StoreFault {
    let Some(code) = e.code() else {
        if e.is_closed() || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>()) {
            return StoreFault::Io;
        }
        // Timeouts, a broken protocol stream, authentication: none of it
        // says the records are bad; treat as the server being away.
        let text = e.to_string();
        if text.starts_with("error connecting")
            || text.starts_with("timeout")
            || text.starts_with("error communicating")
            || text.starts_with("authentication")
        {
            return StoreFault::Io;
        }
        return StoreFault::Other;
    };
    let c = code.code();
    if *code == SqlState::DISK_FULL {
        StoreFault::Full
    } else if [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::TOO_MANY_CONNECTIONS,
    ]
    .contains(code)
    {
        StoreFault::Busy
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        StoreFault::Corrupt
    } else if c.starts_with("08") // connection exception
        || c.starts_with("57P") // admin / crash shutdown, cannot connect now
        || c.starts_with("58") // system error (I/O) on the server
        || c.starts_with("53") // out of memory or other resources
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        StoreFault::Io
    } else {
        StoreFault::Other
    }
}

/// An open connection and its prepared upserts.
struct Conn {
    client: Client,
    task: Statement,
    attempt: Statement,
    worker: Statement,
}

/// A batch whose COMMIT got no answer: it may have landed.
struct InDoubt {
    token: String,
    writes: Vec<Write>,
}

pub struct PostgresStore {
    url: PostgresUrl,
    conn: Option<Conn>,
    /// What this store last committed or loaded (answers `load` while the
    /// server is away; the pre-images for undoing a batch in doubt).
    mirror: MemStore,
    /// Whether `mirror` holds the records (a `load` succeeded).
    mirrored: bool,
    in_doubt: Option<InDoubt>,
}

impl PostgresStore {
    /// Connect to the database at `url` and migrate its schema. Fails if
    /// the server cannot be reached: a master does not start without its
    /// records.
    pub fn open(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        let mut store = PostgresStore {
            url: url.clone(),
            conn: None,
            mirror: MemStore::new(),
            mirrored: false,
            in_doubt: None,
        };
        let mut client = store
            .url
            .config()
            .connect(NoTls)
            .map_err(|e| store.error(PgOp::Connect, e))?;
        migrate(&mut client, &store.url)?;
        store.conn = Some(store.prepare(client)?);
        Ok(store)
    }

    /// The URL, without its password.
    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// The schema version of the database.
    pub fn schema_version(&mut self) -> Result<usize, StoreError> {
        self.with(PgOp::Load, |c| {
            let row = c
                .client
                .query_one("SELECT version FROM schema_version", &[])?;
            Ok(row.get::<_, i32>(0) as usize)
        })
    }

    fn error(&self, op: PgOp, source: postgres::Error) -> StoreError {
        StoreError::Postgres {
            op,
            target: self.url.to_string(),
            source,
        }
    }

    fn prepare(&self, mut client: Client) -> Result<Conn, StoreError> {
        let mut p = |sql| {
            client
                .prepare(sql)
                .map_err(|e| self.error(PgOp::Connect, e))
        };
        let (task, attempt, worker) = (p(UPSERT_TASK)?, p(UPSERT_ATTEMPT)?, p(UPSERT_WORKER)?);
        Ok(Conn {
            client,
            task,
            attempt,
            worker,
        })
    }

    /// Connect again if the connection dropped, and settle a batch left in
    /// doubt by the drop.
    fn connect(&mut self) -> Result<(), StoreError> {
        if self.conn.as_ref().is_some_and(|c| !c.client.is_closed()) {
            return Ok(());
        }
        self.conn = None;
        let client = self
            .url
            .config()
            .connect(NoTls)
            .map_err(|e| self.error(PgOp::Connect, e))?;
        self.conn = Some(self.prepare(client)?);
        if let Some(doubt) = self.in_doubt.take() {
            let settled = self.settle(&doubt);
            if let Err(e) = settled {
                self.in_doubt = Some(doubt);
                self.forget_if_broken(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drop a connection that an error showed to be gone.
    fn forget_if_broken(&mut self, e: &StoreError) {
        if e.fault() == StoreFault::Io {
            self.conn = None;
        }
    }

    /// Run `f` on a live connection; a connection error drops it so the
    /// next call connects again.
    fn with<T>(
        &mut self,
        op: PgOp,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.connect()?;
        let conn = self.conn.as_mut().expect("connected");
        let r = f(conn).map_err(|e| self.error(op, e));
        if let Err(e) = &r {
            self.forget_if_broken(e);
        }
        r
    }

    /// The batch in doubt landed if its token is the last one recorded;
    /// then write the mirror's rows back over every record it touched.
    fn settle(&mut self, doubt: &InDoubt) -> Result<(), StoreError> {
        let conn = self.conn.as_mut().expect("connected");
        let mirror = &self.mirror;
        let r = (|| {
            let landed = conn
                .client
                .query_opt("SELECT value FROM meta WHERE key = 'last_batch'", &[])?
                .map(|r| r.get::<_, String>(0))
                == Some(doubt.token.clone());
            if !landed {
                return Ok(());
            }
            let Conn {
                client,
                task,
                attempt,
                worker,
            } = conn;
            let mut tx = client.transaction()?;
            for w in &doubt.writes {
                match w {
                    Write::Task(t) => match mirror.task(t.id) {
                        Some(before) => put_task(&mut tx, task, before)?,
                        None => {
                            tx.execute("DELETE FROM tasks WHERE id = $1", &[&(t.id.0 as i64)])?;
                        }
                    },
                    Write::Attempt(a) => match mirror.attempt(a.id) {
                        Some(before) => put_attempt(&mut tx, attempt, before)?,
                        None => {
                            tx.execute("DELETE FROM attempts WHERE id = $1", &[&(a.id.0 as i64)])?;
                        }
                    },
                    Write::Worker(WorkerRecord { id, .. }) | Write::RemoveWorker(id) => {
                        match mirror.worker(id) {
                            Some(before) => put_worker(&mut tx, worker, before)?,
                            None => {
                                tx.execute("DELETE FROM workers WHERE id = $1", &[&id.0])?;
                            }
                        }
                    }
                    Write::Register(name) | Write::Unregister(name) => {
                        if mirror.is_registered(name) {
                            tx.execute(
                                "INSERT INTO registrations (name) VALUES ($1) ON CONFLICT DO NOTHING",
                                &[name],
                            )?;
                        } else {
                            tx.execute("DELETE FROM registrations WHERE name = $1", &[name])?;
                        }
                    }
                }
            }
            let token = new_token();
            tx.execute(UPSERT_META, &[&"last_batch", &token])?;
            tx.commit()
        })();
        r.map_err(|e| self.error(PgOp::Settle, e))
    }

    fn read_all(&mut self) -> Result<Snapshot, StoreError> {
        self.with(PgOp::Load, |c| {
            let mut tx = c.client.build_transaction().read_only(true).start()?;
            let tasks = tx.query(
                &format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"),
                &[],
            )?;
            let attempts = tx.query(
                &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts ORDER BY id"),
                &[],
            )?;
            let workers = tx.query(
                &format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id"),
                &[],
            )?;
            let registrations = tx.query("SELECT name FROM registrations ORDER BY name", &[])?;
            tx.commit()?;
            Ok((tasks, attempts, workers, registrations))
        })
        .and_then(|(tasks, attempts, workers, registrations)| {
            Ok(Snapshot {
                tasks: tasks.iter().map(row_to_task).collect::<Result<_, _>>()?,
                attempts: attempts
                    .iter()
                    .map(row_to_attempt)
                    .collect::<Result<_, _>>()?,
                workers: workers
                    .iter()
                    .map(row_to_worker)
                    .collect::<Result<_, _>>()?,
                registrations: registrations.iter().map(|r| r.get(0)).collect(),
            })
        })
    }
}

fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn migrate(client: &mut Client, url: &PostgresUrl) -> Result<usize, StoreError> {
    let err = |version: usize| {
        move |source| StoreError::Postgres {
            op: PgOp::Migrate { version },
            target: url.to_string(),
            source,
        }
    };
    let mut tx = client.transaction().map_err(err(0))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err(0))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(err(0))?;
    let current = match tx
        .query_opt("SELECT version FROM schema_version", &[])
        .map_err(err(0))?
    {
        Some(row) => row.get::<_, i32>(0) as usize,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .map_err(err(0))?;
            0
        }
    };
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            at: url.to_string(),
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i + 1;
        tx.batch_execute(sql).map_err(err(version))?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&(version as i32)],
        )
        .map_err(err(version))?;
    }
    tx.commit().map_err(err(MIGRATIONS.len()))?;
    Ok(MIGRATIONS.len())
}

fn corrupt(what: String, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

/// A column, or the record named corrupt when it has the wrong type.
fn col<'a, T: postgres::types::FromSql<'a>>(
    r: &'a Row,
    i: usize,
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    r.try_get(i).map_err(|e| corrupt(what(), explain(&e)))
}

fn json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what(), e))
}

fn row_to_task(r: &Row) -> Result<TaskRecord, StoreError> {
    let id: i64 = r.get(0);
    let what = || format!("task {id}");
    let state: &str = col(r, 1, &what)?;
    let Some(state) = TaskState::parse(state) else {
        return Err(corrupt(what(), format!("unknown state '{state}'")));
    };
    let spec: TaskSpec = json(col(r, 2, &what)?, &what)?;
    Ok(TaskRecord {
        id: TaskId(id as u64),
        spec,
        state,
        submitted_ms: col(r, 3, &what)?,
        ended_ms: col(r, 4, &what)?,
        exit_code: col(r, 5, &what)?,
        reason: col(r, 6, &what)?,
        cancel_requested: col(r, 7, &what)?,
    })
}

fn row_to_attempt(r: &Row) -> Result<AttemptRecord, StoreError> {
    let id: i64 = r.get(0);
    let what = || format!("attempt {id}");
    let state: &str = col(r, 3, &what)?;
    let Some(state) = AttemptState::parse(state) else {
        return Err(corrupt(what(), format!("unknown state '{state}'")));
    };
    let gpu_ids: &str = col(r, 8, &what)?;
    let gpu_ids: Vec<u32> = if gpu_ids == "[]" {
        Vec::new()
    } else {
        json(gpu_ids, &what)?
    };
    Ok(AttemptRecord {
        id: AttemptId(id as u64),
        task_id: TaskId(col::<i64>(r, 1, &what)? as u64),
        worker_id: WorkerId(col(r, 2, &what)?),
        state,
        resources: Resources {
            cpu_millis: col::<i64>(r, 4, &what)? as u64,
            memory_bytes: col::<i64>(r, 5, &what)? as u64,
            storage_bytes: col::<i64>(r, 6, &what)? as u64,
            gpus: col::<i64>(r, 7, &what)? as u32,
        },
        gpu_ids,
        created_ms: col(r, 9, &what)?,
        started_ms: col(r, 10, &what)?,
        ended_ms: col(r, 11, &what)?,
        exit_code: col(r, 12, &what)?,
        reason: col(r, 13, &what)?,
    })
}

fn row_to_worker(r: &Row) -> Result<WorkerRecord, StoreError> {
    let id: String = r.get(0);
    let what = || format!("worker {id}");
    let state: &str = col(r, 2, &what)?;
    let Some(state) = WorkerState::parse(state) else {
        return Err(corrupt(what(), format!("unknown state '{state}'")));
    };
    let drivers: Vec<String> = json(col(r, 7, &what)?, &what)?;
    let gpus: Vec<GpuInfo> = json(col(r, 8, &what)?, &what)?;
    let labels: Vec<(String, String)> = json(col(r, 10, &what)?, &what)?;
    Ok(WorkerRecord {
        id: WorkerId(id.clone()),
        name: col(r, 1, &what)?,
        state,
        total: Resources {
            cpu_millis: col::<i64>(r, 3, &what)? as u64,
            memory_bytes: col::<i64>(r, 4, &what)? as u64,
            storage_bytes: col::<i64>(r, 5, &what)? as u64,
            gpus: col::<i64>(r, 6, &what)? as u32,
        },
        drivers,
        gpus,
        last_seen_ms: col(r, 9, &what)?,
        labels,
        drained: col(r, 11, &what)?,
    })
}

fn put_task(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    t: &TaskRecord,
) -> Result<(), postgres::Error> {
    let spec = serde_json::to_string(&t.spec).expect("task spec serialises");
    tx.execute(
        stmt,
        &[
            &(t.id.0 as i64),
            &t.state.as_str(),
            &spec,
            &t.submitted_ms,
            &t.ended_ms,
            &t.exit_code,
            &t.reason,
            &t.cancel_requested,
        ],
    )?;
    Ok(())
}

fn put_attempt(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    a: &AttemptRecord,
) -> Result<(), postgres::Error> {
    let gpu_ids = serde_json::to_string(&a.gpu_ids).expect("gpu ids serialise");
    tx.execute(
        stmt,
        &[
            &(a.id.0 as i64),
            &(a.task_id.0 as i64),
            &a.worker_id.0,
            &a.state.as_str(),
            &(a.resources.cpu_millis as i64),
            &(a.resources.memory_bytes as i64),
            &(a.resources.storage_bytes as i64),
            &(a.resources.gpus as i64),
            &gpu_ids,
            &a.created_ms,
            &a.started_ms,
            &a.ended_ms,
            &a.exit_code,
            &a.reason,
        ],
    )?;
    Ok(())
}

fn put_worker(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    w: &WorkerRecord,
) -> Result<(), postgres::Error> {
    let drivers = serde_json::to_string(&w.drivers).expect("drivers serialise");
    let gpus = serde_json::to_string(&w.gpus).expect("gpus serialise");
    let labels = serde_json::to_string(&w.labels).expect("labels serialise");
    tx.execute(
        stmt,
        &[
            &w.id.0,
            &w.name,
            &w.state.as_str(),
            &(w.total.cpu_millis as i64),
            &(w.total.memory_bytes as i64),
            &(w.total.storage_bytes as i64),
            &(w.total.gpus as i64),
            &drivers,
            &gpus,
            &w.last_seen_ms,
            &labels,
            &w.drained,
        ],
    )?;
    Ok(())
}

/// Apply a batch inside `tx`, then record its token.
fn write_batch(
    tx: &mut Transaction<'_>,
    (task, attempt, worker): (&Statement, &Statement, &Statement),
    writes: &[Write],
    token: &str,
) -> Result<(), postgres::Error> {
    for w in writes {
        match w {
            Write::Task(t) => put_task(tx, task, t)?,
            Write::Attempt(a) => put_attempt(tx, attempt, a)?,
            Write::Worker(w) => put_worker(tx, worker, w)?,
            Write::RemoveWorker(id) => {
                tx.execute("DELETE FROM workers WHERE id = $1", &[&id.0])?;
            }
            Write::Register(name) => {
                tx.execute(
                    "INSERT INTO registrations (name) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[name],
                )?;
            }
            Write::Unregister(name) => {
                tx.execute("DELETE FROM registrations WHERE name = $1", &[name])?;
            }
        }
    }
    tx.execute(UPSERT_META, &[&"last_batch", &token])?;
    Ok(())
}

impl Store for PostgresStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self.read_all() {
            Ok(snapshot) => {
                self.mirror = MemStore::from_snapshot(&snapshot);
                self.mirrored = true;
                Ok(snapshot)
            }
            // The server is away: what this store last committed is what
            // the database holds (a batch in doubt is undone on reconnect).
            Err(e) if e.fault() == StoreFault::Io && self.mirrored => self.mirror.load(),
            Err(e) => Err(e),
        }
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let op = PgOp::Commit {
            count: writes.len(),
        };
        self.connect()?;
        let token = new_token();
        let Conn {
            client,
            task,
            attempt,
            worker,
        } = self.conn.as_mut().expect("connected");
        // Err((error, whether COMMIT itself got no answer)).
        let result = match client.transaction() {
            Err(e) => Err((e, false)),
            Ok(mut tx) => match write_batch(&mut tx, (task, attempt, worker), writes, &token) {
                Err(e) => Err((e, false)),
                Ok(()) => tx.commit().map_err(|e| {
                    let no_answer = e.as_db_error().is_none();
                    (e, no_answer)
                }),
            },
        };
        match result {
            Ok(()) => self.mirror.commit(writes),
            Err((e, in_doubt)) => {
                if in_doubt {
                    // It may have landed: settled on reconnect.
                    self.in_doubt = Some(InDoubt {
                        token,
                        writes: writes.to_vec(),
                    });
                    self.conn = None;
                }
                let e = self.error(op, e);
                self.forget_if_broken(&e);
                Err(e)
            }
        }
    }

    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = self.with(PgOp::Load, |c| {
            c.client.query(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state IN ('assigned', 'running', 'stopping', 'unknown') ORDER BY id"
                ),
                &[],
            )
        })?;
        rows.iter().map(row_to_attempt).collect()
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        let now = format!("{:?}", std::time::SystemTime::now());
        self.with(PgOp::Probe, |c| {
            c.client.execute(UPSERT_META, &[&"probe", &now]).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_the_password() {
        let u: PostgresUrl = "postgres://berth:pa55:word@db.example:5433/records?sslmode=disable"
            .parse()
            .unwrap();
        assert_eq!(
            u.to_string(),
            "postgres://berth:***@db.example:5433/records?sslmode=disable"
        );
        assert!(!format!("{u:?}").contains("pa55"));
        let u: PostgresUrl = "postgresql://db/records?user=b&password=pa55"
            .parse()
            .unwrap();
        assert_eq!(u.to_string(), "postgresql://db/records?user=b&password=***");
        let u: PostgresUrl = "postgres://berth@db/records".parse().unwrap();
        assert_eq!(u.to_string(), "postgres://berth@db/records");
    }

    #[test]
    fn tls_and_other_schemes_are_refused_by_name() {
        let e = "postgres://b:pa55@db/r?sslmode=require"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(e.contains("TLS") && !e.contains("pa55"), "{e}");
        let e = "postgres://b:pa55@db/r?port=x"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(!e.contains("pa55"), "{e}");
        assert!("mysql://db".parse::<PostgresUrl>().is_err());
    }

    /// A batch whose COMMIT got no answer but did land is undone on
    /// reconnect: the callers were told nothing was recorded.
    #[test]
    fn a_cut_off_commit_that_landed_is_undone_on_reconnect() {
        use crate::conformance::{sample_attempt, sample_task, sample_worker};
        let server = crate::testing::PgServer::shared();
        let url: PostgresUrl = server.fresh_database().parse().unwrap();
        let mut s = PostgresStore::open(&url).unwrap();
        s.load().unwrap();
        let mut t1 = sample_task(1);
        s.commit(&[
            Write::Task(t1.clone()),
            Write::Register("kept".into()),
            Write::Worker(sample_worker("w0")),
        ])
        .unwrap();
        let before = s.load().unwrap();

        // The batch lands, then the answer to COMMIT is lost: the mirror
        // and the flag say what `commit` would have left.
        let mirror = s.mirror.clone();
        t1.state = TaskState::Running;
        let batch = vec![
            Write::Task(t1),
            Write::Task(sample_task(2)),
            Write::Attempt(sample_attempt(1, 2, "w1")),
            Write::Worker(sample_worker("w1")),
            Write::RemoveWorker(WorkerId("w0".into())),
            Write::Register("new".into()),
            Write::Unregister("kept".into()),
        ];
        s.commit(&batch).unwrap();
        let token = s
            .with(PgOp::Load, |c| {
                c.client
                    .query_one("SELECT value FROM meta WHERE key = 'last_batch'", &[])
                    .map(|r| r.get::<_, String>(0))
            })
            .unwrap();
        s.mirror = mirror;
        s.in_doubt = Some(InDoubt {
            token,
            writes: batch,
        });
        s.conn = None;

        assert_eq!(s.load().unwrap(), before);
        assert!(s.in_doubt.is_none());
        // A batch in doubt that did not land is left alone.
        s.in_doubt = Some(InDoubt {
            token: new_token(),
            writes: vec![Write::Task(sample_task(1))],
        });
        s.conn = None;
        assert_eq!(s.load().unwrap(), before);
    }
}
