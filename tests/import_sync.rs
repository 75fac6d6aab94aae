//! Sync semantics (design.md §5) on small generated files: edited re-imports, duplicates,
//! restores, previews, email ownership, empty cells, spilling rows to disk (the mass-change
//! hold and approve: `import_hold.rs`).
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use roster::config::{EmptyCells, MatchBy, OnMissing, Tenant};
use roster::import::{approve, preview_bytes, run_bytes, Change, ImportStatus, RunOptions};
use roster::model::UserStatus;

use sync_files::{file, go, open, tenant, users};

#[test]
fn edited_reimport_changes_only_edited_fields() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    let first = go(&store, &t, &file(&users(20)));
    assert_eq!(first.record.counts.inserted, 20);
    let before = store.users("t1", None).unwrap();
    let mut rows = users(20);
    rows[3].1 = "Manager";
    rows[7].1 = "Director";
    let second = go(&store, &t, &file(&rows));
    let r = &second.record;
    assert_eq!(r.status, ImportStatus::Success);
    assert_eq!(
        (r.counts.inserted, r.counts.updated, r.counts.unchanged),
        (0, 2, 18)
    );
    let after = store.users("t1", None).unwrap();
    for (b, a) in before.iter().zip(&after) {
        if a.key == "C003" || a.key == "C007" {
            assert_ne!(a.fields["job_title"], b.fields["job_title"]);
            let mut a2 = a.clone();
            a2.fields = b.fields.clone();
            a2.updated_at = b.updated_at;
            assert_eq!(&a2, b, "only the title and updated_at change");
        } else {
            assert_eq!(a, b, "untouched user {} is identical", a.key);
        }
    }
    assert_eq!(
        store.user("t1", "C007").unwrap().unwrap().fields["job_title"],
        "Director"
    );
}

#[test]
fn same_bytes_twice_is_duplicate() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    let bytes = file(&users(5));
    assert_eq!(go(&store, &t, &bytes).record.status, ImportStatus::Success);
    let again = go(&store, &t, &bytes);
    assert_eq!(again.record.status, ImportStatus::Duplicate);
    assert_eq!(
        again.record.counts.inserted + again.record.counts.updated,
        0
    );
    let h = store.history("t1", 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].status, ImportStatus::Duplicate, "newest first");
    assert_eq!(
        store
            .import_record("t1", &h[1].id)
            .unwrap()
            .unwrap()
            .counts
            .inserted,
        5
    );
}

#[test]
fn removed_then_readded_user_is_restored() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Delete, MatchBy::MappingCode);
    go(&store, &t, &file(&users(20)));
    let without: Vec<_> = users(20).into_iter().filter(|u| u.0 != 4).collect();
    let r = go(&store, &t, &file(&without)).record;
    assert_eq!((r.counts.deleted, r.counts.unchanged), (1, 19));
    let u = store.user("t1", "C004").unwrap().unwrap();
    assert_eq!(u.status, UserStatus::Deleted);
    assert!(u.deleted_at.is_some());
    let r = go(&store, &t, &file(&users(20))).record;
    assert_eq!(
        (r.counts.restored, r.counts.unchanged, r.counts.deleted),
        (1, 19, 0)
    );
    let u = store.user("t1", "C004").unwrap().unwrap();
    assert_eq!(u.status, UserStatus::Active);
    assert!(u.deleted_at.is_none());
    // The admin restore works too.
    go(&store, &t, &file(&without[1..]));
    assert_eq!(
        store.user("t1", "C000").unwrap().unwrap().status,
        UserStatus::Deleted
    );
    let u = roster::import::restore(&*store, &t, "C000").unwrap();
    assert_eq!(u.status, UserStatus::Active);
    assert!(
        roster::import::restore(&*store, &t, "C001").is_err(),
        "not deleted"
    );
}

#[test]
fn skipped_rows_count_as_present() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    go(&store, &t, &file(&users(10)));
    let mut s = String::from_utf8(file(&users(10))).unwrap();
    s = s.replace("user3@x.example", "user3@");
    let r = go(&store, &t, s.as_bytes()).record;
    assert_eq!(r.status, ImportStatus::Partial);
    assert_eq!((r.counts.skipped, r.counts.deactivated), (1, 0));
    assert_eq!(
        store.user("t1", "C003").unwrap().unwrap().status,
        UserStatus::Active
    );
}

#[test]
fn passwords_are_hashed_once_and_rehashed_on_change() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    let rows = vec![(1, "A", "s3cret-one"), (2, "A", "s3cret-two")];
    let r = go(&store, &t, &file(&rows)).record;
    assert_eq!(r.counts.inserted, 2);
    let mut rows2 = rows.clone();
    rows2[0].1 = "B"; // same password, other title
    let r = go(&store, &t, &file(&rows2)).record;
    assert_eq!((r.counts.updated, r.counts.unchanged), (1, 1));
    rows2[1].2 = "new-secret";
    let p = preview_bytes(&store, &t, "users.csv", &file(&rows2)).unwrap();
    assert!(p.changes.iter().any(|c| matches!(c, Change::Update { key, changes }
        if key == "C002" && changes.iter().any(|f| f.field == "password" && f.new.as_deref() == Some("(changed)")))));
    let r = go(&store, &t, &file(&rows2)).record;
    assert_eq!((r.counts.updated, r.counts.unchanged), (1, 1));
    let json = serde_json::to_string(&store.users("t1", None).unwrap()).unwrap();
    assert!(!json.contains("secret") && !json.contains("argon2"));
    assert!(store.user("t1", "C002").unwrap().unwrap().has_password);
}

#[test]
fn email_owned_by_another_user_skips_the_row() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    go(&store, &t, &file(&users(3)));
    let s = "Code;First;Last;Email;Title;Password\nC009;New;Person;user1@x.example;X;\n";
    let r = go(&store, &t, s.as_bytes());
    assert_eq!(
        r.record.status,
        ImportStatus::Error,
        "the only row is skipped"
    );
    let report = String::from_utf8(r.report_csv.unwrap()).unwrap();
    assert!(report.contains("already belongs to user"), "{report}");
    // Two keys swapping addresses in one file is fine; two rows claiming one address is not.
    let s = "Code;First;Last;Email;Title;Password\nC000;A;B;user1@x.example;X;\nC001;A;B;user0@x.example;X;\nC002;A;B;same@x.example;X;\nC005;A;B;same@x.example;X;\n";
    let r = go(&store, &t, s.as_bytes()).record;
    assert_eq!(
        (r.counts.updated, r.counts.skipped),
        (2, 2),
        "{:?}",
        r.messages
    );
    for row in [4, 5] {
        let want = format!(
            "row {row}: Email \"same@x.example\" is given to more than one user in this file (rows 4, 5)"
        );
        assert!(r.messages.contains(&want), "{want} not in {:?}", r.messages);
    }
    assert_eq!(
        store.user("t1", "C001").unwrap().unwrap().email.as_deref(),
        Some("user0@x.example")
    );
}

#[test]
fn empty_cells_keep_or_clear() {
    let (store, _d) = open();
    let mut t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    go(&store, &t, &file(&users(2)));
    let blank = file(&[(0, "", ""), (1, "Engineer", "")]);
    let r = go(&store, &t, &blank).record;
    assert_eq!(r.counts.unchanged, 2);
    assert_eq!(
        store.user("t1", "C000").unwrap().unwrap().fields["job_title"],
        "Engineer"
    );
    t.import.empty_cells = EmptyCells::Clear;
    let r = go(&store, &t, &[&blank[..], b"\n"].concat()).record;
    assert_eq!(r.counts.updated, 1);
    assert!(!store
        .user("t1", "C000")
        .unwrap()
        .unwrap()
        .fields
        .contains_key("job_title"));
}

#[test]
fn ledger_and_outbox_and_record_import() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Keep, MatchBy::MappingCode);
    let out = go(&store, &t, &file(&users(2)));
    let e = store.ledger_get("t1", "users.csv").unwrap().unwrap();
    assert_eq!(e.state, roster::store::LedgerState::Done);
    assert_eq!(e.import_id.as_deref(), Some(out.record.id.as_str()));
    let mut rec = out.record.clone();
    rec.archived_as = Some("processed/users.csv.20261121T000000Z.csv".into());
    store.record_import(&rec).unwrap();
    assert_eq!(
        store
            .import_record("t1", &rec.id)
            .unwrap()
            .unwrap()
            .archived_as,
        rec.archived_as
    );
    let id = store
        .outbox_push(&["a@b.example".into()], b"Subject: x\r\n\r\nhi")
        .unwrap();
    let due = store.outbox_due(chrono::Utc::now()).unwrap();
    assert_eq!(due.len(), 1);
    let later = chrono::Utc::now() + chrono::Duration::minutes(5);
    store
        .outbox_defer(id, later, 1, "connection refused")
        .unwrap();
    assert!(store.outbox_due(chrono::Utc::now()).unwrap().is_empty());
    assert_eq!(store.outbox_due(later).unwrap()[0].attempts, 1);
    store.outbox_mark_sent(id).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
}

/// Runs a whole sequence of imports (insert, edit with duplicates and an email clash, a hold
/// and its approval) with the given row memory; returns what each run recorded and the users.
fn scenario(row_memory: usize) -> (Vec<String>, String, bool) {
    let (store, _d) = open();
    let t = tenant(OnMissing::Deactivate, MatchBy::MappingCode);
    let opts = RunOptions {
        row_memory,
        ..Default::default()
    };
    let run = |bytes: &[u8]| run_bytes(&store, &t, "users.csv", bytes, &opts).unwrap();
    let mut rows: Vec<(u32, String, String)> = (0..300)
        .map(|i| {
            let pw = if i % 3 == 0 {
                format!("pw-{i}")
            } else {
                String::new()
            };
            (i, "Engineer".to_string(), pw)
        })
        .collect();
    let text = |rows: &[(u32, String, String)], extra: &str| {
        let mut s = String::from("Code;First;Last;Email;Title;Password\n");
        for (i, title, pw) in rows {
            s.push_str(&format!(
                "C{i:03};First{i};Last{i};user{i}@x.example;{title};{pw}\n"
            ));
        }
        s.push_str(extra);
        s.into_bytes()
    };
    let mut seen = Vec::new();
    let mut note = |r: roster::import::ImportOutcome| {
        let r = r.record;
        // Without the parts that name a time (the held run's id, the approval time).
        let messages: Vec<&String> = r
            .messages
            .iter()
            .filter(|m| !m.contains(" at ") && !m.contains("Approve with"))
            .collect();
        seen.push(format!(
            "{} +{} ~{} ={} -{} skip{} {:?}",
            r.status,
            r.counts.inserted,
            r.counts.updated,
            r.counts.unchanged,
            r.counts.deactivated,
            r.counts.skipped,
            messages
        ));
        r.id
    };
    note(run(&text(&rows, "")));
    for r in rows.iter_mut().step_by(10) {
        r.1 = "Lead".into();
    }
    rows[3].2 = "changed-password".into();
    rows.remove(5);
    let extra = "C010;Dup;Dup;dup@x.example;X;\nC299;Other;Person;user1@x.example;X;\n";
    note(run(&text(&rows, extra)));
    // Keep 100 of 300: held; then approved.
    rows.truncate(100);
    let held = note(run(&text(&rows, "")));
    note(approve(&store, &t, &held).unwrap());
    let users: Vec<String> = store
        .users("t1", None)
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{} {:?} {:?} {:?} {}",
                u.key, u.status, u.email, u.fields, u.has_password
            )
        })
        .collect();
    let pw_ok = store
        .verify_user_password("t1", "C003", "changed-password")
        .unwrap()
        && store.verify_user_password("t1", "C006", "pw-6").unwrap();
    (seen, users.join("\n"), pw_ok)
}

#[test]
fn spilling_rows_to_disk_changes_no_outcome() {
    let in_memory = scenario(64 << 20);
    let spilled = scenario(256);
    assert_eq!(in_memory.0.len(), 4);
    assert!(in_memory.0[2].starts_with("held"), "{:?}", in_memory.0);
    assert!(in_memory.2 && spilled.2, "passwords verify");
    assert_eq!(in_memory.0, spilled.0);
    assert_eq!(in_memory.1, spilled.1);
}

/// Moved from `store::ledger` (the store must not import the engine, not even in tests).
#[test]
fn a_commit_stamps_only_the_claim_running_its_file() {
    let (store, dir) = open();
    let tenant = Tenant::for_import(
        "t",
        MatchBy::Email,
        OnMissing::Keep,
        &[
            ("email", "email"),
            ("first_name", "first"),
            ("last_name", "last"),
        ],
    );
    let file = dir.path().join("users.csv");
    std::fs::write(&file, "email,first,last\na@t.example,A,A\n").unwrap();
    // A run of the file with no claim registered stamps nothing.
    roster::import::run_file(
        &store,
        &tenant,
        &file,
        &roster::import::RunOptions::default(),
    )
    .unwrap();
    assert!(store.claims_stamped("t").unwrap().is_empty());
    store.claim_running("t", "users.csv", "claim-2").unwrap();
    std::fs::write(&file, "email,first,last\na@t.example,B,B\n").unwrap();
    let second = roster::import::run_file(
        &store,
        &tenant,
        &file,
        &roster::import::RunOptions::default(),
    )
    .unwrap();
    assert_eq!(
        store.claim_committed("t", "claim-2").unwrap(),
        Some(second.record.id.clone())
    );
    // The next run of the same name is not claim-2's.
    std::fs::write(&file, "email,first,last\na@t.example,C,C\n").unwrap();
    roster::import::run_file(
        &store,
        &tenant,
        &file,
        &roster::import::RunOptions::default(),
    )
    .unwrap();
    assert_eq!(
        store.claim_committed("t", "claim-2").unwrap(),
        Some(second.record.id)
    );
    assert_eq!(store.claims_stamped("t").unwrap(), ["claim-2"]);
    store.claim_done("t", "claim-2").unwrap();
    assert_eq!(store.claim_committed("t", "claim-2").unwrap(), None);
}

/// Review s19 upgrade F1: a store written by the first version keeps the bare sha256 of the
/// last applied file. The same bytes pushed again after the upgrade must still be a
/// `duplicate`: applied once more, the file undid an operator's `restore`.
#[test]
fn the_same_file_against_a_first_version_state_is_a_duplicate() {
    let (store, _d) = open();
    let t = tenant(OnMissing::Delete, MatchBy::MappingCode);
    go(&store, &t, &file(&users(20)));
    let without: Vec<_> = users(20).into_iter().filter(|u| u.0 != 4).collect();
    let applied = go(&store, &t, &file(&without)).record;
    assert_eq!(applied.counts.deleted, 1);
    roster::import::restore(&*store, &t, "C004").unwrap();
    // The state as the first version left it: the file's sha256 alone.
    let state = store.tenant_state("t1").unwrap();
    store
        .commit(&roster::store::Commit {
            tenant: "t1".into(),
            expected_version: state.version,
            last_applied_sha256: Some(applied.sha256.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        store.tenant_state("t1").unwrap().last_applied_sha256,
        Some(applied.sha256.clone())
    );
    let again = go(&store, &t, &file(&without)).record;
    assert_eq!(
        again.status,
        ImportStatus::Duplicate,
        "{:?}",
        again.messages
    );
    let u = store.user("t1", "C004").unwrap().unwrap();
    assert_eq!(
        u.status,
        UserStatus::Active,
        "the operator's restore stands"
    );
    // Other bytes are imported as ever.
    let edited: Vec<_> = without.iter().map(|u| (u.0, "Lead", u.2)).collect();
    assert_eq!(go(&store, &t, &file(&edited)).record.counts.updated, 19);
}
