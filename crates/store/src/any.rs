//! Choosing a backend at run time: [`StoreConfig`] (what `--store` says)
//! and [`AnyStore`], the store the master opens from it.

use crate::{PostgresStore, PostgresUrl, Snapshot, SqliteStore, Store, StoreError, Write};
use berth_core::AttemptRecord;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Where the master keeps its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// The SQLite file `DATA_DIR/berth.db` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl FromStr for StoreConfig {
    type Err = String;

    /// `sqlite`, or a `postgres://` / `postgresql://` URL. Errors never
    /// contain a password.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("sqlite") {
            return Ok(StoreConfig::Sqlite);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return s.parse().map(StoreConfig::Postgres);
        }
        Err(
            "expected `sqlite` (the file DATA_DIR/berth.db) or a PostgreSQL URL postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                .into(),
        )
    }
}

/// `sqlite`, or the URL without its password.
impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite => f.write_str("sqlite"),
            StoreConfig::Postgres(url) => url.fmt(f),
        }
    }
}

/// The store chosen by a [`StoreConfig`].
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

impl AnyStore {
    /// Open the configured store; the SQLite file lives at `sqlite_path`.
    /// PostgreSQL is reached with a blocking client: call this from a plain
    /// thread (or `spawn_blocking`), not from async code.
    pub fn open(config: &StoreConfig, sqlite_path: &Path) -> Result<AnyStore, StoreError> {
        Ok(match config {
            StoreConfig::Sqlite => AnyStore::Sqlite(SqliteStore::open(sqlite_path)?),
            StoreConfig::Postgres(url) => AnyStore::Postgres(Box::new(PostgresStore::open(url)?)),
        })
    }
}

impl Store for AnyStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.load(),
            AnyStore::Postgres(s) => s.load(),
        }
    }
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.commit(writes),
            AnyStore::Postgres(s) => s.commit(writes),
        }
    }
    fn live_attempts(&mut self) -> Result<Vec<AttemptRecord>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.live_attempts(),
            AnyStore::Postgres(s) => s.live_attempts(),
        }
    }
    fn probe(&mut self) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.probe(),
            AnyStore::Postgres(s) => s.probe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_settings_parse_and_show_no_password() {
        assert_eq!("sqlite".parse::<StoreConfig>(), Ok(StoreConfig::Sqlite));
        let c: StoreConfig = "postgres://b:pa55@db:5432/r".parse().unwrap();
        assert_eq!(c.to_string(), "postgres://b:***@db:5432/r");
        assert!(!format!("{c:?}").contains("pa55"));
        let e = "/var/lib/berth.db".parse::<StoreConfig>().unwrap_err();
        assert!(e.contains("sqlite") && e.contains("postgres://"), "{e}");
    }
}
