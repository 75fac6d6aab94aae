//! [`write_commit_parts`] against a real PostgreSQL (the directory's commit calls it; these
//! tests call it in a transaction of their own) and read back through [`RunLog`].

use super::*;
use crate::model::ImportStatus;
use crate::store::{LedgerState, Store};
use chrono::TimeZone;

use super::super::test_postgres;

fn open(pg: &test_postgres::TestPostgres) -> PostgresStore {
    let url = pg.create_database("hr");
    let target = super::super::parse_url(&url).unwrap();
    PostgresStore::open(&target, "node-a").unwrap()
}

/// Runs `write_commit_parts` for `c` in one transaction and commits it.
fn write(store: &PostgresStore, c: Commit) -> Result<()> {
    store.db.run(move |pool| async move {
        let mut client = Connections::client(&pool).await?;
        let tx = client.transaction().await?;
        write_commit_parts(&tx, &c).await?;
        tx.commit().await?;
        Ok(())
    })
}

fn record(id: &str) -> ImportRecord {
    let t = Utc.timestamp_micros(1_790_000_000_123_456).unwrap();
    let mut r = ImportRecord::begun(id.into(), "acme", "users.csv", ImportStatus::Held, t, t);
    r.messages = vec!["b".into(), "a".into()];
    r.counts.deactivated = 40;
    r
}

fn ledger(import_id: Option<&str>, state: LedgerState) -> LedgerEntry {
    LedgerEntry {
        tenant: "acme".into(),
        file: "users.csv".into(),
        sha256: "cafe".into(),
        state,
        import_id: import_id.map(str::to_string),
        updated_at: Utc.timestamp_micros(1_790_000_000_000_007).unwrap(),
    }
}

#[test]
fn a_commit_writes_record_ledger_stamp_and_plan_and_approve_removes_the_plan() {
    let pg = test_postgres::TestPostgres::start();
    let store = open(&pg);
    store.claim_running("acme", "users.csv", "c-1").unwrap();
    store.claim_running("acme", "other.csv", "c-2").unwrap();
    let held = record("i-1");
    write(
        &store,
        Commit {
            tenant: "acme".into(),
            record: Some(held.clone()),
            ledger: Some(ledger(Some("i-1"), LedgerState::Done)),
            put_plan: Some(("i-1".into(), vec![1, 2, 3])),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(store.import_record("acme", "i-1").unwrap(), Some(held));
    assert_eq!(
        store.ledger_get("acme", "users.csv").unwrap(),
        Some(ledger(Some("i-1"), LedgerState::Done))
    );
    assert_eq!(
        store.claim_committed("acme", "c-1").unwrap().as_deref(),
        Some("i-1")
    );
    assert_eq!(store.claim_committed("acme", "c-2").unwrap(), None);
    assert_eq!(
        pg.psql("hr", "SELECT string_agg(claim, ',') FROM roster.claims"),
        "c-2",
        "the stamped claim no longer runs; the other one does"
    );
    assert_eq!(store.held_plans("acme").unwrap(), vec!["i-1"]);
    assert_eq!(
        &store.held_plan("acme", "i-1").unwrap().unwrap()[..],
        &[1, 2, 3]
    );

    // An approve: a new record, a ledger entry, the plan removed, and no claim stamped.
    store.claim_running("acme", "users.csv", "c-3").unwrap();
    let mut approved = record("i-2");
    approved.status = ImportStatus::Success;
    write(
        &store,
        Commit {
            tenant: "acme".into(),
            record: Some(approved.clone()),
            ledger: Some(ledger(Some("i-2"), LedgerState::Done)),
            remove_plan: Some("i-1".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(store.held_plans("acme").unwrap().is_empty());
    assert_eq!(store.claim_committed("acme", "c-3").unwrap(), None);
    assert_eq!(
        store.history("acme", 10).unwrap(),
        vec![approved, record("i-1")]
    );
}

#[test]
fn a_ledger_entry_without_an_import_id_stamps_nothing_and_a_failed_write_leaves_nothing() {
    let pg = test_postgres::TestPostgres::start();
    let store = open(&pg);
    store.claim_running("acme", "users.csv", "c-1").unwrap();
    write(
        &store,
        Commit {
            tenant: "acme".into(),
            ledger: Some(ledger(None, LedgerState::Failed)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(store.claim_committed("acme", "c-1").unwrap(), None);
    assert_eq!(
        store
            .ledger_get("acme", "users.csv")
            .unwrap()
            .map(|l| l.state),
        Some(LedgerState::Failed)
    );
    // A count PostgreSQL cannot hold fails the write before anything is committed.
    let mut huge = record("i-9");
    huge.bytes = u64::MAX;
    let e = write(
        &store,
        Commit {
            tenant: "acme".into(),
            record: Some(huge),
            put_plan: Some(("i-9".into(), vec![9])),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(format!("{e}").contains("too large"), "{e}");
    assert!(store.held_plans("acme").unwrap().is_empty());
    // The store behind a Store handle answers the same.
    let handle = Store::new(store);
    assert!(handle.import_record("acme", "i-9").unwrap().is_none());
}
