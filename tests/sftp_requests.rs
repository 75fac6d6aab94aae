//! The SFTP front door over a real socket: the jail, read-only folders, the size limit, rename
//! semantics, resume/append, extensions, paging, malformed and oversized requests, and the
//! upload-finished events. A real russh client drives the real server.

mod support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use support::sftp::{Client, TestServer};

fn code(r: Result<impl std::fmt::Debug, SftpError>) -> StatusCode {
    match r {
        Err(SftpError::Status(s)) => s.status_code,
        other => panic!("expected an SFTP status error, got {other:?}"),
    }
}

fn message(r: Result<impl std::fmt::Debug, SftpError>) -> String {
    match r {
        Err(SftpError::Status(s)) => s.error_message,
        other => panic!("expected an SFTP status error, got {other:?}"),
    }
}

const W: OpenFlags = OpenFlags::WRITE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_read_back_and_one_event() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    c.put("users.csv", &data).await.unwrap();
    assert_eq!(c.get("/users.csv").await.unwrap(), data);
    assert_eq!(
        std::fs::read(srv.home("acme").join("users.csv")).unwrap(),
        data
    );
    let ev = srv.event(5).await;
    assert_eq!(ev.tenant, "acme");
    assert_eq!(ev.path, "/users.csv");
    assert_eq!(ev.size, data.len() as u64);
    // Reading it back announced nothing more.
    srv.no_event(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_leave_the_jail() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let outside = srv.dir.path().join("secret.txt");
    std::fs::write(&outside, b"outside").unwrap();

    let real = c.sftp.realpath("../../..").await.unwrap();
    assert_eq!(real.files[0].filename, "/");
    assert_eq!(
        c.sftp.realpath("/a//b/../c").await.unwrap().files[0].filename,
        "/a/c"
    );

    for p in [
        "../secret.txt",
        "../../secret.txt",
        "/../secret.txt",
        "..//..//secret.txt",
        "/etc/passwd",
    ] {
        assert_eq!(code(c.sftp.stat(p).await), StatusCode::NoSuchFile, "{p}");
        assert_eq!(
            code(c.open(p, OpenFlags::READ).await),
            StatusCode::NoSuchFile,
            "{p}"
        );
    }
    // A write "above" the root lands in the root.
    c.put("../../escaped.csv", b"x").await.unwrap();
    assert!(srv.home("acme").join("escaped.csv").exists());
    assert!(!srv.dir.path().join("data/escaped.csv").exists());

    // A symlink placed in the home by someone else leads nowhere.
    std::os::unix::fs::symlink(srv.dir.path(), srv.home("acme").join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, srv.home("acme").join("file-link")).unwrap();
    assert_eq!(
        code(c.sftp.stat("/link/secret.txt").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.opendir("/link").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.open("/file-link", OpenFlags::READ).await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.open("/file-link", W | OpenFlags::TRUNCATE).await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(
            c.sftp
                .setstat(
                    "/file-link",
                    FileAttributes {
                        size: Some(0),
                        ..Default::default()
                    }
                )
                .await
        ),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.rename("/link/secret.txt", "/stolen").await),
        StatusCode::PermissionDenied
    );
    // lstat shows the link itself without following it.
    assert!(c.sftp.lstat("/file-link").await.is_ok());
    // Removing the link removes the link, not its target.
    c.sftp.remove("/file-link").await.unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside");

    // Creating symlinks is refused.
    assert_eq!(
        code(c.sftp.symlink("/pw", "/etc/passwd").await),
        StatusCode::PermissionDenied
    );
    assert!(!srv.home("acme").join("pw").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_folders_are_read_only() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let processed = srv.home("acme").join("processed");
    std::fs::create_dir_all(&processed).unwrap();
    std::fs::write(processed.join("old.csv"), b"a,b\n").unwrap();

    assert_eq!(c.get("/processed/old.csv").await.unwrap(), b"a,b\n");
    let h = c.sftp.opendir("/processed").await.unwrap().handle;
    let names = c.sftp.readdir(&h).await.unwrap();
    assert!(names.files.iter().any(|f| f.filename == "old.csv"));
    // Shown read-only, as they are (review s18 clients F7): no write bit in the listing's
    // long name and attributes, nor in STAT and FSTAT; the tenant's own files keep theirs.
    let perms = |f: &russh_sftp::protocol::File| f.attrs.permissions.unwrap_or(0);
    let old = names
        .files
        .iter()
        .find(|f| f.filename == "old.csv")
        .unwrap();
    assert_eq!(perms(old) & 0o222, 0, "{:o}", perms(old));
    assert!(old.longname.starts_with("-r--r--r--"), "{}", old.longname);
    let stat = c.sftp.stat("/processed/old.csv").await.unwrap().attrs;
    assert_eq!(stat.permissions.unwrap() & 0o222, 0);
    let f = c.open("/processed/old.csv", OpenFlags::READ).await.unwrap();
    assert_eq!(
        c.sftp.fstat(&f).await.unwrap().attrs.permissions.unwrap() & 0o222,
        0
    );
    c.put("/mine.txt", b"1").await.unwrap();
    let h = c.sftp.opendir("/").await.unwrap().handle;
    let home = c.sftp.readdir(&h).await.unwrap().files;
    let entry = |name: &str| home.iter().find(|f| f.filename == name).unwrap();
    assert!(
        entry("processed").longname.starts_with("dr-xr-xr-x"),
        "{}",
        entry("processed").longname
    );
    assert!(
        entry("mine.txt").longname.starts_with("-rw-"),
        "{}",
        entry("mine.txt").longname
    );
    c.sftp.remove("/mine.txt").await.unwrap();

    let msg = message(c.open("/processed/new.csv", W | OpenFlags::CREATE).await);
    assert!(msg.contains("read-only"), "{msg}");
    assert_eq!(
        code(c.sftp.remove("/processed/old.csv").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.rename("/processed/old.csv", "/mine.csv").await),
        StatusCode::PermissionDenied
    );
    c.put("/x.csv", b"1").await.unwrap();
    assert_eq!(
        code(c.sftp.rename("/x.csv", "/errors/x.csv").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.rmdir("/processed").await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(c.sftp.mkdir("/bak", FileAttributes::default()).await),
        StatusCode::PermissionDenied
    );
    assert_eq!(
        code(
            c.sftp
                .setstat(
                    "/processed/old.csv",
                    FileAttributes {
                        size: Some(0),
                        ..Default::default()
                    }
                )
                .await
        ),
        StatusCode::PermissionDenied
    );
    assert_eq!(std::fs::read(processed.join("old.csv")).unwrap(), b"a,b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_fail_and_leave_nothing() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let big = vec![7u8; 1_200_000]; // limit is 1,000,000 in the test config
    let err = c.put("users.csv", &big).await.unwrap_err().to_string();
    assert!(err.contains("larger than the limit"), "{err}");
    assert!(!srv.home("acme").join("users.csv").exists());
    srv.no_event(300).await;
    // The session still works.
    c.put("small.csv", b"ok").await.unwrap();
    assert_eq!(srv.event(5).await.path, "/small.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_semantics_and_events() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    // WinSCP: upload to .filepart (no event), remove the target, rename, SETSTAT mtime.
    c.put("users.csv.filepart", b"v2").await.unwrap();
    srv.no_event(300).await;
    c.put("users.csv", b"v1").await.unwrap();
    assert_eq!(srv.event(5).await.path, "/users.csv");
    // SFTPv3 RENAME onto an existing name fails and changes nothing.
    assert_eq!(
        code(c.sftp.rename("users.csv.filepart", "users.csv").await),
        StatusCode::Failure
    );
    assert_eq!(c.get("users.csv").await.unwrap(), b"v1");
    c.sftp.remove("users.csv").await.unwrap();
    c.sftp
        .rename("users.csv.filepart", "users.csv")
        .await
        .unwrap();
    let ev = srv.event(5).await;
    assert_eq!((ev.path.as_str(), ev.size), ("/users.csv", 2));
    c.sftp
        .setstat(
            "users.csv",
            FileAttributes {
                mtime: Some(1_600_000_000),
                atime: Some(1_600_000_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        c.sftp.stat("users.csv").await.unwrap().attrs.mtime,
        Some(1_600_000_000)
    );

    // posix-rename overwrites.
    c.put("next.tmp", b"v3").await.unwrap();
    srv.no_event(200).await;
    let mut data = Vec::new();
    for s in ["/next.tmp", "/users.csv"] {
        data.extend_from_slice(&(s.len() as u32).to_be_bytes());
        data.extend_from_slice(s.as_bytes());
    }
    c.sftp
        .extended("posix-rename@openssh.com", data)
        .await
        .unwrap();
    assert_eq!(c.get("users.csv").await.unwrap(), b"v3");
    assert_eq!(srv.event(5).await.path, "/users.csv");

    // Renaming onto a temp name announces nothing.
    c.sftp.rename("users.csv", "users.csv.part").await.unwrap();
    srv.no_event(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_append_and_exclusive_create() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    c.put("users.csv", b"hello ").await.unwrap();
    srv.event(5).await;
    // FileZilla resume: WRITE only (no TRUNC), FSTAT for the size, write from there.
    let h = c.open("users.csv", W).await.unwrap();
    let size = c.sftp.fstat(&h).await.unwrap().attrs.size.unwrap();
    assert_eq!(size, 6);
    c.sftp.write(&h, size, b"world".to_vec()).await.unwrap();
    c.sftp.close(&h).await.unwrap();
    assert_eq!(c.get("users.csv").await.unwrap(), b"hello world");
    assert_eq!(srv.event(5).await.size, 11);
    // OpenSSH reput / curl: APPEND, whatever the offset says.
    let h = c
        .open("users.csv", W | OpenFlags::APPEND | OpenFlags::CREATE)
        .await
        .unwrap();
    c.sftp.write(&h, 0, b"!".to_vec()).await.unwrap();
    c.sftp.close(&h).await.unwrap();
    assert_eq!(c.get("users.csv").await.unwrap(), b"hello world!");
    // EXCL on an existing name fails.
    assert_eq!(
        code(
            c.open("users.csv", W | OpenFlags::CREATE | OpenFlags::EXCLUDE)
                .await
        ),
        StatusCode::Failure
    );
    // SETSTAT size truncates.
    c.sftp
        .setstat(
            "users.csv",
            FileAttributes {
                size: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(c.get("users.csv").await.unwrap(), b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_mid_upload_announces_nothing() {
    let mut srv = TestServer::start().await;
    {
        let c = srv.acme().await;
        let h = c
            .open("users.csv", W | OpenFlags::CREATE | OpenFlags::TRUNCATE)
            .await
            .unwrap();
        c.sftp.write(&h, 0, vec![1u8; 50_000]).await.unwrap();
        // Disconnect without CLOSE.
        c.ssh
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await
            .unwrap();
    }
    srv.no_event(800).await;
    let markers = roster::sftp::InProgress::new(&srv.dir.path().join("data"), "acme");
    let id = |srv: &TestServer| {
        let meta = std::fs::metadata(srv.home("acme").join("users.csv")).unwrap();
        roster::sftp::FileId::of(&meta)
    };
    assert!(markers.is_unfinished(id(&srv)));
    // A clean upload later clears it.
    let c = srv.acme().await;
    c.put("users.csv", b"complete").await.unwrap();
    srv.event(5).await;
    assert!(!markers.is_unfinished(id(&srv)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_list_in_pages_and_end_with_eof() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    c.sftp
        .mkdir("/many", FileAttributes::default())
        .await
        .unwrap();
    for i in 0..300 {
        std::fs::write(srv.home("acme").join(format!("many/f{i:03}.csv")), b"x").unwrap();
    }
    let h = c.sftp.opendir("/many").await.unwrap().handle;
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        match c.sftp.readdir(&h).await {
            Ok(n) => {
                pages += 1;
                names.extend(n.files.into_iter().map(|f| f.filename));
            }
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
            Err(e) => panic!("{e}"),
        }
    }
    c.sftp.close(&h).await.unwrap();
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(names.iter().filter(|n| n.starts_with('f')).count(), 300);
    assert_eq!(code(c.sftp.rmdir("/many").await), StatusCode::Failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_limits_statvfs_fsync() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let limits = c.sftp.limits().await.unwrap();
    assert!(limits.max_write_len >= 261_120, "{limits:?}");
    assert!(limits.max_read_len >= 32_768);
    assert!(limits.max_packet_len > limits.max_write_len);
    let vfs = c.sftp.statvfs("/").await.unwrap();
    assert!(vfs.blocks > 0 && vfs.block_size > 0);
    let h = c.open("f.csv", W | OpenFlags::CREATE).await.unwrap();
    c.sftp.write(&h, 0, b"abc".to_vec()).await.unwrap();
    c.sftp.fsync(&h).await.unwrap();
    c.sftp.close(&h).await.unwrap();
    let reply = c.sftp.extended("copy-data", vec![]).await;
    let malformed = match reply {
        Ok(russh_sftp::protocol::Packet::Status(st)) => st.status_code,
        Err(SftpError::Status(st)) => st.status_code,
        other => panic!("unexpected reply {other:?}"),
    };
    // copy-data is supported (see tests/sftp_parity.rs); an empty body is malformed.
    assert_eq!(malformed, StatusCode::BadMessage);
    assert_eq!(
        code(c.sftp.hardlink("/f.csv", "/g.csv").await),
        StatusCode::OpUnsupported
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_write_is_refused_and_the_session_stays_in_sync() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let h = c
        .open("users.csv", W | OpenFlags::CREATE | OpenFlags::TRUNCATE)
        .await
        .unwrap();
    let msg = message(c.sftp.write(&h, 0, vec![0u8; 3 * 1024 * 1024]).await);
    assert!(msg.contains("larger than"), "{msg}");
    // The next requests are answered normally.
    c.sftp.write(&h, 0, b"fine".to_vec()).await.unwrap();
    c.sftp.close(&h).await.unwrap();
    assert_eq!(c.get("users.csv").await.unwrap(), b"fine");
    assert_eq!(srv.event(5).await.size, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_shell_are_refused_at_once() {
    let srv = TestServer::start().await;
    let (ssh, _) = Client::authenticate(
        srv.addr(),
        "acme",
        support::sftp::Login::Key(Box::new(srv.acme_key.clone())),
    )
    .await
    .unwrap();
    for what in ["exec", "shell", "subsystem"] {
        let mut ch = ssh.channel_open_session().await.unwrap();
        match what {
            "exec" => ch.exec(true, "ls /").await.unwrap(),
            "shell" => ch.request_shell(true).await.unwrap(),
            _ => ch.request_subsystem(true, "netconf").await.unwrap(),
        }
        // A shell or a command is told why on stderr, with exit status 1 (what OpenSSH and
        // `scp -O` print; review s19 docs F13); another subsystem is refused outright.
        let refused = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let (mut said, mut status) = (String::new(), None);
            while let Some(msg) = ch.wait().await {
                match msg {
                    russh::ChannelMsg::Failure => return (true, said, status),
                    russh::ChannelMsg::ExtendedData { data, ext: 1 } => {
                        said.push_str(&String::from_utf8_lossy(&data))
                    }
                    russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    russh::ChannelMsg::Close => return (false, said, status),
                    _ => {}
                }
            }
            (false, said, status)
        })
        .await;
        let (failed, said, status) = refused.unwrap_or_else(|_| panic!("{what} hung"));
        if what == "subsystem" {
            assert!(failed, "{what} was not refused");
        } else {
            assert!(said.contains("Roster serves SFTP only"), "{what}: {said:?}");
            assert!(said.contains("scp"), "{what}: {said:?}");
            assert_eq!(status, Some(1), "{what}");
        }
    }
}
