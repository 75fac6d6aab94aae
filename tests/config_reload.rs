//! Config reloads over the whole server (`roster::serve::start`): a reload that fixes `[mail]
//! smtp_url` reaches the mail worker, and a reload that changes a key read once at start
//! (`data_dir`) keeps the running value everywhere (review of 2026-11-30, F1).

mod support;

use roster::model::ImportStatus;
use russh::keys::PrivateKey;
use std::path::Path;
use std::time::Duration;
use support::pipeline::Pipeline;
use support::smtp_sink::SmtpSink;

fn config(dir: &Path, key: &PrivateKey, smtp_url: &str, data: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
host_keys = "{dir}/host_keys"
data_dir = "{dir}/{data}"
settle_ms = 200

[admin]
listen = "127.0.0.1:0"

[mail]
smtp_url = "{smtp_url}"
from = "Roster <roster@test.example>"

[[tenants]]
id = "acme"
authorized_keys = ["{key}"]
notify = ["it@acme.example"]
"#,
        dir = dir.display(),
        key = key.public_key().to_openssh().unwrap(),
    )
}

/// Rewrites the pipeline's config and reloads it at once (the watcher would, a moment later).
fn rewrite(env: &Pipeline, text: &str) {
    let path = env.dir.path().join("roster.toml");
    let tmp = env.dir.path().join("roster.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    env.server().sftp.config.reload().unwrap();
}

/// A file without the `email` column: an `error` run, whose report is mailed.
const BAD_FILE: &[u8] = b"first_name,last_name\nAna,Horvat\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fixes_smtp_url_reaches_the_queued_report() {
    let dead = format!("smtp://127.0.0.1:{}", support::process::free_port());
    let key_for_later = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = key_for_later.clone();
    let env = Pipeline::start(|dir, key| {
        *keep.lock().unwrap() = Some(key.clone());
        config(dir, key, &dead, "data")
    })
    .await;
    let key = key_for_later.lock().unwrap().clone().unwrap();
    env.client("acme")
        .await
        .put("users.csv", BAD_FILE)
        .await
        .unwrap();
    let h = env.history_len("acme", 1, 20).await;
    assert_eq!(h.first().map(|r| r.status), Some(ImportStatus::Error));
    // The report's first attempt goes to the dead relay and is deferred.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let sink = SmtpSink::start().await.unwrap();
    rewrite(&env, &config(env.dir.path(), &key, &sink.url(), "data"));
    // The next attempt (5 s after the first failure) goes to the fixed relay.
    let mails = sink.wait_for(1, Duration::from_secs(25)).await;
    assert_eq!(
        mails.len(),
        1,
        "the queued report never reached the fixed relay"
    );
    assert_eq!(mails[0].rcpt_to, vec!["it@acme.example".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_data_dir_keeps_the_running_one() {
    let sink = SmtpSink::start().await.unwrap();
    let url = sink.url();
    let key_for_later = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = key_for_later.clone();
    let env = Pipeline::start(|dir, key| {
        *keep.lock().unwrap() = Some(key.clone());
        config(dir, key, &url, "data")
    })
    .await;
    let key = key_for_later.lock().unwrap().clone().unwrap();
    rewrite(&env, &config(env.dir.path(), &key, &url, "data2"));
    let running = env.server().sftp.config.current();
    assert_eq!(running.server.data_dir, env.dir.path().join("data"));

    // Logins, claims and archives go on in the running data_dir.
    let users = b"email,first_name,last_name\nana@acme.example,Ana,Horvat\n";
    env.client("acme")
        .await
        .put("users.csv", users)
        .await
        .unwrap();
    let h = env.history_len("acme", 1, 20).await;
    assert_eq!(h.first().map(|r| r.status), Some(ImportStatus::Success));
    let archived = h[0].archived_as.clone().unwrap();
    assert!(env.home("acme").join(&archived).is_file(), "{archived}");
    assert!(!env.dir.path().join("data2").exists());
}
