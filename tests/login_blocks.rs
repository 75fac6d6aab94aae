//! An operator lifts a login block (docs/operators.md, "Lifting a block"): wrong SFTP
//! passwords block the address and the tenant; `GET /api/login-blocks` and `roster
//! login-blocks` list both; lifting the address leaves the tenant blocked, lifting the tenant
//! lets the right password in again; a second lift says nothing was blocked; a bad scope or
//! subject is a 400. On sled the blocks are this node's (`source: node`); with
//! `ROSTER_TEST_STORE=postgres` they are the shared counters' (`source: shared`). Two nodes
//! lifting each other's blocks: tests/cluster_nodes.rs.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::Env;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use support::sftp::password_login;

const BIN: &str = env!("CARGO_BIN_EXE_roster");
const PASSWORD: &str = "the-right-password-4821";

async fn roster(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("ROSTER_ADMIN_URL")
        .env("TZ", "UTC")
        .output()
        .await
        .unwrap()
}

/// The (scope, subject, source) of each block listed.
fn blocks(v: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = v["blocks"]
        .as_array()
        .unwrap_or_else(|| panic!("no blocks in {v}"))
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            (s("scope"), s("subject"), s("source"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lifts_an_address_and_a_tenant_block() {
    let hash = roster::login::hash_password(PASSWORD).unwrap();
    let env = Env::start_edited(support::server_store::ServerStore::for_test(), |text| {
        text.replacen("[server]\n", "[server]\nmax_auth_failures = 3\n", 1)
            + &format!(
                "\n[[tenants]]\nid = \"pw\"\npassword_hash = \"{hash}\"\n\
                     [tenants.import]\nfile = \"users.csv\"\nreport = \"never\"\n"
            )
    })
    .await;
    let source = if env.store_under_test.is_postgres() {
        "shared"
    } else {
        "node"
    };
    let sftp = env.server().sftp.addr.to_string();
    assert!(
        password_login(&sftp, "pw", PASSWORD).await,
        "the password works"
    );
    assert_eq!(blocks(&env.get("/api/login-blocks").await.json), vec![]);
    for _ in 0..3 {
        assert!(!password_login(&sftp, "pw", "wrong").await);
    }
    assert!(
        !password_login(&sftp, "pw", PASSWORD).await,
        "blocked: even the right password is refused"
    );
    let listed = env.get("/api/login-blocks").await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(
        blocks(&listed.json),
        vec![
            ("address".into(), "127.0.0.1".into(), source.into()),
            ("tenant".into(), "pw".into(), source.into()),
        ]
    );
    let cli = env.cli_config();
    let table = roster(&cli, &["login-blocks"]).await;
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.status.success(), "{text}");
    assert!(
        text.contains("SUBJECT") && text.contains("127.0.0.1") && text.contains(" pw "),
        "{text}"
    );

    // The address first: the tenant's block still holds.
    let lifted = roster(&cli, &["login-blocks", "--lift", "address", "127.0.0.1"]).await;
    let text = String::from_utf8_lossy(&lifted.stdout).to_string();
    assert!(lifted.status.success(), "{text}");
    assert!(
        text.contains("lifted the block on address 127.0.0.1"),
        "{text}"
    );
    assert!(!password_login(&sftp, "pw", PASSWORD).await);
    assert_eq!(
        blocks(&env.get("/api/login-blocks").await.json),
        vec![("tenant".into(), "pw".into(), source.into())]
    );

    let lift = env.post("/api/login-blocks/tenant/pw/lift", None).await;
    assert_eq!(lift.status, 200, "{}", lift.json);
    assert_eq!(lift.json["lifted"], Value::Bool(true));
    assert!(
        password_login(&sftp, "pw", PASSWORD).await,
        "lifted: the password works again"
    );
    assert_eq!(blocks(&env.get("/api/login-blocks").await.json), vec![]);
    let again = env.post("/api/login-blocks/tenant/pw/lift", None).await;
    assert_eq!(again.json["lifted"], Value::Bool(false), "{}", again.json);

    // Bad input is named.
    let bad = env.post("/api/login-blocks/planet/pw/lift", None).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json["error"]
        .as_str()
        .unwrap_or("")
        .contains("address or tenant"));
    let bad = env
        .post("/api/login-blocks/address/10.0.0/lift", None)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    let bad = env
        .post("/api/login-blocks/tenant/No%20Such/lift", None)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    // An IPv6 address names the counters of its /64, in their short form.
    let v6 = env
        .post("/api/login-blocks/address/2001:DB8:0:0:0:0:0:1/lift", None)
        .await;
    assert_eq!(v6.json["subject"], "2001:db8::", "{}", v6.json);
}
