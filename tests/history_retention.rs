//! Retention of the import history (design §6, `retention_days`; review s18 longrun F1: the
//! history grew for good): `trim_history` removes records that finished before the cut-off and
//! file-ledger entries written before it, but keeps the tenant's newest record, a held run
//! still waiting for approval, and a run a claim stamp names.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use chrono::{Duration, Utc};
use roster::config::{MatchBy, OnMissing};
use roster::import::ImportStatus;
use sync_files::{file, go, open, tenant, users};

#[test]
fn old_records_go_but_the_newest_a_held_one_and_a_claimed_one_stay() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let applied = go(&store, &t, &file(&users(100))).record;
    let duplicate = go(&store, &t, &file(&users(100))).record;
    assert_eq!(duplicate.status, ImportStatus::Duplicate);
    let held = go(&store, &t, &file(&users(50))).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    // A run an intake claim stamps, and then the newest record.
    let mut claimed = applied.clone();
    claimed.id = store.new_import_id(Utc::now()).unwrap();
    store
        .record_claimed(&claimed, "claim-1", None, None)
        .unwrap();
    let mut newest = applied.clone();
    newest.id = store.new_import_id(Utc::now()).unwrap();
    store.record_import(&newest).unwrap();
    assert_eq!(store.history("t1", 100).unwrap().len(), 5);
    assert!(store.ledger_get("t1", "users.csv").unwrap().is_some());

    // A cut-off before every run removes nothing.
    let yesterday = Utc::now() - Duration::days(1);
    assert_eq!(store.trim_history("t1", yesterday).unwrap(), 0);
    assert_eq!(store.history("t1", 100).unwrap().len(), 5);

    // A cut-off after every run removes the applied and the duplicate run only.
    let tomorrow = Utc::now() + Duration::days(1);
    assert_eq!(store.trim_history("t1", tomorrow).unwrap(), 2);
    let left: Vec<String> = store
        .history("t1", 100)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        left,
        vec![newest.id.clone(), claimed.id.clone(), held.id.clone()]
    );
    assert!(store.import_record("t1", &applied.id).unwrap().is_none());
    assert!(store.ledger_get("t1", "users.csv").unwrap().is_none());
    // The held run can still be approved.
    let approved = roster::import::approve(&store, &t, &held.id)
        .unwrap()
        .record;
    assert_eq!(approved.status, ImportStatus::Success);

    // Once the claim is done and the plan applied, only the newest record stays.
    store.claim_done("t1", "claim-1").unwrap();
    assert_eq!(store.trim_history("t1", tomorrow).unwrap(), 2);
    let left = store.history("t1", 100).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, newest.id);
    // Another tenant's history is not touched.
    assert_eq!(store.trim_history("nobody", tomorrow).unwrap(), 0);
}

/// A page of the history reads from its offset (the console's pages, review s26: page 200
/// read the newest 10,051 records to show 50), and an id holding a NUL is simply not found.
#[test]
fn a_page_of_the_history_starts_at_its_offset() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    for n in [10, 11, 12, 13] {
        go(&store, &t, &file(&users(n)));
    }
    let all: Vec<String> = store
        .history("t1", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all.len(), 4);
    let page: Vec<String> = store
        .history_from("t1", 1, 2)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, all[1..3]);
    assert!(store.history_from("t1", 4, 2).unwrap().is_empty());
    assert!(store.import_record("t1", "x\0y").unwrap().is_none());
}
