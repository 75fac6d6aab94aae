//! Nothing Roster writes under `data_dir` is readable by other local accounts (review s30, F2):
//! the real `roster serve` binary, started under the usual umask 022, takes a real SFTP upload
//! that is imported with a failure report; the upload left in the home, the processed/ copy,
//! the report, the store's files and every folder have no bits for group or others.

mod support;

use russh::keys::PrivateKey;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::sftp::{eventually, Client, Login};

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
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

/// Starts the binary under umask 022 (as a shell would); waits until SFTP listens.
async fn start() -> (Server, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let config = dir.path().join("roster.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nhost_keys = \"{d}/hk\"\ndata_dir = \"{d}/data\"\nsettle_ms = 100\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"privacy-test-token-5d1e9a7c3b2f8e40a6c1\"\n\n[[tenants]]\nid = \"acme\"\nauthorized_keys = [\"{k}\"]\n[tenants.import]\nfile = \"users.csv\"\n",
            d = dir.path().display(),
            k = key.public_key().to_openssh().unwrap(),
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["-c", config.to_str().unwrap(), "serve"])
        .env("ROSTER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: umask in the forked child before exec; async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::umask(0o022);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let server = Server {
        child,
        dir,
        log,
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

/// Every file and folder under `root` (itself included) with its mode; links are not followed.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                todo.push(e.path());
            }
        }
        if !m.file_type().is_symlink() {
            out.push((p, m.permissions().mode() & 0o777));
        }
    }
    out
}

fn names_under(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_archives_reports_and_the_store_are_private_to_the_server_account() {
    let (server, addr) = start().await;
    let c = Client::connect(addr, "acme", Login::Key(Box::new(server.key.clone())))
        .await
        .unwrap();
    c.put("notes.txt", b"initial passwords: Sup3rSecret!\n")
        .await
        .unwrap();
    c.put(
        "users.csv",
        b"email,first_name,last_name\na@b.example,A,B\nnot-an-address,C,D\n",
    )
    .await
    .unwrap();
    let home = server.dir.path().join("data/tenants/acme");
    let filed = eventually(60, || {
        let processed = names_under(&home.join("processed"));
        let errors = names_under(&home.join("errors"));
        async move {
            processed.iter().any(|n| n.starts_with("users."))
                && errors.iter().any(|n| n.ends_with(".report.csv"))
        }
    })
    .await;
    assert!(
        filed,
        "the run was not filed: {:?} {}",
        modes(&home),
        log_text(&server.log)
    );
    let data = server.dir.path().join("data");
    let all = modes(&data);
    assert!(all.iter().any(|(p, _)| p.ends_with("notes.txt")));
    assert!(
        all.iter().any(|(p, _)| p.starts_with(data.join("store"))),
        "{all:?}"
    );
    let open: Vec<_> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "open to group or others: {open:?}");
}
