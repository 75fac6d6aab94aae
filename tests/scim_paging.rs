//! SCIM `/Users` pages without materialising the directory, and heavy listings are bounded: a
//! real server with 60,000 users, 30 concurrent `count=1` requests over real HTTP. The test
//! binary counts its heap (the server runs in this process), so the peak growth during the
//! burst is measured, not guessed. Alone in its file so no other test allocates meanwhile.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{http, SCIM_ACME};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > l.size() {
            grew(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const USERS: usize = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_pages_a_large_directory_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let config = admin_support::config_text(dir.path(), &key, "127.0.0.1:0").replace(
        &format!("max_upload_bytes = {}", admin_support::MAX_UPLOAD),
        "max_upload_bytes = 100000000",
    );
    let path = dir.path().join("roster.toml");
    std::fs::write(&path, config).unwrap();
    let server = roster::serve::start(&path).await.unwrap();
    let c = support::sftp::Client::connect(
        server.sftp.addr,
        "acme",
        support::sftp::Login::Key(Box::new(key.clone())),
    )
    .await
    .unwrap();
    c.put("users.csv", admin_support::users_csv(0, USERS).as_bytes())
        .await
        .unwrap();
    assert!(support::history::wait_filed(&server.store, "acme", 1, 300).await);
    let rec = server.store.history("acme", 1).unwrap().remove(0);
    assert_eq!(rec.counts.inserted, USERS as u64, "{:?}", rec.messages);
    let mut keys = admin_support::keys(0, USERS);
    keys.sort();
    let base = format!("http://{}", server.admin.addr);

    // Paging is in key order, with the total counted.
    let tail = http(
        &base,
        "GET",
        "/scim/v2/Users?startIndex=59999&count=5",
        Some(SCIM_ACME),
        None,
    )
    .await;
    assert_eq!(tail.status, 200, "{}", tail.text);
    assert_eq!(tail.json["totalResults"], USERS);
    let ids: Vec<&str> = (0..2)
        .map(|i| tail.json["Resources"][i]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [keys[USERS - 2].as_str(), keys[USERS - 1].as_str()]);

    // 30 at once: each answer is the right one-user page or a 503 with Retry-After.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                http(
                    &base,
                    "GET",
                    "/scim/v2/Users?count=1",
                    Some(SCIM_ACME),
                    None,
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for b in burst {
        let a = b.await.unwrap();
        match a.status {
            200 => {
                assert_eq!(a.json["totalResults"], USERS);
                assert_eq!(a.json["Resources"][0]["id"], keys[0].as_str());
                ok += 1;
            }
            503 => assert!(a.text.contains("retry"), "{}", a.text),
            s => panic!("status {s}: {}", a.text),
        }
    }
    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(ok >= 1, "every request was refused");
    assert!(
        growth < 24 << 20,
        "30 count=1 requests grew the heap by {} MB",
        growth >> 20
    );
    println!(
        "heap growth during the burst: {:.1} MB, {ok} answered 200",
        growth as f64 / 1e6
    );
    server.stop(Duration::from_secs(10)).await;
}
