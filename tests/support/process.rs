//! A real `roster serve` process for the tests that kill one (kill -9) or run several: start it
//! on a config file, find a free port for its listeners, and poll for an outcome.
//!
//! Include it with `#[path = "support/process.rs"] mod process;` (or through `support`).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

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
