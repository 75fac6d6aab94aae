//! The shared login counters (PostgreSQL) as the SFTP login path uses them, against a real
//! PostgreSQL: how often key offers ask the store, and how long the heartbeat keeps a row of
//! failures (review s29). The counters' own rules are in `cluster_postgres.rs`.

#[path = "support/postgres.rs"]
#[allow(dead_code)] // each test file uses part of the support
mod test_postgres;

use roster::login::{Gate, LoginThrottle};
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{Cluster, LoginScope, Store};
use std::net::IpAddr;
use std::time::Duration;
use test_postgres::TestPostgres;

fn open(url: &str, node: &str) -> PostgresStore {
    let target = parse_url(url).unwrap_or_else(|e| panic!("{e}"));
    PostgresStore::open(&target, node)
        .unwrap()
        .with_lease_secs(30)
}

/// Review s29 F1: an accepted key offer is answered at once and not counted by russh, so a
/// connection can repeat it at network speed. Only a connection's first offer asks the shared
/// counters: a block another node records after it is not seen by the 100 offers that follow
/// on that connection (each would have found it had it asked), and is seen by the next
/// connection's first offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_offers_ask_the_shared_counters_once_per_connection() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_key_offers");
    let node_a = LoginThrottle::default();
    node_a.share_through(Store::new(open(&url, "node-a")));
    let node_b = open(&url, "node-b");
    let client: IpAddr = "10.8.8.8".parse().unwrap();

    let mut asked = false;
    let first = node_a.check_key_offer(Some(client), &mut asked).await;
    assert_eq!(first, Gate::Open);
    assert!(asked, "the first offer asked the shared counters");

    let until = node_b
        .login_failed(LoginScope::Address, "10.8.8.8", 1, Duration::from_secs(60))
        .unwrap();
    assert!(until.is_some(), "node b blocked the address");
    for _ in 0..100 {
        assert_eq!(
            node_a.check_key_offer(Some(client), &mut asked).await,
            Gate::Open,
            "a later offer of the connection asked the store"
        );
    }
    let mut next_connection = false;
    assert!(matches!(
        node_a
            .check_key_offer(Some(client), &mut next_connection)
            .await,
        Gate::Blocked(_)
    ));
    // Found once, the block is this node's too: the first connection's next offer sees it.
    assert!(matches!(
        node_a.check_key_offer(Some(client), &mut asked).await,
        Gate::Blocked(_)
    ));
}

/// Review s29 F5: a failure row that is not blocking is deleted by the heartbeat once its
/// window (`auth_block_secs`) has ended, not a day later; a block stays until it ends.
#[test]
fn heartbeats_delete_failure_rows_whose_window_ended() {
    use chrono::{TimeZone, Utc};
    let pg = TestPostgres::start();
    let db = "c_failure_rows";
    let url = pg.create_database(db);
    let store = open(&url, "node-a");
    let rows = |subject: &str| {
        pg.psql(
            db,
            &format!("SELECT count(*) FROM roster.auth_failures WHERE subject = '{subject}'"),
        )
        .trim()
        .to_string()
    };
    let second = Duration::from_secs(1);
    assert_eq!(
        store
            .login_failed(LoginScope::Tenant, "zz-test", 5, second)
            .unwrap(),
        None
    );
    // A block of an hour whose window started long ago (as another node's longer block).
    pg.psql(
        db,
        "INSERT INTO roster.auth_failures (scope, subject, failures, window_start, blocked_until) \
         VALUES ('address', '10.7.7.7', 9, now() - interval '2 hours', now() + interval '1 hour')",
    );
    assert_eq!(rows("zz-test"), "1");
    std::thread::sleep(Duration::from_secs(2));
    let beat = roster::store::NodeBeat {
        sftp: "127.0.0.1:2201".to_string(),
        admin: "127.0.0.1:9".to_string(),
        version: "test".to_string(),
        started_at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
    };
    store.heartbeat(&beat).unwrap();
    assert_eq!(rows("zz-test"), "0", "the row outlived its window");
    assert_eq!(rows("10.7.7.7"), "1", "a block in force was deleted");
}
