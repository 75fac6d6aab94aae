//! Parity with OpenSSH's sftp-server: a backslash is part of a name, `copy-data` (OpenSSH 9's
//! `cp`) works inside the jail and its limits, and in `roster sftp-server` mode `ln`/`ln -s`
//! work inside `--root` while tenant jails keep refusing them. The tenant side is driven by the
//! russh-sftp client over a real socket; `roster sftp-server` by OpenSSH's own `sftp` client
//! (`sftp -D`, which runs the server as a child on its stdin/stdout).

mod support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, Packet, StatusCode};
use std::path::Path;
use support::sftp::TestServer;

fn code(r: Result<impl std::fmt::Debug, SftpError>) -> StatusCode {
    match r {
        Err(SftpError::Status(s)) => s.status_code,
        other => panic!("expected an SFTP status error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backslash_is_part_of_a_file_name() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    std::fs::create_dir_all(srv.home("acme")).unwrap();
    std::fs::write(srv.home("acme").join("a\\b.txt"), b"made by someone else").unwrap();
    let h = c.sftp.opendir("/").await.unwrap().handle;
    let names: Vec<String> = c
        .sftp
        .readdir(&h)
        .await
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.filename)
        .collect();
    assert!(names.iter().any(|n| n == "a\\b.txt"), "{names:?}");
    assert_eq!(c.get("/a\\b.txt").await.unwrap(), b"made by someone else");
    assert_eq!(c.sftp.stat("a\\b.txt").await.unwrap().attrs.size, Some(20));

    c.put("x\\y.csv", b"email\n").await.unwrap();
    assert_eq!(
        std::fs::read(srv.home("acme").join("x\\y.csv")).unwrap(),
        b"email\n"
    );
    assert!(!srv.home("acme").join("x").exists());
    assert_eq!(srv.event(5).await.path, "/x\\y.csv");
    // `..` written with backslashes is a name, not a way up.
    assert_eq!(
        c.sftp.realpath("a\\..\\..").await.unwrap().files[0].filename,
        "/a\\..\\.."
    );
}

/// A `copy-data` request body.
fn copy_body(from: &str, at: u64, len: u64, to: &str, to_at: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(from.len() as u32).to_be_bytes());
    b.extend_from_slice(from.as_bytes());
    b.extend_from_slice(&at.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&(to.len() as u32).to_be_bytes());
    b.extend_from_slice(to.as_bytes());
    b.extend_from_slice(&to_at.to_be_bytes());
    b
}

fn status_of(r: Result<Packet, SftpError>) -> StatusCode {
    match r {
        Ok(Packet::Status(s)) => s.status_code,
        Err(SftpError::Status(s)) => s.status_code,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_copies_between_handles_in_the_jail() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 249) as u8).collect();
    c.put("/sub.tmp", &data).await.unwrap();
    let src = c.open("/sub.tmp", OpenFlags::READ).await.unwrap();
    let dst = c
        .open(
            "/users.csv",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        )
        .await
        .unwrap();
    let whole = c
        .sftp
        .extended("copy-data", copy_body(&src, 0, 0, &dst, 0))
        .await;
    assert_eq!(status_of(whole), StatusCode::Ok);
    // A part of it, at an offset, into the same target.
    let part = c
        .sftp
        .extended("copy-data", copy_body(&src, 10, 100, &dst, 700_000))
        .await;
    assert_eq!(status_of(part), StatusCode::Ok);
    // The source was opened for reading only: it is not a target.
    let backwards = c
        .sftp
        .extended("copy-data", copy_body(&dst, 0, 0, &src, 0))
        .await;
    assert_eq!(status_of(backwards), StatusCode::PermissionDenied);
    c.sftp.close(&dst).await.unwrap();
    c.sftp.close(&src).await.unwrap();
    let mut want = data.clone();
    want.extend_from_slice(&data[10..110]);
    assert_eq!(
        std::fs::read(srv.home("acme").join("users.csv")).unwrap(),
        want
    );
    let ev = srv.event(5).await;
    assert_eq!((ev.path.as_str(), ev.size), ("/users.csv", 700_100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_jails_refuse_links() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    c.put("/f.csv", b"x").await.unwrap();
    assert_eq!(
        code(c.sftp.symlink("/f.csv", "/l.csv").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.hardlink("/f.csv", "/h.csv").await),
        StatusCode::OpUnsupported
    );
    assert_eq!(
        code(c.sftp.readlink("/f.csv").await),
        StatusCode::OpUnsupported
    );
    assert!(!srv.home("acme").join("l.csv").exists());
    assert!(!srv.home("acme").join("h.csv").exists());
}

/// Runs OpenSSH's `sftp -b` against `roster sftp-server --root ROOT`; returns its exit success
/// and its output.
fn openssh_sftp(root: &Path, batch: &str) -> (bool, String) {
    let batch_file = root.parent().unwrap().join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    let server = format!(
        "{} sftp-server --root {}",
        env!("CARGO_BIN_EXE_roster"),
        root.display()
    );
    let out = std::process::Command::new("sftp")
        .arg("-b")
        .arg(&batch_file)
        .arg("-D")
        .arg(server)
        .output()
        .expect("OpenSSH's sftp client must be installed (openssh-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssh_sftp_cp_ln_and_backslashes_against_sftp_server_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("a\\b.csv"), b"backslash").unwrap();
    std::fs::write(root.join("src.csv"), b"source").unwrap();
    std::fs::write(dir.path().join("outside.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("planted")).unwrap();
    let got = dir.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let batch = format!(
        "get \"a\\\\b.csv\" {got}/b.csv\n\
         cp src.csv copy.csv\n\
         ln -s src.csv soft.csv\n\
         ln src.csv hard.csv\n\
         ln -s /src.csv d/abs.csv\n\
         get soft.csv {got}/soft.csv\n\
         get d/abs.csv {got}/abs.csv\n\
         -ln -s ../outside.txt evil.txt\n\
         -ln -s /../../outside.txt evil2.txt\n\
         -get planted/passwd {got}/passwd\n",
        got = got.display()
    );
    let (ok, out) = openssh_sftp(&root, &batch);
    assert!(ok, "sftp failed:\n{out}");
    assert_eq!(std::fs::read(got.join("b.csv")).unwrap(), b"backslash");
    assert_eq!(std::fs::read(root.join("copy.csv")).unwrap(), b"source");
    // OpenSSH's argument order: `ln -s TARGET LINK`.
    assert_eq!(
        std::fs::read_link(root.join("soft.csv")).unwrap(),
        Path::new("src.csv")
    );
    assert_eq!(std::fs::read(got.join("soft.csv")).unwrap(), b"source");
    // An absolute target is stored relative to the link's folder: it stays inside the root.
    assert_eq!(
        std::fs::read_link(root.join("d/abs.csv")).unwrap(),
        Path::new("../src.csv")
    );
    assert_eq!(std::fs::read(got.join("abs.csv")).unwrap(), b"source");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(root.join("hard.csv")).unwrap().nlink(), 2);
    // Targets above the root are refused; a planted link resolves inside the root only.
    assert!(
        std::fs::symlink_metadata(root.join("evil.txt")).is_err(),
        "{out}"
    );
    assert!(
        std::fs::symlink_metadata(root.join("evil2.txt")).is_err(),
        "{out}"
    );
    assert!(!got.join("passwd").exists(), "{out}");
}
