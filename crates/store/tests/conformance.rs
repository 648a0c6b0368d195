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

// ---- PostgreSQL: one throwaway server, a fresh database per store ----

use berth_store::testing::{PASSWORD, PgServer};
use berth_store::{PostgresStore, PostgresUrl, StoreFault};

fn pg_url(server: &PgServer) -> PostgresUrl {
    server.fresh_database().parse().unwrap()
}

#[test]
fn postgres_store_conforms() {
    let server = PgServer::shared();
    conformance::run_all(|| PostgresStore::open(&pg_url(server)).unwrap());
}

#[test]
fn postgres_survives_reopen_and_keeps_schema_version() {
    let url = pg_url(PgServer::shared());
    {
        let mut s = PostgresStore::open(&url).unwrap();
        s.commit(&[Write::Task(conformance::sample_task(7))])
            .unwrap();
    }
    let mut s = PostgresStore::open(&url).unwrap();
    assert_eq!(s.schema_version().unwrap(), 1);
    assert_eq!(s.load().unwrap().tasks, vec![conformance::sample_task(7)]);
}

#[test]
fn postgres_refuses_a_newer_schema() {
    let server = PgServer::shared();
    let url = server.fresh_database();
    drop(PostgresStore::open(&url.parse().unwrap()).unwrap());
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    server.sql(db, "UPDATE schema_version SET version = 99");
    let err = PostgresStore::open(&url.parse().unwrap())
        .err()
        .expect("must refuse");
    let text = err.to_string();
    assert!(text.contains("newer") && !text.contains(PASSWORD), "{text}");
}

#[test]
fn postgres_unreachable_at_open_names_the_server_not_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url: PostgresUrl = format!("postgres://berth:{PASSWORD}@127.0.0.1:{port}/x")
        .parse()
        .unwrap();
    let err = PostgresStore::open(&url).err().expect("nothing listens");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && !text.contains(PASSWORD),
        "{text}"
    );
    assert_eq!(err.fault(), StoreFault::Io, "{text}");
}

/// The server stops: writes fail as `Io` (not fatal), `load` still answers
/// what was committed, and once the server is back the same store writes
/// again without being reopened.
#[test]
fn postgres_server_restart_is_survived() {
    let server = PgServer::start();
    let url: PostgresUrl = server.fresh_database().parse().unwrap();
    let mut s = PostgresStore::open(&url).unwrap();
    s.load().unwrap();
    s.commit(&[Write::Task(conformance::sample_task(1))])
        .unwrap();
    server.stop();
    let err = s
        .commit(&[Write::Task(conformance::sample_task(2))])
        .unwrap_err();
    assert_eq!(err.fault(), StoreFault::Io, "{err}");
    assert!(!err.fault().is_fatal());
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert_eq!(s.probe().unwrap_err().fault(), StoreFault::Io);
    assert!(s.live_attempts().is_err());
    assert_eq!(
        s.load().unwrap().tasks,
        vec![conformance::sample_task(1)],
        "load answers what was committed while the server is away"
    );
    server.start_again();
    s.probe().unwrap();
    s.commit(&[Write::Task(conformance::sample_task(3))])
        .unwrap();
    let ids: Vec<u64> = s.load().unwrap().tasks.iter().map(|t| t.id.0).collect();
    assert_eq!(ids, vec![1, 3]);
}
