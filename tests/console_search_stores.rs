//! The console's user search done by the store (`Users::users_matching_status`) gives the same
//! pages on sled (each user evaluated) and on PostgreSQL (candidates found through indexes,
//! a walk of the key index past `SEARCH_COUNT_CAP` matches): every status, searches matching
//! one user, a few, and more than the cap, at several offsets. One throwaway PostgreSQL
//! cluster (tests/support/postgres.rs).

#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod test_postgres;

#[path = "support/directory.rs"]
mod directory;
use directory::put_all;

use roster::admin::filter::parse;
use roster::model::packed::{UserRec, STATUS_ACTIVE, STATUS_DELETED};
use roster::model::{UserFilter, UserStatus};
use roster::store::{Store, SEARCH_COUNT_CAP};
use std::collections::BTreeMap;

const STATUS_INACTIVE: u8 = 1;
/// More users than the search counts, so a broad search passes the cap.
const USERS: u32 = SEARCH_COUNT_CAP as u32 + 500;

fn directory() -> BTreeMap<String, UserRec> {
    let mut users = BTreeMap::new();
    for i in 0..USERS {
        let key = format!("user{i}@x.example");
        let mut r = UserRec {
            status: match i % 10 {
                0 => STATUS_INACTIVE,
                7 => STATUS_DELETED,
                _ => STATUS_ACTIVE,
            },
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            ..Default::default()
        };
        r.set("email", Some(&key));
        r.set("mapping_code", Some(&format!("E{i}")));
        r.set(
            "first_name",
            Some(["Ana", "Ivan", "Marko"][(i % 3) as usize]),
        );
        r.set("last_name", Some(&format!("Horvat{}", i % 700)));
        users.insert(key, r);
    }
    users
}

/// The console's search for `q` (admin::console::users::search_filter), as a SCIM filter.
fn search(q: &str) -> UserFilter {
    if q.is_empty() {
        return UserFilter::Everyone;
    }
    parse(&format!(
        "id eq \"{q}\" or externalId eq \"{q}\" or emails.value sw \"{q}\" or userName sw \"{q}\" \
         or name.familyName sw \"{q}\" or displayName sw \"{q}\""
    ))
    .unwrap()
}

#[test]
fn searches_page_the_same_on_sled_and_postgres() {
    let pg = test_postgres::TestPostgres::start();
    let url = pg.create_database("hr");
    let target = roster::store::postgres::parse_url(&url).unwrap();
    let pg_store = Store::open_postgres(&target, "n1").unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path()).unwrap();
    let users = directory();
    put_all(&pg_store, "t", &users);
    put_all(&sled, "t", &users);

    let statuses = [
        None,
        Some(UserStatus::Active),
        Some(UserStatus::Inactive),
        Some(UserStatus::Deleted),
    ];
    let queries = [
        "",
        "user4242@x.example",
        "E77",
        "horvat69",
        "ivan horvat1",
        "user",
        "zz",
    ];
    let mut over_cap = 0;
    for q in queries {
        let f = search(q);
        for status in statuses {
            for (skip, take) in [(0, 50), (50, 50), (9_990, 20), (20_000, 50)] {
                let want = sled
                    .users_matching_status("t", &f, status, skip, take)
                    .unwrap();
                let got = pg_store
                    .users_matching_status("t", &f, status, skip, take)
                    .unwrap_or_else(|e| panic!("{q:?} {status:?}: {e:#}"));
                let at = format!("{q:?} {status:?} ({skip}, {take})");
                assert_eq!(got.total, want.total, "{at}");
                assert_eq!(got, want, "{at}");
                assert!(
                    got.users
                        .iter()
                        .all(|u| status.is_none_or(|s| u.status == s)),
                    "{at}: only the status asked for"
                );
                if got.total > SEARCH_COUNT_CAP {
                    over_cap += 1;
                    assert!(q.is_empty() || got.total == SEARCH_COUNT_CAP + 1, "{at}");
                }
            }
        }
    }
    assert!(over_cap > 0, "some search passed the cap");
    // Exact answers where they are small.
    let one = pg_store
        .users_matching_status("t", &search("E77"), None, 0, 50)
        .unwrap();
    assert_eq!(one.total, 1);
    assert_eq!(one.users[0].key, "user77@x.example");
    let deleted = pg_store
        .users_matching_status("t", &search("horvat69"), Some(UserStatus::Deleted), 0, 50)
        .unwrap();
    assert!(deleted.total > 0);
    assert!(deleted.users.iter().all(|u| u.status == UserStatus::Deleted
        && u.last_name
            .as_deref()
            .is_some_and(|l| l.starts_with("Horvat69"))));
}
