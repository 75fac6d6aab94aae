//! An upload is imported only once it is finished, however clients open, close and rename it
//! (the review of 2026-11-30 imported half-written files four ways): a resume that writes
//! nothing, a second client opening a file another one is writing (refused since review s14),
//! an exclusive open that fails, and a half upload moved into place by renaming its folder.
//! Real server, real SFTP client.

mod support;

use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;

fn config(dir: &Path, key: &PrivateKey) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 200

[admin]
listen = "127.0.0.1:0"

[[tenants]]
id = "cdp"
authorized_keys = ["{key}"]
[tenants.import]
file = "users*.csv"
match_by = "mapping_code"
on_missing = "deactivate"
[tenants.import.columns]
mapping_code = "userId"
first_name = "name"
last_name = "lastName"
"#,
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
    )
}

/// A file of `n` users, and the byte where its second half starts (at a line start).
fn users(n: usize) -> (Vec<u8>, usize) {
    let mut s = String::from("userId,name,lastName\n");
    let mut half = 0;
    for i in 0..n {
        if i == n / 2 {
            half = s.len();
        }
        s.push_str(&format!("u-{i},Name{i},Last{i}\n"));
    }
    (s.into_bytes(), half)
}

const WRITE_NEW: OpenFlags = OpenFlags::WRITE
    .union(OpenFlags::CREATE)
    .union(OpenFlags::TRUNCATE);

/// Waits long enough for an import to have started had anything asked for one.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

fn imported(p: &Pipeline) -> Vec<roster::model::ImportRecord> {
    p.server().store.history("cdp", 10).unwrap()
}

/// The one run of the whole file: all rows, and the archive holds exactly the file.
async fn whole_file_imported_once(p: &Pipeline, name: &str, file: &[u8]) {
    let h = p.history_len("cdp", 1, 20).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].file, name);
    assert_eq!(h[0].status, ImportStatus::Success, "{:?}", h[0].messages);
    assert_eq!(h[0].counts.rows, 200);
    let archived = h[0].archived_as.clone().expect("archived");
    assert_eq!(std::fs::read(p.home("cdp").join(archived)).unwrap(), file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_writes_nothing_leaves_a_broken_upload_unfinished() {
    let p = Pipeline::start(config).await;
    let (file, half) = users(200);
    {
        let c = p.client("cdp").await;
        let h = c.open("users.csv", WRITE_NEW).await.unwrap();
        c.sftp.write(&h, 0, file[..half].to_vec()).await.unwrap();
        c.ssh
            .disconnect(russh::Disconnect::ByApplication, "cut", "en")
            .await
            .unwrap();
    }
    settle().await;
    // A resuming client opens the file without TRUNC, reads its size and gives up.
    let c = p.client("cdp").await;
    let resume = OpenFlags::READ | OpenFlags::WRITE;
    let h = c.open("users.csv", resume).await.unwrap();
    let size = c.sftp.fstat(&h).await.unwrap().attrs.size;
    assert_eq!(size, Some(half as u64));
    c.sftp.close(&h).await.unwrap();
    settle().await;
    assert!(imported(&p).is_empty(), "a half-written file was imported");
    // The resume that sends the rest finishes it.
    let h = c.open("users.csv", OpenFlags::WRITE).await.unwrap();
    let rest = file[half..].to_vec();
    c.sftp.write(&h, half as u64, rest).await.unwrap();
    c.sftp.close(&h).await.unwrap();
    whole_file_imported_once(&p, "users.csv", &file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_does_not_start_the_import_of_a_file_being_written() {
    let p = Pipeline::start(config).await;
    let (file, half) = users(200);
    let a = p.client("cdp").await;
    let h = a.open("users.csv", WRITE_NEW).await.unwrap();
    a.sftp.write(&h, 0, file[..half].to_vec()).await.unwrap();
    // B: an exclusive create (WinSCP asking before it overwrites) fails; so does an open for
    // writing, while A writes the file (review s14, F3).
    let b = p.client("cdp").await;
    let excl = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    assert!(b.open("users.csv", excl).await.is_err());
    let rw = OpenFlags::READ | OpenFlags::WRITE;
    assert!(b.open("users.csv", rw).await.is_err());
    settle().await;
    assert!(imported(&p).is_empty(), "imported while A still writes");
    a.sftp
        .write(&h, half as u64, file[half..].to_vec())
        .await
        .unwrap();
    a.sftp.close(&h).await.unwrap();
    whole_file_imported_once(&p, "users.csv", &file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_upload_moved_by_renaming_its_folder_stays_unfinished() {
    let p = Pipeline::start(config).await;
    let (file, half) = users(200);
    {
        let c = p.client("cdp").await;
        c.sftp
            .mkdir("sub", FileAttributes::default())
            .await
            .unwrap();
        let h = c.open("sub/users.csv", WRITE_NEW).await.unwrap();
        c.sftp.write(&h, 0, file[..half].to_vec()).await.unwrap();
        c.ssh
            .disconnect(russh::Disconnect::ByApplication, "cut", "en")
            .await
            .unwrap();
    }
    let c = p.client("cdp").await;
    c.sftp.rename("sub", "sub2").await.unwrap();
    c.sftp.rename("sub2/users.csv", "users.csv").await.unwrap();
    settle().await;
    assert!(imported(&p).is_empty(), "a half-written file was imported");
    assert!(p.home("cdp").join("users.csv").exists());
    // Also not after a restart (the marker is on disk, under the file's identity).
    let mut p = p;
    p.restart().await;
    settle().await;
    assert!(imported(&p).is_empty(), "imported after a restart");
}
