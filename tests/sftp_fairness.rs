//! One tenant's slow file work does not stall the server for everyone else (review of
//! 2026-11-30, third round, F2): a real `roster serve` process (a runtime of one worker per
//! core, as in production), two SFTP sessions of tenant `acme` each pipelining many
//! `copy-data` requests of a large sparse file (a few bytes on the wire, megabytes of file
//! work each), and meanwhile tenant `beta` logs in and lists its folder. Before the fix each
//! session's queued requests ran on a runtime worker without a pause, so with two sessions
//! every worker was held and `beta` waited until one session's whole queue was done.

mod support;

use russh::keys::PrivateKey;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::process::{free_port, serve, KillOnDrop};
use support::sftp::{config_text, eventually, Client, Login, BETA_PASSWORD};

/// `copy-data` requests each `acme` session sends at once.
const REQUESTS: usize = 150;
/// The sparse source each request copies whole.
const SOURCE_BYTES: u64 = 24_000_000;

/// The body of a `copy-data` request: read handle, offset, length (0: to the end), write
/// handle, offset. All of `from` to offset 0 of `to`.
fn copy_data(from: &str, to: &str) -> Vec<u8> {
    let string = |s: &str| [&(s.len() as u32).to_be_bytes()[..], s.as_bytes()].concat();
    [string(from), vec![0; 16], string(to), vec![0; 8]].concat()
}

/// Opens a sparse source of [`SOURCE_BYTES`] and a target in `client`'s folder; returns the
/// request body that copies one to the other.
async fn sparse_copy(client: &Client, n: usize) -> Vec<u8> {
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let src = client.open(&format!("src{n}.bin"), rw).await.unwrap();
    let size = FileAttributes {
        size: Some(SOURCE_BYTES),
        ..Default::default()
    };
    client.sftp.fsetstat(src.clone(), size).await.unwrap();
    let dst = client.open(&format!("dst{n}.bin"), rw).await.unwrap();
    copy_data(&src, &dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_of_one_tenant_does_not_stall_another() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let port = free_port();
    let text = config_text(dir.path(), key.public_key(), "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("max_upload_bytes = 1000000", "max_upload_bytes = 100000000");
    let config = dir.path().join("roster.toml");
    std::fs::write(&config, text).unwrap();
    let _server = KillOnDrop(serve(&config));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let acme = || Client::connect(addr, "acme", Login::Key(Box::new(key.clone())));
    assert!(
        eventually(30, || async { acme().await.is_ok() }).await,
        "server did not start"
    );

    let mut sessions = Vec::new();
    for n in 0..2 {
        let client = Arc::new(acme().await.unwrap());
        client.sftp.set_timeout(600);
        let body = sparse_copy(&client, n).await;
        sessions.push((client, body, Arc::new(AtomicUsize::new(0))));
    }
    let mut running = Vec::new();
    for (client, body, done) in &sessions {
        for _ in 0..REQUESTS {
            let (client, body, done) = (client.clone(), body.clone(), done.clone());
            running.push(tokio::spawn(async move {
                let answer = client.sftp.extended("copy-data", body).await;
                done.fetch_add(1, Ordering::SeqCst);
                answer.is_ok()
            }));
        }
    }
    // The sessions are at work once each has answered one request.
    let started = || async {
        sessions
            .iter()
            .all(|(_, _, d)| d.load(Ordering::SeqCst) > 0)
    };
    assert!(eventually(60, started).await, "no copy-data was answered");

    let beta = Client::connect(addr, "beta", Login::Password(BETA_PASSWORD.into()))
        .await
        .unwrap();
    beta.sftp.realpath(".").await.unwrap();
    let done: Vec<usize> = sessions
        .iter()
        .map(|(_, _, d)| d.load(Ordering::SeqCst))
        .collect();
    assert!(
        done.iter().all(|&n| n < REQUESTS),
        "beta was answered only after a session's whole queue: {done:?} of {REQUESTS} each"
    );

    let mut ok = 0;
    for r in running {
        ok += usize::from(
            tokio::time::timeout(Duration::from_secs(600), r)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(ok, 2 * REQUESTS, "every copy-data succeeds");
}
