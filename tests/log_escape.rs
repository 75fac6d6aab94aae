//! Log lines cannot be forged: the real `roster serve` binary, a real SFTP upload whose file
//! name carries a line break, a fake log line and ANSI escapes; the log (human and JSON) keeps
//! the name on its own line, escaped, with no raw ESC.

mod support;

use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::sftp::{eventually, Client, Login};

const FAKE: &str = "2026-11-29T05:00:00.000000Z ERROR roster::intake: tenant beta lost every user";
/// ANSI red, once as ESC [ and once as the one-character C1 CSI.
const RED: &str = "\x1b[31m\u{9b}0m";

struct Server {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    key: PrivateKey,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Starts the binary with `--log-format <format>`; waits until SFTP listens.
async fn start(format: &str) -> (Server, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let config = dir.path().join("roster.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nhost_keys = \"{d}/hk\"\ndata_dir = \"{d}/data\"\nsettle_ms = 100\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"log-test-token-91ac5e2f7b0d3c8a6e4f1b9d\"\n\n[[tenants]]\nid = \"acme\"\nauthorized_keys = [\"{k}\"]\n[tenants.import]\nfile = \"users.csv\"\n",
            d = dir.path().display(),
            k = key.public_key().to_openssh().unwrap(),
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "-c",
            config.to_str().unwrap(),
            "--log-format",
            format,
            "serve",
        ])
        .env("ROSTER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        log,
        _dir: dir,
        key,
    };
    let listening = eventually(60, || {
        let text = log_text(&server.log);
        async move { text.contains("SFTP listening") }
    })
    .await;
    assert!(listening, "no start: {}", log_text(&server.log));
    let text = log_text(&server.log);
    let line = text.lines().find(|l| l.contains("SFTP listening")).unwrap();
    let at = line.find("127.0.0.1:").unwrap();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (server, addr.parse().unwrap())
}

/// Uploads a file whose name forges a log line; returns the log once the upload is logged.
async fn forge(format: &str) -> String {
    let (server, addr) = start(format).await;
    let c = Client::connect(addr, "acme", Login::Key(Box::new(server.key.clone())))
        .await
        .unwrap();
    let name = format!("evil.csv\n{FAKE}{RED}.csv");
    c.put(&name, b"email\n").await.unwrap();
    let logged = eventually(30, || {
        let text = log_text(&server.log);
        async move { text.contains("upload finished") }
    })
    .await;
    assert!(
        logged,
        "the upload was not logged: {}",
        log_text(&server.log)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    log_text(&server.log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_cannot_forge_a_human_log_line() {
    let log = forge("human").await;
    assert!(
        !log.contains(['\x1b', '\u{9b}']),
        "a raw ESC/CSI reached the log:\n{log}"
    );
    for line in log.lines() {
        assert!(!line.starts_with(FAKE), "forged line:\n{log}");
        assert!(
            line.starts_with("20") && line.contains('Z'),
            "a line that is not an event: {line:?}\n{log}"
        );
    }
    let upload = log.lines().find(|l| l.contains("upload finished")).unwrap();
    assert!(
        upload.contains(&format!("evil.csv\\n{FAKE}\\u{{1b}}[31m\\u{{9b}}0m.csv")),
        "the name is shown escaped: {upload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_cannot_forge_a_json_log_line() {
    let log = forge("json").await;
    assert!(
        !log.contains(['\x1b', '\u{9b}']),
        "a raw ESC/CSI reached the log:\n{log}"
    );
    let mut seen = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if v["fields"]["message"] == "upload finished" {
            let path = v["fields"]["path"].as_str().unwrap_or("");
            assert_eq!(path, format!("/evil.csv\n{FAKE}{RED}.csv"), "{line}");
            seen = true;
        }
    }
    assert!(seen, "no upload line:\n{log}");
}
