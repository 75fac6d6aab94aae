//! `roster migrate-store` copies the change log, the event log, their counters and the delivery
//! cursors: the real binary copies a sled store with real imports into PostgreSQL, and the
//! copy reads back the same entries and goes on numbering where sled stopped.

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod test_postgres;

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{run_bytes, RunOptions};
use roster::model::changelog::Cursor;
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{ChangeLog, Store};
use test_postgres::TestPostgres;

fn tenant() -> Tenant {
    Tenant::for_import(
        "acme",
        MatchBy::MappingCode,
        OnMissing::Deactivate,
        &[
            ("mapping_code", "Code"),
            ("first_name", "First"),
            ("last_name", "Last"),
            ("email", "Email"),
            ("job_title", "Title"),
        ],
    )
}

fn file(n: u32, title: &str) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email;Title\n");
    for i in 0..n {
        s.push_str(&format!("C{i:04};F{i};L{i};u{i}@x.example;{title}\n"));
    }
    s.into_bytes()
}

#[test]
fn migrate_store_copies_the_logs_counters_and_cursors() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roster.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhost_keys = {:?}\ndata_dir = {:?}\n",
            dir.path().join("keys"),
            dir.path().join("data")
        ),
    )
    .unwrap();
    let t = tenant();
    let (changes, events) = {
        let sled = Store::open(&dir.path().join("data").join("store")).unwrap();
        let opts = RunOptions::default();
        let first = run_bytes(&sled, &t, "users.csv", &file(1100, "Clerk"), &opts).unwrap();
        assert_eq!(
            first.record.counts.inserted, 1100,
            "{:?}",
            first.record.messages
        );
        run_bytes(&sled, &t, "users.csv", &file(1000, "Lead"), &opts).unwrap();
        let cursor = Cursor {
            position: 3,
            last_error: Some("503 from the receiver".into()),
            attempts: 2,
            ..Cursor::default()
        };
        sled.save_cursor("acme", "webhook:https://hooks.example/x", &cursor)
            .unwrap();
        (
            sled.changes("acme", 0, 100_000).unwrap(),
            sled.events("acme", 0, 100_000).unwrap(),
        )
    };
    assert_eq!(changes.len(), 1100 + 1100);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("-c")
        .arg(&config)
        .args(["migrate-store", "--to", &url])
        .env_remove("ROSTER_STORE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2200 change(s)"), "{stdout}");

    let to = PostgresStore::open(&parse_url(&url).unwrap(), "test-node").unwrap();
    assert!(
        to.changes("acme", 0, 100_000).unwrap() == changes,
        "the changes are copied"
    );
    assert!(
        to.events("acme", 0, 100_000).unwrap() == events,
        "the events are copied"
    );
    let cursor = to
        .cursor("acme", "webhook:https://hooks.example/x")
        .unwrap();
    assert_eq!((cursor.position, cursor.attempts), (3, 2));
    // The next commit on PostgreSQL numbers on from where sled stopped.
    let pg_store = Store::new(to);
    run_bytes(
        &pg_store,
        &t,
        "users.csv",
        &file(1000, "Boss"),
        &RunOptions::default(),
    )
    .unwrap();
    let next = pg_store.changes("acme", 2200, 10).unwrap();
    assert_eq!(next.first().map(|c| c.seq), Some(2201));
    let ev = pg_store.events("acme", events.len() as u64, 10).unwrap();
    assert_eq!(ev.first().map(|e| e.seq), Some(events.len() as u64 + 1));
    assert_eq!(ev.first().and_then(|e| e.changes), Some((2201, 2700)));
}
