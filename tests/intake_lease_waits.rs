//! A request that waits for a tenant's lease held by another node (run-now, restore, approve,
//! a schedule's tick) waits without one of the intake's import permits (review s27): on a
//! 2-core node two such waits took both permits for up to ten minutes, and no other tenant
//! could import meanwhile. Real PostgreSQL; the other node is a second store handle with its
//! own node id that beats and holds the leases of `sched` and `beta`.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env};
use roster::model::ImportStatus;
use roster::store::postgres::{parse_url, PostgresStore};
use roster::store::{Cluster, NodeBeat};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::server_store::ServerStore;

/// A node that only beats and holds leases, until `stop` is raised.
fn ghost_node(url: &str, leases: &[&str], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let target = parse_url(url).unwrap();
    let ghost = PostgresStore::open(&target, "ghost-node").unwrap();
    let beat = NodeBeat {
        sftp: "127.0.0.1:9".into(),
        admin: "127.0.0.1:9".into(),
        version: "test".into(),
        started_at: chrono::Utc::now(),
    };
    ghost.heartbeat(&beat).unwrap();
    for name in leases {
        assert!(ghost.take_lease(name).unwrap().is_some(), "{name}");
    }
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            ghost.heartbeat(&beat).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
        for name in ["tenant:sched", "tenant:beta"] {
            let _ = ghost.release_lease(name);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_leases_held_elsewhere_leave_the_other_tenants_importing() {
    let env = Env::start_with(ServerStore::postgres()).await;
    let url = env.store_under_test.url.clone().unwrap();
    // beta needs a user for a restore to be queued at all.
    let first = env.import("beta", &users_csv(0, 2)).await;
    assert_eq!(first.status, ImportStatus::Success, "{first:?}");
    let user = env.server().store.users("beta", None).unwrap()[0]
        .key
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let ghost = ghost_node(&url, &["tenant:sched", "tenant:beta"], stop.clone());
    // As many waiting requests as this machine gives the intake permits (one per core, two
    // here and in CI), each on its own tenant queue.
    let restore = format!("/api/tenants/beta/users/{user}/restore");
    let waits = async {
        tokio::join!(
            env.post("/api/tenants/sched/run-now", None),
            env.post(&restore, None)
        )
    };
    let acme = async {
        tokio::time::sleep(Duration::from_secs(2)).await; // both requests are waiting by now
        env.import("acme", &users_csv(0, 3)).await
    };
    tokio::select! {
        imported = acme => {
            assert_eq!(imported.status, ImportStatus::Success, "{imported:?}");
            assert_eq!(imported.counts.inserted, 3, "{imported:?}");
        }
        answered = waits => panic!("the waits ended while the other node held the leases: {:?} {:?}", answered.0.text, answered.1.text),
    }
    stop.store(true, Ordering::Relaxed);
    ghost.join().unwrap();
    // With the leases free again, a waiting request gets its turn.
    let run = env.post("/api/tenants/sched/run-now", None).await;
    assert_eq!(run.status, 200, "{}", run.text);
}
