//! A real `roster serve` process is killed with SIGKILL while it imports a large file, then
//! started again: afterwards there is exactly one complete run of that file, every user is in
//! the directory, and the file is archived — nothing lost, nothing applied twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: usize = 40_000;

fn write_config(dir: &Path) -> PathBuf {
    let hash = roster::sftp::auth::hash_password("pw-not-used").unwrap();
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
[tenants.import]
file = "users.csv"
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
    let mut s = String::from("email,first,last\n");
    for i in 0..ROWS {
        s.push_str(&format!("user{i}@big.example,First{i},Last{i}\n"));
    }
    s.into_bytes()
}

fn serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["serve", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn claims(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/work/big"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn archived(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("data/tenants/big/processed"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
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
            .filter(|r| matches!(r.status, roster::store::ImportStatus::Success))
            .collect();
        assert_eq!(applied.len(), 1, "round {round}: {history:?}");
        assert_eq!(applied[0].inserted, ROWS as u64, "round {round}");
        assert!(
            history
                .iter()
                .all(|r| r.status != roster::store::ImportStatus::Duplicate),
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
