//! The embedded SQLite store: one file in the master's data dir, WAL mode,
//! `synchronous=FULL` so a committed batch survives power loss, schema
//! versioned with `PRAGMA user_version` and migrated forward at open.
//!
//! Columns are plain (states as text, resources as integers) so an operator
//! can read the file with `sqlite3`; only the task spec is JSON.

use crate::{Snapshot, Store, StoreError, Write};
use berth_core::{
    AttemptId, AttemptRecord, AttemptState, GpuInfo, Resources, TaskId, TaskRecord, TaskSpec,
    TaskState, WorkerId, WorkerRecord, WorkerState,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Schema migrations, applied in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        submitted_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        cancel_requested INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX tasks_by_state ON tasks(state);
     CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        worker_id TEXT NOT NULL,
        state TEXT NOT NULL,
        cpu_millis INTEGER NOT NULL,
        memory_bytes INTEGER NOT NULL,
        storage_bytes INTEGER NOT NULL,
        gpus INTEGER NOT NULL,
        gpu_ids TEXT NOT NULL DEFAULT '[]',
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        ended_ms INTEGER,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX attempts_by_task ON attempts(task_id);
     CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        cpu_millis INTEGER NOT NULL,
        memory_bytes INTEGER NOT NULL,
        storage_bytes INTEGER NOT NULL,
        gpus INTEGER NOT NULL,
        drivers TEXT NOT NULL DEFAULT '[]',
        gpu_info TEXT NOT NULL DEFAULT '[]',
        last_seen_ms INTEGER NOT NULL
     );",
    // 2: find resource-holding attempts without a scan.
    "CREATE INDEX attempts_by_state ON attempts(state);",
    // 3: worker labels, operator drain, and the names allowed to register.
    "ALTER TABLE workers ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE workers ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE registrations (name TEXT PRIMARY KEY);",
    // 4: small facts about the store itself (the write probe's row).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

const ATTEMPT_COLUMNS: &str = "id, task_id, worker_id, state, cpu_millis, memory_bytes, storage_bytes, gpus, gpu_ids, created_ms, started_ms, ended_ms, exit_code, reason";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed) the store file at `path` and migrate it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current: usize =
            self.conn
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .map_err(|source| StoreError::Migrate { version: 0, source })? as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                at: self.path.display().to_string(),
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            let err = |source| StoreError::Migrate { version, source };
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", version as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> usize {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap_or(0) as usize
    }

    /// Read one task straight from the file (for tests and audits).
    pub fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, state, spec, submitted_ms, ended_ms, exit_code, reason, cancel_requested FROM tasks WHERE id = ?1",
                [id.0 as i64],
                row_to_task,
            )
            .optional()
            .map_err(StoreError::Load)?
            .transpose()
    }
}

fn corrupt(what: String, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

type RowResult<T> = rusqlite::Result<Result<T, StoreError>>;

fn row_to_task(r: &rusqlite::Row<'_>) -> RowResult<TaskRecord> {
    // Borrowed text, and the error context built only on error: this runs
    // once per record at every master start.
    let id: i64 = r.get(0)?;
    let what = || format!("task {id}");
    let state = r.get_ref(1)?.as_str()?;
    let Some(state) = TaskState::parse(state) else {
        return Ok(Err(corrupt(what(), format!("unknown state '{state}'"))));
    };
    let spec: TaskSpec = match serde_json::from_str(r.get_ref(2)?.as_str()?) {
        Ok(s) => s,
        Err(e) => return Ok(Err(corrupt(what(), e))),
    };
    Ok(Ok(TaskRecord {
        id: TaskId(id as u64),
        spec,
        state,
        submitted_ms: r.get(3)?,
        ended_ms: r.get(4)?,
        exit_code: r.get(5)?,
        reason: r.get(6)?,
        cancel_requested: r.get::<_, i64>(7)? != 0,
    }))
}

fn row_to_attempt(r: &rusqlite::Row<'_>) -> RowResult<AttemptRecord> {
    let id: i64 = r.get(0)?;
    let what = || format!("attempt {id}");
    let state = r.get_ref(3)?.as_str()?;
    let gpu_ids = r.get_ref(8)?.as_str()?;
    let Some(state) = AttemptState::parse(state) else {
        return Ok(Err(corrupt(what(), format!("unknown state '{state}'"))));
    };
    let gpu_ids: Vec<u32> = if gpu_ids == "[]" {
        Vec::new() // the common case, without a parse
    } else {
        match serde_json::from_str(gpu_ids) {
            Ok(g) => g,
            Err(e) => return Ok(Err(corrupt(what(), e))),
        }
    };
    Ok(Ok(AttemptRecord {
        id: AttemptId(id as u64),
        task_id: TaskId(r.get::<_, i64>(1)? as u64),
        worker_id: WorkerId(r.get(2)?),
        state,
        resources: Resources {
            cpu_millis: r.get::<_, i64>(4)? as u64,
            memory_bytes: r.get::<_, i64>(5)? as u64,
            storage_bytes: r.get::<_, i64>(6)? as u64,
            gpus: r.get::<_, i64>(7)? as u32,
        },
        gpu_ids,
        created_ms: r.get(9)?,
        started_ms: r.get(10)?,
        ended_ms: r.get(11)?,
        exit_code: r.get(12)?,
        reason: r.get(13)?,
    }))
}

fn row_to_worker(r: &rusqlite::Row<'_>) -> RowResult<WorkerRecord> {
    let id: String = r.get(0)?;
    let state: String = r.get(2)?;
    let drivers: String = r.get(7)?;
    let gpu_info: String = r.get(8)?;
    let what = format!("worker {id}");
    let Some(state) = WorkerState::parse(&state) else {
        return Ok(Err(corrupt(what, format!("unknown state '{state}'"))));
    };
    let drivers: Vec<String> = match serde_json::from_str(&drivers) {
        Ok(d) => d,
        Err(e) => return Ok(Err(corrupt(what, e))),
    };
    let gpus: Vec<GpuInfo> = match serde_json::from_str(&gpu_info) {
        Ok(g) => g,
        Err(e) => return Ok(Err(corrupt(what, e))),
    };
    Ok(Ok(WorkerRecord {
        id: WorkerId(id),
        name: r.get(1)?,
        state,
        total: Resources {
            cpu_millis: r.get::<_, i64>(3)? as u64,
            memory_bytes: r.get::<_, i64>(4)? as u64,
            storage_bytes: r.get::<_, i64>(5)? as u64,
            gpus: r.get::<_, i64>(6)? as u32,
        },
        drivers,
        gpus,
        last_seen_ms: r.get(9)?,
        labels: match serde_json::from_str(&r.get::<_, String>(10)?) {
            Ok(l) => l,
            Err(e) => {
                return Ok(Err(corrupt(
                    format!("worker {}", r.get::<_, String>(0)?),
                    e,
                )));
            }
        },
        drained: r.get::<_, i64>(11)? != 0,
    }))
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    f: fn(&rusqlite::Row<'_>) -> RowResult<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(StoreError::Load)?;
    let rows = stmt.query_map([], f).map_err(StoreError::Load)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(StoreError::Load)??);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        // Tasks and attempts are read at the same time, on two connections
        // (WAL allows concurrent readers): start-up time is what a restart
        // costs the whole cluster.
        let path = self.path.clone();
        let (tasks, attempts) = std::thread::scope(|scope| {
            let attempts = scope.spawn(move || {
                let conn = Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(StoreError::Load)?;
                collect(
                    &conn,
                    &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts ORDER BY id"),
                    row_to_attempt,
                )
            });
            let tasks = collect(
                &self.conn,
                "SELECT id, state, spec, submitted_ms, ended_ms, exit_code, reason, cancel_requested FROM tasks ORDER BY id",
                row_to_task,
            );
            let attempts = attempts.join().expect("attempt loader panicked");
            (tasks, attempts)
        });
        Ok(Snapshot {
            tasks: tasks?,
            attempts: attempts?,
            registrations: {
                let mut stmt = self
                    .conn
                    .prepare("SELECT name FROM registrations ORDER BY name")
                    .map_err(StoreError::Load)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(StoreError::Load)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::Load)?
            },
            workers: collect(
                &self.conn,
                "SELECT id, name, state, cpu_millis, memory_bytes, storage_bytes, gpus, drivers, gpu_info, last_seen_ms, labels, drained FROM workers ORDER BY id",
                row_to_worker,
            )?,
        })
    }

    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        collect(
            &self.conn,
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE state IN ('assigned', 'running', 'stopping', 'unknown') ORDER BY id"
            ),
            row_to_attempt,
        )
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let count = writes.len();
        let err = |source| StoreError::Commit { count, source };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut task_stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tasks (id, state, spec, submitted_ms, ended_ms, exit_code, reason, cancel_requested)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            let mut attempt_stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO attempts (id, task_id, worker_id, state, cpu_millis, memory_bytes, storage_bytes, gpus, gpu_ids, created_ms, started_ms, ended_ms, exit_code, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(err)?;
            let mut worker_stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO workers (id, name, state, cpu_millis, memory_bytes, storage_bytes, gpus, drivers, gpu_info, last_seen_ms, labels, drained)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(err)?;
            for w in writes {
                match w {
                    Write::Task(t) => {
                        let spec = serde_json::to_string(&t.spec).expect("task spec serialises");
                        task_stmt
                            .execute(params![
                                t.id.0 as i64,
                                t.state.as_str(),
                                spec,
                                t.submitted_ms,
                                t.ended_ms,
                                t.exit_code,
                                t.reason,
                                t.cancel_requested as i64
                            ])
                            .map_err(err)?;
                    }
                    Write::Attempt(a) => {
                        let gpu_ids = serde_json::to_string(&a.gpu_ids).expect("gpu ids serialise");
                        attempt_stmt
                            .execute(params![
                                a.id.0 as i64,
                                a.task_id.0 as i64,
                                a.worker_id.0,
                                a.state.as_str(),
                                a.resources.cpu_millis as i64,
                                a.resources.memory_bytes as i64,
                                a.resources.storage_bytes as i64,
                                a.resources.gpus as i64,
                                gpu_ids,
                                a.created_ms,
                                a.started_ms,
                                a.ended_ms,
                                a.exit_code,
                                a.reason
                            ])
                            .map_err(err)?;
                    }
                    Write::Worker(w) => {
                        let drivers = serde_json::to_string(&w.drivers).expect("drivers serialise");
                        let gpus = serde_json::to_string(&w.gpus).expect("gpus serialise");
                        let labels = serde_json::to_string(&w.labels).expect("labels serialise");
                        worker_stmt
                            .execute(params![
                                w.id.0,
                                w.name,
                                w.state.as_str(),
                                w.total.cpu_millis as i64,
                                w.total.memory_bytes as i64,
                                w.total.storage_bytes as i64,
                                w.total.gpus as i64,
                                drivers,
                                gpus,
                                w.last_seen_ms,
                                labels,
                                w.drained as i64
                            ])
                            .map_err(err)?;
                    }
                    Write::RemoveWorker(id) => {
                        tx.execute("DELETE FROM workers WHERE id = ?1", [&id.0])
                            .map_err(err)?;
                    }
                    Write::Register(name) => {
                        tx.execute(
                            "INSERT OR IGNORE INTO registrations (name) VALUES (?1)",
                            [name],
                        )
                        .map_err(err)?;
                    }
                    Write::Unregister(name) => {
                        tx.execute("DELETE FROM registrations WHERE name = ?1", [name])
                            .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        let err = |source| StoreError::Commit { count: 0, source };
        // A real page write, so a full disk or a failing one shows.
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?1)",
                [format!("{:?}", std::time::SystemTime::now())],
            )
            .map_err(err)?;
        Ok(())
    }
}
