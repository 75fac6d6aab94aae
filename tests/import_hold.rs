//! The mass-change hold (design.md §5) on small generated files: a truncated file is held
//! and approve applies exactly it, approve refuses once the directory changed, a newer file
//! or held run sets an older held run aside, and a held run keeps no plaintext password.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use roster::config::{MatchBy, OnMissing};
use roster::import::{approve, preview_bytes, Change, ImportStatus};
use roster::model::UserStatus;
use sync_files::{file, go, open, tenant, users};

#[test]
fn truncated_file_is_held_and_approve_applies_exactly_it() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(100)));
    let before = store.users("t1", None).unwrap();
    let mut rows = users(60);
    rows[0].1 = "Chief";
    let held = go(&store, &t, &file(&rows)).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!(held.counts.deactivated, 40);
    assert_eq!(store.users("t1", None).unwrap(), before, "nothing changed");
    assert_eq!(store.held_plans("t1").unwrap(), vec![held.id.clone()]);
    // A preview of the same file shows the plan and still changes nothing.
    let p = preview_bytes(&store, &t, "users.csv", &file(&rows)).unwrap();
    assert_eq!(p.record.status, ImportStatus::Held);
    assert_eq!(p.record.counts.deactivated, 40);
    assert!(p.changes.iter().any(|c| matches!(c, Change::Update { key, changes }
        if key == "C000" && changes[0].old.as_deref() == Some("Engineer") && changes[0].new.as_deref() == Some("Chief"))));
    assert_eq!(store.users("t1", None).unwrap(), before);
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(applied.id, held.id);
    assert_eq!(applied.status, ImportStatus::Success);
    assert_eq!(
        (
            applied.counts.deactivated,
            applied.counts.updated,
            applied.counts.unchanged
        ),
        (40, 1, 59)
    );
    let active = store.users("t1", Some(UserStatus::Active)).unwrap();
    assert_eq!(active.len(), 60);
    assert_eq!(
        store.user("t1", "C000").unwrap().unwrap().fields["job_title"],
        "Chief"
    );
    assert_eq!(
        store.user("t1", "C099").unwrap().unwrap().status,
        UserStatus::Inactive
    );
    assert!(store.held_plans("t1").unwrap().is_empty());
    assert_eq!(
        store.import_record("t1", &held.id).unwrap().unwrap().status,
        ImportStatus::Success
    );
    assert!(
        approve(&store, &t, &held.id).is_err(),
        "a plan applies once"
    );
}

#[test]
fn approve_refuses_when_directory_changed() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(50)));
    let held = go(&store, &t, &file(&users(10))).record;
    assert_eq!(held.status, ImportStatus::Held);
    let plan = store.held_plan("t1", &held.id).unwrap().unwrap().to_vec();
    let mut rows = users(50);
    rows[1].1 = "Changed";
    go(&store, &t, &file(&rows));
    // That run set the plan aside; put back (as a plan from before that rule), it is refused
    // because the directory changed.
    let version = store.tenant_state("t1").unwrap().version;
    let put_back = roster::store::Commit {
        tenant: "t1".into(),
        expected_version: version,
        put_plan: Some((held.id.clone(), plan)),
        ..Default::default()
    };
    store.commit(&put_back).unwrap();
    let err = approve(&store, &t, &held.id).unwrap_err().to_string();
    assert!(
        err.contains("changed") && err.contains("set aside"),
        "{err}"
    );
    // It can never be approved, so it is no longer listed as waiting (review s19 verify).
    assert!(store.held_plans("t1").unwrap().is_empty());
    assert_eq!(
        store.users("t1", Some(UserStatus::Active)).unwrap().len(),
        50
    );
}

#[test]
fn a_newer_file_that_changes_nothing_still_sets_a_held_run_aside() {
    // Review s15 F3/F4: the whole list sent again after a held run (reordered: a success that
    // updates nobody; byte for byte: a duplicate) is newer word from the tenant than the held
    // removal, though the directory's version does not move.
    for same_bytes in [false, true] {
        let (store, _d) = open();
        let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
        let full = file(&users(50));
        go(&store, &t, &full);
        let held = go(&store, &t, &file(&users(10))).record;
        assert_eq!(held.status, ImportStatus::Held);
        let plan = store.held_plan("t1", &held.id).unwrap().unwrap().to_vec();
        let mut reordered = users(50);
        reordered.reverse();
        let again = if same_bytes {
            full.clone()
        } else {
            file(&reordered)
        };
        let newer = go(&store, &t, &again).record;
        let expected = [ImportStatus::Success, ImportStatus::Duplicate][usize::from(same_bytes)];
        assert_eq!(newer.status, expected, "{:?}", newer.messages);
        assert_eq!(newer.counts.updated, 0);
        assert!(
            newer
                .messages
                .iter()
                .any(|m| m.contains(&held.id) && m.contains("set aside")),
            "{:?}",
            newer.messages
        );
        assert!(
            store.held_plans("t1").unwrap().is_empty(),
            "the stale plan left the store"
        );
        assert!(approve(&store, &t, &held.id).is_err());
        // A plan held before this rule (put back here) is refused by the history.
        let version = store.tenant_state("t1").unwrap().version;
        store
            .commit(&roster::store::Commit {
                tenant: "t1".into(),
                expected_version: version,
                put_plan: Some((held.id.clone(), plan)),
                ..Default::default()
            })
            .unwrap();
        let err = approve(&store, &t, &held.id).unwrap_err().to_string();
        assert!(
            err.contains("a newer file was read after it was held"),
            "{err}"
        );
        assert!(err.contains(&newer.id), "{err}");
        assert_eq!(
            store.users("t1", Some(UserStatus::Active)).unwrap().len(),
            50,
            "nobody the newest file lists was deactivated"
        );
    }
}

#[test]
fn a_newer_held_run_sets_the_older_one_aside() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(50)));
    let older = go(&store, &t, &file(&users(10))).record;
    let newer = go(&store, &t, &file(&users(20))).record;
    assert_eq!(
        (older.status, newer.status),
        (ImportStatus::Held, ImportStatus::Held)
    );
    assert_eq!(store.held_plans("t1").unwrap(), vec![newer.id.clone()]);
    assert!(approve(&store, &t, &older.id).is_err());
    let applied = approve(&store, &t, &newer.id).unwrap().record;
    assert_eq!(applied.counts.deactivated, 30);
}

#[test]
fn a_held_run_keeps_no_plaintext_password_and_approve_applies_its_passwords() {
    let (store, dir) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let mut rows = users(10);
    rows[0].2 = "Old-Secret-0";
    rows[1].2 = "Old-Secret-1";
    assert_eq!(go(&store, &t, &file(&rows)).record.counts.inserted, 10);
    // Users 3..9 are missing (held); user 0 keeps its password, 1 changes it, 2 gets one.
    let kept = vec![
        (0, "Engineer", "Old-Secret-0"),
        (1, "Engineer", "New-Secret-1"),
        (2, "Engineer", "New-Secret-2"),
    ];
    let mut upload = file(&kept);
    // User 3's row has a bad email: skipped, but its key marks the user present.
    upload.extend_from_slice(b"C003;First3;Last3;not-an-email;Engineer;Secret-3\n");
    let held = go(&store, &t, &upload).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!((held.counts.deactivated, held.counts.skipped), (6, 1));
    store.flush().unwrap();
    for secret in [
        "Old-Secret-0",
        "Old-Secret-1",
        "New-Secret-1",
        "New-Secret-2",
        "Secret-3",
    ] {
        let found = dir
            .guard
            .stored_bytes()
            .iter()
            .any(|f| f.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(!found, "{secret} is in the store in plaintext");
    }
    assert!(!store
        .verify_user_password("t1", "C001", "New-Secret-1")
        .unwrap());
    // The console's preview of the held run shows what approving does (review s26: it
    // previewed the kept copy, whose password cells are blank).
    let p = roster::import::preview_held(&store, &t, &held.id)
        .unwrap()
        .record;
    assert_eq!(
        (
            p.counts.updated,
            p.counts.unchanged,
            p.counts.deactivated,
            p.counts.skipped
        ),
        (2, 1, 6, 1)
    );
    assert_eq!(store.held_plans("t1").unwrap(), vec![held.id.clone()]);
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(
        applied.status,
        ImportStatus::Partial,
        "{:?}",
        applied.messages
    );
    assert_eq!(
        (
            applied.counts.updated,
            applied.counts.unchanged,
            applied.counts.deactivated,
            applied.counts.skipped
        ),
        (2, 1, 6, 1)
    );
    let c003 = store.user("t1", "C003").unwrap().unwrap();
    assert_eq!(
        c003.status,
        UserStatus::Active,
        "present, so not deactivated"
    );
    assert_eq!(
        applied.sha256, held.sha256,
        "the upload's sha256, not the kept copy's"
    );
    assert!(store
        .verify_user_password("t1", "C000", "Old-Secret-0")
        .unwrap());
    assert!(store
        .verify_user_password("t1", "C001", "New-Secret-1")
        .unwrap());
    assert!(!store
        .verify_user_password("t1", "C001", "Old-Secret-1")
        .unwrap());
    assert!(store
        .verify_user_password("t1", "C002", "New-Secret-2")
        .unwrap());
    // The same upload again is a duplicate of the applied file.
    assert_eq!(
        go(&store, &t, &upload).record.status,
        ImportStatus::Duplicate
    );
}

/// A tenant with a status column, a column it does not map (`Note`) and the password last.
fn with_status() -> roster::config::Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Active"),
        ("password", "Password"),
    ];
    roster::config::Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Deactivate, &columns)
}

/// Twelve users; `off` of them switched off by the status column; `row9` and `row11` replace
/// the rows of C009 and C011 (a quote opened in one and closed in the other joins C010's line
/// into one cell).
fn status_file(off: u32, row9: &str, row11: &str) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Active;Note;Password\n");
    for i in 0..12u32 {
        match i {
            9 => s.push_str(row9),
            11 => s.push_str(row11),
            _ => s.push_str(&format!("C{i:03};F;L;{};n{i};pw{i}", u8::from(i >= off))),
        }
        s.push('\n');
    }
    s.into_bytes()
}

/// Review s21 (D1): a held run's copy blanks the password cell and the cells it does not map;
/// when that is the cell a quote joined lines into, the row must stay misshapen in the copy.
/// It became a good row, so approving applied it and made the users on the joined lines
/// missing: two more deactivated than the hold (and its preview) showed.
#[test]
fn approving_applies_what_was_held_when_the_joined_cell_is_blanked_in_the_copy() {
    for (what, row9, row11) in [
        (
            "the password cell",
            "C009;F;L;1;n9;\"pw9",
            "C011;F;L;1;n11;pw11\"",
        ),
        (
            "an unmapped cell",
            "C009;F;L;1;\"n9;pw9",
            "C011;F;L;1;n11\";pw11",
        ),
    ] {
        let (store, _d) = open();
        let t = with_status();
        let first = go(
            &store,
            &t,
            &status_file(0, "C009;F;L;1;n9;pw9", "C011;F;L;1;n11;pw11"),
        );
        assert_eq!(first.record.counts.inserted, 12, "{what}");
        let upload = status_file(8, row9, row11);
        let preview = preview_bytes(&store, &t, "users.csv", &upload)
            .unwrap()
            .record;
        let held = go(&store, &t, &upload).record;
        assert_eq!(
            held.status,
            ImportStatus::Held,
            "{what}: {:?}",
            held.messages
        );
        for r in [&preview, &held] {
            assert_eq!(
                (r.counts.deactivated, r.counts.skipped),
                (8, 1),
                "{what}: {:?}",
                r.messages
            );
        }
        let applied = approve(&store, &t, &held.id).unwrap().record;
        assert_eq!(
            (applied.counts.deactivated, applied.counts.skipped),
            (8, 1),
            "{what}: {:?}",
            applied.messages
        );
        for key in ["C009", "C010", "C011"] {
            let u = store.user("t1", key).unwrap().expect(key);
            assert_eq!(u.status, UserStatus::Active, "{what}: {key}");
        }
        assert_eq!(
            store.user("t1", "C000").unwrap().unwrap().status,
            UserStatus::Inactive
        );
    }
}

/// Review s21 (the D1 fix re-tested): a real two-line cell in a column the tenant does not map
/// (the delimiter before its line break, none after) is a good row for the run and for the
/// held copy alike: the copy's own looser test made it a broken row when approving.
#[test]
fn a_real_two_line_note_is_a_good_row_when_approving_too() {
    let (store, _d) = open();
    let t = with_status();
    go(
        &store,
        &t,
        &status_file(0, "C009;F;L;1;n9;pw9", "C011;F;L;1;n11;pw11"),
    );
    let upload = status_file(
        8,
        "C009;F;L;1;\"Room 4; floor 2\n\";pw9",
        "C011;F;L;1;n11;pw11",
    );
    let held = go(&store, &t, &upload).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!((held.counts.deactivated, held.counts.skipped), (8, 0));
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(
        (applied.counts.deactivated, applied.counts.skipped),
        (8, 0),
        "{:?}",
        applied.messages
    );
}

/// Review finding 2 (a wrong deactivation): a misshapen row whose key cell is empty was
/// written all blank in the held run's copy (its other cells blanked: it may hold a password
/// anywhere), so approving read no such row, found nothing misshapen and applied `on_missing`,
/// which the held run had left out because of that row: the users the file leaves out were
/// deactivated. Both a row of the wrong width and a last row cut off inside a quote.
#[test]
fn approving_keeps_on_missing_out_for_a_misshapen_row_without_a_key() {
    for (what, bad_row) in [
        ("a row of 3 cells", ";F;L\n"),
        ("a row cut off in a quote", ";\"F"),
    ] {
        let (store, _d) = open();
        let t = with_status();
        let first = status_file(0, "C009;F;L;1;n9;pw9", "C011;F;L;1;n11;pw11");
        assert_eq!(go(&store, &t, &first).record.counts.inserted, 12);
        // C000..C007 switched off (held: 8 of 12), C008 and C009 kept, C010 and C011 left out.
        let mut upload = String::from("Code;First;Last;Active;Note;Password\n");
        for i in 0..10u32 {
            upload.push_str(&format!("C{i:03};F;L;{};n{i};pw{i}\n", u8::from(i >= 8)));
        }
        upload.push_str(bad_row);
        let held = go(&store, &t, upload.as_bytes()).record;
        assert_eq!(
            held.status,
            ImportStatus::Held,
            "{what}: {:?}",
            held.messages
        );
        assert_eq!((held.counts.deactivated, held.counts.skipped), (8, 1));
        let applied = approve(&store, &t, &held.id).unwrap().record;
        assert_eq!(
            (applied.counts.deactivated, applied.counts.skipped),
            (8, 1),
            "{what}: {:?}",
            applied.messages
        );
        assert!(
            applied
                .messages
                .iter()
                .any(|m| m.contains("nobody was deactivated this run")),
            "{what}: {:?}",
            applied.messages
        );
        for key in ["C010", "C011"] {
            let u = store.user("t1", key).unwrap().expect(key);
            assert_eq!(u.status, UserStatus::Active, "{what}: {key}");
        }
        assert_eq!(
            store.user("t1", "C000").unwrap().unwrap().status,
            UserStatus::Inactive
        );
    }
}

/// Review s21 (D3): a file none of whose rows can be imported (here one key on both rows) is an
/// error and changes nothing, as its preview says; it was held instead ("would deactivate 9"),
/// asking for an approval that then changed nothing. Its preview lists no changes either.
#[test]
fn a_file_that_applies_no_row_is_an_error_not_a_held_run() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(10)));
    let before = store.users("t1", None).unwrap();
    let twice = file(&[(1, "Engineer", ""), (1, "Chief", "")]);
    let preview = preview_bytes(&store, &t, "users.csv", &twice).unwrap();
    assert_eq!(
        preview.record.status,
        ImportStatus::Error,
        "{:?}",
        preview.record.messages
    );
    assert!(preview.changes.is_empty(), "{:?}", preview.changes);
    let o = go(&store, &t, &twice).record;
    assert_eq!(o.status, ImportStatus::Error, "{:?}", o.messages);
    assert_eq!(o.counts.skipped, 2);
    assert!(store.held_plans("t1").unwrap().is_empty());
    assert_eq!(store.users("t1", None).unwrap(), before);
}

/// Review s26: under `on_missing = "delete"`, leavers the export still lists as inactive used
/// to count in the hold's base, so a file that dropped every active user went through.
#[test]
fn listed_leavers_do_not_dilute_the_hold_under_delete() {
    let (store, _d) = open();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Active"),
    ];
    let t =
        roster::config::Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns);
    let export = |to: u32| {
        let mut s = String::from("Code;First;Last;Active\n");
        for i in 0..to {
            s.push_str(&format!("C{i:03};F;L;{}\n", u8::from(i >= 90)));
        }
        s.into_bytes()
    };
    // 90 leavers kept in the export as inactive, 10 active staff.
    assert_eq!(
        go(&store, &t, &export(100)).record.status,
        ImportStatus::Success
    );
    let active = store.users("t1", Some(UserStatus::Active)).unwrap().len();
    assert_eq!(active, 10);
    // A broken export drops the 10 active staff: 10 of the 10 users the run could take out.
    let held = go(&store, &t, &export(90)).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!(held.counts.deleted, 10);
    let active = store.users("t1", Some(UserStatus::Active)).unwrap().len();
    assert_eq!(active, 10, "nothing was deleted");
}

/// Review s29, F6: a held file with a password column is kept as UTF-8, and approving read
/// that copy and wrote its encoding into the record: a Windows-1250 upload was recorded as
/// UTF-8 once approved.
#[test]
fn approving_keeps_the_encoding_the_file_was_held_in() {
    let (store, _d) = open();
    let mut t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    t.import.encoding =
        roster::config::EncodingSetting::parse("windows-1250").expect("a code page");
    let cp1250 = |rows: &[(u32, &str, &str)]| {
        let text = String::from_utf8(file(rows)).unwrap();
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1250.encode(&text);
        assert!(!unmappable);
        bytes.into_owned()
    };
    let rows: Vec<_> = (0..10).map(|i| (i, "Računovođa", "")).collect();
    assert_eq!(go(&store, &t, &cp1250(&rows)).record.counts.inserted, 10);
    let kept = [(0, "Računovođa", "Tajna-0"), (1, "Šef", "Tajna-1")];
    let held = go(&store, &t, &cp1250(&kept)).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!(held.encoding, "windows-1250");
    let p = roster::import::preview_held(&store, &t, &held.id).unwrap();
    assert_eq!(p.record.encoding, "windows-1250");
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(
        applied.status,
        ImportStatus::Success,
        "{:?}",
        applied.messages
    );
    assert_eq!(applied.encoding, "windows-1250");
    let stored = store.import_record("t1", &held.id).unwrap().unwrap();
    assert_eq!(stored.encoding, "windows-1250");
    assert_eq!(
        store.user("t1", "C001").unwrap().unwrap().fields["job_title"],
        "Šef"
    );
    assert!(store.verify_user_password("t1", "C001", "Tajna-1").unwrap());
}

/// A file that ends without a line break may have been cut short (a client that stopped
/// mid-upload still closed it): a run that would take out anyone missing is held, even far
/// below `max_missing_percent`, and approving applies it as it is. The same file taking nobody
/// out imports as usual (review s30).
#[test]
fn a_file_ending_without_a_line_break_is_held_when_it_takes_anyone_out() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(100)));
    let before = store.users("t1", None).unwrap();
    // The last row has all its cells: cut right after its last delimiter, it reads as whole.
    let mut cut = file(&users(95));
    assert_eq!(cut.pop(), Some(b'\n'));
    let held = go(&store, &t, &cut).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!(held.counts.deactivated, 5);
    assert!(
        held.messages[0].contains("does not end with a line break"),
        "{:?}",
        held.messages
    );
    assert_eq!(store.users("t1", None).unwrap(), before, "nothing changed");
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(applied.status, ImportStatus::Success);
    assert_eq!(applied.counts.deactivated, 5);
    assert_eq!(
        store.users("t1", Some(UserStatus::Active)).unwrap().len(),
        95
    );
    // Nobody missing: no hold, whatever the last byte.
    let mut whole = file(&users(95));
    whole.pop();
    let rec = go(&store, &t, &whole).record;
    assert_eq!(rec.status, ImportStatus::Duplicate, "{:?}", rec.messages);
    whole.extend_from_slice(b"\nC095;First95;Last95;user95@x.example;Engineer;");
    let rec = go(&store, &t, &whole).record;
    assert_eq!(rec.status, ImportStatus::Success, "{:?}", rec.messages);
    assert_eq!(
        rec.counts.restored + rec.counts.updated,
        1,
        "{:?}",
        rec.counts
    );
    // The same 95 users ending with a line break: deactivated at once, as before.
    let (store, _d) = open();
    go(&store, &t, &file(&users(100)));
    let rec = go(&store, &t, &file(&users(95))).record;
    assert_eq!(rec.status, ImportStatus::Success, "{:?}", rec.messages);
    assert_eq!(rec.counts.deactivated, 5);
}
