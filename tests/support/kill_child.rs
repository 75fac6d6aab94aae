//! An import in a child process killed with SIGKILL at a random moment (tests/crash_import.rs,
//! tests/changes_crash.rs): the test binary re-executes itself to run one named test as the
//! child, which reads its store and file from the environment.
//!
//! Include it with `#[path = "support/kill_child.rs"] mod kill_child;`.

#![allow(dead_code)]

use roster::config::{MatchBy, OnMissing, Tenant};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Tenant `crash`: matched by mapping code, missing users deactivated, no mass-deletion hold.
pub fn crash_tenant() -> Tenant {
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

/// The file of run `round` of `users`: every user gets title `T<round>`; users from
/// `users - round` on are missing (so deactivations are part of the run too).
pub fn write_round(path: &Path, users: usize, round: usize) {
    let mut s = String::from("id;first;last;email;title\n");
    for i in 0..users - round {
        s.push_str(&format!("{i:06};F{i};L{i};u{i}@crash.example;T{round}\n"));
    }
    std::fs::write(path, s).expect("write csv");
}

/// This test binary again, running only the test `name`, with `env` set; output discarded.
pub fn spawn_self(name: &str, env: &[(&str, &Path)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args(["--exact", name, "--test-threads=1", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// Kill moments: a xorshift sequence seeded by the process id, so runs differ.
pub struct KillMoments(u64);

impl KillMoments {
    pub fn new(seed: u64) -> KillMoments {
        KillMoments(seed ^ u64::from(std::process::id()))
    }

    /// A delay in `[0, window]`.
    pub fn next(&mut self, window: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % (window.as_millis() as u64 + 1))
    }
}

/// Waits `delay`, then kills `child` with SIGKILL and reaps it.
pub fn kill_after(mut child: Child, delay: Duration) {
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}
