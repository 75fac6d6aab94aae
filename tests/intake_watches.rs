//! The folder watcher watches `data/tenants` and each tenant folder, not the folders a tenant
//! makes inside its own (review of 2026-11-30, third round, F6): with a watch per sub-folder, a
//! tenant could use up the server user's inotify watches with MKDIR and stop every tenant's
//! pickup. A real `roster serve` process; its watches are counted in `/proc/PID/fdinfo`.

mod support;

use std::path::Path;
use std::time::Duration;
use support::process::{drop_in, serve, wait_until, KillOnDrop};

/// Inotify watches the process `pid` holds, over all its inotify descriptors.
fn inotify_watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut n = 0;
    for fd in fds.flatten() {
        let inotify =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"));
        if inotify {
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let text = std::fs::read_to_string(info).unwrap_or_default();
            n += text
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    n
}

/// Files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

#[test]
fn folders_a_tenant_makes_cost_no_watch_and_uploads_are_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("roster.toml");
    let key = russh::keys::PrivateKey::random(&mut rand10::rng(), russh::keys::Algorithm::Ed25519)
        .unwrap();
    let text = support::sftp::config_text(dir.path(), key.public_key(), "");
    std::fs::write(&config, text).unwrap();
    let server = KillOnDrop(serve(&config));
    let pid = server.0.id();
    let home = data.join("tenants/acme");
    let up = || home.is_dir() && inotify_watches(pid) > 0;
    assert!(
        wait_until(Duration::from_secs(30), up),
        "server did not start"
    );
    // The first import shows the watcher is running.
    drop_in(
        dir.path(),
        "acme",
        "users.csv",
        b"email,first_name,last_name\na@x.example,A,A\n",
    );
    // Claimed (moved out of the home) once the watcher saw it.
    let claimed = || !home.join("users.csv").exists();
    assert!(wait_until(Duration::from_secs(30), claimed), "no import");
    assert!(wait_until(Duration::from_secs(30), || files_in(
        &home.join("processed")
    ) > 0));
    let before = inotify_watches(pid);

    for i in 0..200 {
        std::fs::create_dir_all(home.join(format!("junk{i}/deeper"))).unwrap();
    }
    // A second upload, seen after the folders (the watcher's events come in order).
    drop_in(
        dir.path(),
        "acme",
        "users.csv",
        b"email,first_name,last_name\nb@x.example,B,B\n",
    );
    assert!(
        wait_until(Duration::from_secs(30), claimed),
        "no second import"
    );
    let after = inotify_watches(pid);
    assert!(
        after <= before,
        "{} watches for 400 folders a tenant made (before {before})",
        after - before
    );
}
