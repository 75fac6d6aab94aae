//! The jail under attack, over a real socket with a real russh client: a folder swapped for a
//! symlink while the tenant uses it, folder listings that must not copy the folder, the
//! per-tenant handle cap, and every way a file could grow past `max_upload_bytes`.

mod support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::sftp::{config_text, eventually, Client, TestServer};

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

/// Swaps two names atomically (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both are NUL-terminated and outlive the call.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

/// Flips `race` between the real folder and a symlink to `outside` until told to stop (or a
/// bounded number of flips).
fn start_swapper(home: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let (race, swap) = (home.join("race"), home.join("swap"));
        let mut flips = 0u64;
        while !stop.load(Ordering::Relaxed) && flips < 50_000_000 {
            if exchange(&race, &swap) {
                flips += 1;
            }
        }
        // Leave the real folder at `race`.
        if std::fs::symlink_metadata(&race).is_ok_and(|m| m.file_type().is_symlink()) {
            exchange(&race, &swap);
        }
        flips
    })
}

#[derive(Debug, Default)]
struct RaceCounts {
    inside_reads: u32,
    outside_reads: u32,
    outside_writes: u32,
    outside_mkdirs: u32,
    outside_listings: u32,
    outside_stats: u32,
    refused: u32,
}

async fn race_round(c: &Client, i: u32, outside: &Path, n: &mut RaceCounts) {
    match c.get("/race/f.txt").await {
        Ok(d) if d == b"OUTSIDE" => n.outside_reads += 1,
        Ok(_) => n.inside_reads += 1,
        Err(_) => n.refused += 1,
    }
    if c.put(&format!("/race/w{i}.txt"), b"written").await.is_err() {
        n.refused += 1;
    }
    if c.sftp
        .mkdir(format!("/race/m{i}"), FileAttributes::default())
        .await
        .is_err()
    {
        n.refused += 1;
    }
    if let Ok(h) = c.sftp.opendir("/race").await {
        while let Ok(page) = c.sftp.readdir(&h.handle).await {
            if page.files.iter().any(|f| f.filename == "outside-marker") {
                n.outside_listings += 1;
            }
        }
        let _ = c.sftp.close(&h.handle).await;
    }
    if let Ok(a) = c.sftp.stat("/race/f.txt").await {
        if a.attrs.size == Some(7) {
            n.outside_stats += 1; // only the outside f.txt is 7 bytes long
        }
    }
    if std::fs::metadata(outside.join(format!("w{i}.txt"))).is_ok() {
        n.outside_writes += 1;
    }
    if std::fs::metadata(outside.join(format!("m{i}"))).is_ok() {
        n.outside_mkdirs += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_never_leads_outside() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let home = srv.home("acme");
    let outside = srv.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f.txt"), b"OUTSIDE").unwrap();
    std::fs::write(outside.join("outside-marker"), b"").unwrap();
    std::fs::create_dir_all(home.join("race")).unwrap();
    std::fs::write(home.join("race/f.txt"), b"inside file").unwrap();
    std::os::unix::fs::symlink(&outside, home.join("swap")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = start_swapper(home.clone(), stop.clone());
    let mut n = RaceCounts::default();
    for i in 0..300 {
        race_round(&c, i, &outside, &mut n).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flips = swapper.join().unwrap();
    eprintln!("race: {flips} flips, {n:?}");

    assert!(flips > 300, "the swapper barely ran: {flips} flips");
    assert!(
        n.inside_reads > 0,
        "the real folder was never reached: {n:?}"
    );
    assert_eq!(n.outside_reads, 0, "{n:?}");
    assert_eq!(n.outside_writes, 0, "{n:?}");
    assert_eq!(n.outside_mkdirs, 0, "{n:?}");
    assert_eq!(n.outside_listings, 0, "{n:?}");
    assert_eq!(n.outside_stats, 0, "{n:?}");
    let mut left: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["f.txt", "outside-marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statvfs_and_setstat_do_not_follow_a_planted_link() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let outside = srv.dir.path().join("victim.txt");
    std::fs::write(&outside, b"keep me").unwrap();
    std::os::unix::fs::symlink(&outside, srv.home("acme").join("planted")).unwrap();
    std::os::unix::fs::symlink("/proc", srv.home("acme").join("proc")).unwrap();
    // statvfs of the planted link describes the home's file system, not /proc's.
    let home = c.sftp.statvfs("/").await.unwrap();
    let planted = c.sftp.statvfs("/proc").await.unwrap();
    assert_eq!((planted.blocks, planted.inodes), (home.blocks, home.inodes));
    assert!(planted.blocks > 0, "{planted:?}");
    assert_eq!(
        code(c.sftp.statvfs("/proc/self").await),
        StatusCode::PermissionDenied
    );
    let truncate = FileAttributes {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(
        code(c.sftp.setstat("/planted", truncate).await),
        StatusCode::PermissionDenied
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
}

/// Resident memory of this process (server and client both run here), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Opens `listings` listings of a folder of `files` entries, reads one page of each, and returns
/// the growth of resident memory while they are open.
async fn open_listings_growth(srv: &TestServer, c: &Client, files: usize, listings: usize) -> u64 {
    let big = srv.home("acme").join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..files {
        std::fs::File::create(big.join(format!("user-export-{i:06}.csv"))).unwrap();
    }
    let before = rss();
    let mut handles = Vec::new();
    for _ in 0..listings {
        let h = c.sftp.opendir("/big").await.unwrap().handle;
        assert!(!c.sftp.readdir(&h).await.unwrap().files.is_empty());
        handles.push(h);
    }
    let after = rss();
    eprintln!(
        "{listings} open listings of {files} entries: RSS {} MB -> {} MB",
        before / 1_000_000,
        after / 1_000_000
    );
    // A listing read to the end gives every name exactly once, in pages that fit a packet.
    let full = c.sftp.opendir("/big").await.unwrap().handle;
    let mut names = std::collections::HashSet::new();
    let mut biggest_page = 0;
    loop {
        match c.sftp.readdir(&full).await {
            Ok(page) => {
                biggest_page = biggest_page.max(page.files.len());
                for f in page.files {
                    assert!(names.insert(f.filename.clone()), "{} twice", f.filename);
                }
            }
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(names.len(), files + 2, "every name plus . and ..");
    assert!(biggest_page <= 1000, "{biggest_page} entries in one page");
    c.sftp.close(&full).await.unwrap();
    for h in handles {
        c.sftp.close(&h).await.unwrap();
    }
    after.saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_listings_do_not_copy_the_folder() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    // Holding a copy per listing took ~430 bytes per entry: 100 x 10,000 would be ~430 MB.
    let growth = open_listings_growth(&srv, &c, 10_000, 100).await;
    assert!(
        growth < 100_000_000,
        "100 open listings grew memory by {growth} bytes"
    );
}

/// The figure: 200 open listings of a 30,000-entry folder (prints RSS; run with
/// `cargo test --test sftp_jail -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_200_listings_of_30000_entries() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    let growth = open_listings_growth(&srv, &c, 30_000, 200).await;
    eprintln!("growth: {} MB", growth / 1_000_000);
}

async fn server_with_handle_cap(cap: usize) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let config_path = dir.path().join("roster.toml");
    let text = config_text(dir.path(), key.public_key(), "").replace(
        "max_sessions_per_tenant = 4",
        &format!("max_sessions_per_tenant = 4\nmax_handles_per_tenant = {cap}"),
    );
    std::fs::write(&config_path, text).unwrap();
    TestServer::start_in(dir, config_path, key).await
}

async fn open_n(c: &Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.open("/f.csv", OpenFlags::READ).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_are_capped_per_tenant_across_sessions() {
    let srv = server_with_handle_cap(30).await;
    std::fs::create_dir_all(srv.home("acme")).unwrap();
    std::fs::write(srv.home("acme").join("f.csv"), b"x").unwrap();
    let a = srv.acme().await;
    let b = srv.acme().await;
    let a_handles = open_n(&a, 20).await;
    let b_handles = open_n(&b, 10).await;
    let refused = b.open("/f.csv", OpenFlags::READ).await;
    assert!(message(refused).contains("Too many open files"));
    assert_eq!(code(b.sftp.opendir("/").await), StatusCode::Failure);
    // Another tenant has its own budget.
    let beta = srv
        .password("beta", support::sftp::BETA_PASSWORD)
        .await
        .unwrap();
    beta.sftp.opendir("/").await.unwrap();
    // CLOSE gives handles back.
    for h in &a_handles[..5] {
        a.sftp.close(h).await.unwrap();
    }
    let more = open_n(&b, 5).await;
    assert_eq!(
        code(b.open("/f.csv", OpenFlags::READ).await),
        StatusCode::Failure
    );
    // So does the end of a session.
    drop(a);
    let freed = eventually(10, || async {
        b.open("/f.csv", OpenFlags::READ).await.is_ok()
    })
    .await;
    assert!(freed, "the ended session's handles were not given back");
    assert_eq!(b_handles.len() + more.len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_session_cap_still_applies() {
    let srv = TestServer::start().await;
    std::fs::create_dir_all(srv.home("acme")).unwrap();
    std::fs::write(srv.home("acme").join("f.csv"), b"x").unwrap();
    let c = srv.acme().await;
    let limits = c.sftp.limits().await.unwrap();
    assert_eq!(limits.max_open_handles, 1024);
    open_n(&c, 1024).await;
    assert!(message(c.open("/f.csv", OpenFlags::READ).await).contains("per session"));
}

const LIMIT: u64 = 1_000_000; // max_upload_bytes of the test config

fn size_of(srv: &TestServer, name: &str) -> Option<u64> {
    std::fs::metadata(srv.home("acme").join(name))
        .ok()
        .map(|m| m.len())
}

/// `copy-data`: read handle, read offset, length, write handle, write offset.
async fn copy_data(
    c: &Client,
    from: &str,
    at: u64,
    len: u64,
    to: &str,
    to_at: u64,
) -> Result<(), String> {
    let mut body = Vec::new();
    for (s, n) in [(from, at), (to, to_at)] {
        body.extend_from_slice(&(s.len() as u32).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
        body.extend_from_slice(&n.to_be_bytes());
        if s == from {
            body.extend_from_slice(&len.to_be_bytes());
        }
    }
    match c.sftp.extended("copy-data", body).await {
        Ok(russh_sftp::protocol::Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_to_grow_a_file_stops_at_the_limit() {
    let mut srv = TestServer::start().await;
    let c = srv.acme().await;
    let big = FileAttributes {
        size: Some(100 * 1024 * 1024),
        ..Default::default()
    };
    // FSETSTAT size on an open upload.
    let h = c
        .open("/sparse.csv", OpenFlags::WRITE | OpenFlags::CREATE)
        .await
        .unwrap();
    let refused = c.sftp.fsetstat(&h, big.clone()).await;
    assert!(message(refused).contains("limit"));
    c.sftp.close(&h).await.unwrap();
    assert_eq!(size_of(&srv, "sparse.csv"), Some(0));
    // SETSTAT size by path.
    assert_eq!(
        code(c.sftp.setstat("/sparse.csv", big).await),
        StatusCode::Failure
    );
    assert_eq!(size_of(&srv, "sparse.csv"), Some(0));
    let small = FileAttributes {
        size: Some(10),
        ..Default::default()
    };
    c.sftp.setstat("/sparse.csv", small).await.unwrap();
    assert_eq!(size_of(&srv, "sparse.csv"), Some(10));
    // WRITE at an offset past the limit.
    let h = c
        .open("/far.csv", OpenFlags::WRITE | OpenFlags::CREATE)
        .await
        .unwrap();
    assert_eq!(
        code(c.sftp.write(&h, LIMIT, b"x".to_vec()).await),
        StatusCode::Failure
    );
    let _ = c.sftp.close(&h).await;
    assert_eq!(size_of(&srv, "far.csv"), None);
    // APPEND onto a file near the limit.
    std::fs::write(srv.home("acme").join("near.csv"), vec![b'a'; 900_000]).unwrap();
    let h = c
        .open("/near.csv", OpenFlags::WRITE | OpenFlags::APPEND)
        .await
        .unwrap();
    assert_eq!(
        code(c.sftp.write(&h, 0, vec![b'b'; 200_000]).await),
        StatusCode::Failure
    );
    let _ = c.sftp.close(&h).await;
    // copy-data: a second copy of 600 kB does not fit.
    std::fs::write(srv.home("acme").join("src.csv"), vec![b's'; 600_000]).unwrap();
    let src = c.open("/src.csv", OpenFlags::READ).await.unwrap();
    let dst = c
        .open(
            "/dst.csv",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        )
        .await
        .unwrap();
    copy_data(&c, &src, 0, 0, &dst, 0).await.unwrap();
    let over = copy_data(&c, &src, 0, 0, &dst, 600_000).await.unwrap_err();
    assert!(over.contains("limit"), "{over}");
    let _ = c.sftp.close(&dst).await;
    c.sftp.close(&src).await.unwrap();
    assert!(size_of(&srv, "dst.csv").is_none_or(|n| n <= LIMIT));
    for name in ["sparse.csv", "far.csv", "near.csv", "dst.csv"] {
        assert!(size_of(&srv, name).is_none_or(|n| n <= LIMIT), "{name}");
    }
    // Nothing over the limit was announced as a finished upload.
    while let Ok(Some(ev)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), srv.events.recv()).await
    {
        assert!(ev.size <= LIMIT, "{ev:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_within_one_handle_from_past_its_end_is_answered() {
    let srv = TestServer::start().await;
    let c = srv.acme().await;
    std::fs::write(srv.home("acme").join("one.csv"), b"abc").unwrap();
    let rw = OpenFlags::READ | OpenFlags::WRITE;
    let h = c.open("/one.csv", rw).await.unwrap();
    // From offset 1000 of a 3-byte file to offset 0 of itself, to its end (length 0): an
    // answer, not a dead session (it was an overflow in debug builds).
    let _ = copy_data(&c, &h, 1000, 0, &h, 0).await;
    assert!(c.sftp.fstat(&h).await.is_ok(), "the session still answers");
    c.sftp.close(&h).await.unwrap();
    assert_eq!(
        std::fs::read(srv.home("acme").join("one.csv")).unwrap(),
        b"abc"
    );
}
