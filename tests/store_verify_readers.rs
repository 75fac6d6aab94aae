//! The two store readers `roster migrate-store` verifies its copy with, on both backends
//! (sled in a temporary folder, PostgreSQL in a throwaway cluster: tests/support/postgres.rs):
//! `RunLog::ledger_page` pages a tenant's file ledger in byte order of the file name, and
//! `ChangeLog::cursors` lists a tenant's cursors in byte order of the consumer; both stores
//! give back the same, and another tenant's entries never show.

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod test_postgres;

use chrono::{TimeZone, Utc};
use roster::model::changelog::Cursor;
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{Backend, ChangeLog, Commit, Directory, LedgerEntry, LedgerState, SledStore};
use test_postgres::TestPostgres;

const FILES: [&str; 5] = ["users.csv", "B.csv", "a.csv", "é.csv", "b.csv"];

fn entry(tenant: &str, file: &str, i: i64) -> LedgerEntry {
    LedgerEntry {
        tenant: tenant.into(),
        file: file.into(),
        sha256: format!("{i:064x}"),
        state: if i % 2 == 0 {
            LedgerState::Done
        } else {
            LedgerState::Failed
        },
        import_id: Some(format!("i-{i}")),
        updated_at: Utc.timestamp_micros(1_790_000_000_000_000 + i).unwrap(),
    }
}

/// Every ledger entry of `tenant`, read two at a time.
fn ledger_in_pages(store: &dyn Backend, tenant: &str) -> Vec<LedgerEntry> {
    let (mut out, mut after) = (Vec::new(), String::new());
    loop {
        let page = store.ledger_page(tenant, &after, 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.file.clone();
        out.extend(page);
    }
    out
}

fn cursor(position: u64) -> Cursor {
    Cursor {
        position,
        last_success: Some(Utc::now()),
        last_error: Some(format!("error {position}")),
        ..Cursor::default()
    }
}

#[test]
fn both_stores_page_the_ledger_and_list_cursors_in_byte_order() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let to = PostgresStore::open(&parse_url(&url).unwrap(), "test-node").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let from = SledStore::open(dir.path()).unwrap();
    let consumers = ["webhook:b", "scim-push", "webhook:A"];
    for (tenant, n) in [("t", 0), ("t1", 10), ("s", 20)] {
        for (i, file) in FILES.iter().enumerate() {
            let e = entry(tenant, file, n + i as i64);
            from.commit(&Commit {
                tenant: tenant.into(),
                ledger: Some(e.clone()),
                ..Default::default()
            })
            .unwrap();
            to.put_ledger_entry(&e).unwrap();
        }
        for (i, consumer) in consumers.iter().enumerate() {
            let c = cursor(n as u64 + i as u64);
            from.save_cursor(tenant, consumer, &c).unwrap();
            to.save_cursor(tenant, consumer, &c).unwrap();
        }
    }
    let mut files: Vec<&str> = FILES.to_vec();
    files.sort();
    let mut names: Vec<&str> = consumers.to_vec();
    names.sort();
    for store in [&from as &dyn Backend, &to] {
        let ledger = ledger_in_pages(store, "t");
        let got: Vec<&str> = ledger.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(got, files, "byte order, tenant t alone");
        assert!(ledger.iter().all(|e| e.tenant == "t"));
        let cursors = store.cursors("t").unwrap();
        let got: Vec<&str> = cursors.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(got, names);
        assert!(store.ledger_page("nobody", "", 10).unwrap().is_empty());
        assert!(store.cursors("nobody").unwrap().is_empty());
    }
    for tenant in ["t", "t1", "s"] {
        assert_eq!(ledger_in_pages(&from, tenant), ledger_in_pages(&to, tenant));
        assert_eq!(from.cursors(tenant).unwrap(), to.cursors(tenant).unwrap());
    }
}
