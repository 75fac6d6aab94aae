//! Bad input never panics, never changes the directory, and says what to fix.

use proptest::prelude::*;
use roster::config::{ImportProfile, MatchBy, OnMissing, Reference, Tenant};
use roster::import::{run_bytes, ImportStatus, RunOptions};
use roster::store::Store;

fn tenant() -> Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
    ];
    Tenant {
        id: "bad".into(),
        password_hash: None,
        authorized_keys: vec![],
        notify: vec![],
        scim_token_sha256: None,
        import: ImportProfile {
            match_by: MatchBy::MappingCode,
            on_missing: OnMissing::Deactivate,
            columns: columns
                .iter()
                .map(|(f, h)| (f.to_string(), h.to_string()))
                .collect(),
            ..Default::default()
        },
        reference: Reference::default(),
    }
}

const GOOD: &str = "Code;First;Last;Email\nA1;Ann;Lee;ann@x.example\nA2;Bob;Ray;bob@x.example\nA3;Cy;Do;cy@x.example\nA4;Di;Ek;di@x.example\nA5;Ed;Fo;ed@x.example\nA6;Fa;Gu;fa@x.example\n";

/// Imports GOOD, then `bytes`; checks that the directory is untouched and returns the record.
fn bad(bytes: &[u8]) -> roster::import::ImportOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
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

#[test]
fn empty_file() {
    assert!(first_message(&bad(b"")).contains("empty"));
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
    let o = bad(&no_nul);
    assert!(
        first_message(&o).contains("no column"),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn fifty_megabyte_single_line() {
    let line = vec![b'x'; 50 * 1024 * 1024];
    assert!(first_message(&bad(&line)).contains("no column"));
    let mut with_header = b"Code;First;Last;Email\n".to_vec();
    with_header.extend_from_slice(&line);
    let o = bad(&with_header);
    assert!(
        first_message(&o).contains("none of the 1 rows"),
        "{:?}",
        o.record.messages
    );
}

#[test]
fn ten_thousand_columns() {
    let mut s: String = (0..10_000).map(|i| format!("col{i};")).collect();
    s.push_str("x\n");
    s.push_str(&"1;".repeat(10_000));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Arbitrary bytes (and arbitrary bytes after a valid header) never panic the engine and
    /// never make it return an error instead of a record.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), with_header in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut input = if with_header { b"Code;First;Last;Email\n".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let out = run_bytes(&store, &tenant(), "u.csv", &input, &RunOptions::default());
        prop_assert!(out.is_ok(), "{:?}", out.err());
    }

    /// CSV-ish text built from the delimiters, quotes and line breaks the reader cares about.
    #[test]
    fn csvish_text_never_panics(cells in proptest::collection::vec("[a-z@.\";,\t|\r\n =+-]{0,12}", 0..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut input = String::from("Code;First;Last;Email\n");
        input.push_str(&cells.join(";"));
        let out = run_bytes(&store, &tenant(), "u.csv", input.as_bytes(), &RunOptions::default());
        prop_assert!(out.is_ok(), "{:?}", out.err());
    }
}
