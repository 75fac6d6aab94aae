//! The embedded store failing every write under a running `roster serve` (review of
//! 2026-11-30, config F2): sled keeps its first I/O error (a full disk) and fails every later
//! write with it. The server must say so, `GET /health` answering 503 with the error, and after
//! a minute of failures stop with status 1 so that its supervisor starts it again.
//!
//! The failure is real: the server runs with a file size limit (`RLIMIT_FSIZE`, 8 MiB, the
//! signal it raises ignored), so its store's writes fail with `EFBIG` once an import has grown
//! the store's file to the limit, as they fail with `ENOSPC` on a full disk.

#[path = "support/process.rs"]
mod process;

use process::{drop_in, free_port, users_csv, wait_until};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "write-failure-token-0c7e2a91f4b6d8e0a2c5";

fn config(dir: &std::path::Path, admin_port: u16) -> String {
    let hash = roster::login::hash_password("pw-not-used").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[cluster]
lease_secs = 3

[[tenants]]
id = "big"
password_hash = "{hash}"
[tenants.import]
file = "users.csv"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"
"#,
        dir = dir.display()
    )
}

/// (status, body) of `GET /health`; status 0 when nothing answers.
fn health(admin_port: u16) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    match agent
        .get(format!("http://127.0.0.1:{admin_port}/health"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
    {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

#[test]
fn a_store_that_cannot_write_fails_health_and_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let path = dir.path().join("roster.toml");
    std::fs::write(&path, config(dir.path(), admin_port)).unwrap();
    std::fs::create_dir_all(dir.path().join("data/tenants/big")).unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["serve", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 8 << 20,
                rlim_max: 8 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || health(admin_port).0 == 200),
        "the server did not start\n{}",
        logs()
    );

    // An import that grows the store past the limit: from then on every write fails.
    drop_in(dir.path(), "big", "users.csv", &users_csv(60_000, "First"));
    let mut seen = (0, String::new());
    let failing = wait_until(Duration::from_secs(60), || {
        seen = health(admin_port);
        seen.0 == 503
    });
    assert!(
        failing,
        "/health never said the store fails: {seen:?}\n{}",
        logs()
    );
    assert!(seen.1.contains("the store cannot write"), "{}", seen.1);
    assert!(seen.1.contains("File too large"), "{}", seen.1);

    // A minute of failed writes later the process ends, for its supervisor to restart it.
    let mut status = None;
    let stopped = wait_until(Duration::from_secs(120), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !stopped {
        let _ = child.kill();
    }
    assert!(
        stopped,
        "the server kept running on a broken store\n{}",
        logs()
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", logs());
    assert!(logs().contains("stopping so that a restart opens it again"));
}
