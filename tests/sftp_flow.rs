//! Flow control of the SSH front door against a real `roster serve` process and real clients: a
//! paramiko `get()` of 64 MiB (it queues a READ for every block at once) finishes with the right
//! bytes; a session channel that never asks for SFTP and is flooded with small messages wedges
//! neither its connection nor the tenant's session slot nor a descriptor; a client that stops
//! reading replies while it keeps sending is ended by the idle timeout, which frees its slot and
//! descriptor; and a login over the tenant's session limit is told why and disconnected, or ended
//! by the login deadline. Each tenant may have one session here, so a leaked slot locks it out.
//!
//! The paramiko scripts are in tests/sftp_flow/ (python3 with paramiko, installed by
//! tests/interop/install.sh when missing).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::process::free_port;
use support::sftp::{config_text, eventually, AnyHost, Client, Login, BETA_PASSWORD};

/// A `roster serve` child process (killed when dropped) with one session per tenant.
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server with `extra` lines in `[server]`; returns once it greets on SSH.
    async fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key =
            russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
                .unwrap();
        let (sftp, admin) = (free_port(), free_port());
        let text = config_text(dir.path(), key.public_key(), "")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{sftp}"))
            .replace("max_upload_bytes = 1000000", "max_upload_bytes = 200000000")
            .replace(
                "max_sessions_per_tenant = 4",
                &format!("max_sessions_per_tenant = 1\n{extra}"),
            )
            .replacen(
                "[[tenants]]",
                &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[[tenants]]"),
                1,
            );
        let config = dir.path().join("roster.toml");
        std::fs::write(&config, text).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], sftp).into();
        let server = Server { dir, child, addr };
        assert!(
            eventually(30, || async { server.greets().await }).await,
            "the server did not start"
        );
        server
    }

    async fn greets(&self) -> bool {
        use tokio::io::AsyncReadExt;
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).await.is_ok() && &buf == b"SSH-2.0-"
    }

    fn home(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data/tenants").join(tenant)
    }

    /// The server process's open descriptors.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// True when `beta` logs in, opens SFTP and gets an answer.
    async fn beta_logs_in(&self) -> bool {
        let login = Login::Password(BETA_PASSWORD.to_string());
        match Client::connect(self.addr, "beta", login).await {
            Ok(c) => {
                let ok = c.sftp.realpath(".").await.is_ok();
                let _ = c
                    .ssh
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
                ok
            }
            Err(_) => false,
        }
    }

    /// The descriptor count once a full login has come and gone (the server opens some files
    /// lazily on first use), and the connection has been released.
    async fn baseline(&self) -> usize {
        assert!(self.beta_logs_in().await, "the first login failed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = self.descriptors();
        assert!(self.beta_logs_in().await, "the second login failed");
        assert!(
            eventually(20, || async { self.descriptors() <= n }).await,
            "descriptors did not settle after a plain login"
        );
        self.descriptors()
    }

    /// Nothing of the connections before is left: the descriptor count is back at `baseline`
    /// (within 30 s), and no session slot was left behind (beta, one session allowed, logs in).
    async fn assert_nothing_left(&self, baseline: usize) {
        let back = eventually(30, || async { self.descriptors() <= baseline }).await;
        assert!(
            back,
            "descriptors stayed at {} (baseline {baseline})",
            self.descriptors()
        );
        assert!(self.beta_logs_in().await, "beta is locked out");
    }
}

/// Installs the test clients (tests/interop/install.sh: paramiko among them) once per test
/// binary when python3 cannot import paramiko, as `cargo test` does for PostgreSQL.
fn ensure_paramiko() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| {
        let has = || {
            std::process::Command::new("python3")
                .args(["-c", "import paramiko"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if has() {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/install.sh");
        let installed = std::process::Command::new("bash").arg(script).status();
        assert!(
            installed.is_ok_and(|s| s.success()) && has(),
            "paramiko is missing and tests/interop/install.sh could not install it"
        );
    });
}

/// Runs `python3 tests/sftp_flow/SCRIPT ARGS`, killed after `limit`; returns (success, stdout).
async fn python(script: &str, args: &[String], limit: Duration) -> (bool, String) {
    ensure_paramiko();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sftp_flow")
        .join(script);
    let child = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (with paramiko) must be installed: tests/interop/install.sh");
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            eprintln!("{script}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
            (out.status.success(), stdout)
        }
        Err(_) => (false, format!("{script} did not finish within {limit:?}")),
    }
}

/// `len` bytes that do not repeat in any short period (so a misplaced block shows).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn beta_args(srv: &Server, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        "127.0.0.1".to_string(),
        srv.addr.port().to_string(),
        "beta".to_string(),
        BETA_PASSWORD.to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paramiko_gets_a_file_of_64_mib() {
    let srv = Server::start("").await;
    let data = payload(64 * 1024 * 1024);
    std::fs::write(srv.home("beta").join("big.bin"), &data).unwrap();
    let out = srv.dir.path().join("big.out");
    let args = beta_args(&srv, &["big.bin", out.to_str().unwrap()]);
    // Generous: it takes seconds; before the fix it never finished.
    let (ok, stdout) = python("get.py", &args, Duration::from_secs(300)).await;
    assert!(ok, "paramiko get() of 64 MiB failed: {stdout}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the downloaded bytes differ");
    // Its session slot is free again.
    assert!(eventually(20, || srv.beta_logs_in()).await);
}

/// Logs in as beta and sends `n` one-byte messages on a session channel that never asks for
/// a subsystem; returns the connection and that channel.
async fn flood_a_bare_channel(
    addr: SocketAddr,
    n: usize,
) -> (
    russh::client::Handle<AnyHost>,
    russh::Channel<russh::client::Msg>,
) {
    let config = Arc::new(russh::client::Config::default());
    let mut ssh = russh::client::connect(config, addr, AnyHost).await.unwrap();
    assert!(ssh
        .authenticate_password("beta", BETA_PASSWORD)
        .await
        .unwrap()
        .success());
    let channel = ssh.channel_open_session().await.unwrap();
    for _ in 0..n {
        channel.data(&b"x"[..]).await.unwrap();
    }
    (ssh, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_channel_without_sftp_wedges_nothing() {
    // A long idle timeout: nothing here may wait for it.
    let srv = Server::start("idle_timeout_secs = 600").await;
    let baseline = srv.baseline().await;

    // The connection stays usable: the same login opens SFTP on a second channel.
    let (ssh, mut bare) = flood_a_bare_channel(srv.addr, 300).await;
    let second = async {
        let channel = ssh.channel_open_session().await?;
        channel.request_subsystem(true, "sftp").await?;
        let sftp = russh_sftp::client::RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(10);
        sftp.init().await?;
        sftp.realpath(".").await?;
        anyhow::Ok(sftp)
    };
    let sftp = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the connection is wedged: no answer on a second channel within 30 s")
        .expect("SFTP on a second channel");
    // The bare channel is closed by the server after a short grace period.
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match bare.wait().await {
                Some(russh::ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the channel without SFTP was not closed");
    drop(sftp);
    ssh.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    drop(ssh);

    // Three clients flood a bare channel and go away at once.
    for _ in 0..3 {
        let (ssh, channel) = flood_a_bare_channel(srv.addr, 300).await;
        drop(channel);
        let _ = ssh
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
    srv.assert_nothing_left(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_ended_by_the_idle_timeout() {
    let srv = Server::start("idle_timeout_secs = 2").await;
    std::fs::write(srv.home("beta").join("big.bin"), payload(16 * 1024 * 1024)).unwrap();
    let baseline = srv.baseline().await;
    let args = beta_args(&srv, &["big.bin", "60"]);
    let (ok, stdout) = python("stop_reading.py", &args, Duration::from_secs(120)).await;
    assert!(
        ok,
        "the server kept a connection whose client reads nothing: {stdout}"
    );
    srv.assert_nothing_left(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_the_session_limit_is_told_why_and_disconnected() {
    let srv = Server::start("auth_timeout_secs = 3").await;
    let login = || Login::Password(BETA_PASSWORD.to_string());
    let first = Client::connect(srv.addr, "beta", login()).await.unwrap();

    // Over the limit (one session), SFTP is refused with the reason, then the connection ends.
    let (ssh, _) = Client::authenticate(srv.addr, "beta", login())
        .await
        .unwrap();
    let mut channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let mut stderr = Vec::new();
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = channel.wait().await {
            if let russh::ChannelMsg::ExtendedData { data, ext: 1 } = msg {
                stderr.extend_from_slice(&data);
            }
        }
    })
    .await;
    assert!(told.is_ok(), "the refused channel was not closed");
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        stderr.contains("beta already has 1 sessions open"),
        "stderr: {stderr:?}"
    );
    assert!(eventually(30, || async { ssh.is_closed() }).await);

    // One that never asks for SFTP is ended by the login deadline, like one not logged in.
    let (idle, _) = Client::authenticate(srv.addr, "beta", login())
        .await
        .unwrap();
    assert!(
        eventually(30, || async { idle.is_closed() }).await,
        "a login over the limit was kept"
    );
    // The first session is not affected.
    assert!(first.sftp.realpath(".").await.is_ok());
}
