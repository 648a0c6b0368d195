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
        "the store at {path} has schema version {found}, newer than this berth knows ({known}); upgrade berth"
    )]
    TooNew {
        path: PathBuf,
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
}
