//! The intake under attack, against a real server (`roster::serve::start`: SFTP listener,
//! intake, store, mail) with files put into tenant homes by a local process, as a local copy or
//! an attacker with access to the data folder would: a link swapped in for the tenant's file, an
//! archive folder planted as a link, a link to `/proc` in one home, a file over the size limit,
//! a tenant removed and added again, and temporary files left by a killed process.

mod support;

use roster::model::ImportStatus;
use roster::serve::RunningServer;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use support::sftp::eventually;

const EVIL: &str = "email,first_name,last_name\nevil@outside.example,Evil,Outside\n";

fn config(dir: &Path, with_beta: bool) -> String {
    let beta = if with_beta {
        "[[tenants]]\nid = \"beta\"\npassword_hash = \"$HASH\"\n"
    } else {
        ""
    };
    let hash = roster::login::hash_password("not-used-1").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
max_upload_bytes = 1000000
settle_ms = 50

[admin]
listen = "127.0.0.1:0"

[[tenants]]
id = "acme"
password_hash = "{hash}"
notify = ["hr@acme.example"]
[tenants.import]
retention_days = 30

{beta}
"#,
        dir = dir.display(),
    )
    .replace("$HASH", &hash)
}

struct Env {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    server: Option<RunningServer>,
}

impl Env {
    /// Writes the config; `prepare` may plant files before the server starts.
    async fn start(prepare: impl FnOnce(&Path)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("roster.toml");
        std::fs::write(&config_path, config(dir.path(), true)).unwrap();
        for t in ["acme", "beta"] {
            std::fs::create_dir_all(dir.path().join("data/tenants").join(t)).unwrap();
        }
        prepare(dir.path());
        let server = Some(roster::serve::start(&config_path).await.unwrap());
        Env {
            dir,
            config_path,
            server,
        }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    fn home(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data/tenants").join(tenant)
    }

    /// Puts `bytes` into the tenant root as a local copy does: written beside, renamed in.
    fn drop_in(&self, tenant: &str, name: &str, bytes: &[u8]) {
        let stash = self.dir.path().join("stash");
        std::fs::create_dir_all(&stash).unwrap();
        std::fs::write(stash.join(name), bytes).unwrap();
        std::fs::rename(stash.join(name), self.home(tenant).join(name)).unwrap();
    }

    async fn filed(&self, tenant: &str, n: usize, secs: u64) -> Vec<roster::model::ImportRecord> {
        support::history::wait_filed(&self.server().store, tenant, n, secs).await;
        self.server().store.history(tenant, 100).unwrap()
    }

    fn emails(&self, tenant: &str) -> Vec<String> {
        let users = self.server().store.users(tenant, None).unwrap();
        users.into_iter().filter_map(|u| u.email).collect()
    }

    fn claimed_files(&self, tenant: &str) -> Vec<PathBuf> {
        let work = self.dir.path().join("data/work").join(tenant);
        let Ok(rd) = std::fs::read_dir(work) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|claim| std::fs::read_dir(claim.path()).ok())
            .flat_map(|files| files.flatten().map(|f| f.path()))
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
    }
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

fn age(path: &Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

/// An attacker swaps the tenant's file for a link to an outside CSV, over and over, while the
/// intake picks the name up. Whatever the timing, the outside CSV is never imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_swapped_in_for_the_file_is_never_imported() {
    let env = Env::start(|_| {}).await;
    let outside = tempfile::tempdir().unwrap();
    let evil = outside.path().join("evil.csv");
    std::fs::write(&evil, EVIL).unwrap();
    let home = env.home("acme");
    let stash = env.dir.path().join("stash");
    std::fs::create_dir_all(&stash).unwrap();
    // Bounded: at most 400 rounds or 10 seconds.
    let attacker = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        let mut rounds = 0;
        while rounds < 400 && Instant::now() < end {
            let csv = format!("email,first_name,last_name\ngood{rounds}@acme.example,G,R\n");
            std::fs::write(stash.join("users.csv"), csv).unwrap();
            // Written an hour ago, as far as its time says: a run takes only a file that has
            // gone unmodified for the settle time (review s29), and this one must be taken.
            let file = std::fs::File::options()
                .write(true)
                .open(stash.join("users.csv"));
            let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
            file.unwrap().set_modified(an_hour_ago).unwrap();
            std::fs::rename(stash.join("users.csv"), home.join("users.csv")).unwrap();
            // The regular file stays a while, so the intake sees it and the link can replace
            // it between the intake's looks and its claim. A run takes a file only once two
            // looks a settle time apart saw it unchanged (review s30), about 100 ms after the
            // rename here: the file stays 60 to 160 ms, a different time each round, so some
            // rounds are claimed whole and some are swapped right at the claim.
            let hold = 60 + (rounds * 7) % 101;
            std::thread::sleep(Duration::from_millis(hold));
            let _ = std::fs::remove_file(stash.join("link"));
            std::os::unix::fs::symlink(&evil, stash.join("link")).unwrap();
            std::fs::rename(stash.join("link"), home.join("users.csv")).unwrap();
            rounds += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(home.join("users.csv"));
        rounds
    });
    let rounds = tokio::task::spawn_blocking(move || attacker.join().unwrap())
        .await
        .unwrap();
    // Let the runs that were claimed finish.
    let env_ref = &env;
    eventually(
        60,
        || async move { env_ref.claimed_files("acme").is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = env.server().store.history("acme", 1000).unwrap();
    let emails = env.emails("acme");
    eprintln!(
        "{rounds} swaps, {} runs, {} users",
        history.len(),
        emails.len()
    );
    assert!(
        !emails.iter().any(|e| e.contains("outside")),
        "an outside CSV was imported through a link: {emails:?}"
    );
    assert!(
        !history.is_empty(),
        "no run at all: the test proved nothing"
    );
    assert!(outside.path().join("evil.csv").is_file());
    env.stop().await;
}

/// `processed/` and `errors/` planted as links to an outside folder: nothing is written there,
/// the file stays claimed, and once the folders are real again the run is filed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_folders_planted_as_links_are_refused_then_retried() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_path_buf();
    let env = Env::start(|dir| {
        let home = dir.join("data/tenants/acme");
        std::os::unix::fs::symlink(&out, home.join("processed")).unwrap();
        std::os::unix::fs::symlink(&out, home.join("errors")).unwrap();
    })
    .await;
    env.drop_in(
        "acme",
        "users.csv",
        b"email,first_name,last_name\nana@acme.example,Ana,A\n",
    );
    let store = env.server().store.clone();
    let recorded = eventually(30, || {
        let store = store.clone();
        async move { store.history("acme", 10).unwrap().len() == 1 }
    })
    .await;
    assert!(recorded, "the run was not recorded");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count_entries(outside.path()),
        0,
        "archives were written outside the home"
    );
    assert_eq!(
        env.claimed_files("acme").len(),
        1,
        "the file is kept in its claim"
    );
    // The record was committed complete: it names where the file goes (nothing written yet).
    let history = env.server().store.history("acme", 10).unwrap();
    let planned = history[0]
        .archived_as
        .clone()
        .expect("the committed record names the archive");
    assert!(planned.starts_with("processed/users."), "{history:?}");

    // The operator replaces the links with folders: the retry files the run.
    for f in ["processed", "errors"] {
        std::fs::remove_file(env.home("acme").join(f)).unwrap();
        std::fs::create_dir(env.home("acme").join(f)).unwrap();
    }
    let history = env.filed("acme", 1, 60).await;
    let archived = history[0]
        .archived_as
        .clone()
        .expect("filed after the retry");
    assert!(env.home("acme").join(&archived).is_file(), "{archived}");
    assert_eq!(archived, planned, "filed exactly where the record said");
    assert_eq!(history.len(), 1, "one run, not two: {history:?}");
    assert!(env.claimed_files("acme").is_empty());
    assert_eq!(count_entries(outside.path()), 0);
    env.stop().await;
}

/// Retention never sweeps through an archive folder that is a link (while it still sweeps a
/// real one, which shows the sweep ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_never_deletes_through_a_link() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("important.csv");
    std::fs::write(&victim, b"keep me").unwrap();
    age(&victim, 400);
    let out = outside.path().to_path_buf();
    let env = Env::start(|dir| {
        std::os::unix::fs::symlink(&out, dir.join("data/tenants/acme/processed")).unwrap();
        let real = dir.join("data/tenants/beta/processed");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("old.csv"), b"old").unwrap();
        age(&real.join("old.csv"), 400);
    })
    .await;
    let swept = env.home("beta").join("processed/old.csv");
    let ran = eventually(30, || {
        let swept = swept.clone();
        async move { !swept.exists() }
    })
    .await;
    assert!(ran, "the retention sweep did not run");
    assert!(
        victim.is_file(),
        "retention deleted a file outside the home"
    );
    env.stop().await;
}

/// Copies a file into beta's home the way a local copy does (only the watcher sees it) and
/// asserts it is imported.
async fn beta_copy_is_picked_up(env: Env) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.drop_in(
        "beta",
        "users.csv",
        b"email,first_name,last_name\nbo@beta.example,Bo,B\n",
    );
    let history = env.filed("beta", 1, 30).await;
    assert_eq!(history.len(), 1, "the file copied in was not picked up");
    assert_eq!(env.emails("beta"), ["bo@beta.example"]);
    env.stop().await;
}

/// A link to `/proc` in one home does not stop the folder watcher: another tenant's file,
/// copied in locally (only the watcher sees it), is still imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_to_proc_does_not_stop_the_watcher() {
    let env = Env::start(|dir| {
        std::os::unix::fs::symlink("/proc", dir.join("data/tenants/acme/proc")).unwrap();
    })
    .await;
    std::os::unix::fs::symlink("/proc", env.home("acme").join("proc2")).unwrap();
    beta_copy_is_picked_up(env).await;
}

/// The folder of tenant homes replaced under a running server (restored from a backup, moved
/// aside and re-created): the watcher on the old folder sees nothing more, so it is noticed,
/// logged, watched again and rescanned, and a file copied in afterwards is imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_tenant_folder_is_watched_again() {
    let env = Env::start(|_| {}).await;
    let tenants = env.dir.path().join("data/tenants");
    let old = env.dir.path().join("data/tenants.old");
    std::fs::rename(&tenants, &old).unwrap();
    std::fs::create_dir(&tenants).unwrap();
    for id in ["acme", "beta"] {
        std::fs::rename(old.join(id), tenants.join(id)).unwrap();
    }
    beta_copy_is_picked_up(env).await;
}

/// A file over `max_upload_bytes` (a valid CSV that got there other than through an SFTP
/// write) is refused by the intake with a record naming its size and the limit; nothing of it is
/// imported and, unread and so not blanked, it is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_over_the_limit_is_refused_with_a_record() {
    let env = Env::start(|_| {}).await;
    let mut csv = String::from("email,first_name,last_name\n");
    let mut i = 0;
    while csv.len() <= 1_000_000 {
        csv.push_str(&format!("user{i:07}@acme.example,Name{i:07},L\n"));
        i += 1;
    }
    let size = csv.len();
    env.drop_in("acme", "users.csv", csv.as_bytes());
    let history = env.filed("acme", 1, 60).await;
    let r = &history[0];
    eprintln!(
        "{size} bytes: status {}, {} inserted, {:?}",
        r.status, r.counts.inserted, r.messages
    );
    assert_eq!(r.status, ImportStatus::Error, "{r:?}");
    assert!(
        r.messages[0].contains(&format!("{size} bytes")) && r.messages[0].contains("1000000 bytes"),
        "{:?}",
        r.messages
    );
    // Not read, so not blanked: the file is not kept anywhere (it may hold passwords).
    assert_eq!(r.archived_as, None, "{r:?}");
    for folder in ["", "errors", "processed"] {
        let names: Vec<_> = std::fs::read_dir(env.home("acme").join(folder))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !names.iter().any(|n| {
                let n = n.to_string_lossy();
                n.starts_with("users.") && !n.ends_with(".report.csv")
            }),
            "{folder}: {names:?}"
        );
    }
    assert!(env.emails("acme").is_empty());
    env.stop().await;
}

/// A file left in the home of a tenant while it was removed from the config is imported when a
/// reload adds the tenant again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readded_tenant_gets_its_waiting_file_imported() {
    let env = Env::start(|_| {}).await;
    let handle = env.server().sftp.config.clone();
    std::fs::write(&env.config_path, config(env.dir.path(), false)).unwrap();
    handle.reload().unwrap();
    assert!(handle.current().tenant("beta").is_none());
    env.drop_in(
        "beta",
        "users.csv",
        b"email,first_name,last_name\nbo@beta.example,Bo,B\n",
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(env.server().store.history("beta", 10).unwrap().is_empty());

    std::fs::write(&env.config_path, config(env.dir.path(), true)).unwrap();
    handle.reload().unwrap();
    let history = env.filed("beta", 1, 30).await;
    assert_eq!(
        history.len(),
        1,
        "the waiting file was not imported after the re-add"
    );
    assert_eq!(env.emails("beta"), ["bo@beta.example"]);
    env.stop().await;
}

/// Temporary files a killed process leaves are removed at start; a pending claim is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporary_files_left_by_a_crash_are_cleaned_at_start() {
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let spill = std::env::temp_dir().join(format!("roster-rows-{dead_pid}-0-42"));
    let planted: std::sync::Mutex<Vec<PathBuf>> = Default::default();
    let env = Env::start(|dir| {
        let mut p = planted.lock().unwrap();
        let outbox = dir.join("data/outbox");
        std::fs::create_dir_all(&outbox).unwrap();
        p.push(outbox.join(".20261129T000000.000Z-acme-0.eml.tmp"));
        p.push(outbox.join(".20261129T000000.000Z-acme-1.eml.1.tmp"));
        let processed = dir.join("data/tenants/acme/processed");
        std::fs::create_dir_all(&processed).unwrap();
        p.push(processed.join("users.20261129T000000Z.csv.roster-tmp"));
        let work = dir.join("data/work/acme");
        std::fs::create_dir_all(work.join("20261129T000000.000000Z-1-0000")).unwrap();
        p.push(work.join("stray.tmp"));
        p.push(spill.clone());
        for f in p.iter() {
            std::fs::write(f, b"left over").unwrap();
        }
        std::fs::write(
            work.join("20261129T000000.000000Z-1-0000/users.csv"),
            b"email,first_name,last_name\nana@acme.example,Ana,A\n",
        )
        .unwrap();
    })
    .await;
    for f in planted.lock().unwrap().iter() {
        assert!(!f.exists(), "{} was not cleaned", f.display());
    }
    let history = env.filed("acme", 1, 30).await;
    assert_eq!(history.len(), 1, "the pending claim was not finished");
    assert_eq!(env.emails("acme"), ["ana@acme.example"]);
    env.stop().await;
}
