//! Taking over what the first version (0076460) left on disk (review s19 upgrade F2): a claim
//! folder named `<UTC time>-NNNN` and no claim stamp. If the file ledger shows that file name
//! finished with those very bytes after the claim was made, the run committed and is only
//! filed; otherwise it is imported as any unfinished claim is. Real server, real SFTP upload.
//! (F1, the first version's bare sha256 and `duplicate`: `import_sync.rs`.) And the mail of a
//! committed claim a restart finishes: queued with the record since session 24 (claim ids
//! ending in `-m`), so not queued again; queued at filing for a claim an earlier version left.

mod support;

use chrono::{DateTime, Utc};
use russh::keys::PrivateKey;
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;

fn config(dir: &Path, key: &PrivateKey) -> String {
    support::pipeline::one_tenant_config(
        dir,
        key,
        "",
        "cdp",
        "file = \"users.csv\"\nmatch_by = \"mapping_code\"\non_missing = \"deactivate\"\n\
         [tenants.import.columns]\nmapping_code = \"userId\"\nfirst_name = \"name\"\n\
         last_name = \"last\"",
    )
}

const FILE: &[u8] = b"userId,name,last\nu1,Ann,Lee\nu2,Bob,Ray\nu3,Cy,Fox\n";

/// Moves `home/rel` into a claim folder named as the first version named them, made at `at`.
fn first_version_claim(p: &Pipeline, rel: &str, at: DateTime<Utc>) -> std::path::PathBuf {
    let id = format!("{}-0003", at.format("%Y%m%dT%H%M%S%.6fZ"));
    let claim = p.dir.path().join("data/work/cdp").join(id);
    std::fs::create_dir_all(&claim).unwrap();
    std::fs::rename(p.home("cdp").join(rel), claim.join("users.csv")).unwrap();
    claim
}

/// Waits until `path` is gone (the claim was finished).
async fn finished(path: &Path) {
    for _ in 0..100 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was not finished", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_the_first_version_committed_is_filed_not_imported_again() {
    let mut p = Pipeline::start(config).await;
    p.client("cdp").await.put("users.csv", FILE).await.unwrap();
    let run = p.history_len("cdp", 1, 20).await.remove(0);
    let archived = run.archived_as.clone().unwrap();
    p.stop().await;

    // The first version crashed after its commit, before filing: its claim folder still holds
    // the file, and the ledger entry of users.csv (written by the commit) is newer than it.
    let claimed_at = run.received_at - chrono::Duration::seconds(1);
    let claim = first_version_claim(&p, &archived, claimed_at);
    p.start_again().await;
    finished(&claim).await;
    let history = p.server().store.history("cdp", 10).unwrap();
    assert_eq!(history.len(), 1, "imported again: {history:?}");
    assert_eq!(
        std::fs::read(p.home("cdp").join(&archived)).unwrap(),
        FILE,
        "filed where its record says"
    );
    p.stop().await;

    // A claim made after the ledger's entry never committed: it is imported (here the same
    // bytes again, so a `duplicate`).
    let claim = first_version_claim(&p, &archived, Utc::now());
    p.start_again().await;
    finished(&claim).await;
    let history = p.history_len("cdp", 2, 20).await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0].status, roster::model::ImportStatus::Duplicate);
}

/// The `.eml` files the mail worker wrote (no `[mail]`: each queued message becomes one).
fn emls(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/outbox"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the worker wrote `n` `.eml` files, then a little longer for a wrong extra one.
async fn emls_reach(dir: &Path, n: usize) -> usize {
    for _ in 0..100 {
        if emls(dir) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    emls(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_claim_is_mailed_once_whichever_version_made_it() {
    let mut p = Pipeline::start(|dir, key| {
        let text = config(dir, key)
            .replace(
                "[tenants.import]\n",
                "notify = [\"hr@x.example\"]\n[tenants.import]\nreport = \"always\"\n",
            )
            .replace(
                "settle_ms = 100\n",
                "settle_ms = 100\nmax_upload_bytes = 400\n",
            );
        assert!(text.contains("notify = "), "{text}");
        text
    })
    .await;
    if !p.server().store.is_embedded() {
        eprintln!("skipped: this test writes the embedded store directly (ROSTER_TEST_STORE)");
        return;
    }
    p.client("cdp").await.put("users.csv", FILE).await.unwrap();
    let run = p.history_len("cdp", 1, 20).await.remove(0);
    let dir = p.dir.path().to_path_buf();
    assert_eq!(emls_reach(&dir, 1).await, 1, "the run's own mail");
    p.stop().await;

    // Two runs that committed and were not filed when the server stopped: one claimed by this
    // version (its mail went into the outbox with the record), one by the version before it
    // (its mail was still to be queued by the filing).
    let at = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let claims = [format!("{at}-4242-0007-m"), format!("{at}-4242-0008")];
    {
        let store = roster::store::Store::open(&dir.join("data/store")).unwrap();
        for (i, claim) in claims.iter().enumerate() {
            let mut record = run.clone();
            record.id = store.new_import_id(Utc::now()).unwrap();
            record.archived_as = Some(format!("processed/users.left-{i}.csv"));
            let mail = roster::store::OutboxMail {
                recipients: vec!["hr@x.example".into()],
                message: format!(
                    "Subject: run {}\r\n\r\nqueued with the record\r\n",
                    record.id
                )
                .into_bytes(),
            };
            let with_record = claim.ends_with("-m").then_some(&mail);
            store
                .record_claimed(&record, claim, with_record, None)
                .unwrap();
            let folder = dir.join("data/work/cdp").join(claim);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("users.csv"), FILE).unwrap();
        }
    }
    p.start_again().await;
    for claim in &claims {
        finished(&dir.join("data/work/cdp").join(claim)).await;
    }
    assert_eq!(p.files("cdp", "processed").len(), 3, "both runs filed");
    let history = p.server().store.history("cdp", 10).unwrap();
    assert_eq!(history.len(), 3, "filed, not imported again: {history:?}");
    assert!(
        history
            .iter()
            .all(|r| r.status == roster::model::ImportStatus::Success),
        "{history:?}"
    );
    assert_eq!(
        emls_reach(&dir, 3).await,
        3,
        "one mail for each run: the one queued with its record is not queued again, the one \
         an earlier version owed is queued by the filing"
    );

    // A file refused before it is imported (over max_upload_bytes: copied in locally, since
    // SFTP stops such an upload itself) is recorded with its mail.
    let big: Vec<u8> = FILE.iter().copied().cycle().take(1000).collect();
    std::fs::write(dir.join("big.tmp"), &big).unwrap();
    std::fs::rename(dir.join("big.tmp"), p.home("cdp").join("users.csv")).unwrap();
    let refused = p.history_len("cdp", 4, 20).await.remove(0);
    assert_eq!(
        refused.status,
        roster::model::ImportStatus::Error,
        "{refused:?}"
    );
    assert_eq!(
        emls_reach(&dir, 4).await,
        4,
        "one mail for the refused file"
    );
}
