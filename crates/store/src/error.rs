//! Store errors, named after the operation that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migrating the store schema to version {version}: {source}")]
    Migrate {
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the store at {at} has schema version {found}, newer than this berth knows ({known}); upgrade berth"
    )]
    TooNew {
        /// The file, or the PostgreSQL URL without its password.
        at: String,
        found: usize,
        known: usize,
    },
    #[error("loading records: {0}")]
    Load(#[source] rusqlite::Error),
    #[error("record {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("committing a batch of {count} writes: {source}")]
    Commit {
        count: usize,
        #[source]
        source: rusqlite::Error,
    },
    /// An operation on the PostgreSQL store failed. `target` is the URL
    /// without its password.
    #[error(
        "{op} (PostgreSQL store {target}): {}",
        crate::postgres::explain(source)
    )]
    Postgres {
        op: PgOp,
        target: String,
        #[source]
        source: postgres::Error,
    },
    /// A fault a test store was told to produce (`MemStore::fail_writes`).
    #[error("{}: {detail}", fault.describe())]
    Injected { fault: StoreFault, detail: String },
}

/// What the PostgreSQL store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgOp {
    Connect,
    Migrate {
        version: usize,
    },
    Load,
    Commit {
        count: usize,
    },
    Probe,
    /// Undoing a batch whose commit was cut off but did reach the server.
    Settle,
}

impl std::fmt::Display for PgOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgOp::Connect => write!(f, "connecting"),
            PgOp::Migrate { version } => write!(f, "migrating the schema to version {version}"),
            PgOp::Load => write!(f, "loading records"),
            PgOp::Commit { count } => write!(f, "committing a batch of {count} writes"),
            PgOp::Probe => write!(f, "probing writes"),
            PgOp::Settle => write!(f, "undoing a batch whose commit was cut off"),
        }
    }
}

/// Why a store refused a write, in the words an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The disk (or its quota) is full.
    Full,
    /// Another process holds the database, or a lock timed out.
    Busy,
    /// The disk reported an I/O error, or the file became read-only; or
    /// the database server cannot be reached (it comes back by itself).
    Io,
    /// The file is not a valid database any more: nothing may be trusted.
    Corrupt,
    /// Anything else (a bug, a constraint): not expected to pass by itself.
    Other,
}

impl StoreFault {
    /// A fault the master cannot serve through: the process must exit so
    /// that its supervisor (or an operator) restarts it from the records.
    pub fn is_fatal(self) -> bool {
        self == StoreFault::Corrupt
    }

    /// The start of the message callers see.
    pub fn describe(self) -> &'static str {
        match self {
            StoreFault::Full => "the master's disk is full",
            StoreFault::Busy => "the master's database is busy",
            StoreFault::Io => "the master's store is unreachable or reported an I/O error",
            StoreFault::Corrupt => "the master's database is corrupt",
            StoreFault::Other => "the master could not record the change",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreFault::Full => "full",
            StoreFault::Busy => "busy",
            StoreFault::Io => "io",
            StoreFault::Corrupt => "corrupt",
            StoreFault::Other => "other",
        }
    }
}

fn sqlite_fault(e: &rusqlite::Error) -> StoreFault {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => StoreFault::Full,
        Some(C::DatabaseBusy | C::DatabaseLocked) => StoreFault::Busy,
        Some(C::SystemIoFailure | C::ReadOnly | C::CannotOpen) => StoreFault::Io,
        Some(C::DatabaseCorrupt | C::NotADatabase) => StoreFault::Corrupt,
        _ => StoreFault::Other,
    }
}

impl StoreError {
    /// What kind of fault this is. SQLite errors at open, migration and
    /// load are all fatal: the master cannot start (or go on) without its
    /// records. PostgreSQL errors are classified by their SQLSTATE (see
    /// `postgres::fault`); a server that cannot be reached is `Io`.
    pub fn fault(&self) -> StoreFault {
        match self {
            StoreError::Commit { source, .. } => sqlite_fault(source),
            StoreError::Injected { fault, .. } => *fault,
            // Classified by SQLSTATE, whatever the operation: a server that
            // went away is not corrupt, and the master keeps serving.
            StoreError::Postgres { source, .. } => crate::postgres::fault(source),
            StoreError::Open { .. }
            | StoreError::Migrate { .. }
            | StoreError::TooNew { .. }
            | StoreError::Load(_)
            | StoreError::Corrupt { .. } => StoreFault::Corrupt,
        }
    }
}
