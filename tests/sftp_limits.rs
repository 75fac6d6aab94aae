//! The SSH front door under hostile clients, over real sockets: SFTP channels count toward
//! `max_sessions_per_tenant` and per connection; unauthenticated connections are capped (in all
//! and per address) and closed at once over a cap; the login deadline counts from accept and
//! keep-alives do not extend it; at the descriptor budget a real `roster serve` process refuses
//! at once and keeps answering `/health`, and open handles of all tenants together stay within
//! their half of that budget; every channel request that wants a reply gets one;
//! a reload closes withdrawn logins; a wrong password keeps `password` offered; a login as one
//! tenant does not clear failures against another. Floods are bounded in count and time.

mod support;

use support::process::free_port;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, MethodKind};
use russh_sftp::client::RawSftpSession;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use support::sftp::{config_text, eventually, AnyHost, TestServer, ACME_PASSWORD, BETA_PASSWORD};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

type Ssh = russh::client::Handle<AnyHost>;

/// Connects (key exchange done, not logged in).
async fn ssh(addr: SocketAddr, config: russh::client::Config) -> Ssh {
    russh::client::connect(Arc::new(config), addr, AnyHost)
        .await
        .unwrap()
}

async fn key_login(ssh: &mut Ssh, srv: &TestServer) -> bool {
    let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(srv.acme_key.clone()), None);
    ssh.authenticate_publickey("acme", key)
        .await
        .is_ok_and(|r| r.success())
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Logs in as acme with its key from `from`, opens SFTP and checks it answers.
async fn acme_key_login_from(srv: &TestServer, from: IpAddr) -> anyhow::Result<()> {
    let stream = tcp_from(from, srv.addr()).await?;
    let config = Arc::new(russh::client::Config::default());
    let mut ssh = russh::client::connect_stream(config, stream, AnyHost).await?;
    anyhow::ensure!(key_login(&mut ssh, srv).await, "key refused");
    let channel = ssh.channel_open_session().await?;
    let sftp = open_sftp(channel).await?;
    sftp.realpath(".").await?;
    Ok(())
}

async fn open_sftp(channel: Channel<Msg>) -> anyhow::Result<RawSftpSession> {
    channel.request_subsystem(true, "sftp").await?;
    let sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(5);
    sftp.init().await?;
    Ok(sftp)
}

/// What the server did with a fresh connection: sent its SSH banner (admitted) or closed it.
async fn admitted(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n > 0 && buf.starts_with(b"SSH-2.0-"),
        Ok(Err(_)) => false,
        Err(_) => panic!("the server neither greeted nor closed a connection within 10 s"),
    }
}

/// Opens `n` connections from `from` that never log in; returns those admitted (kept open).
async fn silent_connections(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut kept = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = tcp_from(from, addr).await else {
            continue;
        };
        if admitted(&mut s).await {
            kept.push(s);
        }
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_channels_take_session_slots() {
    let srv = TestServer::start().await; // max_sessions_per_tenant = 4
    let client = srv.acme().await; // one slot, its first channel
    let mut channels = Vec::new();
    let mut refused_opens = 0;
    for _ in 0..20 {
        match client.ssh.channel_open_session().await {
            Ok(c) => channels.push(c),
            Err(_) => refused_opens += 1,
        }
    }
    // One connection holds at most 10 channels (the first one is already open).
    assert_eq!(channels.len(), 9, "channels per connection are capped");
    assert_eq!(refused_opens, 11);
    let mut sessions = Vec::new();
    let mut refused = 0;
    for c in channels {
        match open_sftp(c).await {
            Ok(s) => sessions.push(s),
            Err(_) => refused += 1,
        }
    }
    // The tenant may have 4 SFTP sessions in all: the login's and three more.
    assert_eq!(sessions.len(), 3);
    assert_eq!(refused, 6);
    assert!(srv.password("acme", ACME_PASSWORD).await.is_err());
    // Another tenant is not affected; ending a session frees its slot.
    assert!(srv.password("beta", BETA_PASSWORD).await.is_ok());
    let s = sessions.pop().unwrap();
    s.close_session().unwrap();
    drop(s);
    assert!(
        eventually(5, || async {
            srv.password("acme", ACME_PASSWORD).await.is_ok()
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped_in_all_and_per_address() {
    let srv =
        TestServer::start_with("max_unauthenticated = 40\nmax_unauthenticated_per_address = 8")
            .await;
    let attacker = IpAddr::from([127, 0, 0, 1]);
    let kept = silent_connections(attacker, srv.addr(), 300).await;
    assert_eq!(
        kept.len(),
        8,
        "one address holds at most 8 connections before login"
    );
    assert_eq!(still_open(&kept), 8);
    // Other addresses still get in, and a key login from one of them works during the flood.
    acme_key_login_from(&srv, IpAddr::from([127, 0, 0, 2]))
        .await
        .unwrap();
    // Many addresses: at most 40 wait in all; newcomers from quieter addresses take the slots
    // of the busiest address's oldest connections, so the counts even out.
    let mut held = kept;
    for last in 3..13u8 {
        held.extend(silent_connections(IpAddr::from([127, 0, 0, last]), srv.addr(), 8).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        still_open(&held),
        40,
        "at most 40 connections before login in all"
    );
    // With every slot taken, a client from a fresh address still logs in.
    acme_key_login_from(&srv, IpAddr::from([127, 0, 0, 30]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(still_open(&held) <= 40);
    // Closing the flood frees the slots.
    drop(held);
    assert!(
        eventually(10, || async {
            acme_key_login_from(&srv, IpAddr::from([127, 0, 0, 20]))
                .await
                .is_ok()
        })
        .await
    );
}

/// How many of `conns` (their banner already read) the server still holds open.
fn still_open(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    conns
        .iter()
        .filter(|s| matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_do_not_extend_the_login_deadline() {
    let srv = TestServer::start_with("idle_timeout_secs = 1\nauth_timeout_secs = 2").await;
    // A client that completes the key exchange, never logs in, and sends a keep-alive (a global
    // request) every 300 ms, which resets the idle timer.
    let config = || russh::client::Config {
        keepalive_interval: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let idle = ssh(srv.addr(), config()).await;
    // A logged-in client with keep-alives stays.
    let mut ssh = ssh(srv.addr(), config()).await;
    assert!(key_login(&mut ssh, &srv).await);
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if idle.send_keepalive(false).await.is_err() {
            break;
        }
    }
    assert!(idle.is_closed(), "still not logged in 3.5 s after accept");
    assert!(!ssh.is_closed());
    let sftp = open_sftp(ssh.channel_open_session().await.unwrap())
        .await
        .unwrap();
    assert!(sftp.realpath(".").await.is_ok());
}

/// Waits for the server's answer to a channel request.
async fn reply(channel: &mut Channel<Msg>) -> Option<ChannelMsg> {
    let wait = async {
        loop {
            match channel.wait().await {
                Some(m @ (ChannelMsg::Success | ChannelMsg::Failure)) => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("no answer to a channel request that wants one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_requests_that_want_a_reply_get_one() {
    let srv = TestServer::start().await;
    let client = srv.acme().await;
    let mut channel = client.ssh.channel_open_session().await.unwrap();
    channel
        .request_x11(true, false, "MIT-MAGIC-COOKIE-1", "00ff", 0)
        .await
        .unwrap();
    assert!(matches!(
        reply(&mut channel).await,
        Some(ChannelMsg::Failure)
    ));
    channel.set_env(true, "LANG", "C.UTF-8").await.unwrap();
    assert!(matches!(
        reply(&mut channel).await,
        Some(ChannelMsg::Failure)
    ));
    channel.agent_forward(true).await.unwrap();
    assert!(matches!(
        reply(&mut channel).await,
        Some(ChannelMsg::Failure)
    ));
    // The channel still serves SFTP afterwards.
    let sftp = open_sftp(channel).await.unwrap();
    assert!(sftp.realpath(".").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_closes_withdrawn_logins() {
    let srv = TestServer::start().await;
    let base = std::fs::read_to_string(&srv.config_path).unwrap();
    let beta = srv.password("beta", BETA_PASSWORD).await.unwrap();
    let acme_by_key = srv.acme().await;
    let acme_by_password = srv.password("acme", ACME_PASSWORD).await.unwrap();

    // beta is removed; acme's key is withdrawn but its password stays.
    let cut = base.find("[[tenants]]\nid = \"beta\"").unwrap();
    let key_line = format!(
        "authorized_keys = [\"{}\"]",
        srv.acme_key.public_key().to_openssh().unwrap()
    );
    let reloaded = base[..cut].replace(&key_line, "authorized_keys = []");
    assert_ne!(reloaded, base[..cut]);
    std::fs::write(&srv.config_path, reloaded).unwrap();

    assert!(eventually(10, || async { beta.ssh.is_closed() }).await);
    assert!(eventually(10, || async { acme_by_key.ssh.is_closed() }).await);
    assert!(beta.sftp.realpath(".").await.is_err());
    assert!(acme_by_key.sftp.realpath(".").await.is_err());
    assert!(!acme_by_password.ssh.is_closed());
    assert!(acme_by_password.sftp.realpath(".").await.is_ok());
    acme_by_password.put("still.txt", b"ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_password_offered() {
    let srv = TestServer::start().await; // max_auth_failures = 5
    let mut ssh = ssh(srv.addr(), russh::client::Config::default()).await;
    for attempt in 1..=2 {
        match ssh.authenticate_password("acme", "wrong").await.unwrap() {
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => assert!(
                remaining_methods.contains(&MethodKind::Password),
                "attempt {attempt}: password no longer offered: {remaining_methods:?}"
            ),
            russh::client::AuthResult::Success => panic!("a wrong password was accepted"),
        }
    }
    // The same connection may still log in with the right password.
    assert!(ssh
        .authenticate_password("acme", ACME_PASSWORD)
        .await
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_as_one_tenant_keeps_failures_against_another() {
    let srv = TestServer::start().await; // max_auth_failures = 5
    for _ in 0..4 {
        assert!(srv.password("beta", "guess").await.is_err());
    }
    // acme's login must not wipe the 4 failures against beta from this address ...
    assert!(srv.password("acme", ACME_PASSWORD).await.is_ok());
    assert!(srv.password("beta", "guess").await.is_err());
    // ... so the fifth blocks the address, for every tenant.
    assert!(srv.password("acme", ACME_PASSWORD).await.is_err());
}

/// A `roster serve` child process, killed when dropped.
struct ServeProcess(std::process::Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /health` with the admin token; true on a 200 answer within 10 s.
async fn health_answers(admin: SocketAddr) -> bool {
    use tokio::io::AsyncWriteExt;
    let ask = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        let req = "GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer limits-test-token-7c2e9a4f1b6d0e8a3c5f\r\nConnection: close\r\n\r\n";
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), ask).await,
        Ok(Some(true))
    )
}

/// Starts the real binary with RLIMIT_NOFILE soft 200 / hard 400: the server raises the soft
/// limit to 400; its descriptor budget is 400 / 4 = 100, half of it (50) for connections.
fn serve_with_few_descriptors(dir: &std::path::Path, sftp: u16, admin: u16) -> ServeProcess {
    use std::os::unix::process::CommandExt;
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let admin_table =
        format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"limits-test-token-7c2e9a4f1b6d0e8a3c5f\"\n\n");
    let text = config_text(dir, key.public_key(), "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{sftp}"))
        .replace(
            "max_auth_failures = 5",
            "max_auth_failures = 5\nmax_unauthenticated = 5000\nmax_unauthenticated_per_address = 5000",
        )
        .replacen("[[tenants]]", &format!("{admin_table}[[tenants]]"), 1);
    let config = dir.join("roster.toml");
    std::fs::write(&config, text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["serve", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 400,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ServeProcess(cmd.spawn().unwrap())
}

/// A running [`serve_with_few_descriptors`] process: its folder, the process, and the SFTP and
/// admin addresses, once `/health` answers.
async fn started_with_few_descriptors() -> (tempfile::TempDir, ServeProcess, SocketAddr, SocketAddr)
{
    let dir = tempfile::tempdir().unwrap();
    let (sftp_port, admin_port) = (free_port(), free_port());
    let server = serve_with_few_descriptors(dir.path(), sftp_port, admin_port);
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let sftp: SocketAddr = ([127, 0, 0, 1], sftp_port).into();
    assert!(
        eventually(30, || health_answers(admin)).await,
        "server did not start"
    );
    (dir, server, sftp, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_budget_new_connections_are_refused_at_once() {
    let (_dir, _server, sftp, admin) = started_with_few_descriptors().await;
    // 300 connections that never log in, from one address: 50 are served, every other one
    // is closed at once (`admitted` fails the test when one is left waiting).
    let kept = silent_connections(IpAddr::from([127, 0, 0, 1]), sftp, 300).await;
    assert_eq!(
        kept.len(),
        50,
        "connections allowed under a 400-descriptor limit"
    );
    assert!(
        health_answers(admin).await,
        "/health must answer at the budget"
    );
    drop(kept);
    assert!(
        eventually(10, || async {
            let Ok(mut s) = tcp_from(IpAddr::from([127, 0, 0, 1]), sftp).await else {
                return false;
            };
            admitted(&mut s).await
        })
        .await
    );
}

/// OpenSSH's `sftp` types a wrong password, then the right one: it only asks again when the
/// server still offers `password` after the first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_asks_again_after_a_wrong_password() {
    use std::os::unix::fs::PermissionsExt;
    let srv = TestServer::start().await;
    let work = srv.dir.path();
    let askpass = work.join("askpass.sh");
    let count = work.join("askpass.count");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\necho x >> '{c}'\nif [ $(wc -l < '{c}') -eq 1 ]; then echo wrong; else echo '{p}'; fi\n",
            c = count.display(),
            p = ACME_PASSWORD
        ),
    )
    .unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = tokio::process::Command::new("sftp");
    cmd.args([
        "-P",
        &srv.addr().port().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "NumberOfPasswordPrompts=3",
        "acme@127.0.0.1",
    ])
    .env("SSH_ASKPASS", &askpass)
    .env("SSH_ASKPASS_REQUIRE", "force")
    .env("DISPLAY", ":0")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(b"pwd\nbye\n").await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("sftp did not finish in 30 s")
        .unwrap();
    let asked = std::fs::read_to_string(&count)
        .unwrap_or_default()
        .lines()
        .count();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        asked,
        2,
        "sftp asked {asked} times; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "stdout: {stdout}");
    assert!(stdout.contains("Remote working directory: /"), "{stdout}");
}

/// Opens files `prefix0`, `prefix1`, ... until the server refuses one (at most `limit`); returns
/// how many opened and the refusal.
async fn open_until_refused(
    client: &support::sftp::Client,
    prefix: &str,
    limit: usize,
) -> (usize, Option<String>) {
    use russh_sftp::protocol::OpenFlags;
    for i in 0..limit {
        let path = format!("/{prefix}{i}.bin");
        if let Err(e) = client
            .open(&path, OpenFlags::CREATE | OpenFlags::WRITE)
            .await
        {
            return (i, Some(e.to_string()));
        }
    }
    (limit, None)
}

/// Open SFTP handles share the descriptor budget with connections: under a 400-descriptor limit
/// (budget 100, half for handles) two tenants together get 50 handles, far below their own caps
/// (1024 a session, 4096 a tenant), and the refusal says the server is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_handles_over_all_tenants_stay_within_the_descriptor_budget() {
    use support::sftp::{Client, Login};
    let (_dir, _server, sftp, admin) = started_with_few_descriptors().await;
    let acme = Client::connect(sftp, "acme", Login::Password(ACME_PASSWORD.into()))
        .await
        .unwrap();
    let beta = Client::connect(sftp, "beta", Login::Password(BETA_PASSWORD.into()))
        .await
        .unwrap();
    let (a, _) = open_until_refused(&acme, "a", 30).await;
    let (b, refusal) = open_until_refused(&beta, "b", 200).await;
    assert_eq!(a, 30, "acme's first 30 handles fit");
    assert_eq!(a + b, 50, "handles over all tenants: half of the budget");
    let refusal = refusal.unwrap_or_default();
    assert!(
        refusal.contains("too many open files right now"),
        "{refusal}"
    );
    assert!(health_answers(admin).await, "/health must answer");
}
