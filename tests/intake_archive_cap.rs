//! What Roster keeps of its own runs stays bounded without ever blocking a tenant's uploads
//! (review s18 longrun F2, F3): the files in `processed/` and `errors/` do not count against
//! `max_tenant_entries` (the tenant cannot remove them), each archive folder keeps at most that
//! many files (the oldest go first), and without `[mail]` the `.eml` files in `data/outbox/`
//! are deleted with the longest `retention_days`. Real server, real SFTP uploads.

mod support;

use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::pipeline::Pipeline;

fn config(dir: &Path, key: &PrivateKey) -> String {
    support::pipeline::one_tenant_config(
        dir,
        key,
        "max_tenant_entries = 6",
        "cdp",
        "file = \"users.csv\"\nmatch_by = \"mapping_code\"\non_missing = \"deactivate\"\n\
         retention_days = 30\n[tenants.import.columns]\nmapping_code = \"userId\"\n\
         first_name = \"name\"\nlast_name = \"lastName\"\nemail = \"email\"",
    )
}

/// Run `i`'s file: two good users and one with a bad email, so the run is `partial` and files
/// both an archive (`processed/`) and a report (`errors/`).
fn partial_file(i: usize) -> Vec<u8> {
    format!(
        "userId,name,lastName,email\n\
         a,Ann{i},Lee,ann@example.com\n\
         b,Bob{i},Ray,bob@example.com\n\
         c,Cy{i},Fox,not-an-email\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenant_keeps_uploading_past_its_name_limit_of_archives() {
    let p = Pipeline::start(config).await;
    let c = p.client("cdp").await;
    let runs = 10;
    for i in 1..=runs {
        // Each upload creates a new name; before the fix the fourth was refused ("the
        // tenant's folder already holds 6 files and folders").
        c.put("users.csv", &partial_file(i))
            .await
            .unwrap_or_else(|e| panic!("upload {i} refused: {e:?}"));
        let h = p.history_len("cdp", i, 20).await;
        assert_eq!(h.len(), i);
        assert_eq!(h[0].status, ImportStatus::Partial, "{:?}", h[0].messages);
    }
    let history = p.server().store.history("cdp", 100).unwrap();
    for folder in ["processed", "errors"] {
        let files = p.files("cdp", folder);
        assert_eq!(files.len(), 6, "{folder}: {files:?}");
    }
    // The newest runs' files are the ones kept; the oldest are gone.
    let newest = &history[0];
    let archived = newest.archived_as.as_deref().unwrap();
    let report = newest.report.as_deref().unwrap();
    assert!(p.home("cdp").join(archived).is_file(), "{archived}");
    assert!(p.home("cdp").join(report).is_file(), "{report}");
    let oldest = history.last().unwrap();
    assert!(!p
        .home("cdp")
        .join(oldest.archived_as.as_deref().unwrap())
        .exists());

    // The tenant's own names are still counted: six in its home, then a refusal.
    let mut refused = None;
    for i in 1..=6 {
        if let Err(e) = c.put(&format!("own{i}.txt"), b"x").await {
            let why = format!("{e:?}");
            assert!(why.contains("max_tenant_entries"), "{why}");
            refused = Some(i);
            break;
        }
    }
    // `processed`, `errors` and four files of its own make six.
    assert_eq!(refused, Some(5), "the fifth file of its own was refused");
}

/// The config, and an outbox holding an `.eml` written 40 days ago and one written today.
fn config_with_old_mail(dir: &Path, key: &PrivateKey) -> String {
    let outbox = dir.join("data/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let old = outbox.join("20261020T010000.000Z-cdp-1.eml");
    std::fs::write(&old, b"Subject: old\r\n\r\nold\r\n").unwrap();
    let forty_days = Duration::from_secs(40 * 86_400);
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - forty_days).unwrap();
    std::fs::write(
        outbox.join("20261129T010000.000Z-cdp-2.eml"),
        b"Subject: new\r\n\r\nnew\r\n",
    )
    .unwrap();
    // Not an .eml: left alone whatever its age.
    let other = outbox.join("notes.txt");
    std::fs::write(&other, b"keep").unwrap();
    let f = std::fs::File::options().write(true).open(&other).unwrap();
    f.set_modified(SystemTime::now() - forty_days).unwrap();
    config(dir, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eml_files_older_than_retention_are_deleted() {
    let p = Pipeline::start(config_with_old_mail).await;
    let outbox = p.dir.path().join("data/outbox");
    // The sweep runs at start, then daily.
    let mut names = Vec::new();
    for _ in 0..50 {
        names = list(&outbox);
        if !names.iter().any(|n| n.contains("-cdp-1.eml")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        names,
        ["20261129T010000.000Z-cdp-2.eml", "notes.txt"],
        "the 40-day-old .eml is deleted (retention_days = 30)"
    );
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}
