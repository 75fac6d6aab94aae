//! A soft-deleted user owns no email (design.md §5.2): a leaver deleted under one key and
//! rehired under a new one with the same address is imported, and the old user cannot be
//! restored over the new one's address. Found by the review of 2026-11-30: the rehire was
//! skipped on every run, for ever.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{restore, run_bytes, ImportStatus, RunOptions};
use roster::model::UserStatus;

fn file(rows: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email\n");
    for (code, email) in rows {
        s.push_str(&format!("{code};F{code};L{code};{email}\n"));
    }
    s.into_bytes()
}

#[test]
fn a_rehire_under_a_new_key_takes_the_email_of_a_deleted_user() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
    ];
    let t = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns);
    let go = |rows: &[(&str, &str)]| {
        run_bytes(&store, &t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&[("E1", "u1@x.example"), ("E2", "u2@x.example")]);
    // E1 leaves: soft-deleted.
    assert_eq!(go(&[("E2", "u2@x.example")]).record.counts.deleted, 1);
    // Rehired as E99 with the same address: imported, not skipped.
    let o = go(&[("E2", "u2@x.example"), ("E99", "u1@x.example")]);
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.inserted, 1);
    let e99 = store.user("t1", "E99").unwrap().expect("E99");
    assert_eq!(e99.email.as_deref(), Some("u1@x.example"));
    // The old E1 cannot come back over E99's address.
    let refused = restore(&*store, "t1", "E1").unwrap_err().to_string();
    assert!(refused.contains("belongs to user \"E99\""), "{refused}");
    assert_eq!(
        store.user("t1", "E1").unwrap().unwrap().status,
        UserStatus::Deleted
    );
    // An address nobody else has: restored as before.
    go(&[("E99", "u1@x.example")]);
    assert_eq!(
        restore(&*store, "t1", "E2").unwrap().status,
        UserStatus::Active
    );
}
