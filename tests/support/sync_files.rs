//! Small generated files for the sync tests (`import_sync.rs`, `import_hold.rs`; the tenant
//! also for `changes_log.rs` and `import_rows.rs`): a tenant
//! whose file has a code, names, an email, a title and a password, rows made from
//! `(number, title, password)`, and one run of a file through the import engine.

use super::test_store;
use roster::config::{MatchBy, OnMissing, Tenant};
use roster::import::{run_bytes, RunOptions};
use roster::store::Store;

#[allow(dead_code)] // not every test file that includes this uses each helper
pub fn tenant(on_missing: OnMissing, match_by: MatchBy) -> Tenant {
    let columns = [
        ("mapping_code", "Code"),
        ("first_name", "First"),
        ("last_name", "Last"),
        ("email", "Email"),
        ("job_title", "Title"),
        ("password", "Password"),
    ];
    Tenant::for_import("t1", match_by, on_missing, &columns)
}

#[allow(dead_code)] // not every test file that includes this uses each helper
pub fn file(rows: &[(u32, &str, &str)]) -> Vec<u8> {
    let mut s = String::from("Code;First;Last;Email;Title;Password\n");
    for (i, title, pw) in rows {
        s.push_str(&format!(
            "C{i:03};First{i};Last{i};user{i}@x.example;{title};{pw}\n"
        ));
    }
    s.into_bytes()
}

#[allow(dead_code)] // not every test file that includes this uses each helper
pub fn users(n: u32) -> Vec<(u32, &'static str, &'static str)> {
    (0..n).map(|i| (i, "Engineer", "")).collect()
}

#[allow(dead_code)] // not every test file that includes this uses each helper
pub fn open() -> (Store, test_store::TempStore) {
    test_store::temp_store()
}

#[allow(dead_code)] // not every test file that includes this uses each helper
pub fn go(store: &Store, t: &Tenant, bytes: &[u8]) -> roster::import::ImportOutcome {
    run_bytes(store, t, "users.csv", bytes, &RunOptions::default()).expect("run")
}
