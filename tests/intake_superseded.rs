//! A claim left behind never lands after a newer file (review of 2026-12-02, finding 2): the
//! tenant's newest file is its latest word. A claim that never committed and that a run of a
//! newer file overtook is filed with an `error` record saying why, not imported; and a request
//! that imports finishes the claims left behind first, oldest first, before its own file.

mod support;

use chrono::{DateTime, Utc};
use roster::model::{ImportStatus, UserStatus};
use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::pipeline::Pipeline;

fn config(dir: &Path, key: &PrivateKey) -> String {
    support::pipeline::one_tenant_config(
        dir,
        key,
        "",
        "acme",
        "file = \"users.csv\"\nmatch_by = \"mapping_code\"\non_missing = \"deactivate\"\n\
         [tenants.import.columns]\nmapping_code = \"userId\"\nfirst_name = \"name\"\n\
         last_name = \"last\"",
    )
}

/// The older export: one user, under an old name.
const OLDER: &[u8] = b"userId,name,last\nu1,Old,Lee\n";
/// The newer, corrected export: three users.
const NEWER: &[u8] = b"userId,name,last\nu1,New,Lee\nu2,Bob,Ray\nu3,Cy,Fox\n";

/// A claim folder of this version made at `at`, holding `bytes` as users.csv, as a node that
/// died in its run (or a run whose retries gave up) leaves it.
fn left_claim(p: &Pipeline, at: DateTime<Utc>, bytes: &[u8]) -> PathBuf {
    left_claim_of(p, at, "users.csv", bytes)
}

/// [`left_claim`] holding `bytes` as `name`. The folder appears whole (made aside, then
/// renamed into place): a running server that found it empty, half made, would finish it as
/// an empty claim.
fn left_claim_of(p: &Pipeline, at: DateTime<Utc>, name: &str, bytes: &[u8]) -> PathBuf {
    let id = format!("{}-4242-0001-m", at.format("%Y%m%dT%H%M%S%.6fZ"));
    let work = p.dir.path().join("data/work/acme");
    let aside = p.dir.path().join("claim-being-made");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::write(aside.join(name), bytes).unwrap();
    let claim = work.join(id);
    std::fs::rename(&aside, &claim).unwrap();
    claim
}

/// Waits until `path` is gone (the claim was finished).
async fn finished(path: &Path) {
    for _ in 0..150 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was not finished", path.display());
}

/// The directory holds the newer file's users, all active, u1 under its new name.
fn holds_the_newer_file(p: &Pipeline) {
    let store = &p.server().store;
    for key in ["u1", "u2", "u3"] {
        let user = store.user("acme", key).unwrap();
        let user = user.unwrap_or_else(|| panic!("{key} is missing"));
        assert_eq!(user.status, UserStatus::Active, "{key}: {user:?}");
    }
    let u1 = store.user("acme", "u1").unwrap().unwrap();
    assert_eq!(u1.first_name.as_deref(), Some("New"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_claim_older_than_an_applied_file_is_not_imported() {
    let mut p = Pipeline::start(config).await;
    p.client("acme")
        .await
        .put("users.csv", NEWER)
        .await
        .unwrap();
    let newer = p.history_len("acme", 1, 20).await.remove(0);
    assert_eq!(newer.status, ImportStatus::Success);
    p.stop().await;

    // A claim of the older file made before the newer file's run, never committed.
    let claim = left_claim(&p, newer.started_at - chrono::Duration::seconds(60), OLDER);
    p.start_again().await;
    finished(&claim).await;
    let history = p.history_len("acme", 2, 20).await;
    assert_eq!(history.len(), 2, "{history:?}");
    let refused = history
        .iter()
        .find(|r| r.id != newer.id)
        .expect("a record of the older claim");
    assert_eq!(refused.status, ImportStatus::Error, "{refused:?}");
    let said = refused.messages.join(" ");
    assert!(
        said.contains("a newer file was applied since") && said.contains(&newer.id),
        "{said}"
    );
    holds_the_newer_file(&p);
    // Filed like any refused file, not lost.
    let archived = refused.archived_as.clone().expect("archived");
    assert!(archived.starts_with("errors/"), "{archived}");
    assert!(p.home("acme").join(&archived).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_finishes_the_claims_left_behind_first() {
    let p = Pipeline::start(config).await;
    // A claim of the older file left by a node that died (not made by this process), then the
    // newer file arrives.
    let claim = left_claim(&p, Utc::now(), OLDER);
    p.client("acme")
        .await
        .put("users.csv", NEWER)
        .await
        .unwrap();
    let history = p.history_len("acme", 2, 30).await;
    assert!(!claim.exists(), "the claim left behind is finished");
    assert_eq!(history.len(), 2, "{history:?}");
    // Newest first: the newer file ran last, over the older one.
    assert_eq!(history[0].counts.rows, 3, "{history:?}");
    assert_eq!(history[1].counts.rows, 1, "{history:?}");
    holds_the_newer_file(&p);
}

/// `only_today` judges a claim by the tenant's date when it was claimed (review s27): a file
/// claimed at 23:58 that a crash left behind is still that day's file when it is finished
/// after midnight, not a stale one to refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_today_judges_a_recovered_claim_by_the_day_it_was_claimed() {
    fn dated(dir: &Path, key: &PrivateKey) -> String {
        support::pipeline::one_tenant_config(
            dir,
            key,
            "",
            "acme",
            "file = \"users_{date}.csv\"\ndate_format = \"%Y-%m-%d\"\nonly_today = true\n\
             match_by = \"mapping_code\"\n\
             [tenants.import.columns]\nmapping_code = \"userId\"\nfirst_name = \"name\"\n\
             last_name = \"last\"",
        )
    }
    let mut p = Pipeline::start(dated).await;
    p.stop().await;
    let yesterday = Utc::now().date_naive() - chrono::Duration::days(1);
    let at = yesterday.and_hms_opt(23, 58, 0).unwrap().and_utc();
    let name = format!("users_{}.csv", yesterday.format("%Y-%m-%d"));
    let claim = left_claim_of(&p, at, &name, NEWER);

    p.start_again().await;
    finished(&claim).await;
    let history = p.history_len("acme", 1, 20).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].status, ImportStatus::Success, "{history:?}");
    assert_eq!(history[0].file, name);
    holds_the_newer_file(&p);
}
