//! Stopping and starting a real `roster serve` process (review s30), with real signals and
//! sockets:
//!
//! - SIGTERM while an admin request is in flight (a preview whose body keeps trickling in):
//!   SFTP stops accepting at once, a file dropped in afterwards is not imported, and the
//!   process exits within the admin stop's bound instead of waiting for the request (F1);
//! - a second SIGTERM exits at once with status 143 (F2);
//! - an admin port taken by another listener fails the start (status 1, the sentence) before
//!   any import: the file waiting in the tenant folder stays where it was (F3); with
//!   `--log-format json` that error is a JSON line like the rest of stderr (F6);
//! - a store that cannot be flushed at the stop (sled failing every write: the process runs
//!   under a file size limit, as on a full disk) ends the stop with status 1 (F4).

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::process::{free_port, wait_until, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_roster");
const TOKEN: &str = "serve-stop-test-admin-token-0123456789";

/// A config with tenant `acme` (its home made) under `dir`; SFTP and admin on the given ports.
fn config(dir: &Path, sftp: u16, admin: u16) -> PathBuf {
    let d = dir.display();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{sftp}\"\nhost_keys = \"{d}/host_keys\"\ndata_dir = \"{d}/data\"\nsettle_ms = 200\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
         [[tenants]]\nid = \"acme\"\nauthorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDzq2Cb+8N6l3G7MxJm9sc5k1sYSdW0YGSTkLx+lw8/9 t\"]\n\
         [tenants.import]\nfile = \"users.csv\"\nreport = \"never\"\n"
    );
    std::fs::create_dir_all(dir.join("data/tenants/acme")).unwrap();
    let path = dir.join("roster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `roster serve`, its log in `dir/serve.log`.
fn spawn(config: &Path, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// The child's exit status once it ends within `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

const CSV: &str = "email,first_name,last_name\nann@acme.example,Ann,Lee\n";

/// Starts `roster serve` and waits until it has imported a first file (so the intake runs).
fn started(dir: &Path, sftp: u16, admin: u16) -> KillOnDrop {
    let config = config(dir, sftp, admin);
    let serve = KillOnDrop(spawn(&config, dir));
    let home = dir.join("data/tenants/acme");
    std::fs::write(dir.join("users.csv"), CSV).unwrap();
    std::fs::rename(dir.join("users.csv"), home.join("users.csv")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || !home.join("users.csv").exists()
            && TcpStream::connect(("127.0.0.1", admin)).is_ok()),
        "roster serve did not start and import:\n{}",
        log(dir)
    );
    serve
}

/// A preview request whose body trickles in at 4 KiB a second (faster than the listener's
/// least rate, so it is never cut off) until `stop`: an admin request in flight for as long as
/// the test likes.
fn trickling_preview(admin: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut conn = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    let head = format!(
        "POST /api/tenants/acme/preview HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \
         {TOKEN}\r\nContent-Type: text/csv\r\nContent-Length: 100000000\r\n\r\n\
         email,first_name,last_name\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let row = "trickle@acme.example,Tri,Ckle\n".repeat(140);
        while !stop.load(Ordering::SeqCst) {
            if conn.write_all(row.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn sigterm_stops_sftp_and_imports_first_and_does_not_wait_for_an_admin_request() {
    let dir = tempfile::tempdir().unwrap();
    let (sftp, admin) = (free_port(), free_port());
    let mut serve = started(dir.path(), sftp, admin);
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = trickling_preview(admin, stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    let sent = Instant::now();
    signal(&serve.0, libc::SIGTERM);
    // SFTP takes no new sessions at once, while the admin request still holds the stop.
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect((
            "127.0.0.1",
            sftp
        ))
        .is_err()),
        "SFTP still accepts connections after SIGTERM:\n{}",
        log(dir.path())
    );
    // A file arriving now is left for the next start, not imported by a stopping server.
    let home = dir.path().join("data/tenants/acme");
    std::fs::write(dir.path().join("users.csv"), CSV).unwrap();
    std::fs::rename(dir.path().join("users.csv"), home.join("users.csv")).unwrap();

    let status = exit_within(&mut serve.0, Duration::from_secs(40));
    stop.store(true, Ordering::SeqCst);
    let _ = trickle.join();
    let log = log(dir.path());
    let status = status.unwrap_or_else(|| {
        panic!(
            "roster serve still running {:?} after SIGTERM:\n{log}",
            sent.elapsed()
        )
    });
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "{:?}",
        sent.elapsed()
    );
    assert!(log.contains("closing their connections"), "{log}");
    assert!(
        home.join("users.csv").exists(),
        "a file that arrived after SIGTERM was imported:\n{log}"
    );
}

#[test]
fn a_second_sigterm_exits_at_once_with_status_143() {
    let dir = tempfile::tempdir().unwrap();
    let (sftp, admin) = (free_port(), free_port());
    let mut serve = started(dir.path(), sftp, admin);
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = trickling_preview(admin, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    signal(&serve.0, libc::SIGTERM);
    // The first one has started the stop, which the admin request holds for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    signal(&serve.0, libc::SIGTERM);
    let status = exit_within(&mut serve.0, Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let _ = trickle.join();
    let log = log(dir.path());
    let status = status.unwrap_or_else(|| panic!("still running after a second SIGTERM:\n{log}"));
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    assert!(log.contains("second stop signal"), "{log}");
}

#[test]
fn a_taken_admin_port_fails_the_start_before_any_import() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().port();
    let config = config(dir.path(), free_port(), admin);
    let home = dir.path().join("data/tenants/acme");
    std::fs::write(home.join("users.csv"), CSV).unwrap();
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "roster: cannot listen on 127.0.0.1:{admin} for the admin API"
        )),
        "{said}"
    );
    assert!(
        home.join("users.csv").exists(),
        "the waiting file was imported (or claimed) by a start that failed:\n{said}"
    );
    assert!(!said.contains("run finished"), "{said}");
    let archive = dir.path().join("data/tenants/acme/processed");
    assert!(
        !archive.exists() || std::fs::read_dir(&archive).unwrap().next().is_none(),
        "{said}"
    );

    // The same failure with --log-format json: every line of stderr is JSON, the last the error.
    let out = Command::new(BIN)
        .args(["--log-format", "json", "-c"])
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let lines: Vec<serde_json::Value> = said
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("no line: {said}"));
    assert_eq!(last["level"], "ERROR", "{said}");
    let message = last["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("roster: cannot listen on 127.0.0.1:") && message.contains("admin API"),
        "{said}"
    );
    assert!(home.join("users.csv").exists(), "{said}");
    drop(taken);
}

/// A file of `rows` users for the `acme` tenant's default columns.
fn many_users(rows: usize) -> String {
    let mut s = String::from("email,first_name,last_name\n");
    for i in 0..rows {
        s.push_str(&format!("user{i}@acme.example,First{i},Last{i}\n"));
    }
    s
}

#[test]
fn a_store_that_cannot_be_flushed_at_the_stop_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = config(dir.path(), free_port(), admin);
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
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
    let mut serve = KillOnDrop(cmd.spawn().unwrap());
    let health = || {
        let mut c = TcpStream::connect(("127.0.0.1", admin)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let ask = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        );
        c.write_all(ask.as_bytes()).ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut c, &mut answer).ok()?;
        answer.get(9..12).map(str::to_string)
    };
    assert!(
        wait_until(Duration::from_secs(60), || health().as_deref()
            == Some("200")),
        "did not start:\n{}",
        log(dir.path())
    );
    // An import that grows the store past the limit: from then on every write fails.
    let home = dir.path().join("data/tenants/acme");
    std::fs::write(dir.path().join("users.csv"), many_users(60_000)).unwrap();
    std::fs::rename(dir.path().join("users.csv"), home.join("users.csv")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || health().as_deref()
            == Some("503")),
        "the store never failed:\n{}",
        log(dir.path())
    );
    signal(&serve.0, libc::SIGTERM);
    let status = exit_within(&mut serve.0, Duration::from_secs(50));
    let log = log(dir.path());
    let status = status.unwrap_or_else(|| panic!("still running after SIGTERM:\n{log}"));
    assert!(log.contains("cannot flush the store"), "{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        !log.contains("stopping so that a restart opens it again"),
        "{log}"
    );
}
