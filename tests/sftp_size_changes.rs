//! Ways a client changes a file's size besides WRITE (review of 2026-12-03): an OPEN with
//! TRUNC of a file that has bytes empties it (after its upload is registered, outside the lock
//! every upload takes) and the import reads what was written after. Real server, real
//! russh-sftp clients.

mod support;

use roster::model::{ImportStatus, UserStatus};
use russh::keys::PrivateKey;
use russh_sftp::protocol::OpenFlags;
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;

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
