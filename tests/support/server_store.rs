//! Which store a test's `roster serve` uses: the embedded sled store (the default), or, when
//! the environment says `ROSTER_TEST_STORE=postgres`, a throwaway PostgreSQL cluster of the
//! test's own (tests/support/postgres.rs). `.ci/run` runs the import, intake and admin suites
//! both ways, so every such test checks both stores with the same assertions.
//!
//! Keep the value alive as long as the server runs: dropping it stops the cluster.

#![allow(dead_code)]

#[path = "postgres.rs"]
mod postgres;

pub use postgres::TestPostgres;

/// The environment variable that picks the store of test servers.
pub const TEST_STORE_ENV: &str = "ROSTER_TEST_STORE";

pub struct ServerStore {
    pub postgres: Option<TestPostgres>,
    /// The URL of the test's database (PostgreSQL only).
    pub url: Option<String>,
}

impl ServerStore {
    /// sled, or a fresh PostgreSQL when `ROSTER_TEST_STORE=postgres`; any other value panics,
    /// so a typo never silently tests sled.
    pub fn for_test() -> ServerStore {
        match std::env::var(TEST_STORE_ENV).ok().as_deref() {
            None | Some("") | Some("sled") => ServerStore {
                postgres: None,
                url: None,
            },
            Some("postgres") => ServerStore::postgres(),
            Some(other) => panic!("{TEST_STORE_ENV}={other:?}: use sled or postgres"),
        }
    }

    /// Always a fresh PostgreSQL, whatever the environment says (the fault tests).
    pub fn postgres() -> ServerStore {
        let pg = TestPostgres::start();
        let url = pg.create_database("roster");
        ServerStore {
            postgres: Some(pg),
            url: Some(url),
        }
    }

    /// True when the test server stores in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The `[store]` table to append to a test config: empty for sled, else the URL of the
    /// database `roster` of this test's cluster.
    pub fn config_section(&self) -> String {
        match &self.url {
            None => String::new(),
            Some(url) => format!("\n[store]\nurl = \"{url}\"\n"),
        }
    }
}
