//! The group member counts that `/Groups` reads (`Users::groups_page`), kept by the store's
//! commits, on sled and on PostgreSQL (a throwaway cluster, tests/support/postgres.rs): after
//! the real import engine creates users, changes their groups, deactivates users missing from
//! a file (still members) and deletes them (no longer members); after `import::restore` brings
//! users back; and for a directory written before the counts existed (PostgreSQL: the same
//! users in a database of schema version 6, then migrated by opening it). Every count is compared with the members found by reading every user.

#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod test_postgres;

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{restore, run_file, RunOptions};
use roster::model::UserStatus;
use roster::store::{GroupSummary, Store};
use std::collections::{BTreeMap, BTreeSet};
use test_postgres::TestPostgres;

fn tenant(id: &str, on_missing: OnMissing) -> Tenant {
    let columns = [
        ("mapping_code", "id"),
        ("email", "email"),
        ("first_name", "first"),
        ("last_name", "last"),
        ("groups", "groups"),
    ];
    let mut t = Tenant::for_import(id, MatchBy::MappingCode, on_missing, &columns);
    t.import.max_missing_percent = 100.0;
    t
}

/// The groups and member counts found by reading every user (the rule of /Groups: users that
/// are not deleted, each non-empty name once).
fn truth(store: &Store, tenant: &str) -> Vec<GroupSummary> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for u in store.users(tenant, None).unwrap() {
        if u.status == UserStatus::Deleted {
            continue;
        }
        let names: BTreeSet<String> = u
            .fields
            .get("groups")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str())
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        for n in names {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(name, members)| GroupSummary { name, members })
        .collect()
}

/// The store's counts equal the truth, listed, paged and one by one; returns them.
fn check(store: &Store, tenant: &str, step: &str) -> BTreeMap<String, u64> {
    let want = truth(store, tenant);
    let page = store.groups_page(tenant, None, 0, 1000).unwrap();
    assert_eq!(page.groups, want, "{step}: {tenant}");
    assert_eq!(page.total, want.len() as u64, "{step}: {tenant}");
    let second = store.groups_page(tenant, None, 1, 2).unwrap();
    let expect: Vec<GroupSummary> = want.iter().skip(1).take(2).cloned().collect();
    assert_eq!(second.groups, expect, "{step}: {tenant} page 2");
    for g in &want {
        let one = store.groups_page(tenant, Some(&g.name), 0, 10).unwrap();
        assert_eq!(
            one.groups,
            std::slice::from_ref(g),
            "{step}: {tenant} {}",
            g.name
        );
    }
    let none = store.groups_page(tenant, Some("nobody"), 0, 10).unwrap();
    assert_eq!((none.total, none.groups.len()), (0, 0), "{step}");
    want.into_iter().map(|g| (g.name, g.members)).collect()
}

fn import(store: &Store, t: &Tenant, dir: &std::path::Path, csv: &str) {
    let path = dir.join(format!("{}.csv", t.id));
    std::fs::write(&path, csv).unwrap();
    let out = run_file(store, t, &path, &RunOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.record.counts.rows > 0,
        "{:?} {:?}",
        out.record.status,
        out.record.messages
    );
}

/// A file of users `(id, groups)` (groups separated by `;`).
fn file(users: &[(&str, &str)]) -> String {
    let mut s = String::from("id,email,first,last,groups\n");
    for (id, groups) in users {
        s.push_str(&format!("{id},{id}@x.example,F{id},L{id},{groups}\n"));
    }
    s
}

/// Imports, changes, deactivations, deletions and restores, with the counts checked after each.
fn counts_follow_every_change(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme", OnMissing::Deactivate);
    let beta = tenant("beta", OnMissing::Delete);
    let mut a = vec![
        ("A1", "Sales;All"),
        ("A2", "All;;Sales;Sales"),
        ("A3", "sales;All"),
        ("A4", ""),
        ("A5", "R&D/Ops;All"),
    ];
    import(store, &acme, dir.path(), &file(&a));
    let c = check(store, "acme", "created");
    assert_eq!(c.get("All"), Some(&4));
    assert_eq!(c.get("Sales"), Some(&2));
    assert_eq!(c.get("sales"), Some(&1));
    import(
        store,
        &beta,
        dir.path(),
        &file(&[("B1", "Ops"), ("B2", "Ops;Solo")]),
    );
    assert_eq!(check(store, "acme", "beta created"), c, "tenants are apart");
    let b = check(store, "beta", "beta created");
    assert_eq!((b.get("Ops"), b.get("Solo")), (Some(&2), Some(&1)));

    // Groups changed: A1 leaves Sales and joins New, A4 joins All, A2's duplicates go.
    a[0].1 = "All;New";
    a[1].1 = "All;Sales";
    a[3].1 = "All";
    import(store, &acme, dir.path(), &file(&a));
    let c = check(store, "acme", "groups changed");
    assert_eq!(
        (c.get("All"), c.get("Sales"), c.get("New")),
        (Some(&5), Some(&1), Some(&1))
    );

    // A5 missing: deactivated, still a member (R&D/Ops keeps it).
    import(store, &acme, dir.path(), &file(&a[..4]));
    let c = check(store, "acme", "deactivated");
    assert_eq!((c.get("R&D/Ops"), c.get("All")), (Some(&1), Some(&5)));

    // B2 missing from beta: deleted, no longer a member; Solo has no member left.
    import(store, &beta, dir.path(), &file(&[("B1", "Ops")]));
    let b = check(store, "beta", "deleted");
    assert_eq!((b.get("Ops"), b.get("Solo")), (Some(&1), None));

    // Restored by an operator: B2 a member again; A5 active again (counts unchanged).
    restore(&**store, &beta, "B2").unwrap_or_else(|e| panic!("{e:#}"));
    let b = check(store, "beta", "restored");
    assert_eq!((b.get("Ops"), b.get("Solo")), (Some(&2), Some(&1)));
    restore(&**store, &acme, "A5").unwrap_or_else(|e| panic!("{e:#}"));
    let c = check(store, "acme", "reactivated");
    assert_eq!(c.get("R&D/Ops"), Some(&1));

    // Back in a file with other groups.
    a[4].1 = "All";
    import(store, &acme, dir.path(), &file(&a));
    let c = check(store, "acme", "re-imported");
    assert_eq!((c.get("R&D/Ops"), c.get("All")), (None, Some(&5)));
}

#[test]
fn sled_counts_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    counts_follow_every_change(&store);
}

#[test]
fn postgres_counts_follow_every_change_and_migration_7_fills_them() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let target = roster::store::postgres::parse_url(&url).unwrap();
    let store = Store::open_postgres(&target, "n1").unwrap_or_else(|e| panic!("{e:#}"));
    counts_follow_every_change(&store);
    let before = check(&store, "acme", "before");
    drop(store);

    // The same users in a database as a roster of schema version 6 left it (no counts, one
    // table of users for every tenant); opening it migrates it to the current version.
    let old = roster::store::postgres::parse_url(&pg.create_database("old")).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(roster::store::postgres::migrate_to(&old, 6))
        .unwrap();
    let copy = pg.psql(
        "hr",
        "SELECT format('INSERT INTO roster.user_rows SELECT * FROM \
         json_populate_recordset(NULL::roster.user_rows, %L)', json_agg(u)) FROM roster.user_rows u",
    );
    pg.psql("old", &copy);
    let store = Store::open_postgres(&old, "n1").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(check(&store, "acme", "migrated"), before);
    check(&store, "beta", "migrated");
}
