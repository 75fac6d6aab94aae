//! The Directory and Users seams on PostgreSQL (issue 11) against a real PostgreSQL: commits
//! that race (the version check), staged rows of an abandoned or swept plan, the typed read
//! contract (`roster.users` shows typed values, never a hash), `update_user`, and the Users
//! listings equal to sled's. Commits here carry no record, ledger or plan, so they need nothing
//! of the run log. Each test starts its own throwaway cluster (tests/support/postgres.rs).
//!
//! (In a file of its own rather than appended to tests/store_postgres.rs, which would pass the
//! ~600 line limit.)

#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod test_postgres;

use roster::model::bucket::bucket_of;
use roster::model::packed::{bucket_push, UserRec, STATUS_ACTIVE, STATUS_DELETED};
use roster::model::UserStatus;
use roster::store::{Commit, Store, TenantState};
use std::collections::BTreeMap;
use test_postgres::TestPostgres;

/// A cluster, a fresh database `hr`, and a store on it as node `node`.
fn start(node: &str) -> (TestPostgres, Store) {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let store = open(&url, node);
    (pg, store)
}

fn open(url: &str, node: &str) -> Store {
    let target = roster::store::postgres::parse_url(url).unwrap();
    Store::open_postgres(&target, node).unwrap_or_else(|e| panic!("{e:#}"))
}

fn user(status: u8, fields: &[(&str, &str)]) -> UserRec {
    let mut r = UserRec {
        status,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_100_000,
        ..Default::default()
    };
    for (n, v) in fields {
        r.set(n, Some(v));
    }
    r
}

/// The packed buckets of `users` (key -> record), by bucket, each sorted by key.
fn buckets(users: &BTreeMap<String, UserRec>) -> BTreeMap<u16, Vec<u8>> {
    let mut out: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    for (k, rec) in users {
        let mut enc = Vec::new();
        rec.encode_into(&mut enc);
        bucket_push(
            out.entry(bucket_of(k.as_bytes())).or_default(),
            k.as_bytes(),
            &enc,
        );
    }
    out
}

/// Stages the buckets of `users` that hold keys of `touch` (the whole bucket, as the engine
/// stages it) and returns the staged (bucket, gen).
fn stage(
    store: &Store,
    tenant: &str,
    users: &BTreeMap<String, UserRec>,
    touch: &[&str],
) -> Vec<(u16, u64)> {
    let all = buckets(users);
    let mut wanted: Vec<u16> = touch.iter().map(|k| bucket_of(k.as_bytes())).collect();
    wanted.sort();
    wanted.dedup();
    wanted
        .into_iter()
        .map(|b| {
            let packed = all.get(&b).cloned().unwrap_or_default();
            (b, store.stage_bucket(tenant, b, &packed).unwrap())
        })
        .collect()
}

fn commit(store: &Store, tenant: &str, expected: u64, staged: &[(u16, u64)]) -> TenantState {
    store
        .commit(&Commit {
            tenant: tenant.into(),
            expected_version: expected,
            buckets: staged.to_vec(),
            last_applied_sha256: Some("ab".repeat(32)),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Puts `users` into a new tenant with one commit.
fn put_all(store: &Store, tenant: &str, users: &BTreeMap<String, UserRec>) -> TenantState {
    let keys: Vec<&str> = users.keys().map(String::as_str).collect();
    let staged = stage(store, tenant, users, &keys);
    commit(store, tenant, 0, &staged)
}

fn directory(pairs: &[(&str, UserRec)]) -> BTreeMap<String, UserRec> {
    pairs
        .iter()
        .map(|(k, r)| (k.to_string(), r.clone()))
        .collect()
}

#[test]
fn a_commit_against_an_old_version_is_refused_and_changes_nothing() {
    let (pg, store) = start("n1");
    let mut users = directory(&[
        ("a", user(STATUS_ACTIVE, &[("first_name", "Ann")])),
        ("b", user(STATUS_ACTIVE, &[("first_name", "Bob")])),
    ]);
    let first = put_all(&store, "t", &users);
    assert_eq!(first.version, 1);
    assert_ne!(first.gen(bucket_of(b"a") as usize), 0);
    // Two plans made at version 1: the first to commit wins.
    users.insert("a".into(), user(STATUS_ACTIVE, &[("first_name", "Ann-1")]));
    let plan1 = stage(&store, "t", &users, &["a"]);
    users.insert("a".into(), user(STATUS_ACTIVE, &[("first_name", "Ann-2")]));
    let plan2 = stage(&store, "t", &users, &["a"]);
    let won = commit(&store, "t", 1, &plan1);
    assert_eq!(won.version, 2);
    let lost = store.commit(&Commit {
        tenant: "t".into(),
        expected_version: 1,
        buckets: plan2.clone(),
        last_applied_sha256: Some("cd".repeat(32)),
        ..Default::default()
    });
    let e = format!("{:#}", lost.unwrap_err());
    assert!(
        e.contains("the directory of tenant t changed while this import was planned"),
        "{e}"
    );
    let now = store.tenant_state("t").unwrap();
    assert_eq!(now, won, "the refused commit changed nothing");
    assert_eq!(now.last_applied_sha256, Some("ab".repeat(32)));
    assert_eq!(
        store.user("t", "a").unwrap().unwrap().first_name.as_deref(),
        Some("Ann-1")
    );
    // The loser's staged row (and its generation's marker) wait until its caller discards
    // them.
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(key || ':' || coalesce(status, '-'), ',' ORDER BY key) \
             FROM roster.staged_rows"
        ),
        ":staged,a:active"
    );
    store.discard_staged("t", &plan2).unwrap();
    assert_eq!(
        pg.psql("hr", "SELECT count(*) FROM roster.staged_rows"),
        "0"
    );
}

#[test]
fn of_two_nodes_committing_at_once_exactly_one_wins() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let nodes = [open(&url, "n1"), open(&url, "n2")];
    put_all(
        &nodes[0],
        "t",
        &directory(&[("a", user(STATUS_ACTIVE, &[]))]),
    );
    for round in 0..5u64 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<anyhow::Result<TenantState>> = std::thread::scope(|s| {
            let threads: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let name = format!("node{i}-round{round}");
                        let users = directory(&[("a", user(STATUS_ACTIVE, &[("role", &name)]))]);
                        let staged = stage(store, "t", &users, &["a"]);
                        barrier.wait();
                        let r = store.commit(&Commit {
                            tenant: "t".into(),
                            expected_version: round + 1,
                            buckets: staged.clone(),
                            ..Default::default()
                        });
                        if r.is_err() {
                            store.discard_staged("t", &staged).unwrap();
                        }
                        r
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let won: Vec<&TenantState> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert_eq!(won[0].version, round + 2);
    }
    assert_eq!(
        pg.psql("hr", "SELECT count(*) FROM roster.staged_rows"),
        "0"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT version FROM roster.tenant_state WHERE tenant = 't'"
        ),
        "6"
    );
}

#[test]
fn staged_rows_hold_only_the_difference_and_an_abandoned_plan_leaves_nothing() {
    let (pg, store) = start("n1");
    // Many keys in one bucket, so a bucket has several rows.
    let keys: Vec<String> = (0..5000)
        .map(|i| format!("u{i}"))
        .filter(|k| bucket_of(k.as_bytes()) == bucket_of(b"u0"))
        .collect();
    assert!(keys.len() >= 3, "{keys:?}");
    let mut users: BTreeMap<String, UserRec> = keys
        .iter()
        .map(|k| (k.clone(), user(STATUS_ACTIVE, &[("username", k)])))
        .collect();
    let state = put_all(&store, "t", &users);
    let count = |sql: &str| pg.psql("hr", sql);
    assert_eq!(count("SELECT count(*) FROM roster.staged_rows"), "0");
    // Unchanged: a generation (its marker), no rows.
    let same = stage(&store, "t", &users, &["u0"]);
    assert_eq!(
        count("SELECT count(*) FROM roster.staged_rows WHERE key <> ''"),
        "0"
    );
    assert_eq!(
        count("SELECT count(*) FROM roster.staged_rows WHERE status = 'staged'"),
        "1"
    );
    // One changed, one removed: two rows, the removal with no record.
    users.insert(keys[0].clone(), user(STATUS_ACTIVE, &[("role", "new")]));
    users.remove(&keys[1]);
    let plan = stage(&store, "t", &users, &["u0"]);
    assert_eq!(
        count(
            "SELECT string_agg(key || ':' || (record IS NULL)::text, ',' ORDER BY key) \
             FROM roster.staged_rows WHERE node_id = 'n1' AND key <> ''"
        ),
        {
            let mut v = [format!("{}:false", keys[0]), format!("{}:true", keys[1])];
            v.sort();
            v.join(",")
        }
    );
    // Abandoned: discarded, the directory as it was.
    store.discard_staged("t", &plan).unwrap();
    store.discard_staged("t", &same).unwrap();
    assert_eq!(count("SELECT count(*) FROM roster.staged_rows"), "0");
    assert_eq!(store.tenant_state("t").unwrap(), state);
    assert_eq!(store.users("t", None).unwrap().len(), keys.len());
    // Committed, the removal removes and the change changes.
    let plan = stage(&store, "t", &users, &["u0"]);
    let after = commit(&store, "t", state.version, &plan);
    assert_eq!(after.version, state.version + 1);
    assert!(store.user("t", &keys[1]).unwrap().is_none());
    assert_eq!(
        store.user("t", &keys[0]).unwrap().unwrap().fields["role"],
        "new"
    );
    assert_eq!(count("SELECT count(*) FROM roster.staged_rows"), "0");
    // What a node staged before it stopped is swept when it starts again (once it has found no
    // live twin: `forget_own_staging`); others' stay.
    let other = open(&pg.url("hr"), "n2");
    users.insert(keys[2].clone(), user(STATUS_DELETED, &[]));
    let swept = stage(&store, "t", &users, &["u0"]);
    stage(&other, "t", &users, &["u0"]);
    assert_eq!(count("SELECT count(*) FROM roster.staged_rows"), "4");
    open(&pg.url("hr"), "n1").forget_own_staging().unwrap();
    assert_eq!(
        count("SELECT string_agg(DISTINCT node_id, ',') FROM roster.staged_rows"),
        "n2"
    );
    // A plan whose staged rows were swept does not commit (it would lose them silently).
    let e = store
        .commit(&Commit {
            tenant: "t".into(),
            expected_version: after.version,
            buckets: swept,
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("staged for tenant t are gone"),
        "{e:#}"
    );
    assert_eq!(store.tenant_state("t").unwrap(), after);
    assert_eq!(
        store.user("t", &keys[2]).unwrap().unwrap().status,
        UserStatus::Active
    );
}

#[test]
fn the_read_contract_shows_typed_values_and_never_a_hash() {
    let (pg, store) = start("n1");
    let hash = roster::login::hash_password("Pa55word!").unwrap();
    let mut ann = user(
        STATUS_ACTIVE,
        &[
            ("email", "ann@x.example"),
            ("first_name", "Ann"),
            ("date_of_birth", "1990-02-03"),
            ("start_date", "not-a-date"),
            ("sex", "F"),
            ("groups", "sales\u{1f}emea"),
            ("custom.badge", "7"),
        ],
    );
    ann.pw_hash = hash.clone();
    let mut gone = user(STATUS_DELETED, &[("email", "gone@x.example")]);
    gone.deleted_at = 1_700_000_200_000;
    put_all(&store, "acme", &directory(&[("e100", ann), ("e200", gone)]));
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT key || '|' || status || '|' || first_name || '|' || date_of_birth || '|' \
             || coalesce(start_date::text, 'NULL') || '|' || sex || '|' \
             || array_to_string(groups, ';') || '|' || (attributes->>'custom.badge') || '|' \
             || (created_at = to_timestamp(1700000000)) || '|' || (deleted_at IS NULL) \
             FROM roster.users WHERE tenant = 'acme' AND email = 'ann@x.example'"
        ),
        "e100|active|Ann|1990-02-03|NULL|F|sales;emea|7|true|true"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT key || '|' || status || '|' || (deleted_at = to_timestamp(1700000200)) \
             FROM roster.users WHERE tenant = 'acme' AND status = 'deleted'"
        ),
        "e200|deleted|true"
    );
    let everything = pg.psql("hr", "SELECT row_to_json(u)::text FROM roster.users u");
    assert!(everything.contains("ann@x.example"), "{everything}");
    assert!(!everything.contains("argon2"), "{everything}");
    // The hash is kept (it verifies) but never shown.
    assert!(store
        .verify_user_password("acme", "e100", "Pa55word!")
        .unwrap());
    assert!(!store.verify_user_password("acme", "e100", "wrong").unwrap());
    assert!(!store
        .verify_user_password("acme", "e200", "Pa55word!")
        .unwrap());
    let shown = serde_json::to_string(&store.users("acme", None).unwrap()).unwrap();
    assert!(!shown.contains("argon2") && shown.contains("\"has_password\":true"));
}

#[test]
fn update_user_rewrites_one_user_and_bumps_the_version() {
    let (pg, store) = start("n1");
    let users = directory(&[
        ("a", user(STATUS_DELETED, &[("job_title", "Old")])),
        ("b", user(STATUS_ACTIVE, &[])),
    ]);
    let state = put_all(&store, "t", &users);
    let b = bucket_of(b"a") as usize;
    let rec = store
        .update_user("t", "a", &mut |r| {
            r.status = STATUS_ACTIVE;
            r.set("job_title", Some("New"));
            Ok(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(rec.get("job_title"), Some("New"));
    let after = store.tenant_state("t").unwrap();
    assert_eq!(after.version, state.version + 1);
    assert_ne!(after.gen(b), state.gen(b));
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT status || ' ' || job_title FROM roster.users WHERE key = 'a'"
        ),
        "active New"
    );
    // An error from `change` writes nothing; a missing key is None.
    let failed = store.update_user("t", "a", &mut |r| {
        r.set("job_title", Some("Never"));
        anyhow::bail!("refused")
    });
    assert!(failed.is_err());
    assert_eq!(store.tenant_state("t").unwrap(), after);
    assert_eq!(
        store.user("t", "a").unwrap().unwrap().fields["job_title"],
        "New"
    );
    let missing = store.update_user("t", "zz", &mut |_| Ok(())).unwrap();
    assert!(missing.is_none());
    // A plan made before the rewrite no longer commits.
    let stale = store.commit(&Commit {
        tenant: "t".into(),
        expected_version: state.version,
        buckets: stage(&store, "t", &users, &["b"]),
        ..Default::default()
    });
    assert!(stale.is_err());
    // A bucket read at a generation a commit replaced says so.
    let old = store.bucket("t", b as u16, state.gen(b));
    assert!(format!("{:#}", old.unwrap_err()).contains("missing from the store"));
    let now = store.bucket("t", b as u16, after.gen(b)).unwrap();
    assert!(now.is_some());
    assert_eq!(store.bucket("t", 0, 0).unwrap(), None);
}

#[test]
fn users_listings_match_the_sled_store() {
    let (_pg, pg_store) = start("n1");
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path()).unwrap();
    // Keys whose byte order differs from a linguistic order, across many buckets.
    let mut pairs = Vec::new();
    for i in 0..2500u32 {
        let key = match i % 5 {
            0 => format!("User{i}@x.example"),
            1 => format!("user{i}@x.example"),
            2 => format!("é{i}"),
            3 => format!("_{i}"),
            _ => format!("Z{i}"),
        };
        let status = [STATUS_ACTIVE, STATUS_DELETED, 1][(i % 3) as usize];
        let fields: Vec<(&str, String)> = vec![
            ("first_name", format!("F{}", i % 7)),
            ("groups", format!("g{}\u{1f}h", i % 4)),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        pairs.push((key, user(status, &fields)));
    }
    let users: BTreeMap<String, UserRec> = pairs.into_iter().collect();
    for store in [&pg_store, &sled] {
        put_all(store, "t", &users);
    }
    assert_eq!(
        pg_store.users("t", None).unwrap(),
        sled.users("t", None).unwrap()
    );
    for status in [
        UserStatus::Active,
        UserStatus::Inactive,
        UserStatus::Deleted,
    ] {
        let pg_users = pg_store.users("t", Some(status)).unwrap();
        assert!(!pg_users.is_empty());
        assert_eq!(pg_users, sled.users("t", Some(status)).unwrap());
    }
    assert_eq!(
        pg_store.user_counts("t").unwrap(),
        sled.user_counts("t").unwrap()
    );
    let keep = |u: &roster::model::User| u.first_name.as_deref() == Some("F3");
    for (skip, take) in [(0, 10), (5, 100), (300, 50), (0, 0), (10_000, 5)] {
        let p = pg_store.users_page("t", &keep, skip, take).unwrap();
        assert_eq!(p, sled.users_page("t", &keep, skip, take).unwrap());
    }
    let all = pg_store.users_page("t", &|_| true, 1990, 100).unwrap();
    assert_eq!((all.total, all.users.len()), (2500, 100));
    assert_eq!(
        pg_store.user("t", " USER1@X.EXAMPLE ").unwrap(),
        sled.user("t", " USER1@X.EXAMPLE ").unwrap()
    );
    assert!(pg_store.user("t", "user1@x.example").unwrap().is_some());
    assert_eq!(pg_store.user("t", "nobody").unwrap(), None);
    assert_eq!(pg_store.user_counts("other").unwrap(), (0, 0, 0));
    assert!(pg_store.users("other", None).unwrap().is_empty());
}

#[test]
fn a_bucket_committed_as_generation_zero_is_emptied() {
    let (pg, store) = start("n1");
    // "a" and a key of another bucket.
    let other = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| bucket_of(k.as_bytes()) != bucket_of(b"a"))
        .unwrap();
    let users = directory(&[
        ("a", user(STATUS_ACTIVE, &[])),
        (other.as_str(), user(STATUS_ACTIVE, &[])),
    ]);
    let state = put_all(&store, "t", &users);
    let a = bucket_of(b"a");
    let after = commit(&store, "t", state.version, &[(a, 0)]);
    assert_eq!(
        (after.version, after.gen(a as usize)),
        (state.version + 1, 0)
    );
    assert_eq!(
        after.gen(bucket_of(other.as_bytes()) as usize),
        state.gen(bucket_of(other.as_bytes()) as usize)
    );
    assert!(store.user("t", "a").unwrap().is_none());
    assert!(store.user("t", &other).unwrap().is_some());
    assert_eq!(store.bucket("t", a, 0).unwrap(), None);
    assert_eq!(
        pg.psql(
            "hr",
            &format!("SELECT count(*) FROM roster.bucket_gens WHERE bucket = {a}")
        ),
        "0"
    );
}

#[test]
fn update_user_runs_change_again_when_the_user_changed_meanwhile() {
    let (pg, store) = start("n1");
    put_all(
        &store,
        "t",
        &directory(&[("a", user(STATUS_ACTIVE, &[("first_name", "Ann")]))]),
    );
    // Another writer's record for "a", written while `change` runs.
    let sneak = |name: &str| {
        let mut enc = Vec::new();
        user(STATUS_ACTIVE, &[("first_name", name)]).encode_into(&mut enc);
        pg.psql(
            "hr",
            &format!(
                "UPDATE roster.user_rows SET record = decode('{}', 'hex') WHERE key = 'a'",
                hex::encode(&enc)
            ),
        );
    };
    let mut calls = 0;
    let rec = store
        .update_user("t", "a", &mut |r| {
            calls += 1;
            if calls == 1 {
                sneak("Concurrent");
            }
            r.set("job_title", Some("New"));
            Ok(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(calls, 2, "the first write found the record changed");
    assert_eq!(
        (rec.get("first_name"), rec.get("job_title")),
        (Some("Concurrent"), Some("New"))
    );
    let shown = store.user("t", "a").unwrap().unwrap();
    assert_eq!(shown.first_name.as_deref(), Some("Concurrent"));
    assert_eq!(shown.fields["job_title"], "New");
    // A user that never stops changing: a few attempts, then an error, nothing of ours written.
    let mut round = 0;
    let e = store
        .update_user("t", "a", &mut |r| {
            round += 1;
            sneak(&format!("Other{round}"));
            r.set("job_title", Some("Never"));
            Ok(())
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("kept changing"), "{e:#}");
    assert_eq!(round, 5);
    let shown = store.user("t", "a").unwrap().unwrap();
    assert_eq!(shown.first_name.as_deref(), Some("Other5"));
    assert!(!shown.fields.contains_key("job_title"));
}
