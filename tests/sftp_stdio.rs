//! `roster sftp-server --root DIR [--read-only]`: the same handler and jail on stdin/stdout, as
//! OpenSSH runs a `Subsystem sftp`. A real child process is driven by the russh-sftp client.

use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use std::process::Stdio;

async fn spawn(root: &std::path::Path, read_only: bool) -> (tokio::process::Child, RawSftpSession) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.arg("sftp-server").arg("--root").arg(root);
    if read_only {
        cmd.arg("--read-only");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let sftp = RawSftpSession::new(tokio::io::join(stdout, stdin));
    sftp.set_timeout(10);
    sftp.init().await.unwrap();
    (child, sftp)
}

fn status(r: Result<impl std::fmt::Debug, russh_sftp::client::error::Error>) -> StatusCode {
    match r {
        Err(russh_sftp::client::error::Error::Status(s)) => s.status_code,
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_sftp_on_stdio_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(dir.path().join("outside.txt"), b"secret").unwrap();
    let (mut child, sftp) = spawn(&root, false).await;

    let h = sftp
        .open(
            "users.csv",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            FileAttributes::default(),
        )
        .await
        .unwrap()
        .handle;
    sftp.write(&h, 0, b"email\n".to_vec()).await.unwrap();
    sftp.close(&h).await.unwrap();
    assert_eq!(std::fs::read(root.join("users.csv")).unwrap(), b"email\n");
    assert_eq!(sftp.realpath("..").await.unwrap().files[0].filename, "/");
    assert_eq!(
        status(sftp.stat("../outside.txt").await),
        StatusCode::NoSuchFile
    );
    // Links work inside the root in this mode (tests/sftp_parity.rs), but a target above the
    // root is refused. OpenSSH's order: the target first, then the new link.
    assert_eq!(
        status(sftp.symlink("../outside.txt", "/l").await),
        StatusCode::PermissionDenied
    );
    assert!(std::fs::symlink_metadata(root.join("l")).is_err());

    drop(sftp);
    let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    assert!(
        exit.unwrap().unwrap().success(),
        "sftp-server should exit 0 when its input ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_every_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), b"x").unwrap();
    let (_child, sftp) = spawn(dir.path(), true).await;
    let h = sftp
        .open("a.csv", OpenFlags::READ, FileAttributes::default())
        .await
        .unwrap()
        .handle;
    assert_eq!(sftp.read(&h, 0, 10).await.unwrap().data, b"x");
    sftp.close(&h).await.unwrap();
    assert_eq!(
        status(
            sftp.open(
                "b.csv",
                OpenFlags::WRITE | OpenFlags::CREATE,
                FileAttributes::default()
            )
            .await
        ),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        status(sftp.remove("a.csv").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        status(sftp.rename("a.csv", "c.csv").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        status(sftp.mkdir("d", FileAttributes::default()).await),
        StatusCode::PermissionDenied
    );
    assert!(dir.path().join("a.csv").exists());
}
