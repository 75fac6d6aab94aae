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
    // `ls -l` shows the root's folder name as owner and group (review s19 docs: it showed the
    // root's path cut to 8 characters).
    let d = sftp.opendir("/").await.unwrap().handle;
    let listed = sftp.readdir(&d).await.unwrap().files;
    let file = listed.iter().find(|f| f.filename == "users.csv").unwrap();
    assert!(
        file.longname.contains(" home     home "),
        "{}",
        file.longname
    );

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

/// The archive folders stay read-only when links are followed (the review of 2026-11-30 wrote
/// into `processed/` through a link to it, and changed an archived file through a hard link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_never_make_the_archive_folders_writable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir_all(root.join("processed")).unwrap();
    let archived = root.join("processed/users.20261121T073000Z.csv");
    std::fs::write(&archived, b"archived,original").unwrap();
    // A link made outside SFTP (by the OS user) that leads into the archive.
    std::os::unix::fs::symlink("processed", root.join("p")).unwrap();
    let (_child, sftp) = spawn(&root, false).await;
    let put = |path: &'static str| {
        let sftp = &sftp;
        async move {
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
            let h = sftp
                .open(path, flags, FileAttributes::default())
                .await?
                .handle;
            sftp.write(&h, 0, b"x,y".to_vec()).await?;
            sftp.close(&h).await
        }
    };
    assert!(put("/processed/direct.csv").await.is_err());
    assert!(put("/p/through-a-link.csv").await.is_err());
    assert!(sftp.remove("/p/users.20261121T073000Z.csv").await.is_err());
    assert!(sftp
        .rename("/p/users.20261121T073000Z.csv", "/away.csv")
        .await
        .is_err());
    // New links into the archive, or to the root above it, are refused.
    for target in [
        "processed",
        "/processed/users.20261121T073000Z.csv",
        "/",
        ".",
    ] {
        assert_eq!(
            status(sftp.symlink(target, "/l").await),
            StatusCode::PermissionDenied,
            "{target}"
        );
    }
    // A second name of an archived file is refused too.
    let hardlink = |from: &str, to: &str| {
        let mut body = Vec::new();
        for s in [from, to] {
            body.extend_from_slice(&(s.len() as u32).to_be_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        body
    };
    let linked = sftp
        .extended(
            "hardlink@openssh.com",
            hardlink("/p/users.20261121T073000Z.csv", "/hl.csv"),
        )
        .await;
    assert!(
        !matches!(&linked, Ok(russh_sftp::protocol::Packet::Status(s)) if s.status_code == StatusCode::Ok),
        "{linked:?}"
    );
    assert!(std::fs::symlink_metadata(root.join("hl.csv")).is_err());
    let names: Vec<_> = std::fs::read_dir(root.join("processed"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 1, "nothing new in processed/");
    assert_eq!(std::fs::read(&archived).unwrap(), b"archived,original");
    // Links elsewhere still work in this mode.
    std::fs::create_dir_all(root.join("in")).unwrap();
    sftp.symlink("in", "/to-in").await.unwrap();
    put("/to-in/a.csv").await.unwrap();
    assert_eq!(std::fs::read(root.join("in/a.csv")).unwrap(), b"x,y");
}
