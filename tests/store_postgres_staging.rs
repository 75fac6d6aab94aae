//! Staging on PostgreSQL (h-pgspeed, `store/postgres/staging.rs`) against a real PostgreSQL:
//! `stage_bucket` compares a staged bucket with the bucket the same thread just read instead of
//! reading it again, but only while that read is current; a bucket rewritten in between (by
//! `update_user`, which replaces the bucket's generation) is read again, so the staged
//! difference is the one against the rows of now. And the change log a commit publishes from
//! several staged generations is numbered without gaps in the commit's bucket order.
//!
//! (A file of its own: tests/store_postgres_directory.rs is near the ~600 line limit.)

#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod test_postgres;

use roster::model::bucket::bucket_of;
use roster::model::changelog::{ChangeKind, PendingChange};
use roster::model::packed::{bucket_push, UserRec, STATUS_ACTIVE};
use roster::store::{Commit, Store};
use test_postgres::TestPostgres;

fn start() -> (TestPostgres, Store) {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let target = roster::store::postgres::parse_url(&url).unwrap();
    let store = Store::open_postgres(&target, "n1").unwrap_or_else(|e| panic!("{e:#}"));
    (pg, store)
}

fn user(role: &str) -> UserRec {
    let mut r = UserRec {
        status: STATUS_ACTIVE,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_100_000,
        ..Default::default()
    };
    r.set("role", Some(role));
    r
}

/// The packed bucket of `users` (already sorted by key).
fn packed(users: &[(&str, UserRec)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, rec) in users {
        let mut enc = Vec::new();
        rec.encode_into(&mut enc);
        bucket_push(&mut out, k.as_bytes(), &enc);
    }
    out
}

/// Keys that share one bucket, sorted.
fn same_bucket_keys(n: usize) -> (u16, Vec<String>) {
    let b = bucket_of(b"u0");
    let mut keys: Vec<String> = (0..20_000)
        .map(|i| format!("u{i}"))
        .filter(|k| bucket_of(k.as_bytes()) == b)
        .take(n)
        .collect();
    keys.sort();
    assert_eq!(keys.len(), n);
    (b, keys)
}

fn commit(store: &Store, expected: u64, buckets: Vec<(u16, u64)>) {
    store
        .commit(&Commit {
            tenant: "t".into(),
            expected_version: expected,
            buckets,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn a_bucket_rewritten_after_it_was_read_is_compared_as_it_is_now() {
    let (pg, store) = start();
    let (b, keys) = same_bucket_keys(3);
    let original: Vec<(&str, UserRec)> = keys.iter().map(|k| (k.as_str(), user("old"))).collect();
    let g = store.stage_bucket("t", b, &packed(&original)).unwrap();
    commit(&store, 0, vec![(b, g)]);

    // Read (this thread keeps the read), then another writer rewrites a user of the bucket.
    let state = store.tenant_state("t").unwrap();
    let read = store.bucket("t", b, state.gen(b as usize)).unwrap();
    assert_eq!(read.as_deref(), Some(packed(&original).as_slice()));
    store
        .update_user("t", &keys[0], &mut |r| {
            r.set("role", Some("rewritten"));
            Ok(())
        })
        .unwrap()
        .unwrap();

    // Staging the original content again: against the stale read it would look unchanged;
    // against the rows of now, the rewritten user is a difference.
    let g = store.stage_bucket("t", b, &packed(&original)).unwrap();
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(key, ',') FROM roster.staged_rows WHERE key <> ''"
        ),
        keys[0]
    );
    let now = store.tenant_state("t").unwrap();
    commit(&store, now.version, vec![(b, g)]);
    assert_eq!(
        store.user("t", &keys[0]).unwrap().unwrap().fields["role"],
        "old"
    );

    // The normal course: read, then stage one change from the same thread.
    let state = store.tenant_state("t").unwrap();
    store.bucket("t", b, state.gen(b as usize)).unwrap();
    let mut changed = original.clone();
    changed[2].1 = user("new");
    let g = store.stage_bucket("t", b, &packed(&changed)).unwrap();
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(key, ',') FROM roster.staged_rows WHERE key <> ''"
        ),
        keys[2]
    );
    commit(&store, state.version, vec![(b, g)]);
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(role, ',' ORDER BY key) FROM roster.users"
        ),
        "old,old,new"
    );
}

#[test]
fn changes_of_several_generations_are_numbered_in_the_commits_bucket_order() {
    let (pg, store) = start();
    let mut buckets = Vec::new();
    let mut expected = Vec::new();
    // Three buckets with 3, 1 and 2 new users, committed in the order 2, 0, 1.
    let mut groups: Vec<(u16, Vec<String>)> = Vec::new();
    for i in 0..20_000 {
        let k = format!("k{i}");
        let b = bucket_of(k.as_bytes());
        if let Some((_, ks)) = groups.iter_mut().find(|(gb, _)| *gb == b) {
            ks.push(k);
        } else if groups.len() < 3 {
            groups.push((b, vec![k]));
        }
    }
    let sizes = [3usize, 1, 2];
    for ((b, ks), n) in groups.iter_mut().zip(sizes) {
        ks.truncate(n);
        ks.sort();
        let users: Vec<(&str, UserRec)> = ks.iter().map(|k| (k.as_str(), user("r"))).collect();
        let g = store.stage_bucket("t", *b, &packed(&users)).unwrap();
        let changes: Vec<PendingChange> = ks
            .iter()
            .map(|k| PendingChange {
                key: k.clone(),
                kind: ChangeKind::Created,
                fields: Vec::new(),
            })
            .collect();
        store.stage_changes("t", *b, g, &changes).unwrap();
        buckets.push((*b, g));
    }
    let order = [2usize, 0, 1];
    for &i in &order {
        expected.extend(groups[i].1.iter().cloned());
    }
    commit(&store, 0, order.iter().map(|&i| buckets[i]).collect());
    let logged = store.changes("t", 0, 100).unwrap();
    assert_eq!(
        logged.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<u64>>()
    );
    assert_eq!(
        logged.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        pg.psql("hr", "SELECT count(*) FROM roster.staged_changes"),
        "0"
    );
    assert_eq!(
        pg.psql("hr", "SELECT change_seq FROM roster.tenant_state"),
        "6"
    );
}

/// A commit writing at least 50,000 rows refreshes the planner's statistics of the tenant's
/// partition of `user_rows` at once (autovacuum is off for it here, so nothing else could
/// have): `pg_stats` has no row for a table never analyzed, then has its columns. A small
/// commit leaves them alone.
#[test]
fn a_large_commit_refreshes_the_planners_statistics() {
    let (pg, store) = start();
    let analyzed_columns = || -> u64 {
        pg.psql(
            "hr",
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'roster' \
             AND tablename = roster.tenant_partition('user_rows', 't')",
        )
        .trim()
        .parse()
        .unwrap()
    };
    // A small commit first: 3 rows (it makes the tenant's partition), no ANALYZE.
    let (b, keys) = same_bucket_keys(3);
    let small: Vec<(&str, UserRec)> = keys.iter().map(|k| (k.as_str(), user("x"))).collect();
    let g = store.stage_bucket("t", b, &packed(&small)).unwrap();
    commit(&store, 0, vec![(b, g)]);
    pg.psql(
        "hr",
        "DO $$ BEGIN EXECUTE format('ALTER TABLE roster.%I SET (autovacuum_enabled = off)', \
         roster.tenant_partition('user_rows', 't')); END $$",
    );
    assert_eq!(analyzed_columns(), 0, "a small commit does not analyze");
    // 60,000 users over every bucket (none of the small commit's keys).
    let mut by_bucket: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for i in 0..60_000 {
        let key = format!("big{i:06}");
        by_bucket
            .entry(bucket_of(key.as_bytes()))
            .or_default()
            .push(key);
    }
    let mut staged = Vec::new();
    for (bucket, mut keys) in by_bucket {
        if bucket == b {
            keys.extend(small.iter().map(|(k, _)| k.to_string()));
        }
        keys.sort();
        let users: Vec<(&str, UserRec)> = keys.iter().map(|k| (k.as_str(), user("x"))).collect();
        staged.push((
            bucket,
            store.stage_bucket("t", bucket, &packed(&users)).unwrap(),
        ));
    }
    commit(&store, 1, staged);
    assert!(analyzed_columns() > 10, "statistics refreshed");
}
