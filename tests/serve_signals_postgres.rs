//! Signals of a real `roster serve` on a real PostgreSQL store (review s30):
//!
//! - during a start-up held by the twin check (a live heartbeat of this node id, left by a
//!   process killed with SIGKILL, holds the start up to `lease_secs`), SIGHUP no longer kills
//!   the process, and SIGTERM ends the start at once with status 0 before the intake starts: a
//!   file waiting in the tenant folder is not imported (F5).

#[path = "support/process.rs"]
mod process;
use process::{users_csv, wait_until};

#[path = "support/postgres.rs"]
#[allow(dead_code)] // each test file uses part of the support
mod test_postgres;

#[path = "cluster_nodes/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::Cluster;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Node 0 of a prepared cluster, with `lease_secs = 30` so that a restart after SIGKILL waits
/// long in the twin check.
fn one_node(db: &str) -> Cluster {
    let c = Cluster::prepare(db);
    let text = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let text = text.replace(
        &format!("lease_secs = {}", harness::LEASE_SECS),
        "lease_secs = 30",
    );
    std::fs::write(&c.nodes[0].config, text).unwrap();
    c
}

fn signal(c: &Cluster, sig: libc::c_int) {
    let pid = c.nodes[0].child.as_ref().map(|ch| ch.id()).unwrap_or(0);
    assert!(pid > 0);
    // SAFETY: signals our own child process.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn exit_within(c: &mut Cluster, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, || {
        status = c.nodes[0]
            .child
            .as_mut()
            .and_then(|ch| ch.try_wait().ok().flatten());
        status.is_some()
    });
    status
}

fn log(c: &Cluster) -> String {
    std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default()
}

#[test]
fn sighup_during_start_up_is_kept_and_sigterm_ends_the_start_before_any_import() {
    let mut c = one_node("start_signals");
    c.start_node(0);
    // Killed: its heartbeat stays alive in the store for up to 30 s.
    c.nodes[0].kill9();
    c.nodes[0].start();
    assert!(
        wait_until(Duration::from_secs(60), || log(&c)
            .contains("a live heartbeat of this node id is in the store")),
        "the start did not wait in the twin check:\n{}",
        log(&c)
    );
    signal(&c, libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        exit_within(&mut c, Duration::from_millis(10)).is_none(),
        "SIGHUP during start-up ended the process:\n{}",
        log(&c)
    );
    assert!(log(&c).contains("SIGHUP during start-up"), "{}", log(&c));
    c.drop_in("users.csv", &users_csv(3, "Waiting"));

    let sent = Instant::now();
    signal(&c, libc::SIGTERM);
    let status = exit_within(&mut c, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("SIGTERM during start-up was not obeyed:\n{}", log(&c)));
    assert!(status.success(), "{status:?}\n{}", log(&c));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert!(log(&c).contains("stopped during start-up"), "{}", log(&c));
    assert!(
        c.path().join("data/tenants/big/users.csv").exists(),
        "the waiting file was imported by a start that was stopped:\n{}",
        log(&c)
    );
    assert_eq!(c.claims(), 0, "{}", log(&c));
    c.nodes[0].child = None;
}
