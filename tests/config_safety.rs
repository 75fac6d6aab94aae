//! Config safety over a real server: a truncated or tenant-less `roster.toml` is not applied on
//! reload (the tenants keep logging in), and no default admin token ever works: without
//! `[admin] token` (or with the old `change-me`) the server generates one into
//! `<data_dir>/admin-token` (0600), which the real CLI binary then reads.

mod support;

use russh::keys::PrivateKey;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use support::sftp::{eventually, Client, Login};

fn config(dir: &Path, key: &PrivateKey, tenants: &[&str], token_line: &str) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhost_keys = \"{d}/hk\"\ndata_dir = \"{d}/data\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n{token_line}\n",
        d = dir.display()
    );
    for t in tenants {
        s.push_str(&format!(
            "\n[[tenants]]\nid = \"{t}\"\nauthorized_keys = [\"{}\"]\n",
            key.public_key().to_openssh().unwrap()
        ));
    }
    s
}

async fn logs_in(addr: std::net::SocketAddr, tenant: &str, key: &PrivateKey) -> bool {
    Client::connect(addr, tenant, Login::Key(Box::new(key.clone())))
        .await
        .is_ok()
}

/// GET `/api/tenants` with a bearer token; the status.
async fn admin_status(addr: std::net::SocketAddr, token: &str) -> u16 {
    let url = format!("http://{addr}/api/tenants");
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        agent
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_tenantless_config_is_not_applied_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let path = dir.path().join("roster.toml");
    let token = "token = \"config-safety-token-3e8f0a6c2d9b5e7f1a4c\"";
    std::fs::write(&path, config(dir.path(), &key, &["acme"], token)).unwrap();
    let server = roster::serve::start(&path).await.unwrap();
    let addr = server.sftp.addr;
    assert!(logs_in(addr, "acme", &key).await);

    // Truncated to nothing, then a file with the sections but no tenants.
    for text in [String::new(), config(dir.path(), &key, &[], token)] {
        std::fs::write(&path, &text).unwrap();
        // The watcher reads the file 200 ms after the last event; give it ample time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            logs_in(addr, "acme", &key).await,
            "acme was locked out by a reload of {text:?}"
        );
    }
    // The watcher is alive: a real edit (a new tenant) applies.
    std::fs::write(&path, config(dir.path(), &key, &["acme", "beta"], token)).unwrap();
    let beta = eventually(20, || logs_in(addr, "beta", &key)).await;
    assert!(beta, "a valid edit was not applied");
    assert!(logs_in(addr, "acme", &key).await);
    server.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_admin_token_works_and_the_cli_reads_the_generated_one() {
    for token_line in ["", "token = \"change-me\""] {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let path = dir.path().join("roster.toml");
        std::fs::write(&path, config(dir.path(), &key, &["acme"], token_line)).unwrap();
        let server = roster::serve::start(&path).await.unwrap();
        let admin = server.admin.addr;
        for guess in ["change-me", ""] {
            assert_eq!(
                admin_status(admin, guess).await,
                401,
                "{token_line:?}: {guess:?} accepted"
            );
        }
        let file = dir.path().join("data/admin-token");
        let meta = std::fs::metadata(&file).expect("a generated token file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let generated = std::fs::read_to_string(&file).unwrap().trim().to_string();
        assert_eq!(generated.len(), 64, "{generated:?}");
        assert_eq!(admin_status(admin, &generated).await, 200);

        // The real CLI finds the token in the data folder.
        let (cfg, url) = (path.clone(), format!("http://{admin}"));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
                .args([
                    "-c",
                    cfg.to_str().unwrap(),
                    "--admin-url",
                    &url,
                    "users",
                    "acme",
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{token_line:?}: the CLI failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.stop(Duration::from_secs(10)).await;

        // A restart keeps the same token.
        let server = roster::serve::start(&path).await.unwrap();
        assert_eq!(admin_status(server.admin.addr, &generated).await, 200);
        server.stop(Duration::from_secs(10)).await;
    }
}
