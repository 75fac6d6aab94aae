//! The CLI's HTTP client and output against real sockets (review s30): a proxy in the
//! environment never sees the admin token; a server that stops answering ends a command with a
//! sentence instead of holding it, and so does an answer past 256 MiB; a closed connection and
//! an unknown host are not reported as "not running"; a change this CLI cannot read ends
//! `changes --follow` (it asked for the same page forever) while `--json` prints what the
//! server sent; and ESC, DEL, C1 controls and a bidi override in a tenant's data leave
//! `--json` and `--csv` escaped.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::Env;
use roster::model::User;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_roster");

/// Runs the CLI with the proxy variables of the environment removed, then `env` set.
async fn roster(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("-c").arg(config).args(args).env("TZ", "UTC");
    for var in [
        "ROSTER_ADMIN_URL",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(150), cmd.output())
        .await
        .expect("the command ended in time")
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A CLI config whose admin address is `listen` (no server needed to write it).
fn config_for(dir: &Path, listen: &str) -> PathBuf {
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let cfg = dir.join("roster.toml");
    std::fs::write(&cfg, admin_support::config_text(dir, &key, listen)).unwrap();
    cfg
}

/// What a fake listener does with each connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Reads the request and never answers.
    Frozen,
    /// Closes the connection with a reset as soon as it is accepted.
    Reset,
    /// Answers 200 with this JSON body.
    Json(&'static str),
    /// Answers 200 announcing 300 MiB and sends zeros until the reader goes away.
    Huge,
}

/// A listener on a loopback port acting as `what`; returns its address and the number of
/// connections it accepted.
async fn fake(what: Fake) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                match what {
                    Fake::Reset => {
                        let _ = conn.set_zero_linger();
                        drop(conn);
                    }
                    Fake::Frozen => {
                        let mut buf = [0u8; 4096];
                        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                    Fake::Huge => {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf).await;
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                    Content-Length: 314572800\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                        let chunk = vec![b'0'; 1 << 20];
                        while conn.write_all(&chunk).await.is_ok() {}
                    }
                    Fake::Json(body) => {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    (addr, hits)
}

/// Finding 2: the admin token went to HTTP_PROXY / ALL_PROXY, even for 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_never_sees_the_admin_token() {
    let env = Env::start().await;
    let cfg = env.cli_config();
    let (proxy, seen) = fake(Fake::Frozen).await;
    let proxy = format!("http://{proxy}");
    let vars: Vec<(&str, &str)> = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .into_iter()
        .map(|k| (k, proxy.as_str()))
        .collect();
    let o = roster(&cfg, &["history", "acme", "--json"], &vars).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let records: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(records.is_array(), "the real server answered: {records}");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy was asked");
}

/// Finding 4 (and 7): a server that accepts and never answers ends a GET with a sentence
/// after the read timeout (60 s) instead of holding the command forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_ends_a_get_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = fake(Fake::Frozen).await;
    let cfg = config_for(dir.path(), &addr);
    let started = std::time::Instant::now();
    let o = roster(&cfg, &["today", "acme"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("did not answer within 60 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// Finding 4: an answer was read whatever its size (`limit(u64::MAX)`); past 256 MiB the
/// command now stops with a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_256_mib_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = fake(Fake::Huge).await;
    let cfg = config_for(dir.path(), &addr);
    let o = roster(&cfg, &["today", "acme"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("sent an answer larger than 256 MiB"), "{err}");
}

/// Finding 7: only a refused connection is "not running".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_and_an_unknown_host_are_not_called_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = fake(Fake::Reset).await;
    let cfg = config_for(dir.path(), &addr);
    let o = roster(&cfg, &["today", "acme"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("closed the connection (busy?)"), "{err}");
    assert!(!err.contains("not running"), "{err}");

    let url = "http://no-such-host.invalid:8022";
    let o = roster(&cfg, &["today", "acme", "--admin-url", url], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot resolve no-such-host.invalid"), "{err}");
    assert!(!err.contains("not running"), "{err}");
}

/// Finding 5: an entry this CLI cannot decode ended nothing (`--follow` asked for the same
/// page forever); `--json` dropped fields it did not know. Now the text form ends with a
/// sentence, `--follow` included, and `--json` prints the entry as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_this_cli_cannot_read_ends_the_command_and_json_keeps_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = fake(Fake::Json(
        r#"{"changes":[{"seq":1,"future_field":"x\u009b2J"}],"next":1}"#,
    ))
    .await;
    let cfg = config_for(dir.path(), &addr);
    for args in [vec!["changes", "acme"], vec!["changes", "acme", "--follow"]] {
        let o = roster(&cfg, &args, &[]).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("the server sent a change this roster version cannot read (seq 1"),
            "{err}"
        );
    }
    let o = roster(&cfg, &["changes", "acme", "--json"], &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(text.contains(r#""future_field":"x\u009b2J""#), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let entry: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        entry,
        serde_json::json!({"seq": 1, "future_field": "x\u{9b}2J"})
    );
}

/// Finding 3: DEL, C1 (U+009B is CSI) and U+202E left `--json` raw, ESC left `--csv` raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_output_escape_every_terminal_control() {
    const NAME: &str = "Ana\u{1b}[31m\u{7f}\u{9b}2J\u{202e}x";
    let env = Env::start().await;
    let cfg = env.cli_config();
    let csv = format!("email,first_name,last_name\nu0@acme.example,\"{NAME}\",Horvat\n");
    let r = env.import("acme", &csv).await;
    assert_eq!(r.counts.inserted, 1, "{:?}", r.messages);
    let unsafe_char =
        |c: char| c.is_control() && c != '\n' || ('\u{202a}'..='\u{202e}').contains(&c);
    let run = |args: &'static [&'static str]| {
        let cfg = cfg.clone();
        async move {
            let o = roster(&cfg, args, &[]).await;
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            String::from_utf8(o.stdout).unwrap()
        }
    };
    for args in [
        &["users", "acme", "--json"][..],
        &["history", "acme", "--json"][..],
        &["changes", "acme", "--json"][..],
        &["users", "acme", "--csv"][..],
    ] {
        let text = run(args).await;
        assert!(!text.chars().any(unsafe_char), "{args:?}: {text:?}");
        if args.contains(&"--csv") {
            assert!(
                text.contains("Ana\\u{1b}[31m\\u{7f}\\u{9b}2J\\u{202e}x"),
                "{text}"
            );
        } else if args[0] == "users" {
            assert!(
                text.contains(r"Ana\u001b[31m\u007f\u009b2J\u202ex"),
                "{text}"
            );
        }
    }
    let users: Vec<User> = serde_json::from_str(&run(&["users", "acme", "--json"]).await).unwrap();
    assert_eq!(
        users[0].first_name.as_deref(),
        Some(NAME),
        "the value is kept"
    );
}
