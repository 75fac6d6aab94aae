//! Row numbers in messages and in the failure report, as a spreadsheet shows them (a blank line
//! is a row, a record over several lines is one), in LF, CRLF and CR files; a held run whose
//! file has blank lines gives each password to its own row when approved.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{approve, run_bytes, ImportStatus, RunOptions};

fn tenant(on_missing: OnMissing) -> Tenant {
    sync_files::tenant(on_missing, MatchBy::MappingCode)
}

/// The report's rows (after its header) as (row, reason).
fn report_rows(report: &[u8]) -> Vec<(String, String)> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .from_reader(report.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(report));
    rdr.records()
        .map(|r| {
            let r = r.expect("report record");
            let last = r.len() - 1;
            (r[0].to_string(), r[last].to_string())
        })
        .collect()
}

/// Review s14, finding 10: the `csv` crate drops blank lines, and the rows after one were
/// numbered one lower than the spreadsheet shows them.
#[test]
fn rows_are_numbered_as_a_spreadsheet_shows_them() {
    for nl in ["\n", "\r\n", "\r"] {
        let lines = [
            "",
            "Code;First;Last;Email;Title;Password",
            "C1;Ann;Lee;ann@x.example;Engineer;",
            "",
            "C2;Bob;Ray;not-an-email;Engineer;",
            ";;;;;",
            &format!("C3;Cy;Do;cy@x.example;\"Senior{nl}{nl}Engineer\";"),
            "",
            "",
            "C4;Di;Ek;di@x.example;Engineer;;extra",
            "C5;Ed;Fo;bad@;Engineer;",
            "",
        ];
        let bytes = lines.join(nl);
        let (store, _d) = test_store::temp_store();
        let t = tenant(OnMissing::Keep);
        let o = run_bytes(
            &store,
            &t,
            "u.csv",
            bytes.as_bytes(),
            &RunOptions::default(),
        )
        .expect("run");
        let r = &o.record;
        assert_eq!(r.status, ImportStatus::Partial, "{nl:?}: {:?}", r.messages);
        assert_eq!((r.counts.inserted, r.counts.skipped), (2, 3), "{nl:?}");
        let skipped: Vec<&str> = r
            .messages
            .iter()
            .filter_map(|m| m.split(':').next())
            .filter(|m| m.starts_with("row "))
            .collect();
        assert_eq!(
            skipped,
            ["row 5", "row 10", "row 11"],
            "{nl:?}: {:?}",
            r.messages
        );
        let report = report_rows(o.report_csv.as_deref().expect("report"));
        let rows: Vec<&str> = report.iter().map(|(row, _)| row.as_str()).collect();
        assert_eq!(rows, ["5", "10", "11"], "{nl:?}");
        for (row, reason) in &report {
            assert!(reason.starts_with(&format!("row {row}:")), "{reason}");
        }
    }
}

/// The held copy is numbered again by `approve`, and the run's passwords are kept by row: the
/// copy keeps the file's blank lines, so each password still goes to its own row.
#[test]
fn a_held_run_with_blank_lines_gives_each_password_to_its_row() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Deactivate);
    let mut first = String::from("Code;First;Last;Email;Title;Password\n");
    for i in 0..10 {
        first.push_str(&format!("C{i};F{i};L{i};u{i}@x.example;Engineer;\n"));
    }
    let seeded = run_bytes(
        &store,
        &t,
        "u.csv",
        first.as_bytes(),
        &RunOptions::default(),
    );
    assert_eq!(seeded.expect("seed").record.counts.inserted, 10);
    // Users 3..9 are missing: the run is held. Blank lines and a title over two lines come
    // before and between the rows that set passwords.
    let upload = "\r\nCode;First;Last;Email;Title;Password\r\n\r\nC0;F0;L0;u0@x.example;Engineer;Secret-0\r\n\r\n\r\nC1;F1;L1;u1@x.example;\"Senior\r\nEngineer\";Secret-1\r\n\r\nC2;F2;L2;u2@x.example;Engineer;Secret-2\r\n";
    let held = run_bytes(
        &store,
        &t,
        "u.csv",
        upload.as_bytes(),
        &RunOptions::default(),
    )
    .expect("held run")
    .record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    let applied = approve(&store, &t, &held.id).expect("approve").record;
    assert_eq!(
        applied.status,
        ImportStatus::Success,
        "{:?}",
        applied.messages
    );
    for (key, secret) in [("C0", "Secret-0"), ("C1", "Secret-1"), ("C2", "Secret-2")] {
        assert!(
            store
                .verify_user_password("t1", key, secret)
                .expect("verify"),
            "{key} has {secret}"
        );
    }
}
