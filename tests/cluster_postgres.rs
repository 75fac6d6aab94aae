//! The PostgreSQL store's [`Cluster`] seam against a real PostgreSQL: two stores with different
//! node ids on one database stand for two nodes. A node is made dead either by waiting out a
//! short lease or by moving its heartbeat into the past with SQL.

#[path = "support/postgres.rs"]
#[allow(dead_code)] // each test file uses part of the support
mod test_postgres;

use chrono::{TimeZone, Utc};
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{Cluster, LoginScope, NodeBeat, RunLog};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use test_postgres::TestPostgres;

fn open(url: &str, node: &str, lease_secs: u64) -> PostgresStore {
    let target = parse_url(url).unwrap_or_else(|e| panic!("{e}"));
    PostgresStore::open(&target, node)
        .unwrap()
        .with_lease_secs(lease_secs)
}

fn beat(sftp: &str) -> NodeBeat {
    NodeBeat {
        sftp: sftp.to_string(),
        admin: "127.0.0.1:9".to_string(),
        version: "test".to_string(),
        // One start per node: a heartbeat naming another start while the row is alive is a
        // second process under the id.
        started_at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
    }
}

/// Moves a node's heartbeat an hour into the past: it is dead from now on.
fn kill(pg: &TestPostgres, db: &str, node: &str) {
    pg.psql(
        db,
        &format!(
            "UPDATE roster.nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = '{node}'"
        ),
    );
}

#[test]
fn nodes_list_each_other_and_a_silent_node_turns_dead() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_nodes");
    let a = open(&url, "node-a", 2);
    let b = open(&url, "node-b", 2);
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    b.heartbeat(&beat("127.0.0.1:2202")).unwrap();
    let seen = a.nodes().unwrap();
    let ids: Vec<&str> = seen.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    assert!(seen.iter().all(|n| n.alive));
    assert_eq!(seen[1].sftp, "127.0.0.1:2202");
    assert_eq!(seen[1].admin, "127.0.0.1:9");
    assert_eq!(seen[1].version, "test");

    // b stops beating; after the lease it is listed as dead, a still alive.
    std::thread::sleep(Duration::from_millis(1200));
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let seen = b.nodes().unwrap();
    assert!(seen[0].alive, "{seen:?}");
    assert!(!seen[1].alive, "{seen:?}");

    // Leaving removes the row.
    b.leave().unwrap();
    let ids: Vec<String> = a.nodes().unwrap().into_iter().map(|n| n.node_id).collect();
    assert_eq!(ids, ["node-a"]);
}

/// Review s26: each node is judged alive by its own `lease_secs`. A node on 60 s that beat
/// 20 s ago is alive for a node on 10 s too: its lease and claims are not taken, and it is
/// listed alive. A row written without a lease (an older binary) is judged by the reader's.
#[test]
fn each_node_is_judged_by_its_own_lease() {
    let pg = TestPostgres::start();
    let db = "c_own_lease";
    let url = pg.create_database(db);
    let slow = open(&url, "node-slow", 60);
    let fast = open(&url, "node-fast", 10);
    slow.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    fast.heartbeat(&beat("127.0.0.1:2202")).unwrap();
    assert!(slow.take_lease("tenant:acme").unwrap().is_some());
    pg.psql(
        db,
        "INSERT INTO roster.claims (tenant, file, claim, node_id) VALUES ('acme', 'u.csv', 'c1', 'node-slow');\
         UPDATE roster.nodes SET heartbeat_at = now() - interval '20 seconds' WHERE node_id = 'node-slow'",
    );
    assert_eq!(
        fast.take_lease("tenant:acme").unwrap(),
        None,
        "node-slow is alive"
    );
    assert!(fast.orphan_claims().unwrap().is_empty());
    let seen = fast.nodes().unwrap();
    assert!(seen.iter().all(|n| n.alive), "{seen:?}");
    // Past its own lease it is dead for everyone.
    pg.psql(
        db,
        "UPDATE roster.nodes SET heartbeat_at = now() - interval '61 seconds' WHERE node_id = 'node-slow'",
    );
    assert!(fast.take_lease("tenant:acme").unwrap().is_some());
    assert_eq!(fast.orphan_claims().unwrap().len(), 1);
    // A row without a lease of its own is judged by the reader's.
    pg.psql(
        db,
        "UPDATE roster.nodes SET lease_secs = NULL, heartbeat_at = now() - interval '20 seconds' \
         WHERE node_id = 'node-slow'",
    );
    let seen = fast.nodes().unwrap();
    let slow_row = seen.iter().find(|n| n.node_id == "node-slow").unwrap();
    assert!(!slow_row.alive, "{seen:?}");
}

#[test]
fn a_lease_is_taken_over_only_after_its_holder_expires_and_fencing_grows() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_lease");
    let a = open(&url, "node-a", 2);
    let b = open(&url, "node-b", 2);
    a.heartbeat(&beat("a")).unwrap();
    b.heartbeat(&beat("b")).unwrap();

    let first = a
        .take_lease("tenant:acme")
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(
        b.take_lease("tenant:acme").unwrap(),
        None,
        "a live holder keeps it"
    );
    // Taking one's own lease again keeps its fencing number.
    assert_eq!(a.take_lease("tenant:acme").unwrap(), Some(first));
    // Another lease is independent.
    assert!(b.take_lease("tenant:beta").unwrap().is_some());

    // a keeps beating: its lease is extended and stays its own past the lease length.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(800));
        a.heartbeat(&beat("a")).unwrap();
        b.heartbeat(&beat("b")).unwrap();
        assert_eq!(b.take_lease("tenant:acme").unwrap(), None);
    }

    // a falls silent: once its heartbeat is older than the lease, b takes over.
    std::thread::sleep(Duration::from_millis(2300));
    b.heartbeat(&beat("b")).unwrap();
    let second = b
        .take_lease("tenant:acme")
        .unwrap()
        .expect("the lease of a dead holder is taken over");
    assert!(second > first, "fencing {second} must exceed {first}");
    assert_eq!(a.take_lease("tenant:acme").unwrap(), None);

    // A release frees it at once for a live node, with a new fencing number.
    a.heartbeat(&beat("a")).unwrap();
    b.release_lease("tenant:acme").unwrap();
    let third = a
        .take_lease("tenant:acme")
        .unwrap()
        .expect("a released lease is free");
    assert!(third > second);
    // A release by a node that does not hold it changes nothing.
    b.release_lease("tenant:acme").unwrap();
    assert_eq!(b.take_lease("tenant:acme").unwrap(), None);
    // Leaving releases every lease of the node.
    a.leave().unwrap();
    assert!(b.take_lease("tenant:acme").unwrap().is_some());
}

/// A lease whose release failed (a dropped connection) is not renewed by the holder's
/// heartbeats: it ends with its time, and another node can take it (review of 2026-11-30,
/// PostgreSQL F3: every heartbeat renewed it, for as long as the holder lived).
/// A commit holds its lease's row locked to the end (the fence); the node's heartbeat must not
/// wait for it, or a commit longer than the lease makes the other nodes call the node dead and
/// take its claim (review s16 cluster F1).
#[test]
fn a_heartbeat_does_not_wait_for_a_lease_its_commit_holds() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_fence");
    let a = open(&url, "node-a", 2);
    a.heartbeat(&beat("a")).unwrap();
    a.take_lease("tenant:acme").unwrap().expect("granted");
    std::thread::scope(|s| {
        // Another session holds the lease row as a commit's fence does, for 10 s.
        let commit = s.spawn(|| {
            pg.psql(
                "c_fence",
                "BEGIN; SELECT 1 FROM roster.leases WHERE name = 'tenant:acme' FOR SHARE; \
                 SELECT pg_sleep(10); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        a.heartbeat(&beat("a")).unwrap();
        assert!(
            !commit.is_finished(),
            "the heartbeat waited for the commit's lock"
        );
        let age = pg.psql(
            "c_fence",
            "SELECT extract(epoch FROM now() - heartbeat_at) < 1 FROM roster.nodes WHERE node_id = 'node-a'",
        );
        assert_eq!(age, "t", "the heartbeat was recorded");
    });
}

/// Statements stuck behind a lock fill the pool; the heartbeat keeps a connection of its own,
/// so the node is not called dead meanwhile (review s16 cluster F3).
#[test]
fn a_pool_stuck_behind_a_lock_does_not_stop_the_heartbeat() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_stuck");
    let a = open(&url, "node-a", 2);
    a.heartbeat(&beat("a")).unwrap();
    std::thread::scope(|s| {
        let lock = s.spawn(|| {
            pg.psql(
                "c_stuck",
                "BEGIN; LOCK TABLE roster.import_records IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(12); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        // More readers of the locked table than the pool has connections.
        let readers: Vec<_> = (0..12).map(|_| s.spawn(|| a.history("t", 1))).collect();
        std::thread::sleep(Duration::from_millis(1500));
        a.heartbeat(&beat("a")).unwrap();
        assert!(!lock.is_finished(), "the heartbeat waited for the lock");
        for r in readers {
            let _ = r.join();
        }
    });
}

#[test]
fn a_lease_whose_release_failed_ends_with_its_time() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_release");
    let a = open(&url, "node-a", 2);
    let b = open(&url, "node-b", 2);
    a.heartbeat(&beat("a")).unwrap();
    b.heartbeat(&beat("b")).unwrap();
    assert!(a.take_lease("tenant:acme").unwrap().is_some());
    assert!(a.take_lease("tenant:kept").unwrap().is_some());
    // The release fails in the database, as a connection lost at that moment would.
    pg.psql(
        "c_release",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'connection lost'; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE ON roster.leases FOR EACH ROW \
         WHEN (NEW.expires_at <= now()) EXECUTE FUNCTION refuse();",
    );
    assert!(a.release_lease("tenant:acme").is_err());
    pg.psql("c_release", "DROP TRIGGER refuse ON roster.leases");
    // a stays alive and keeps beating; the lease it still holds stays its own.
    let mut freed = false;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        a.heartbeat(&beat("a")).unwrap();
        b.heartbeat(&beat("b")).unwrap();
        if b.take_lease("tenant:acme").unwrap().is_some() {
            freed = true;
            break;
        }
    }
    assert!(
        freed,
        "the lease whose release failed was renewed by heartbeats"
    );
    assert_eq!(
        b.take_lease("tenant:kept").unwrap(),
        None,
        "a held lease is still renewed"
    );
}

/// A newer roster migrating the shared database while this node runs makes this node's
/// heartbeat fail with `SchemaNewer` (`serve` then stops; review of 2026-11-30, PostgreSQL F5).
#[test]
fn a_heartbeat_sees_a_schema_newer_than_its_binary() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_newer");
    let a = open(&url, "node-a", 2);
    a.heartbeat(&beat("a")).unwrap();
    pg.psql(
        "c_newer",
        &format!(
            "INSERT INTO roster.schema_version (version, name) VALUES ({}, 'from the future')",
            roster::store::postgres::SCHEMA_VERSION + 1
        ),
    );
    let err = a.heartbeat(&beat("a")).unwrap_err();
    assert!(roster::store::health::is_schema_newer(&err), "{err:#}");
    assert!(format!("{err:#}").contains("upgrade this node"), "{err:#}");
}

#[test]
fn racing_stores_get_one_lease_and_one_tick() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_race");
    let stores: Vec<Arc<PostgresStore>> = (0..4)
        .map(|i| Arc::new(open(&url, &format!("node-{i}"), 30)))
        .collect();
    for s in &stores {
        s.heartbeat(&beat("x")).unwrap();
    }
    let tick = Utc.with_ymd_and_hms(2026, 11, 29, 7, 30, 0).unwrap();
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(stores.len()));
        let handles: Vec<_> = stores
            .iter()
            .map(|s| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let fired = s
                        .fire_tick("acme", tick + chrono::Duration::minutes(round))
                        .unwrap();
                    let leased = s.take_lease(&format!("tenant:r{round}")).unwrap().is_some();
                    (fired, leased)
                })
            })
            .collect();
        let results: Vec<(bool, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.0).count(),
            1,
            "round {round}: {results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| r.1).count(),
            1,
            "round {round}: {results:?}"
        );
    }
    // Another tenant's tick at the same time is its own.
    assert!(stores[0].fire_tick("beta", tick).unwrap());
    assert!(!stores[1].fire_tick("beta", tick).unwrap());
    // The node that fires a tick is told so again when it asks again (its first answer lost
    // with a connection; review of 2026-11-30, PostgreSQL F4), any other node still no.
    assert!(stores[0].fire_tick("beta", tick).unwrap());
    assert!(!stores[1].fire_tick("beta", tick).unwrap());
}

/// A tick whose node died before running it: the next other node to ask fires it, once (gap
/// of s26: it was lost until the next tick).
#[test]
fn a_tick_of_a_dead_node_goes_to_the_next_node_that_asks() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_tick_dead");
    let (a, b, c) = (
        open(&url, "node-a", 30),
        open(&url, "node-b", 30),
        open(&url, "node-c", 30),
    );
    for s in [&a, &b, &c] {
        s.heartbeat(&beat("x")).unwrap();
    }
    let tick = Utc.with_ymd_and_hms(2026, 12, 3, 7, 30, 0).unwrap();
    assert!(a.fire_tick("acme", tick).unwrap());
    assert!(!b.fire_tick("acme", tick).unwrap(), "a lives: its tick");
    kill(&pg, "c_tick_dead", "node-a");
    assert!(b.fire_tick("acme", tick).unwrap(), "a is dead: b fires");
    assert!(b.fire_tick("acme", tick).unwrap(), "and is told so again");
    assert!(!c.fire_tick("acme", tick).unwrap(), "b lives: not c too");
    // A node that left (its row gone) is no longer alive either.
    b.leave().unwrap();
    assert!(c.fire_tick("acme", tick).unwrap());
    let owner = pg.psql(
        "c_tick_dead",
        "SELECT node_id FROM roster.schedule_ticks WHERE tenant = 'acme'",
    );
    assert_eq!(owner.trim(), "node-c");
}

#[test]
fn failed_logins_block_across_stores_and_expire() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_auth");
    let a = open(&url, "node-a", 30);
    let b = open(&url, "node-b", 30);
    let block = Duration::from_secs(2);
    let addr = LoginScope::Address;
    // Failures alternate between the nodes: the third, wherever it lands, blocks.
    assert_eq!(a.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    assert_eq!(b.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    assert_eq!(a.login_blocked(addr, "10.0.0.7").unwrap(), None);
    let until = a.login_failed(addr, "10.0.0.7", 3, block).unwrap();
    assert!(until.is_some_and(|u| u > Utc::now()), "{until:?}");
    assert_eq!(b.login_blocked(addr, "10.0.0.7").unwrap(), until);
    // The same subject under the other scope, and other subjects, are not blocked.
    assert_eq!(
        b.login_blocked(LoginScope::Tenant, "10.0.0.7").unwrap(),
        None
    );
    assert_eq!(b.login_blocked(addr, "10.0.0.8").unwrap(), None);
    // More failures during the block do not extend it; a login does not lift it.
    assert_eq!(b.login_failed(addr, "10.0.0.7", 3, block).unwrap(), until);
    b.login_forgiven(addr, "10.0.0.7", 3).unwrap();
    assert_eq!(a.login_blocked(addr, "10.0.0.7").unwrap(), until);
    // The block ends; counting starts again from one.
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(a.login_blocked(addr, "10.0.0.7").unwrap(), None);
    assert_eq!(a.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    assert_eq!(b.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    // A login takes its tenant's failures off the count below the block: all of them here.
    a.login_forgiven(addr, "10.0.0.7", 2).unwrap();
    assert_eq!(a.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    assert_eq!(b.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    // Only some of them (review s27: a valid login cleared failures against other tenants
    // too): one of the two stays, so the second failure after it blocks.
    b.login_forgiven(addr, "10.0.0.7", 1).unwrap();
    assert_eq!(a.login_failed(addr, "10.0.0.7", 3, block).unwrap(), None);
    assert!(b
        .login_failed(addr, "10.0.0.7", 3, block)
        .unwrap()
        .is_some());
    // Tenant scope counts on its own.
    let t = LoginScope::Tenant;
    assert_eq!(a.login_failed(t, "acme", 2, block).unwrap(), None);
    assert!(b.login_failed(t, "acme", 2, block).unwrap().is_some());
    assert!(a.login_blocked(t, "acme").unwrap().is_some());
}

#[test]
fn orphan_claims_are_taken_once_by_two_racing_survivors() {
    let pg = TestPostgres::start();
    let db = "c_orphans";
    let url = pg.create_database(db);
    let dead = open(&url, "node-dead", 30);
    let live = open(&url, "node-live", 30);
    let s1 = Arc::new(open(&url, "node-s1", 30));
    let s2 = Arc::new(open(&url, "node-s2", 30));
    for s in [&dead, &live] {
        s.heartbeat(&beat("x")).unwrap();
    }
    s1.heartbeat(&beat("x")).unwrap();
    s2.heartbeat(&beat("x")).unwrap();
    let mut claims = String::new();
    for i in 0..20 {
        claims.push_str(&format!(
            "INSERT INTO roster.claims (tenant, file, claim, node_id) VALUES ('t{}', 'f{i}.csv', 'c{i}', 'node-dead');",
            i % 3
        ));
    }
    claims.push_str(
        "INSERT INTO roster.claims (tenant, file, claim, node_id) VALUES ('t0', 'live.csv', 'cl', 'node-live');",
    );
    pg.psql(db, &claims);
    pg.psql(
        db,
        "INSERT INTO roster.staged_rows (gen, node_id, tenant, key, bucket, status) VALUES \
         (1, 'node-dead', 't0', 'k1', 0, NULL), (1, 'node-dead', 't0', '', 0, 'staged'), \
         (2, 'node-live', 't0', 'k2', 0, NULL), (2, 'node-live', 't0', '', 0, 'staged')",
    );
    // Nothing is taken while every node is alive.
    assert!(s1.orphan_claims().unwrap().is_empty());

    kill(&pg, db, "node-dead");
    let barrier = Arc::new(Barrier::new(2));
    let race = |s: Arc<PostgresStore>| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            barrier.wait();
            s.orphan_claims().unwrap()
        })
    };
    let (h1, h2) = (race(s1.clone()), race(s2.clone()));
    let (got1, got2) = (h1.join().unwrap(), h2.join().unwrap());
    let mut all: Vec<String> = got1.iter().chain(&got2).map(|c| c.claim.clone()).collect();
    all.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "each dead claim taken exactly once");
    assert!(got1.iter().chain(&got2).all(|c| c.from_node == "node-dead"));
    let c7 = got1.iter().chain(&got2).find(|c| c.claim == "c7").unwrap();
    assert_eq!((c7.tenant.as_str(), c7.file.as_str()), ("t1", "f7.csv"));

    // The rows now name their new holder; the live node's claim and staged rows are untouched.
    let owners = pg.psql(
        db,
        "SELECT node_id || ':' || count(*) FROM roster.claims GROUP BY node_id ORDER BY node_id",
    );
    let taken1 = got1.len();
    let taken2 = got2.len();
    let mut want = vec!["node-live:1".to_string()];
    if taken1 > 0 {
        want.push(format!("node-s1:{taken1}"));
    }
    if taken2 > 0 {
        want.push(format!("node-s2:{taken2}"));
    }
    assert_eq!(owners.lines().collect::<Vec<_>>(), want);
    // What the dead node staged goes with a survivor's next heartbeat (its sweep).
    s1.heartbeat(&beat("x")).unwrap();
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(DISTINCT node_id, ',') FROM roster.staged_rows"
        ),
        "node-live"
    );
    // Taken claims are the survivors' own now: nothing is left to take.
    assert!(s1.orphan_claims().unwrap().is_empty());
    assert!(s2.orphan_claims().unwrap().is_empty());
}

/// The SFTP login throttles of two nodes share their counts through the store: failures on
/// either node add up to one block that both enforce; a key login for another tenant does not
/// lift the tenant's block. With the database gone, the block already seen holds and other
/// clients are still let in (judged by each node's own counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_throttles_of_two_nodes_share_failures_and_survive_the_database_going_away() {
    use roster::login::{Gate, LoginThrottle, ThrottlePolicy};
    use roster::store::Store;
    use std::net::IpAddr;

    let pg = TestPostgres::start();
    let url = pg.create_database("c_throttle");
    let node_a = LoginThrottle::default();
    let node_b = LoginThrottle::default();
    node_a.share_through(Store::new(open(&url, "node-a", 30)));
    node_b.share_through(Store::new(open(&url, "node-b", 30)));
    let policy = ThrottlePolicy {
        max_failures: 4,
        block_for: Duration::from_secs(60),
    };
    let attacker: IpAddr = "10.9.9.9".parse().unwrap();
    let other: IpAddr = "10.9.9.10".parse().unwrap();
    // Two failures on each node: neither node alone has seen four.
    for node in [&node_a, &node_b, &node_a] {
        node.record_failure(policy, Some(attacker), "acme").await;
        assert_eq!(node_b.check(Some(attacker), Some("acme")).await, Gate::Open);
    }
    node_b.record_failure(policy, Some(attacker), "acme").await;
    for node in [&node_a, &node_b] {
        assert!(matches!(
            node.check(Some(attacker), None).await,
            Gate::Blocked(_)
        ));
        // The tenant's password logins are blocked for every address, on every node.
        assert!(matches!(
            node.check(Some(other), Some("acme")).await,
            Gate::Blocked(_)
        ));
        assert_eq!(node.check(Some(other), Some("beta")).await, Gate::Open);
    }
    // A login (of another tenant, from the attacker's address) does not lift the block.
    node_a.succeeded(Some(attacker), "beta");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        node_b.check(Some(attacker), None).await,
        Gate::Blocked(_)
    ));

    // The database stops: the blocks seen stay, nobody else is locked out.
    drop(pg);
    for node in [&node_a, &node_b] {
        assert!(matches!(
            node.check(Some(attacker), None).await,
            Gate::Blocked(_)
        ));
        assert_eq!(node.check(Some(other), Some("beta")).await, Gate::Open);
    }
    // Failures still count on the node that sees them.
    let fresh: IpAddr = "10.9.9.11".parse().unwrap();
    for _ in 0..4 {
        node_a.record_failure(policy, Some(fresh), "gamma").await;
    }
    assert!(matches!(
        node_a.check(Some(fresh), None).await,
        Gate::Blocked(_)
    ));
}

/// A server that accepts the connection and never answers (a stuck server, pooler or firewall)
/// fails the store's opening within `connect_timeout`, with a sentence, instead of holding
/// `roster serve`'s start and `check-config` for ever (review s16 cluster F4).
#[test]
fn a_server_that_never_answers_fails_the_opening_in_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let kept: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(kept);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let url = format!("postgres://roster@127.0.0.1:{port}/roster?connect_timeout=2");
        let target = parse_url(&url).unwrap_or_else(|e| panic!("{e}"));
        let _ = tx.send(PostgresStore::open(&target, "node-a").map(|_| ()));
    });
    let opened = rx
        .recv_timeout(Duration::from_secs(45))
        .expect("opening the store hung on a server that never answers");
    let e = opened.expect_err("nothing to open");
    assert!(
        format!("{e:#}").contains("did not complete the sign-in within 2 s"),
        "{e:#}"
    );
    drop(held);
}

/// Two processes started at the same moment under one node id both pass the look at start; the
/// heartbeat of the second finds the first's live row naming another start and fails with
/// `NodeIdTaken`, which stops its `serve` (re-read of review s16). A row left by a crash (dead)
/// is taken over.
#[test]
fn a_heartbeat_under_a_live_twins_id_fails() {
    let pg = TestPostgres::start();
    let url = pg.create_database("c_twin");
    let first = open(&url, "node-a", 2);
    let twin = open(&url, "node-a", 2);
    first.heartbeat(&beat("a")).unwrap();
    let mut other_start = beat("a");
    other_start.started_at = Utc.timestamp_opt(1_800_000_100, 0).unwrap();
    let err = twin.heartbeat(&other_start).unwrap_err();
    assert!(roster::store::health::is_node_id_taken(&err), "{err:#}");
    first.heartbeat(&beat("a")).unwrap();
    // Dead (its heartbeat an hour old): the row is the new start's.
    kill(&pg, "c_twin", "node-a");
    twin.heartbeat(&other_start).unwrap();
    assert!(roster::store::health::is_node_id_taken(
        &first.heartbeat(&beat("a")).unwrap_err()
    ));
}

/// Rows of `roster.staged_rows` staged by `node`.
fn staged_of(pg: &TestPostgres, db: &str, node: &str) -> u64 {
    let out = pg.psql(
        db,
        &format!("SELECT count(*) FROM roster.staged_rows WHERE node_id = '{node}'"),
    );
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

/// Audit s22 cluster M1: the staged buckets of a node that died (or restarted under another
/// id) were swept only when a node of the same id started again, and those of a discard that
/// failed (the database gone mid-commit) never: 156 MB stayed. A heartbeat now sweeps both,
/// and leaves a live node's staging alone.
#[test]
fn heartbeats_sweep_what_dead_nodes_and_failed_discards_staged() {
    use roster::store::Directory;
    let pg = TestPostgres::start();
    let url = pg.create_database("c_sweep");
    let a = open(&url, "node-a", 30);
    let b = open(&url, "node-b", 30);
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    b.heartbeat(&beat("127.0.0.1:2202")).unwrap();
    let ga = a.stage_bucket("t", 3, &[]).unwrap();
    b.stage_bucket("t", 4, &[]).unwrap();
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    assert_eq!(
        staged_of(&pg, "c_sweep", "node-b"),
        1,
        "a live node's staging stays"
    );
    kill(&pg, "c_sweep", "node-b");
    // A commit of b's that holds its marker (as the commit does, FOR SHARE) keeps the rows,
    // however long b stalls (review of s23: a stalled commit lost its staged rows).
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = {
        let url = url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let tx = c.transaction().await.unwrap();
                tx.query(
                    "SELECT gen FROM roster.staged_rows \
                     WHERE node_id = 'node-b' AND key = '' FOR SHARE",
                    &[],
                )
                .await
                .unwrap();
                locked_tx.send(()).unwrap();
                let _ = released.recv();
                tx.rollback().await.unwrap();
            });
        })
    };
    locked.recv().unwrap();
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    assert_eq!(
        staged_of(&pg, "c_sweep", "node-b"),
        1,
        "a generation being committed stays"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    a.heartbeat(&beat("127.0.0.1:2201")).unwrap();
    assert_eq!(
        staged_of(&pg, "c_sweep", "node-b"),
        0,
        "a dead node's staging is swept"
    );
    assert_eq!(staged_of(&pg, "c_sweep", "node-a"), 1, "its own is kept");

    // a's discard fails while the database is down; a later heartbeat deletes those rows.
    pg.stop();
    assert!(a.discard_staged("t", &[(3, ga)]).is_err());
    pg.start_again();
    let mut beaten = false;
    for _ in 0..50 {
        if a.heartbeat(&beat("127.0.0.1:2201")).is_ok() {
            beaten = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        beaten,
        "the heartbeat works again once the database is back"
    );
    assert_eq!(
        staged_of(&pg, "c_sweep", "node-a"),
        0,
        "the failed discard is done"
    );
}

/// Review s26: the schedules fire by the store's clock, the database's on PostgreSQL.
#[test]
fn the_store_clock_is_the_databases() {
    let pg = TestPostgres::start();
    let db = "c_clock";
    let url = pg.create_database(db);
    let store = open(&url, "node-a", 30);
    let before = pg.psql(db, "SELECT extract(epoch FROM clock_timestamp())");
    let theirs = store.clock().unwrap();
    let after = pg.psql(db, "SELECT extract(epoch FROM clock_timestamp())");
    let secs = |s: &str| s.trim().parse::<f64>().unwrap();
    let at = theirs.timestamp_micros() as f64 / 1e6;
    assert!(
        secs(&before) <= at && at <= secs(&after),
        "{before} {at} {after}"
    );
}

/// A node that stalled past its lease mid-batch writes nothing of that batch once another
/// node took the tenant's SCIM push lease (reviewer s28: its cursor and whole failing list
/// replaced the new holder's, dropping a user the new holder had found refused).
#[test]
fn a_scim_push_source_saves_nothing_once_its_lease_passed() {
    use roster::deliver::scim_push::{ChangeSource, LeaseFence, StoreSource, CONSUMER};
    use roster::model::changelog::Cursor;
    use std::sync::atomic::AtomicU64;
    let pg = TestPostgres::start();
    let url = pg.create_database("c_push_fence");
    let target = parse_url(&url).unwrap();
    let a = roster::store::Store::open_postgres(&target, "node-a").unwrap();
    let b = roster::store::Store::open_postgres(&target, "node-b").unwrap();
    a.heartbeat(&beat("a")).unwrap();
    b.heartbeat(&beat("b")).unwrap();
    let name = "scim-push:acme";
    let source = |store: &roster::store::Store, fencing: u64| StoreSource {
        store: store.clone(),
        tenant: "acme".into(),
        lease: Some(LeaseFence {
            name: name.into(),
            fencing: AtomicU64::new(fencing),
        }),
    };
    let fa = a.take_lease(name).unwrap().unwrap();
    let on_a = source(&a, fa);
    let at = |position: u64| Cursor {
        position,
        ..Cursor::default()
    };
    on_a.save_cursor(&at(5)).unwrap();
    kill(&pg, "c_push_fence", "node-a");
    let fb = b.take_lease(name).unwrap().unwrap();
    assert!(fb > fa);
    let on_b = source(&b, fb);
    on_b.save_cursor(&at(9)).unwrap();
    // a wakes and ends its batch: refused, and b's cursor stays.
    let err = on_a.save_cursor(&at(6)).unwrap_err();
    assert!(
        format!("{err:#}").contains("passed to another node"),
        "{err:#}"
    );
    assert!(on_a.save_failures(&[]).is_err());
    assert_eq!(b.cursor("acme", CONSUMER).unwrap().position, 9);
}

/// A delivery cursor written under a lease's fencing number: refused once the lease passed,
/// even after it came back to the same node under a higher number, and refused to a node that
/// never held it; the check is made in the write's own transaction, with the lease row
/// locked, so no other node can take the lease between them (s29: a check, then a plain
/// write, left that one write to a node that had lost it).
#[test]
fn a_cursor_saved_under_an_old_hold_of_a_lease_is_refused() {
    use roster::model::changelog::Cursor;
    let pg = TestPostgres::start();
    let url = pg.create_database("c_cursor_fence");
    let target = parse_url(&url).unwrap();
    let a = roster::store::Store::open_postgres(&target, "node-a").unwrap();
    let b = roster::store::Store::open_postgres(&target, "node-b").unwrap();
    a.heartbeat(&beat("a")).unwrap();
    b.heartbeat(&beat("b")).unwrap();
    let (name, consumer) = ("webhook:acme:x", "webhook:x");
    let at = |position: u64| Cursor {
        position,
        ..Cursor::default()
    };
    let fa = a.take_lease(name).unwrap().unwrap();
    assert!(a
        .save_cursor_leased("acme", consumer, &at(3), (name, fa))
        .unwrap());
    kill(&pg, "c_cursor_fence", "node-a");
    let fb = b.take_lease(name).unwrap().unwrap();
    assert!(!b
        .save_cursor_leased("acme", consumer, &at(4), (name, fa))
        .unwrap());
    assert!(b
        .save_cursor_leased("acme", consumer, &at(5), (name, fb))
        .unwrap());
    b.release_lease(name).unwrap();
    a.heartbeat(&beat("a")).unwrap();
    let fc = a.take_lease(name).unwrap().unwrap();
    assert!(fc > fb && fb > fa, "{fa} {fb} {fc}");
    // a's first hold is over, though a holds the lease again.
    assert!(!a
        .save_cursor_leased("acme", consumer, &at(6), (name, fa))
        .unwrap());
    assert_eq!(a.cursor("acme", consumer).unwrap().position, 5);
    // b holds nothing now, whatever number it names.
    assert!(!b
        .save_cursor_leased("acme", consumer, &at(7), (name, fc))
        .unwrap());
    assert!(a
        .save_cursor_leased("acme", consumer, &at(8), (name, fc))
        .unwrap());
    assert_eq!(b.cursor("acme", consumer).unwrap().position, 8);
}
