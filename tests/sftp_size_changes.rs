//! Ways a client changes a file's size besides WRITE (review of 2026-12-03): an OPEN with
//! TRUNC of a file that has bytes empties it (after its upload is registered, outside the lock
//! every upload takes) and the import reads what was written after; a handle that changed the
//! size with FSETSTAT finishes an upload at CLOSE as one that wrote; a SETSTAT size by name is
//! refused while another handle writes the file, as a write-OPEN is. Real server, real
//! russh-sftp clients.

mod support;

use roster::model::{ImportStatus, UserStatus};
use russh::keys::PrivateKey;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;
use support::sftp::TestServer;

const WRITE_NEW: OpenFlags = OpenFlags::WRITE
    .union(OpenFlags::CREATE)
    .union(OpenFlags::TRUNCATE);

fn config(dir: &Path, key: &PrivateKey) -> String {
    support::pipeline::one_tenant_config(
        dir,
        key,
        "",
        "acme",
        "file = \"users.csv\"\nmatch_by = \"mapping_code\"\non_missing = \"deactivate\"\n\
         [tenants.import.columns]\nmapping_code = \"userId\"\nfirst_name = \"name\"\n\
         last_name = \"last\"",
    )
}

/// The older export: 60 users, longer than the newer one.
fn older() -> Vec<u8> {
    let mut s = String::from("userId,name,last\n");
    for i in 0..60 {
        s.push_str(&format!("u{i},Old{i},Lee\n"));
    }
    s.into_bytes()
}

/// The newer export: three users.
const NEWER: &[u8] = b"userId,name,last\nu1,New,Lee\nu2,Bob,Ray\nu3,Cy,Fox\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_with_trunc_empties_the_file_and_the_import_reads_the_new_one() {
    let p = Pipeline::start(config).await;
    let old = older();
    // An upload of the older export breaks off (the session ends mid-upload): the file stays,
    // unfinished, with all its bytes.
    {
        let c = p.client("acme").await;
        let h = c.open("users.csv", WRITE_NEW).await.unwrap();
        c.sftp.write(&h, 0, old.clone()).await.unwrap();
        c.ssh
            .disconnect(russh::Disconnect::ByApplication, "cut", "en")
            .await
            .unwrap();
    }
    let on_disk = p.home("acme").join("users.csv");
    let full = || std::fs::metadata(&on_disk).is_ok_and(|m| m.len() == old.len() as u64);
    assert!(support::sftp::eventually(10, || async { full() }).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(p.server().store.history("acme", 10).unwrap().is_empty());

    // The client starts over: OPEN with TRUNC empties the file before it is answered.
    let c = p.client("acme").await;
    let h = c.open("users.csv", WRITE_NEW).await.unwrap();
    assert_eq!(std::fs::read(&on_disk).unwrap(), b"");
    assert_eq!(c.sftp.fstat(&h).await.unwrap().attrs.size, Some(0));
    c.sftp.write(&h, 0, NEWER.to_vec()).await.unwrap();
    c.sftp.close(&h).await.unwrap();

    let history = p.history_len("acme", 1, 20).await;
    assert_eq!(history.len(), 1, "{history:?}");
    let run = &history[0];
    assert_eq!(run.status, ImportStatus::Success, "{:?}", run.messages);
    assert_eq!(run.counts.rows, 3, "only the new file's rows: {run:?}");
    let archived = run.archived_as.clone().expect("archived");
    assert_eq!(std::fs::read(p.home("acme").join(archived)).unwrap(), NEWER);
    let store = &p.server().store;
    let u1 = store.user("acme", "u1").unwrap().expect("u1 imported");
    assert_eq!(u1.first_name.as_deref(), Some("New"));
    assert_eq!(u1.status, UserStatus::Active);
    assert!(store.user("acme", "u40").unwrap().is_none(), "no old row");
}

const BUSY: &str = "/users.csv is being uploaded by another session; try again when it finishes";

fn size(n: u64) -> FileAttributes {
    FileAttributes {
        size: Some(n),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_emptied_through_its_handle_is_announced_at_close() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let old = older();
    c.put("users.csv", &old).await.unwrap();
    assert_eq!(srv.event(10).await.size, old.len() as u64);
    // Opened for writing without TRUNC, emptied with FSETSTAT size 0, closed: a change of
    // what the file holds, announced as after a WRITE (it was not before).
    let h = c.open("users.csv", OpenFlags::WRITE).await.unwrap();
    c.sftp.fsetstat(h.clone(), size(0)).await.unwrap();
    c.sftp.close(h).await.unwrap();
    let ev = srv.event(10).await;
    assert_eq!((ev.path.as_str(), ev.size), ("/users.csv", 0));
    assert_eq!(
        std::fs::read(srv.home("acme").join("users.csv")).unwrap(),
        b""
    );
    // A handle that only sets the file's times announces nothing.
    let h = c.open("users.csv", OpenFlags::WRITE).await.unwrap();
    let times = FileAttributes {
        mtime: Some(1_700_000_000),
        atime: Some(1_700_000_000),
        ..Default::default()
    };
    c.sftp.fsetstat(h.clone(), times).await.unwrap();
    c.sftp.close(h).await.unwrap();
    srv.no_event(500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_size_on_a_path_is_refused_while_another_session_writes_the_file() {
    let mut srv = TestServer::start().await;
    let (a, b) = (srv.acme().await, srv.acme().await);
    let old = older();
    let half = old.len() / 2;
    let h = a.open("users.csv", WRITE_NEW).await.unwrap();
    a.sftp.write(&h, 0, old[..half].to_vec()).await.unwrap();

    // B truncates it by name: refused as a write-open would be, nothing truncated (before,
    // the file was emptied under A's upload).
    let on_disk = srv.home("acme").join("users.csv");
    match b.sftp.setstat("users.csv", size(0)).await {
        Err(SftpError::Status(s)) => {
            assert_eq!(
                (s.status_code, s.error_message.as_str()),
                (StatusCode::Failure, BUSY)
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(&on_disk).unwrap(), &old[..half]);
    // Setting its times only is still fine.
    let times = FileAttributes {
        mtime: Some(1_700_000_000),
        ..Default::default()
    };
    b.sftp.setstat("users.csv", times).await.unwrap();

    a.sftp
        .write(&h, half as u64, old[half..].to_vec())
        .await
        .unwrap();
    a.sftp.close(h).await.unwrap();
    assert_eq!(srv.event(10).await.size, old.len() as u64);
    // With no writer, a set-size by name works (and is no upload: nothing announced).
    b.sftp.setstat("users.csv", size(17)).await.unwrap();
    assert_eq!(std::fs::read(&on_disk).unwrap(), &old[..17]);
    srv.no_event(500).await;
    // A folder keeps its own answer.
    b.sftp
        .mkdir("sub", FileAttributes::default())
        .await
        .unwrap();
    match b.sftp.setstat("sub", size(0)).await {
        Err(SftpError::Status(s)) => assert_eq!(s.error_message, "/sub is a folder"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Once B's own upload holds the file, B's set-size by name is refused in its own words.
    let own = b.open("users.csv", OpenFlags::WRITE).await.unwrap();
    match b.sftp.setstat("users.csv", size(0)).await {
        Err(SftpError::Status(s)) => assert!(s.error_message.contains("close it first"), "{s:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    b.sftp.close(own).await.unwrap();
}
