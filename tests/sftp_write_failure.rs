//! An upload whose WRITE fails is never imported (review s14, F1): the disk fills, or the file
//! grows past what the server may store, the client is told and sends CLOSE, and that CLOSE
//! must not count as a finished upload. The file stays, unfinished, for a resume to complete.
//!
//! The failure is real: `roster serve` runs with a file size limit (`RLIMIT_FSIZE`, 4 MiB, the
//! signal it raises ignored), so a write past 4 MiB fails with `EFBIG`, as one fails with
//! `ENOSPC` on a full disk. The store and the logs stay far below the limit (the files imported
//! here are a few rows); only the uploads pass it. OpenSSH's `sftp` uploads as a nightly job
//! would; the russh-sftp client reads the server's sentences, which `sftp` does not show.

mod support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::process::{free_port, wait_until};
use support::sftp::{Client, Login};

const TOKEN: &str = "write-failure-token-5d1f0a77c3e9b2d4a6f8";
/// The server's file size limit.
const LIMIT: u64 = 4 << 20;

/// A `roster serve` child under `RLIMIT_FSIZE` (killed when dropped).
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    sftp: u16,
    admin: u16,
    key: russh::keys::PrivateKey,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, sftp: u16, admin: u16, key: &russh::keys::PublicKey) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{sftp}"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100
max_upload_bytes = 100000000

[admin]
listen = "127.0.0.1:{admin}"
token = "{TOKEN}"

[[tenants]]
id = "big"
authorized_keys = ["{key}"]
[tenants.import]
file = "users*.csv"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"
"#,
        dir = dir.display(),
        key = key.to_openssh().unwrap(),
    )
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key =
            russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
                .unwrap();
        let (sftp, admin) = (free_port(), free_port());
        let path = dir.path().join("roster.toml");
        let text = config(dir.path(), sftp, admin, key.public_key());
        std::fs::write(&path, text).unwrap();
        std::fs::create_dir_all(dir.path().join("data/tenants/big")).unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.args(["serve", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let server = Server {
            dir,
            child,
            sftp,
            admin,
            key,
        };
        let started = wait_until(Duration::from_secs(30), || server.imports().is_some());
        assert!(started, "the server did not start\n{}", server.logs());
        server
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("data/tenants/big")
    }

    /// The tenant's import runs through the admin API (file name, bytes); None until it answers.
    fn imports(&self) -> Option<Vec<(String, u64)>> {
        let url = format!("http://127.0.0.1:{}/api/tenants/big/imports", self.admin);
        let mut r = ureq::get(url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .ok()?;
        let body = r.body_mut().read_to_string().ok()?;
        let runs: serde_json::Value = serde_json::from_str(&body).ok()?;
        let run = |r: &serde_json::Value| {
            let file = r["file"].as_str().unwrap_or_default().to_string();
            (file, r["bytes"].as_u64().unwrap_or(0))
        };
        Some(runs.as_array()?.iter().map(run).collect())
    }

    /// Runs OpenSSH's `sftp -b -` with `batch` as tenant `big`; (success, stderr).
    fn openssh(&self, batch: &str) -> (bool, String) {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let key_file = self.dir.path().join("id_big");
        if !key_file.exists() {
            let text = self.key.to_openssh(russh::keys::ssh_key::LineEnding::LF);
            std::fs::write(&key_file, text.unwrap().as_bytes()).unwrap();
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&key_file, private).unwrap();
        }
        let mut child = Command::new("sftp")
            .args(["-b", "-", "-P", &self.sftp.to_string(), "-i"])
            .arg(&key_file)
            .args(["-o", "StrictHostKeyChecking=no", "-o"])
            .args(["UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .arg("big@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(batch.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stderr)
    }

    async fn client(&self) -> Client {
        let addr = ([127, 0, 0, 1], self.sftp).into();
        let login = Login::Key(Box::new(self.key.clone()));
        Client::connect(addr, "big", login).await.unwrap()
    }

    /// The in-progress markers of tenant `big`.
    fn markers(&self) -> usize {
        let dir = self.dir.path().join("data/uploading/big");
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }
}

/// A users file of `rows` rows, each padded with an unmapped `notes` cell of `pad` bytes, so
/// the file is large while its import stays small.
fn users(rows: usize, pad: usize) -> Vec<u8> {
    let notes = "n".repeat(pad);
    let mut s = String::from("email,first,last,notes\n");
    for i in 0..rows {
        s.push_str(&format!("u{i}@big.example,First{i},Last{i},{notes}\n"));
    }
    s.into_bytes()
}

fn message<T: std::fmt::Debug>(r: Result<T, SftpError>) -> (StatusCode, String) {
    match r {
        Err(SftpError::Status(s)) => (s.status_code, s.error_message),
        other => panic!("expected an SFTP status error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_write_failed_is_not_imported() {
    let server = Server::start();
    let big = users(2_000, 3_000);
    assert!(big.len() as u64 > LIMIT + (1 << 20));
    let local = server.dir.path().join("day2.csv");
    std::fs::write(&local, &big).unwrap();

    // The nightly job: OpenSSH's sftp puts the file; a write fails, sftp says so, sends CLOSE
    // and exits 1.
    let put = format!("put {} users.csv\n", local.display());
    let (ok, stderr) = server.openssh(&put);
    assert!(!ok, "the put succeeded: {stderr}");
    assert!(stderr.contains("write remote"), "{stderr}");
    let kept = std::fs::metadata(server.home().join("users.csv")).unwrap();
    assert!(kept.len() <= LIMIT, "{} bytes", kept.len());
    assert_eq!(
        server.markers(),
        1,
        "the half-written file is marked unfinished"
    );

    // The same through a client that shows the server's sentences: WRITE, then CLOSE.
    let c = server.client().await;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = c.open("users-b.csv", flags).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut failed = None;
    for i in 0..6u64 {
        if let Err(e) = c.sftp.write(&h, i << 20, chunk.clone()).await {
            failed = Some(message::<()>(Err(e)));
            break;
        }
    }
    let sentence = "The upload of /users-b.csv failed (the file is larger than the server can \
                    store); it will not be imported; upload it again";
    assert_eq!(
        failed,
        Some((StatusCode::Failure, sentence.to_string())),
        "the write past the limit"
    );
    let retry = c.sftp.write(&h, 0, b"email\n".to_vec()).await;
    assert_eq!(message(retry).1, sentence, "a later write on the handle");
    assert_eq!(message(c.sftp.close(&h).await).1, sentence, "the CLOSE");
    assert!(
        server.home().join("users-b.csv").exists(),
        "kept for a resume"
    );
    assert_eq!(server.markers(), 2);

    // Long after the settle time nothing was imported, and the log says no upload finished.
    let imported = wait_until(Duration::from_secs(3), || {
        server.imports().is_some_and(|runs| !runs.is_empty())
    });
    assert!(!imported, "{:?}\n{}", server.imports(), server.logs());
    // A whole upload afterwards is imported, and it is the only run.
    let small = users(3, 10);
    let local_small = server.dir.path().join("small.csv");
    std::fs::write(&local_small, &small).unwrap();
    let (ok, stderr) = server.openssh(&format!("put {} users-c.csv\n", local_small.display()));
    assert!(ok, "{stderr}");
    let mut runs = None;
    wait_until(Duration::from_secs(30), || {
        runs = server.imports().filter(|r| !r.is_empty());
        runs.is_some()
    });
    let want = vec![("users-c.csv".to_string(), small.len() as u64)];
    assert_eq!(runs, Some(want), "{}", server.logs());
    let logs = server.logs();
    assert!(!logs.contains("path=/users.csv size"), "{logs}");
    assert!(logs.contains("a write failed"), "{logs}");
}
