//! The SSH side of the front door over a real socket: logins (password, key, wrong password,
//! unknown tenant), the failed-login block, the per-tenant session limit, config reload while
//! running, and host keys reused across restarts.

mod support;

use std::os::unix::fs::PermissionsExt;
use support::sftp::{
    config_text, eventually, Client, Login, TestServer, ACME_PASSWORD, BETA_PASSWORD,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_by_password_and_key() {
    let srv = TestServer::start().await;
    assert!(srv.password("acme", ACME_PASSWORD).await.is_ok());
    assert!(srv.password("beta", BETA_PASSWORD).await.is_ok());
    let _ = srv.acme().await;
    // Wrong password, unknown tenant, a key the tenant does not list.
    assert!(srv.password("acme", "wrong").await.is_err());
    assert!(srv.password("nobody", ACME_PASSWORD).await.is_err());
    assert!(Client::connect(
        srv.addr(),
        "beta",
        Login::Key(Box::new(srv.acme_key.clone()))
    )
    .await
    .is_err());
    // Each tenant lands in its own home.
    let a = srv.acme().await;
    a.put("users.csv", b"acme").await.unwrap();
    let b = srv.password("beta", BETA_PASSWORD).await.unwrap();
    assert!(b.get("users.csv").await.is_err());
    assert!(srv.home("acme").join("users.csv").exists());
    assert!(!srv.home("beta").join("users.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_block_the_address() {
    let srv = TestServer::start().await; // max_auth_failures = 5
    for _ in 0..5 {
        assert!(srv.password("beta", "guess").await.is_err());
    }
    // Now even the right password is refused from this address.
    assert!(srv.password("beta", BETA_PASSWORD).await.is_err());
    assert!(srv.password("acme", ACME_PASSWORD).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_tenant_are_limited() {
    let srv = TestServer::start().await; // max_sessions_per_tenant = 4
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(srv.acme().await);
    }
    assert!(Client::connect(
        srv.addr(),
        "acme",
        Login::Key(Box::new(srv.acme_key.clone()))
    )
    .await
    .is_err());
    // Another tenant is not affected.
    assert!(srv.password("beta", BETA_PASSWORD).await.is_ok());
    // Closing one frees a slot.
    let c = open.pop().unwrap();
    c.ssh
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    drop(c);
    let again = eventually(5, || async {
        Client::connect(
            srv.addr(),
            "acme",
            Login::Key(Box::new(srv.acme_key.clone())),
        )
        .await
        .is_ok()
    })
    .await;
    assert!(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_while_running() {
    let srv = TestServer::start().await;
    let dir = srv.dir.path().to_path_buf();
    let gamma_hash = roster::login::hash_password("gamma-pass").unwrap();
    let gamma = format!("\n[[tenants]]\nid = \"gamma\"\npassword_hash = \"{gamma_hash}\"\n");
    let base = config_text(&dir, srv.acme_key.public_key(), "");

    // A new tenant can log in.
    std::fs::write(&srv.config_path, format!("{base}{gamma}")).unwrap();
    assert!(
        eventually(10, || async {
            srv.password("gamma", "gamma-pass").await.is_ok()
        })
        .await
    );

    // An invalid edit is refused and the running config stays.
    std::fs::write(
        &srv.config_path,
        format!("{base}{gamma}\n[[tenants]]\nid = \"Bad Id!\"\n"),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(srv.password("gamma", "gamma-pass").await.is_ok());

    // A removed tenant cannot start new sessions; a changed password applies.
    let acme_hash2 = roster::login::hash_password("new-acme-pass").unwrap();
    let changed = base.replacen(&first_hash(&base), &acme_hash2, 1);
    std::fs::write(&srv.config_path, changed).unwrap();
    assert!(
        eventually(10, || async {
            srv.password("gamma", "gamma-pass").await.is_err()
        })
        .await
    );
    assert!(
        eventually(10, || async {
            srv.password("acme", "new-acme-pass").await.is_ok()
        })
        .await
    );
    assert!(srv.password("acme", ACME_PASSWORD).await.is_err());
}

fn first_hash(text: &str) -> String {
    let start = text.find("$argon2id$").unwrap();
    let end = text[start..].find('"').unwrap();
    text[start..start + end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_created_once_and_reused() {
    let mut srv = TestServer::start().await;
    let keys = srv.dir.path().join("host_keys");
    for name in ["ssh_host_ed25519_key", "ssh_host_rsa_key"] {
        let mode = std::fs::metadata(keys.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let before = std::fs::read(keys.join("ssh_host_ed25519_key")).unwrap();
    let first = srv.acme().await.host_key.unwrap();
    srv.stop().await;

    let TestServer {
        dir,
        config_path,
        acme_key,
        ..
    } = srv;
    let srv = TestServer::start_in(dir, config_path, acme_key).await;
    let second = srv.acme().await.host_key.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read(keys.join("ssh_host_ed25519_key")).unwrap(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let config_path = dir.path().join("roster.toml");
    let text = config_text(dir.path(), key.public_key(), "").replace(
        "max_auth_failures = 5",
        "max_auth_failures = 5\nidle_timeout_secs = 1",
    );
    std::fs::write(&config_path, text).unwrap();
    let srv = TestServer::start_in(dir, config_path, key).await;
    let c = srv.acme().await;
    assert!(c.sftp.realpath(".").await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(c.ssh.is_closed(), "an idle connection must be closed");
    assert!(c.sftp.realpath(".").await.is_err());
}

/// The kernel's keepalive timer of each established connection on local `port`, in seconds
/// until it fires, from `/proc/net/tcp` (timer kind 2 is keepalive; the time is in 1/100 s).
/// None for a connection with another timer or none.
fn keepalive_timers(port: u16) -> Vec<Option<f64>> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols[1].rsplit(':').next()?;
            let established = cols[3] == "01";
            (u16::from_str_radix(local_port, 16).ok()? == port && established).then(|| {
                let (kind, when) = cols[5].split_once(':')?;
                (kind == "02")
                    .then(|| u64::from_str_radix(when, 16).ok().map(|t| t as f64 / 100.0))?
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_carry_kernel_keepalives_that_notice_a_vanished_client_within_a_minute() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    assert!(c.sftp.realpath(".").await.is_ok());
    // Once the connection is quiet (no data in flight, whose retransmit timer the table shows
    // instead), the server's socket shows its keepalive timer.
    let mut timers = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        timers = keepalive_timers(srv.addr().port());
        if timers.iter().all(Option::is_some) {
            break;
        }
    }
    assert_eq!(timers.len(), 1, "one connection to the server: {timers:?}");
    // The first probe after 30 s of silence (the kernel's default is 7,200 s).
    let first_probe = timers[0].expect("a keepalive timer runs on the server's socket");
    assert!(first_probe <= 30.0, "first probe in {first_probe} s");
}

/// Accepts any host key (the test checks the client's login, not the server's key).
struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Review s29 F3: a tenant's RSA key logs in with an `rsa-sha2-256` or `rsa-sha2-512`
/// signature, not with a SHA-1 `ssh-rsa` one (refused for host keys already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_log_in_with_sha2_signatures_only() {
    use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
    use std::sync::Arc;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("id_rsa");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let key = PrivateKey::read_openssh_file(&path).unwrap();
    let line = key.public_key().to_openssh().unwrap();
    let beta = "[[tenants]]\nid = \"beta\"";
    let gamma = format!("[[tenants]]\nid = \"gamma\"\nauthorized_keys = [\"{line}\"]\n{beta}");
    let srv = TestServer::start_replacing(beta, &gamma).await;
    let key = Arc::new(key);
    let login = |hash: Option<HashAlg>| {
        let (key, addr) = (key.clone(), srv.addr());
        async move {
            let config = Arc::new(russh::client::Config::default());
            let mut ssh = russh::client::connect(config, addr, AnyHost).await.unwrap();
            ssh.authenticate_publickey("gamma", PrivateKeyWithHashAlg::new(key, hash))
                .await
                .unwrap()
                .success()
        }
    };
    assert!(!login(None).await, "a SHA-1 ssh-rsa signature logged in");
    assert!(login(Some(HashAlg::Sha256)).await);
    assert!(login(Some(HashAlg::Sha512)).await);
}
