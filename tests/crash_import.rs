//! Crash safety with a real process: a child (this test binary, re-executed) applies a large
//! import and is killed with SIGKILL at a random moment, many times; after each kill the
//! reopened store must hold all of that run or none of it.

use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{run_file, ImportStatus, RunOptions};
use roster::model::UserStatus;
use roster::store::Store;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const USERS: usize = 20_000;
const KILLS: usize = 24;

fn tenant() -> Tenant {
    let columns = [
        ("mapping_code", "id"),
        ("first_name", "first"),
        ("last_name", "last"),
        ("email", "email"),
        ("job_title", "title"),
    ];
    let mut t = Tenant::for_import(
        "crash",
        MatchBy::MappingCode,
        OnMissing::Deactivate,
        &columns,
    );
    t.import.max_missing_percent = 100.0;
    t
}

/// Run `round`: every user gets title `T<round>`; users beyond `USERS - round` are missing (so
/// deactivations are part of the run too).
fn write_file(path: &Path, round: usize) {
    let mut s = String::from("id;first;last;email;title\n");
    for i in 0..USERS - round {
        s.push_str(&format!("{i:06};F{i};L{i};u{i}@crash.example;T{round}\n"));
    }
    std::fs::write(path, s).expect("write csv");
}

/// The child: applies the file named by the environment to the store named by it.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(file)) = (
        std::env::var("ROSTER_CRASH_STORE"),
        std::env::var("ROSTER_CRASH_FILE"),
    ) else {
        return; // Not running as a child.
    };
    let store = Store::open(Path::new(&dir)).expect("child opens the store");
    let out = run_file(&store, &tenant(), Path::new(&file), &RunOptions::default())
        .expect("child import");
    assert_eq!(out.record.status, ImportStatus::Success);
}

fn child(dir: &Path, file: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "crash_child", "--test-threads=1", "--quiet"])
        .env("ROSTER_CRASH_STORE", dir)
        .env("ROSTER_CRASH_FILE", file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Which round the store shows; panics if it shows a mix.
fn observed_round(dir: &Path) -> (usize, usize) {
    let store = Store::open(dir).expect("reopen after kill");
    let users = store.users("crash", None).expect("users");
    assert_eq!(users.len(), USERS, "no user lost or duplicated");
    let titles: std::collections::BTreeSet<String> = users
        .iter()
        .filter(|u| u.status == UserStatus::Active)
        .map(|u| u.fields["job_title"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(titles.len(), 1, "one run's titles only, found {titles:?}");
    let title = titles.into_iter().next().unwrap_or_default();
    let round: usize = title.trim_start_matches('T').parse().expect("title");
    let active = users
        .iter()
        .filter(|u| u.status == UserStatus::Active)
        .count();
    assert_eq!(
        active,
        USERS - round,
        "deactivations belong to the same run"
    );
    let history = store.history("crash", 1000).expect("history");
    let successes = history
        .iter()
        .filter(|r| r.status == ImportStatus::Success)
        .count();
    assert_eq!(
        history.first().map(|r| r.file.clone()),
        Some(format!("round{round}.csv")),
        "the newest history record is the run whose users the store shows"
    );
    (round, successes)
}

#[test]
fn killed_import_is_all_or_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    // Round 0 applied to completion, timed, to calibrate the kill moments.
    let f0 = tmp.path().join("round0.csv");
    write_file(&f0, 0);
    let t = Instant::now();
    let status = child(&dir, &f0).wait().expect("child 0");
    let full = t.elapsed();
    assert!(status.success(), "the first child import must succeed");
    assert_eq!(observed_round(&dir), (0, 1));
    let mut applied = 1;
    let mut current = 0;
    let (mut before, mut after) = (0, 0);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    for round in 1..=KILLS {
        let file = tmp.path().join(format!("round{round}.csv"));
        write_file(&file, round);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let window = full.as_millis() as u64 * 3 + 1;
        let delay = Duration::from_millis(seed % window);
        let mut c = child(&dir, &file);
        std::thread::sleep(delay);
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
        let (seen, successes) = observed_round(&dir);
        if seen == round {
            applied += 1;
            after += 1;
            assert_eq!(successes, applied, "one history record per applied run");
        } else {
            assert_eq!(successes, applied, "no record of the unfinished run");
            assert_eq!(seen, current, "either the new run or the previous state");
            before += 1;
        }
        current = seen;
    }
    eprintln!(
        "{KILLS} kills: {before} left the previous state, {after} the new one (child run {full:?})"
    );
}
