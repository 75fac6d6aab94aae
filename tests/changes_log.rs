//! The change log and the event log as the import engine, a restore and records made outside a
//! commit write them (docs/delivery.md), read back through the `ChangeLog` seam.
//!
//! Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres` (tests/support/store.rs).

#[path = "support/sync_files.rs"]
mod sync_files;
#[path = "support/store.rs"]
mod test_store;

use chrono::Utc;
use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{approve, run_bytes, ImportStatus, RunOptions};
use roster::model::changelog::{ChangeKind, Event, EventType, LoggedChange};
use roster::model::ImportRecord;
use roster::store::Store;

fn tenant(on_missing: OnMissing) -> Tenant {
    sync_files::tenant(on_missing, MatchBy::MappingCode)
}

fn file(rows: &[(u32, &str, &str)]) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email;Title;Password\n");
    for (i, title, pw) in rows {
        s.push_str(&format!(
            "C{i:04};First{i};Last{i};user{i}@x.example;{title};{pw}\n"
        ));
    }
    s.into_bytes()
}

fn users(n: u32) -> Vec<(u32, &'static str, &'static str)> {
    (0..n).map(|i| (i, "Engineer", "")).collect()
}

fn go(store: &Store, t: &Tenant, bytes: &[u8]) -> ImportRecord {
    run_bytes(store, t, "users.csv", bytes, &RunOptions::default())
        .expect("run")
        .record
}

fn all_changes(store: &Store) -> Vec<LoggedChange> {
    store.changes("t1", 0, 1_000_000).unwrap()
}

fn all_events(store: &Store) -> Vec<Event> {
    store.events("t1", 0, 1_000_000).unwrap()
}

fn assert_no_gaps(changes: &[LoggedChange], events: &[Event]) {
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c.seq, i as u64 + 1, "change seq without gaps");
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "event seq without gaps");
    }
}

#[test]
fn a_first_import_logs_one_created_per_user_in_chunks_then_its_record() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Keep);
    let rec = go(&store, &t, &file(&users(1200)));
    assert_eq!(rec.status, ImportStatus::Success);
    let changes = all_changes(&store);
    let events = all_events(&store);
    assert_no_gaps(&changes, &events);
    assert_eq!(changes.len(), 1200);
    assert!(changes
        .iter()
        .all(|c| c.kind == ChangeKind::Created && c.fields.is_empty()));
    assert!(changes
        .iter()
        .all(|c| c.import_id.as_deref() == Some(rec.id.as_str())));
    let mut keys: Vec<_> = changes.iter().map(|c| c.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1200, "one entry per user");
    let ranges: Vec<_> = events.iter().filter_map(|e| e.changes).collect();
    assert_eq!(ranges, vec![(1, 500), (501, 1000), (1001, 1200)]);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::DirectoryChanged,
            EventType::DirectoryChanged,
            EventType::DirectoryChanged,
            EventType::ImportFinished
        ]
    );
    assert_eq!(events[3].import_id.as_deref(), Some(rec.id.as_str()));

    // Paging: after/limit walk the same entries in order.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let page = store.changes("t1", after, 77).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 77);
        after = page.last().map(|c| c.seq).unwrap();
        paged.extend(page);
    }
    assert_eq!(paged, changes);
    let mid = store.changes("t1", 499, 3).unwrap();
    assert_eq!(
        mid.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![500, 501, 502]
    );
    assert!(store.changes("t1", 1200, 10).unwrap().is_empty());
    assert_eq!(store.events("t1", 2, 10).unwrap(), events[2..].to_vec());
    assert!(store.changes("other", 0, 10).unwrap().is_empty());
}

#[test]
fn an_update_logs_exactly_the_changed_fields_and_a_duplicate_or_unchanged_run_only_its_record() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Keep);
    go(&store, &t, &file(&users(20)));
    let base = all_changes(&store).len() as u64;
    let mut rows = users(20);
    rows[3].1 = "Manager";
    rows[7].2 = "s3cret-Passw0rd";
    let up = go(&store, &t, &file(&rows));
    let new = store.changes("t1", base, 100).unwrap();
    assert_eq!(new.len(), 2, "{new:?}");
    let c3 = new.iter().find(|c| c.key == "C0003").unwrap();
    assert_eq!(c3.kind, ChangeKind::Updated);
    assert_eq!(c3.fields.len(), 1);
    assert_eq!(c3.fields[0].field, "job_title");
    assert_eq!(c3.fields[0].old.as_deref(), Some("Engineer"));
    assert_eq!(c3.fields[0].new.as_deref(), Some("Manager"));
    let c7 = new.iter().find(|c| c.key == "C0007").unwrap();
    assert_eq!(c7.fields.len(), 1);
    assert_eq!(c7.fields[0].field, "password");
    assert_eq!(c7.fields[0].new.as_deref(), Some("(changed)"));
    assert!(!format!("{c7:?}").contains("s3cret"));
    assert!(new
        .iter()
        .all(|c| c.import_id.as_deref() == Some(up.id.as_str())));

    let events_before = all_events(&store).len();
    // The same bytes: a duplicate; the same users in other bytes: unchanged. Neither logs a
    // change; each announces its record.
    let dup = go(&store, &t, &file(&rows));
    assert_eq!(dup.status, ImportStatus::Duplicate);
    let mut other_bytes = file(&rows);
    other_bytes.extend_from_slice(b"\n");
    let same = go(&store, &t, &other_bytes);
    assert_eq!(same.counts.updated + same.counts.inserted, 0);
    assert_eq!(all_changes(&store).len() as u64, base + 2);
    let events = all_events(&store);
    assert_eq!(events.len(), events_before + 2);
    let tail: Vec<_> = events[events_before..]
        .iter()
        .map(|e| (e.kind, e.import_id.clone(), e.changes))
        .collect();
    assert_eq!(
        tail,
        vec![
            (EventType::ImportFinished, Some(dup.id.clone()), None),
            (EventType::ImportFinished, Some(same.id.clone()), None)
        ]
    );
    assert_no_gaps(&all_changes(&store), &events);
}

#[test]
fn deactivate_delete_and_restores_are_logged() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Delete);
    go(&store, &t, &file(&users(20)));
    let without: Vec<_> = users(20).into_iter().filter(|u| u.0 != 4).collect();
    go(&store, &t, &file(&without));
    let back = go(&store, &t, &file(&users(20)));
    go(&store, &t, &file(&without[1..])); // C0000 deleted
    let by_operator = roster::import::restore(&*store, &t, "C0000").unwrap();
    assert_eq!(by_operator.key, "C0000");
    let changes = all_changes(&store);
    let events = all_events(&store);
    assert_no_gaps(&changes, &events);
    let history = store.user_changes("t1", "C0004", 10).unwrap();
    let kinds: Vec<_> = history.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Deleted,
            ChangeKind::Restored,
            ChangeKind::Deleted,
            ChangeKind::Created
        ],
        "newest first"
    );
    assert_eq!(history[1].import_id.as_deref(), Some(back.id.as_str()));
    assert!(history.windows(2).all(|w| w[0].seq > w[1].seq));
    let last = changes.last().unwrap();
    assert_eq!(
        (last.key.as_str(), last.kind),
        ("C0000", ChangeKind::Restored)
    );
    assert_eq!(last.import_id, None, "an operator's restore has no import");
    let ev = events.last().unwrap();
    assert_eq!(ev.kind, EventType::DirectoryChanged);
    assert_eq!(ev.import_id, None);
    assert_eq!(ev.changes, Some((last.seq, last.seq)));
    assert_eq!(store.user_changes("t1", "C0000", 1).unwrap()[0], *last);

    // Deactivation.
    let (store, _d2) = test_store::temp_store();
    let t = tenant(OnMissing::Deactivate);
    go(&store, &t, &file(&users(20)));
    go(&store, &t, &file(&users(19)));
    let gone = store.user_changes("t1", "C0019", 10).unwrap();
    assert_eq!(gone[0].kind, ChangeKind::Deactivated);
}

#[test]
fn a_held_or_failed_run_logs_no_change_and_approve_logs_the_plan() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Deactivate);
    go(&store, &t, &file(&users(100)));
    let base = all_changes(&store).len();
    let held = go(&store, &t, &file(&users(60)));
    assert_eq!(held.status, ImportStatus::Held);
    let failed = go(&store, &t, b"Nothing;Useful\n1;2\n");
    assert_eq!(failed.status, ImportStatus::Error, "{:?}", failed.messages);
    assert_eq!(all_changes(&store).len(), base, "no change logged");
    let events = all_events(&store);
    let tail: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.kind, e.import_id.clone()))
        .collect();
    assert_eq!(
        tail,
        vec![
            (EventType::ImportHeld, Some(held.id.clone())),
            (EventType::ImportFailed, Some(failed.id.clone()))
        ]
    );
    let applied = approve(&store, &t, &held.id).unwrap().record;
    assert_eq!(applied.status, ImportStatus::Success);
    let new = store.changes("t1", base as u64, 1000).unwrap();
    assert_eq!(new.len(), 40);
    assert!(new
        .iter()
        .all(|c| c.kind == ChangeKind::Deactivated
            && c.import_id.as_deref() == Some(held.id.as_str())));
    assert_no_gaps(&all_changes(&store), &all_events(&store));
}

#[test]
fn a_record_made_outside_a_commit_is_announced_once() {
    let (store, _d) = test_store::temp_store();
    let now = Utc::now();
    let id = store.new_import_id(now).unwrap();
    let mut r = ImportRecord::begun(id, "t1", "users.csv", ImportStatus::Missing, now, now);
    store.record_import(&r).unwrap();
    r.messages.push("filled in later".into());
    store.record_import(&r).unwrap();
    let id2 = store.new_import_id(now).unwrap();
    let r2 = ImportRecord::begun(id2, "t1", "users.csv", ImportStatus::Error, now, now);
    store.record_claimed(&r2, "c-1", None, None).unwrap();
    let events = all_events(&store);
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.import_id.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventType::FileMissing, Some(r.id.clone())),
            (EventType::ImportFailed, Some(r2.id.clone()))
        ]
    );
    assert!(all_changes(&store).is_empty());
}

#[test]
fn trim_removes_entries_older_than_the_time_and_seq_keeps_growing() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Keep);
    go(&store, &t, &file(&users(30)));
    let cut = Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut rows = users(30);
    rows[1].1 = "Lead";
    go(&store, &t, &file(&rows));
    let before_changes = all_changes(&store).len();
    let before_events = all_events(&store).len();
    assert_eq!(before_changes, 31);
    let removed = store.trim_changes("t1", cut).unwrap();
    let left = all_changes(&store);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].seq, 31);
    assert_eq!(left[0].key, "C0001");
    let events = all_events(&store);
    assert_eq!(
        removed as usize,
        30 + (before_events - events.len()),
        "changes and events removed"
    );
    assert!(events.iter().all(|e| e.at >= cut));
    assert_eq!(store.user_changes("t1", "C0000", 10).unwrap(), vec![]);
    rows[2].1 = "Lead";
    go(&store, &t, &file(&rows));
    let newest = all_changes(&store);
    assert_eq!(newest.last().map(|c| c.seq), Some(32));
}

#[test]
fn readers_never_see_a_partial_commit() {
    let (store, _d) = test_store::temp_store();
    let t = tenant(OnMissing::Keep);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let changes = all_changes(&store);
                let events = all_events(&store);
                assert_no_gaps(&changes, &events);
                seen.insert(changes.len());
            }
            seen
        });
        go(&store, &t, &file(&users(3000)));
        let mut rows = users(3000);
        for r in rows.iter_mut().take(1500) {
            r.1 = "Lead";
        }
        go(&store, &t, &file(&rows));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().unwrap();
        assert!(
            seen.iter().all(|n| [0, 3000, 4500].contains(n)),
            "only whole commits: {seen:?}"
        );
    });
}

/// Every status change is an entry, named by one rule for the log and the record's counts
/// (review s16 F3), and list fields read as their items (F9).
#[test]
fn every_status_change_is_logged_and_counted_alike() {
    let (store, _d) = test_store::temp_store();
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("active", "Active"),
        ("groups", "Groups"),
    ];
    let mut t = Tenant::for_import("t1", MatchBy::MappingCode, OnMissing::Delete, &columns);
    t.import.list_separator = "|".into();
    let run = |rows: &[&str]| {
        let mut s = String::from("Code;First;Last;Active;Groups\n");
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        go(&store, &t, s.as_bytes())
    };
    run(&["C1;Ann;L;1;g1", "C2;Bob;L;1;g1"]);
    // C1 deleted, then back switched off: deleted → inactive, with nothing else changed.
    run(&["C2;Bob;L;1;g1"]);
    let r = run(&["C1;Ann;L;0;g1", "C2;Bob;L;1;g1"]);
    assert_eq!((r.counts.restored, r.counts.updated), (1, 0), "{r:?}");
    let last = all_changes(&store).pop().unwrap();
    assert_eq!((last.key.as_str(), last.kind), ("C1", ChangeKind::Restored));
    let status = last
        .fields
        .iter()
        .find(|f| f.field == "status")
        .expect("status");
    assert_eq!(
        (status.old.as_deref(), status.new.as_deref()),
        (Some("deleted"), Some("inactive"))
    );
    // Switched on: restored in the log and in the counts.
    let r = run(&["C1;Ann;L;1;g1", "C2;Bob;L;1;g1"]);
    assert_eq!((r.counts.restored, r.counts.updated), (1, 0));
    assert_eq!(
        all_changes(&store).pop().unwrap().kind,
        ChangeKind::Restored
    );
    // Switched off by the column: deactivated in both.
    let r = run(&["C1;Ann;L;0;g1", "C2;Bob;L;1;g1"]);
    assert_eq!((r.counts.deactivated, r.counts.updated), (1, 0));
    assert_eq!(
        all_changes(&store).pop().unwrap().kind,
        ChangeKind::Deactivated
    );
    // Groups: the items as written, not the record's inner separator.
    run(&["C1;Ann;L;0;g1", "C2;Bob;L;1;g1|g2"]);
    let last = all_changes(&store).pop().unwrap();
    let groups = last
        .fields
        .iter()
        .find(|f| f.field == "groups")
        .expect("groups");
    assert_eq!(
        (groups.old.as_deref(), groups.new.as_deref()),
        (Some("g1"), Some("g1; g2"))
    );
    assert_no_gaps(&all_changes(&store), &all_events(&store));
}
