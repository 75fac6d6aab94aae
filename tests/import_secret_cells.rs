//! Plaintext passwords do not leave through a run's messages, report or archived copy when the
//! profile does not say where they are (review s30): a file without its header row (F4) is
//! neither echoed in the error nor archived with its cells, and a column headed like a password
//! that the profile does not map (F5) is blank in the failure report and the archive copy.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/store.rs"]
mod test_store;

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{run_bytes, ImportStatus, RunOptions};

fn run(t: &Tenant, bytes: &[u8]) -> roster::import::ImportOutcome {
    let (store, _dir) = test_store::temp_store();
    run_bytes(&store, t, "u.csv", bytes, &RunOptions::default()).expect("run")
}

fn has(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_file_without_its_header_row_is_not_echoed_or_archived_with_its_cells() {
    let mapped = Tenant::for_import(
        "t",
        MatchBy::Email,
        OnMissing::Keep,
        &[
            ("email", "Mail"),
            ("first_name", "Vorname"),
            ("last_name", "Nachname"),
            ("password", "Kennwort"),
        ],
    );
    let by_name = Tenant::for_import("t", MatchBy::Email, OnMissing::Keep, &[]);
    let file = b"ann@x.example;Ann;Lee;Sup3rSecret!\nbob@x.example;Bob;Ray;An0therOne!\n";
    for t in [mapped, by_name] {
        let o = run(&t, file);
        assert_eq!(
            o.record.status,
            ImportStatus::Error,
            "{:?}",
            o.record.messages
        );
        let all = o.record.messages.join("\n");
        assert!(all.contains("does not look like a header row"), "{all}");
        for secret in ["Sup3rSecret!", "An0therOne!", "ann@x.example"] {
            assert!(!all.contains(secret), "{secret} in the messages: {all}");
            // The intake archives the copy when there is one, else the original.
            let archived = o.archive_copy.clone().unwrap_or_else(|| file.to_vec());
            assert!(!has(&archived, secret), "{secret} archived: {archived:?}");
            if let Some(r) = &o.report_csv {
                assert!(!has(r, secret), "{secret} in the report");
            }
        }
    }
    // A header row that only lacks a column is still named, and archived as it was.
    let t = Tenant::for_import("t", MatchBy::Email, OnMissing::Keep, &[]);
    let o = run(&t, b"email;first_name;Nachname\nann@x.example;Ann;Lee\n");
    let all = o.record.messages.join("\n");
    assert!(all.contains("email | first_name | Nachname"), "{all}");
    assert!(o.archive_copy.is_none());
}

#[test]
fn an_unmapped_password_column_is_blank_in_the_report_and_the_archive() {
    let t = Tenant::for_import(
        "t",
        MatchBy::Email,
        OnMissing::Keep,
        &[
            ("email", "Email"),
            ("first_name", "First"),
            ("last_name", "Last"),
        ],
    );
    let file = "Email;First;Last;Initial password\nann@x.example;Ann;Lee;Sup3rSecret!\nnot-an-address;Bob;Ray;An0therOne!\n";
    let o = run(&t, file.as_bytes());
    assert_eq!(
        o.record.status,
        ImportStatus::Partial,
        "{:?}",
        o.record.messages
    );
    let report = o.report_csv.clone().expect("a report of the skipped row");
    assert!(has(&report, "not-an-address") && has(&report, "Initial password"));
    let archived = o
        .archive_copy
        .clone()
        .expect("a copy with the column blank");
    assert!(has(&archived, "ann@x.example") && has(&archived, "Initial password"));
    for secret in ["Sup3rSecret!", "An0therOne!"] {
        assert!(!has(&report, secret), "{secret} in the report");
        assert!(!has(&archived, secret), "{secret} archived");
    }
}
