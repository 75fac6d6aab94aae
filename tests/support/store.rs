//! The store a test runs against: sled in a temp folder by default, PostgreSQL (a throwaway
//! cluster of `postgres.rs` and a fresh database) when `ROSTER_TEST_STORE=postgres`. So one
//! suite checks both backends: `cargo test --test import_sync` and
//! `ROSTER_TEST_STORE=postgres cargo test --test import_sync`.
//!
//! Include it with `#[path = "support/store.rs"] mod test_store;` (it brings `postgres.rs`
//! along). [`open_store`] returns the [`Store`] and a [`StoreGuard`] that keeps the cluster
//! running; keep the guard alive as long as the store.

#![allow(dead_code)]

#[path = "postgres.rs"]
pub mod test_postgres;

use roster::store::Store;
use std::path::{Path, PathBuf};
use test_postgres::TestPostgres;

/// The environment variable that picks the backend; `postgres` picks PostgreSQL.
pub const STORE_VAR: &str = "ROSTER_TEST_STORE";

/// The node id the tests' PostgreSQL store runs as.
pub const NODE_ID: &str = "test-node";

/// Keeps what the store needs alive (the PostgreSQL cluster, stopped on drop).
pub struct StoreGuard {
    pub postgres: Option<TestPostgres>,
    /// The sled store's folder (unused with PostgreSQL).
    sled_dir: PathBuf,
}

/// The database [`open_store`] creates in the cluster.
pub const DATABASE: &str = "roster";

impl StoreGuard {
    /// Everything the store keeps, as byte strings to search (e.g. for a plaintext password):
    /// every file under the sled folder, or every stored record, staged row, held plan, history
    /// record and queued message of the PostgreSQL database.
    pub fn stored_bytes(&self) -> Vec<Vec<u8>> {
        let Some(pg) = &self.postgres else {
            return files_under(&self.sled_dir);
        };
        let hex = pg.psql(
            DATABASE,
            "SELECT encode(record, 'hex') FROM roster.user_rows \
             UNION ALL SELECT encode(record, 'hex') FROM roster.staged_rows WHERE record IS NOT NULL \
             UNION ALL SELECT encode(plan, 'hex') FROM roster.held_plans \
             UNION ALL SELECT encode(message, 'hex') FROM roster.outbox \
             UNION ALL SELECT encode(convert_to(row_to_json(i)::text, 'UTF8'), 'hex') \
                       FROM roster.import_records i",
        );
        hex.lines()
            .map(|l| hex::decode(l.trim()).expect("psql prints hex"))
            .collect()
    }
}

/// A store in a temp folder, with what keeps it alive (drop it after the store).
pub struct TempStore {
    pub guard: StoreGuard,
    pub dir: tempfile::TempDir,
}

impl TempStore {
    /// The temp folder (the sled store's, and free for the test's own files).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// [`open_store`] in a fresh temp folder.
pub fn temp_store() -> (Store, TempStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, guard) = open_store(dir.path());
    (store, TempStore { guard, dir })
}

fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push(bytes);
        }
    }
    out
}

/// True when the tests run against PostgreSQL.
pub fn postgres_selected() -> bool {
    std::env::var(STORE_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// The store for a test: sled in `dir`, or PostgreSQL (then `dir` is not used by the store).
pub fn open_store(dir: &Path) -> (Store, StoreGuard) {
    if !postgres_selected() {
        let store = Store::open(dir).expect("the sled store opens");
        let guard = StoreGuard {
            postgres: None,
            sled_dir: dir.to_path_buf(),
        };
        return (store, guard);
    }
    let pg = TestPostgres::start();
    let store = open_postgres(&pg.create_database(DATABASE));
    let guard = StoreGuard {
        postgres: Some(pg),
        sled_dir: dir.to_path_buf(),
    };
    (store, guard)
}

/// A PostgreSQL store on the database at `url` (migrated on open), as node [`NODE_ID`].
pub fn open_postgres(url: &str) -> Store {
    open_postgres_as(url, NODE_ID)
}

/// A PostgreSQL store on the database at `url`, as node `node_id`.
pub fn open_postgres_as(url: &str, node_id: &str) -> Store {
    let target = roster::store::postgres::parse_url(url).unwrap_or_else(|e| panic!("{e:#}"));
    Store::open_postgres(&target, node_id).unwrap_or_else(|e| panic!("{e:#}"))
}
