//! A real Roster SFTP listener on a loopback port, and a real SSH/SFTP client (russh +
//! russh-sftp) to drive it. Upload events are collected by a test subscriber.

#![allow(dead_code)]

use roster::serve::{start_sftp, RunningSftp};
use roster::sftp::UploadFinished;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

pub const ACME_PASSWORD: &str = "acme-secret-1";
pub const BETA_PASSWORD: &str = "beta-secret-2";

/// A config with two tenants: `acme` (password + key) and `beta` (password only).
pub fn config_text(dir: &Path, acme_key: &PublicKey, extra: &str) -> String {
    let acme_hash = roster::login::hash_password(ACME_PASSWORD).unwrap();
    let beta_hash = roster::login::hash_password(BETA_PASSWORD).unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
max_upload_bytes = 1000000
max_sessions_per_tenant = 4
max_auth_failures = 5
auth_block_secs = 60

[[tenants]]
id = "acme"
password_hash = "{acme_hash}"
authorized_keys = ["{key}"]
[tenants.import]
file = "users.csv"

[[tenants]]
id = "beta"
password_hash = "{beta_hash}"
{extra}
"#,
        dir = dir.display(),
        key = acme_key.to_openssh().unwrap(),
    )
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub running: Option<RunningSftp>,
    pub events: UnboundedReceiver<UploadFinished>,
    pub acme_key: PrivateKey,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let acme_key =
            PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let config_path = dir.path().join("roster.toml");
        std::fs::write(
            &config_path,
            config_text(dir.path(), acme_key.public_key(), ""),
        )
        .unwrap();
        Self::start_in(dir, config_path, acme_key).await
    }

    /// Starts a server whose `[server]` table also has `extra` (one `key = value` a line).
    pub async fn start_with(extra: &str) -> TestServer {
        let more = format!("max_auth_failures = 5\n{extra}");
        Self::start_replacing("max_auth_failures = 5", &more).await
    }

    /// A server whose config has `new` where the usual one has `old` (a `[server]` line).
    pub async fn start_replacing(old: &str, new: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let acme_key =
            PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let config_path = dir.path().join("roster.toml");
        let text = config_text(dir.path(), acme_key.public_key(), "").replace(old, new);
        std::fs::write(&config_path, text).unwrap();
        Self::start_in(dir, config_path, acme_key).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        acme_key: PrivateKey,
    ) -> TestServer {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let running = start_sftp(&config_path, Arc::new(tx)).await.unwrap();
        TestServer {
            dir,
            config_path,
            running: Some(running),
            events,
            acme_key,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().addr
    }

    pub fn home(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data/tenants").join(tenant)
    }

    pub async fn password(&self, user: &str, password: &str) -> anyhow::Result<Client> {
        Client::connect(self.addr(), user, Login::Password(password.to_string())).await
    }

    pub async fn acme(&self) -> Client {
        Client::connect(
            self.addr(),
            "acme",
            Login::Key(Box::new(self.acme_key.clone())),
        )
        .await
        .unwrap()
    }

    /// The next upload event, or panics after `secs`.
    pub async fn event(&mut self, secs: u64) -> UploadFinished {
        tokio::time::timeout(Duration::from_secs(secs), self.events.recv())
            .await
            .expect("no upload event arrived")
            .expect("event channel closed")
    }

    /// Asserts that no upload event arrives within `ms`.
    pub async fn no_event(&mut self, ms: u64) {
        if let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(ms), self.events.recv()).await
        {
            panic!("unexpected upload event: {ev:?}");
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

pub enum Login {
    Password(String),
    Key(Box<PrivateKey>),
}

/// Records the host key the server showed.
#[derive(Clone, Default)]
pub struct SeenHostKey(pub Arc<Mutex<Option<String>>>);

pub struct ClientHandler {
    seen: SeenHostKey,
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.seen.0.lock().unwrap() = Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(true)
    }
}

pub struct Client {
    pub ssh: russh::client::Handle<ClientHandler>,
    pub sftp: RawSftpSession,
    pub host_key: Option<String>,
}

impl Client {
    pub async fn authenticate(
        addr: std::net::SocketAddr,
        user: &str,
        login: Login,
    ) -> anyhow::Result<(russh::client::Handle<ClientHandler>, Option<String>)> {
        let seen = SeenHostKey::default();
        let config = Arc::new(russh::client::Config::default());
        let mut ssh =
            russh::client::connect(config, addr, ClientHandler { seen: seen.clone() }).await?;
        let ok = match login {
            Login::Password(p) => ssh.authenticate_password(user, p).await?.success(),
            Login::Key(k) => {
                let k = *k;
                let hash = ssh.best_supported_rsa_hash().await?.flatten();
                ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(k), hash))
                    .await?
                    .success()
            }
        };
        anyhow::ensure!(ok, "authentication refused");
        let fp = seen.0.lock().unwrap().clone();
        Ok((ssh, fp))
    }

    pub async fn connect(
        addr: std::net::SocketAddr,
        user: &str,
        login: Login,
    ) -> anyhow::Result<Client> {
        let (ssh, host_key) = Self::authenticate(addr, user, login).await?;
        let channel = ssh.channel_open_session().await?;
        channel.request_subsystem(true, "sftp").await?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(20);
        sftp.init().await?;
        Ok(Client {
            ssh,
            sftp,
            host_key,
        })
    }

    /// Opens `path` with `flags`; returns the handle.
    pub async fn open(
        &self,
        path: &str,
        flags: russh_sftp::protocol::OpenFlags,
    ) -> Result<String, russh_sftp::client::error::Error> {
        let attrs = russh_sftp::protocol::FileAttributes::default();
        Ok(self.sftp.open(path, flags, attrs).await?.handle)
    }

    /// Uploads `data` to `path` (WRITE|CREATE|TRUNCATE, 32 KiB writes, CLOSE).
    pub async fn put(&self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        use russh_sftp::protocol::{FileAttributes, OpenFlags};
        let h = self
            .sftp
            .open(
                path,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                FileAttributes::default(),
            )
            .await?
            .handle;
        let mut off = 0u64;
        for chunk in data.chunks(32 * 1024) {
            self.sftp.write(&h, off, chunk.to_vec()).await?;
            off += chunk.len() as u64;
        }
        self.sftp.close(&h).await?;
        Ok(())
    }

    /// Downloads the whole file at `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        use russh_sftp::protocol::{FileAttributes, OpenFlags};
        let h = self
            .sftp
            .open(path, OpenFlags::READ, FileAttributes::default())
            .await?
            .handle;
        let mut out = Vec::new();
        loop {
            match self.sftp.read(&h, out.len() as u64, 64 * 1024).await {
                Ok(d) => out.extend_from_slice(&d.data),
                Err(russh_sftp::client::error::Error::Status(s))
                    if s.status_code == russh_sftp::protocol::StatusCode::Eof =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.sftp.close(&h).await?;
        Ok(out)
    }
}

/// Polls `f` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A client handler that trusts any host key (tests that need no host key check).
pub struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// One password login on its own connection to `addr`: accepted or not.
pub async fn password_login(addr: &str, user: &str, password: &str) -> bool {
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut ssh = russh::client::connect(config, addr, AnyHost)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    ssh.authenticate_password(user, password)
        .await
        .map(|r| r.success())
        .unwrap_or(false)
}
