//! `roster migrate-store --to postgres://...` against a real PostgreSQL (tests/support/postgres.rs):
//! the refusals (a non-empty target, a target a live node serves, a store another process has
//! open), the copy of the run log
//! and the outbox piece by piece, the whole copy of a store with users, history and a held
//! plan that is approved on PostgreSQL afterwards, and the check after the copy (the ledger,
//! claim stamps, logs and cursors read back and compared, a row altered on PostgreSQL found).

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod test_postgres;

use chrono::{DateTime, TimeZone, Utc};
use roster::cli::migrate_store::{copy_outbox, copy_run_log, verify};
use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{approve, run_bytes, ImportStatus, RunOptions};
use roster::model::changelog::Cursor;
use roster::model::ImportRecord;
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{
    Cluster, Commit, Directory, LedgerEntry, LedgerState, MailOutbox, NodeBeat, RunLog, SledStore,
    Store,
};
use std::path::{Path, PathBuf};
use std::process::Output;
use test_postgres::TestPostgres;

/// A config with a data_dir under `dir` (no tenants needed to copy a store).
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("roster.toml");
    let text = format!(
        "[server]\nhost_keys = {:?}\ndata_dir = {:?}\n",
        dir.join("keys"),
        dir.join("data")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("store")
}

fn migrate_store(config: &Path, to: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("-c")
        .arg(config)
        .args(["migrate-store", "--to", to])
        .env_remove("ROSTER_STORE_URL")
        .env_remove("PGPASSWORD")
        .env("HOME", "/nonexistent")
        .output()
        .expect("cannot run roster")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn open_pg(url: &str) -> PostgresStore {
    PostgresStore::open(&parse_url(url).unwrap(), "test-node").unwrap()
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).unwrap()
}

fn record(tenant: &str, id: &str, status: ImportStatus) -> ImportRecord {
    let t = at(1_790_000_000_000_000 + id.len() as i64);
    let mut r = ImportRecord::begun(id.into(), tenant, "users.csv", status, t, t);
    r.messages = vec!["second".into(), "first".into()];
    r.archived_as = Some(format!("processed/{id}.csv"));
    r
}

#[test]
fn a_target_holding_data_is_refused_and_left_alone() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    {
        let sled = SledStore::open(&store_dir(dir.path())).unwrap();
        sled.record_import(&record("acme", "i-1", ImportStatus::Success))
            .unwrap();
    }
    let target = open_pg(&url);
    target
        .outbox_push(&["it@x.example".to_string()], b"Subject: x\r\n\r\nx")
        .unwrap();
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("the target already holds data; migrate-store only fills an empty store"),
        "{stderr}"
    );
    assert!(target.history("acme", 10).unwrap().is_empty());
    assert_eq!(target.outbox_len().unwrap(), 1);
}

/// Review s23: a copy into a database a `roster serve` already runs on had that node sweep the
/// copy's staged rows (the copy never heartbeat). Now a live node is refused, and the copy
/// heartbeats as its own node while it runs and leaves no row behind.
#[test]
fn a_target_where_a_node_is_alive_is_refused_and_the_copy_leaves_no_node() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    {
        let sled = SledStore::open(&store_dir(dir.path())).unwrap();
        sled.record_import(&record("acme", "i-1", ImportStatus::Success))
            .unwrap();
    }
    let serving = open_pg(&url);
    serving
        .heartbeat(&NodeBeat {
            sftp: "127.0.0.1:2222".to_string(),
            admin: "127.0.0.1:8080".to_string(),
            version: "test".to_string(),
            started_at: Utc::now(),
        })
        .unwrap();
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("roster serve is running on the target: node(s) test-node (last heartbeat"),
        "{stderr}"
    );
    assert!(!serving.holds_data().unwrap());
    // The node stops: the copy runs, and its own node row is gone when it ends.
    serving.leave().unwrap();
    let out = migrate_store(&config, &url);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(serving.history("acme", 10).unwrap().len(), 1);
    assert_eq!(serving.nodes().unwrap(), Vec::new());
}

#[test]
fn a_store_open_in_another_process_is_refused_with_the_reason() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let held_open = SledStore::open(&store_dir(dir.path())).unwrap();
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("roster serve must be stopped"), "{stdout}");
    assert!(stderr.contains("stop roster serve first"), "{stderr}");
    drop(held_open);
    // Nothing was written to the target.
    assert!(!open_pg(&url).holds_data().unwrap());
    // A data_dir without a store is said so.
    let empty = tempfile::tempdir().unwrap();
    let out = migrate_store(&write_config(empty.path()), &url);
    assert!(
        text(&out).1.contains("there is no embedded store"),
        "{:?}",
        text(&out)
    );
    // A bad URL names the option.
    let out = migrate_store(&config, "postgres://a@b/c?sslmode=maybe");
    assert!(text(&out).1.contains("--to: sslmode"), "{:?}", text(&out));
}

#[test]
fn history_plans_ledger_stamps_and_outbox_are_copied_as_they_are() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    for (tenant, n) in [("acme", 3), ("globex", 2)] {
        for i in 0..n {
            sled.record_import(&record(tenant, &format!("i-{i}"), ImportStatus::Success))
                .unwrap();
        }
    }
    let entry = LedgerEntry {
        tenant: "acme".into(),
        file: "users.csv".into(),
        sha256: "cafe".into(),
        state: LedgerState::Failed,
        import_id: Some("i-held".into()),
        updated_at: at(1_790_000_000_000_042),
    };
    sled.commit(&Commit {
        tenant: "acme".into(),
        record: Some(record("acme", "i-held", ImportStatus::Held)),
        ledger: Some(entry.clone()),
        put_plan: Some(("i-held".into(), vec![0, 1, 2, 255])),
        ..Default::default()
    })
    .unwrap();
    sled.record_claimed(
        &record("globex", "i-claimed", ImportStatus::Error),
        "c-7",
        None,
        None,
    )
    .unwrap();
    let to = vec!["a@x.example".to_string(), "b@x.example".to_string()];
    let first = sled.outbox_push(&to, b"one").unwrap();
    let second = sled.outbox_push(&to[..1], b"two").unwrap();
    sled.outbox_defer(first, at(1_790_000_000_000_100), 3, "421 busy")
        .unwrap();
    sled.outbox_defer(second, at(1_790_000_000_000_200), 1, "timeout")
        .unwrap();

    let pg_store = open_pg(&url);
    assert!(!pg_store.holds_data().unwrap());
    assert_eq!(sled.tenants().unwrap(), vec!["acme", "globex"]);
    let acme = copy_run_log(&sled, &pg_store, "acme").unwrap();
    assert_eq!(
        (acme.records, acme.plans, acme.ledger, acme.stamps),
        (4, 1, 1, 0)
    );
    let globex = copy_run_log(&sled, &pg_store, "globex").unwrap();
    assert_eq!((globex.records, globex.plans, globex.stamps), (3, 0, 1));
    assert_eq!(copy_outbox(&sled, &pg_store).unwrap(), 2);
    assert!(pg_store.holds_data().unwrap());

    for tenant in ["acme", "globex"] {
        assert_eq!(
            pg_store.history(tenant, 100).unwrap(),
            sled.history(tenant, 100).unwrap()
        );
    }
    assert_eq!(pg_store.held_plans("acme").unwrap(), vec!["i-held"]);
    assert_eq!(
        &pg_store.held_plan("acme", "i-held").unwrap().unwrap()[..],
        &[0, 1, 2, 255]
    );
    assert_eq!(
        pg_store.ledger_get("acme", "users.csv").unwrap(),
        Some(entry)
    );
    assert_eq!(
        pg_store
            .claim_committed("globex", "c-7")
            .unwrap()
            .as_deref(),
        Some("i-claimed")
    );
    let mut want = sled.outbox_due(DateTime::<Utc>::MAX_UTC).unwrap();
    let got = pg_store.outbox_due(DateTime::<Utc>::MAX_UTC).unwrap();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(want.iter_mut()) {
        w.id = g.id; // ids are the target's own
        assert_eq!(g, w);
    }
}

fn users_file(n: u32) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email\n");
    for i in 0..n {
        s.push_str(&format!("C{i:03};First{i};Last{i};user{i}@x.example\n"));
    }
    s.into_bytes()
}

fn tenant(id: &str, on_missing: OnMissing) -> Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
    ];
    Tenant::for_import(id, MatchBy::MappingCode, on_missing, &columns)
}

/// A record with its times as PostgreSQL keeps them (microseconds).
fn to_micros(mut r: ImportRecord) -> ImportRecord {
    for t in [&mut r.received_at, &mut r.started_at, &mut r.finished_at] {
        *t = at(t.timestamp_micros());
    }
    r
}

/// The whole copy through the command. Its directory part goes through `Directory::commit`
/// and `Users` on PostgreSQL (directory.rs, users.rs), so it passes once those are built.
#[test]
fn a_whole_store_is_copied_and_a_held_plan_approves_on_postgresql() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (t1, t2) = (
        tenant("t1", OnMissing::Deactivate),
        tenant("t2", OnMissing::Delete),
    );
    let held_id = {
        let sled = Store::open(&store_dir(dir.path())).unwrap();
        let go = |t: &Tenant, n| {
            run_bytes(
                &sled,
                t,
                "users.csv",
                &users_file(n),
                &RunOptions::default(),
            )
            .unwrap()
            .record
        };
        go(&t1, 100);
        go(&t1, 95);
        let held = go(&t1, 50);
        assert_eq!(held.status, ImportStatus::Held, "{:?}", held.messages);
        go(&t2, 20);
        go(&t2, 18);
        sled.outbox_push(&["it@x.example".to_string()], b"Subject: s\r\n\r\nb")
            .unwrap();
        held.id
    };
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "t1: users active 95 = 95, inactive 5 = 5, deleted 0 = 0; records 3 = 3; \
             plans 1 = 1; ledger 1 = 1; stamps 0 = 0; changes 105 = 105; events 5 = 5; \
             cursors 0 = 0: ok"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("t2: users active 18 = 18, inactive 0 = 0, deleted 2 = 2"),
        "{stdout}"
    );

    let sled = Store::open(&store_dir(dir.path())).unwrap();
    let copy = Store::new(open_pg(&url));
    for t in ["t1", "t2"] {
        assert_eq!(copy.users(t, None).unwrap(), sled.users(t, None).unwrap());
        assert_eq!(copy.user_counts(t).unwrap(), sled.user_counts(t).unwrap());
        let want: Vec<_> = sled
            .history(t, 100)
            .unwrap()
            .into_iter()
            .map(to_micros)
            .collect();
        assert_eq!(copy.history(t, 100).unwrap(), want);
        let (s, c) = (sled.tenant_state(t).unwrap(), copy.tenant_state(t).unwrap());
        assert_eq!(
            (c.version, c.last_applied_sha256),
            (s.version, s.last_applied_sha256)
        );
    }
    assert_eq!(copy.outbox_len().unwrap(), 1);
    drop(sled);
    // The held plan names the version it was made against: the copy kept it.
    let applied = approve(&copy, &t1, &held_id).unwrap().record;
    assert_eq!(applied.status, ImportStatus::Success);
    assert_eq!(copy.user_counts("t1").unwrap(), (50, 50, 0));
}

/// The copy keeps the embedded store's password-fingerprint key (review s27): the users'
/// records carry fingerprints made with it, and under PostgreSQL's own random key the next
/// file with the same passwords updated every user, re-hashed every password and logged a
/// password change for each.
#[test]
fn passwords_unchanged_since_the_copy_are_unchanged_on_postgresql() {
    let pg = TestPostgres::start();
    let url = pg.create_database("pw");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
        ("password", "Pw"),
    ];
    let t = Tenant::for_import("pw", MatchBy::MappingCode, OnMissing::Deactivate, &columns);
    let rows: Vec<String> = (0..3)
        .map(|i| format!("C{i};F{i};L{i};u{i}@x.example;Secret-{i}-pass"))
        .collect();
    let file = |rows: &[String]| format!("Code;First;Last;Email;Pw\n{}\n", rows.join("\n"));
    {
        let sled = Store::open(&store_dir(dir.path())).unwrap();
        let first = run_bytes(
            &sled,
            &t,
            "users.csv",
            file(&rows).as_bytes(),
            &RunOptions::default(),
        )
        .unwrap()
        .record;
        assert_eq!(first.counts.inserted, 3, "{first:?}");
    }
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let copy = Store::new(open_pg(&url));
    // The same users and passwords in another order: new bytes, nothing to change.
    let reversed: Vec<String> = rows.iter().rev().cloned().collect();
    let again = run_bytes(
        &copy,
        &t,
        "users.csv",
        file(&reversed).as_bytes(),
        &RunOptions::default(),
    )
    .unwrap()
    .record;
    assert_eq!(again.status, ImportStatus::Success, "{again:?}");
    assert_eq!(
        (again.counts.updated, again.counts.unchanged),
        (0, 3),
        "{again:?}"
    );
    // A password that did change is still seen.
    let mut changed = rows.clone();
    changed[1] = "C1;F1;L1;u1@x.example;Another-pass-1".into();
    let third = run_bytes(
        &copy,
        &t,
        "users.csv",
        file(&changed).as_bytes(),
        &RunOptions::default(),
    )
    .unwrap()
    .record;
    assert_eq!(
        (third.counts.updated, third.counts.unchanged),
        (1, 2),
        "{third:?}"
    );
}

/// Every queued message is copied, not only the first pass's worth: an outbox of 130 messages
/// arrives whole (review of 2026-11-30, PostgreSQL F1: 100 arrived and the check said ok).
#[test]
fn an_outbox_longer_than_one_delivery_pass_is_copied_whole() {
    let pg = TestPostgres::start();
    let url = pg.create_database("mail");
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let to = vec!["hr@x.example".to_string()];
    for i in 0..130 {
        let id = sled
            .outbox_push(&to, format!("Subject: {i}\r\n\r\nreport {i}").as_bytes())
            .unwrap();
        if i % 2 == 0 {
            // Waiting for a later attempt: not due now, still queued.
            sled.outbox_defer(id, Utc::now() + chrono::Duration::hours(1), 2, "421 busy")
                .unwrap();
        }
    }
    let pg_store = open_pg(&url);
    assert_eq!(copy_outbox(&sled, &pg_store).unwrap(), 130);
    assert_eq!(pg_store.outbox_len().unwrap(), 130);
}

/// A store whose tenant `t1` has users, change-log entries, events, a ledger entry, a claim
/// stamp and a webhook cursor; returns the numbers of its changes and events.
fn store_with_logs(dir: &Path) -> (usize, usize) {
    let sled = Store::open(&store_dir(dir)).unwrap();
    let t1 = tenant("t1", OnMissing::Deactivate);
    for n in [30, 25] {
        let opts = RunOptions::default();
        run_bytes(&sled, &t1, "users.csv", &users_file(n), &opts).unwrap();
    }
    sled.record_claimed(
        &record("t1", "i-claimed", ImportStatus::Error),
        "c-7",
        None,
        None,
    )
    .unwrap();
    let cursor = Cursor {
        position: 2,
        last_success: Some(Utc::now()),
        last_error: Some("503 from the receiver".into()),
        attempts: 1,
        ..Cursor::default()
    };
    sled.save_cursor("t1", "webhook:abc123", &cursor).unwrap();
    assert!(sled.ledger_get("t1", "users.csv").unwrap().is_some());
    let changes = sled.changes("t1", 0, 100_000).unwrap().len();
    let events = sled.events("t1", 0, 100_000).unwrap().len();
    assert_eq!(changes, 35, "30 created, 5 deactivated");
    (changes, events)
}

#[test]
fn the_ledger_stamps_logs_and_cursors_are_verified_and_counted() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (changes, events) = store_with_logs(dir.path());
    let out = migrate_store(&config, &url);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = format!(
        "t1: users active 25 = 25, inactive 5 = 5, deleted 0 = 0; records 3 = 3; plans 0 = 0; \
         ledger 1 = 1; stamps 1 = 1; changes {changes} = {changes}; events {events} = \
         {events}; cursors 1 = 1: ok"
    );
    assert!(stdout.contains(&line), "{stdout}");
}

/// After a good copy, a row of PostgreSQL changed behind the copy's back fails the check,
/// which names the tenant, the kind and the first differing seq or key.
#[test]
fn verify_finds_a_changed_or_missing_row_on_postgresql() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    store_with_logs(dir.path());
    let out = migrate_store(&config, &url);
    assert!(out.status.success(), "{:?}", text(&out));

    let sled = SledStore::open(&store_dir(dir.path())).unwrap();
    let copy = open_pg(&url);
    let tenants = vec!["t1".to_string()];
    verify(&sled, &copy, &tenants).unwrap();
    let tampered = [
        (
            "UPDATE roster.changes SET key = 'C999' WHERE tenant = 't1' AND seq = 7",
            "tenant t1, the change log: the first difference is at seq 7 (35 entr(ies) \
             embedded, 35 on PostgreSQL)",
        ),
        (
            "DELETE FROM roster.events WHERE tenant = 't1' AND seq = 2",
            "tenant t1, the event log: the first difference is at seq 2",
        ),
        (
            "UPDATE roster.cursors SET cursor = jsonb_set(cursor, '{position}', '9') \
             WHERE tenant = 't1'",
            "tenant t1, the delivery cursors: the first difference is at consumer webhook:abc123",
        ),
        (
            "UPDATE roster.ledger SET sha256 = 'beef' WHERE tenant = 't1'",
            "tenant t1, the file ledger: the first difference is at file users.csv",
        ),
        (
            "DELETE FROM roster.claim_stamps WHERE tenant = 't1'",
            "tenant t1, the claim stamps: the first difference is at claim c-7 (1 entr(ies) \
             embedded, 0 on PostgreSQL)",
        ),
    ];
    for (sql, says) in tampered {
        pg.psql("hr", sql);
        let err = format!("{:#}", verify(&sled, &copy, &tenants).unwrap_err());
        assert!(err.contains(says), "after {sql}: {err}");
        assert!(
            err.contains("do not serve from this PostgreSQL store"),
            "{err}"
        );
    }
}
