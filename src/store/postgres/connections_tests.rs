//! The pool's connections against a real PostgreSQL: what each new one sets for its session.

use super::*;

use super::super::test_postgres;

#[test]
fn every_connection_runs_without_jit_where_the_server_would_use_it() {
    let pg = test_postgres::TestPostgres::start();
    let target = super::super::parse_url(&pg.create_database("hr")).unwrap();
    let db = Connections::open(&target, 2).unwrap();
    let seen = db
        .run(|pool| async move {
            // Two connections at once: both were made by the pool.
            let (a, b) = (
                Connections::client(&pool).await?,
                Connections::client(&pool).await?,
            );
            let mut seen = Vec::new();
            for c in [&a, &b] {
                let row = c
                    .query_one(
                        "SELECT current_setting('jit'), reset_val FROM pg_settings \
                         WHERE name = 'jit'",
                        &[],
                    )
                    .await?;
                seen.push((row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?));
                let idle = c
                    .query_one("SHOW idle_in_transaction_session_timeout", &[])
                    .await?;
                anyhow::ensure!(
                    idle.try_get::<_, String>(0)? == "2min",
                    "idle timeout unset"
                );
            }
            Ok(seen)
        })
        .unwrap();
    // `reset_val` is the server's default for the session: on, so the setting is Roster's.
    let want = ("off".to_string(), "on".to_string());
    assert_eq!(seen, [want.clone(), want]);
}
