//! The change log across kill -9 (the pattern of tests/crash_import.rs): a child process (this
//! test binary, re-executed) applies an import to a sled store and is killed with SIGKILL at a
//! random moment, many times; after each kill the reopened store's change log and event log
//! hold exactly the entries of the runs that committed, numbered without gaps, and none of the
//! lost run.

#[path = "support/kill_child.rs"]
mod kill_child;
use kill_child::{crash_tenant, kill_after, spawn_self, write_round, KillMoments};

use roster::import::{run_file, ImportStatus, RunOptions};
use roster::model::changelog::{ChangeKind, EventType};
use roster::store::Store;
use std::path::Path;
use std::time::Instant;

const USERS: usize = 6_000;
const KILLS: usize = 12;

/// The child: applies the file named by the environment to the store named by it.
#[test]
fn changes_crash_child() {
    let (Ok(dir), Ok(file)) = (
        std::env::var("ROSTER_CHANGES_CRASH_STORE"),
        std::env::var("ROSTER_CHANGES_CRASH_FILE"),
    ) else {
        return; // Not running as a child.
    };
    let store = Store::open(Path::new(&dir)).expect("child opens the store");
    let out = run_file(
        &store,
        &crash_tenant(),
        Path::new(&file),
        &RunOptions::default(),
    )
    .expect("child import");
    assert_eq!(out.record.status, ImportStatus::Success);
}

fn child(dir: &Path, file: &Path) -> std::process::Child {
    spawn_self(
        "changes_crash_child",
        &[
            ("ROSTER_CHANGES_CRASH_STORE", dir),
            ("ROSTER_CHANGES_CRASH_FILE", file),
        ],
    )
}

/// Checks the logs against the history: per committed run (oldest first) exactly its
/// entries, seq without gaps, one `import.finished` per run after its `directory.changed`
/// ranges. Returns the rounds applied, oldest first.
fn check_logs(dir: &Path) -> Vec<usize> {
    let store = Store::open(dir).expect("reopen after kill");
    let mut history = store.history("crash", 1000).expect("history");
    history.reverse();
    let changes = store.changes("crash", 0, usize::MAX).expect("changes");
    let events = store.events("crash", 0, usize::MAX).expect("events");
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c.seq, i as u64 + 1, "change seq without gaps");
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "event seq without gaps");
    }
    let mut rounds = Vec::new();
    let mut next_change = 1u64;
    let mut ev = events.iter();
    let mut previous: Option<usize> = None;
    for r in &history {
        assert_eq!(r.status, ImportStatus::Success);
        let round: usize = r
            .file
            .trim_start_matches("round")
            .trim_end_matches(".csv")
            .parse()
            .expect("round file");
        let mine: Vec<_> = changes
            .iter()
            .filter(|c| c.import_id.as_deref() == Some(r.id.as_str()))
            .collect();
        let expected = match previous {
            None => USERS,
            Some(p) => USERS - p,
        };
        assert_eq!(
            mine.len(),
            expected,
            "round {round}: its entries, all of them"
        );
        let deactivated = mine
            .iter()
            .filter(|c| c.kind == ChangeKind::Deactivated)
            .count();
        assert_eq!(deactivated, previous.map_or(0, |p| round - p));
        assert!(mine.iter().all(|c| c.seq >= next_change));
        let last = next_change + mine.len() as u64 - 1;
        loop {
            let e = ev.next().expect("an event for every committed run");
            assert_eq!(e.import_id.as_deref(), Some(r.id.as_str()));
            if e.kind == EventType::ImportFinished {
                break;
            }
            let (from, to) = e.changes.expect("a range");
            assert!(from >= next_change && to <= last);
        }
        next_change = last + 1;
        previous = Some(round);
        rounds.push(round);
    }
    assert_eq!(
        next_change,
        changes.len() as u64 + 1,
        "no entry of a lost run"
    );
    assert!(ev.next().is_none(), "no event of a lost run");
    rounds
}

#[test]
fn a_killed_import_leaves_no_entries_of_the_lost_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let f0 = tmp.path().join("round0.csv");
    write_round(&f0, USERS, 0);
    let t = Instant::now();
    assert!(child(&dir, &f0).wait().expect("child 0").success());
    let full = t.elapsed();
    assert_eq!(check_logs(&dir), vec![0]);
    let mut moments = KillMoments::new(0x2545_F491_4F6C_DD1D);
    let (mut lost, mut kept) = (0, 0);
    for round in 1..=KILLS {
        let file = tmp.path().join(format!("round{round}.csv"));
        write_round(&file, USERS, round);
        kill_after(child(&dir, &file), moments.next(full * 2));
        let rounds = check_logs(&dir);
        if rounds.last() == Some(&round) {
            kept += 1;
        } else {
            lost += 1;
        }
    }
    eprintln!("{KILLS} kills: {lost} runs lost, {kept} committed (child run {full:?})");
}
