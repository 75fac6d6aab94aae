//! Composition of report mail, checked by parsing the produced bytes with an independent MIME
//! parser (mail-parser); plus the backoff schedule and the outbox type's serde form.

use mail_parser::{MessageParser, MimeHeaders};
use roster::mail::{
    compose_notice, compose_report, next_attempt, report_subject, Backoff, ComposeError, Counts,
    CsvAttachment, OutgoingMail, RunSummary,
};
use std::time::Duration;

const FROM: &str = "Roster <roster@example.com>";

fn to() -> Vec<String> {
    vec!["it@acme.example".into(), "hr@acme.example".into()]
}

/// A report CSV with a BOM, CRLF, a semicolon delimiter, non-ASCII names, and a line starting
/// with a dot (SMTP dot-stuffing must not touch it).
fn report_csv() -> Vec<u8> {
    let mut b = vec![0xEF, 0xBB, 0xBF];
    b.extend_from_slice(
        "row;E-mail;First Name;Last Name;reason\r\n\
         3;x@;Ivana;Kovačić;invalid email \"x@\"\r\n\
         7;jm@acme.example;Jürgen;Müller;date of birth 31.02.1990 is not a date\r\n\
         .9;;'=SUM(A1);Đurić;missing E-mail\r\n"
            .as_bytes(),
    );
    b
}

fn partial_run() -> RunSummary {
    RunSummary {
        tenant: "acme".into(),
        file: "users_2026_02_12.csv".into(),
        status: "partial".into(),
        import_id: Some("17".into()),
        counts: Counts {
            rows: 120,
            inserted: 3,
            updated: 10,
            unchanged: 100,
            deactivated: 2,
            deleted: 0,
            restored: 1,
            skipped: 4,
            errors: 4,
        },
        messages: vec![
            "Row 3: invalid email \"x@\".".into(),
            "Row 7: Jürgen Müller has a date of birth that is not a date.".into(),
        ],
        attachment: Some(CsvAttachment {
            file_name: "users_2026_02_12.csv.20260212T073000Z.report.csv".into(),
            bytes: report_csv(),
            left_out: 0,
        }),
        archived_as: Some("processed/users_2026_02_12.20260212T073000Z.csv".into()),
    }
}

#[test]
fn subject_is_exactly_roster_tenant_file_status() {
    assert_eq!(
        report_subject("acme", "users_2026_02_12.csv", "partial"),
        "Roster: acme users_2026_02_12.csv partial"
    );
    // A file name cannot smuggle in header lines.
    assert_eq!(
        report_subject("acme", "a\r\nBcc: x@evil.example", "error"),
        "Roster: acme a  Bcc: x@evil.example error"
    );
}

#[test]
fn report_parses_with_subject_envelope_counts_and_exact_attachment() {
    let mail = compose_report(FROM, &to(), &partial_run()).expect("compose");
    assert_eq!(mail.tenant, "acme");
    assert_eq!(mail.from, "roster@example.com");
    assert_eq!(mail.to, to());
    assert_eq!(mail.subject, "Roster: acme users_2026_02_12.csv partial");
    assert!(mail.bytes.is_ascii(), "the message is 7-bit clean");

    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    assert_eq!(
        msg.subject(),
        Some("Roster: acme users_2026_02_12.csv partial")
    );
    let from = msg.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some("roster@example.com"));
    assert_eq!(from.name(), Some("Roster"));
    let rcpts: Vec<_> = msg
        .to()
        .expect("To")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(rcpts, ["it@acme.example", "hr@acme.example"]);
    assert!(msg.date().is_some(), "Date header");
    assert!(msg.message_id().is_some(), "Message-ID header");
    let root = msg.root_part();
    assert!(
        root.is_content_type("multipart", "mixed"),
        "multipart/mixed"
    );

    let body = msg.body_text(0).expect("text body");
    for sentence in [
        "Roster processed the file users_2026_02_12.csv for tenant acme. Status: partial.",
        "120 rows were read from the file.",
        "3 users were added.",
        "10 users were updated.",
        "100 users were unchanged.",
        "2 users were deactivated.",
        "0 users were deleted.",
        "1 user was restored.",
        "4 rows were skipped.",
        "4 errors were found.",
        "Row 7: Jürgen Müller has a date of birth that is not a date.",
    ] {
        assert!(body.contains(sentence), "body lacks {sentence:?}:\n{body}");
    }
    let text = msg.text_part(0).expect("text part");
    let ct = text.content_type().expect("text content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
    assert_eq!(
        ct.attribute("charset")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("utf-8")
    );

    assert_eq!(msg.attachment_count(), 1);
    let att = msg.attachment(0).expect("attachment");
    let ct = att.content_type().expect("attachment content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("csv")));
    assert_eq!(
        att.attachment_name(),
        Some("users_2026_02_12.csv.20260212T073000Z.report.csv")
    );
    assert_eq!(att.content_transfer_encoding(), Some("base64"));
    assert_eq!(
        att.contents(),
        report_csv().as_slice(),
        "attachment bytes exact"
    );
}

#[test]
fn held_report_says_how_to_preview_and_approve() {
    let mut run = RunSummary {
        status: "held".into(),
        import_id: Some("42".into()),
        attachment: None,
        archived_as: Some("processed/users_2026_02_12.20260212T020000Z.csv".into()),
        ..partial_run()
    };
    run.counts.deactivated = 89;
    let mail = compose_report(FROM, &to(), &run).expect("compose");
    assert_eq!(mail.subject, "Roster: acme users_2026_02_12.csv held");
    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    let body = msg.body_text(0).expect("body");
    assert!(body.contains("Nothing was changed yet."), "{body}");
    // The held file left the upload folder: the preview names the archived copy, and the
    // users the run would deactivate are not told as deactivated.
    assert!(
        body.contains("`roster preview acme FILE`, FILE being processed/users_2026_02_12.20260212T020000Z.csv"),
        "{body}"
    );
    assert!(
        body.contains("89 users would be deactivated once approved."),
        "{body}"
    );
    assert!(!body.contains("were deactivated"), "{body}");
    assert!(body.contains("`roster approve acme 42`"), "{body}");
    assert_eq!(msg.attachment_count(), 0);
}

#[test]
fn held_report_without_an_id_points_to_history() {
    let run = RunSummary {
        status: "held".into(),
        import_id: None,
        ..partial_run()
    };
    let body = roster::mail::report_body(&run);
    assert!(body.contains("`roster approve acme IMPORT_ID`"), "{body}");
    assert!(body.contains("`roster history acme`"), "{body}");
}

#[test]
fn missing_report_says_the_file_did_not_arrive() {
    let run = RunSummary {
        tenant: "acme".into(),
        file: "users_{date}.csv".into(),
        status: "missing".into(),
        ..RunSummary::default()
    };
    let body = roster::mail::report_body(&run);
    assert!(
        body.contains("did not arrive before the schedule"),
        "{body}"
    );
    assert!(body.contains("`roster run-now acme`"), "{body}");
    assert!(
        !body.contains("Counts:"),
        "no zero counts for a missing file: {body}"
    );
}

#[test]
fn error_report_says_fix_and_upload_again() {
    let run = RunSummary {
        status: "error".into(),
        counts: Counts::default(),
        messages: vec!["The file has no header row.".into()],
        ..partial_run()
    };
    let body = roster::mail::report_body(&run);
    assert!(body.contains("Nothing was changed."), "{body}");
    assert!(body.contains("- The file has no header row."), "{body}");
    assert!(body.contains("Fix the file"), "{body}");
    assert!(body.contains("upload it again"), "{body}");
}

#[test]
fn non_ascii_in_subject_body_and_names_survives() {
    let run = RunSummary {
        tenant: "acme".into(),
        file: "zaposlenici_Kovačić.csv".into(),
        status: "error".into(),
        messages: vec!["Row 2: Jürgen Kovačić – Đurđa Šimić: unknown org unit „ZG-02“.".into()],
        ..RunSummary::default()
    };
    let to = vec!["Jürgen Kovačić <jk@acme.example>".to_string()];
    let mail = compose_report(FROM, &to, &run).expect("compose");
    assert!(mail.bytes.is_ascii(), "non-ASCII is encoded, not sent raw");
    assert_eq!(mail.to, ["jk@acme.example"]);
    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    assert_eq!(
        msg.subject(),
        Some("Roster: acme zaposlenici_Kovačić.csv error")
    );
    let rcpt = msg.to().and_then(|a| a.first()).expect("To");
    assert_eq!(rcpt.name(), Some("Jürgen Kovačić"));
    let body = msg.body_text(0).expect("body");
    assert!(
        body.contains("Row 2: Jürgen Kovačić – Đurđa Šimić: unknown org unit „ZG-02“."),
        "{body}"
    );
}

#[test]
fn notice_is_a_single_plain_part() {
    let mail = compose_notice(
        FROM,
        &to(),
        "acme",
        "Roster: acme notice",
        "Hello, Đurđa.\n",
    )
    .expect("compose");
    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    assert_eq!(msg.subject(), Some("Roster: acme notice"));
    assert!(msg.root_part().is_content_type("text", "plain"));
    assert_eq!(
        msg.body_text(0).as_deref().map(str::trim_end),
        Some("Hello, Đurđa.")
    );
}

#[test]
fn bad_addresses_are_refused_with_the_address_named() {
    let err = compose_report("not an address", &to(), &partial_run()).unwrap_err();
    assert!(
        matches!(err, ComposeError::BadSender(ref s) if s == "not an address"),
        "{err}"
    );
    let err = compose_report(FROM, &["it@".to_string()], &partial_run()).unwrap_err();
    assert!(err.to_string().contains("\"it@\""), "{err}");
    let err = compose_report(FROM, &[], &partial_run()).unwrap_err();
    assert!(
        matches!(err, ComposeError::NoRecipients(ref t) if t == "acme"),
        "{err}"
    );
}

#[test]
fn outgoing_mail_round_trips_through_serde() {
    let mail = compose_report(FROM, &to(), &partial_run()).expect("compose");
    let json = serde_json::to_string(&mail).expect("serialize");
    let back: OutgoingMail = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, mail);
}

#[test]
fn backoff_doubles_from_five_seconds_and_caps_at_fifteen_minutes() {
    assert_eq!(next_attempt(0), Duration::ZERO);
    assert_eq!(next_attempt(1), Duration::from_secs(5));
    assert_eq!(next_attempt(2), Duration::from_secs(10));
    assert_eq!(next_attempt(3), Duration::from_secs(20));
    assert_eq!(next_attempt(8), Duration::from_secs(640));
    assert_eq!(next_attempt(9), Duration::from_secs(900));
    assert_eq!(next_attempt(40), Duration::from_secs(900));
    assert_eq!(next_attempt(u32::MAX), Duration::from_secs(900));
    let fast = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_millis(250),
    };
    assert_eq!(fast.delay(2), Duration::from_millis(200));
    assert_eq!(fast.delay(3), Duration::from_millis(250));
}

#[test]
fn from_stored_rebuilds_the_envelope_and_log_fields_from_the_bytes() {
    let mail = compose_report(FROM, &to(), &partial_run()).expect("compose");
    let back = OutgoingMail::from_stored(mail.to.clone(), mail.bytes.clone());
    assert_eq!(back, mail);
    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    assert_eq!(
        msg.header_raw(roster::mail::TENANT_HEADER).map(str::trim),
        Some("acme")
    );
}

#[test]
fn a_partial_run_without_skipped_rows_names_the_missing_column() {
    // A run is partial also when the file lacks a column the profile maps; no row was skipped.
    let mut run = partial_run();
    run.counts.skipped = 0;
    run.counts.errors = 0;
    let body = roster::mail::report_body(&run);
    assert!(
        body.contains("lacks a column the tenant's profile maps"),
        "{body}"
    );
    assert!(
        body.contains("Add the missing column to the export"),
        "{body}"
    );
    assert!(!body.contains("Some rows were skipped"), "{body}");
    assert!(!body.contains("Correct the skipped rows"), "{body}");
}

/// Review s30: the run's mail copied the whole failure report (up to ~400 MB) before compose
/// dropped it for being over the cap. Now only a report that will be attached is copied, and
/// the mail still gives the left-out report's size.
#[test]
fn a_report_over_the_cap_is_not_copied_and_its_size_is_said() {
    let big = vec![b'x'; roster::mail::MAX_ATTACHMENT_BYTES + 1_500_000];
    let att = CsvAttachment::new("big.report.csv".into(), &big);
    assert!(
        att.bytes.is_empty(),
        "a report too large to attach is not copied"
    );
    assert_eq!(att.size(), big.len());
    let small = CsvAttachment::new("small.report.csv".into(), b"row;reason\r\n");
    assert_eq!(small.bytes, b"row;reason\r\n");

    let run = RunSummary {
        attachment: Some(att),
        ..partial_run()
    };
    let mail = compose_report(FROM, &to(), &run).expect("compose");
    let msg = MessageParser::default().parse(&mail.bytes).expect("parses");
    assert_eq!(msg.attachment_count(), 0);
    let body = msg.body_text(0).expect("body");
    assert!(
        body.contains("At 5.7 MB it is too large to attach"),
        "{body}"
    );
}
