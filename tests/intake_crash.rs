//! A real `roster serve` process is killed with SIGKILL while it imports a large file, then
//! started again: afterwards there is exactly one complete run of that file, every user is in
//! the directory, and the file is archived — nothing lost, nothing applied twice. And a claim
//! is finished as its own run: an earlier run of the same name and bytes never stands in for it.

#[path = "support/process.rs"]
mod process;
use process::{serve, users_csv, wait_until};

use std::path::{Path, PathBuf};
use std::time::Duration;

const ROWS: usize = 40_000;

fn write_config(dir: &Path) -> PathBuf {
    write_config_with(dir, "users.csv", "")
}

fn write_config_with(dir: &Path, file: &str, extra: &str) -> PathBuf {
    let hash = roster::login::hash_password("pw-not-used").unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/data"
settle_ms = 100

[admin]
listen = "127.0.0.1:0"

[[tenants]]
id = "big"
password_hash = "{hash}"
{extra}
[tenants.import]
file = "{file}"
on_missing = "deactivate"
[tenants.import.columns]
email = "email"
first_name = "first"
last_name = "last"
"#,
        dir = dir.display()
    );
    let path = dir.join("roster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn big_csv() -> Vec<u8> {
    users_csv(ROWS, "First")
}

/// Puts a file into tenant `big`'s home the way a local copy does.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    process::drop_in(dir, "big", name, bytes);
}

fn mails(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/outbox"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

fn claims(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/work/big"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn archived(dir: &Path) -> Vec<String> {
    let mut names = archived_unsorted(dir);
    names.sort();
    names
}

fn archived_unsorted(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("data/tenants/big/processed"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn killed_during_an_import_then_restarted_runs_exactly_once() {
    let data = big_csv();
    // Kill at different moments of the run: as soon as it starts, and later into it.
    for (round, delay_ms) in [0u64, 150, 400, 900].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let config = write_config(dir);
        let home = dir.join("data/tenants/big");
        std::fs::create_dir_all(&home).unwrap();
        // A finished upload waiting at start (as after a stop right after the upload).
        std::fs::write(home.join("users.csv"), &data).unwrap();

        let mut child = serve(&config);
        let started = wait_until(Duration::from_secs(60), || claims(dir) > 0);
        assert!(started, "round {round}: the import never started");
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Restart; let it finish whatever was left.
        let mut child = serve(&config);
        let done = wait_until(Duration::from_secs(120), || {
            claims(dir) == 0 && !archived(dir).is_empty()
        });
        // Stop it gracefully so the store can be opened here.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap();
        assert!(
            done,
            "round {round}: the run was not finished after the restart"
        );

        let store = roster::store::Store::open(&dir.join("data/store")).unwrap();
        let history = store.history("big", 10).unwrap();
        let applied: Vec<_> = history
            .iter()
            .filter(|r| matches!(r.status, roster::model::ImportStatus::Success))
            .collect();
        assert_eq!(applied.len(), 1, "round {round}: {history:?}");
        assert_eq!(applied[0].counts.inserted, ROWS as u64, "round {round}");
        assert!(
            history
                .iter()
                .all(|r| r.status != roster::model::ImportStatus::Duplicate),
            "round {round}: the same file was run twice: {history:?}"
        );
        assert_eq!(
            store.users("big", None).unwrap().len(),
            ROWS,
            "round {round}"
        );
        assert_eq!(archived(dir).len(), 1, "round {round}");
        assert!(!home.join("users.csv").exists());
    }
}

/// The A, B, A sequence: `big_R.csv` (version A) is applied, `big_S.csv` (version B) is
/// applied, then `big_R.csv` with A's bytes again is claimed and the server is killed with
/// SIGKILL mid-import. After a restart that claim must be finished as its own run: the users
/// have version A, a third history record exists, the first run's record is untouched, and
/// exactly one mail per run went out.
#[test]
fn killed_reimport_of_earlier_bytes_is_finished_as_its_own_run() {
    let (a, b) = (users_csv(ROWS, "A"), users_csv(ROWS, "B"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config_with(dir, "big_*.csv", "notify = [\"hr@big.example\"]");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("on_missing", "report = \"always\"\non_missing"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data/tenants/big")).unwrap();

    let mut child = serve(&config);
    drop_in(dir, "big_R.csv", &a);
    assert!(
        wait_until(Duration::from_secs(120), || archived(dir).len() == 1),
        "run 1"
    );
    let first_archive = format!("processed/{}", archived(dir)[0]);
    drop_in(dir, "big_S.csv", &b);
    assert!(
        wait_until(Duration::from_secs(120), || archived(dir).len() == 2),
        "run 2"
    );
    drop_in(dir, "big_R.csv", &a);
    assert!(
        wait_until(Duration::from_secs(60), || claims(dir) > 0),
        "run 3 never started"
    );
    child.kill().unwrap(); // SIGKILL, mid-import
    child.wait().unwrap();
    let committed_before_kill = archived(dir).len();

    let mut child = serve(&config);
    let done = wait_until(Duration::from_secs(120), || {
        claims(dir) == 0 && archived(dir).len() == 3 && mails(dir) >= 3
    });
    std::thread::sleep(Duration::from_millis(500)); // a wrong extra mail would show by now
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap();
    assert_eq!(
        committed_before_kill, 2,
        "the kill came after the third run was filed"
    );
    assert!(
        done,
        "the third run was not finished after the restart: {:?}",
        archived(dir)
    );

    let store = roster::store::Store::open(&dir.join("data/store")).unwrap();
    let mut history = store.history("big", 10).unwrap();
    history.reverse(); // oldest first
    let users = store.users("big", None).unwrap();
    let version_a = users
        .iter()
        .filter(|u| u.first_name.as_deref().is_some_and(|f| f.starts_with('A')))
        .count();
    eprintln!(
        "after restart: {} records, {version_a} of {} users on version A, {} mails, first record archived_as {:?} (was {first_archive})",
        history.len(),
        users.len(),
        mails(dir),
        history[0].archived_as
    );
    let files: Vec<_> = history.iter().map(|r| r.file.as_str()).collect();
    assert_eq!(
        files,
        ["big_R.csv", "big_S.csv", "big_R.csv"],
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .all(|r| r.status == roster::model::ImportStatus::Success),
        "{history:?}"
    );
    assert_eq!(
        history[2].counts.updated, ROWS as u64,
        "the third run applied version A again"
    );
    assert_eq!(
        history[0].archived_as.as_deref(),
        Some(first_archive.as_str()),
        "the first run's record is untouched"
    );
    assert_ne!(history[2].archived_as, history[0].archived_as);
    assert_eq!(users.len(), ROWS);
    assert!(
        users
            .iter()
            .all(|u| u.first_name.as_deref().is_some_and(|f| f.starts_with('A'))),
        "users keep version B"
    );
    assert_eq!(mails(dir), 3, "exactly one mail per run");
}
