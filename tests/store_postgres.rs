//! The PostgreSQL store against a real PostgreSQL (issue 11, first increment): each test starts
//! its own throwaway cluster (tests/support/postgres.rs) and fails loudly when it cannot.

#[path = "support/postgres.rs"]
mod test_postgres;

use test_postgres::TestPostgres;

#[test]
fn a_throwaway_cluster_starts_and_answers_sql() {
    let pg = TestPostgres::start();
    let url = pg.create_database("roster_smoke");
    assert!(url.ends_with("/roster_smoke"), "{url}");
    assert_eq!(pg.psql("roster_smoke", "SELECT 1 + 1"), "2");
}
