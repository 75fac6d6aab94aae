//! A soft-deleted user owns no email (design.md §5.2): a leaver deleted under one key and
//! rehired under a new one with the same address is imported, and the old user cannot be
//! restored over the new one's address. Found by the review of 2026-11-30: the rehire was
//! skipped on every run, for ever. The review of the sixteenth session added the other ways a
//! user comes back: by a row that leaves its email empty (it must not take back an address a
//! rehire has now), under `activate = "with_password"` without a password (inactive, as it left),
//! and a person re-keyed in one file under `on_missing = "delete"` (the new key gets the address
//! the run frees).
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use roster::config::{Activate, MatchBy, OnMissing, Tenant};
use roster::import::{restore, run_bytes, ImportStatus, RunOptions};
use roster::model::UserStatus;

fn file(rows: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email\n");
    for (code, email) in rows {
        s.push_str(&format!("{code};F{code};L{code};{email}\n"));
    }
    s.into_bytes()
}

/// The columns of [`file`].
const COLUMNS: [(&str, &str); 4] = [
    ("mapping_code", "Code"),
    ("first_name", "First"),
    ("last_name", "Last"),
    ("email", "Email"),
];

#[test]
fn a_rehire_under_a_new_key_takes_the_email_of_a_deleted_user() {
    let (store, _d) = test_store::temp_store();
    let columns = COLUMNS;
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
    let refused = restore(&*store, &t, "E1").unwrap_err().to_string();
    assert!(refused.contains("belongs to user \"E99\""), "{refused}");
    assert_eq!(
        store.user("t1", "E1").unwrap().unwrap().status,
        UserStatus::Deleted
    );
    // An address nobody else has: restored as before.
    go(&[("E99", "u1@x.example")]);
    assert_eq!(
        restore(&*store, &t, "E2").unwrap().status,
        UserStatus::Active
    );
}

fn deleting_tenant() -> Tenant {
    let columns = COLUMNS;
    Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns)
}

#[test]
fn a_returning_user_without_an_email_cell_does_not_take_back_a_rehires_address() {
    let (store, _d) = test_store::temp_store();
    let t = deleting_tenant();
    let go = |rows: &[(&str, &str)]| {
        run_bytes(&store, &t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&[("E1", "u1@x.example"), ("E2", "u2@x.example")]);
    go(&[("E2", "u2@x.example")]); // E1 deleted
    go(&[("E2", "u2@x.example"), ("E3", "u1@x.example")]); // rehired as E3
                                                           // E1 comes back with its email cell empty: it would keep u1@, which E3 has now.
    let o = go(&[("E1", ""), ("E2", "u2@x.example"), ("E3", "u1@x.example")]);
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("which row 4 has now"), "{messages}");
    let e1 = store.user("t1", "E1").unwrap().unwrap();
    assert_eq!(e1.status, UserStatus::Deleted);
    // Under `deactivate`, E3 left out of the file keeps u1@ (only deactivated): still refused.
    let mut keeps = deleting_tenant();
    keeps.import.on_missing = OnMissing::Deactivate;
    let o = run_bytes(
        &store,
        &keeps,
        "u.csv",
        &file(&[("E1", ""), ("E2", "u2@x.example")]),
        &RunOptions::default(),
    )
    .expect("run");
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("which user \"E3\" has now"), "{messages}");
    assert_eq!(
        store.user("t1", "E1").unwrap().unwrap().status,
        UserStatus::Deleted
    );
    // Given an address of its own, E1 comes back (and E3, deactivated as missing, with it).
    let o = go(&[
        ("E1", "new1@x.example"),
        ("E2", "u2@x.example"),
        ("E3", "u1@x.example"),
    ]);
    assert_eq!(o.record.counts.restored, 2, "{:?}", o.record.messages);
    assert_eq!(
        store.user("t1", "E1").unwrap().unwrap().status,
        UserStatus::Active
    );
}

#[test]
fn a_user_without_a_password_comes_back_inactive_under_with_password() {
    let (store, _d) = test_store::temp_store();
    let mut t = deleting_tenant();
    t.import.activate = Activate::WithPassword;
    let go = |rows: &[(&str, &str)]| {
        run_bytes(&store, &t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&[("E1", "u1@x.example"), ("E2", "u2@x.example")]);
    assert_eq!(
        store.user("t1", "E2").unwrap().unwrap().status,
        UserStatus::Inactive
    );
    go(&[("E1", "u1@x.example")]); // E2 deleted
    let o = go(&[("E1", "u1@x.example"), ("E2", "u2@x.example")]);
    assert_eq!(o.record.counts.restored, 1, "{:?}", o.record.messages);
    assert_eq!(
        store.user("t1", "E2").unwrap().unwrap().status,
        UserStatus::Inactive
    );
    // An operator's restore does the same.
    go(&[("E1", "u1@x.example")]);
    assert_eq!(
        restore(&*store, &t, "E2").unwrap().status,
        UserStatus::Inactive
    );
}

#[test]
fn a_person_re_keyed_in_one_file_keeps_the_address_the_run_frees() {
    let (store, _d) = test_store::temp_store();
    let t = deleting_tenant();
    let go = |t: &Tenant, rows: &[(&str, &str)]| {
        run_bytes(&store, t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&t, &[("E1", "a@x.example"), ("E2", "b@x.example")]);
    // HR gave the person a new code: E1 leaves (deleted by this run), E9 has its address.
    let o = go(&t, &[("E9", "a@x.example"), ("E2", "b@x.example")]);
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!((o.record.counts.inserted, o.record.counts.deleted), (1, 1));
    let e9 = store.user("t1", "E9").unwrap().unwrap();
    assert_eq!(e9.email.as_deref(), Some("a@x.example"));
    // Deactivated instead, E1 keeps the address: the row is skipped, and the reason says what
    // to do.
    let mut keeps = deleting_tenant();
    keeps.import.on_missing = OnMissing::Deactivate;
    go(&keeps, &[("E2", "b@x.example"), ("E5", "e@x.example")]);
    let o = go(&keeps, &[("E2", "b@x.example"), ("E6", "e@x.example")]);
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("who is not in this file"), "{messages}");
    assert!(store.user("t1", "E6").unwrap().is_none());
}

/// Two deleted users that kept one address (a rehire deleted in turn), both brought back with
/// empty email cells: neither takes the address (re-read of review s16).
#[test]
fn two_returning_users_sharing_a_kept_email_both_wait() {
    let (store, _d) = test_store::temp_store();
    let t = deleting_tenant();
    let go = |rows: &[(&str, &str)]| {
        run_bytes(&store, &t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&[("E1", "a@x.example"), ("E2", "b@x.example")]);
    go(&[("E2", "b@x.example")]); // E1 deleted
    go(&[("E2", "b@x.example"), ("E3", "a@x.example")]); // rehired as E3
    go(&[("E2", "b@x.example")]); // E3 deleted too
    let o = go(&[("E1", ""), ("E2", "b@x.example"), ("E3", "")]);
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("coming back too"), "{messages}");
    for key in ["E1", "E3"] {
        assert_eq!(
            store.user("t1", key).unwrap().unwrap().status,
            UserStatus::Deleted,
            "{key}"
        );
    }
}

/// Review s21 (D2): under `on_missing = "keep"`, a file without an email column (and without a
/// status column) that brings back a soft-deleted user keeps its stored email, which a rehire
/// now has. The survey that finds that did not run then, and two active users ended with one
/// address; now the row is skipped, saying who has the address, as under `delete`.
#[test]
fn a_file_without_emails_does_not_bring_back_an_address_a_rehire_has_under_keep() {
    let (store, _d) = test_store::temp_store();
    let columns = COLUMNS;
    let delete = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns);
    let go = |t: &Tenant, bytes: Vec<u8>| {
        run_bytes(&store, t, "u.csv", &bytes, &RunOptions::default()).expect("run")
    };
    go(
        &delete,
        file(&[("E1", "a@x.example"), ("E2", "b@x.example")]),
    );
    assert_eq!(
        go(&delete, file(&[("E2", "b@x.example")]))
            .record
            .counts
            .deleted,
        1
    );
    let rehired = go(
        &delete,
        file(&[("E2", "b@x.example"), ("E3", "a@x.example")]),
    );
    assert_eq!(
        rehired.record.counts.inserted, 1,
        "{:?}",
        rehired.record.messages
    );
    // The operator switches to `keep`; the next file has no email column and lists E1 again.
    let keep = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Keep, &columns[..3]);
    let o = go(&keep, b"Code;First;Last\nE1;F;L\nE2;F;L\nE3;F;L\n".to_vec());
    assert_eq!(o.record.counts.restored, 0, "{:?}", o.record.messages);
    assert_eq!(o.record.counts.skipped, 1, "{:?}", o.record.messages);
    assert!(
        o.record.messages.iter().any(|m| m.contains("\"E3\"")),
        "{:?}",
        o.record.messages
    );
    let e1 = store.user("t1", "E1").unwrap().expect("E1");
    assert_eq!(e1.status, UserStatus::Deleted);
    let holders: Vec<_> = store
        .users("t1", None)
        .unwrap()
        .into_iter()
        .filter(|u| u.status == UserStatus::Active && u.email.as_deref() == Some("a@x.example"))
        .map(|u| u.key)
        .collect();
    assert_eq!(holders, vec!["E3".to_string()]);
}

/// Review s21: a mapping code is exact; `restore AB1` looked for `ab1` too and brought back
/// another user. An email is found whatever its case.
#[test]
fn restore_finds_a_mapping_code_exactly_and_an_email_in_any_case() {
    let (store, _d) = test_store::temp_store();
    let columns = COLUMNS;
    let t = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns);
    let go = |rows: &[(&str, &str)]| {
        run_bytes(&store, &t, "u.csv", &file(rows), &RunOptions::default()).expect("run")
    };
    go(&[("ab1", "a@x.example"), ("E2", "b@x.example")]);
    assert_eq!(go(&[("E2", "b@x.example")]).record.counts.deleted, 1);
    let refused = restore(&*store, &t, "AB1").unwrap_err().to_string();
    assert!(refused.contains("no user"), "{refused}");
    let ab1 = store.user("t1", "ab1").unwrap().unwrap();
    assert_eq!(ab1.status, UserStatus::Deleted);
    assert_eq!(
        restore(&*store, &t, "ab1").unwrap().status,
        UserStatus::Active
    );

    let by_email = Tenant::for_import("t2", MatchBy::Email, OnMissing::Delete, &columns[1..]);
    let email_file = b"First;Last;Email\nA;B;ann@x.example\nC;D;bob@x.example\n".to_vec();
    run_bytes(
        &store,
        &by_email,
        "u.csv",
        &email_file,
        &RunOptions::default(),
    )
    .unwrap();
    let only_bob = b"First;Last;Email\nC;D;bob@x.example\n".to_vec();
    run_bytes(
        &store,
        &by_email,
        "u.csv",
        &only_bob,
        &RunOptions::default(),
    )
    .unwrap();
    let ann = restore(&*store, &by_email, " Ann@X.example ").unwrap();
    assert_eq!(
        (ann.key.as_str(), ann.status),
        ("ann@x.example", UserStatus::Active)
    );
}

/// Review s26: under `activate = "with_password"` a password activated any inactive user, so a
/// leaver a status column switched off came back active the night that column went missing
/// from the export (or its cell was left blank), as every row carries a password.
#[test]
fn a_password_does_not_overrule_a_status_column() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Status"),
        ("password", "Password"),
    ];
    let mut t = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Keep, &columns);
    t.import.activate = Activate::WithPassword;
    let go = |text: &str| {
        let o = run_bytes(&store, &t, "u.csv", text.as_bytes(), &RunOptions::default());
        o.expect("run").record
    };
    go("Code;First;Last;Status;Password\nE1;A;B;1;pw-one\nE2;C;D;0;pw-two\n");
    let status = |k: &str| store.user("t1", k).unwrap().expect("user").status;
    assert_eq!(
        (status("E1"), status("E2")),
        (UserStatus::Active, UserStatus::Inactive)
    );
    // The Status column was renamed: the run is partial, and E2 stays inactive.
    go("Code;First;Last;State;Password\nE1;A;B;1;pw-one\nE2;C;D;0;pw-2b\n");
    assert_eq!(status("E2"), UserStatus::Inactive);
    // Its cell left blank: the same.
    go("Code;First;Last;Status;Password\nE1;A;B;1;pw-one\nE2;C;D;;pw-2c\n");
    assert_eq!(status("E2"), UserStatus::Inactive);
}

/// Without a status column a password still activates a user kept inactive for want of one.
#[test]
fn a_password_activates_a_user_waiting_for_one() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("password", "Password"),
    ];
    let mut t = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Keep, &columns);
    t.import.activate = Activate::WithPassword;
    let go = |text: &str| {
        let o = run_bytes(&store, &t, "u.csv", text.as_bytes(), &RunOptions::default());
        o.expect("run").record
    };
    go("Code;First;Last;Password\nE1;A;B;\n");
    let status = || store.user("t1", "E1").unwrap().expect("user").status;
    assert_eq!(status(), UserStatus::Inactive);
    go("Code;First;Last;Password\nE1;A;B;secret-1\n");
    assert_eq!(status(), UserStatus::Active);
}
