//! A tenant's partitions of `roster.user_rows` (schema 8) and `roster.changes` (schema 9;
//! `store/postgres/partitions.rs`) against a real PostgreSQL: a tenant's first commit makes
//! both, filled, then attached, which gives each the indexes of its table once; a first commit
//! that fails after that leaves no table behind; later commits write into the partitions; and
//! migrations 8 and 9 move the users and the change log of a version-7 database into
//! partitions of their tenants; migration 10 leaves no plan staged before it half-committable.

#[path = "support/store.rs"]
mod test_store;

use roster::model::bucket::bucket_of;
use roster::model::changelog::{ChangeKind, PendingChange};
use roster::model::packed::{bucket_push, UserRec, STATUS_ACTIVE};
use roster::store::{Commit, Store};
use test_store::test_postgres::TestPostgres;

fn open(pg: &TestPostgres) -> Store {
    test_store::open_postgres(&pg.url("hr"))
}

fn user(role: &str) -> UserRec {
    let mut r = UserRec {
        status: STATUS_ACTIVE,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_100_000,
        ..Default::default()
    };
    r.set("role", Some(role));
    r.set("email", Some("someone@example.com"));
    r
}

/// Stages `keys` (each user with `role`, logged as `created`) bucket by bucket for `tenant`:
/// the commit's buckets.
fn stage(store: &Store, tenant: &str, keys: &[String], role: &str) -> Vec<(u16, u64)> {
    let mut by_bucket: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for k in keys {
        by_bucket
            .entry(bucket_of(k.as_bytes()))
            .or_default()
            .push(k);
    }
    let mut staged = Vec::new();
    for (bucket, mut keys) in by_bucket {
        keys.sort();
        let mut packed = Vec::new();
        let mut changes = Vec::new();
        for k in keys {
            let mut enc = Vec::new();
            user(role).encode_into(&mut enc);
            bucket_push(&mut packed, k.as_bytes(), &enc);
            changes.push(PendingChange {
                key: k.to_string(),
                kind: ChangeKind::Created,
                fields: Vec::new(),
            });
        }
        let gen = store.stage_bucket(tenant, bucket, &packed).unwrap();
        store.stage_changes(tenant, bucket, gen, &changes).unwrap();
        staged.push((bucket, gen));
    }
    staged
}

fn commit(
    store: &Store,
    tenant: &str,
    expected: u64,
    buckets: Vec<(u16, u64)>,
) -> anyhow::Result<()> {
    store
        .commit(&Commit {
            tenant: tenant.into(),
            expected_version: expected,
            buckets,
            ..Default::default()
        })
        .map(|_| ())
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Tables of schema roster that are partitions of `base`, with the tenant each holds.
fn partitions_of(pg: &TestPostgres, base: &str) -> String {
    pg.psql(
        "hr",
        &format!(
            "SELECT string_agg(c.relname || '=' || pg_get_expr(c.relpartbound, c.oid), ' ' \
             ORDER BY c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'roster.{base}'::regclass"
        ),
    )
}

/// Tables of schema roster that are partitions of user_rows, with the tenant each holds.
fn partitions(pg: &TestPostgres) -> String {
    partitions_of(pg, "user_rows")
}

/// (indexes of user_rows, indexes of the tenant's partition, those attached to a parent index).
fn index_counts(pg: &TestPostgres, tenant: &str) -> (u64, u64, u64) {
    index_counts_of(pg, "user_rows", tenant)
}

/// [`index_counts`] of the partitioned table `base`.
fn index_counts_of(pg: &TestPostgres, base: &str, tenant: &str) -> (u64, u64, u64) {
    let n = |sql: String| -> u64 { pg.psql("hr", &sql).parse().unwrap() };
    let part =
        format!("format('roster.%I', roster.tenant_partition('{base}', '{tenant}'))::regclass");
    (
        n(format!(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'roster.{base}'::regclass"
        )),
        n(format!(
            "SELECT count(*) FROM pg_index WHERE indrelid = {part}"
        )),
        n(format!(
            "SELECT count(*) FROM pg_index x JOIN pg_inherits i ON i.inhrelid = x.indexrelid \
             WHERE x.indrelid = {part}"
        )),
    )
}

#[test]
fn a_first_commit_makes_the_tenants_partition_with_each_index_of_user_rows_once() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg);
    assert_eq!(partitions(&pg), "", "no tenant has users yet");

    let first = stage(&store, "t", &keys("k", 300), "old");
    commit(&store, "t", 0, first).unwrap_or_else(|e| panic!("{e:#}"));
    let (parent, part, attached) = index_counts(&pg, "t");
    assert!(parent >= 12, "user_rows has its indexes: {parent}");
    assert_eq!(
        (part, attached),
        (parent, parent),
        "each index built once, all adopted"
    );
    // Its 300 "created" changes went into a change-log table of its own, made the same way.
    let (parent, part, attached) = index_counts_of(&pg, "changes", "t");
    assert_eq!(
        (parent, part, attached),
        (2, 2, 2),
        "primary key and by-key index"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT count(*) || ':' || min(seq) || '-' || max(seq) || ':' || \
             bool_and(tableoid = format('roster.%I', roster.tenant_partition('changes', 't'))::regclass) \
             FROM roster.changes WHERE tenant = 't' AND kind = 'created'"
        ),
        "300:1-300:true"
    );
    // A tenant name that needs quoting in SQL gets its table too.
    let odd = "o'b \"x\"";
    let other = stage(&store, odd, &keys("k", 5), "other");
    commit(&store, odd, 0, other).unwrap_or_else(|e| panic!("{e:#}"));
    let listed = partitions(&pg);
    assert_eq!(listed.matches("FOR VALUES IN").count(), 2, "{listed}");
    assert!(
        listed.contains("('t')") && listed.contains("('o''b \"x\"')"),
        "{listed}"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT tenant || ':' || count(*) || ':' || min(role) FROM roster.users \
             WHERE tenant = 't' GROUP BY tenant"
        ),
        "t:300:old"
    );

    // A later commit writes into the partition: 100 users change, 200 stay.
    let changed = stage(&store, "t", &keys("k", 100), "new");
    let state = store.tenant_state("t").unwrap();
    commit(&store, "t", state.version, changed).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(role || '=' || n, ',' ORDER BY role) FROM (SELECT role, count(*) n \
             FROM roster.users WHERE tenant = 't' GROUP BY role) r"
        ),
        "new=100,old=200"
    );
    assert_eq!(index_counts(&pg, "t").1, index_counts(&pg, "t").0);
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT count(*) FROM roster.users WHERE tenant = 'o''b \"x\"'"
        ),
        "5"
    );
}

#[test]
fn a_first_commit_that_fails_after_making_the_partition_leaves_no_table() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let store = open(&pg);
    // The commit writes the bucket generations after the users: make that fail.
    pg.psql(
        "hr",
        "CREATE FUNCTION roster.refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON roster.bucket_gens \
         FOR EACH ROW EXECUTE FUNCTION roster.refuse()",
    );
    let staged = stage(&store, "t", &keys("k", 50), "old");
    let err = commit(&store, "t", 0, staged.clone()).unwrap_err();
    assert!(
        format!("{err:#}").contains("refused by the test"),
        "{err:#}"
    );
    assert_eq!(partitions(&pg), "");
    assert_eq!(partitions_of(&pg, "changes"), "");
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT count(*) FROM pg_class WHERE relname IN \
             (roster.tenant_partition('user_rows', 't'), roster.tenant_partition('changes', 't'))"
        ),
        "0",
        "the tables made by the failed commit are gone with it"
    );
    // The staged rows are still there: the same commit succeeds once nothing refuses it.
    pg.psql("hr", "DROP TRIGGER refuse ON roster.bucket_gens");
    commit(&store, "t", 0, staged).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        pg.psql("hr", "SELECT count(*) FROM roster.users WHERE tenant = 't'"),
        "50"
    );
}

#[tokio::test]
async fn migrations_8_and_9_move_each_tenants_users_and_changes_into_partitions_of_its_own() {
    let pg = TestPostgres::start();
    let target = roster::store::postgres::parse_url(&pg.create_database("hr")).unwrap();
    roster::store::postgres::migrate_to(&target, 7)
        .await
        .unwrap();
    for (tenant, key) in [("acme", "a1"), ("acme", "a2"), ("beta", "b1")] {
        pg.psql(
            "hr",
            &format!(
                "INSERT INTO roster.user_rows (tenant, key, status, email, created_at, \
                 updated_at, bucket, record) VALUES ('{tenant}', '{key}', 'active', \
                 '{key}@example.com', now(), now(), 3, '\\x00')"
            ),
        );
    }
    for (tenant, seq, key) in [("acme", 2, "a2"), ("acme", 1, "a1"), ("beta", 1, "b1")] {
        pg.psql(
            "hr",
            &format!(
                "INSERT INTO roster.changes (tenant, seq, at, import_id, key, kind, fields) \
                 VALUES ('{tenant}', {seq}, now(), 'i1', '{key}', 'created', '[]')"
            ),
        );
    }
    let migrated = roster::store::postgres::migrate_to(&target, 9)
        .await
        .unwrap();
    assert_eq!((migrated.from, migrated.to), (7, 9));
    let listed = partitions(&pg);
    assert!(
        listed.contains("('acme')") && listed.contains("('beta')"),
        "{listed}"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(tenant || '/' || key || '@' || \
             (tableoid = format('roster.%I', roster.tenant_partition('user_rows', tenant))::regclass), \
             ',' ORDER BY key) FROM roster.user_rows"
        ),
        "acme/a1@true,acme/a2@true,beta/b1@true"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(email, ',' ORDER BY key) FROM roster.users"
        ),
        "a1@example.com,a2@example.com,b1@example.com"
    );
    let (parent, part, attached) = index_counts(&pg, "acme");
    assert_eq!((part, attached), (parent, parent));
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(tenant || '/' || seq || '/' || key || '@' || \
             (tableoid = format('roster.%I', roster.tenant_partition('changes', tenant))::regclass), \
             ',' ORDER BY tenant, seq) FROM roster.changes"
        ),
        "acme/1/a1@true,acme/2/a2@true,beta/1/b1@true"
    );
    assert_eq!(index_counts_of(&pg, "changes", "beta"), (2, 2, 2));
    // The primary key is (key, tenant) now; ON CONFLICT (tenant, key) still finds it.
    pg.psql(
        "hr",
        "INSERT INTO roster.user_rows (tenant, key, status, email, created_at, updated_at, \
         bucket, record) VALUES ('beta', 'b1', 'inactive', 'b1@example.com', now(), now(), 3, \
         '\\x00') ON CONFLICT (tenant, key) DO UPDATE SET status = EXCLUDED.status",
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT status FROM roster.users WHERE tenant = 'beta'"
        ),
        "inactive"
    );
}

#[tokio::test]
async fn a_plan_staged_before_migration_10_is_refused_and_planned_again_not_applied_without_its_changes(
) {
    let pg = TestPostgres::start();
    let target = roster::store::postgres::parse_url(&pg.create_database("hr")).unwrap();
    roster::store::postgres::migrate_to(&target, 9)
        .await
        .unwrap();
    // What a node staged for tenant t under version 9: a bucket generation's marker, one user
    // and its change, one row per change.
    pg.psql(
        "hr",
        "INSERT INTO roster.staged_rows (gen, node_id, tenant, key, bucket, status) \
         VALUES (41, 'n1', 't', '', 3, 'staged'); \
         INSERT INTO roster.staged_rows (gen, node_id, tenant, key, bucket, status, record) \
         VALUES (41, 'n1', 't', 'k1', 3, 'active', '\\x00'); \
         INSERT INTO roster.staged_changes (gen, ord, node_id, tenant, key, kind, fields) \
         VALUES (41, 1, 'n1', 't', 'k1', 'created', '[]')",
    );
    let store = open(&pg);
    let err = commit(&store, "t", 0, vec![(3, 41)]).unwrap_err();
    assert!(format!("{err:#}").contains("are gone"), "{err:#}");
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT (SELECT count(*) FROM roster.users) || '/' || \
             (SELECT count(*) FROM roster.changes)"
        ),
        "0/0",
        "nothing applied"
    );
    // Planned again under version 10, it commits with its change.
    let staged = stage(&store, "t", &keys("k", 1), "r");
    commit(&store, "t", 0, staged).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(seq || ':' || key || ':' || kind, ',') FROM roster.changes"
        ),
        "1:k0000:created"
    );
}
