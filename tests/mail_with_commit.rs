//! Mails Roster owes for runs it records itself are queued in the same write as the run (review
//! s18 crash F1, F2: killed between the two, the mail was lost for good): an approved held run's
//! mail goes into the outbox with the approve's commit, a `missing` run's with its record; an
//! approve that is refused queues nothing. Since session 24 every intake run's mail too (it was
//! queued after the commit, and a kill between queueing and marking it queued made a second
//! one): an imported file's with the engine's commit, given the run's failure report; a
//! refused file's with its record and claim stamp.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use chrono::Utc;
use roster::config::{MatchBy, OnMissing};
use roster::import::{approve_mailed, run_bytes, ImportStatus, MailFor, RunOptions};
use roster::model::ImportRecord;
use roster::store::OutboxMail;
use std::sync::Arc;
use sync_files::{file, go, open, tenant, users};

/// A mail naming the record's id and status.
fn mail_of(record: &ImportRecord) -> OutboxMail {
    OutboxMail {
        recipients: vec!["hr@x.example".into()],
        message: format!(
            "Subject: run {} {}\r\n\r\nbody\r\n",
            record.id, record.status
        )
        .into_bytes(),
    }
}

/// The messages waiting in the outbox, as text.
fn queued(store: &roster::store::Store) -> Vec<String> {
    let due = store.outbox_due(Utc::now() + chrono::Duration::days(1));
    let due = due.unwrap_or_else(|e| panic!("{e:#}"));
    due.into_iter()
        .map(|m| String::from_utf8_lossy(&m.message).into_owned())
        .collect()
}

#[test]
fn an_approval_queues_its_mail_in_its_own_commit() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(100)));
    let held = go(&store, &t, &file(&users(60))).record;
    assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
    assert_eq!(store.outbox_len().unwrap(), 0);
    let mail: MailFor = Arc::new(|r: &ImportRecord, _report| Some(mail_of(r)));
    let applied = approve_mailed(&store, &t, &held.id, Some(mail.clone()))
        .unwrap()
        .record;
    assert_eq!(applied.status, ImportStatus::Success);
    assert_eq!(
        queued(&store),
        vec![format!(
            "Subject: run {} success\r\n\r\nbody\r\n",
            applied.id
        )]
    );
    // Approving it again is refused, and queues nothing.
    assert!(approve_mailed(&store, &t, &held.id, Some(mail)).is_err());
    assert_eq!(store.outbox_len().unwrap(), 1);
}

#[test]
fn a_record_and_its_mail_are_written_together() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let mut missing = go(&store, &t, &file(&users(3))).record;
    missing.id = store.new_import_id(Utc::now()).unwrap();
    missing.status = ImportStatus::Missing;
    // Written under the tenant's lease, as the intake writes it.
    assert!(store.take_lease("tenant:t1").unwrap().is_some());
    store
        .record_leased(&missing, Some(&mail_of(&missing)), "tenant:t1")
        .unwrap();
    let stored = store.import_record("t1", &missing.id).unwrap();
    assert_eq!(stored.map(|r| r.status), Some(ImportStatus::Missing));
    assert_eq!(
        queued(&store),
        vec![format!(
            "Subject: run {} missing\r\n\r\nbody\r\n",
            missing.id
        )]
    );
}

#[test]
fn an_import_queues_its_mail_with_its_commit_given_its_report() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reports = seen.clone();
    let mail: MailFor = Arc::new(move |r: &ImportRecord, report: Option<&[u8]>| {
        reports.lock().unwrap().push(report.map(<[u8]>::to_vec));
        Some(mail_of(r))
    });
    let opts = RunOptions {
        mail: Some(mail.clone()),
        ..Default::default()
    };
    let ok = run_bytes(&store, &t, "users.csv", &file(&users(3)), &opts).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 1);
    assert_eq!(
        queued(&store),
        vec![format!(
            "Subject: run {} success\r\n\r\nbody\r\n",
            ok.record.id
        )]
    );
    // A run with a bad row: the mail is composed with the failure report the run wrote.
    let mut bad = file(&users(3));
    bad.extend_from_slice(b"C999;F;L;not-an-email;T;\n");
    let partial = run_bytes(&store, &t, "users.csv", &bad, &opts).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 2, "{:?}", partial.record);
    let reports = seen.lock().unwrap().clone();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0], None, "a clean run has no failure report");
    assert_eq!(reports[1].as_deref(), partial.report_csv.as_deref());
    assert!(reports[1].is_some(), "{:?}", partial.record);
    // A dry run commits nothing and queues nothing.
    let dry = RunOptions {
        dry_run: true,
        ..opts
    };
    run_bytes(&store, &t, "users.csv", &file(&users(4)), &dry).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 2);
}

#[test]
fn a_claimed_record_and_its_mail_are_written_together() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let mut refused = go(&store, &t, &file(&users(3))).record;
    refused.id = store.new_import_id(Utc::now()).unwrap();
    refused.status = ImportStatus::Error;
    store
        .record_claimed(&refused, "c-1-m", Some(&mail_of(&refused)), None)
        .unwrap();
    assert_eq!(
        store.claim_committed("t1", "c-1-m").unwrap().as_deref(),
        Some(refused.id.as_str())
    );
    assert_eq!(
        queued(&store),
        vec![format!("Subject: run {} error\r\n\r\nbody\r\n", refused.id)]
    );
}

/// One pass of the mail worker takes at most `OUTBOX_DUE_BYTES` of message bodies (the first
/// message always), not a hundred reports of several MB each (reviewer s28: up to about
/// 560 MB at once); the rest wait for the next pass.
#[test]
fn a_pass_takes_at_most_its_bytes_of_messages() {
    let (store, _d) = open();
    let big = roster::store::OUTBOX_DUE_BYTES * 3 / 8; // 12 MiB: three pass the line
    let to = vec!["hr@x.example".to_string()];
    let ids: Vec<u64> = (0..5u8)
        .map(|n| store.outbox_push(&to, &vec![b'a' + n; big]).unwrap())
        .collect();
    let due = store
        .outbox_due(Utc::now() + chrono::Duration::days(1))
        .unwrap();
    let got: Vec<u64> = due.iter().map(|m| m.id).collect();
    assert_eq!(got, ids[..3], "the first three (36 MiB), oldest first");
    assert!(due.iter().all(|m| m.message.len() == big));
    // A single message over the line still goes.
    let (store, _d2) = open();
    let huge = store
        .outbox_push(&to, &vec![b'z'; roster::store::OUTBOX_DUE_BYTES + 1])
        .unwrap();
    let due = store
        .outbox_due(Utc::now() + chrono::Duration::days(1))
        .unwrap();
    assert_eq!(due.iter().map(|m| m.id).collect::<Vec<_>>(), [huge]);
}
