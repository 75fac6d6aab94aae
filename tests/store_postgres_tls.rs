//! The PostgreSQL store's TLS modes against a real PostgreSQL with a certificate of its own
//! (issue 11, docs/postgres.md, TLS): `sslmode=require` encrypts without checking,
//! `verify-full` checks the chain and the host name, and `roster check-config` connects the
//! same way and says which certificate it refused. Each test starts its own throwaway cluster
//! (tests/support/postgres.rs).

#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod test_postgres;

use roster::store::postgres::parse_url;
use roster::store::Store;
use test_postgres::TestPostgres;

/// One tenant: a server, and so `check-config`, refuses a file without one.
const TENANT: &str = "[[tenants]]\nid = \"acme\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n";

/// How many connections named `app` the server has, and how many of them use TLS.
fn tls_connections(pg: &TestPostgres, app: &str) -> (u32, u32) {
    let out = pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{app}'"
        ),
    );
    let (all, tls) = out.split_once(' ').unwrap();
    (all.parse().unwrap(), tls.parse().unwrap())
}

/// A URL of database `db` on `host`, with `params`.
fn url_at(pg: &TestPostgres, host: &str, db: &str, params: &str) -> String {
    format!(
        "postgres://{}@{host}:{}/{db}?{params}",
        test_postgres::SUPERUSER,
        pg.port
    )
}

/// A message with the headers the mail worker reads back.
fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Roster <roster@acme.example>\r\nTo: it@acme.example\r\nSubject: {subject}\r\n\
         X-Roster-Tenant: acme\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

fn open_url(url: &str) -> anyhow::Result<Store> {
    let target = parse_url(url).unwrap_or_else(|e| panic!("{e}"));
    Store::open_postgres(&target, "node-a")
}

#[test]
fn sslmode_require_encrypts_without_checking_the_certificate() {
    let pg = TestPostgres::start_with_ssl();
    pg.create_database("hr");
    // 127.0.0.1 is not a name of the certificate, and its CA is not trusted: require accepts it.
    let url = url_at(
        &pg,
        "127.0.0.1",
        "hr",
        "sslmode=require&application_name=tls-require",
    );
    let store = open_url(&url).unwrap();
    store
        .outbox_push(&["it@x.example".to_string()], &message("m"))
        .unwrap();
    assert_eq!(store.outbox_len().unwrap(), 1);
    let (all, tls) = tls_connections(&pg, "tls-require");
    assert!(all > 0 && tls == all, "{tls} of {all} connections use TLS");
    // Plain connections stay plain.
    let plain = url_at(&pg, "127.0.0.1", "hr", "application_name=tls-none");
    let plain_store = open_url(&plain).unwrap();
    assert_eq!(plain_store.outbox_len().unwrap(), 1);
    let (all, tls) = tls_connections(&pg, "tls-none");
    assert!(
        all > 0 && tls == 0,
        "{tls} of {all} plain connections use TLS"
    );
}

#[test]
fn sslmode_verify_full_checks_the_chain_and_the_host_name() {
    let pg = TestPostgres::start_with_ssl();
    pg.create_database("hr");
    let ca = pg.ssl_ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let good = url_at(
        &pg,
        "localhost",
        "hr",
        &format!("sslmode=verify-full&sslrootcert={ca}&application_name=tls-verified"),
    );
    let store = open_url(&good).unwrap();
    assert!(store.history("acme", 1).unwrap().is_empty());
    let (all, tls) = tls_connections(&pg, "tls-verified");
    assert!(all > 0 && tls == all, "{tls} of {all} connections use TLS");
    // The migrator's own connection (check-config's too) verifies the same way.
    let target = parse_url(&good).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(roster::store::postgres::schema_version(&target))
            .unwrap(),
        roster::store::postgres::SCHEMA_VERSION
    );

    // The certificate names localhost, not 127.0.0.1.
    let wrong_host = url_at(
        &pg,
        "127.0.0.1",
        "hr",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let e = format!("{:#}", open_url(&wrong_host).err().unwrap());
    assert!(
        e.contains("the server's TLS certificate was refused")
            && e.contains("\"127.0.0.1\"")
            && e.contains(ca),
        "{e}"
    );
    let e = format!(
        "{:#}",
        rt.block_on(roster::store::postgres::schema_version(
            &parse_url(&wrong_host).unwrap()
        ))
        .unwrap_err()
    );
    assert!(e.contains("certificate was refused"), "{e}");
    // Without sslrootcert only the public roots are trusted: the test CA is not one.
    let public = url_at(&pg, "localhost", "hr", "sslmode=verify-full");
    let e = format!("{:#}", open_url(&public).err().unwrap());
    assert!(
        e.contains("certificate was refused") && e.contains("public CA roots"),
        "{e}"
    );
    // A missing sslrootcert file is named.
    let missing = url_at(
        &pg,
        "localhost",
        "hr",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let e = format!("{:#}", open_url(&missing).err().unwrap());
    assert!(
        e.contains("cannot read the sslrootcert file /nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn sslmode_require_refuses_a_server_without_tls() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    let e = format!(
        "{:#}",
        open_url(&url_at(&pg, "127.0.0.1", "hr", "sslmode=require"))
            .err()
            .unwrap()
    );
    assert!(
        e.contains("cannot connect to PostgreSQL") && e.contains("TLS"),
        "{e}"
    );
}

#[test]
fn check_config_connects_with_the_same_tls_and_says_a_refused_certificate() {
    let pg = TestPostgres::start_with_ssl();
    pg.create_database("hr");
    let ca = pg.ssl_ca.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |host: &str| {
        let url = url_at(
            &pg,
            host,
            "hr",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        );
        let config = dir.path().join("roster.toml");
        let text = format!(
            "[server]\nhost_keys = {:?}\ndata_dir = {:?}\n[store]\nurl = {url:?}\n{TENANT}",
            dir.path().join("keys"),
            dir.path().join("data")
        );
        std::fs::write(&config, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
            .arg("-c")
            .arg(&config)
            .arg("check-config")
            .env_remove("ROSTER_STORE_URL")
            .env_remove("PGPASSWORD")
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let out = check("localhost");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("schema version 0"), "{stdout}");
    let out = check("127.0.0.1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the server's TLS certificate was refused") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
}
