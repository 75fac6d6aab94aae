//! The PostgreSQL store's run log and mail outbox against a real PostgreSQL (issue 11):
//! each test starts its own throwaway cluster (tests/support/postgres.rs). What goes in through
//! `RunLog` and `MailOutbox` must come back as the sled store gives it back; several stores
//! (nodes) on one database must not hand out the same import id or deliver the same message.
//! The connection's TLS modes are tested in store_postgres_tls.rs.

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod test_postgres;

use chrono::{DateTime, TimeZone, Utc};
use roster::mail::{MailQueue, Worker};
use roster::model::{Counts, ImportRecord, ImportStatus};
use roster::store::postgres::parse_url;
use roster::store::Store;
use std::sync::Arc;
use test_postgres::TestPostgres;

/// A store on database `db` of `pg` as node `node`.
fn open(pg: &TestPostgres, db: &str, node: &str) -> Store {
    let target = parse_url(&pg.url(db)).unwrap_or_else(|e| panic!("{e}"));
    Store::open_postgres(&target, node).unwrap()
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).unwrap()
}

/// A record with every field set to something its own (counts all different, two messages,
/// both optional paths set).
fn full_record(tenant: &str, id: &str) -> ImportRecord {
    ImportRecord {
        id: id.to_string(),
        tenant: tenant.to_string(),
        file: "users; 2026.csv".to_string(),
        sha256: "ab".repeat(32),
        bytes: 123_456,
        received_at: at(1_790_000_000_000_001),
        started_at: at(1_790_000_001_000_002),
        finished_at: at(1_790_000_002_000_003),
        status: ImportStatus::Partial,
        counts: Counts {
            rows: 1,
            inserted: 2,
            updated: 3,
            unchanged: 4,
            deactivated: 5,
            deleted: 6,
            restored: 7,
            skipped: 8,
            errors: 9,
        },
        messages: vec![
            "zeta comes first".into(),
            "alpha second, 'quoted' {x}".into(),
        ],
        encoding: "windows-1252".to_string(),
        delimiter: "\t".to_string(),
        archived_as: Some("processed/users.csv".to_string()),
        report: Some("reports/users.txt".to_string()),
    }
}

#[test]
fn import_ids_are_formatted_as_sled_does_and_unique_across_nodes() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let a = open(&pg, "hr", "node-a");
    let b = open(&pg, "hr", "node-b");
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 7, 30, 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { &a } else { &b };
        ids.push(store.new_import_id(now).unwrap());
    }
    for id in &ids {
        let (time, n) = id.split_once('-').unwrap();
        assert_eq!(time, "20261121T073000Z", "{id}");
        assert!(
            n.len() == 10 && n.bytes().all(|c| c.is_ascii_digit()),
            "{id}"
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted, ids,
        "ids taken one after the other sort in that order"
    );
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no id handed out twice: {ids:?}");
    let later = a.new_import_id(now + chrono::Duration::seconds(1)).unwrap();
    assert!(
        later > ids[ids.len() - 1],
        "a later time sorts after: {later}"
    );
}

#[test]
fn a_record_round_trips_exactly_and_is_replaced_in_place() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    let full = full_record("acme", "20261121T073000Z-0000000001");
    store.record_import(&full).unwrap();
    assert_eq!(
        store.import_record("acme", &full.id).unwrap().as_ref(),
        Some(&full)
    );
    // None fields, no messages, zero counts: NULLs and an empty array come back as such.
    let t = at(1_790_000_000_000_000);
    let bare = ImportRecord::begun(
        "20261121T073000Z-0000000002".into(),
        "acme",
        "b.csv",
        ImportStatus::Missing,
        t,
        t,
    );
    store.record_import(&bare).unwrap();
    assert_eq!(
        store.import_record("acme", &bare.id).unwrap().as_ref(),
        Some(&bare)
    );
    // Insert or replace: the same id again replaces every column, and adds no row.
    let mut filed = full.clone();
    filed.archived_as = None;
    filed.report = Some("reports/other.txt".into());
    filed.messages.reverse();
    filed.status = ImportStatus::Error;
    store.record_import(&filed).unwrap();
    assert_eq!(
        store.import_record("acme", &full.id).unwrap().as_ref(),
        Some(&filed)
    );
    assert_eq!(store.history("acme", 10).unwrap().len(), 2);
    assert_eq!(store.import_record("acme", "nope").unwrap(), None);
    assert_eq!(store.import_record("other", &full.id).unwrap(), None);
    // The read contract shows the record's columns.
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT status || ' ' || errors || ' ' || array_to_string(messages, '|') \
             FROM roster.imports WHERE id = '20261121T073000Z-0000000001'"
        ),
        "error 9 alpha second, 'quoted' {x}|zeta comes first"
    );
}

#[test]
fn timestamps_keep_microseconds_and_lose_nanoseconds() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    let mut r = full_record("acme", "i-1");
    r.finished_at = Utc.timestamp_nanos(1_790_000_002_000_003_789);
    store.record_import(&r).unwrap();
    let back = store.import_record("acme", "i-1").unwrap().unwrap();
    assert_eq!(back.finished_at, at(1_790_000_002_000_003));
}

#[test]
fn history_is_newest_first_per_tenant_and_limited() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    let mut ids = Vec::new();
    for second in [5, 1, 9, 3] {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 7, 30, second).unwrap();
        let id = store.new_import_id(now).unwrap();
        store.record_import(&full_record("acme", &id)).unwrap();
        ids.push(id);
    }
    store
        .record_import(&full_record("globex", "20991231T000000Z-0000000099"))
        .unwrap();
    ids.sort();
    ids.reverse();
    let got: Vec<String> = store
        .history("acme", 100)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(got, ids);
    let two: Vec<String> = store
        .history("acme", 2)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(two, ids[..2]);
    assert!(store.history("acme", 0).unwrap().is_empty());
    assert!(store.history("nobody", 10).unwrap().is_empty());
    // A page reads from its offset on (the console's history pages).
    let page: Vec<String> = store
        .history_from("acme", 1, 2)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, ids[1..3]);
    assert!(store.history_from("acme", 4, 10).unwrap().is_empty());
    // An id from a URL holding a NUL is not found (PostgreSQL refuses NUL in text).
    assert!(store.import_record("acme", "a\0b").unwrap().is_none());
    assert!(store.held_plan("acme", "a\0b").unwrap().is_none());
}

#[test]
fn claims_run_stamp_and_are_forgotten() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    store.claim_running("acme", "users.csv", "c-1").unwrap();
    // A newer claim of the same file replaces the first.
    store.claim_running("acme", "users.csv", "c-2").unwrap();
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT claim || ' ' || node_id FROM roster.claims WHERE tenant = 'acme'"
        ),
        "c-2 node-a"
    );
    // The same claim id moving to another file leaves one row for it.
    store.claim_running("acme", "other.csv", "c-2").unwrap();
    assert_eq!(
        pg.psql("hr", "SELECT string_agg(file, ',') FROM roster.claims"),
        "other.csv"
    );
    assert_eq!(store.claim_committed("acme", "c-2").unwrap(), None);
    assert!(store.claims_stamped("acme").unwrap().is_empty());

    let record = full_record("acme", "20261121T073000Z-0000000007");
    store.record_claimed(&record, "c-9", None, None).unwrap();
    store
        .record_claimed(&full_record("acme", "i-2"), "c-10", None, None)
        .unwrap();
    assert_eq!(
        store.claim_committed("acme", "c-9").unwrap().as_deref(),
        Some(record.id.as_str())
    );
    assert_eq!(
        store.import_record("acme", &record.id).unwrap().as_ref(),
        Some(&record)
    );
    assert_eq!(store.claims_stamped("acme").unwrap(), vec!["c-10", "c-9"]);
    assert!(store.claims_stamped("globex").unwrap().is_empty());
    assert_eq!(store.claim_committed("globex", "c-9").unwrap(), None);
    store.claim_done("acme", "c-9").unwrap();
    assert_eq!(store.claim_committed("acme", "c-9").unwrap(), None);
    assert_eq!(store.claims_stamped("acme").unwrap(), vec!["c-10"]);
    // The record stays: only the stamp is forgotten.
    assert!(store.import_record("acme", &record.id).unwrap().is_some());
}

/// A node that lost its tenant's lease (paused past it while another node took its claim
/// over) writes no record and no mail: the node that took over writes them (review s25).
#[test]
fn a_claimed_record_is_refused_once_its_lease_is_lost() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let a = open(&pg, "hr", "node-a");
    let b = open(&pg, "hr", "node-b");
    let lease = "tenant:acme";
    assert!(a.take_lease(lease).unwrap().is_some());
    let mail = roster::store::OutboxMail {
        recipients: vec!["hr@acme.example".into()],
        message: b"the report".to_vec(),
    };
    let first = full_record("acme", "i-1");
    a.record_claimed(&first, "c-1-m", Some(&mail), Some(lease))
        .unwrap();
    // Node A's lease runs out and node B takes it.
    pg.psql(
        "hr",
        "UPDATE roster.leases SET expires_at = now() - interval '1 second'",
    );
    assert!(b.take_lease(lease).unwrap().is_some());
    let late = full_record("acme", "i-2");
    let refused = a
        .record_claimed(&late, "c-2-m", Some(&mail), Some(lease))
        .unwrap_err();
    assert!(
        refused.downcast_ref::<roster::store::LeaseLost>().is_some(),
        "not a lost lease: {refused:#}"
    );
    assert_eq!(a.import_record("acme", "i-2").unwrap(), None);
    assert_eq!(a.claim_committed("acme", "c-2-m").unwrap(), None);
    assert_eq!(pg.psql("hr", "SELECT count(*) FROM roster.outbox"), "1");
    // A schedule's `missing` record is fenced alike (review s27): node A, stalled past its
    // lease, must not record a file missing that node B imported meanwhile.
    let mut missing = full_record("acme", "i-3");
    missing.status = roster::model::ImportStatus::Missing;
    let refused = a.record_leased(&missing, Some(&mail), lease).unwrap_err();
    assert!(
        refused.downcast_ref::<roster::store::LeaseLost>().is_some(),
        "not a lost lease: {refused:#}"
    );
    assert_eq!(a.import_record("acme", "i-3").unwrap(), None);
    // The holder writes.
    b.record_claimed(&late, "c-2-m", Some(&mail), Some(lease))
        .unwrap();
    assert_eq!(b.import_record("acme", "i-2").unwrap(), Some(late));
    assert_eq!(pg.psql("hr", "SELECT count(*) FROM roster.outbox"), "2");
    b.record_leased(&missing, Some(&mail), lease).unwrap();
    assert_eq!(b.import_record("acme", "i-3").unwrap(), Some(missing));
    assert_eq!(pg.psql("hr", "SELECT count(*) FROM roster.outbox"), "3");
}

#[test]
fn held_plans_and_the_ledger_read_what_the_tables_hold() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    assert!(store.held_plans("acme").unwrap().is_empty());
    assert!(store.held_plan("acme", "p-1").unwrap().is_none());
    assert_eq!(store.ledger_get("acme", "users.csv").unwrap(), None);
    pg.psql(
        "hr",
        "INSERT INTO roster.held_plans (tenant, import_id, plan) VALUES \
         ('acme', 'p-2', '\\x00ff10'::bytea), ('acme', 'p-1', '\\x01'::bytea), \
         ('globex', 'p-3', '\\x02'::bytea); \
         INSERT INTO roster.ledger (tenant, file, sha256, state, import_id, updated_at) VALUES \
         ('acme', 'users.csv', 'cafe', 'failed', NULL, '2026-11-21 07:30:00.000001+00')",
    );
    assert_eq!(store.held_plans("acme").unwrap(), vec!["p-1", "p-2"]);
    let plan = store.held_plan("acme", "p-2").unwrap().unwrap();
    assert_eq!(&plan[..], &[0x00, 0xff, 0x10]);
    let entry = store.ledger_get("acme", "users.csv").unwrap().unwrap();
    assert_eq!(entry.state, roster::store::LedgerState::Failed);
    assert_eq!(entry.import_id, None);
    let expected = Utc.with_ymd_and_hms(2026, 11, 21, 7, 30, 0).unwrap();
    assert_eq!(
        entry.updated_at,
        expected + chrono::Duration::microseconds(1)
    );
}

/// A message with the headers the worker reads back (tenant, subject).
fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Roster <roster@acme.example>\r\nTo: it@acme.example\r\nSubject: {subject}\r\n\
         X-Roster-Tenant: acme\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

#[test]
fn the_outbox_keeps_messages_until_sent_and_defers_with_attempts() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    assert_eq!(store.outbox_len().unwrap(), 0);
    let to = vec!["a@x.example".to_string(), "b@x.example".to_string()];
    let first = store.outbox_push(&to, &message("one")).unwrap();
    let second = store.outbox_push(&to[..1], &message("two")).unwrap();
    assert!(second > first);
    assert_eq!(store.outbox_len().unwrap(), 2);
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    assert!(store.outbox_due(long_ago).unwrap().is_empty());
    let due = store.outbox_due(Utc::now()).unwrap();
    assert_eq!(
        due.iter().map(|i| i.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(due[0].recipients, to);
    assert_eq!(due[0].message, message("one"));
    assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (0, None));
    // Claimed by this pass: the next pass does not see them again.
    assert!(store.outbox_due(Utc::now()).unwrap().is_empty());

    let retry_at = at(Utc::now().timestamp_micros() + 60_000_000);
    // One recipient has it: the retry goes to the other only.
    store.outbox_narrow(first, &to[1..]).unwrap();
    store.outbox_defer(first, retry_at, 3, "421 busy").unwrap();
    store.outbox_mark_sent(second).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 1);
    assert!(store.outbox_due(Utc::now()).unwrap().is_empty());
    let again = store.outbox_due(retry_at).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id, again[0].attempts, again[0].next_attempt),
        (first, 3, retry_at)
    );
    assert_eq!(again[0].last_error.as_deref(), Some("421 busy"));
    assert_eq!(again[0].recipients, ["b@x.example"]);
    let e = store.outbox_defer(second, retry_at, 1, "x").unwrap_err();
    assert!(format!("{e}").contains("does not exist"), "{e}");
}

#[test]
fn two_nodes_never_take_the_same_message_and_a_dead_claim_expires() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let a = open(&pg, "hr", "node-a");
    let b = open(&pg, "hr", "node-b");
    for i in 0..40 {
        a.outbox_push(&["it@x.example".to_string()], &message(&format!("m{i}")))
            .unwrap();
    }
    let (ta, tb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.outbox_due(Utc::now()).unwrap());
        let hb = s.spawn(|| b.outbox_due(Utc::now()).unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let mut ids: Vec<u64> = ta.iter().chain(&tb).map(|i| i.id).collect();
    assert_eq!(
        ids.len(),
        40,
        "every message taken once: a {} b {}",
        ta.len(),
        tb.len()
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no message taken by both nodes");
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT count(*) FROM roster.outbox WHERE claimed_by IS NULL \
             OR claimed_until < now() + interval '4 minutes'"
        ),
        "0",
        "every message is claimed for five minutes"
    );
    // Node a dies holding its claims: once they expire, node b takes those messages.
    pg.psql(
        "hr",
        "UPDATE roster.outbox SET claimed_until = now() - interval '1 second' \
         WHERE claimed_by LIKE 'node-a/%'",
    );
    let taken_over = b.outbox_due(Utc::now()).unwrap();
    let mut from_a: Vec<u64> = ta.iter().map(|i| i.id).collect();
    from_a.sort();
    assert_eq!(taken_over.iter().map(|i| i.id).collect::<Vec<_>>(), from_a);
    assert_eq!(a.outbox_len().unwrap(), 40);
    // Node a is only slow, not dead: it claimed five new messages, took longer than its claim,
    // and b took them. Before sending each one, a asks for its claim again and leaves to b
    // what b took (each message is sent once); nor can a defer them from under b.
    let fresh: Vec<u64> = (0..5)
        .map(|i| {
            a.outbox_push(&["it@x.example".to_string()], &message(&format!("n{i}")))
                .unwrap()
        })
        .collect();
    let slow = a.outbox_due(Utc::now()).unwrap();
    assert_eq!(slow.iter().map(|i| i.id).collect::<Vec<_>>(), fresh);
    pg.psql(
        "hr",
        "UPDATE roster.outbox SET claimed_until = now() - interval '1 second' \
         WHERE claimed_by LIKE 'node-a/%'",
    );
    let taken = b.outbox_due(Utc::now()).unwrap();
    assert!(fresh.iter().all(|id| taken.iter().any(|t| t.id == *id)));
    for id in &fresh {
        assert!(!a.outbox_renew_claim(*id).unwrap(), "b holds {id}");
        assert!(b.outbox_renew_claim(*id).unwrap());
    }
    let later = Utc::now() + chrono::Duration::minutes(1);
    assert!(a.outbox_defer(fresh[0], later, 1, "x").is_err());
    assert!(b.outbox_defer(fresh[0], later, 1, "x").is_ok());
}

/// A second process under a live node's id (a frozen VM's replacement) takes the first one's
/// messages only once their claim expired, and the first one, waking, neither renews nor
/// defers them (review s27: claims named the node id only, so the first process renewed the
/// claim the second had made and sent the message again).
#[test]
fn a_twin_process_under_the_same_node_id_does_not_share_claims() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let first = open(&pg, "hr", "node-a");
    let twin = open(&pg, "hr", "node-a");
    let id = first
        .outbox_push(&["it@x.example".to_string()], &message("once"))
        .unwrap();
    assert_eq!(first.outbox_due(Utc::now()).unwrap().len(), 1);
    assert!(twin.outbox_due(Utc::now()).unwrap().is_empty(), "claimed");
    assert!(
        !twin.outbox_renew_claim(id).unwrap(),
        "not the twin's claim"
    );
    // The first process freezes past its claim; the twin takes the message.
    pg.psql(
        "hr",
        "UPDATE roster.outbox SET claimed_until = now() - interval '1 second'",
    );
    assert_eq!(twin.outbox_due(Utc::now()).unwrap().len(), 1);
    assert!(
        !first.outbox_renew_claim(id).unwrap(),
        "the twin holds it now"
    );
    let later = Utc::now() + chrono::Duration::minutes(1);
    assert!(first.outbox_defer(id, later, 1, "x").is_err());
    assert!(twin.outbox_renew_claim(id).unwrap());
}

#[tokio::test]
async fn the_mail_worker_delivers_from_the_postgres_outbox_once() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    store
        .outbox_push(&["it@acme.example".to_string()], &message("held"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("outbox");
    let queue: Arc<dyn MailQueue> = Arc::new(store.clone());
    let worker = Worker::new(queue, None, outbox_dir.clone());
    let report = worker.step(Utc::now()).await;
    assert_eq!((report.sent, report.deferred), (1, 0));
    assert_eq!(store.outbox_len().unwrap(), 0);
    let files: Vec<_> = std::fs::read_dir(&outbox_dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let report = worker.step(Utc::now()).await;
    assert_eq!(report.sent, 0);
}

#[test]
fn outbox_len_and_calls_fail_when_the_database_is_gone() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg, "hr", "node-a");
    store
        .outbox_push(&["it@x.example".to_string()], &message("m"))
        .unwrap();
    assert_eq!(store.outbox_len().unwrap(), 1);
    drop(pg);
    // An error, not 0: an empty outbox is an answer the store could not give (s29).
    assert!(store.outbox_len().is_err());
    assert!(store.outbox_due(Utc::now()).is_err());
    assert!(store.history("acme", 1).is_err());
}

/// A node's first read of the lifts starts at a time, not at the latest lift: a lift made
/// between its start and that read (or while the store was down for it) is not passed by
/// (review s25); later reads go on from the number it returns.
#[test]
fn the_first_read_of_lifts_starts_at_a_time() {
    use roster::store::LoginScope;
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let a = open(&pg, "hr", "node-a");
    let b = open(&pg, "hr", "node-b");
    let old = Utc::now();
    a.lift_login_block(LoginScope::Tenant, "old").unwrap();
    pg.psql(
        "hr",
        "UPDATE roster.login_lifts SET lifted_at = now() - interval '1 hour'",
    );
    let started = Utc::now() - chrono::Duration::seconds(60);
    a.lift_login_block(LoginScope::Address, "203.0.113.9")
        .unwrap();
    let (last, lifts) = b.login_lifts_since(None, started).unwrap();
    assert_eq!(
        lifts,
        vec![(LoginScope::Address, "203.0.113.9".to_string())]
    );
    assert_eq!(
        b.login_lifts_since(Some(last), started).unwrap(),
        (last, vec![])
    );
    // Nothing since then: the read starts after the latest lift.
    let (latest, none) = b
        .login_lifts_since(None, old + chrono::Duration::hours(2))
        .unwrap();
    assert_eq!((latest, none), (last, vec![]));
    a.lift_login_block(LoginScope::Tenant, "acme").unwrap();
    assert_eq!(
        b.login_lifts_since(Some(latest), started).unwrap().1,
        vec![(LoginScope::Tenant, "acme".to_string())]
    );
}

/// Review s26: two processes under one node id (a frozen VM and its replacement, started with
/// the same `[cluster] node_id`) are two holders. The replacement waits for the frozen
/// process's lease to run out and takes it with a new fencing number; the frozen process,
/// resumed, can then neither write under it nor release it.
#[test]
fn a_second_process_under_the_same_node_id_is_another_holder() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let frozen = open(&pg, "hr", "node-a");
    let replacement = open(&pg, "hr", "node-a");
    let lease = "tenant:acme";
    // node-a is alive (its heartbeat is recent): only a lease that ran out changes holder.
    frozen
        .heartbeat(&roster::store::NodeBeat {
            sftp: "127.0.0.1:1".to_string(),
            admin: "127.0.0.1:2".to_string(),
            version: "test".to_string(),
            started_at: chrono::Utc::now(),
        })
        .unwrap();
    let first = frozen.take_lease(lease).unwrap().expect("free");
    assert_eq!(
        frozen.take_lease(lease).unwrap(),
        Some(first),
        "its own again"
    );
    assert_eq!(
        replacement.take_lease(lease).unwrap(),
        None,
        "not the replacement's"
    );
    pg.psql(
        "hr",
        "UPDATE roster.leases SET expires_at = now() - interval '1 second'",
    );
    let second = replacement.take_lease(lease).unwrap().expect("run out");
    assert!(second > first, "fencing grows: {first} -> {second}");
    let late = full_record("acme", "i-late");
    let refused = frozen
        .record_claimed(&late, "c-late-m", None, Some(lease))
        .unwrap_err();
    assert!(
        refused.downcast_ref::<roster::store::LeaseLost>().is_some(),
        "not a lost lease: {refused:#}"
    );
    frozen.release_lease(lease).unwrap();
    let other = open(&pg, "hr", "node-b");
    assert_eq!(
        other.take_lease(lease).unwrap(),
        None,
        "still the replacement's"
    );
    replacement
        .record_claimed(&late, "c-late-m", None, Some(lease))
        .unwrap();
}
