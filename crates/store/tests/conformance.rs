//! Every store backend passes the same suite.

use berth_store::{MemStore, SqliteStore, Store, Write, conformance};

#[test]
fn mem_store_conforms() {
    conformance::run_all(MemStore::new);
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    conformance::run_all(|| {
        n.set(n.get() + 1);
        SqliteStore::open(&dir.path().join(format!("s{}.db", n.get()))).unwrap()
    });
}

#[test]
fn sqlite_survives_reopen_and_keeps_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        s.commit(&[Write::Task(conformance::sample_task(7))])
            .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version(), 4);
    assert_eq!(s.load().unwrap().tasks, vec![conformance::sample_task(7)]);
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).err().expect("must refuse");
    assert!(err.to_string().contains("newer"), "{err}");
}
