//! PostgreSQL faults under a whole running Roster (issue 11): the database stops while files
//! arrive and while one imports, then comes back. Real PostgreSQL (stopped with
//! `pg_ctl stop -m immediate`, as a crash), real SFTP uploads, the real admin API.
//!
//! What must hold: SFTP logins and uploads keep working while the database is down, uploads
//! wait in the tenant folder, the admin API answers 503 with a sentence, and once the database
//! is back every file is applied exactly once (one history record, every user).

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env};
use roster::model::{ImportStatus, UserStatus};
use std::time::Duration;
use support::server_store::ServerStore;
use support::sftp::eventually;

async fn on_postgres() -> Env {
    Env::start_with(ServerStore::postgres()).await
}

fn postgres(env: &Env) -> &support::server_store::TestPostgres {
    env.store_under_test.postgres.as_ref().unwrap()
}

fn active_users(env: &Env, tenant: &str) -> usize {
    env.server()
        .store
        .users(tenant, Some(UserStatus::Active))
        .map(|u| u.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_wait_while_postgres_is_down_and_are_imported_once_it_is_back() {
    let env = on_postgres().await;
    let first = env.import("acme", &users_csv(0, 10)).await;
    assert_eq!(first.status, ImportStatus::Success, "{first:?}");

    postgres(&env).stop();
    let answer = env.get("/api/tenants/acme/imports").await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(answer.text.contains("cannot be reached"), "{}", answer.text);
    assert_eq!(answer.retry_after, "5", "a 503 says when to try again");
    // Run-now answers too, instead of waiting on the tenant's queue for the outage to end
    // (review s16 cluster F5).
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        env.post("/api/tenants/acme/run-now", None),
    )
    .await
    .expect("run-now must answer while the store is down");
    assert_eq!(run.status, 503, "{}", run.text);
    assert!(run.text.contains("cannot be reached"), "{}", run.text);
    // A preview is a 503 too, not a 422 about the file (s29).
    let preview = env
        .http(
            "POST",
            "/api/tenants/acme/preview",
            Some(admin_support::TOKEN),
            Some(users_csv(0, 3).into_bytes()),
        )
        .await;
    assert_eq!(preview.status, 503, "{}", preview.text);
    assert_eq!(preview.retry_after, "5");
    // /metrics still answers, without an outbox depth it cannot read (s29: it said 0).
    let metrics = env.get("/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    assert!(
        metrics.text.contains("roster_sftp_sessions_open"),
        "{}",
        metrics.text
    );
    assert!(
        !metrics.text.contains("roster_mail_outbox_depth"),
        "{}",
        metrics.text
    );

    // Logins and uploads still work; the file waits where it was uploaded.
    env.upload("acme", "users.csv", users_csv(0, 20).as_bytes())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.home("acme").join("users.csv").exists(),
        "the upload must wait in the tenant folder while the store is down"
    );

    postgres(&env).start_again();
    let history = env.wait_history("acme", 2).await;
    assert_eq!(history[0].status, ImportStatus::Success, "{:?}", history[0]);
    assert_eq!(history[0].counts.inserted, 10, "{:?}", history[0]);
    assert_eq!(active_users(&env, "acme"), 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.server().store.history("acme", 10).unwrap().len(), 2);
    assert!(!env.home("acme").join("users.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_import_the_run_is_retried_and_applied_exactly_once() {
    let env = on_postgres().await;
    env.upload("acme", "users.csv", users_csv(0, 8_000).as_bytes())
        .await;
    // Stop the database as soon as the run reads rows (if the run is faster than this, the
    // stop lands after it and the assertions below hold all the same).
    let running = eventually(30, || async {
        let p = env.get("/api/tenants/acme/progress").await;
        !p.json["running"].is_null()
    })
    .await;
    postgres(&env).stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres(&env).start_again();

    let history = env.wait_history("acme", 1).await;
    assert!(running, "the run never showed progress");
    // Settle: a second, duplicate record would show up here.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let history_after = env.server().store.history("acme", 10).unwrap();
    assert_eq!(history_after.len(), 1, "{history_after:?}");
    assert_eq!(history[0].status, ImportStatus::Success, "{:?}", history[0]);
    assert_eq!(history[0].counts.inserted, 8_000);
    assert_eq!(active_users(&env, "acme"), 8_000);
    assert!(env
        .server()
        .store
        .claims_stamped("acme")
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_503_within_answer_timeout_while_postgres_is_frozen() {
    let edit = |text: String| text.replace("[admin]\n", "[admin]\nanswer_timeout_secs = 3\n");
    let env = Env::start_edited(ServerStore::postgres(), edit).await;
    let first = env.import("acme", &users_csv(0, 10)).await;
    assert_eq!(first.status, ImportStatus::Success, "{first:?}");
    // Warm the pool, so a read sends its statement on a connection that is already open.
    for _ in 0..4 {
        assert_eq!(env.get("/api/tenants/acme/imports").await.status, 200);
    }

    postgres(&env).freeze();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        env.get("/api/tenants/acme/imports"),
    )
    .await;
    let took = started.elapsed();
    postgres(&env).thaw();
    let answer = answer.expect("a read must answer while PostgreSQL is frozen");
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.retry_after, "5", "a 503 says when to try again");
    assert!(
        answer.text.contains("answer_timeout_secs"),
        "{}",
        answer.text
    );
    // Before the pool's own 10 s wait for a connection could have answered.
    assert!(took < Duration::from_secs(9), "answered after {took:?}");
    // /metrics too: it counted the outbox on the request's own task, where the deadline could
    // not fire (s29).
    postgres(&env).freeze();
    let started = std::time::Instant::now();
    let metrics = tokio::time::timeout(Duration::from_secs(30), env.get("/metrics")).await;
    let took = started.elapsed();
    postgres(&env).thaw();
    let metrics = metrics.expect("/metrics must answer while PostgreSQL is frozen");
    assert_eq!(metrics.status, 503, "{}", metrics.text);
    assert!(took < Duration::from_secs(9), "answered after {took:?}");

    // Once PostgreSQL runs again, so does the API.
    let back = eventually(30, || async {
        env.get("/api/tenants/acme/imports").await.status == 200
    })
    .await;
    assert!(back, "the API answers again once PostgreSQL is thawed");
}
