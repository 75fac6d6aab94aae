//! The change log over the admin API and `roster changes`, against a whole running Roster
//! after real SFTP uploads: paging with after/limit, one user's history, the CLI's JSON lines
//! and `--follow`, bad input. Runs on sled, or on PostgreSQL with `ROSTER_TEST_STORE=postgres`.

#[path = "admin_support/mod.rs"]
mod admin_support;
mod support;

use admin_support::{users_csv, Env, TOKEN};
use roster::model::changelog::{ChangeKind, LoggedChange};
use roster::model::ImportStatus;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_roster");

fn entries(v: &serde_json::Value) -> Vec<LoggedChange> {
    serde_json::from_value(v["changes"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changes_routes_page_in_seq_order_and_show_one_users_history() {
    let env = Env::start().await;
    let first = env.import("acme", &users_csv(0, 12)).await;
    assert_eq!(first.status, ImportStatus::Success);
    let edited =
        users_csv(0, 12).replace("user03@acme.example,First03", "user03@acme.example,Third03");
    let second = env.import("acme", &edited).await;
    assert_eq!(second.counts.updated, 1);

    let a = env.get("/api/tenants/acme/changes").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let all = entries(&a.json);
    assert_eq!(all.len(), 13);
    assert_eq!(a.json["next"], 13);
    assert!(all.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1));
    assert!(all[..12].iter().all(|c| c.kind == ChangeKind::Created));
    let up = &all[12];
    assert_eq!(
        (up.key.as_str(), up.kind),
        ("user03@acme.example", ChangeKind::Updated)
    );
    assert_eq!(up.fields.len(), 1);
    assert_eq!(up.fields[0].field, "first_name");
    assert_eq!(up.fields[0].old.as_deref(), Some("First03"));
    assert_eq!(up.fields[0].new.as_deref(), Some("Third03"));
    assert_eq!(up.import_id.as_deref(), Some(second.id.as_str()));

    // Paging: `next` is the last seq returned, or `after` when nothing is left.
    let a = env.get("/api/tenants/acme/changes?after=5&limit=4").await;
    let page = entries(&a.json);
    assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
    assert_eq!(a.json["next"], 9);
    let a = env.get("/api/tenants/acme/changes?after=13").await;
    assert!(entries(&a.json).is_empty());
    assert_eq!(a.json["next"], 13);
    let a = env.get("/api/tenants/acme/changes?limit=99999").await;
    assert_eq!(entries(&a.json).len(), 13, "limit is clamped, not refused");

    // One user's history, newest first; keys are tried lower-cased too.
    let a = env
        .get("/api/tenants/acme/users/USER03@acme.example/changes")
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let kinds: Vec<_> = entries(&a.json).iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Updated, ChangeKind::Created]);

    // Bad input and unknown things.
    let a = env.get("/api/tenants/acme/changes?after=-1").await;
    assert_eq!(a.status, 400, "{}", a.text);
    let a = env.get("/api/tenants/acme/changes?limit=many").await;
    assert_eq!(a.status, 400, "{}", a.text);
    // Empty values are the defaults, for both (audit s22: `limit=` was a 400, `after=` 0).
    let a = env.get("/api/tenants/acme/changes?after=&limit=").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(entries(&a.json).len(), 13);
    let a = env.get("/api/tenants/nope/changes").await;
    assert_eq!(a.status, 404, "{}", a.text);
    // A 404 quotes what was asked, but not 50 KB of it (audit s22 console N6).
    let long = "k".repeat(50_000);
    let a = env
        .get(&format!("/api/tenants/acme/users/{long}/changes"))
        .await;
    assert_eq!(a.status, 404, "{}", &a.text[..a.text.len().min(200)]);
    assert!(a.text.len() < 1_000, "{} bytes", a.text.len());
    let a = env
        .get("/api/tenants/acme/users/nobody@acme.example/changes")
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    for path in [
        "/api/tenants/acme/changes",
        "/api/tenants/acme/users/user03@acme.example/changes",
    ] {
        let a = env.http("GET", path, None, None).await;
        assert_eq!(a.status, 401, "{path}");
        let a = env.http("GET", path, Some(TOKEN), None).await;
        assert_eq!(a.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_changes_prints_json_lines_and_follows_new_entries() {
    let env = Env::start().await;
    let cfg = env.cli_config();
    env.import("acme", &users_csv(0, 3)).await;

    let o = tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["changes", "acme", "--json", "--after", "1"])
        .env_remove("ROSTER_ADMIN_URL")
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<LoggedChange> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3]);

    let o = tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["changes", "acme"])
        .env_remove("ROSTER_ADMIN_URL")
        .env("TZ", "UTC")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains("created") && l.contains("[import ")),
        "{text}"
    );

    // --follow prints what later imports log, until it is stopped.
    let mut follow = tokio::process::Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["changes", "acme", "--follow", "--json", "--after", "3"])
        .env_remove("ROSTER_ADMIN_URL")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap()).lines();
    env.import("acme", &users_csv(0, 5)).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), out.next_line())
            .await
            .expect("--follow prints new entries")
            .unwrap()
            .expect("a line");
        let c: LoggedChange = serde_json::from_str(&line).unwrap();
        seen.push((c.seq, c.key));
    }
    // In seq order; within one commit, entries follow the store's buckets, not the keys.
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 5]);
    let mut keys: Vec<_> = seen.into_iter().map(|s| s.1).collect();
    keys.sort();
    assert_eq!(keys, ["user03@acme.example", "user04@acme.example"]);
    follow.kill().await.unwrap();
}
