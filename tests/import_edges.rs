//! Edges of the import found by the third review of 2026-11-30 and the review of the sixteenth
//! session (design.md §5): lines joined by a quote that leave the header's cell count, a file
//! cut inside a quoted cell, an email released by a row that is skipped after all, an email kept
//! by an empty cell, a UTF-8 file with a few stray bytes, broken UTF-16 and bytes Windows-1252
//! has no character for, the same file under changed settings, the hold at exactly its limit
//! and for users a status column switches off, contradicting `active`/`deactivate` columns.
//! Each test fails without its fix.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use roster::config::{EmptyCells, MatchBy, OnMissing, Tenant};
use roster::import::{approve, run_bytes, ImportOutcome, ImportStatus, RunOptions};
use roster::model::UserStatus;
use roster::store::Store;

fn tenant(columns: &[(&str, &str)], match_by: MatchBy) -> Tenant {
    Tenant::for_import("t", match_by, OnMissing::Deactivate, columns)
}

fn by_email() -> Tenant {
    let columns = [
        ("email", "E-mail"),
        ("first_name", "First"),
        ("last_name", "Last"),
    ];
    tenant(&columns, MatchBy::Email)
}

fn by_code() -> Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("email", "E-mail"),
        ("first_name", "First"),
        ("last_name", "Last"),
    ];
    tenant(&columns, MatchBy::MappingCode)
}

fn run(store: &Store, t: &Tenant, bytes: &[u8]) -> ImportOutcome {
    run_bytes(store, t, "u.csv", bytes, &RunOptions::default()).expect("run")
}

fn status(store: &Store, key: &str) -> UserStatus {
    store.user("t", key).unwrap().expect(key).status
}

const FOUR: &str = "E-mail,First,Last\na@x.example,Ann,Able\nb@x.example,Bob,Baker\nc@x.example,Cy,Cole\nd@x.example,Di,Dunn\n";

#[test]
fn a_quote_opened_in_the_last_column_skips_its_row_and_deactivates_nobody() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    run(&store, &t, FOUR.as_bytes());
    // Cy's quote is never closed: Di's line joins Cy's last name, and the record still has
    // three cells.
    let bad = FOUR.replace("c@x.example,Cy,Cole", "c@x.example,Cy,\"Cole");
    let o = run(&store, &t, bad.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 0);
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("check the quotes"), "{messages}");
    assert!(messages.contains("nobody was deactivated"), "{messages}");
    for key in ["a@x.example", "b@x.example", "c@x.example", "d@x.example"] {
        assert_eq!(status(&store, key), UserStatus::Active, "{key}");
    }
    let cy = store.user("t", "c@x.example").unwrap().unwrap();
    assert_eq!(cy.last_name.as_deref(), Some("Cole"));
    // Opened in the first data row, it joins every line: nothing is imported.
    let all = FOUR.replace("a@x.example,Ann,Able", "a@x.example,Ann,\"Able");
    let o = run(&store, &t, all.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Error,
        "{:?}",
        o.record.messages
    );
    assert_eq!(status(&store, "d@x.example"), UserStatus::Active);
}

#[test]
fn a_quote_closed_by_a_later_quote_skips_the_joined_row() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    run(&store, &t, FOUR.as_bytes());
    // The quote opened in Bob's last name is closed by the one after Cy's: one record of
    // three cells holding two lines.
    let bad = FOUR
        .replace("Bob,Baker", "Bob,\"Baker")
        .replace("Cy,Cole", "Cy,Cole\"");
    let o = run(&store, &t, bad.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 0);
    assert_eq!(status(&store, "c@x.example"), UserStatus::Active);
    let bob = store.user("t", "b@x.example").unwrap().unwrap();
    assert_eq!(bob.last_name.as_deref(), Some("Baker"));
}

#[test]
fn a_multi_line_cell_without_the_delimiter_is_still_one_good_row() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    let file = "E-mail,First,Last\na@x.example,Ann,\"Able\nSmith\"\n";
    let o = run(&store, &t, file.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
}

const CODES: &str = "Code,E-mail,First,Last\n";

fn codes(rows: &[&str]) -> Vec<u8> {
    let mut s = CODES.to_string();
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

/// No two users that are not deleted have the same email.
fn emails_are_unique(store: &Store) {
    let mut seen = std::collections::BTreeMap::new();
    for u in store.users("t", None).unwrap() {
        if let (Some(e), false) = (&u.email, u.status == UserStatus::Deleted) {
            assert!(seen.insert(e.clone(), u.key.clone()).is_none(), "{e} twice");
        }
    }
}

#[test]
fn an_owner_whose_rows_are_skipped_keeps_its_email() {
    let (store, _d) = test_store::temp_store();
    let t = by_code();
    run(
        &store,
        &t,
        &codes(&[
            "1,y@x.example,A,A",
            "2,x@x.example,B,B",
            "3,z@x.example,C,C",
        ]),
    );
    // User 1 is given twice (both rows skipped), so it keeps y@; user 3 asks for y@.
    let file = codes(&[
        "1,q@x.example,A,A",
        "1,q@x.example,A,A",
        "2,x@x.example,B,B",
        "3,y@x.example,C,C",
    ]);
    let o = run(&store, &t, &file);
    let messages = o.record.messages.join("\n");
    assert!(
        messages.contains("already belongs to user \"1\""),
        "{messages}"
    );
    emails_are_unique(&store);
    let three = store.user("t", "3").unwrap().unwrap();
    assert_eq!(three.email.as_deref(), Some("z@x.example"));
}

#[test]
fn a_chain_of_email_moves_stops_where_a_row_is_skipped() {
    let (store, _d) = test_store::temp_store();
    let t = by_code();
    run(
        &store,
        &t,
        &codes(&[
            "1,x@x.example,A,A",
            "2,y@x.example,B,B",
            "3,z@x.example,C,C",
        ]),
    );
    // 1 moves to z@, which 3 keeps: row 1 is skipped, so 1 keeps x@ and 2 cannot take it.
    let file = codes(&[
        "1,z@x.example,A,A",
        "2,x@x.example,B,B",
        "3,z@x.example,C,C",
    ]);
    let o = run(&store, &t, &file);
    let report = String::from_utf8(o.report_csv.expect("a report")).unwrap();
    assert!(
        report.contains("already belongs to user \"\"1\"\""),
        "{report}"
    );
    emails_are_unique(&store);
    let one = store.user("t", "1").unwrap().unwrap();
    assert_eq!(one.email.as_deref(), Some("x@x.example"));
    // A plain swap still works.
    let swap = codes(&[
        "1,y@x.example,A,A",
        "2,x@x.example,B,B",
        "3,z@x.example,C,C",
    ]);
    assert_eq!(run(&store, &t, &swap).record.status, ImportStatus::Success);
    emails_are_unique(&store);
}

#[test]
fn a_utf8_file_with_a_few_stray_bytes_is_refused() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    // Two names written as UTF-8 (č is C4 8D: 0x8D is not a Windows-1252 character), then
    // more bytes of Windows-1252 than UTF-8 letters.
    let mut file = "E-mail,First,Last\na@x.example,Ann,Müller\nb@x.example,Bob,Kovačić\n"
        .as_bytes()
        .to_vec();
    file.extend_from_slice(b"c@x.example,Zo\xeb,\xc7a\nd@x.example,\xc9lan,F\xe9e\n");
    let o = run(&store, &t, &file);
    assert_eq!(
        o.record.status,
        ImportStatus::Error,
        "{:?}",
        o.record.messages
    );
    assert!(
        o.record.messages[0].contains("mixes text encodings"),
        "{:?}",
        o.record.messages
    );
    assert!(store.users("t", None).unwrap().is_empty());
}

#[test]
fn the_same_file_under_changed_settings_is_imported_again() {
    let (store, _d) = test_store::temp_store();
    let mut t = by_email();
    t.import
        .columns
        .insert("custom.cc".into(), "Cost Centre".into());
    let file = b"E-mail,First,Last,CostCentre\na@x.example,Ann,Able,CC1\n";
    let o = run(&store, &t, file);
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    assert_eq!(run(&store, &t, file).record.status, ImportStatus::Duplicate);
    // The operator fixes the mapping: the same bytes are applied with it.
    t.import
        .columns
        .insert("custom.cc".into(), "CostCentre".into());
    let o = run(&store, &t, file);
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    let ann = store.user("t", "a@x.example").unwrap().unwrap();
    assert_eq!(ann.attributes.get("cc").map(String::as_str), Some("CC1"));
    assert_eq!(run(&store, &t, file).record.status, ImportStatus::Duplicate);
}

#[test]
fn missing_users_exactly_at_the_limit_are_not_held() {
    let (store, _d) = test_store::temp_store();
    let mut t = by_email();
    t.import.max_missing_percent = 29.0;
    let rows = |n: usize| {
        let mut s = "E-mail,First,Last\n".to_string();
        for i in 0..n {
            s.push_str(&format!("u{i}@x.example,F,L\n"));
        }
        s.into_bytes()
    };
    run(&store, &t, &rows(100));
    // 29 of 100 missing is not more than 29 %.
    let o = run(&store, &t, &rows(71));
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 29);
}

#[test]
fn contradicting_active_and_deactivate_columns_skip_the_row() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("email", "E-mail"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Active"),
        ("deactivate", "Leaver"),
    ];
    let t = tenant(&columns, MatchBy::Email);
    let file =
        b"E-mail,First,Last,Active,Leaver\na@x.example,Ann,Able,0,no\nb@x.example,Bob,Baker,1,no\n";
    let o = run(&store, &t, file);
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("contradicts"), "{messages}");
    assert!(store.user("t", "a@x.example").unwrap().is_none());
    assert_eq!(status(&store, "b@x.example"), UserStatus::Active);
}

#[test]
fn a_file_cut_inside_a_quoted_last_cell_changes_nobody_from_that_row() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    run(&store, &t, FOUR.as_bytes());
    // The transfer stopped inside Di's quoted last name: `"Du` with no closing quote.
    let cut = FOUR.replace("d@x.example,Di,Dunn\n", "d@x.example,Di,\"Du");
    let o = run(&store, &t, cut.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("looks cut off"), "{messages}");
    assert_eq!(
        (o.record.counts.updated, o.record.counts.deactivated),
        (0, 0)
    );
    let di = store.user("t", "d@x.example").unwrap().unwrap();
    assert_eq!(di.last_name.as_deref(), Some("Dunn"));
    assert_eq!(di.status, UserStatus::Active);
}

#[test]
fn an_email_kept_by_an_empty_cell_is_not_given_to_another_key() {
    let (store, _d) = test_store::temp_store();
    let t = by_code();
    run(
        &store,
        &t,
        &codes(&["1,a@x.example,A,A", "2,b@x.example,B,B"]),
    );
    // User 1's row leaves the email empty (kept under `empty_cells = "keep"`): unchanged.
    let o = run(&store, &t, &codes(&["1,,A,A", "2,b@x.example,B,B"]));
    assert_eq!(o.record.counts.unchanged, 2, "{:?}", o.record.messages);
    // A new key asks for user 1's address while user 1's row is still unchanged.
    let o = run(
        &store,
        &t,
        &codes(&["1,,A,A", "2,b@x.example,B,B", "3,a@x.example,C,C"]),
    );
    let messages = o.record.messages.join("\n");
    assert!(
        messages.contains("already belongs to user \"1\""),
        "{messages}"
    );
    assert!(store.user("t", "3").unwrap().is_none());
    emails_are_unique(&store);
}

/// Under `empty_cells = "clear"` an empty email cell clears the address, so the user gives it
/// up and another key may take it in the same file (design §5.2; s29: the claim was refused
/// as if user 1 kept it, though the same commit cleared user 1's email).
#[test]
fn an_email_cleared_by_an_empty_cell_goes_to_the_key_that_asks_for_it() {
    let (store, _d) = test_store::temp_store();
    let mut t = by_code();
    t.import.empty_cells = EmptyCells::Clear;
    run(&store, &t, &codes(&["1,a@x.example,A,A"]));
    let o = run(&store, &t, &codes(&["1,,A,A", "2,a@x.example,B,B"]));
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.inserted, 1, "{:?}", o.record.messages);
    let one = store.user("t", "1").unwrap().unwrap();
    assert_eq!(one.email, None);
    let two = store.user("t", "2").unwrap().unwrap();
    assert_eq!(two.email.as_deref(), Some("a@x.example"));
    emails_are_unique(&store);
}

#[test]
fn broken_utf16_and_bytes_without_a_windows_1252_character_are_refused() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    run(&store, &t, FOUR.as_bytes());
    // UTF-16LE with a BOM and a lone high surrogate in Ann's first name.
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in FOUR.replace("Ann", "A\u{0}n").encode_utf16() {
        let unit = if unit == 0 { 0xD800 } else { unit };
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let o = run(&store, &t, &utf16);
    assert_eq!(
        o.record.status,
        ImportStatus::Error,
        "{:?}",
        o.record.messages
    );
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("not valid UTF-16"), "{messages}");
    // Windows-1252 text with 0x81, a byte it has no character for (CP850's ü).
    let mut cp850 = FOUR.replace("Bob", "B\u{1}b").into_bytes();
    for b in cp850.iter_mut().filter(|b| **b == 1) {
        *b = 0x81;
    }
    let o = run(&store, &t, &cp850);
    assert_eq!(
        o.record.status,
        ImportStatus::Error,
        "{:?}",
        o.record.messages
    );
    let messages = o.record.messages.join("\n");
    assert!(messages.contains("0x81"), "{messages}");
    let ann = store.user("t", "a@x.example").unwrap().unwrap();
    let bob = store.user("t", "b@x.example").unwrap().unwrap();
    assert_eq!(
        (ann.first_name.as_deref(), bob.first_name.as_deref()),
        (Some("Ann"), Some("Bob"))
    );
}

#[test]
fn switching_off_most_users_through_a_status_column_is_held() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("email", "E-mail"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Active"),
    ];
    let t = tenant(&columns, MatchBy::Email);
    let rows = |active: &dyn Fn(usize) -> bool| {
        let mut s = "E-mail,First,Last,Active\n".to_string();
        for i in 0..12 {
            s.push_str(&format!("u{i}@x.example,F,L,{}\n", u8::from(active(i))));
        }
        s.into_bytes()
    };
    run(&store, &t, &rows(&|_| true));
    // Every user listed, every one marked inactive: held like 12 missing users would be.
    let o = run(&store, &t, &rows(&|_| false));
    assert_eq!(
        o.record.status,
        ImportStatus::Held,
        "{:?}",
        o.record.messages
    );
    assert!(
        o.record.messages[0].contains("12 active users are made inactive by the file"),
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 12);
    assert_eq!(status(&store, "u0@x.example"), UserStatus::Active);
    // Approved, the plan applies: every user switched off, the run a success.
    let applied = approve(&store, &t, &o.record.id).unwrap().record;
    assert_eq!(
        applied.status,
        ImportStatus::Success,
        "{:?}",
        applied.messages
    );
    assert_eq!(applied.counts.deactivated, 12);
    assert_eq!(status(&store, "u5@x.example"), UserStatus::Inactive);
    // A few leavers marked in the column are not held, and are counted as deactivated; a file
    // whose rows only switch users off is a success, not "nothing imported".
    run(&store, &t, &rows(&|_| true));
    let o = run(&store, &t, &rows(&|i| i > 1));
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(
        (o.record.counts.deactivated, o.record.counts.updated),
        (2, 0)
    );
    assert_eq!(status(&store, "u0@x.example"), UserStatus::Inactive);
    let mut keep = t.clone();
    keep.import.on_missing = OnMissing::Keep;
    let leavers = b"E-mail,First,Last,Active\nu2@x.example,F,L,0\nu3@x.example,F,L,0\n";
    let o = run(&store, &keep, leavers);
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 2);
    assert_eq!(status(&store, "u3@x.example"), UserStatus::Inactive);
}

/// A held run keeps a copy of its file with the passwords blanked; the row cut inside a quote
/// must stay misshapen in that copy, so approving applies what was held: not the cut value, and
/// no `on_missing` for the users lost after the cut (re-read of review s16).
#[test]
fn approving_a_held_cut_file_applies_what_was_held() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("email", "E-mail"),
        ("first_name", "First"),
        ("active", "Active"),
        ("password", "Password"),
        ("last_name", "Last"),
    ];
    let t = tenant(&columns, MatchBy::Email);
    let mut full = "E-mail,First,Active,Password,Last\n".to_string();
    for i in 0..12 {
        full.push_str(&format!("u{i}@x.example,F,1,pw{i},L\n"));
    }
    assert_eq!(run(&store, &t, full.as_bytes()).record.counts.inserted, 12);
    // Eight switched off (held), and the transfer cut inside u9's quoted last name: u10 and
    // u11 never arrive.
    let mut cut = "E-mail,First,Active,Password,Last\n".to_string();
    for i in 0..9 {
        cut.push_str(&format!("u{i}@x.example,F,{},pw{i},L\n", u8::from(i >= 8)));
    }
    cut.push_str("u9@x.example,F,1,pw9,\"Cu");
    let held = run(&store, &t, cut.as_bytes());
    assert_eq!(
        held.record.status,
        ImportStatus::Held,
        "{:?}",
        held.record.messages
    );
    let applied = approve(&store, &t, &held.record.id).unwrap().record;
    assert_eq!(applied.counts.deactivated, 8, "{:?}", applied.messages);
    let u9 = store.user("t", "u9@x.example").unwrap().unwrap();
    assert_eq!(u9.last_name.as_deref(), Some("L"));
    for key in ["u9@x.example", "u10@x.example", "u11@x.example"] {
        assert_eq!(status(&store, key), UserStatus::Active, "{key}");
    }
    assert_eq!(status(&store, "u0@x.example"), UserStatus::Inactive);
}

/// Review s21 (S1): a key with an invisible character after it (a zero-width space, a byte
/// order mark, pasted from an HR tool) is the key without it: its user is present and updated,
/// not a skipped row and a deactivated user.
#[test]
fn invisible_characters_around_a_key_are_trimmed_like_spaces() {
    let (store, _d) = test_store::temp_store();
    let t = by_email();
    run(&store, &t, FOUR.as_bytes());
    let pasted = FOUR
        .replace("a@x.example,Ann", "a@x.example\u{200B},Ann")
        .replace("Bob,Baker", "\u{FEFF}Bobby\u{2060},Baker");
    let o = run(&store, &t, pasted.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(
        (o.record.counts.deactivated, o.record.counts.updated),
        (0, 1)
    );
    assert_eq!(status(&store, "a@x.example"), UserStatus::Active);
    let bob = store.user("t", "b@x.example").unwrap().unwrap();
    assert_eq!(bob.first_name.as_deref(), Some("Bobby"));
    // The direction marks and a soft hyphen too, and in the header row as well.
    let marked = FOUR
        .replace("E-mail,", "E-mail\u{200B},")
        .replace("c@x.example,", "\u{00AD}c@x.example\u{200E},");
    let o = run(&store, &t, marked.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Success,
        "{:?}",
        o.record.messages
    );
    assert_eq!(o.record.counts.deactivated, 0);
}
