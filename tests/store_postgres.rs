//! The PostgreSQL store against a real PostgreSQL (issue 11, first increment): each test starts
//! its own throwaway cluster (tests/support/postgres.rs) and fails loudly when it cannot.

#[path = "support/postgres.rs"]
mod test_postgres;

use roster::store::postgres::{migrate, schema_version, Migrated, SCHEMA_VERSION};
use test_postgres::TestPostgres;

/// The target of a test database URL (trust authentication, no password).
fn pg_config(url: &str) -> roster::store::postgres::PostgresTarget {
    roster::store::postgres::parse_url(url).unwrap_or_else(|e| panic!("{e}"))
}

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

/// A config with one tenant (a server, and so `check-config`, refuses a file without one).
fn write_config(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("roster.toml");
    let tenant = "[[tenants]]\nid = \"acme\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n";
    let text = format!(
        "[server]\nhost_keys = {:?}\ndata_dir = {:?}\n{store}\n{tenant}",
        dir.join("keys"),
        dir.join("data")
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_bad_store_url_is_a_config_problem_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\nurl = \"postgres://app@db/hr?sslmode=verify-ca\"\n",
    );
    let out = roster(&config, &["check-config"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("[store] url") && err.contains("sslmode=\"verify-ca\" is not one of"),
        "{err}"
    );
    let out = roster(&config, &["check-config"], Some("mysql://x@y/z"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not start with postgres://"), "{err}");
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    let pg = TestPostgres::start();
    let config = pg_config(&pg.create_database("hr"));
    assert_eq!(schema_version(&config).await.unwrap(), 0);
    let first = migrate(&config).await.unwrap();
    assert_eq!(
        first,
        Migrated {
            from: 0,
            to: SCHEMA_VERSION
        }
    );
    assert_eq!(schema_version(&config).await.unwrap(), SCHEMA_VERSION);
    let again = migrate(&config).await.unwrap();
    assert_eq!(
        again,
        Migrated {
            from: SCHEMA_VERSION,
            to: SCHEMA_VERSION
        }
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM roster.schema_version"
        ),
        (1..=SCHEMA_VERSION)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let tables = pg.psql(
        "hr",
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'roster'",
    );
    for t in [
        "auth_failures",
        "bucket_gens",
        "claim_stamps",
        "claims",
        "held_plans",
        "import_records",
        "imports",
        "leases",
        "ledger",
        "meta",
        "nodes",
        "outbox",
        "schedule_ticks",
        "schema_version",
        "staged_rows",
        "tenant_state",
        "user_rows",
        "users",
    ] {
        assert!(
            tables.split(',').any(|x| x == t),
            "no roster.{t} in {tables}"
        );
    }
}

/// `roster.lower_items` (migration 11: the array's text lower-cased and read back; migration
/// 12: folded by `roster.fold`, every letter) gives what folding each item gives, for items
/// that the array's text form quotes or escapes and letters beyond ASCII (a final sigma too),
/// and the GIN index built on it answers a group lookup.
#[tokio::test]
async fn lower_items_lowers_each_item_and_its_index_is_used() {
    let pg = TestPostgres::start();
    let config = pg_config(&pg.create_database("hr"));
    migrate(&config).await.unwrap();
    let arrays = r#"(VALUES (ARRAY['Sales', 'EMEA']), (ARRAY['A,B', 'Q"uote', 'Back\Slash',
        '{Brace}', ' Space ', 'NULL', 'Null', NULL, '', 'ÄÖÜ', 'ΟΔΟΣ', 'x;Y']), (ARRAY[NULL]),
        (ARRAY['\"', '"', ',', '}', '{'])) AS v(a)"#;
    let differ = pg.psql(
        "hr",
        &format!(
            "SELECT count(*) FILTER (WHERE roster.lower_items(a) IS DISTINCT FROM \
             ARRAY(SELECT roster.fold(x) FROM unnest(a) AS x)) || '/' || count(*) FROM {arrays}"
        ),
    );
    assert_eq!(differ, "0/4");
    // Every letter, as sled's to_lowercase folds it, whatever the database's collation (this
    // cluster's is C, where lower() changes A-Z only).
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT roster.lower_items(ARRAY['ÄÖÜ', 'ΟΔΟΣ', 'ŠIMIĆ'])::text"
        ),
        "{äöü,οδος,šimić}"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT roster.lower_items(ARRAY['Sales', NULL, 'A,B'])::text"
        ),
        r#"{sales,NULL,"a,b"}"#
    );
    pg.psql(
        "hr",
        "CREATE TABLE roster.user_rows_t PARTITION OF roster.user_rows FOR VALUES IN ('t'); \
         INSERT INTO roster.user_rows_t (tenant, key, status, attributes, created_at, \
         updated_at, bucket, record, groups) SELECT 't', 'u' || i, 'active', '{}', now(), \
         now(), 0, '', ARRAY['G' || (i % 500)] FROM generate_series(1, 20000) AS i; \
         ANALYZE roster.user_rows_t",
    );
    let plan = pg.psql(
        "hr",
        "EXPLAIN SELECT key FROM roster.user_rows WHERE tenant = 't' \
         AND roster.lower_items(groups) @> ARRAY[lower('Sales')]",
    );
    assert!(plan.contains("user_rows_t_lower_items_idx"), "{plan}");
}

#[test]
fn concurrent_migrators_end_at_the_same_version_without_error() {
    let pg = TestPostgres::start();
    let config = pg_config(&pg.create_database("hr"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                barrier.wait();
                rt.block_on(migrate(&config))
            })
        })
        .collect();
    let results: Vec<Migrated> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    assert!(
        results.iter().all(|m| m.to == SCHEMA_VERSION),
        "{results:?}"
    );
    let applied = results.iter().filter(|m| m.from == 0).count();
    assert_eq!(applied, 1, "exactly one migrator applies: {results:?}");
    assert_eq!(
        pg.psql("hr", "SELECT count(*) FROM roster.schema_version"),
        SCHEMA_VERSION.to_string()
    );
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused_and_left_alone() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let config = pg_config(&url);
    migrate(&config).await.unwrap();
    let newer = SCHEMA_VERSION + 1;
    pg.psql(
        "hr",
        &format!("INSERT INTO roster.schema_version (version, name) VALUES ({newer}, 'future')"),
    );
    let e = format!("{:#}", migrate(&config).await.unwrap_err());
    assert!(
        e.contains(&format!(
            "roster schema is at version {newer}, newer than this roster binary"
        )),
        "{e}"
    );
    assert_eq!(schema_version(&config).await.unwrap(), newer);
    // check-config says the same and fails.
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), &format!("[store]\nurl = {url:?}\n"));
    let out = roster(&file, &["check-config"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "schema version {newer} (binary expects {SCHEMA_VERSION})"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("newer than this roster binary"), "{stderr}");
}

#[tokio::test]
async fn the_read_contract_is_plain_sql_and_never_shows_the_password_hash() {
    let pg = TestPostgres::start();
    let config = pg_config(&pg.create_database("hr"));
    migrate(&config).await.unwrap();
    // Roster makes a tenant's partition with its first commit (store::postgres::partitions);
    // this test writes a row by hand, so it makes the partition by hand.
    pg.psql(
        "hr",
        "DO $$ BEGIN EXECUTE format('CREATE TABLE roster.%I PARTITION OF roster.user_rows \
         FOR VALUES IN (%L)', roster.tenant_partition('user_rows', 'acme'), 'acme'); END $$",
    );
    pg.psql(
        "hr",
        "INSERT INTO roster.user_rows (tenant, key, status, email, first_name, date_of_birth, \
         groups, attributes, created_at, updated_at, bucket, record) VALUES ('acme', 'e100', \
         'active', 'ann@example.com', 'Ann', '1990-02-03', ARRAY['sales','emea'], \
         '{\"custom.badge\": \"7\"}', now(), now(), 17, convert_to('$argon2id$secret', 'UTF8'))",
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT key || '|' || status || '|' || first_name || '|' || date_of_birth || '|' || \
             array_to_string(groups, ';') || '|' || (attributes->>'custom.badge') \
             FROM roster.users WHERE tenant = 'acme' AND email = 'ann@example.com'"
        ),
        "e100|active|Ann|1990-02-03|sales;emea|7"
    );
    let columns = pg.psql(
        "hr",
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_schema = 'roster' AND table_name = 'users'",
    );
    for private in [
        "password_hash",
        "password_fp",
        "row_digest",
        "bucket",
        "flags",
        "record",
    ] {
        assert!(
            !columns.split(',').any(|c| c == private),
            "{private} in {columns}"
        );
    }
    for public in [
        "tenant",
        "key",
        "status",
        "email",
        "username",
        "mapping_code",
        "groups",
        "teams",
        "attributes",
        "created_at",
        "updated_at",
        "deleted_at",
    ] {
        assert!(
            columns.split(',').any(|c| c == public),
            "no {public} in {columns}"
        );
    }
    pg.psql(
        "hr",
        "INSERT INTO roster.import_records (tenant, id, file, sha256, bytes, received_at, \
         started_at, finished_at, status, rows, inserted, encoding, delimiter) VALUES \
         ('acme', '20260101T000000Z-1', 'users.csv', 'ff', 10, now(), now(), now(), 'success', \
         1, 1, 'utf-8', ';')",
    );
    assert_eq!(
        pg.psql("hr", "SELECT file || ' ' || status || ' ' || inserted FROM roster.imports WHERE tenant = 'acme'"),
        "users.csv success 1"
    );
}

/// docs/postgres.md, "A role for applications": a role given `USAGE` on schema `roster` and
/// `SELECT` on the two views reads them, and nothing behind them: not the user rows with their
/// packed records (password hashes and fingerprints), not `roster.meta` (the fingerprint key).
#[tokio::test]
async fn an_application_role_reads_the_views_and_nothing_behind_them() {
    let pg = TestPostgres::start();
    let config = pg_config(&pg.create_database("hr"));
    migrate(&config).await.unwrap();
    pg.psql(
        "hr",
        "DO $$ BEGIN EXECUTE format('CREATE TABLE roster.%I PARTITION OF roster.user_rows \
         FOR VALUES IN (%L)', roster.tenant_partition('user_rows', 'acme'), 'acme'); END $$",
    );
    pg.psql(
        "hr",
        "INSERT INTO roster.user_rows (tenant, key, status, email, created_at, updated_at, \
         bucket, record) VALUES ('acme', 'e100', 'active', 'ann@example.com', now(), now(), 17, \
         convert_to('$argon2id$secret', 'UTF8'))",
    );
    pg.psql(
        "hr",
        "CREATE ROLE hr_app LOGIN; GRANT USAGE ON SCHEMA roster TO hr_app; \
         GRANT SELECT ON roster.users, roster.imports TO hr_app",
    );
    let url = format!("postgres://hr_app@127.0.0.1:{}/hr", pg.port);
    let (app, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = app
        .query_one(
            "SELECT key, email FROM roster.users WHERE tenant = 'acme' AND status = 'active'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "e100");
    assert_eq!(row.get::<_, String>(1), "ann@example.com");
    let imports = app
        .query("SELECT id FROM roster.imports WHERE tenant = 'acme'", &[])
        .await
        .unwrap();
    assert!(imports.is_empty());
    for private in [
        "SELECT value FROM roster.meta",
        "SELECT record FROM roster.user_rows",
        "SELECT count(*) FROM roster.held_plans",
        "SELECT count(*) FROM roster.changes",
    ] {
        let err = app.query(private, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{private}: {err}"
        );
    }
}

#[tokio::test]
async fn check_config_reports_the_schema_version_and_applies_nothing() {
    let pg = TestPostgres::start();
    let url = pg.create_database("hr");
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), &format!("[store]\nurl = {url:?}\n"));
    let at = format!("127.0.0.1:{}/hr", pg.port);
    let out = roster(&file, &["check-config"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("store: PostgreSQL at {at}, schema version 0 (binary expects {SCHEMA_VERSION}, no roster schema yet)")),
        "{stdout}"
    );
    assert_eq!(
        pg.psql(
            "hr",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'roster'"
        ),
        "0"
    );
    migrate(&pg_config(&url)).await.unwrap();
    // The URL from ROSTER_STORE_URL, over a config without [store].
    let plain = write_config(dir.path(), "");
    let out = roster(&plain, &["check-config"], Some(&url));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("store: PostgreSQL at {at}, schema version {SCHEMA_VERSION} (binary expects {SCHEMA_VERSION})")),
        "{stdout}"
    );
    // No server there: the reason, and exit 1.
    drop(pg);
    let out = roster(&plain, &["check-config"], Some(&url));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("store: cannot reach PostgreSQL at {at} as roster")),
        "{stderr}"
    );
}

#[test]
fn the_password_comes_from_pgpassword_or_pgpass() {
    let pg = TestPostgres::start();
    pg.create_database("hr");
    pg.psql("hr", "CREATE ROLE app LOGIN PASSWORD 's3cret:x'");
    pg.hba_prepend("host all app 127.0.0.1/32 scram-sha-256");
    let dir = tempfile::tempdir().unwrap();
    let plain = write_config(dir.path(), "");
    let url = format!("postgres://app@127.0.0.1:{}/hr", pg.port);
    let check = |pgpassword: Option<&str>, home: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.arg("-c").arg(&plain).arg("check-config");
        cmd.env("ROSTER_STORE_URL", &url).env("HOME", home);
        cmd.env_remove("PGPASSWORD").env_remove("PGPASSFILE");
        if let Some(pw) = pgpassword {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd.output().expect("cannot run roster");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = check(None, dir.path());
    assert!(!ok && err.contains("cannot reach PostgreSQL"), "{err}");
    let (ok, err) = check(Some("s3cret:x"), dir.path());
    assert!(ok, "PGPASSWORD: {err}");
    std::fs::write(
        dir.path().join(".pgpass"),
        format!("127.0.0.1:{}:hr:app:s3cret\\:x\n", pg.port),
    )
    .unwrap();
    let (ok, err) = check(None, dir.path());
    assert!(ok, "~/.pgpass: {err}");
}
