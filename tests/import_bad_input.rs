//! Bad input never panics, never changes the directory, and says what to fix.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use proptest::prelude::*;
use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{run_bytes, ImportStatus, RunOptions};

fn tenant() -> Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
    ];
    Tenant::for_import("bad", MatchBy::MappingCode, OnMissing::Deactivate, &columns)
}

const GOOD: &str = "Code;First;Last;Email\nA1;Ann;Lee;ann@x.example\nA2;Bob;Ray;bob@x.example\nA3;Cy;Do;cy@x.example\nA4;Di;Ek;di@x.example\nA5;Ed;Fo;ed@x.example\nA6;Fa;Gu;fa@x.example\n";

/// Imports GOOD, then `bytes`; checks that the directory is untouched and returns the record.
fn bad(bytes: &[u8]) -> roster::import::ImportOutcome {
    let (store, _dir) = test_store::temp_store();
    let t = tenant();
    run_bytes(&store, &t, "u.csv", GOOD.as_bytes(), &RunOptions::default()).expect("seed");
    let before = store.users("bad", None).expect("users");
    let out = run_bytes(&store, &t, "u.csv", bytes, &RunOptions::default()).expect("run");
    assert_eq!(
        store.users("bad", None).expect("users"),
        before,
        "directory untouched"
    );
    assert_eq!(
        out.record.status,
        ImportStatus::Error,
        "{:?}",
        out.record.messages
    );
    assert!(!out.record.messages.is_empty());
    out
}

fn first_message(o: &roster::import::ImportOutcome) -> &str {
    &o.record.messages[0]
}

/// The run failed as a whole, its first message saying `text`.
fn assert_error_saying(o: &roster::import::ImportOutcome, text: &str) {
    assert_eq!(
        o.record.status,
        ImportStatus::Error,
        "{:?}",
        o.record.messages
    );
    assert!(first_message(o).contains(text), "{:?}", o.record.messages);
}

#[test]
fn empty_file() {
    assert!(first_message(&bad(b"")).contains("empty"));
}

#[test]
fn excels_delimiter_hint_is_named_as_such() {
    let file = format!("sep=;\r\n{}", GOOD.replace('\n', "\r\n"));
    let o = bad(file.as_bytes());
    assert!(
        first_message(&o).contains("Excel's delimiter hint (sep=…)"),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn header_only() {
    assert!(first_message(&bad(b"Code;First;Last;Email\r\n")).contains("no data rows"));
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(first_message(&bad(&garbage)).contains("binary"));
    let no_nul: Vec<u8> = garbage.iter().map(|b| b.max(&1)).copied().collect();
    // Random bytes hold UTF-8 characters that Windows-1252 cannot form next to bytes that
    // are not UTF-8: refused as mixed encodings.
    let o = bad(&no_nul);
    assert!(
        first_message(&o).contains("mixes text encodings"),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn fifty_megabyte_single_line() {
    let line = vec![b'x'; 50 * 1024 * 1024];
    let o = bad(&line);
    assert!(
        first_message(&o).contains("cannot read the header row: a row is longer than 1 MiB"),
        "{:?}",
        o.record.messages
    );
    let mut with_header = b"Code;First;Last;Email\n".to_vec();
    with_header.extend_from_slice(&line);
    // A row past 1 MiB fails the run where it is read: each of its cells would cost the CSV
    // reader memory (review s25).
    let o = bad(&with_header);
    assert!(
        first_message(&o).contains("after row 1: a row is longer than 1 MiB"),
        "{:?}",
        o.record.messages
    );
    let mut cells = b"Code;First;Last;Email\nA1;Ann;Lee;ann@x.example\n".to_vec();
    cells.extend(std::iter::repeat_n(b';', 3 << 20));
    let o = bad(&cells);
    assert!(
        first_message(&o).contains("after row 2: a row is longer than 1 MiB"),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn more_columns_than_a_user_file_may_have() {
    let mut s: String = (0..10_000).map(|i| format!("col{i};")).collect();
    s.push_str("Code\n");
    s.push_str(&"1;".repeat(10_000));
    s.push_str("2\n");
    let o = bad(s.as_bytes());
    assert!(
        first_message(&o).contains(
            "the header row has 10001 cells, more than the 4096 columns a user file may have"
        ),
        "{}",
        first_message(&o)
    );
}

#[test]
fn four_thousand_columns() {
    let mut s: String = (0..4_000).map(|i| format!("col{i};")).collect();
    s.push_str("x\n");
    s.push_str(&"1;".repeat(4_000));
    s.push_str("2\n");
    let o = bad(s.as_bytes());
    assert!(
        first_message(&o).contains("\"Code\" (for mapping_code)"),
        "{}",
        first_message(&o)
    );
    assert!(
        first_message(&o).len() < 2000,
        "the sentence stays readable"
    );
}

#[test]
fn unbalanced_quotes() {
    let s = "Code;First;Last;Email\nA1;\"Ann;Lee;ann@x.example\nA2;Bob;Ray;bob@x.example\n";
    let o = bad(s.as_bytes());
    let report = String::from_utf8(o.report_csv.expect("report")).unwrap();
    assert!(report.contains("unbalanced quote"), "{report}");
}

#[test]
fn required_column_missing() {
    let o = bad(b"Code;First;Email\nA1;Ann;ann@x.example\n");
    let m = first_message(&o);
    assert!(
        m.contains("\"Last\" (for last_name)") && m.contains("Code | First | Email"),
        "{m}"
    );
}

#[test]
fn mixed_delimiters() {
    let o = bad(b"Code;First;Last;Email\nA1,Ann,Lee,ann@x.example\nA2,Bob,Ray,bob@x.example\n");
    let m = first_message(&o);
    assert!(
        m.contains("has 1 cells but the header has 4") && m.contains("delimiter"),
        "{m}"
    );
}

#[test]
fn invalid_utf8_when_utf8_is_required() {
    let (store, _dir) = test_store::temp_store();
    let mut t = tenant();
    t.import.encoding = roster::config::EncodingSetting::Utf8;
    let o = run_bytes(
        &store,
        &t,
        "u.csv",
        b"Code;First;Last;Email\nA1;J\xfcrgen;M;a@x.example\n",
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(o.record.status, ImportStatus::Error);
    assert!(o.record.messages[0].contains("not valid UTF-8"));
}

/// Runs `cases` generated inputs through the engine on one store, each case as a tenant of its
/// own (so a PostgreSQL run starts one cluster, not one per case): none may panic or make the
/// engine return an error instead of a record.
fn never_fails<S: Strategy>(strategy: S, input: impl Fn(S::Value) -> Vec<u8>)
where
    S::Value: std::fmt::Debug,
{
    let (store, _dir) = test_store::temp_store();
    let case = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |value| {
            case.set(case.get() + 1);
            let mut t = tenant();
            t.id = format!("bad{}", case.get());
            let out = run_bytes(&store, &t, "u.csv", &input(value), &RunOptions::default());
            prop_assert!(out.is_ok(), "{:?}", out.err());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Arbitrary bytes (and arbitrary bytes after a valid header) never panic the engine and never
/// make it return an error instead of a record.
#[test]
fn arbitrary_bytes_never_panic() {
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..2048),
        any::<bool>(),
    );
    never_fails(strategy, |(bytes, with_header)| {
        let mut input = if with_header {
            b"Code;First;Last;Email\n".to_vec()
        } else {
            Vec::new()
        };
        input.extend_from_slice(&bytes);
        input
    });
}

/// CSV-ish text built from the delimiters, quotes and line breaks the reader cares about.
#[test]
fn csvish_text_never_panics() {
    let strategy = proptest::collection::vec("[a-z@.\";,\t|\r\n =+-]{0,12}", 0..60);
    never_fails(strategy, |cells| {
        let mut input = String::from("Code;First;Last;Email\n");
        input.push_str(&cells.join(";"));
        input.into_bytes()
    });
}

// ---- The archived copy never holds a password in plaintext (design.md §4, §6), also when the
// run fails before the header is mapped.

const SECRET: &str = "Sup3rSecret!";
const SECRET2: &str = "0therSecret?";

/// A profile matching by email that maps a password column.
fn tenant_with_password() -> Tenant {
    let mut t = tenant();
    t.import.match_by = MatchBy::Email;
    t.import.columns = [
        ("email", "E-mail"),
        ("first_name", "First Name"),
        ("last_name", "Last Name"),
        ("password", "Password"),
    ]
    .iter()
    .map(|(f, h)| (f.to_string(), h.to_string()))
    .collect();
    t
}

/// One key on millions of rows would put the whole file in one of the directory's buckets,
/// which a run merges in memory: past 64 MiB there, the run fails, nothing applied, saying why
/// (review s25).
#[test]
fn one_key_on_millions_of_rows_fails_the_run() {
    let t = Tenant::for_import(
        "bad",
        MatchBy::MappingCode,
        OnMissing::Deactivate,
        &[
            ("mapping_code", "C"),
            ("first_name", "F"),
            ("last_name", "L"),
        ],
    );
    let mut s = String::from("C,F,L\n");
    s.push_str(&"K,a,b\n".repeat(2_000_000));
    let (store, _dir) = test_store::temp_store();
    let o = run_bytes(&store, &t, "u.csv", s.as_bytes(), &RunOptions::default()).expect("run");
    assert_error_saying(&o, "of rows share one of the directory's 1,024 buckets");
    assert!(store.users("bad", None).expect("users").is_empty());
}

fn run_with(t: &Tenant, bytes: &[u8]) -> roster::import::ImportOutcome {
    let (store, _dir) = test_store::temp_store();
    run_bytes(&store, t, "u.csv", bytes, &RunOptions::default()).expect("run")
}

/// What the intake would archive: the copy when there is one, else the original bytes.
fn archived(o: &roster::import::ImportOutcome, original: &[u8]) -> Vec<u8> {
    o.archive_copy.clone().unwrap_or_else(|| original.to_vec())
}

fn assert_binary_error(o: &roster::import::ImportOutcome) {
    assert_eq!(o.record.status, ImportStatus::Error);
    assert!(
        o.record.messages[0].contains("binary"),
        "{:?}",
        o.record.messages
    );
}

/// The archived copy as text, checked to hold no [`SECRET`].
fn archived_without_secret(o: &roster::import::ImportOutcome, original: &[u8]) -> String {
    let text = String::from_utf8(archived(o, original)).expect("utf-8");
    assert!(!text.contains(SECRET), "{text}");
    text
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[test]
fn binary_file_archive_has_no_password() {
    let bytes = format!(
        "E-mail;First Name;Last Name;Password\r\nann@x.example;Ann;Lee;{SECRET}\r\nbob@x.example;Bob\0;Ray;{SECRET2}\r\n"
    );
    // Through a path, as the intake runs it.
    let (store, dir) = test_store::temp_store();
    let path = dir.path().join("u.csv");
    std::fs::write(&path, &bytes).expect("write");
    let o = roster::import::run_file(
        &store,
        &tenant_with_password(),
        &path,
        &RunOptions::default(),
    )
    .expect("run");
    assert_binary_error(&o);
    let copy = o
        .archive_copy
        .expect("a blanked copy replaces the original");
    let text = String::from_utf8(copy).expect("utf-8");
    assert!(!text.contains(SECRET) && !text.contains(SECRET2), "{text}");
    assert!(
        text.contains("E-mail;First Name;Last Name;Password"),
        "{text}"
    );
    assert!(text.contains("ann@x.example;Ann;Lee;\n"), "{text}");
    assert!(text.contains("bob@x.example;Bob\0;Ray;\n"), "{text}");
    assert!(
        !o.record
            .messages
            .iter()
            .any(|m| m.contains("could not be checked")),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn binary_file_with_empty_columns_map_blanks_the_password_header() {
    let mut t = tenant_with_password();
    t.import.columns.clear();
    let bytes = format!(
        "\u{feff}email,first_name,last_name, PASSWORD \nann@x.example,Ann\0,Lee,{SECRET}\n"
    );
    let o = run_with(&t, bytes.as_bytes());
    assert_eq!(o.record.status, ImportStatus::Error);
    let text = archived_without_secret(&o, bytes.as_bytes());
    assert!(text.contains("ann@x.example,Ann\0,Lee,\n"), "{text}");
}

#[test]
fn utf16_without_bom_archive_has_no_password() {
    // UTF-16 without a BOM is NUL bytes to the scan: "binary".
    let bytes = utf16le(&format!(
        "E-mail;First Name;Last Name;Password\r\nann@x.example;Ann;Lee;{SECRET}\r\n"
    ));
    let o = run_with(&tenant_with_password(), &bytes);
    assert_binary_error(&o);
    let copy = archived(&o, &bytes);
    assert!(!contains(&copy, &utf16le(SECRET)));
    let without_nul: Vec<u8> = copy.iter().copied().filter(|b| *b != 0).collect();
    assert!(!contains(&without_nul, SECRET.as_bytes()));
    assert!(contains(&without_nul, b"ann@x.example;Ann;Lee;"));
}

#[test]
fn missing_required_column_archive_has_no_password() {
    let bytes = format!("E-mail;First Name;Password\nann@x.example;Ann;{SECRET}\n");
    let o = run_with(&tenant_with_password(), bytes.as_bytes());
    assert_eq!(o.record.status, ImportStatus::Error);
    assert!(
        o.record.messages[0].contains("\"Last Name\" (for last_name)"),
        "{:?}",
        o.record.messages
    );
    let text = archived_without_secret(&o, bytes.as_bytes());
    assert!(text.contains("ann@x.example;Ann;\n"), "{text}");
}

#[test]
fn duplicate_file_archive_has_no_password() {
    let (store, _dir) = test_store::temp_store();
    let t = tenant_with_password();
    let bytes = format!("E-mail;First Name;Last Name;Password\nann@x.example;Ann;Lee;{SECRET}\n");
    let run = || {
        run_bytes(
            &store,
            &t,
            "u.csv",
            bytes.as_bytes(),
            &RunOptions::default(),
        )
    };
    assert_eq!(run().unwrap().record.status, ImportStatus::Success);
    let o = run().unwrap();
    assert_eq!(o.record.status, ImportStatus::Duplicate);
    let text = archived_without_secret(&o, bytes.as_bytes());
    assert!(text.contains("ann@x.example;Ann;Lee;\n"), "{text}");
}

/// Review finding 3 (a plaintext password kept on disk): a header that repeats the password
/// column fails the run, and its archived copy blanked only the first of those columns.
#[test]
fn a_repeated_password_header_is_blanked_in_every_column() {
    let mut by_field_name = tenant_with_password();
    by_field_name.import.columns.clear();
    for (t, header) in [
        (
            tenant_with_password(),
            "E-mail;First Name;Last Name;Password;PASSWORD ",
        ),
        (
            by_field_name,
            "email;first_name;last_name;password;Password",
        ),
    ] {
        let bytes = format!("{header}\nann@x.example;Ann;Lee;{SECRET};{SECRET2}\n");
        let o = run_with(&t, bytes.as_bytes());
        assert_error_saying(&o, "appears in more than one column");
        let copy = String::from_utf8(archived(&o, bytes.as_bytes())).expect("utf-8");
        let report = String::from_utf8(o.report_csv.clone().expect("report")).expect("utf-8");
        for out in [&copy, &report] {
            for s in [SECRET, SECRET2] {
                assert!(!out.contains(s), "{s} in {out}");
            }
        }
        assert!(copy.contains("ann@x.example;Ann;Lee;;\n"), "{copy}");
    }
}

#[test]
fn misaligned_rows_are_blanked_whole() {
    // A row written with another delimiter, and lines joined by an unbalanced quote: their
    // passwords are not in the password column, so the whole row is blank in copy and report.
    let bytes = format!(
        "E-mail;First Name;Last Name;Password\nann@x.example;Ann;Lee;{SECRET}\nbob@x.example,Bob,Ray,{SECRET2}\ncy@x.example;\"Cy;Do;Pw1-secret\ndi@x.example;Di;Ek;Pw2-secret\n"
    );
    let o = run_with(&tenant_with_password(), bytes.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    let copy = String::from_utf8(archived(&o, bytes.as_bytes())).expect("utf-8");
    let report = String::from_utf8(o.report_csv.clone().expect("report")).expect("utf-8");
    for out in [&copy, &report] {
        for s in [SECRET, SECRET2, "Pw1-secret", "Pw2-secret"] {
            assert!(!out.contains(s), "{s} in {out}");
        }
    }
    assert!(copy.contains("ann@x.example;Ann;Lee;\n"), "{copy}");
    assert!(
        report.contains("has 1 cells but the header has 4"),
        "{report}"
    );
    let messages = o.record.messages.join("\n");
    assert!(!messages.contains(SECRET2) && !messages.contains("Pw1-secret"));
}

#[test]
fn binary_file_without_a_mapped_password_column_is_archived_without_secrets() {
    // A profile that maps no password. Review s30 (F4): a first row that is no header row (here
    // binary garbage) may hold any secret, so the copy archived has every cell blank.
    let mut garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    garbage[5] = 0;
    let o = bad(&garbage);
    assert!(first_message(&o).contains("binary"));
    let copy = o.archive_copy.clone().expect("a blanked copy");
    assert!(garbage.iter().any(u8::is_ascii_alphanumeric));
    assert!(!copy.iter().any(u8::is_ascii_alphanumeric), "{copy:?}");
    // Review s30 (F5): a column headed like a password is blank although the profile does not
    // map it; the rest of the file is archived as it was.
    let o = bad(b"Code;First;Last;Email;Password\nA1;Ann\0;Lee;a@x.example;Sup3r\n");
    assert!(first_message(&o).contains("binary"));
    let copy = String::from_utf8_lossy(o.archive_copy.as_deref().expect("a copy")).into_owned();
    assert!(
        copy.contains("a@x.example") && !copy.contains("Sup3r"),
        "{copy}"
    );
    // A profile that maps one, but a file without that column: nothing to blank.
    let bytes = b"E-mail;First Name;Last Name\nann@x.example;Ann\0;Lee\n";
    let o = run_with(&tenant_with_password(), bytes);
    assert_eq!(o.record.status, ImportStatus::Error);
    assert!(o.archive_copy.is_none());
    assert!(!o
        .record
        .messages
        .iter()
        .any(|m| m.contains("could not be checked")));
}

#[test]
fn fifty_megabyte_binary_line_with_a_password_profile() {
    let mut bytes = b"E-mail;First Name;Last Name;Password\n".to_vec();
    let mut line = vec![b'x'; 50 * 1024 * 1024];
    line[1000] = 0;
    bytes.extend_from_slice(&line);
    drop(line);
    let o = run_with(&tenant_with_password(), &bytes);
    assert_binary_error(&o);
    // The single long row is longer than a row may be: it could hold a password the copy
    // cannot find, so the copy ends before it, and the record says so (review s25).
    let copy = o.archive_copy.expect("copy");
    assert_eq!(copy, b"E-mail;First Name;Last Name;Password\n");
    assert!(
        o.record.messages.iter().any(|m| m
            .contains("the archived copy ends after row 1: the row after it is longer than 1 MiB")),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn a_mapped_header_in_two_columns_is_a_file_level_error() {
    let o = bad(b"Code;First;Last;Email;EMAIL \nA1;Ann;Lee;ann@x.example;other@x.example\n");
    let m = first_message(&o);
    assert!(
        m.contains("\"Email\"") && m.contains("columns 4, 5"),
        "{:?}",
        o.record.messages
    );
}

/// A UTF-16 byte-order mark followed by an odd byte: a clear file-level error, never a panic
/// (the admin API's preview of these bytes once answered 500 from a panicking task).
#[test]
fn utf16_bom_with_an_odd_byte() {
    let bytes = b"\xff\xfe\x00";
    let out = bad(bytes);
    assert!(!first_message(&out).is_empty());
    let (store, _dir) = test_store::temp_store();
    let preview = roster::import::preview_bytes(&store, &tenant(), "u.csv", bytes);
    match preview {
        Ok(p) => assert_eq!(p.record.status, ImportStatus::Error, "{:?}", p.record),
        Err(e) => assert!(!format!("{e:#}").is_empty()),
    }
}
