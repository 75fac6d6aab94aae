//! Schedules around uploads and restarts (review s15): a file uploaded and run between two
//! ticks (`trigger = "both"`) is not reported missing by the next tick, and a tick missed while
//! Roster was stopped is run once at start. The whole server on sled, real SFTP uploads; the
//! assertions compare record times with the ticks of the schedule, not with a stopwatch. A tick
//! that lands during an upload waits for it (review s30).

mod support;

use chrono::{DateTime, Timelike, Utc};
use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;

const CSV: &[u8] = b"email,first_name,last_name\nana@acme.example,Ana,A\n";

fn config(dir: &Path, key: &PrivateKey, trigger: &str, every_secs: u32) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:0"

[[tenants]]
id = "acme"
authorized_keys = ["{key}"]
[tenants.import]
file = "users.csv"
trigger = "{trigger}"
schedule = "*/{every_secs} * * * * *"
report = "never"
"#,
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
    )
}

/// The tick of `*/every * * * * *` at or before `t`.
fn tick_before(t: DateTime<Utc>, every: u32) -> DateTime<Utc> {
    let back = t.second() % every;
    (t - chrono::Duration::seconds(back.into()))
        .with_nanosecond(0)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_run_between_two_ticks_is_not_reported_missing_by_the_next() {
    let env = Pipeline::start(|dir, key| config(dir, key, "both", 5)).await;
    // A first tick without a file: missing.
    let h = env.history_len("acme", 1, 20).await;
    assert_eq!(h[0].status, ImportStatus::Missing);
    env.client("acme")
        .await
        .put("users.csv", CSV)
        .await
        .unwrap();
    let h = env.history_len("acme", 2, 20).await;
    let run = h[0].clone();
    assert_eq!(run.status, ImportStatus::Success, "{h:?}");
    // Two more ticks pass: the one after the run finds nothing but the run (no record), the
    // one after that reports the file missing.
    let h = env.history_len("acme", 3, 30).await;
    let missing = h[0].clone();
    assert_eq!(missing.status, ImportStatus::Missing, "{h:?}");
    let run_tick = tick_before(run.started_at, 5);
    let missing_tick = tick_before(missing.started_at, 5);
    assert_eq!(
        missing_tick - run_tick,
        chrono::Duration::seconds(10),
        "missing is first reported by the second tick after the run: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_tick_without_a_file_after_one_that_ran_it_reports_it_missing() {
    // The re-read of s15: the file the tick itself ran counted as "a file since the tick
    // before" for the next tick, which then stayed silent.
    let env = Pipeline::start(|dir, key| {
        // The file waits before the server starts, so the first tick runs it.
        let home = dir.join("data/tenants/acme");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("users.csv"), CSV).unwrap();
        config(dir, key, "schedule", 5)
    })
    .await;
    let h = env.history_len("acme", 1, 20).await;
    let run = h[0].clone();
    assert_eq!(run.status, ImportStatus::Success, "{h:?}");
    let h = env.history_len("acme", 2, 20).await;
    let missing = h[0].clone();
    assert_eq!(missing.status, ImportStatus::Missing, "{h:?}");
    assert_eq!(
        tick_before(missing.started_at, 5) - tick_before(run.started_at, 5),
        chrono::Duration::seconds(5),
        "the very next tick reports it: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_missed_while_stopped_is_run_once_at_start() {
    let mut env = Pipeline::start(|dir, key| config(dir, key, "schedule", 10)).await;
    let h = env.history_len("acme", 1, 30).await;
    assert_eq!(h[0].status, ImportStatus::Missing);
    let first_tick = tick_before(h[0].started_at, 10);
    env.stop().await;
    std::fs::write(env.home("acme").join("users.csv"), CSV).unwrap();
    // Start again after the next tick, which no node ran.
    let missed = first_tick + chrono::Duration::seconds(10);
    let wait = (missed - Utc::now()).num_milliseconds().max(0) as u64 + 1500;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    env.start_again().await;
    let h = env.history_len("acme", 2, 30).await;
    let run = &h[0];
    assert_eq!(run.status, ImportStatus::Success, "{h:?}");
    assert!(
        run.started_at < missed + chrono::Duration::seconds(10),
        "run by the missed tick, not by the next one: {h:?}"
    );
    assert_eq!(h.len(), 2, "once: {h:?}");
}

/// A tick that lands while the file is being uploaded (WinSCP's `users.csv.filepart`, renamed
/// when done; or a matching name an upload still writes) waits for the upload instead of
/// reporting the file missing, and runs the file once it is there, under
/// `trigger = "schedule"` too, where the finished upload itself starts nothing (review s30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_during_an_upload_waits_for_it_instead_of_reporting_the_file_missing() {
    // Half the file under its temporary name before the server starts (so no tick can come
    // first), then across at least one tick.
    let half = &CSV[..CSV.len() / 2];
    let env = Pipeline::start(|dir, key| {
        let home = dir.join("data/tenants/acme");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("users.csv.filepart"), half).unwrap();
        config(dir, key, "schedule", 5)
    })
    .await;
    let c = env.client("acme").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let h = env.server().store.history("acme", 10).unwrap();
    assert!(h.is_empty(), "reported while uploading: {h:?}");
    c.put("users.csv.filepart", CSV).await.unwrap();
    c.sftp
        .rename("users.csv.filepart", "users.csv")
        .await
        .unwrap();
    let h = env.history_len("acme", 1, 30).await;
    assert_eq!(h[0].status, ImportStatus::Success, "{h:?}");
    assert_eq!(h[0].counts.rows, 1, "{h:?}");
    let all = env.server().store.history("acme", 10).unwrap();
    assert!(
        all.iter()
            .all(|r| r.status != ImportStatus::Missing || r.started_at > h[0].started_at),
        "a missing record before the run: {all:?}"
    );
}
