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

fn roster(config: &std::path::Path, args: &[&str], env_url: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("ROSTER_STORE_URL");
    cmd.env_remove("PGPASSWORD").env("HOME", "/nonexistent");
    if let Some(url) = env_url {
        cmd.env("ROSTER_STORE_URL", url);
    }
    cmd.output().expect("cannot run roster")
}

fn write_config(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("roster.toml");
    let text = format!(
        "[server]\nhost_keys = {:?}\ndata_dir = {:?}\n{store}",
        dir.join("keys"),
        dir.join("data")
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_with_a_store_url_refuses_with_a_sentence_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\nurl = \"postgres://app@127.0.0.1:1/hr\"\n",
    );
    let out = roster(&config, &["serve"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot serve from PostgreSQL yet") && err.contains("127.0.0.1:1/hr"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "serve created its data folder"
    );
    // ROSTER_STORE_URL alone does the same.
    let config = write_config(dir.path(), "");
    let out = roster(&config, &["serve"], Some("postgres://app@127.0.0.1:1/env"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("127.0.0.1:1/env"), "{err}");
}

#[test]
fn a_bad_store_url_is_a_config_problem_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\nurl = \"postgres://app@db/hr?sslmode=verify-full\"\n",
    );
    let out = roster(&config, &["check-config"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("[store] url") && err.contains("sslmode=verify-full is not supported yet"),
        "{err}"
    );
    let out = roster(&config, &["check-config"], Some("mysql://x@y/z"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not start with postgres://"), "{err}");
}
