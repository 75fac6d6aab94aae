//! A file refused for being over `max_upload_bytes` is never archived, also when the process
//! stopped between the refusal's record and deleting the file, and the operator raised the
//! limit before the restart (review of 2026-12-02, finding 4): its record says it was not
//! archived, and it was never read, so its passwords were never blanked (design.md §6).

mod support;

use chrono::Utc;
use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;

fn config(dir: &Path, key: &PrivateKey) -> String {
    support::pipeline::one_tenant_config(
        dir,
        key,
        "max_upload_bytes = 400",
        "cdp",
        "file = \"users.csv\"\nmatch_by = \"email\"\n\
         [tenants.import.columns]\nemail = \"email\"\nfirst_name = \"first\"\n\
         last_name = \"last\"\npassword = \"password\"",
    )
}

const SECRET: &str = "Sup3rSecret!";

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        match path.is_dir() {
            true => out.extend(all_files(&path)),
            false => out.push(path),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_oversize_file_is_not_archived_after_the_limit_was_raised() {
    let mut p = Pipeline::start(config).await;
    if !p.server().store.is_embedded() {
        eprintln!("skipped: this test writes the embedded store directly (ROSTER_TEST_STORE)");
        return;
    }
    let mut big = String::from("email,first,last,password\n");
    for i in 0..20 {
        big.push_str(&format!("u{i}@x.example,First,Last,{SECRET}\n"));
    }
    // Copied in locally (SFTP stops an oversize upload itself).
    let dir = p.dir.path().to_path_buf();
    std::fs::write(dir.join("big.tmp"), &big).unwrap();
    std::fs::rename(dir.join("big.tmp"), p.home("cdp").join("users.csv")).unwrap();
    let refused = p.history_len("cdp", 1, 20).await.remove(0);
    assert_eq!(refused.status, ImportStatus::Error, "{refused:?}");
    assert_eq!(refused.archived_as, None, "{refused:?}");
    p.stop().await;

    // The same refusal, committed by a claim of this version that was not finished (the
    // process stopped before deleting the file).
    let claim = format!("{}-4242-0009-m", Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
    {
        let store = roster::store::Store::open(&dir.join("data/store")).unwrap();
        let mut record = refused.clone();
        record.id = store.new_import_id(Utc::now()).unwrap();
        store.record_claimed(&record, &claim, None, None).unwrap();
    }
    let folder = dir.join("data/work/cdp").join(&claim);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("users.csv"), &big).unwrap();
    // The operator raises the limit, then starts again.
    let text = std::fs::read_to_string(dir.join("roster.toml")).unwrap();
    let raised = text.replace("max_upload_bytes = 400", "max_upload_bytes = 100000");
    assert_ne!(text, raised);
    std::fs::write(dir.join("roster.toml"), raised).unwrap();
    p.start_again().await;
    for _ in 0..100 {
        if !folder.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!folder.exists(), "the committed claim is finished");
    for f in all_files(&p.home("cdp")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(SECRET),
            "{} keeps the passwords",
            f.display()
        );
    }
    let history = p.server().store.history("cdp", 10).unwrap();
    assert_eq!(history.len(), 2, "filed, not imported: {history:?}");
}
