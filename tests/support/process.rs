//! A real `roster serve` process for the tests that kill one (kill -9) or run several: start it
//! on a config file, find a free port for its listeners, and poll for an outcome.
//!
//! Include it with `#[path = "support/process.rs"] mod process;` (or through `support`).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

include!("ports.rs");

/// Polls `f` every 10 ms until it is true (then true) or `limit` has passed (then false).
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no server behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `roster serve -c CONFIG` as a child process, its output discarded.
pub fn serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["serve", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Puts `bytes` into the home of tenant `tenant` of a server whose `data_dir` is `dir/data`,
/// the way a local copy does: written to `dir/stash`, then renamed in (so the intake sees one
/// finished file).
pub fn drop_in(dir: &Path, tenant: &str, name: &str, bytes: &[u8]) {
    let stash = dir.join("stash");
    std::fs::create_dir_all(&stash).unwrap();
    std::fs::write(stash.join(name), bytes).unwrap();
    let home = dir.join("data/tenants").join(tenant);
    std::fs::rename(stash.join(name), home.join(name)).unwrap();
}

/// A `email,first,last` file of `rows` users `user<i>@big.example`, first name `<first><i>`.
pub fn users_csv(rows: usize, first: &str) -> Vec<u8> {
    let mut s = String::from("email,first,last\n");
    for i in 0..rows {
        s.push_str(&format!("user{i}@big.example,{first}{i},Last{i}\n"));
    }
    s.into_bytes()
}
